/**
 * One question asked of a KV cache that holds a fixed context (a document prefilled once, or restored from a
 * saved context: a Squeezed Attention prefix index, a CacheGen container): prefill the question at the
 * context's end, decode greedily, and rewind the cache to the context, so every question starts from the same
 * state.
 * @module
 */
import { Effect } from "effect";
import type { CacheDecodeGraphs, LongctxError } from "@longctx/graph";
import type { GraphLlama, KvState } from "./llama_graph.ts";

/** One question's answer on a cache holding a fixed context. */
export interface CacheAnswer {
  /** Greedy answer token ids (without the stop token). */
  readonly ids: readonly number[];
  /** The question's prefill and the decode steps, ms. */
  readonly ms: { readonly prefill: number; readonly decode: number };
  /**
   * Per layer, the mean over heads of the density the decode attention reported in the question's prefill
   * (a technique's KV budget; 1 for dense attention).
   */
  readonly density: readonly number[];
  /** The next-token logits after the question (the answer's first token), `f32 [vocab]`. */
  readonly firstLogits: Float32Array;
}

/**
 * Ask `question` of `cache`, whose first `fixed` rows hold the context: the question's tokens prefill at row
 * `fixed` (with `decode`, that decode attention — e.g. `squeezedDecode`; without, dense over the cache), then
 * greedy decoding until `stop(ids, next)` says so or `maxNew` tokens. The cache is rewound to `fixed` rows
 * afterwards. Fails with the forward's errors (a cache without room for the question and answer: `ShapeError`).
 */
export const askCache = (
  g: GraphLlama,
  cache: KvState,
  fixed: number,
  question: readonly number[],
  maxNew: number,
  stop: (ids: readonly number[], next: number) => boolean,
  decode?: (layer: number) => CacheDecodeGraphs,
): Effect.Effect<CacheAnswer, LongctxError> =>
  Effect.gen(function* () {
    cache.length = fixed;
    const opts = decode ? { decodeAttention: decode } : {};
    let density: number[] = [];
    const t0 = performance.now();
    const logits = yield* g.forward(question, cache, {
      ...opts,
      onDensity: (d) => (density = d.map((x) => (x ? x.reduce((a, b) => a + b, 0) / x.length : 1))),
    });
    let next = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[next]) next = i;
    const prefill = performance.now() - t0;
    const ids: number[] = [];
    const t1 = performance.now();
    while (ids.length < maxNew && !stop(ids, next)) {
      ids.push(next);
      if (ids.length === maxNew) break;
      next = yield* g.forwardArgmax([next], cache, opts);
    }
    const decodeMs = performance.now() - t1;
    cache.length = fixed;
    return { ids, ms: { prefill, decode: decodeMs }, density, firstLogits: logits };
  });
