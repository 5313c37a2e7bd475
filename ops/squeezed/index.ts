/**
 * Squeezed Attention's prefix index: the offline half of the method for one fixed context (a document asked
 * many questions) — per layer and KV head, the clusters of the context's post-RoPE keys (raw-mean centroids,
 * sizes, each key's label), and the calibration of the one global threshold from the observation window's
 * queries — as a persistent, versioned artifact with a SHA-256 checksum, optionally carrying the context's KV
 * cache so a later question needs no prefill.
 *
 * Calibration (official `run_global_threshold` in `squeezedattention/clustering.py`): the last `obsWindow`
 * queries stand in for user queries; every clustered key gets its cluster's lookup score (`squeezed.lookup`
 * averaged over those queries); the scores of every layer, head and key are pooled and τ(p) is their
 * p-quantile. The official code keeps τ at p ∈ {0.5, 0.7, 0.8, 0.9}; the index keeps the quantiles at steps
 * of 0.001 so any percentile reads its τ (the four official ones exactly). With GQA the pooled value of a key
 * is per query head (`gqa: "head"`) or the maximum over its group (`"union"`), as the selection keeps it.
 * @module
 */
import { Data, Effect, Schema } from "effect";
import { type HostTensor, hostTensor, type TaggedErrorClass } from "@longctx/graph";
import type { Gemm } from "@longctx/graph";
import { cpuKeyClustering, type KeyClustering, type KeyClusters } from "./kmeans.ts";
import { lookupReference } from "./lookup.ts";
import { clusterCount, clusterCountL1, kvHeadOf, type SqueezedParams } from "./params.ts";

/** Why a prefix index cannot be used (the `reason` of a {@link PrefixIndexError}). */
export type PrefixIndexErrorReason = "not-an-index" | "corrupt" | "version" | "stale" | "shape";

/** The fields of a {@link PrefixIndexError}. */
export interface PrefixIndexErrorFields {
  /** What is wrong with the index. */
  readonly reason: PrefixIndexErrorReason;
  /** What went wrong. */
  readonly message: string;
  /** What to do about it. */
  readonly hint: string;
}
/** @internal */
const PrefixIndexErrorBase: TaggedErrorClass<"PrefixIndexError", PrefixIndexErrorFields> = Data.TaggedError(
  "PrefixIndexError",
)<PrefixIndexErrorFields>;
/**
 * A prefix index that cannot serve this model and context: not an index file, corrupt (checksum, header or
 * section bounds), of another format version, stale (built for other tokens or another model), or of shapes
 * the model does not have.
 */
export class PrefixIndexError extends PrefixIndexErrorBase {}

/** One layer's clusters. */
export interface PrefixIndexLayer {
  /** Raw-mean centroids, `f32 [kvHeads, clusters, headDim]`. */
  readonly centroids: Float32Array;
  /** Keys per cluster, `f32 [kvHeads, clusters]`. */
  readonly sizes: Float32Array;
  /** Cluster of each clustered key, `i32 [kvHeads, clustered]`. */
  readonly labels: Int32Array;
  /** k-means inertia (normalised keys) per KV head. */
  readonly inertia: Float64Array;
  /** The L1 level of a hierarchical index (fine clusters ordered by their L1 parent). */
  readonly l1?: PrefixIndexL1;
}

/** One layer's L1 (coarse) clusters over its fine ones. */
export interface PrefixIndexL1 {
  /** L1 centroids (the mean of their fine centroids), `f32 [kvHeads, clustersL1, headDim]`. */
  readonly centroids: Float32Array;
  /** Keys under each L1 cluster, `f32 [kvHeads, clustersL1]`. */
  readonly sizes: Float32Array;
  /** L1 cluster `a`'s fine clusters are `ptr[a] … ptr[a + 1] − 1`, `i32 [kvHeads, clustersL1 + 1]`. */
  readonly ptr: Int32Array;
  /** Each fine cluster's L1 parent, `i32 [kvHeads, clusters]`. */
  readonly parent: Int32Array;
}

/** The geometry and provenance of a prefix index. */
export interface PrefixIndexHeader {
  /** Fixed-context tokens `F` (clustered + observation window). */
  readonly fixed: number;
  /** Clustered keys `S = F − obsWindow`. */
  readonly clustered: number;
  /** Clusters per (layer, KV head). */
  readonly clusters: number;
  /** L1 clusters per (layer, KV head) of a hierarchical index; 0 for a flat one. */
  readonly clustersL1: number;
  /** Transformer layers. */
  readonly layers: number;
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads. */
  readonly kvHeads: number;
  /** Elements per head vector. */
  readonly headDim: number;
  /** The index-building parameters. */
  readonly params: Pick<
    SqueezedParams,
    "percentClusters" | "obsWindow" | "iterations" | "seed" | "scale" | "percentClustersL1"
  >;
  /** A string naming the model the index was built with (the caller's fingerprint). */
  readonly model: string;
  /** SHA-256 (hex) of the fixed context's token ids (int32 little-endian). */
  readonly tokensSha256: string;
}

/** A built (or loaded) prefix index. */
export interface PrefixIndex extends PrefixIndexHeader {
  /** Per layer, its clusters. */
  readonly perLayer: readonly PrefixIndexLayer[];
  /** τ at the quantiles 0, 0.001, …, 1 of the pooled calibration scores, per GQA mode. */
  readonly quantiles: { readonly head: Float32Array; readonly union: Float32Array };
  /** The same for the L1 scores of a hierarchical index. */
  readonly quantilesL1?: { readonly head: Float32Array; readonly union: Float32Array };
  /** The fixed context's KV cache per layer, `f32 [kvHeads, fixed, headDim]` each, when kept. */
  readonly kv?: { readonly k: readonly Float32Array[]; readonly v: readonly Float32Array[] };
}

/** The fixed context's data an index is built from, per layer. */
export interface PrefixCapture {
  /** Post-RoPE keys of layer `l`, `f32 [kvHeads, fixed, headDim]`. */
  readonly keys: (l: number) => Float32Array;
  /** Post-RoPE queries of the last `obsWindow` tokens of layer `l`, `f32 [heads, obsWindow, headDim]`. */
  readonly queries: (l: number) => Float32Array;
  /** Values of layer `l` (`f32 [kvHeads, fixed, headDim]`), to keep the KV cache in the index. */
  readonly values?: (l: number) => Float32Array;
}

/** Options of {@link buildPrefixIndex}. */
export interface BuildOptions {
  /** A BLAS-shaped GEMM for k-means' assignment step (the host clustering's). */
  readonly gemm?: Gemm;
  /** Called after each layer (for progress). */
  readonly onLayer?: (l: number) => void;
}

/** Options of {@link buildPrefixIndexEffect}: those of {@link buildPrefixIndex} and the clustering. */
export interface BuildEffectOptions<E = never> extends BuildOptions {
  /**
   * How every KV head's keys of a layer are clustered (and, for a hierarchical index, its fine centroids):
   * default the host k-means (`cpuKeyClustering`, with `gemm` for the keys); `gpuKeyClustering` of
   * `kmeans_gpu_driver.ts` for the GPU k-means.
   */
  readonly cluster?: KeyClustering<E>;
}

const STEPS = 1000;

/** The quantiles `0, 1/STEPS, …, 1` of `x` (sorted in place), numpy's linear interpolation. */
const quantileTable = (x: Float32Array): Float32Array => {
  x.sort();
  const out = new Float32Array(STEPS + 1);
  for (let s = 0; s <= STEPS; s++) {
    const at = (s / STEPS) * (x.length - 1), lo = Math.floor(at), hi = Math.min(x.length - 1, lo + 1);
    out[s] = x[lo] + (x[hi] - x[lo]) * (at - lo);
  }
  return out;
};

/** SHA-256 (hex) of token ids as int32 little-endian. */
export const tokensSha256 = (tokens: ArrayLike<number>): Effect.Effect<string> =>
  Effect.promise(async () => {
    const b = new Uint8Array(Int32Array.from(tokens).buffer);
    const h = new Uint8Array(await crypto.subtle.digest("SHA-256", b));
    return [...h].map((x) => x.toString(16).padStart(2, "0")).join("");
  });

/** The model geometry and context length a prefix index is built for. */
export interface PrefixIndexDims {
  /** Transformer layers. */
  readonly layers: number;
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads. */
  readonly kvHeads: number;
  /** Elements per head vector. */
  readonly headDim: number;
  /** Fixed-context tokens. */
  readonly fixed: number;
}

/**
 * Build the prefix index of a fixed context of `dims.fixed` tokens (see the module doc) on the host:
 * {@link buildPrefixIndexEffect} with the host k-means (`O(iterations · S · C · headDim)` per KV head), run
 * synchronously. Throws a `RangeError` for a context not longer than the window.
 */
export const buildPrefixIndex = (
  capture: PrefixCapture,
  dims: PrefixIndexDims,
  p: SqueezedParams,
  provenance: { model: string; tokensSha256: string },
  o: BuildOptions = {},
): PrefixIndex => Effect.runSync(buildPrefixIndexEffect(capture, dims, p, provenance, o));

/**
 * Build the prefix index of a fixed context of `dims.fixed` tokens (see the module doc): per layer the cosine
 * k-means of every KV head's first `fixed − obsWindow` keys into `clusterCount(p, fixed)` clusters through
 * `o.cluster` (default the host k-means), then the calibration quantiles from the observation window's queries;
 * a hierarchical index clusters each head's fine centroids into its L1 clusters the same way. `provenance`: the
 * fixed context's token hash and the caller's model fingerprint. Fails with the clustering's errors; a context
 * not longer than the window or keys of the wrong size are a `RangeError` (a defect).
 */
export const buildPrefixIndexEffect = <E = never>(
  capture: PrefixCapture,
  dims: PrefixIndexDims,
  p: SqueezedParams,
  provenance: { model: string; tokensSha256: string },
  o: BuildEffectOptions<E> = {},
): Effect.Effect<PrefixIndex, E> =>
  Effect.gen(function* () {
    const { layers, heads: H, kvHeads: Hk, headDim: d, fixed: F } = dims;
    const fine: KeyClustering<E> = o.cluster ?? cpuKeyClustering(o.gemm);
    const coarse: KeyClustering<E> = o.cluster ?? cpuKeyClustering();
    const C = clusterCount(p, F), S = F - p.obsWindow, g = H / Hk;
    const C1 = p.hierarchical ? clusterCountL1(p, F) : 0;
    const perLayer: PrefixIndexLayer[] = [];
    const poolHead = new Float32Array(layers * H * S), poolUnion = new Float32Array(layers * Hk * S);
    const pool1Head = new Float32Array(C1 ? layers * H * S : 0),
      pool1Union = new Float32Array(C1 ? layers * Hk * S : 0);
    /** Pool each clustered key's value (its cluster's score through `labelOf`) per head and per group. */
    const poolInto = (
      ph: Float32Array,
      pu: Float32Array,
      l: number,
      score: Float32Array,
      K: number,
      labelOf: (hk: number, i: number) => number,
    ) => {
      for (let h = 0; h < H; h++) {
        const hk = kvHeadOf(h, H, Hk);
        for (let i = 0; i < S; i++) {
          const v = score[h * K + labelOf(hk, i)];
          ph[(l * H + h) * S + i] = v;
          const u = (l * Hk + hk) * S + i;
          if (h % g === 0 || v > pu[u]) pu[u] = v;
        }
      }
    };
    const ks: Float32Array[] = [], vs: Float32Array[] = [];
    for (let l = 0; l < layers; l++) {
      const keys = capture.keys(l);
      if (keys.length !== Hk * F * d) {
        throw new RangeError(`layer ${l} keys: ${keys.length} values, want ${Hk * F * d}`);
      }
      const centroids = new Float32Array(Hk * C * d), sizes = new Float32Array(Hk * C);
      const labels = new Int32Array(Hk * S), inertia = new Float64Array(Hk);
      const l1Centroids = new Float32Array(Hk * C1 * d), l1Sizes = new Float32Array(Hk * C1);
      const l1Ptr = new Int32Array(C1 ? Hk * (C1 + 1) : 0), l1Parent = new Int32Array(C1 ? Hk * C : 0);
      const km = { iterations: p.iterations, seed: p.seed };
      const perHead = yield* fine(keys, { kvHeads: Hk, rows: F, points: S, headDim: d, clusters: C }, km);
      // L1: k-means of the fine centroids (official: run_clustering on the L2 centroids, window 0)
      let tops: readonly KeyClusters[] = [];
      if (C1) {
        const fineCentroids = new Float32Array(Hk * C * d);
        perHead.forEach((r, hk) => fineCentroids.set(r.centroids, hk * C * d));
        tops = yield* coarse(
          fineCentroids,
          { kvHeads: Hk, rows: C, points: C, headDim: d, clusters: C1 },
          km,
        );
      }
      for (let hk = 0; hk < Hk; hk++) {
        const r = perHead[hk];
        inertia[hk] = r.inertia;
        if (!C1) {
          centroids.set(r.centroids, hk * C * d);
          for (let c = 0; c < C; c++) sizes[hk * C + c] = r.sizes[c];
          labels.set(r.labels, hk * S);
          continue;
        }
        // the fine clusters renumbered in parent order so each L1 cluster's children are one range
        const top = tops[hk];
        const order = Array.from({ length: C }, (_, c) => c).sort((a, b) =>
          top.labels[a] - top.labels[b] || a - b
        );
        const renum = new Int32Array(C);
        order.forEach((old, c) => {
          renum[old] = c;
          centroids.set(r.centroids.subarray(old * d, old * d + d), (hk * C + c) * d);
          sizes[hk * C + c] = r.sizes[old];
          l1Parent[hk * C + c] = top.labels[old];
          l1Sizes[hk * C1 + top.labels[old]] += r.sizes[old];
        });
        for (let i = 0; i < S; i++) labels[hk * S + i] = renum[r.labels[i]];
        l1Centroids.set(top.centroids, hk * C1 * d);
        for (let a = 0, c = 0; a <= C1; a++) {
          while (c < C && l1Parent[hk * C + c] < a) c++;
          l1Ptr[hk * (C1 + 1) + a] = c;
        }
      }
      const q = capture.queries(l);
      const score = lookupReference(p.scale, q, centroids, sizes, { H, Hk, seq: p.obsWindow, C, d });
      poolInto(poolHead, poolUnion, l, score, C, (hk, i) => labels[hk * S + i]);
      if (C1) {
        const s1 = lookupReference(p.scale, q, l1Centroids, l1Sizes, { H, Hk, seq: p.obsWindow, C: C1, d });
        poolInto(pool1Head, pool1Union, l, s1, C1, (hk, i) => l1Parent[hk * C + labels[hk * S + i]]);
      }
      perLayer.push({
        centroids,
        sizes,
        labels,
        inertia,
        ...(C1 ? { l1: { centroids: l1Centroids, sizes: l1Sizes, ptr: l1Ptr, parent: l1Parent } } : {}),
      });
      if (capture.values) {
        ks.push(keys.slice());
        vs.push(capture.values(l).slice());
      }
      o.onLayer?.(l);
    }
    return {
      fixed: F,
      clustered: S,
      clusters: C,
      clustersL1: C1,
      layers,
      heads: H,
      kvHeads: Hk,
      headDim: d,
      params: {
        percentClusters: p.percentClusters,
        obsWindow: p.obsWindow,
        iterations: p.iterations,
        seed: p.seed,
        scale: p.scale,
        percentClustersL1: p.percentClustersL1,
      },
      model: provenance.model,
      tokensSha256: provenance.tokensSha256,
      perLayer,
      quantiles: { head: quantileTable(poolHead), union: quantileTable(poolUnion) },
      ...(C1 ? { quantilesL1: { head: quantileTable(pool1Head), union: quantileTable(pool1Union) } } : {}),
      ...(capture.values ? { kv: { k: ks, v: vs } } : {}),
    };
  });

/**
 * τ for `percentile` (in [0, 1]) and a GQA mode, read from the index's quantile table (linear); `level` 1: the
 * L1 threshold of a hierarchical index (`RangeError` for a flat one).
 */
export const thresholdOf = (
  index: PrefixIndex,
  percentile: number,
  gqa: SqueezedParams["gqa"],
  level: 1 | 2 = 2,
): number => {
  const tables = level === 1 ? index.quantilesL1 : index.quantiles;
  if (!tables) throw new RangeError("a flat prefix index has no L1 threshold");
  const t = tables[gqa], at = Math.min(1, Math.max(0, percentile)) * STEPS;
  const lo = Math.floor(at), hi = Math.min(STEPS, lo + 1);
  return t[lo] + (t[hi] - t[lo]) * (at - lo);
};

/**
 * Layer `l`'s index tensors as graph inputs of the `squeezed` decode graph: `centroids`, `sizes`, `labels` and
 * `threshold f32 [1]` (τ for `p.percentile` and `p.gqa`); with `p.hierarchical` also the L1 level's
 * `centroidsL1`, `sizesL1`, `ptrL1`, `parentL1` and `thresholdL1` (τ₁ for `p.percentileL1`). Throws a
 * `RangeError` for a hierarchical call on a flat index.
 */
export const layerInputs = (
  index: PrefixIndex,
  l: number,
  p: Pick<SqueezedParams, "percentile" | "gqa" | "hierarchical" | "percentileL1">,
): Readonly<Record<string, HostTensor>> => {
  const L = index.perLayer[l], { kvHeads: Hk, clusters: C, headDim: d, clustered: S, clustersL1: C1 } = index;
  const flat = {
    centroids: hostTensor("f32", ["kvHeads", "clusters", "headDim"], [Hk, C, d], L.centroids),
    sizes: hostTensor("f32", ["kvHeads", "clusters"], [Hk, C], L.sizes),
    labels: hostTensor("i32", ["kvHeads", "clustered"], [Hk, S], L.labels),
    threshold: hostTensor("f32", ["one"], [1], Float32Array.of(thresholdOf(index, p.percentile, p.gqa))),
  };
  if (!p.hierarchical) return flat;
  if (!L.l1) throw new RangeError("a flat prefix index: build it with hierarchical: true");
  return {
    ...flat,
    centroidsL1: hostTensor("f32", ["kvHeads", "clustersL1", "headDim"], [Hk, C1, d], L.l1.centroids),
    sizesL1: hostTensor("f32", ["kvHeads", "clustersL1"], [Hk, C1], L.l1.sizes),
    ptrL1: hostTensor("i32", ["kvHeads", "boundsL1"], [Hk, C1 + 1], L.l1.ptr),
    parentL1: hostTensor("i32", ["kvHeads", "clusters"], [Hk, C], L.l1.parent),
    thresholdL1: hostTensor(
      "f32",
      ["one"],
      [1],
      Float32Array.of(thresholdOf(index, p.percentileL1, p.gqa, 1)),
    ),
  };
};

// ---- the artifact -------------------------------------------------------------------------------------------

/** The format's name in the header and its version (a reader refuses other versions). */
export const INDEX_FORMAT = "longctx-squeezed-index";
/** The format version this code writes and reads. */
export const INDEX_VERSION = 1;
const MAGIC = new TextEncoder().encode("LCSQZIDX");

const HeaderSchema = Schema.Struct({
  format: Schema.Literal(INDEX_FORMAT),
  version: Schema.Int,
  fixed: Schema.Int,
  clustered: Schema.Int,
  clusters: Schema.Int,
  clustersL1: Schema.Int,
  layers: Schema.Int,
  heads: Schema.Int,
  kvHeads: Schema.Int,
  headDim: Schema.Int,
  params: Schema.Struct({
    percentClusters: Schema.Finite,
    obsWindow: Schema.Int,
    iterations: Schema.Int,
    seed: Schema.Int,
    scale: Schema.Finite,
    percentClustersL1: Schema.Finite,
  }),
  model: Schema.String,
  tokensSha256: Schema.String,
  kv: Schema.Boolean,
});

const sha = (b: Uint8Array): Effect.Effect<Uint8Array> =>
  Effect.promise(async () => new Uint8Array(await crypto.subtle.digest("SHA-256", b.slice())));

/** The sections of an index, in file order, with their element counts. */
const sections = (h: PrefixIndexHeader & { kv: boolean }) => {
  const { layers, kvHeads: Hk, clusters: C, headDim: d, clustered: S, fixed: F, clustersL1: C1 } = h;
  const out: { name: string; count: number }[] = [];
  for (let l = 0; l < layers; l++) {
    out.push(
      { name: `c${l}`, count: Hk * C * d },
      { name: `n${l}`, count: Hk * C },
      { name: `l${l}`, count: Hk * S },
      { name: `i${l}`, count: 2 * Hk }, // inertia as f64: two words each
    );
    if (C1) {
      out.push(
        { name: `c1_${l}`, count: Hk * C1 * d },
        { name: `n1_${l}`, count: Hk * C1 },
        { name: `p1_${l}`, count: Hk * (C1 + 1) },
        { name: `a1_${l}`, count: Hk * C },
      );
    }
  }
  out.push({ name: "qh", count: STEPS + 1 }, { name: "qu", count: STEPS + 1 });
  if (C1) out.push({ name: "q1h", count: STEPS + 1 }, { name: "q1u", count: STEPS + 1 });
  if (h.kv) {
    for (let l = 0; l < layers; l++) {
      out.push({ name: `k${l}`, count: Hk * F * d }, { name: `v${l}`, count: Hk * F * d });
    }
  }
  return out;
};

/**
 * The index as bytes: `LCSQZIDX`, a u32 header length, the JSON header (format, version, geometry, params,
 * model, token hash), padding to 4, the sections (centroids, sizes, labels, inertia per layer; the quantile
 * tables; the KV cache when kept) as little-endian 32-bit words, and the SHA-256 of everything before it.
 */
export const encodePrefixIndex = (index: PrefixIndex): Effect.Effect<Uint8Array> =>
  Effect.gen(function* () {
    const { perLayer: _l, quantiles: _q, quantilesL1: _q1, kv: _kv, ...head } = index;
    const header = new TextEncoder().encode(
      JSON.stringify({ format: INDEX_FORMAT, version: INDEX_VERSION, ...head, kv: index.kv !== undefined }),
    );
    const secs = sections({ ...index, kv: index.kv !== undefined });
    const start = Math.ceil((MAGIC.length + 4 + header.length) / 4) * 4;
    const words = secs.reduce((a, s) => a + s.count, 0);
    const out = new Uint8Array(start + words * 4 + 32);
    out.set(MAGIC);
    new DataView(out.buffer).setUint32(MAGIC.length, header.length, true);
    out.set(header, MAGIC.length + 4);
    let off = start;
    const put = (a: Float32Array | Int32Array | Float64Array) => {
      out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), off);
      off += a.byteLength;
    };
    for (const L of index.perLayer) {
      put(L.centroids), put(L.sizes), put(L.labels), put(L.inertia);
      if (L.l1) put(L.l1.centroids), put(L.l1.sizes), put(L.l1.ptr), put(L.l1.parent);
    }
    put(index.quantiles.head);
    put(index.quantiles.union);
    if (index.quantilesL1) put(index.quantilesL1.head), put(index.quantilesL1.union);
    if (index.kv) { for (let l = 0; l < index.layers; l++) put(index.kv.k[l]), put(index.kv.v[l]); }
    out.set(yield* sha(out.subarray(0, off)), off);
    return out;
  });

const corrupt = (message: string) =>
  new PrefixIndexError({
    reason: "corrupt",
    message,
    hint: "the file is damaged or truncated: build the index again from the document",
  });

/**
 * Read an index from bytes (see {@link encodePrefixIndex}). Fails with `PrefixIndexError`: `not-an-index` (no
 * magic), `corrupt` (checksum, header or sizes; labels outside the clusters), `version` (another format
 * version). Sections are copied out of `bytes`.
 */
export const decodePrefixIndex = (bytes: Uint8Array): Effect.Effect<PrefixIndex, PrefixIndexError> =>
  Effect.gen(function* () {
    if (bytes.length < MAGIC.length + 4 + 32 || MAGIC.some((b, i) => bytes[i] !== b)) {
      return yield* new PrefixIndexError({
        reason: "not-an-index",
        message: `not a squeezed prefix index (${bytes.length} bytes, no "LCSQZIDX" magic)`,
        hint: "pass a file written by the squeezed index builder (saveSqueezedIndex / run --index)",
      });
    }
    const body = bytes.subarray(0, bytes.length - 32), want = bytes.subarray(bytes.length - 32);
    const got = yield* sha(body);
    if (got.some((b, i) => b !== want[i])) return yield* corrupt("prefix index checksum mismatch (SHA-256)");
    const hl = new DataView(bytes.buffer, bytes.byteOffset).getUint32(MAGIC.length, true);
    if (MAGIC.length + 4 + hl > body.length) return yield* corrupt(`header of ${hl} bytes past the end`);
    let raw: unknown;
    try {
      raw = JSON.parse(
        new TextDecoder("utf-8", { fatal: true }).decode(
          body.subarray(MAGIC.length + 4, MAGIC.length + 4 + hl),
        ),
      );
    } catch {
      return yield* corrupt("prefix index header is not JSON");
    }
    const version = (raw as { version?: unknown })?.version;
    if (version !== INDEX_VERSION) {
      return yield* new PrefixIndexError({
        reason: "version",
        message: `prefix index format version ${
          String(version)
        }; this longctx reads version ${INDEX_VERSION}`,
        hint: "build the index again with this version",
      });
    }
    const h = yield* Schema.decodeUnknownEffect(HeaderSchema)(raw).pipe(
      Effect.mapError((e) => corrupt(`prefix index header: ${String(e).split("\n")[0]}`)),
    );
    const dimsOk = [h.fixed, h.clustered, h.clusters, h.layers, h.heads, h.kvHeads, h.headDim].every((x) =>
      x >= 1
    ) &&
      h.heads % h.kvHeads === 0 && h.clustered + h.params.obsWindow === h.fixed &&
      h.clusters <= h.clustered &&
      h.clustersL1 >= 0 && h.clustersL1 <= h.clusters;
    if (!dimsOk) return yield* corrupt("prefix index header: inconsistent geometry");
    const secs = sections(h);
    const start = Math.ceil((MAGIC.length + 4 + hl) / 4) * 4;
    const words = secs.reduce((a, s) => a + s.count, 0);
    if (start + words * 4 !== body.length) {
      return yield* corrupt(
        `prefix index holds ${body.length - start} section bytes, the header needs ${words * 4}`,
      );
    }
    let off = start;
    const take = () => {
      const s = secs.shift()!, b = body.slice(off, off + s.count * 4).buffer;
      off += s.count * 4;
      return b;
    };
    const perLayer: PrefixIndexLayer[] = [];
    for (let l = 0; l < h.layers; l++) {
      const centroids = new Float32Array(take()), sizes = new Float32Array(take());
      const labels = new Int32Array(take()), inertia = new Float64Array(take());
      if (labels.some((x) => x < 0 || x >= h.clusters)) {
        return yield* corrupt(`layer ${l}: a label outside the clusters`);
      }
      if (!h.clustersL1) {
        perLayer.push({ centroids, sizes, labels, inertia });
        continue;
      }
      const C1 = h.clustersL1, C = h.clusters;
      const l1 = {
        centroids: new Float32Array(take()),
        sizes: new Float32Array(take()),
        ptr: new Int32Array(take()),
        parent: new Int32Array(take()),
      };
      // the ranges partition the fine clusters and agree with the parents
      for (let hk = 0; hk < h.kvHeads; hk++) {
        const ptr = l1.ptr.subarray(hk * (C1 + 1), (hk + 1) * (C1 + 1));
        let ok = ptr[0] === 0 && ptr[C1] === C;
        for (let a = 0; a < C1 && ok; a++) {
          ok = ptr[a] <= ptr[a + 1];
          for (let c = ptr[a]; c < ptr[a + 1] && ok; c++) ok = l1.parent[hk * C + c] === a;
        }
        if (!ok) return yield* corrupt(`layer ${l}: L1 ranges that do not partition the fine clusters`);
      }
      perLayer.push({ centroids, sizes, labels, inertia, l1 });
    }
    const quantiles = { head: new Float32Array(take()), union: new Float32Array(take()) };
    const quantilesL1 = h.clustersL1
      ? { head: new Float32Array(take()), union: new Float32Array(take()) }
      : undefined;
    let kv: PrefixIndex["kv"];
    if (h.kv) {
      const k: Float32Array[] = [], v: Float32Array[] = [];
      for (let l = 0; l < h.layers; l++) k.push(new Float32Array(take())), v.push(new Float32Array(take()));
      kv = { k, v };
    }
    const { format: _f, version: _v, kv: _k, ...head } = h;
    return { ...head, perLayer, quantiles, ...(quantilesL1 ? { quantilesL1 } : {}), ...(kv ? { kv } : {}) };
  });

/**
 * Check that `index` was built for this model and fixed context: fails with `PrefixIndexError` `stale` when the
 * model fingerprint or the tokens' hash differ, `shape` when the heads or layers differ from `dims`.
 */
export const checkPrefixIndex = (
  index: PrefixIndex,
  expect: {
    model: string;
    tokensSha256: string;
    layers: number;
    heads: number;
    kvHeads: number;
    headDim: number;
  },
): Effect.Effect<void, PrefixIndexError> =>
  Effect.gen(function* () {
    if (index.model !== expect.model) {
      return yield* new PrefixIndexError({
        reason: "stale",
        message: `the prefix index was built with model "${index.model}", not "${expect.model}"`,
        hint: "build the index again with this model",
      });
    }
    if (index.tokensSha256 !== expect.tokensSha256) {
      return yield* new PrefixIndexError({
        reason: "stale",
        message:
          `the prefix index was built for another document (tokens ${index.tokensSha256.slice(0, 12)}…, ` +
          `this one ${expect.tokensSha256.slice(0, 12)}…)`,
        hint:
          "build the index for this document, or pass the same fixed context it was built from (in run: the " +
          "same --input, --plant, --context and --truncate)",
      });
    }
    const same = index.layers === expect.layers && index.heads === expect.heads &&
      index.kvHeads === expect.kvHeads && index.headDim === expect.headDim;
    if (!same) {
      return yield* new PrefixIndexError({
        reason: "shape",
        message:
          `the prefix index has ${index.layers} layers, heads ${index.heads}/${index.kvHeads}, head dim ` +
          `${index.headDim}; the model ${expect.layers}, ${expect.heads}/${expect.kvHeads}, ${expect.headDim}`,
        hint: "build the index again with this model",
      });
    }
  });

/**
 * The attention recall of the selection on the observation window's own queries (the calibration queries): for
 * each `(percentile, gqa)` point, the mean over layers, query heads and the last `obsWindow` queries of the true
 * softmax mass (causal, over the whole fixed context, float64) that falls on the kept clustered keys, divided
 * by the mass on all clustered keys — 1 for a selection that loses nothing. `capture` holds the context's keys
 * and the window's queries (those the index was built from). The scores use a GEMM when given.
 */
export const observationRecall = (
  index: PrefixIndex,
  capture: Pick<PrefixCapture, "keys" | "queries">,
  points: readonly { percentile: number; gqa: SqueezedParams["gqa"] }[],
  gemm?: Gemm,
): number[] => {
  const { layers: L, heads: H, kvHeads: Hk, headDim: d, fixed: F, clustered: S, clusters: C } = index;
  const obs = F - S, g = H / Hk, sc = index.params.scale > 0 ? index.params.scale : 1 / Math.sqrt(d);
  const taus = points.map((x) => thresholdOf(index, x.percentile, x.gqa));
  const sums = new Float64Array(points.length);
  const logits = new Float32Array(obs * F);
  for (let l = 0; l < L; l++) {
    const keys = capture.keys(l), q = capture.queries(l), lay = index.perLayer[l];
    const score = lookupReference(index.params.scale, q, lay.centroids, lay.sizes, { H, Hk, seq: obs, C, d });
    for (let h = 0; h < H; h++) {
      const hk = kvHeadOf(h, H, Hk);
      const qh = q.subarray(h * obs * d, (h + 1) * obs * d), kh = keys.subarray(hk * F * d, (hk + 1) * F * d);
      if (gemm) gemm(false, true, obs, F, d, 1, qh, d, kh, d, 0, logits, F);
      else {
        for (let j = 0; j < obs; j++) {
          for (let i = 0; i < F; i++) {
            let v = 0;
            for (let t = 0; t < d; t++) v += qh[j * d + t] * kh[i * d + t];
            logits[j * F + i] = v;
          }
        }
      }
      // per point, which clustered keys this head keeps
      const kept = points.map((x, n) => {
        const m = new Uint8Array(S);
        for (let i = 0; i < S; i++) {
          const c = lay.labels[hk * S + i];
          if (x.gqa === "head") m[i] = score[h * C + c] > taus[n] ? 1 : 0;
          else for (let y = hk * g; y < hk * g + g && !m[i]; y++) m[i] = score[y * C + c] > taus[n] ? 1 : 0;
        }
        return m;
      });
      for (let j = 0; j < obs; j++) {
        const n = S + j + 1; // causal: the query at position S + j
        let mx = -Infinity;
        for (let i = 0; i < n; i++) mx = Math.max(mx, logits[j * F + i] * sc);
        let all = 0;
        const w = new Float64Array(S);
        for (let i = 0; i < S; i++) all += w[i] = Math.exp(logits[j * F + i] * sc - mx);
        for (let p = 0; p < points.length; p++) {
          let got = 0;
          for (let i = 0; i < S; i++) if (kept[p][i]) got += w[i];
          sums[p] += all > 0 ? got / all : 1;
        }
      }
    }
  }
  return [...sums].map((s) => s / (L * H * obs));
};
