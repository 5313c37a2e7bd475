/**
 * The SALE prefill graph (quantize → estimate → select → sparseAttn) and `dense.attn` through the executor on
 * every backend: cpu (host references), webgpu (Deno's `navigator.gpu`) and wgpu (wgpu-native FFI). GPU
 * backends are skipped when they cannot open a device. Small shapes (lavapipe is slow).
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { defineGraph, hostTensor, run, tensorType } from "@longctx/graph";
import type { Backend } from "@longctx/graph";
import { denseAttn } from "../../ops/dense/attn.ts";
import {
  saleCpu,
  saleEstimate,
  saleParams,
  saleQuantize,
  saleSelect,
  saleSparseAttn,
} from "../../ops/sale/mod.ts";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { makeWebgpuBackend } from "../../runtime/src/backends/webgpu.ts";
import { makeWgpuBackend } from "../../runtime/src/backends/wgpu.ts";
import { naiveAttention64, randn, relErr } from "./ref64.ts";

const QT = tensorType("f32", ["heads", "seq", "headDim"] as const);
const KT = tensorType("f32", ["kvHeads", "kvSeq", "headDim"] as const);
const p = saleParams({ blockQ: 16, blockK: 8, localWindow: 16, threshold: 0.3 });

const prefill = defineGraph("sale-prefill", { q: QT, k: KT, v: KT }, (g, { q, k, v }) => {
  const z = g.add(saleQuantize, p, { q, k });
  const s = g.add(saleEstimate, p, { q, k, ...z });
  const m = g.add(saleSelect, p, s);
  const a = g.add(saleSparseAttn, p, { q, k, v, indptr: m.indptr, indices: m.indices });
  const d = g.add(denseAttn, { scale: 0, blockQ: 64, workgroupMemory: 32768 }, { q, k, v });
  return { o: a.o, dense: d.o, density: m.density };
});

const backends: [string, () => Effect.Effect<Backend, unknown>][] = [
  ["cpu", () => makeCpuBackend()],
  ["webgpu", () => makeWebgpuBackend()],
  ["wgpu", () => makeWgpuBackend()],
];

for (const [name, make] of backends) {
  const backend = await Effect.runPromise(make()).catch(() => undefined);
  test(`SALE graph on the ${name} backend matches the CPU pipeline and float64 dense`, async () => {
    const g = await Effect.runPromise(prefill);
    for (const [H, Hk, S, D] of [[3, 1, 93, 64], [4, 1, 50, 128]]) {
      const q = randn(H * S * D, S, 2), k = randn(Hk * S * D, S + 1, 2), v = randn(Hk * S * D, S + 2);
      const res = await Effect.runPromise(run(g, backend!, {
        q: hostTensor("f32", QT.dims, [H, S, D], q),
        k: hostTensor("f32", KT.dims, [Hk, S, D], k),
        v: hostTensor("f32", KT.dims, [Hk, S, D], v),
      }));
      const want = saleCpu(p, q, k, v, H, Hk, S, D);
      const ref = naiveAttention64(q, k, v, H, Hk, S, D, 1 / Math.sqrt(D));
      const o = res.outputs.o.data as Float32Array;
      assert.ok(relErr(res.outputs.dense.data as Float32Array, ref.o) <= 1e-5, "dense vs float64");
      assert.ok(relErr(o, want.o) <= 1e-5, `sparse vs cpu pipeline ${relErr(o, want.o)}`);
      assert.deepEqual([...(res.outputs.density.data as Float32Array)], [...want.density]);
    }
  }, { ignore: !backend });
}
