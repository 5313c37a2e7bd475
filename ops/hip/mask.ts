/**
 * `hip.mask`: HiP's hierarchical top-k mask search (v1.1, the ICLR 2025 "Gen2" algorithm), per query head
 * and query block, in O(T log T).
 *
 * For query block `b` (rows `[b·blockQ, …)`, last query at position `P`), the search region is the keys
 * `[sink, P + 1 − window)` — the sink and the last query's sliding window are attended anyway — cut into key
 * blocks of `blockK` tokens. When it holds at most `k` tokens it is taken whole; otherwise `n = k / blockK`
 * nodes tile it evenly, and while a node spans more than one key block every node splits at ⌊size/2⌋ into
 * two children, each child is scored by the max of q·k over the sampled queries (every `blockStrideQ`-th row
 * of the block) and the keys of its centre block (`start + ⌊size/2⌋`), counting only keys a sampled query
 * sees outside its own window (`j ≤ p − window`), and the best `n` of the `2n` children survive. Ties: higher
 * score first, then the lower block; empty children last. The surviving blocks' tokens, ascending and −1
 * padded to `k`, are the block's list for `dense.indexAttn`.
 *
 * Deliberate deviations from the official code (ops/hip/README.md): the ranking is on the raw f32 score (the
 * official GPU kernel ranks sigmoid(score) stored in bf16, whose saturation makes ties), the initial nodes
 * tile the region as ⌊i·blocks/n⌋ (no power-of-two alignment), and an exact 0.0 dot product is a score like
 * any other (the official code treats it as masked).
 *
 * GPU: one workgroup of 256 invocations per (query block, head); nodes, children and sampled queries live in
 * workgroup memory; survivors by a bitonic sort of the children on the (score, block) order, so CPU and GPU
 * agree exactly whenever their f32 scores agree.
 * @module
 */
import { Effect } from "effect";
import { allocHost, storageBytes, tensorType } from "@longctx/graph";
import type { Cost, DescsOf, Gemm, GpuLowering, HostOf, HostTensor, Kernel, Operator } from "@longctx/graph";
import { asF32, checkQKVCross, need } from "../dense/common.ts";
import { indexColumns, indexVisible } from "../dense/index_attn.ts";
import { HipParams, hipProblem, hipRegion } from "./params.ts";

const ports = <D extends "f32" | "f16">(dtype: D) => ({
  inputs: {
    q: tensorType(dtype, ["heads", "seq", "headDim"] as const),
    k: tensorType(dtype, ["kvHeads", "kvSeq", "headDim"] as const),
  },
  outputs: {
    indices: tensorType("i32", ["selHeads", "qBlocks", "kCap"] as const),
    density: tensorType("f32", ["heads"] as const),
  },
});
type In<D extends "f32" | "f16"> = ReturnType<typeof ports<D>>["inputs"];
type Out = ReturnType<typeof ports<"f32">>["outputs"];

/** Local rows of the block `[i0, i1)` that score children: every `stride`-th, the last row for a short tail. */
export const sampledRows = (i0: number, i1: number, stride: number): number[] => {
  const rows: number[] = [];
  for (let s = 0; s * stride < i1 - i0; s++) rows.push(Math.min(i0 + s * stride + stride - 1, i1 - 1));
  return rows;
};

/** A candidate node of the search: `[start, start + size)` key blocks of the region, its score. */
interface Node {
  start: number;
  size: number;
  score: number;
}

/** The search order: nonempty first, higher score first, then the lower start. */
const before = (a: Node, b: Node): number =>
  (a.size === 0 ? 1 : 0) - (b.size === 0 ? 1 : 0) || (b.score > a.score ? 1 : b.score < a.score ? -1 : 0) ||
  a.start - b.start;

/**
 * Scores of key blocks for one (head, query block): for each representative block `b` of `blocks` (region
 * block indices), the max of q·k over the sampled queries and the block's keys a query may score (`j ≤ p −
 * window`), −∞ when none may.
 */
export type BlockScorer = (blocks: readonly number[]) => ArrayLike<number>;

/**
 * The HiP mask of one (head, query block) whose last query sits at `pLast`: ascending token list (length ≤ k)
 * from the search of the module doc, with `score` giving the children's scores one round at a time.
 */
export const searchBlock = (
  p: Pick<HipParams, "topK" | "blockK" | "sink" | "window">,
  pLast: number,
  score: BlockScorer,
): number[] => {
  const reg = hipRegion(p, pLast);
  const end = reg.start + reg.tokens;
  if (reg.dense) return Array.from({ length: reg.tokens }, (_, t) => reg.start + t);
  const n = p.topK / p.blockK;
  if (n === 0) return [];
  let nodes: Node[] = Array.from({ length: n }, (_, i) => {
    const start = Math.floor((i * reg.blocks) / n);
    return { start, size: Math.floor(((i + 1) * reg.blocks) / n) - start, score: 0 };
  });
  while (nodes.some((x) => x.size > 1)) {
    const children: Node[] = [];
    for (const x of nodes) {
      const half = Math.floor(x.size / 2);
      children.push({ start: x.start, size: half, score: -Infinity });
      children.push({ start: x.start + half, size: x.size - half, score: -Infinity });
    }
    const live = children.filter((c) => c.size > 0);
    const sc = score(live.map((c) => c.start + Math.floor(c.size / 2)));
    live.forEach((c, e) => (c.score = sc[e]));
    nodes = children.sort(before).slice(0, n);
  }
  const out: number[] = [];
  for (const b of nodes.map((x) => x.start).sort((a, c) => a - c)) {
    for (let t = 0; t < p.blockK; t++) {
      const j = reg.start + b * p.blockK + t;
      if (j < end) out.push(j);
    }
  }
  return out;
};

/** A {@link BlockScorer} by float64 loops: `dot(row, key)` is q·k of a sampled row and a key token. */
const loopScorer = (
  p: Pick<HipParams, "blockK" | "sink">,
  end: number,
  rows: readonly number[],
  limits: readonly number[],
  dot: (row: number, key: number) => number,
): BlockScorer =>
(blocks) =>
  blocks.map((block) => {
    let m = -Infinity;
    for (let t = 0; t < p.blockK; t++) {
      const j = p.sink + block * p.blockK + t;
      if (j >= end) break;
      for (let s = 0; s < rows.length; s++) if (j <= limits[s]) m = Math.max(m, dot(rows[s], j));
    }
    return m;
  });

/**
 * A {@link BlockScorer} through `gemm`: the blocks' keys gathered into one matrix, scored against the sampled
 * query rows `qs [ns, d]` in one f32 GEMM per round.
 */
const gemmScorer = (
  gemm: Gemm,
  p: Pick<HipParams, "blockK" | "sink">,
  end: number,
  qs: Float32Array,
  limits: readonly number[],
  k: Float32Array,
  kb: number,
  d: number,
): BlockScorer =>
(blocks) => {
  const ns = limits.length, cols = blocks.length * p.blockK;
  const kSel = new Float32Array(cols * d), keyOf = new Int32Array(cols).fill(-1);
  blocks.forEach((block, e) => {
    for (let t = 0; t < p.blockK; t++) {
      const j = p.sink + block * p.blockK + t;
      if (j >= end) break;
      keyOf[e * p.blockK + t] = j;
      kSel.set(k.subarray(kb + j * d, kb + (j + 1) * d), (e * p.blockK + t) * d);
    }
  });
  const S = new Float32Array(ns * cols);
  gemm(false, true, ns, cols, d, 1, qs, d, kSel, d, 0, S, cols);
  return blocks.map((_, e) => {
    let m = -Infinity;
    for (let t = 0; t < p.blockK; t++) {
      const c = e * p.blockK + t, j = keyOf[c];
      if (j < 0) break;
      for (let s = 0; s < ns; s++) if (j <= limits[s]) m = Math.max(m, S[s * cols + c]);
    }
    return m;
  });
};

/** Visible keys of the queries at positions `pFirst … pLast` for a list (sink ∪ list ∪ window, disjoint). */
const visibleKeys = (
  list: Int32Array,
  sink: number,
  window: number,
  pFirst: number,
  pLast: number,
): number => {
  const cols = indexColumns(list, sink, window, pFirst, pLast);
  let n = 0;
  for (let pos = pFirst; pos <= pLast; pos++) {
    for (let c = 0; c < cols.n; c++) if (indexVisible(cols.kind[c], cols.keys[c], pos, window)) n++;
  }
  return n;
};

/**
 * `hip.mask` on the host: `q [H, seq, d]`, `k [Hk, kvSeq, d]` (f32 values; query `i` at position
 * `kvSeq − seq + i`) → `indices [H, qBlocks, k]` (ascending tokens, −1 padded) and `density [H]` (attended /
 * causal (query, key) pairs, the sink and window included). Scores in float64, or with `gemm` (the cpu
 * backend's BLAS) as one f32 GEMM per (head, block, round).
 */
export const hipMaskReference = (
  p: HipParams,
  q: Float32Array,
  k: Float32Array,
  H: number,
  Hk: number,
  seq: number,
  kvSeq: number,
  d: number,
  gemm?: Gemm,
): { indices: Int32Array; density: Float32Array } => {
  const qB = Math.ceil(seq / p.blockQ), cap = Math.max(1, p.topK), off = kvSeq - seq, g = H / Hk;
  const indices = new Int32Array(H * qB * cap).fill(-1);
  const density = new Float32Array(H);
  for (let h = 0; h < H; h++) {
    const kb = Math.floor(h / g) * kvSeq * d;
    let seen = 0, causal = 0;
    for (let b = 0; b < qB; b++) {
      const i0 = b * p.blockQ, i1 = Math.min(seq, i0 + p.blockQ), pLast = i1 - 1 + off;
      const rows = sampledRows(i0, i1, p.blockStrideQ), limits = rows.map((r) => r + off - p.window);
      const end = p.sink + hipRegion(p, pLast).tokens;
      let scorer: BlockScorer;
      if (gemm) {
        const qs = new Float32Array(rows.length * d);
        rows.forEach((r, s) => qs.set(q.subarray((h * seq + r) * d, (h * seq + r + 1) * d), s * d));
        scorer = gemmScorer(gemm, p, end, qs, limits, k, kb, d);
      } else {
        scorer = loopScorer(p, end, rows, limits, (row, key) => {
          let s = 0;
          const qo = (h * seq + row) * d, ko = kb + key * d;
          for (let x = 0; x < d; x++) s += q[qo + x] * k[ko + x];
          return s;
        });
      }
      const list = searchBlock(p, pLast, scorer);
      const base = (h * qB + b) * cap;
      indices.set(list, base);
      seen += visibleKeys(indices.subarray(base, base + cap), p.sink, p.window, i0 + off, i1 - 1 + off);
      for (let i = i0; i < i1; i++) causal += i + off + 1;
    }
    density[h] = seen / causal;
  }
  return { indices, density };
};

const WG = 256;

/** Workgroup memory of the search kernel (bytes): sampled Q rows, nodes, the sort array, the sorted list. */
const maskWorkgroupBytes = (p: HipParams, d: number): number => {
  const ns = Math.ceil(p.blockQ / p.blockStrideQ), n = p.topK / p.blockK;
  const m = nextPow2(2 * n);
  return ns * d * 4 + ns * 4 + n * 8 + m * 12 + 64;
};

const nextPow2 = (x: number): number => {
  let m = 1;
  while (m < x) m *= 2;
  return m;
};

/** The search kernel (module doc). Bindings: Q, K, INDICES (i32), PART (f32 [H, qBlocks, 2]). */
const searchKernel = (
  p: HipParams,
  dtype: "f32" | "f16",
  H: number,
  Hk: number,
  seq: number,
  kvSeq: number,
  d: number,
): Kernel => {
  const D4 = d / 4, n = p.topK / p.blockK, M = nextPow2(2 * n);
  // sampled queries per block: a call shorter than a block (decode: 1) scores with only the rows it has
  const ns = Math.ceil(Math.min(p.blockQ, seq) / p.blockStrideQ);
  const qB = Math.ceil(seq / p.blockQ), cap = Math.max(1, p.topK), off = kvSeq - seq, g = H / Hk;
  const T = dtype, Mn = nextPow2(Math.max(1, n));
  const L: string[] = [];
  const w = (s: string) => L.push(s);
  if (dtype === "f16") w("enable f16;");
  w(`@group(0) @binding(0) var<storage, read> Q: array<vec4<${T}>>;`);
  w(`@group(0) @binding(1) var<storage, read> K: array<vec4<${T}>>;`);
  w(`@group(0) @binding(2) var<storage, read_write> IDX: array<i32>;`);
  w(`@group(0) @binding(3) var<storage, read_write> PART: array<f32>;`);
  w(`var<workgroup> qs: array<vec4<f32>, ${ns * D4}>;`);
  w(`var<workgroup> qlim: array<i32, ${ns}>;`);
  w(`var<workgroup> nst: array<i32, ${Math.max(1, n)}>;`);
  w(`var<workgroup> nsz: array<i32, ${Math.max(1, n)}>;`);
  w(`var<workgroup> cst: array<i32, ${M}>;`);
  w(`var<workgroup> csz: array<i32, ${M}>;`);
  w(`var<workgroup> csc: array<f32, ${M}>;`);
  w(`var<workgroup> cnt: array<atomic<u32>, 2>;`);
  w(`const NEG: f32 = -3.0e38;`);
  // a strictly precedes b in the search order: nonempty first, higher score, lower start.
  w(`fn first(sa: i32, za: i32, ca: f32, sb: i32, zb: i32, cb: f32) -> bool {`);
  w(`  if ((za == 0) != (zb == 0)) { return zb == 0; }`);
  w(`  if (ca != cb) { return ca > cb; }`);
  w(`  return sa < sb;`);
  w(`}`);
  w(`@compute @workgroup_size(${WG})`);
  w(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {`);
  w(`  let b = wid.x; let h = wid.y; let kvh = h / ${g}u;`);
  w(`  let i0 = b * ${p.blockQ}u; let i1 = min(${seq}u, i0 + ${p.blockQ}u);`);
  w(`  let pFirst = i32(i0) + ${off}; let pLast = i32(i1) - 1 + ${off};`);
  w(`  let tokens = max(0, pLast + 1 - ${p.window} - ${p.sink});`);
  w(`  let end = ${p.sink} + tokens;`);
  w(`  let obase = (h * ${qB}u + b) * ${cap}u;`);
  w(`  let kbase = kvh * ${kvSeq}u;`);
  w(`  if (tid < 2u) { atomicStore(&cnt[tid], 0u); }`);
  w(`  if (tokens <= ${p.topK}) {`);
  w(`    for (var t = tid; t < ${cap}u; t += ${WG}u) { IDX[obase + t] = select(-1, ${p.sink} + i32(t), i32(t) < tokens); }`);
  w(`  } else {`);
  if (n === 0) {
    w(`    if (tid == 0u) { IDX[obase] = -1; }`);
  } else {
    w(`    let blocks = (tokens + ${p.blockK - 1}) / ${p.blockK};`);
    // sampled queries (f32) and their limits p − window
    w(`    for (var x = tid; x < ${ns * D4}u; x += ${WG}u) {`);
    w(`      let s = x / ${D4}u;`);
    w(`      let r = min(i0 + s * ${p.blockStrideQ}u + ${p.blockStrideQ - 1}u, i1 - 1u);`);
    w(`      qs[x] = vec4<f32>(Q[(h * ${seq}u + r) * ${D4}u + x % ${D4}u]);`);
    w(`      if (x % ${D4}u == 0u) { qlim[s] = select(-2147483647, i32(r) + ${off} - ${p.window}, s * ${p.blockStrideQ}u < i1 - i0); }`);
    w(`    }`);
    w(`    for (var i = tid; i < ${n}u; i += ${WG}u) {`);
    w(`      let s0 = i32((i * u32(blocks)) / ${n}u); let s1 = i32(((i + 1u) * u32(blocks)) / ${n}u);`);
    w(`      nst[i] = s0; nsz[i] = s1 - s0;`);
    w(`    }`);
    w(`    var maxSize = (blocks + ${n - 1}) / ${n};`);
    w(`    var rounds = 0u;`);
    w(`    while ((1 << rounds) < maxSize) { rounds++; }`);
    w(`    workgroupBarrier();`);
    w(`    for (var round = 0u; round < rounds; round++) {`);
    w(`      for (var c = tid; c < ${M}u; c += ${WG}u) {`);
    w(`        var st = 2147483647; var sz = 0; var sc = NEG;`);
    w(`        if (c < ${2 * n}u) {`);
    w(`          let z = nsz[c / 2u]; let half = z / 2;`);
    w(`          st = nst[c / 2u] + select(0, half, (c & 1u) == 1u);`);
    w(`          sz = select(half, z - half, (c & 1u) == 1u);`);
    w(`          if (sz > 0) {`);
    w(`            let rep = st + sz / 2;`);
    w(`            var m = -3.4e38;`);
    w(`            for (var t = 0; t < ${p.blockK}; t++) {`);
    w(`              let j = ${p.sink} + rep * ${p.blockK} + t;`);
    w(`              if (j >= end) { break; }`);
    // the key row is read once per key; one accumulator per sampled query, in named registers
    for (let s = 0; s < ns; s++) w(`              var a${s} = 0.0;`);
    w(`              let kr = (kbase + u32(j)) * ${D4}u;`);
    w(`              for (var x = 0u; x < ${D4}u; x++) {`);
    w(`                let kv = vec4<f32>(K[kr + x]);`);
    for (let s = 0; s < ns; s++) w(`                a${s} += dot(qs[${s * D4}u + x], kv);`);
    w(`              }`);
    for (let s = 0; s < ns; s++) w(`              if (j <= qlim[${s}]) { m = max(m, a${s}); }`);
    w(`            }`);
    w(`            sc = m;`);
    w(`          } else { st = 2147483647; }`);
    w(`        }`);
    w(`        cst[c] = st; csz[c] = sz; csc[c] = sc;`);
    w(`      }`);
    // bitonic sort of M entries by the search order (first = best)
    w(`      for (var kk = 2u; kk <= ${M}u; kk <<= 1u) {`);
    w(`        for (var jj = kk >> 1u; jj > 0u; jj >>= 1u) {`);
    w(`          workgroupBarrier();`);
    w(`          for (var i = tid; i < ${M}u; i += ${WG}u) {`);
    w(`            let l = i ^ jj;`);
    w(`            if (l > i) {`);
    w(`              let up = (i & kk) == 0u;`);
    w(`              let lFirst = first(cst[l], csz[l], csc[l], cst[i], csz[i], csc[i]);`);
    w(`              if (lFirst == up) {`);
    w(`                let a = cst[i]; cst[i] = cst[l]; cst[l] = a;`);
    w(`                let zz = csz[i]; csz[i] = csz[l]; csz[l] = zz;`);
    w(`                let f = csc[i]; csc[i] = csc[l]; csc[l] = f;`);
    w(`              }`);
    w(`            }`);
    w(`          }`);
    w(`        }`);
    w(`      }`);
    w(`      workgroupBarrier();`);
    w(`      for (var i = tid; i < ${n}u; i += ${WG}u) { nst[i] = cst[i]; nsz[i] = csz[i]; }`);
    w(`      workgroupBarrier();`);
    w(`    }`);
    // survivors ascending by start (bitonic sort on starts, padded with +inf)
    w(`    for (var i = tid; i < ${Mn}u; i += ${WG}u) { cst[i] = select(2147483647, nst[min(i, ${
      n - 1
    }u)], i < ${n}u); }`);
    w(`    for (var kk = 2u; kk <= ${Mn}u; kk <<= 1u) {`);
    w(`      for (var jj = kk >> 1u; jj > 0u; jj >>= 1u) {`);
    w(`        workgroupBarrier();`);
    w(`        for (var i = tid; i < ${Mn}u; i += ${WG}u) {`);
    w(`          let l = i ^ jj;`);
    w(`          if (l > i) {`);
    w(`            let up = (i & kk) == 0u;`);
    w(`            if ((cst[l] < cst[i]) == up) { let a = cst[i]; cst[i] = cst[l]; cst[l] = a; }`);
    w(`          }`);
    w(`        }`);
    w(`      }`);
    w(`    }`);
    w(`    workgroupBarrier();`);
    w(`    for (var e = tid; e < ${cap}u; e += ${WG}u) {`);
    w(`      let j = ${p.sink} + cst[e / ${p.blockK}u] * ${p.blockK} + i32(e % ${p.blockK}u);`);
    w(`      IDX[obase + e] = select(-1, j, j < end);`);
    w(`    }`);
  }
  w(`  }`);
  // density partials of the block: attended and causal (query, key) pairs
  w(`  workgroupBarrier();`);
  w(`  for (var r = tid; r < i1 - i0; r += ${WG}u) {`);
  w(`    let pos = i32(i0 + r) + ${off};`);
  w(`    let sinkN = min(${p.sink}, pos + 1);`);
  w(`    let wlo = max(${p.sink}, pos - ${p.window - 1});`);
  w(`    let winN = select(0, pos + 1 - wlo, ${p.window} > 0 && pos + 1 > wlo);`);
  // list entries the query scores outside its window (j ≤ pos − window): all of them are ≥ sink
  w(`    var listN = 0;`);
  w(`    let lim = pos - ${p.window};`);
  w(`    if (tokens <= ${p.topK}) {`);
  w(`      listN = clamp(lim - ${p.sink} + 1, 0, tokens);`);
  if (n > 0) {
    // the survivors' sorted starts are still in cst: binary search for the blocks starting at or before lim
    w(`    } else {`);
    w(`      var lo = 0u; var hi = ${n}u;`);
    w(`      while (lo < hi) {`);
    w(`        let mid = (lo + hi) / 2u;`);
    w(`        if (${p.sink} + cst[mid] * ${p.blockK} <= lim) { lo = mid + 1u; } else { hi = mid; }`);
    w(`      }`);
    w(`      if (lo > 0u) {`);
    w(`        let s0 = ${p.sink} + cst[lo - 1u] * ${p.blockK};`);
    w(`        listN = i32(lo - 1u) * ${p.blockK} + min(${p.blockK}, min(lim - s0 + 1, end - s0));`);
    w(`      }`);
  }
  w(`    }`);
  w(`    atomicAdd(&cnt[0], u32(sinkN + listN + winN));`);
  w(`    atomicAdd(&cnt[1], u32(pos + 1));`);
  w(`  }`);
  w(`  workgroupBarrier();`);
  w(`  if (tid == 0u) {`);
  w(`    PART[(h * ${qB}u + b) * 2u] = f32(atomicLoad(&cnt[0]));`);
  w(`    PART[(h * ${qB}u + b) * 2u + 1u] = f32(atomicLoad(&cnt[1]));`);
  w(`  }`);
  w(`}`);
  return {
    key: `hip.mask:${dtype}:${H}/${Hk}:${seq}x${kvSeq}x${d}:${p.blockQ}/${p.blockStrideQ}/${p.blockK}:` +
      `k${p.topK}s${p.sink}w${p.window}`,
    wgsl: L.join("\n"),
    entryPoint: "main",
    bindings: ["read", "read", "read_write", "read_write"],
    enables: dtype === "f16" ? ["f16"] : [],
  };
};

/** Density per head from the per-block partials. Bindings: PART, DENSITY. One workgroup of 64 per head. */
const densityKernel = (H: number, qB: number): Kernel => ({
  key: `hip.density:${H}x${qB}`,
  wgsl: [
    `@group(0) @binding(0) var<storage, read> PART: array<f32>;`,
    `@group(0) @binding(1) var<storage, read_write> DENSITY: array<f32>;`,
    `var<workgroup> a: array<f32, 64>;`,
    `var<workgroup> c: array<f32, 64>;`,
    `@compute @workgroup_size(64)`,
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {`,
    `  var sa = 0.0; var sc = 0.0;`,
    `  for (var b = tid; b < ${qB}u; b += 64u) { sa += PART[(wid.x * ${qB}u + b) * 2u]; sc += PART[(wid.x * ${qB}u + b) * 2u + 1u]; }`,
    `  a[tid] = sa; c[tid] = sc;`,
    `  for (var s = 32u; s > 0u; s >>= 1u) {`,
    `    workgroupBarrier();`,
    `    if (tid < s) { a[tid] += a[tid + s]; c[tid] += c[tid + s]; }`,
    `  }`,
    `  if (tid == 0u) { DENSITY[wid.x] = a[0] / c[0]; }`,
    `}`,
  ].join("\n"),
  entryPoint: "main",
  bindings: ["read", "read_write"],
});

/** Build `hip.mask` for inputs of dtype `dtype` (f32: `hip.mask`, f16: `hip.mask.f16`). */
export const makeHipMask = <D extends "f32" | "f16">(dtype: D): Operator<HipParams, In<D>, Out> => {
  const pt = ports(dtype);
  return {
    name: dtype === "f32" ? "hip.mask" : "hip.mask.f16",
    kind: "mask",
    reference: "HiP (Lee et al., ICLR 2025, arXiv 2406.09827 v2): hierarchical top-k key-block search; " +
      "official v1.1 code src/hip_attn/v1_1/attention2_draft_prefetch.py",
    params: HipParams,
    inputs: pt.inputs,
    outputs: pt.outputs,
    infer: (p, i) =>
      Effect.gen(function* () {
        const s = yield* checkQKVCross(i.q, i.k, i.k);
        const bad = hipProblem(p);
        yield* need(
          bad === undefined,
          "params",
          bad ?? "",
          "topK must be a multiple of blockK (≤ 512 blocks)",
        );
        const qB = Math.ceil(s.seq / p.blockQ);
        return {
          indices: { ...pt.outputs.indices, shape: [s.heads, qB, Math.max(1, p.topK)] },
          density: { ...pt.outputs.density, shape: [s.heads] },
        } as DescsOf<Out>;
      }),
    cpu: (p, i, ctx) => {
      const [H, seq, d] = i.q.desc.shape as [number, number, number];
      const [Hk, kvSeq] = i.k.desc.shape as [number, number, number];
      const r = hipMaskReference(
        p,
        asF32(i.q as HostTensor),
        asF32(i.k as HostTensor),
        H,
        Hk,
        seq,
        kvSeq,
        d,
        ctx?.gemm,
      );
      const qB = Math.ceil(seq / p.blockQ);
      const indices = allocHost({ ...pt.outputs.indices, shape: [H, qB, Math.max(1, p.topK)] });
      indices.data.set(r.indices);
      const density = allocHost({ ...pt.outputs.density, shape: [H] });
      density.data.set(r.density);
      return { indices, density } as HostOf<Out>;
    },
    gpu: (p, i, features): GpuLowering => {
      const [H, seq, d] = i.q.shape as [number, number, number];
      const [Hk, kvSeq] = i.k.shape as [number, number, number];
      if (dtype === "f16" && !features.has("shader-f16")) throw new RangeError("needs shader-f16");
      if (maskWorkgroupBytes(p, d) > p.workgroupMemory) {
        throw new RangeError(
          `hip.mask needs ${maskWorkgroupBytes(p, d)} bytes of workgroup memory, the device gives ` +
            `${p.workgroupMemory}: lower topK / blockK or blockQ / blockStrideQ`,
        );
      }
      const qB = Math.ceil(seq / p.blockQ);
      return {
        workspaces: { part: H * qB * 2 * 4 },
        launches: [
          {
            kernel: searchKernel(p, dtype, H, Hk, seq, kvSeq, d),
            buffers: ["in:q", "in:k", "out:indices", "ws:part"],
            workgroups: [qB, H, 1],
          },
          { kernel: densityKernel(H, qB), buffers: ["ws:part", "out:density"], workgroups: [H, 1, 1] },
        ],
      };
    },
    cost: (p, i): Cost => {
      const [H, seq, d] = i.q.shape as [number, number, number];
      const kvSeq = i.k.shape[1], off = kvSeq - seq, qB = Math.ceil(seq / p.blockQ);
      const ns = Math.ceil(p.blockQ / p.blockStrideQ), n = p.topK / p.blockK, elt = storageBytes(dtype, 1);
      // Per block: rounds × 2n children × (sampled queries × blockK keys) dot products of d: the T log T term.
      let dots = 0, keyRows = 0;
      for (let b = 0; b < qB; b++) {
        const r = hipRegion(p, Math.min(seq, (b + 1) * p.blockQ) - 1 + off);
        dots += r.rounds * 2 * n * ns * p.blockK;
        keyRows += r.rounds * 2 * n * p.blockK;
      }
      return {
        flops: 2 * d * H * dots,
        bytesRead: H * seq * d * elt + H * keyRows * d * elt,
        bytesWritten: H * qB * Math.max(1, p.topK) * 4 + H * 4,
        workspaceBytes: H * qB * 8,
      };
    },
  };
};

/** `hip.mask` for f32 inputs. */
export const hipMask: Operator<HipParams, In<"f32">, Out> = makeHipMask("f32");
/** `hip.mask.f16` for f16 inputs (scores in f32). */
export const hipMaskF16: Operator<HipParams, In<"f16">, Out> = makeHipMask("f16");
