/**
 * WGSL kernels of the `model.*` operators (see `ops.ts`), generated with the model's shapes baked in (one
 * pipeline per shape; per-call sizes — tokens, cache position — come from a uniform). f32 storage and
 * arithmetic; register tiles unrolled (no runtime-indexed function-scope arrays: those spill on NVIDIA).
 * Binding convention: inputs, then outputs, then one uniform of `u32` words.
 * @module
 */
import type { Kernel } from "@longctx/graph";

const kernel = (key: string, wgsl: string, bindings: Kernel["bindings"]): Kernel => ({
  key: `model.${key}`,
  wgsl,
  entryPoint: "main",
  bindings,
});

/** Linear workgroup id over a 2-D grid (see `grid1d` in `kernels`). */
const LINEAR = "let gid = (wid.y * nwg.x + wid.x) * 256u + lid;";
const ENTRY256 = "@compute @workgroup_size(256)\n" +
  "fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,\n" +
  "        @builtin(local_invocation_index) lid: u32) {";

/**
 * Embedding gather. Bindings: `tok [seq]` u32, `emb [vocab, E]` f32, `x [seq, E]` f32 (out), uniform
 * `{ n4 = seq·E/4 }`. One invocation per vec4; workgroups of 256 over `grid1d(ceil(n4 / 256))`.
 */
export const embedKernel = (E: number): Kernel => {
  const E4 = E / 4;
  return kernel(
    `embed.${E}`,
    `struct U { n4: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<storage, read> TOK: array<u32>;
@group(0) @binding(1) var<storage, read> EMB: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> X: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> P: U;
${ENTRY256}
  ${LINEAR}
  if (gid >= P.n4) { return; }
  let row = gid / ${E4}u;
  X[gid] = EMB[TOK[row] * ${E4}u + gid % ${E4}u];
}
`,
    ["read", "read", "read_write", "uniform"],
  );
};

/**
 * Residual add + RMSNorm of rows `start … start + rows − 1`: with `add`, `x[r] += t[r]` (written back), then
 * `y[r − start] = x[r] / sqrt(mean(x[r]²) + eps) · w`. Bindings: `x [*, E]` (read_write with `add`, else
 * read), `t [*, E]` (only with `add`), `w [E]`, `y [rows, E]` (out), uniform `{ rows, start, add }`. One
 * workgroup of 256 per row.
 */
export const addNormKernel = (E: number, eps: number, add: boolean): Kernel => {
  const E4 = E / 4;
  const b = add ? 1 : 0;
  return kernel(
    `${add ? "addnorm" : "norm"}.${E}.${eps}`,
    `struct U { rows: u32, start: u32, add: u32, c: u32 }
@group(0) @binding(0) var<storage, ${add ? "read_write" : "read"}> X: array<vec4<f32>>;
${add ? "@group(0) @binding(1) var<storage, read> T: array<vec4<f32>>;\n" : ""}@group(0) @binding(${
      1 + b
    }) var<storage, read> W: array<vec4<f32>>;
@group(0) @binding(${2 + b}) var<storage, read_write> Y: array<vec4<f32>>;
@group(0) @binding(${3 + b}) var<uniform> P: U;
var<workgroup> red: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.x;
  let src = (P.start + r) * ${E4}u;
  var ss = 0.0;
  for (var c = lid; c < ${E4}u; c += 256u) {
    var v = X[src + c];
    ${add ? "v = v + T[src + c]; X[src + c] = v;" : ""}
    ss += dot(v, v);
  }
  red[lid] = ss;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  let inv = inverseSqrt(red[0] / ${E}.0 + ${eps.toExponential(8)});
  for (var c = lid; c < ${E4}u; c += 256u) {
    Y[r * ${E4}u + c] = X[src + c] * inv * W[c];
  }
}
`,
    add ? ["read_write", "read", "read", "read_write", "uniform"] : ["read", "read", "read_write", "uniform"],
  );
};

/**
 * `C[M, N] = A[M, K] · B[N, K]ᵀ` for small M (decode: M = 1). Bindings: `A`, `B`, `C` (out) f32, uniform
 * `{ M, N, K4 = K/4 }` (K a multiple of 4). Workgroups `[ceil(N / 8), M, 1]` of 256 invocations: 8 outputs
 * per workgroup, 32 lanes per output striding over K in vec4s, reduced in workgroup memory.
 */
export const gemvKernel = (): Kernel =>
  kernel(
    "gemv.f32",
    `struct U { M: u32, N: u32, K4: u32, c: u32 }
@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> B: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
@group(0) @binding(3) var<uniform> P: U;
var<workgroup> red: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n = wid.x * 8u + lid / 32u;
  let lane = lid % 32u;
  let m = wid.y;
  var s = 0.0;
  if (n < P.N) {
    let a0 = m * P.K4;
    let b0 = n * P.K4;
    for (var k = lane; k < P.K4; k += 32u) { s += dot(A[a0 + k], B[b0 + k]); }
  }
  red[lid] = s;
  workgroupBarrier();
  for (var w = 16u; w > 0u; w >>= 1u) {
    if (lane < w) { red[lid] += red[lid + w]; }
    workgroupBarrier();
  }
  if (lane == 0u && n < P.N) { C[m * P.N + n] = red[lid]; }
}
`,
    ["read", "read", "read_write", "uniform"],
  );

/** Shapes baked into the attention-side kernels. */
export interface HeadShape {
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
}

/**
 * RoPE + scatter. Bindings: `qkv [seq, (H + 2·KH)·D]` (rows: Q heads, K heads, V heads), `cos`, `sin`
 * `[positions, D/2]`, `q [H, seq, D]` (out), `kc`, `vc [KH, capacity, D]` (out, rows `offset + i`), uniform
 * `{ seq, offset, capacity }`. One invocation per (token, head slot, pair); `grid1d` workgroups of 256.
 */
export const ropeKernel = (s: HeadShape): Kernel => {
  const { heads: H, kvHeads: KH, headDim: D } = s;
  const half = D / 2, slots = H + 2 * KH, NQKV = slots * D;
  return kernel(
    `rope.${H}.${KH}.${D}`,
    `struct U { seq: u32, offset: u32, cap: u32, c: u32 }
@group(0) @binding(0) var<storage, read> QKV: array<f32>;
@group(0) @binding(1) var<storage, read> COS: array<f32>;
@group(0) @binding(2) var<storage, read> SIN: array<f32>;
@group(0) @binding(3) var<storage, read_write> Q: array<f32>;
@group(0) @binding(4) var<storage, read_write> KC: array<f32>;
@group(0) @binding(5) var<storage, read_write> VC: array<f32>;
@group(0) @binding(6) var<uniform> P: U;
${ENTRY256}
  ${LINEAR}
  if (gid >= P.seq * ${slots * half}u) { return; }
  let i = gid / ${slots * half}u;
  let rem = gid % ${slots * half}u;
  let slot = rem / ${half}u;
  let j = rem % ${half}u;
  let src = i * ${NQKV}u + slot * ${D}u + j;
  let a = QKV[src];
  let b = QKV[src + ${half}u];
  let pos = P.offset + i;
  if (slot >= ${H + KH}u) {
    let dst = ((slot - ${H + KH}u) * P.cap + pos) * ${D}u + j;
    VC[dst] = a;
    VC[dst + ${half}u] = b;
    return;
  }
  let cs = COS[pos * ${half}u + j];
  let sn = SIN[pos * ${half}u + j];
  let ra = a * cs - b * sn;
  let rb = b * cs + a * sn;
  if (slot < ${H}u) {
    let dst = (slot * P.seq + i) * ${D}u + j;
    Q[dst] = ra;
    Q[dst + ${half}u] = rb;
  } else {
    let dst = ((slot - ${H}u) * P.cap + pos) * ${D}u + j;
    KC[dst] = ra;
    KC[dst + ${half}u] = rb;
  }
}
`,
    ["read", "read", "read", "read_write", "read_write", "read_write", "uniform"],
  );
};

/**
 * `[heads, seq, D]` → `[seq, heads·D]`. Bindings: `a` (f32, vec4 rows), `o` (out), uniform `{ seq }`.
 * `grid1d` workgroups of 256 over `seq·heads·D/4`.
 */
export const headsToRowsKernel = (H: number, D: number): Kernel => {
  const D4 = D / 4;
  return kernel(
    `h2r.${H}.${D}`,
    `struct U { seq: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> O: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> P: U;
${ENTRY256}
  ${LINEAR}
  if (gid >= P.seq * ${H * D4}u) { return; }
  let i = gid / ${H * D4}u;
  let rem = gid % ${H * D4}u;
  O[gid] = A[((rem / ${D4}u) * P.seq + i) * ${D4}u + rem % ${D4}u];
}
`,
    ["read", "read_write", "uniform"],
  );
};

/**
 * SwiGLU: `gu [seq, 2F]` (gate columns `0 … F−1`, up columns `F … 2F−1`) → `g [seq, F]`,
 * `g = gate / (1 + e^{−gate}) · up`. Bindings: `gu`, `g` (out), uniform `{ n = seq·F }`. `grid1d` of 256.
 */
export const swigluKernel = (F: number): Kernel =>
  kernel(
    `swiglu.${F}`,
    `struct U { n: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<storage, read> GU: array<f32>;
@group(0) @binding(1) var<storage, read_write> G: array<f32>;
@group(0) @binding(2) var<uniform> P: U;
${ENTRY256}
  ${LINEAR}
  if (gid >= P.n) { return; }
  let i = gid / ${F}u;
  let j = gid % ${F}u;
  let a = GU[i * ${2 * F}u + j];
  G[gid] = a / (1.0 + exp(-a)) * GU[i * ${2 * F}u + ${F}u + j];
}
`,
    ["read", "read_write", "uniform"],
  );

/**
 * Argmax of `x[row·n … row·n + n − 1]` (first index on ties). Bindings: `x` f32, `out [1]` u32, uniform
 * `{ n, row }`. One workgroup of 256.
 */
export const argmaxKernel = (): Kernel =>
  kernel(
    "argmax.f32",
    `struct U { n: u32, row: u32, b: u32, c: u32 }
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> OUT: array<u32>;
@group(0) @binding(2) var<uniform> P: U;
var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  let base = P.row * P.n;
  var v = -3.4e38;
  var idx = 0xffffffffu;
  for (var j = lid; j < P.n; j += 256u) {
    let x = X[base + j];
    if (x > v) { v = x; idx = j; }
  }
  bv[lid] = v;
  bi[lid] = idx;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let ov = bv[lid + s];
      let oi = bi[lid + s];
      if (ov > bv[lid] || (ov == bv[lid] && oi < bi[lid])) { bv[lid] = ov; bi[lid] = oi; }
    }
    workgroupBarrier();
  }
  if (lid == 0u) { OUT[0] = bi[0]; }
}
`,
    ["read", "read_write", "uniform"],
  );

/**
 * Compact the first `seq` rows of a layer's KV cache: `kc`, `vc [KH, capacity, D]` → `k`, `v [KH, seq, D]`
 * (`model.kvRead`). Bindings: `kc`, `vc`,
 * `k` (out), `v` (out), uniform `{ seq, capacity }`. One invocation per vec4 of one of K and V;
 * `grid1d` workgroups of 256 over `KH·seq·D/4`.
 */
export const kvReadKernel = (KH: number, D: number): Kernel => {
  const D4 = D / 4;
  return kernel(
    `kvcompact.${KH}.${D}`,
    `struct U { seq: u32, cap: u32, b: u32, c: u32 }
@group(0) @binding(0) var<storage, read> KC: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> VC: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> K: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> V: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> P: U;
${ENTRY256}
  ${LINEAR}
  if (gid >= ${KH}u * P.seq * ${D4}u) { return; }
  let h = gid / (P.seq * ${D4}u);
  let rem = gid % (P.seq * ${D4}u);
  let src = h * P.cap * ${D4}u + rem;
  K[gid] = KC[src];
  V[gid] = VC[src];
}
`,
    ["read", "read", "read_write", "read_write", "uniform"],
  );
};

/**
 * Rows `start … start + rows − 1` of `a [*, E]` → `o [rows, E]`. Bindings: `a`, `o` (out), uniform
 * `{ n4 = rows·E/4, start }`. `grid1d` workgroups of 256 over `n4`.
 */
export const sliceRowsKernel = (E: number): Kernel => {
  const E4 = E / 4;
  return kernel(
    `slicerows.${E}`,
    `struct U { n4: u32, start: u32, b: u32, c: u32 }
@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> O: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> P: U;
${ENTRY256}
  ${LINEAR}
  if (gid >= P.n4) { return; }
  O[gid] = A[P.start * ${E4}u + gid];
}
`,
    ["read", "read_write", "uniform"],
  );
};

/**
 * `out = [Σ (a − b)², Σ b²]` over `n` f32 elements (f32 partial sums per invocation, reduced in workgroup
 * memory). Bindings: `a`, `b`, `out [2]` (out), uniform `{ n }`. One workgroup of 256.
 */
export const sqDiffKernel = (): Kernel =>
  kernel(
    "sqdiff.f32",
    `struct U { n: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(3) var<uniform> P: U;
var<workgroup> r0: array<f32, 256>;
var<workgroup> r1: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  var d = 0.0;
  var s = 0.0;
  for (var i = lid; i < P.n; i += 256u) {
    let x = A[i] - B[i];
    d += x * x;
    s += B[i] * B[i];
  }
  r0[lid] = d;
  r1[lid] = s;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w >>= 1u) {
    if (lid < w) { r0[lid] += r0[lid + w]; r1[lid] += r1[lid + w]; }
    workgroupBarrier();
  }
  if (lid == 0u) { OUT[0] = r0[0]; OUT[1] = r1[0]; }
}
`,
    ["read", "read", "read_write", "uniform"],
  );

/**
 * Attention-mass recall statistics over `n` rows: `out = [Σ exp(lse − lseRef), min exp(lse − lseRef)]` (rows
 * where the reference is −∞ count as 1). Bindings: `lse`, `lseRef`, `out [2]` (out), uniform `{ n }`. One
 * workgroup of 256.
 */
export const lseRecallKernel = (): Kernel =>
  kernel(
    "lserecall.f32",
    `struct U { n: u32, a: u32, b: u32, c: u32 }
@group(0) @binding(0) var<storage, read> A: array<f32>;
@group(0) @binding(1) var<storage, read> B: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;
@group(0) @binding(3) var<uniform> P: U;
var<workgroup> rs: array<f32, 256>;
var<workgroup> rm: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  var m = 3.0e38;
  for (var i = lid; i < P.n; i += 256u) {
    var r = 1.0;
    if (B[i] > -1.0e38) { r = exp(max(A[i], -1.0e30) - B[i]); }
    s += r;
    m = min(m, r);
  }
  rs[lid] = s;
  rm[lid] = m;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w >>= 1u) {
    if (lid < w) { rs[lid] += rs[lid + w]; rm[lid] = min(rm[lid], rm[lid + w]); }
    workgroupBarrier();
  }
  if (lid == 0u) { OUT[0] = rs[0]; OUT[1] = rm[0]; }
}
`,
    ["read", "read", "read_write", "uniform"],
  );
