/**
 * `sale.estimate`: 4-bit QK products per (query block, key block) → the Relative Attention Score.
 *
 * SALE §3 and the official CUDA kernel (`flash_fwd_int4_sparse_kernel_v2.h`, `softmax.h`): for each query
 * row `i` the exact scores over the sink and local-window keys (full precision, causal) give a running max
 * `m_i` and sum `l_i = Σ exp(s_ij − m_i)`; every other causal key block is estimated with the 4-bit
 * codes, `ŝ_ij = sq_i sk_j (c_i · c_j) + qmk_ij` (scaled by the softmax scale), and its Relative Attention Score
 * is the largest estimated attention weight relative to the sink+local mass,
 * `score = max_{i ∈ block, j ∈ block} exp(ŝ_ij − m_i) / l_i`. `sale.select` keeps blocks with score ≥ τ.
 * Sink and local blocks are written as `FORCED` (3e38); non-causal blocks as −Infinity.
 * @module
 */
import { Effect } from "effect";
import { allocHost, tensorType } from "@longctx/graph";
import type { DescsOf, Gemm, GpuLowering, HostOf, HostTensor, Operator, TensorType } from "@longctx/graph";
import { asF32, causalKBlocks, checkQKV, need } from "../dense/common.ts";
import { effectiveScale } from "../dense/common.ts";
import { blockProblem, isForced, saleGeometry, SaleParams } from "./params.ts";
import { code4 } from "./quantize.ts";

/** Score written for sink and local-window blocks (always kept). */
export const FORCED = 3e38;

/** Input ports of `sale.estimate` with `q` and `k` of dtype `D` (the outputs of `sale.quantize` beside them). */
export type SaleEstimateInputs<D extends "f32" | "f16"> = {
  /** Queries, `D [heads, seq, headDim]`. */
  readonly q: TensorType<D, readonly ["heads", "seq", "headDim"]>;
  /** Keys, `D [kvHeads, kvSeq, headDim]`. */
  readonly k: TensorType<D, readonly ["kvHeads", "kvSeq", "headDim"]>;
  /** Smoothed 4-bit queries, `int4 [heads, seq, headDim]`. */
  readonly qq: TensorType<"int4", readonly ["heads", "seq", "headDim"]>;
  /** Query-block scales, `f32 [heads, qBlocks]`. */
  readonly qScales: TensorType<"f32", readonly ["heads", "qBlocks"]>;
  /** Smoothed 4-bit keys, `int4 [kvHeads, kvSeq, headDim]`. */
  readonly kq: TensorType<"int4", readonly ["kvHeads", "kvSeq", "headDim"]>;
  /** Key-block scales, `f32 [kvHeads, kBlocks]`. */
  readonly kScales: TensorType<"f32", readonly ["kvHeads", "kBlocks"]>;
  /** Mean key per KV head, `f32 [kvHeads, headDim]`. */
  readonly kMean: TensorType<"f32", readonly ["kvHeads", "headDim"]>;
  /** Smoothing correction `mean(Q_h) · (k_j − mean(K))`, `f32 [heads, kvSeq]`. */
  readonly qmk: TensorType<"f32", readonly ["heads", "kvSeq"]>;
};
/** Output ports of `sale.estimate`. */
export type SaleEstimateOutputs = {
  /** Relative Attention Score per block pair, `f32 [heads, qBlocks, kBlocks]` (forced blocks: `FORCED`). */
  readonly scores: TensorType<"f32", readonly ["heads", "qBlocks", "kBlocks"]>;
};

const ports = <D extends "f32" | "f16">(
  dtype: D,
): { readonly inputs: SaleEstimateInputs<D>; readonly outputs: SaleEstimateOutputs } => ({
  inputs: {
    q: tensorType(dtype, ["heads", "seq", "headDim"] as const),
    k: tensorType(dtype, ["kvHeads", "kvSeq", "headDim"] as const),
    qq: tensorType("int4", ["heads", "seq", "headDim"] as const),
    qScales: tensorType("f32", ["heads", "qBlocks"] as const),
    kq: tensorType("int4", ["kvHeads", "kvSeq", "headDim"] as const),
    kScales: tensorType("f32", ["kvHeads", "kBlocks"] as const),
    kMean: tensorType("f32", ["kvHeads", "headDim"] as const),
    qmk: tensorType("f32", ["heads", "kvSeq"] as const),
  },
  outputs: {
    scores: tensorType("f32", ["heads", "qBlocks", "kBlocks"] as const),
  },
});
type In<D extends "f32" | "f16"> = SaleEstimateInputs<D>;
type Out = SaleEstimateOutputs;

/**
 * CPU reference of the Relative Attention Score. Inputs as float32 values / packed codes (see `sale.quantize`).
 * Returns `score [heads, qBlocks, kBlocks]`.
 */
export const estimateReference = (
  p: SaleParams,
  q: Float32Array,
  k: Float32Array,
  qq: Uint32Array,
  qScale: Float32Array,
  kq: Uint32Array,
  kScale: Float32Array,
  kMean: Float32Array,
  qmk: Float32Array,
  H: number,
  Hk: number,
  seq: number,
  d: number,
): Float32Array => {
  const geo = saleGeometry(seq, p);
  const { qBlocks, kBlocks, localBlocks } = geo;
  const scale = effectiveScale(p.scale, d);
  const out = new Float32Array(H * qBlocks * kBlocks);
  const g = H / Hk;
  for (let h = 0; h < H; h++) {
    const kh = Math.floor(h / g);
    for (let r = 0; r < qBlocks; r++) {
      const nMax = causalKBlocks(r, seq, p.blockQ, p.blockK);
      const base = (h * qBlocks + r) * kBlocks;
      for (let kb = 0; kb < kBlocks; kb++) {
        out[base + kb] = kb >= nMax ? -Infinity : isForced(kb, nMax, p.sinkBlocks, localBlocks) ? FORCED : 0;
      }
      const i0 = r * p.blockQ, i1 = Math.min(seq, i0 + p.blockQ);
      const L = new Float64Array(i1 - i0);
      for (let i = i0; i < i1; i++) {
        let m = -Infinity;
        const s: number[] = [];
        for (let kb = 0; kb < nMax; kb++) {
          if (!isForced(kb, nMax, p.sinkBlocks, localBlocks)) continue;
          for (let j = kb * p.blockK; j < Math.min(seq, (kb + 1) * p.blockK) && j <= i; j++) {
            let dot = 0;
            for (let x = 0; x < d; x++) {
              dot += q[(h * seq + i) * d + x] * (k[(kh * seq + j) * d + x] - kMean[kh * d + x]);
            }
            s.push(dot * scale);
            m = Math.max(m, dot * scale);
          }
        }
        let l = 0;
        for (const v of s) l += Math.exp(v - m);
        L[i - i0] = m + Math.log(l);
      }
      for (let kb = 0; kb < nMax; kb++) {
        if (isForced(kb, nMax, p.sinkBlocks, localBlocks)) continue;
        let best = -Infinity;
        for (let i = i0; i < i1; i++) {
          const sq = qScale[h * qBlocks + r];
          for (let j = kb * p.blockK; j < Math.min(seq, (kb + 1) * p.blockK) && j <= i; j++) {
            let acc = 0;
            for (let x = 0; x < d; x++) {
              acc += code4(qq, (h * seq + i) * d + x) * code4(kq, (kh * seq + j) * d + x);
            }
            const est = acc * sq * kScale[kh * kBlocks + kb] + qmk[h * seq + j];
            best = Math.max(best, est * scale - L[i - i0]);
          }
        }
        out[base + kb] = Math.exp(best);
      }
    }
  }
  return out;
};

/** Unpack `n` int4 codes (eight to a `u32`) into f32 values. */
const unpackCodes = (words: Uint32Array, n: number): Float32Array => {
  const out = new Float32Array(n);
  for (let e = 0; e < n; e++) out[e] = code4(words, e);
  return out;
};

/**
 * `sale.estimate`'s scores `[H, qBlocks, kBlocks]` through `gemm`: forced blocks (sinks, local window) get
 * `FORCED`, blocks past the causal limit −∞, the others `exp(max_{i, j} (est_ij · scale − L_i))` with
 * `est_ij = (codes_q · codes_k) · s_q · s_k + qmk_j` and `L_i` the log-sum-exp of row `i`'s exact scores over the
 * forced keys (`q · (k − mean(k))`). Inputs as `estimateReference`.
 */
export const estimateGemm = (
  gemm: Gemm,
  p: SaleParams,
  q: Float32Array,
  k: Float32Array,
  qq: Uint32Array,
  qScale: Float32Array,
  kq: Uint32Array,
  kScale: Float32Array,
  kMean: Float32Array,
  qmk: Float32Array,
  H: number,
  Hk: number,
  seq: number,
  d: number,
): Float32Array => {
  const { qBlocks, kBlocks, localBlocks } = saleGeometry(seq, p);
  const { blockQ: bq, blockK: bk, sinkBlocks } = p;
  const scale = effectiveScale(p.scale, d);
  const out = new Float32Array(H * qBlocks * kBlocks);
  const g = H / Hk;
  const cq = unpackCodes(qq, H * seq * d), ck = unpackCodes(kq, Hk * seq * d);
  const kt = new Float32Array(Hk * seq * d);
  for (let h = 0; h < Hk; h++) {
    for (let j = 0; j < seq; j++) {
      for (let x = 0; x < d; x++) kt[(h * seq + j) * d + x] = k[(h * seq + j) * d + x] - kMean[h * d + x];
    }
  }
  const S = new Float32Array(bq * seq);
  for (let h = 0; h < H; h++) {
    const kh = Math.floor(h / g), kb0 = kh * seq * d;
    for (let r = 0; r < qBlocks; r++) {
      const nMax = causalKBlocks(r, seq, bq, bk);
      const base = (h * qBlocks + r) * kBlocks;
      let free = 0;
      for (let kb = 0; kb < kBlocks; kb++) {
        const forced = kb < nMax && isForced(kb, nMax, sinkBlocks, localBlocks);
        out[base + kb] = kb >= nMax ? -Infinity : forced ? FORCED : 0;
        if (kb < nMax && !forced) free++;
      }
      if (free === 0) continue;
      const i0 = r * bq, rows = Math.min(seq, i0 + bq) - i0;
      const qBlk = q.subarray((h * seq + i0) * d, (h * seq + i0 + rows) * d);
      // exact scores over the forced keys: sinks [0, s1) and the local window [l0, l1)
      const s1 = Math.min(sinkBlocks * bk, seq);
      const loc = Math.max(sinkBlocks, nMax - localBlocks);
      const l0 = loc * bk, l1 = Math.min(seq, nMax * bk);
      const L = new Float64Array(rows);
      if (s1 > 0) gemm(false, true, rows, s1, d, scale, qBlk, d, kt.subarray(kb0), d, 0, S, seq);
      if (l1 > l0) {
        gemm(
          false,
          true,
          rows,
          l1 - l0,
          d,
          scale,
          qBlk,
          d,
          kt.subarray(kb0 + l0 * d),
          d,
          0,
          S.subarray(s1),
          seq,
        );
      }
      for (let x = 0; x < rows; x++) {
        const i = i0 + x, row = x * seq;
        let m = -Infinity;
        for (let j = 0; j < s1 && j <= i; j++) m = Math.max(m, S[row + j]);
        for (let j = l0; j < l1 && j <= i; j++) m = Math.max(m, S[row + s1 + j - l0]);
        let l = 0;
        for (let j = 0; j < s1 && j <= i; j++) l += Math.exp(S[row + j] - m);
        for (let j = l0; j < l1 && j <= i; j++) l += Math.exp(S[row + s1 + j - l0] - m);
        L[x] = m + Math.log(l);
      }
      // 4-bit estimates of the free (middle) blocks [m0, l0): exact integer products as an f32 GEMM
      const m0 = s1, mN = l0 - m0;
      if (mN <= 0) continue;
      gemm(
        false,
        true,
        rows,
        mN,
        d,
        1,
        cq.subarray((h * seq + i0) * d),
        d,
        ck.subarray(kb0 + m0 * d),
        d,
        0,
        S,
        seq,
      );
      const sq = qScale[h * qBlocks + r];
      for (let kb = sinkBlocks; kb < loc; kb++) {
        const sk = kScale[kh * kBlocks + kb];
        let best = -Infinity;
        for (let x = 0; x < rows; x++) {
          const i = i0 + x;
          for (let j = kb * bk; j < Math.min(seq, (kb + 1) * bk) && j <= i; j++) {
            const est = S[x * seq + j - m0] * sq * sk + qmk[h * seq + j];
            best = Math.max(best, est * scale - L[x]);
          }
        }
        out[base + kb] = Math.exp(best);
      }
    }
  }
  return out;
};

/** Key blocks whose scores are reduced together (one pair of barriers per batch). */
const NB = 8;

const estimateWgsl = (
  p: SaleParams,
  H: number,
  Hk: number,
  seq: number,
  D: number,
  dtype: "f32" | "f16",
): string => {
  const bq = p.blockQ, bk = p.blockK;
  const geo = saleGeometry(seq, p);
  const TM = bq / 16, TN = bk / 8, D4 = D / 4, D16 = D / 16, P4 = D4 + 1, P16 = D16 + 1;
  if (D % 16 !== 0) throw new RangeError(`sale.estimate WGSL needs headDim % 16 == 0, got ${D}`);
  const sc = (effectiveScale(p.scale, D) * Math.LOG2E).toPrecision(9);
  const w4 = Math.max(bk * P4, (bq + bk) * P16);
  const V4 = `vec4<${dtype}>`;
  const L: string[] = [];
  const o = (s: string) => L.push(s);
  if (dtype === "f16") o("enable f16;");
  o(`@group(0) @binding(0) var<storage, read> Q: array<${V4}>;
@group(0) @binding(1) var<storage, read> K: array<${V4}>;
@group(0) @binding(2) var<storage, read> QQ: array<u32>;
@group(0) @binding(3) var<storage, read> SQ: array<f32>;
@group(0) @binding(4) var<storage, read> KQ: array<u32>;
@group(0) @binding(5) var<storage, read> SK: array<f32>;
@group(0) @binding(6) var<storage, read> KM: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> QMK: array<f32>;
@group(0) @binding(8) var<storage, read_write> SCORE: array<f32>;
var<workgroup> W: array<vec4<u32>, ${w4}>;
var<workgroup> Ps: array<f32, ${bq * bk}>;
var<workgroup> red: array<f32, ${NB * 128}>;
var<workgroup> red2: array<f32, ${NB * 16}>;
const NEG: f32 = -3.0e38;
// 16 int4 codes (two words, low nibble first) -> four int8x4 words holding 16 * code: each nibble moved to the
// high half of its byte (two's complement int8 = 16 * code), even nibbles in .x/.z, odd ones in .y/.w; Q and K
// use the same order, so a dot over the 16 lanes is exactly 256 * (the int4 dot).
fn unpack16(w0: u32, w1: u32) -> vec4<u32> {
  return vec4<u32>((w0 << 4u) & 0xf0f0f0f0u, w0 & 0xf0f0f0f0u, (w1 << 4u) & 0xf0f0f0f0u, w1 & 0xf0f0f0f0u);
}
fn dot16(a: vec4<u32>, b: vec4<u32>) -> i32 {
  return dot4I8Packed(a.x, b.x) + dot4I8Packed(a.y, b.y) + dot4I8Packed(a.z, b.z) + dot4I8Packed(a.w, b.w);
}
@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let r = wid.x; let h = wid.y; let kvh = h / ${H / Hk}u;
  let q0 = r * ${bq}u;
  let nMax = min(${geo.kBlocks}u, (min(q0 + ${bq}u, ${seq}u) + ${bk - 1}u) / ${bk}u);
  let locStart = select(0u, nMax - ${geo.localBlocks}u, nMax > ${geo.localBlocks}u);
  let base = (h * ${geo.qBlocks}u + r) * ${geo.kBlocks}u;
  for (var kb = tid; kb < ${geo.kBlocks}u; kb += 128u) {
    if (kb >= nMax) { SCORE[base + kb] = bitcast<f32>(0xff800000u); } else if (kb < ${p.sinkBlocks}u || kb >= locStart) { SCORE[base + kb] = 3.0e38; }
  }
  let rg = tid / 8u; let cg = tid % 8u;`);
  for (let i = 0; i < TM; i++) {
    o(`  let row${i} = q0 + rg * ${TM}u + ${i}u; let rl${i} = min(row${i}, ${seq - 1}u);`);
    o(`  var m${i}: f32 = NEG; var l${i}: f32 = 0.0;`);
  }
  // phase A: exact scores over sink + local blocks (smoothed keys k - mean(k))
  o(`  for (var kb = 0u; kb < nMax; kb++) {
    if (kb >= ${p.sinkBlocks}u && kb < locStart) { continue; }
    let k0 = kb * ${bk}u;
    workgroupBarrier();
    for (var x = tid; x < ${bk * D4}u; x += 128u) {
      let kk = min(k0 + x / ${D4}u, ${seq - 1}u);
      W[(x / ${D4}u) * ${P4}u + x % ${D4}u] = bitcast<vec4<u32>>(vec4<f32>(K[(kvh * ${seq}u + kk) * ${D4}u + x % ${D4}u]) - KM[kvh * ${D4}u + x % ${D4}u]);
    }
    workgroupBarrier();`);
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) o(`    var s${i}_${j}: f32 = 0.0;`);
  o(`    for (var d = 0u; d < ${D4}u; d++) {`);
  for (let i = 0; i < TM; i++) o(`      let a${i} = vec4<f32>(Q[(h * ${seq}u + rl${i}) * ${D4}u + d]);`);
  for (let j = 0; j < TN; j++) o(`      let b${j} = bitcast<vec4<f32>>(W[(${j}u * 8u + cg) * ${P4}u + d]);`);
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN; j++) o(`      s${i}_${j} = s${i}_${j} + dot(a${i}, b${j});`);
  }
  o(`    }`);
  for (let j = 0; j < TN; j++) o(`    let key${j} = k0 + ${j}u * 8u + cg;`);
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN; j++) {
      o(`    Ps[(rg * ${TM}u + ${i}u) * ${bk}u + ${j}u * 8u + cg] = select(NEG, s${i}_${j} * ${sc}, key${j} <= row${i} && key${j} < ${seq}u);`);
    }
  }
  o(`    workgroupBarrier();`);
  for (let i = 0; i < TM; i++) {
    o(`    var mt${i}: f32 = m${i};
    for (var kk = 0u; kk < ${bk}u; kk++) { mt${i} = max(mt${i}, Ps[(rg * ${TM}u + ${i}u) * ${bk}u + kk]); }
    l${i} = l${i} * exp2(m${i} - mt${i}); m${i} = mt${i};
    for (var kk = 0u; kk < ${bk}u; kk++) {
      let sv = Ps[(rg * ${TM}u + ${i}u) * ${bk}u + kk];
      l${i} = l${i} + select(0.0, exp2(sv - m${i}), sv > -1.0e38);
    }`);
  }
  o(`  }`);
  for (let i = 0; i < TM; i++) {
    o(`  let L${i} = m${i} + log2(max(l${i}, 1.0e-30));`);
    o(`  let sq${i} = SQ[h * ${geo.qBlocks}u + r];`);
  }
  // phase B: int4 estimate of the middle blocks, scores reduced NB blocks at a time
  o(`  if (locStart <= ${p.sinkBlocks}u) { return; }
  workgroupBarrier();
  for (var x = tid; x < ${bq * D16}u; x += 128u) {
    let rr = min(q0 + x / ${D16}u, ${seq - 1}u);
    let wi = (h * ${seq}u + rr) * ${D / 8}u + (x % ${D16}u) * 2u;
    W[(x / ${D16}u) * ${P16}u + x % ${D16}u] = unpack16(QQ[wi], QQ[wi + 1u]);
  }
  let qmkBase = h * ${seq}u + cg;`);
  for (let i = 0; i < TM; i++) o(`  let aBase${i} = (rg * ${TM}u + ${i}u) * ${P16}u;`);
  for (let j = 0; j < TN; j++) o(`  let bBase${j} = ${bq * P16}u + (${j}u * 8u + cg) * ${P16}u;`);
  o(`  for (var kb = ${p.sinkBlocks}u; kb < locStart; kb++) {
    let k0 = kb * ${bk}u;
    let slot = (kb - ${p.sinkBlocks}u) % ${NB}u;
    workgroupBarrier();
    for (var x = tid; x < ${bk * D16}u; x += 128u) {
      let kk = min(k0 + x / ${D16}u, ${seq - 1}u);
      let wi = (kvh * ${seq}u + kk) * ${D / 8}u + (x % ${D16}u) * 2u;
      W[${bq * P16}u + (x / ${D16}u) * ${P16}u + x % ${D16}u] = unpack16(KQ[wi], KQ[wi + 1u]);
    }
    workgroupBarrier();`);
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) o(`    var c${i}_${j}: i32 = 0;`);
  // The head-dim loop has a constant trip count (headDim / 16): the driver unrolls it; unrolling it here made
  // lavapipe slower at S=2048 (2121-2356 ms vs 1204-1388 ms, noisy shared CPU), see benchmarks/device/NOTES.md.
  o(`    for (var w = 0u; w < ${D16}u; w++) {`);
  for (let i = 0; i < TM; i++) o(`      let a${i} = W[aBase${i} + w];`);
  for (let j = 0; j < TN; j++) o(`      let b${j} = W[bBase${j} + w];`);
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN; j++) o(`      c${i}_${j} = c${i}_${j} + dot16(a${i}, b${j});`);
  }
  o(`    }`);
  // Middle blocks lie strictly before the local window, hence before the diagonal: every key is < q0 <= row
  // and < seq, so no causal or length test is needed. Rows past seq (last query block) were loaded clamped to
  // row seq-1 and got that row's L in phase A, so they repeat its values and leave the maximum unchanged.
  // Log domain, one fma per element: (c * sq * sk + qmk) * scale * log2(e) - L, with the 1/256 of the int8
  // lanes folded into the per-row factor.
  o(`    let sk = SK[kvh * ${geo.kBlocks}u + kb] * ${
    (effectiveScale(p.scale, D) * Math.LOG2E / 256).toPrecision(9)
  };`);
  for (let j = 0; j < TN; j++) o(`    let qm${j} = QMK[qmkBase + k0 + ${j * 8}u] * ${sc};`);
  o(`    let al = sq0 * sk;`); // one Q scale per (head, query block)
  for (let i = 0; i < TM; i++) {
    const terms = Array.from({ length: TN }, (_, j) => `fma(f32(c${i}_${j}), al, qm${j})`);
    let e = terms[0];
    for (let j = 1; j < TN; j++) e = `max(${e}, ${terms[j]})`;
    o(`    let rb${i} = ${e} - L${i};`);
  }
  {
    let e = "rb0";
    for (let i = 1; i < TM; i++) e = `max(${e}, rb${i})`;
    o(`    let best = ${e};`);
  }
  o(`    red[slot * 128u + tid] = best;
    if (slot == ${NB - 1}u || kb + 1u == locStart) {
      workgroupBarrier();
      let bb = tid / 16u; let part = tid % 16u;
      if (bb <= slot) {
        var m = NEG;
        for (var t = 0u; t < 8u; t++) { m = max(m, red[bb * 128u + part * 8u + t]); }
        red2[bb * 16u + part] = m;
      }
      workgroupBarrier();
      if (tid <= slot) {
        var m = NEG;
        for (var t = 0u; t < 16u; t++) { m = max(m, red2[tid * 16u + t]); }
        SCORE[base + kb - slot + tid] = exp2(m);
      }
    }
  }
}`);
  return L.join("\n");
};

/** Build `sale.estimate` for inputs of dtype `dtype`. */
export const makeSaleEstimate = <D extends "f32" | "f16">(dtype: D): Operator<SaleParams, In<D>, Out> => {
  const pt = ports(dtype);
  return {
    name: dtype === "f32" ? "sale.estimate" : "sale.estimate.f16",
    kind: "estimate",
    reference: "SALE (arXiv 2505.24179) §3: 4-bit QK estimate and Relative Attention Score per block pair",
    params: SaleParams,
    inputs: pt.inputs,
    outputs: pt.outputs,
    infer: (p, i) =>
      Effect.gen(function* () {
        const s = yield* checkQKV(i.q, i.k, i.k);
        const bad = blockProblem(p, s.headDim);
        yield* need(bad === undefined, "q", bad ?? "", "fix blockQ/blockK");
        const g = saleGeometry(s.seq, p);
        yield* need(
          i.qq.shape.join() === i.q.shape.join(),
          "qq",
          `shape [${i.qq.shape}]`,
          "qq has q's shape",
        );
        yield* need(
          i.kq.shape.join() === i.k.shape.join(),
          "kq",
          `shape [${i.kq.shape}]`,
          "kq has k's shape",
        );
        yield* need(
          i.qScales.shape.join() === `${s.heads},${g.qBlocks}`,
          "qScales",
          `shape [${i.qScales.shape}]`,
          "from quantize",
        );
        yield* need(
          i.kScales.shape.join() === `${s.kvHeads},${g.kBlocks}`,
          "kScales",
          `shape [${i.kScales.shape}]`,
          "from quantize",
        );
        yield* need(
          i.kMean.shape.join() === `${s.kvHeads},${s.headDim}`,
          "kMean",
          `shape [${i.kMean.shape}]`,
          "",
        );
        yield* need(
          i.qmk.shape.join() === `${s.heads},${s.seq}`,
          "qmk",
          `shape [${i.qmk.shape}]`,
          "from quantize",
        );
        return { scores: { ...pt.outputs.scores, shape: [s.heads, g.qBlocks, g.kBlocks] } } as DescsOf<Out>;
      }),
    cpu: (p, i, ctx) => {
      const [H, seq, d] = i.q.desc.shape as [number, number, number];
      const Hk = i.k.desc.shape[0];
      // With the backend's GEMM: the same arithmetic as GEMMs (exact integer code products, f32 dot products).
      const s =
        (ctx?.gemm
          ? (...a: Parameters<typeof estimateReference>) => estimateGemm(ctx.gemm!, ...a)
          : estimateReference)(
            p,
            asF32(i.q as HostTensor),
            asF32(i.k as HostTensor),
            i.qq.data as Uint32Array,
            i.qScales.data as Float32Array,
            i.kq.data as Uint32Array,
            i.kScales.data as Float32Array,
            i.kMean.data as Float32Array,
            i.qmk.data as Float32Array,
            H,
            Hk,
            seq,
            d,
          );
      const g = saleGeometry(seq, p);
      const scores = allocHost({ ...pt.outputs.scores, shape: [H, g.qBlocks, g.kBlocks] });
      scores.data.set(s);
      return { scores } as HostOf<Out>;
    },
    gpu: (p, i, features): GpuLowering => {
      const [H, seq, d] = i.q.shape as [number, number, number];
      const Hk = i.k.shape[0];
      if (dtype === "f16" && !features.has("shader-f16")) throw new RangeError("needs shader-f16");
      const g = saleGeometry(seq, p);
      const key =
        `sale.estimate.v2:${H}/${Hk}:${seq}x${d}:${dtype}:${p.blockQ}x${p.blockK}:s${p.sinkBlocks}:l${g.localBlocks}:` +
        `${effectiveScale(p.scale, d)}`;
      return {
        workspaces: {},
        launches: [{
          kernel: {
            key,
            wgsl: estimateWgsl(p, H, Hk, seq, d, dtype),
            entryPoint: "main",
            bindings: ["read", "read", "read", "read", "read", "read", "read", "read", "read_write"],
            enables: dtype === "f16" ? ["f16"] : [],
          },
          buffers: [
            "in:q",
            "in:k",
            "in:qq",
            "in:qScales",
            "in:kq",
            "in:kScales",
            "in:kMean",
            "in:qmk",
            "out:scores",
          ],
          workgroups: [g.qBlocks, H, 1],
        }],
      };
    },
    cost: (p, i) => {
      const [H, seq, d] = i.q.shape as [number, number, number];
      const g = saleGeometry(seq, p);
      const exact = H * g.qBlocks * (p.sinkBlocks + g.localBlocks) * p.blockQ * p.blockK * 2 * d;
      const low = H * (g.nnzCap - g.qBlocks * (p.sinkBlocks + g.localBlocks)) * p.blockQ * p.blockK * 2 * d;
      const elt = dtype === "f16" ? 2 : 4;
      return {
        flops: exact + Math.max(0, low) / 4,
        bytesRead: H * seq * d * (elt + 0.5) + H * g.nnzCap * p.blockK * d * 0.5,
        bytesWritten: H * g.qBlocks * g.kBlocks * 4,
        workspaceBytes: 0,
      };
    },
  };
};

/** `sale.estimate` for f32 inputs. */
export const saleEstimate: Operator<SaleParams, SaleEstimateInputs<"f32">, SaleEstimateOutputs> =
  makeSaleEstimate("f32");
/** `sale.estimate.f16` for f16 inputs. */
export const saleEstimateF16: Operator<SaleParams, SaleEstimateInputs<"f16">, SaleEstimateOutputs> =
  makeSaleEstimate("f16");
