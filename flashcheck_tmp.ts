import { hostTensor } from "@longctx/graph";
import { makeDenseAttn } from "./ops/dense/attn.ts";
import { chooseTiles } from "./ops/dense/flash_wgsl.ts";
import { f32ToHalf } from "./ops/dense/common.ts";
import { bsrFrom, bsrKeep, makeSaleSparseAttn, saleGeometry, saleParams } from "./ops/sale/mod.ts";
import { maxAbsDiff, naiveAttention64, randn, relErr, rng } from "./tests/ops/ref64.ts";
import { openGpu, runOperatorGpu } from "./tests/ops/gpu_helper.ts";
const gpu = (await openGpu())!;
const QD = ["heads", "seq", "headDim"] as const, KD = ["kvHeads", "kvSeq", "headDim"] as const;
const t = (dt: "f32" | "f16", dims: readonly string[], shape: number[], x: Float32Array) =>
  dt === "f16" ? hostTensor("f16", dims, shape, f32ToHalf(x)) : hostTensor("f32", dims, shape, x);
for (const [H, Hk, S, D, dt, wm, bq] of [
  [4, 1, 300, 128, "f16", 49152, 64], [3, 3, 203, 64, "f32", 49152, 64], [2, 1, 190, 128, "f32", 32768, 128],
  [4, 4, 150, 64, "f16", 65536, 32],
] as const) {
  console.log("tiles", dt, D, bq, chooseTiles(dt, D, bq, 64, wm));
  const q = randn(H * S * D, S, 1.5), k = randn(Hk * S * D, S + 1, 1.5), v = randn(Hk * S * D, S + 2);
  const ref = naiveAttention64(q, k, v, H, Hk, S, D, 1 / Math.sqrt(D));
  const out = await runOperatorGpu(gpu, makeDenseAttn(dt), { scale: 0, blockQ: bq, workgroupMemory: wm }, {
    q: t(dt, QD, [H, S, D], q), k: t(dt, KD, [Hk, S, D], k), v: t(dt, KD, [Hk, S, D], v),
  });
  console.log("dense", H, Hk, S, D, dt, wm, "rel", relErr(out.o.data as Float32Array, ref.o), "lse",
    maxAbsDiff(out.lse.data as Float32Array, ref.lse));
  const p = saleParams({ blockQ: 64, blockK: 32, localWindow: 64, workgroupMemory: wm });
  const g = saleGeometry(S, p);
  const r = rng(S);
  const b = bsrFrom(H, S, p, (_h, _r, kb, nMax) => kb === nMax - 1 || r() < 0.4);
  const o2 = await runOperatorGpu(gpu, makeSaleSparseAttn(dt), p, {
    q: t(dt, QD, [H, S, D], q), k: t(dt, KD, [Hk, S, D], k), v: t(dt, KD, [Hk, S, D], v),
    indptr: hostTensor("i32", ["heads", "indptr"], [H, g.qBlocks + 1], b.indptr),
    indices: hostTensor("i32", ["heads", "nnz"], [H, g.nnzCap], b.indices),
  });
  const want = naiveAttention64(q, k, v, H, Hk, S, D, 1 / Math.sqrt(D),
    bsrKeep(b.indptr, b.indices, g.qBlocks, g.nnzCap, 64, 32));
  console.log("sparse rel", relErr(o2.o.data as Float32Array, want.o));
}
Deno.exit(0);
