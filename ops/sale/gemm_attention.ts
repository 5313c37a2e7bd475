/**
 * SALE prefill attention on the CPU with a BLAS GEMM — the same arithmetic as the `sale.*` CPU references
 * (`ops/sale`), reorganised into per-query-block GEMMs so a real model can run it in every layer (the model's
 * pluggable attention) at 8K tokens. Integer QK products of the 4-bit codes are computed as f32 GEMMs of the
 * code values, which is exact (|c| ≤ 7, sums ≤ 49·headDim < 2^24).
 *
 * Used by the `run` CLI and `tests/ops/technique_fidelity.ts`, checked against `saleCpu` in `tests/ops/sale_blas_test.ts`.
 * @module
 */
import { causalKBlocks, roundEven } from "../dense/common.ts";
import { isForced, saleGeometry, type SaleParams } from "./params.ts";

import type { Gemm } from "@longctx/graph";
/** The GEMM shape this module takes (the `Gemm` of `@longctx/graph`). */
export type { Gemm };

/** Result of one SALE (or dense) attention call. */
export interface BlasAttention {
  /** `[heads, seq, d]` f32. */
  readonly o: Float32Array;
  /** `[heads, seq]` natural-log LSE of the scaled scores over the kept keys. */
  readonly lse: Float32Array;
  /** Kept blocks / causal blocks, per head. */
  readonly density: Float32Array;
}

const quantBlocks = (x: Float32Array, mean: Float32Array, nH: number, seq: number, d: number, B: number) => {
  const nB = Math.ceil(seq / B);
  const codes = new Float32Array(nH * seq * d);
  const scales = new Float32Array(nH * nB);
  for (let h = 0; h < nH; h++) {
    for (let b = 0; b < nB; b++) {
      const t1 = Math.min(seq, (b + 1) * B);
      let mx = 0;
      for (let t = b * B; t < t1; t++) {
        for (let i = 0; i < d; i++) {
          mx = Math.max(mx, Math.abs(Math.fround(x[(h * seq + t) * d + i] - mean[h * d + i])));
        }
      }
      const s = Math.fround(mx / 7);
      scales[h * nB + b] = s;
      if (s === 0) continue;
      for (let t = b * B; t < t1; t++) {
        for (let i = 0; i < d; i++) {
          const e = (h * seq + t) * d + i;
          codes[e] = Math.max(
            -7,
            Math.min(7, roundEven(Math.fround(Math.fround(x[e] - mean[h * d + i]) / s))),
          );
        }
      }
    }
  }
  return { codes, scales };
};

const means = (x: Float32Array, nH: number, seq: number, d: number, stride: number) => {
  const m = new Float64Array(nH * d);
  for (let h = 0; h < nH; h++) {
    for (let t = 0; t < seq; t++) for (let i = 0; i < d; i++) m[h * d + i] += x[(h * stride + t) * d + i];
  }
  return Float32Array.from(m, (v) => v / seq);
};

/**
 * SALE attention (quantize → estimate → select → block-sparse attention) for a full causal prefill:
 * `q [heads, seq, d]`, `k`/`v [kvHeads, kvStride, d]` with `seq` valid rows (offset 0). With `dense`, every
 * causal block is kept (the dense oracle with the same arithmetic). Scale 1/sqrt(d) unless `p.scale > 0`.
 */
export const saleAttentionBlas = (
  gemm: Gemm,
  p: SaleParams,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  heads: number,
  kvHeads: number,
  seq: number,
  d: number,
  kvStride = seq,
  dense = false,
): BlasAttention => {
  const { blockQ: bq, blockK: bk } = p;
  const g = saleGeometry(seq, p);
  const scale = p.scale > 0 ? p.scale : 1 / Math.sqrt(d);
  const group = heads / kvHeads;
  // contiguous K̃ = K − mean(K) and V copies [kvHeads, seq, d]
  const kMean = means(k, kvHeads, seq, d, kvStride);
  const ks = new Float32Array(kvHeads * seq * d);
  const vs = new Float32Array(kvHeads * seq * d);
  for (let h = 0; h < kvHeads; h++) {
    for (let t = 0; t < seq; t++) {
      for (let i = 0; i < d; i++) {
        ks[(h * seq + t) * d + i] = Math.fround(k[(h * kvStride + t) * d + i] - kMean[h * d + i]);
      }
      vs.set(v.subarray((h * kvStride + t) * d, (h * kvStride + t + 1) * d), (h * seq + t) * d);
    }
  }
  const qMean = means(q, heads, seq, d, seq);
  const Q = dense ? undefined : quantBlocks(q, qMean, heads, seq, d, bq);
  const K = dense ? undefined : quantBlocks(ks, new Float32Array(kvHeads * d), kvHeads, seq, d, bk);
  const o = new Float32Array(heads * seq * d);
  const lse = new Float32Array(heads * seq);
  const density = new Float32Array(heads);
  const S = new Float32Array(bq * seq);
  const kSel = new Float32Array(seq * d);
  const vSel = new Float32Array(seq * d);
  const oBlk = new Float32Array(bq * d);
  const qmk = new Float32Array(seq);
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h / group);
    const kBase = kh * seq * d;
    if (!dense) {
      for (let j = 0; j < seq; j++) {
        let a = 0;
        for (let i = 0; i < d; i++) a += qMean[h * d + i] * ks[kBase + j * d + i];
        qmk[j] = a;
      }
    }
    let nnz = 0;
    for (let r = 0; r < g.qBlocks; r++) {
      const i0 = r * bq, rows = Math.min(seq, i0 + bq) - i0;
      const nMax = causalKBlocks(r, seq, bq, bk);
      const locStart = Math.max(0, nMax - g.localBlocks);
      const qBlk = q.subarray((h * seq + i0) * d, (h * seq + i0 + rows) * d);
      const keep: number[] = [];
      if (dense || locStart <= p.sinkBlocks) {
        for (let kb = 0; kb < nMax; kb++) keep.push(kb);
      } else {
        // exact sink + local scores → per-row log-sum-exp L_i
        const sinkKeys = Math.min(p.sinkBlocks * bk, seq),
          loc0 = locStart * bk,
          locN = Math.min(seq, nMax * bk) - loc0;
        gemm(false, true, rows, sinkKeys, d, scale, qBlk, d, ks.subarray(kBase), d, 0, S, seq);
        gemm(
          false,
          true,
          rows,
          locN,
          d,
          scale,
          qBlk,
          d,
          ks.subarray(kBase + loc0 * d),
          d,
          0,
          S.subarray(sinkKeys),
          seq,
        );
        const L = new Float64Array(rows);
        for (let x = 0; x < rows; x++) {
          const i = i0 + x;
          let m = -Infinity;
          for (let j = 0; j < sinkKeys; j++) m = Math.max(m, S[x * seq + j]);
          for (let j = 0; j < locN && loc0 + j <= i; j++) m = Math.max(m, S[x * seq + sinkKeys + j]);
          let l = 0;
          for (let j = 0; j < sinkKeys; j++) l += Math.exp(S[x * seq + j] - m);
          for (let j = 0; j < locN && loc0 + j <= i; j++) l += Math.exp(S[x * seq + sinkKeys + j] - m);
          L[x] = m + Math.log(l);
        }
        // 4-bit estimate of the middle blocks: integer products as an exact f32 GEMM of the codes
        const m0 = p.sinkBlocks * bk, mN = loc0 - m0;
        gemm(
          false,
          true,
          rows,
          mN,
          d,
          1,
          Q!.codes.subarray((h * seq + i0) * d),
          d,
          K!.codes.subarray(kBase + m0 * d),
          d,
          0,
          S,
          seq,
        );
        const sq = Q!.scales[h * g.qBlocks + r];
        for (let kb = 0; kb < nMax; kb++) {
          if (isForced(kb, nMax, p.sinkBlocks, g.localBlocks)) {
            keep.push(kb);
            continue;
          }
          const sk = K!.scales[kh * g.kBlocks + kb];
          let best = -Infinity;
          for (let x = 0; x < rows; x++) {
            for (let j = kb * bk; j < (kb + 1) * bk; j++) {
              best = Math.max(best, (S[x * seq + j - m0] * sq * sk + qmk[j]) * scale - L[x]);
            }
          }
          if (Math.exp(best) >= p.threshold) keep.push(kb);
        }
      }
      nnz += keep.length;
      // block-sparse attention over the kept blocks
      let n = 0;
      for (const kb of keep) {
        const a = kb * bk, b = Math.min(seq, a + bk);
        kSel.set(ks.subarray(kBase + a * d, kBase + b * d), n * d);
        vSel.set(vs.subarray(kBase + a * d, kBase + b * d), n * d);
        n += b - a;
      }
      gemm(false, true, rows, n, d, scale, qBlk, d, kSel, d, 0, S, seq);
      for (let x = 0; x < rows; x++) {
        const i = i0 + x;
        let m = -Infinity, c = 0;
        for (const kb of keep) {
          for (let j = kb * bk; j < Math.min(seq, (kb + 1) * bk); j++, c++) {
            if (j <= i) m = Math.max(m, S[x * seq + c]);
          }
        }
        let l = 0;
        c = 0;
        for (const kb of keep) {
          for (let j = kb * bk; j < Math.min(seq, (kb + 1) * bk); j++, c++) {
            const e = j <= i ? Math.exp(S[x * seq + c] - m) : 0;
            S[x * seq + c] = e;
            l += e;
          }
        }
        for (let y = 0; y < n; y++) S[x * seq + y] /= l;
        lse[h * seq + i] = m + Math.log(l);
      }
      gemm(false, false, rows, d, n, 1, S, seq, vSel, d, 0, oBlk, d);
      o.set(oBlk.subarray(0, rows * d), (h * seq + i0) * d);
    }
    density[h] = nnz / g.nnzCap;
  }
  return { o, lse, density };
};

/** A plain TypeScript GEMM (tests; the fidelity script uses OpenBLAS through the runtime). */
export const tsGemm: Gemm = (tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) => {
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let x = 0; x < k; x++) {
        s += (tA ? a[x * lda + i] : a[i * lda + x]) * (tB ? b[j * ldb + x] : b[x * ldb + j]);
      }
      c[i * ldc + j] = alpha * s + (beta === 0 ? 0 : beta * c[i * ldc + j]);
    }
  }
};
