/**
 * Independent float64 references for the attention tests (naive: full score rows, max-subtracted softmax).
 * @module
 */
import { mulberry32 } from "@longctx/graph";

/** Deterministic PRNG (mulberry32) returning floats in [0, 1). */
export const rng = mulberry32;

/** Gaussian-ish random f32 array (never all zeros). */
export const randn = (n: number, seed: number, scale = 1): Float32Array => {
  const r = rng(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = scale * (r() + r() + r() + r() - 2) * 1.7;
  return x;
};

/** Naive causal attention in float64: o [heads, seq, d], lse [heads, seq]; `keep` masks (h, i, j). */
export const naiveAttention64 = (
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  heads: number,
  kvHeads: number,
  seq: number,
  d: number,
  scale: number,
  keep?: (h: number, i: number, j: number) => boolean,
): { o: Float64Array; lse: Float64Array } => {
  const o = new Float64Array(heads * seq * d);
  const lse = new Float64Array(heads * seq);
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h * kvHeads / heads);
    for (let i = 0; i < seq; i++) {
      const s: number[] = [];
      for (let j = 0; j <= i; j++) {
        if (keep && !keep(h, i, j)) {
          s.push(-Infinity);
          continue;
        }
        let dot = 0;
        for (let x = 0; x < d; x++) dot += q[(h * seq + i) * d + x] * k[(kh * seq + j) * d + x];
        s.push(dot * scale);
      }
      const m = Math.max(...s);
      if (m === -Infinity) {
        lse[h * seq + i] = -Infinity;
        continue;
      }
      const p = s.map((x) => Math.exp(x - m));
      const l = p.reduce((a, b) => a + b, 0);
      for (let x = 0; x < d; x++) {
        let acc = 0;
        for (let j = 0; j <= i; j++) if (p[j] > 0) acc += p[j] * v[(kh * seq + j) * d + x];
        o[(h * seq + i) * d + x] = acc / l;
      }
      lse[h * seq + i] = m + Math.log(l);
    }
  }
  return { o, lse };
};

/** Relative error ‖a − b‖₂ / ‖b‖₂. */
export const relErr = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
};

/** Largest |a − b| where both are finite; Infinity when finiteness differs. */
export const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    if (!Number.isFinite(a[i]) || !Number.isFinite(b[i])) {
      if (a[i] !== b[i] && !(a[i] < -1e37 && b[i] === -Infinity)) return Infinity;
      continue;
    }
    m = Math.max(m, Math.abs(a[i] - b[i]));
  }
  return m;
};

/**
 * Naive float64 attention of `seq` queries at positions `pos … pos + seq − 1` over a cache `[kvHeads, cap, d]`
 * (bottom-right causal: query `i` sees keys `j ≤ pos + i`, and with `window > 0` only `j > pos + i − window`).
 * Returns o `[heads, seq, d]` and lse `[heads, seq]`.
 */
export const cacheAttention64 = (
  q: ArrayLike<number>,
  kc: ArrayLike<number>,
  vc: ArrayLike<number>,
  s: { heads: number; kvHeads: number; seq: number; cap: number; d: number },
  scale: number,
  pos: number,
  window = 0,
): { o: Float64Array; lse: Float64Array } => {
  const { heads, kvHeads, seq, cap, d } = s;
  const o = new Float64Array(heads * seq * d), lse = new Float64Array(heads * seq);
  for (let h = 0; h < heads; h++) {
    const kh = Math.floor(h * kvHeads / heads);
    for (let i = 0; i < seq; i++) {
      const p = pos + i;
      const js: number[] = [];
      for (let j = 0; j <= p; j++) if (window === 0 || j > p - window) js.push(j);
      const sc = js.map((j) => {
        let dot = 0;
        for (let x = 0; x < d; x++) dot += q[(h * seq + i) * d + x] * kc[(kh * cap + j) * d + x];
        return dot * scale;
      });
      const m = Math.max(...sc);
      const e = sc.map((x) => Math.exp(x - m));
      const l = e.reduce((a, b) => a + b, 0);
      for (let x = 0; x < d; x++) {
        let acc = 0;
        js.forEach((j, t) => acc += e[t] * vc[(kh * cap + j) * d + x]);
        o[(h * seq + i) * d + x] = acc / l;
      }
      lse[h * seq + i] = m + Math.log(l);
    }
  }
  return { o, lse };
};

/**
 * AttnTrace's token weights in float64 from scratch (every row's causal softmax, its own max and sum): `q [H,
 * seq, d]`, `k [Hk, seq, d]` (after RoPE), the `A` rows `seq − A − 1 … seq − 2` → `w [seq]`, the probabilities
 * averaged over heads and rows (GQA: query head `h` reads KV head `⌊h / (H / Hk)⌋`).
 */
export const tracebackWeights64 = (
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  dm: {
    readonly H: number;
    readonly Hk: number;
    readonly seq: number;
    readonly d: number;
    readonly A: number;
  },
): Float64Array => {
  const { H, Hk, seq, d, A } = dm, r0 = seq - A - 1, scale = 1 / Math.sqrt(d), w = new Float64Array(seq);
  for (let h = 0; h < H; h++) {
    const hk = Math.floor(h / (H / Hk));
    for (let i = 0; i < A; i++) {
      const r = r0 + i, s = new Float64Array(r + 1);
      let mx = -Infinity;
      for (let j = 0; j <= r; j++) {
        let dot = 0;
        for (let x = 0; x < d; x++) dot += q[(h * seq + r) * d + x] * k[(hk * seq + j) * d + x];
        s[j] = dot * scale;
        if (s[j] > mx) mx = s[j];
      }
      let sum = 0;
      for (let j = 0; j <= r; j++) sum += Math.exp(s[j] - mx);
      for (let j = 0; j <= r; j++) w[j] += Math.exp(s[j] - mx) / sum / (H * A);
    }
  }
  return w;
};

/**
 * Squeezed Attention's centroid lookup in float64 from scratch: per query, the size-weighted log-sum-exp of
 * the centroid logits `scale · q · c_j` over the non-empty clusters, each cluster's per-key probability
 * `exp(s_j − lse)`, averaged over the queries → `score [H, C]` (0 for empty clusters).
 */
export const squeezedLookup64 = (
  q: ArrayLike<number>,
  centroids: ArrayLike<number>,
  sizes: ArrayLike<number>,
  dm: { H: number; Hk: number; seq: number; C: number; d: number },
): Float64Array => {
  const { H, Hk, seq, C, d } = dm, scale = 1 / Math.sqrt(d);
  const out = new Float64Array(H * C);
  for (let h = 0; h < H; h++) {
    const hk = Math.floor(h / (H / Hk));
    for (let j = 0; j < seq; j++) {
      const s = Array.from({ length: C }, (_, c) => {
        let v = 0;
        for (let t = 0; t < d; t++) v += q[(h * seq + j) * d + t] * centroids[(hk * C + c) * d + t];
        return v * scale;
      });
      const live = s.filter((_, c) => sizes[hk * C + c] > 0);
      if (live.length === 0) continue;
      const m = Math.max(...live);
      let z = 0;
      for (let c = 0; c < C; c++) if (sizes[hk * C + c] > 0) z += sizes[hk * C + c] * Math.exp(s[c] - m);
      const lse = m + Math.log(z);
      for (let c = 0; c < C; c++) if (sizes[hk * C + c] > 0) out[h * C + c] += Math.exp(s[c] - lse) / seq;
    }
  }
  return out;
};

/**
 * Squeezed Attention's lists from scratch: per query head and block, the sorted union of the clustered keys
 * whose cluster (through `labels`) scores above `tau` (`union`: any head of the group), the observation
 * window when `1 / seq > tau`, and the tokens after the fixed context up to the block's last query; −1 padded
 * to `cap`. Returns `indices` and the budget per head.
 */
export const squeezedLists64 = (
  score: ArrayLike<number>,
  labels: ArrayLike<number>,
  tau: number,
  dm: {
    H: number;
    Hk: number;
    seq: number;
    cap: number;
    S: number;
    C: number;
    obs: number;
    pos: number;
    blockQ: number;
    union: boolean;
  },
): { indices: Int32Array; density: Float64Array } => {
  const { H, Hk, seq, cap, S, C, obs, pos, blockQ, union } = dm, g = H / Hk, qB = Math.ceil(seq / blockQ);
  const indices = new Int32Array(H * qB * cap).fill(-1), density = new Float64Array(H);
  for (let h = 0; h < H; h++) {
    const hk = Math.floor(h / g), heads = union ? Array.from({ length: g }, (_, x) => hk * g + x) : [h];
    const keys = new Set<number>();
    for (let i = 0; i < S; i++) {
      if (heads.some((x) => score[x * C + labels[hk * S + i]] > tau)) keys.add(i);
    }
    if (1 / seq > tau) { for (let i = S; i < S + obs; i++) keys.add(i); }
    density[h] = keys.size / (S + obs);
    for (let b = 0; b < qB; b++) {
      const list = [...keys];
      for (let i = S + obs; i < pos + Math.min(seq, (b + 1) * blockQ); i++) list.push(i);
      list.sort((a, b2) => a - b2);
      indices.set(list, (h * qB + b) * cap);
    }
  }
  return { indices, density };
};
