/**
 * The SALE prefill pipeline as one unit: quantize → estimate → select → sparseAttn, on the CPU (reference)
 * or as one GPU lowering (the four operators' launches chained, intermediates as workspaces).
 *
 * Reference: SALE (arXiv 2505.24179) §3 (Figure 2: the estimation stage and the computation stage).
 * @module
 */
import { hostTensor, storageBytes } from "@longctx/graph";
import type { GpuLowering, HostTensor, TensorDesc } from "@longctx/graph";
import { f32ToHalf } from "../dense/common.ts";
import type { SaleParams } from "./params.ts";
import { saleGeometry } from "./params.ts";
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
  readonly indptr: Int32Array;
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

const rename = (low: GpuLowering, map: Record<string, string>, wsPrefix: string): GpuLowering => ({
  workspaces: Object.fromEntries(Object.entries(low.workspaces).map(([k, b]) => [`${wsPrefix}${k}`, b])),
  launches: low.launches.map((l) => ({
    ...l,
    buffers: l.buffers.map((b) =>
      map[b] ?? (b.startsWith("ws:") ? `ws:${wsPrefix}${b.slice(3)}` : (() => {
        throw new RangeError(`unmapped buffer ${b}`);
      })())
    ),
  })),
});

/** The pipeline's GPU lowering split in its two stages (so a benchmark can time them apart). */
export interface SaleGpuPlan {
  /** quantize + estimate + select: reads `in:q`, `in:k`; writes `ws:indptr`, `ws:indices`, `ws:density`. */
  readonly estimation: GpuLowering;
  /** sparse attention: reads `in:q`, `in:k`, `in:v`, `ws:indptr`, `ws:indices`; writes `out:o`, `out:lse`. */
  readonly computation: GpuLowering;
}

/**
 * Lower the whole pipeline for `q [heads, seq, d]`, `k`/`v [kvHeads, seq, d]` of dtype `dtype`. All
 * intermediates (codes, scales, scores, BSR) are workspaces; `features` as in `Operator.gpu`.
 */
export const saleGpuPlan = (
  p: SaleParams,
  heads: number,
  kvHeads: number,
  seq: number,
  d: number,
  dtype: "f32" | "f16",
  features: ReadonlySet<string>,
): SaleGpuPlan => {
  const desc = (dt: TensorDesc["dtype"], dims: string[], shape: number[]): TensorDesc => ({
    dtype: dt,
    dims,
    shape,
  });
  const q = desc(dtype, ["heads", "seq", "headDim"], [heads, seq, d]);
  const k = desc(dtype, ["kvHeads", "kvSeq", "headDim"], [kvHeads, seq, d]);
  const g = saleGeometry(seq, p);
  const qz = {
    qq: desc("int4", ["heads", "seq", "headDim"], [heads, seq, d]),
    qScales: desc("f32", ["heads", "qBlocks"], [heads, g.qBlocks]),
    kq: desc("int4", ["kvHeads", "kvSeq", "headDim"], [kvHeads, seq, d]),
    kScales: desc("f32", ["kvHeads", "kBlocks"], [kvHeads, g.kBlocks]),
    kMean: desc("f32", ["kvHeads", "headDim"], [kvHeads, d]),
    qmk: desc("f32", ["heads", "kvSeq"], [heads, seq]),
  };
  const score = desc("f32", ["heads", "qBlocks", "kBlocks"], [heads, g.qBlocks, g.kBlocks]);
  const indptr = desc("i32", ["heads", "indptr"], [heads, g.qBlocks + 1]);
  const indices = desc("i32", ["heads", "nnz"], [heads, g.nnzCap]);
  // deno-lint-ignore no-explicit-any
  const any = (x: unknown) => x as any;
  const lq = makeSaleQuantize(dtype).gpu!(p, any({ q, k }), features);
  const le = makeSaleEstimate(dtype).gpu!(p, any({ q, k, ...qz }), features);
  const ls = saleSelect.gpu!(p, any({ scores: score }), features);
  const la = makeSaleSparseAttn(dtype).gpu!(p, any({ q, k, v: k, indptr, indices }), features);
  const inter: Record<string, number> = {
    ...Object.fromEntries(
      Object.entries(qz).map(([n, t]) => [n, storageBytes(t.dtype, t.shape.reduce((a, b) => a * b, 1))]),
    ),
    score: heads * g.qBlocks * g.kBlocks * 4,
    indptr: heads * (g.qBlocks + 1) * 4,
    indices: heads * g.nnzCap * 4,
    density: heads * 4,
  };
  const outMap = (names: string[]) => Object.fromEntries(names.map((n) => [`out:${n}`, `ws:${n}`]));
  const inMap = (names: string[]) => Object.fromEntries(names.map((n) => [`in:${n}`, `ws:${n}`]));
  const parts = [
    rename(lq, { "in:q": "in:q", "in:k": "in:k", ...outMap(Object.keys(qz)) }, "quant."),
    rename(
      le,
      { "in:q": "in:q", "in:k": "in:k", ...inMap(Object.keys(qz)), "out:scores": "ws:score" },
      "est.",
    ),
    rename(ls, { "in:scores": "ws:score", ...outMap(["indptr", "indices", "density"]) }, "sel."),
  ];
  const estimation: GpuLowering = {
    workspaces: Object.assign({}, inter, ...parts.map((x) => x.workspaces)),
    launches: parts.flatMap((x) => x.launches),
  };
  const computation = rename(
    la,
    {
      "in:q": "in:q",
      "in:k": "in:k",
      "in:v": "in:v",
      "in:indptr": "ws:indptr",
      "in:indices": "ws:indices",
      "out:o": "out:o",
      "out:lse": "out:lse",
    },
    "attn.",
  );
  return { estimation, computation };
};
