/**
 * LongSpec's verification attention on the host: the **prefix part** (every tree node attends the same prefix
 * rows — all of them for the target's verify call, or the self-draft's sinks + window / a sparse selection) as
 * `dense.indexCacheAttn`'s arithmetic with one shared row list and no sink or window of its own (so no tree row
 * is seen through it), the **tree part** `longspec.treeAttn` (each node its root path), and their exact merge
 * by the LSE rule, `dense.mergeAttentionReference` (LongSpec §3 "attention aggregation"; official
 * `llama_glide.py`: FlashAttention over the cache + tree attention over the fed tokens, merged by the sigmoid of
 * the LSE difference).
 * @module
 */
import type { Gemm } from "@longctx/graph";
import { indexAttentionGemm, indexAttentionReference, indexAttnParams } from "../dense/index_attn.ts";
import { type AttentionPart, mergeAttentionReference } from "../dense/merge.ts";
import { newSoftmaxKernel, type SoftmaxKernel } from "../dense/softmax_wasm.ts";
import { treeAttentionReference, type TreeAttnShape, treeBase } from "./tree_attn.ts";

/** Which prefix rows the tree nodes attend. */
export interface PrefixView {
  /** Sink rows `[0, sinks)` (clipped to the prefix). */
  readonly sinks: number;
  /** The last `window` prefix rows (0: none; `Infinity` with `sinks: 0`: the whole prefix). */
  readonly window: number;
  /** Extra selected rows (ascending, unique, inside the prefix; a sparse selection's), merged with the above. */
  readonly selected?: readonly number[];
}

/** The whole prefix (the target's verify call). */
export const FULL_PREFIX: PrefixView = { sinks: 0, window: Infinity };

/**
 * The ascending prefix rows of `view` for a prefix of `base` rows: `[0, min(sinks, base))` ∪
 * `[max(0, base − window), base)` ∪ `selected`, each once.
 */
export const prefixRows = (view: PrefixView, base: number): Int32Array => {
  const keep = new Uint8Array(base);
  keep.fill(1, 0, Math.min(view.sinks, base));
  keep.fill(1, Math.max(0, base - Math.min(view.window, base)), base);
  for (const j of view.selected ?? []) if (j >= 0 && j < base) keep[j] = 1;
  const rows: number[] = [];
  for (let j = 0; j < base; j++) if (keep[j]) rows.push(j);
  return Int32Array.from(rows);
};

/**
 * The prefix part's GEMM path for rows given as ascending disjoint ranges `[a, b)` of the cache, read in place
 * (no gather): per KV head, the scores of its `g · seq` query rows (the heads of its group are consecutive in
 * `q [H, seq, D]`) against each range as one GEMM, one float64 softmax over all ranges per row, and `P · V` as
 * one GEMM per range, accumulated (the exponentials by dense's WebAssembly softmax kernel, `softmax_wasm.ts`). The same arithmetic as `dense.indexAttentionGemm` with every query seeing
 * every listed row, without its per-head copy of the listed K/V rows (which costs more than the GEMMs at long
 * prefixes). Returns `o f32 [H, seq, D]`, `lse f32 [H, seq]`; no rows: lse −Infinity.
 */
export const prefixRangesGemm = (
  gemm: Gemm,
  q: Float32Array,
  kc: Float32Array,
  vc: Float32Array,
  ranges: readonly (readonly [number, number])[],
  s: TreeAttnShape,
  scale: number,
): AttentionPart => {
  const { heads: H, kvHeads: KH, seq, headDim: D, capacity: C } = s;
  const g = H / KH, M = g * seq;
  const n = ranges.reduce((t, [a, b]) => t + (b - a), 0);
  const o = new Float32Array(H * seq * D), lse = new Float32Array(H * seq).fill(-Infinity);
  if (n === 0) return { o, lse };
  // the row softmax as dense's WebAssembly SIMD kernel over scores kept in its memory (as `dense.cacheAttn`'s
  // GEMM path), or the loop below without WebAssembly SIMD
  const wasm = softmaxKernel();
  const S = wasm ? wasm.scratch(M * n) : new Float32Array(M * n);
  const ob = new Float32Array(M * D), inv = new Float64Array(M);
  for (let kh = 0; kh < KH; kh++) {
    const Q = q.subarray(kh * M * D), kb = kh * C * D;
    let col = 0;
    for (const [a, b] of ranges) {
      gemm(false, true, M, b - a, D, scale, Q, D, kc.subarray(kb + a * D), D, 0, S.subarray(col), n);
      col += b - a;
    }
    for (let r = 0; r < M; r++) {
      const at = r * n;
      let m = -Infinity;
      for (let j = at; j < at + n; j++) if (S[j] > m) m = S[j];
      let l = 0;
      if (wasm) l = wasm.row(at, n, n);
      else {
        for (let j = at; j < at + n; j++) {
          const e = Math.exp(S[j] - m);
          S[j] = e;
          l += e;
        }
      }
      inv[r] = 1 / l;
      lse[kh * M + r] = m + Math.log(l);
    }
    col = 0;
    for (const [x, [a, b]] of ranges.entries()) {
      gemm(false, false, M, D, b - a, 1, S.subarray(col), n, vc.subarray(kb + a * D), D, x ? 1 : 0, ob, D);
      col += b - a;
    }
    for (let r = 0; r < M; r++) {
      for (let x = 0; x < D; x++) o[(kh * M + r) * D + x] = ob[r * D + x] * inv[r];
    }
  }
  return { o, lse };
};

let kernelInstance: SoftmaxKernel | null | undefined;
/** This module's WebAssembly softmax kernel (created on first use), or undefined without SIMD. */
const softmaxKernel = (): SoftmaxKernel | undefined => {
  if (kernelInstance === undefined) kernelInstance = newSoftmaxKernel() ?? null;
  return kernelInstance ?? undefined;
};

/** Ascending rows as maximal ranges `[a, b)`. */
const rangesOf = (rows: Int32Array): [number, number][] => {
  const out: [number, number][] = [];
  for (let i = 0; i < rows.length;) {
    let j = i;
    while (j + 1 < rows.length && rows[j + 1] === rows[j] + 1) j++;
    out.push([rows[i], rows[j] + 1]);
    i = j + 1;
  }
  return out;
};

/**
 * Verification attention of the last `s.seq` nodes of a tree (`parents`) whose rows are the last
 * `parents.length` of the `pos + seq` valid cache rows: prefix part over `prefixRows(view, base)` merged by
 * LSE with the tree part. `q f32 [H, seq, D]`, caches `f32 [KH, capacity, D]`. Returns `o f32 [H, seq, D]` and
 * `lse f32 [H, seq]`. With `gemm` both parts run their GEMM paths (f32 products, float64 softmax; a prefix of at
 * most 8 row ranges through {@link prefixRangesGemm}, a scattered selection through `dense.indexAttentionGemm`);
 * without, the float64 references. Throws `RangeError` for rows outside the cache, `InputError` (tree) for bad parents.
 */
export const verifyAttention = (
  q: Float32Array,
  kc: Float32Array,
  vc: Float32Array,
  parents: ArrayLike<number>,
  s: TreeAttnShape,
  pos: number,
  scale: number,
  view: PrefixView = FULL_PREFIX,
  gemm?: Gemm,
): AttentionPart => {
  const base = treeBase(pos, s.seq, parents.length, s.capacity);
  const tree = treeAttentionReference(q, kc, vc, parents, s, pos, scale, gemm);
  const rows = prefixRows(view, base);
  if (rows.length === 0) return tree;
  const ranges = rangesOf(rows);
  if (gemm && ranges.length <= 8) {
    // sinks + window, the full prefix: the ranges read in place
    const prefix = prefixRangesGemm(gemm, q, kc, vc, ranges, s, scale);
    return mergeAttentionReference([prefix, tree], s.heads, s.seq, s.headDim);
  }
  const p = indexAttnParams({ sink: 0, window: 0, scale, blockQ: 128 });
  const qBlocks = Math.ceil(s.seq / p.blockQ);
  const indices = new Int32Array(qBlocks * rows.length);
  for (let b = 0; b < qBlocks; b++) indices.set(rows, b * rows.length);
  const dm = {
    H: s.heads,
    Hk: s.kvHeads,
    seq: s.seq,
    kvSeq: s.capacity,
    off: pos,
    d: s.headDim,
    selHeads: 1,
    kCap: rows.length,
  };
  const prefix = gemm
    ? indexAttentionGemm(gemm, p, q, kc, vc, indices, dm)
    : indexAttentionReference(p, q, kc, vc, indices, dm);
  return mergeAttentionReference([prefix, tree], s.heads, s.seq, s.headDim);
};
