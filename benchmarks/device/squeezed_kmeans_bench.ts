/**
 * GPU k-means speed for Squeezed Attention's offline prefix index (written for the H200, issue 16): one layer's
 * clustering of a fixed context of T tokens with the Llama-3.1-8B KV layout (8 KV heads, head dim 128, all heads
 * in the same launches) — the `S = T − 100` clustered keys of each head into `C = ⌊5 % · S⌋` clusters (the official
 * count) by `squeezed.gpuKMeans` (ops/squeezed/kmeans_gpu_driver.ts: `squeezed.normalize`, greedy k-means++
 * `squeezed.seed`, Lloyd `squeezed.lloyd` up to `--iterations`, `squeezed.assign`). The keys are structured
 * synthetic keys generated on the device (ops/sale/synthetic.ts: RoPE-like locality, sinks, heavy hitters), f32:
 * a speed input, not a model's keys.
 *
 * Reported per context (median over `--runs` runs after one warm-up run): the seeding, the Lloyd iteration (wall
 * clock including the state's read-back, and GPU time from timestamps where the backend has them), the
 * assignment's rate, the whole build of one layer (upload-free: normalisation, seeding, iterations, final
 * assignment and the read-back of labels, sizes, centroids and inertia), the iterations run (the cap, unless
 * every head converged first) and the inertia per key.
 *
 * Run (repo root, on the GPU machine): `bash .device/go.sh deno run -A benchmarks/device/squeezed_kmeans_bench.ts`
 * Options: `--contexts=32768,65536,131072 --iterations=30 --runs=1 --backend=webgpu
 * --out=benchmarks/results/squeezed_kmeans.json` (`--iterations 300`: the official cap).
 * @module
 */
import { Effect } from "effect";
import type { Backend, DeviceBuffer } from "@longctx/graph";
import { squeezed } from "@longctx/ops";
import { gitCommit } from "../lib/results.ts";
import {
  fillSynthetic,
  headGroup,
  median,
  openBenchBackend,
  type PeerRow,
  writeDeviceRows,
} from "../lib/gpu_run.ts";
import { parseFlags } from "../lib/args.ts";

const args = parseFlags("deno run -A benchmarks/device/squeezed_kmeans_bench.ts [flags]", {
  contexts: { kind: "list", default: [32768, 65536, 131072], min: 256, help: "fixed-context tokens" },
  heads: { kind: "int", default: 32, min: 1, help: "query heads (the synthetic keys' GQA group)" },
  "kv-heads": { kind: "int", default: 8, min: 1, help: "KV heads (clustered in the same launches)" },
  dim: { kind: "int", default: 128, min: 64, help: "head dim (a multiple of 4, at least 64)" },
  iterations: {
    kind: "int",
    default: 30,
    min: 1,
    help: "Lloyd iterations at most (the official cap is 300)",
  },
  "seed-steps": { kind: "int", default: 32, min: 1, help: "k-means++ steps per seeding run" },
  tile: { kind: "int", default: 0, min: 0, help: "assignment tile: 0 (by size), 64 or 128" },
  runs: { kind: "int", default: 1, min: 1, help: "timed runs per context (median), after one warm-up run" },
  backend: { kind: "string", default: "webgpu", choices: ["webgpu", "wgpu", "dawn"], help: "the backend" },
  out: { kind: "string", default: "benchmarks/results/squeezed_kmeans.json", help: "results file to write" },
});
const HK = args["kv-heads"], D = args.dim, GROUP = headGroup(args.heads, HK);
if (![0, 64, 128].includes(args.tile) || D % 4 !== 0) {
  console.error("error: --tile is 0, 64 or 128 and --dim a multiple of 4 — fix: e.g. --tile 0 --dim 128");
  Deno.exit(1);
}
const tile = args.tile as 0 | 64 | 128;
const t0 = performance.now();
const backend: Backend = await openBenchBackend("squeezed_kmeans_bench", args.backend);
const gpuName = Deno.env.get("LONGCTX_GPU_NAME") ?? backend.adapter.name;
console.error(`squeezed_kmeans_bench: ${backend.kind} on ${backend.adapter.name}`);
const must = <A, E>(e: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(e);
const rows: PeerRow[] = [];
const p0 = squeezed.squeezedParams();

for (const T of args.contexts) {
  const S = T - p0.obsWindow, C = squeezed.clusterCount(p0, T);
  const keys: DeviceBuffer = await must(backend.allocate(HK * S * D * 4, "kmeans.keys"));
  await fillSynthetic(backend, [[1, HK, S, keys]], D, GROUP, "f32");
  const drv = await must(
    squeezed.gpuKMeans(backend, { kvHeads: HK, points: S, headDim: D, clusters: C }, {
      iterations: args.iterations,
      seedSteps: args["seed-steps"],
      tile,
      keys,
      timed: true,
    }),
  );
  const runs: squeezed.GpuKMeansResult[] = [];
  try {
    await must(drv.run()); // warm-up: clocks up, every pipeline used once
    for (let r = 0; r < args.runs; r++) runs.push(await must(drv.run()));
  } finally {
    drv.release();
    backend.release(keys);
  }
  const med = (f: (r: squeezed.GpuKMeansResult) => number) => median(runs.map(f));
  const perIt = (x: readonly number[]) => (x.length ? median(x) : NaN);
  const iterMs = med((r) => perIt(r.timing.iterationMs));
  const iterGpu = med((r) => perIt(r.timing.iterationGpuMs));
  const iters = med((r) => Math.max(...r.iterations));
  const converged = med((r) => r.converged.filter((x) => x).length);
  const inertia = med((r) => r.inertia.reduce((a, b) => a + b, 0) / (HK * S));
  // the assignment GEMM of one iteration (a multiply-add counts 2)
  const flops = 2 * HK * S * C * D;
  const extra = {
    context: T,
    impl: "ours-gpu-kmeans",
    params: {
      points: S,
      clusters: C,
      kvHeads: HK,
      headDim: D,
      iterationsCap: args.iterations,
      seedSteps: args["seed-steps"],
      tile,
      runs: args.runs,
    },
  };
  const add = (metric: string, value: number, unit: string, note?: string) => {
    if (Number.isFinite(value)) rows.push({ metric, value, unit, ...extra, ...(note ? { note } : {}) });
  };
  add("kmeans_seed_ms", med((r) => r.timing.seedMs), "ms", "greedy k-means++, every centre, all heads");
  add("kmeans_iteration_ms", iterMs, "ms", "one Lloyd iteration, wall clock incl. the state read-back");
  add("kmeans_iteration_gpu_ms", iterGpu, "ms", "one Lloyd iteration, GPU timestamps");
  const itTime = Number.isFinite(iterGpu) ? iterGpu : iterMs;
  add(
    "kmeans_assign_tflops",
    flops / itTime / 1e9,
    "TFLOP/s",
    "the assignment GEMM's 2·heads·points·clusters·headDim over the whole iteration's time",
  );
  const last = rows.at(-1);
  if (last?.metric === "kmeans_assign_tflops") Object.assign(last, { flops, timeMs: itTime });
  add("kmeans_normalize_ms", med((r) => r.timing.normalizeMs), "ms");
  add("kmeans_final_assign_ms", med((r) => r.timing.assignMs), "ms", "incl. the read-back of the clusters");
  add("kmeans_build_ms", med((r) => r.timing.totalMs), "ms", "one layer, all KV heads, keys on the device");
  add("kmeans_iterations", iters, "iterations", `cap ${args.iterations}`);
  add("kmeans_converged_heads", converged, "heads", `of ${HK}`);
  add("kmeans_inertia_per_key", inertia, "squared distance", "on the normalised keys");
  console.error(
    `T=${T}: ${HK}×${S} keys → ${C} clusters: seed ${med((r) => r.timing.seedMs).toFixed(0)} ms; ` +
      `iteration ${iterMs.toFixed(2)} ms (GPU ${Number.isFinite(iterGpu) ? iterGpu.toFixed(2) : "n/a"}); ` +
      `${iters} iterations (${converged}/${HK} converged); build ${
        med((r) => r.timing.totalMs).toFixed(0)
      } ms; ` +
      `inertia/key ${inertia.toFixed(4)}`,
  );
}

const common = {
  model:
    `Llama-3.1-8B KV layout (${HK} kv heads, d ${D}), synthetic structured keys (ops/sale/synthetic.ts), f32`,
  gpu: gpuName,
  driver: Deno.env.get("LONGCTX_GPU_DRIVER") ?? backend.adapter.driver,
  date: new Date().toISOString(),
  commit: gitCommit(),
  command: `deno run -A benchmarks/device/squeezed_kmeans_bench.ts ${Deno.args.join(" ")}`.trim(),
};
const final = rows.map((r) => ({
  backend: backend.kind === "webgpu" ? "webgpu (Deno navigator.gpu)" : backend.kind,
  path: "squeezed.gpuKMeans: lowered programs of squeezed.normalize / seed / lloyd / assign",
  ...common,
  ...r,
}));
await writeDeviceRows("squeezed_kmeans_bench", args.out, "squeezed_kmeans.json", final, t0);
