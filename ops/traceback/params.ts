/**
 * Parameters of context traceback: AttnTrace (arXiv 2508.03793; official code `AttnTraceAttribution`) and
 * TracLLM (arXiv 2506.04202, USENIX Security 2025; official code `src/attribution/perturbation_based.py`), with
 * the official defaults (`shared/research/TECHNIQUES.md` §7): texts of 100 words, top 5 texts, each text scored
 * by the mean of its top 5 token weights, 30 subsamples of 40 % of the texts; TracLLM's scores STC, LOO (weight
 * 2) and denoised Shapley (top 20 % of 5 permutations' marginal contributions).
 * @module
 */
import { Effect, Schema } from "effect";
import { decodeParamsSync, finiteParam, intParam } from "@longctx/graph";

/** The schema of {@link TracebackWeightsParams}. */
export type TracebackWeightsParamsSchema = Schema.Struct<{
  readonly answerTokens: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly scale: Schema.withDecodingDefaultKey<Schema.Finite>;
}>;

/** Parameters of `traceback.weights`. */
export const TracebackWeightsParams: TracebackWeightsParamsSchema = Schema.Struct({
  /**
   * Answer tokens `A` at the end of the sequence: the query rows read are `seq − A − 1 … seq − 2`, the
   * positions that predict the answer tokens (AttnTrace's shift by one).
   */
  answerTokens: intParam(1, 1 << 20, 1),
  /** Softmax scale of the attention; 0 means 1/sqrt(headDim). */
  scale: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0)),
  ),
});
/** Parameters of `traceback.weights`. */
export type TracebackWeightsParams = typeof TracebackWeightsParams.Type;

/** The schema of {@link AttnTraceParams}. */
export type AttnTraceParamsSchema = Schema.Struct<{
  readonly topK: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly avgK: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly sampleRatio: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly rounds: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly words: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly seed: Schema.withDecodingDefaultKey<Schema.Int>;
}>;

/** Parameters of AttnTrace (official defaults). */
export const AttnTraceParams: AttnTraceParamsSchema = Schema.Struct({
  /** Texts reported (official K = 5). */
  topK: intParam(1, 1 << 16, 5),
  /** A text's score in one subsample: the mean of its `avgK` largest token weights (official 5). */
  avgK: intParam(1, 1 << 16, 5),
  /**
   * Fraction `q` of the texts in each subsample (official 0.4), drawn uniformly without replacement and kept
   * in document order; 1 runs one forward over every text (no subsampling: then `rounds` is 1).
   */
  sampleRatio: finiteParam(0.01, 1, 0.4),
  /** Subsamples `B` (official 30). */
  rounds: intParam(1, 10_000, 30),
  /** Words per text when a context is split into segments (official 100). */
  words: intParam(1, 1 << 16, 100),
  /** Seed of the subsampling RNG. */
  seed: intParam(0, 2 ** 31 - 1, 0),
});
/** Parameters of AttnTrace. */
export type AttnTraceParams = typeof AttnTraceParams.Type;

/** The schema of {@link TracLlmParams}. */
export type TracLlmParamsSchema = Schema.Struct<{
  readonly topK: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly scores: Schema.withDecodingDefaultKey<
    Schema.$Array<Schema.Literals<readonly ["stc", "loo", "shapley"]>>
  >;
  readonly looWeight: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly permutations: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly beta: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly words: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly seed: Schema.withDecodingDefaultKey<Schema.Int>;
}>;

/** Parameters of TracLLM (official defaults; `permutations` is the README's speed setting). */
export const TracLlmParams: TracLlmParamsSchema = Schema.Struct({
  /** Groups kept per level of the informed search, and texts reported (official K = 5). */
  topK: intParam(1, 1 << 16, 5),
  /** Score functions ensembled (official: STC, LOO and denoised Shapley). */
  scores: Schema.Array(Schema.Literals(["stc", "loo", "shapley"])).check(Schema.isMinLength(1)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(["stc", "loo", "shapley"] as const)),
  ),
  /** Weight of the LOO score in the max-ensemble (official w = 2; the others weigh 1). */
  looWeight: finiteParam(0, 1000, 2),
  /** Monte-Carlo permutations of denoised Shapley (official 5 in the class and README, 20 in `main.py`). */
  permutations: intParam(1, 1000, 5),
  /** Denoising: a group's Shapley score is the mean of its top `beta` share of marginal contributions (0.2). */
  beta: finiteParam(0.01, 1, 0.2),
  /** Words per text when a context is split into segments (official 100). */
  words: intParam(1, 1 << 16, 100),
  /** Seed of the permutations. */
  seed: intParam(0, 2 ** 31 - 1, 0),
});
/** Parameters of TracLLM. */
export type TracLlmParams = typeof TracLlmParams.Type;

/** `traceback.weights` parameters, defaults filled; throws a `ParamsError` naming a bad field. */
export const tracebackWeightsParams = (p: Partial<TracebackWeightsParams> = {}): TracebackWeightsParams =>
  decodeParamsSync("traceback.weights", TracebackWeightsParams, p);
/** AttnTrace parameters, defaults filled; throws a `ParamsError` naming a bad field. */
export const attnTraceParams = (p: Partial<AttnTraceParams> = {}): AttnTraceParams =>
  decodeParamsSync("attntrace", AttnTraceParams, p);
/** TracLLM parameters, defaults filled; throws a `ParamsError` naming a bad field. */
export const tracLlmParams = (p: Partial<TracLlmParams> = {}): TracLlmParams =>
  decodeParamsSync("tracllm", TracLlmParams, p);
