/**
 * Independent float64 / exact-integer references for the conformance test, written from the operators'
 * documented semantics (not from their code). Attention reuses `tests/ops/ref64.ts` and extends it to
 * kSeq ≠ seq (bottom-right causal alignment, as decode and chunked prefill use).
 * @module
 */
import { cacheAttention64, naiveAttention64 } from "../ops/ref64.ts";

/**
 * Causal attention in float64 with `kSeq` keys per KV head. For kSeq = seq this is `naiveAttention64`; otherwise
 * the causal diagonal is aligned bottom-right: query `i` sees keys `j ≤ i + kSeq − seq` (a row that sees no
 * key gets o = 0, lse = −Infinity). `keep(h, i, j)` optionally masks further.
 */
export const attention64 = (
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  heads: number,
  kvHeads: number,
  seq: number,
  kSeq: number,
  d: number,
  scale: number,
  keep?: (h: number, i: number, j: number) => boolean,
): { o: Float64Array; lse: Float64Array } => {
  if (kSeq === seq) return naiveAttention64(q, k, v, heads, kvHeads, seq, d, scale, keep);
  const o = new Float64Array(heads * seq * d);
  const lse = new Float64Array(heads * seq).fill(-Infinity);
  const off = kSeq - seq;
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h * kvHeads / heads);
    for (let i = 0; i < seq; i++) {
      const last = Math.min(kSeq - 1, i + off);
      const s: number[] = [];
      let m = -Infinity;
      for (let j = 0; j <= last; j++) {
        let dot = 0;
        for (let x = 0; x < d; x++) dot += q[(h * seq + i) * d + x] * k[(kh * kSeq + j) * d + x];
        const sj = keep && !keep(h, i, j) ? -Infinity : dot * scale;
        s.push(sj);
        m = Math.max(m, sj);
      }
      if (m === -Infinity) continue;
      let l = 0;
      const acc = new Float64Array(d);
      for (let j = 0; j < s.length; j++) {
        if (s[j] === -Infinity) continue;
        const p = Math.exp(s[j] - m);
        l += p;
        for (let x = 0; x < d; x++) acc[x] += p * v[(kh * kSeq + j) * d + x];
      }
      for (let x = 0; x < d; x++) o[(h * seq + i) * d + x] = acc[x] / l;
      lse[h * seq + i] = m + Math.log(l);
    }
  }
  return { o, lse };
};

/** Signed 4-bit code of element `e` of a packed int4 tensor (eight two's-complement nibbles per u32, low first). */
export const nibble = (words: ArrayLike<number>, e: number): number => {
  const n = (words[e >> 3] >>> (4 * (e & 7))) & 15;
  return n >= 8 ? n - 16 : n;
};

/** Round half to even in float64. */
const rne = (a: number): number => {
  const f = Math.floor(a);
  const r = a - f;
  return r > 0.5 ? f + 1 : r < 0.5 ? f : f % 2 === 0 ? f : f + 1;
};

/** Per-head column means over the sequence, float64: `x [H, S, d]` → `[H, d]`. */
export const means64 = (x: ArrayLike<number>, H: number, S: number, d: number): Float64Array => {
  const m = new Float64Array(H * d);
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < S; t++) for (let i = 0; i < d; i++) m[h * d + i] += x[(h * S + t) * d + i];
  }
  return m.map((v) => v / S);
};

/** Distance from a rounding tie below which a code may legitimately round either way (f32 vs f64 arithmetic). */
export const TIE_WINDOW = 1e-4;

/**
 * SALE's smoothed symmetric int4 quantisation in float64: per (head, group of `G` tokens) scale
 * `s = max|x − mean| / 7`, codes `round_half_even((x − mean) / s)` clamped to ±7 (0 when s = 0). `tie[e]` marks
 * elements within `TIE_WINDOW` of a rounding tie.
 */
export const quantize64 = (
  x: ArrayLike<number>,
  mean: Float64Array,
  H: number,
  S: number,
  d: number,
  G: number,
): { scales: Float64Array; codes: Int8Array; tie: Uint8Array } => {
  const nG = Math.ceil(S / G);
  const scales = new Float64Array(H * nG);
  const codes = new Int8Array(H * S * d);
  const tie = new Uint8Array(H * S * d);
  for (let h = 0; h < H; h++) {
    for (let g = 0; g < nG; g++) {
      const t1 = Math.min(S, (g + 1) * G);
      let mx = 0;
      for (let t = g * G; t < t1; t++) {
        for (let i = 0; i < d; i++) mx = Math.max(mx, Math.abs(x[(h * S + t) * d + i] - mean[h * d + i]));
      }
      const s = mx / 7;
      scales[h * nG + g] = s;
      for (let t = g * G; t < t1; t++) {
        for (let i = 0; i < d; i++) {
          const e = (h * S + t) * d + i;
          if (s === 0) continue;
          const a = (x[e] - mean[h * d + i]) / s;
          codes[e] = Math.max(-7, Math.min(7, rne(a)));
          tie[e] = Math.abs(Math.abs(a - Math.floor(a)) - 0.5) < TIE_WINDOW ? 1 : 0;
        }
      }
    }
  }
  return { scales, codes, tie };
};

/**
 * `qmk[h, j] = mean(Q_h) · (k_j − mean(K_kh))` in float64, and its natural magnitude
 * `Σ |mean(Q)| (|k| + |mean(K)|)` per element (for a relative error that does not blow up near zero).
 */
export const qmk64 = (
  qMean: Float64Array,
  k: ArrayLike<number>,
  kMean: Float64Array,
  H: number,
  Hk: number,
  S: number,
  d: number,
): { qmk: Float64Array; mag: Float64Array } => {
  const qmk = new Float64Array(H * S), mag = new Float64Array(H * S);
  for (let h = 0; h < H; h++) {
    const kh = Math.floor(h * Hk / H);
    for (let j = 0; j < S; j++) {
      let a = 0, m = 0;
      for (let x = 0; x < d; x++) {
        const kv = k[(kh * S + j) * d + x];
        a += qMean[h * d + x] * (kv - kMean[kh * d + x]);
        m += Math.abs(qMean[h * d + x]) * (Math.abs(kv) + Math.abs(kMean[kh * d + x]));
      }
      qmk[h * S + j] = a;
      mag[h * S + j] = m;
    }
  }
  return { qmk, mag };
};

/** Block geometry of SALE as documented in `ops/sale/params.ts` (recomputed here, not imported). */
export interface Blocks {
  readonly blockQ: number;
  readonly blockK: number;
  readonly sinkBlocks: number;
  /** Local-window key blocks: max(ceil(localWindow / blockK), the blocks a query block's diagonal spans). */
  readonly localBlocks: number;
}

/** Local-window blocks per the params doc: the window in blocks, at least the diagonal's blocks. */
export const blocksOf = (
  p: { blockQ: number; blockK: number; localWindow: number; sinkBlocks: number },
): Blocks => {
  const diagonal = Math.ceil(p.blockQ / p.blockK) + (p.blockQ % p.blockK === 0 ? 0 : 1);
  return {
    blockQ: p.blockQ,
    blockK: p.blockK,
    sinkBlocks: p.sinkBlocks,
    localBlocks: Math.max(Math.ceil(p.localWindow / p.blockK), diagonal),
  };
};

/** Causal key blocks of query block `r`: those holding a key ≤ the block's last row. */
export const nMaxOf = (r: number, S: number, b: Blocks): number =>
  Math.ceil(Math.min((r + 1) * b.blockQ, S) / b.blockK);

const forced = (kb: number, nMax: number, b: Blocks) => kb < b.sinkBlocks || kb >= nMax - b.localBlocks;

/** The score `sale.estimate` writes for forced (sink / local) blocks. */
export const FORCED64 = Math.fround(3e38);

/**
 * SALE's Relative Attention Score in float64 (SALE §3): per query row the exact log-sum-exp `L_i` of the scaled
 * smoothed scores `q_i · (k_j − kMean)` over the sink + local keys (causal); per middle block
 * `log score = max_{i, j} (sq · sk · (c_i · c_j) + qmk_j) · scale − L_i`. Returns, per (h, r, kb), `marker`
 * (+FORCED, −Infinity for non-causal, NaN for an estimated block) and `logScore` for estimated blocks.
 */
export const estimate64 = (
  b: Blocks,
  scale: number,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  qq: ArrayLike<number>,
  qScales: ArrayLike<number>,
  kq: ArrayLike<number>,
  kScales: ArrayLike<number>,
  kMean: ArrayLike<number>,
  qmk: ArrayLike<number>,
  H: number,
  Hk: number,
  S: number,
  d: number,
): { marker: Float64Array; logScore: Float64Array } => {
  const qB = Math.ceil(S / b.blockQ), kB = Math.ceil(S / b.blockK);
  const marker = new Float64Array(H * qB * kB), logScore = new Float64Array(H * qB * kB);
  for (let h = 0; h < H; h++) {
    const kh = Math.floor(h * Hk / H);
    for (let r = 0; r < qB; r++) {
      const nMax = nMaxOf(r, S, b);
      const i0 = r * b.blockQ, i1 = Math.min(S, i0 + b.blockQ);
      const L = new Float64Array(i1 - i0);
      for (let i = i0; i < i1; i++) {
        const s: number[] = [];
        for (let j = 0; j <= i; j++) {
          if (!forced(Math.floor(j / b.blockK), nMax, b)) continue;
          let dot = 0;
          for (let x = 0; x < d; x++) {
            dot += q[(h * S + i) * d + x] * (k[(kh * S + j) * d + x] - kMean[kh * d + x]);
          }
          s.push(dot * scale);
        }
        const m = Math.max(...s);
        L[i - i0] = m + Math.log(s.reduce((a, v) => a + Math.exp(v - m), 0));
      }
      for (let kb = 0; kb < kB; kb++) {
        const at = (h * qB + r) * kB + kb;
        if (kb >= nMax) marker[at] = -Infinity;
        else if (forced(kb, nMax, b)) marker[at] = FORCED64;
        else {
          marker[at] = NaN;
          let best = -Infinity;
          const al = qScales[h * qB + r] * kScales[kh * kB + kb];
          for (let j = kb * b.blockK; j < Math.min(S, (kb + 1) * b.blockK); j++) {
            for (let i = Math.max(i0, j); i < i1; i++) {
              let c = 0;
              for (let x = 0; x < d; x++) {
                c += nibble(qq, (h * S + i) * d + x) * nibble(kq, (kh * S + j) * d + x);
              }
              best = Math.max(best, (al * c + qmk[h * S + j]) * scale - L[i - i0]);
            }
          }
          logScore[at] = best;
        }
      }
    }
  }
  return { marker, logScore };
};

/**
 * `sale.select` as exact integer logic: keep causal block (h, r, kb) when it is a sink, in the local window, or
 * its score ≥ τ; BSR rows ascending, the unused tail of `indices` −1, density = nnz / causal blocks (as f32).
 */
export const select64 = (
  b: Blocks,
  threshold: number,
  scores: ArrayLike<number>,
  H: number,
  S: number,
): { indptr: Int32Array; indices: Int32Array; density: Float32Array; cap: number } => {
  const qB = Math.ceil(S / b.blockQ), kB = Math.ceil(S / b.blockK);
  let cap = 0;
  for (let r = 0; r < qB; r++) cap += nMaxOf(r, S, b);
  const indptr = new Int32Array(H * (qB + 1));
  const indices = new Int32Array(H * cap).fill(-1);
  const density = new Float32Array(H);
  for (let h = 0; h < H; h++) {
    let n = 0;
    for (let r = 0; r < qB; r++) {
      indptr[h * (qB + 1) + r] = n;
      const nMax = nMaxOf(r, S, b);
      for (let kb = 0; kb < nMax; kb++) {
        if (forced(kb, nMax, b) || scores[(h * qB + r) * kB + kb] >= threshold) indices[h * cap + n++] = kb;
      }
    }
    indptr[h * (qB + 1) + qB] = n;
    density[h] = n / cap;
  }
  return { indptr, indices, density, cap };
};

/** "Query row i of head h sees key j" for a BSR mask (`indptr [H, qB + 1]`, `indices [H, cap]`) plus causality. */
export const bsrMask = (
  indptr: ArrayLike<number>,
  indices: ArrayLike<number>,
  qB: number,
  cap: number,
  blockQ: number,
  blockK: number,
): (h: number, i: number, j: number) => boolean => {
  const rows = new Map<number, Set<number>>();
  return (h, i, j) => {
    const r = Math.floor(i / blockQ);
    let s = rows.get(h * qB + r);
    if (!s) {
      s = new Set();
      for (let e = indptr[h * (qB + 1) + r]; e < indptr[h * (qB + 1) + r + 1]; e++) {
        s.add(indices[h * cap + e]);
      }
      rows.set(h * qB + r, s);
    }
    return j <= i && s.has(Math.floor(j / blockK));
  };
};

/**
 * Attention over a KV cache in float64 (`cacheAttention64` of tests/ops/ref64.ts: query `i` at position
 * `pos + i` sees keys `j ≤ pos + i`, and with `window > 0` only `j > pos + i − window`); `o` in layout
 * `"heads"` `[heads, seq, d]` or `"rows"` `[seq, heads·d]`.
 */
export const cacheAttn64 = (
  q: ArrayLike<number>,
  kc: ArrayLike<number>,
  vc: ArrayLike<number>,
  s: { heads: number; kvHeads: number; seq: number; cap: number; d: number },
  scale: number,
  pos: number,
  window: number,
  layout: "heads" | "rows",
): { o: Float64Array; lse: Float64Array } => {
  const r = cacheAttention64(q, kc, vc, s, scale, pos, window);
  if (layout === "heads") return r;
  const { heads: H, seq, d } = s;
  const o = new Float64Array(r.o.length);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < seq; i++) {
      for (let x = 0; x < d; x++) o[i * H * d + h * d + x] = r.o[(h * seq + i) * d + x];
    }
  }
  return { o, lse: r.lse };
};

/** RMSNorm in float64 of rows `first … first + n − 1` of `x [*, E]`: `x / sqrt(mean(x²) + eps) · w`. */
export const rmsNorm64 = (
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  first: number,
  n: number,
  E: number,
  eps: number,
): Float64Array => {
  const y = new Float64Array(n * E);
  for (let r = 0; r < n; r++) {
    const row = Array.from({ length: E }, (_, c) => x[(first + r) * E + c]);
    const rms = Math.sqrt(row.reduce((a, v) => a + v * v, 0) / E + eps);
    row.forEach((v, c) => (y[r * E + c] = (v / rms) * w[c]));
  }
  return y;
};

/** `y [M, N] = x [M, K] · w [N, K]ᵀ` in float64, and the magnitude `Σ_k |x_mk| |w_nk|` per output. */
export const linear64 = (
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
): { y: Float64Array; mag: Float64Array } => {
  const y = new Float64Array(M * N), mag = new Float64Array(M * N);
  for (let n = 0; n < N; n++) {
    for (let m = 0; m < M; m++) {
      let s = 0, a = 0;
      for (let k = 0; k < K; k++) {
        const p = x[m * K + k] * w[n * K + k];
        s += p;
        a += Math.abs(p);
      }
      y[m * N + n] = s;
      mag[m * N + n] = a;
    }
  }
  return { y, mag };
};

/**
 * Hugging Face rotate-half RoPE in float64 of one head vector `x [D]` at a position whose table row is
 * `cos`, `sin [D/2]`: `x · [cos, cos] + rotate_half(x) · [sin, sin]`, `rotate_half(x) = [−x₂, x₁]`. Also the
 * magnitude `|x · cos| + |rotate_half(x) · sin|` per element.
 */
export const rotateHalf64 = (
  x: ArrayLike<number>,
  cos: ArrayLike<number>,
  sin: ArrayLike<number>,
): { y: Float64Array; mag: Float64Array } => {
  const D = x.length, half = D / 2;
  const y = new Float64Array(D), mag = new Float64Array(D);
  for (let e = 0; e < D; e++) {
    const c = cos[e % half], s = sin[e % half];
    const rot = e < half ? -x[e + half] : x[e - half];
    y[e] = x[e] * c + rot * s;
    mag[e] = Math.abs(x[e] * c) + Math.abs(rot * s);
  }
  return { y, mag };
};

/** SwiGLU in float64: `gu [seq, 2F]` → `silu(gate) · up`, `silu(a) = a · sigmoid(a)`. */
export const swiglu64 = (gu: ArrayLike<number>, seq: number, F: number): Float64Array => {
  const g = new Float64Array(seq * F);
  for (let t = 0; t < seq; t++) {
    for (let j = 0; j < F; j++) {
      const a = gu[t * 2 * F + j], u = gu[t * 2 * F + F + j];
      g[t * F + j] = a * (1 / (1 + Math.exp(-a))) * u;
    }
  }
  return g;
};

/** Index of the first maximum of the last row of `logits [rows, V]`. */
export const argmaxLast64 = (logits: ArrayLike<number>, rows: number, V: number): number => {
  const row = Array.from({ length: V }, (_, j) => logits[(rows - 1) * V + j]);
  return row.indexOf(Math.max(...row));
};
