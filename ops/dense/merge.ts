/**
 * The exact merge of partial attentions by their log-sum-exp: attention over keys `A ∪ B` (disjoint) from the
 * attention over `A` and over `B` alone. This is the rule split-KV decoding, DistAttention (Infinite-LLM §4) and
 * LongSpec's prefix + tree verification rest on. CPU reference (float64); the GPU combine of the split-KV kernels
 * lives in `cache_attn.ts`.
 * @module
 */

/**
 * One partial attention over a block of keys, for `heads` query heads and `seq` queries:
 * `o f32 [heads, seq, headDim]`, normalised within the block (the block's own softmax · V), and
 * `lse f32 [heads, seq]`, the natural log of the block's sum of `exp(scaled score)`. A row that sees no key of
 * the block has `lse = −Infinity` (any value ≤ −1e38 counts as empty, as the GPU kernels write −3e38); its `o` is
 * ignored.
 */
export interface AttentionPart {
  /** `f32 [heads, seq, headDim]`, the block's normalised output. */
  readonly o: Float32Array;
  /** `f32 [heads, seq]`, natural-log sum of exp of the block's scaled scores; −Infinity for no key. */
  readonly lse: Float32Array;
}

/** An `lse` below this is an empty row (no key seen). */
export const EMPTY_LSE: number = -1e38;

/**
 * Merges partial attentions over disjoint key blocks into the attention over their union:
 * `lse = log Σ_b exp(lse_b)`, `o = Σ_b exp(lse_b − lse) · o_b`, accumulated in float64 with the running maximum
 * subtracted. Associative and order-independent up to rounding; empty parts (lse −Infinity) are skipped; a row
 * empty in every part comes out `o = 0`, `lse = −Infinity`. Shapes: every part `o [heads, seq, headDim]`,
 * `lse [heads, seq]`. Throws `RangeError` when a part's lengths do not match `heads·seq·headDim` / `heads·seq`.
 */
export const mergeAttentionReference = (
  parts: readonly AttentionPart[],
  heads: number,
  seq: number,
  headDim: number,
): AttentionPart => {
  const rows = heads * seq, D = headDim;
  for (const [b, p] of parts.entries()) {
    if (p.o.length !== rows * D || p.lse.length !== rows) {
      throw new RangeError(
        `part ${b}: o has ${p.o.length} values and lse ${p.lse.length}, expected ${rows * D} and ${rows} ` +
          `(heads ${heads} × seq ${seq} × headDim ${D})`,
      );
    }
  }
  const o = new Float32Array(rows * D), lse = new Float32Array(rows);
  const acc = new Float64Array(D);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (const p of parts) if (p.lse[r] > EMPTY_LSE && p.lse[r] > m) m = p.lse[r];
    if (m === -Infinity) {
      lse[r] = -Infinity;
      continue;
    }
    let l = 0;
    acc.fill(0);
    for (const p of parts) {
      if (!(p.lse[r] > EMPTY_LSE)) continue;
      const w = Math.exp(p.lse[r] - m);
      l += w;
      for (let x = 0; x < D; x++) acc[x] += w * p.o[r * D + x];
    }
    for (let x = 0; x < D; x++) o[r * D + x] = acc[x] / l;
    lse[r] = m + Math.log(l);
  }
  return { o, lse };
};
