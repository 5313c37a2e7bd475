/**
 * LongSpec on the GPU: what one speculative round costs against plain decoding, measured on the graph forward
 * (`runtime/src/model/llama_graph.ts`) with SmolLM2-135M's shapes and synthetic weights (the GGUF cannot travel to
 * the device machine; speed does not depend on the weight values), and the tree part of verification attention
 * at Llama-3.1-8B heads.
 *
 * The graph forward has no tree attention yet (the tree path runs on the CPU forward, `runtime/src/speculative/`),
 * so a round is timed by its calls of equal arithmetic (a proxy, stated in every row):
 * - `plain_ms`: one decode step at context T (`forwardArgmax` of one token, cache length reset to T each time);
 * - `verify_ms`: the target's verify call, `n` tokens at offset T with every row's logits (`logits: "all"`, read
 *   back): the prefix part of n queries over T rows plus n × n within the call, what tree verification computes
 *   (its tree mask only zeroes part of the n × n block);
 * - `draft_ms`: the self-draft's calls, one per depth (1, shape[0], …, shape[L−2] tokens) over a cache of
 *   `sinks + window` rows (its constant-size KV view), all logits read back;
 * - `predicted_speedup = τ · plain_ms / (draft_ms + verify_ms)`, τ = tokens emitted per round (`--tau`, from the
 *   CPU runs on real SmolLM2 text: benchmarks/longspec_cpu.ts), and the break-even τ = (draft + verify) / plain.
 * - `tree_attn_ms` / `prefix_attn_ms`: at Llama-3.1-8B heads (32/8, d 128), `longspec.treeAttn`'s WGSL kernel
 *   for a 69-node tree against `dense.cacheAttn` for 69 queries over T rows (the prefix part's size), and
 *   `decode_attn_ms`, `dense.cacheAttn` for 1 query (a plain step's attention).
 *
 * Run on the GPU machine (repo root): `deno run -A benchmarks/device/longspec_bench.ts --backend wgpu`
 * Small local check (lavapipe): `… --backend wgpu --layers 2 --contexts 256 --attn-contexts 512 --reps 2`.
 * @module
 */
import { Effect } from "effect";
import { type Backend, graph, hostTensor, lower, seededNormals } from "@longctx/graph";
import { dense, longspec } from "@longctx/ops";
import { type LlamaWeights, loadLlamaGraph } from "../../runtime/src/model/llama_graph.ts";
import { gitCommit } from "../lib/results.ts";
import { gpuRunner, median, openBenchBackend, type PeerRow, writeDeviceRows } from "../lib/gpu_run.ts";
import { parseFlags } from "../lib/args.ts";

const args = parseFlags("deno run -A benchmarks/device/longspec_bench.ts [flags]", {
  contexts: {
    kind: "list",
    default: [2048, 4096, 8000],
    min: 16,
    help: "SmolLM2 context lengths T (≤ 8192)",
  },
  layers: { kind: "int", default: 30, min: 1, help: "layers (SmolLM2: 30; fewer for a local check)" },
  shapes: {
    kind: "string",
    default: "1,1,1,1;2,2,2;4,16,16,16,16",
    help: "tree shapes (';'-separated, each nodes per depth)",
  },
  tau: {
    kind: "string",
    default: "2.82;2.58;5.17",
    help: "tokens per round τ per shape (';'-separated; the self-draft's on SmolLM2 at 6.2K tokens, " +
      "benchmarks/longspec_cpu.ts)",
  },
  sinks: { kind: "int", default: 4, min: 0, help: "self-draft sink rows" },
  window: { kind: "int", default: 512, min: 1, help: "self-draft window rows" },
  "attn-contexts": {
    kind: "list",
    default: [8192, 32768, 131072],
    min: 16,
    help: "Llama-3.1-8B-head attention contexts",
  },
  reps: { kind: "int", default: 10, min: 1, help: "timed repetitions (median)" },
  backend: { kind: "string", default: "wgpu", choices: ["webgpu", "wgpu", "dawn"], help: "the backend" },
  out: { kind: "string", default: "benchmarks/results/longspec_device.json", help: "results file" },
});

const t0 = performance.now();
const shapes = args.shapes.split(";").map((s) => s.split(",").map(Number));
const taus = args.tau.split(";").map(Number);
for (const s of shapes) longspec.checkTreeShape(s);
if (taus.length !== shapes.length || taus.some((t) => !(t >= 1))) {
  console.error(`error: --tau needs one value ≥ 1 per shape (${shapes.length}) — fix: e.g. --tau 2.7;3.4`);
  Deno.exit(1);
}
const backend: Backend = await openBenchBackend("longspec_bench", args.backend);
const adapter = backend.adapter;
console.error(`longspec_bench: ${args.backend} on ${adapter.name}`);
const rows: PeerRow[] = [];
const common = {
  backend: args.backend,
  gpu: adapter.name,
  driver: Deno.env.get("LONGCTX_GPU_DRIVER") ?? adapter.driver,
  date: new Date().toISOString(),
  commit: gitCommit(),
  command: `deno run -A benchmarks/device/longspec_bench.ts ${Deno.args.join(" ")}`.trim(),
};

// ---- SmolLM2 shapes, synthetic weights (seeded normals × 0.02; norms 1)
const cfg = {
  nLayer: args.layers,
  nEmbd: 576,
  nHead: 9,
  nKvHead: 3,
  headDim: 64,
  nFf: 1536,
  vocab: 49152,
  ropeTheta: 100000,
  eps: 1e-5,
  contextLength: 8192,
};
let seed = 1;
const w = (n: number) => seededNormals(n, seed++).map((x) => 0.02 * x);
const ones = (n: number) => new Float32Array(n).fill(1);
const E = cfg.nEmbd, F = cfg.nFf, QD = cfg.nHead * cfg.headDim, KD = cfg.nKvHead * cfg.headDim;
const tokEmbd = w(cfg.vocab * E);
const weights: LlamaWeights = {
  config: cfg,
  tokEmbd,
  output: tokEmbd,
  outputNorm: ones(E),
  layers: Array.from({ length: cfg.nLayer }, () => ({
    attnNorm: ones(E),
    wq: w(QD * E),
    wk: w(KD * E),
    wv: w(KD * E),
    wo: w(E * QD),
    ffnNorm: ones(E),
    wGate: w(F * E),
    wUp: w(F * E),
    wDown: w(E * F),
  })),
};
const m = await Effect.runPromise(loadLlamaGraph(weights, backend));
const toks = (n: number, s: number) =>
  Array.from({ length: n }, (_, i) => (s * 7919 + i * 104729) % cfg.vocab);
const maxNodes = Math.max(...shapes.map((s) => longspec.treeNodeCount(s)));

/** Median wall time of `reps` calls of `f`, after one warm-up (pipeline compilation). */
const timeIt = async (f: () => Promise<unknown>) => {
  await f();
  const ts: number[] = [];
  for (let r = 0; r < args.reps; r++) {
    const t = performance.now();
    await f();
    ts.push(performance.now() - t);
  }
  return median(ts);
};

// the self-draft's constant-size view: a cache of sinks + window rows
const view = args.sinks + args.window;
const dcache = await Effect.runPromise(m.newCache(view + maxNodes + 1));
await Effect.runPromise(m.forward(toks(view, 3), dcache, { logits: "none" }));
const draftMs = new Map<string, number>();
for (const s of shapes) {
  let total = 0;
  for (const n of [1, ...s.slice(0, -1)]) {
    total += await timeIt(async () => {
      await Effect.runPromise(m.forward(toks(n, 5), dcache, { logits: "all" }));
      dcache.length = view;
    });
  }
  draftMs.set(s.join(","), total);
}
dcache.release();

for (const T of args.contexts) {
  const cache = await Effect.runPromise(m.newCache(T + maxNodes + 1));
  for (let at = 0; at < T; at += 2048) {
    await Effect.runPromise(m.forward(toks(Math.min(2048, T - at), at), cache, { logits: "none" }));
  }
  const plain = await timeIt(async () => {
    await Effect.runPromise(m.forwardArgmax([17], cache));
    cache.length = T;
  });
  rows.push({
    metric: "plain_ms",
    value: plain,
    unit: "ms",
    context: T,
    impl: "graph forward, 1 token",
    ...common,
  });
  for (const [si, s] of shapes.entries()) {
    const n = longspec.treeNodeCount(s);
    const verify = await timeIt(async () => {
      await Effect.runPromise(m.forward(toks(n, 9), cache, { logits: "all" }));
      cache.length = T;
    });
    const draft = draftMs.get(s.join(","))!, tau = taus[si];
    const round = draft + verify;
    const shape = JSON.stringify(s);
    const extra = { context: T, shape, nodes: n, tau, ...common };
    rows.push({
      metric: "verify_ms",
      value: verify,
      unit: "ms",
      impl: `${n} tokens at offset T, all logits`,
      ...extra,
    });
    rows.push({
      metric: "draft_ms",
      value: draft,
      unit: "ms",
      impl: `self-draft over ${view} rows`,
      ...extra,
    });
    rows.push({
      metric: "predicted_speedup",
      value: (tau * plain) / round,
      unit: "x",
      impl: "τ·plain/round",
      ...extra,
    });
    rows.push({
      metric: "breakeven_tau",
      value: round / plain,
      unit: "tokens/round",
      impl: "round/plain",
      ...extra,
    });
    console.error(
      `T ${T} ${shape}: plain ${plain.toFixed(2)} ms, draft ${draft.toFixed(2)} ms, verify ${
        verify.toFixed(2)
      } ms → ${((tau * plain) / round).toFixed(2)}× at τ ${tau} (break-even τ ${(round / plain).toFixed(2)})`,
    );
  }
  cache.release();
}
m.release();

// ---- Llama-3.1-8B heads: the tree part against the prefix part and a decode step's attention
const run = gpuRunner(backend);
const H = 32, KH = 8, D = 128, N = 69;
const parents = Int32Array.from({ length: N }, (_, i) => (i === 0 ? -1 : i <= 4 ? 0 : 1 + ((i - 5) % 4)));
for (const T of args["attn-contexts"]) {
  const cap = T + N;
  const kd = { dtype: "f32" as const, dims: ["kvHeads", "capacity", "headDim"], shape: [KH, cap, D] };
  const kv = seededNormals(KH * cap * D, 11);
  const time = async (seqQ: number, tree: boolean) => {
    const g = graph("la");
    const qd = { dtype: "f32" as const, dims: ["heads", "seq", "headDim"], shape: [H, seqQ, D] };
    const q = g.input("q", dense.cacheAttn.inputs.q), kc = g.input("kCache", dense.cacheAttn.inputs.kCache);
    const vc = g.input("vCache", dense.cacheAttn.inputs.vCache);
    const pd = { dtype: "i32" as const, dims: ["tree"], shape: [N] };
    if (tree) {
      const par = g.input("parents", longspec.treeAttn.inputs.parents);
      g.output("o", g.add(longspec.treeAttn, { scale: 0 }, { q, kCache: kc, vCache: vc, parents: par }).o);
    } else {
      g.output("o", g.add(dense.cacheAttn, dense.cacheAttnParams(), { q, kCache: kc, vCache: vc }).o);
    }
    const gr = await Effect.runPromise(g.build());
    const p = await Effect.runPromise(
      lower(gr, backend, { q: qd, kCache: kd, vCache: kd, ...(tree ? { parents: pd } : {}) }),
    );
    await Effect.runPromise(
      p.write("q", hostTensor("f32", qd.dims, qd.shape, seededNormals(H * seqQ * D, 3))),
    );
    await Effect.runPromise(p.write("kCache", hostTensor("f32", kd.dims, kd.shape, kv)));
    await Effect.runPromise(p.write("vCache", hostTensor("f32", kd.dims, kd.shape, kv)));
    if (tree) await Effect.runPromise(p.write("parents", hostTensor("i32", pd.dims, pd.shape, parents)));
    const pos = T + N - seqQ;
    await run.run(p, false, { pos });
    const ms: number[] = [];
    for (let r = 0; r < args.reps; r++) ms.push((await run.run(p, false, { pos })).ms);
    p.release();
    return median(ms);
  };
  const treeMs = await time(N, true), prefixMs = await time(N, false), stepMs = await time(1, false);
  const extra = { context: T, heads: "32/8", headDim: D, nodes: N, ...common };
  rows.push({ metric: "tree_attn_ms", value: treeMs, unit: "ms", impl: "longspec.treeAttn", ...extra });
  rows.push({
    metric: "prefix_attn_ms",
    value: prefixMs,
    unit: "ms",
    impl: "dense.cacheAttn 69 queries",
    ...extra,
  });
  rows.push({
    metric: "decode_attn_ms",
    value: stepMs,
    unit: "ms",
    impl: "dense.cacheAttn 1 query",
    ...extra,
  });
  console.error(
    `8B heads T ${T}: tree part ${treeMs.toFixed(3)} ms, prefix part (69 queries) ${
      prefixMs.toFixed(3)
    } ms, ` +
      `one decode step ${stepMs.toFixed(3)} ms`,
  );
}
console.error(`longspec_bench: ${run.summary()}`);
await writeDeviceRows("longspec_bench", args.out, "longspec_device.json", rows, t0);
await Effect.runPromise(backend.close());
