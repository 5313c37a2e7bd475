/**
 * The GPU k-means of Squeezed Attention's offline clustering (ops/squeezed/kmeans_gpu.ts, its driver
 * kmeans_gpu_driver.ts) on wgpu (lavapipe here) against the float64 CPU references and the CPU k-means: one
 * Lloyd step gives the reference's labels exactly for the same centres (odd sizes, both tiles, d 64 and 128,
 * 1 and 3 heads, no near-ties), its sums (the new centres and the raw-key means) and sizes within 1e-5; empty
 * clusters take the farthest points; a finished head is left alone; the seeding picks the reference's centres;
 * the whole GPU k-means lands within a few per cent of the CPU greedy k-means++ in inertia (measured ratios in
 * ops/squeezed/README.md); the prefix index builds through it; bad inputs are typed errors.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect, Schema } from "effect";
import { type AnyOperator, type Backend, graph, type HostTensor, hostTensor, run } from "@longctx/graph";
import { squeezed } from "@longctx/ops";
import { randn } from "./ref64.ts";
import { openWgpuBackend } from "./gpu_helper.ts";

const wgpu: Backend | undefined = await openWgpuBackend();
const P = (o: Partial<squeezed.KMeansGpuParams> = {}) =>
  Schema.decodeUnknownSync(squeezed.KMeansGpuParams)(o);

const copy = (inputs: Readonly<Record<string, HostTensor>>) =>
  Object.fromEntries(
    Object.entries(inputs).map((
      [k, t],
    ) => [k, hostTensor(t.desc.dtype, t.desc.dims, t.desc.shape, t.data.slice() as never)]),
  );

/** Run `op` as a one-node graph on `backend` (each input a graph input, each output a graph output). */
const onGpu = async (
  backend: Backend,
  op: AnyOperator,
  params: unknown,
  inputs: Readonly<Record<string, HostTensor>>,
  scalars?: Readonly<Record<string, number>>,
): Promise<Record<string, HostTensor>> => {
  const g = graph(`t:${op.name}`);
  const ins: Record<string, unknown> = {};
  for (const k of Object.keys(inputs)) ins[k] = g.input(k, op.inputs[k]);
  const outs = g.add(op, params as never, ins as never, "n") as Record<string, unknown>;
  for (const k of Object.keys(op.outputs)) g.output(k, outs[k] as never);
  const built = await Effect.runPromise(g.build());
  const r = await Effect.runPromise(run(built, backend, copy(inputs) as never, scalars ? { scalars } : {}));
  return r.outputs as Record<string, HostTensor>;
};

/** The operator's float64 CPU reference on copies of `inputs`. */
const onCpu = (
  op: AnyOperator,
  params: unknown,
  inputs: Readonly<Record<string, HostTensor>>,
  scalars: Readonly<Record<string, number>> = {},
) => op.cpu(params, copy(inputs) as never, { scalars }) as Record<string, HostTensor>;

const pts = (Hk: number, n: number, d: number, x: Float32Array) =>
  hostTensor("f32", ["kvHeads", "points", "headDim"], [Hk, n, d], x);
const cens = (Hk: number, K: number, d: number, c: Float32Array) =>
  hostTensor("f32", ["kvHeads", "clusters", "headDim"], [Hk, K, d], c);

/** Key-like rows: normals around a shared direction, scaled per row; and their L2-normalised copy. */
const keysOf = (Hk: number, n: number, d: number, seed: number) => {
  const raw = randn(Hk * n * d, seed), mu = randn(d, seed + 1), scale = randn(Hk * n, seed + 2);
  for (let r = 0; r < Hk * n; r++) {
    for (let t = 0; t < d; t++) raw[r * d + t] = (raw[r * d + t] + 0.7 * mu[t]) * (2 + Math.abs(scale[r]));
  }
  return { raw, unit: squeezed.normalizeReference(raw, { Hk, n, d }, 1e-4).unit };
};

/** `K` centres per head: distinct points plus a little noise. */
const centresOf = (x: Float32Array, Hk: number, n: number, K: number, d: number, seed: number) => {
  const c = new Float32Array(Hk * K * d), e = randn(Hk * K * d, seed, 0.02);
  for (let h = 0; h < Hk; h++) {
    for (let j = 0; j < K; j++) {
      const p = (j * 7919 + h * 13) % n;
      for (let t = 0; t < d; t++) c[(h * K + j) * d + t] = x[(h * n + p) * d + t] + e[(h * K + j) * d + t];
    }
  }
  return c;
};

/** The smallest gap between the nearest and second-nearest centre over all points (float64, ‖x − c‖²). */
const minGap = (x: Float32Array, c: Float32Array, Hk: number, n: number, K: number, d: number) => {
  let gap = Infinity;
  for (let h = 0; h < Hk; h++) {
    for (let i = 0; i < n; i++) {
      let a = Infinity, b = Infinity;
      for (let j = 0; j < K; j++) {
        let s = 0;
        for (let t = 0; t < d; t++) s += (x[(h * n + i) * d + t] - c[(h * K + j) * d + t]) ** 2;
        if (s < a) b = a, a = s;
        else if (s < b) b = s;
      }
      if (K > 1) gap = Math.min(gap, b - a);
    }
  }
  return gap;
};

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = a.length === b.length ? 0 : Infinity;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
const mismatches = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = Math.abs(a.length - b.length);
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) m++;
  return m;
};
const shiftOf = (state: Uint32Array, h: number) =>
  new Float32Array(state.slice(h * 4 + 3, h * 4 + 4).buffer)[0];

// [kvHeads, points, clusters, headDim, tile]: points not a multiple of a tile, odd clusters
const STEP_GRID = [
  [1, 203, 17, 64, 64],
  [3, 301, 31, 128, 64],
  [1, 203, 17, 64, 128],
  [3, 517, 129, 128, 128],
  [2, 130, 1, 64, 0],
] as const;

test(
  "squeezed.lloyd on wgpu: one step = the float64 reference (labels exact, centres and sizes within 1e-5)",
  async () => {
    for (const [Hk, n, K, d, tile] of STEP_GRID) {
      const { raw, unit } = keysOf(Hk, n, d, 11 + n);
      const c = centresOf(unit, Hk, n, K, d, 21 + K);
      const gap = minGap(unit, c, Hk, n, K, d);
      assert.ok(gap > 1e-5, `no near-ties in the case (smallest gap ${gap})`);
      const inputs = {
        x: pts(Hk, n, d, unit),
        centers: cens(Hk, K, d, c),
        labels: hostTensor("i32", ["kvHeads", "points"], [Hk, n], new Int32Array(Hk * n).fill(-1)),
        state: hostTensor("u32", ["kvHeads", "stats"], [Hk, 4], new Uint32Array(Hk * 4)),
        tolerance: hostTensor("f32", ["kvHeads"], [Hk], new Float32Array(Hk)),
      };
      const p = P({ tile });
      const got = await onGpu(wgpu!, squeezed.lloyd, p, inputs), want = onCpu(squeezed.lloyd, p, inputs);
      const tag = `H${Hk} n${n} K${K} d${d} tile ${tile}`;
      assert.equal(mismatches(got.labelsOut.data, want.labelsOut.data), 0, `${tag}: labels`);
      assert.ok(maxAbs(got.centersOut.data, want.centersOut.data) < 1e-5, `${tag}: centres (member means)`);
      assert.equal(mismatches(got.sizes.data, want.sizes.data), 0, `${tag}: sizes`);
      const gs = got.stateOut.data as Uint32Array, ws = want.stateOut.data as Uint32Array;
      for (let h = 0; h < Hk; h++) {
        assert.deepEqual(
          [...gs.subarray(h * 4, h * 4 + 3)],
          [...ws.subarray(h * 4, h * 4 + 3)],
          `${tag}: state`,
        );
        assert.ok(Math.abs(shiftOf(gs, h) - shiftOf(ws, h)) <= 1e-4 * shiftOf(ws, h) + 1e-9, `${tag}: shift`);
      }
      // the final pass: labels, sizes and the raw keys' means, inertia
      const fin = { x: inputs.x, centers: inputs.centers, values: pts(Hk, n, d, raw) };
      const ga = await onGpu(wgpu!, squeezed.assign, p, fin), wa = onCpu(squeezed.assign, p, fin);
      assert.equal(mismatches(ga.labels.data, wa.labels.data), 0, `${tag}: final labels`);
      assert.equal(mismatches(ga.sizes.data, wa.sizes.data), 0, `${tag}: final sizes`);
      let mag = 0;
      for (const v of wa.means.data as Float32Array) mag = Math.max(mag, Math.abs(v));
      assert.ok(maxAbs(ga.means.data, wa.means.data) <= 1e-5 * mag, `${tag}: raw means within 1e-5`);
      assert.ok(
        maxAbs(ga.inertia.data, wa.inertia.data) <= 1e-5 * Math.max(...wa.inertia.data as Float32Array),
      );
    }
  },
  { ignore: wgpu === undefined },
);

test(
  "squeezed.lloyd on wgpu: empty clusters take the farthest points in cluster order; a done head is left alone",
  async () => {
    const Hk = 3, n = 257, K = 19, d = 64;
    const { unit } = keysOf(Hk, n, d, 5);
    const c = centresOf(unit, Hk, n, K, d, 6);
    // clusters 4 and 11 of head 0 and 7 of head 2 far from every point: empty after the assignment
    for (const [h, j] of [[0, 4], [0, 11], [2, 7]]) c.fill(3, (h * K + j) * d, (h * K + j + 1) * d);
    const state = new Uint32Array(Hk * 4);
    state[1 * 4] = 1, state[1 * 4 + 1] = 7; // head 1 already done after 7 iterations
    const labels = new Int32Array(Hk * n).fill(-1);
    labels.fill(2, n, 2 * n);
    const inputs = {
      x: pts(Hk, n, d, unit),
      centers: cens(Hk, K, d, c),
      labels: hostTensor("i32", ["kvHeads", "points"], [Hk, n], labels),
      state: hostTensor("u32", ["kvHeads", "stats"], [Hk, 4], state),
      tolerance: hostTensor("f32", ["kvHeads"], [Hk], new Float32Array(Hk)),
    };
    const got = await onGpu(wgpu!, squeezed.lloyd, P(), inputs), want = onCpu(squeezed.lloyd, P(), inputs);
    assert.equal(mismatches(got.labelsOut.data, want.labelsOut.data), 0);
    assert.ok(maxAbs(got.centersOut.data, want.centersOut.data) < 1e-5);
    const gc = got.centersOut.data as Float32Array, sizes = got.sizes.data as Float32Array;
    // the re-seeded centres are points, the farthest from their centres (head 0: two distinct ones)
    const rowOf = (h: number, j: number) => {
      for (let i = 0; i < n; i++) {
        let same = true;
        for (let t = 0; t < d && same; t++) same = gc[(h * K + j) * d + t] === unit[(h * n + i) * d + t];
        if (same) return i;
      }
      return -1;
    };
    assert.equal(sizes[0 * K + 4], 0);
    assert.equal(sizes[2 * K + 7], 0);
    const a = rowOf(0, 4), b = rowOf(0, 11), e = rowOf(2, 7);
    assert.ok(a >= 0 && b >= 0 && e >= 0 && a !== b, `re-seeded from points ${a}, ${b}, ${e}`);
    // head 1: centres and labels untouched, sizes 0, state as it was
    assert.deepEqual([...gc.subarray(K * d, 2 * K * d)], [...c.subarray(K * d, 2 * K * d)]);
    assert.ok((got.labelsOut.data as Int32Array).subarray(n, 2 * n).every((l) => l === 2));
    assert.ok(sizes.subarray(K, 2 * K).every((s) => s === 0));
    assert.deepEqual([...(got.stateOut.data as Uint32Array).subarray(4, 8)], [1, 7, 0, 0]);
  },
  { ignore: wgpu === undefined },
);

test(
  "squeezed.seed and squeezed.normalize on wgpu = their references (the same k-means++ picks)",
  async () => {
    for (const [Hk, n, K, d, steps] of [[2, 300, 23, 64, 5], [1, 517, 40, 128, 32]] as const) {
      const { raw } = keysOf(Hk, n, d, 31 + n);
      const nin = { keys: pts(Hk, n, d, raw) };
      const gn = await onGpu(wgpu!, squeezed.normalize, P(), nin), wn = onCpu(squeezed.normalize, P(), nin);
      assert.ok(maxAbs(gn.unit.data, wn.unit.data) < 1e-6, "unit keys");
      assert.ok(
        maxAbs(gn.tolerance.data, wn.tolerance.data) <= 1e-5 * Math.max(...wn.tolerance.data as Float32Array),
      );
      const x = pts(Hk, n, d, wn.unit.data as Float32Array);
      let gc: HostTensor = cens(Hk, K, d, new Float32Array(Hk * K * d)), wc = gc;
      // the potential before step 1 is never read: start it at noise
      let gp: HostTensor = hostTensor("f32", ["kvHeads", "points"], [Hk, n], randn(Hk * n, 9)), wp = gp;
      const p = P({ seedSteps: steps, seed: 3 });
      for (let s = 0; s < K; s += steps) {
        const g = await onGpu(wgpu!, squeezed.seed, p, { x, centers: gc, potential: gp }, { step: s });
        const w = onCpu(squeezed.seed, p, { x, centers: wc, potential: wp }, { step: s });
        gc = g.centersOut, gp = g.potentialOut, wc = w.centersOut, wp = w.potentialOut;
      }
      assert.equal(mismatches(gc.data, wc.data), 0, `H${Hk} n${n} K${K}: the same centres`);
      assert.ok(maxAbs(gp.data, wp.data) < 1e-5, "the same potentials");
    }
  },
  { ignore: wgpu === undefined },
);

/** `n` points per head around `planted` directions (spread 0.35), raw scales 0.5–3.5. */
const plantedKeys = (Hk: number, n: number, d: number, planted: number, seed: number) => {
  const dirs = randn(Hk * planted * d, seed),
    e = randn(Hk * n * d, seed + 1, 0.35),
    s = randn(Hk * n, seed + 2);
  const x = new Float32Array(Hk * n * d);
  for (let h = 0; h < Hk; h++) {
    for (let i = 0; i < n; i++) {
      const j = (i * 31 + h) % planted, sc = 0.5 + Math.min(3, Math.abs(s[h * n + i]));
      for (let t = 0; t < d; t++) {
        x[(h * n + i) * d + t] = sc * (dirs[(h * planted + j) * d + t] + e[(h * n + i) * d + t]);
      }
    }
  }
  return x;
};

test(
  "gpuKMeans on wgpu: inertia within 3 % of the CPU greedy k-means++ (3 seeds), raw means, deterministic",
  async () => {
    const Hk = 2, n = 600, d = 64, K = 30;
    const keys = plantedKeys(Hk, n, d, 12, 41);
    let gpu = 0, cpu = 0;
    for (const seed of [0, 1, 2]) {
      const drv = await Effect.runPromise(
        squeezed.gpuKMeans(wgpu!, { kvHeads: Hk, points: n, headDim: d, clusters: K }, { seed }),
      );
      try {
        const r = await Effect.runPromise(drv.run(keys));
        for (let h = 0; h < Hk; h++) {
          const c = squeezed.clusterKeys(keys.subarray(h * n * d, (h + 1) * n * d), n, d, K, { seed });
          gpu += r.inertia[h];
          cpu += c.inertia;
          assert.ok(r.converged[h] && r.iterations[h] >= 1 && r.iterations[h] < 300);
        }
        if (seed > 0) continue;
        // the stored centroids are the raw keys' member means; sizes count the labels
        const sum = new Float64Array(Hk * K * d), cnt = new Float64Array(Hk * K);
        for (let h = 0; h < Hk; h++) {
          for (let i = 0; i < n; i++) {
            const j = h * K + r.labels[h * n + i];
            cnt[j]++;
            for (let t = 0; t < d; t++) sum[j * d + t] += keys[(h * n + i) * d + t];
          }
        }
        assert.deepEqual([...r.sizes], [...cnt]);
        let err = 0;
        for (let j = 0; j < Hk * K; j++) {
          for (let t = 0; t < d; t++) {
            if (cnt[j]) err = Math.max(err, Math.abs(r.centroids[j * d + t] - sum[j * d + t] / cnt[j]));
          }
        }
        assert.ok(err < 1e-5, `raw means within 1e-5 (${err})`);
        // the same keys and seed: the same bytes
        const again = await Effect.runPromise(drv.run(keys));
        assert.deepEqual([...again.labels], [...r.labels]);
        assert.deepEqual([...again.centroids], [...r.centroids]);
      } finally {
        drv.release();
      }
    }
    const ratio = gpu / cpu;
    console.log(`Σ inertia, GPU k-means / CPU greedy k-means++ (2 heads × 3 seeds): ${ratio.toFixed(4)}`);
    assert.ok(ratio > 0.9 && ratio < 1.03, `Σ inertia GPU / CPU k-means++ = ${ratio.toFixed(4)}`);
  },
  { ignore: wgpu === undefined },
);

test(
  "buildPrefixIndexEffect with gpuKeyClustering on wgpu: a valid (hierarchical) index near the host's",
  async () => {
    const layers = 2, H = 4, Hk = 2, d = 64, F = 700;
    const p = squeezed.squeezedParams({ hierarchical: true });
    const keys = [0, 1].map((l) => plantedKeys(Hk, F, d, 15, 51 + l));
    const queries = [0, 1].map((l) => randn(H * p.obsWindow * d, 61 + l));
    const capture = { keys: (l: number) => keys[l], queries: (l: number) => queries[l] };
    const dims = { layers, heads: H, kvHeads: Hk, headDim: d, fixed: F };
    const prov = { model: "test", tokensSha256: "0".repeat(64) };
    const host = squeezed.buildPrefixIndex(capture, dims, p, prov);
    const clu = squeezed.gpuKeyClustering(wgpu!);
    try {
      const dev = await Effect.runPromise(
        squeezed.buildPrefixIndexEffect(capture, dims, p, prov, { cluster: clu.cluster }),
      );
      assert.equal(dev.clusters, host.clusters);
      assert.equal(dev.clustersL1, host.clustersL1);
      let a = 0, b = 0;
      for (let l = 0; l < layers; l++) {
        const L = dev.perLayer[l], S = dev.clustered, C = dev.clusters;
        for (let hk = 0; hk < Hk; hk++) {
          const sizes = L.sizes.subarray(hk * C, (hk + 1) * C);
          assert.equal(sizes.reduce((x, y) => x + y, 0), S);
          assert.ok(L.labels.subarray(hk * S, (hk + 1) * S).every((x) => x >= 0 && x < C));
        }
        a += L.inertia.reduce((x, y) => x + y, 0);
        b += host.perLayer[l].inertia.reduce((x, y) => x + y, 0);
      }
      assert.ok(a / b < 1.05 && a / b > 0.9, `Σ inertia device / host ${(a / b).toFixed(4)}`);
      // the artifact round-trips as the host's does
      const back = await Effect.runPromise(
        squeezed.decodePrefixIndex(await Effect.runPromise(squeezed.encodePrefixIndex(dev))),
      );
      assert.deepEqual([...back.perLayer[1].l1!.ptr], [...dev.perLayer[1].l1!.ptr]);
    } finally {
      clu.release();
    }
  },
  { ignore: wgpu === undefined },
);

test("GPU k-means: bad inputs are typed errors", async () => {
  const b = wgpu!;
  const fails = async (e: Effect.Effect<unknown, { _tag: string }>, tag: string, what: string) => {
    const r = await Effect.runPromise(Effect.result(e));
    assert.ok(r._tag === "Failure" && r.failure._tag === tag, `${what}: ${tag}`);
  };
  const shape = { kvHeads: 2, points: 50, headDim: 64, clusters: 5 };
  await fails(squeezed.gpuKMeans(b, { ...shape, clusters: 51 }), "ShapeError", "k > n");
  await fails(squeezed.gpuKMeans(b, { ...shape, clusters: 0 }), "ShapeError", "k < 1");
  await fails(squeezed.gpuKMeans(b, { ...shape, headDim: 62 }), "ShapeError", "headDim not of 4s");
  await fails(squeezed.gpuKMeans(b, shape, { iterations: 0 }), "ShapeError", "no iterations");
  const drv = await Effect.runPromise(squeezed.gpuKMeans(b, shape));
  try {
    await fails(drv.run(new Float32Array(2 * 49 * 64)), "ShapeError", "keys of the wrong size");
  } finally {
    drv.release();
  }
  // the operators' shape checks: centres of another headDim, more clusters than points, a wrong state
  const x = { dtype: "f32" as const, dims: ["kvHeads", "points", "headDim"], shape: [2, 50, 64] };
  const infer = (op: AnyOperator, descs: Record<string, unknown>) =>
    Effect.runPromise(Effect.result(op.infer(P(), descs as never)));
  const c = (K: number, dd = 64) => ({
    dtype: "f32",
    dims: ["kvHeads", "clusters", "headDim"],
    shape: [2, K, dd],
  });
  const l = { dtype: "i32", dims: ["kvHeads", "points"], shape: [2, 50] };
  const tol = { dtype: "f32", dims: ["kvHeads"], shape: [2] };
  const st = (k: number) => ({ dtype: "u32", dims: ["kvHeads", "stats"], shape: [2, k] });
  for (
    const [op, descs, what] of [
      [squeezed.lloyd, { x, centers: c(5, 32), labels: l, state: st(4), tolerance: tol }, "headDim"],
      [squeezed.lloyd, { x, centers: c(51), labels: l, state: st(4), tolerance: tol }, "k > n"],
      [squeezed.lloyd, { x, centers: c(5), labels: l, state: st(3), tolerance: tol }, "state"],
      [squeezed.assign, { x, centers: c(5), values: { ...x, shape: [2, 49, 64] } }, "values"],
      [squeezed.seed, { x, centers: c(5), potential: { ...l, dtype: "f32", shape: [2, 49] } }, "potential"],
    ] as const
  ) {
    const r = await infer(op as AnyOperator, descs);
    assert.ok(r._tag === "Failure" && r.failure._tag === "ShapeError", `${op.name}: ${what}`);
  }
  // the seeding's reference needs its step
  const sx = pts(1, 10, 4, randn(40, 1));
  assert.throws(
    () =>
      squeezed.seed.cpu(P(), {
        x: sx,
        centers: cens(1, 2, 4, new Float32Array(8)),
        potential: hostTensor("f32", ["kvHeads", "points"], [1, 10], new Float32Array(10)),
      }, { scalars: {} }),
    RangeError,
  );
}, { ignore: wgpu === undefined });
