/**
 * The `tokenselect` technique: per call (decode step or prefill chunk of at most `nLocal` queries) and layer,
 * `tokenselect.select` (criticality, soft voting, top-k: one token list for every head) → `tokenselect.compact`
 * (sink ∪ selected ∪ local window gathered, compacted positions) → `dense.cacheAttn` over the list. It runs on
 * the KV cache (the model forward's `decodeAttention` with `prefill: true`: the prompt in chunks too) and needs
 * the model's RoPE tables.
 *
 * Reference: TokenSelect (EMNLP 2025, arXiv 2411.02886); official code pzs19/TokenSelect
 * `patcher/token_retrieval.py` (see ops/tokenselect/README.md for the defaults and deviations).
 * @module
 */
import { Effect } from "effect";
import {
  type AttnDims,
  type CacheDecodeGraphs,
  type CarriedTensor,
  type Graph,
  graph,
  inferShapes,
  requireF32Cache,
  stagedTechnique,
  type Technique,
  type TechniqueGraphError,
  type TensorDesc,
} from "@longctx/graph";
import { cacheAttn } from "../dense/cache_attn.ts";
import { denseTechnique } from "../dense/technique.ts";
import { compact } from "./compact.ts";
import { listRows, TokenSelectParams } from "./params.ts";
import { select, selectCached } from "./select.ts";

/**
 * TokenSelect's density by construction at `dims` (attended / causal (query, key) pairs), the `seq` queries run
 * in calls of `nLocal` (the forward's chunks): a call ending at `n` tokens attends every causal key when `n ≤
 * nInit + topK + nLocal = R`, else its query `j` sees the list's first `R − len + j + 1` rows (bottom-right).
 */
export const tokenSelectConstructedDensity = (
  p: TokenSelectParams,
  dims: { seq: number; kvSeq: number },
): number => {
  const off = dims.kvSeq - dims.seq, R = listRows(p);
  let seen = 0, causal = 0;
  for (let s = 0; s < dims.seq; s += p.nLocal) {
    const len = Math.min(p.nLocal, dims.seq - s), n = off + s + len;
    for (let j = 0; j < len; j++) {
      const pos = off + s + j;
      seen += n <= R ? pos + 1 : R - len + j + 1;
      causal += pos + 1;
    }
  }
  return seen / causal;
};

/**
 * One layer's TokenSelect graph on a KV cache: inputs `q f32 [heads, seq, headDim]` (after RoPE, positions
 * `pos …`), `k`, `v f32 [kvHeads, capacity, headDim]` (the cache, `pos + seq` valid rows; runtime scalar `pos`),
 * `ropeCos`, `ropeSin f32 [positions, headDim / 2]`; outputs `o f32 [heads, seq, headDim]`, `lse f32 [heads,
 * seq]` (over the list) and `indices i32 [1, 1, topK]` (the selection; all −1 when every token is attended).
 */
export const tokenSelectGraph = (
  p: TokenSelectParams,
  name = "tokenselect.cache",
): Effect.Effect<Graph, TechniqueGraphError> =>
  Effect.gen(function* () {
    const g = graph(name);
    const q = g.input("q", select.inputs.q);
    const k = g.input("k", select.inputs.k);
    const v = g.input("v", compact.inputs.v);
    const ropeCos = g.input("ropeCos", select.inputs.ropeCos);
    const ropeSin = g.input("ropeSin", select.inputs.ropeSin);
    const indices = p.selectionCache
      ? g.add(selectCached, p, {
        q,
        k,
        ropeCos,
        ropeSin,
        selQ: g.input("selQ", selectCached.inputs.selQ),
        selIdx: g.input("selIdx", selectCached.inputs.selIdx),
        selStats: g.input("selStats", selectCached.inputs.selStats),
      }, "select").indices
      : g.add(select, p, { q, k, ropeCos, ropeSin }, "select").indices;
    const c = g.add(compact, p, { q, k, v, ropeCos, ropeSin, indices }, "compact");
    const a = g.add(
      cacheAttn,
      { scale: p.scale, window: 0, layout: "heads", splitKeys: 64, compacted: true },
      { q: c.q, kCache: c.kCache, vCache: c.vCache },
      "attn",
    );
    g.output("o", a.o);
    g.output("lse", a.lse);
    g.output("indices", indices);
    return yield* g.build();
  });

/**
 * The Selection Cache's carried state per layer (see `CacheDecodeGraphs.carried`): `selQ f32 [heads, headDim]`,
 * `selIdx i32 [1, 1, topK]`, `selStats u32 [4]` (reuses, calls that selected or reused, 0, 0).
 */
export const selectionCacheState = (p: TokenSelectParams): readonly CarriedTensor[] => [
  { name: "selQ", shape: (d) => [d.heads, d.headDim] },
  { name: "selIdx", shape: () => [1, 1, p.topK] },
  { name: "selStats", shape: () => [4] },
];

/**
 * TokenSelect on the model forward's KV cache: every call — decode steps and the prompt's chunks (`prefill`,
 * at most `nLocal` queries each: `maxChunk`) — selects again (`refresh` 1), or with `selectionCache` reuses the
 * layer's last selection when the selection queries are similar (its state carried by the forward).
 */
export const tokenSelectCacheDecode = (
  p: TokenSelectParams,
): Effect.Effect<CacheDecodeGraphs, TechniqueGraphError> =>
  Effect.gen(function* () {
    const g = yield* tokenSelectGraph(p);
    return {
      refresh: 1,
      search: g,
      reuse: g,
      state: [],
      prefill: true,
      maxChunk: p.nLocal,
      ...(p.selectionCache ? { carried: selectionCacheState(p) } : {}),
    };
  });

const staged = stagedTechnique<TokenSelectParams>({
  name: "tokenselect",
  reference: "TokenSelect (EMNLP 2025, arXiv 2411.02886): dynamic token-level KV cache selection, " +
    "official code pzs19/TokenSelect patcher/token_retrieval.py",
  phases: ["decode"],
  sparse: true,
  params: TokenSelectParams,
  operators: [select, selectCached, compact, cacheAttn],
  stages: ["token-select", "token-compact", "cache-attn"],
  densityScaled: [],
  knob: {
    name: "selected tokens",
    param: "topK",
    values: [256, 512, 1024, 2048],
    sparser: "lower",
    description: "tokens selected per layer and call besides the nInit sink and the nLocal window (tokens)",
  },
  constructedDensity: tokenSelectConstructedDensity,
  cacheDecode: tokenSelectCacheDecode,
  delegates: {
    prefill: {
      technique: denseTechnique,
      params: (p) => ({ scale: p.scale }),
      reason:
        "TokenSelect selects per prefill chunk on the KV cache: a whole-prompt graph runs dense attention; " +
        "the chunked prefill runs through the forward's cache attention (cacheDecode with prefill)",
    },
  },
  state: {
    perSequence: true,
    description:
      "none by default (every call selects again, as the released code); with selectionCache, per " +
      "layer the last selection query f32 [heads, headDim], its list i32 [topK] and two counters",
  },
});

/**
 * The `tokenselect` technique (see the module doc): a decode-phase technique (one call of ≤ `nLocal` queries on
 * the KV cache, the forward's prefill chunks included through {@link tokenSelectCacheDecode}), knob `topK`,
 * density by construction. Its graph for `decode` is {@link tokenSelectGraph} checked against `dims` (the
 * cache `kvSeq` rows, the RoPE tables `kvSeq` positions); a whole-prompt `prefill` graph is dense's (the
 * delegate): TokenSelect prefills in chunks on the cache, through {@link tokenSelectCacheDecode}.
 */
export const tokenSelectTechnique: Technique<TokenSelectParams> = {
  ...staged,
  graph: (p, dims: AttnDims, phase, dtype = "f32") =>
    Effect.gen(function* () {
      if (phase === "prefill") return yield* staged.graph(p, dims, phase, dtype);
      yield* requireF32Cache("tokenselect", dtype);
      const g = yield* tokenSelectGraph(p, "tokenselect.decode");
      const f32 = (shape: number[], dimsOf: readonly string[]): TensorDesc => ({
        dtype: "f32",
        dims: dimsOf,
        shape,
      });
      const kv = [dims.kvHeads, dims.kvSeq, dims.headDim], rope = [dims.kvSeq, dims.headDim / 2];
      yield* inferShapes(g, {
        q: f32([dims.heads, dims.seq, dims.headDim], ["heads", "seq", "headDim"]),
        k: f32(kv, ["kvHeads", "kvSeq", "headDim"]),
        v: f32(kv, ["kvHeads", "kvSeq", "headDim"]),
        ropeCos: f32(rope, ["positions", "half"]),
        ropeSin: f32(rope, ["positions", "half"]),
      });
      return g;
    }),
};
