/**
 * HiP parameters and the search geometry shared by `hip.mask` and the `hip` technique. Defaults follow the
 * official v1.1 code (DeepAuto-AI/hip-attention, `src/hip_attn/v1_1/attention2_draft_prefetch.py`,
 * `HiPAttentionArgs`; docs/REPRODUCE.md): query blocks of 64 scored on every second query, key blocks of 2,
 * k = 512 keys, 16 sink tokens, a 256-token sliding window, the first 3 layers dense, the decode mask refreshed
 * every 8 steps.
 *
 * Reference: HiP Attention (ICLR 2025, arXiv 2406.09827 v2), the hierarchical mask search.
 * @module
 */
import { Effect, Schema } from "effect";
import { decodeParamsSync, intParam } from "@longctx/graph";

/** The schema of {@link HipParams}: every field optional on input, the default filled in on decode. */
export type HipParamsSchema = Schema.Struct<{
  readonly blockQ: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly blockStrideQ: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly blockK: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly topK: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly sink: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly window: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly scale: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly denseLayers: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly refresh: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly workgroupMemory: Schema.withDecodingDefaultKey<Schema.Int>;
}>;

/** Parameters of the `hip` technique (each operator reads the ones it declares). */
export const HipParams: HipParamsSchema = Schema.Struct({
  /** Query rows per block: one mask per (query head, block); multiple of 16, at most 128. */
  blockQ: Schema.Int.check(
    Schema.isGreaterThanOrEqualTo(16),
    Schema.isLessThanOrEqualTo(128),
    Schema.isMultipleOf(16),
  ).pipe(Schema.withDecodingDefaultKey(Effect.succeed(64))),
  /** Score a child on every `blockStrideQ`-th query of the block (2: 32 of 64). */
  blockStrideQ: intParam(1, 16, 2),
  /** Keys per key block: the search's unit (2 in the official defaults). */
  blockK: intParam(1, 64, 2),
  /** k: keys selected per query block outside the sink and window (a multiple of `blockK`). */
  topK: intParam(0, 1 << 16, 512),
  /** Sink tokens `[0, sink)` every query attends. */
  sink: intParam(0, 1 << 16, 16),
  /** Sliding window in tokens: the query at position `p` attends `(p − window, p]`. */
  window: intParam(0, 1 << 20, 256),
  /** Softmax scale of the attention; 0 means 1/sqrt(headDim). The search ranks raw q·k. */
  scale: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0)),
  ),
  /** The first `denseLayers` layers run dense attention (official: 3 for LongBench, 4 for demos). */
  denseLayers: intParam(0, 1024, 3),
  /** Decode: the mask is searched again every `refresh` steps and reused in between. */
  refresh: intParam(1, 1 << 16, 8),
  /** The device's `maxComputeWorkgroupStorageSize` (bytes) kernels may use. */
  workgroupMemory: intParam(8192, 1 << 20, 32768),
}).check(
  // combinations the search cannot take, reported at the parameter they name (decodeTechniqueParams reads it)
  Schema.makeFilter((p) => {
    const bad = hipProblem(p);
    return bad === undefined ? true : { path: [bad.startsWith("blockQ") ? "blockQ" : "topK"], issue: bad };
  }),
);
/** Decoded HiP parameters. */
export type HipParams = typeof HipParams.Type;

/**
 * HiP parameters from a partial object, defaults filled. Throws a `ParamsError` naming the parameter for an
 * impossible value, an unknown key, or a combination the search cannot take (`topK` not a multiple of
 * `blockK`, more than 512 nodes, `blockQ` not a multiple of `blockStrideQ`).
 */
export const hipParams = (p: Partial<HipParams> = {}): HipParams => decodeParamsSync("hip", HipParams, p);

/** Why `p` cannot run (a message naming the parameter), or undefined. */
export const hipProblem = (
  p: Pick<HipParams, "topK" | "blockK" | "blockQ" | "blockStrideQ">,
): string | undefined => {
  if (p.topK % p.blockK !== 0) return `topK ${p.topK} is not a multiple of blockK ${p.blockK}`;
  if (p.topK / p.blockK > 512) return `topK / blockK = ${p.topK / p.blockK} nodes exceed 512`;
  if (p.blockQ % p.blockStrideQ !== 0) {
    return `blockQ ${p.blockQ} is not a multiple of blockStrideQ ${p.blockStrideQ}`;
  }
  return undefined;
};

/** The search region of a query block whose last query sits at position `pLast` (0-based). */
export interface HipRegion {
  /** First token of the region (= sink). */
  readonly start: number;
  /** Tokens in the region `[start, start + tokens)`: `max(0, pLast + 1 − window − sink)`. */
  readonly tokens: number;
  /** Key blocks of `blockK` tokens covering it (the last may be partial). */
  readonly blocks: number;
  /** Whether the whole region is taken (`tokens ≤ k`: no search). */
  readonly dense: boolean;
  /** Search rounds: ⌈log2 ⌈blocks / nodes⌉⌉ (0 when dense). */
  readonly rounds: number;
}

/** The search region of a block (HiP v1.1: `TSRC = max(0, maxpos − sliding_window − sink)`). */
export const hipRegion = (
  p: Pick<HipParams, "topK" | "blockK" | "sink" | "window">,
  pLast: number,
): HipRegion => {
  const tokens = Math.max(0, pLast + 1 - p.window - p.sink);
  const blocks = Math.ceil(tokens / p.blockK);
  const dense = tokens <= p.topK;
  const nodes = p.topK / p.blockK;
  const rounds = dense ? 0 : Math.ceil(Math.log2(Math.ceil(blocks / nodes)));
  return { start: p.sink, tokens, blocks, dense, rounds };
};
