/**
 * SmolLM2-135M-Instruct prefill and decode speed, on the CPU path (f32 weights, OpenBLAS sgemm through FFI,
 * dense causal attention) or the graph forward on a GPU (`runtime/src/model/llama_graph.ts`: f32, tiled matmuls, flash
 * prefill, split-KV decode, one command buffer per token): prefill of `--context` tokens (one forward over the
 * whole prompt, or `--chunk`-token forwards), then `--decode` greedy tokens one at a time through the KV cache.
 * Appends rows to `benchmarks/results/model.json` (`LONGCTX_RESULTS_DIR` overrides the folder):
 * `prefill_ms`, `prefill_tokens_per_s`, `decode_ms_per_token`, `decode_tokens_per_s`, and, with the real
 * model, the prefix's `perplexity` (a sanity check that the run is the real model on real text).
 *
 *   deno run -A benchmarks/model_bench.ts [--context 4096] [--decode 32] [--doc paradise-lost] [--chunk 4096]
 *       [--backend cpu|wgpu|webgpu] [--synthetic-weights] [--repeats 3] [--seed 1] [--attention dense|<technique>]
 *   bun benchmarks/model_bench.ts --context 4096
 *
 * `--backend cpu` (default) is the graph forward on the cpu backend (OpenBLAS GEMMs, the path `run` takes on the
 * CPU); `--backend cpu --forward llama` the CPU forward of `llama.ts` (the fixture-checked reference); OpenBLAS
 * threads: `OPENBLAS_NUM_THREADS` (default: all cores). `--backend wgpu` (wgpu-native through FFI, `LONGCTX_WGPU_LIB`) or `webgpu` (Deno's
 * `navigator.gpu`) run the GPU forward: GPU timings are wall clock around each forward, which ends by reading
 * back the 4-byte argmax (so the GPU work is complete), after one warm-up prefill + decode (pipeline
 * compilation); `--repeats` runs of prefill + decode, one row per run (`repeat` field). Without a GPU the
 * script prints why and exits with status 1.
 *
 * `--attention <technique>` (a registered technique other than dense, e.g. `sale`; GPU backends only): the first
 * prefill chunk runs the technique's prefill graph (SALE: arXiv 2505.24179 §3, default parameters, f32 `sale.*`
 * operators) in every layer as the GPU forward's attention sub-graph (`attentionGraph`);
 * rows get `impl: "sale"` and the mean density; decode steps run the technique's KV-cache decode when it has
 * one (`cacheDecode`: HiP's mask refreshed every 8 steps), else dense (split-KV); a `denseLayers` parameter
 * keeps that many first layers dense.
 * `--synthetic-weights` (GPU backends only) needs neither the GGUF, the tokenizer nor the documents: the model
 * has SmolLM2-135M's shapes (from the plans registry, `plans/src/models.ts`) and seeded random weights
 * (normal, std 0.02 like the models' initialiser; norm weights 1), and the prompt is seeded random token ids.
 * Speed does not depend on the weight values; rows say `params.weights: "synthetic (same shapes)"` and no
 * perplexity row is written. Model: `LONGCTX_MODEL`; documents: `LONGCTX_DOCS`.
 *
 * On the H200 machine (repo root; the GGUF cannot be sent there, hence synthetic weights; rows also go to
 * `$OUT/new-rows/model.json`, and the machine has no `.git`, so pass the commit):
 *   bash .device/go.sh env LONGCTX_RESULTS_MIRROR=$OUT/new-rows LONGCTX_COMMIT=<sha> \
 *     deno run -A benchmarks/model_bench.ts --backend wgpu --synthetic-weights --context 4096 --decode 64
 * CPU path there: `bash .device/enter.sh deno run -A benchmarks/model_bench.ts --context 4096` (needs the GGUF).
 * @module
 */
import { Effect } from "effect";
import { readFileSync } from "node:fs";
import * as os from "node:os";
import process from "node:process";
import { appendRows, type RowInput } from "./lib/results.ts";
import { parseFlags } from "./lib/args.ts";
import { type Backend, decodeTechniqueParams, denseLayersOf, paramNames } from "@longctx/graph";
import { techniqueByName, techniqueNames } from "@longctx/ops";
// Type-only imports (erased): the modules themselves load lazily, so --synthetic-weights needs no GGUF reader.
import type { AttentionFn, LlamaConfig } from "../runtime/src/model/llama.ts";
import type { GraphForwardOptions, LlamaWeights } from "../runtime/src/model/llama_graph.ts";

const args = parseFlags("deno run -A benchmarks/model_bench.ts [flags]   (see the module doc)", {
  context: { kind: "int", default: 4096, min: 1, help: "prefill tokens" },
  decode: { kind: "int", default: 32, min: 1, help: "decode steps timed" },
  chunk: { kind: "int", min: 1, help: "prefill tokens per forward call (default: --context, one call)" },
  doc: { kind: "string", default: "paradise-lost", help: "bundled document the prompt comes from" },
  backend: {
    kind: "string",
    default: "cpu",
    choices: ["cpu", "wgpu", "webgpu", "dawn"],
    help: "the backend",
  },
  repeats: { kind: "int", default: 3, min: 1, help: "timed repetitions (the median counts)" },
  seed: { kind: "int", default: 1, help: "seed of the synthetic weights" },
  attention: {
    kind: "string",
    default: "dense",
    choices: techniqueNames(),
    help: "each layer's prefill attention: a registered technique",
  },
  forward: {
    kind: "string",
    default: "graph",
    choices: ["graph", "llama"],
    help: "graph (the graph forward), or llama (the older CPU forward, --backend cpu only)",
  },
  "synthetic-weights": {
    kind: "switch",
    help: "random weights of SmolLM2's shapes (no GGUF needed; GPU backends)",
  },
});
const context = args.context;
const decode = args.decode;
const chunk = args.chunk ?? context;
const docName = args.doc;
const backendName = args.backend;
const synthetic = args["synthetic-weights"];

const repeats = args.repeats;
const seed = args.seed;
const attentionName = args.attention;
const runtimeName = "Bun" in globalThis ? "bun" : "deno";

/** One line `error: … — fix: …` on stderr and exit code 1, as every CLI of the repository. */
const die = (message: string, fix = "see the flags with --help"): never => {
  console.error(`error: model_bench: ${message} — fix: ${fix}`);
  process.exit(1);
};
if (args.forward === "llama" && backendName !== "cpu") {
  die(`--forward llama runs on the cpu backend only, not --backend ${backendName}`, "add --backend cpu");
}
if (synthetic && backendName === "cpu") {
  die("--synthetic-weights needs a GPU backend", "add --backend wgpu or --backend webgpu");
}
if (attentionName !== "dense" && backendName === "cpu") {
  die(
    `--attention ${attentionName} needs a GPU backend`,
    "add --backend wgpu or webgpu (on the CPU: deno task run --pipeline …)",
  );
}

/** The real model and `context` tokens of a real document (loaded lazily: needs the GGUF and documents). */
const realModel = async () => {
  const { docsDir, modelPath } = await import("../runtime/src/paths.ts");
  const { loadLlama } = await import("../runtime/src/model/llama.ts");
  const tLoad = performance.now();
  const model = await Effect.runPromise(loadLlama(modelPath()));
  const loadMs = performance.now() - tLoad;
  const manifest = JSON.parse(readFileSync(`${docsDir()}/manifest.json`, "utf8")) as {
    documents: { name: string; file: string }[];
  };
  const doc = manifest.documents.find((d) => d.name === docName) ?? manifest.documents[0];
  const ids = model.tokenizer.encodeOrdinary(readFileSync(`${docsDir()}/${doc.file}`, "utf8"));
  if (ids.length < context) {
    die(
      `document ${doc.name} has ${ids.length} tokens < --context ${context}`,
      "lower --context or pick a longer --doc",
    );
  }
  return { model, loadMs, doc, prompt: ids.slice(0, context) };
};

async function cpuBench(): Promise<void> {
  const { argmax, denseCausalAttention } = await import("../runtime/src/model/llama.ts");
  const { logProbsFromHidden, perplexity } = await import("../runtime/src/model/metrics.ts");
  const { model, loadMs, doc, prompt } = await realModel();
  const cache = model.newCache(context + decode);
  // Time spent inside attention (dense causal: QKᵀ and PV GEMMs + the TypeScript softmax) during the prefill.
  let attnMs = 0;
  const timedAttention: AttentionFn = (q, k, v, ctx) => {
    const t = performance.now();
    const o = denseCausalAttention(q, k, v, ctx);
    attnMs += performance.now() - t;
    return o;
  };
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const hidden = new Float32Array(context * model.config.nEmbd);
  for (let s = 0; s < context; s += chunk) {
    hidden.set(
      await Effect.runPromise(
        model.forward(prompt.slice(s, s + chunk), cache, { attention: timedAttention }),
      ),
      s * model.config.nEmbd,
    );
  }
  const prefillMs = performance.now() - t0;
  const cpu1 = process.cpuUsage(cpu0);
  const prefillCpuS = (cpu1.user + cpu1.system) / 1e6;
  let next = argmax(model.logits(hidden, context - 1, 1));
  const t1 = performance.now();
  for (let i = 0; i < decode; i++) {
    const h = await Effect.runPromise(model.forward([next], cache));
    next = argmax(model.logits(h, 0, 1));
  }
  const decodeMs = performance.now() - t1;
  const ppl = perplexity(logProbsFromHidden(model, hidden, prompt));

  const threads = process.env.OPENBLAS_NUM_THREADS ?? String(os.cpus().length);
  const common = {
    context,
    model: "SmolLM2-135M-Instruct Q4_1 (f32 dequantised)",
    backend: "cpu",
    impl: "dense",
    dtype: "f32",
    gpu: "none",
    params: {
      blas: model.sgemm.name,
      cpus: os.cpus().length,
      openblasThreads: threads,
      doc: doc.name,
      chunk,
      decodeTokens: decode,
      loadavg1: Number(os.loadavg()[0].toFixed(2)),
      runtime: runtimeName,
    },
  };
  const rows = [
    { ...common, metric: "prefill_ms", value: prefillMs, unit: "ms", timeMs: prefillMs },
    {
      ...common,
      metric: "prefill_cpu_s",
      value: prefillCpuS,
      unit: "s",
      note:
        "user+system CPU time of the prefill over all threads (less sensitive to other load than wall time)",
    },
    {
      ...common,
      metric: "prefill_attention_ms",
      value: attnMs,
      unit: "ms",
      note: "wall time inside dense causal attention during the prefill (the part sparse prefill replaces)",
    },
    { ...common, metric: "prefill_tokens_per_s", value: context / (prefillMs / 1000), unit: "tokens/s" },
    { ...common, metric: "decode_ms_per_token", value: decodeMs / decode, unit: "ms" },
    { ...common, metric: "decode_tokens_per_s", value: decode / (decodeMs / 1000), unit: "tokens/s" },
    {
      ...common,
      metric: "perplexity",
      value: ppl,
      unit: "ppl",
      note: `first ${context} tokens of ${doc.name}`,
    },
    {
      ...common,
      metric: "load_ms",
      value: loadMs,
      unit: "ms",
      note: "read GGUF + dequantise to f32 + tokenizer",
    },
  ];
  await appendRows("model", rows);
  console.log(
    `prefill ${context} tokens: ${(prefillMs / 1000).toFixed(1)} s (${
      (context / (prefillMs / 1000)).toFixed(1)
    } ` +
      `tok/s, ${prefillCpuS.toFixed(1)} CPU-s, attention ${(attnMs / 1000).toFixed(1)} s); decode ${
        (decodeMs / decode).toFixed(1)
      } ms/token; perplexity ${ppl.toFixed(3)}; ` +
      `blas ${model.sgemm.name}, load avg ${os.loadavg()[0].toFixed(2)}`,
  );
}

/** Seeded N(0, std²) values (xorshift32 + Box–Muller). */
const gaussian = (n: number, std: number, state: { s: number }): Float32Array => {
  const out = new Float32Array(n);
  const u = () => {
    let x = state.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    state.s = x >>> 0;
    return (state.s + 1) / 4294967297;
  };
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u())) * std, a = 2 * Math.PI * u();
    out[i] = r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = r * Math.sin(a);
  }
  return out;
};

/** SmolLM2-135M's shapes from the plans registry with seeded random weights, and random token ids. */
const syntheticModel = async (): Promise<{ weights: LlamaWeights; prompt: number[] }> => {
  const { getModel } = await import("../plans/src/models.ts");
  const spec = await Effect.runPromise(getModel("smollm2-135m"));
  const config: LlamaConfig = {
    nLayer: spec.layers,
    nEmbd: spec.hidden,
    nHead: spec.heads,
    nKvHead: spec.kvHeads,
    headDim: spec.headDim,
    nFf: spec.intermediate,
    vocab: spec.vocab,
    ropeTheta: spec.ropeTheta,
    eps: 1e-5, // SmolLM2's rms_norm_eps (not in the registry; speed does not depend on it)
    contextLength: spec.maxContext,
  };
  const { nEmbd: E, nHead: H, nKvHead: KH, headDim: D, nFf: F, vocab: V } = config;
  const st = { s: (seed * 2654435761) >>> 0 || 1 };
  const ones = (n: number) => new Float32Array(n).fill(1);
  const tokEmbd = gaussian(V * E, 0.02, st);
  const layers = Array.from({ length: config.nLayer }, () => ({
    attnNorm: ones(E),
    wq: gaussian(H * D * E, 0.02, st),
    wk: gaussian(KH * D * E, 0.02, st),
    wv: gaussian(KH * D * E, 0.02, st),
    wo: gaussian(E * H * D, 0.02, st),
    ffnNorm: ones(E),
    wGate: gaussian(F * E, 0.02, st),
    wUp: gaussian(F * E, 0.02, st),
    wDown: gaussian(E * F, 0.02, st),
  }));
  const prompt = Array.from({ length: context }, () => {
    st.s ^= st.s << 13;
    st.s ^= st.s >>> 17;
    st.s ^= st.s << 5;
    st.s >>>= 0;
    return st.s % V;
  });
  return { weights: { config, tokEmbd, output: tokEmbd, outputNorm: ones(E), layers }, prompt };
};

const median = (x: number[]) => [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)];

async function gpuBench(kind: "wgpu" | "webgpu" | "dawn" | "cpu"): Promise<void> {
  const { selectBackend } = await import("../runtime/src/backends/select.ts");
  const { loadLlamaGraph } = await import("../runtime/src/model/llama_graph.ts");
  const { loadSgemm } = await import("../runtime/src/model/blas.ts");
  const cpuGemm = kind === "cpu" ? { cpu: { gemm: (await loadSgemm()).gemm } } : {};
  const sel = await Effect.runPromise(Effect.result(selectBackend({ backend: kind, ...cpuGemm })));
  if (sel._tag === "Failure") {
    const e = sel.failure;
    die(`no GPU through the ${kind} backend: ${e.message}`, e.hint);
  }
  const backend: Backend = (sel as { success: { backend: Backend } }).success.backend;
  const adapter = backend.adapter;
  console.error(`model_bench: ${kind} on ${adapter.name} (${adapter.api}, ${adapter.driver})`);
  const tLoad = performance.now();
  const real = synthetic ? undefined : await realModel();
  const syn = synthetic ? await syntheticModel() : undefined;
  const weights: LlamaWeights = real ? real.model : syn!.weights;
  const prompt = real ? real.prompt : syn!.prompt;
  const gpu = await Effect.runPromise(loadLlamaGraph(weights, backend));
  const loadMs = performance.now() - tLoad;
  // --attention <technique> other than dense (the built-in flash kernel): the registered technique's prefill
  // graph (f32 operators, default parameters, the device's workgroup memory) shared by every layer.
  let attentionGraph: GraphForwardOptions["attentionGraph"];
  let decodeAttention: GraphForwardOptions["decodeAttention"];
  if (attentionName !== "dense") {
    const t = await Effect.runPromise(techniqueByName(attentionName));
    const wgm = Math.min(1 << 20, backend.limits.maxComputeWorkgroupStorageSize);
    const params = await Effect.runPromise(
      decodeTechniqueParams(
        t,
        paramNames(t.params).includes("workgroupMemory") ? { workgroupMemory: wgm } : {},
      ),
    );
    const c = weights.config;
    const dims = { heads: c.nHead, kvHeads: c.nKvHead, headDim: c.headDim, seq: chunk, kvSeq: chunk };
    const g = await Effect.runPromise(t.graph(params, dims, "prefill"));
    // the technique's own first dense layers (HiP: denseLayers) stay dense, prefill and decode
    const denseLayers = denseLayersOf(params);
    attentionGraph = (l) => (l < denseLayers ? undefined : g);
    if (t.cacheDecode) {
      const d = await Effect.runPromise(t.cacheDecode(params));
      decodeAttention = (l) => (l < denseLayers ? undefined : d);
    }
  }
  const densities: number[] = [];
  const onDensity = (d: readonly (Float32Array | undefined)[]) => {
    const all = d.flatMap((x) => (x ? [...x] : []));
    densities.push(all.reduce((a, b) => a + b, 0) / all.length);
  };
  const graphOpts = (s: number) => (s === 0 && attentionGraph ? { attentionGraph, onDensity } : {});
  const cache = await Effect.runPromise(gpu.newCache(context + decode));
  /** One prefill (in `chunk`-token forwards) from an empty cache, then `decode` greedy steps. */
  const once = async (steps: number) => {
    cache.length = 0;
    const t0 = performance.now();
    let next = 0;
    for (let s = 0; s < context; s += chunk) {
      next = await Effect.runPromise(gpu.forwardArgmax(prompt.slice(s, s + chunk), cache, graphOpts(s)));
    }
    const t1 = performance.now();
    const dec = decodeAttention ? { decodeAttention } : {};
    for (let i = 0; i < steps; i++) next = await Effect.runPromise(gpu.forwardArgmax([next], cache, dec));
    return { prefillMs: t1 - t0, decodeMs: performance.now() - t1 };
  };
  const tw = performance.now();
  await once(Math.min(decode, 2)); // warm-up: pipeline compilation, first-touch allocations
  console.error(`model_bench: warm-up ${(performance.now() - tw).toFixed(0)} ms`);
  const runs: { prefillMs: number; decodeMs: number }[] = [];
  for (let r = 0; r < repeats; r++) runs.push(await once(decode));

  let ppl: number | undefined;
  if (real) {
    const { logSumExp, perplexity } = await import("../runtime/src/model/metrics.ts");
    const V = weights.config.vocab;
    const c2 = await Effect.runPromise(gpu.newCache(context));
    const lp: number[] = [];
    for (let s = 0; s < context; s += chunk) {
      const part = prompt.slice(s, s + chunk);
      const logits = await Effect.runPromise(gpu.forward(part, c2, { logits: "all", ...graphOpts(s) }));
      for (let i = 0; i < part.length && s + i + 1 < context; i++) {
        lp.push(logits[i * V + prompt[s + i + 1]] - logSumExp(logits, i * V, V));
      }
    }
    c2.release();
    ppl = perplexity(lp);
  }
  cache.release();
  gpu.release();

  const common = {
    context,
    model: real ? "SmolLM2-135M-Instruct Q4_1 (f32 dequantised)" : "SmolLM2-135M shapes, synthetic weights",
    backend: kind,
    impl: attentionName,
    dtype: "f32",
    gpu: adapter.name,
    driver: adapter.driver,
    params: {
      weights: real ? "SmolLM2-135M-Instruct Q4_1 (f32 dequantised)" : "synthetic (same shapes)",
      adapter: adapter.name,
      api: adapter.api,
      driver: adapter.driver,
      forward: "graph (llama_graph.ts: one graph of operators, lowered programs)",
      attention: `${attentionName === "dense" ? "flash" : `${attentionName} graph (default parameters)`} ${
        chunk >= context ? "prefill, split-KV decode" : "first chunk, split-KV after"
      }`,
      ...(densities.length > 0
        ? { density: Number((densities.reduce((a, b) => a + b, 0) / densities.length).toFixed(4)) }
        : {}),
      tokens: real ? `first ${context} tokens of ${real.doc.name}` : `random ids (seed ${seed})`,
      seed: synthetic ? seed : "none",
      chunk,
      decodeTokens: decode,
      repeats,
      timing: "wall clock per forward incl. 4-byte argmax read-back, after 1 warm-up",
      loadavg1: Number(os.loadavg()[0].toFixed(2)),
      runtime: runtimeName,
    },
  };
  const rows: RowInput[] = [];
  runs.forEach((r, repeat) => {
    rows.push(
      { ...common, repeat, metric: "prefill_ms", value: r.prefillMs, unit: "ms", timeMs: r.prefillMs },
      {
        ...common,
        repeat,
        metric: "prefill_tokens_per_s",
        value: context / (r.prefillMs / 1000),
        unit: "tokens/s",
      },
      { ...common, repeat, metric: "decode_ms_per_token", value: r.decodeMs / decode, unit: "ms" },
      {
        ...common,
        repeat,
        metric: "decode_tokens_per_s",
        value: decode / (r.decodeMs / 1000),
        unit: "tokens/s",
      },
    );
  });
  if (ppl !== undefined) {
    rows.push({ ...common, metric: "perplexity", value: ppl, unit: "ppl", note: common.params.tokens });
  }
  rows.push({
    ...common,
    metric: "load_ms",
    value: loadMs,
    unit: "ms",
    note: real
      ? "read GGUF + dequantise + upload to the GPU"
      : "generate synthetic weights + upload to the GPU",
  });
  await appendRows("model", rows);
  const pm = median(runs.map((r) => r.prefillMs)), dm = median(runs.map((r) => r.decodeMs)) / decode;
  console.log(
    `${kind} graph forward, ${adapter.name}, ${common.params.weights}: prefill ${context} tokens ${
      pm.toFixed(1)
    } ms (${(context / (pm / 1000)).toFixed(1)} tok/s), decode ${dm.toFixed(2)} ms/token (${
      (1000 / dm).toFixed(1)
    } tok/s), median of ${repeats}` +
      (ppl !== undefined ? `; perplexity ${ppl.toFixed(3)}` : "") +
      (common.params.density !== undefined ? `; ${attentionName} density ${common.params.density}` : ""),
  );
}

// `--backend cpu`: the graph forward on the cpu backend (OpenBLAS), the path `run` takes on the CPU;
// `--backend cpu --forward llama`: the CPU forward of llama.ts (the fixture-checked reference), as before.
if (backendName === "cpu" && args.forward === "llama") await cpuBench();
else await gpuBench(backendName as "wgpu" | "webgpu" | "dawn" | "cpu");
