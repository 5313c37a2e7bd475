/**
 * The `squeezed` technique's graph inputs beyond the attention layout (`TechniqueInputs` of `@longctx/graph`):
 * the sizes of the prefix index's dims at a layer shape, for the planner, and speed inputs for `calibrate` —
 * never fidelity inputs, and not the method's clustering (ops/squeezed/index.ts builds that, by k-means).
 *
 * The speed index is the one benchmarks/device/squeezed_bench.ts times: the clustered keys cut into runs of
 * ⌊S / C⌋ consecutive keys (C = `clusterCount`, 5 % of the clustered keys by default), centroids their raw
 * means; τ is the `percentile` quantile of the call's own per-key scores (the query's lookup through the
 * labels, `lookupReference`), so a call keeps about `1 − percentile` of the clustered keys — the technique's
 * knob sweeps the kept share as the official global threshold does on real text.
 * @module
 */
import { Effect } from "effect";
import { type AttnDims, type HostTensor, hostTensor, TechniqueError } from "@longctx/graph";
import { lookupReference } from "./lookup.ts";
import { clusterCount, clusterCountL1, type SqueezedParams } from "./params.ts";

/** The fixed context of a decode graph at `dims`: the cache minus the call (`kvSeq − seq` tokens). */
const fixedOf = (dims: AttnDims): number => dims.kvSeq - dims.seq;

/**
 * Sizes of the prefix index's dims for `squeezedTechnique.graph(p, dims, "decode")`: `clusters` (`clusterCount`
 * of the fixed context `kvSeq − seq`), `clustered` (the fixed context minus `obsWindow`), `one`; with
 * `hierarchical`, `clustersL1` and `boundsL1` (= `clustersL1 + 1`). Throws a `RangeError` when the fixed
 * context is not longer than `obsWindow` (the graph itself fails with a typed error there).
 */
export const squeezedGraphDims = (p: SqueezedParams, dims: AttnDims): Readonly<Record<string, number>> => {
  const F = fixedOf(dims), C = clusterCount(p, F);
  const l1 = p.hierarchical ? clusterCountL1(p, F) : 0;
  return {
    clusters: C,
    clustered: F - p.obsWindow,
    one: 1,
    ...(p.hierarchical ? { clustersL1: l1, boundsL1: l1 + 1 } : {}),
  };
};

/** A speed index (see the module doc): per KV head the labels, sizes and raw-mean centroids of key runs. */
export interface SpeedIndex {
  /** The run (cluster) of each clustered key, `i32 [kvHeads, S]`. */
  readonly labels: Int32Array;
  /** Keys per cluster, `f32 [kvHeads, C]`. */
  readonly sizes: Float32Array;
  /** Raw-mean centroids, `f32 [kvHeads, C, headDim]`. */
  readonly centroids: Float32Array;
}

/**
 * The speed index of keys `k f32 [kvHeads, rows, headDim]` (a cache of `rows` rows per head): the first `S` keys
 * of each head cut into `C` runs of `⌊S / C⌋` consecutive keys (the last run takes the rest), centroids their raw
 * means. Throws a `RangeError` for `C` outside `[1, S]` or `S` beyond `rows`.
 */
export const runsIndex = (
  k: Float32Array,
  dm: {
    readonly Hk: number;
    readonly rows: number;
    readonly S: number;
    readonly C: number;
    readonly D: number;
  },
): SpeedIndex => {
  const { Hk, rows, S, C, D } = dm;
  if (!(C >= 1 && C <= S && S <= rows) || k.length < Hk * rows * D) {
    throw new RangeError(`a speed index of ${C} runs over ${S} of ${rows} keys (${k.length} values)`);
  }
  const run = Math.floor(S / C);
  const labels = new Int32Array(Hk * S), sizes = new Float32Array(Hk * C);
  const centroids = new Float32Array(Hk * C * D);
  for (let hk = 0; hk < Hk; hk++) {
    for (let i = 0; i < S; i++) {
      const c = Math.min(C - 1, Math.floor(i / run)), co = (hk * C + c) * D, ko = (hk * rows + i) * D;
      labels[hk * S + i] = c;
      sizes[hk * C + c]++;
      for (let t = 0; t < D; t++) centroids[co + t] += k[ko + t];
    }
    for (let c = 0; c < C; c++) {
      for (let t = 0; t < D; t++) centroids[(hk * C + c) * D + t] /= sizes[hk * C + c];
    }
  }
  return { labels, sizes, centroids };
};

/**
 * Every head's per-key scores of a call, sorted ascending: the queries `q f32 [heads, seq, headDim]` looked up
 * against `index` (`lookupReference`), each clustered key taking its cluster's score. A threshold at quantile
 * `x` of them keeps about `1 − x` of the clustered keys.
 */
export const sortedKeyScores = (
  scale: number,
  q: Float32Array,
  index: SpeedIndex,
  dm: {
    readonly H: number;
    readonly Hk: number;
    readonly seq: number;
    readonly S: number;
    readonly C: number;
    readonly D: number;
  },
): Float32Array => {
  const { H, Hk, seq, S, C, D } = dm, g = H / Hk;
  const score = lookupReference(scale, q, index.centroids, index.sizes, { H, Hk, seq, C, d: D });
  const perKey = new Float32Array(H * S);
  for (let h = 0; h < H; h++) {
    const lo = Math.floor(h / g) * S;
    for (let i = 0; i < S; i++) perKey[h * S + i] = score[h * C + index.labels[lo + i]];
  }
  return perKey.sort();
};

/**
 * Speed inputs of the flat decode graph (see the module doc) from calibrate's random `q f32 [heads, seq,
 * headDim]` and cache `k f32 [kvHeads, kvSeq, headDim]`: `centroids`, `sizes`, `labels`, `threshold`. Fails with
 * `TechniqueError` `bad-params` for `hierarchical` (no speed index of the two-level lookup) or a fixed context
 * not longer than `obsWindow`.
 */
export const squeezedSpeedInputs = (
  p: SqueezedParams,
  dims: AttnDims,
  qk: { readonly q: HostTensor; readonly k: HostTensor },
): Effect.Effect<Readonly<Record<string, HostTensor>>, TechniqueError> =>
  Effect.gen(function* () {
    const F = fixedOf(dims);
    if (p.hierarchical || F <= p.obsWindow) {
      return yield* new TechniqueError({
        reason: "bad-params",
        technique: "squeezed",
        message: p.hierarchical
          ? "squeezed: no speed index of the hierarchical lookup"
          : `squeezed: a fixed context of ${F} tokens is not longer than obsWindow ${p.obsWindow}`,
        hint: p.hierarchical
          ? "calibrate the flat lookup (hierarchical: false)"
          : "calibrate at a context longer than the observation window",
      });
    }
    const { heads: H, kvHeads: Hk, headDim: D, seq, kvSeq: cap } = dims;
    const C = clusterCount(p, F), S = F - p.obsWindow;
    const { labels, sizes, centroids } = runsIndex(qk.k.data as Float32Array, { Hk, rows: cap, S, C, D });
    // τ: the percentile of the call's per-key scores over every head and clustered key
    const perKey = sortedKeyScores(p.scale, qk.q.data as Float32Array, { labels, sizes, centroids }, {
      H,
      Hk,
      seq,
      S,
      C,
      D,
    });
    const tau = perKey[Math.min(perKey.length - 1, Math.floor(p.percentile * perKey.length))];
    return {
      centroids: hostTensor("f32", ["kvHeads", "clusters", "headDim"], [Hk, C, D], centroids),
      sizes: hostTensor("f32", ["kvHeads", "clusters"], [Hk, C], sizes),
      labels: hostTensor("i32", ["kvHeads", "clustered"], [Hk, S], labels),
      threshold: hostTensor("f32", ["one"], [1], Float32Array.of(tau)),
    };
  });
