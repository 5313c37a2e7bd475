/**
 * `run --kv-store <url>`: CacheGen's "prefill a context once, load its KV cache later". The prompt's fixed
 * context (chat head and document, cut the same for every question) is looked up in the KV store by its
 * manifest (`runtime/src/cachegen/context.ts`: one entry per chunk of {@link KV_CHUNK} tokens and codec, keyed
 * by the model's fingerprint, the hash of the tokens up to the chunk's end, the codec and level). A hit loads
 * it with no prefill: every chunk at `--kv-level`, or, with a link bandwidth (`--kv-gbps`), what the loading
 * controller chooses per chunk (a CacheGen level, or the text recomputed) within the `--kv-slo` budget; each
 * container is checked (checksum, model, tokens) and decoded by `cachegen.decode` on the graph's backend into
 * its rows of a new KV cache. A miss prefills the context dense, reads its K/V back and stores it at levels 1, 2
 * and 3 (the controller's choices), the manifest last. The question and the answer then run dense on the cache.
 * @module
 */
import { Effect } from "effect";
import type { LongctxError } from "@longctx/graph";
import type { cachegen } from "@longctx/ops";
import type { LlamaModel } from "../../model/llama.ts";
import type { GraphLlama } from "../../model/llama_graph.ts";
import { klDivergence } from "../../model/metrics.ts";
import type { KvStore, KvStoreError } from "../../kvstore/mod.ts";
import {
  type ChunkSend,
  CONTEXT_CHUNK,
  contextRef,
  linkMs,
  loadContext,
  planContextLoad,
  readManifest,
  storeContext,
} from "../../cachegen/context.ts";
import { askCachePass, type PassResult } from "./execute.ts";

/** Tokens per stored container (LMCache's chunk; the CDF is counted per chunk). */
export const KV_CHUNK: number = CONTEXT_CHUNK;

/** Levels a miss stores, so that a later load can take any (the controller's choices). */
export const KV_STORED_LEVELS: readonly (1 | 2 | 3)[] = [1, 2, 3];

/** How a hit loads the context (see {@link runKvStorePass}). */
export type KvLoadMode =
  | {
    /** Every chunk at one level. */
    readonly kind: "level";
    /** The CacheGen level. */
    readonly level: 1 | 2 | 3;
  }
  | {
    /** The loading controller: per chunk a level or the text, from the link and the budget. */
    readonly kind: "controller";
    /** The (simulated) link's bandwidth, Gbit/s. */
    readonly gbps: number;
    /** The loading budget, ms. */
    readonly sloMs: number;
    /** A chunk no level fits: the fastest option, or the text (the official rule). */
    readonly fallback: "fastest" | "text";
  };

/** The controller's part of a {@link KvStoreInfo}. */
export interface KvControllerInfo {
  /** The simulated link's bandwidth, Gbit/s. */
  readonly gbps: number;
  /** The loading budget, ms. */
  readonly sloMs: number;
  /** The rule for a chunk no level fits (`fastest`, or `text` as the official code). */
  readonly fallback: "fastest" | "text";
  /** The recompute time it charged per token: the dense pass's prefill time per prompt token, ms. */
  readonly recomputeMsPerToken: number;
  /** Per chunk, what was sent: `"1"`, `"2"`, `"3"` (a level) or `"text"` (recomputed). */
  readonly sends: readonly string[];
  /** Chunks recomputed from their text (by the controller's choice or an entry gone from the store). */
  readonly textChunks: number;
}

/** What `run` reports about the KV store. */
export interface KvStoreInfo {
  /** The store's URL (password hidden). */
  readonly url: string;
  /** Whether every chunk of the context was in the store (its prefill skipped). */
  readonly hit: boolean;
  /** Fixed-context tokens and the chunks they are stored in. */
  readonly fixedTokens: number;
  /** Containers (chunks) read or written. */
  readonly chunks: number;
  /** CacheGen level of the load (every chunk), or of the miss's rows; `0` when the controller chose per chunk. */
  readonly level: number;
  /** Bytes of the containers read (a hit) or written at every stored level (a miss). */
  readonly bytes: number;
  /**
   * Ratio of the KV in fp16 against the bytes read, over the chunks sent as KV (a hit; 0 when every chunk was
   * recomputed), or against the bytes stored at `level` (a miss).
   */
  readonly ratioVsFp16: number;
  /** A hit: reading the containers from the store, decoding them, writing the cache, ms (0 on a miss). */
  readonly loadMs: number;
  /** ...of which checking and decoding the containers into the cache (cachegen.decode on the backend), ms. */
  readonly decodeMs: number;
  /** A miss: the context's prefill; encoding and storing its containers, ms (0 on a hit). */
  readonly prefillMs: number;
  /** Encoding and storing the containers, ms: a miss, or a hit that stored a missing chunk again. */
  readonly storeMs: number;
  /** A hit: recomputing the chunks sent as text, ms (part of `loadMs`). */
  readonly recomputeMs: number;
  /** A hit: chunks recomputed from their text (the controller's choice, or an entry gone from the store). */
  readonly textChunks: number;
  /** A hit: chunks whose entry was gone from the store: recomputed, then the context stored again. */
  readonly missingChunks: number;
  /** A hit with `--kv-gbps`: the bytes read over the simulated link, ms (added to `ttftMs`; 0 otherwise). */
  readonly linkMs: number;
  /** A hit with `--kv-gbps`: the loading controller's choices. */
  readonly controller?: KvControllerInfo;
  /** The question's prefill on the cache, ms. */
  readonly questionPrefillMs: number;
  /**
   * Time to the first answer token: the context (loaded — with the simulated link's time under `--kv-gbps` — or
   * prefilled) and the question's prefill, ms.
   */
  readonly ttftMs: number;
  /** KL(dense ‖ this pass) of the answer's first token, nats (the codec's error on a hit). */
  readonly firstTokenKl: number;
}

/**
 * The KV-store pass of `run` on `prompt` (its first `fixed` tokens the fixed context), with `store` (opened by
 * the caller), loading a hit by `mode`, against the dense pass `dense` (`denseFirst`: its first answer token's
 * logits; its prefill time per token is the controller's recompute cost). Fails with the forward's errors,
 * `KvStoreError` (unreachable store, a corrupt entry) and `CacheGenError` (a container that fails its checks: it
 * is refused, never decoded into the cache).
 */
export const runKvStorePass = (
  g: GraphLlama,
  model: LlamaModel,
  prompt: readonly number[],
  fixed: number,
  maxNew: number,
  dense: PassResult,
  denseFirst: Float32Array,
  store: KvStore,
  mode: KvLoadMode,
): Effect.Effect<
  { pass: PassResult; info: KvStoreInfo },
  LongctxError | KvStoreError | cachegen.CacheGenError
> =>
  Effect.gen(function* () {
    const { nLayer: L, nKvHead: H, headDim: d } = model.config;
    const head = prompt.slice(0, fixed), question = prompt.slice(fixed);
    const ref = yield* contextRef(model, head);
    const cache = yield* g.newCache(fixed + question.length + maxNew + 1);
    const fp16Bytes = fixed * 2 * L * H * d * 2;
    const manifest = yield* readManifest(store, ref);
    let bytes = 0, loadMs = 0, decodeMs = 0, prefillMs = 0, storeMs = 0, recomputeMs = 0, link = 0, level = 0;
    let fp16Ratio = 0, textChunks = 0, missingChunks = 0;
    let controller: KvControllerInfo | undefined;
    if (manifest) {
      const recomputeMsPerToken = dense.prefillMs / prompt.length;
      const sends: readonly ChunkSend[] = mode.kind === "level"
        ? ref.chunks.map(() => mode.level)
        : planContextLoad(manifest, {
          gbps: mode.gbps,
          sloMs: mode.sloMs,
          recomputeMsPerToken,
          fallback: mode.fallback,
        }).sends;
      const r = yield* loadContext(g, cache, ref, store, sends);
      bytes = r.bytes;
      // against the fp16 bytes of the chunks sent as KV (not of those recomputed)
      const sentTokens = ref.chunks.reduce((n, ch, c) => n + (r.sends[c] === "text" ? 0 : ch.b - ch.a), 0);
      fp16Ratio = bytes > 0 ? (sentTokens * 2 * L * H * d * 2) / bytes : 0;
      loadMs = r.totalMs;
      decodeMs = r.decodeMs;
      recomputeMs = r.recomputeMs;
      textChunks = r.sends.filter((x) => x === "text").length;
      missingChunks = r.missing;
      if (r.missing > 0) {
        // an entry gone from the store (e.g. deleted after a checksum error): its chunk was recomputed, so the
        // cache holds the whole context again; store it anew (every level, then the manifest)
        const ts = performance.now();
        yield* storeContext(g, cache, ref, store, KV_STORED_LEVELS);
        storeMs = performance.now() - ts;
      }
      if (mode.kind === "level") level = mode.level;
      else {
        link = linkMs(r.bytes, mode.gbps);
        controller = {
          gbps: mode.gbps,
          sloMs: mode.sloMs,
          fallback: mode.fallback,
          recomputeMsPerToken,
          sends: r.sends.map(String),
          textChunks: r.sends.filter((x) => x === "text").length,
        };
      }
    } else {
      const tp = performance.now();
      yield* g.forward(head, cache, { logits: "none" });
      prefillMs = performance.now() - tp;
      const ts = performance.now();
      const st = yield* storeContext(g, cache, ref, store, KV_STORED_LEVELS);
      storeMs = performance.now() - ts;
      level = mode.kind === "level" ? mode.level : 2;
      bytes = st.manifest.chunks.reduce(
        (s, c) => s + KV_STORED_LEVELS.reduce((t, x) => t + c.bytes[x], 0),
        0,
      );
      const atLevel = st.manifest.chunks.reduce((s, c) => s + c.bytes[level], 0);
      fp16Ratio = fp16Bytes / atLevel;
    }
    const context = manifest ? loadMs + link : prefillMs;
    const { pass, answer: a } = yield* askCachePass(
      g,
      cache,
      fixed,
      question,
      maxNew,
      model,
      dense,
      "dense",
      context,
    );
    cache.release();
    const V = model.config.vocab;
    return {
      pass,
      info: {
        url: store.url,
        hit: manifest !== undefined,
        fixedTokens: fixed,
        chunks: ref.chunks.length,
        level,
        bytes,
        ratioVsFp16: fp16Ratio,
        loadMs,
        decodeMs,
        prefillMs,
        storeMs,
        recomputeMs,
        textChunks,
        missingChunks,
        linkMs: link,
        ...(controller ? { controller } : {}),
        questionPrefillMs: a.ms.prefill,
        ttftMs: context + a.ms.prefill,
        firstTokenKl: klDivergence(denseFirst, a.firstLogits, 0, V),
      },
    };
  });
