/**
 * The dense check both sharded-cache tests share: feed a sharded KV cache a prefill chunk and then decode
 * appends of random K/V, and compare every attention with float64 dense attention over all rows so far.
 * @module
 */
import { cacheAttention64, maxAbsDiff, randn } from "../ops/ref64.ts";
import type { ShardedKv, ShardShape } from "../../runtime/src/dist/mod.ts";

/** How {@link shardedVsDense} feeds the cache. */
export interface FeedOptions {
  /** Rows in all. */
  readonly tokens: number;
  /** Rows of the prefill chunk (its queries attend causally). */
  readonly prompt: number;
  /** Rows per decode append (the last one's query attends). */
  readonly step: number;
  /** Seed of K (V: seed + 1). */
  readonly seed: number;
  /** The prefill query's seed for layer l. */
  readonly prefillSeed: (l: number) => number;
  /** The decode query's seed for layer l after row t. */
  readonly decodeSeed: (l: number, t: number) => number;
  /** Weight of the LSE difference in the worst error (0: o only). */
  readonly lseWeight: number;
}

/**
 * The worst difference (`max |Δo|`, plus `lseWeight · max |Δlse|` at decode steps) between `kv`'s attention and
 * dense attention over every layer and step, and `rows(x, r0, n)`, rows `r0 … r0 + n − 1` of K or V.
 */
export const shardedVsDense = async (
  kv: ShardedKv,
  shape: ShardShape,
  o: FeedOptions,
): Promise<
  {
    worst: number;
    rows: (x: Float32Array, r0: number, n: number) => Float32Array;
    k: Float32Array;
    v: Float32Array;
  }
> => {
  const { heads: H, kvHeads: KH, headDim: D } = shape, T = o.tokens, P = o.prompt;
  const k = randn(KH * T * D, o.seed), v = randn(KH * T * D, o.seed + 1);
  const rows = (x: Float32Array, r0: number, n: number) => {
    const out = new Float32Array(KH * n * D);
    for (let g = 0; g < KH; g++) out.set(x.subarray((g * T + r0) * D, (g * T + r0 + n) * D), g * n * D);
    return out;
  };
  const dense = (q: Float32Array, seq: number, upto: number, pos: number) =>
    cacheAttention64(
      q,
      rows(k, 0, upto),
      rows(v, 0, upto),
      { heads: H, kvHeads: KH, seq, cap: upto, d: D },
      1 / Math.sqrt(D),
      pos,
    );
  let worst = 0;
  for (let l = 0; l < shape.layers; l++) {
    await kv.append(l, rows(k, 0, P), rows(v, 0, P), P);
    const q0 = randn(H * P * D, o.prefillSeed(l));
    const p0 = await kv.attend(l, q0, P, 0);
    worst = Math.max(worst, maxAbsDiff(p0.o, dense(q0, P, P, 0).o));
    for (let t = P; t < T; t += o.step) {
      const n = Math.min(o.step, T - t), last = t + n - 1;
      await kv.append(l, rows(k, t, n), rows(v, t, n), n);
      const q = randn(H * D, o.decodeSeed(l, t));
      const p = await kv.attend(l, q, 1, last);
      const w = dense(q, 1, last + 1, last);
      worst = Math.max(worst, maxAbsDiff(p.o, w.o), o.lseWeight * maxAbsDiff(p.lse, w.lse));
    }
  }
  return { worst, rows, k, v };
};
