/**
 * SALE speed on a GPU (written for the H200): the Llama-3.1-8B head layout (32 query heads, 8 KV heads,
 * head dim 128), contexts 8K..128K, f16 inputs with real structure (sinks, locality, heavy hitters: the
 * documented generator in ops/sale/synthetic.ts, run on the device), our SALE pipeline (quantize → estimate →
 * select → sparse attention) against our dense flash kernel, the estimation overhead share, and PyTorch SDPA
 * (flash and cuDNN, bf16) from benchmarks/device/sdpa_peer.py in the same job.
 *
 * Run (repo root, on the GPU machine): `bash .device/enter.sh deno run -A benchmarks/device/sale_bench.ts`
 * Options (`--help` lists them with their defaults): `--contexts=8192,16384,32768,65536,131072
 * --threshold=0.004 --head-chunk=8 --budget-s=300 --no-peer --out=benchmarks/results/sale.json`. Heads run in chunks of `--head-chunk` query heads (GQA
 * ratio kept) so every buffer stays far below binding limits; a context's time is the sum over chunks.
 * Path: the registry's techniques (`saleTechnique.graph`, `denseTechnique.graph`, f16) lowered once per context
 * and head chunk into programs (`lower` of `@longctx/graph`) on the backend `--backend` (default `webgpu`,
 * Deno's navigator.gpu; `wgpu`, `dawn`), run many times on device-resident inputs — the same road as the model.
 * Timing: GPU timestamps per launch (`timestamp-query`), summed per node (the SALE program runs node by node so
 * the estimation share is measured), else wall clock; median of 3 runs for contexts ≤ 32K, 1 above. Contexts
 * are skipped (and said so) when the time budget would be exceeded.
 *
 * Writes rows `{metric, value, unit, context, impl, model, backend, gpu, date, commit, command}` with metrics
 * `latency_ms` (impl ours-dense, ours-sale, ours-sale-estimation, ours-sale-sparse, sdpa-flash, sdpa-cudnn, and
 * the estimation stage's parts from one extra run: ours-sale-estimation-{quantize,estimate,select}),
 * `speedup_vs_own_dense`, `overhead_share` (estimation / our dense), `density`, `output_rel_err` (SALE vs our
 * dense on the same inputs), `ratio_vs_cudnn` (our SALE time / cuDNN time) to `--out` (and `$OUT/sale.json` when
 * `$OUT` is set), and prints a table.
 * @module
 */
import { Effect } from "effect";
import { type Backend, decodeTechniqueParams, type Graph, lower } from "@longctx/graph";
import { dense, sale } from "@longctx/ops";
import { gitCommit } from "../lib/results.ts";
import {
  fillSynthetic,
  gpuRunner,
  headGroup,
  median,
  openBenchBackend,
  sdpaPeer,
  writeDeviceRows,
} from "../lib/gpu_run.ts";
import { parseFlags } from "../lib/args.ts";

const args = parseFlags("deno run -A benchmarks/device/sale_bench.ts [flags]", {
  contexts: {
    kind: "list",
    default: [8192, 16384, 32768, 65536, 131072],
    min: 1,
    help: "context lengths (tokens)",
  },
  heads: { kind: "int", default: 32, min: 1, help: "query heads" },
  "kv-heads": { kind: "int", default: 8, min: 1, help: "KV heads (divides --heads)" },
  dim: { kind: "int", default: 128, min: 8, help: "head dim" },
  threshold: { kind: "number", default: 0.004, min: 0, help: "SALE's threshold τ" },
  "head-chunk": { kind: "int", default: 8, min: 1, help: "query heads per program (GQA ratio kept)" },
  "budget-s": { kind: "number", default: 300, min: 1, help: "wall-time budget, seconds" },
  "no-peer": { kind: "switch", help: "skip PyTorch SDPA" },
  backend: { kind: "string", default: "webgpu", choices: ["webgpu", "wgpu", "dawn"], help: "the backend" },
  out: { kind: "string", default: "benchmarks/results/sale.json", help: "results file to write" },
});

const H = args.heads, HK = args["kv-heads"], D = args.dim;
const GROUP = headGroup(H, HK);
const contexts = args.contexts;
const budgetMs = args["budget-s"] * 1000;
const t0 = performance.now();

const backend: Backend = await openBenchBackend("sale_bench", args.backend);
if (!backend.features.has("shader-f16")) {
  console.error("sale_bench: the adapter lacks shader-f16");
  Deno.exit(1);
}
const wgMem = backend.limits.maxComputeWorkgroupStorageSize;
const maxBinding = Math.min(backend.limits.maxStorageBufferBindingSize, backend.limits.maxBufferSize);
const gpuName = Deno.env.get("LONGCTX_GPU_NAME") ?? backend.adapter.name;
console.error(
  `sale_bench: ${backend.kind} on ${backend.adapter.name}, workgroup memory ${wgMem} B, max binding ${maxBinding} B, ` +
    `features ${[...backend.features]}`,
);
const p = await Effect.runPromise(decodeTechniqueParams(sale.saleTechnique, {
  threshold: args.threshold,
  workgroupMemory: Math.min(wgMem, 65536),
}));

const runner = gpuRunner(backend);
const run = runner.run;

/** Which part of SALE a node (by its operator) belongs to. */
const partOf = (op: string): "quantize" | "estimate" | "select" | "sparse" =>
  op.startsWith("sale.estimate")
    ? "estimate"
    : op.startsWith("sale.select")
    ? "select"
    : op.startsWith("sale.quantize")
    ? "quantize"
    : "sparse";

interface Row {
  metric: string;
  value: number;
  unit: string;
  context?: number;
  impl?: string;
  [k: string]: unknown;
}
const rows: Row[] = [];
const skipped: number[] = [];
let lastDense = 0, lastCtx = 0;
let warmedUp = false;

for (const S of contexts) {
  // heads per chunk: at most --head-chunk, a multiple of the GQA group, and small enough that the largest
  // buffer (o: f32 [HC, S, D], or the scores) stays under a quarter of the binding limit
  let HC = Math.min(H, args["head-chunk"]);
  const g0 = sale.saleGeometry(S, { blockQ: 64, blockK: 32, localWindow: 128 });
  while (HC > GROUP && Math.max(HC * S * D * 4, HC * g0.qBlocks * g0.kBlocks * 4) > maxBinding / 4) {
    HC /= 2;
  }
  const HKC = HC / GROUP;
  const reps = S <= 32768 ? 3 : 1;
  // predict this context's cost from the last one (quadratic) and stop before the budget runs out
  const predicted = lastDense ? lastDense * (S / lastCtx) ** 2 * reps * 2.2 : 0;
  if (performance.now() - t0 + predicted > budgetMs) {
    console.error(
      `sale_bench: skipping S=${S} (predicted ${(predicted / 1000).toFixed(0)} s exceeds the budget)`,
    );
    skipped.push(S);
    continue;
  }
  const qd = { dtype: "f16", dims: ["heads", "seq", "headDim"], shape: [HC, S, D] } as const;
  const kd = { dtype: "f16", dims: ["kvHeads", "kvSeq", "headDim"], shape: [HKC, S, D] } as const;
  const dims = { heads: HC, kvHeads: HKC, headDim: D, seq: S, kvSeq: S };
  const saleG: Graph = await Effect.runPromise(sale.saleTechnique.graph(p, dims, "prefill", "f16"));
  const denseG: Graph = await Effect.runPromise(
    dense.denseTechnique.graph(
      { scale: 0, blockQ: p.blockQ, workgroupMemory: p.workgroupMemory },
      dims,
      "prefill",
      "f16",
    ),
  );
  // Lowered once for this shape: SALE owns Q/K/V; dense reads the same device buffers (bound).
  const sp = await Effect.runPromise(lower(saleG, backend, { q: qd, k: kd, v: kd }, { label: `sale.${S}` }));
  const dp = await Effect.runPromise(lower(denseG, backend, { q: qd, k: kd, v: kd }, {
    bind: { q: sp.buffer("q"), k: sp.buffer("k"), v: sp.buffer("v") },
    label: `dense.${S}`,
  }));
  let dT = 0, eT = 0, sT = 0, dens = 0, err = 0;
  const partT = { quantize: 0, estimate: 0, select: 0 };
  const nChunks = H / HC;
  for (let c = 0; c < nChunks; c++) {
    // generate structured inputs for this chunk of heads on the device, into the programs' input buffers
    await fillSynthetic(
      backend,
      [[0, HC, S, sp.buffer("q")], [1, HKC, S, sp.buffer("k")], [2, HKC, S, sp.buffer("v")]],
      D,
      H / HK,
      "f16",
      1 + c,
    );
    // warm-up: an idle H200 sits at ~345 MHz SM clock and needs sustained load to reach 1980 MHz; run dense
    // for 2 s before the first measurement, then 400 ms before each chunk (at least once)
    const warm0 = performance.now(), warmMs = warmedUp ? 400 : 2000;
    do await run(dp); while (performance.now() - warm0 < warmMs);
    warmedUp = true;
    const d: number[] = [], e: number[] = [], s: number[] = [];
    const parts: Record<"quantize" | "estimate" | "select", number[]> = {
      quantize: [],
      estimate: [],
      select: [],
    };
    for (let r = 0; r < reps; r++) {
      d.push((await run(dp)).ms);
      const sr = await run(sp, true);
      const by = { quantize: 0, estimate: 0, select: 0, sparse: 0 };
      for (const n of sr.nodes) by[partOf(n.op)] += n.gpuMs ?? n.ms;
      e.push(by.quantize + by.estimate + by.select);
      s.push(by.sparse);
      for (const k of ["quantize", "estimate", "select"] as const) parts[k].push(by[k]);
    }
    dT += median(d);
    eT += median(e);
    sT += median(s);
    for (const k of ["quantize", "estimate", "select"] as const) partT[k] += median(parts[k]);
    const dv = (await Effect.runPromise(sp.read("density"))).data as Float32Array;
    dens += dv.reduce((a, b) => a + b, 0) / HC / nChunks;
    if (c === 0) {
      // output error of SALE against our dense kernel on the same inputs (first chunk)
      const a = (await Effect.runPromise(sp.read("o"))).data as Float32Array;
      const b = (await Effect.runPromise(dp.read("o"))).data as Float32Array;
      let num = 0, den = 0;
      for (let i = 0; i < a.length; i++) {
        num += (a[i] - b[i]) ** 2;
        den += b[i] ** 2;
      }
      err = Math.sqrt(num / den);
    }
  }
  dp.release();
  sp.release();
  lastDense = dT;
  lastCtx = S;
  const g = sale.saleGeometry(S, p);
  const flops = 4 * H * D * S * (S + 1) / 2;
  console.error(
    `S=${S} (${H / HC} chunks of ${HC} heads): dense ${dT.toFixed(2)} ms (${
      (flops / dT / 1e9).toFixed(1)
    } TFLOP/s), estimation ${eT.toFixed(2)} ms, ` +
      `sparse ${sT.toFixed(2)} ms, density ${dens.toFixed(4)} of ${g.nnzCap} blocks/head, speedup ${
        (dT / (eT + sT)).toFixed(2)
      }×, overhead ${(eT / dT * 100).toFixed(1)} %, rel err ${err.toExponential(2)}; estimation parts: ` +
      `quantize ${partT.quantize.toFixed(2)} ms, estimate ${partT.estimate.toFixed(2)} ms, select ${
        partT.select.toFixed(2)
      } ms (median of ${reps})`,
  );
  rows.push(
    { metric: "latency_ms", impl: "ours-dense", context: S, value: dT, unit: "ms" },
    { metric: "latency_ms", impl: "ours-sale", context: S, value: eT + sT, unit: "ms" },
    { metric: "latency_ms", impl: "ours-sale-estimation", context: S, value: eT, unit: "ms" },
    { metric: "latency_ms", impl: "ours-sale-sparse", context: S, value: sT, unit: "ms" },
    { metric: "speedup_vs_own_dense", impl: "ours-sale", context: S, value: dT / (eT + sT), unit: "x" },
    { metric: "overhead_share", impl: "ours-sale", context: S, value: eT / dT, unit: "fraction" },
    ...(["quantize", "estimate", "select"] as const).map((part) => ({
      metric: "latency_ms",
      impl: `ours-sale-estimation-${part}`,
      context: S,
      value: partT[part],
      unit: "ms",
    })),
    { metric: "density", impl: "ours-sale", context: S, value: dens, unit: "fraction" },
    { metric: "output_rel_err", impl: "ours-sale", context: S, value: err, unit: "fraction" },
  );
}

if (!args["no-peer"]) {
  const ran = contexts.filter((s) => !skipped.includes(s));
  const peer = await sdpaPeer("sale_bench", ran, H, HK, D);
  rows.push(...(peer as Row[]));
  for (const S of ran) {
    const cud = peer.find((r) => r.context === S && r.impl === "sdpa-cudnn");
    const ours = rows.find((r) => r.context === S && r.impl === "ours-sale" && r.metric === "latency_ms");
    if (cud && ours) {
      rows.push({
        metric: "ratio_vs_cudnn",
        impl: "ours-sale",
        context: S,
        value: ours.value / cud.value,
        unit: "x",
      });
    }
  }
}

const commit = gitCommit();
const common = {
  model:
    `Llama-3.1-8B attention heads (${H} q / ${HK} kv, d ${D}), synthetic structured inputs (ops/sale/synthetic.ts)`,
  gpu: gpuName,
  driver: Deno.env.get("LONGCTX_GPU_DRIVER") ?? backend.adapter.driver,
  date: new Date().toISOString(),
  commit,
  command: `deno run -A benchmarks/device/sale_bench.ts ${Deno.args.join(" ")}`.trim(),
  threshold: p.threshold,
  timing: runner.summary(),
};
const final = rows.map((r) => ({
  backend: backend.kind === "webgpu" ? "webgpu (Deno navigator.gpu)" : backend.kind,
  path: "lowered programs (graph/src/program.ts) of the registry's dense and sale techniques",
  ...common,
  ...r,
  gpu: r.gpu ?? gpuName,
}));
for (const S of skipped) {
  final.push({ metric: "skipped", value: S, unit: "tokens", ...common, backend: backend.kind } as never);
}
await writeDeviceRows("sale_bench", args.out, "sale.json", final, t0);
console.table(
  rows.map((r) => ({
    metric: r.metric,
    impl: r.impl,
    context: r.context,
    value: Number(r.value.toPrecision(4)),
  })),
);
console.error(`sale_bench: ${common.timing}`);
