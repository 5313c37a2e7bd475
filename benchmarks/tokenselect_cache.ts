/**
 * TokenSelect's Selection Cache on real decoding (issue 17): SmolLM2-135M-Instruct on a real document, the first
 * `--tokens` tokens prefilled in chunks of 512 through TokenSelect, then the document's next `--steps` tokens fed
 * one per decode step (teacher-forced, so every option sees the same tokens), with the Selection Cache off (the
 * released default) and on at each `--thresholds` θ (official 0.9).
 *
 * Per option: the hit rate (calls that reused the layer's last selection / calls that selected or reused, over
 * all layers; prefill chunks and decode steps apart, from the carried counters `selStats`), and the fidelity cost
 * of the hits against the cache off on the same steps: KL(off ‖ on) and top-1 agreement of the next-token
 * distributions, and the perplexity of the fed tokens (with dense attention's beside it). Rows appended to
 * `benchmarks/results/tokenselect_cache.json`.
 *
 * Run: `deno run -A benchmarks/tokenselect_cache.ts [--doc alice-in-wonderland] [--tokens 8192] [--steps 64]
 * [--thresholds 0.8,0.9,0.95]` (cpu backend, OpenBLAS).
 * @module
 */
import { Effect } from "effect";
import type { CacheDecodeGraphs } from "@longctx/graph";
import { tokenselect } from "@longctx/ops";
import { loadLlama } from "../runtime/src/model/llama.ts";
import { type KvState, loadLlamaGraph } from "../runtime/src/model/llama_graph.ts";
import { makeCpuBackend } from "../runtime/src/backends/cpu.ts";
import { modelPath, readDocument } from "../runtime/src/paths.ts";
import { logSumExp } from "../runtime/src/model/metrics.ts";
import { appendRows, type RowInput } from "./lib/results.ts";
import { parseFlags } from "./lib/args.ts";

const args = parseFlags("deno run -A benchmarks/tokenselect_cache.ts [flags]", {
  doc: { kind: "string", default: "alice-in-wonderland", help: "bundled document" },
  tokens: { kind: "int", default: 8192, min: 1024, help: "prefilled document tokens" },
  steps: { kind: "int", default: 64, min: 1, help: "teacher-forced decode steps" },
  thresholds: { kind: "list", default: [0.8, 0.9, 0.95], help: "Selection Cache thresholds θ" },
  "no-write": { kind: "switch", help: "print only; append no rows" },
});
const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
const model = await Effect.runPromise(loadLlama(modelPath()));
const V = model.config.vocab, L = model.config.nLayer;
const backend = await Effect.runPromise(makeCpuBackend({ gemm: model.sgemm.gemm }));
const g = await Effect.runPromise(loadLlamaGraph(model, backend));
const ids = model.tokenizer.encode(await Effect.runPromise(readDocument(args.doc)));
if (ids.length < args.tokens + args.steps + 1) {
  console.error(
    `error: ${args.doc} has ${ids.length} tokens; ${args.tokens} + ${args.steps} + 1 are needed — fix: ` +
      "a shorter --tokens or --steps, or a longer document (paradise-lost)",
  );
  Deno.exit(2);
}
const prompt = ids.slice(0, args.tokens), fed = ids.slice(args.tokens, args.tokens + args.steps + 1);

/** Sum over layers of the carried counters `[hits, calls]`. */
const counters = (cache: KvState) =>
  Effect.gen(function* () {
    let hits = 0, calls = 0;
    for (let l = 0; l < L; l++) {
      const b = yield* g.carried(cache, l, "selStats");
      if (!b) continue;
      const u = new Uint32Array(b.slice().buffer);
      hits += u[0];
      calls += u[1];
    }
    return { hits, calls };
  });

interface Run {
  /** Per step, the next-token logits (after feeding fed[s]). */
  readonly logits: Float32Array[];
  readonly prefill: { hits: number; calls: number };
  readonly decode: { hits: number; calls: number };
  readonly ms: number;
}
const runOption = (spec: CacheDecodeGraphs | undefined) =>
  Effect.gen(function* () {
    const cache = yield* g.newCache(args.tokens + args.steps + 1);
    const opts = spec ? { decodeAttention: () => spec } : {};
    const tp = performance.now();
    for (let s = 0; s < prompt.length; s += 512) {
      yield* g.forward(prompt.slice(s, s + 512), cache, { logits: "none", ...opts });
    }
    const pre = spec?.carried ? yield* counters(cache) : { hits: 0, calls: 0 };
    const logits: Float32Array[] = [];
    for (let s = 0; s < args.steps; s++) logits.push((yield* g.forward([fed[s]], cache, opts)).slice(0, V));
    const all = spec?.carried ? yield* counters(cache) : { hits: 0, calls: 0 };
    cache.release();
    return {
      logits,
      prefill: pre,
      decode: { hits: all.hits - pre.hits, calls: all.calls - pre.calls },
      ms: performance.now() - tp,
    } as Run;
  });

const softmax = (x: Float32Array) => {
  const m = Math.max(...x),
    e = Float64Array.from(x, (v) => Math.exp(v - m)),
    z = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / z);
};
const ppl = (r: Run) =>
  Math.exp(r.logits.reduce((a, lg, s) => a - (lg[fed[s + 1]] - logSumExp(lg, 0, V)), 0) / r.logits.length);
const argmaxOf = (x: Float32Array) => x.reduce((bi, v, i) => (v > x[bi] ? i : bi), 0);

const specOf = (p: Partial<tokenselect.TokenSelectParams>) =>
  Effect.runPromise(tokenselect.tokenSelectCacheDecode(tokenselect.tokenSelectParams(p)));
console.error(
  `tokenselect_cache: ${args.doc}, ${args.tokens} tokens prefilled (chunks of 512), ${args.steps} decode steps`,
);
const dense = await Effect.runPromise(runOption(undefined));
console.error(`[${elapsed()}] dense: ppl ${ppl(dense).toFixed(3)}`);
const off = await Effect.runPromise(runOption(await specOf({})));
console.error(`[${elapsed()}] tokenselect, cache off: ppl ${ppl(off).toFixed(3)}`);
const rows: RowInput[] = [];
const common = {
  context: args.tokens,
  model: "SmolLM2-135M-Instruct Q4_1",
  backend: `cpu (${model.sgemm.name})`,
  gpu: "none",
  run: 1,
};
const base = {
  document: args.doc,
  tokens: args.tokens,
  steps: args.steps,
  nInit: 128,
  nLocal: 512,
  topK: 2048,
};
rows.push(
  { metric: "perplexity", impl: "dense", value: ppl(dense), unit: "ppl", params: base, ...common },
  {
    metric: "perplexity",
    impl: "tokenselect",
    value: ppl(off),
    unit: "ppl",
    params: { ...base, selectionCache: false },
    ...common,
  },
);
const lines = [
  `dense                     ppl ${ppl(dense).toFixed(3)}`,
  `tokenselect (cache off)   ppl ${ppl(off).toFixed(3)}`,
];
for (const th of args.thresholds) {
  const on = await Effect.runPromise(runOption(await specOf({ selectionCache: true, cacheThreshold: th })));
  let kl = 0, agree = 0;
  for (let s = 0; s < args.steps; s++) {
    const p = softmax(off.logits[s]), q = softmax(on.logits[s]);
    for (let i = 0; i < V; i++) if (p[i] > 0) kl += p[i] * Math.log(p[i] / Math.max(q[i], 1e-300));
    if (argmaxOf(off.logits[s]) === argmaxOf(on.logits[s])) agree++;
  }
  kl /= args.steps;
  const params = { ...base, selectionCache: true, cacheThreshold: th };
  const hr = (x: { hits: number; calls: number }) => (x.calls > 0 ? x.hits / x.calls : 0);
  rows.push(
    {
      metric: "selection_cache_hit_rate",
      impl: "tokenselect",
      value: hr(on.decode),
      unit: "fraction",
      params: { ...params, phase: "decode", hits: on.decode.hits, calls: on.decode.calls },
      ...common,
    },
    {
      metric: "selection_cache_hit_rate",
      impl: "tokenselect",
      value: hr(on.prefill),
      unit: "fraction",
      params: { ...params, phase: "prefill", hits: on.prefill.hits, calls: on.prefill.calls },
      ...common,
    },
    { metric: "perplexity", impl: "tokenselect", value: ppl(on), unit: "ppl", params, ...common },
    { metric: "mean_kl_vs_cache_off", impl: "tokenselect", value: kl, unit: "nats", params, ...common },
    {
      metric: "top1_agreement_vs_cache_off",
      impl: "tokenselect",
      value: agree / args.steps,
      unit: "fraction",
      params,
      ...common,
    },
  );
  const line =
    `θ ${th}: hit rate decode ${
      (hr(on.decode) * 100).toFixed(1)
    } % (${on.decode.hits}/${on.decode.calls}), ` +
    `prefill ${(hr(on.prefill) * 100).toFixed(1)} %; ppl ${ppl(on).toFixed(3)}; KL vs off ${
      kl.toExponential(2)
    }; ` +
    `top-1 vs off ${agree}/${args.steps}`;
  lines.push(line);
  console.error(`[${elapsed()}] ${line}`);
}
g.release();
console.log(lines.join("\n"));
if (!args["no-write"]) {
  await appendRows("tokenselect_cache", rows);
  console.error(`${rows.length} rows → benchmarks/results/tokenselect_cache.json`);
}
