/**
 * TokenSelect's length extrapolation on SmolLM2-135M-Instruct (trained to 8K, issue 17): planted-fact retrieval
 * on a real document at contexts past the trained length, with
 *
 * - **dense** (original positions: the forward's own attention, the prompt in chunks of 2048),
 * - **tokenselect** (the official defaults: sink 128, local 512, k 2048, compacted positions — no distance
 *   exceeds 2688 — the prompt in chunks of 512, every call selecting),
 * - **tokenselect-original** (the same selection with the tokens' own positions),
 *
 * on the fidelity bench's haystacks (benchmarks/fidelity/tasks.ts: facts planted at depths 0.1–0.85 of a bundled
 * document, the question after it; `single` facts by default: the only task type this model answers at 2K/4K).
 * Per (context, option): accuracy, the perplexity of the document tokens, prefill time; rows appended to
 * `benchmarks/results/tokenselect_extrapolation.json`.
 *
 * Run: `deno run -A benchmarks/tokenselect_extrapolation.ts [--lengths 16384,32768] [--doc paradise-lost]
 * [--types single] [--options dense,tokenselect,tokenselect-original] [--seed 1]` (cpu backend, OpenBLAS).
 * @module
 */
import { Effect } from "effect";
import type { CacheDecodeGraphs } from "@longctx/graph";
import { tokenselect } from "@longctx/ops";
import { loadLlama } from "../runtime/src/model/llama.ts";
import { type GraphLlama, type KvState, loadLlamaGraph } from "../runtime/src/model/llama_graph.ts";
import { makeCpuBackend } from "../runtime/src/backends/cpu.ts";
import { modelPath, readDocument } from "../runtime/src/paths.ts";
import { logSumExp } from "../runtime/src/model/metrics.ts";
import { buildHaystack, checkAnswer, type Haystack, planHaystack, TASK_TYPES } from "./fidelity/tasks.ts";
import { appendRows, type RowInput } from "./lib/results.ts";
import { fail, list, parseFlags } from "./lib/args.ts";

const OPTIONS = ["dense", "tokenselect", "tokenselect-original"] as const;
type Option = typeof OPTIONS[number];

const args = parseFlags("deno run -A benchmarks/tokenselect_extrapolation.ts [flags]", {
  lengths: { kind: "list", default: [16384, 32768], min: 1024, help: "context lengths (tokens)" },
  doc: { kind: "string", default: "paradise-lost", help: "bundled document (≥ 5 characters per token)" },
  types: { kind: "string", default: "single", help: `task types (of ${TASK_TYPES.join(", ")})` },
  options: { kind: "string", default: OPTIONS.join(","), help: `options (of ${OPTIONS.join(", ")})` },
  seed: { kind: "int", default: 1, min: 0, help: "haystack seed" },
  "max-new": { kind: "int", default: 16, min: 1, help: "answer tokens" },
  "no-write": { kind: "switch", help: "print only; append no rows" },
});
const lengths = args.lengths.map((n) =>
  Number.isInteger(n)
    ? n
    : fail(`--lengths: ${n} is not a whole number of tokens`, "e.g. --lengths 16384,32768")
);
const types = list(args.types).map((t) =>
  (TASK_TYPES as readonly string[]).includes(t)
    ? t
    : fail(`--types: unknown "${t}"`, `use ${TASK_TYPES.join(", ")}`)
);
const options = list(args.options).map((o) =>
  (OPTIONS as readonly string[]).includes(o)
    ? o as Option
    : fail(`--options: unknown "${o}"`, `use ${OPTIONS.join(", ")}`)
);

const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
const model = await Effect.runPromise(loadLlama(modelPath()));
const tok = model.tokenizer, V = model.config.vocab;
const backend = await Effect.runPromise(makeCpuBackend({ gemm: model.sgemm.gemm }));
const g: GraphLlama = await Effect.runPromise(loadLlamaGraph(model, backend));
const text = await Effect.runPromise(readDocument(args.doc));
const maxNew = args["max-new"];

const specOf = async (o: Option): Promise<CacheDecodeGraphs | undefined> =>
  o === "dense" ? undefined : await Effect.runPromise(
    tokenselect.tokenSelectCacheDecode(
      tokenselect.tokenSelectParams(o === "tokenselect" ? {} : { positions: "original" }),
    ),
  );

/** Run `ids` at the cache's end in calls of at most `chunk` tokens; returns the last call's last-row argmax. */
const feed = (ids: readonly number[], cache: KvState, chunk: number, spec: CacheDecodeGraphs | undefined) =>
  Effect.gen(function* () {
    let next = 0;
    for (let s = 0; s < ids.length; s += chunk) {
      next = yield* g.forwardArgmax(
        ids.slice(s, s + chunk),
        cache,
        spec ? { decodeAttention: () => spec } : {},
      );
    }
    return next;
  });

const rows: RowInput[] = [];
const summary: string[] = [];
for (const L of lengths) {
  const full = await Effect.runPromise(planHaystack(args.seed, args.doc, text, L));
  const plan = { ...full, tasks: full.tasks.filter((t) => types.includes(t.type)) };
  const h: Haystack = await Effect.runPromise(buildHaystack(tok, text, plan, maxNew));
  console.error(`[${elapsed()}] ${h.id}: ${h.prefix.length} prefix tokens, ${plan.tasks.length} tasks`);
  const cache = await Effect.runPromise(g.newCache(L));
  for (const o of options) {
    const spec = await specOf(o);
    const chunk = spec?.maxChunk ?? 2048;
    const optsOf = spec ? { decodeAttention: () => spec } : {};
    // prefill, the document tokens' negative log-likelihood chunk by chunk (all-position logits per chunk)
    cache.length = 0;
    const tp = performance.now();
    let nll = 0, counted = 0;
    const first = h.head.length - 1, last = h.prefix.length - 1;
    for (let s = 0; s < h.prefix.length; s += chunk) {
      const part = h.prefix.slice(s, s + chunk);
      const logits = await Effect.runPromise(g.forward(part, cache, { logits: "all", ...optsOf }));
      for (let r = 0; r < part.length; r++) {
        const at = s + r;
        if (at < first || at >= last) continue;
        nll -= logits[r * V + h.prefix[at + 1]] - logSumExp(logits, r * V, V);
        counted++;
      }
    }
    const prefillMs = performance.now() - tp;
    const ppl = Math.exp(nll / counted);
    let correct = 0;
    const answers: string[] = [];
    for (const [i, task] of plan.tasks.entries()) {
      cache.length = h.prefix.length;
      let next = await Effect.runPromise(feed(h.suffixes[i], cache, chunk, spec));
      const ids: number[] = [];
      while (ids.length < maxNew && next !== tok.eosId && !tok.controlIds.has(next)) {
        ids.push(next);
        if (ids.length === maxNew) break;
        next = await Effect.runPromise(g.forwardArgmax([next], cache, optsOf));
      }
      const out = tok.decode(ids, true).trim();
      const c = checkAnswer(task.expected, out);
      if (c.correct) correct++;
      answers.push(`${c.correct ? "✓" : "✗"} ${task.id} ${JSON.stringify(out)}`);
    }
    const params = {
      document: args.doc,
      haystack: h.id,
      tokens: h.prefix.length,
      task_types: types.join(","),
      tasks: plan.tasks.length,
      correct,
      positions: o === "tokenselect" ? "compacted" : "original",
      chunk,
      ...(spec ? { nInit: 128, nLocal: 512, topK: 2048 } : {}),
    };
    const common = {
      context: L,
      model: "SmolLM2-135M-Instruct Q4_1 (trained context 8192)",
      backend: `cpu (${model.sgemm.name})`,
      impl: o,
      gpu: "none",
      run: 1,
      params,
    };
    rows.push({ metric: "accuracy", value: correct / plan.tasks.length, unit: "fraction", ...common });
    rows.push({ metric: "perplexity", value: ppl, unit: "ppl", ...common });
    rows.push({ metric: "prefill_ms", value: prefillMs, unit: "ms", ...common });
    const line =
      `${String(L).padStart(6)} ${o.padEnd(21)} ${correct}/${plan.tasks.length}  ppl ${ppl.toFixed(2)}  ` +
      `prefill ${(prefillMs / 1000).toFixed(0)} s`;
    summary.push(line);
    console.error(`[${elapsed()}] ${line}`);
    for (const a of answers) console.error(`    ${a}`);
  }
  cache.release();
}
g.release();
console.log(summary.join("\n"));
if (!args["no-write"]) {
  await appendRows("tokenselect_extrapolation", rows);
  console.error(`${rows.length} rows → benchmarks/results/tokenselect_extrapolation.json`);
}
