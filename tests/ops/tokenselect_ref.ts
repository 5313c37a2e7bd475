/**
 * Independent float64 references for TokenSelect (the tests and the conformance cases): RoPE from exact angles
 * (`Math.cos`, not the tables), caches built from un-rotated Q/K the way the model forward holds them, the voted
 * scores derived from the un-rotated Q/K, and attention over the compacted list.
 * @module
 */
import { model, tokenselect } from "@longctx/ops";
import { randn } from "./ref64.ts";

/** RoPE base of the test problems. */
export const THETA = 10000;

/** Rotate-half RoPE of `x [d]` at position `p` in float64 from exact angles. */
export const rope64 = (x: ArrayLike<number>, p: number, d: number): Float64Array => {
  const half = d / 2, y = new Float64Array(d);
  for (let a = 0; a < half; a++) {
    const ang = p * THETA ** (-(2 * a) / d), c = Math.cos(ang), s = Math.sin(ang);
    y[a] = x[a] * c - x[a + half] * s;
    y[a + half] = x[a] * s + x[a + half] * c;
  }
  return y;
};

/** A TokenSelect call's shape: heads, KV heads, queries, position, cache rows, head dim. */
export interface TsCase {
  readonly H: number;
  readonly Hk: number;
  readonly seq: number;
  readonly pos: number;
  readonly cap: number;
  readonly d: number;
}

/** A problem: raw (un-rotated) Q/K, V, the cache as the forward holds it and the RoPE tables. */
export interface TsProblem {
  readonly qRaw: Float32Array;
  readonly kRaw: Float32Array;
  /** Queries after RoPE at `pos + j`, `[H, seq, d]`. */
  readonly q: Float32Array;
  /** Keys after RoPE at their row, `[Hk, cap, d]` (rows past `pos + seq` zero). */
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly cos: Float32Array;
  readonly sin: Float32Array;
}

/** Seeded raw Q/K/V of a case and the cache the forward would hold: `R(t) k_t`, queries `R(pos + j) q_j`. */
export const tsProblem = (c: TsCase, seed: number): TsProblem => {
  const { H, Hk, seq, pos, cap, d } = c;
  const qRaw = randn(H * seq * d, seed, 0.6), kRaw = randn(Hk * cap * d, seed + 1, 0.6);
  const v = randn(Hk * cap * d, seed + 2);
  const q = new Float32Array(H * seq * d), k = new Float32Array(Hk * cap * d);
  for (let h = 0; h < H; h++) {
    for (let j = 0; j < seq; j++) {
      q.set(rope64(qRaw.subarray((h * seq + j) * d, (h * seq + j + 1) * d), pos + j, d), (h * seq + j) * d);
    }
  }
  for (let hk = 0; hk < Hk; hk++) {
    for (let t = 0; t < pos + seq; t++) {
      k.set(rope64(kRaw.subarray((hk * cap + t) * d, (hk * cap + t + 1) * d), t, d), (hk * cap + t) * d);
    }
  }
  return { qRaw, kRaw, q, k, v, ...model.ropeTables(cap, d, THETA) };
};

/** The votes derived from the raw Q/K: `q̄ = mean_j R(nLocal + j) q_j`, keys un-rotated, softmax per head, summed. */
export const votesFromRaw = (
  p: tokenselect.TokenSelectParams,
  c: TsCase,
  qRaw: Float32Array,
  kRaw: Float32Array,
): Float64Array => {
  const { H, Hk, seq, pos, cap, d } = c;
  const g = tokenselect.selectGeometry(p, pos, seq);
  const vote = new Float64Array(g.candidates);
  for (let h = 0; h < H; h++) {
    const qbar = new Float64Array(d);
    for (let j = 0; j < seq; j++) {
      const r = rope64(qRaw.subarray((h * seq + j) * d, (h * seq + j + 1) * d), p.nLocal + j, d);
      for (let x = 0; x < d; x++) qbar[x] += r[x] / seq;
    }
    const hk = tokenselect.selectKvHead(p.headMap, h, H, Hk);
    const s = Array.from({ length: g.candidates }, (_, i) => {
      let dot = 0;
      for (let x = 0; x < d; x++) dot += qbar[x] * kRaw[(hk * cap + p.nInit + i) * d + x];
      return dot;
    });
    const m = Math.max(...s), z = s.reduce((a, b) => a + Math.exp(b - m), 0);
    for (let i = 0; i < g.candidates; i++) vote[i] += Math.exp(s[i] - m) / z;
  }
  return vote;
};

/** The compacted list from the raw keys: row `c` rotated straight to position `c`; queries to `rows − seq + j`. */
export const compactFromRaw = (
  p: tokenselect.TokenSelectParams,
  c: TsCase,
  x: TsProblem,
  indices: ArrayLike<number>,
): { q: Float64Array; k: Float64Array; v: Float64Array; rows: number } => {
  const { H, Hk, seq, pos, cap, d } = c;
  const g = tokenselect.selectGeometry(p, pos, seq), R = tokenselect.listRows(p);
  const q = new Float64Array(H * seq * d), k = new Float64Array(Hk * R * d), v = new Float64Array(Hk * R * d);
  const compacted = p.positions === "compacted" && !g.dense;
  for (let h = 0; h < H; h++) {
    for (let j = 0; j < seq; j++) {
      const at = compacted ? g.rows - seq + j : pos + j;
      q.set(rope64(x.qRaw.subarray((h * seq + j) * d, (h * seq + j + 1) * d), at, d), (h * seq + j) * d);
    }
  }
  for (let hk = 0; hk < Hk; hk++) {
    for (let r = 0; r < g.rows; r++) {
      const t = tokenselect.listToken(p, indices, g.n, g.dense, r);
      k.set(
        rope64(x.kRaw.subarray((hk * cap + t) * d, (hk * cap + t + 1) * d), compacted ? r : t, d),
        (hk * R + r) * d,
      );
      v.set(x.v.subarray((hk * cap + t) * d, (hk * cap + t + 1) * d), (hk * R + r) * d);
    }
  }
  return { q, k, v, rows: g.rows };
};
