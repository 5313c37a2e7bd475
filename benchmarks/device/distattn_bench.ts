/**
 * DistAttention capacity on one device (issue 20): a KV cache larger than one backend's budget served sharded
 * over several backends of this process, against the unsplit cache on one backend where it fits.
 *
 * Shape: Llama-3.1-8B attention (32 query / 8 KV heads of 128), `--layers` layers of f32 KV (`8 KiB` per token
 * and layer). Per context T (`--tokens`): the budget of a backend is `--budget-frac` × the cache (plus room for
 * the decode steps); a one-shard cache of that budget refuses the context (its `ShapeError` is reported), so
 * the cache goes to ⌈1 / frac⌉ shards, each on its own backend (`openBackendShard`: its block in that
 * backend's buffers), filled by appends (one synthetic chunk of `--chunk` rows, repeated); the unsplit case is
 * one backend holding the whole cache. Then `--steps` decode steps: per layer, append one token's K/V and
 * attend one query (shards in parallel, merged on the host by LSE). Reported per T and case:
 * `step_ms` (median wall clock of one step over all layers), `layer_ms`, `transfer_bytes_per_step` (queries
 * out + `(o, lse)` back: only those cross; the appended token's K/V is counted apart as `append_bytes_per_step`),
 * the shards and their capacities, and the sharded output's max |Δ| against the unsplit one at the last step.
 *
 * Run (repo root, on the GPU machine): `deno run -A benchmarks/device/distattn_bench.ts --backend wgpu`
 * Small local check (lavapipe): `… --backend wgpu --tokens 4096 --layers 2 --steps 3 --chunk 1024`.
 * @module
 */
import { Effect } from "effect";
import { type Backend, ShapeError } from "@longctx/graph";
import { openBackendShard, shardedKv, type ShardShape } from "../../runtime/src/dist/mod.ts";
import { gitCommit } from "../lib/results.ts";
import { median, openBenchBackend, writeDeviceRows } from "../lib/gpu_run.ts";
import { parseFlags } from "../lib/args.ts";

const args = parseFlags("deno run -A benchmarks/device/distattn_bench.ts [flags]", {
  tokens: { kind: "list", default: [65536, 131072], min: 64, help: "context lengths (tokens)" },
  layers: { kind: "int", default: 8, min: 1, help: "layers (Llama-3.1-8B has 32)" },
  "budget-frac": { kind: "number", default: 0.4, min: 0.01, help: "a backend's KV budget / the cache" },
  steps: { kind: "int", default: 20, min: 1, help: "decode steps timed (median)" },
  chunk: { kind: "int", default: 8192, min: 1, help: "rows per append while filling" },
  backend: { kind: "string", default: "wgpu", choices: ["webgpu", "wgpu", "dawn"], help: "the backend" },
  out: { kind: "string", default: "benchmarks/results/distattn_device.json", help: "results file to write" },
});
const who = "distattn_bench";
const t0 = performance.now();
const shape: ShardShape = { layers: args.layers, heads: 32, kvHeads: 8, headDim: 128 };
const { heads: H, kvHeads: KH, headDim: D, layers: L } = shape;
const perToken = 2 * L * KH * D * 4;
const frac = args["budget-frac"];
const nShards = Math.ceil(1 / frac - 1e-9);

/** Deterministic pseudo-normal values (a fixed seed per purpose). */
const noise = (n: number, seed: number) => {
  let s = seed >>> 0;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    x[i] = (s / 2 ** 32 - 0.5) * 3.4;
  }
  return x;
};
const chunkK = noise(KH * args.chunk * D, 1), chunkV = noise(KH * args.chunk * D, 2);
const rowsK = (n: number) => (n === args.chunk ? chunkK : chunkK.subarray(0, KH * n * D));
const rowsV = (n: number) => (n === args.chunk ? chunkV : chunkV.subarray(0, KH * n * D));
// a token's K/V rows: [KH, 1, D] = the first row of each head of the chunk
const tokK = noise(KH * D, 3), tokV = noise(KH * D, 4);

const backends: Backend[] = [];
const backendAt = async (i: number) => {
  while (backends.length <= i) backends.push(await openBenchBackend(who, args.backend));
  return backends[i];
};
const adapter = (await backendAt(0)).adapter.name;

const rows: Record<string, unknown>[] = [];
const base = {
  backend: args.backend,
  gpu: adapter,
  model: `llama-3.1-8b heads (32/8, d=128), ${L} layers, f32 KV`,
  op: "distattn.partialAttn",
  dtype: "f32",
  commit: gitCommit(),
  driver: Deno.env.get("LONGCTX_GPU_DRIVER") ?? backends[0].adapter.driver,
  date: new Date().toISOString(),
  command: `deno run -A benchmarks/device/distattn_bench.ts ${Deno.args.join(" ")}`.trim(),
};

/** Fill a cache of `caps` shards (one per backend) with T tokens, time `steps` decode steps. */
const runCase = async (T: number, caps: number[]) => {
  let at = 0;
  const shards = [];
  for (const [i, c] of caps.entries()) {
    shards.push(await openBackendShard(await backendAt(i), shape, at, c, `${args.backend}:${i}`));
    at += c;
  }
  const kv = shardedKv(shape, shards);
  const f0 = performance.now();
  for (let l = 0; l < L; l++) {
    for (let r = 0; r < T; r += args.chunk) {
      const n = Math.min(args.chunk, T - r);
      await kv.append(l, rowsK(n), rowsV(n), n);
    }
  }
  const fillMs = performance.now() - f0;
  const q = noise(H * D, 5);
  const steps: number[] = [];
  let last: Float32Array = new Float32Array(0);
  kv.resetStats();
  for (let s = 0; s < args.steps + 1; s++) {
    const s0 = performance.now();
    for (let l = 0; l < L; l++) {
      await kv.append(l, tokK, tokV, 1);
      const p = await kv.attend(l, q, 1, T + s);
      if (l === L - 1) last = p.o;
    }
    if (s > 0) steps.push(performance.now() - s0); // the first step lowers the decode programs
  }
  const stats = { ...kv.stats };
  await kv.close();
  const perStep = (x: number) => x / (args.steps + 1);
  return {
    stepMs: median(steps),
    fillMs,
    last,
    transfer: perStep(stats.queryBytes + stats.partialBytes),
    append: perStep(stats.appendBytes),
  };
};

for (const T of args.tokens) {
  const room = T + args.steps + 1;
  const cache = room * perToken;
  const budgetTokens = Math.ceil(frac * room);
  // one shard with the budget refuses the context
  const single = await openBackendShard(await backendAt(0), shape, 0, budgetTokens, "budget");
  const fillOne = async () => {
    for (let r = 0; r < T; r += args.chunk) {
      const n = Math.min(args.chunk, T - r);
      await single.append(0, rowsK(n), rowsV(n), n);
    }
    return "accepted";
  };
  const refusal = await fillOne().catch((e) => (e instanceof ShapeError ? e.message : String(e)));
  await single.close();
  console.error(`${who}: T ${T}: one backend with a ${budgetTokens}-token budget: ${refusal}`);
  const caps = Array.from(
    { length: nShards },
    (_, i) => i < nShards - 1 ? budgetTokens : room - budgetTokens * i,
  );
  const sharded = await runCase(T, caps);
  const unsplit = await runCase(T, [room]);
  let diff = 0;
  for (let i = 0; i < unsplit.last.length; i++) {
    diff = Math.max(diff, Math.abs(unsplit.last[i] - sharded.last[i]));
  }
  for (const [impl, r, c] of [["sharded", sharded, caps], ["unsplit", unsplit, [room]]] as const) {
    const params = {
      layers: L,
      shards: c.length,
      capacities: c.join("+"),
      budgetTokens: impl === "sharded" ? budgetTokens : room,
      cacheGB: cache / 1e9,
      steps: args.steps,
      fillMs: r.fillMs,
      maxAbsDiffVsUnsplit: diff,
      singleBudgetRefusal: refusal,
    };
    const row = { ...base, context: T, impl, params };
    rows.push({ ...row, metric: "step_ms", value: r.stepMs, unit: "ms", timeMs: r.stepMs });
    rows.push({ ...row, metric: "layer_ms", value: r.stepMs / L, unit: "ms" });
    rows.push({ ...row, metric: "transfer_bytes_per_step", value: r.transfer, unit: "B" });
    rows.push({ ...row, metric: "append_bytes_per_step", value: r.append, unit: "B" });
    console.error(
      `${who}: T ${T} ${impl} [${c.join(", ")}]: ${r.stepMs.toFixed(3)} ms/step (${L} layers), ` +
        `${r.transfer} B q+(o,lse)/step, ${r.append} B appended/step, fill ${(r.fillMs / 1000).toFixed(1)} s`,
    );
  }
  console.error(`${who}: T ${T}: sharded vs unsplit max |Δo| ${diff.toExponential(2)}`);
  if (!(diff < 1e-4)) {
    console.error(`${who}: error: the sharded output differs from the unsplit one by ${diff}`);
    Deno.exit(1);
  }
}
for (const b of backends) await Effect.runPromise(b.close());
await writeDeviceRows(who, args.out, "distattn_device.json", rows, t0);
