/**
 * A prefilled context's KV cache in a KV store, chunk by chunk, and its loading — CacheGen's "prefill once, load
 * later" (Liu et al., SIGCOMM 2024; the released code's streaming and adaptation: UChi-JCL/CacheGen
 * `run_adaptation.py`, `src/utils.py`). What `run --kv-store` and `benchmarks/cachegen_ttft.ts` both use:
 *
 * - {@link contextRef}: the context's chunks ({@link CONTEXT_CHUNK} tokens each) and their store keys (`kvKey`:
 *   the model's fingerprint, the SHA-256 of the tokens up to the chunk's end, the codec and level, the index).
 * - {@link storeContext}: from a cache holding the context's rows, every chunk as a CacheGen container at each
 *   asked level (and, optionally, as plain fp16 rows), then a manifest with every entry's byte count. The
 *   manifest is written last, so a writer killed before the end leaves no manifest: the context is a miss.
 * - {@link planContextLoad}: the loading controller (`chooseChunkLevels` of `@longctx/ops` `cachegen`, the
 *   official `config_selection`) on the manifest's byte counts, a link bandwidth, a time budget, and the
 *   recompute time of a chunk.
 * - {@link loadContext}: per chunk, in order, what a plan sends: a container read and decoded by
 *   `cachegen.decode` on the forward's backend into the cache rows (`decodeKvOnDevice`), fp16 rows written
 *   into them, or the chunk's text recomputed (a forward at its offset on the rows before it).
 * @module
 */
import { createHash } from "node:crypto";
import { Effect, Schema } from "effect";
import type { LongctxError } from "@longctx/graph";
import { cachegen, kernels, squeezed } from "@longctx/ops";
import type { LlamaModel } from "../model/llama.ts";
import type { GraphLlama, KvState } from "../model/llama_graph.ts";
import { readCacheRows, writeCacheRows } from "../model/kv_rows.ts";
import { modelFingerprint } from "../squeezed/squeezed.ts";
import { KvStoreError } from "../kvstore/errors.ts";
import { kvKey } from "../kvstore/key.ts";
import type { KvStore } from "../kvstore/store.ts";

/** SHA-256 by `node:crypto` (Deno and Bun), for the containers' checksums: about 4× faster than WebCrypto's on the 2-core machine. */
export const nodeSha256: cachegen.Sha256 = (b) => createHash("sha256").update(b).digest();

/** Tokens per stored chunk (LMCache's chunk: one container, one CDF per chunk). */
export const CONTEXT_CHUNK = 256;

/** One stored form of a chunk: a CacheGen level, or plain fp16 rows (`"fp16"`). */
export type StoredCodec = 1 | 2 | 3 | "fp16";

/** What is sent for one chunk: a stored form, or the text (recomputed by a forward). */
export type ChunkSend = StoredCodec | "text";

/** A context's chunks and keys (see {@link contextRef}). */
export interface ContextRef {
  /** The model's fingerprint (`modelFingerprint`). */
  readonly model: string;
  /** The context's token ids. */
  readonly tokens: readonly number[];
  /** Per chunk: its token range `[a, b)` and the SHA-256 of tokens `0 … b − 1`. */
  readonly chunks: readonly { readonly a: number; readonly b: number; readonly sha: string }[];
  /** The manifest's store key. */
  readonly manifestKey: string;
}

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0));
const ManifestSchema = Schema.Struct({
  format: Schema.Literal("longctx-context-kv"),
  version: Schema.Literal(1),
  tokens: Count,
  chunkTokens: Count,
  codecs: Schema.Array(Schema.Union([Schema.Literals([1, 2, 3]), Schema.Literal("fp16")])),
  chunks: Schema.Array(Schema.Struct({ tokens: Count, bytes: Schema.Record(Schema.String, Count) })),
});

/** The manifest of a stored context: what is stored, with each entry's bytes. */
export interface ContextManifest {
  /** Format tag. */
  readonly format: "longctx-context-kv";
  /** Manifest version (1). */
  readonly version: 1;
  /** Context tokens. */
  readonly tokens: number;
  /** Tokens per chunk. */
  readonly chunkTokens: number;
  /** The stored forms, every chunk in each. */
  readonly codecs: readonly StoredCodec[];
  /** Per chunk: its tokens and the bytes of each stored form (keyed `"1"`, `"2"`, `"3"`, `"fp16"`). */
  readonly chunks: readonly { readonly tokens: number; readonly bytes: Readonly<Record<string, number>> }[];
}

const codecOf = (c: StoredCodec, p?: cachegen.CacheGenParams) =>
  c === "fp16"
    ? { name: "fp16" }
    : { name: "cachegen", level: c, params: p ?? cachegen.cachegenParams({ level: c }) };

/** The store key of chunk `c` of `ref` in form `codec`. */
export const chunkKey = (ref: ContextRef, c: number, codec: StoredCodec): string =>
  kvKey({ model: ref.model, tokensSha256: ref.chunks[c].sha, codec: codecOf(codec), chunk: c });

/**
 * The chunks and keys of context `tokens` of `model` (chunks of {@link CONTEXT_CHUNK} tokens; a chunk's key
 * hashes every token up to its end, since its K/V depend on its whole prefix).
 */
export const contextRef = (
  model: Pick<LlamaModel, "config" | "tokEmbd">,
  tokens: readonly number[],
): Effect.Effect<ContextRef> =>
  Effect.gen(function* () {
    const fingerprint = yield* modelFingerprint(model);
    const chunks: { a: number; b: number; sha: string }[] = [];
    for (let a = 0; a < tokens.length; a += CONTEXT_CHUNK) {
      const b = Math.min(tokens.length, a + CONTEXT_CHUNK);
      chunks.push({ a, b, sha: yield* squeezed.tokensSha256(tokens.slice(0, b)) });
    }
    const all = chunks.length ? chunks[chunks.length - 1].sha : yield* squeezed.tokensSha256([]);
    return {
      model: fingerprint,
      tokens,
      chunks,
      manifestKey: kvKey({
        model: fingerprint,
        tokensSha256: all,
        codec: { name: "manifest", params: { chunk: CONTEXT_CHUNK } },
        chunk: 0,
      }),
    };
  });

const corrupt = (message: string) =>
  new KvStoreError({
    reason: "corrupt",
    message,
    hint: "delete the entry (or the store) and run again: the context is stored anew",
  });

/**
 * The manifest of `ref` in `store`, or `undefined` when the context is not (completely) stored. Fails with
 * `KvStoreError` (the store's errors; `corrupt` for a manifest that does not parse or describes another context).
 */
export const readManifest = (
  store: KvStore,
  ref: ContextRef,
): Effect.Effect<ContextManifest | undefined, KvStoreError> =>
  Effect.gen(function* () {
    const raw = yield* store.get(ref.manifestKey);
    if (raw === undefined) return undefined;
    const parsed = yield* Effect.try({
      try: () => Schema.decodeUnknownSync(ManifestSchema)(JSON.parse(new TextDecoder().decode(raw))),
      catch: (e) =>
        corrupt(`the context manifest ${ref.manifestKey} does not parse: ${String(e).slice(0, 200)}`),
    });
    if (
      parsed.tokens !== ref.tokens.length || parsed.chunkTokens !== CONTEXT_CHUNK ||
      parsed.chunks.length !== ref.chunks.length ||
      parsed.chunks.some((c, i) =>
        c.tokens !== ref.chunks[i].b - ref.chunks[i].a ||
        parsed.codecs.some((x) => !(String(x) in c.bytes))
      )
    ) return yield* corrupt(`the context manifest ${ref.manifestKey} describes another context`);
    return parsed as ContextManifest;
  });

/** Chunk `[a, b)` of per-layer rows `f32 [kvHeads, total, headDim]`, as `[kvHeads, b − a, headDim]`. */
const sliceRows = (x: readonly Float32Array[], H: number, d: number, total: number, a: number, b: number) =>
  x.map((y) => {
    const n = b - a, out = new Float32Array(H * n * d);
    for (let h = 0; h < H; h++) out.set(y.subarray((h * total + a) * d, (h * total + b) * d), h * n * d);
    return out;
  });

/** What {@link storeContext} did. */
export interface StoreStats {
  /** The manifest written. */
  readonly manifest: ContextManifest;
  /** Reading the rows back from the device, ms. */
  readonly readMs: number;
  /** Encoding every form of every chunk, ms. */
  readonly encodeMs: number;
  /** Writing the entries and the manifest into the store, ms. */
  readonly putMs: number;
}

/**
 * Store context `ref` from `cache` (holding at least its `ref.tokens.length` rows, e.g. right after its
 * prefill) into `store`: every chunk in each form of `codecs` (CacheGen levels encoded by `encodeKv`, fp16 rows),
 * then the manifest. Fails with the backend's errors, `CacheGenError` `bad-input` (a NaN in the cache, …) and the
 * store's `KvStoreError`s.
 */
export const storeContext = (
  g: GraphLlama,
  cache: KvState,
  ref: ContextRef,
  store: KvStore,
  codecs: readonly StoredCodec[],
): Effect.Effect<StoreStats, LongctxError | KvStoreError | cachegen.CacheGenError> =>
  Effect.gen(function* () {
    const { nLayer: L, nKvHead: H, headDim: d } = g.config, T = ref.tokens.length;
    let t = performance.now();
    const rows = yield* readCacheRows(g.backend, cache, { kvHeads: H, headDim: d }, T);
    const readMs = performance.now() - t;
    let encodeMs = 0, putMs = 0;
    const chunks: { tokens: number; bytes: Record<string, number> }[] = [];
    for (const [c, ch] of ref.chunks.entries()) {
      const n = ch.b - ch.a,
        k = sliceRows(rows.k, H, d, T, ch.a, ch.b),
        v = sliceRows(rows.v, H, d, T, ch.a, ch.b);
      const bytes: Record<string, number> = {};
      for (const codec of codecs) {
        t = performance.now();
        const value = codec === "fp16" ? fp16Rows(k, v) : yield* cachegen.encodeKv(
          k,
          v,
          { layers: L, kvHeads: H, headDim: d, tokens: n },
          cachegen.cachegenParams({ level: codec }),
          { model: ref.model, tokensSha256: ch.sha },
        );
        encodeMs += performance.now() - t;
        t = performance.now();
        yield* store.put(chunkKey(ref, c, codec), value);
        putMs += performance.now() - t;
        bytes[String(codec)] = value.length;
      }
      chunks.push({ tokens: n, bytes });
    }
    const manifest: ContextManifest = {
      format: "longctx-context-kv",
      version: 1,
      tokens: T,
      chunkTokens: CONTEXT_CHUNK,
      codecs: [...codecs],
      chunks,
    };
    t = performance.now();
    yield* store.put(ref.manifestKey, new TextEncoder().encode(JSON.stringify(manifest)));
    putMs += performance.now() - t;
    return { manifest, readMs, encodeMs, putMs };
  });

/** Per layer K then V, `f16 [kvHeads, tokens, headDim]` each, as bytes. */
const fp16Rows = (k: readonly Float32Array[], v: readonly Float32Array[]): Uint8Array => {
  const n = k.reduce((s, x) => s + x.length, 0) * 2, out = new Uint16Array(n);
  let off = 0;
  for (let l = 0; l < k.length; l++) {
    for (const x of [k[l], v[l]]) {
      out.set(kernels.toHalfArray(x), off);
      off += x.length;
    }
  }
  return new Uint8Array(out.buffer);
};

/** Options of {@link planContextLoad}. */
export interface LoadPlanOptions {
  /** The link's bandwidth, Gbit/s (one figure or one per chunk). */
  readonly gbps: number | readonly number[];
  /** The time budget for loading the context, ms (official 2000). */
  readonly sloMs: number;
  /** Recomputing (prefilling) one token of the context, ms: a chunk sent as text costs this × its tokens. */
  readonly recomputeMsPerToken: number;
  /**
   * A chunk no level fits: `"fastest"` (default: the fastest of its text and its levels) or `"text"` (the
   * official rule: recompute it, whatever that costs). See `chooseChunkLevels`.
   */
  readonly fallback?: "text" | "fastest";
}

/** A loading plan: per chunk what to send, and the controller's own accounting. */
export interface LoadPlan {
  /** Per chunk, what is sent. */
  readonly sends: readonly ChunkSend[];
  /** The controller's plan (`chooseChunkLevels`). */
  readonly controller: cachegen.ControllerPlan;
}

/**
 * The loading controller on a stored context: per chunk the highest CacheGen level of `manifest` whose transfer
 * at `gbps` fits `sloMs / chunks`, else (by `fallback`) the fastest of its text (charged `recomputeMsPerToken ×
 * chunkTokens`) and its levels, or its text as the official `config_selection`. Throws `CacheGenError` `bad-input` for a non-positive bandwidth, budget or recompute time,
 * or a manifest without CacheGen levels.
 */
export const planContextLoad = (manifest: ContextManifest, o: LoadPlanOptions): LoadPlan => {
  const levels = manifest.codecs.filter((c): c is 1 | 2 | 3 => c !== "fp16");
  if (levels.length === 0) {
    throw new cachegen.CacheGenError({
      reason: "bad-input",
      message: "the stored context holds no CacheGen level",
      hint: "store the context with at least one level (1, 2 or 3)",
    });
  }
  if (!(o.recomputeMsPerToken > 0) || !Number.isFinite(o.recomputeMsPerToken)) {
    throw new cachegen.CacheGenError({
      reason: "bad-input",
      message: `recompute time ${o.recomputeMsPerToken} ms per token`,
      hint: "a positive, measured prefill time per token",
    });
  }
  const controller = cachegen.chooseChunkLevels(
    manifest.chunks.map((c) => levels.map((level) => ({ level, bytes: c.bytes[String(level)] }))),
    {
      sloMs: o.sloMs,
      gbps: o.gbps,
      recomputeMs: o.recomputeMsPerToken * manifest.chunkTokens,
      fallback: o.fallback ?? "fastest",
    },
  );
  return {
    sends: controller.choices.map((x) => x.kind === "text" ? "text" : x.level as 1 | 2 | 3),
    controller,
  };
};

/** What {@link loadContext} did. */
export interface LoadStats {
  /** Per chunk, what was sent (a missing entry is recomputed: `"text"` here). */
  readonly sends: readonly ChunkSend[];
  /** Entries named by the plan that were not in the store (their chunks recomputed). */
  readonly missing: number;
  /** Bytes read from the store. */
  readonly bytes: number;
  /** Reading the entries from the store, ms. */
  readonly readMs: number;
  /** Checking and decoding the containers into the cache (`cachegen.decode`), and writing fp16 rows, ms. */
  readonly decodeMs: number;
  /** Recomputing the text chunks (forwards at their offsets), ms. */
  readonly recomputeMs: number;
  /** All of it, ms. */
  readonly totalMs: number;
}

const f32Rows = (bytes: Uint8Array, L: number, per: number) => {
  const h = new Uint16Array(bytes.slice().buffer), k: Float32Array[] = [], v: Float32Array[] = [];
  for (let l = 0; l < L; l++) {
    k.push(kernels.fromHalfArray(h.subarray(2 * l * per, (2 * l + 1) * per)));
    v.push(kernels.fromHalfArray(h.subarray((2 * l + 1) * per, (2 * l + 2) * per)));
  }
  return { k, v };
};

/**
 * Fill `cache` (empty, capacity ≥ the context) with context `ref` by `sends` (one per chunk, in order): a stored
 * form is read from `store` and decoded into the chunk's rows (a CacheGen container by `decodeKvOnDevice` on
 * the forward's backend, checked for model, tokens and dims first; fp16 rows written as they are); `"text"`, or
 * an entry no longer in the store, recomputes the chunk by a forward of its tokens at its offset. Leaves
 * `cache.length` at the context's length. Fails with the forward's and backend's errors, `KvStoreError` (a
 * corrupt entry is refused, never decoded) and `CacheGenError` (a container that fails its checks).
 */
export const loadContext = (
  g: GraphLlama,
  cache: KvState,
  ref: ContextRef,
  store: KvStore,
  sends: readonly ChunkSend[],
): Effect.Effect<LoadStats, LongctxError | KvStoreError | cachegen.CacheGenError> =>
  Effect.gen(function* () {
    const { nLayer: L, nKvHead: H, headDim: d } = g.config;
    if (sends.length !== ref.chunks.length) {
      return yield* new cachegen.CacheGenError({
        reason: "bad-input",
        message: `${sends.length} sends for a context of ${ref.chunks.length} chunks`,
        hint: "one send per chunk",
      });
    }
    const t0 = performance.now(), done: ChunkSend[] = [];
    let bytes = 0, readMs = 0, decodeMs = 0, recomputeMs = 0, missing = 0;
    cache.length = 0;
    for (const [c, ch] of ref.chunks.entries()) {
      let send = sends[c];
      let value: Uint8Array | undefined;
      if (send !== "text") {
        const t = performance.now();
        value = yield* store.get(chunkKey(ref, c, send));
        readMs += performance.now() - t;
        if (value === undefined) {
          missing++;
          send = "text";
        }
      }
      const t = performance.now();
      if (send === "text" || value === undefined) {
        yield* g.forward(ref.tokens.slice(ch.a, ch.b), cache, { logits: "none" });
        recomputeMs += performance.now() - t;
      } else if (send === "fp16") {
        const n = ch.b - ch.a, per = H * n * d;
        if (value.length !== 2 * L * per * 2) {
          return yield* corrupt(
            `chunk ${c}'s fp16 entry holds ${value.length} bytes, ${2 * L * per * 2} expected`,
          );
        }
        yield* writeCacheRows(g.backend, cache, { kvHeads: H, headDim: d }, n, f32Rows(value, L, per), ch.a);
        decodeMs += performance.now() - t;
        bytes += value.length;
      } else {
        yield* cachegen.decodeKvOnDevice(g.backend, value, {
          expect: {
            model: ref.model,
            tokensSha256: ch.sha,
            dims: { layers: L, kvHeads: H, headDim: d, tokens: ch.b - ch.a },
          },
          into: { k: cache.k, v: cache.v, capacity: cache.capacity, pos: ch.a },
          digest: nodeSha256,
        });
        cache.length = ch.b;
        decodeMs += performance.now() - t;
        bytes += value.length;
      }
      done.push(send);
    }
    return { sends: done, missing, bytes, readMs, decodeMs, recomputeMs, totalMs: performance.now() - t0 };
  });

/** Milliseconds to send `bytes` over a `gbps` Gbit/s link (1 Gbit/s = 10⁶ bits per ms). */
export const linkMs = (bytes: number, gbps: number): number => (bytes * 8) / (gbps * 1e6);
