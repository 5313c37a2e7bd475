/**
 * The GEMM-organised SALE attention used for model fidelity (`ops/sale/gemm_attention.ts`) agrees with the
 * operator CPU references (`saleCpu`) and, with every block kept, with float64 dense attention.
 * @module
 */
import { assert, test } from "../harness.ts";
import { saleCpu, saleParams, syntheticCpu } from "../../ops/sale/mod.ts";
import { saleAttentionBlas, tsGemm } from "../../ops/sale/gemm_attention.ts";
import { naiveAttention64, relErr } from "./ref64.ts";

test("saleAttentionBlas matches saleCpu (mask, output, LSE) and float64 dense with all blocks kept", () => {
  for (const [H, Hk, S, D] of [[3, 1, 200, 64], [4, 2, 257, 64]]) {
    const q = syntheticCpu(0, H, S, D, H / Hk, 3),
      k = syntheticCpu(1, Hk, S, D, 1, 3),
      v = syntheticCpu(2, Hk, S, D, 1, 3);
    const p = saleParams({ blockQ: 16, blockK: 8, localWindow: 16, threshold: 0.01 });
    const want = saleCpu(p, q, k, v, H, Hk, S, D);
    const got = saleAttentionBlas(tsGemm, p, q, k, v, H, Hk, S, D);
    for (let h = 0; h < H; h++) {
      assert.ok(
        Math.abs(got.density[h] - want.density[h]) < 0.01,
        `density ${got.density[h]} vs ${want.density[h]}`,
      );
    }
    assert.ok(want.density[0] < 0.9, `structured input should be sparse: ${want.density[0]}`);
    assert.ok(relErr(got.o, want.o) < 1e-3, `o ${relErr(got.o, want.o)}`);
    const dense = saleAttentionBlas(tsGemm, p, q, k, v, H, Hk, S, D, S, true);
    const ref = naiveAttention64(q, k, v, H, Hk, S, D, 1 / Math.sqrt(D));
    assert.ok(relErr(dense.o, ref.o) < 1e-5, `dense o ${relErr(dense.o, ref.o)}`);
    assert.ok(dense.density.every((x) => x === 1));
    // LSE is taken over smoothed keys (k − mean k): it differs from the plain LSE by q·mean(k) per row only
    assert.ok(relErr(got.o, ref.o) < 0.05);
  }
});
