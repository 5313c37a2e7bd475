/**
 * The `squeezed` technique: a fixed context (prefilled dense, its keys clustered once into a prefix index)
 * asked questions; per call after the context and layer, `squeezed.lookup` (the queries against the
 * centroids), then for the question's prefill `squeezed.select` (the clusters above the global threshold, the
 * observation window, the question's own tokens) → `dense.indexCacheAttn` over those lists, and for a decode
 * step `squeezed.attend` (the same keys selected and attended in one split-KV pass, no lists).
 *
 * The index tensors (`centroids`, `sizes`, `labels`, `threshold`) are inputs of the decode graph that a prefix
 * index binds per layer (`layerInputs` of ops/squeezed/index.ts; the forward's `CacheDecodeGraphs.inputs`).
 *
 * Reference: Squeezed Attention (arXiv 2411.09688); official code SqueezeAILab/SqueezedAttention
 * (`offline_clustering.py`, `squeezedattention/clustering.py`, `modeling_llama.py`); see ops/squeezed/README.md.
 * @module
 */
import { Effect } from "effect";
import {
  type AttnDims,
  type CacheDecodeGraphs,
  type Graph,
  graph,
  graphInputDescs,
  inferShapes,
  requireF32Cache,
  stagedTechnique,
  type Technique,
  TechniqueError,
  type TechniqueGraphError,
} from "@longctx/graph";
import { indexCacheAttn } from "../dense/index_attn.ts";
import { denseTechnique } from "../dense/technique.ts";
import { lookup } from "./lookup.ts";
import { lookupHier } from "./lookup_hier.ts";
import { SqueezedParams } from "./params.ts";
import { select } from "./select.ts";
import { attend } from "./attend.ts";
import { squeezedGraphDims, squeezedSpeedInputs } from "./speed.ts";

/** The inputs of the squeezed decode graph that a prefix index binds per layer (flat lookup). */
export const INDEX_INPUTS: readonly string[] = ["centroids", "sizes", "labels", "threshold"];
/** The further inputs of the hierarchical lookup. */
export const INDEX_INPUTS_L1: readonly string[] = [
  "centroidsL1",
  "sizesL1",
  "ptrL1",
  "parentL1",
  "thresholdL1",
];

/**
 * One layer's Squeezed Attention graph on a KV cache: inputs `q f32 [heads, seq, headDim]` (after RoPE, at
 * positions `pos …` past the fixed context), `k`, `v f32 [kvHeads, capacity, headDim]` (the cache, runtime
 * scalar `pos`), and the index's `centroids f32 [kvHeads, clusters, headDim]`, `sizes f32 [kvHeads, clusters]`,
 * `labels i32 [kvHeads, clustered]`, `threshold f32 [1]` (with `hierarchical`, also `squeezed.lookupHier`'s
 * `centroidsL1`, `sizesL1`, `ptrL1`, `parentL1`, `thresholdL1`); outputs `o f32 [heads, seq, headDim]`, `lse f32
 * [heads, seq]` (over the attended keys), `density f32 [heads]` (the KV budget: kept fixed-context keys /
 * fixed-context tokens) and, for `path: "lists"`, the lists `indices i32 [heads, ceil(seq / blockQ),
 * capacity]`. `path`: `"lists"` (`squeezed.select` → `dense.indexCacheAttn`: the question's prefill) or
 * `"fused"` (`squeezed.attend`: a decode step); both attend the same keys.
 */
export const squeezedGraph = (
  p: SqueezedParams,
  name = "squeezed.cache",
  path: "lists" | "fused" = "lists",
): Effect.Effect<Graph, TechniqueGraphError> =>
  Effect.gen(function* () {
    const g = graph(name);
    const q = g.input("q", lookup.inputs.q);
    const k = g.input("k", select.inputs.kCache);
    const v = g.input("v", indexCacheAttn.inputs.vCache);
    const centroids = g.input("centroids", lookup.inputs.centroids);
    const sizes = g.input("sizes", lookup.inputs.sizes);
    const labels = g.input("labels", select.inputs.labels);
    const threshold = g.input("threshold", select.inputs.threshold);
    const score = p.hierarchical
      ? g.add(lookupHier, p, {
        q,
        centroids,
        sizes,
        centroidsL1: g.input("centroidsL1", lookupHier.inputs.centroidsL1),
        sizesL1: g.input("sizesL1", lookupHier.inputs.sizesL1),
        ptrL1: g.input("ptrL1", lookupHier.inputs.ptrL1),
        parentL1: g.input("parentL1", lookupHier.inputs.parentL1),
        thresholdL1: g.input("thresholdL1", lookupHier.inputs.thresholdL1),
      }, "lookup").score
      : g.add(lookup, p, { q, centroids, sizes }, "lookup").score;
    if (path === "fused") {
      const f = g.add(attend, p, { q, kCache: k, vCache: v, score, labels, threshold }, "attn");
      g.output("o", f.o);
      g.output("lse", f.lse);
      g.output("density", f.density);
      return yield* g.build();
    }
    const s = g.add(select, p, { q, kCache: k, score, labels, threshold }, "select");
    const a = g.add(
      indexCacheAttn,
      { blockQ: p.blockQ, sink: 0, window: 0, scale: p.scale, workgroupMemory: p.workgroupMemory },
      { q, kCache: k, vCache: v, indices: s.indices },
      "attn",
    );
    g.output("o", a.o);
    g.output("lse", a.lse);
    g.output("density", s.density);
    g.output("indices", s.indices);
    return yield* g.build();
  });

/**
 * Squeezed Attention on the model forward's KV cache: every call after the fixed context — the question's
 * prefill (`prefill`: multi-token calls too, through `chunk`, the lists) and each decode step (`search`, the
 * fused path) — looks up again (`refresh` 1; the official code redoes the lookup for every generated token).
 * The index tensors are left for the caller to bind (`inputs`); a forward without them fails with a typed
 * error naming the input.
 */
export const squeezedCacheDecode = (
  p: SqueezedParams,
): Effect.Effect<CacheDecodeGraphs, TechniqueGraphError> =>
  Effect.gen(function* () {
    const g = yield* squeezedGraph(p, "squeezed.step", "fused");
    const chunk = yield* squeezedGraph(p);
    return { refresh: 1, search: g, reuse: g, state: [], prefill: true, chunk };
  });

const staged = stagedTechnique<SqueezedParams>({
  name: "squeezed",
  reference: "Squeezed Attention (arXiv 2411.09688): clustered keys of a fixed context, centroid lookup, " +
    "official code SqueezeAILab/SqueezedAttention",
  phases: ["decode"],
  sparse: true,
  params: SqueezedParams,
  operators: [lookup, lookupHier, select, indexCacheAttn, attend],
  stages: ["centroid-lookup", "cluster-select", "index-cache-attn"],
  densityScaled: ["index-cache-attn", "cluster-attend"],
  knob: {
    name: "threshold percentile",
    param: "percentile",
    values: [0.5, 0.7, 0.8, 0.9],
    sparser: "higher",
    description: "quantile of the calibration scores used as the global threshold (fraction; the official " +
      "calibration points)",
  },
  cacheDecode: squeezedCacheDecode,
  graphInputs: { dims: squeezedGraphDims, speed: squeezedSpeedInputs },
  delegates: {
    prefill: {
      technique: denseTechnique,
      params: (p) => ({ scale: p.scale }),
      reason: "Squeezed Attention prefills the fixed context dense (its keys are then clustered offline); " +
        "the question after it runs through the cache attention (cacheDecode with prefill)",
    },
  },
  state: {
    perSequence: true,
    description: "the prefix index of the fixed context: per layer and KV head the raw-mean centroids f32 " +
      "[clusters, headDim], sizes and each key's label (≈ 5 % of the keys' size), and the threshold table",
  },
});

/**
 * The `squeezed` technique (see the module doc): decode-phase (every call after the fixed context, the
 * question's prefill included), knob `percentile`. Its `decode` graph at `dims` is {@link squeezedGraph} (the
 * fused path for one query, the lists for more) with the fixed context taken as the cache minus the call
 * (`kvSeq − seq` tokens) and `clusterCount` clusters; the whole-prompt prefill is dense's.
 */
export const squeezedTechnique: Technique<SqueezedParams> = {
  ...staged,
  graph: (p, dims: AttnDims, phase, dtype = "f32") =>
    Effect.gen(function* () {
      if (phase === "prefill") return yield* staged.graph(p, dims, phase, dtype);
      yield* requireF32Cache("squeezed", dtype);
      const F = dims.kvSeq - dims.seq;
      if (F <= p.obsWindow) {
        return yield* new TechniqueError({
          reason: "bad-params",
          technique: "squeezed",
          message:
            `a fixed context of ${F} tokens (kvSeq ${dims.kvSeq} − seq ${dims.seq}) is not longer than ` +
            `obsWindow ${p.obsWindow}`,
          hint: "squeezed needs a fixed context longer than its observation window before the call",
        });
      }
      const g = yield* squeezedGraph(p, "squeezed.decode", dims.seq === 1 ? "fused" : "lists");
      yield* inferShapes(g, yield* graphInputDescs(g, dims, squeezedGraphDims(p, dims)));
      return g;
    }),
};
