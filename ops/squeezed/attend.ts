/**
 * `squeezed.attend`: Squeezed Attention's selection and attention fused for the calls of few queries (a decode
 * step): per query head, the keys `squeezed.select` would list — the clustered keys whose cluster scores above
 * τ, the observation window when `1 / seq > τ`, every token after the fixed context — attended exactly, without
 * writing the lists. Same result as `squeezed.select` → `dense.indexCacheAttn` (sink 0, window 0; that pair
 * stays the path of the question's prefill, whose query blocks share key tiles).
 *
 * GPU: the split-KV kernels of `dense.cacheAttn` (ops/dense/cache_attn.ts) with a key filter: each split of the
 * cache compacts the keys its head keeps (the label → cluster score test, in workgroup memory), runs the online
 * softmax over those only, and the merge writes `density` (kept fixed-context keys of the call / fixed-context
 * length). A decode step thus costs one pass over the labels (4 bytes a key) and the kept keys' K/V, instead of
 * a list written per query head and a gather walked by one workgroup per head.
 *
 * Reference: Squeezed Attention (arXiv 2411.09688); official `LlamaFlashAttention2.forward` in
 * `transformers/src/transformers/models/llama/modeling_llama.py` (the mask from the centroid values through the
 * labels, the obs-window value `1 / Tu`, the question's tokens exact).
 * @module
 */
import { Effect } from "effect";
import { allocHost, tensorType } from "@longctx/graph";
import type { Cost, DescsOf, GpuLowering, HostOf, Operator, TensorType } from "@longctx/graph";
import { FILTER_SPLIT_MAX, type SplitKeyFilter, splitKvLowering } from "../dense/cache_attn.ts";
import { effectiveScale, need } from "../dense/common.ts";
import {
  cachePos,
  indexAttentionGemm,
  indexAttentionReference,
  indexAttnParams,
} from "../dense/index_attn.ts";
import { SqueezedParams } from "./params.ts";
import { select, selectReference } from "./select.ts";

/** Input ports of `squeezed.attend`. */
export type AttendInputs = {
  /** The call's queries after RoPE, `f32 [heads, seq, headDim]` at positions `pos …` (past the fixed context). */
  readonly q: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Key cache, `f32 [kvHeads, capacity, headDim]` holding `pos + seq` valid rows. */
  readonly kCache: TensorType<"f32", readonly ["kvHeads", "capacity", "headDim"]>;
  /** Value cache, `f32 [kvHeads, capacity, headDim]`. */
  readonly vCache: TensorType<"f32", readonly ["kvHeads", "capacity", "headDim"]>;
  /** `squeezed.lookup`'s scores, `f32 [heads, clusters]`. */
  readonly score: TensorType<"f32", readonly ["heads", "clusters"]>;
  /** The cluster of each clustered fixed-context key, `i32 [kvHeads, clustered]`. */
  readonly labels: TensorType<"i32", readonly ["kvHeads", "clustered"]>;
  /** The global threshold τ, `f32 [1]`. */
  readonly threshold: TensorType<"f32", readonly ["one"]>;
};
/** Output ports of `squeezed.attend`. */
export type AttendOutputs = {
  /** Attention output, `f32 [heads, seq, headDim]`. */
  readonly o: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Log-sum-exp (natural log) of the scaled scores of the attended keys, `f32 [heads, seq]`. */
  readonly lse: TensorType<"f32", readonly ["heads", "seq"]>;
  /** KV budget per query head: kept fixed-context keys (window included) / fixed-context length, `f32 [heads]`. */
  readonly density: TensorType<"f32", readonly ["heads"]>;
};

const inputs: AttendInputs = {
  q: tensorType("f32", ["heads", "seq", "headDim"] as const),
  kCache: tensorType("f32", ["kvHeads", "capacity", "headDim"] as const),
  vCache: tensorType("f32", ["kvHeads", "capacity", "headDim"] as const),
  score: tensorType("f32", ["heads", "clusters"] as const),
  labels: tensorType("i32", ["kvHeads", "clustered"] as const),
  threshold: tensorType("f32", ["one"] as const),
};
const outputs: AttendOutputs = {
  o: tensorType("f32", ["heads", "seq", "headDim"] as const),
  lse: tensorType("f32", ["heads", "seq"] as const),
  density: tensorType("f32", ["heads"] as const),
};

/**
 * Keys per split of the filtered kernel: 256, or 512 when the call would launch more than 8192 workgroups —
 * the best of 128 / 256 / 512 / 1024 on the H200 for Llama-3.1-8B heads (benchmarks/device/NOTES.md run 22:
 * 256 at 32K, 512 at 64K and 128K; a workgroup's compaction and tiles run one after another, so longer splits
 * make longer chains and shorter ones more merge work).
 */
export const attendSplitKeys = (seq: number, heads: number, capacity: number): number =>
  Math.min(FILTER_SPLIT_MAX, Math.ceil(capacity / 256) * heads * seq > 8192 ? 512 : 256);

/**
 * The key filter of `squeezed.attend` (see {@link SplitKeyFilter}): clustered key `key < S` kept when its
 * cluster's score exceeds τ (for `gqa: "union"`, any of the group's query heads), the observation window
 * `[S, F)` when `1 / seq > τ`, every later key; the fixed context's kept keys counted over `F`.
 */
const clusterFilter = (
  p: SqueezedParams,
  dm: { H: number; Hk: number; seq: number; S: number; C: number },
): SplitKeyFilter => {
  const { H, Hk, seq, S, C } = dm, g = H / Hk, F = S + p.obsWindow;
  const test = p.gqa === "head" ? [`  return SQS[h * ${C}u + c] > tau;`] : [
    `  for (var x = hk * ${g}u; x < hk * ${g}u + ${g}u; x++) { if (SQS[x * ${C}u + c] > tau) { return true; } }`,
    `  return false;`,
  ];
  return {
    key: `sq.${S}.${C}.${p.obsWindow}.${p.gqa}`,
    decls: [
      `@group(0) @binding(6) var<storage, read> SQS: array<f32>;`,
      `@group(0) @binding(7) var<storage, read> SQL: array<i32>;`,
      `@group(0) @binding(8) var<storage, read> SQT: array<f32>;`,
      `fn sq_keep(key: u32, h: u32) -> bool {`,
      `  let tau = SQT[0];`,
      `  if (key >= ${S}u) { return key >= ${F}u || 1.0 / f32(${seq}) > tau; }`,
      `  let hk = h / ${g}u;`,
      `  let c = u32(SQL[hk * ${S}u + key]);`,
      ...test,
      `}`,
    ],
    buffers: ["in:score", "in:labels", "in:threshold"],
    keep: `sq_keep(key, h)`,
    counts: `key < ${F}u`,
    countOf: F,
    checkPos: (pos) => {
      if (pos < F) {
        throw new RangeError(`a squeezed call at position ${pos}, inside the fixed context of ${F} tokens`);
      }
    },
  };
};

/**
 * `squeezed.attend` (see the module doc). Inputs `q f32 [heads, seq, headDim]`, `kCache`, `vCache f32 [kvHeads,
 * capacity, headDim]`, `score f32 [heads, clusters]`, `labels i32 [kvHeads, S]`, `threshold f32 [1]`; runtime
 * scalar `pos` (≥ the fixed context `S + obsWindow`); outputs `o f32 [heads, seq, headDim]`, `lse f32 [heads,
 * seq]`, `density f32 [heads]`. Shape errors as `squeezed.select`'s, and caches of different shapes or head
 * dims; the GPU lowering needs headDim a multiple of 64. A `pos` inside the fixed context or past the cache
 * fails the run with a `RangeError`.
 */
export const attend: Operator<SqueezedParams, AttendInputs, AttendOutputs> = {
  name: "squeezed.attend",
  kind: "cluster-attend",
  reference:
    "Squeezed Attention (arXiv 2411.09688): the keys of the clusters above one global threshold, the " +
    "observation window and the question attended exactly (official modeling_llama.py), fused with the " +
    "split-KV online softmax (FlashAttention-2, Dao 2023, §3.1)",
  params: SqueezedParams,
  inputs,
  outputs,
  scalars: ["pos"],
  // a decode step after a fixed context of 400 clustered keys and the default window of 100
  example: {
    dims: { clusters: 32, clustered: 400, one: 1, seq: 1, capacity: 1024 },
    scalars: { pos: 600 },
  },
  infer: (p, i) =>
    Effect.gen(function* () {
      const s = yield* select.infer(p, {
        q: i.q,
        kCache: i.kCache,
        score: i.score,
        labels: i.labels,
        threshold: i.threshold,
      });
      yield* need(
        i.vCache.shape.join() === i.kCache.shape.join() && i.kCache.shape[2] === i.q.shape[2],
        "vCache",
        `q [${i.q.shape}], kCache [${i.kCache.shape}], vCache [${i.vCache.shape}]`,
        "the caches are [kvHeads, capacity, headDim], one shape for both, headDim q's",
      );
      const [H, seq, d] = i.q.shape as [number, number, number];
      return {
        o: { ...outputs.o, shape: [H, seq, d] },
        lse: { ...outputs.lse, shape: [H, seq] },
        density: s.density,
      } as DescsOf<AttendOutputs>;
    }),
  cpu: (p, i, ctx) => {
    const [H, seq, d] = i.q.desc.shape as [number, number, number];
    const [Hk, cap] = i.kCache.desc.shape as [number, number, number];
    const C = i.score.desc.shape[1], S = i.labels.desc.shape[1];
    const pos = cachePos(ctx?.scalars, seq, cap);
    // the lists squeezed.select writes (it refuses a position inside the fixed context), then the exact
    // attention over them as dense.indexCacheAttn computes it
    const sel = selectReference(
      p,
      i.score.data as Float32Array,
      i.labels.data as Int32Array,
      (i.threshold.data as Float32Array)[0],
      { H, Hk, seq, cap, S, C, pos },
    );
    const ip = indexAttnParams({ blockQ: p.blockQ, sink: 0, window: 0, scale: p.scale });
    const dm = { H, Hk, seq, kvSeq: cap, off: pos, d, selHeads: H, kCap: cap };
    const args = [
      ip,
      i.q.data as Float32Array,
      i.kCache.data as Float32Array,
      i.vCache.data as Float32Array,
      sel.indices,
      dm,
    ] as const;
    const r = ctx?.gemm ? indexAttentionGemm(ctx.gemm, ...args) : indexAttentionReference(...args);
    const o = allocHost({ ...outputs.o, shape: [H, seq, d] });
    o.data.set(r.o);
    const lse = allocHost({ ...outputs.lse, shape: [H, seq] });
    lse.data.set(r.lse);
    const density = allocHost({ ...outputs.density, shape: [H] });
    density.data.set(sel.density);
    return { o, lse, density } as HostOf<AttendOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const [H, seq, d] = i.q.shape as [number, number, number];
    const [Hk, cap] = i.kCache.shape as [number, number, number];
    const C = i.score.shape[1], S = i.labels.shape[1];
    return splitKvLowering(
      { heads: H, kvHeads: Hk, seq, headDim: d, capacity: cap },
      effectiveScale(p.scale, d),
      0,
      "heads",
      p.splitKeys > 0 ? p.splitKeys : attendSplitKeys(seq, H, cap),
      "pos",
      ["kCache", "vCache"],
      false,
      clusterFilter(p, { H, Hk, seq, S, C }),
    );
  },
  cost: (p, i): Cost => {
    const [H, seq, d] = i.q.shape as [number, number, number];
    const [Hk, cap] = i.kCache.shape as [number, number, number];
    const S = i.labels.shape[1];
    // at the full cache (every key kept; a technique scales it by the measured density): Q·K and P·V, the
    // labels read once per query head and split, the K/V rows of the kept keys
    return {
      flops: 4 * H * seq * cap * d,
      bytesRead: H * seq * d * 4 + H * S * 4 + 2 * Hk * cap * d * 4,
      bytesWritten: H * seq * (d + 1) * 4 + H * 4,
      workspaceBytes: seq * H *
        Math.ceil(cap / (p.splitKeys > 0 ? p.splitKeys : attendSplitKeys(seq, H, cap))) * (d + 3) * 4,
    };
  },
};
