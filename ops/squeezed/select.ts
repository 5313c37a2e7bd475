/**
 * `squeezed.select`: Squeezed Attention's key selection, as index lists for `dense.indexCacheAttn`. A call of
 * `seq` queries at positions `pos …` after a fixed context of `F = S + obsWindow` tokens (`S` clustered keys
 * with labels, then the observation window) attends, per query head `h` and query block `b`:
 *
 * 1. the clustered keys `i < S` whose cluster's lookup score exceeds the global threshold τ
 *    (`score[h, labels[i]] > τ`; with `gqa: "union"`, the maximum over the group's query heads),
 * 2. the observation window `[S, F)`, a pseudo-cluster of score `1 / seq`, when `1 / seq > τ`,
 * 3. every token after the fixed context up to the block's last query (`[F, pos + min(seq, (b + 1) · blockQ))`:
 *    the question and the tokens generated so far), attended causally by the kernel.
 *
 * Lists are ascending and −1 padded to the cache's capacity. Official: `LlamaFlashAttention2.forward` in
 * `transformers/src/transformers/models/llama/modeling_llama.py` (the mask from the centroid values broadcast
 * through the labels, the obs-window value `1 / Tu`), the question's own tokens attended exactly and merged.
 *
 * GPU: one workgroup of 256 per (query block, head) compacts the kept keys with a workgroup prefix sum.
 * @module
 */
import { Effect } from "effect";
import { allocHost, tensorType } from "@longctx/graph";
import type { Cost, CpuContext, DescsOf, GpuLowering, HostOf, Operator, TensorType } from "@longctx/graph";
import { cachePos } from "../dense/index_attn.ts";
import { need } from "../dense/common.ts";
import { kvHeadOf, SqueezedParams } from "./params.ts";

/** Input ports of `squeezed.select`. */
export type SelectInputs = {
  /** The call's queries, `f32 [heads, seq, headDim]` (read for its shape only). */
  readonly q: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** The key cache, `f32 [kvHeads, capacity, headDim]` (read for its shape only). */
  readonly kCache: TensorType<"f32", readonly ["kvHeads", "capacity", "headDim"]>;
  /** `squeezed.lookup`'s scores, `f32 [heads, clusters]`. */
  readonly score: TensorType<"f32", readonly ["heads", "clusters"]>;
  /** The cluster of each clustered fixed-context key, `i32 [kvHeads, clustered]` (values in `[0, clusters)`). */
  readonly labels: TensorType<"i32", readonly ["kvHeads", "clustered"]>;
  /** The global threshold τ, `f32 [1]`. */
  readonly threshold: TensorType<"f32", readonly ["one"]>;
};
/** Output ports of `squeezed.select`. */
export type SelectOutputs = {
  /** Ascending −1-padded key lists, `i32 [heads, ceil(seq / blockQ), capacity]`. */
  readonly indices: TensorType<"i32", readonly ["selHeads", "qBlocks", "kCap"]>;
  /** KV budget per query head: kept fixed-context keys (window included) / fixed-context length, `f32 [heads]`. */
  readonly density: TensorType<"f32", readonly ["heads"]>;
};

const inputs: SelectInputs = {
  q: tensorType("f32", ["heads", "seq", "headDim"] as const),
  kCache: tensorType("f32", ["kvHeads", "capacity", "headDim"] as const),
  score: tensorType("f32", ["heads", "clusters"] as const),
  labels: tensorType("i32", ["kvHeads", "clustered"] as const),
  threshold: tensorType("f32", ["one"] as const),
};
const outputs: SelectOutputs = {
  indices: tensorType("i32", ["selHeads", "qBlocks", "kCap"] as const),
  density: tensorType("f32", ["heads"] as const),
};

/** Shapes of a selection. */
export interface SelectDims {
  /** Query heads. */
  readonly H: number;
  /** KV heads. */
  readonly Hk: number;
  /** Queries of the call. */
  readonly seq: number;
  /** Cache capacity (list length). */
  readonly cap: number;
  /** Clustered keys `S`. */
  readonly S: number;
  /** Clusters. */
  readonly C: number;
  /** First query's position. */
  readonly pos: number;
}

/** Whether query head `h` keeps clustered key `i` (see the module doc, step 1). */
const keeps = (
  gqa: SqueezedParams["gqa"],
  score: ArrayLike<number>,
  labels: ArrayLike<number>,
  tau: number,
  h: number,
  i: number,
  dm: Pick<SelectDims, "H" | "Hk" | "S" | "C">,
): boolean => {
  const { H, Hk, S, C } = dm, hk = kvHeadOf(h, H, Hk), c = labels[hk * S + i];
  if (gqa === "head") return score[h * C + c] > tau;
  const g = H / Hk;
  for (let x = hk * g; x < hk * g + g; x++) if (score[x * C + c] > tau) return true;
  return false;
};

/**
 * `squeezed.select` on host arrays (see the module doc): returns `indices i32 [H, ceil(seq / blockQ), cap]` and
 * `density f32 [H]`. Throws a `RangeError` when `pos` is inside the fixed context or the call overflows the cache.
 */
export const selectReference = (
  p: Pick<SqueezedParams, "obsWindow" | "gqa" | "blockQ">,
  score: Float32Array,
  labels: Int32Array,
  tau: number,
  dm: SelectDims,
): { indices: Int32Array; density: Float32Array } => {
  const { H, seq, cap, S, pos } = dm, F = S + p.obsWindow, qB = Math.ceil(seq / p.blockQ);
  if (pos < F) {
    throw new RangeError(`a squeezed call at position ${pos}, inside the fixed context of ${F} tokens`);
  }
  if (pos + seq > cap) throw new RangeError(`pos ${pos} + ${seq} queries exceed the cache capacity ${cap}`);
  const indices = new Int32Array(H * qB * cap).fill(-1), density = new Float32Array(H);
  const obs = 1 / seq > tau;
  for (let h = 0; h < H; h++) {
    const kept: number[] = [];
    for (let i = 0; i < S; i++) if (keeps(p.gqa, score, labels, tau, h, i, dm)) kept.push(i);
    if (obs) { for (let i = S; i < F; i++) kept.push(i); }
    density[h] = kept.length / F;
    for (let b = 0; b < qB; b++) {
      const o = (h * qB + b) * cap;
      indices.set(kept, o);
      const end = pos + Math.min(seq, (b + 1) * p.blockQ);
      for (let i = F, n = kept.length; i < end; i++, n++) indices[o + n] = i;
    }
  }
  return { indices, density };
};

const WG = 256;

const selectWgsl = (p: SqueezedParams, dm: Omit<SelectDims, "pos">) => {
  const { H, Hk, seq, cap, S, C } = dm, g = H / Hk, F = S + p.obsWindow, qB = Math.ceil(seq / p.blockQ);
  const keep = p.gqa === "head" ? `SC[h * ${C}u + c] > tau` : `any_in_group(hk, c, tau)`;
  return [
    `@group(0) @binding(0) var<storage, read> SC: array<f32>;`,
    `@group(0) @binding(1) var<storage, read> LAB: array<i32>;`,
    `@group(0) @binding(2) var<storage, read> TAU: array<f32>;`,
    `@group(0) @binding(3) var<storage, read_write> IDX: array<i32>;`,
    `@group(0) @binding(4) var<storage, read_write> DEN: array<f32>;`,
    `@group(0) @binding(5) var<uniform> POS: vec4<u32>;`,
    `var<workgroup> scan: array<u32, ${WG}>;`,
    `fn any_in_group(hk: u32, c: u32, tau: f32) -> bool {`,
    `  for (var x = hk * ${g}u; x < hk * ${g}u + ${g}u; x++) { if (SC[x * ${C}u + c] > tau) { return true; } }`,
    `  return false;`,
    `}`,
    `@compute @workgroup_size(${WG})`,
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  let b = wid.x; let h = wid.y; let hk = h / ${g}u;`,
    `  let pos = POS.x;`,
    `  let tau = TAU[0];`,
    `  let o = (h * ${qB}u + b) * ${cap}u;`,
    `  var n = 0u;`,
    `  for (var base = 0u; base < ${S}u; base += ${WG}u) {`,
    `    let i = base + t;`,
    `    var f = 0u;`,
    `    if (i < ${S}u) {`,
    `      let c = u32(LAB[hk * ${S}u + i]);`,
    `      if (${keep}) { f = 1u; }`,
    `    }`,
    `    scan[t] = f;`,
    `    workgroupBarrier();`,
    `    for (var w = 1u; w < ${WG}u; w <<= 1u) {`,
    `      var v = 0u;`,
    `      if (t >= w) { v = scan[t - w]; }`,
    `      workgroupBarrier();`,
    `      scan[t] += v;`,
    `      workgroupBarrier();`,
    `    }`,
    `    if (f == 1u) { IDX[o + n + scan[t] - 1u] = i32(i); }`,
    `    n += scan[${WG - 1}u];`,
    `    workgroupBarrier();`,
    `  }`,
    `  if (1.0 / f32(${seq}) > tau) {`,
    `    for (var i = t; i < ${p.obsWindow}u; i += ${WG}u) { IDX[o + n + i] = i32(${S}u + i); }`,
    `    n += ${p.obsWindow}u;`,
    `  }`,
    `  if (b == 0u && t == 0u) { DEN[h] = f32(n) / f32(${F}); }`,
    `  let end = pos + min(${seq}u, (b + 1u) * ${p.blockQ}u);`,
    `  for (var i = ${F}u + t; i < end; i += ${WG}u) { IDX[o + n + i - ${F}u] = i32(i); }`,
    `  n += end - ${F}u;`,
    `  for (var i = n + t; i < ${cap}u; i += ${WG}u) { IDX[o + i] = -1; }`,
    `}`,
  ].join("\n");
};

/** The runtime `pos` of a squeezed call: inside the cache and past the fixed context (throws `RangeError`). */
const selectPos = (
  scalars: CpuContext["scalars"] | undefined,
  seq: number,
  cap: number,
  F: number,
): number => {
  const pos = cachePos(scalars, seq, cap);
  if (pos < F) {
    throw new RangeError(`a squeezed call at position ${pos}, inside the fixed context of ${F} tokens`);
  }
  return pos;
};

/**
 * `squeezed.select` (see the module doc). Inputs `q f32 [heads, seq, headDim]` and `kCache f32 [kvHeads,
 * capacity, headDim]` (shapes only), `score f32 [heads, clusters]`, `labels i32 [kvHeads, S]`, `threshold f32
 * [1]`; runtime scalar `pos`; outputs `indices i32 [heads, ceil(seq / blockQ), capacity]`, `density f32
 * [heads]`. Shape errors: mismatched heads, a fixed context (`S + obsWindow`) not inside the cache; a `pos`
 * inside the fixed context or past the cache fails the run with a `RangeError`. Labels outside `[0, clusters)`
 * are the caller's error (the prefix index checks them when it loads).
 */
export const select: Operator<SqueezedParams, SelectInputs, SelectOutputs> = {
  name: "squeezed.select",
  kind: "cluster-select",
  reference: "Squeezed Attention (arXiv 2411.09688): keys of the clusters above one global threshold, the " +
    "observation window as a pseudo-cluster of score 1/Tu, the question exact (official modeling_llama.py)",
  params: SqueezedParams,
  inputs,
  outputs,
  scalars: ["pos"],
  // a question of 32 queries after a fixed context of 400 clustered keys and the default window of 100
  example: { dims: { clusters: 32, clustered: 400, one: 1, seq: 32, capacity: 1024 }, scalars: { pos: 500 } },
  infer: (p, i) =>
    Effect.gen(function* () {
      const [H, seq] = i.q.shape as [number, number, number];
      const [Hk, cap] = i.kCache.shape as [number, number, number];
      const [Hs, C] = i.score.shape as [number, number];
      const [Hl, S] = i.labels.shape as [number, number];
      yield* need(
        Hs === H && Hl === Hk && H % Hk === 0,
        "score",
        `q [${i.q.shape}], kCache [${i.kCache.shape}], score [${i.score.shape}], labels [${i.labels.shape}]`,
        "score is [heads, clusters] and labels [kvHeads, clustered keys], heads a multiple of kvHeads",
      );
      yield* need(
        S >= 1 && S + p.obsWindow + seq <= cap && C >= 1,
        "labels",
        `${S} clustered keys + obsWindow ${p.obsWindow} + ${seq} queries in a cache of ${cap}`,
        "the fixed context (clustered keys and the observation window) and the call fit in the cache",
      );
      yield* need(
        i.threshold.shape.join() === "1",
        "threshold",
        `threshold [${i.threshold.shape}]`,
        "τ is [1]",
      );
      const qB = Math.ceil(seq / p.blockQ);
      return {
        indices: { ...outputs.indices, shape: [H, qB, cap] },
        density: { ...outputs.density, shape: [H] },
      } as DescsOf<SelectOutputs>;
    }),
  cpu: (p, i, ctx) => {
    const [H, seq] = i.q.desc.shape as [number, number, number];
    const [Hk, cap] = i.kCache.desc.shape as [number, number, number];
    const C = i.score.desc.shape[1], S = i.labels.desc.shape[1];
    const pos = selectPos(ctx?.scalars, seq, cap, S + p.obsWindow);
    const r = selectReference(
      p,
      i.score.data as Float32Array,
      i.labels.data as Int32Array,
      (i.threshold.data as Float32Array)[0],
      { H, Hk, seq, cap, S, C, pos },
    );
    const indices = allocHost({ ...outputs.indices, shape: [H, Math.ceil(seq / p.blockQ), cap] });
    indices.data.set(r.indices);
    const density = allocHost({ ...outputs.density, shape: [H] });
    density.data.set(r.density);
    return { indices, density } as HostOf<SelectOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const [H, seq] = i.q.shape as [number, number, number];
    const [Hk, cap] = i.kCache.shape as [number, number, number];
    const C = i.score.shape[1], S = i.labels.shape[1], F = S + p.obsWindow;
    const uni = (pos: number) => new Uint8Array(Uint32Array.of(pos, 0, 0, 0).buffer);
    return {
      workspaces: { pos: 16 },
      launches: [{
        kernel: {
          key: `squeezed.select:${H}/${Hk}x${seq}x${cap}:${S}/${C}:${p.obsWindow}/${p.blockQ}/${p.gqa}`,
          wgsl: selectWgsl(p, { H, Hk, seq, cap, S, C }),
          entryPoint: "main",
          bindings: ["read", "read", "read", "read_write", "read_write", "uniform"],
        },
        buffers: ["in:score", "in:labels", "in:threshold", "out:indices", "out:density", "ws:pos"],
        workgroups: [Math.ceil(seq / p.blockQ), H, 1],
        uniforms: { pos: uni(F) },
        dynamic: (sc: Readonly<Record<string, number>>) => ({
          uniforms: { pos: uni(selectPos(sc, seq, cap, F)) },
        }),
      }],
    };
  },
  cost: (p, i): Cost => {
    const [H, seq] = i.q.shape as [number, number, number];
    const cap = i.kCache.shape[1], S = i.labels.shape[1], qB = Math.ceil(seq / p.blockQ);
    return {
      flops: H * qB * S,
      bytesRead: H * qB * S * 8,
      bytesWritten: H * qB * cap * 4 + H * 4,
      workspaceBytes: 0,
    };
  },
};
