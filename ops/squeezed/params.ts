/**
 * Squeezed Attention parameters and the geometry shared by `squeezed.lookup`, `squeezed.select`, the prefix
 * index and the `squeezed` technique. Defaults follow the official code (SqueezeAILab/SqueezedAttention,
 * `run_offline_clustering.sh`, `offline_clustering.py`, `squeezedattention/clustering.py`): clusters for 5 % of
 * the clustered keys, an observation window of the last 100 fixed-context tokens (never clustered, kept as one
 * pseudo-cluster), keys kept above the global threshold at the 0.9 quantile of the calibration scores (the run
 * script's value; the LongBench CLI defaults to 0.5), k-means with cosine assignment and at most 300 iterations.
 *
 * Reference: Squeezed Attention (arXiv 2411.09688); see ops/squeezed/README.md for the deviations.
 * @module
 */
import { Effect, Schema } from "effect";
import { decodeParamsSync, finiteParam, intParam } from "@longctx/graph";

/** The schema of {@link SqueezedParams}: every field optional on input, the default filled in on decode. */
export type SqueezedParamsSchema = Schema.Struct<{
  readonly percentClusters: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly obsWindow: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly percentile: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly gqa: Schema.withDecodingDefaultKey<Schema.Literals<readonly ["head", "union"]>>;
  readonly blockQ: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly scale: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly iterations: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly seed: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly workgroupMemory: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly splitKeys: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly hierarchical: Schema.withDecodingDefaultKey<Schema.Boolean>;
  readonly percentClustersL1: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly percentileL1: Schema.withDecodingDefaultKey<Schema.Finite>;
}>;

/** Parameters of the `squeezed` technique (each operator reads the ones it declares). */
export const SqueezedParams: SqueezedParamsSchema = Schema.Struct({
  /** Clusters per (layer, KV head), in percent of the clustered keys `S − obsWindow` (official 5). */
  percentClusters: finiteParam(0.01, 100, 5),
  /**
   * The last `obsWindow` fixed-context tokens: not clustered, their queries calibrate the threshold, and their
   * keys form one pseudo-cluster of score `1 / seq` at lookup (official 100).
   */
  obsWindow: intParam(1, 1 << 16, 100),
  /**
   * The knob: the quantile of the pooled calibration scores (every layer, KV head and clustered key) used as
   * the one global threshold τ; a key is kept when its cluster's score exceeds τ. Higher keeps fewer keys
   * (official run script 0.9; `LongBench/pred.py` default 0.5).
   */
  percentile: finiteParam(0, 0.999, 0.9),
  /**
   * GQA (the released kernels need as many KV heads as query heads): `"head"`, each query head keeps the keys
   * of its own clusters (per-query-head lists into the shared KV head); `"union"`, every query head of a group
   * attends the union of the group's kept keys.
   */
  gqa: Schema.Literals(["head", "union"]).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed("head" as const)),
  ),
  /** Query rows per index list of the sparse attention (`dense.indexCacheAttn`'s `blockQ`). */
  blockQ: intParam(16, 128, 64, 16),
  /** Softmax scale of the attention and of the centroid scores; 0 means 1/sqrt(headDim). */
  scale: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0)),
  ),
  /** k-means iterations at most (official 300, cuML's `max_iter`). */
  iterations: intParam(1, 10000, 300),
  /** k-means++ seed (official `random_state` 0). */
  seed: intParam(0, 2 ** 31 - 1, 0),
  /** The device's `maxComputeWorkgroupStorageSize` (bytes) the sparse attention may use; picks its key tile. */
  workgroupMemory: intParam(8192, 1 << 20, 32768),
  /**
   * Candidate keys per split of the fused decode attention (`squeezed.attend`; a multiple of 64, at most 4096);
   * 0 picks it from the call's size (`attendSplitKeys`).
   */
  splitKeys: intParam(0, 4096, 0, 64),
  /**
   * The two-level lookup: coarse (L1) clusters over the fine ones, the fine clusters of an L1 cluster looked
   * up only when it passes its own threshold (the official release simulates it with two flat lookups; ours
   * skips the dropped clusters' children). Needs an index built with it.
   */
  hierarchical: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(false))),
  /**
   * L1 clusters per (layer, KV head) in percent of the clustered keys (k-means of the fine centroids; the
   * official script's `--percent_clusters` in hierarchical mode, 1 % beside 5 % fine in the paper's setting).
   */
  percentClustersL1: finiteParam(0.01, 100, 1),
  /** The L1 threshold's percentile (official `percentile_lower`: `pred.py` default 0.7, the config's 0.5). */
  percentileL1: finiteParam(0, 0.999, 0.7),
});
/** Decoded Squeezed Attention parameters. */
export type SqueezedParams = typeof SqueezedParams.Type;

/**
 * Squeezed Attention parameters from a partial object, defaults filled. Throws a `ParamsError` naming the
 * parameter for an impossible value or an unknown key.
 */
export const squeezedParams = (p: Partial<SqueezedParams> = {}): SqueezedParams =>
  decodeParamsSync("squeezed", SqueezedParams, p);

/**
 * Clusters of a fixed context of `fixed` tokens: `⌊percentClusters / 100 · (fixed − obsWindow)⌋`, at least 1
 * and at most the clustered keys (official `int(percent · (S − obs))`, clamped so a short context still has one).
 * Throws a `RangeError` when the context is not longer than the observation window.
 */
export const clusterCount = (
  p: Pick<SqueezedParams, "percentClusters" | "obsWindow">,
  fixed: number,
): number => {
  const n = fixed - p.obsWindow;
  if (!Number.isInteger(fixed) || n < 1) {
    throw new RangeError(
      `a fixed context of ${fixed} tokens; squeezed needs more than obsWindow = ${p.obsWindow} tokens`,
    );
  }
  return Math.max(1, Math.min(n, Math.floor((p.percentClusters / 100) * n)));
};

/** L1 clusters of a fixed context of `fixed` tokens (as {@link clusterCount}, at most the fine clusters). */
export const clusterCountL1 = (
  p: Pick<SqueezedParams, "percentClusters" | "percentClustersL1" | "obsWindow">,
  fixed: number,
): number =>
  Math.min(
    clusterCount(p, fixed),
    clusterCount({ percentClusters: p.percentClustersL1, obsWindow: p.obsWindow }, fixed),
  );

/** The query-head → KV-head map of GQA: `⌊h / (heads / kvHeads)⌋`. */
export const kvHeadOf = (h: number, heads: number, kvHeads: number): number =>
  Math.floor(h / (heads / kvHeads));
