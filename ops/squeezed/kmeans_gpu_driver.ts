/**
 * The host driver of the GPU k-means (`kmeans_gpu.ts`): lowers the four one-node programs once for a shape —
 * `squeezed.normalize`, `squeezed.seed`, `squeezed.lloyd`, `squeezed.assign` — on device buffers they share
 * (keys, normalised keys, tolerance, centres, labels, state), then per call runs the normalisation, the greedy
 * k-means++ seeding (`seedSteps` steps per run, no read-back), Lloyd iterations up to the cap, reading back only
 * the `u32 [kvHeads, 4]` state after each to stop once every head is done, and the final assignment, whose
 * labels, sizes, raw-key means and inertia are the only large read-back. {@link gpuKeyClustering} makes it a
 * `KeyClustering` for the prefix index builder (`buildPrefixIndexEffect`), one driver per shape.
 * @module
 */
import { Effect, Schema } from "effect";
import {
  type Backend,
  type DeviceBuffer,
  graph,
  type LongctxError,
  lower,
  type Program,
  ShapeError,
} from "@longctx/graph";
import type { KeyClustering, KeyClusters } from "./kmeans.ts";
import { assign, KMeansGpuParams, lloyd, normalize, seed } from "./kmeans_gpu.ts";

/** The shape of a {@link gpuKMeans} driver. */
export interface GpuKMeansShape {
  /** KV heads, clustered independently in the same launches. */
  readonly kvHeads: number;
  /** Points (keys) per head. */
  readonly points: number;
  /** Elements per key (a multiple of 4). */
  readonly headDim: number;
  /** Clusters per head, in `[1, points]`. */
  readonly clusters: number;
}

/** Options of {@link gpuKMeans}. */
export interface GpuKMeansOptions {
  /** Lloyd iterations at most (default 300, the official `max_iter`). */
  readonly iterations?: number;
  /** Seed of the k-means++ draws (default 0). */
  readonly seed?: number;
  /** Relative tolerance of the stop rule (default 1e-4). */
  readonly tol?: number;
  /** Greedy k-means++ steps per seeding run (default 32; see `KMeansGpuParams.seedSteps`). */
  readonly seedSteps?: number;
  /** The assignment tile (see `KMeansGpuParams.tile`; default 0, by size). */
  readonly tile?: 0 | 64 | 128;
  /**
   * A device buffer holding the keys, `f32 [kvHeads, points, headDim]`, bound as the programs' input (e.g. keys
   * generated on the device); without it {@link GpuKMeans.run} uploads host keys.
   */
  readonly keys?: DeviceBuffer;
  /** Time each program run with GPU timestamps where the backend has them (the timing's `gpu` fields). */
  readonly timed?: boolean;
}

/** Where the time of one {@link GpuKMeans.run} went (wall clock, ms; GPU timestamps with `timed`). */
export interface GpuKMeansTiming {
  /** The keys' upload (0 with bound keys). */
  readonly uploadMs: number;
  /** `squeezed.normalize`. */
  readonly normalizeMs: number;
  /** The k-means++ seeding (every step, to the device's completion). */
  readonly seedMs: number;
  /** Each Lloyd iteration run, including the state's read-back. */
  readonly iterationMs: readonly number[];
  /** Each Lloyd iteration's GPU time (timestamps), when `timed` and available. */
  readonly iterationGpuMs: readonly number[];
  /** The final assignment and the read-back of labels, sizes, means and inertia. */
  readonly assignMs: number;
  /** The whole run. */
  readonly totalMs: number;
}

/** The clusters of every head of one {@link GpuKMeans.run}. */
export interface GpuKMeansResult {
  /** Each key's cluster, `i32 [kvHeads, points]`. */
  readonly labels: Int32Array;
  /** Each cluster's mean of its members' raw keys (0 for an empty cluster), `f32 [kvHeads, clusters, headDim]`. */
  readonly centroids: Float32Array;
  /** Keys per cluster, `f32 [kvHeads, clusters]`. */
  readonly sizes: Float32Array;
  /** Per head the k-means inertia on the normalised keys, `f32 [kvHeads]`. */
  readonly inertia: Float32Array;
  /** Per head the Lloyd iterations run (centre updates). */
  readonly iterations: Int32Array;
  /** Per head whether the stop rule ended it (else the iteration cap did). */
  readonly converged: readonly boolean[];
  /** Where the time went. */
  readonly timing: GpuKMeansTiming;
}

/** A GPU k-means lowered for one shape (see the module doc). */
export interface GpuKMeans {
  /** The shape it was lowered for. */
  readonly shape: GpuKMeansShape;
  /** The keys input buffer, `f32 [kvHeads, points, headDim]` (the bound one, or the program's own). */
  readonly keys: DeviceBuffer;
  /**
   * Cluster the keys: with `keys`, a host array `f32 [kvHeads, rows, headDim]` whose first `points` rows per
   * head are uploaded (`rows` default `points`); without, the keys buffer as it is. Fails with `ShapeError` for
   * a host array of the wrong size and with the backend's errors.
   */
  run(keys?: Float32Array, rows?: number): Effect.Effect<GpuKMeansResult, LongctxError>;
  /** Free the buffers (idempotent). */
  release(): void;
}

const badShape = (message: string, hint: string) => new ShapeError({ message, hint });

/**
 * Lower the GPU k-means for `shape` on `backend` (see the module doc). Fails with `ShapeError` for `clusters`
 * outside `[1, points]`, a headDim not a multiple of 4 or empty dims, and with the lowering's errors.
 */
export const gpuKMeans = (
  backend: Backend,
  shape: GpuKMeansShape,
  o: GpuKMeansOptions = {},
): Effect.Effect<GpuKMeans, LongctxError> =>
  Effect.gen(function* () {
    const { kvHeads: Hk, points: n, headDim: d, clusters: K } = shape;
    if (![Hk, n, d, K].every((x) => Number.isInteger(x) && x >= 1)) {
      return yield* badShape(
        `GPU k-means of ${Hk} heads × ${n} points × ${d} into ${K} clusters`,
        "every size is a positive integer",
      );
    }
    if (K > n) {
      return yield* badShape(
        `GPU k-means of ${n} points into ${K} clusters`,
        "k-means needs 1 ≤ clusters ≤ points per head",
      );
    }
    if (d % 4 !== 0) return yield* badShape(`headDim ${d} is not a multiple of 4`, "pad the keys to 4s");
    const iterations = o.iterations ?? 300;
    if (!Number.isInteger(iterations) || iterations < 1) {
      return yield* badShape(`${iterations} Lloyd iterations`, "give at least 1 iteration");
    }
    const params = yield* Schema.decodeUnknownEffect(KMeansGpuParams)({
      tol: o.tol ?? 1e-4,
      seed: o.seed ?? 0,
      seedSteps: o.seedSteps ?? 32,
      tile: o.tile ?? 0,
    }).pipe(
      Effect.mapError((e) =>
        badShape(`GPU k-means options: ${String(e).split("\n")[0]}`, "tol in [0, 1], seedSteps in [1, 256]")
      ),
    );
    const pts = { dtype: "f32" as const, dims: ["kvHeads", "points", "headDim"], shape: [Hk, n, d] };
    const cen = { dtype: "f32" as const, dims: ["kvHeads", "clusters", "headDim"], shape: [Hk, K, d] };
    const perPoint = (dtype: "f32" | "i32") => ({ dtype, dims: ["kvHeads", "points"], shape: [Hk, n] });
    const state = { dtype: "u32" as const, dims: ["kvHeads", "stats"], shape: [Hk, 4] };
    const perHead = { dtype: "f32" as const, dims: ["kvHeads"], shape: [Hk] };

    const owned: DeviceBuffer[] = [];
    const progs: Program[] = [];
    const release = () => {
      for (const p of progs.splice(0)) p.release();
      for (const b of owned.splice(0)) backend.release(b);
    };
    const build = Effect.gen(function* () {
      const g1 = graph("squeezed.kmeans.normalize");
      const n1 = g1.add(normalize, params, { keys: g1.input("keys", normalize.inputs.keys) }, "normalize");
      g1.output("unit", n1.unit).output("tolerance", n1.tolerance);
      const p1 = yield* lower(yield* g1.build(), backend, { keys: pts }, {
        ...(o.keys ? { bind: { keys: o.keys } } : {}),
        label: "kmeans.normalize",
      });
      progs.push(p1);
      const alloc = (bytes: number, label: string) =>
        Effect.tap(backend.allocate(bytes, label), (b) => Effect.sync(() => owned.push(b)));
      const centers = yield* alloc(Hk * K * d * 4, "kmeans.centers");
      const labels = yield* alloc(Hk * n * 4, "kmeans.labels");
      const st = yield* alloc(Hk * 16, "kmeans.state");
      const unit = p1.buffer("unit"), tolerance = p1.buffer("tolerance"), keys = p1.buffer("keys");

      const g2 = graph("squeezed.kmeans.seed");
      const n2 = g2.add(seed, params, {
        x: g2.input("x", seed.inputs.x),
        centers: g2.input("centers", seed.inputs.centers),
        potential: g2.input("potential", seed.inputs.potential),
      }, "seed");
      g2.output("centers", n2.centersOut);
      const p2 = yield* lower(yield* g2.build(), backend, {
        x: pts,
        centers: cen,
        potential: perPoint("f32"),
      }, {
        bind: { x: unit, centers },
        label: "kmeans.seed",
      });
      progs.push(p2);

      const g3 = graph("squeezed.kmeans.lloyd");
      const n3 = g3.add(lloyd, params, {
        x: g3.input("x", lloyd.inputs.x),
        centers: g3.input("centers", lloyd.inputs.centers),
        labels: g3.input("labels", lloyd.inputs.labels),
        state: g3.input("state", lloyd.inputs.state),
        tolerance: g3.input("tolerance", lloyd.inputs.tolerance),
      }, "lloyd");
      g3.output("state", n3.stateOut).output("sizes", n3.sizes);
      const p3 = yield* lower(yield* g3.build(), backend, {
        x: pts,
        centers: cen,
        labels: perPoint("i32"),
        state,
        tolerance: perHead,
      }, { bind: { x: unit, centers, labels, state: st, tolerance }, label: "kmeans.lloyd" });
      progs.push(p3);

      const g4 = graph("squeezed.kmeans.assign");
      const n4 = g4.add(assign, params, {
        x: g4.input("x", assign.inputs.x),
        centers: g4.input("centers", assign.inputs.centers),
        values: g4.input("values", assign.inputs.values),
      }, "assign");
      g4.output("labels", n4.labels).output("sizes", n4.sizes).output("means", n4.means).output(
        "inertia",
        n4.inertia,
      );
      const p4 = yield* lower(yield* g4.build(), backend, { x: pts, centers: cen, values: pts }, {
        bind: { x: unit, centers, values: keys },
        label: "kmeans.assign",
      });
      progs.push(p4);
      return { p1, p2, p3, p4, labels, st, keys };
    });
    const { p1, p2, p3, p4, labels, st, keys } = yield* Effect.onError(build, () => Effect.sync(release));
    const timed = o.timed === true && backend.features.has("timestamp-query");

    const run = (host?: Float32Array, rows = n): Effect.Effect<GpuKMeansResult, LongctxError> =>
      Effect.gen(function* () {
        const t0 = performance.now();
        if (host) {
          if (!Number.isInteger(rows) || rows < n || host.length !== Hk * rows * d) {
            return yield* badShape(
              `GPU k-means keys of ${host.length} values for ${Hk} heads × ${rows} rows × ${d} (${n} clustered)`,
              `pass f32 [kvHeads, rows ≥ ${n}, ${d}]`,
            );
          }
          if (rows === n) yield* backend.upload(keys, host);
          else {
            for (let h = 0; h < Hk; h++) {
              yield* backend.upload(keys, host.subarray(h * rows * d, (h * rows + n) * d), h * n * d * 4);
            }
          }
        }
        const t1 = performance.now();
        yield* p1.run();
        const t2 = performance.now();
        yield* backend.upload(labels, new Int32Array(Hk * n).fill(-1));
        yield* backend.upload(st, new Uint32Array(Hk * 4));
        for (let s = 0; s < K; s += params.seedSteps) yield* p2.run({ scalars: { step: s }, sync: false });
        yield* backend.sync();
        const t3 = performance.now();
        const iterationMs: number[] = [], iterationGpuMs: number[] = [];
        let stats: ArrayLike<number> = new Uint32Array(Hk * 4);
        for (let it = 0; it < iterations; it++) {
          const ti = performance.now();
          const r = yield* p3.run({ timed });
          stats = (yield* p3.read("state")).data as Uint32Array;
          iterationMs.push(performance.now() - ti);
          if (r.gpuMs !== undefined) iterationGpuMs.push(r.gpuMs);
          let done = true;
          for (let h = 0; h < Hk; h++) done &&= stats[h * 4] !== 0;
          if (done) break;
        }
        const t4 = performance.now();
        yield* p4.run();
        const out = {
          labels: (yield* p4.read("labels")).data as Int32Array,
          sizes: (yield* p4.read("sizes")).data as Float32Array,
          means: (yield* p4.read("means")).data as Float32Array,
          inertia: (yield* p4.read("inertia")).data as Float32Array,
        };
        const t5 = performance.now();
        return {
          labels: out.labels,
          centroids: out.means,
          sizes: out.sizes,
          inertia: out.inertia,
          iterations: Int32Array.from({ length: Hk }, (_, h) => stats[h * 4 + 1]),
          converged: Array.from({ length: Hk }, (_, h) => stats[h * 4] !== 0),
          timing: {
            uploadMs: t1 - t0,
            normalizeMs: t2 - t1,
            seedMs: t3 - t2,
            iterationMs,
            iterationGpuMs,
            assignMs: t5 - t4,
            totalMs: t5 - t0,
          },
        };
      });
    return { shape, keys, run, release };
  });

/** A {@link KeyClustering} on the GPU and the means to free what it holds. */
export interface GpuKeyClustering {
  /** The clustering (one lowered {@link gpuKMeans} per shape, reused across calls). */
  readonly cluster: KeyClustering<LongctxError>;
  /** Free every driver's buffers (idempotent; the clustering lowers again if called afterwards). */
  release(): void;
}

/**
 * The GPU k-means as a `KeyClustering` (for `buildPrefixIndexEffect`): every KV head of a call in one driver
 * run, drivers lowered once per (shape, iterations, seed) and kept until {@link GpuKeyClustering.release}.
 * Each head's result is a `KeyClusters` as `clusterKeys` returns (sizes as integers, inertia as a number).
 */
export const gpuKeyClustering = (
  backend: Backend,
  o: Pick<GpuKMeansOptions, "tol" | "seedSteps" | "tile"> = {},
): GpuKeyClustering => {
  const drivers = new Map<string, GpuKMeans>();
  const cluster: KeyClustering<LongctxError> = (keys, s, k) =>
    Effect.gen(function* () {
      const id = `${s.kvHeads}x${s.points}x${s.headDim}x${s.clusters}:${k.iterations}:${k.seed}`;
      let drv = drivers.get(id);
      if (!drv) {
        drv = yield* gpuKMeans(backend, {
          kvHeads: s.kvHeads,
          points: s.points,
          headDim: s.headDim,
          clusters: s.clusters,
        }, { ...o, iterations: k.iterations, seed: k.seed });
        drivers.set(id, drv);
      }
      const r = yield* drv.run(keys, s.rows);
      const { points: n, clusters: K, headDim: d } = s;
      return Array.from({ length: s.kvHeads }, (_, h): KeyClusters => ({
        labels: r.labels.slice(h * n, (h + 1) * n),
        centroids: r.centroids.slice(h * K * d, (h + 1) * K * d),
        sizes: Int32Array.from(r.sizes.subarray(h * K, (h + 1) * K)),
        inertia: r.inertia[h],
        iterations: r.iterations[h],
      }));
    });
  return {
    cluster,
    release: () => {
      for (const drv of drivers.values()) drv.release();
      drivers.clear();
    },
  };
};
