/**
 * Fidelity metrics on model outputs: per-token log-probabilities and perplexity of a document, and
 * KL(dense ‖ other) with top-1 agreement between two runs (e.g. dense attention against a sparse pipeline).
 *
 * Everything works from final hidden states `[seq, nEmbd]` (18 MB for 8K tokens) and computes logits in row
 * chunks, so full `[seq, vocab]` logits (1.6 GB at 8K) are never held. Sums are in f64.
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Data, Effect } from "effect";
import { type ErrorFields, ShapeError, type TaggedErrorClass } from "@longctx/graph";
import type { AttentionFn, ForwardOptions, LlamaModel } from "./llama.ts";

/** The fields of a {@link NonFiniteError}. */
export interface NonFiniteErrorFields extends ErrorFields {
  /** The step that produced it ("prefill, layer 3 attention inputs (q)", "decode step 2 logits", …). */
  readonly where: string;
  /** The layer, when one is known. */
  readonly layer?: number;
  /** Flat index of the first bad element. */
  readonly index: number;
  /** Its value (NaN, Infinity or -Infinity). */
  readonly value: number;
}
/** @internal */
const NonFiniteErrorBase: TaggedErrorClass<"NonFiniteError", NonFiniteErrorFields> = Data.TaggedError(
  "NonFiniteError",
)<NonFiniteErrorFields>;

/**
 * A NaN or infinity in the model's numbers: `where` says which step produced it (e.g. "prefill, layer 3
 * attention inputs (q)", "decode step 2 logits", "perplexity (dense)"), `layer` the layer when one is known,
 * `index` and `value` the first bad element. Metrics never pass on such values: they fail with this error.
 */
export class NonFiniteError extends NonFiniteErrorBase {}

/** The hint of every {@link NonFiniteError}. */
export const NON_FINITE_HINT =
  "the model's weights or hyper-parameters are corrupt or overflow f32 (check the file: fetch it again), or the " +
  "attention pipeline named there is broken; rerun with --pipeline dense to tell them apart";

/** Index of the first NaN or ±Infinity in `a`, or -1. */
export const firstNonFinite = (a: ArrayLike<number>): number => {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
};

/** The error for `a[index]` at `where` (see {@link NonFiniteError}). */
export const nonFinite = (
  where: string,
  a: ArrayLike<number>,
  index: number,
  layer?: number,
): NonFiniteError =>
  new NonFiniteError({
    where,
    layer,
    index,
    value: a[index],
    message: `${a[index]} at element ${index} of ${where}`,
    hint: NON_FINITE_HINT,
  });

/** Succeed when every value of `a` is finite; else fail with {@link NonFiniteError} naming `where`. */
export const assertFinite = (
  a: ArrayLike<number>,
  where: string,
  layer?: number,
): Effect.Effect<void, NonFiniteError> => {
  const i = firstNonFinite(a);
  return i < 0 ? Effect.void : Effect.fail(nonFinite(where, a, i, layer));
};

/**
 * Wrap an attention function so each call checks its inputs (`q`, and the `kvLen` valid rows of `k`, `v` per
 * KV head) and its output for NaN/∞, recording the first failure (the forward itself cannot fail from inside
 * the callback). `phase()` names the step ("prefill", "decode step 3"). `take()` returns and clears the
 * recorded error: a bad input of layer `l` was produced by layer `l − 1` (or the embeddings for layer 0), a
 * bad output by layer `l`'s attention.
 */
export const finiteAttention = (
  attention: AttentionFn,
  phase: () => string,
): { readonly attention: AttentionFn; take(): NonFiniteError | undefined } => {
  let first: NonFiniteError | undefined;
  const wrapped: AttentionFn = (q, k, v, ctx) => {
    if (first === undefined) {
      const at = `${phase()}, layer ${ctx.layer}`;
      const prev = ctx.layer === 0 ? "the token embeddings" : `layer ${ctx.layer - 1}`;
      const qi = firstNonFinite(q);
      if (qi >= 0) first = nonFinite(`${at} attention input q (produced by ${prev})`, q, qi, ctx.layer);
      for (let g = 0; g < ctx.kvHeads && first === undefined; g++) {
        for (const [name, t] of [["k", k], ["v", v]] as const) {
          const rows = t.subarray(
            g * ctx.kvStride * ctx.headDim,
            (g * ctx.kvStride + ctx.kvLen) * ctx.headDim,
          );
          const i = firstNonFinite(rows);
          if (i >= 0 && first === undefined) {
            first = nonFinite(`${at} attention input ${name} (produced by ${prev})`, rows, i, ctx.layer);
          }
        }
      }
    }
    const o = attention(q, k, v, ctx);
    if (first === undefined) {
      const oi = firstNonFinite(o);
      if (oi >= 0) first = nonFinite(`${phase()}, layer ${ctx.layer} attention output`, o, oi, ctx.layer);
    }
    return o;
  };
  return {
    attention: wrapped,
    take: () => {
      const e = first;
      first = undefined;
      return e;
    },
  };
};

/**
 * Fail with {@link NonFiniteError} when any number of a metrics record (perplexities, KL, agreement, …) is
 * NaN or infinite; otherwise return it unchanged. `what` names the record ("document comparison").
 */
export const assertFiniteMetrics = <M extends object>(
  metrics: M,
  what: string,
): Effect.Effect<M, NonFiniteError> => {
  for (const [k, v] of Object.entries(metrics)) {
    if (typeof v === "number" && !Number.isFinite(v)) {
      return Effect.fail(
        new NonFiniteError({
          where: `${what}: ${k}`,
          index: 0,
          value: v,
          message: `${k} = ${v} in the ${what}`,
          hint: NON_FINITE_HINT,
        }),
      );
    }
  }
  return Effect.succeed(metrics);
};

/** log Σ exp(row[start … start+n−1]) in f64. */
export const logSumExp = (
  row: ArrayLike<number>,
  start: number = 0,
  n: number = row.length - start,
): number => {
  let mx = -Infinity;
  for (let j = start; j < start + n; j++) if (row[j] > mx) mx = row[j];
  if (mx === -Infinity) return -Infinity;
  let s = 0;
  for (let j = start; j < start + n; j++) s += Math.exp(row[j] - mx);
  return mx + Math.log(s);
};

/**
 * KL(P ‖ Q) in nats between the softmax distributions of two logit rows `p`, `q` (each `n` values at
 * `start`): `Σ_v P(v) (log P(v) − log Q(v))`. Non-negative up to rounding; 0 iff the rows differ by a constant.
 */
export const klDivergence = (
  p: ArrayLike<number>,
  q: ArrayLike<number>,
  start: number = 0,
  n: number = p.length - start,
): number => {
  const lp = logSumExp(p, start, n);
  const lq = logSumExp(q, start, n);
  let kl = 0;
  for (let j = start; j < start + n; j++) {
    const a = p[j] - lp;
    kl += Math.exp(a) * (a - (q[j] - lq));
  }
  return Math.max(kl, 0);
};

const argmaxAt = (row: ArrayLike<number>, start: number, n: number): number => {
  let best = 0;
  for (let j = 1; j < n; j++) if (row[start + j] > row[start + best]) best = j;
  return best;
};

/** Options for the document metrics. */
export interface DocumentOptions extends ForwardOptions {
  /** Prefill chunk in tokens (default 2048). */
  readonly chunk?: number;
  /** Rows of logits computed at once (default 256: 50 MB at vocab 49152). */
  readonly logitRows?: number;
}

/**
 * Run a whole document through the model (fresh KV cache, chunked prefill).
 * @returns final hidden states `[tokens.length, nEmbd]` f32.
 * Fails with `ShapeError` for an empty document or out-of-range ids.
 */
export const documentHidden = (
  model: LlamaModel,
  tokens: readonly number[],
  options: DocumentOptions = {},
): Effect.Effect<Float32Array, ShapeError> =>
  Effect.gen(function* () {
    if (tokens.length === 0) {
      return yield* Effect.fail(
        new ShapeError({ message: "empty document", hint: "pass at least 2 tokens" }),
      );
    }
    const E = model.config.nEmbd;
    const chunk = options.chunk ?? 2048;
    const cache = model.newCache(tokens.length);
    const out = new Float32Array(tokens.length * E);
    for (let s = 0; s < tokens.length; s += chunk) {
      const h = yield* model.forward(tokens.slice(s, s + chunk), cache, options);
      out.set(h, s * E);
    }
    return out;
  });

/**
 * Log-probabilities of each next token: `out[i] = log p(tokens[i+1] | tokens[0…i])` (nats), from the hidden
 * states of {@link documentHidden}. `hidden` is `[tokens.length, nEmbd]`; the result has `tokens.length − 1`
 * entries (f64).
 */
export const logProbsFromHidden = (
  model: LlamaModel,
  hidden: Float32Array,
  tokens: readonly number[],
  logitRows = 256,
): Float64Array => {
  const V = model.config.vocab;
  const n = tokens.length - 1;
  const out = new Float64Array(Math.max(n, 0));
  for (let r0 = 0; r0 < n; r0 += logitRows) {
    const rows = Math.min(logitRows, n - r0);
    const lg = model.logits(hidden, r0, rows);
    for (let r = 0; r < rows; r++) out[r0 + r] = lg[r * V + tokens[r0 + r + 1]] - logSumExp(lg, r * V, V);
  }
  return out;
};

/** Perplexity `exp(−mean(logProbs))` of per-token log-probabilities (nats). NaN for an empty array. */
export const perplexity = (logProbs: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < logProbs.length; i++) s += logProbs[i];
  return Math.exp(-s / logProbs.length);
};

/**
 * Document perplexity and per-token log-probabilities (one chunked forward pass).
 * Fails with `ShapeError` for a document of fewer than 2 tokens or out-of-range ids.
 */
export const documentPerplexity = (
  model: LlamaModel,
  tokens: readonly number[],
  options: DocumentOptions = {},
): Effect.Effect<{ perplexity: number; logProbs: Float64Array }, ShapeError> =>
  Effect.gen(function* () {
    if (tokens.length < 2) {
      return yield* Effect.fail(
        new ShapeError({ message: `${tokens.length} tokens`, hint: "perplexity needs at least 2 tokens" }),
      );
    }
    const h = yield* documentHidden(model, tokens, options);
    const logProbs = logProbsFromHidden(model, h, tokens, options.logitRows);
    return { perplexity: perplexity(logProbs), logProbs };
  });

/** KL and top-1 agreement between two runs. */
export interface RunComparison {
  /** Mean over positions of KL(P_ref ‖ P_other), nats. */
  readonly meanKl: number;
  /** Largest per-position KL, nats. */
  readonly maxKl: number;
  /** Per-position KL `[rows]`, nats. */
  readonly kl: Float64Array;
  /** Fraction of positions whose argmax token agrees, in [0, 1]. */
  readonly top1Agreement: number;
}

/**
 * Compare two runs' next-token distributions position by position from their hidden states
 * (`[rows, nEmbd]` each, e.g. dense vs sparse attention on one document).
 * Fails with `ShapeError` when the two hidden-state arrays differ in size or are not whole rows.
 */
export const compareHidden = (
  model: LlamaModel,
  hiddenRef: Float32Array,
  hiddenOther: Float32Array,
  logitRows = 256,
): Effect.Effect<RunComparison, ShapeError> =>
  Effect.gen(function* () {
    const E = model.config.nEmbd;
    const V = model.config.vocab;
    if (hiddenRef.length !== hiddenOther.length || hiddenRef.length % E !== 0 || hiddenRef.length === 0) {
      return yield* Effect.fail(
        new ShapeError({
          message: `hidden sizes ${hiddenRef.length} and ${hiddenOther.length} (nEmbd ${E})`,
          hint: "compare runs over the same tokens",
        }),
      );
    }
    const rowsAll = hiddenRef.length / E;
    const kl = new Float64Array(rowsAll);
    let agree = 0;
    for (let r0 = 0; r0 < rowsAll; r0 += logitRows) {
      const rows = Math.min(logitRows, rowsAll - r0);
      const a = model.logits(hiddenRef, r0, rows);
      const b = model.logits(hiddenOther, r0, rows);
      for (let r = 0; r < rows; r++) {
        kl[r0 + r] = klDivergence(a, b, r * V, V);
        if (argmaxAt(a, r * V, V) === argmaxAt(b, r * V, V)) agree++;
      }
    }
    let sum = 0, mx = 0;
    for (const x of kl) {
      sum += x;
      if (x > mx || Number.isNaN(x)) mx = Number.isNaN(mx) ? mx : x;
    }
    return { meanKl: sum / rowsAll, maxKl: mx, kl, top1Agreement: agree / rowsAll };
  });

/** Logit-level comparison of two row sets `[rows, n]` (e.g. ours vs a reference): KL and top-1, in f64. */
export const compareLogits = (ref: Float32Array, other: Float32Array, n: number): RunComparison => {
  const rowsAll = ref.length / n;
  const kl = new Float64Array(rowsAll);
  let agree = 0;
  for (let r = 0; r < rowsAll; r++) {
    kl[r] = klDivergence(ref, other, r * n, n);
    if (argmaxAt(ref, r * n, n) === argmaxAt(other, r * n, n)) agree++;
  }
  let sum = 0, mx = 0;
  for (const x of kl) {
    sum += x;
    if (x > mx || Number.isNaN(x)) mx = Number.isNaN(mx) ? mx : x; // a NaN KL stays visible in maxKl
  }
  return { meanKl: sum / rowsAll, maxKl: mx, kl, top1Agreement: agree / rowsAll };
};
