/**
 * Squeezed Attention's offline and online parts without the model: k-means judged by inertia (against planted
 * clusters and a float64 Lloyd reference with restarts, never by labels), the stored centroids as raw means,
 * the lookup → select graph on the GPU (lavapipe here) giving the CPU's lists for the same centroids, the
 * whole squeezed graph against dense attention when every key is kept, the prefix index's quantiles, and its
 * artifact: round trip, and a typed error for a damaged, truncated, foreign, other-version or stale file.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { type Backend, graph, hostTensor, run } from "@longctx/graph";
import { dense, squeezed } from "@longctx/ops";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
import { randn, relErr } from "./ref64.ts";
import { openWgpuBackend } from "./gpu_helper.ts";

const wgpu: Backend | undefined = await openWgpuBackend();
const cpu = await Effect.runPromise(makeCpuBackend());
const sgemm = await loadSgemm();

/** `n` points on the unit sphere around `k` planted directions (spread `noise`), and the planted labels. */
const planted = (n: number, d: number, k: number, noise: number, seed: number) => {
  const dirs = randn(k * d, seed), x = new Float32Array(n * d), truth = new Int32Array(n);
  const e = randn(n * d, seed + 1, noise);
  for (let i = 0; i < n; i++) {
    const j = i % k;
    truth[i] = j;
    let s = 0;
    for (let t = 0; t < d; t++) s += (x[i * d + t] = dirs[j * d + t] + e[i * d + t]) ** 2;
    for (let t = 0; t < d; t++) x[i * d + t] /= Math.sqrt(s);
  }
  return { x, truth };
};

/** Inertia of a partition in float64: Σ ‖x − mean of its cluster‖². */
const inertiaOf = (x: Float32Array, n: number, d: number, k: number, labels: Int32Array): number => {
  const sum = new Float64Array(k * d), cnt = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    cnt[labels[i]]++;
    for (let t = 0; t < d; t++) sum[labels[i] * d + t] += x[i * d + t];
  }
  let e = 0;
  for (let i = 0; i < n; i++) {
    for (let t = 0; t < d; t++) e += (x[i * d + t] - sum[labels[i] * d + t] / cnt[labels[i]]) ** 2;
  }
  return e;
};

/** Float64 Lloyd from `k` distinct random points, `restarts` times (the reference k-means): best and mean. */
const lloyd64 = (x: Float32Array, n: number, d: number, k: number, restarts: number) => {
  let best = Infinity, sum = 0, seed = 99;
  for (let r = 0; r < restarts; r++) {
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    const picks = new Set<number>();
    while (picks.size < k) picks.add(Math.floor(rnd() * n));
    const c = new Float64Array(k * d);
    [...picks].forEach((p, j) => {
      for (let t = 0; t < d; t++) c[j * d + t] = x[p * d + t];
    });
    const labels = new Int32Array(n).fill(-1);
    for (let it = 0; it < 100; it++) {
      let changed = false;
      for (let i = 0; i < n; i++) {
        let bj = 0, bv = Infinity;
        for (let j = 0; j < k; j++) {
          let s = 0;
          for (let t = 0; t < d; t++) s += (x[i * d + t] - c[j * d + t]) ** 2;
          if (s < bv) bv = s, bj = j;
        }
        if (labels[i] !== bj) labels[i] = bj, changed = true;
      }
      if (!changed) break;
      const sum = new Float64Array(k * d), cnt = new Float64Array(k);
      for (let i = 0; i < n; i++) {
        cnt[labels[i]]++;
        for (let t = 0; t < d; t++) sum[labels[i] * d + t] += x[i * d + t];
      }
      for (let j = 0; j < k; j++) {
        if (cnt[j] > 0) { for (let t = 0; t < d; t++) c[j * d + t] = sum[j * d + t] / cnt[j]; }
      }
    }
    const e = inertiaOf(x, n, d, k, labels);
    best = Math.min(best, e);
    sum += e;
  }
  return { best, mean: sum / restarts };
};

test("k-means: inertia at the planted clusters', a float64 Lloyd's restarts as reference", () => {
  for (
    const [n, d, k, noise, seed] of [[600, 16, 12, 0.05, 1], [1001, 64, 37, 0.3, 2], [257, 8, 5, 1.0, 3]]
  ) {
    const { x, truth } = planted(n, d, k, noise, seed);
    const ours = squeezed.kmeans(x, n, d, k, { seed: 0 });
    const withBlas = squeezed.kmeans(x, n, d, k, { seed: 0, gemm: sgemm.gemm });
    const ref = lloyd64(x, n, d, k, 8), plantedInertia = inertiaOf(x, n, d, k, truth);
    const label = `n ${n} d ${d} k ${k} noise ${noise}`;
    // our reported inertia is the partition's (recomputed in float64 from the labels)
    assert.ok(
      Math.abs(ours.inertia - inertiaOf(x, n, d, k, ours.labels)) < 1e-3 * ours.inertia + 1e-6,
      label,
    );
    // single k-means++ runs (the official code's single init) over 5 seeds against random-init Lloyd restarts:
    // their median below the restarts' mean, their best within 1 % of the restarts' best
    const runs = [0, 1, 2, 3, 4].map((seed) => squeezed.kmeans(x, n, d, k, { seed }).inertia).sort((a, b) =>
      a - b
    );
    assert.ok(runs[2] <= ref.mean + 1e-9, `${label}: our median ${runs[2]}, reference mean ${ref.mean}`);
    assert.ok(runs[0] <= ref.best * 1.01 + 1e-9, `${label}: our best ${runs[0]}, reference best ${ref.best}`);
    if (noise < 0.5) {
      assert.ok(
        ours.inertia <= plantedInertia * 1.001 + 1e-9,
        `${label}: ours ${ours.inertia}, planted ${plantedInertia}`,
      );
    }
    assert.ok(
      Math.abs(withBlas.inertia - ours.inertia) <= 1e-4 * ours.inertia,
      `${label}: BLAS path differs`,
    );
    assert.equal(ours.sizes.reduce((a, b) => a + b, 0), n);
  }
  assert.throws(() => squeezed.kmeans(new Float32Array(8), 4, 2, 5), RangeError);
});

test("clusterKeys: centroids are the raw keys' means per cluster, the assignment on normalised keys", () => {
  const n = 300, d = 32, k = 15;
  const raw = randn(n * d, 7, 3);
  const r = squeezed.clusterKeys(raw, n, d, k);
  assert.equal(r.sizes.reduce((a, b) => a + b, 0), n);
  for (let j = 0; j < k; j++) {
    const mean = new Float64Array(d);
    let c = 0;
    for (let i = 0; i < n; i++) {
      if (r.labels[i] !== j) continue;
      c++;
      for (let t = 0; t < d; t++) mean[t] += raw[i * d + t];
    }
    assert.equal(c, r.sizes[j]);
    if (c === 0) continue;
    for (let t = 0; t < d; t++) assert.ok(Math.abs(mean[t] / c - r.centroids[j * d + t]) < 1e-4);
  }
  // scaling a key does not move it to another cluster (cosine assignment)
  const scaled = raw.slice();
  for (let t = 0; t < d; t++) scaled[5 * d + t] *= 10;
  assert.equal(squeezed.clusterKeys(scaled, n, d, k).labels[5], r.labels[5]);
});

/** A random lookup → select problem and τ in the middle of a gap between two scores. */
const problem = (H: number, Hk: number, seq: number, C: number, S: number, d: number, seed: number) => {
  const q = randn(H * seq * d, seed, 1.5), cen = randn(Hk * C * d, seed + 1, 1.5);
  const sizes = Float32Array.from({ length: Hk * C }, (_, i) => (i % 7 === 3 ? 0 : 1 + (i * 13) % 29));
  const labels = Int32Array.from({ length: Hk * S }, (_, i) => (i * 31 + seed) % C);
  return { q, cen, sizes, labels };
};

/** One run of the squeezed graph (`path`: the lists, or the fused decode step) on a problem: the run's result. */
const runSqueezed = async (
  backend: Backend,
  p: squeezed.SqueezedParams,
  x: ReturnType<typeof problem>,
  dims: { H: number; Hk: number; seq: number; C: number; S: number; d: number; cap: number; pos: number },
  tau: number,
  path: "lists" | "fused",
) => {
  const { H, Hk, seq, C, S, d, cap } = dims;
  const g = await Effect.runPromise(squeezed.squeezedGraph(p, `squeezed.${path}`, path));
  const kv = (data: Float32Array) =>
    hostTensor("f32", ["kvHeads", "capacity", "headDim"], [Hk, cap, d], data);
  return await Effect.runPromise(Effect.result(run(g, backend, {
    q: hostTensor("f32", ["heads", "seq", "headDim"], [H, seq, d], x.q),
    k: kv(randn(Hk * cap * d, 5)),
    v: kv(randn(Hk * cap * d, 6)),
    centroids: hostTensor("f32", ["kvHeads", "clusters", "headDim"], [Hk, C, d], x.cen),
    sizes: hostTensor("f32", ["kvHeads", "clusters"], [Hk, C], x.sizes),
    labels: hostTensor("i32", ["kvHeads", "clustered"], [Hk, S], x.labels),
    threshold: hostTensor("f32", ["one"], [1], Float32Array.of(tau)),
  }, { scalars: { pos: dims.pos } })));
};

type Problem = [
  backend: Backend,
  p: squeezed.SqueezedParams,
  x: ReturnType<typeof problem>,
  dims: Parameters<typeof runSqueezed>[3],
  tau: number,
];

/** The lists path's outputs (a failed run throws). */
const lookupSelect = async (...a: Problem) => {
  const r = await runSqueezed(...a, "lists");
  if (r._tag === "Failure") throw new Error(String(r.failure));
  return r.success.outputs;
};

/** The fused decode step's run result. */
const lookupAttend = (...a: Problem) => runSqueezed(...a, "fused");

test(
  "lookup → select → attention on wgpu: the CPU's lists and budgets for the same centroids, its o",
  async () => {
    for (
      const [H, Hk, seq, C, S, d, obs, gqa] of [
        [9, 3, 29, 37, 411, 64, 13, "head"],
        [9, 3, 1, 37, 411, 64, 13, "union"],
        [4, 1, 70, 101, 800, 128, 100, "head"],
      ] as const
    ) {
      const p = squeezed.squeezedParams({ obsWindow: obs, gqa, blockQ: 32 });
      const x = problem(H, Hk, seq, C, S, d, H + seq);
      const score = squeezed.lookupReference(0, x.q, x.cen, x.sizes, { H, Hk, seq, C, d });
      const sorted = [...score].filter((v) => v > 0).sort((a, b) => a - b);
      // τ in the widest gap near the median score: f32 rounding cannot move a score across it
      let at = Math.floor(sorted.length / 2), wide = 0;
      for (let i = Math.floor(sorted.length * 0.3); i < Math.floor(sorted.length * 0.7); i++) {
        if (sorted[i + 1] - sorted[i] > wide) wide = sorted[i + 1] - sorted[i], at = i;
      }
      const tau = (sorted[at] + sorted[at + 1]) / 2;
      const dims = { H, Hk, seq, C, S, d, cap: S + obs + seq + 9, pos: S + obs + 4 };
      const a = await lookupSelect(cpu, p, x, dims, tau), b = await lookupSelect(wgpu!, p, x, dims, tau);
      const label = `H${H}/${Hk} seq ${seq} C ${C} ${gqa}`;
      const ia = a.indices.data as Int32Array, ib = b.indices.data as Int32Array;
      let diff = 0;
      for (let i = 0; i < ia.length; i++) if (ia[i] !== ib[i]) diff++;
      assert.equal(diff, 0, `${label}: ${diff} list entries differ`);
      assert.deepEqual([...(b.density.data as Float32Array)], [...(a.density.data as Float32Array)], label);
      const budget = [...(a.density.data as Float32Array)].reduce((s, v) => s + v, 0) / H;
      assert.ok(budget > 0.05 && budget < 0.95, `${label}: budget ${budget}`);
      assert.ok(relErr(b.o.data as Float32Array, a.o.data as Float32Array) < 1e-5, `${label}: o`);
    }
  },
  { ignore: wgpu === undefined },
);

test(
  "squeezed.attend (the fused decode path) = select → indexCacheAttn, on cpu and wgpu; a call inside the context fails",
  async () => {
    for (
      const [H, Hk, seq, C, S, d, obs, gqa, extra] of [
        [9, 3, 1, 37, 411, 64, 13, "head", 4],
        [9, 3, 1, 37, 1411, 64, 13, "union", 0],
        [4, 1, 3, 101, 2500, 128, 100, "head", 17],
        [8, 2, 1, 53, 777, 64, 31, "union", 250],
      ] as const
    ) {
      const p = squeezed.squeezedParams({ obsWindow: obs, gqa, blockQ: 32 });
      const x = problem(H, Hk, seq, C, S, d, H + seq + S);
      const score = squeezed.lookupReference(0, x.q, x.cen, x.sizes, { H, Hk, seq, C, d });
      const sorted = [...score].filter((v) => v > 0).sort((a, b) => a - b);
      let at = Math.floor(sorted.length / 2), wide = 0;
      for (let i = Math.floor(sorted.length * 0.3); i < Math.floor(sorted.length * 0.7); i++) {
        if (sorted[i + 1] - sorted[i] > wide) wide = sorted[i + 1] - sorted[i], at = i;
      }
      const tau = (sorted[at] + sorted[at + 1]) / 2;
      // `extra` tokens after the fixed context before the call (the question, the answer so far)
      const dims = { H, Hk, seq, C, S, d, cap: S + obs + extra + seq + 7, pos: S + obs + extra };
      const want = await lookupSelect(cpu, p, x, dims, tau);
      const label = `H${H}/${Hk} seq ${seq} S ${S} ${gqa}`;
      for (const [name, b] of [["cpu", cpu], ["wgpu", wgpu]] as const) {
        if (!b) continue;
        const r = await lookupAttend(b, p, x, dims, tau);
        assert.ok(r._tag === "Success", `${label} ${name}: ${r._tag === "Failure" ? String(r.failure) : ""}`);
        if (r._tag !== "Success") continue;
        const got = r.success.outputs;
        const eo = relErr(got.o.data as Float32Array, want.o.data as Float32Array);
        const el = relErr(got.lse.data as Float32Array, want.lse.data as Float32Array);
        assert.ok(eo < (name === "cpu" ? 1e-7 : 1e-5), `${label} ${name}: o ${eo}`);
        assert.ok(el < (name === "cpu" ? 1e-7 : 1e-5), `${label} ${name}: lse ${el}`);
        const dg = [...(got.density.data as Float32Array)], dw = [...(want.density.data as Float32Array)];
        for (let h = 0; h < H; h++) {
          assert.ok(Math.abs(dg[h] - dw[h]) < 1e-6, `${label} ${name}: density ${h}`);
        }
      }
      const budget = [...(want.density.data as Float32Array)].reduce((s, v) => s + v, 0) / H;
      assert.ok(budget > 0.05 && budget < 0.95, `${label}: budget ${budget}`);
      // τ above 1/seq drops the observation window too: still equal
      if (seq === 3) {
        const hi = await lookupSelect(cpu, p, x, dims, 0.5);
        for (const b of [cpu, wgpu]) {
          if (!b) continue;
          const r = await lookupAttend(b, p, x, dims, 0.5);
          assert.ok(r._tag === "Success");
          if (r._tag === "Success") {
            assert.ok(relErr(r.success.outputs.o.data as Float32Array, hi.o.data as Float32Array) < 1e-5);
          }
        }
      }
      for (const b of [cpu, wgpu]) {
        if (!b) continue;
        const r = await lookupAttend(b, p, x, { ...dims, pos: S + obs - 1 }, tau);
        assert.ok(r._tag === "Failure", `${label}: a call inside the fixed context ran`);
        assert.match(
          String(r._tag === "Failure" ? JSON.stringify(r.failure) + r.failure : ""),
          /fixed context/,
        );
      }
    }
  },
);

test("squeezed graph keeping every key (τ below every score) is dense attention over the cache", async () => {
  const H = 9,
    Hk = 3,
    seq = 21,
    C = 30,
    S = 300,
    d = 64,
    obs = 20,
    cap = S + obs + seq + 5,
    pos = S + obs + 3;
  const p = squeezed.squeezedParams({ obsWindow: obs });
  const x = problem(H, Hk, seq, C, S, d, 3);
  x.sizes.fill(2); // no empty cluster: every label's score is positive
  const got = await lookupSelect(cpu, p, x, { H, Hk, seq, C, S, d, cap, pos }, -1);
  const gb = graph("dense.cache");
  const q = gb.input("q", dense.cacheAttn.inputs.q);
  const kc = gb.input("kCache", dense.cacheAttn.inputs.kCache);
  const vc = gb.input("vCache", dense.cacheAttn.inputs.vCache);
  const params = { scale: 0, window: 0, layout: "heads", splitKeys: 64, compacted: false } as const;
  gb.output("o", gb.add(dense.cacheAttn, params, { q, kCache: kc, vCache: vc }, "attn").o);
  const g = await Effect.runPromise(gb.build());
  const kv = (data: Float32Array) =>
    hostTensor("f32", ["kvHeads", "capacity", "headDim"], [Hk, cap, d], data);
  const { outputs } = await Effect.runPromise(run(g, cpu, {
    q: hostTensor("f32", ["heads", "seq", "headDim"], [H, seq, d], x.q),
    kCache: kv(randn(Hk * cap * d, 5)), // lookupSelect's K/V
    vCache: kv(randn(Hk * cap * d, 6)),
  }, { scalars: { pos } }));
  const err = relErr(got.o.data as Float32Array, outputs.o.data as Float32Array);
  assert.ok(err < 1e-6, `o against dense.cacheAttn: ${err}`);
  assert.deepEqual([...(got.density.data as Float32Array)], new Array(H).fill(1));
});

test("squeezed.select refuses a call inside the fixed context: the run fails naming it", async () => {
  const H = 2, Hk = 1, seq = 4, C = 5, S = 50, d = 64, obs = 10, cap = 100;
  const p = squeezed.squeezedParams({ obsWindow: obs });
  const x = problem(H, Hk, seq, C, S, d, 1);
  const g = await Effect.runPromise(squeezed.squeezedGraph(p));
  const kv = (data: Float32Array) =>
    hostTensor("f32", ["kvHeads", "capacity", "headDim"], [Hk, cap, d], data);
  const r = await Effect.runPromise(
    Effect.result(run(g, cpu, {
      q: hostTensor("f32", ["heads", "seq", "headDim"], [H, seq, d], x.q),
      k: kv(randn(Hk * cap * d, 5)),
      v: kv(randn(Hk * cap * d, 6)),
      centroids: hostTensor("f32", ["kvHeads", "clusters", "headDim"], [Hk, C, d], x.cen),
      sizes: hostTensor("f32", ["kvHeads", "clusters"], [Hk, C], x.sizes),
      labels: hostTensor("i32", ["kvHeads", "clustered"], [Hk, S], x.labels),
      threshold: hostTensor("f32", ["one"], [1], Float32Array.of(0)),
    }, { scalars: { pos: S + obs - 2 } })).pipe(
      Effect.catchDefect((e) => Effect.succeed({ _tag: "Defect", e })),
    ),
  );
  assert.ok(r._tag === "Failure", `expected a typed failure, got ${r._tag}`);
  assert.match(String((r as { failure: { message: string } }).failure.message), /inside the fixed context/);
});

/** A small synthetic prefix index (2 layers, 4/2 heads) with the K/V kept. */
const smallIndex = (tokens: readonly number[]) =>
  Effect.gen(function* () {
    const L = 2, H = 4, Hk = 2, d = 16, F = 160, p = squeezed.squeezedParams({ obsWindow: 20 });
    const keys = [randn(Hk * F * d, 1, 2), randn(Hk * F * d, 2, 2)];
    const values = [randn(Hk * F * d, 3), randn(Hk * F * d, 4)];
    const queries = [randn(H * 20 * d, 5, 2), randn(H * 20 * d, 6, 2)];
    const index = squeezed.buildPrefixIndex(
      { keys: (l) => keys[l], queries: (l) => queries[l], values: (l) => values[l] },
      { layers: L, heads: H, kvHeads: Hk, headDim: d, fixed: F },
      p,
      { model: "test-model", tokensSha256: yield* squeezed.tokensSha256(tokens) },
    );
    return { index, keys, queries, p };
  });

test("prefix index: geometry, quantile table (τ(p) the pooled scores' p-quantile), budget ≈ 1 − p", async () => {
  const { index, queries, p } = await Effect.runPromise(smallIndex([1, 2, 3]));
  assert.equal(index.clusters, squeezed.clusterCount(p, 160));
  assert.equal(index.clusters, 7); // ⌊0.05 · 140⌋
  // the pooled per-key scores, recomputed from the stored clusters
  const pooled: number[] = [];
  for (let l = 0; l < 2; l++) {
    const L = index.perLayer[l];
    const s = squeezed.lookupReference(0, queries[l], L.centroids, L.sizes, {
      H: 4,
      Hk: 2,
      seq: 20,
      C: 7,
      d: 16,
    });
    for (let h = 0; h < 4; h++) {
      for (let i = 0; i < 140; i++) pooled.push(s[h * 7 + L.labels[(h >> 1) * 140 + i]]);
    }
  }
  pooled.sort((a, b) => a - b);
  for (const pc of [0.5, 0.7, 0.8, 0.9]) {
    const at = pc * (pooled.length - 1), lo = Math.floor(at);
    const want = pooled[lo] + (pooled[Math.min(lo + 1, pooled.length - 1)] - pooled[lo]) * (at - lo);
    const tau = squeezed.thresholdOf(index, pc, "head");
    assert.ok(Math.abs(tau - want) <= 1e-6 * Math.abs(want), `p ${pc}: τ ${tau}, want ${want}`);
    const kept = pooled.filter((v) => v > tau).length / pooled.length;
    assert.ok(Math.abs(kept - (1 - pc)) < 0.08, `p ${pc}: kept ${kept}`);
  }
  assert.ok(squeezed.thresholdOf(index, 0.9, "union") >= squeezed.thresholdOf(index, 0.9, "head"));
});

test("prefix index artifact: round trip; damaged, truncated, foreign, other-version and stale files are typed errors", async () => {
  const tokens = [5, 6, 7, 8];
  const { index } = await Effect.runPromise(smallIndex(tokens));
  const bytes = await Effect.runPromise(squeezed.encodePrefixIndex(index));
  const back = await Effect.runPromise(squeezed.decodePrefixIndex(bytes));
  assert.deepEqual(back.perLayer[1].labels, index.perLayer[1].labels);
  assert.deepEqual(back.perLayer[0].centroids, index.perLayer[0].centroids);
  assert.deepEqual(back.quantiles.union, index.quantiles.union);
  assert.deepEqual(back.kv!.v[1], index.kv!.v[1]);
  assert.equal(back.tokensSha256, index.tokensSha256);
  const reason = async (b: Uint8Array) => {
    const r = await Effect.runPromise(Effect.result(squeezed.decodePrefixIndex(b)));
    if (r._tag !== "Failure") throw new Error("expected a failure");
    assert.equal(r.failure._tag, "PrefixIndexError");
    assert.ok(r.failure.hint.length > 0);
    return r.failure.reason;
  };
  const flipped = bytes.slice();
  flipped[Math.floor(bytes.length / 2)] ^= 0x40;
  assert.equal(await reason(flipped), "corrupt");
  assert.equal(await reason(bytes.slice(0, bytes.length - 100)), "corrupt");
  assert.equal(
    await reason(new TextEncoder().encode("GGUF and some more bytes than the magic and a hash needs")),
    "not-an-index",
  );
  // another version, with a valid checksum
  const v2 = { ...index, perLayer: index.perLayer };
  const enc2 = await Effect.runPromise(squeezed.encodePrefixIndex(v2));
  const text = new TextDecoder().decode(enc2.subarray(12, 12 + new DataView(enc2.buffer).getUint32(8, true)));
  const patched = new TextEncoder().encode(text.replace('"version":1', '"version":7'));
  assert.equal(patched.length, text.length);
  const other = enc2.slice();
  other.set(patched, 12);
  const body = other.subarray(0, other.length - 32);
  other.set(new Uint8Array(await crypto.subtle.digest("SHA-256", body.slice())), other.length - 32);
  assert.equal(await reason(other), "version");
  // stale: other tokens or another model
  const expect = {
    model: "test-model",
    tokensSha256: index.tokensSha256,
    layers: 2,
    heads: 4,
    kvHeads: 2,
    headDim: 16,
  };
  await Effect.runPromise(squeezed.checkPrefixIndex(back, expect));
  const other1 = await Effect.runPromise(Effect.result(squeezed.checkPrefixIndex(back, {
    ...expect,
    tokensSha256: await Effect.runPromise(squeezed.tokensSha256([5, 6, 7, 9])),
  })));
  assert.equal(other1._tag === "Failure" && other1.failure.reason, "stale");
  const other2 = await Effect.runPromise(
    Effect.result(squeezed.checkPrefixIndex(back, { ...expect, model: "m2" })),
  );
  assert.equal(other2._tag === "Failure" && other2.failure.reason, "stale");
  const other3 = await Effect.runPromise(
    Effect.result(squeezed.checkPrefixIndex(back, { ...expect, heads: 8 })),
  );
  assert.equal(other3._tag === "Failure" && other3.failure.reason, "shape");
});

test("squeezed params: schema errors name the parameter; clusterCount refuses a context within the window", () => {
  assert.throws(() => squeezed.squeezedParams({ percentile: 1.5 }), /percentile/);
  assert.throws(() => squeezed.squeezedParams({ gqa: "max" as never }), /gqa/);
  assert.throws(() => squeezed.squeezedParams({ bogus: 1 } as never), /bogus/);
  assert.throws(() => squeezed.clusterCount(squeezed.squeezedParams({}), 100), /obsWindow/);
  assert.equal(squeezed.clusterCount(squeezed.squeezedParams({}), 102), 1);
});

test("hierarchical index: L1 ranges partition the fine clusters in parent order; sizes add up; round trip", async () => {
  const L = 2, H = 4, Hk = 2, d = 16, F = 520;
  const p = squeezed.squeezedParams({ obsWindow: 20, hierarchical: true, percentClustersL1: 1 });
  const keys = [randn(Hk * F * d, 11, 2), randn(Hk * F * d, 12, 2)];
  const queries = [randn(H * 20 * d, 13, 2), randn(H * 20 * d, 14, 2)];
  const index = squeezed.buildPrefixIndex(
    { keys: (l) => keys[l], queries: (l) => queries[l] },
    { layers: L, heads: H, kvHeads: Hk, headDim: d, fixed: F },
    p,
    { model: "m", tokensSha256: "t" },
  );
  const C = index.clusters, C1 = index.clustersL1;
  assert.equal(C, 25); // ⌊0.05 · 500⌋
  assert.equal(C1, 5); // ⌊0.01 · 500⌋
  for (const lay of index.perLayer) {
    const l1 = lay.l1!;
    for (let hk = 0; hk < Hk; hk++) {
      const ptr = l1.ptr.subarray(hk * (C1 + 1), (hk + 1) * (C1 + 1));
      assert.equal(ptr[0], 0);
      assert.equal(ptr[C1], C);
      for (let a = 0; a < C1; a++) {
        let n = 0;
        for (let c = ptr[a]; c < ptr[a + 1]; c++) {
          assert.equal(l1.parent[hk * C + c], a);
          n += lay.sizes[hk * C + c];
        }
        assert.equal(l1.sizes[hk * C1 + a], n);
      }
      // labels still point at clusters holding those keys: sizes are the label counts
      const count = new Float32Array(C);
      for (let i = 0; i < 500; i++) count[lay.labels[hk * 500 + i]]++;
      assert.deepEqual([...count], [...lay.sizes.subarray(hk * C, (hk + 1) * C)]);
    }
  }
  assert.ok(squeezed.thresholdOf(index, 0.7, "head", 1) > 0);
  const back = await Effect.runPromise(
    Effect.flatMap(squeezed.encodePrefixIndex(index), (b) => squeezed.decodePrefixIndex(b)),
  );
  assert.deepEqual(back.perLayer[1].l1!.ptr, index.perLayer[1].l1!.ptr);
  assert.deepEqual(back.quantilesL1!.head, index.quantilesL1!.head);
  assert.throws(() => squeezed.thresholdOf({ ...index, quantilesL1: undefined }, 0.5, "head", 1), RangeError);
});

/** One lookup (flat or hierarchical) through its operator on `backend`. */
const lookupOn = async (backend: Backend, hier: boolean, tau1: number, x: ReturnType<typeof hierProblem>) => {
  const { H, Hk, seq, C, C1, d } = x.dims;
  const gb = graph("lookup");
  const q = gb.input("q", squeezed.lookup.inputs.q);
  const cen = gb.input("centroids", squeezed.lookup.inputs.centroids);
  const sizes = gb.input("sizes", squeezed.lookup.inputs.sizes);
  const inputs: Record<string, ReturnType<typeof hostTensor>> = {
    q: hostTensor("f32", ["heads", "seq", "headDim"], [H, seq, d], x.q),
    centroids: hostTensor("f32", ["kvHeads", "clusters", "headDim"], [Hk, C, d], x.c),
    sizes: hostTensor("f32", ["kvHeads", "clusters"], [Hk, C], x.sizes),
  };
  if (hier) {
    const o = gb.add(squeezed.lookupHier, squeezed.squeezedParams({}), {
      q,
      centroids: cen,
      sizes,
      centroidsL1: gb.input("centroidsL1", squeezed.lookupHier.inputs.centroidsL1),
      sizesL1: gb.input("sizesL1", squeezed.lookupHier.inputs.sizesL1),
      ptrL1: gb.input("ptrL1", squeezed.lookupHier.inputs.ptrL1),
      parentL1: gb.input("parentL1", squeezed.lookupHier.inputs.parentL1),
      thresholdL1: gb.input("thresholdL1", squeezed.lookupHier.inputs.thresholdL1),
    }, "hier");
    gb.output("score", o.score);
    Object.assign(inputs, {
      centroidsL1: hostTensor("f32", ["kvHeads", "clustersL1", "headDim"], [Hk, C1, d], x.c1),
      sizesL1: hostTensor("f32", ["kvHeads", "clustersL1"], [Hk, C1], x.sizes1),
      ptrL1: hostTensor("i32", ["kvHeads", "boundsL1"], [Hk, C1 + 1], x.ptr),
      parentL1: hostTensor("i32", ["kvHeads", "clusters"], [Hk, C], x.parent),
      thresholdL1: hostTensor("f32", ["one"], [1], Float32Array.of(tau1)),
    });
  } else {gb.output(
      "score",
      gb.add(squeezed.lookup, squeezed.squeezedParams({}), { q, centroids: cen, sizes }, "flat").score,
    );}
  const g = await Effect.runPromise(gb.build());
  const { outputs } = await Effect.runPromise(run(g, backend, inputs as never));
  return outputs.score.data as Float32Array;
};

/** A hierarchical lookup problem: fine clusters in contiguous runs under C1 L1 clusters. */
const hierProblem = (H: number, Hk: number, seq: number, C: number, C1: number, d: number, seed: number) => {
  const q = randn(H * seq * d, seed, 1.5),
    c = randn(Hk * C * d, seed + 1, 1.5),
    c1 = randn(Hk * C1 * d, seed + 2, 1.5);
  const sizes = Float32Array.from({ length: Hk * C }, (_, i) => 1 + (i * 7) % 13);
  const ptr = new Int32Array(Hk * (C1 + 1)),
    parent = new Int32Array(Hk * C),
    sizes1 = new Float32Array(Hk * C1);
  for (let hk = 0; hk < Hk; hk++) {
    for (let a = 0; a <= C1; a++) ptr[hk * (C1 + 1) + a] = Math.round((a * C) / C1);
    for (let a = 0; a < C1; a++) {
      for (let x = ptr[hk * (C1 + 1) + a]; x < ptr[hk * (C1 + 1) + a + 1]; x++) {
        parent[hk * C + x] = a;
        sizes1[hk * C1 + a] += sizes[hk * C + x];
      }
    }
  }
  return { q, c, c1, sizes, sizes1, ptr, parent, dims: { H, Hk, seq, C, C1, d } };
};

test("hierarchical lookup: every L1 cluster passing = the flat lookup; a real τ₁ skips work; wgpu = cpu", async () => {
  // the last: a decode step over 1300 clusters, its statistics split in parts (squeezed.lookupParts)
  for (
    const [H, Hk, seq, C, C1, d] of [[9, 3, 17, 60, 6, 64], [4, 1, 1, 101, 10, 128], [
      4,
      2,
      1,
      1300,
      30,
      64,
    ]] as const
  ) {
    const x = hierProblem(H, Hk, seq, C, C1, d, H + C);
    const flat = await lookupOn(cpu, false, 0, x);
    const all = await lookupOn(cpu, true, -1, x);
    assert.ok(relErr(all, flat) < 1e-6, `τ₁ = −1 against flat: ${relErr(all, flat)}`);
    // a τ₁ at the median L1 score: about half the fine clusters are never computed, and score 0
    const s1 = squeezed.lookupReference(0, x.q, x.c1, x.sizes1, { H, Hk, seq, C: C1, d });
    const sorted1 = [...s1].sort((a, b) => a - b), mid = s1.length >> 1;
    const tau1 = (sorted1[mid] + sorted1[mid + 1]) / 2; // between two scores: rounding cannot cross it
    const r = squeezed.lookupHierReference(0, x.q, x.c, x.sizes, x.c1, x.sizes1, x.ptr, tau1, x.dims);
    assert.ok(r.evaluated < 0.8 * H * C && r.evaluated > 0.1 * H * C, `evaluated ${r.evaluated} of ${H * C}`);
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / (H / Hk));
      for (let c = 0; c < C; c++) {
        if (!(s1[h * C1 + x.parent[hk * C + c]] > tau1)) assert.equal(r.score[h * C + c], 0);
      }
    }
    if (wgpu) {
      const gpu = await lookupOn(wgpu, true, tau1, x), host = await lookupOn(cpu, true, tau1, x);
      assert.ok(relErr(gpu, host) < 1e-5, `wgpu against cpu: ${relErr(gpu, host)}`);
      const gpuFlat = await lookupOn(wgpu, false, 0, x);
      assert.ok(relErr(gpuFlat, flat) < 1e-5, `flat, wgpu against cpu: ${relErr(gpuFlat, flat)}`);
    }
  }
});
