/**
 * The `run` command's compute side: one prefill of the chat prompt with a per-layer attention choice (dense or
 * SALE), per-layer statistics, greedy decoding of the answer, and the dense-vs-pipeline comparison
 * (perplexity over the document tokens, KL(dense ‖ pipeline), top-1 agreement).
 *
 * SALE (arXiv 2505.24179, §3) runs as `saleAttentionBlas` (the `sale.*` CPU-reference arithmetic as OpenBLAS
 * GEMMs, checked against `saleCpu` by the SALE tests), on the whole prompt in one prefill call; decode steps
 * use dense attention (SALE is a prefill method).
 * @module
 */
import { Effect } from "effect";
import type { ShapeError } from "@longctx/graph";
import { sale } from "@longctx/ops";
import { argmax, type AttentionFn, denseCausalAttention, type LlamaModel } from "../../model/llama.ts";
import {
  assertFinite,
  compareLogits,
  finiteAttention,
  logSumExp,
  type NonFiniteError,
} from "../../model/metrics.ts";

/** The attention of one layer. */
export type LayerChoice = { readonly kind: "dense" } | {
  readonly kind: "sale";
  readonly params: sale.SaleParams;
};

/** Per-layer statistics of a prefill. */
export interface LayerStats {
  readonly layer: number;
  readonly pipeline: "dense" | "sale";
  /** Kept / causal blocks, mean over heads (1 for dense). */
  readonly density: number;
  /** `‖o − o_dense‖ / ‖o_dense‖` on this layer's own inputs (0 for dense). */
  readonly outRelErr: number;
  /** Attention time of this layer, ms (the dense reference for `outRelErr` excluded). */
  readonly attentionMs: number;
}

/** One prefill + decode. */
export interface PassResult {
  /** Final hidden states of the prompt `[promptTokens, nEmbd]` f32. */
  readonly hidden: Float32Array;
  readonly prefillMs: number;
  /** Σ attention time over layers in the prefill, ms. */
  readonly attentionMs: number;
  /** Time spent on the dense reference for per-layer errors, ms (excluded from `prefillMs`). */
  readonly referenceMs: number;
  readonly layers: readonly LayerStats[];
  readonly answerIds: readonly number[];
  readonly answer: string;
  readonly decodeMs: number;
}

/** Progress callbacks (layer `l` of the prefill finished; answer token `i` produced). */
export interface PassProgress {
  readonly layer?: (l: number) => void;
  readonly token?: (i: number) => void;
}

const relErr = (a: Float32Array, b: Float32Array): number => {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return den > 0 ? Math.sqrt(num / den) : 0;
};

/**
 * Prefill `prompt` in one forward call with `choices[layer]` as each layer's attention, then greedily decode
 * up to `maxNew` tokens (stopping at EOS / `<|im_end|>`). Times in ms. Fails with `ShapeError` as
 * `LlamaModel.forward` (empty prompt, out-of-range ids, cache overflow), and with `NonFiniteError` naming the
 * layer and step when an attention input or output, the final hidden states or a step's logits hold NaN/∞.
 */
export const runPass = (
  model: LlamaModel,
  prompt: readonly number[],
  choices: readonly LayerChoice[],
  maxNew: number,
  progress: PassProgress = {},
): Effect.Effect<PassResult, ShapeError | NonFiniteError> =>
  Effect.gen(function* () {
    const layers: LayerStats[] = [];
    let step = "prefill";
    let referenceMs = 0;
    let inPrefill = true;
    const gemm = (...a: Parameters<LlamaModel["sgemm"]["gemm"]>) => model.sgemm.gemm(...a);
    const attention: AttentionFn = (q, k, v, ctx) => {
      const choice = choices[ctx.layer];
      if (!inPrefill || ctx.offset !== 0) return denseCausalAttention(q, k, v, ctx);
      const t0 = performance.now();
      let o: Float32Array;
      let density = 1, outRelErr = 0, attentionMs: number;
      if (choice.kind === "sale") {
        const r = sale.saleAttentionBlas(
          gemm,
          choice.params,
          q,
          k,
          v,
          ctx.heads,
          ctx.kvHeads,
          ctx.seq,
          ctx.headDim,
          ctx.kvStride,
        );
        o = r.o;
        attentionMs = performance.now() - t0;
        density = r.density.reduce((a, b) => a + b, 0) / r.density.length;
        const t1 = performance.now();
        outRelErr = relErr(o, denseCausalAttention(q, k, v, ctx));
        referenceMs += performance.now() - t1;
      } else {
        o = denseCausalAttention(q, k, v, ctx);
        attentionMs = performance.now() - t0;
      }
      layers.push({ layer: ctx.layer, pipeline: choice.kind, density, outRelErr, attentionMs });
      progress.layer?.(ctx.layer);
      return o;
    };
    const finite = finiteAttention(attention, () => step);
    const checked = (h: Float32Array) =>
      Effect.gen(function* () {
        const bad = finite.take();
        if (bad) return yield* bad;
        yield* assertFinite(h, `${step} final hidden states`);
        return h;
      });
    const cache = model.newCache(prompt.length + maxNew);
    const t0 = performance.now();
    const hidden = yield* checked(yield* model.forward(prompt, cache, { attention: finite.attention }));
    const prefillMs = performance.now() - t0 - referenceMs;
    inPrefill = false;
    const tok = model.tokenizer;
    const t1 = performance.now();
    const ids: number[] = [];
    const nextOf = (h: Float32Array, row: number) =>
      Effect.gen(function* () {
        const lg = model.logits(h, row, 1);
        yield* assertFinite(lg, `${step} logits`);
        return argmax(lg);
      });
    let next = yield* nextOf(hidden, prompt.length - 1);
    while (ids.length < maxNew) {
      if (next === tok.eosId || tok.controlIds.has(next)) break;
      ids.push(next);
      progress.token?.(ids.length);
      if (ids.length === maxNew) break;
      step = `decode step ${ids.length}`;
      const h = yield* checked(yield* model.forward([next], cache, { attention: finite.attention }));
      next = yield* nextOf(h, 0);
    }
    return {
      hidden,
      prefillMs,
      attentionMs: layers.reduce((a, l) => a + l.attentionMs, 0),
      referenceMs,
      layers,
      answerIds: ids,
      answer: tok.decode(ids, true).trim(),
      decodeMs: performance.now() - t1,
    };
  });

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
 * top-1 agreement, in f64, computing logits 128 rows at a time. `pipeline` may be the same array as `dense`.
 */
export const compareOverDocument = (
  model: LlamaModel,
  ids: readonly number[],
  docStart: number,
  docTokens: number,
  dense: Float32Array,
  pipeline: Float32Array,
): Comparison => {
  const V = model.config.vocab;
  const first = Math.max(docStart - 1, 0);
  const last = Math.min(docStart + docTokens - 1, ids.length - 1); // exclusive
  let nllD = 0, nllP = 0, klSum = 0, klMax = 0, agree = 0;
  const same = dense === pipeline;
  for (let r0 = first; r0 < last; r0 += 128) {
    const rows = Math.min(128, last - r0);
    const a = model.logits(dense, r0, rows);
    const b = same ? a : model.logits(pipeline, r0, rows);
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
