/**
 * `bench fidelity`: every registered technique at each of its knob's sweep points, dense, and RAG, on one
 * model and one seeded task set over real documents (benchmarks/fidelity/tasks.ts), on the cpu backend
 * (graph forward, OpenBLAS GEMMs). Usage: `deno task bench:fidelity [options]` (`--help` lists them and their
 * defaults).
 *
 * Per haystack (a real document with planted facts at a context length) and per option:
 * - **LC** (long context): one prefill of the template + document (the technique's prefill graph in all 30
 *   layers; dense: the forward's `dense.attn`), logits at every position: perplexity over the document tokens,
 *   its change against dense, KL(dense ‖ technique) and top-1 agreement, density (kept / causal blocks, mean
 *   over layers and heads); then each question on that KV cache (question tokens and the answer at an offset
 *   run dense attention over the cache: `dense.cacheAttn`), greedy answer, checked automatically. Time per task
 *   = prefill + question + answer (each task as if run alone). For sparse options on haystacks of at most
 *   `--recall-tokens` tokens, a separate untimed prefill measures attention-mass recall and output error per
 *   layer against dense on each layer's own inputs (`onCompare`).
 * - **RAG**: BM25 over overlapping chunks, top-k passages as the document (benchmarks/fidelity/rag.ts), same
 *   template and questions, dense attention. Time per task = retrieval + prefill + answer.
 *
 * Rows go to `benchmarks/results/<--suite>.json` (each with the command); RESULTS.md and its fidelity chart
 * (accuracy and perplexity change against density, one curve per technique: benchmarks/charts/fidelity.svg,
 * benchmarks/charts/fidelity.ts) are re-rendered. Then the
 * planner's RAG-or-LC route (plans/src/route.ts) is printed per (context, task type) from this run's
 * measurements, with its accuracy and time against always-LC and always-RAG, held out by haystack.
 * @module
 */
import { parseArgs } from "node:util";
import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { Cause, Effect, Exit } from "effect";
import {
  type AnyTechnique,
  type CacheDecodeGraphs,
  decodeTechniqueParams,
  type Graph,
  InputError,
} from "@longctx/graph";
import { squeezed, TECHNIQUES } from "@longctx/ops";
import { prepareContext, type SqueezedContext, squeezedDecode } from "../../runtime/src/squeezed/squeezed.ts";
import {
  evaluateRouting,
  getModel,
  optionKey,
  route,
  ROUTE_TASKS,
  routeEvidenceFromRows,
} from "@longctx/plans";
import { appendRows, type RowInput } from "../lib/results.ts";
import { loadLlama } from "../../runtime/src/model/llama.ts";
import { type AttnComparison, type KvState, loadLlamaGraph } from "../../runtime/src/model/llama_graph.ts";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { assertFinite, compareLogits, logSumExp } from "../../runtime/src/model/metrics.ts";
import { modelPath, readDocument } from "../../runtime/src/paths.ts";
import {
  buildHaystack,
  checkAnswer,
  type Haystack,
  planHaystack,
  TASK_TYPES,
  type TaskType,
} from "./tasks.ts";
import { buildIndex, DEFAULT_RAG, passages, type RagOptions, ragOptionsError } from "./rag.ts";

import { renderFidelitySvg } from "../charts/fidelity.ts";

const USAGE =
  `bench fidelity — accuracy, perplexity, KL, recall and density of every registered technique, dense and RAG

  deno task bench:fidelity [options]

  --lengths L,L…      context lengths in tokens, 1024…8192            (default 2048,4096)
  --docs D,D…         bundled documents, used in turn                  (default alice-in-wonderland,as-you-like-it,paradise-lost)
  --haystacks N       haystacks per length                             (default 1)
  --seed S            task-set seed                                    (default 1)
  --per-type N        at most N tasks of each type per haystack        (default all: 4 single, 2 multi,
                      2 compare, 1 aggregate, 2 unanswerable)
  --sweep all|one     every knob value, or the middle one              (default all)
  --techniques T,T…   registered techniques to run                     (default all: ${
    TECHNIQUES.map((t) => t.name).join(",")
  })
  --no-rag            skip RAG
  --chunk N           RAG chunk tokens                                 (default ${DEFAULT_RAG.chunkTokens})
  --overlap N         RAG chunk overlap tokens                         (default ${DEFAULT_RAG.overlapTokens})
  --top-k N           RAG chunks retrieved                             (default ${DEFAULT_RAG.topK})
  --max-new N         answer tokens                                    (default 16)
  --recall-tokens N   measure recall on haystacks of at most N tokens  (default 2048; 0: never)
  --model M           model id                                         (default smollm2-135m; file: LONGCTX_MODEL or .cache/models)
  --suite NAME        results file benchmarks/results/NAME.json        (default fidelity)
  --chart FILE        also draw this run's chart to FILE               (default none: RESULTS.md's render
                      draws benchmarks/charts/fidelity.svg from all rows of the fidelity suite)
  --no-write          print only: no rows, no chart
  --help              this text
`;

/** A bad command line: printed as one `error: … — fix: …` line, exit 2. */
const usageError = (message: string, hint: string) => new InputError({ message, hint });

const parsed = (() => {
  try {
    return parseArgs({
      args: process.argv.slice(2),
      strict: true,
      allowPositionals: false,
      options: {
        lengths: { type: "string", default: "2048,4096" },
        docs: { type: "string", default: "alice-in-wonderland,as-you-like-it,paradise-lost" },
        haystacks: { type: "string", default: "1" },
        seed: { type: "string", default: "1" },
        "per-type": { type: "string", default: "0" },
        sweep: { type: "string", default: "all" },
        techniques: { type: "string", default: TECHNIQUES.map((t) => t.name).join(",") },
        "no-rag": { type: "boolean", default: false },
        chunk: { type: "string", default: String(DEFAULT_RAG.chunkTokens) },
        overlap: { type: "string", default: String(DEFAULT_RAG.overlapTokens) },
        "top-k": { type: "string", default: String(DEFAULT_RAG.topK) },
        "max-new": { type: "string", default: "16" },
        "recall-tokens": { type: "string", default: "2048" },
        model: { type: "string", default: "smollm2-135m" },
        suite: { type: "string", default: "fidelity" },
        chart: { type: "string", default: "" },
        "no-write": { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
    }).values;
  } catch (e) {
    return usageError(
      `bench fidelity: ${e instanceof Error ? e.message : String(e)}`,
      "run with --help for the options and their defaults",
    );
  }
})();

/** Print `error: … — fix: …` (typed errors carry a hint; anything else is internal, with its stack) and exit. */
const fail = (e: unknown, code = 1): never => {
  const x = e as { message?: string; hint?: string; stack?: string };
  if (x && typeof x === "object" && typeof x.hint === "string") {
    console.error(`error: ${x.message} — fix: ${x.hint}`);
  } else console.error(`error: internal failure: ${x?.stack ?? String(e)} — fix: report this trace`);
  return process.exit(code);
};

/** Run an Effect; on failure print it (see {@link fail}) and exit. */
const must = async <A, E>(e: Effect.Effect<A, E>, code = 1): Promise<A> => {
  const r = await Effect.runPromiseExit(e);
  return Exit.isSuccess(r) ? r.value : fail(Cause.squash(r.cause), code);
};

if (parsed instanceof InputError) fail(parsed, 2);
const a = parsed as Exclude<typeof parsed, InputError>;
if (a.help) {
  console.log(USAGE);
  process.exit(0);
}

const posInt = (name: string, v: string, min = 1, max = Number.MAX_SAFE_INTEGER): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) {
    fail(usageError(`--${name} ${v}: expected an integer in [${min}, ${max}]`, `e.g. --${name} ${min}`), 2);
  }
  return n;
};
const list = (v: string) => v.split(",").map((s) => s.trim()).filter((s) => s !== "");
const lengths = list(a.lengths).map((x) => posInt("lengths", x, 1024, 8192));
const docs = list(a.docs);
const haystacksPer = posInt("haystacks", a.haystacks);
const seed = posInt("seed", a.seed, 0, 2 ** 32 - 1);
const maxNew = posInt("max-new", a["max-new"], 1, 256);
const perType = posInt("per-type", a["per-type"], 0);
const recallTokens = posInt("recall-tokens", a["recall-tokens"], 0);
if (a.sweep !== "all" && a.sweep !== "one") {
  fail(usageError(`--sweep ${a.sweep}`, "use --sweep all or --sweep one"), 2);
}
const rag: RagOptions = {
  chunkTokens: posInt("chunk", a.chunk),
  overlapTokens: posInt("overlap", a.overlap, 0),
  topK: posInt("top-k", a["top-k"]),
};
const ragErr = ragOptionsError(rag);
if (ragErr) fail(ragErr, 2);
const techniques: AnyTechnique[] = list(a.techniques).map((n) =>
  TECHNIQUES.find((t) => t.name === n) ??
    fail(
      usageError(
        `--techniques: unknown technique "${n}"`,
        `use some of: ${TECHNIQUES.map((t) => t.name).join(", ")}`,
      ),
      2,
    )
);
if (lengths.length === 0 || docs.length === 0) {
  fail(usageError("--lengths and --docs need at least one value", "see --help"), 2);
}
const modelId = (await must(getModel(a.model), 2)).id;
if (modelId !== "smollm2-135m") {
  fail(
    usageError(
      `--model ${a.model}: only smollm2-135m is installed (setup step 4)`,
      "use --model smollm2-135m",
    ),
    2,
  );
}

/** One LC option: a technique at one knob value (the exact reference: `graph` undefined). */
interface LcPoint {
  readonly technique: AnyTechnique;
  readonly knob?: { readonly param: string; readonly value: number };
  /** Decoded parameters. */
  readonly params: unknown;
  readonly reference: boolean;
}
const exact = TECHNIQUES.find((t) => !t.sparse) ?? TECHNIQUES[0];
const points: LcPoint[] = [{ technique: exact, params: {}, reference: true }];
for (const t of techniques) {
  if (t === exact) continue;
  if (!t.phases.includes("prefill") && !t.delegates.prefill) {
    console.error(`skip ${t.name}: no prefill graph (phases ${t.phases.join(", ")})`);
    continue;
  }
  const values = t.knob
    ? (a.sweep === "one" ? [t.knob.values[t.knob.values.length >> 1]] : t.knob.values)
    : [undefined];
  for (const v of values) {
    const input = t.knob && v !== undefined ? { [t.knob.param]: v } : {};
    const params = await must(decodeTechniqueParams(t, input));
    points.push({
      technique: t,
      ...(t.knob && v !== undefined ? { knob: { param: t.knob.param, value: v } } : {}),
      params,
      reference: false,
    });
  }
}

const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
const model = await must(loadLlama(modelPath()));
const cfg = model.config;
const tok = model.tokenizer;
const backend = await must(makeCpuBackend({ gemm: model.sgemm.gemm }));
const g = await must(loadLlamaGraph(model, backend));
const V = cfg.vocab;
const backendName = `cpu (${model.sgemm.name})`;
const MODEL = "SmolLM2-135M-Instruct Q4_1";
console.error(
  `bench fidelity: ${points.length} LC options (${points.map(label).join(", ")})${
    a["no-rag"] ? "" : " + RAG"
  }, ` +
    `lengths ${lengths.join(", ")}, ${haystacksPer} haystack(s) each, seed ${seed}, backend ${backendName}`,
);

function label(p: LcPoint): string {
  return p.knob ? `${p.technique.name} ${p.knob.param}=${p.knob.value}` : p.technique.name;
}

/** Outcome of one task under one option. */
interface TaskOutcome {
  readonly type: TaskType;
  readonly id: string;
  readonly answer: string;
  readonly correct: boolean;
  readonly reason: string;
  readonly ms: number;
  /** RAG: whether every needed fact lay inside the retrieved passages. */
  readonly hit?: boolean;
}

const rows: RowInput[] = [];
const printed: string[] = [];

/** Greedy answer from `next` (the argmax after the question) on `cache`; stops at EOS/control tokens. */
const answer = (
  first: number,
  cache: KvState,
  spec?: CacheDecodeGraphs | ((layer: number) => CacheDecodeGraphs),
) =>
  Effect.gen(function* () {
    const ids: number[] = [];
    let next = first;
    const opts = spec ? { decodeAttention: typeof spec === "function" ? spec : () => spec } : {};
    while (ids.length < maxNew) {
      if (next === tok.eosId || tok.controlIds.has(next)) break;
      ids.push(next);
      if (ids.length === maxNew) break;
      next = yield* g.forwardArgmax([next], cache, opts);
    }
    return tok.decode(ids, true).trim();
  });

/**
 * Squeezed Attention's contexts, per haystack: the prefix prefilled dense and its prefix index built once,
 * shared by every percentile (only τ changes).
 */
const squeezedContexts = new Map<string, SqueezedContext>();

/**
 * A fixed-context technique (`squeezed`) on one haystack: the prefix is its fixed context (prefilled dense, so
 * the document's perplexity is dense's by construction and not reported), each question and answer run through
 * its cache attention bound to the prefix index. Rows: accuracy per task type, `density` (the KV budget: kept
 * fixed-context keys / fixed-context tokens, in the question's prefill, mean over layers, heads and
 * questions), `prefill_ms` (the index build, shared by the percentiles, then per question).
 */
const runSqueezedLc = (h: Haystack, p: LcPoint) =>
  Effect.gen(function* () {
    const params = p.params as squeezed.SqueezedParams;
    let ctx = squeezedContexts.get(h.id);
    if (!ctx) {
      for (const c of squeezedContexts.values()) c.cache.release();
      squeezedContexts.clear();
      const room = Math.max(...h.suffixes.map((x) => x.length)) + maxNew + 1;
      ctx = yield* prepareContext(g, model, h.prefix, { ...params, percentile: 0.9 }, {
        room,
        keepKv: false,
      });
      squeezedContexts.set(h.id, ctx);
    }
    const dec = yield* squeezedDecode(ctx.index, params);
    const outs: TaskOutcome[] = [];
    let budget = 0;
    for (const [i, task] of h.plan.tasks.entries()) {
      ctx.cache.length = ctx.index.fixed;
      const tq = performance.now();
      let d: readonly (Float32Array | undefined)[] = [];
      const first = yield* g.forwardArgmax(h.suffixes[i], ctx.cache, {
        decodeAttention: dec,
        onDensity: (x) => (d = x),
      });
      const dl = d.filter((x): x is Float32Array => x !== undefined);
      budget += dl.reduce((s, x) => s + x.reduce((a, b) => a + b, 0) / x.length, 0) / Math.max(1, dl.length);
      const out = yield* answer(first, ctx.cache, dec);
      const c = checkAnswer(task.expected, out);
      outs.push({ type: task.type, id: task.id, answer: out, ...c, ms: performance.now() - tq });
    }
    const meanDensity = budget / h.plan.tasks.length;
    const extra: Record<string, string | number> = {
      technique: p.technique.name,
      ...(p.knob ? { knob_param: p.knob.param, knob_value: p.knob.value } : {}),
      density_of: "fixed-context keys kept in the question's prefill",
    };
    const impl = p.technique.name;
    taskRows(h, impl, extra, outs);
    const b = baseRow(h, impl, { ...extra, tokens: h.prefix.length });
    rows.push({ metric: "prefill_ms", value: ctx.ms.prefill + ctx.ms.cluster, unit: "ms", ...b });
    rows.push({ metric: "density", value: meanDensity, unit: "fraction", ...b });
    const acc = outs.filter((o) => o.correct).length;
    printed.push(
      `${h.id} ${label(p).padEnd(22)} acc ${acc}/${outs.length}  KV budget ${meanDensity.toFixed(3)}  index ${
        ((ctx.ms.prefill + ctx.ms.cluster) / 1000).toFixed(1)
      } s (document dense: no perplexity change)`,
    );
    console.error(`[${elapsed()}] ${printed[printed.length - 1]}`);
    for (const o of outs) {
      console.error(
        `    ${o.correct ? "✓" : "✗"} ${o.id.padEnd(15)} ${JSON.stringify(o.answer)} (${o.reason})`,
      );
    }
  });

/** Rows common to one (haystack, option). */
const baseRow = (h: Haystack, impl: string, extra: Record<string, string | number | boolean>) => ({
  model: MODEL,
  context: h.plan.context,
  backend: backendName,
  impl,
  params: { model_id: modelId, doc: h.plan.doc, haystack: h.id, seed: h.plan.seed, ...extra },
});

/** Accuracy and time rows per task type (and over all types) of one option on one haystack. */
const taskRows = (h: Haystack, impl: string, extra: Record<string, string | number>, outs: TaskOutcome[]) => {
  for (const type of [...TASK_TYPES, "all" as const]) {
    const sel = type === "all" ? outs : outs.filter((o) => o.type === type);
    if (sel.length === 0) continue;
    const correct = sel.filter((o) => o.correct).length;
    const ms = sel.reduce((s, o) => s + o.ms, 0) / sel.length;
    const b = baseRow(h, impl, { ...extra, task_type: type, tasks: sel.length, correct, ms_per_task: ms });
    rows.push({ metric: "accuracy", value: correct / sel.length, unit: "fraction", ...b });
    rows.push({ metric: "time_per_task_ms", value: ms, unit: "ms", ...b });
    const hits = sel.filter((o) => o.hit !== undefined);
    if (hits.length > 0) {
      rows.push({
        metric: "retrieval_hit",
        value: hits.filter((o) => o.hit).length / hits.length,
        unit: "fraction",
        ...baseRow(h, impl, { ...extra, task_type: type, tasks: hits.length }),
      });
    }
  }
};

/** Log-probabilities of the document tokens from all-position logits of the prefix. */
const docStats = (h: Haystack, logits: Float32Array) => {
  const first = h.head.length - 1, last = h.prefix.length - 1;
  let nll = 0;
  for (let r = first; r < last; r++) nll -= logits[r * V + h.prefix[r + 1]] - logSumExp(logits, r * V, V);
  return { ppl: Math.exp(nll / (last - first)), first, last };
};

/** One LC option on one haystack: prefill, document metrics, every question. */
const runLc = (h: Haystack, p: LcPoint, cache: KvState, ref: Float32Array | undefined) =>
  Effect.gen(function* () {
    if (!p.reference && p.technique.name === "squeezed") {
      yield* runSqueezedLc(h, p);
      return { logits: undefined, outs: [] as TaskOutcome[] };
    }
    const dims = {
      heads: cfg.nHead,
      kvHeads: cfg.nKvHead,
      headDim: cfg.headDim,
      seq: h.prefix.length,
      kvSeq: h.prefix.length,
    };
    // a technique whose cache attention serves prefill chunks (TokenSelect) runs the prompt, the questions
    // and the answers in calls of at most its maxChunk through it; the others prefill with their graph
    const spec = p.reference || !p.technique.cacheDecode
      ? undefined
      : yield* p.technique.cacheDecode(p.params);
    const chunked = spec?.prefill ? spec : undefined;
    const graph: Graph | undefined = p.reference || chunked
      ? undefined
      : yield* p.technique.graph(p.params, dims, "prefill", "f32");
    let density: readonly (Float32Array | undefined)[] = [];
    cache.length = 0;
    const tp = performance.now();
    let logits: Float32Array;
    const step = chunked?.maxChunk ?? h.prefix.length;
    if (chunked) {
      logits = new Float32Array(h.prefix.length * V);
      for (let s = 0; s < h.prefix.length; s += step) {
        const part = h.prefix.slice(s, s + step);
        logits.set(yield* g.forward(part, cache, { logits: "all", decodeAttention: () => chunked }), s * V);
      }
      const d = p.technique.constructedDensity?.(p.params, dims);
      if (d !== undefined) density = [Float32Array.of(d)];
    } else {
      logits = yield* g.forward(h.prefix, cache, {
        logits: "all",
        ...(graph ? { attentionGraph: () => graph, onDensity: (d) => (density = d) } : {}),
      });
    }
    const prefillMs = performance.now() - tp;
    yield* assertFinite(logits, `prefill of ${h.id} with ${label(p)}`);
    const outs: TaskOutcome[] = [];
    for (const [i, task] of h.plan.tasks.entries()) {
      cache.length = h.prefix.length;
      const tq = performance.now();
      let first = 0;
      for (let s = 0; s < h.suffixes[i].length; s += step) {
        first = yield* g.forwardArgmax(
          h.suffixes[i].slice(s, s + step),
          cache,
          chunked ? { decodeAttention: () => chunked } : {},
        );
      }
      const out = yield* answer(first, cache, chunked);
      const c = checkAnswer(task.expected, out);
      outs.push({ type: task.type, id: task.id, answer: out, ...c, ms: prefillMs + performance.now() - tq });
    }
    const { ppl, first, last } = docStats(h, logits);
    const dl = density.filter((d): d is Float32Array => d !== undefined);
    const meanDensity = dl.length === 0
      ? 1
      : dl.reduce((s, d) => s + d.reduce((x, y) => x + y, 0) / d.length, 0) / dl.length;
    const extra: Record<string, string | number> = {
      technique: p.technique.name,
      ...(p.knob ? { knob_param: p.knob.param, knob_value: p.knob.value } : {}),
    };
    const impl = p.technique.name;
    taskRows(h, impl, extra, outs);
    const b = baseRow(h, impl, { ...extra, tokens: h.prefix.length });
    rows.push({ metric: "prefill_ms", value: prefillMs, unit: "ms", ...b });
    rows.push({ metric: "density", value: meanDensity, unit: "fraction", ...b });
    rows.push({ metric: "perplexity", value: ppl, unit: "ppl", ...b });
    let change = 0;
    if (ref) {
      const refPpl = docStats(h, ref).ppl;
      change = (ppl - refPpl) / refPpl * 100;
      const cmp = compareLogits(ref.subarray(first * V, last * V), logits.subarray(first * V, last * V), V);
      rows.push({ metric: "perplexity_change", value: change, unit: "%", ...b });
      rows.push({ metric: "mean_kl", value: cmp.meanKl, unit: "nats", ...b });
      rows.push({ metric: "top1_agreement", value: cmp.top1Agreement, unit: "fraction", ...b });
    }
    let recall: AttnComparison | undefined;
    if (graph && p.technique.sparse && h.prefix.length <= recallTokens) {
      let cmp: readonly (AttnComparison | undefined)[] = [];
      cache.length = 0;
      yield* g.forward(h.prefix, cache, {
        logits: "none",
        attentionGraph: () => graph,
        onCompare: (c) => (cmp = c),
      });
      const ls = cmp.filter((c): c is AttnComparison => c !== undefined);
      recall = {
        recall: ls.reduce((s, c) => s + c.recall, 0) / ls.length,
        minRecall: Math.min(...ls.map((c) => c.minRecall)),
        relErr: ls.reduce((s, c) => s + c.relErr, 0) / ls.length,
      };
      rows.push({ metric: "attention_recall", value: recall.recall, unit: "fraction", ...b });
      rows.push({ metric: "min_row_recall", value: recall.minRecall, unit: "fraction", ...b });
      rows.push({ metric: "output_rel_err", value: recall.relErr, unit: "fraction", ...b });
    }
    const acc = outs.filter((o) => o.correct).length;
    printed.push(
      `${h.id} ${label(p).padEnd(22)} acc ${acc}/${outs.length}  density ${meanDensity.toFixed(3)}  ppl ${
        ppl.toFixed(3)
      }` +
        `${ref ? ` (${change >= 0 ? "+" : ""}${change.toFixed(3)} %)` : ""}${
          recall ? `  recall ${recall.recall.toFixed(4)}` : ""
        }  prefill ${(prefillMs / 1000).toFixed(1)} s`,
    );
    console.error(`[${elapsed()}] ${printed[printed.length - 1]}`);
    for (const o of outs) {
      console.error(
        `    ${o.correct ? "✓" : "✗"} ${o.id.padEnd(15)} ${JSON.stringify(o.answer)} (${o.reason})`,
      );
    }
    return { logits, outs };
  });

/** RAG on one haystack: BM25 over chunks, top-k passages as the document, every question. */
const runRag = (h: Haystack) =>
  Effect.gen(function* () {
    const index = buildIndex(tok, h.docIds, rag);
    const sep = tok.encodeOrdinary("\n\n…\n\n");
    const longest = Math.max(...h.suffixes.map((s) => s.length));
    const cache = yield* g.newCache(
      h.head.length + rag.topK * (rag.chunkTokens + sep.length) + longest + maxNew,
    );
    const outs: TaskOutcome[] = [];
    let docTokens = 0;
    for (const [i, task] of h.plan.tasks.entries()) {
      const tq = performance.now();
      const chosen = index.retrieve(task.question, rag.topK).map((r) => r.chunk);
      const { ids, ranges } = passages(h.docIds, chosen, sep);
      docTokens += ids.length;
      cache.length = 0;
      const first = yield* g.forwardArgmax([...h.head, ...ids, ...h.suffixes[i]], cache);
      const out = yield* answer(first, cache);
      const c = checkAnswer(task.expected, out);
      const hit = task.facts.length === 0 ? undefined : task.facts.every((f) => {
        const { at, tokens } = h.facts[f];
        return ranges.some((r) => r.start <= at && at + tokens <= r.end);
      });
      outs.push({
        type: task.type,
        id: task.id,
        answer: out,
        ...c,
        ms: performance.now() - tq,
        ...(hit === undefined ? {} : { hit }),
      });
    }
    cache.release();
    const extra = {
      chunk_tokens: rag.chunkTokens,
      overlap_tokens: rag.overlapTokens,
      top_k: rag.topK,
      retriever: "bm25 (minisearch)",
    };
    taskRows(h, "rag", extra, outs);
    const fraction = docTokens / h.plan.tasks.length / h.docIds.length;
    rows.push({ metric: "context_fraction", value: fraction, unit: "fraction", ...baseRow(h, "rag", extra) });
    const acc = outs.filter((o) => o.correct).length;
    printed.push(
      `${h.id} ${"rag (bm25)".padEnd(22)} acc ${acc}/${outs.length}  context fraction ${fraction.toFixed(3)}`,
    );
    console.error(`[${elapsed()}] ${printed[printed.length - 1]}`);
    for (const o of outs) {
      console.error(
        `    ${o.correct ? "✓" : "✗"} ${o.id.padEnd(15)} ${JSON.stringify(o.answer)} (${o.reason}${
          o.hit === undefined ? "" : o.hit ? "; retrieved" : "; fact not retrieved"
        })`,
      );
    }
  });

const program = Effect.gen(function* () {
  let n = 0;
  for (const L of lengths) {
    const cache = yield* g.newCache(L);
    for (let j = 0; j < haystacksPer; j++, n++) {
      const doc = docs[n % docs.length];
      const text = yield* readDocument(doc);
      const full = yield* planHaystack(seed + j, doc, text, L);
      const plan = perType === 0 ? full : {
        ...full,
        tasks: full.tasks.filter((t, i) =>
          full.tasks.slice(0, i).filter((u) => u.type === t.type).length < perType
        ),
      };
      const h = yield* buildHaystack(tok, text, plan, maxNew);
      console.error(
        `[${elapsed()}] haystack ${h.id}: ${h.prefix.length} prefix tokens, ${h.facts.length} facts, ${h.plan.tasks.length} tasks`,
      );
      let ref: Float32Array | undefined;
      for (const p of points) {
        const r = yield* runLc(h, p, cache, ref);
        if (p.reference && r.logits) ref = r.logits;
      }
      ref = undefined;
      if (!a["no-rag"]) yield* runRag(h);
    }
    cache.release();
  }
});
await must(program);
for (const c of squeezedContexts.values()) c.cache.release();
g.release();

// The planner's route from this run's measurements.
const provisional = rows.map((r) => ({
  ...r,
  command: "-",
  date: "-",
  commit: "-",
  gpu: "none",
  driver: "-",
}));
const evidence = routeEvidenceFromRows(provisional);
const routeLines: string[] = [];
for (const L of lengths) {
  for (const task of ROUTE_TASKS) {
    if (!evidence.some((e) => e.task === task && e.context === L)) continue;
    const d = await must(route({ model: modelId, context: L, task }, evidence));
    routeLines.push(
      `  ${String(L).padStart(5)} ${task.padEnd(13)} → ${optionKey(d.choice.option).padEnd(24)} ${d.reason}`,
    );
  }
}
const hasRag = evidence.some((e) => e.option.kind === "rag");
const ev = hasRag ? await must(evaluateRouting(modelId, evidence)) : undefined;
const pct = (o: { tasks: number; correct: number }) =>
  `${o.correct}/${o.tasks} (${(100 * o.correct / o.tasks).toFixed(1)} %)`;
const secs = (o: { ms: number }) => `${(o.ms / 1000).toFixed(1)} s`;
console.log(printed.join("\n"));
console.log(`\nroute (in-sample evidence of this run; prior: LaRA):\n${routeLines.join("\n")}`);
if (ev) {
  for (const [name, e] of [["held out by haystack", ev.heldOut], ["in-sample", ev.inSample]] as const) {
    console.log(
      `${name}: route ${pct(e.route)} in ${secs(e.route)}; always-LC (${exact.name}) ${pct(e.lc)} in ${
        secs(e.lc)
      }; ` +
        `always-RAG ${pct(e.rag)} in ${secs(e.rag)}`,
    );
    const common = {
      model: MODEL,
      backend: backendName,
      params: { model_id: modelId, evaluation: name.replaceAll(" ", "_") },
    };
    for (const [impl, o] of [["route", e.route], [`always-lc`, e.lc], ["always-rag", e.rag]] as const) {
      rows.push({
        metric: "route_accuracy",
        value: o.correct / o.tasks,
        unit: "fraction",
        impl,
        ...common,
        params: { ...common.params, tasks: o.tasks, correct: o.correct },
      });
      rows.push({
        metric: "route_time_s",
        value: o.ms / 1000,
        unit: "s",
        impl,
        ...common,
        params: { ...common.params, tasks: o.tasks },
      });
    }
  }
}
if (!a["no-write"]) {
  const written = await appendRows(a.suite, rows);
  let chart = "";
  if (a.chart !== "") {
    const svg = await renderFidelitySvg(written);
    if (svg) {
      fs.mkdirSync(path.dirname(a.chart), { recursive: true });
      fs.writeFileSync(a.chart, svg);
      chart = ` and the chart of this run to ${a.chart}`;
    }
  }
  console.error(`wrote ${written.length} rows to ${a.suite}.json${chart} (${elapsed()})`);
}
