/**
 * `run --kv-store <url>`: CacheGen's "prefill a context once, load its KV cache later". The prompt's fixed
 * context (chat head and document, cut the same for every question) is looked up in the KV store, one
 * CacheGen container per chunk of {@link KV_CHUNK} tokens under `kvKey` (model fingerprint, the hash of the
 * tokens up to the chunk's end, codec and level, chunk index). When every chunk is there, the containers are
 * read, each checked (checksum, model, tokens) and decoded by `cachegen.decode` on the graph's backend into
 * its rows of a new KV cache — no prefill; else
 * the context is prefilled dense, its K/V read back, encoded and stored. The question and the answer then run
 * dense on that cache.
 * @module
 */
import { Effect } from "effect";
import type { LongctxError } from "@longctx/graph";
import { cachegen, squeezed } from "@longctx/ops";
import type { LlamaModel } from "../../model/llama.ts";
import type { GraphLlama } from "../../model/llama_graph.ts";
import { klDivergence } from "../../model/metrics.ts";
import { readCacheRows } from "../../model/kv_rows.ts";
import { modelFingerprint } from "../../squeezed/squeezed.ts";
import { kvKey, type KvStore, type KvStoreError } from "../../kvstore/mod.ts";
import { askCachePass, type PassResult } from "./execute.ts";

/** Tokens per stored container (LMCache's chunk; the CDF is counted per chunk). */
export const KV_CHUNK = 256;

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
  /** CacheGen level. */
  readonly level: number;
  /** Bytes of the containers read or written. */
  readonly bytes: number;
  /** Ratio of the containers' bytes against the fixed context's KV in fp16. */
  readonly ratioVsFp16: number;
  /** A hit: reading the containers from the store, decoding them, writing the cache, ms (0 on a miss). */
  readonly loadMs: number;
  /** ...of which checking and decoding the containers into the cache (cachegen.decode on the backend), ms. */
  readonly decodeMs: number;
  /** A miss: the context's prefill; encoding and storing its containers, ms (0 on a hit). */
  readonly prefillMs: number;
  /** A miss: encoding and storing the containers, ms. */
  readonly storeMs: number;
  /** The question's prefill on the cache, ms. */
  readonly questionPrefillMs: number;
  /** Time to the first answer token: the context (loaded, or prefilled) and the question's prefill, ms. */
  readonly ttftMs: number;
  /** KL(dense ‖ this pass) of the answer's first token, nats (the codec's error on a hit). */
  readonly firstTokenKl: number;
}

/**
 * The KV-store pass of `run` on `prompt` (its first `fixed` tokens the fixed context), with `store` (opened by
 * the caller) and CacheGen `level`, against the dense pass `dense` (`denseFirst`: its first answer token's
 * logits). Fails with the forward's errors, `KvStoreError` (unreachable store, a corrupt entry) and
 * `CacheGenError` (a container that fails its checks: it is refused, never decoded into the cache).
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
  level: 1 | 2 | 3,
): Effect.Effect<
  { pass: PassResult; info: KvStoreInfo },
  LongctxError | KvStoreError | cachegen.CacheGenError
> =>
  Effect.gen(function* () {
    const { nLayer: L, nKvHead: H, headDim: d } = model.config;
    const head = prompt.slice(0, fixed), question = prompt.slice(fixed);
    const p = cachegen.cachegenParams({ level });
    const fingerprint = yield* modelFingerprint(model);
    const chunks: { a: number; b: number; key: string; sha: string }[] = [];
    for (let a = 0, c = 0; a < fixed; a += KV_CHUNK, c++) {
      const b = Math.min(fixed, a + KV_CHUNK);
      // the hash of every token up to the chunk's end: a chunk's K/V depend on its whole prefix
      const sha = yield* squeezed.tokensSha256(head.slice(0, b));
      chunks.push({
        a,
        b,
        sha,
        key: kvKey({
          model: fingerprint,
          tokensSha256: sha,
          codec: { name: "cachegen", level, params: p },
          chunk: c,
        }),
      });
    }
    const cache = yield* g.newCache(fixed + question.length + maxNew + 1);
    const dims = { kvHeads: H, headDim: d };
    let bytes = 0, loadMs = 0, decodeMs = 0, prefillMs = 0, storeMs = 0;
    const t0 = performance.now();
    const found: Uint8Array[] = [];
    for (const ch of chunks) {
      const v = yield* store.get(ch.key);
      if (v === undefined) break;
      found.push(v);
    }
    const hit = found.length === chunks.length;
    if (hit) {
      // each container checked (checksum, model, tokens) and decoded on the graph's backend straight into the
      // cache rows of its chunk (cachegen.decode: the GPU decoder, or the host decoder on the cpu backend)
      for (const [i, ch] of chunks.entries()) {
        const td = performance.now();
        yield* cachegen.decodeKvOnDevice(g.backend, found[i], {
          expect: {
            model: fingerprint,
            tokensSha256: ch.sha,
            dims: { layers: L, kvHeads: H, headDim: d, tokens: ch.b - ch.a },
          },
          into: { k: cache.k, v: cache.v, capacity: cache.capacity, pos: ch.a },
        });
        decodeMs += performance.now() - td;
        bytes += found[i].length;
      }
      cache.length = fixed;
      loadMs = performance.now() - t0;
    } else {
      const tp = performance.now();
      yield* g.forward(head, cache, { logits: "none" });
      prefillMs = performance.now() - tp;
      const ts = performance.now();
      const rows = yield* readCacheRows(g.backend, cache, dims, fixed);
      for (const ch of chunks) {
        const n = ch.b - ch.a;
        const part = (x: readonly Float32Array[]) =>
          x.map((y) => {
            const out = new Float32Array(H * n * d);
            for (let hh = 0; hh < H; hh++) {
              out.set(y.subarray((hh * fixed + ch.a) * d, (hh * fixed + ch.b) * d), hh * n * d);
            }
            return out;
          });
        const bytesOut = yield* cachegen.encodeKv(
          part(rows.k),
          part(rows.v),
          { layers: L, kvHeads: H, headDim: d, tokens: n },
          p,
          {
            model: fingerprint,
            tokensSha256: ch.sha,
          },
        );
        yield* store.put(ch.key, bytesOut);
        bytes += bytesOut.length;
      }
      storeMs = performance.now() - ts;
    }
    const context = hit ? loadMs : prefillMs;
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
        hit,
        fixedTokens: fixed,
        chunks: chunks.length,
        level,
        bytes,
        ratioVsFp16: (fixed * 2 * L * H * d * 2) / bytes,
        loadMs,
        decodeMs,
        prefillMs,
        storeMs,
        questionPrefillMs: a.ms.prefill,
        ttftMs: context + a.ms.prefill,
        firstTokenKl: klDivergence(denseFirst, a.firstLogits, 0, V),
      },
    };
  });
