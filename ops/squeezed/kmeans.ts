/**
 * k-means for Squeezed Attention's offline clustering (CPU): Lloyd iterations from a greedy k-means++ seeding, with
 * the official code's conventions (`squeezedattention/clustering.py`, cuML `KMeans(init="k-means++",
 * max_iter=300, random_state=0)`): the keys are L2-normalised for the assignment (cosine k-means), and the
 * stored centroid of a cluster is the mean of its members' raw (un-normalised) keys.
 *
 * The assignment step is a GEMM (`x · cᵀ`); with a BLAS-shaped `gemm` (the cpu backend's OpenBLAS) it runs at
 * BLAS speed, else in plain loops. Convergence as scikit-learn's Lloyd: stop when the labels no longer change
 * or the summed squared centre shift is at most `tol · mean(var(x, axis 0))` (tol 1e-4); an empty cluster
 * takes the point farthest from its centre.
 * @module
 */
import { Effect } from "effect";
import type { Gemm } from "@longctx/graph";

/** A k-means result on `n` points of `d` dimensions. */
export interface KMeansResult {
  /** Cluster of each point, `i32 [n]`. */
  readonly labels: Int32Array;
  /** Centres in the clustered space, `f32 [k, d]`. */
  readonly centers: Float32Array;
  /** Points per cluster, `[k]`. */
  readonly sizes: Int32Array;
  /** Σ over points of the squared distance to their centre (float64). */
  readonly inertia: number;
  /** Lloyd iterations run. */
  readonly iterations: number;
}

/** Options of {@link kmeans}. */
export interface KMeansOptions {
  /** Lloyd iterations at most (default 300). */
  readonly iterations?: number;
  /** Seed of the k-means++ draws (default 0). */
  readonly seed?: number;
  /** Relative tolerance on the centre shift (default 1e-4, scikit-learn's and cuML's). */
  readonly tol?: number;
  /** A BLAS-shaped GEMM for the assignment step. */
  readonly gemm?: Gemm;
}

/** A seeded uniform generator in [0, 1) (mulberry32). */
export const seededUniform = (seed: number): () => number => {
  let a = (seed >>> 0) ^ 0x9e3779b9;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
};

const ROWS = 2048;

/**
 * Squared distances of every point to every centre, row block by row block, calling `visit(i, dist2Row)`:
 * `‖x‖² − 2 x·c + ‖c‖²` from one GEMM per block (or loops without `gemm`).
 */
const distances = (
  x: Float32Array,
  n: number,
  d: number,
  c: Float32Array,
  k: number,
  gemm: Gemm | undefined,
  visit: (i: number, row: Float32Array, xx: number) => void,
) => {
  const cc = new Float64Array(k);
  for (let j = 0; j < k; j++) {
    let s = 0;
    for (let t = 0; t < d; t++) s += c[j * d + t] * c[j * d + t];
    cc[j] = s;
  }
  const dots = new Float32Array(Math.min(ROWS, n) * k);
  const row = new Float32Array(k);
  for (let i0 = 0; i0 < n; i0 += ROWS) {
    const m = Math.min(ROWS, n - i0);
    const xs = x.subarray(i0 * d, (i0 + m) * d);
    if (gemm) gemm(false, true, m, k, d, 1, xs, d, c, d, 0, dots, k);
    else {
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < k; j++) {
          let s = 0;
          for (let t = 0; t < d; t++) s += xs[i * d + t] * c[j * d + t];
          dots[i * k + j] = s;
        }
      }
    }
    for (let i = 0; i < m; i++) {
      let xx = 0;
      for (let t = 0; t < d; t++) xx += xs[i * d + t] * xs[i * d + t];
      for (let j = 0; j < k; j++) row[j] = Math.max(0, xx - 2 * dots[i * k + j] + cc[j]);
      visit(i0 + i, row, xx);
    }
  }
};

/**
 * Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's variant): each next centre is the best
 * of `2 + ⌊ln k⌋` candidates drawn with probability ∝ D(x)² — the one that lowers the potential Σ D² most.
 */
const seedPlusPlus = (x: Float32Array, n: number, d: number, k: number, rand: () => number): Float32Array => {
  const c = new Float32Array(k * d);
  const trials = 2 + Math.floor(Math.log(k));
  const d2 = new Float64Array(n);
  const dist2To = (p: number, out: Float64Array) => {
    let total = 0;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let t = 0; t < d; t++) {
        const e = x[i * d + t] - x[p * d + t];
        s += e * e;
      }
      out[i] = s;
      total += s;
    }
    return total;
  };
  const first = Math.min(n - 1, Math.floor(rand() * n));
  c.set(x.subarray(first * d, first * d + d), 0);
  let pot = dist2To(first, d2);
  const cand = new Float64Array(n), best = new Float64Array(n);
  for (let j = 1; j < k; j++) {
    let bestPot = Infinity, bestPick = -1;
    for (let r = 0; r < trials; r++) {
      let pick = Math.min(n - 1, Math.floor(rand() * n));
      if (pot > 0) {
        let u = rand() * pot;
        pick = n - 1;
        for (let i = 0; i < n; i++) {
          u -= d2[i];
          if (u < 0) {
            pick = i;
            break;
          }
        }
      }
      dist2To(pick, cand);
      let p2 = 0;
      for (let i = 0; i < n; i++) p2 += Math.min(d2[i], cand[i]);
      if (p2 < bestPot) {
        bestPot = p2;
        bestPick = pick;
        best.set(cand);
      }
    }
    c.set(x.subarray(bestPick * d, bestPick * d + d), j * d);
    for (let i = 0; i < n; i++) d2[i] = Math.min(d2[i], best[i]);
    pot = bestPot;
  }
  return c;
};

/**
 * k-means of `x f32 [n, d]` into `k` clusters (see the module doc). Throws a `RangeError` when `k` is not in
 * `[1, n]` or `x` does not hold `n · d` values.
 */
export const kmeans = (
  x: Float32Array,
  n: number,
  d: number,
  k: number,
  o: KMeansOptions = {},
): KMeansResult => {
  if (!Number.isInteger(k) || k < 1 || k > n) {
    throw new RangeError(`k-means of ${n} points into ${k} clusters`);
  }
  if (x.length !== n * d) throw new RangeError(`k-means input of ${x.length} values for ${n} × ${d}`);
  const iters = o.iterations ?? 300, rand = seededUniform(o.seed ?? 0);
  // scikit-learn's tolerance: tol · mean over dimensions of the data's variance
  let varSum = 0;
  for (let t = 0; t < d; t++) {
    let s = 0, s2 = 0;
    for (let i = 0; i < n; i++) {
      const v = x[i * d + t];
      s += v;
      s2 += v * v;
    }
    varSum += s2 / n - (s / n) ** 2;
  }
  const tolAbs = (o.tol ?? 1e-4) * (varSum / d);
  let c = seedPlusPlus(x, n, d, k, rand);
  const labels = new Int32Array(n).fill(-1), best = new Float64Array(n);
  const sizes = new Int32Array(k);
  let it = 0;
  for (; it < iters; it++) {
    let changed = 0;
    distances(x, n, d, c, k, o.gemm, (i, row) => {
      let bj = 0, bv = row[0];
      for (let j = 1; j < k; j++) if (row[j] < bv) bv = row[j], bj = j;
      if (labels[i] !== bj) changed++;
      labels[i] = bj;
      best[i] = bv;
    });
    if (changed === 0) break;
    const next = new Float64Array(k * d);
    sizes.fill(0);
    for (let i = 0; i < n; i++) {
      const j = labels[i];
      sizes[j]++;
      for (let t = 0; t < d; t++) next[j * d + t] += x[i * d + t];
    }
    const moved = new Float32Array(k * d);
    const taken = new Set<number>();
    for (let j = 0; j < k; j++) {
      if (sizes[j] === 0) {
        // an empty cluster takes the point farthest from its centre
        let far = -1;
        for (let i = 0; i < n; i++) if (!taken.has(i) && (far < 0 || best[i] > best[far])) far = i;
        taken.add(far);
        best[far] = 0;
        moved.set(x.subarray(far * d, far * d + d), j * d);
        continue;
      }
      for (let t = 0; t < d; t++) moved[j * d + t] = next[j * d + t] / sizes[j];
    }
    let shift = 0;
    for (let t = 0; t < k * d; t++) shift += (moved[t] - c[t]) ** 2;
    c = moved;
    if (shift <= tolAbs) {
      it++;
      break;
    }
  }
  // final assignment, sizes and inertia for the returned centres
  let inertia = 0;
  distances(x, n, d, c, k, o.gemm, (i, row) => {
    let bj = 0, bv = row[0];
    for (let j = 1; j < k; j++) if (row[j] < bv) bv = row[j], bj = j;
    labels[i] = bj;
    inertia += bv;
  });
  sizes.fill(0);
  for (let i = 0; i < n; i++) sizes[labels[i]]++;
  return { labels, centers: c, sizes, inertia, iterations: it };
};

/** The clusters of one (layer, KV head)'s keys, as Squeezed Attention stores them. */
export interface KeyClusters {
  /** Cluster of each clustered key, `i32 [n]`. */
  readonly labels: Int32Array;
  /** Mean of each cluster's raw (un-normalised) keys, `f32 [k, d]` (0 for an empty cluster). */
  readonly centroids: Float32Array;
  /** Keys per cluster, `[k]`. */
  readonly sizes: Int32Array;
  /** k-means inertia on the normalised keys. */
  readonly inertia: number;
  /** Lloyd iterations run. */
  readonly iterations: number;
}

/**
 * Cluster `keys f32 [n, d]` (post-RoPE) into `k` clusters: cosine k-means on the L2-normalised keys, centroids
 * the raw members' means (official `clustering.py`). Throws a `RangeError` as {@link kmeans}.
 */
export const clusterKeys = (
  keys: Float32Array,
  n: number,
  d: number,
  k: number,
  o: KMeansOptions = {},
): KeyClusters => {
  const unit = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let t = 0; t < d; t++) s += keys[i * d + t] * keys[i * d + t];
    const r = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let t = 0; t < d; t++) unit[i * d + t] = keys[i * d + t] * r;
  }
  const km = kmeans(unit, n, d, k, o);
  const sum = new Float64Array(k * d);
  for (let i = 0; i < n; i++) {
    const j = km.labels[i];
    for (let t = 0; t < d; t++) sum[j * d + t] += keys[i * d + t];
  }
  const centroids = new Float32Array(k * d);
  for (let j = 0; j < k; j++) {
    if (km.sizes[j] === 0) continue;
    for (let t = 0; t < d; t++) centroids[j * d + t] = sum[j * d + t] / km.sizes[j];
  }
  return { labels: km.labels, centroids, sizes: km.sizes, inertia: km.inertia, iterations: km.iterations };
};

/** The geometry of one {@link KeyClustering} call: every KV head's keys of one layer (or its fine centroids). */
export interface KeyClusteringShape {
  /** KV heads (clustered independently, in one call). */
  readonly kvHeads: number;
  /** Rows per head in the keys array (`keys` is `f32 [kvHeads, rows, headDim]`). */
  readonly rows: number;
  /** The first `points ≤ rows` rows of each head are clustered. */
  readonly points: number;
  /** Elements per key. */
  readonly headDim: number;
  /** Clusters per head, in `[1, points]`. */
  readonly clusters: number;
}

/** The k-means settings of one {@link KeyClustering} call. */
export interface KeyClusteringOptions {
  /** Lloyd iterations at most. */
  readonly iterations: number;
  /** Seed of the k-means++ draws. */
  readonly seed: number;
}

/**
 * A way to cluster every KV head's keys of a layer as {@link clusterKeys} does (cosine k-means, raw-mean
 * centroids): the CPU k-means ({@link cpuKeyClustering}) or the GPU one (`gpuKeyClustering` in
 * `kmeans_gpu_driver.ts`). Returns one {@link KeyClusters} per KV head.
 */
export type KeyClustering<E = never> = (
  keys: Float32Array,
  shape: KeyClusteringShape,
  o: KeyClusteringOptions,
) => Effect.Effect<readonly KeyClusters[], E>;

/**
 * {@link clusterKeys} per KV head on the host (with `gemm` for the assignment when given): the reference and
 * the cpu backend's clustering. Throws a `RangeError` as {@link kmeans} (a defect of the returned Effect).
 */
export const cpuKeyClustering = (gemm?: Gemm): KeyClustering => (keys, s, o) =>
  Effect.sync(() =>
    Array.from({ length: s.kvHeads }, (_, hk) =>
      clusterKeys(
        keys.subarray(hk * s.rows * s.headDim, (hk * s.rows + s.points) * s.headDim),
        s.points,
        s.headDim,
        s.clusters,
        { iterations: o.iterations, seed: o.seed, ...(gemm ? { gemm } : {}) },
      ))
  );
