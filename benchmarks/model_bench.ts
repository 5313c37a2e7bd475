/**
 * SmolLM2-135M-Instruct on the CPU path (f32 weights, OpenBLAS sgemm through FFI, dense causal attention):
 * prefill of `--context` tokens of a real document (one forward over the whole prompt), then `--decode`
 * greedy tokens one at a time through the KV cache. Appends rows to `benchmarks/results/model.json`:
 * `prefill_ms`, `prefill_tokens_per_s`, `decode_ms_per_token`, `decode_tokens_per_s`, and the prefix's
 * `perplexity` (a sanity check that the run is the real model on real text).
 *
 *   deno run -A benchmarks/model_bench.ts [--context 4096] [--decode 32] [--doc paradise-lost] [--chunk 4096]
 *   bun benchmarks/model_bench.ts --context 4096
 *
 * On the H200 machine (16 CPU cores; CPU path only, no GPU forward yet):
 *   bash .device/enter.sh deno run -A benchmarks/model_bench.ts --context 4096
 * OpenBLAS threads: `OPENBLAS_NUM_THREADS` (default: all cores). Model: `LONGCTX_MODEL`; documents: `LONGCTX_DOCS`.
 * @module
 */
import { Effect } from "effect";
import { readFileSync } from "node:fs";
import * as os from "node:os";
import process from "node:process";
import { docsDir, modelPath } from "../runtime/src/paths.ts";
import { argmax, type AttentionFn, denseCausalAttention, loadLlama } from "../runtime/src/model/llama.ts";
import { logProbsFromHidden, perplexity } from "../runtime/src/model/metrics.ts";
import { appendRows } from "./lib/results.ts";

const args = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
};
const context = Number(opt("context", "4096"));
const decode = Number(opt("decode", "32"));
const chunk = Number(opt("chunk", String(context)));
const docName = opt("doc", "paradise-lost");

const tLoad = performance.now();
const model = await Effect.runPromise(loadLlama(modelPath()));
const loadMs = performance.now() - tLoad;
const manifest = JSON.parse(readFileSync(`${docsDir()}/manifest.json`, "utf8")) as {
  documents: { name: string; file: string }[];
};
const doc = manifest.documents.find((d) => d.name === docName) ?? manifest.documents[0];
const ids = model.tokenizer.encode(readFileSync(`${docsDir()}/${doc.file}`, "utf8"));
if (ids.length < context) {
  console.error(`document ${doc.name} has ${ids.length} tokens < --context ${context}`);
  process.exit(2);
}
const prompt = ids.slice(0, context);
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
    await Effect.runPromise(model.forward(prompt.slice(s, s + chunk), cache, { attention: timedAttention })),
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
    runtime: "Bun" in globalThis ? "bun" : "deno",
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
