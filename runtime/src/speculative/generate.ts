/**
 * LongSpec's decode loop on the CPU forward (`runtime/src/model/llama.ts`): per round the draft proposes a token
 * tree rooted at the last emitted token, the target scores the whole tree in one forward (nodes at positions
 * `base + depth`, attention = prefix part over the full cache merged by LSE with the tree part under the tree
 * mask), the longest path matching the target's greedy tokens is accepted (plus the target's bonus token), and
 * the KV cache keeps the accepted path's rows compacted to consecutive positions (the rest dropped). Greedy
 * (temperature 0), so the output is the target's plain greedy output token for token.
 *
 * Official code followed: sail-sg/LongSpec `longspec/test/llama_glide.py` (`tree_spec_generate`,
 * `tree_verification`); deviation: accepted rows are moved in every layer's cache (the official code moves the
 * last layer's and re-feeds the accepted tokens next round; TECHNIQUES.md §4 (e) 4 allows either).
 * @module
 */
/** @internal Effect's types (`Effect`, …) are documented by the `effect` package. */
import { Effect } from "effect";
import { InputError, ShapeError } from "@longctx/graph";
import { longspec } from "@longctx/ops";
import {
  argmax,
  type AttentionFn,
  keepCacheRows,
  type KvCache,
  type LlamaModel,
  prefill,
} from "../model/llama.ts";
import { type Draft, treeAttention } from "./draft.ts";

/** Options of {@link speculativeDecode} and {@link generateSpeculative}. */
export interface SpeculativeOptions {
  /** The draft that proposes each round's tree. */
  readonly draft: Draft;
  /** Tree shape, nodes per depth below the root (default the official `[4, 16, 16, 16, 16]`). */
  readonly shape?: readonly number[];
  /** Stop after EOS / a control token such as `<|im_end|>` (default true), as `generateGreedy`. */
  readonly stopAtEos?: boolean;
  /** Prefill chunk in tokens (default 2048), for {@link generateSpeculative}. */
  readonly chunk?: number;
}

/** What a speculative decode produced and what it cost. */
export interface SpeculativeResult {
  /** Generated token ids (the first is the prefill's greedy token). */
  readonly ids: number[];
  /** Verification rounds run. */
  readonly rounds: number;
  /** Draft tokens accepted in each round (0 … tree depth); each round also emits one bonus token. */
  readonly accepted: readonly number[];
  /** Mean draft tokens accepted per round. */
  readonly meanAccepted: number;
  /** Mean tokens emitted per round (accepted + the bonus token; the speed-up's numerator). */
  readonly tokensPerRound: number;
  /** Draft time in ms (all rounds). */
  readonly draftMs: number;
  /** Verification time in ms (target forward, acceptance, KV update; all rounds). */
  readonly verifyMs: number;
  /** Decode wall time in ms (after the prefill's first token). */
  readonly decodeMs: number;
  /** Decode tokens per second: tokens after the first over `decodeMs`. */
  readonly tokensPerSecond: number;
  /** Share of the decode time spent drafting, `draftMs / (draftMs + verifyMs)`. */
  readonly draftShare: number;
  /** Tree nodes verified per round (the shape's node count; fewer when a draft returns a smaller tree). */
  readonly treeNodes: number;
}

const isStop = (model: LlamaModel, t: number) =>
  t === model.tokenizer.eosId || model.tokenizer.controlIds.has(t);

/**
 * Speculative greedy decode from a prefilled `cache` (`cache.length` valid rows) whose greedy next token is
 * `first`: emits `first`, then rounds of draft → verify → accept until `maxNew` tokens (or a stop token). The
 * cache must hold `cache.length + maxNew + treeNodes` rows (fails with `ShapeError` otherwise); a bad tree shape
 * or a draft's malformed tree is an `InputError`.
 */
export const speculativeDecode = (
  model: LlamaModel,
  cache: KvCache,
  first: number,
  maxNew: number,
  options: SpeculativeOptions,
): Effect.Effect<SpeculativeResult, ShapeError | InputError> =>
  Effect.gen(function* () {
    const shape = options.shape ?? longspec.DEFAULT_TREE_SHAPE;
    const nodes = yield* Effect.try({
      try: () => longspec.treeNodeCount(shape),
      catch: (e) => e as InputError,
    });
    if (cache.length + maxNew + nodes > cache.capacity) {
      return yield* Effect.fail(
        new ShapeError({
          message:
            `KV cache of ${cache.capacity} rows: ${cache.length} cached + ${maxNew} new + a tree of ${nodes}`,
          hint: "allocate newCache(prompt + maxNew + tree nodes)",
        }),
      );
    }
    const stop = options.stopAtEos ?? true;
    const dims = { kvHeads: model.config.nKvHead, headDim: model.config.headDim };
    const ids: number[] = [first];
    const accepted: number[] = [];
    let draftMs = 0, verifyMs = 0, treeNodes = 0;
    const t0 = performance.now();
    let done = maxNew <= 1 || (stop && isStop(model, first));
    while (!done) {
      const base = cache.length, root = ids[ids.length - 1];
      const td = performance.now();
      const tree = yield* options.draft.propose({ model, cache, root, shape, emitted: ids });
      if (tree.tokens[0] !== root || cache.length !== base) {
        return yield* Effect.fail(
          new InputError({
            message:
              `draft ${options.draft.name} returned a tree rooted at ${tree.tokens[0]} (root ${root})` +
              ` or left the cache at ${cache.length} rows (${base})`,
            hint: "a draft's node 0 is the root token and it restores cache.length",
          }),
        );
      }
      const depths = yield* Effect.try({
        try: () => longspec.treeDepths(tree.parents),
        catch: (e) => e as InputError,
      });
      const tv = performance.now();
      draftMs += tv - td;
      treeNodes = Math.max(treeNodes, tree.tokens.length);
      const h = yield* model.forward(tree.tokens, cache, {
        positions: longspec.treePositions(base, depths),
        attention: treeAttention(tree.parents),
      });
      // the target's greedy token at every node: one GEMM over the output head (read once)
      const n = tree.tokens.length, V = model.config.vocab, logits = model.logits(h, 0, n);
      const next = Int32Array.from({ length: n }, (_, i) => argmax(logits, i * V, V));
      const acc = yield* Effect.try({
        try: () => longspec.acceptGreedy(tree, next),
        catch: (e) => e as InputError,
      });
      keepCacheRows(cache, dims, base, acc.path);
      verifyMs += performance.now() - tv;
      accepted.push(acc.path.length - 1);
      for (const t of acc.tokens) {
        ids.push(t);
        if (ids.length >= maxNew || (stop && isStop(model, t))) {
          done = true;
          break;
        }
      }
    }
    const decodeMs = performance.now() - t0;
    const rounds = accepted.length;
    const sumAcc = accepted.reduce((a, b) => a + b, 0);
    return {
      ids,
      rounds,
      accepted,
      meanAccepted: rounds ? sumAcc / rounds : 0,
      tokensPerRound: rounds ? (ids.length - 1) / rounds : 0,
      draftMs,
      verifyMs,
      decodeMs,
      tokensPerSecond: decodeMs > 0 ? ((ids.length - 1) * 1000) / decodeMs : 0,
      draftShare: draftMs + verifyMs > 0 ? draftMs / (draftMs + verifyMs) : 0,
      treeNodes,
    };
  });

/** Plain greedy decoding's result on the same footing as {@link SpeculativeResult}. */
export interface PlainResult {
  /** Generated token ids (the first is the prefill's greedy token). */
  readonly ids: number[];
  /** Decode wall time in ms (after the first token). */
  readonly decodeMs: number;
  /** Decode tokens per second: tokens after the first over `decodeMs`. */
  readonly tokensPerSecond: number;
}

/**
 * Plain greedy decoding from a prefilled `cache` whose greedy next token is `first` (one forward per token):
 * the baseline of the losslessness and speed checks. `attention` defaults to the forward's own
 * (`dense.cacheAttn`'s GEMM path); {@link SAME_KERNEL_DECODE} runs each step through the verify call's
 * attention (a one-node tree: prefix part + the token itself, merged by LSE), the same kernels as the
 * speculative loop's target.
 */
export const plainDecode = (
  model: LlamaModel,
  cache: KvCache,
  first: number,
  maxNew: number,
  stopAtEos = true,
  attention?: AttentionFn,
): Effect.Effect<PlainResult, ShapeError> =>
  Effect.gen(function* () {
    const ids = [first];
    const t0 = performance.now();
    while (ids.length < maxNew && !(stopAtEos && isStop(model, ids[ids.length - 1]))) {
      const h = yield* model.forward([ids[ids.length - 1]], cache, attention ? { attention } : {});
      ids.push(argmax(model.logits(h, 0, 1)));
    }
    const decodeMs = performance.now() - t0;
    return { ids, decodeMs, tokensPerSecond: decodeMs > 0 ? ((ids.length - 1) * 1000) / decodeMs : 0 };
  });

/** A decode step's attention through the verify call's kernels: the tree attention of a one-node tree. */
export const SAME_KERNEL_DECODE: AttentionFn = treeAttention(Int32Array.of(-1));

/** {@link SpeculativeResult} with the prefill's time. */
export interface GenerateSpeculativeResult extends SpeculativeResult {
  /** Prefill time in ms (prompt into a fresh cache, first token). */
  readonly prefillMs: number;
}

/**
 * Prefill `prompt` into a fresh KV cache (room for the prompt, `maxNew` tokens and one tree), then
 * {@link speculativeDecode}. Greedy: `ids` equal `generateGreedy(model, prompt, maxNew).ids`. Fails with
 * `ShapeError` for an empty prompt or bad ids, `InputError` for a bad tree shape.
 */
export const generateSpeculative = (
  model: LlamaModel,
  prompt: readonly number[],
  maxNew: number,
  options: SpeculativeOptions,
): Effect.Effect<GenerateSpeculativeResult, ShapeError | InputError> =>
  Effect.gen(function* () {
    const shape = options.shape ?? longspec.DEFAULT_TREE_SHAPE;
    const nodes = yield* Effect.try({
      try: () => longspec.treeNodeCount(shape),
      catch: (e) => e as InputError,
    });
    const cache = model.newCache(prompt.length + maxNew + nodes);
    const t0 = performance.now();
    const last = yield* prefill(model, prompt, cache, { chunk: options.chunk ?? 2048 });
    const prefillMs = performance.now() - t0;
    const r = yield* speculativeDecode(model, cache, argmax(last), maxNew, options);
    return { ...r, prefillMs };
  });
