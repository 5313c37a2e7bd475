/**
 * The `hip` technique: HiP's hierarchical top-k mask search (`hip.mask`) → attention over the sink, the
 * selected keys and the sliding window (`dense.indexAttn`), for prefill and decode. The first `denseLayers`
 * layers run dense attention (the caller's per-layer choice; the official defaults keep 3).
 *
 * Reference: HiP Attention (ICLR 2025, arXiv 2406.09827 v2); official code DeepAuto-AI/hip-attention
 * `src/hip_attn/v1_1/` (see ops/hip/README.md for the defaults and the deviations).
 * @module
 */
import { Effect } from "effect";
import {
  type CacheDecodeGraphs,
  graph,
  stagedTechnique,
  type Technique,
  type TechniqueGraphError,
} from "@longctx/graph";
import { indexAttn, indexAttnF16, indexAttnParamsOf, indexCacheAttn } from "../dense/index_attn.ts";
import { hipCacheMask, hipMask, hipMaskF16 } from "./mask.ts";
import { HipParams, hipRegion } from "./params.ts";

/**
 * HiP's density by construction at `dims` (attended / causal (query, key) pairs): per query at position `p` of
 * its block, `min(p + 1, sink + min(k, region) + window)` keys — an upper bound that counts every selected key
 * outside the query's window (the true count is lower by at most `blockQ` per query).
 */
export const hipConstructedDensity = (p: HipParams, dims: { seq: number; kvSeq: number }): number => {
  const off = dims.kvSeq - dims.seq;
  let seen = 0, causal = 0;
  for (let b = 0; b * p.blockQ < dims.seq; b++) {
    const i1 = Math.min(dims.seq, (b + 1) * p.blockQ);
    const listed = Math.min(p.topK, hipRegion(p, i1 - 1 + off).tokens);
    for (let i = b * p.blockQ; i < i1; i++) {
      seen += Math.min(i + off + 1, p.sink + listed + p.window);
      causal += i + off + 1;
    }
  }
  return seen / causal;
};

/**
 * HiP for one layer: `hip.mask` on Q `[heads, seq, headDim]`, K `[kvHeads, kvSeq, headDim]` (f32 or f16;
 * queries are the last `seq` positions) → per (query head, block of `blockQ` queries) `topK` keys, then
 * `dense.indexAttn` → `o f32 [heads, seq, headDim]`, `lse f32 [heads, seq]`, `density f32 [heads]` (attended /
 * causal (query, key) pairs). The knob is `topK`: fewer keys, sparser. In decode (`seq = 1`) the graph searches
 * the mask of the one query; a caller reusing masks across steps runs `dense.indexAttn` alone with the last
 * `indices` (`refresh` steps apart, official default 8).
 */
/**
 * HiP's decode on the model forward's KV cache: a refresh step searches the mask of the step's query
 * (`hip.cacheMask`) and attends through it (`dense.indexCacheAttn`), outputting the mask as state `indices
 * i32 [heads, 1, topK]`; the next `refresh − 1` steps attend through that mask (official vLLM integration:
 * `HIP_REFRESH_INTERVAL = 8`).
 */
export const hipCacheDecode = (p: HipParams): Effect.Effect<CacheDecodeGraphs, TechniqueGraphError> =>
  Effect.gen(function* () {
    const ports = (g: ReturnType<typeof graph>) => ({
      q: g.input("q", hipCacheMask.inputs.q),
      kCache: g.input("kCache", hipCacheMask.inputs.kCache),
      vCache: g.input("vCache", indexCacheAttn.inputs.vCache),
    });
    // the attention reads only its own parameters (the graph builder refuses keys a schema lacks)
    const ap = indexAttnParamsOf(p);
    const s = graph("hip.decode.search");
    const si = ports(s);
    const m = s.add(hipCacheMask, p, { q: si.q, kCache: si.kCache }, "mask");
    const sa = s.add(indexCacheAttn, ap, { ...si, indices: m.indices }, "attn");
    s.output("o", sa.o);
    s.output("lse", sa.lse);
    s.output("indices", m.indices);
    const r = graph("hip.decode.reuse");
    const ri = ports(r);
    const ra = r.add(
      indexCacheAttn,
      ap,
      { ...ri, indices: r.input("indices", indexCacheAttn.inputs.indices) },
      "attn",
    );
    r.output("o", ra.o);
    r.output("lse", ra.lse);
    return { refresh: p.refresh, search: yield* s.build(), reuse: yield* r.build(), state: ["indices"] };
  });

/**
 * The `hip` technique (see the module doc): stages `hip.mask → dense.indexAttn`, prefill and decode, knob
 * `topK`, density by construction for the planner, and the KV-cache decode of {@link hipCacheDecode}.
 */
export const hipTechnique: Technique<HipParams> = stagedTechnique({
  name: "hip",
  reference: "HiP Attention (ICLR 2025, arXiv 2406.09827 v2): hierarchically pruned attention, " +
    "official v1.1 code (src/hip_attn/v1_1)",
  phases: ["prefill", "decode"],
  sparse: true,
  params: HipParams,
  operators: [hipMask, hipMaskF16, indexAttn, indexAttnF16],
  stages: ["mask", "index-attn"],
  densityScaled: ["index-attn"],
  extraOutputs: ["density"],
  knob: {
    name: "top-k keys",
    param: "topK",
    values: [128, 256, 512, 1024],
    sparser: "lower",
    description: "keys selected per query block and head besides the sink and the sliding window " +
      "(tokens; a multiple of blockK)",
  },
  constructedDensity: hipConstructedDensity,
  cacheDecode: hipCacheDecode,
  state: {
    perSequence: true,
    description:
      "decode: the last mask, `indices i32 [heads, 1, topK]` per layer, reusable for `refresh` steps; " +
      "prefill keeps nothing",
  },
});
