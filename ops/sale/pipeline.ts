/**
 * The SALE prefill pipeline as one unit on the CPU (reference): quantize → estimate → select → sparseAttn. On
 * a device the same chain runs as the `sale` technique's graph lowered into a program (graph/src/program.ts).
 *
 * Reference: SALE (arXiv 2505.24179) §3 (Figure 2: the estimation stage and the computation stage).
 * @module
 */
import { hostTensor } from "@longctx/graph";
import type { HostTensor } from "@longctx/graph";
import { f32ToHalf } from "../dense/common.ts";
import type { SaleParams } from "./params.ts";
import { makeSaleQuantize } from "./quantize.ts";
import { makeSaleEstimate } from "./estimate.ts";
import { saleSelect } from "./select.ts";
import { makeSaleSparseAttn } from "./sparse_attn.ts";

/** Result of the CPU pipeline. */
export interface SaleCpuResult {
  /** `[heads, seq, headDim]` f32. */
  readonly o: Float32Array;
  /** `[heads, seq]` f32 (natural log). */
  readonly lse: Float32Array;
  /** Relative Attention Scores `[heads, qBlocks, kBlocks]`. */
  readonly score: Float32Array;
  /** BSR row pointers `[heads, qBlocks + 1]` of the selected mask. */
  readonly indptr: Int32Array;
  /** Selected key-block ids `[heads, nnzCap]`. */
  readonly indices: Int32Array;
  /** Per head: nnz / causal blocks. */
  readonly density: Float32Array;
}

/**
 * Run SALE on the CPU: `q [heads, seq, d]`, `k`/`v [kvHeads, seq, d]` as f32 values (rounded to f16 first when
 * `dtype` is "f16"). Throws `RangeError` on inconsistent sizes (the graph path reports typed errors instead).
 */
export const saleCpu = (
  p: SaleParams,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  heads: number,
  kvHeads: number,
  seq: number,
  d: number,
  dtype: "f32" | "f16" = "f32",
): SaleCpuResult => {
  const t = (dims: readonly string[], shape: number[], x: Float32Array): HostTensor =>
    dtype === "f16" ? hostTensor("f16", dims, shape, f32ToHalf(x)) : hostTensor("f32", dims, shape, x);
  const Q = t(["heads", "seq", "headDim"], [heads, seq, d], q);
  const K = t(["kvHeads", "kvSeq", "headDim"], [kvHeads, seq, d], k);
  const V = t(["kvHeads", "kvSeq", "headDim"], [kvHeads, seq, d], v);
  // deno-lint-ignore no-explicit-any
  const any = (x: unknown) => x as any;
  const qz = makeSaleQuantize(dtype).cpu(p, any({ q: Q, k: K }));
  const est = makeSaleEstimate(dtype).cpu(p, any({ q: Q, k: K, ...qz }));
  const sel = saleSelect.cpu(p, { scores: est.scores });
  const att = makeSaleSparseAttn(dtype).cpu(
    p,
    any({ q: Q, k: K, v: V, indptr: sel.indptr, indices: sel.indices }),
  );
  return {
    o: att.o.data,
    lse: att.lse.data,
    score: est.scores.data,
    indptr: sel.indptr.data,
    indices: sel.indices.data,
    density: sel.density.data,
  };
};
