/**
 * The `run` command's compute side: one prefill of the chat prompt with a per-layer attention choice (dense or
 * any registered technique), per-layer statistics, greedy decoding of the answer, and the dense-vs-pipeline
 * comparison (perplexity over the document tokens, KL(dense ‖ pipeline), top-1 agreement).
 *
 * Both passes run on the graph forward (`llama_graph.ts`, any backend): a technique's layers run its prefill
 * graph (from the registry, e.g. SALE's four operators or HiP's mask search and index attention) inlined as
 * their attention, on the whole prompt in one prefill; decode steps run the technique's stateful decode attention
 * on the KV cache when it has one (HiP: the mask searched every `refresh` steps, reused between), else dense.
 * @module
 */
import { Effect } from "effect";
import {
  type AttnDims,
  type CacheDecodeGraphs,
  decodeTechniqueParams,
  denseLayersOf,
  type Graph,
  type LongctxError,
  type TechniqueError,
} from "@longctx/graph";
import { techniqueByName } from "@longctx/ops";
import type { CompileError } from "@longctx/plans";
import { argmax, type LlamaModel } from "../../model/llama.ts";
import { cacheAttentionChunk, type GraphLlama, type KvState } from "../../model/llama_graph.ts";
import { askCache, type CacheAnswer } from "../../model/ask.ts";
import {
  assertFinite,
  compareLogits,
  logSumExp,
  NON_FINITE_HINT,
  NonFiniteError,
} from "../../model/metrics.ts";

/**
 * The attention of one layer: `dense` (the forward's own `dense.attn`), or a registered technique by name with
 * its parameters (decoded by the technique's schema when the graph is built).
 */
export interface LayerChoice {
  /** `dense` or a technique name of the registry (`TECHNIQUES` of `@longctx/ops`). */
  readonly kind: string;
  /** The technique's parameters (absent: its defaults). */
  readonly params?: Readonly<Record<string, unknown>>;
}

/**
 * Per-layer choices running technique `name` with `params` in every layer, except the first `denseLayers`
 * layers when the decoded parameters have that key (HiP: the official defaults keep the first 3 dense).
 * Fails with `TechniqueError` for an unknown name or bad parameters.
 */
export const techniqueChoices = (
  name: string,
  params: Readonly<Record<string, unknown>>,
  nLayer: number,
) =>
  Effect.gen(function* () {
    if (name === "dense") return Array.from({ length: nLayer }, (): LayerChoice => ({ kind: "dense" }));
    const t = yield* techniqueByName(name);
    const p = (yield* decodeTechniqueParams(t, params)) as Record<string, unknown>;
    const denseLayers = denseLayersOf(p);
    return Array.from(
      { length: nLayer },
      (_, l): LayerChoice => (l < denseLayers ? { kind: "dense" } : { kind: name, params: p }),
    );
  });

/** Per-layer statistics of a prefill. */
export interface LayerStats {
  readonly layer: number;
  readonly pipeline: string;
  /** Kept / causal blocks, mean over heads (1 for dense). */
  readonly density: number;
  /**
   * `‖o − o_dense‖ / ‖o_dense‖` on this layer's own inputs (0 for dense); `null` when not measured (the graph
   * forward on a GPU runs every layer in one command buffer and keeps no per-layer reference).
   */
  readonly outRelErr: number | null;
  /** Attention time of this layer, ms (the dense reference excluded); `null` when not measured (GPU). */
  readonly attentionMs: number | null;
}

/** One prefill + decode. */
export interface PassResult {
  /** Logits of prompt rows `r0 … r0 + rows − 1` (`[rows, vocab]` f32). */
  readonly logitsRows: (r0: number, rows: number) => Float32Array;
  readonly prefillMs: number;
  /** Σ attention time over layers in the prefill, ms (`null` when not measured: GPU). */
  readonly attentionMs: number | null;
  /** Time spent on the dense reference for per-layer errors, ms (excluded from `prefillMs`). */
  readonly referenceMs: number;
  readonly layers: readonly LayerStats[];
  readonly answerIds: readonly number[];
  readonly answer: string;
  /** Why decoding stopped: the model ended its turn (EOS or a control token), ended a line, or hit `--max-new`. */
  readonly answerStop: AnswerStop;
  readonly decodeMs: number;
}

/** Why an answer ended (see {@link PassResult.answerStop}). */
export type AnswerStop = "end-of-turn" | "end-of-line" | "max-new";

/**
 * Whether greedy decoding stops before emitting `next` after `ids`: at the end of the model's turn (EOS or a
 * control token such as `<|im_end|>`), or at the end of the answer's first line (a token with a newline once the
 * answer has some text). Returns the reason, or undefined to go on.
 */
export const answerStopAt = (
  tok: Pick<LlamaModel["tokenizer"], "eosId" | "controlIds" | "decode">,
  ids: readonly number[],
  next: number,
): AnswerStop | undefined => {
  if (next === tok.eosId || tok.controlIds.has(next)) return "end-of-turn";
  if (tok.decode([next], true).includes("\n") && tok.decode(ids, true).trim() !== "") return "end-of-line";
  return undefined;
};

/**
 * The pass of `run` that asks the question of a cache holding the prompt's first `fixed` tokens (a context
 * restored or prefilled apart: Squeezed Attention's prefix index, the KV store): `askCache` with `run`'s stop
 * rule, as a `PassResult` whose document rows are `dense`'s (the context is dense by construction), its prefill
 * time `contextMs` + the question's, its layers `pipeline` with the decode attention's density (1 without
 * `decode`). Returns the pass and the answer. Fails with the forward's errors.
 */
export const askCachePass = (
  g: GraphLlama,
  cache: KvState,
  fixed: number,
  question: readonly number[],
  maxNew: number,
  model: LlamaModel,
  dense: PassResult,
  pipeline: string,
  contextMs: number,
  decode?: (layer: number) => CacheDecodeGraphs,
): Effect.Effect<{ pass: PassResult; answer: CacheAnswer }, LongctxError> =>
  Effect.gen(function* () {
    const tok = model.tokenizer;
    let answerStop: AnswerStop = "max-new";
    const stop = (ids: readonly number[], next: number) => {
      const s = answerStopAt(tok, ids, next);
      if (s !== undefined) answerStop = s;
      return s !== undefined;
    };
    const a = yield* askCache(g, cache, fixed, question, maxNew, stop, decode);
    const pass: PassResult = {
      logitsRows: dense.logitsRows,
      prefillMs: contextMs + a.ms.prefill,
      attentionMs: null,
      referenceMs: 0,
      layers: Array.from({ length: model.config.nLayer }, (_, l) => ({
        layer: l,
        pipeline,
        density: a.density[l] ?? 1,
        outRelErr: null,
        attentionMs: null,
      })),
      answerIds: a.ids,
      answer: tok.decode([...a.ids], true).trim(),
      answerStop,
      decodeMs: a.ms.decode,
    };
    return { pass, answer: a };
  });

/** Progress callbacks (layer `l` of the prefill finished; answer token `i` produced). */
export interface PassProgress {
  readonly layer?: (l: number) => void;
  readonly token?: (i: number) => void;
}

/** Document-level comparison of two passes over the same prompt. */
export interface Comparison {
  /** Perplexity of the document tokens under each pass (natural log, per token). */
  readonly perplexityDense: number;
  readonly perplexityPipeline: number;
  /** Mean and max over document positions of KL(P_dense ‖ P_pipeline), nats. */
  readonly meanKl: number;
  readonly maxKl: number;
  /** Fraction of document positions whose argmax next token agrees, in [0, 1]. */
  readonly top1Agreement: number;
  /** Positions compared (document tokens predicted from the previous position). */
  readonly positions: number;
}

/**
 * Compare the next-token distributions of two passes at the rows predicting document tokens
 * `ids[docStart … docStart + docTokens)` (rows `docStart − 1 …`): perplexity of each, KL(dense ‖ pipeline) and
 * top-1 agreement, in f64, reading logits 128 rows at a time. `pipeline` may be the same pass as `dense`.
 */
export const compareOverDocument = (
  vocab: number,
  ids: readonly number[],
  docStart: number,
  docTokens: number,
  dense: PassResult,
  pipeline: PassResult,
): Comparison => {
  const V = vocab;
  const first = Math.max(docStart - 1, 0);
  const last = Math.min(docStart + docTokens - 1, ids.length - 1); // exclusive
  let nllD = 0, nllP = 0, klSum = 0, klMax = 0, agree = 0;
  const same = dense === pipeline;
  for (let r0 = first; r0 < last; r0 += 128) {
    const rows = Math.min(128, last - r0);
    const a = dense.logitsRows(r0, rows);
    const b = same ? a : pipeline.logitsRows(r0, rows);
    for (let r = 0; r < rows; r++) {
      const t = ids[r0 + r + 1];
      nllD -= a[r * V + t] - logSumExp(a, r * V, V);
      nllP -= same ? a[r * V + t] - logSumExp(a, r * V, V) : b[r * V + t] - logSumExp(b, r * V, V);
    }
    if (same) {
      agree += rows;
    } else {
      const c = compareLogits(a, b, V);
      klSum += c.meanKl * rows;
      klMax = Math.max(klMax, c.maxKl);
      agree += c.top1Agreement * rows;
    }
  }
  const n = last - first;
  return {
    perplexityDense: Math.exp(nllD / n),
    perplexityPipeline: Math.exp(nllP / n),
    meanKl: klSum / n,
    maxKl: klMax,
    top1Agreement: agree / n,
    positions: n,
  };
};

/** One technique layer choice's attention: its prefill graph, and its stateful decode on the KV cache. */
export interface TechniqueLayerGraphs {
  /** The prefill graph (f32), checked against the call's dims. */
  readonly prefill: Graph;
  /** `cacheDecode` of the technique (HiP: the mask refreshed every `refresh` steps); undefined: dense decode. */
  readonly decode?: CacheDecodeGraphs;
  /** The technique's density by construction at the call's dims, when it has one. */
  readonly constructedDensity?: number;
}

/** The graphs of a technique layer choice (the technique looked up and its parameters decoded once). */
export const techniqueLayerGraphs = (c: LayerChoice, dims: AttnDims) =>
  Effect.gen(function* () {
    const t = yield* techniqueByName(c.kind);
    const p = yield* decodeTechniqueParams(t, c.params ?? {});
    const prefill = yield* t.graph(p, dims, "prefill", "f32");
    const decode = t.cacheDecode ? yield* t.cacheDecode(p) : undefined;
    const density = t.constructedDensity?.(p, dims);
    return {
      prefill,
      ...(decode ? { decode } : {}),
      ...(density === undefined ? {} : { constructedDensity: density }),
    } as TechniqueLayerGraphs;
  });

/**
 * The same pass on the graph forward (`llama_graph.ts`, any backend, e.g. the GPU): one prefill with
 * `choices[layer]` as each layer's attention (a technique's layers run its prefill graph inlined into the
 * forward; dense layers `dense.attn`), all-position logits kept for the comparison, then greedy decoding on the KV cache
 * state; with `layerErrors`, a second untimed prefill measures each sparse layer's output error against
 * `dense.attn` on its own inputs (`referenceMs`). A technique whose cache attention serves prefill chunks
 * (TokenSelect: `CacheDecodeGraphs.prefill`) prefills in chunks of its `maxChunk` through it instead, its
 * density the constructed one and its output error not measured (`null`: the layers' inputs differ from
 * dense's after the first sparse layer). Per-layer attention time is not measured (`null`): the layers run as
 * one program. Fails with the forward's typed errors.
 */
export const runPassGraph = (
  g: GraphLlama,
  model: LlamaModel,
  prompt: readonly number[],
  choices: readonly LayerChoice[],
  maxNew: number,
  progress: PassProgress = {},
  layerErrors = true,
): Effect.Effect<PassResult, LongctxError | CompileError | NonFiniteError | TechniqueError> =>
  Effect.gen(function* () {
    const graphs = new Map<string, TechniqueLayerGraphs>();
    const constructed = new Map<string, number>();
    const perLayer: (Graph | undefined)[] = [];
    const cfg = model.config;
    const dims = {
      heads: cfg.nHead,
      kvHeads: cfg.nKvHead,
      headDim: cfg.headDim,
      seq: prompt.length,
      kvSeq: prompt.length,
    };
    const perLayerDecode: (CacheDecodeGraphs | undefined)[] = [];
    for (const c of choices) {
      if (c.kind === "dense") {
        perLayer.push(undefined);
        perLayerDecode.push(undefined);
        continue;
      }
      const key = `${c.kind}:${JSON.stringify(c.params ?? {})}`;
      let gs = graphs.get(key);
      if (!gs) graphs.set(key, gs = yield* techniqueLayerGraphs(c, dims));
      if (gs.constructedDensity !== undefined) constructed.set(key, gs.constructedDensity);
      perLayer.push(gs.prefill);
      perLayerDecode.push(gs.decode);
    }
    const decodeAttention = perLayerDecode.some((d) => d)
      ? { decodeAttention: (l: number) => perLayerDecode[l] }
      : {};
    // a technique whose cache attention also serves prefill chunks (TokenSelect) prefills in chunks through it
    const chunk = cacheAttentionChunk(decodeAttention.decodeAttention, choices.length);
    const chunked = perLayerDecode.some((d) => d?.prefill);
    const V = model.config.vocab;
    let density: readonly (Float32Array | undefined)[] = [];
    const cache = yield* g.newCache(prompt.length + maxNew);
    const t0 = performance.now();
    let logits: Float32Array;
    if (chunked) {
      logits = new Float32Array(prompt.length * V);
      for (let s = 0; s < prompt.length; s += chunk) {
        const part = prompt.slice(s, s + chunk);
        logits.set(yield* g.forward(part, cache, { logits: "all", ...decodeAttention }), s * V);
      }
      // by construction (the list's length per query), per layer
      density = choices.map((c) => {
        const d = c.kind === "dense"
          ? undefined
          : constructed.get(`${c.kind}:${JSON.stringify(c.params ?? {})}`);
        return d === undefined ? undefined : Float32Array.of(d);
      });
    } else {
      logits = yield* g.forward(prompt, cache, {
        logits: "all",
        attentionGraph: (l) => perLayer[l],
        onDensity: (d) => (density = d),
      });
    }
    const prefillMs = performance.now() - t0;
    if (logits.some((x) => !Number.isFinite(x))) {
      // Find the layer: a diagnostic prefill keeping every layer's Q/K/V projection and MLP output.
      const at = yield* g.diagnose(prompt, { attentionGraph: (l) => perLayer[l] });
      if (at && at.part !== "head") {
        const prev = at.layer === 0 ? "the token embeddings" : `layer ${at.layer - 1}`;
        const where = at.part === "qkv"
          ? `prefill, layer ${at.layer} attention input q/k/v (produced by ${prev})`
          : `prefill, layer ${at.layer} MLP output`;
        return yield* new NonFiniteError({
          where,
          layer: at.layer,
          index: at.index,
          value: at.value,
          message: `${at.value} at index ${at.index} of ${where}`,
          hint: NON_FINITE_HINT,
        });
      }
      yield* assertFinite(logits, "prefill final hidden states / logits");
    }
    for (let l = 0; l < choices.length; l++) progress.layer?.(l);
    const tok = model.tokenizer;
    const t1 = performance.now();
    const ids: number[] = [];
    let next = argmax(logits.subarray((prompt.length - 1) * V, prompt.length * V));
    let answerStop: AnswerStop = "max-new";
    while (ids.length < maxNew) {
      const stop = answerStopAt(tok, ids, next);
      if (stop !== undefined) {
        answerStop = stop;
        break;
      }
      ids.push(next);
      progress.token?.(ids.length);
      if (ids.length === maxNew) break;
      next = yield* g.forwardArgmax([next], cache, decodeAttention);
    }
    const decodeMs = performance.now() - t1;
    cache.release();
    // Per-layer output error against dense on each layer's own inputs: a second, untimed prefill that runs
    // dense.attn beside every sparse layer's graph (model.sqDiff reduces the difference on the backend).
    let errors: readonly (number | undefined)[] = [];
    let referenceMs = 0;
    if (layerErrors && !chunked && perLayer.some((x) => x !== undefined)) {
      const t2 = performance.now();
      const c2 = yield* g.newCache(prompt.length);
      yield* g.forward(prompt, c2, {
        logits: "none",
        attentionGraph: (l) => perLayer[l],
        onCompare: (c) => (errors = c.map((x) => x?.relErr)),
      });
      c2.release();
      referenceMs = performance.now() - t2;
    }
    const layers: LayerStats[] = choices.map((c, l) => {
      const d = density[l];
      return {
        layer: l,
        pipeline: c.kind,
        density: d ? d.reduce((a, b) => a + b, 0) / d.length : 1,
        outRelErr: c.kind === "dense" ? 0 : errors[l] ?? null,
        attentionMs: null,
      };
    });
    return {
      logitsRows: (r0: number, rows: number) => logits.subarray(r0 * V, (r0 + rows) * V),
      prefillMs,
      attentionMs: null,
      referenceMs,
      layers,
      answerIds: ids,
      answer: tok.decode(ids, true).trim(),
      answerStop,
      decodeMs,
    };
  });
