/**
 * The SALE prefill graph (quantize → estimate → select → sparseAttn) and `dense.attn` through the executor on
 * every backend: cpu (host references), webgpu (Deno's `navigator.gpu`) and wgpu (wgpu-native FFI). GPU
 * backends are skipped when they cannot open a device. Small shapes (lavapipe is slow).
 *
 * Every backend is checked against references independent of the operators (the cpu backend runs the same
 * host references as `saleCpu`, so comparing the two would compare the operators with themselves):
 * - the sparse output against float64 attention under the mask the graph returned (`naiveAttention64`);
 * - the mask: causal, ascending, every sink and local-window block present, density = nnz / causal blocks
 *   counted here from the geometry;
 * - the selection: threshold 0 keeps every causal block (output = float64 dense); a threshold no score
 *   reaches keeps exactly the forced blocks; at τ = 0.3 the kept optional blocks carry more float64
 *   attention mass on average than the dropped ones.
 * GPU backends are also compared with the CPU pipeline `saleCpu`.
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
const base = { blockQ: 16, blockK: 8, localWindow: 16 };
const p = saleParams({ ...base, threshold: 0.3 });

const prefillWith = (pp: typeof p) =>
  defineGraph("sale-prefill", { q: QT, k: KT, v: KT }, (g, { q, k, v }) => {
    const z = g.add(saleQuantize, pp, { q, k });
    const s = g.add(saleEstimate, pp, { q, k, ...z });
    const m = g.add(saleSelect, pp, s);
    const a = g.add(saleSparseAttn, pp, { q, k, v, indptr: m.indptr, indices: m.indices });
    const d = g.add(denseAttn, { scale: 0, blockQ: 64, workgroupMemory: 32768 }, { q, k, v });
    return { o: a.o, dense: d.o, density: m.density, indptr: m.indptr, indices: m.indices };
  });

/** Kept key blocks per (head, query block), read from the graph's BSR outputs. */
const blocksOf = (indptr: Int32Array, indices: Int32Array, H: number, qBlocks: number, cap: number) =>
  Array.from({ length: H }, (_, h) =>
    Array.from({ length: qBlocks }, (_, r) => {
      const a = indptr[h * (qBlocks + 1) + r], b = indptr[h * (qBlocks + 1) + r + 1];
      return [...indices.subarray(h * cap + a, h * cap + b)];
    }));

/** Causal key blocks of query block r, counted directly: blocks whose first key is ≤ the block's last row. */
const causal = (r: number, S: number) =>
  Math.floor(Math.min(S - 1, (r + 1) * base.blockQ - 1) / base.blockK) + 1;

const backends: [string, () => Effect.Effect<Backend, unknown>][] = [
  ["cpu", () => makeCpuBackend()],
  ["webgpu", () => makeWebgpuBackend()],
  ["wgpu", () => makeWgpuBackend()],
];

for (const [name, make] of backends) {
  const backend = await Effect.runPromise(make()).catch(() => undefined);
  test(
    `SALE graph on the ${name} backend vs independent float64 references (and the CPU pipeline on GPUs)`,
    async () => {
      let mixed = 0; // shapes where τ = 0.3 keeps some optional blocks and drops others
      for (const [H, Hk, S, D] of [[3, 1, 93, 64], [4, 1, 50, 128]]) {
        const q = randn(H * S * D, S, 2), k = randn(Hk * S * D, S + 1, 2), v = randn(Hk * S * D, S + 2);
        const scale = 1 / Math.sqrt(D);
        const inputs = {
          q: hostTensor("f32", QT.dims, [H, S, D], q),
          k: hostTensor("f32", KT.dims, [Hk, S, D], k),
          v: hostTensor("f32", KT.dims, [Hk, S, D], v),
        };
        const qBlocks = Math.ceil(S / base.blockQ);
        let cap = 0;
        for (let r = 0; r < qBlocks; r++) cap += causal(r, S);
        const localBlocks = Math.max(
          Math.ceil(base.localWindow / base.blockK),
          Math.ceil(base.blockQ / base.blockK),
        );
        const ref = naiveAttention64(q, k, v, H, Hk, S, D, scale);
        // Float64 attention mass of each (head, query block, key block), averaged over the block's rows.
        const mass = (h: number, r: number, kb: number) => {
          const kh = Math.floor(h * Hk / H);
          let m = 0, rows = 0;
          for (let i = r * base.blockQ; i < Math.min(S, (r + 1) * base.blockQ); i++, rows++) {
            for (let j = kb * base.blockK; j < Math.min(i + 1, (kb + 1) * base.blockK); j++) {
              let dot = 0;
              for (let x = 0; x < D; x++) dot += q[(h * S + i) * D + x] * k[(kh * S + j) * D + x];
              m += Math.exp(dot * scale - ref.lse[h * S + i]);
            }
          }
          return m / rows;
        };
        for (const tau of [0.3, 0, 1e30]) {
          const pp = saleParams({ ...base, threshold: tau });
          const res = await Effect.runPromise(
            run(await Effect.runPromise(prefillWith(pp)), backend!, inputs),
          );
          const o = res.outputs.o.data as Float32Array;
          const blocks = blocksOf(
            res.outputs.indptr.data as Int32Array,
            res.outputs.indices.data as Int32Array,
            H,
            qBlocks,
            cap,
          );
          const tag = `[${H},${Hk},${S},${D}] τ=${tau}`;
          assert.ok(relErr(res.outputs.dense.data as Float32Array, ref.o) <= 1e-5, `${tag} dense vs float64`);
          let optionalKept = 0, optionalDropped = 0, massKept = 0, massDropped = 0;
          for (let h = 0; h < H; h++) {
            let nnz = 0;
            for (let r = 0; r < qBlocks; r++) {
              const nMax = causal(r, S), kept = blocks[h][r];
              nnz += kept.length;
              assert.ok(
                kept.every((kb, i) => kb >= 0 && kb < nMax && (i === 0 || kept[i - 1] < kb)),
                `${tag} causal ascending`,
              );
              for (let kb = 0; kb < nMax; kb++) {
                const forced = kb < pp.sinkBlocks || kb >= nMax - localBlocks;
                if (forced) assert.ok(kept.includes(kb), `${tag} forced block ${kb} of (${h}, ${r}) missing`);
                else if (kept.includes(kb)) (optionalKept++, massKept += mass(h, r, kb));
                else (optionalDropped++, massDropped += mass(h, r, kb));
              }
              if (tau === 0) assert.equal(kept.length, nMax, `${tag} threshold 0 keeps every causal block`);
              if (tau === 1e30) {
                assert.ok(
                  kept.every((kb) => kb < pp.sinkBlocks || kb >= nMax - localBlocks),
                  `${tag} only forced`,
                );
              }
            }
            assert.ok(
              Math.abs((res.outputs.density.data as Float32Array)[h] - nnz / cap) < 1e-6,
              `${tag} density`,
            );
          }
          const keep = (h: number, i: number, j: number) =>
            blocks[h][Math.floor(i / base.blockQ)].includes(Math.floor(j / base.blockK));
          const masked = tau === 0 ? ref : naiveAttention64(q, k, v, H, Hk, S, D, scale, keep);
          assert.ok(relErr(o, masked.o) <= 1e-5, `${tag} sparse vs float64 masked ${relErr(o, masked.o)}`);
          if (tau === 0.3 && optionalKept > 0 && optionalDropped > 0) {
            mixed++;
            assert.ok(
              massKept / optionalKept > massDropped / optionalDropped,
              `${tag} kept blocks carry more attention mass`,
            );
          }
          if (name !== "cpu") {
            const want = saleCpu(pp, q, k, v, H, Hk, S, D);
            assert.ok(relErr(o, want.o) <= 1e-5, `${tag} sparse vs cpu pipeline ${relErr(o, want.o)}`);
            assert.deepEqual([...(res.outputs.density.data as Float32Array)], [...want.density]);
          }
        }
      }
      assert.ok(
        mixed > 0,
        "τ = 0.3 splits the optional blocks on some shape (else the mass check is vacuous)",
      );
    },
    { ignore: !backend },
  );
}
