/**
 * `bench traceback`: AttnTrace, AttnTrace without subsampling, TracLLM and random on planted-fact and
 * prompt-injection cases over real documents (benchmarks/traceback/cases.ts), SmolLM2-135M-Instruct on the graph
 * forward: precision@K and recall@K of the top-K texts against the planted texts, whether the injection text is
 * in the top K (and first), and the wall time per answer. Answers are given (teacher-forced), not generated: the
 * model cannot retrieve at 8K (benchmarks/RESULTS.md, fidelity), but traceback asks which texts the answer's
 * tokens drew on, and that is defined for any answer.
 *
 * `--check-layers`: first, on one case cut to `--check-tokens`, every layer's traced weights (graph forward,
 * `traceback.weights` on `dense.attn`'s LSE) against a float64 masked softmax of the Q/K captured from the
 * independent CPU forward (runtime/src/model/llama.ts), max abs difference over layers and tokens.
 *
 * Usage: `deno run -A benchmarks/traceback_bench.ts [flags]` (`--help` lists them). Rows go to
 * `benchmarks/results/traceback.json`.
 * @module
 */
import { Effect } from "effect";
import { traceback } from "@longctx/ops";
import { loadLlama } from "../runtime/src/model/llama.ts";
import { loadLlamaGraph } from "../runtime/src/model/llama_graph.ts";
import { selectBackend } from "../runtime/src/backends/select.ts";
import { modelPath, readDocument } from "../runtime/src/paths.ts";
import { attnTrace, fullLength, tracePrompt, tracLlmTrace } from "../runtime/src/trace/trace.ts";
import { type CaseKind, makeCase, type TraceCase } from "./traceback/cases.ts";
import { appendRows, type RowInput } from "./lib/results.ts";
import { fail, list, parseFlags } from "./lib/args.ts";
import { tracebackWeights64 } from "../tests/ops/ref64.ts";

const METHODS = ["attntrace", "attntrace-full", "tracllm"] as const;
type Method = typeof METHODS[number];

const args = parseFlags("deno run -A benchmarks/traceback_bench.ts [flags]", {
  cases: { kind: "int", default: 21, min: 0, help: "planted-fact cases (1, 2, 3 facts in turn)" },
  injections: { kind: "int", default: 3, min: 0, help: "prompt-injection cases" },
  tokens: { kind: "int", default: 8000, min: 256, help: "prompt + answer tokens per case (at most)" },
  docs: {
    kind: "string",
    default: "alice-in-wonderland,as-you-like-it,paradise-lost",
    help: "bundled documents",
  },
  methods: { kind: "string", default: METHODS.join(","), help: `methods (of ${METHODS.join(", ")})` },
  rounds: { kind: "int", default: 30, min: 1, help: "AttnTrace subsamples B" },
  "sample-ratio": { kind: "number", default: 0.4, min: 0.01, help: "AttnTrace subsample fraction q" },
  permutations: { kind: "int", default: 5, min: 1, help: "TracLLM Shapley permutations" },
  scores: { kind: "string", default: "stc,loo,shapley", help: "TracLLM score functions" },
  k: { kind: "int", default: 5, min: 1, help: "texts reported (top K)" },
  seed: { kind: "int", default: 1, min: 0, help: "case seed" },
  backend: { kind: "string", default: "cpu", help: "cpu | wgpu | webgpu | dawn" },
  "check-layers": { kind: "switch", help: "check the traced weights against a float64 reference first" },
  "check-tokens": { kind: "int", default: 1024, min: 64, help: "tokens of the --check-layers case" },
  only: {
    kind: "list",
    default: [],
    min: 0,
    help: "run only these case indices, in this order (default all)",
  },
  "deadline-s": {
    kind: "int",
    default: 0,
    min: 0,
    help: "start no case this many seconds after the first (0: none)",
  },
  "no-write": { kind: "switch", help: "print only; append no rows" },
});
const methods = list(args.methods).map((m) =>
  (METHODS as readonly string[]).includes(m)
    ? m as Method
    : fail(`--methods: unknown "${m}"`, METHODS.join(", "))
);
const K = args.k;
const atP = traceback.attnTraceParams({ topK: K, rounds: args.rounds, sampleRatio: args["sample-ratio"] });
const fullP = traceback.attnTraceParams({ topK: K, rounds: 1, sampleRatio: 1 });
const tlP = traceback.tracLlmParams({
  topK: K,
  permutations: args.permutations,
  scores: list(args.scores) as ("stc" | "loo" | "shapley")[],
});

const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
const model = await Effect.runPromise(loadLlama(modelPath()));
const tok = model.tokenizer;
const sel = await Effect.runPromise(
  selectBackend({
    backend: args.backend as "cpu",
    cpu: { gemm: model.sgemm.gemm },
  }),
);
const backend = sel.backend;
const g = await Effect.runPromise(loadLlamaGraph(model, backend));
const backendName = backend.kind === "cpu"
  ? `cpu (${model.sgemm.name})`
  : `${backend.kind} (${backend.adapter.name})`;
const gpu = backend.kind === "cpu" ? "none" : backend.adapter.name;
console.error(`bench traceback: ${sel.report}`);
const docs = await Promise.all(
  list(args.docs).map(async (d) => ({ name: d, text: await Effect.runPromise(readDocument(d)) })),
);

/** A case of at most `--tokens` tokens: fewer words until it fits. */
const fitCase = async (kind: CaseKind, i: number, tokens: number): Promise<TraceCase> => {
  const doc = docs[i % docs.length];
  let words = Math.floor(tokens / 1.3);
  for (;;) {
    const c = makeCase(doc.text, doc.name, kind, i, args.seed, words, 100);
    const p = await Effect.runPromise(tracePrompt(tok, c.question, c.texts));
    if (fullLength(p, tok.encodeOrdinary(c.answer)) <= tokens) return c;
    words = Math.floor(words * 0.95);
  }
};

const rows: RowInput[] = [];
const common = {
  model: "SmolLM2-135M-Instruct Q4_1",
  backend: backendName,
  gpu,
  run: 1,
};

if (args["check-layers"]) {
  // the independent CPU forward's post-RoPE Q/K per layer → float64 masked softmax of the answer rows
  const c = await fitCase("facts-1", 0, args["check-tokens"]);
  const p = await Effect.runPromise(tracePrompt(tok, c.question, c.texts));
  const ans = tok.encodeOrdinary(c.answer);
  const { ids } = await import("../runtime/src/trace/trace.ts").then((m) =>
    m.assemble(p, c.texts.map((_, i) => i))
  );
  const seq = ids.length + ans.length, A = ans.length;
  const { nHead: H, nKvHead: Hk, headDim: d, nLayer: L } = model.config;
  const want: Float64Array[] = [];
  await Effect.runPromise(model.forward([...ids, ...ans], model.newCache(seq), {
    capture: (layer, q, k) => (want[layer] = tracebackWeights64(q, k, { H, Hk, seq, d, A })),
  }));
  const got: Float32Array[] = [];
  const graph = await Effect.runPromise(traceback.tracebackGraph(A));
  const cache = await Effect.runPromise(g.newCache(seq));
  await Effect.runPromise(g.forward([...ids, ...ans], cache, {
    logits: "none",
    attentionGraph: () => graph,
    readOutputs: ["trace"],
    onOutputs: (layers) => layers.forEach((l, i) => (got[i] = l.trace)),
  }));
  cache.release();
  let maxAbs = 0, maxW = 0;
  for (let l = 0; l < L; l++) {
    for (let j = 0; j < seq; j++) {
      maxAbs = Math.max(maxAbs, Math.abs(got[l][j] - want[l][j]));
      maxW = Math.max(maxW, want[l][j]);
    }
  }
  console.log(
    `check: ${L} layers, ${seq} tokens, ${A} answer rows: max |traced − float64 masked softmax| = ` +
      `${maxAbs.toExponential(2)} (largest weight ${maxW.toFixed(4)})`,
  );
  rows.push({
    metric: "traced_weights_max_abs_diff",
    value: maxAbs,
    unit: "probability",
    ...common,
    context: seq,
    impl: "traceback.weights",
    params: {
      layers: L,
      answerTokens: A,
      reference: "float64 masked softmax on llama.ts capture",
      maxWeight: maxW,
    },
  });
}

interface Tally {
  precision: number;
  recall: number;
  ms: number;
  forwards: number;
  n: number;
  injTop: number;
  injFirst: number;
  inj: number;
}
const tally = new Map<string, Tally>();
const add = (m: string, c: TraceCase, top: readonly number[], ms: number, forwards: number) => {
  const t = tally.get(m) ??
    { precision: 0, recall: 0, ms: 0, forwards: 0, n: 0, injTop: 0, injFirst: 0, inj: 0 };
  if (c.kind === "injection") {
    t.inj++;
    if (top.includes(c.truth[0])) t.injTop++;
    if (top[0] === c.truth[0]) t.injFirst++;
  } else {
    const pr = traceback.precisionRecall(top, c.truth);
    t.precision += pr.precision;
    t.recall += pr.recall;
    t.n++;
  }
  t.ms += ms;
  t.forwards += forwards;
  tally.set(m, t);
};

const kinds: CaseKind[] = [
  ...Array.from({ length: args.cases }, (_, i) => (["facts-1", "facts-2", "facts-3"] as const)[i % 3]),
  ...Array.from({ length: args.injections }, () => "injection" as const),
];
let tokensSum = 0, textsSum = 0;
const order = args.only.length > 0 ? [...args.only] : kinds.map((_, i) => i);
for (const i of order) {
  if (!Number.isInteger(i) || i >= kinds.length) {
    fail(`--only: no case ${i}`, `use indices below ${kinds.length}`);
  }
}
let done = 0;
const doneIdx: number[] = [];
const tCases = performance.now();
for (const i of order) {
  const kind = kinds[i];
  if (args["deadline-s"] > 0 && performance.now() - tCases > args["deadline-s"] * 1000) {
    console.error(
      `[${elapsed()}] --deadline-s ${args["deadline-s"]}: stopping after ${done} of ${order.length} cases`,
    );
    break;
  }
  done++;
  doneIdx.push(i);
  const c = await fitCase(kind, i, args.tokens);
  const p = await Effect.runPromise(tracePrompt(tok, c.question, c.texts));
  const ans = tok.encodeOrdinary(c.answer);
  const n = c.texts.length, len = fullLength(p, ans);
  tokensSum += len;
  textsSum += n;
  // random: the expectation of K texts drawn uniformly
  add("random", c, [], 0, 0);
  const r = tally.get("random")!;
  if (kind === "injection") r.injTop += Math.min(K, n) / n, r.injFirst += 1 / n;
  else r.precision += c.truth.length / n, r.recall += Math.min(K, n) / n;
  const line: string[] = [`${c.id} (${n} texts, ${len} tokens, truth ${c.truth.join(",")})`];
  for (const m of methods) {
    const res = m === "tracllm"
      ? await Effect.runPromise(tracLlmTrace(g, p, ans, tlP))
      : await Effect.runPromise(attnTrace(g, p, ans, m === "attntrace" ? atP : fullP));
    add(m, c, res.top, res.ms, res.forwards);
    line.push(`${m} [${res.top.join(",")}] ${(res.ms / 1000).toFixed(1)} s/${res.forwards} fwd`);
  }
  console.error(`[${elapsed()}] ${line.join(" · ")}`);
}

const cases = done;
const summary: string[] = [];
for (const [m, t] of tally) {
  const params = {
    cases: t.n,
    injections: t.inj,
    k: K,
    meanTokens: Math.round(tokensSum / Math.max(1, cases)),
    meanTexts: Math.round(textsSum / Math.max(1, cases)),
    wordsPerText: 100,
    ...(m === "attntrace" ? { rounds: atP.rounds, sampleRatio: atP.sampleRatio, avgK: atP.avgK } : {}),
    ...(m === "attntrace-full" ? { rounds: 1, sampleRatio: 1, avgK: fullP.avgK } : {}),
    ...(m === "tracllm"
      ? { scores: tlP.scores.join("+"), permutations: tlP.permutations, looWeight: tlP.looWeight }
      : {}),
    ...(m === "random" ? { expectation: "analytic" } : {}),
    answers: "given (teacher-forced)",
    seed: args.seed,
    // the cases that ran (a --deadline-s stop leaves the rest of --only out)
    caseSet: doneIdx.length === kinds.length && args.only.length === 0
      ? `all ${kinds.length}`
      : `indices ${doneIdx.join(",")} of ${kinds.length}`,
  };
  const row = (metric: string, value: number, unit: string) =>
    rows.push({ metric, value, unit, ...common, context: args.tokens, impl: m, params });
  if (t.n > 0) {
    row(`precision_at_${K}`, t.precision / t.n, "fraction");
    row(`recall_at_${K}`, t.recall / t.n, "fraction");
  }
  if (t.inj > 0) {
    row(`injection_in_top_${K}`, t.injTop / t.inj, "fraction");
    row("injection_first", t.injFirst / t.inj, "fraction");
  }
  if (m !== "random") {
    row("ms_per_answer", t.ms / (t.n + t.inj), "ms");
    row("forwards_per_answer", t.forwards / (t.n + t.inj), "count");
  }
  summary.push(
    `${m.padEnd(15)} P@${K} ${(t.n ? t.precision / t.n : NaN).toFixed(3)}  R@${K} ${
      (t.n ? t.recall / t.n : NaN).toFixed(3)
    }  injection top-${K} ${t.inj ? (t.injTop / t.inj).toFixed(2) : "-"} first ${
      t.inj ? (t.injFirst / t.inj).toFixed(2) : "-"
    }  ${m === "random" ? "" : `${(t.ms / 1000 / (t.n + t.inj)).toFixed(2)} s/answer`}`,
  );
}
g.release();
console.log(summary.join("\n"));
if (!args["no-write"]) {
  await appendRows("traceback", rows);
  console.error(`${rows.length} rows → benchmarks/results/traceback.json`);
}
