/**
 * `tokenselect.select`: TokenSelect's token selection for one layer and one call (a decode step or a prefill
 * chunk) on the KV cache — per-head criticality, soft voting across heads, optional max-pool smoothing and
 * top-k, one token list shared by every head (TokenSelect, EMNLP 2025, arXiv 2411.02886; official code
 * `patcher/token_retrieval.py`, see ops/tokenselect/README.md):
 *
 * 1. The selection query: every query of the call, without its RoPE, rotated to position `nLocal + j`
 *    (`j` its index in the call) and averaged over the call: `q̄_h = R(nLocal − pos) · mean_j q_{h,j}` for
 *    queries cached after RoPE at `pos + j` (`R(a)` the rotate-half rotation by `a` positions).
 * 2. Candidates: the cached tokens `i ∈ [nInit, n − nLocal)` (`n = pos + seq`), their keys without RoPE
 *    (`R(−i) k_i`, the cache holds `R(i) k_i`).
 * 3. Per query head `h`: `s_{h,i} = q̄_h · k_{kv(h), i}` (no 1/√d) and `p_h = softmax_i(s_h)`; the vote
 *    `v_i = Σ_h p_{h,i}`.
 * 4. With `kernelSize > 1`, `v` is max-pooled (stride 1, padding ⌊(ks − 1)/2⌋), then the `topK` largest are
 *    taken (ties: the lower index first), in ascending token order.
 *
 * When `n ≤ nInit + topK + nLocal` every cached token is attended (no selection): `indices` is all −1.
 *
 * GPU: thirteen launches — the selection query; the scores per (head, candidate) with per-tile softmax
 * partials; the per-head log-sum-exp; the votes; the pooled keys and a radix select of the top-k threshold
 * (three 11/11/10-bit histogram passes); the counts per workgroup, their scan and the ordered write. Workgroup
 * counts follow `pos` at run time.
 * @module
 */
import { Effect } from "effect";
import { allocHost, tensorType } from "@longctx/graph";
import type {
  Cost,
  CpuContext,
  DescsOf,
  GpuLowering,
  HostOf,
  Kernel,
  Operator,
  TensorType,
} from "@longctx/graph";
import { need } from "../dense/common.ts";
import { cachePos } from "../dense/index_attn.ts";
import { selectGeometry, selectKvHead, TokenSelectParams } from "./params.ts";

/** Input ports of `tokenselect.select`. */
export type SelectInputs = {
  /** Queries of this call after RoPE, `f32 [heads, seq, headDim]` at positions `pos … pos + seq − 1`. */
  readonly q: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Key cache after RoPE, `f32 [kvHeads, kvSeq (capacity), headDim]` holding `pos + seq` valid rows. */
  readonly k: TensorType<"f32", readonly ["kvHeads", "kvSeq", "headDim"]>;
  /** The model's RoPE table `cos(p · θ_a)`, `f32 [positions, headDim / 2]` (rotate-half pairs `(a, a + d/2)`). */
  readonly ropeCos: TensorType<"f32", readonly ["positions", "half"]>;
  /** The model's RoPE table `sin(p · θ_a)`, `f32 [positions, headDim / 2]`. */
  readonly ropeSin: TensorType<"f32", readonly ["positions", "half"]>;
};
/** Output ports of `tokenselect.select`. */
export type SelectOutputs = {
  /** The selected tokens, ascending, `i32 [1, 1, topK]` (shared by every head); all −1 when dense. */
  readonly indices: TensorType<"i32", readonly ["selHeads", "qBlocks", "kCap"]>;
};

const inputs: SelectInputs = {
  q: tensorType("f32", ["heads", "seq", "headDim"] as const),
  k: tensorType("f32", ["kvHeads", "kvSeq", "headDim"] as const),
  ropeCos: tensorType("f32", ["positions", "half"] as const),
  ropeSin: tensorType("f32", ["positions", "half"] as const),
};
const outputs: SelectOutputs = { indices: tensorType("i32", ["selHeads", "qBlocks", "kCap"] as const) };

/**
 * The runtime scalar `pos` of a call of `seq` queries, checked against the cache's `capacity` and the RoPE
 * table's `positions` (throws `RangeError`).
 */
export const selectPos = (
  scalars: CpuContext["scalars"] | undefined,
  seq: number,
  capacity: number,
  positions: number,
): number => {
  const pos = cachePos(scalars, seq, capacity);
  if (pos + seq > positions) throw new RangeError(`positions past the RoPE table (${positions})`);
  return pos;
};

/** Shapes of a selection. */
export interface SelectDims {
  /** Query heads. */
  readonly H: number;
  /** KV heads. */
  readonly Hk: number;
  /** Queries in the call. */
  readonly seq: number;
  /** Cache rows per KV head (the row stride). */
  readonly cap: number;
  /** Head dimension (even). */
  readonly d: number;
  /** Position of the call's first query. */
  readonly pos: number;
}

/**
 * Rotate the rotate-half pair `(x1, x2)` by `r` positions with the tables (`r < 0`: the inverse rotation of
 * `−r`): returns `[x1 cos − x2 sin, x1 sin + x2 cos]` at angle `r · θ_a`.
 */
const rotPair = (
  x1: number,
  x2: number,
  r: number,
  a: number,
  half: number,
  cos: Float32Array,
  sin: Float32Array,
): [number, number] => {
  const c = cos[Math.abs(r) * half + a], s = (r < 0 ? -1 : 1) * sin[Math.abs(r) * half + a];
  return [x1 * c - x2 * s, x1 * s + x2 * c];
};

/**
 * The selection query of a call in float64 (step 1 of the module doc): `q̄ [H, d]` from `q [H, seq, d]` (after
 * RoPE at `pos …`), every query's RoPE moved to `nLocal + j` and averaged over the call.
 */
export const selectionQuery = (
  p: Pick<TokenSelectParams, "nLocal">,
  q: Float32Array,
  cos: Float32Array,
  sin: Float32Array,
  dm: Pick<SelectDims, "H" | "seq" | "d" | "pos">,
): Float64Array => {
  const { H, seq, d, pos } = dm, half = d / 2;
  const qbar = new Float64Array(H * d);
  for (let h = 0; h < H; h++) {
    for (let a = 0; a < half; a++) {
      let x1 = 0, x2 = 0;
      for (let j = 0; j < seq; j++) {
        x1 += q[(h * seq + j) * d + a];
        x2 += q[(h * seq + j) * d + a + half];
      }
      const [r1, r2] = rotPair(x1 / seq, x2 / seq, p.nLocal - pos, a, half, cos, sin);
      qbar[h * d + a] = r1;
      qbar[h * d + a + half] = r2;
    }
  }
  return qbar;
};

/**
 * The voted (and pooled) scores of a selection in float64 (steps 2–4 of the module doc) for the selection
 * query `qbar [H, d]`: `k [Hk, cap, d]` (after RoPE), the RoPE tables `[positions, d/2]`. Returns the pooled
 * votes (one per pooled candidate; index `i` is token `nInit + i`), empty when dense.
 */
export const votesOf = (
  p: TokenSelectParams,
  qbar: Float64Array,
  k: Float32Array,
  cos: Float32Array,
  sin: Float32Array,
  dm: SelectDims,
): Float64Array => {
  const { H, Hk, seq, cap, d, pos } = dm, half = d / 2;
  const geo = selectGeometry(p, pos, seq);
  if (geo.dense) return new Float64Array(0);
  // 2–3. scores against the un-rotated candidate keys, softmax per head, summed over heads
  const nc = geo.candidates, vote = new Float64Array(nc), s = new Float64Array(nc);
  const ku = new Float64Array(Hk * nc * d);
  for (let hk = 0; hk < Hk; hk++) {
    for (let i = 0; i < nc; i++) {
      const j = p.nInit + i, src = (hk * cap + j) * d, dst = (hk * nc + i) * d;
      for (let a = 0; a < half; a++) {
        const [r1, r2] = rotPair(k[src + a], k[src + a + half], -j, a, half, cos, sin);
        ku[dst + a] = r1;
        ku[dst + a + half] = r2;
      }
    }
  }
  for (let h = 0; h < H; h++) {
    const hk = selectKvHead(p.headMap, h, H, Hk);
    let m = -Infinity;
    for (let i = 0; i < nc; i++) {
      let dot = 0;
      const ko = (hk * nc + i) * d;
      for (let x = 0; x < d; x++) dot += qbar[h * d + x] * ku[ko + x];
      s[i] = dot;
      if (dot > m) m = dot;
    }
    let z = 0;
    for (let i = 0; i < nc; i++) z += Math.exp(s[i] - m);
    for (let i = 0; i < nc; i++) vote[i] += Math.exp(s[i] - m) / z;
  }
  // 4. max-pool smoothing (the official F.max_pool1d(kernel, stride 1, padding (ks − 1) // 2))
  const ks = p.kernelSize;
  if (ks <= 1) return vote;
  const pad = Math.floor((ks - 1) / 2), pooled = new Float64Array(geo.pooled);
  for (let i = 0; i < geo.pooled; i++) {
    let m = -Infinity;
    for (let c = Math.max(0, i - pad); c < Math.min(nc, i - pad + ks); c++) m = Math.max(m, vote[c]);
    pooled[i] = m;
  }
  return pooled;
};

/**
 * The voted (and pooled) scores of a selection in float64 (steps 1–4 of the module doc): `q [H, seq, d]`,
 * `k [Hk, cap, d]` (after RoPE), the RoPE tables `[positions, d/2]`. Returns the pooled votes (one per pooled
 * candidate; index `i` is token `nInit + i`), empty when dense.
 */
export const selectVotes = (
  p: TokenSelectParams,
  q: Float32Array,
  k: Float32Array,
  cos: Float32Array,
  sin: Float32Array,
  dm: SelectDims,
): Float64Array =>
  selectGeometry(p, dm.pos, dm.seq).dense
    ? new Float64Array(0)
    : votesOf(p, selectionQuery(p, q, cos, sin, dm), k, cos, sin, dm);

/**
 * The `k` largest of `scores` (ties: the lower index first), returned in ascending index order, each plus
 * `offset` (the token of index 0).
 */
export const topKAscending = (scores: ArrayLike<number>, k: number, offset: number): Int32Array => {
  const order = Array.from({ length: scores.length }, (_, i) => i);
  order.sort((a, b) => scores[b] - scores[a] || a - b);
  const picked = order.slice(0, Math.min(k, order.length)).sort((a, b) => a - b);
  return Int32Array.from(picked, (i) => i + offset);
};

/**
 * `tokenselect.select` in float64 (the module doc's steps): the selected tokens, ascending, `topK` entries
 * (−1 padded; all −1 when every cached token is attended).
 */
export const selectReference = (
  p: TokenSelectParams,
  q: Float32Array,
  k: Float32Array,
  cos: Float32Array,
  sin: Float32Array,
  dm: SelectDims,
): Int32Array => {
  const out = new Int32Array(p.topK).fill(-1);
  const votes = selectVotes(p, q, k, cos, sin, dm);
  if (votes.length > 0) out.set(topKAscending(votes, p.topK, p.nInit));
  return out;
};

// ---- GPU

const WG = 256;
/** Candidates per scoring workgroup (one invocation each). */
export const scoreTile = (): number => 64;

/** The uniform of every launch: `(pos, n, candidates, pooled, dense, scoreTiles, 0, 0)` as u32. */
const selectUniform = (p: TokenSelectParams, pos: number, seq: number, tile: number): Uint8Array => {
  const g = selectGeometry(p, pos, seq);
  return new Uint8Array(
    Uint32Array.of(pos, g.n, g.candidates, g.pooled, g.dense ? 1 : 0, Math.ceil(g.candidates / tile), 0, 0)
      .buffer,
  );
};

const header = (bindings: readonly string[]): string[] => [
  ...bindings.map((b, i) => `@group(0) @binding(${i}) ${b};`),
];
// `U.a` = (pos, n, candidates, pooled), `U.b` = (dense, score tiles, 0, 0)
const UNIFORM = `struct Uni { a: vec4<u32>, b: vec4<u32> }`;

interface Shape {
  readonly H: number;
  readonly Hk: number;
  readonly seq: number;
  readonly cap: number;
  readonly d: number;
  readonly maxCand: number;
  readonly tile: number;
}

const kernel = (key: string, wgsl: string[], bindings: Kernel["bindings"]): Kernel => ({
  key: `tokenselect.${key}`,
  wgsl: wgsl.join("\n"),
  entryPoint: "main",
  bindings,
});

/** K0: the selection query `q̄ [H, d]`, the histogram and radix state cleared, −1 in `indices` when dense. */
const qbarKernel = (p: TokenSelectParams, s: Shape): Kernel => {
  const half = s.d / 2, P = Math.max(1, Math.floor(WG / Math.min(half, WG)));
  return kernel(`qbar:${s.H}x${s.seq}x${s.d}:${p.nLocal}:${p.topK}`, [
    UNIFORM,
    ...header([
      "var<storage, read> Q: array<f32>",
      "var<storage, read> COS: array<f32>",
      "var<storage, read> SIN: array<f32>",
      "var<storage, read_write> QBAR: array<f32>",
      "var<storage, read_write> HIST: array<u32>",
      "var<storage, read_write> ST: array<u32>",
      "var<storage, read_write> IDX: array<i32>",
      "var<uniform> U: Uni",
    ]),
    `var<workgroup> r1: array<f32, ${WG}>;`,
    `var<workgroup> r2: array<f32, ${WG}>;`,
    // workgroup h: head h's pairs, the call's queries split over P invocations per pair
    `@compute @workgroup_size(${WG})`,
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  let h = wid.x;`,
    `  if (h == 0u) {`,
    `    for (var b = t; b < 2048u; b += ${WG}u) { HIST[b] = 0u; }`,
    `    if (t == 0u) { ST[0] = 0u; ST[1] = ${p.topK}u; ST[2] = 0u; }`,
    `    if (U.b.x == 1u) { for (var e = t; e < ${p.topK}u; e += ${WG}u) { IDX[e] = -1; } }`,
    `  }`,
    `  if (U.b.x == 1u) { return; }`,
    `  let r = i32(${p.nLocal}) - i32(U.a.x);`,
    `  let ar = u32(abs(r));`,
    `  let sg = select(1.0, -1.0, r < 0);`,
    `  for (var a0 = 0u; a0 < ${half}u; a0 += ${Math.min(half, WG)}u) {`,
    `    let a = a0 + t % ${Math.min(half, WG)}u; let part = t / ${Math.min(half, WG)}u;`,
    `    var x1 = 0.0; var x2 = 0.0;`,
    `    if (a < ${half}u && part < ${P}u) {`,
    `      for (var j = part; j < ${s.seq}u; j += ${P}u) {`,
    `        x1 += Q[(h * ${s.seq}u + j) * ${s.d}u + a];`,
    `        x2 += Q[(h * ${s.seq}u + j) * ${s.d}u + a + ${half}u];`,
    `      }`,
    `    }`,
    `    r1[t] = x1; r2[t] = x2;`,
    `    workgroupBarrier();`,
    `    if (part == 0u && a < ${half}u) {`,
    `      var y1 = 0.0; var y2 = 0.0;`,
    `      for (var q = 0u; q < ${P}u; q++) { y1 += r1[q * ${Math.min(half, WG)}u + t]; y2 += r2[q * ${
      Math.min(half, WG)
    }u + t]; }`,
    `      y1 = y1 / ${s.seq}.0; y2 = y2 / ${s.seq}.0;`,
    `      let c = COS[ar * ${half}u + a]; let sn = sg * SIN[ar * ${half}u + a];`,
    `      QBAR[h * ${s.d}u + a] = y1 * c - y2 * sn;`,
    `      QBAR[h * ${s.d}u + a + ${half}u] = y1 * sn + y2 * c;`,
    `    }`,
    `    workgroupBarrier();`,
    `  }`,
    `}`,
  ], ["read", "read", "read", "read_write", "read_write", "read_write", "read_write", "uniform"]);
};

/**
 * K1: scores `s [H, maxCand]` against the un-rotated keys: workgroup `tile · Hk + hk` scores `tile` candidates
 * (one invocation each: its key row read as vec4, its RoPE row from the tables) for the query heads of KV head
 * `hk` — the KV heads of one tile run side by side, so its table rows are read once from memory — and writes
 * per (head, tile) the softmax partials `(max, Σ exp(s − max))` in `PART [H, tiles, 2]`. Workgroups:
 * `[tiles · Hk, 1, 1]` of `tile`.
 */
const scoreKernel = (p: TokenSelectParams, s: Shape): Kernel => {
  const half = s.d / 2, T = s.tile, G = s.H / s.Hk, q4 = half / 4, tiles = Math.ceil(s.maxCand / T);
  const head = (gi: string) => (p.headMap === "modulo" ? `hk + ${gi} * ${s.Hk}u` : `hk * ${G}u + ${gi}`);
  return kernel(`score:${s.H}/${s.Hk}x${s.cap}x${s.d}:${T}:${p.nInit}:${p.headMap}:${s.maxCand}`, [
    UNIFORM,
    ...header([
      "var<storage, read> K: array<vec4<f32>>",
      "var<storage, read> COS: array<vec4<f32>>",
      "var<storage, read> SIN: array<vec4<f32>>",
      "var<storage, read> QBAR: array<vec4<f32>>",
      "var<storage, read_write> S: array<f32>",
      "var<storage, read_write> PART: array<f32>",
      "var<storage, read> ST: array<u32>",
      "var<uniform> U: Uni",
    ]),
    `var<workgroup> sc: array<f32, ${G * T}>;`,
    `var<workgroup> skipW: u32;`,
    `@compute @workgroup_size(${T})`,
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  let tile = wid.x / ${s.Hk}u; let hk = wid.x % ${s.Hk}u;`,
    `  if (t == 0u) { skipW = ST[2]; }`,
    `  let skip = workgroupUniformLoad(&skipW);`,
    `  if (U.b.x == 1u || skip == 1u || tile >= U.b.y) { return; }`,
    `  let nc = U.a.z; let i = tile * ${T}u + t; let ok = i < nc;`,
    `  let j = ${p.nInit}u + min(i, nc - 1u);`,
    `  var acc = array<f32, ${G}>();`,
    `  let kb = (hk * ${s.cap}u + j) * ${s.d / 4}u;`,
    `  for (var a = 0u; a < ${q4}u; a++) {`,
    `    let x1 = K[kb + a]; let x2 = K[kb + ${q4}u + a];`,
    `    let cs = COS[j * ${q4}u + a]; let sn = SIN[j * ${q4}u + a];`,
    `    let y1 = x1 * cs + x2 * sn; let y2 = x2 * cs - x1 * sn;`,
    `    for (var gi = 0u; gi < ${G}u; gi++) {`,
    `      let qb = (${head("gi")}) * ${s.d / 4}u;`,
    `      acc[gi] += dot(QBAR[qb + a], y1) + dot(QBAR[qb + ${q4}u + a], y2);`,
    `    }`,
    `  }`,
    `  for (var gi = 0u; gi < ${G}u; gi++) {`,
    `    sc[gi * ${T}u + t] = select(-3.0e38, acc[gi], ok);`,
    `    if (ok) { S[(${head("gi")}) * ${s.maxCand}u + i] = acc[gi]; }`,
    `  }`,
    `  workgroupBarrier();`,
    `  for (var gi = t; gi < ${G}u; gi += ${T}u) {`,
    `    var m = -3.0e38; var l = 0.0;`,
    `    for (var c = 0u; c < ${T}u; c++) { m = max(m, sc[gi * ${T}u + c]); }`,
    `    for (var c = 0u; c < ${T}u; c++) { l += exp(sc[gi * ${T}u + c] - m); }`,
    `    let h = ${head("gi")};`,
    `    PART[(h * ${tiles}u + tile) * 2u] = m; PART[(h * ${tiles}u + tile) * 2u + 1u] = l;`,
    `  }`,
    `}`,
  ], ["read", "read", "read", "read", "read_write", "read_write", "read", "uniform"]);
};

/** K2: per head `lse_h = log Σ_i exp(s_{h,i})` from the tiles' partials. Workgroups: `[H, 1, 1]`. */
const lseKernel = (s: Shape): Kernel => {
  const tiles = Math.ceil(s.maxCand / s.tile);
  return kernel(`lse:${s.H}:${tiles}`, [
    UNIFORM,
    ...header([
      "var<storage, read> PART: array<f32>",
      "var<storage, read_write> LSE: array<f32>",
      "var<storage, read> ST: array<u32>",
      "var<uniform> U: Uni",
    ]),
    `var<workgroup> wm: array<f32, ${WG}>;`,
    `var<workgroup> wl: array<f32, ${WG}>;`,
    `var<workgroup> skipW: u32;`,
    `@compute @workgroup_size(${WG})`,
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  if (t == 0u) { skipW = ST[2]; }`,
    `  let skip = workgroupUniformLoad(&skipW);`,
    `  if (U.b.x == 1u || skip == 1u) { return; }`,
    `  let h = wid.x;`,
    `  var m = -3.0e38; var l = 0.0;`,
    `  for (var b = t; b < U.b.y; b += ${WG}u) {`,
    `    let bm = PART[(h * ${tiles}u + b) * 2u]; let bl = PART[(h * ${tiles}u + b) * 2u + 1u];`,
    `    let nm = max(m, bm); l = l * exp(m - nm) + bl * exp(bm - nm); m = nm;`,
    `  }`,
    `  wm[t] = m; wl[t] = l;`,
    `  for (var st = ${WG / 2}u; st > 0u; st >>= 1u) {`,
    `    workgroupBarrier();`,
    `    if (t < st) {`,
    `      let am = wm[t]; let bm = wm[t + st]; let nm = max(am, bm);`,
    `      wl[t] = wl[t] * exp(am - nm) + wl[t + st] * exp(bm - nm); wm[t] = nm;`,
    `    }`,
    `  }`,
    `  if (t == 0u) { LSE[h] = wm[0] + log(wl[0]); }`,
    `}`,
  ], ["read", "read_write", "read", "uniform"]);
};

/** K3: the votes `v_i = Σ_h exp(s_{h,i} − lse_h)`. Workgroups: `[⌈maxCand / 256⌉]`. */
const voteKernel = (s: Shape): Kernel =>
  kernel(`vote:${s.H}x${s.maxCand}`, [
    UNIFORM,
    ...header([
      "var<storage, read> S: array<f32>",
      "var<storage, read> LSE: array<f32>",
      "var<storage, read_write> VOTE: array<f32>",
      "var<storage, read> ST: array<u32>",
      "var<uniform> U: Uni",
    ]),
    `@compute @workgroup_size(${WG})`,
    `fn main(@builtin(global_invocation_id) gid: vec3<u32>) {`,
    `  let i = gid.x;`,
    `  if (U.b.x == 1u || ST[2] == 1u || i >= U.a.z) { return; }`,
    `  var v = 0.0;`,
    `  for (var h = 0u; h < ${s.H}u; h++) { v += exp(S[h * ${s.maxCand}u + i] - LSE[h]); }`,
    `  VOTE[i] = v;`,
    `}`,
  ], ["read", "read", "read_write", "read", "uniform"]);

/**
 * K4: the pooled votes as ordered keys (`bitcast<u32>` of a non-negative float) and the first radix
 * histogram (bits 31…21). Workgroups: `[⌈maxCand / 256⌉]`.
 */
const poolKernel = (p: TokenSelectParams): Kernel => {
  const ks = p.kernelSize, pad = Math.floor((ks - 1) / 2);
  const value = ks > 1
    ? [
      `  var m = 0.0;`,
      `  let lo = max(i32(i) - ${pad}, 0); let hi = min(i32(i) - ${pad} + ${ks}, i32(U.a.z));`,
      `  for (var c = lo; c < hi; c++) { m = max(m, VOTE[u32(c)]); }`,
    ]
    : [`  let m = VOTE[i];`];
  return kernel(`pool:${ks}`, [
    UNIFORM,
    ...header([
      "var<storage, read> VOTE: array<f32>",
      "var<storage, read_write> KEYS: array<u32>",
      "var<storage, read_write> HIST: array<atomic<u32>>",
      "var<storage, read> ST: array<u32>",
      "var<uniform> U: Uni",
    ]),
    `var<workgroup> lh: array<atomic<u32>, 2048>;`,
    `var<workgroup> skipW: u32;`,
    `@compute @workgroup_size(${WG})`,
    `fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  if (t == 0u) { skipW = ST[2]; }`,
    `  let skip = workgroupUniformLoad(&skipW);`,
    `  if (U.b.x == 1u || skip == 1u) { return; }`,
    `  for (var b = t; b < 2048u; b += ${WG}u) { atomicStore(&lh[b], 0u); }`,
    `  workgroupBarrier();`,
    `  let i = gid.x;`,
    `  if (i < U.a.w) {`,
    ...value.map((l) => "  " + l),
    `    let key = bitcast<u32>(m);`,
    `    KEYS[i] = key;`,
    `    atomicAdd(&lh[key >> 21u], 1u);`,
    `  }`,
    `  workgroupBarrier();`,
    `  for (var b = t; b < 2048u; b += ${WG}u) {`,
    `    let c = atomicLoad(&lh[b]);`,
    `    if (c > 0u) { atomicAdd(&HIST[b], c); }`,
    `  }`,
    `}`,
  ], ["read", "read_write", "read_write", "read", "uniform"]);
};

/** The radix passes: the key bits each histograms (shift, width). */
const PASSES = [[21, 11], [10, 11], [0, 10]] as const;

/**
 * K5: one radix pass's bucket (from the top) holding the `remaining`-th largest key: the prefix gains the
 * bucket, `remaining` loses the keys above it; the histogram is cleared for the next pass. One workgroup.
 */
const findKernel = (pass: number): Kernel => {
  const width = PASSES[pass][1], buckets = 1 << width, per = buckets / WG;
  return kernel(`find:${pass}`, [
    UNIFORM,
    ...header([
      "var<storage, read_write> HIST: array<u32>",
      "var<storage, read_write> ST: array<u32>",
      "var<uniform> U: Uni",
    ]),
    `var<workgroup> suf: array<u32, ${WG}>;`,
    `var<workgroup> skipW: u32;`,
    `@compute @workgroup_size(${WG})`,
    `fn main(@builtin(local_invocation_index) t: u32) {`,
    `  if (t == 0u) { skipW = ST[2]; }`,
    `  let skip = workgroupUniformLoad(&skipW);`,
    `  if (U.b.x == 1u || skip == 1u) { return; }`,
    `  let need = ST[1];`,
    // thread t owns buckets [per·t, per·t + per); suf[t] = keys in buckets above and including its own range
    `  var own = 0u;`,
    `  for (var b = 0u; b < ${per}u; b++) { own += HIST[t * ${per}u + b]; }`,
    `  suf[t] = own;`,
    `  for (var st = 1u; st < ${WG}u; st <<= 1u) {`,
    `    workgroupBarrier();`,
    `    var add = 0u;`,
    `    if (t + st < ${WG}u) { add = suf[t + st]; }`,
    `    workgroupBarrier();`,
    `    suf[t] += add;`,
    `  }`,
    `  workgroupBarrier();`,
    `  var above = 0u;`,
    `  if (t + 1u < ${WG}u) { above = suf[t + 1u]; }`,
    `  if (above < need && suf[t] >= need) {`,
    `    var acc = above;`,
    `    for (var b = ${per}i - 1; b >= 0; b--) {`,
    `      let bk = t * ${per}u + u32(b); let c = HIST[bk];`,
    `      if (acc + c >= need) { ST[0] = (ST[0] << ${width}u) | bk; ST[1] = need - acc; break; }`,
    `      acc += c;`,
    `    }`,
    `  }`,
    `  workgroupBarrier();`,
    `  for (var b = t; b < 2048u; b += ${WG}u) { HIST[b] = 0u; }`,
    `}`,
  ], ["read_write", "read_write", "uniform"]);
};

/** K6: the histogram of pass 1 or 2 over the keys matching the prefix found so far. */
const histKernel = (pass: number): Kernel => {
  const [shift, width] = PASSES[pass], above = PASSES[pass - 1][0];
  return kernel(`hist:${pass}`, [
    UNIFORM,
    ...header([
      "var<storage, read> KEYS: array<u32>",
      "var<storage, read> ST: array<u32>",
      "var<storage, read_write> HIST: array<atomic<u32>>",
      "var<uniform> U: Uni",
    ]),
    `@compute @workgroup_size(${WG})`,
    `fn main(@builtin(global_invocation_id) gid: vec3<u32>) {`,
    `  let i = gid.x;`,
    `  if (U.b.x == 1u || ST[2] == 1u || i >= U.a.w) { return; }`,
    `  let key = KEYS[i];`,
    `  if ((key >> ${above}u) == ST[0]) { atomicAdd(&HIST[(key >> ${shift}u) & ${(1 << width) - 1}u], 1u); }`,
    `}`,
  ], ["read", "read", "read_write", "uniform"]);
};

/** K7: per workgroup of 256 pooled entries, keys above the threshold and equal to it. */
const countKernel = (): Kernel =>
  kernel(`count`, [
    UNIFORM,
    ...header([
      "var<storage, read> KEYS: array<u32>",
      "var<storage, read> ST: array<u32>",
      "var<storage, read_write> CNT: array<u32>",
      "var<uniform> U: Uni",
    ]),
    `var<workgroup> gt: atomic<u32>;`,
    `var<workgroup> eq: atomic<u32>;`,
    `var<workgroup> skipW: u32;`,
    `@compute @workgroup_size(${WG})`,
    `fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  if (t == 0u) { skipW = ST[2]; }`,
    `  let skip = workgroupUniformLoad(&skipW);`,
    `  if (U.b.x == 1u || skip == 1u) { return; }`,
    `  if (t == 0u) { atomicStore(&gt, 0u); atomicStore(&eq, 0u); }`,
    `  workgroupBarrier();`,
    `  let i = gid.x; let th = ST[0];`,
    `  if (i < U.a.w) {`,
    `    let key = KEYS[i];`,
    `    if (key > th) { atomicAdd(&gt, 1u); } else if (key == th) { atomicAdd(&eq, 1u); }`,
    `  }`,
    `  workgroupBarrier();`,
    `  if (t == 0u) { CNT[wid.x * 2u] = atomicLoad(&gt); CNT[wid.x * 2u + 1u] = atomicLoad(&eq); }`,
    `}`,
  ], ["read", "read", "read_write", "uniform"]);

/** K8: the exclusive scan of the counts over workgroups, in place. One workgroup. */
const scanKernel = (groups: number): Kernel => {
  const per = Math.ceil(groups / WG);
  return kernel(`scan:${groups}`, [
    UNIFORM,
    ...header([
      "var<storage, read_write> CNT: array<u32>",
      "var<storage, read> ST: array<u32>",
      "var<uniform> U: Uni",
    ]),
    `var<workgroup> sg: array<u32, ${WG}>;`,
    `var<workgroup> se: array<u32, ${WG}>;`,
    `var<workgroup> skipW: u32;`,
    `@compute @workgroup_size(${WG})`,
    `fn main(@builtin(local_invocation_index) t: u32) {`,
    `  if (t == 0u) { skipW = ST[2]; }`,
    `  let skip = workgroupUniformLoad(&skipW);`,
    `  if (U.b.x == 1u || skip == 1u) { return; }`,
    `  let n = (U.a.w + ${WG - 1}u) / ${WG}u;`,
    `  var g = 0u; var e = 0u;`,
    `  for (var b = t * ${per}u; b < min(n, t * ${per}u + ${per}u); b++) { g += CNT[b * 2u]; e += CNT[b * 2u + 1u]; }`,
    `  sg[t] = g; se[t] = e;`,
    `  for (var st = 1u; st < ${WG}u; st <<= 1u) {`,
    `    workgroupBarrier();`,
    `    var ag = 0u; var ae = 0u;`,
    `    if (t >= st) { ag = sg[t - st]; ae = se[t - st]; }`,
    `    workgroupBarrier();`,
    `    sg[t] += ag; se[t] += ae;`,
    `  }`,
    `  workgroupBarrier();`,
    `  var og = sg[t] - g; var oe = se[t] - e;`,
    `  for (var b = t * ${per}u; b < min(n, t * ${per}u + ${per}u); b++) {`,
    `    let cg = CNT[b * 2u]; let ce = CNT[b * 2u + 1u];`,
    `    CNT[b * 2u] = og; CNT[b * 2u + 1u] = oe; og += cg; oe += ce;`,
    `  }`,
    `}`,
  ], ["read_write", "read", "uniform"]);
};

/**
 * K9: the ordered write: entry `i` is taken when its key is above the threshold, or equal to it and among the
 * first `remaining` such (by index); its slot is the count of taken entries before it.
 */
const writeKernel = (p: TokenSelectParams): Kernel =>
  kernel(`write:${p.nInit}`, [
    UNIFORM,
    ...header([
      "var<storage, read> KEYS: array<u32>",
      "var<storage, read> ST: array<u32>",
      "var<storage, read> CNT: array<u32>",
      "var<storage, read_write> IDX: array<i32>",
      "var<uniform> U: Uni",
    ]),
    `var<workgroup> pg: array<u32, ${WG}>;`,
    `var<workgroup> pe: array<u32, ${WG}>;`,
    `var<workgroup> skipW: u32;`,
    `@compute @workgroup_size(${WG})`,
    `fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  if (t == 0u) { skipW = ST[2]; }`,
    `  let skip = workgroupUniformLoad(&skipW);`,
    `  if (U.b.x == 1u || skip == 1u) { return; }`,
    `  let i = gid.x; let th = ST[0]; let need = ST[1];`,
    `  var key = 0u;`,
    `  if (i < U.a.w) { key = KEYS[i]; }`,
    `  let isG = select(0u, 1u, i < U.a.w && key > th);`,
    `  let isE = select(0u, 1u, i < U.a.w && key == th);`,
    `  pg[t] = isG; pe[t] = isE;`,
    `  for (var st = 1u; st < ${WG}u; st <<= 1u) {`,
    `    workgroupBarrier();`,
    `    var ag = 0u; var ae = 0u;`,
    `    if (t >= st) { ag = pg[t - st]; ae = pe[t - st]; }`,
    `    workgroupBarrier();`,
    `    pg[t] += ag; pe[t] += ae;`,
    `  }`,
    `  let gBefore = CNT[wid.x * 2u] + pg[t] - isG;`,
    `  let eBefore = CNT[wid.x * 2u + 1u] + pe[t] - isE;`,
    `  if (isG == 1u || (isE == 1u && eBefore < need)) {`,
    `    IDX[gBefore + min(eBefore, need)] = i32(${p.nInit}u + i);`,
    `  }`,
    `}`,
  ], ["read", "read", "read", "read_write", "uniform"]);

/**
 * `tokenselect.select` (see the module doc). Inputs `q f32 [heads, seq, headDim]` (after RoPE), the key cache
 * `k f32 [kvHeads, kvSeq, headDim]` (`kvSeq`: its capacity; `pos + seq` valid rows, runtime scalar `pos`), the
 * RoPE tables `ropeCos`, `ropeSin f32 [positions, headDim / 2]`; output `indices i32 [1, 1, topK]`. Shape
 * errors: heads not a multiple of kvHeads, odd headDim, a call of more than `nLocal` queries, tables of another
 * width; a run whose `pos` exceeds the cache or the tables fails with a `RangeError`.
 */
export const select: Operator<TokenSelectParams, SelectInputs, SelectOutputs> = {
  name: "tokenselect.select",
  kind: "token-select",
  reference: "TokenSelect (EMNLP 2025, arXiv 2411.02886): per-head criticality, soft voting, top-k; " +
    "official code patcher/token_retrieval.py",
  params: TokenSelectParams,
  inputs,
  outputs,
  scalars: ["pos"],
  infer: (p, i) =>
    Effect.gen(function* () {
      const [H, seq, d] = i.q.shape as [number, number, number];
      const [Hk, cap, dk] = i.k.shape as [number, number, number];
      yield* need(
        i.q.shape.length === 3 && i.k.shape.length === 3 && dk === d && H % Hk === 0 && d % 2 === 0,
        "k",
        `q [${i.q.shape}], k [${i.k.shape}]`,
        "q [heads, seq, headDim], k [kvHeads, capacity, headDim] with heads a multiple of kvHeads, even headDim",
      );
      yield* need(
        seq <= p.nLocal && seq <= cap,
        "q",
        `a call of ${seq} queries exceeds nLocal ${p.nLocal} (or the cache's ${cap} rows)`,
        `prefill in chunks of at most nLocal = ${p.nLocal} tokens (the official code: 512): a longer chunk's ` +
          "early queries would miss part of the local window",
      );
      yield* need(
        i.ropeCos.shape[1] === d / 2 && i.ropeSin.shape.join() === i.ropeCos.shape.join(),
        "ropeCos",
        `RoPE tables [${i.ropeCos.shape}] and [${i.ropeSin.shape}] for headDim ${d}`,
        "ropeCos and ropeSin are the model's [positions, headDim / 2] tables",
      );
      return { indices: { ...outputs.indices, shape: [1, 1, p.topK] } } as DescsOf<SelectOutputs>;
    }),
  cpu: (p, i, ctx) => {
    const [H, seq, d] = i.q.desc.shape as [number, number, number];
    const [Hk, cap] = i.k.desc.shape as [number, number, number];
    const pos = selectPos(ctx?.scalars, seq, cap, i.ropeCos.desc.shape[0]);
    const r = selectReference(
      p,
      i.q.data as Float32Array,
      i.k.data as Float32Array,
      i.ropeCos.data as Float32Array,
      i.ropeSin.data as Float32Array,
      { H, Hk, seq, cap, d, pos },
    );
    const indices = allocHost({ ...outputs.indices, shape: [1, 1, p.topK] });
    indices.data.set(r);
    return { indices } as HostOf<SelectOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const [H, seq, d] = i.q.shape as [number, number, number];
    const [Hk, cap] = i.k.shape as [number, number, number];
    const maxCand = Math.max(1, cap - p.nLocal - p.nInit);
    if (d % 8 !== 0) throw new RangeError(`the selection kernels need headDim % 8 = 0, got ${d}`);
    const tile = scoreTile();
    const s: Shape = { H, Hk, seq, cap, d, maxCand, tile };
    const tiles = Math.ceil(maxCand / tile), groups = Math.ceil(maxCand / WG);
    const at = (sc: Readonly<Record<string, number>>) => selectPos(sc, seq, cap, i.ropeCos.shape[0]);
    const uni = (sc: Readonly<Record<string, number>>) => ({ u: selectUniform(p, at(sc), seq, tile) });
    const fixed = { u: selectUniform(p, 0, seq, tile) };
    const wgOf = (sc: Readonly<Record<string, number>>, per: number, times: number) => {
      const g = selectGeometry(p, at(sc), seq);
      return [Math.max(1, Math.ceil(g.candidates / per)) * times, 1, 1] as const;
    };
    const launch = (
      k: Kernel,
      buffers: string[],
      workgroups: readonly [number, number, number],
      per = 0,
      times = 1,
    ) => ({
      kernel: k,
      buffers: [...buffers, "ws:u"],
      workgroups,
      uniforms: fixed,
      dynamic: (sc: Readonly<Record<string, number>>) => ({
        uniforms: uni(sc),
        ...(per > 0 ? { workgroups: wgOf(sc, per, times) } : {}),
      }),
    });
    const one = [1, 1, 1] as const;
    const hist = ["ws:hist", "ws:st"];
    return {
      workspaces: {
        u: 32,
        qbar: H * d * 4,
        s: H * maxCand * 4,
        part: tiles * H * 2 * 4,
        lse: H * 4,
        vote: maxCand * 4,
        keys: maxCand * 4,
        hist: 2048 * 4,
        st: 16,
        cnt: groups * 2 * 4,
      },
      launches: [
        launch(
          qbarKernel(p, s),
          ["in:q", "in:ropeCos", "in:ropeSin", "ws:qbar", ...hist, "out:indices"],
          [H, 1, 1],
        ),
        launch(
          scoreKernel(p, s),
          ["in:k", "in:ropeCos", "in:ropeSin", "ws:qbar", "ws:s", "ws:part", "ws:st"],
          [tiles * Hk, 1, 1],
          tile,
          Hk,
        ),
        launch(lseKernel(s), ["ws:part", "ws:lse", "ws:st"], [H, 1, 1]),
        launch(voteKernel(s), ["ws:s", "ws:lse", "ws:vote", "ws:st"], [groups, 1, 1], WG),
        launch(poolKernel(p), ["ws:vote", "ws:keys", "ws:hist", "ws:st"], [groups, 1, 1], WG),
        launch(findKernel(0), hist, one),
        launch(histKernel(1), ["ws:keys", "ws:st", "ws:hist"], [groups, 1, 1], WG),
        launch(findKernel(1), hist, one),
        launch(histKernel(2), ["ws:keys", "ws:st", "ws:hist"], [groups, 1, 1], WG),
        launch(findKernel(2), hist, one),
        launch(countKernel(), ["ws:keys", "ws:st", "ws:cnt"], [groups, 1, 1], WG),
        launch(scanKernel(groups), ["ws:cnt", "ws:st"], one),
        launch(writeKernel(p), ["ws:keys", "ws:st", "ws:cnt", "out:indices"], [groups, 1, 1], WG),
      ],
    };
  },
  cost: (p, i): Cost => {
    const [H, seq, d] = i.q.shape as [number, number, number];
    const [Hk, cap] = i.k.shape as [number, number, number];
    const nc = Math.max(0, cap - p.nLocal - p.nInit);
    return {
      flops: 2 * H * nc * d + 2 * Hk * nc * d + 4 * H * nc + H * seq * d,
      bytesRead: Hk * nc * d * 4 + nc * d * 4 + 3 * H * nc * 4 + H * seq * d * 4,
      bytesWritten: H * nc * 4 + 2 * nc * 4 + p.topK * 4,
      workspaceBytes: (H + 3) * nc * 4,
    };
  },
};

// ---- the Selection Cache

/** Input ports of `tokenselect.selectCached`: those of `tokenselect.select` and the layer's carried state. */
export type CachedSelectInputs = SelectInputs & {
  /** The selection query of the layer's last selection, `f32 [heads, headDim]` (zero: none yet). */
  readonly selQ: TensorType<"f32", readonly ["heads", "headDim"]>;
  /** The layer's last selection, `i32 [1, 1, topK]` (updated in place: the output `indices`). */
  readonly selIdx: TensorType<"i32", readonly ["selHeads", "qBlocks", "kCap"]>;
  /** Counters `u32 [4]`: reuses (hits), calls that selected or reused (dense calls excluded), 0, 0. */
  readonly selStats: TensorType<"u32", readonly ["stats"]>;
};
/** Output ports of `tokenselect.selectCached`: the selection and the state, each aliasing its input. */
export type CachedSelectOutputs = SelectOutputs & {
  /** `selQ` after the call (aliases it). */
  readonly selQOut: TensorType<"f32", readonly ["heads", "headDim"]>;
  /** `selStats` after the call (aliases it). */
  readonly selStatsOut: TensorType<"u32", readonly ["stats"]>;
};
const cachedInputs: CachedSelectInputs = {
  ...inputs,
  selQ: tensorType("f32", ["heads", "headDim"] as const),
  selIdx: tensorType("i32", ["selHeads", "qBlocks", "kCap"] as const),
  selStats: tensorType("u32", ["stats"] as const),
};
const cachedOutputs: CachedSelectOutputs = {
  ...outputs,
  selQOut: tensorType("f32", ["heads", "headDim"] as const),
  selStatsOut: tensorType("u32", ["stats"] as const),
};

/**
 * Whether the Selection Cache reuses the last selection: `cos(q̄, last) ≥ θ` over the flattened heads, false
 * while no selection is stored (`last` all zero).
 */
export const selectionHit = (
  qbar: ArrayLike<number>,
  last: ArrayLike<number>,
  threshold: number,
): boolean => {
  let dot = 0, qq = 0, ll = 0;
  for (let e = 0; e < qbar.length; e++) {
    dot += qbar[e] * last[e];
    qq += qbar[e] * qbar[e];
    ll += last[e] * last[e];
  }
  return ll > 0 && qq > 0 && dot / Math.sqrt(qq * ll) >= threshold;
};

/** The cache check after the selection query (one workgroup): `ST[2]` = hit, counters, `q̄` stored on a miss. */
const cacheKernel = (p: TokenSelectParams, s: Shape): Kernel =>
  kernel(`cache:${s.H * s.d}:${p.cacheThreshold}`, [
    UNIFORM,
    ...header([
      "var<storage, read> QBAR: array<f32>",
      "var<storage, read_write> SELQ: array<f32>",
      "var<storage, read_write> ST: array<u32>",
      "var<storage, read_write> STATS: array<u32>",
      "var<uniform> U: Uni",
    ]),
    `var<workgroup> r1: array<f32, ${WG}>;`,
    `var<workgroup> r2: array<f32, ${WG}>;`,
    `var<workgroup> r3: array<f32, ${WG}>;`,
    `var<workgroup> hitW: u32;`,
    `@compute @workgroup_size(${WG})`,
    `fn main(@builtin(local_invocation_index) t: u32) {`,
    `  if (U.b.x == 1u) { return; }`,
    `  var a = 0.0; var b = 0.0; var c = 0.0;`,
    `  for (var e = t; e < ${
      s.H * s.d
    }u; e += ${WG}u) { let q = QBAR[e]; let l = SELQ[e]; a += q * l; b += q * q; c += l * l; }`,
    `  r1[t] = a; r2[t] = b; r3[t] = c;`,
    `  for (var st = ${WG / 2}u; st > 0u; st >>= 1u) {`,
    `    workgroupBarrier();`,
    `    if (t < st) { r1[t] += r1[t + st]; r2[t] += r2[t + st]; r3[t] += r3[t + st]; }`,
    `  }`,
    `  workgroupBarrier();`,
    `  if (t == 0u) {`,
    `    let hit = r3[0] > 0.0 && r2[0] > 0.0 && r1[0] / sqrt(r2[0] * r3[0]) >= ${
      p.cacheThreshold.toPrecision(9)
    };`,
    `    ST[2] = select(0u, 1u, hit); STATS[1] += 1u; if (hit) { STATS[0] += 1u; }`,
    `    hitW = select(0u, 1u, hit);`,
    `  }`,
    `  let hit = workgroupUniformLoad(&hitW);`,
    `  if (hit == 0u) { for (var e = t; e < ${s.H * s.d}u; e += ${WG}u) { SELQ[e] = QBAR[e]; } }`,
    `}`,
  ], ["read", "read_write", "read_write", "read_write", "uniform"]);

/**
 * `tokenselect.selectCached`: `tokenselect.select` with TokenSelect's Selection Cache (paper; official code
 * `TokenRetriever.retrieval_indices` with `QUERY_CACHE`): per layer, a call whose selection query has cosine
 * similarity ≥ `cacheThreshold` with the stored one reuses the stored selection (`selIdx`, unchanged), else
 * selects and stores its query and list. The state (`selQ`, `selIdx`, `selStats`) is carried by the caller across
 * calls (the model forward keeps it per cache and zeroes it when a sequence starts); the outputs alias it.
 */
export const selectCached: Operator<TokenSelectParams, CachedSelectInputs, CachedSelectOutputs> = {
  name: "tokenselect.selectCached",
  kind: "token-select",
  reference: select.reference + "; the Selection Cache (cosine of consecutive selection queries ≥ θ)",
  params: TokenSelectParams,
  inputs: cachedInputs,
  outputs: cachedOutputs,
  scalars: ["pos"],
  aliases: { indices: "selIdx", selQOut: "selQ", selStatsOut: "selStats" },
  infer: (p, i) =>
    Effect.gen(function* () {
      const base = yield* select.infer(p, i);
      const [H, , d] = i.q.shape as [number, number, number];
      yield* need(
        i.selQ.shape.join() === `${H},${d}` && i.selIdx.shape.join() === `1,1,${p.topK}` &&
          i.selStats.shape.join() === "4",
        "selQ",
        `state selQ [${i.selQ.shape}], selIdx [${i.selIdx.shape}], selStats [${i.selStats.shape}]`,
        `the Selection Cache's state is selQ [${H}, ${d}], selIdx [1, 1, ${p.topK}], selStats [4]`,
      );
      return {
        ...base,
        selQOut: { ...cachedOutputs.selQOut, shape: [H, d] },
        selStatsOut: { ...cachedOutputs.selStatsOut, shape: [4] },
      } as DescsOf<CachedSelectOutputs>;
    }),
  cpu: (p, i, ctx) => {
    const [H, seq, d] = i.q.desc.shape as [number, number, number];
    const [Hk, cap] = i.k.desc.shape as [number, number, number];
    const pos = selectPos(ctx?.scalars, seq, cap, i.ropeCos.desc.shape[0]);
    const dm = { H, Hk, seq, cap, d, pos };
    const cos = i.ropeCos.data as Float32Array, sin = i.ropeSin.data as Float32Array;
    const idx = i.selIdx.data as Int32Array, last = i.selQ.data as Float32Array;
    const stats = i.selStats.data as Uint32Array;
    if (selectGeometry(p, pos, seq).dense) {
      idx.fill(-1);
    } else {
      const qbar = selectionQuery(p, i.q.data as Float32Array, cos, sin, dm);
      // the check on the query as the device holds it (f32)
      const q32 = Float32Array.from(qbar);
      const hit = selectionHit(q32, last, p.cacheThreshold);
      stats[1]++;
      if (hit) {
        stats[0]++;
      } else {
        const votes = votesOf(p, qbar, i.k.data as Float32Array, cos, sin, dm);
        idx.fill(-1);
        idx.set(topKAscending(votes, p.topK, p.nInit));
        last.set(q32);
      }
    }
    return { indices: i.selIdx, selQOut: i.selQ, selStatsOut: i.selStats } as HostOf<CachedSelectOutputs>;
  },
  gpu: (p, i, features): GpuLowering => {
    const low = select.gpu!(p, i, features);
    const [H, seq, d] = i.q.shape as [number, number, number];
    const [Hk, cap] = i.k.shape as [number, number, number];
    const s: Shape = {
      H,
      Hk,
      seq,
      cap,
      d,
      maxCand: Math.max(1, cap - p.nLocal - p.nInit),
      tile: scoreTile(),
    };
    const launches = low.launches.map((l) => ({
      ...l,
      buffers: l.buffers.map((b) => (b === "out:indices" ? "in:selIdx" : b)),
    }));
    const first = launches[0];
    const check = {
      ...first,
      kernel: cacheKernel(p, s),
      buffers: ["ws:qbar", "in:selQ", "ws:st", "in:selStats", "ws:u"],
      workgroups: [1, 1, 1] as const,
    };
    return { workspaces: low.workspaces, launches: [first, check, ...launches.slice(1)] };
  },
  cost: (p, i): Cost => select.cost(p, i),
};
