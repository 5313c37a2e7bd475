/**
 * Squeezed Attention on the model (any backend of the graph forward): a fixed context prefilled once (dense)
 * with its keys clustered into a prefix index (`@longctx/ops` `squeezed`), saved to disk and loaded for later
 * questions — "same document, new question" — which then prefill and decode with the `squeezed` cache
 * attention, every layer's lookup bound to the index.
 *
 * Reference: Squeezed Attention (arXiv 2411.09688); official code SqueezeAILab/SqueezedAttention.
 * @module
 */
import { Effect } from "effect";
import { readFile, writeFile } from "node:fs/promises";
import {
  type CacheDecodeGraphs,
  type Graph,
  graph,
  InputError,
  type LongctxError,
  type TechniqueGraphError,
} from "@longctx/graph";
import { dense, squeezed } from "@longctx/ops";
import type { GraphLlama, KvState } from "../model/llama_graph.ts";
import type { LlamaModel } from "../model/llama.ts";
import { readCacheRows, writeCacheRows } from "../model/kv_rows.ts";
import { askCache, type CacheAnswer } from "../model/ask.ts";

/** A prefix index (`PrefixIndex` of `@longctx/ops`). */
export type PrefixIndex = squeezed.PrefixIndex;
/** Squeezed Attention's parameters (`squeezed.SqueezedParams` of `@longctx/ops`). */
export type SqueezedParams = squeezed.SqueezedParams;
/** A prefix index that cannot serve (`squeezed.PrefixIndexError` of `@longctx/ops`). */
export type PrefixIndexError = squeezed.PrefixIndexError;

/** Fingerprints by token-embedding array: hashing 100+ MB once per model, not per call. */
const fingerprints = new WeakMap<Float32Array, Promise<string>>();

/** The model's fingerprint kept in an index: its shapes and the SHA-256 of its token embedding. */
export const modelFingerprint = (model: Pick<LlamaModel, "config" | "tokEmbd">): Effect.Effect<string> =>
  Effect.promise(() => {
    const e = model.tokEmbd;
    let f = fingerprints.get(e);
    if (!f) {
      const c = model.config;
      f = crypto.subtle.digest("SHA-256", new Uint8Array(e.buffer, e.byteOffset, e.byteLength).slice()).then(
        (d) => {
          const hex = [...new Uint8Array(d).subarray(0, 8)].map((x) => x.toString(16).padStart(2, "0")).join(
            "",
          );
          return `L${c.nLayer} E${c.nEmbd} H${c.nHead}/${c.nKvHead} D${c.headDim} V${c.vocab} θ${c.ropeTheta} ` +
            `embd ${hex}`;
        },
      );
      fingerprints.set(e, f);
    }
    return f;
  });

/** The attention graph of the context's prefill: dense attention, and the queries (post-RoPE) as an output. */
const captureGraph = (workgroupMemory: number): Effect.Effect<Graph, LongctxError> =>
  Effect.gen(function* () {
    const g = graph("squeezed.capture");
    const q = g.input("q", dense.denseAttn.inputs.q);
    const k = g.input("k", dense.denseAttn.inputs.k);
    const v = g.input("v", dense.denseAttn.inputs.v);
    const a = g.add(dense.denseAttn, { scale: 0, blockQ: 64, workgroupMemory }, { q, k, v }, "attn");
    g.output("o", a.o);
    g.output("qCapture", q);
    return yield* g.build();
  });

/** A fixed context ready for questions: its KV cache (holding exactly its tokens) and its prefix index. */
export interface SqueezedContext {
  /** The index (clusters, calibration, provenance). */
  readonly index: PrefixIndex;
  /** The KV cache, `index.fixed` rows valid, room for `capacity − fixed` question and answer tokens. */
  readonly cache: KvState;
  /** Wall time of the context's prefill and of the clustering, ms (0 for a loaded index's prefill). */
  readonly ms: { readonly prefill: number; readonly cluster: number };
  /** The data the index was built from, with `keepCapture`. */
  readonly capture?: PrefixData;
}

/** A fixed context prefilled with its data read back: what the index is built from. */
export interface PrefixData {
  /** The KV cache, the context's `fixed` rows valid. */
  readonly cache: KvState;
  /** Per layer, post-RoPE keys `f32 [kvHeads, fixed, headDim]`. */
  readonly keys: readonly Float32Array[];
  /** Per layer, values `f32 [kvHeads, fixed, headDim]` (empty when not read). */
  readonly values: readonly Float32Array[];
  /** Per layer, the last `obs` post-RoPE queries `f32 [heads, obs, headDim]`. */
  readonly queries: readonly Float32Array[];
  /** Wall time of the prefill, ms. */
  readonly prefillMs: number;
}

/**
 * Prefill the fixed context `tokens` dense into a new cache of `room` rows more, reading back every layer's
 * keys (and values with `withValues`) and the last `obs` queries. Fails with the forward's errors and
 * `InputError` for a context not longer than `obs`.
 */
export const capturePrefix = (
  g: GraphLlama,
  tokens: readonly number[],
  obs: number,
  room: number,
  withValues: boolean,
): Effect.Effect<PrefixData, LongctxError> =>
  Effect.gen(function* () {
    const F = tokens.length;
    if (F <= obs) {
      return yield* new InputError({
        message: `a fixed context of ${F} tokens; squeezed needs more than obsWindow = ${obs}`,
        hint: "use a longer document, or a smaller obsWindow",
      });
    }
    const { nHead: H, nKvHead: Hk, headDim: d } = g.config;
    const cache = yield* g.newCache(F + room);
    const queries: Float32Array[] = [];
    const cg = yield* captureGraph(g.backend.limits.maxComputeWorkgroupStorageSize);
    const t0 = performance.now();
    yield* g.forward(tokens, cache, {
      logits: "none",
      attentionGraph: () => cg,
      readOutputs: ["qCapture"],
      onOutputs: (layers) => {
        for (const r of layers) {
          const q = r.qCapture, out = new Float32Array(H * obs * d);
          for (let h = 0; h < H; h++) {
            out.set(q.subarray((h * F + F - obs) * d, (h * F + F) * d), h * obs * d);
          }
          queries.push(out);
        }
      },
    });
    const prefillMs = performance.now() - t0;
    const { k: keys, v: values } = yield* readCacheRows(
      g.backend,
      cache,
      { kvHeads: Hk, headDim: d },
      F,
      withValues,
    );
    return { cache, keys: [...keys], values: [...values], queries, prefillMs };
  });

/** Options of {@link prepareContext}. */
export interface PrepareOptions {
  /** Cache rows after the context, for the question and the answer (tokens; default 1024). */
  readonly room?: number;
  /** Keep the context's K/V in the index, so a loaded index needs no prefill (default true). */
  readonly keepKv?: boolean;
  /** Called after each layer's clustering. */
  readonly onLayer?: (l: number) => void;
  /** Keep the captured keys and queries in the result (`capture`), e.g. for `squeezed.observationRecall`. */
  readonly keepCapture?: boolean;
  /**
   * Where the keys are clustered: `"device"`, the GPU k-means (`squeezed.gpuKeyClustering`) on the graph's
   * backend; `"host"`, the CPU k-means with the model's GEMM. Default: the device on a GPU backend (wgpu,
   * webgpu, dawn), the host on the cpu backend.
   */
  readonly clusterOn?: "device" | "host";
}

/**
 * Prefill the fixed context `tokens` (dense) and build its prefix index with `params` (see
 * `squeezed.buildPrefixIndexEffect`): per layer the keys read back from the cache and the last `obsWindow`
 * queries. k-means runs on the GPU when the graph's backend is one (every KV head of a layer in one driver run;
 * `squeezed.gpuKeyClustering`), on the host with the model's GEMM on the cpu backend (see
 * {@link PrepareOptions.clusterOn}). Fails with the forward's and the GPU k-means' errors and `InputError` for a
 * context not longer than `obsWindow`.
 */
export const prepareContext = (
  g: GraphLlama,
  model: LlamaModel,
  tokens: readonly number[],
  params: SqueezedParams,
  o: PrepareOptions = {},
): Effect.Effect<SqueezedContext, LongctxError> =>
  Effect.gen(function* () {
    const keep = o.keepKv ?? true, cfg = model.config;
    const data = yield* capturePrefix(g, tokens, params.obsWindow, o.room ?? 1024, keep);
    const provenance = {
      model: yield* modelFingerprint(model),
      tokensSha256: yield* squeezed.tokensSha256(tokens),
    };
    const t1 = performance.now();
    const onDevice = (o.clusterOn ?? (g.backend.kind === "cpu" ? "host" : "device")) === "device";
    const gpu = onDevice ? squeezed.gpuKeyClustering(g.backend) : undefined;
    const index = yield* squeezed.buildPrefixIndexEffect(
      {
        keys: (l) => data.keys[l],
        queries: (l) => data.queries[l],
        ...(keep ? { values: (l: number) => data.values[l] } : {}),
      },
      {
        layers: cfg.nLayer,
        heads: cfg.nHead,
        kvHeads: cfg.nKvHead,
        headDim: cfg.headDim,
        fixed: tokens.length,
      },
      params,
      provenance,
      {
        ...(gpu ? { cluster: gpu.cluster } : { gemm: model.sgemm.gemm }),
        ...(o.onLayer ? { onLayer: o.onLayer } : {}),
      },
    ).pipe(Effect.ensuring(Effect.sync(() => gpu?.release())));
    const ms = { prefill: data.prefillMs, cluster: performance.now() - t1 };
    return { index, cache: data.cache, ms, ...(o.keepCapture ? { capture: data } : {}) };
  });

/**
 * Check that `index` serves `model` and the fixed context `tokens` (model fingerprint, token hash, heads and
 * layers). Fails with `PrefixIndexError` `stale` or `shape`.
 */
export const checkIndexFor = (
  model: Pick<LlamaModel, "config" | "tokEmbd">,
  tokens: readonly number[],
  index: PrefixIndex,
): Effect.Effect<void, PrefixIndexError> =>
  Effect.gen(function* () {
    const cfg = model.config;
    yield* squeezed.checkPrefixIndex(index, {
      model: yield* modelFingerprint(model),
      tokensSha256: yield* squeezed.tokensSha256(tokens),
      layers: cfg.nLayer,
      heads: cfg.nHead,
      kvHeads: cfg.nKvHead,
      headDim: cfg.headDim,
    });
  });

/**
 * A fixed context from a loaded prefix index: checks it against the model and the context's tokens (a stale
 * index is a `PrefixIndexError`), then fills a new cache with the index's K/V — or, when the index keeps none,
 * prefills `tokens` again. Fails with `PrefixIndexError` and the forward's errors.
 */
export const restoreContext = (
  g: GraphLlama,
  model: LlamaModel,
  tokens: readonly number[],
  index: PrefixIndex,
  room = 1024,
): Effect.Effect<SqueezedContext, LongctxError | PrefixIndexError> =>
  Effect.gen(function* () {
    const cfg = model.config;
    yield* checkIndexFor(model, tokens, index);
    const F = index.fixed, d = cfg.headDim;
    const cache = yield* g.newCache(F + room);
    const t0 = performance.now();
    if (index.kv) {
      yield* writeCacheRows(g.backend, cache, { kvHeads: cfg.nKvHead, headDim: d }, F, index.kv);
    } else {
      yield* g.forward(tokens, cache, { logits: "none" });
    }
    return { index, cache, ms: { prefill: performance.now() - t0, cluster: 0 } };
  });

/**
 * The per-layer decode attention of the `squeezed` technique with `params`, bound to `index` (its centroids,
 * sizes, labels and τ for `params.percentile`; with `hierarchical`, its L1 level and τ₁): pass as the
 * forward's `decodeAttention` for the question and the answer. Fails with the technique's graph errors and
 * `PrefixIndexError` `shape` for a hierarchical lookup on a flat index.
 */
export const squeezedDecode = (
  index: PrefixIndex,
  params: SqueezedParams,
): Effect.Effect<(layer: number) => CacheDecodeGraphs, TechniqueGraphError | PrefixIndexError> =>
  Effect.gen(function* () {
    if (params.hierarchical && !index.clustersL1) {
      return yield* new squeezed.PrefixIndexError({
        reason: "shape",
        message: "the hierarchical lookup was asked of a flat prefix index (no L1 clusters)",
        hint: "build the index with hierarchical: true, or look up flat (hierarchical: false)",
      });
    }
    const base = yield* squeezed.squeezedCacheDecode(params);
    const perLayer = index.perLayer.map((_, l) => ({
      ...base,
      inputs: squeezed.layerInputs(index, l, params),
    }));
    return (l: number) => perLayer[l];
  });

/** Write `index` to `path` (see `squeezed.encodePrefixIndex`). Fails with `InputError` when it cannot write. */
export const saveSqueezedIndex = (
  path: string,
  index: PrefixIndex,
): Effect.Effect<number, InputError> =>
  Effect.gen(function* () {
    const bytes = yield* squeezed.encodePrefixIndex(index);
    yield* Effect.tryPromise({
      try: () => writeFile(path, bytes),
      catch: (e) =>
        new InputError({
          message: `cannot write the prefix index to ${path}: ${(e as Error).message}`,
          hint: "check the directory exists and is writable",
        }),
    });
    return bytes.length;
  });

/**
 * Read a prefix index from `path`. Fails with `InputError` when the file cannot be read and with
 * `PrefixIndexError` when it is not an index, corrupt, or of another version.
 */
export const loadSqueezedIndex = (
  path: string,
): Effect.Effect<PrefixIndex, InputError | PrefixIndexError> =>
  Effect.gen(function* () {
    const bytes = yield* Effect.tryPromise({
      try: () => readFile(path),
      catch: (e) =>
        new InputError({
          message: `cannot read the prefix index ${path}: ${(e as Error).message}`,
          hint: "check the path (an index written by saveSqueezedIndex or run --index)",
        }),
    });
    return yield* squeezed.decodePrefixIndex(
      new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    );
  });

/** One question's answer on a prepared context (see `askCache`). */
export type SqueezedAnswer = CacheAnswer;

/**
 * Ask one question of a prepared context: `askCache` on the context's cache and its fixed length (with
 * `decode`, the squeezed attention; without, dense over the cache). Fails with the forward's errors.
 */
export const askContext = (
  g: GraphLlama,
  ctx: SqueezedContext,
  question: readonly number[],
  maxNew: number,
  stop: (ids: readonly number[], next: number) => boolean,
  decode?: (layer: number) => CacheDecodeGraphs,
): Effect.Effect<SqueezedAnswer, LongctxError> =>
  askCache(g, ctx.cache, ctx.index.fixed, question, maxNew, stop, decode);
