/**
 * `run --pipeline squeezed`: Squeezed Attention's "same document, new question". The prompt's fixed context
 * (chat head and document) is prefilled dense and its prefix index built — or, given the index `run` read
 * from an existing `--index` file (and checked: a stale or corrupt file is a typed error before any prefill),
 * the context's K/V are restored from it; with `--index` naming a new file, the built index is saved there. The question (the prompt's rest) and the
 * answer then run through the squeezed cache attention.
 * @module
 */
import { Effect } from "effect";
import { statSync } from "node:fs";
import { decodeTechniqueParams, type LongctxError, type TechniqueError } from "@longctx/graph";
import { squeezed, techniqueByName } from "@longctx/ops";
import type { LlamaModel } from "../../model/llama.ts";
import type { GraphLlama } from "../../model/llama_graph.ts";
import { klDivergence } from "../../model/metrics.ts";
import {
  type PrefixIndex,
  prepareContext,
  restoreContext,
  saveSqueezedIndex,
  squeezedDecode,
} from "../../squeezed/squeezed.ts";
import { askCachePass, type PassResult } from "./execute.ts";

/** What `run` reports about the prefix index. */
export interface PrefixIndexInfo {
  /** The `--index` file, or null without one. */
  readonly path: string | null;
  /** Whether this run built the index (false: loaded from `path`). */
  readonly built: boolean;
  /** Fixed-context tokens, clustered keys' clusters per (layer, KV head). */
  readonly fixedTokens: number;
  readonly clusters: number;
  /** Context prefill (or K/V restore) and clustering, ms; bytes written or read (0 without a file). */
  readonly prefillMs: number;
  readonly clusterMs: number;
  readonly bytes: number;
  /** Threshold percentile and τ of this run. */
  readonly percentile: number;
  readonly threshold: number;
  /** Question tokens after the fixed context. */
  readonly questionTokens: number;
  /** The question's prefill, ms. */
  readonly questionPrefillMs: number;
  /** KL(dense ‖ squeezed) of the answer's first token, nats. */
  readonly firstTokenKl: number;
}

/**
 * The squeezed pass of `run` on `prompt` (its first `fixed` tokens the fixed context), against the dense pass
 * `dense` of the same prompt (its document rows stand for the squeezed pass's, which are dense by
 * construction), with the technique's `params` (`--params`; defaults otherwise); `loaded`: the index read
 * from `indexPath` (absent: build one, and save it to `indexPath` when given). Fails with the forward's errors, `InputError` for an unreadable or unwritable `--index`, and
 * `PrefixIndexError` for a stale, corrupt or foreign one.
 */
export const runSqueezedPass = (
  g: GraphLlama,
  model: LlamaModel,
  prompt: readonly number[],
  fixed: number,
  maxNew: number,
  dense: PassResult,
  indexPath: string | undefined,
  denseFirst: Float32Array,
  params: Readonly<Record<string, unknown>> = {},
  loaded?: PrefixIndex,
): Effect.Effect<
  { pass: PassResult; info: PrefixIndexInfo },
  LongctxError | TechniqueError | squeezed.PrefixIndexError
> =>
  Effect.gen(function* () {
    const t = yield* techniqueByName("squeezed");
    const p = (yield* decodeTechniqueParams(t, params)) as squeezed.SqueezedParams;
    const head = prompt.slice(0, fixed), question = prompt.slice(fixed);
    const room = question.length + maxNew + 1;
    let bytes = 0;
    const ctx = loaded
      ? yield* restoreContext(g, model, head, loaded, room)
      : yield* prepareContext(g, model, head, p, { room });
    if (loaded && indexPath !== undefined) bytes = statSync(indexPath).size;
    if (!loaded && indexPath !== undefined) bytes = yield* saveSqueezedIndex(indexPath, ctx.index);
    const decode = yield* squeezedDecode(ctx.index, p);
    const { pass, answer: a } = yield* askCachePass(
      g,
      ctx.cache,
      ctx.index.fixed,
      question,
      maxNew,
      model,
      dense,
      "squeezed",
      ctx.ms.prefill + ctx.ms.cluster,
      decode,
    );
    ctx.cache.release();
    const V = model.config.vocab;
    return {
      pass,
      info: {
        path: indexPath ?? null,
        built: !loaded,
        fixedTokens: ctx.index.fixed,
        clusters: ctx.index.clusters,
        prefillMs: ctx.ms.prefill,
        clusterMs: ctx.ms.cluster,
        bytes,
        percentile: p.percentile,
        threshold: squeezed.thresholdOf(ctx.index, p.percentile, p.gqa),
        questionTokens: question.length,
        questionPrefillMs: a.ms.prefill,
        firstTokenKl: klDivergence(denseFirst, a.firstLogits, 0, V),
      },
    };
  });
