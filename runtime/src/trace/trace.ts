/**
 * Context traceback on the graph forward: which texts of a long context produced an answer. AttnTrace runs one
 * forward per subsample with every layer's attention traced (`@longctx/ops` `traceback.tracebackGraph`: dense
 * attention plus `traceback.weights`); TracLLM's value function is the teacher-forced log-probability of the
 * answer, run as a prefill and an answer call on the KV cache.
 *
 * References: AttnTrace (arXiv 2508.03793), official `AttnTraceAttribution`; TracLLM (arXiv 2506.04202),
 * official `PerturbationBasedAttribution` and its prompt (`wrap_prompt`). See ops/traceback/README.md.
 * @module
 */
import { Effect } from "effect";
import { type Graph, InputError, type LongctxError } from "@longctx/graph";
import { traceback } from "@longctx/ops";
import type { GraphLlama, KvState } from "../model/llama_graph.ts";
import type { TextTokenizer } from "../model/tokenizer.ts";
import { logSumExp } from "../model/metrics.ts";

/** The instruction around the context (after TracLLM's and AttnTrace's QA prompt). */
export const TRACE_INSTRUCTION: string =
  "You are a helpful assistant, below is a query from a user and some relevant " +
  "contexts. Answer the query given the information in those contexts. Your answer should be short and concise.";

/** A traceback prompt in token ids: the fixed parts and each text, so any subset of texts can be assembled. */
export interface TracePrompt {
  /** System turn, the user turn's instruction and `"\n\nContexts:"`. */
  readonly prefix: readonly number[];
  /** Each text as `encodeOrdinary(" " + text)`. */
  readonly texts: readonly (readonly number[])[];
  /** `"\n\nQuery: " + question`, the end of the user turn and the assistant prompt. */
  readonly suffix: readonly number[];
}

/**
 * The chat prompt of `question` over `texts` (SmolLM2's ChatML: default system turn, user turn holding the
 * instruction, the texts joined by spaces and the question, assistant prompt), each part tokenized apart so a
 * text's tokens are the same in every subset (the byte-level pre-tokenizer splits before a space anyway).
 * Fails with `InputError` for an empty question, no texts, or a tokenizer without ChatML tokens.
 */
export const tracePrompt = (
  tok: TextTokenizer,
  question: string,
  texts: readonly string[],
): Effect.Effect<TracePrompt, InputError> =>
  Effect.gen(function* () {
    if (question.trim() === "") {
      return yield* new InputError({ message: "empty question", hint: 'pass --question "…"' });
    }
    if (texts.length === 0) {
      return yield* new InputError({
        message: "the context has no text to trace",
        hint: "pass a document with at least one word",
      });
    }
    // encodeChat's turns: <|im_start|> + encodeOrdinary(role + "\n" + content) + <|im_end|> + encodeOrdinary("\n")
    const head = yield* tok.encodeChat([{ role: "user", content: "x" }], false);
    const [imStart] = tok.encode("<|im_start|>"), [imEnd] = tok.encode("<|im_end|>");
    const userAt = head.lastIndexOf(imStart);
    if (userAt < 0 || !tok.controlIds.has(imStart) || !tok.controlIds.has(imEnd)) {
      return yield* new InputError({
        message: "the tokenizer has no ChatML turn tokens",
        hint: "use a ChatML model (SmolLM2)",
      });
    }
    const prefix = [
      ...head.slice(0, userAt + 1),
      ...tok.encodeOrdinary(`user\n${TRACE_INSTRUCTION}\n\nContexts:`),
    ];
    const suffix = [
      ...tok.encodeOrdinary(`\n\nQuery: ${question.trim()}`),
      imEnd,
      ...tok.encodeOrdinary("\n"),
      imStart,
      ...tok.encodeOrdinary("assistant\n"),
    ];
    return { prefix, texts: texts.map((t) => tok.encodeOrdinary(` ${t}`)), suffix };
  });

/** A prompt holding some texts: its ids and each text's token range `[start, end)`. */
export interface Assembled {
  /** Prompt ids (without the answer). */
  readonly ids: number[];
  /** Token range of each of the subset's texts, in the subset's order. */
  readonly spans: readonly (readonly [number, number])[];
}

/** The prompt with the texts `subset` (indices into `p.texts`, kept in the order given). */
export const assemble = (p: TracePrompt, subset: readonly number[]): Assembled => {
  const ids = [...p.prefix];
  const spans: [number, number][] = [];
  for (const t of subset) {
    const s = ids.length;
    ids.push(...p.texts[t]);
    spans.push([s, ids.length]);
  }
  ids.push(...p.suffix);
  return { ids, spans };
};

/** Tokens of the full prompt (every text) plus `answer`. */
export const fullLength = (p: TracePrompt, answer: readonly number[]): number =>
  p.prefix.length + p.texts.reduce((a, t) => a + t.length, 0) + p.suffix.length + answer.length;

/** One AttnTrace subsample: its texts and their scores (`traceback.TraceRound` of `@longctx/ops`). */
export type TraceRound = traceback.TraceRound;

/** An `InputError` for an answer of no tokens (AttnTrace has no rows to read, TracLLM no value). */
const needAnswer = (answer: readonly number[]): Effect.Effect<void, InputError> =>
  answer.length > 0 ? Effect.void : Effect.fail(
    new InputError({ message: "empty answer", hint: "pass --answer, or let trace generate one" }),
  );

/** AttnTrace's result. */
export interface AttnTraceResult {
  /** Per text, its final score (mean over the subsamples that held it; 0 if never sampled). */
  readonly scores: Float64Array;
  /** The `topK` texts, best first. */
  readonly top: readonly number[];
  /** Each subsample's texts and scores. */
  readonly rounds: readonly TraceRound[];
  /** Forwards run. */
  readonly forwards: number;
  /** Wall time of the forwards and scoring, ms. */
  readonly ms: number;
}

/** Run `use` with a KV cache for `capacity` tokens (reused across calls: length reset per sequence), then free it. */
const withCache = <A, E>(
  g: GraphLlama,
  capacity: number,
  use: (cache: KvState) => Effect.Effect<A, E>,
): Effect.Effect<A, E | LongctxError> =>
  Effect.acquireUseRelease(g.newCache(capacity), use, (c) => Effect.sync(() => c.release()));

/**
 * AttnTrace on the graph forward (official defaults in `p`): for each subsample of the texts (`traceback.
 * sampleTexts`), one prefill of prompt + answer from position 0 with every layer's attention traced; the token
 * weights (mean over layers of `traceback.weights`, itself the mean over heads and the answer-predicting rows)
 * score each text by its `avgK` largest weights; a text's final score is its mean over the subsamples that held
 * it. `answer` is the answer's ids (at least one). `onRound` sees each subsample's done count. Fails with
 * `InputError` for an empty answer and with the forward's errors (a sequence beyond the cache or the backend).
 */
export const attnTrace = (
  g: GraphLlama,
  prompt: TracePrompt,
  answer: readonly number[],
  p: traceback.AttnTraceParams,
  onRound?: (done: number, total: number) => void,
): Effect.Effect<AttnTraceResult, LongctxError> =>
  Effect.gen(function* () {
    yield* needAnswer(answer);
    const t0 = performance.now();
    const subsets = traceback.sampleTexts(prompt.texts.length, p);
    const graph: Graph = yield* traceback.tracebackGraph(answer.length);
    const rounds: traceback.TraceRound[] = [];
    const L = g.config.nLayer;
    yield* withCache(g, fullLength(prompt, answer), (cache) =>
      Effect.gen(function* () {
        for (const subset of subsets) {
          const a = assemble(prompt, subset), ids = [...a.ids, ...answer];
          const w = new Float64Array(ids.length);
          cache.length = 0;
          yield* g.forward(ids, cache, {
            logits: "none",
            attentionGraph: () => graph,
            readOutputs: ["trace"],
            onOutputs: (layers) => {
              for (const l of layers) {
                const t = l.trace;
                if (t) { for (let j = 0; j < t.length; j++) w[j] += t[j] / L; }
              }
            },
          });
          rounds.push({
            texts: subset,
            scores: a.spans.map(([s, e]) => traceback.textScore(w, s, e, p.avgK)),
          });
          onRound?.(rounds.length, subsets.length);
        }
      }));
    const scores = traceback.aggregateRounds(prompt.texts.length, rounds);
    return {
      scores,
      top: traceback.topTexts(scores, p.topK),
      rounds,
      forwards: subsets.length,
      ms: performance.now() - t0,
    };
  });

/**
 * TracLLM's value function on the graph forward: `v(S) = Σ_i log p(answer_i | prompt(S), answer_<i)` in nats,
 * teacher-forced: the prompt of the texts `S` but its last token as a prefill (no logits), then its last token
 * and the answer but its last token as one call at that offset with all-position logits, each row's
 * log-softmax read at the next answer token. Uses (and resets) `cache`, which must hold the full prompt and the
 * answer.
 */
export const answerLogProb = (
  g: GraphLlama,
  cache: KvState,
  prompt: TracePrompt,
  answer: readonly number[],
): traceback.ValueFn<LongctxError> =>
(subset) =>
  Effect.gen(function* () {
    const { ids } = assemble(prompt, subset);
    cache.length = 0;
    if (ids.length > 1) yield* g.forward(ids.slice(0, -1), cache, { logits: "none" });
    const rows = [ids[ids.length - 1], ...answer.slice(0, -1)];
    const logits = yield* g.forward(rows, cache, { logits: "all" });
    const V = g.config.vocab;
    let sum = 0;
    for (let i = 0; i < answer.length; i++) sum += logits[i * V + answer[i]] - logSumExp(logits, i * V, V);
    return sum;
  });

/** TracLLM's result. */
export interface TracLlmRunResult {
  /** Per text, its ensembled score; texts no search kept: `-Infinity`. */
  readonly scores: Float64Array;
  /** The `topK` texts, best first. */
  readonly top: readonly number[];
  /** Value-function calls (each a prefill of the subset's prompt and an answer call). */
  readonly forwards: number;
  /** Wall time, ms. */
  readonly ms: number;
}

/**
 * TracLLM on the graph forward (`traceback.tracLlm` with {@link answerLogProb}). Fails with `InputError` for an
 * empty answer and with the forward's errors.
 */
export const tracLlmTrace = (
  g: GraphLlama,
  prompt: TracePrompt,
  answer: readonly number[],
  p: traceback.TracLlmParams,
): Effect.Effect<TracLlmRunResult, LongctxError> =>
  Effect.gen(function* () {
    yield* needAnswer(answer);
    const t0 = performance.now();
    const r = yield* withCache(
      g,
      fullLength(prompt, answer),
      (cache) => traceback.tracLlm(prompt.texts.length, answerLogProb(g, cache, prompt, answer), p),
    );
    const scores = new Float64Array(prompt.texts.length).fill(-Infinity);
    for (const [t, s] of r.scores) scores[t] = s;
    return { scores, top: traceback.topTexts(scores, p.topK), forwards: r.calls, ms: performance.now() - t0 };
  });
