/**
 * GPU k-means for Squeezed Attention's offline key clustering (issue 16): every KV head of a layer in one launch
 * per stage, so that the prefix index of a 32K–128K context can be built on a GPU. The CPU k-means
 * (`kmeans.ts`) stays the reference and the cpu backend's path; these operators follow its semantics:
 * Euclidean Lloyd iterations on the L2-normalised keys (assignment `argmin ‖c‖² − 2x·c`, ties to the lower
 * cluster), scikit-learn's stop rule (labels unchanged, or the summed squared centre shift at most
 * `tol · mean variance`, tol 1e-4), at most `iterations`, an empty cluster re-seeded with the point farthest from
 * its centre (in cluster order, a point at most once), and the stored centroid the mean of the members' **raw**
 * keys.
 *
 * Operators (shapes `[kvHeads, points, headDim]` for keys, `[kvHeads, clusters, headDim]` for centres; each with
 * a float64 CPU reference and a WGSL lowering; `kmeans_gpu_driver.ts` runs them):
 * - `squeezed.normalize`: the keys L2-normalised per row, and per head the absolute tolerance.
 * - `squeezed.seed`: `seedSteps` greedy k-means++ steps (Arthur & Vassilvitskii; scikit-learn's and raft's
 *   greedy variant: per step `2 + ⌊ln k⌋` candidates drawn ∝ D², the one that lowers Σ D² most kept). This is
 *   what cuML runs for the official `KMeans(init="k-means++")`: its Python wrapper turns `"k-means++"` into
 *   `"k-means||"` with `oversampling_factor = 0`, and raft/cuVS `kmeans_fit` takes `oversampling_factor == 0`
 *   to mean the sequential `kmeansPlusPlus` (not the scalable k-means||), one distance pass per centre on the
 *   GPU. Here a step is five launches (D² update and block sums, block prefix, the draws by binary search, the
 *   candidates' potentials, the pick) with the step index a runtime scalar (`step`); the draws come from a
 *   counter-based hash of `(seed, step, trial)` that the CPU reference computes identically.
 * - `squeezed.lloyd`: one Lloyd iteration in place on (centres, labels, state), heads that have stopped left
 *   alone: the assignment is a tiled GEMM `x · cᵀ` with the argmin fused into its epilogue — the `points ×
 *   clusters` distances are never stored; each workgroup keeps a `BM × BN` tile, steps over all centres, and
 *   its invocations keep fully unrolled `TM × TN` register tiles (`ops/kernels/matmul.ts`'s lesson) and
 *   running per-row minima, merged across invocations at the end — then member counts and sums, new means
 *   and their shift, the empty clusters' re-seeding, and the stop rule.
 * - `squeezed.assign`: the final assignment with sizes, the members' means of another tensor (the raw keys) and
 *   the inertia.
 *
 * Determinism: every result is a function of the inputs (and the seed) only. Member sums are accumulated with
 * `atomic<u32>` pairs as 64-bit fixed-point integers (2⁻²⁴ units, two's complement, the carry recovered from
 * the returned old value), so their value does not depend on the order the atomics land in; counts are integer
 * atomics; every float reduction (block sums, costs, shifts, inertia) has a fixed order. Fixed-point range: a
 * cluster's member sum per dimension below 2³⁹ in magnitude; precision 2⁻²⁵ per member.
 * @module
 */
import { Effect, Schema } from "effect";
import { allocHost, finiteParam, intParam, tensorType } from "@longctx/graph";
import type {
  Cost,
  CpuContext,
  DescsOf,
  GpuLowering,
  HostOf,
  Kernel,
  LoweredLaunch,
  Operator,
  ShapeError,
  TensorDesc,
  TensorType,
} from "@longctx/graph";
import { need } from "../dense/common.ts";

// ---- parameters ---------------------------------------------------------------------------------------------

/** The schema of {@link KMeansGpuParams}: every field optional on input, the default filled in on decode. */
export type KMeansGpuParamsSchema = Schema.Struct<{
  readonly tol: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly seed: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly seedSteps: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly tile: Schema.withDecodingDefaultKey<Schema.Literals<readonly [0, 64, 128]>>;
}>;

/** Parameters of the GPU k-means operators (each reads the ones it declares). */
export const KMeansGpuParams: KMeansGpuParamsSchema = Schema.Struct({
  /** Relative tolerance of the stop rule (`squeezed.normalize`: absolute = tol · mean variance; 1e-4). */
  tol: finiteParam(0, 1, 1e-4),
  /** Seed of the k-means++ draws (`squeezed.seed`; official `random_state` 0). */
  seed: intParam(0, 2 ** 31 - 1, 0),
  /** Greedy k-means++ steps per run of `squeezed.seed` (five launches per step, one command buffer per run). */
  seedSteps: intParam(1, 256, 32),
  /**
   * The assignment's workgroup tile (`squeezed.lloyd`, `squeezed.assign`): 64 (64 × 64, 4 × 4 registers per
   * invocation), 128 (128 × 128, 8 × 8) or 0, 128 for at least 2048 points and 128 clusters, else 64.
   */
  tile: Schema.Literals([0, 64, 128]).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0 as const))),
});
/** Decoded GPU k-means parameters. */
export type KMeansGpuParams = typeof KMeansGpuParams.Type;

// ---- ports ----------------------------------------------------------------------------------------------------

/** Points (keys) per KV head, `f32 [kvHeads, points, headDim]`. */
export type PointsType = TensorType<"f32", readonly ["kvHeads", "points", "headDim"]>;
/** Centres per KV head, `f32 [kvHeads, clusters, headDim]`. */
export type CentersType = TensorType<"f32", readonly ["kvHeads", "clusters", "headDim"]>;
/** One value per point, `[kvHeads, points]`. */
export type PerPointType<D extends "f32" | "i32"> = TensorType<D, readonly ["kvHeads", "points"]>;
/** One value per cluster, `f32 [kvHeads, clusters]`. */
export type PerClusterType = TensorType<"f32", readonly ["kvHeads", "clusters"]>;
/** One value per KV head, `f32 [kvHeads]`. */
export type PerHeadType = TensorType<"f32", readonly ["kvHeads"]>;
/** A Lloyd run's state per KV head, `u32 [kvHeads, 4]` (see {@link LloydInputs.state}). */
export type StateType = TensorType<"u32", readonly ["kvHeads", "stats"]>;

const pointsT: PointsType = tensorType("f32", ["kvHeads", "points", "headDim"] as const);
const centersT: CentersType = tensorType("f32", ["kvHeads", "clusters", "headDim"] as const);
const perPointF: PerPointType<"f32"> = tensorType("f32", ["kvHeads", "points"] as const);
const perPointI: PerPointType<"i32"> = tensorType("i32", ["kvHeads", "points"] as const);
const perClusterT: PerClusterType = tensorType("f32", ["kvHeads", "clusters"] as const);
const perHeadT: PerHeadType = tensorType("f32", ["kvHeads"] as const);
const stateT: StateType = tensorType("u32", ["kvHeads", "stats"] as const);

/** The sizes of a k-means call. */
export interface KMeansDims {
  /** KV heads (clustered independently). */
  readonly Hk: number;
  /** Points per head. */
  readonly n: number;
  /** Clusters per head. */
  readonly K: number;
  /** Elements per point (a multiple of 4). */
  readonly d: number;
}

// ---- shared pieces ------------------------------------------------------------------------------------------

const WG = 256;
const comp = ["x", "y", "z", "w"];

/** Workgroups of 256 for `threads` invocations, split over x and y (≤ 65535 each), `z` along z. */
const groups = (threads: number, z = 1): [number, number, number] => {
  const g = Math.max(1, Math.ceil(threads / WG));
  const x = Math.min(g, 65535);
  return [x, Math.ceil(g / x), z];
};

const ENTRY = [
  `@compute @workgroup_size(${WG})`,
  "fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,",
  "        @builtin(local_invocation_index) t: u32) {",
];
const LINEAR = `  let id = (wid.x + wid.y * nwg.x) * ${WG}u + t;`;

type Access = "read" | "read_write" | "uniform";
/** One binding: WGSL name, access, type. */
type Bind = readonly [string, Access, string];

/** A kernel whose group-0 bindings are `binds` in order, followed by `body`. */
const kernelOf = (key: string, binds: readonly Bind[], body: readonly string[]): Kernel => ({
  key,
  entryPoint: "main",
  wgsl: [
    ...binds.map(([name, a, ty], i) =>
      a === "uniform"
        ? `@group(0) @binding(${i}) var<uniform> ${name}: ${ty};`
        : `@group(0) @binding(${i}) var<storage, ${a}> ${name}: ${ty};`
    ),
    ...body,
  ].join("\n") + "\n",
  bindings: binds.map(([, a]) => a),
});

/** A tree sum of workgroup array `arr` (256 entries) into `arr[0]`, readable by all after it. */
const treeSum = (arr: string): string[] => [
  `  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {`,
  `    workgroupBarrier();`,
  `    if (t < s) { ${arr}[t] += ${arr}[t + s]; }`,
  `  }`,
  `  workgroupBarrier();`,
];

/** Fixed-point scale of the member sums: 2²⁴ units. */
const FX = 16777216;
const FX_INV = "5.9604644775390625e-8";
const TWO32 = "4294967296.0";
const TWO_M32 = "2.3283064365386962890625e-10";

/** WGSL `fxAdd(at, v)`: add `v` to the 64-bit fixed-point word pair `sum[at], sum[at + 1]` (atomics). */
const fxAddWgsl = (sum: string): string[] => [
  `fn fxAdd(at: u32, v: f32) {`,
  `  let a = abs(v) * ${FX}.0;`,
  `  let hf = floor(a * ${TWO_M32});`,
  `  var lo = u32(round(a - hf * ${TWO32}));`,
  `  var hi = u32(hf);`,
  `  if (v < 0.0) { lo = ~lo + 1u; hi = ~hi + select(0u, 1u, lo == 0u); }`,
  `  if (lo == 0u && hi == 0u) { return; }`,
  `  let old = atomicAdd(&${sum}[at], lo);`,
  `  atomicAdd(&${sum}[at + 1u], hi + select(0u, 1u, old + lo < old));`,
  `}`,
];

/** WGSL `fxGet(at)`: the fixed-point word pair `sum[at], sum[at + 1]` as a float. */
const fxGetWgsl = (sum: string): string[] => [
  `fn fxGet(at: u32) -> f32 {`,
  `  var lo = ${sum}[at]; var hi = ${sum}[at + 1u];`,
  `  let neg = hi >= 0x80000000u;`,
  `  if (neg) { lo = ~lo + 1u; hi = ~hi + select(0u, 1u, lo == 0u); }`,
  `  let m = (f32(hi) * ${TWO32} + f32(lo)) * ${FX_INV};`,
  `  return select(m, -m, neg);`,
  `}`,
];

/** PCG's output permutation of a u32 (the hash of the k-means++ draws). */
const pcg = (v: number): number => {
  const s = (Math.imul(v, 747796405) + 2891336453) >>> 0;
  const w = Math.imul(((s >>> ((s >>> 28) + 4)) ^ s) >>> 0, 277803737) >>> 0;
  return ((w >>> 22) ^ w) >>> 0;
};

/**
 * The u32 of draw `trial` of greedy k-means++ step `step` under `seed` (the GPU computes the same): step 0's
 * trial 0 picks the first centre (`hash % points`); a later step's trial `r` is the candidate at
 * `(hash >> 8) / 2²⁴ · Σ D²` of the cumulative potential (or `hash % points` when the potential is 0).
 */
export const seedHash = (seed: number, step: number, trial: number): number =>
  pcg((pcg((pcg(seed >>> 0) ^ step) >>> 0) ^ ((Math.imul(trial, 0x9e3779b9 | 0) + 1) >>> 0)) >>> 0);

const HASH_WGSL = [
  `fn pcg(v: u32) -> u32 {`,
  `  let s = v * 747796405u + 2891336453u;`,
  `  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;`,
  `  return (w >> 22u) ^ w;`,
  `}`,
  `fn hashOf(step: u32, r: u32) -> u32 { return pcg(pcg(pcg(U.seed) ^ step) ^ (r * 2654435769u + 1u)); }`,
];
const UNI = `struct Uni { step: u32, seed: u32, a: u32, b: u32 }`;

/** Candidates per greedy k-means++ step: `2 + ⌊ln k⌋` (scikit-learn's and `kmeans.ts`'s). */
export const seedTrials = (k: number): number => 2 + Math.floor(Math.log(k));

/** Workgroup memory the assignment and seeding kernels may use (WebGPU's guaranteed minimum). */
const WG_MEMORY = 16384;

const dimsOf = (x: TensorDesc, c: TensorDesc): KMeansDims => {
  const [Hk, n, d] = x.shape as [number, number, number];
  return { Hk, n, K: c.shape[1], d };
};

/** The shared shape checks of the k-means operators: points, centres, and per-point / per-head tensors. */
const checkPoints = (
  x: TensorDesc,
  c: TensorDesc | undefined,
  extra: readonly (readonly [string, TensorDesc | undefined, string])[],
): Effect.Effect<void, ShapeError> =>
  Effect.gen(function* () {
    const [Hk, n, d] = x.shape as [number, number, number];
    yield* need(
      x.shape.length === 3 && Hk >= 1 && n >= 1 && d >= 4 && d % 4 === 0,
      "x",
      `points [${x.shape}]`,
      "points are [kvHeads ≥ 1, points ≥ 1, headDim] with headDim a multiple of 4",
    );
    if (c) {
      const [ch, K, cd] = c.shape as [number, number, number];
      yield* need(
        c.shape.length === 3 && ch === Hk && cd === d,
        "centers",
        `centers [${c.shape}] for points [${x.shape}]`,
        `the centres are [kvHeads, clusters, headDim] = [${Hk}, k, ${d}]`,
      );
      yield* need(
        Number.isInteger(K) && K >= 1 && K <= n,
        "centers",
        `${K} clusters of ${n} points`,
        "k-means needs 1 ≤ clusters ≤ points per head",
      );
    }
    for (const [port, t, want] of extra) {
      if (t) yield* need(t.shape.join() === want, port, `${port} [${t.shape}]`, `${port} is [${want}]`);
    }
  });

// ---- float64 references -------------------------------------------------------------------------------------

/**
 * The assignment in float64: per head and point the nearest centre (`argmin ‖c‖² − 2x·c`, ties to the lower
 * index) into `labels`, and `max(0, ‖x‖² − 2x·c + ‖c‖²)` into `best`.
 */
const assign64 = (
  x: Float32Array,
  c: Float32Array,
  dm: KMeansDims,
  labels: Int32Array,
  best: Float64Array,
  heads: (h: number) => boolean = () => true,
) => {
  const { Hk, n, K, d } = dm;
  const cc = new Float64Array(K);
  for (let h = 0; h < Hk; h++) {
    if (!heads(h)) continue;
    for (let j = 0; j < K; j++) {
      let s = 0;
      for (let t = 0; t < d; t++) s += c[(h * K + j) * d + t] ** 2;
      cc[j] = s;
    }
    for (let i = 0; i < n; i++) {
      const xo = (h * n + i) * d;
      let xx = 0;
      for (let t = 0; t < d; t++) xx += x[xo + t] * x[xo + t];
      let bj = 0, bv = Infinity;
      for (let j = 0; j < K; j++) {
        const co = (h * K + j) * d;
        let dot = 0;
        for (let t = 0; t < d; t++) dot += x[xo + t] * c[co + t];
        const v = cc[j] - 2 * dot;
        if (v < bv) bv = v, bj = j;
      }
      labels[h * n + i] = bj;
      best[h * n + i] = Math.max(0, xx + bv);
    }
  }
};

/** Member counts and float64 sums of `v [Hk, n, d]` by `labels`, for the heads `heads` selects. */
const sums64 = (v: Float32Array, labels: Int32Array, dm: KMeansDims, heads: (h: number) => boolean) => {
  const { Hk, n, K, d } = dm;
  const cnt = new Float64Array(Hk * K), sum = new Float64Array(Hk * K * d);
  for (let h = 0; h < Hk; h++) {
    if (!heads(h)) continue;
    for (let i = 0; i < n; i++) {
      const j = h * K + labels[h * n + i];
      cnt[j]++;
      for (let t = 0; t < d; t++) sum[j * d + t] += v[(h * n + i) * d + t];
    }
  }
  return { cnt, sum };
};

/**
 * `squeezed.normalize` on host arrays (float64): each row of `keys [Hk, n, d]` times `1 / ‖row‖` (0 for a zero
 * row), and per head `tol · mean over dimensions of the normalised keys' variance` (as `kmeans.ts`).
 */
export const normalizeReference = (
  keys: Float32Array,
  dm: Pick<KMeansDims, "Hk" | "n" | "d">,
  tol: number,
): { unit: Float32Array; tolerance: Float32Array } => {
  const { Hk, n, d } = dm, unit = new Float32Array(Hk * n * d), tolerance = new Float32Array(Hk);
  for (let r = 0; r < Hk * n; r++) {
    let s = 0;
    for (let t = 0; t < d; t++) s += keys[r * d + t] * keys[r * d + t];
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let t = 0; t < d; t++) unit[r * d + t] = keys[r * d + t] * inv;
  }
  for (let h = 0; h < Hk; h++) {
    let varSum = 0;
    for (let t = 0; t < d; t++) {
      let m = 0;
      for (let i = 0; i < n; i++) m += unit[(h * n + i) * d + t];
      m /= n;
      let v = 0;
      for (let i = 0; i < n; i++) v += (unit[(h * n + i) * d + t] - m) ** 2;
      varSum += v / n;
    }
    tolerance[h] = tol * (varSum / d);
  }
  return { unit, tolerance };
};

/**
 * `squeezed.seed` on host arrays (float64 distances and sums, the same draws as the GPU): greedy k-means++
 * steps `step … step + steps − 1` (those below `K`), updating `centers [Hk, K, d]` and `potential [Hk, n]` in
 * place. Step 0 takes point `seedHash(seed, 0, 0) % n` as centre 0; step `j ≥ 1` first sets each point's
 * potential to its squared distance to centre `j − 1` (`j = 1`) or the smaller of that and its potential, then
 * draws `seedTrials(K)` candidates (∝ potential; the first point whose cumulative potential exceeds
 * `u · Σ`), and keeps the one whose `Σ min(potential, D²)` is least (the first on ties) as centre `j`.
 */
export const seedReference = (
  x: Float32Array,
  centers: Float32Array,
  potential: Float32Array,
  dm: KMeansDims,
  seed: number,
  step: number,
  steps: number,
): void => {
  const { Hk, n, K, d } = dm, T = seedTrials(K);
  const dist = (h: number, i: number, p: number) => {
    let s = 0;
    for (let t = 0; t < d; t++) s += (x[(h * n + i) * d + t] - x[(h * n + p) * d + t]) ** 2;
    return s;
  };
  for (let s = step; s < Math.min(K, step + steps); s++) {
    for (let h = 0; h < Hk; h++) {
      if (s === 0) {
        const p = seedHash(seed, 0, 0) % n;
        centers.set(x.subarray((h * n + p) * d, (h * n + p + 1) * d), h * K * d);
        continue;
      }
      const co = (h * K + s - 1) * d;
      for (let i = 0; i < n; i++) {
        let dd = 0;
        for (let t = 0; t < d; t++) dd += (x[(h * n + i) * d + t] - centers[co + t]) ** 2;
        potential[h * n + i] = s === 1 ? dd : Math.min(Math.max(potential[h * n + i], 0), dd);
      }
      let tot = 0;
      for (let i = 0; i < n; i++) tot += potential[h * n + i];
      let bestCost = Infinity, bestPick = 0;
      for (let r = 0; r < T; r++) {
        const hs = seedHash(seed, s, r);
        let pick = hs % n;
        if (tot > 0) {
          const target = (hs >>> 8) / 16777216 * tot;
          let acc = 0;
          for (let i = 0; i < n; i++) {
            acc += potential[h * n + i];
            if (acc > target) {
              pick = i;
              break;
            }
          }
        }
        let cost = 0;
        for (let i = 0; i < n; i++) cost += Math.min(potential[h * n + i], dist(h, i, pick));
        if (cost < bestCost) bestCost = cost, bestPick = pick;
      }
      centers.set(x.subarray((h * n + bestPick) * d, (h * n + bestPick + 1) * d), (h * K + s) * d);
    }
  }
};

/**
 * `squeezed.lloyd` on host arrays (float64; see {@link lloyd}): one Lloyd iteration of every head whose
 * `state` is not done, in place on `centers`, `labels`, `state`; returns the iteration's member counts (0 for a
 * head done before the call).
 */
export const lloydReference = (
  x: Float32Array,
  centers: Float32Array,
  labels: Int32Array,
  state: Uint32Array,
  tolerance: Float32Array,
  dm: KMeansDims,
): Float32Array => {
  const { Hk, n, K, d } = dm;
  const live = (h: number) => state[h * 4] === 0;
  const lab = new Int32Array(Hk * n), best = new Float64Array(Hk * n), sizes = new Float32Array(Hk * K);
  assign64(x, centers, dm, lab, best, live);
  const { cnt, sum } = sums64(x, lab, dm, live);
  const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
  for (let h = 0; h < Hk; h++) {
    if (!live(h)) continue;
    let changed = 0;
    for (let i = 0; i < n; i++) if (lab[h * n + i] !== labels[h * n + i]) changed++;
    labels.set(lab.subarray(h * n, (h + 1) * n), h * n);
    for (let j = 0; j < K; j++) sizes[h * K + j] = cnt[h * K + j];
    if (changed === 0) {
      state[h * 4] = 1, state[h * 4 + 2] = 0, state[h * 4 + 3] = 0;
      continue;
    }
    let shift = 0;
    const moved = new Float32Array(d);
    for (let j = 0; j < K; j++) {
      const c = h * K + j;
      if (cnt[c] === 0) continue;
      for (let t = 0; t < d; t++) moved[t] = sum[c * d + t] / cnt[c];
      for (let t = 0; t < d; t++) shift += (moved[t] - centers[c * d + t]) ** 2;
      centers.set(moved, c * d);
    }
    // an empty cluster takes the farthest point not yet taken (ties: the lower index), in cluster order
    const taken = new Set<number>();
    for (let j = 0; j < K; j++) {
      const c = h * K + j;
      if (cnt[c] !== 0) continue;
      let far = -1;
      for (let i = 0; i < n; i++) {
        if (!taken.has(i) && (far < 0 || best[h * n + i] > best[h * n + far])) far = i;
      }
      taken.add(far);
      for (let t = 0; t < d; t++) shift += (x[(h * n + far) * d + t] - centers[c * d + t]) ** 2;
      centers.set(x.subarray((h * n + far) * d, (h * n + far + 1) * d), c * d);
    }
    f32[0] = shift;
    state[h * 4 + 1]++;
    state[h * 4 + 2] = changed;
    state[h * 4 + 3] = u32[0];
    if (f32[0] <= tolerance[h]) state[h * 4] = 1;
  }
  return sizes;
};

/**
 * `squeezed.assign` on host arrays (float64; see {@link assign}): labels, sizes, the members' means of `values`
 * (0 for an empty cluster) and per head the inertia `Σ max(0, ‖x − c‖²)`.
 */
export const assignReference = (
  x: Float32Array,
  centers: Float32Array,
  values: Float32Array,
  dm: KMeansDims,
): { labels: Int32Array; sizes: Float32Array; means: Float32Array; inertia: Float32Array } => {
  const { Hk, n, K, d } = dm;
  const labels = new Int32Array(Hk * n), best = new Float64Array(Hk * n);
  assign64(x, centers, dm, labels, best);
  const { cnt, sum } = sums64(values, labels, dm, () => true);
  const means = new Float32Array(Hk * K * d), sizes = Float32Array.from(cnt), inertia = new Float32Array(Hk);
  for (let c = 0; c < Hk * K; c++) {
    if (cnt[c] > 0) { for (let t = 0; t < d; t++) means[c * d + t] = sum[c * d + t] / cnt[c]; }
  }
  for (let h = 0; h < Hk; h++) {
    let e = 0;
    for (let i = 0; i < n; i++) e += best[h * n + i];
    inertia[h] = e;
  }
  return { labels, sizes, means, inertia };
};

// ---- squeezed.normalize -------------------------------------------------------------------------------------

/** Input ports of `squeezed.normalize`. */
export type NormalizeInputs = {
  /** Keys to cluster (post-RoPE), `f32 [kvHeads, points, headDim]`. */
  readonly keys: PointsType;
};
/** Output ports of `squeezed.normalize`. */
export type NormalizeOutputs = {
  /** The keys L2-normalised per row (a zero row stays 0), `f32 [kvHeads, points, headDim]`. */
  readonly unit: PointsType;
  /** Per head `tol · mean over dimensions of var(unit)`: the absolute stop tolerance, `f32 [kvHeads]`. */
  readonly tolerance: PerHeadType;
};

/**
 * `squeezed.normalize`: the keys L2-normalised per row (cosine k-means clusters them), and per head the
 * absolute tolerance of scikit-learn's stop rule, `tol · mean_t var(unit[:, t])` (`kmeans.ts`). Input `keys f32
 * [kvHeads, points, headDim]`; outputs `unit` (same shape) and `tolerance f32 [kvHeads]`. GPU: a row per
 * invocation, then a workgroup per (dimension, head) for the two-pass variance, then one per head. Shape
 * errors: not rank 3, headDim not a multiple of 4.
 */
export const normalize: Operator<KMeansGpuParams, NormalizeInputs, NormalizeOutputs> = {
  name: "squeezed.normalize",
  kind: "cluster",
  reference: "Squeezed Attention (arXiv 2411.09688): cosine k-means of the keys (official clustering.py); " +
    "scikit-learn's relative tolerance",
  params: KMeansGpuParams,
  inputs: { keys: pointsT },
  outputs: { unit: pointsT, tolerance: perHeadT },
  example: { dims: { points: 1024 } },
  infer: (_p, i) =>
    Effect.gen(function* () {
      yield* checkPoints(i.keys, undefined, []);
      const [Hk] = i.keys.shape;
      return {
        unit: { ...pointsT, shape: [...i.keys.shape] },
        tolerance: { ...perHeadT, shape: [Hk] },
      } as DescsOf<NormalizeOutputs>;
    }),
  cpu: (p, i) => {
    const [Hk, n, d] = i.keys.desc.shape as [number, number, number];
    const r = normalizeReference(i.keys.data as Float32Array, { Hk, n, d }, p.tol);
    const unit = allocHost({ ...pointsT, shape: [Hk, n, d] }),
      tolerance = allocHost({ ...perHeadT, shape: [Hk] });
    unit.data.set(r.unit);
    tolerance.data.set(r.tolerance);
    return { unit, tolerance } as HostOf<NormalizeOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const [Hk, n, d] = i.keys.shape as [number, number, number], D4 = d / 4;
    const key = `squeezed.normalize:${Hk}x${n}x${d}`;
    const rows = kernelOf(`${key}:rows`, [
      ["KEY", "read", "array<vec4<f32>>"],
      ["UNIT", "read_write", "array<vec4<f32>>"],
    ], [
      ...ENTRY,
      LINEAR,
      `  if (id >= ${Hk * n}u) { return; }`,
      `  var s = 0.0;`,
      `  for (var q = 0u; q < ${D4}u; q++) { let v = KEY[id * ${D4}u + q]; s += dot(v, v); }`,
      `  let r = select(0.0, 1.0 / sqrt(s), s > 0.0);`,
      `  for (var q = 0u; q < ${D4}u; q++) { UNIT[id * ${D4}u + q] = KEY[id * ${D4}u + q] * r; }`,
      `}`,
    ]);
    const variance = kernelOf(`${key}:var`, [
      ["UNIT", "read", "array<f32>"],
      ["VAR", "read_write", "array<f32>"],
    ], [
      `var<workgroup> red: array<f32, ${WG}>;`,
      ...ENTRY,
      `  let c = wid.x; let h = wid.y;`,
      `  var s = 0.0;`,
      `  for (var i = t; i < ${n}u; i += ${WG}u) { s += UNIT[(h * ${n}u + i) * ${d}u + c]; }`,
      `  red[t] = s;`,
      ...treeSum("red"),
      `  let mean = red[0] / ${n}.0;`,
      `  workgroupBarrier();`,
      `  var s2 = 0.0;`,
      `  for (var i = t; i < ${n}u; i += ${WG}u) { let e = UNIT[(h * ${n}u + i) * ${d}u + c] - mean; s2 += e * e; }`,
      `  red[t] = s2;`,
      ...treeSum("red"),
      `  if (t == 0u) { VAR[h * ${d}u + c] = red[0] / ${n}.0; }`,
      `}`,
    ]);
    const tol = kernelOf(`${key}:tol:${p.tol}`, [
      ["VAR", "read", "array<f32>"],
      ["TOL", "read_write", "array<f32>"],
    ], [
      `var<workgroup> red: array<f32, ${WG}>;`,
      ...ENTRY,
      `  let h = wid.x;`,
      `  var s = 0.0;`,
      `  for (var c = t; c < ${d}u; c += ${WG}u) { s += VAR[h * ${d}u + c]; }`,
      `  red[t] = s;`,
      ...treeSum("red"),
      `  if (t == 0u) { TOL[h] = ${p.tol.toExponential(9)} * red[0] / ${d}.0; }`,
      `}`,
    ]);
    return {
      workspaces: { var: Hk * d * 4 },
      launches: [
        { kernel: rows, buffers: ["in:keys", "out:unit"], workgroups: groups(Hk * n) },
        { kernel: variance, buffers: ["out:unit", "ws:var"], workgroups: [d, Hk, 1] },
        { kernel: tol, buffers: ["ws:var", "out:tolerance"], workgroups: [Hk, 1, 1] },
      ],
    };
  },
  cost: (_p, i): Cost => {
    const [Hk, n, d] = i.keys.shape as [number, number, number];
    return {
      flops: 7 * Hk * n * d,
      bytesRead: 4 * Hk * n * d * 4,
      bytesWritten: (Hk * n * d + Hk) * 4,
      workspaceBytes: Hk * d * 4,
    };
  },
};

// ---- squeezed.seed ------------------------------------------------------------------------------------------

/** Input ports of `squeezed.seed`. */
export type SeedInputs = {
  /** The points (L2-normalised keys), `f32 [kvHeads, points, headDim]`. */
  readonly x: PointsType;
  /** The centres chosen so far (rows below `step`), `f32 [kvHeads, clusters, headDim]`; rows written in place. */
  readonly centers: CentersType;
  /** Each point's squared distance to its nearest chosen centre (D²), `f32 [kvHeads, points]`; in place. */
  readonly potential: PerPointType<"f32">;
};
/** Output ports of `squeezed.seed`. */
export type SeedOutputs = {
  /** `centers` after the call (aliases it): rows `step … step + seedSteps − 1` chosen. */
  readonly centersOut: CentersType;
  /** `potential` after the call (aliases it): D² to the centres below the last step run. */
  readonly potentialOut: PerPointType<"f32">;
};

const seedInputs: SeedInputs = { x: pointsT, centers: centersT, potential: perPointF };
const seedOutputs: SeedOutputs = { centersOut: centersT, potentialOut: perPointF };

/** The `step` scalar of a seeding call, checked. */
const seedStep = (sc: CpuContext["scalars"] | undefined): number => {
  const s = sc?.step;
  if (s === undefined || !Number.isInteger(s) || s < 0) {
    throw new RangeError(
      `squeezed.seed reads the runtime scalar "step" (the first step of the call), given ${s}`,
    );
  }
  return s;
};

/** The six launches of one greedy k-means++ step (`rep`-th of a run; the step is `scalars.step + rep`). */
const seedLaunches = (dm: KMeansDims, seed: number, rep: number): LoweredLaunch[] => {
  const { Hk, n, K, d } = dm, D4 = d / 4, T = seedTrials(K), nb = Math.ceil(n / WG);
  const key = `squeezed.seed:${Hk}x${n}x${K}x${d}`;
  const uni = (step: number) => new Uint8Array(Uint32Array.of(step, seed >>> 0, 0, 0).buffer);
  const U: Bind = ["U", "uniform", "Uni"];
  const first = kernelOf(`${key}:first`, [["X", "read", "array<vec4<f32>>"], [
    "CEN",
    "read_write",
    "array<vec4<f32>>",
  ], U], [
    UNI,
    ...HASH_WGSL,
    `@compute @workgroup_size(64)`,
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  let h = wid.x; let p = hashOf(0u, 0u) % ${n}u;`,
    `  for (var q = t; q < ${D4}u; q += 64u) { CEN[h * ${K * D4}u + q] = X[(h * ${n}u + p) * ${D4}u + q]; }`,
    `}`,
  ]);
  const blocks = kernelOf(`${key}:blocks`, [
    ["X", "read", "array<vec4<f32>>"],
    ["CEN", "read", "array<vec4<f32>>"],
    ["POT", "read_write", "array<f32>"],
    ["BS", "read_write", "array<f32>"],
    U,
  ], [
    UNI,
    `var<workgroup> cs: array<vec4<f32>, ${D4}>;`,
    `var<workgroup> red: array<f32, ${WG}>;`,
    ...ENTRY,
    `  let b = wid.x; let h = wid.y; let j = U.step - 1u;`,
    `  for (var q = t; q < ${D4}u; q += ${WG}u) { cs[q] = CEN[(h * ${K}u + j) * ${D4}u + q]; }`,
    `  workgroupBarrier();`,
    `  let i = b * ${WG}u + t;`,
    `  var p = 0.0;`,
    `  if (i < ${n}u) {`,
    `    var dd = 0.0;`,
    `    for (var q = 0u; q < ${D4}u; q++) { let e = X[(h * ${n}u + i) * ${D4}u + q] - cs[q]; dd += dot(e, e); }`,
    `    if (U.step == 1u) { p = dd; } else { p = min(max(POT[h * ${n}u + i], 0.0), dd); }`,
    `    POT[h * ${n}u + i] = p;`,
    `  }`,
    `  red[t] = p;`,
    ...treeSum("red"),
    `  if (t == 0u) { BS[h * ${nb}u + b] = red[0]; }`,
    `}`,
  ]);
  const per = Math.ceil(nb / WG);
  const top = kernelOf(`${key}:top`, [["BS", "read", "array<f32>"], ["BP", "read_write", "array<f32>"]], [
    `var<workgroup> sc: array<f32, ${WG}>;`,
    ...ENTRY,
    `  let h = wid.x; let lo = t * ${per}u;`,
    `  var s = 0.0;`,
    `  for (var e = 0u; e < ${per}u; e++) { if (lo + e < ${nb}u) { s += BS[h * ${nb}u + lo + e]; } }`,
    `  sc[t] = s;`,
    `  for (var off = 1u; off < ${WG}u; off <<= 1u) {`,
    `    workgroupBarrier();`,
    `    var v = 0.0;`,
    `    if (t >= off) { v = sc[t - off]; }`,
    `    workgroupBarrier();`,
    `    sc[t] += v;`,
    `  }`,
    `  workgroupBarrier();`,
    `  var run = 0.0;`,
    `  if (t > 0u) { run = sc[t - 1u]; }`,
    `  for (var e = 0u; e < ${per}u; e++) {`,
    `    if (lo + e < ${nb}u) { BP[h * ${nb + 1}u + lo + e] = run; run += BS[h * ${nb}u + lo + e]; }`,
    `  }`,
    `  if (t == ${WG - 1}u) { BP[h * ${nb + 1}u + ${nb}u] = sc[${WG - 1}u]; }`,
    `}`,
  ]);
  const draw = kernelOf(`${key}:draw`, [
    ["POT", "read", "array<f32>"],
    ["BP", "read", "array<f32>"],
    ["CAND", "read_write", "array<u32>"],
    U,
  ], [
    UNI,
    ...HASH_WGSL,
    `@compute @workgroup_size(32)`,
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  let h = wid.x;`,
    `  if (t >= ${T}u) { return; }`,
    `  let hs = hashOf(U.step, t);`,
    `  let base = h * ${nb + 1}u;`,
    `  let tot = BP[base + ${nb}u];`,
    `  var pick = hs % ${n}u;`,
    `  if (tot > 0.0) {`,
    `    let goal = f32(hs >> 8u) * ${FX_INV} * tot;`,
    `    var lo = 0u; var hi = ${nb - 1}u;`,
    `    while (lo < hi) { let mid = (lo + hi + 1u) / 2u; if (BP[base + mid] <= goal) { lo = mid; } else { hi = mid - 1u; } }`,
    `    var acc = BP[base + lo];`,
    `    let i0 = lo * ${WG}u; let i1 = min(${n}u, i0 + ${WG}u);`,
    `    var found = false; var last = pick;`,
    `    for (var i = i0; i < i1; i++) {`,
    `      let w = POT[h * ${n}u + i];`,
    `      if (w > 0.0) { last = i; }`,
    `      acc += w;`,
    `      if (acc > goal) { pick = i; found = true; break; }`,
    `    }`,
    `    if (!found) { pick = last; }`,
    `  }`,
    `  CAND[h * ${T}u + t] = pick;`,
    `}`,
  ]);
  // the candidates' potentials: Σ min(D², ‖x − candidate‖²) per (block, candidate); the point in registers
  const trial = kernelOf(`${key}:trial`, [
    ["X", "read", "array<vec4<f32>>"],
    ["POT", "read", "array<f32>"],
    ["CAND", "read", "array<u32>"],
    ["PART", "read_write", "array<f32>"],
  ], [
    `var<workgroup> cs: array<vec4<f32>, ${T * D4}>;`,
    `var<workgroup> red: array<f32, ${WG}>;`,
    ...ENTRY,
    `  let b = wid.x; let h = wid.y;`,
    `  for (var e = t; e < ${T * D4}u; e += ${WG}u) {`,
    `    cs[e] = X[(h * ${n}u + CAND[h * ${T}u + e / ${D4}u]) * ${D4}u + e % ${D4}u];`,
    `  }`,
    `  workgroupBarrier();`,
    `  let i = b * ${WG}u + t; let live = i < ${n}u; let g = h * ${n}u + min(i, ${n - 1}u);`,
    ...Array.from({ length: D4 }, (_, q) => `  let x${q} = X[g * ${D4}u + ${q}u];`),
    `  let p = select(0.0, POT[g], live);`,
    `  for (var r = 0u; r < ${T}u; r++) {`,
    `    var dd = 0.0;`,
    ...Array.from(
      { length: D4 },
      (_, q) => `    { let e = x${q} - cs[r * ${D4}u + ${q}u]; dd += dot(e, e); }`,
    ),
    `    red[t] = select(0.0, min(p, dd), live);`,
    ...treeSum("red").map((l) => `  ${l}`),
    `    if (t == 0u) { PART[(h * ${nb}u + b) * ${T}u + r] = red[0]; }`,
    `  }`,
    `}`,
  ]);
  const pick = kernelOf(`${key}:pick`, [
    ["X", "read", "array<vec4<f32>>"],
    ["CEN", "read_write", "array<vec4<f32>>"],
    ["CAND", "read", "array<u32>"],
    ["PART", "read", "array<f32>"],
    U,
  ], [
    UNI,
    `var<workgroup> red: array<f32, ${WG}>;`,
    `var<workgroup> cost: array<f32, ${T}>;`,
    `var<workgroup> bestW: u32;`,
    ...ENTRY,
    `  let h = wid.x;`,
    `  for (var r = 0u; r < ${T}u; r++) {`,
    `    var s = 0.0;`,
    `    for (var b = t; b < ${nb}u; b += ${WG}u) { s += PART[(h * ${nb}u + b) * ${T}u + r]; }`,
    `    red[t] = s;`,
    ...treeSum("red").map((l) => `  ${l}`),
    `    if (t == 0u) { cost[r] = red[0]; }`,
    `    workgroupBarrier();`,
    `  }`,
    `  if (t == 0u) {`,
    `    var bi = 0u; var bv = cost[0];`,
    `    for (var r = 1u; r < ${T}u; r++) { if (cost[r] < bv) { bv = cost[r]; bi = r; } }`,
    `    bestW = CAND[h * ${T}u + bi];`,
    `  }`,
    `  let p = workgroupUniformLoad(&bestW);`,
    `  for (var q = t; q < ${D4}u; q += ${WG}u) {`,
    `    CEN[(h * ${K}u + U.step) * ${D4}u + q] = X[(h * ${n}u + p) * ${D4}u + q];`,
    `  }`,
    `}`,
  ]);
  const ws = (name: string) => `ws:${name}`;
  /** Steps 1 … K − 1 run the five step launches; step 0 only the first pick. */
  const steps = (s: number, w: [number, number, number]): [number, number, number] =>
    s >= 1 && s < K ? w : [0, 0, 0];
  const firstOnly = (s: number, w: [number, number, number]): [number, number, number] =>
    s === 0 ? w : [0, 0, 0];
  /** A launch of this repetition: its step is `scalars.step + rep`; `uniform` names its own step uniform. */
  const L = (
    kernel: Kernel,
    buffers: string[],
    w: [number, number, number],
    uniform: string | undefined,
    when = steps,
  ): LoweredLaunch => ({
    kernel,
    buffers: uniform ? [...buffers, ws(uniform)] : buffers,
    workgroups: when(rep, w),
    ...(uniform ? { uniforms: { [uniform]: uni(rep) } } : {}),
    dynamic: (sc) => {
      const s = (sc.step ?? 0) + rep;
      return { ...(uniform ? { uniforms: { [uniform]: uni(s) } } : {}), workgroups: when(s, w) };
    },
  });
  return [
    L(first, ["in:x", "in:centers"], [Hk, 1, 1], `u${rep}_first`, firstOnly),
    L(blocks, ["in:x", "in:centers", "in:potential", ws("bs")], [nb, Hk, 1], `u${rep}_blocks`),
    L(top, [ws("bs"), ws("bp")], [Hk, 1, 1], undefined),
    L(draw, ["in:potential", ws("bp"), ws("cand")], [Hk, 1, 1], `u${rep}_draw`),
    L(trial, ["in:x", "in:potential", ws("cand"), ws("part")], [nb, Hk, 1], undefined),
    L(pick, ["in:x", "in:centers", ws("cand"), ws("part")], [Hk, 1, 1], `u${rep}_pick`),
  ];
};

/**
 * `squeezed.seed`: `seedSteps` steps of greedy k-means++ seeding for every KV head at once (see the module doc
 * and {@link seedReference}), from the runtime scalar `step` (the first step of this call; step 0 picks the
 * first centre). Inputs `x f32 [kvHeads, points, headDim]` (the normalised keys), `centers f32 [kvHeads,
 * clusters, headDim]` and `potential f32 [kvHeads, points]`, both updated in place (`centersOut`,
 * `potentialOut`); steps at or past `clusters` do nothing. A driver runs it for `step = 0, seedSteps, 2 ·
 * seedSteps, …` below `clusters`. Shape errors: as `squeezed.lloyd`, and `2 + ⌊ln clusters⌋` candidates of
 * `headDim` floats must fit 15 KiB of workgroup memory.
 */
export const seed: Operator<KMeansGpuParams, SeedInputs, SeedOutputs> = {
  name: "squeezed.seed",
  kind: "cluster",
  reference:
    "k-means++ seeding, greedy (Arthur & Vassilvitskii 2007; scikit-learn, raft kmeansPlusPlus): what " +
    'cuML KMeans(init="k-means++") runs for the official clustering.py',
  params: KMeansGpuParams,
  inputs: seedInputs,
  outputs: seedOutputs,
  scalars: ["step"],
  aliases: { centersOut: "centers", potentialOut: "potential" },
  example: { dims: { points: 1024, clusters: 51 }, scalars: { step: 1 } },
  infer: (_p, i) =>
    Effect.gen(function* () {
      const [Hk, n, d] = i.x.shape;
      yield* checkPoints(i.x, i.centers, [["potential", i.potential, `${Hk},${n}`]]);
      const T = seedTrials(i.centers.shape[1]);
      yield* need(
        T * d * 4 + WG * 4 <= WG_MEMORY - 1024,
        "centers",
        `${T} candidates of ${d} floats per k-means++ step`,
        "the candidates must fit 15 KiB of workgroup memory: fewer clusters or a smaller headDim",
      );
      return {
        centersOut: { ...centersT, shape: [...i.centers.shape] },
        potentialOut: { ...perPointF, shape: [Hk, n] },
      } as DescsOf<SeedOutputs>;
    }),
  cpu: (p, i, ctx) => {
    const dm = dimsOf(i.x.desc, i.centers.desc);
    seedReference(
      i.x.data as Float32Array,
      i.centers.data as Float32Array,
      i.potential.data as Float32Array,
      dm,
      p.seed,
      seedStep(ctx?.scalars),
      p.seedSteps,
    );
    return { centersOut: i.centers, potentialOut: i.potential } as HostOf<SeedOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const dm = dimsOf(i.x, i.centers), { Hk, n, K } = dm, T = seedTrials(K), nb = Math.ceil(n / WG);
    const launches: LoweredLaunch[] = [];
    const workspaces: Record<string, number> = {
      bs: Hk * nb * 4,
      bp: Hk * (nb + 1) * 4,
      cand: Hk * T * 4,
      part: Hk * nb * T * 4,
    };
    for (let rep = 0; rep < p.seedSteps; rep++) {
      for (const l of seedLaunches(dm, p.seed, rep)) {
        launches.push(l);
        for (const w of Object.keys(l.uniforms ?? {})) workspaces[w] = 16;
      }
    }
    return { workspaces, launches };
  },
  cost: (p, i): Cost => {
    const { Hk, n, K, d } = dimsOf(i.x, i.centers), T = seedTrials(K), R = p.seedSteps;
    return {
      flops: R * Hk * n * d * (3 + 3 * T),
      bytesRead: R * (2 * Hk * n * d + 4 * Hk * n) * 4,
      bytesWritten: R * (Hk * n + Hk * d) * 4,
      workspaceBytes: Hk * Math.ceil(n / WG) * (T + 2) * 4,
    };
  },
};

// ---- the assignment: tiled GEMM with the argmin in its epilogue -----------------------------------------------

/** The assignment kernel's tiling: workgroup tile `BM × BN`, K step `BK`, register tile `TM × TN`. */
interface Tile {
  readonly BM: number;
  readonly BN: number;
  readonly BK: number;
  readonly TM: number;
  readonly TN: number;
}

const tileOf = (p: KMeansGpuParams, dm: KMeansDims): Tile => {
  const big = p.tile === 128 || (p.tile === 0 && dm.n >= 2048 && dm.K >= 128);
  const BK = dm.d % 8 === 0 ? 8 : 4;
  return big ? { BM: 128, BN: 128, BK, TM: 8, TN: 8 } : { BM: 64, BN: 64, BK, TM: 4, TN: 4 };
};

/**
 * The assignment kernel (see the module doc): workgroups `[⌈points / BM⌉, kvHeads]` of `(BN/TN) × (BM/TM)`
 * invocations; each stages `BM` point rows and `BN` centres per K step in workgroup memory (`vec4` loads, stored
 * transposed), accumulates its `TM × TN` register tile (fully unrolled `vec4`s), and after each chunk of `BN`
 * centres folds `‖c‖² − 2x·c` into its rows' running minima (the lower index on ties); the `BN/TN` invocations
 * of a row merge theirs by halving through workgroup memory. Writes each point's label and
 * `max(0, ‖x‖² + min)`; with `lloyd`, skips done heads and counts labels that changed.
 */
const assignKernel = (dm: KMeansDims, tl: Tile, lloyd: boolean): Kernel => {
  const { Hk, n, K, d } = dm, { BM, BN, BK, TM, TN } = tl;
  const TX = BN / TN, TY = BM / TM, T = TX * TY, D4 = d / 4, BM4 = BM / 4, BN4 = BN / 4, BK4 = BK / 4;
  const red = (BM * TX) / 2;
  const L: string[] = [
    `var<workgroup> As: array<vec4<f32>, ${Math.max(BK * BM, red) / 4}>;`,
    `var<workgroup> Bs: array<vec4<f32>, ${BK * BN / 4}>;`,
    `var<workgroup> Ri: array<u32, ${red}>;`,
  ];
  if (lloyd) L.push(`var<workgroup> doneW: u32;`, `var<workgroup> nchg: atomic<u32>;`);
  L.push(
    `@compute @workgroup_size(${TX}, ${TY}, 1)`,
    "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l3: vec3<u32>,",
    "        @builtin(local_invocation_index) lid: u32) {",
    `  let h = wg.y; let tx = l3.x; let ty = l3.y; let row0 = wg.x * ${BM}u;`,
  );
  if (lloyd) {
    L.push(
      `  if (lid == 0u) { doneW = ST[h * 4u]; atomicStore(&nchg, 0u); }`,
      `  if (workgroupUniformLoad(&doneW) != 0u) { return; }`,
    );
  }
  for (let i = 0; i < TM; i++) L.push(`  var bv${i} = 3.0e38; var bi${i} = 0u;`);
  for (let i = 0; i < TM; i++) for (let q = 0; q < TN / 4; q++) L.push(`  var a${i}_${q} = vec4<f32>();`);
  L.push(`  for (var c0 = 0u; c0 < ${K}u; c0 += ${BN}u) {`);
  L.push(`    for (var k0 = 0u; k0 < ${D4}u; k0 += ${BK4}u) {`);
  /** Stage `rows × BK` of `src` (row `r` valid when `guard`) transposed into `dst` of width `W4` vec4s. */
  const stage = (
    rows: number,
    dst: string,
    W4: number,
    src: (r: string) => string,
    guard: (r: string) => string,
  ) => {
    const total = rows * BK4;
    for (let l = 0; l < Math.ceil(total / T); l++) {
      const partial = (l + 1) * T > total;
      L.push(`      {`, `        let e = lid + ${l * T}u;`);
      if (partial) L.push(`        if (e < ${total}u) {`);
      L.push(
        `        let r = e / ${BK4}u; let q = e % ${BK4}u;`,
        `        var v = vec4<f32>();`,
        `        if (${guard("r")}) { v = ${src("r")}; }`,
        ...comp.map((c, j) => `        ${dst}[(q * 4u + ${j}u) * ${W4}u + r / 4u][r % 4u] = v.${c};`),
      );
      if (partial) L.push(`        }`);
      L.push(`      }`);
    }
  };
  stage(
    BM,
    "As",
    BM4,
    (r) => `X[(h * ${n}u + row0 + ${r}) * ${D4}u + k0 + q]`,
    (r) => `row0 + ${r} < ${n}u`,
  );
  stage(
    BN,
    "Bs",
    BN4,
    (r) => `CEN[(h * ${K}u + c0 + ${r}) * ${D4}u + k0 + q]`,
    (r) => `c0 + ${r} < ${K}u`,
  );
  L.push(`      workgroupBarrier();`);
  for (let kk = 0; kk < BK; kk++) {
    L.push(`      {`);
    for (let q = 0; q < TM / 4; q++) {
      L.push(`        let x${q} = As[${kk * BM4}u + ty * ${TM / 4}u + ${q}u];`);
    }
    for (let q = 0; q < TN / 4; q++) L.push(`        let y${q} = Bs[${kk * BN4 + q * TX}u + tx];`);
    for (let i = 0; i < TM; i++) {
      for (let q = 0; q < TN / 4; q++) {
        L.push(`        a${i}_${q} = fma(vec4<f32>(x${i >> 2}.${comp[i % 4]}), y${q}, a${i}_${q});`);
      }
    }
    L.push(`      }`);
  }
  L.push(`      workgroupBarrier();`, `    }`);
  // epilogue of the chunk: ‖c‖² − 2 x·c into the running minima (columns past the clusters never win)
  for (let q = 0; q < TN / 4; q++) {
    L.push(`    {`, `      let cb = c0 + (${q * TX}u + tx) * 4u;`);
    for (let j = 0; j < 4; j++) {
      L.push(
        `      let n${j} = select(3.0e38, CN[h * ${K}u + min(cb + ${j}u, ${K - 1}u)], cb + ${j}u < ${K}u);`,
      );
    }
    for (let i = 0; i < TM; i++) {
      for (let j = 0; j < 4; j++) {
        L.push(
          `      { let v = n${j} - 2.0 * a${i}_${q}.${
            comp[j]
          }; if (v < bv${i}) { bv${i} = v; bi${i} = cb + ${j}u; } }`,
        );
      }
      L.push(`      a${i}_${q} = vec4<f32>();`);
    }
    L.push(`    }`);
  }
  L.push(`  }`);
  // merge the row minima of the BN/TN invocations of a row: halving through workgroup memory
  for (let half = TX / 2; half >= 1; half /= 2) {
    L.push(`  if (tx >= ${half}u && tx < ${2 * half}u) {`);
    for (let i = 0; i < TM; i++) {
      L.push(
        `    { let e = (ty * ${TM}u + ${i}u) * ${half}u + tx - ${half}u; As[e / 4u][e % 4u] = bv${i}; Ri[e] = bi${i}; }`,
      );
    }
    L.push(`  }`, `  workgroupBarrier();`, `  if (tx < ${half}u) {`);
    for (let i = 0; i < TM; i++) {
      L.push(
        `    { let e = (ty * ${TM}u + ${i}u) * ${half}u + tx; let w = As[e / 4u][e % 4u]; let u = Ri[e];` +
          ` if (w < bv${i} || (w == bv${i} && u < bi${i})) { bv${i} = w; bi${i} = u; } }`,
      );
    }
    L.push(`  }`, `  workgroupBarrier();`);
  }
  L.push(`  if (tx == 0u) {`);
  for (let i = 0; i < TM; i++) {
    L.push(
      `    {`,
      `      let r = row0 + ty * ${TM}u + ${i}u;`,
      `      if (r < ${n}u) {`,
      `        let g = h * ${n}u + r;`,
      `        var xx = 0.0;`,
      `        for (var q = 0u; q < ${D4}u; q++) { let v = X[g * ${D4}u + q]; xx += dot(v, v); }`,
      ...(lloyd ? [`        if (LAB[g] != i32(bi${i})) { atomicAdd(&nchg, 1u); }`] : []),
      `        LAB[g] = i32(bi${i});`,
      `        BEST[g] = max(0.0, xx + bv${i});`,
      `      }`,
      `    }`,
    );
  }
  L.push(`  }`);
  if (lloyd) {
    L.push(
      `  workgroupBarrier();`,
      `  if (lid == 0u) { let c = atomicLoad(&nchg); if (c > 0u) { atomicAdd(&MISC[h * 4u], c); } }`,
    );
  }
  L.push(`}`);
  const binds: Bind[] = [
    ["X", "read", "array<vec4<f32>>"],
    ["CEN", "read", "array<vec4<f32>>"],
    ["CN", "read", "array<f32>"],
    ["LAB", "read_write", "array<i32>"],
    ["BEST", "read_write", "array<f32>"],
    ...(lloyd ? [["MISC", "read_write", "array<atomic<u32>>"], ["ST", "read", "array<u32>"]] as Bind[] : []),
  ];
  return kernelOf(
    `squeezed.${lloyd ? "lloyd" : "assign"}:assign:${Hk}x${n}x${K}x${d}:${BM}x${BN}x${BK}.${TM}x${TN}`,
    binds,
    L,
  );
};

/** Zero the counts and sums; ‖c‖² per centre; with `lloyd`, zero the per-head counters. */
const prepKernel = (dm: KMeansDims, lloyd: boolean): { kernel: Kernel; threads: number } => {
  const { Hk, K, d } = dm, W = Hk * K * d * 2, D4 = d / 4;
  const binds: Bind[] = [
    ["CEN", "read", "array<vec4<f32>>"],
    ["CN", "read_write", "array<f32>"],
    ["CNT", "read_write", "array<u32>"],
    ["SUM", "read_write", "array<u32>"],
    ...(lloyd ? [["MISC", "read_write", "array<u32>"]] as Bind[] : []),
  ];
  const kernel = kernelOf(`squeezed.${lloyd ? "lloyd" : "assign"}:prep:${Hk}x${K}x${d}`, binds, [
    ...ENTRY,
    LINEAR,
    `  if (id < ${W}u) { SUM[id] = 0u; }`,
    `  if (id < ${Hk * K}u) {`,
    `    CNT[id] = 0u;`,
    `    var s = 0.0;`,
    `    for (var q = 0u; q < ${D4}u; q++) { let c = CEN[id * ${D4}u + q]; s += dot(c, c); }`,
    `    CN[id] = s;`,
    `  }`,
    ...(lloyd ? [`  if (id < ${Hk * 4}u) { MISC[id] = 0u; }`] : []),
    `}`,
  ]);
  return { kernel, threads: Math.max(W, Hk * K, Hk * 4) };
};

/** Member counts and fixed-point sums of `V` by label, an invocation per (point, 4 dimensions). */
const accumulateKernel = (dm: KMeansDims, lloyd: boolean): Kernel => {
  const { Hk, n, K, d } = dm, D4 = d / 4;
  const binds: Bind[] = [
    ["V", "read", "array<vec4<f32>>"],
    ["LAB", "read", "array<i32>"],
    ["CNT", "read_write", "array<atomic<u32>>"],
    ["SUM", "read_write", "array<atomic<u32>>"],
    ...(lloyd ? [["ST", "read", "array<u32>"]] as Bind[] : []),
  ];
  return kernelOf(`squeezed.${lloyd ? "lloyd" : "assign"}:accumulate:${Hk}x${n}x${K}x${d}`, binds, [
    ...fxAddWgsl("SUM"),
    ...ENTRY,
    LINEAR,
    `  if (id >= ${Hk * n * D4}u) { return; }`,
    `  let row = id / ${D4}u; let q = id % ${D4}u; let h = row / ${n}u;`,
    ...(lloyd ? [`  if (ST[h * 4u] != 0u) { return; }`] : []),
    `  let lab = LAB[row];`,
    `  if (lab < 0 || lab >= ${K}) { return; }`,
    `  let j = h * ${K}u + u32(lab);`,
    `  if (q == 0u) { atomicAdd(&CNT[j], 1u); }`,
    `  let v = V[id];`,
    `  let b = (j * ${d}u + q * 4u) * 2u;`,
    `  fxAdd(b, v.x); fxAdd(b + 2u, v.y); fxAdd(b + 4u, v.z); fxAdd(b + 6u, v.w);`,
    `}`,
  ]);
};

// ---- squeezed.lloyd -----------------------------------------------------------------------------------------

/** Input ports of `squeezed.lloyd`. */
export type LloydInputs = {
  /** The points (L2-normalised keys), `f32 [kvHeads, points, headDim]`. */
  readonly x: PointsType;
  /** The current centres, `f32 [kvHeads, clusters, headDim]`; updated in place. */
  readonly centers: CentersType;
  /** Each point's label of the previous iteration (−1 before the first), `i32 [kvHeads, points]`; in place. */
  readonly labels: PerPointType<"i32">;
  /**
   * Per head `u32 [kvHeads, 4]`: done (0 while iterating; 1 once the labels stopped changing or the shift fell
   * to the tolerance), iterations run (centre updates), the last iteration's changed labels, and its summed
   * squared shift (f32 bits). Zeros to start; updated in place.
   */
  readonly state: StateType;
  /** The absolute stop tolerance per head (`squeezed.normalize`'s `tolerance`), `f32 [kvHeads]`. */
  readonly tolerance: PerHeadType;
};
/** Output ports of `squeezed.lloyd`. */
export type LloydOutputs = {
  /** `centers` after the iteration (aliases it). */
  readonly centersOut: CentersType;
  /** `labels` after the iteration (aliases it). */
  readonly labelsOut: PerPointType<"i32">;
  /** `state` after the iteration (aliases it). */
  readonly stateOut: StateType;
  /** Members per cluster of this iteration's assignment (0 for a head done before the call), `f32 [kvHeads, clusters]`. */
  readonly sizes: PerClusterType;
};

const lloydInputs: LloydInputs = {
  x: pointsT,
  centers: centersT,
  labels: perPointI,
  state: stateT,
  tolerance: perHeadT,
};
const lloydOutputs: LloydOutputs = {
  centersOut: centersT,
  labelsOut: perPointI,
  stateOut: stateT,
  sizes: perClusterT,
};

/**
 * `squeezed.lloyd`: one Lloyd iteration of every KV head whose state is not done (see {@link lloydReference}
 * and the module doc): assign each point to its nearest centre; no label changed → done (centres unchanged);
 * else every cluster with members moves to their mean, every empty one (in cluster order) to the farthest
 * point from its centre not yet taken, iterations += 1, and done when the summed squared shift is at most the
 * head's tolerance. Inputs `x f32 [kvHeads, points, headDim]`, `centers f32 [kvHeads, clusters, headDim]`,
 * `labels i32 [kvHeads, points]`, `state u32 [kvHeads, 4]`, `tolerance f32 [kvHeads]`; the first three of the
 * state in place (`centersOut`, `labelsOut`, `stateOut`), and `sizes f32 [kvHeads, clusters]`. A driver runs it
 * up to the iteration cap, reading back only the state. GPU: six launches (prep, the fused assignment,
 * fixed-point member sums, new means and shifts, re-seeding, the stop rule). Shape errors: centres not
 * `[kvHeads, k, headDim]` with `1 ≤ k ≤ points`, labels, state or tolerance of other shapes.
 */
export const lloyd: Operator<KMeansGpuParams, LloydInputs, LloydOutputs> = {
  name: "squeezed.lloyd",
  kind: "cluster",
  reference:
    "Lloyd's k-means iteration (scikit-learn's stop rule and empty-cluster re-seeding), for Squeezed " +
    "Attention's offline clustering (arXiv 2411.09688; official clustering.py)",
  params: KMeansGpuParams,
  inputs: lloydInputs,
  outputs: lloydOutputs,
  aliases: { centersOut: "centers", labelsOut: "labels", stateOut: "state" },
  example: { dims: { points: 1024, clusters: 51 } },
  infer: (_p, i) =>
    Effect.gen(function* () {
      const [Hk, n] = i.x.shape;
      yield* checkPoints(i.x, i.centers, [
        ["labels", i.labels, `${Hk},${n}`],
        ["state", i.state, `${Hk},4`],
        ["tolerance", i.tolerance, `${Hk}`],
      ]);
      const K = i.centers.shape[1];
      return {
        centersOut: { ...centersT, shape: [...i.centers.shape] },
        labelsOut: { ...perPointI, shape: [Hk, n] },
        stateOut: { ...stateT, shape: [Hk, 4] },
        sizes: { ...perClusterT, shape: [Hk, K] },
      } as DescsOf<LloydOutputs>;
    }),
  cpu: (_p, i) => {
    const dm = dimsOf(i.x.desc, i.centers.desc);
    const sizes = allocHost({ ...perClusterT, shape: [dm.Hk, dm.K] });
    sizes.data.set(lloydReference(
      i.x.data as Float32Array,
      i.centers.data as Float32Array,
      i.labels.data as Int32Array,
      i.state.data as Uint32Array,
      i.tolerance.data as Float32Array,
      dm,
    ));
    return { centersOut: i.centers, labelsOut: i.labels, stateOut: i.state, sizes } as HostOf<LloydOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const dm = dimsOf(i.x, i.centers), { Hk, n, K, d } = dm, D4 = d / 4, tl = tileOf(p, dm);
    const key = `squeezed.lloyd:${Hk}x${n}x${K}x${d}`;
    const prep = prepKernel(dm, true);
    const update = kernelOf(`${key}:update`, [
      ["CEN", "read_write", "array<vec4<f32>>"],
      ["CNT", "read", "array<u32>"],
      ["SUM", "read", "array<u32>"],
      ["SIZES", "read_write", "array<f32>"],
      ["SHP", "read_write", "array<f32>"],
      ["MISC", "read_write", "array<atomic<u32>>"],
      ["ST", "read", "array<u32>"],
    ], [
      ...fxGetWgsl("SUM"),
      ...ENTRY,
      LINEAR,
      `  if (id >= ${Hk * K}u) { return; }`,
      `  let h = id / ${K}u; let cnt = CNT[id];`,
      `  SIZES[id] = f32(cnt);`,
      `  if (ST[h * 4u] != 0u || atomicLoad(&MISC[h * 4u]) == 0u) { return; }`,
      `  if (cnt == 0u) { SHP[id] = 0.0; atomicAdd(&MISC[h * 4u + 1u], 1u); return; }`,
      `  let fc = f32(cnt);`,
      `  var sh = 0.0;`,
      `  for (var q = 0u; q < ${D4}u; q++) {`,
      `    let b = (id * ${d}u + q * 4u) * 2u;`,
      `    let nv = vec4<f32>(fxGet(b), fxGet(b + 2u), fxGet(b + 4u), fxGet(b + 6u)) / fc;`,
      `    let e = nv - CEN[id * ${D4}u + q];`,
      `    sh += dot(e, e);`,
      `    CEN[id * ${D4}u + q] = nv;`,
      `  }`,
      `  SHP[id] = sh;`,
      `}`,
    ]);
    // empty clusters, in cluster order: the farthest point not yet taken (lower index on ties)
    const reseed = kernelOf(`${key}:reseed`, [
      ["X", "read", "array<vec4<f32>>"],
      ["CEN", "read_write", "array<vec4<f32>>"],
      ["CNT", "read", "array<u32>"],
      ["BEST", "read_write", "array<f32>"],
      ["SHP", "read_write", "array<f32>"],
      ["MISC", "read", "array<u32>"],
      ["ST", "read", "array<u32>"],
    ], [
      `var<workgroup> goW: u32;`,
      `var<workgroup> emp: array<u32, ${WG}>;`,
      `var<workgroup> cnt: array<u32, ${WG}>;`,
      `var<workgroup> rv: array<f32, ${WG}>;`,
      `var<workgroup> ri: array<u32, ${WG}>;`,
      ...ENTRY,
      `  let h = wid.x;`,
      `  if (t == 0u) { goW = select(0u, 1u, ST[h * 4u] == 0u && MISC[h * 4u] > 0u && MISC[h * 4u + 1u] > 0u); }`,
      `  if (workgroupUniformLoad(&goW) == 0u) { return; }`,
      `  for (var b0 = 0u; b0 < ${K}u; b0 += ${WG}u) {`,
      `    var e = 0u;`,
      `    if (b0 + t < ${K}u) { if (CNT[h * ${K}u + b0 + t] == 0u) { e = 1u; } }`,
      `    emp[t] = e; cnt[t] = e;`,
      ...treeSum("cnt").map((l) => `  ${l}`),
      `    if (workgroupUniformLoad(&cnt[0]) == 0u) { continue; }`,
      `    for (var x = 0u; x < ${WG}u; x++) {`,
      `      if (workgroupUniformLoad(&emp[x]) == 0u) { continue; }`,
      `      let jj = h * ${K}u + b0 + x;`,
      `      var bv = -2.0; var bi = 0u;`,
      `      for (var i = t; i < ${n}u; i += ${WG}u) { let v = BEST[h * ${n}u + i]; if (v > bv) { bv = v; bi = i; } }`,
      `      rv[t] = bv; ri[t] = bi;`,
      `      for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {`,
      `        workgroupBarrier();`,
      `        if (t < s) { let w = rv[t + s]; let u = ri[t + s]; if (w > rv[t] || (w == rv[t] && u < ri[t])) { rv[t] = w; ri[t] = u; } }`,
      `      }`,
      `      let far = workgroupUniformLoad(&ri[0]);`,
      `      var part = 0.0;`,
      `      for (var q = t; q < ${D4}u; q += ${WG}u) {`,
      `        let xv = X[(h * ${n}u + far) * ${D4}u + q];`,
      `        let df = xv - CEN[jj * ${D4}u + q];`,
      `        part += dot(df, df);`,
      `        CEN[jj * ${D4}u + q] = xv;`,
      `      }`,
      `      workgroupBarrier();`,
      `      rv[t] = part;`,
      ...treeSum("rv").map((l) => `    ${l}`),
      `      if (t == 0u) { SHP[jj] = rv[0]; BEST[h * ${n}u + far] = -1.0; }`,
      `      storageBarrier();`,
      `      workgroupBarrier();`,
      `    }`,
      `  }`,
      `}`,
    ]);
    const finish = kernelOf(`${key}:finish`, [
      ["SHP", "read", "array<f32>"],
      ["MISC", "read", "array<u32>"],
      ["ST", "read_write", "array<u32>"],
      ["TOL", "read", "array<f32>"],
    ], [
      `var<workgroup> goW: u32;`,
      `var<workgroup> rs: array<f32, ${WG}>;`,
      ...ENTRY,
      `  let h = wid.x;`,
      `  if (t == 0u) { goW = select(0u, 1u, ST[h * 4u] == 0u); }`,
      `  if (workgroupUniformLoad(&goW) == 0u) { return; }`,
      `  let ch = MISC[h * 4u];`,
      `  var s = 0.0;`,
      `  for (var j = t; j < ${K}u; j += ${WG}u) { s += SHP[h * ${K}u + j]; }`,
      `  rs[t] = s;`,
      ...treeSum("rs"),
      `  if (t == 0u) {`,
      `    if (ch == 0u) {`,
      `      ST[h * 4u] = 1u; ST[h * 4u + 2u] = 0u; ST[h * 4u + 3u] = 0u;`,
      `    } else {`,
      `      let sh = rs[0];`,
      `      ST[h * 4u + 1u] += 1u; ST[h * 4u + 2u] = ch; ST[h * 4u + 3u] = bitcast<u32>(sh);`,
      `      if (sh <= TOL[h]) { ST[h * 4u] = 1u; }`,
      `    }`,
      `  }`,
      `}`,
    ]);
    return {
      workspaces: {
        cn: Hk * K * 4,
        cnt: Hk * K * 4,
        sum: Hk * K * d * 8,
        best: Hk * n * 4,
        misc: Hk * 16,
        shp: Hk * K * 4,
      },
      launches: [
        {
          kernel: prep.kernel,
          buffers: ["in:centers", "ws:cn", "ws:cnt", "ws:sum", "ws:misc"],
          workgroups: groups(prep.threads),
        },
        {
          kernel: assignKernel(dm, tl, true),
          buffers: ["in:x", "in:centers", "ws:cn", "in:labels", "ws:best", "ws:misc", "in:state"],
          workgroups: [Math.ceil(n / tl.BM), Hk, 1],
        },
        {
          kernel: accumulateKernel(dm, true),
          buffers: ["in:x", "in:labels", "ws:cnt", "ws:sum", "in:state"],
          workgroups: groups(Hk * n * D4),
        },
        {
          kernel: update,
          buffers: ["in:centers", "ws:cnt", "ws:sum", "out:sizes", "ws:shp", "ws:misc", "in:state"],
          workgroups: groups(Hk * K),
        },
        {
          kernel: reseed,
          buffers: ["in:x", "in:centers", "ws:cnt", "ws:best", "ws:shp", "ws:misc", "in:state"],
          workgroups: [Hk, 1, 1],
        },
        {
          kernel: finish,
          buffers: ["ws:shp", "ws:misc", "in:state", "in:tolerance"],
          workgroups: [Hk, 1, 1],
        },
      ],
    };
  },
  cost: (p, i): Cost => {
    const dm = dimsOf(i.x, i.centers), { Hk, n, K, d } = dm, tl = tileOf(p, dm);
    return {
      flops: 2 * Hk * n * K * d + 6 * Hk * n * d,
      bytesRead: (Hk * n * d * (2 + Math.ceil(K / tl.BN)) + Hk * K * d * (3 + Math.ceil(n / tl.BM))) * 4,
      bytesWritten: (Hk * n * (2 + 2 * d) + Hk * K * (d + 2)) * 4,
      workspaceBytes: (Hk * K * (3 + 2 * d) + Hk * n + Hk * 4) * 4,
    };
  },
};

// ---- squeezed.assign ----------------------------------------------------------------------------------------

/** Input ports of `squeezed.assign`. */
export type AssignInputs = {
  /** The points in the clustered space (L2-normalised keys), `f32 [kvHeads, points, headDim]`. */
  readonly x: PointsType;
  /** The final centres, `f32 [kvHeads, clusters, headDim]`. */
  readonly centers: CentersType;
  /** What the cluster means are taken of (the raw keys), `f32 [kvHeads, points, headDim]`. */
  readonly values: PointsType;
};
/** Output ports of `squeezed.assign`. */
export type AssignOutputs = {
  /** Each point's nearest centre, `i32 [kvHeads, points]`. */
  readonly labels: PerPointType<"i32">;
  /** Points per cluster, `f32 [kvHeads, clusters]`. */
  readonly sizes: PerClusterType;
  /** Each cluster's mean of its members' `values` (0 for an empty cluster), `f32 [kvHeads, clusters, headDim]`. */
  readonly means: CentersType;
  /** Per head Σ over points of the squared distance to their centre (in the clustered space), `f32 [kvHeads]`. */
  readonly inertia: PerHeadType;
};

/**
 * `squeezed.assign`: the final assignment of a k-means run (see {@link assignReference}): labels, sizes, the
 * members' means of `values` — Squeezed Attention's stored centroids, the raw keys' means — and the inertia.
 * Inputs `x f32 [kvHeads, points, headDim]`, `centers f32 [kvHeads, clusters, headDim]`, `values` shaped as `x`;
 * outputs `labels i32 [kvHeads, points]`, `sizes f32 [kvHeads, clusters]`, `means f32 [kvHeads, clusters,
 * headDim]`, `inertia f32 [kvHeads]`. GPU: prep, the fused assignment of `squeezed.lloyd`, fixed-point sums of
 * `values`, the means, the inertia (a fixed-order reduction). Shape errors as `squeezed.lloyd`; `values` not
 * shaped as `x`.
 */
export const assign: Operator<KMeansGpuParams, AssignInputs, AssignOutputs> = {
  name: "squeezed.assign",
  kind: "cluster",
  reference: "k-means assignment with the members' raw-key means (Squeezed Attention, arXiv 2411.09688; " +
    "official clustering.py)",
  params: KMeansGpuParams,
  inputs: { x: pointsT, centers: centersT, values: pointsT },
  outputs: { labels: perPointI, sizes: perClusterT, means: centersT, inertia: perHeadT },
  example: { dims: { points: 1024, clusters: 51 } },
  infer: (_p, i) =>
    Effect.gen(function* () {
      yield* checkPoints(i.x, i.centers, [["values", i.values, i.x.shape.join()]]);
      const [Hk, n] = i.x.shape, K = i.centers.shape[1];
      return {
        labels: { ...perPointI, shape: [Hk, n] },
        sizes: { ...perClusterT, shape: [Hk, K] },
        means: { ...centersT, shape: [...i.centers.shape] },
        inertia: { ...perHeadT, shape: [Hk] },
      } as DescsOf<AssignOutputs>;
    }),
  cpu: (_p, i) => {
    const dm = dimsOf(i.x.desc, i.centers.desc), { Hk, n, K, d } = dm;
    const r = assignReference(
      i.x.data as Float32Array,
      i.centers.data as Float32Array,
      i.values.data as Float32Array,
      dm,
    );
    const labels = allocHost({ ...perPointI, shape: [Hk, n] }),
      sizes = allocHost({ ...perClusterT, shape: [Hk, K] });
    const means = allocHost({ ...centersT, shape: [Hk, K, d] }),
      inertia = allocHost({ ...perHeadT, shape: [Hk] });
    labels.data.set(r.labels);
    sizes.data.set(r.sizes);
    means.data.set(r.means);
    inertia.data.set(r.inertia);
    return { labels, sizes, means, inertia } as HostOf<AssignOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const dm = dimsOf(i.x, i.centers), { Hk, n, K, d } = dm, D4 = d / 4, tl = tileOf(p, dm);
    const key = `squeezed.assign:${Hk}x${n}x${K}x${d}`;
    const prep = prepKernel(dm, false);
    const means = kernelOf(`${key}:means`, [
      ["CNT", "read", "array<u32>"],
      ["SUM", "read", "array<u32>"],
      ["MEANS", "read_write", "array<vec4<f32>>"],
      ["SIZES", "read_write", "array<f32>"],
    ], [
      ...fxGetWgsl("SUM"),
      ...ENTRY,
      LINEAR,
      `  if (id >= ${Hk * K}u) { return; }`,
      `  let cnt = CNT[id];`,
      `  SIZES[id] = f32(cnt);`,
      `  let fc = max(f32(cnt), 1.0);`,
      `  for (var q = 0u; q < ${D4}u; q++) {`,
      `    let b = (id * ${d}u + q * 4u) * 2u;`,
      `    var nv = vec4<f32>();`,
      `    if (cnt > 0u) { nv = vec4<f32>(fxGet(b), fxGet(b + 2u), fxGet(b + 4u), fxGet(b + 6u)) / fc; }`,
      `    MEANS[id * ${D4}u + q] = nv;`,
      `  }`,
      `}`,
    ]);
    const inertia = kernelOf(`${key}:inertia`, [["BEST", "read", "array<f32>"], [
      "INERTIA",
      "read_write",
      "array<f32>",
    ]], [
      `var<workgroup> rs: array<f32, ${WG}>;`,
      ...ENTRY,
      `  let h = wid.x;`,
      `  var s = 0.0;`,
      `  for (var i = t; i < ${n}u; i += ${WG}u) { s += BEST[h * ${n}u + i]; }`,
      `  rs[t] = s;`,
      ...treeSum("rs"),
      `  if (t == 0u) { INERTIA[h] = rs[0]; }`,
      `}`,
    ]);
    return {
      workspaces: { cn: Hk * K * 4, cnt: Hk * K * 4, sum: Hk * K * d * 8, best: Hk * n * 4 },
      launches: [
        {
          kernel: prep.kernel,
          buffers: ["in:centers", "ws:cn", "ws:cnt", "ws:sum"],
          workgroups: groups(prep.threads),
        },
        {
          kernel: assignKernel(dm, tl, false),
          buffers: ["in:x", "in:centers", "ws:cn", "out:labels", "ws:best"],
          workgroups: [Math.ceil(n / tl.BM), Hk, 1],
        },
        {
          kernel: accumulateKernel(dm, false),
          buffers: ["in:values", "out:labels", "ws:cnt", "ws:sum"],
          workgroups: groups(Hk * n * D4),
        },
        {
          kernel: means,
          buffers: ["ws:cnt", "ws:sum", "out:means", "out:sizes"],
          workgroups: groups(Hk * K),
        },
        { kernel: inertia, buffers: ["ws:best", "out:inertia"], workgroups: [Hk, 1, 1] },
      ],
    };
  },
  cost: (p, i): Cost => {
    const dm = dimsOf(i.x, i.centers), { Hk, n, K, d } = dm, tl = tileOf(p, dm);
    return {
      flops: 2 * Hk * n * K * d + 4 * Hk * n * d,
      bytesRead: (Hk * n * d * (2 + Math.ceil(K / tl.BN)) + Hk * K * d * (3 + Math.ceil(n / tl.BM))) * 4,
      bytesWritten: (Hk * n + Hk * K * (d + 1) + Hk) * 4,
      workspaceBytes: (Hk * K * (2 + 2 * d) + Hk * n) * 4,
    };
  },
};
