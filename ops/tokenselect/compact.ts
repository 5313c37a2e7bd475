/**
 * `tokenselect.compact`: the attended list of a TokenSelect call gathered from the KV cache — the sink
 * `[0, nInit)`, the selected tokens (`tokenselect.select`'s `indices`) and the local window `[n − nLocal, n)`,
 * in token order — as a compacted cache of `nInit + topK + nLocal` rows, with the queries and keys re-positioned:
 *
 * - `positions: "compacted"` (TokenSelect's): list row `c` is at position `c` and the call's query `j` at
 *   `rows − seq + j` (bottom-right, as FlashInfer's causal mask on the gathered list). The cache holds
 *   `R(t) k_t` (RoPE at the token's own position `t`); row `c` becomes `R(c − t) R(t) k_t = R(c) k_t`, each
 *   rotation from the model's RoPE tables (`cos(c − t) = cos c cos t + sin c sin t`, exact in f32 for any
 *   distance), and the query `R(rows − seq − pos) q`.
 * - `positions: "original"`: rows and queries keep their RoPE (a gather).
 *
 * With `n ≤ nInit + topK + nLocal` the list is every cached token (row `c` = token `c`: no re-positioning).
 * `dense.cacheAttn` with `compacted: true` then attends the list causally (bottom-right).
 *
 * Reference: TokenSelect (EMNLP 2025, arXiv 2411.02886); the official code caches keys without RoPE and lets
 * FlashInfer rotate the gathered list (`pos_encoding_mode="ROPE_LLAMA"`), `patcher/token_retrieval.py`.
 * @module
 */
import { Effect } from "effect";
import { allocHost, tensorType } from "@longctx/graph";
import type { Cost, DescsOf, GpuLowering, HostOf, Operator, TensorType } from "@longctx/graph";
import { need } from "../dense/common.ts";
import { listRows, selectGeometry, TokenSelectParams } from "./params.ts";
import { selectPos } from "./select.ts";

/** Input ports of `tokenselect.compact`. */
export type CompactInputs = {
  /** Queries of this call after RoPE, `f32 [heads, seq, headDim]` at positions `pos … pos + seq − 1`. */
  readonly q: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Key cache after RoPE, `f32 [kvHeads, kvSeq (capacity), headDim]` holding `pos + seq` valid rows. */
  readonly k: TensorType<"f32", readonly ["kvHeads", "kvSeq", "headDim"]>;
  /** Value cache, `f32 [kvHeads, kvSeq (capacity), headDim]`. */
  readonly v: TensorType<"f32", readonly ["kvHeads", "kvSeq", "headDim"]>;
  /** RoPE table `cos`, `f32 [positions, headDim / 2]`. */
  readonly ropeCos: TensorType<"f32", readonly ["positions", "half"]>;
  /** RoPE table `sin`, `f32 [positions, headDim / 2]`. */
  readonly ropeSin: TensorType<"f32", readonly ["positions", "half"]>;
  /** The selected tokens, ascending, `i32 [1, 1, topK]` (`tokenselect.select`). */
  readonly indices: TensorType<"i32", readonly ["selHeads", "qBlocks", "kCap"]>;
};
/** Output ports of `tokenselect.compact`: the inputs of `dense.cacheAttn` on the list. */
export type CompactOutputs = {
  /** Re-positioned queries, `f32 [heads, seq, headDim]`. */
  readonly q: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** The list's keys, `f32 [kvHeads, nInit + topK + nLocal, headDim]` (valid rows: the list's length). */
  readonly kCache: TensorType<"f32", readonly ["kvHeads", "capacity", "headDim"]>;
  /** The list's values, `f32 [kvHeads, nInit + topK + nLocal, headDim]`. */
  readonly vCache: TensorType<"f32", readonly ["kvHeads", "capacity", "headDim"]>;
};

const inputs: CompactInputs = {
  q: tensorType("f32", ["heads", "seq", "headDim"] as const),
  k: tensorType("f32", ["kvHeads", "kvSeq", "headDim"] as const),
  v: tensorType("f32", ["kvHeads", "kvSeq", "headDim"] as const),
  ropeCos: tensorType("f32", ["positions", "half"] as const),
  ropeSin: tensorType("f32", ["positions", "half"] as const),
  indices: tensorType("i32", ["selHeads", "qBlocks", "kCap"] as const),
};
const outputs: CompactOutputs = {
  q: tensorType("f32", ["heads", "seq", "headDim"] as const),
  kCache: tensorType("f32", ["kvHeads", "capacity", "headDim"] as const),
  vCache: tensorType("f32", ["kvHeads", "capacity", "headDim"] as const),
};

/**
 * The token of list row `c` (see the module doc): `c` when dense, else the sink, `indices[c − nInit]`, or
 * the window's `n − nLocal + (c − nInit − topK)`.
 */
export const listToken = (
  p: Pick<TokenSelectParams, "nInit" | "topK" | "nLocal">,
  indices: ArrayLike<number>,
  n: number,
  dense: boolean,
  c: number,
): number =>
  dense || c < p.nInit
    ? c
    : c < p.nInit + p.topK
    ? indices[c - p.nInit]
    : n - p.nLocal + (c - p.nInit - p.topK);

/** Rotate pair `(x1, x2)` from position `from` to position `to` with the tables (angle `(to − from) θ_a`). */
const move = (
  x1: number,
  x2: number,
  from: number,
  to: number,
  a: number,
  half: number,
  cos: Float32Array,
  sin: Float32Array,
): [number, number] => {
  const ct = cos[to * half + a],
    st = sin[to * half + a],
    cf = cos[from * half + a],
    sf = sin[from * half + a];
  const c = ct * cf + st * sf, s = st * cf - ct * sf;
  return [x1 * c - x2 * s, x1 * s + x2 * c];
};

/** `tokenselect.compact` on host arrays (float64 rotation, f32 results). Returns `q`, `k`, `v` of the list. */
export const compactReference = (
  p: TokenSelectParams,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  cos: Float32Array,
  sin: Float32Array,
  indices: Int32Array,
  dm: { H: number; Hk: number; seq: number; cap: number; d: number; pos: number },
): { q: Float32Array; k: Float32Array; v: Float32Array } => {
  const { H, Hk, seq, cap, d, pos } = dm, half = d / 2, R = listRows(p);
  const g = selectGeometry(p, pos, seq);
  const compacted = p.positions === "compacted" && !g.dense;
  const qo = new Float32Array(H * seq * d),
    ko = new Float32Array(Hk * R * d),
    vo = new Float32Array(Hk * R * d);
  for (let h = 0; h < H; h++) {
    for (let j = 0; j < seq; j++) {
      const o = (h * seq + j) * d;
      if (!compacted) {
        qo.set(q.subarray(o, o + d), o);
        continue;
      }
      for (let a = 0; a < half; a++) {
        const [r1, r2] = move(q[o + a], q[o + a + half], pos + j, g.rows - seq + j, a, half, cos, sin);
        qo[o + a] = r1;
        qo[o + a + half] = r2;
      }
    }
  }
  for (let hk = 0; hk < Hk; hk++) {
    for (let c = 0; c < g.rows; c++) {
      const t = listToken(p, indices, g.n, g.dense, c);
      const src = (hk * cap + t) * d, dst = (hk * R + c) * d;
      vo.set(v.subarray(src, src + d), dst);
      if (!compacted) {
        ko.set(k.subarray(src, src + d), dst);
        continue;
      }
      for (let a = 0; a < half; a++) {
        const [r1, r2] = move(k[src + a], k[src + a + half], t, c, a, half, cos, sin);
        ko[dst + a] = r1;
        ko[dst + a + half] = r2;
      }
    }
  }
  return { q: qo, k: ko, v: vo };
};

const WG = 64;

const compactWgsl = (p: TokenSelectParams, seq: number, cap: number, d: number) => {
  const half = d / 2, R = listRows(p), rot = p.positions === "compacted";
  return [
    `struct Uni { a: vec4<u32>, b: vec4<u32> }`,
    `@group(0) @binding(0) var<storage, read> Q: array<f32>;`,
    `@group(0) @binding(1) var<storage, read> K: array<f32>;`,
    `@group(0) @binding(2) var<storage, read> V: array<f32>;`,
    `@group(0) @binding(3) var<storage, read> COS: array<f32>;`,
    `@group(0) @binding(4) var<storage, read> SIN: array<f32>;`,
    `@group(0) @binding(5) var<storage, read> IDX: array<i32>;`,
    `@group(0) @binding(6) var<storage, read_write> QO: array<f32>;`,
    `@group(0) @binding(7) var<storage, read_write> KO: array<f32>;`,
    `@group(0) @binding(8) var<storage, read_write> VO: array<f32>;`,
    `@group(0) @binding(9) var<uniform> U: Uni;`,
    // U.a = (pos, n, rows, dense)
    `fn mv(x1: f32, x2: f32, fr: u32, to: u32, a: u32) -> vec2<f32> {`,
    `  let ct = COS[to * ${half}u + a]; let st = SIN[to * ${half}u + a];`,
    `  let cf = COS[fr * ${half}u + a]; let sf = SIN[fr * ${half}u + a];`,
    `  let c = ct * cf + st * sf; let s = st * cf - ct * sf;`,
    `  return vec2<f32>(x1 * c - x2 * s, x1 * s + x2 * c);`,
    `}`,
    // the list's K/V: one workgroup per (row, KV head)
    `@compute @workgroup_size(${WG})`,
    `fn kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  let n = U.a.y; let rows = U.a.z; let dense = U.a.w == 1u;`,
    `  let moveIt = ${rot ? "!dense" : "false"};`,
    `  let c = wid.x; let hk = wid.y;`,
    `  if (c >= rows) { return; }`,
    `  var tok = c;`,
    `  if (!dense && c >= ${p.nInit}u) {`,
    `    if (c < ${p.nInit + p.topK}u) { tok = u32(IDX[c - ${p.nInit}u]); }`,
    `    else { tok = n - ${p.nLocal}u + (c - ${p.nInit + p.topK}u); }`,
    `  }`,
    `  let src = (hk * ${cap}u + tok) * ${d}u; let dst = (hk * ${R}u + c) * ${d}u;`,
    `  for (var a = t; a < ${half}u; a += ${WG}u) {`,
    `    VO[dst + a] = V[src + a]; VO[dst + a + ${half}u] = V[src + a + ${half}u];`,
    `    var y = vec2<f32>(K[src + a], K[src + a + ${half}u]);`,
    `    if (moveIt) { y = mv(y.x, y.y, tok, c, a); }`,
    `    KO[dst + a] = y.x; KO[dst + a + ${half}u] = y.y;`,
    `  }`,
    `}`,
    // the queries: one workgroup per (query, head)
    `@compute @workgroup_size(${WG})`,
    `fn qs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  let pos = U.a.x; let rows = U.a.z; let dense = U.a.w == 1u;`,
    `  let moveIt = ${rot ? "!dense" : "false"};`,
    `  let j = wid.x; let h = wid.y;`,
    `  let o = (h * ${seq}u + j) * ${d}u;`,
    `  for (var a = t; a < ${half}u; a += ${WG}u) {`,
    `    var y = vec2<f32>(Q[o + a], Q[o + a + ${half}u]);`,
    `    if (moveIt) { y = mv(y.x, y.y, pos + j, rows - ${seq}u + j, a); }`,
    `    QO[o + a] = y.x; QO[o + a + ${half}u] = y.y;`,
    `  }`,
    `}`,
  ].join("\n");
};

/**
 * `tokenselect.compact` (see the module doc). Inputs `q f32 [heads, seq, headDim]`, the caches `k`, `v f32
 * [kvHeads, kvSeq (capacity), headDim]` (runtime scalar `pos`), the RoPE tables, `indices i32 [1, 1, topK]`;
 * outputs `q`, `kCache`, `vCache` of the list (`[kvHeads, nInit + topK + nLocal, headDim]`). Shape errors: odd
 * headDim, heads not a multiple of kvHeads, indices not `[1, 1, topK]`; a `pos` past the cache or the tables
 * fails the run with a `RangeError`.
 */
export const compact: Operator<TokenSelectParams, CompactInputs, CompactOutputs> = {
  name: "tokenselect.compact",
  kind: "token-compact",
  reference:
    "TokenSelect (EMNLP 2025, arXiv 2411.02886): attention over sink ∪ selected ∪ local window with " +
    "positions by list index (FlashInfer ROPE_LLAMA on the gathered list, official patcher/token_retrieval.py)",
  params: TokenSelectParams,
  inputs,
  outputs,
  scalars: ["pos"],
  infer: (p, i) =>
    Effect.gen(function* () {
      const [H, seq, d] = i.q.shape as [number, number, number];
      const [Hk, , dk] = i.k.shape as [number, number, number];
      yield* need(
        i.k.shape.join() === i.v.shape.join() && dk === d && H % Hk === 0 && d % 2 === 0,
        "k",
        `q [${i.q.shape}], k [${i.k.shape}], v [${i.v.shape}]`,
        "k and v are one cache [kvHeads, capacity, headDim]; heads a multiple of kvHeads; even headDim",
      );
      yield* need(
        i.indices.shape.join() === `1,1,${p.topK}`,
        "indices",
        `indices [${i.indices.shape}]`,
        `tokenselect.select's list, [1, 1, topK = ${p.topK}]`,
      );
      const R = listRows(p);
      return {
        q: { ...outputs.q, shape: [H, seq, d] },
        kCache: { ...outputs.kCache, shape: [Hk, R, d] },
        vCache: { ...outputs.vCache, shape: [Hk, R, d] },
      } as DescsOf<CompactOutputs>;
    }),
  cpu: (p, i, ctx) => {
    const [H, seq, d] = i.q.desc.shape as [number, number, number];
    const [Hk, cap] = i.k.desc.shape as [number, number, number];
    const pos = selectPos(ctx?.scalars, seq, cap, i.ropeCos.desc.shape[0]);
    const r = compactReference(
      p,
      i.q.data as Float32Array,
      i.k.data as Float32Array,
      i.v.data as Float32Array,
      i.ropeCos.data as Float32Array,
      i.ropeSin.data as Float32Array,
      i.indices.data as Int32Array,
      { H, Hk, seq, cap, d, pos },
    );
    const R = listRows(p);
    const q = allocHost({ ...outputs.q, shape: [H, seq, d] });
    q.data.set(r.q);
    const kCache = allocHost({ ...outputs.kCache, shape: [Hk, R, d] });
    kCache.data.set(r.k);
    const vCache = allocHost({ ...outputs.vCache, shape: [Hk, R, d] });
    vCache.data.set(r.v);
    return { q, kCache, vCache } as HostOf<CompactOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const [H, seq, d] = i.q.shape as [number, number, number];
    const [Hk, cap] = i.k.shape as [number, number, number];
    const R = listRows(p), wgsl = compactWgsl(p, seq, cap, d);
    const uniform = (pos: number) => {
      const g = selectGeometry(p, pos, seq);
      return new Uint8Array(Uint32Array.of(pos, g.n, g.rows, g.dense ? 1 : 0, 0, 0, 0, 0).buffer);
    };
    return {
      workspaces: { u: 32 },
      launches: (["kv", "qs"] as const).map((entry) => ({
        kernel: {
          key: `tokenselect.compact:${H}/${Hk}x${seq}x${cap}x${d}:${p.nInit}/${p.topK}/${p.nLocal}:` +
            `${p.positions}:${entry}`,
          wgsl,
          entryPoint: entry,
          bindings: [
            "read" as const,
            "read" as const,
            "read" as const,
            "read" as const,
            "read" as const,
            "read" as const,
            "read_write" as const,
            "read_write" as const,
            "read_write" as const,
            "uniform" as const,
          ],
        },
        buffers: [
          "in:q",
          "in:k",
          "in:v",
          "in:ropeCos",
          "in:ropeSin",
          "in:indices",
          "out:q",
          "out:kCache",
          "out:vCache",
          "ws:u",
        ],
        workgroups: (entry === "kv" ? [R, Hk, 1] : [seq, H, 1]) as [number, number, number],
        uniforms: { u: uniform(0) },
        dynamic: (sc: Readonly<Record<string, number>>) => ({
          uniforms: { u: uniform(selectPos(sc, seq, cap, i.ropeCos.shape[0])) },
        }),
      })),
    };
  },
  cost: (p, i): Cost => {
    const [H, seq, d] = i.q.shape as [number, number, number];
    const Hk = i.k.shape[0], R = listRows(p);
    return {
      flops: 6 * (Hk * R + H * seq) * d,
      bytesRead: (2 * Hk * R + H * seq) * d * 4 + 2 * (R + seq) * d * 4 + p.topK * 4,
      bytesWritten: (2 * Hk * R + H * seq) * d * 4,
      workspaceBytes: 0,
    };
  },
};
