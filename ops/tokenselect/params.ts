/**
 * TokenSelect parameters and the list geometry shared by `tokenselect.select`, `tokenselect.compact` and the
 * `tokenselect` technique. Defaults follow the authors' code (pzs19/TokenSelect, `config/llama-token-retrieval.yaml`
 * and `patch()` in `patcher/token_retrieval.py`): 128 initial (sink) tokens, a 512-token local window, 2048
 * selected tokens, selection queries rotated to `nLocal + j` and averaged over the chunk, keys positioned by
 * their index in the selected list (compacted positions), no smoothing, prefill in chunks of at most 512 queries.
 *
 * Reference: TokenSelect (EMNLP 2025, arXiv 2411.02886); see ops/tokenselect/README.md for the deviations.
 * @module
 */
import { Effect, Schema } from "effect";
import { decodeParamsSync, intParam } from "@longctx/graph";

/** The schema of {@link TokenSelectParams}: every field optional on input, the default filled in on decode. */
export type TokenSelectParamsSchema = Schema.Struct<{
  readonly nInit: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly nLocal: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly topK: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly kernelSize: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly positions: Schema.withDecodingDefaultKey<Schema.Literals<readonly ["compacted", "original"]>>;
  readonly headMap: Schema.withDecodingDefaultKey<Schema.Literals<readonly ["grouped", "modulo"]>>;
  readonly scale: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly denseLayers: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly selectionCache: Schema.withDecodingDefaultKey<Schema.Boolean>;
  readonly cacheThreshold: Schema.withDecodingDefaultKey<Schema.Finite>;
}>;

/** Parameters of the `tokenselect` technique (each operator reads the ones it declares). */
export const TokenSelectParams: TokenSelectParamsSchema = Schema.Struct({
  /** Initial (sink) tokens `[0, nInit)` every query attends; never candidates (official 128). */
  nInit: intParam(0, 1 << 16, 128),
  /**
   * Local window: the last `nLocal` cached tokens (this call's included) are attended and never candidates
   * (official 512). A call (decode step or prefill chunk) may hold at most `nLocal` queries.
   */
  nLocal: intParam(1, 1 << 16, 512),
  /** k: tokens selected per layer (one list shared by every head) outside the sink and the window (official 2048). */
  topK: intParam(1, 1 << 17, 2048),
  /**
   * 1-D max-pool of the voted scores before top-k (stride 1, padding ⌊(kernelSize − 1) / 2⌋, as the official
   * code: an even size shortens the pooled list by one, so the last candidate is never picked); 0 or 1: off
   * (the official server default; its benchmarks set 0–128 per task).
   */
  kernelSize: intParam(0, 1024, 0),
  /**
   * `"compacted"` (the paper's and the official code's, whose keys are cached without RoPE): the attended
   * tokens take their index in the attended list as position, so no distance exceeds `nInit + topK + nLocal`
   * (the length extrapolation); `"original"`: their own positions.
   */
  positions: Schema.Literals(["compacted", "original"]).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed("compacted" as const)),
  ),
  /**
   * KV head scored for query head `h` in the selection: `"grouped"`, `⌊h / (heads / kvHeads)⌋` (GQA, the
   * paper); `"modulo"`, `h mod kvHeads` (the released kernel, bug-compatible).
   */
  headMap: Schema.Literals(["grouped", "modulo"]).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed("grouped" as const)),
  ),
  /** Softmax scale of the attention; 0 means 1/sqrt(headDim). The selection softmax is unscaled (official). */
  scale: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0)),
  ),
  /** The first `denseLayers` layers run dense attention (official: none; every layer selects). */
  denseLayers: intParam(0, 1024, 0),
  /**
   * The Selection Cache (paper): a call whose selection query `q̄` (all heads, flattened) has cosine similarity
   * ≥ `cacheThreshold` with the one of the layer's last selection reuses that selection. Off by default, as
   * in the released code (`QUERY_CACHE = False`).
   */
  selectionCache: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(false))),
  /** The Selection Cache's cosine threshold θ (official 0.9 for every layer); > 1 never reuses. */
  cacheThreshold: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(-1), Schema.isLessThanOrEqualTo(2)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0.9)),
  ),
});
/** Decoded TokenSelect parameters. */
export type TokenSelectParams = typeof TokenSelectParams.Type;

/**
 * TokenSelect parameters from a partial object, defaults filled. Throws a `ParamsError` naming the parameter for
 * an impossible value or an unknown key.
 */
export const tokenSelectParams = (p: Partial<TokenSelectParams> = {}): TokenSelectParams =>
  decodeParamsSync("tokenselect", TokenSelectParams, p);

/** Rows of the attended list once the context outgrows it: `nInit + topK + nLocal` tokens. */
export const listRows = (p: Pick<TokenSelectParams, "nInit" | "topK" | "nLocal">): number =>
  p.nInit + p.topK + p.nLocal;

/** The selection geometry of a call of `seq` queries at position `pos` (`n = pos + seq` cached tokens). */
export interface SelectGeometry {
  /** Cached tokens, this call's included. */
  readonly n: number;
  /** Whether every cached token is attended (`n ≤ nInit + topK + nLocal`: no selection, official rule). */
  readonly dense: boolean;
  /** Candidates `[nInit, n − nLocal)` (0 when dense). */
  readonly candidates: number;
  /** Entries of the (pooled) score list top-k picks from (candidates, one fewer for an even kernelSize). */
  readonly pooled: number;
  /** Rows of the attended list: `n` when dense, else `nInit + topK + nLocal`. */
  readonly rows: number;
}

/** The geometry of a call (see {@link SelectGeometry}). */
export const selectGeometry = (
  p: Pick<TokenSelectParams, "nInit" | "topK" | "nLocal" | "kernelSize">,
  pos: number,
  seq: number,
): SelectGeometry => {
  const n = pos + seq, full = listRows(p);
  if (n <= full) return { n, dense: true, candidates: 0, pooled: 0, rows: n };
  const candidates = n - p.nLocal - p.nInit;
  const ks = p.kernelSize;
  const pooled = ks > 1 ? candidates + 2 * Math.floor((ks - 1) / 2) - ks + 1 : candidates;
  return { n, dense: false, candidates, pooled, rows: full };
};

/** The KV head the selection scores query head `h` against (see `headMap`). */
export const selectKvHead = (
  headMap: TokenSelectParams["headMap"],
  h: number,
  heads: number,
  kvHeads: number,
): number => (headMap === "modulo" ? h % kvHeads : Math.floor(h / (heads / kvHeads)));
