/**
 * `trace`: which texts of a long context produced an answer (context traceback).
 *
 * ```sh
 * deno task trace --input <file | bundled document> --question "…" [--answer "…"] [--method attntrace]
 *                 [--top 5] [--words 100] [--rounds 30] [--sample-ratio 0.4] [--permutations 5] [--seed 0]
 *                 [--context 8192] [--truncate] [--max-new 48] [--backend auto] [--json out.json | -]
 *                 [--html report.html] [--verbose]
 * ```
 * It splits the document into texts of `--words` words, puts them and the question into the model's chat
 * prompt, takes the answer given (else generates one greedily with dense attention), and ranks the texts with
 * AttnTrace (`--method attntrace`, the default: attention of the answer-predicting positions, every layer,
 * subsampled), TracLLM (`--method tracllm`: perturbation, informed search, STC + LOO + Shapley ensemble) or
 * both. It prints the top texts with their scores and the texts themselves; `--json` writes everything
 * (versioned), `--html` a page of the document with the top texts highlighted. Runs under Deno and Bun; bad
 * input prints one line `error: … — fix: …` and exits with 1.
 * @module
 */
import { Console, Effect, Option } from "effect";
import { Command, Flag } from "effect/cli";
import { InputError } from "@longctx/graph";
import { traceback } from "@longctx/ops";
import { getModel } from "@longctx/plans";
import { modelPath } from "../paths.ts";
import { loadLlama } from "../model/llama.ts";
import { generateGreedyGraph, loadLlamaGraph } from "../model/llama_graph.ts";
import { type BackendChoice, forwardBackend, selectBackend } from "../backends/select.ts";
import { parseTokens } from "./plan.ts";
import { readInput } from "./run/prompt.ts";
import { makeProgress } from "./run/progress.ts";
import { checkWritable, intFlag, oneOf, runCli, verboseFlag, withShownDefault, writeFile } from "./main.ts";
import { assemble, attnTrace, fullLength, tracePrompt, tracLlmTrace } from "../trace/trace.ts";
import {
  type MethodReport,
  type RankedText,
  TRACE_REPORT_VERSION,
  type TraceReport,
} from "./trace_report.ts";

const METHODS = ["attntrace", "tracllm", "both"] as const;
const BACKENDS = ["auto", "wgpu", "webgpu", "dawn", "cpu"] as const;

const flags = {
  input: Flag.String("input").pipe(
    Flag.withAlias("i"),
    Flag.withDescription("required: a text file, or a bundled document name (alice-in-wonderland, …)"),
    Flag.optional,
  ),
  question: Flag.String("question").pipe(
    Flag.withDescription("required: the question asked about the document"),
    Flag.optional,
  ),
  answer: Flag.String("answer").pipe(
    Flag.withDescription("the answer to trace (default: the model's greedy answer with dense attention)"),
    Flag.optional,
  ),
  method: Flag.String("method").pipe(withShownDefault(`${METHODS.join(", ")}`, "attntrace")),
  top: Flag.String("top").pipe(withShownDefault("texts reported (K)", "5")),
  words: Flag.String("words").pipe(withShownDefault("words per text", "100")),
  rounds: Flag.String("rounds").pipe(withShownDefault("AttnTrace subsamples (B)", "30")),
  sampleRatio: Flag.String("sample-ratio").pipe(
    withShownDefault("AttnTrace fraction of texts per subsample (q; 1: one forward, no subsampling)", "0.4"),
  ),
  permutations: Flag.String("permutations").pipe(withShownDefault("TracLLM Shapley permutations", "5")),
  seed: Flag.String("seed").pipe(withShownDefault("seed of the subsampling and permutations", "0")),
  context: Flag.String("context").pipe(
    Flag.withAlias("c"),
    withShownDefault("prompt + answer tokens at most: 8192, 4k", "8192"),
  ),
  truncate: Flag.Boolean("truncate").pipe(
    Flag.withDescription("keep the document's first texts when it does not fit the context"),
    Flag.withDefault(false),
  ),
  maxNew: Flag.String("max-new").pipe(withShownDefault("answer tokens at most when generating", "48")),
  backend: Flag.String("backend").pipe(
    withShownDefault(`${BACKENDS.join(", ")} (auto: a GPU; the cpu backend on a software adapter)`, "auto"),
  ),
  json: Flag.String("json").pipe(
    Flag.withDescription("write the report as JSON (- for stdout; default: no JSON)"),
    Flag.optional,
  ),
  html: Flag.String("html").pipe(
    Flag.withDescription("write an HTML page of the document with the top texts highlighted (default: none)"),
    Flag.optional,
  ),
  verbose: verboseFlag,
};

type Input = Command.Command.Config.Infer<typeof flags>;

const ratioFlag = (v: string) => {
  const x = Number(v);
  return Number.isFinite(x) && x > 0 && x <= 1 ? Effect.succeed(x) : Effect.fail(
    new InputError({ message: `--sample-ratio "${v}" is not in (0, 1]`, hint: "e.g. --sample-ratio 0.4" }),
  );
};

const plural = (n: number, one: string, many: string = `${one}s`) => `${n} ${n === 1 ? one : many}`;

const escapeHtml = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** The HTML report: the document with each method's top texts highlighted (darker for a higher rank). */
export const traceHtml = (doc: string, spans: readonly traceback.TextSpan[], r: TraceReport): string => {
  const sections = r.methods.map((m) => {
    const rankOf = new Map(m.top.map((t) => [t.text, t]));
    let html = "", at = 0;
    spans.forEach((s, i) => {
      html += escapeHtml(doc.slice(at, s.start));
      const t = rankOf.get(i);
      const body = escapeHtml(doc.slice(s.start, s.end));
      html += t
        ? `<mark style="background: rgba(255, 170, 0, ${
          (1 - (t.rank - 1) / (m.top.length + 1)).toFixed(2)
        })" ` +
          `title="rank ${t.rank}, score ${t.score.toPrecision(4)}"><sup>${t.rank}</sup>${body}</mark>`
        : body;
      at = s.end;
    });
    html += escapeHtml(doc.slice(at));
    const list = m.top.map((t) => `<li>text ${t.text}: score ${t.score.toPrecision(4)}</li>`).join("");
    return `<section><h2>${m.method} (${plural(m.forwards, "forward")}, ${
      (m.ms / 1000).toFixed(1)
    } s)</h2><ol>${list}</ol>` +
      `<pre style="white-space: pre-wrap">${html}</pre></section>`;
  }).join("\n");
  return `<!doctype html><html><head><meta charset="utf-8"><title>trace: ${
    escapeHtml(r.question)
  }</title></head>` +
    `<body style="font-family: sans-serif; max-width: 60em; margin: auto"><h1>Context traceback</h1>` +
    `<p><b>Question:</b> ${escapeHtml(r.question)}<br><b>Answer (${r.answerSource}):</b> ${
      escapeHtml(r.answer)
    }` +
    `<br>${r.texts} texts of ${r.wordsPerText} words, ${r.tokens} tokens, ${escapeHtml(r.backend)}</p>\n` +
    `${sections}</body></html>\n`;
};

const main = (i: Input) =>
  Effect.gen(function* () {
    // ---- flags, before anything is loaded
    const method = yield* oneOf("method", i.method, METHODS);
    const backendChoice = yield* oneOf("backend", i.backend, BACKENDS);
    const top = yield* intFlag("top", i.top, 1);
    const words = yield* intFlag("words", i.words, 1);
    const rounds = yield* intFlag("rounds", i.rounds, 1);
    const sampleRatio = yield* ratioFlag(i.sampleRatio);
    const permutations = yield* intFlag("permutations", i.permutations, 1);
    const seed = yield* intFlag("seed", i.seed, 0);
    const maxNew = yield* intFlag("max-new", i.maxNew, 1);
    const spec = yield* getModel("smollm2-135m");
    const context = yield* parseTokens(i.context);
    if (context > spec.maxContext) {
      return yield* new InputError({
        message: `--context ${context} exceeds the model's trained context of ${spec.maxContext} tokens`,
        hint: `use --context ${spec.maxContext} or less (with --truncate for a longer document)`,
      });
    }
    if (Option.isNone(i.input)) {
      return yield* new InputError({
        message: "--input is required",
        hint: "pass a text file or a bundled document name",
      });
    }
    if (Option.isNone(i.question) || i.question.value.trim() === "") {
      return yield* new InputError({ message: "--question is required", hint: 'pass --question "…"' });
    }
    const question = i.question.value.trim();
    const given = Option.getOrUndefined(i.answer);
    if (given !== undefined && given.trim() === "") {
      return yield* new InputError({
        message: "--answer is empty",
        hint: "pass the answer's text, or leave --answer out",
      });
    }
    const toStdout = Option.isSome(i.json) && i.json.value === "-";
    if (Option.isSome(i.json) && !toStdout) yield* checkWritable(i.json.value, "--json");
    if (Option.isSome(i.html)) yield* checkWritable(i.html.value, "--html");
    const out = (s: string) => (toStdout ? Console.error(s) : Console.log(s));
    const source = yield* readInput(i.input.value);
    const atP = traceback.attnTraceParams({ topK: top, words, rounds, sampleRatio, seed });
    const tlP = traceback.tracLlmParams({ topK: top, words, permutations, seed });

    // ---- model, texts, prompt
    const progress = makeProgress(!toStdout);
    const model = yield* loadLlama(modelPath()).pipe(
      Effect.mapError((e) =>
        new InputError({ message: `cannot load the model: ${e.message}`, hint: e.hint })
      ),
    );
    const tok = model.tokenizer;
    const selection = yield* selectBackend({ backend: backendChoice as BackendChoice });
    const { backend, onGpu } = yield* forwardBackend(selection, backendChoice, model.sgemm.gemm);
    const backendName = onGpu
      ? `${backend.kind} (${backend.adapter.name})`
      : `cpu (GEMMs by ${model.sgemm.name})`;
    let spans = traceback.splitWords(source.text, words);
    let prompt = yield* tracePrompt(tok, question, spans.map((s) => s.text));
    const reserve = given !== undefined ? tok.encodeOrdinary(given.trim()).length : maxNew;
    const all = spans.length;
    while (fullLength(prompt, []) + reserve > context) {
      if (!i.truncate || spans.length <= 1) {
        return yield* new InputError({
          message: `the document's ${all} texts, the question and ${reserve} answer tokens need ` +
            `${fullLength(prompt, []) + reserve} tokens; --context is ${context}`,
          hint:
            "pass --truncate to keep the first texts that fit, a larger --context (at most 8192), or a shorter document",
        });
      }
      spans = spans.slice(0, Math.max(1, Math.floor(spans.length * 0.95)));
      prompt = yield* tracePrompt(tok, question, spans.map((s) => s.text));
    }
    const g = yield* loadLlamaGraph(model, backend);

    // ---- the answer
    let answerIds: number[];
    let answerSource: "given" | "generated";
    if (given !== undefined) {
      answerIds = tok.encodeOrdinary(given.trim());
      answerSource = "given";
    } else {
      progress.phase("generating the answer", 1, "steps");
      const ids = assemble(prompt, spans.map((_, k) => k)).ids;
      const stop = new Set([tok.eosId, ...tok.controlIds]);
      const r = yield* generateGreedyGraph(g, ids, maxNew, { stop, chunk: ids.length });
      r.cache.release();
      progress.done();
      const text = tok.decode(r.ids.filter((t) => !stop.has(t)), true).split("\n")[0].trim();
      if (text === "") {
        return yield* new InputError({
          message: "the model's answer is empty",
          hint: 'pass the answer to trace with --answer "…"',
        });
      }
      answerIds = tok.encodeOrdinary(text);
      answerSource = "generated";
    }
    const answer = tok.decode(answerIds, true);

    // ---- traceback
    const reports: MethodReport[] = [];
    const ranked = (scores: ArrayLike<number>, topIds: readonly number[]): RankedText[] =>
      topIds.map((t, r) => ({
        rank: r + 1,
        text: t,
        score: scores[t],
        start: spans[t].start,
        end: spans[t].end,
      }));
    if (method !== "tracllm") {
      progress.phase("AttnTrace", atP.sampleRatio >= 1 ? 1 : atP.rounds, "forwards");
      const r = yield* attnTrace(g, prompt, answerIds, atP, (d) => progress.update(d));
      progress.done();
      reports.push({
        method: "attntrace",
        params: { ...atP },
        top: ranked(r.scores, r.top),
        scores: [...r.scores],
        forwards: r.forwards,
        ms: r.ms,
      });
    }
    if (method !== "attntrace") {
      progress.phase("TracLLM", 1, "searches");
      const r = yield* tracLlmTrace(g, prompt, answerIds, tlP);
      progress.done();
      reports.push({
        method: "tracllm",
        params: { ...tlP },
        top: ranked(r.scores, r.top.filter((t) => Number.isFinite(r.scores[t]))),
        scores: [...r.scores].map((s) => (Number.isFinite(s) ? s : null)),
        forwards: r.forwards,
        ms: r.ms,
      });
    }
    g.release();
    const report: TraceReport = {
      version: TRACE_REPORT_VERSION,
      input: source.name,
      question,
      answer,
      answerSource,
      texts: spans.length,
      wordsPerText: words,
      truncatedTexts: all - spans.length,
      tokens: fullLength(prompt, answerIds),
      backend: backendName,
      methods: reports,
    };

    // ---- output
    yield* out(
      `trace: ${source.name}: ${spans.length} texts of ${words} words${
        all > spans.length ? ` (first ${spans.length} of ${all}: --truncate)` : ""
      }, ${report.tokens} tokens; ${backendName}`,
    );
    yield* out(`question: ${question}`);
    yield* out(`answer (${answerSource}, ${plural(answerIds.length, "token")}): ${answer}`);
    for (const m of reports) {
      yield* out(`\n${m.method}: ${plural(m.forwards, "forward")}, ${(m.ms / 1000).toFixed(2)} s`);
      const unseen = m.scores.filter((x) => x === 0).length;
      if (m.method === "attntrace" && unseen > 0) {
        yield* out(
          `  (${
            plural(unseen, "text")
          } never sampled or weightless: score 0; raise --rounds or --sample-ratio)`,
        );
      }
      for (const t of m.top) {
        const body = source.text.slice(t.start, t.end).replace(/\s+/g, " ");
        yield* out(`  ${t.rank}. text ${t.text} (score ${t.score.toPrecision(4)}): ${body}`);
      }
    }
    if (Option.isSome(i.json)) {
      const json = JSON.stringify(report, null, 2);
      if (toStdout) yield* Console.log(json);
      else yield* writeFile(i.json.value, json + "\n", "--json");
    }
    if (Option.isSome(i.html)) {
      yield* writeFile(i.html.value, traceHtml(source.text, spans, report), "--html");
    }
  });

/** The `trace` command (exported for a multi-command entry point). */
export const traceCommand = Command.make("trace", flags, main).pipe(
  Command.withDescription("Rank the texts of a document that produced an answer (AttnTrace, TracLLM)"),
);

if (import.meta.main) runCli(traceCommand, { version: "0.1.0" });
