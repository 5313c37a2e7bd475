/**
 * `run`: a real model on a real document, dense attention against the planned pipeline.
 *
 * ```sh
 * deno run -A runtime/src/cli/run.ts --model smollm2-135m --input <file | bundled document name>
 *     [--question "…"] [--plant WORD] [--pipeline auto|<technique>] [--params JSON] [--index doc.sqz]
 *     [--kv-store file:///dir | sqlite:///x.db | redis://host:port] [--kv-level 1|2|3 | --kv-gbps G [--kv-slo ms]]
 *     [--context 1024] [--truncate] [--max-new 24] [--backend auto|wgpu|webgpu|dawn|cpu] [--speculative self]
 *     [--json out.json | --json -] [--chart out.svg] [--verbose]
 * ```
 * Loads the model (GGUF), tokenises the document inside SmolLM2's chat template (document + question), fits it
 * into `--context` tokens (prompt + answer; a one-line error beyond, or `--truncate` to keep its first tokens),
 * optionally plants "The secret passphrase is WORD." at a line boundary near its middle (the default question
 * then asks for it), asks the planner for a pipeline (`auto`) or takes `--pipeline`, runs the prefill with that
 * pipeline and with dense attention, greedily decodes an answer from each, and prints a report: tokens, backend
 * and adapter, time per phase, speedup, density, perplexity over the document tokens (dense and pipeline),
 * KL(dense ‖ pipeline), top-1 agreement, per-layer density and output error, and both answers.
 *
 * The forward runs as one graph of operators (`llama_graph.ts`: SALE layers run SALE's operators inlined) on the
 * selected GPU backend, or on the cpu backend (OpenBLAS GEMMs) with `--backend cpu` and with `--backend auto` on
 * a software adapter (lavapipe, where the cpu backend is ~10× faster). `--backend` also picks the device
 * profile the planner plans with. Runs under Deno and Bun. Bad input prints one
 * `error: … — fix: …` line and exits with 1 (`--verbose` adds the stack).
 * @module
 */
import process from "node:process";
import { existsSync } from "node:fs";
import { Console, Effect, Option } from "effect";
import { Command, Flag } from "effect/cli";
import { decodeTechniqueParams, InputError, paramNames } from "@longctx/graph";
import { techniqueNames, TECHNIQUES } from "@longctx/ops";
import {
  builtinDensities,
  builtinProfile,
  builtinProfileNames,
  defaultOperators,
  getModel,
  type Plan,
  plan,
} from "@longctx/plans";
import { modelPath } from "../paths.ts";
import { loadLlama } from "../model/llama.ts";
import { loadLlamaGraph } from "../model/llama_graph.ts";
import {
  type BackendChoice,
  describeBackend,
  forwardBackend,
  plannerProfileName,
  selectBackend,
} from "../backends/select.ts";
import { parseTokens } from "./plan.ts";
import { buildPrompt, readInput } from "./run/prompt.ts";
import {
  compareOverDocument,
  type LayerChoice,
  type PassResult,
  runPassGraph,
  techniqueChoices,
} from "./run/execute.ts";
import { assertFiniteMetrics } from "../model/metrics.ts";
import { renderLayerChart } from "./run/chart.ts";
import { makeProgress } from "./run/progress.ts";
import {
  checkWritable,
  intFlag,
  oneOf,
  positiveFlag,
  runCli,
  verboseFlag,
  withShownDefault,
  writeFile,
} from "./main.ts";
import { RUN_REPORT_VERSION, type RunReport } from "./run/report.ts";
import { type PrefixIndexInfo, runSqueezedPass } from "./run/squeezed.ts";
import { type KvLoadMode, type KvStoreInfo, runKvStorePass } from "./run/kvstore.ts";
import { parseSpeculative, runSpeculativePass, speculativeLines } from "./run/speculative.ts";
import { openKvStore } from "../kvstore/mod.ts";
import { checkIndexFor, loadSqueezedIndex } from "../squeezed/squeezed.ts";

/** Models `run` can load (the GGUF that setup installs). */
const RUNNABLE_MODELS = ["smollm2-135m"] as const;
/** `--pipeline`: the planner's choice, or any registered technique (`TECHNIQUES` of `@longctx/ops`). */
const PIPELINES = ["auto", ...techniqueNames()];
const BACKENDS = ["auto", "wgpu", "webgpu", "dawn", "cpu"] as const;
/** Default context (prompt + answer tokens): the demo finishes in under 2 minutes on 2 CPU cores. */
export const DEFAULT_CONTEXT = 1024;
const DEFAULT_MAX_NEW = 24;
/** `--pipeline squeezed`: tokens reserved for the question part, so the fixed context does not depend on it. */
const SQUEEZED_QUESTION_ROOM = 128;

const flags = {
  model: Flag.String("model").pipe(
    withShownDefault(
      `model id (${RUNNABLE_MODELS.join(", ")}); the file is LONGCTX_MODEL or .cache/models`,
      "smollm2-135m",
    ),
  ),
  input: Flag.String("input").pipe(
    Flag.withAlias("i"),
    Flag.withDescription("a text file, or a bundled document name (alice-in-wonderland, …)"),
    Flag.optional,
  ),
  question: Flag.String("question").pipe(
    Flag.withDescription(
      `the question asked about the document (default: "What is the secret passphrase?" with --plant, ` +
        `else "What is this document about? Answer in one sentence.")`,
    ),
    Flag.optional,
  ),
  plant: Flag.String("plant").pipe(
    Flag.withDescription('plant "The secret passphrase is WORD." in the middle of the document'),
    Flag.optional,
  ),
  pipeline: Flag.String("pipeline").pipe(
    withShownDefault(
      `auto (the planner decides) or a registered technique: ${techniqueNames().join(", ")}`,
      "auto",
    ),
  ),
  context: Flag.String("context").pipe(
    Flag.withAlias("c"),
    withShownDefault("prompt + answer tokens: 1024, 2k", String(DEFAULT_CONTEXT)),
  ),
  truncate: Flag.Boolean("truncate").pipe(
    Flag.withDescription("keep the document's first tokens when it does not fit the context"),
    Flag.withDefault(false),
  ),
  maxNew: Flag.String("max-new").pipe(
    withShownDefault(
      "answer tokens at most; the answer also ends at the end of the model's turn or of its first line",
      String(DEFAULT_MAX_NEW),
    ),
  ),
  backend: Flag.String("backend").pipe(
    withShownDefault(
      `${BACKENDS.join(", ")} (auto: a GPU; the cpu backend on a software adapter or without one)`,
      "auto",
    ),
  ),
  params: Flag.String("params").pipe(
    Flag.withDescription(
      `the --pipeline technique's parameters as JSON, e.g. '{"percentile":0.7}' (default: its official ` +
        "defaults; unknown keys and impossible values are refused with the parameter's name)",
    ),
    Flag.optional,
  ),
  index: Flag.String("index").pipe(
    Flag.withDescription(
      "--pipeline squeezed: the document's prefix index file — loaded when it exists (no prefill of the " +
        "document; a stale file is an error), else built and saved there",
    ),
    Flag.optional,
  ),
  kvStore: Flag.String("kv-store").pipe(
    Flag.withDescription(
      "--pipeline dense: a KV store (file:///abs/dir, sqlite:///abs/x.db, redis://host:port) for the document's " +
        "KV cache as CacheGen containers — loaded when stored (no prefill of the document), else stored",
    ),
    Flag.optional,
  ),
  kvLevel: Flag.String("kv-level").pipe(
    Flag.withDescription(
      "--kv-store: load every chunk of a stored context at this CacheGen level: 1, 2 (official 7B/8B config) " +
        "or 3 (default 2 without --kv-gbps; a miss stores all three)",
    ),
    Flag.optional,
  ),
  kvGbps: Flag.String("kv-gbps").pipe(
    Flag.withDescription(
      "--kv-store: the link's bandwidth in Gbit/s, simulated: the loading controller picks per chunk a level " +
        "or the text (recomputed) within --kv-slo, and the bytes' time on that link is added to the time to " +
        "first token (default: no link, every chunk at --kv-level)",
    ),
    Flag.optional,
  ),
  kvSlo: Flag.String("kv-slo").pipe(
    Flag.withDescription(
      "--kv-gbps: the loading controller's budget for the whole context, ms (default 2000, the official SLO)",
    ),
    Flag.optional,
  ),
  kvFallback: Flag.String("kv-fallback").pipe(
    Flag.withDescription(
      "--kv-gbps: a chunk that no level sends within its share of --kv-slo: fastest (its text or a level, " +
        "whichever is faster) or text (recompute it, the official rule) (default fastest)",
    ),
    Flag.optional,
  ),
  json: Flag.String("json").pipe(
    Flag.withDescription("write the whole report as JSON (- for stdout; default: no JSON)"),
    Flag.optional,
  ),
  chart: Flag.String("chart").pipe(
    Flag.withDescription("write an SVG chart of per-layer density and output error (default: no chart)"),
    Flag.optional,
  ),
  speculative: Flag.String("speculative").pipe(
    Flag.withDescription(
      "also decode the answer with LongSpec speculative decoding (CPU forward) against plain greedy: self, random " +
        `or JSON '{"draft":"self","shape":[1,1,1,1],"sinks":4,"window":512}' (runtime/src/cli/run/speculative.ts; ` +
        "default: off)",
    ),
    Flag.optional,
  ),
  verbose: verboseFlag,
};

type Input = Command.Command.Config.Infer<typeof flags>;

const fmtMs = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);
const mean = (xs: readonly number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

/**
 * `--params`: a JSON object of the technique's parameters (checked by its schema when the pipeline is built).
 * Fails with `InputError` for text that is not a JSON object, or parameters with `--pipeline auto`/`dense`.
 */
const parseParams = (text: string | undefined, pipeline: string) =>
  Effect.gen(function* () {
    if (text === undefined) return {} as Record<string, unknown>;
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      v = undefined;
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      return yield* new InputError({
        message: `--params ${JSON.stringify(text)} is not a JSON object`,
        hint: `give the parameters as JSON, e.g. --params '{"percentile":0.7}'`,
      });
    }
    if (pipeline === "auto" || pipeline === "dense") {
      return yield* new InputError({
        message: `--params is for a technique's pipeline (the pipeline is ${pipeline})`,
        hint: "pass --pipeline <technique> with --params, or drop --params",
      });
    }
    return v as Record<string, unknown>;
  });

/** A choice's parameters for the report: the technique's knob (`τ=0.004`, `topK=512`), else none. */
const choiceParams = (c: LayerChoice): string => {
  if (c.kind === "dense" || !c.params) return "";
  const knob = TECHNIQUES.find((t) => t.name === c.kind)?.knob;
  return knob && knob.param in c.params ? ` (${knob.param}=${c.params[knob.param]})` : "";
};

/** Layer ranges of equal choices: `layers 0-29: sale (threshold=0.004)`. */
const describeChoices = (choices: readonly LayerChoice[]): string => {
  const parts: string[] = [];
  const label = (c: LayerChoice) => `${c.kind}${choiceParams(c)}`;
  for (let i = 0; i < choices.length;) {
    let j = i;
    while (j + 1 < choices.length && label(choices[j + 1]) === label(choices[i])) j++;
    parts.push(`layers ${i === j ? i : `${i}-${j}`}: ${label(choices[i])}`);
    i = j + 1;
  }
  return parts.join("; ");
};

/**
 * Per-layer choices from a plan: each group's technique with its planned parameters (those the technique's
 * schema declares), dense groups dense; a group whose technique or parameters the registry refuses runs dense
 * with a warning.
 */
const choicesFromPlan = (p: Plan, nLayer: number): { choices: LayerChoice[]; warnings: string[] } => {
  const choices: LayerChoice[] = Array.from({ length: nLayer }, () => ({ kind: "dense" }));
  const warnings: string[] = [];
  for (const g of p.groups) {
    if (g.pipeline === "dense") continue;
    const t = TECHNIQUES.find((x) => x.name === g.pipeline);
    const all = Object.assign({}, ...g.stages.map((s) => s.params)) as Record<string, unknown>;
    const known = t ? paramNames(t.params) : [];
    const decoded = t
      ? Effect.runSync(Effect.result(
        decodeTechniqueParams(t, Object.fromEntries(Object.entries(all).filter(([k]) => known.includes(k)))),
      ))
      : undefined;
    if (!decoded || decoded._tag === "Failure") {
      warnings.push(
        `the planner chose ${g.pipeline} for layers ${g.layers[0]}-${
          g.layers[1] - 1
        }, which run cannot build` +
          (decoded?._tag === "Failure" ? ` (${decoded.failure.message})` : "") + "; those layers run dense",
      );
      continue;
    }
    const params = decoded.success as Record<string, unknown>;
    for (let l = g.layers[0]; l < g.layers[1] && l < nLayer; l++) choices[l] = { kind: g.pipeline, params };
  }
  return { choices, warnings };
};

const main = (i: Input) =>
  Effect.gen(function* () {
    const tStart = performance.now();
    const phases: Record<string, number> = {};
    const warnings: string[] = [];
    // ---- validate flags (fast, before anything is loaded)
    const pipeline = yield* oneOf("pipeline", i.pipeline, PIPELINES);
    const backendChoice = yield* oneOf("backend", i.backend, BACKENDS);
    const modelId = yield* oneOf("model", i.model.toLowerCase(), RUNNABLE_MODELS);
    const spec = yield* getModel(modelId);
    const context = yield* parseTokens(i.context);
    if (context > spec.maxContext) {
      return yield* new InputError({
        message: `--context ${context} exceeds ${modelId}'s trained context of ${spec.maxContext} tokens`,
        hint: `use --context ${spec.maxContext} or less (with --truncate for a longer document)`,
      });
    }
    const maxNew = yield* intFlag("max-new", i.maxNew, 1);
    const indexPath = Option.getOrUndefined(i.index);
    const userParams = yield* parseParams(Option.getOrUndefined(i.params), pipeline);
    if (indexPath !== undefined && pipeline !== "squeezed") {
      return yield* new InputError({
        message: `--index is for --pipeline squeezed (the pipeline is ${pipeline})`,
        hint: "pass --pipeline squeezed with --index, or drop --index",
      });
    }
    if (indexPath !== undefined && !existsSync(indexPath)) yield* checkWritable(indexPath, "--index");
    const kvUrl = Option.getOrUndefined(i.kvStore);
    const kvFlags = ([
      ["kv-level", i.kvLevel],
      ["kv-gbps", i.kvGbps],
      ["kv-slo", i.kvSlo],
      ["kv-fallback", i.kvFallback],
    ] as const)
      .filter(([, v]) => Option.isSome(v)).map(([n]) => `--${n}`);
    if (kvUrl === undefined && kvFlags.length > 0) {
      return yield* new InputError({
        message: `${kvFlags.join(" and ")} without --kv-store`,
        hint: "pass --kv-store <url> (file:///abs/dir, sqlite:///abs/x.db, redis://host:port), or drop them",
      });
    }
    if (Option.isSome(i.kvLevel) && Option.isSome(i.kvGbps)) {
      return yield* new InputError({
        message: "--kv-level and --kv-gbps together",
        hint: "--kv-gbps lets the loading controller pick each chunk's level: drop one of them",
      });
    }
    if ((Option.isSome(i.kvSlo) || Option.isSome(i.kvFallback)) && Option.isNone(i.kvGbps)) {
      return yield* new InputError({
        message: `${Option.isSome(i.kvSlo) ? "--kv-slo" : "--kv-fallback"} without --kv-gbps`,
        hint: `it is the loading controller's: pass --kv-gbps too, or drop ${
          Option.isSome(i.kvSlo) ? "--kv-slo" : "--kv-fallback"
        }`,
      });
    }
    const kvMode: KvLoadMode = Option.isSome(i.kvGbps)
      ? {
        kind: "controller",
        gbps: yield* positiveFlag("kv-gbps", i.kvGbps.value, "10"),
        sloMs: Option.isSome(i.kvSlo) ? yield* positiveFlag("kv-slo", i.kvSlo.value, "2000") : 2000,
        fallback: yield* oneOf("kv-fallback", Option.getOrElse(i.kvFallback, () => "fastest"), [
          "fastest",
          "text",
        ]),
      }
      : {
        kind: "level",
        level: Number(yield* oneOf("kv-level", Option.getOrElse(i.kvLevel, () => "2"), ["1", "2", "3"])) as
          | 1
          | 2
          | 3,
      };
    if (kvUrl !== undefined && pipeline !== "dense") {
      return yield* new InputError({
        message: `--kv-store loads the document's KV cache for dense attention (the pipeline is ${pipeline})`,
        hint: "pass --pipeline dense with --kv-store, or drop --kv-store",
      });
    }
    // the store opened (and its URL checked) before the model loads: a bad URL or an unreachable server fails now
    const kvStore = kvUrl === undefined ? undefined : yield* openKvStore(kvUrl);
    const speculativeSpec = Option.isSome(i.speculative)
      ? yield* parseSpeculative(i.speculative.value)
      : undefined;
    if (Option.isNone(i.input)) {
      return yield* new InputError({
        message: "--input is required",
        hint: "pass a text file or a bundled document name, e.g. --input alice-in-wonderland",
      });
    }
    const jsonToStdout = Option.isSome(i.json) && i.json.value === "-";
    // output paths are checked before the long computation, so a typo does not cost the whole run
    if (Option.isSome(i.json) && !jsonToStdout) yield* checkWritable(i.json.value, "--json");
    if (Option.isSome(i.chart)) yield* checkWritable(i.chart.value, "--chart");
    const out = (s: string) => (jsonToStdout ? Console.error(s) : Console.log(s));
    const source = yield* readInput(i.input.value);
    const plant = Option.getOrUndefined(i.plant);
    const question = Option.getOrElse(
      i.question,
      () => (plant !== undefined
        ? "What is the secret passphrase?"
        : "What is this document about? Answer in one sentence."),
    );

    // squeezed with an existing --index: read it before the model (a damaged or foreign file fails at once)
    const indexIn = pipeline === "squeezed" && indexPath !== undefined && existsSync(indexPath)
      ? yield* loadSqueezedIndex(indexPath)
      : undefined;

    // ---- load
    const progress = makeProgress(!jsonToStdout);
    progress.phase("loading", 3, "steps");
    let t = performance.now();
    const file = modelPath();
    const model = yield* loadLlama(file).pipe(
      Effect.mapError((e) =>
        new InputError({
          message: `cannot load the model: ${e.message}`,
          hint: e.hint,
        })
      ),
    );
    phases.loadModelMs = performance.now() - t;
    progress.update(1);
    t = performance.now();
    const selection = yield* selectBackend({ backend: backendChoice as BackendChoice });
    phases.openBackendMs = performance.now() - t;
    progress.update(2);
    t = performance.now();
    const prompt = yield* buildPrompt(model.tokenizer, source.text, {
      question,
      context,
      maxNew,
      truncate: i.truncate,
      plant,
      maxContext: spec.maxContext,
      // squeezed and --kv-store: the document cut the same for every question, so one prefix index (one
      // stored KV cache) serves them all
      ...(pipeline === "squeezed" || kvStore ? { questionRoom: SQUEEZED_QUESTION_ROOM } : {}),
    });
    phases.tokenizeMs = performance.now() - t;
    progress.done();
    // squeezed with an existing --index: checked against the model and this document now, before any prefill
    if (indexIn) {
      yield* checkIndexFor(model, prompt.ids.slice(0, prompt.docStart + prompt.docTokens), indexIn);
    }
    const loadedIndex = indexIn;

    // ---- plan
    const cfg = model.config;
    t = performance.now();
    let choices: LayerChoice[];
    let planSource: string;
    let planJson: Plan | undefined;
    const profileName = plannerProfileName(selection.backend);
    // The planner is always asked (≈1 ms); `--pipeline dense|sale` overrides its choice.
    const names = builtinProfileNames();
    const useProfile = names.includes(profileName) ? profileName : names[0];
    if (useProfile !== profileName) {
      warnings.push(`no built-in planner profile "${profileName}"; planned with "${useProfile}"`);
    }
    const planned = yield* Effect.result(
      Effect.gen(function* () {
        const profile = yield* builtinProfile(useProfile ?? profileName);
        const densities = yield* builtinDensities();
        return yield* plan(
          // the graph forward runs f32 Q/K/V: plan that element type, not the profile's default
          { model: modelId, contextLength: prompt.ids.length, phase: "prefill", dtype: "f32" },
          { profile, operators: defaultOperators(), densities },
        );
      }),
    );
    let plannerSays: string;
    let plannerChoices: LayerChoice[] = Array.from({ length: cfg.nLayer }, () => ({ kind: "dense" }));
    if (planned._tag === "Success") {
      planJson = planned.success;
      const r = choicesFromPlan(planned.success, cfg.nLayer);
      plannerChoices = r.choices;
      if (pipeline === "auto") warnings.push(...r.warnings);
      // one reason per layer group; with many groups (one per layer when per-layer densities differ) the
      // first stands for the rest, and --json has them all
      const gs = planned.success.groups;
      plannerSays = `planner (profile ${useProfile}): ${describeChoices(r.choices)} — ` +
        (gs.length <= 3
          ? gs.map((g) => g.reason).join("; ")
          : `layers ${gs[0].layers[0]}-${gs[0].layers[1] - 1}: ${
            gs[0].reason
          }; … (${gs.length} layer groups, ` +
            "each with its reason in --json)");
    } else {
      plannerSays = `planner failed (${planned.failure.message}; ${planned.failure.hint})`;
      if (pipeline === "auto") warnings.push(`${plannerSays}, so dense`);
    }
    if (pipeline === "auto") {
      choices = plannerChoices;
      planSource = plannerSays;
    } else {
      choices = yield* techniqueChoices(pipeline, userParams, cfg.nLayer);
      planSource = `--pipeline ${pipeline}` +
        (pipeline === "dense"
          ? ""
          : Object.keys(userParams).length > 0
          ? ` (--params ${JSON.stringify(userParams)}, the rest ${pipeline}'s defaults)`
          : ` (${pipeline}'s defaults, from its official code)`) +
        ` (overrides the ${plannerSays})`;
    }
    phases.planMs = performance.now() - t;
    const sparse = choices.some((c) => c.kind !== "dense");

    // ---- where the forward runs: the graph forward on a GPU backend; the CPU forward otherwise (and for
    // `--backend auto` on a software adapter such as lavapipe, where the CPU forward is ~10× faster)
    const { backend: computeBackend, onGpu } = yield* forwardBackend(
      selection,
      backendChoice,
      model.sgemm.gemm,
    );
    const graphModel = yield* loadLlamaGraph(model, computeBackend);
    const compute = onGpu
      ? `${selection.backend.kind}: graph forward on ${selection.backend.adapter.name} (f32; runtime/src/model/llama_graph.ts)`
      : `cpu: graph forward on the cpu backend (f32, GEMMs by ${model.sgemm.name})` +
        (selection.backend.kind !== "cpu"
          ? ` — ${selection.backend.adapter.name} is a software adapter: pass --backend ${selection.backend.kind} to run the graph forward on it`
          : "");

    // ---- dense pass, then the pipeline pass
    const dense: LayerChoice[] = Array.from({ length: cfg.nLayer }, () => ({ kind: "dense" }));
    const pass = (label: string, ch: readonly LayerChoice[]) =>
      Effect.gen(function* () {
        progress.phase(`prefill ${label}`, cfg.nLayer, "layers");
        let decoding = false;
        const r = yield* runPassGraph(graphModel, model, prompt.ids, ch, maxNew, {
          layer: (l) => progress.update(l + 1),
          token: (k) => {
            if (!decoding) {
              progress.phase(`decode ${label}`, maxNew, "tokens");
              decoding = true;
            }
            progress.update(k);
          },
        });
        progress.done();
        return r;
      });
    const rDense: PassResult = yield* pass("dense", dense);
    let prefixIndex: PrefixIndexInfo | undefined;
    let kvInfo: KvStoreInfo | undefined;
    let rPipe: PassResult;
    if (pipeline === "squeezed") {
      // the fixed context (chat head + document) dense, its prefix index built or loaded; the question squeezed
      progress.phase("squeezed: context, index, question", 1, "steps");
      const r = yield* runSqueezedPass(
        graphModel,
        model,
        prompt.ids,
        prompt.docStart + prompt.docTokens,
        maxNew,
        rDense,
        indexPath,
        rDense.logitsRows(prompt.ids.length - 1, 1),
        userParams,
        loadedIndex,
      );
      progress.done();
      rPipe = r.pass;
      prefixIndex = r.info;
    } else if (kvStore) {
      // the fixed context's KV cache from the store (no prefill), or prefilled and stored; the question dense
      progress.phase("kv store: context, question", 1, "steps");
      const r = yield* runKvStorePass(
        graphModel,
        model,
        prompt.ids,
        prompt.docStart + prompt.docTokens,
        maxNew,
        rDense,
        rDense.logitsRows(prompt.ids.length - 1, 1),
        kvStore,
        kvMode,
      );
      progress.done();
      rPipe = r.pass;
      kvInfo = r.info;
    } else rPipe = sparse ? yield* pass("pipeline", choices) : rDense;
    t = performance.now();
    const cmp = yield* assertFiniteMetrics(
      compareOverDocument(cfg.vocab, prompt.ids, prompt.docStart, prompt.docTokens, rDense, rPipe),
      "document comparison",
    );
    phases.metricsMs = performance.now() - t;
    graphModel.release();
    const specInfo = speculativeSpec
      ? yield* runSpeculativePass(model, prompt.ids, maxNew, speculativeSpec)
      : undefined;
    if (computeBackend !== selection.backend) yield* computeBackend.close();
    yield* Effect.promise(() => selection.backend.close().pipe(Effect.runPromise));

    // ---- report
    const found = (a: string) =>
      plant === undefined ? undefined : a.toLowerCase().includes(plant.toLowerCase());
    const passJson = (r: PassResult) => ({
      prefillMs: r.prefillMs,
      attentionMs: r.attentionMs,
      decodeMs: r.decodeMs,
      answerTokens: r.answerIds.length,
      decodeTokensPerS: r.answerIds.length > 0 ? r.answerIds.length / (r.decodeMs / 1000) : 0,
      answer: r.answer,
      answerStop: r.answerStop,
      answerHasPassphrase: found(r.answer),
    });
    const density = mean(rPipe.layers.map((l) => l.density));
    const report: RunReport = {
      version: RUN_REPORT_VERSION,
      date: new Date().toISOString(),
      runtime: typeof (globalThis as { Bun?: unknown }).Bun !== "undefined"
        ? `bun ${process.versions.bun}`
        : `deno ${(globalThis as { Deno?: { version: { deno: string } } }).Deno?.version.deno}`,
      model: {
        id: modelId,
        file,
        layers: cfg.nLayer,
        heads: cfg.nHead,
        kvHeads: cfg.nKvHead,
        headDim: cfg.headDim,
        trainedContext: cfg.contextLength,
      },
      document: {
        source: source.kind,
        name: source.name,
        ...(source.title ? { title: source.title } : {}),
        tokensTotal: prompt.docTokensTotal,
        tokensTotalIsLowerBound: prompt.docTokensTotalIsLowerBound,
        tokensKept: prompt.docTokensKept,
        tokensUsed: prompt.docTokens,
        truncated: prompt.truncated,
        planted: prompt.planted ?? null,
      },
      question,
      context,
      promptTokens: prompt.ids.length,
      maxNewTokens: maxNew,
      backend: {
        requested: backendChoice,
        selected: describeBackend(selection.backend),
        report: selection.report,
        fallbacks: selection.fallbacks,
        compute,
        plannerProfile: profileName,
      },
      compared: sparse,
      pipeline: {
        requested: pipeline,
        layers: describeChoices(choices),
        source: planSource,
        plan: planJson ?? null,
      },
      phasesMs: {
        ...phases,
        prefillDense: rDense.prefillMs,
        prefillPipeline: rPipe.prefillMs,
        decodeDense: rDense.decodeMs,
        decodePipeline: rPipe.decodeMs,
        perLayerReference: rPipe === rDense ? 0 : rPipe.referenceMs,
        total: performance.now() - tStart,
      },
      speedup: {
        prefill: rDense.prefillMs / rPipe.prefillMs,
        attention: rDense.attentionMs !== null && rPipe.attentionMs !== null
          ? rDense.attentionMs / rPipe.attentionMs
          : null,
      },
      density,
      perplexity: { dense: cmp.perplexityDense, pipeline: cmp.perplexityPipeline, positions: cmp.positions },
      perplexityChangePct: (cmp.perplexityPipeline / cmp.perplexityDense - 1) * 100,
      kl: { meanNats: cmp.meanKl, maxNats: cmp.maxKl },
      top1Agreement: cmp.top1Agreement,
      dense: passJson(rDense),
      pipelineRun: passJson(rPipe),
      layers: rPipe.layers,
      ...(prefixIndex ? { prefixIndex } : {}),
      ...(kvInfo ? { kvStore: kvInfo } : {}),
      ...(specInfo ? { speculative: specInfo } : {}),
      warnings,
    };

    const pct = (x: number) => `${(x * 100).toFixed(2)} %`;
    const stopText = (r: PassResult) =>
      r.answerStop === "max-new" ? `cut at --max-new ${maxNew}` : r.answerStop.replace(/-/g, " ");
    /** Squeezed Attention's prefix index and question (with --pipeline squeezed). */
    const squeezedLines = (x: PrefixIndexInfo): string[] => [
      `index     ${x.built ? "built" : "loaded"}${
        x.path ? ` ${x.built ? "and saved to" : "from"} ${x.path}` : ""
      }` +
      `${
        x.bytes ? ` (${(x.bytes / 2 ** 20).toFixed(1)} MiB)` : ""
      }: ${x.fixedTokens} fixed-context tokens, ` +
      `${x.clusters} clusters per layer and KV head; ${x.built ? "prefill" : "K/V restored in"} ${
        fmtMs(x.prefillMs)
      }${x.built ? `, clustering ${fmtMs(x.clusterMs)}` : ""}`,
      `question  ${x.questionTokens} tokens prefilled in ${
        fmtMs(x.questionPrefillMs)
      } with the keys above τ ${
        x.threshold.toExponential(2)
      } (percentile ${x.percentile}); KL(dense ‖ squeezed) of the answer's first token ${
        x.firstTokenKl.toExponential(3)
      } nats`,
      "note      the document is the fixed context, prefilled dense: its perplexity and KL below are dense's",
    ];
    /** The KV store's part of the report (with --kv-store). */
    const kvLines = (x: KvStoreInfo): string[] => {
      const c = x.controller;
      const what = c
        ? `per-chunk choice at ${c.gbps} Gbit/s for a budget of ${fmtMs(c.sloMs)}: [${c.sends.join(" ")}]`
        : `level ${x.level}`;
      const kvChunks = x.chunks - x.textChunks;
      const read = kvChunks === 0
        ? "nothing read"
        : `${(x.bytes / 2 ** 20).toFixed(2)} MiB read for ${kvChunks} chunks (${
          x.ratioVsFp16.toFixed(2)
        }× smaller than their fp16), decoded into the cache in ${fmtMs(x.decodeMs)}${
          c ? `, the simulated link ${fmtMs(x.linkMs)} more` : ""
        }`;
      const recomputed = x.textChunks === 0
        ? "no prefill"
        : `${x.textChunks} chunks recomputed in ${fmtMs(x.recomputeMs)}${
          x.missingChunks > 0 ? ` (${x.missingChunks} missing from the store, stored again)` : ""
        }`;
      return [
        `kv store  ${
          x.hit ? "hit" : "miss"
        } at ${x.url}: ${x.fixedTokens} fixed-context tokens in ${x.chunks} ` +
        `chunks (${what}); ` +
        (x.hit
          ? `${read}; ${recomputed}; ${fmtMs(x.loadMs)} in all${
            c && x.loadMs + x.linkMs > c.sloMs
              ? ` (over the budget: no level fits a chunk's share at this bandwidth)`
              : ""
          }`
          : `prefilled in ${fmtMs(x.prefillMs)}; encoded at levels 1–3 (${
            (x.bytes / 2 ** 20).toFixed(2)
          } MiB; level ${x.level} ${x.ratioVsFp16.toFixed(2)}× smaller than fp16) and stored in ${
            fmtMs(x.storeMs)
          }`),
        `ttft      ${fmtMs(x.ttftMs)} (context ${
          x.hit ? (x.textChunks === x.chunks ? "recomputed" : "loaded") : "prefilled"
        }, question prefill ${fmtMs(x.questionPrefillMs)}) against the dense prefill of the whole prompt ${
          fmtMs(rDense.prefillMs)
        }; KL(dense ‖ kv store) of ` +
        `the answer's first token ${x.firstTokenKl.toExponential(3)} nats`,
        `answer (kv store): ${JSON.stringify(rPipe.answer)} (${stopText(rPipe)})` +
        (plant !== undefined ? `  [passphrase ${found(rPipe.answer) ? "found" : "not found"}]` : ""),
        "",
      ];
    };
    /** The dense-against-pipeline part of the report (a sparse pipeline only). */
    const comparison = (): string[] => [
      ...(prefixIndex ? squeezedLines(prefixIndex) : []),
      `speedup   prefill ${report.speedup.prefill.toFixed(2)}×, attention ${
        report.speedup.attention === null ? "not measured" : `${report.speedup.attention.toFixed(2)}×`
      }`,
      `density   ${
        density.toFixed(4)
      } (mean over layers, dense layers counting 1, of the attended share: kept / causal blocks for SALE, attended / causal pairs for HiP and TokenSelect; min ${
        Math.min(...rPipe.layers.map((l) => l.density)).toFixed(4)
      }, max ${Math.max(...rPipe.layers.map((l) => l.density)).toFixed(4)})`,
      `perplexity over ${cmp.positions} document tokens: dense ${cmp.perplexityDense.toFixed(4)}, pipeline ${
        cmp.perplexityPipeline.toFixed(4)
      } (${report.perplexityChangePct >= 0 ? "+" : ""}${report.perplexityChangePct.toFixed(3)} %)`,
      `KL(dense ‖ pipeline) mean ${cmp.meanKl.toExponential(3)} nats, max ${cmp.maxKl.toExponential(3)}; ` +
      `top-1 agreement ${pct(cmp.top1Agreement)}`,
      rPipe.layers.some((l) => l.outRelErr === null)
        ? "output rel. error per layer: not measured on the graph forward (no per-layer dense reference kept)"
        : `output rel. error per layer: mean ${
          mean(rPipe.layers.map((l) => l.outRelErr ?? 0)).toExponential(2)
        }, max ${Math.max(...rPipe.layers.map((l) => l.outRelErr ?? 0)).toExponential(2)}`,
      "",
      `answer (dense):    ${JSON.stringify(rDense.answer)} (${stopText(rDense)})` +
      (plant !== undefined ? `  [passphrase ${found(rDense.answer) ? "found" : "not found"}]` : ""),
      `answer (pipeline): ${JSON.stringify(rPipe.answer)} (${stopText(rPipe)})` +
      (plant !== undefined ? `  [passphrase ${found(rPipe.answer) ? "found" : "not found"}]` : ""),
    ];
    const lines = [
      `longctx run — ${report.runtime}`,
      `model     ${modelId}: ${cfg.nLayer} layers, ${cfg.nHead}/${cfg.nKvHead} heads, d=${cfg.headDim} (${file})`,
      `document  ${source.kind === "bundled" ? `${source.name} — ${source.title}` : source.name}: ` +
      `${prompt.docTokensTotalIsLowerBound ? "more than " : ""}${prompt.docTokensTotal} tokens` +
      (prompt.truncated ? `, first ${prompt.docTokensKept} kept (--truncate)` : ", all kept"),
      ...(prompt.planted
        ? [
          `planted   "${prompt.planted.sentence}" inserted at run time at document token ${prompt.planted.tokenPosition}` +
          ` (depth ${(prompt.planted.depth * 100).toFixed(0)} %)`,
        ]
        : []),
      `question  ${question}`,
      `tokens    prompt ${prompt.ids.length} (document ${prompt.docTokens} + template/question ${
        prompt.ids.length - prompt.docTokens
      }), context ${context}, answer ≤ ${maxNew}`,
      `backend   ${selection.report}; planner profile ${profileName}`,
      `compute   ${report.backend.compute}`,
      `pipeline  ${report.pipeline.layers}`,
      `          chosen by ${planSource}`,
      "",
      `phase                      dense${sparse ? "                pipeline" : ""}`,
      `load model                 ${fmtMs(phases.loadModelMs)}`,
      `open backend               ${fmtMs(phases.openBackendMs)}`,
      `tokenize                   ${fmtMs(phases.tokenizeMs)}`,
      `plan                       ${fmtMs(phases.planMs)}`,
      `prefill                    ${fmtMs(rDense.prefillMs).padEnd(20)} ${
        sparse ? fmtMs(rPipe.prefillMs) : ""
      }`
        .trimEnd(),
      `  of which attention       ${
        rDense.attentionMs === null || rPipe.attentionMs === null
          ? "not measured (the forward runs as one program)"
          : `${fmtMs(rDense.attentionMs).padEnd(20)} ${sparse ? fmtMs(rPipe.attentionMs) : ""}`.trimEnd()
      }`,
      `decode                     ${
        `${fmtMs(rDense.decodeMs)} (${rDense.answerIds.length} tok)`.padEnd(20)
      } ${sparse ? `${fmtMs(rPipe.decodeMs)} (${rPipe.answerIds.length} tok)` : ""}`.trimEnd(),
      `metrics                    ${fmtMs(phases.metricsMs)}`,
      `total                      ${fmtMs(report.phasesMs.total)}` +
      (sparse
        ? ` (incl. ${fmtMs(rPipe.referenceMs)} of per-layer dense reference, not in the prefill time)`
        : ""),
      "",
      ...(kvInfo ? kvLines(kvInfo) : []),
      ...(specInfo ? speculativeLines(specInfo) : []),
      ...(sparse ? comparison() : [
        "compare   nothing to compare: the pipeline is dense in every layer (chosen as above), so dense ran once;" +
        " pass --pipeline sale to compare a sparse pipeline with dense",
        `perplexity over ${cmp.positions} document tokens: ${cmp.perplexityDense.toFixed(4)}`,
        "",
        `answer:   ${JSON.stringify(rDense.answer)} (${stopText(rDense)})` +
        (plant !== undefined ? `  [passphrase ${found(rDense.answer) ? "found" : "not found"}]` : ""),
      ]),
      ...warnings.map((w) => `warning: ${w}`),
    ];
    if (Option.isSome(i.chart)) {
      const svg = yield* Effect.promise(() =>
        renderLayerChart(
          rPipe.layers,
          `Per-layer density and output error — ${sparse ? "pipeline" : "dense"} vs dense`,
          `${modelId}, ${source.name}, ${prompt.ids.length} tokens, ${report.pipeline.layers}`,
        )
      );
      yield* writeFile(i.chart.value, svg, "--chart");
      lines.push(`chart     ${i.chart.value}`);
    }
    if (Option.isSome(i.json)) {
      const text = JSON.stringify(report, null, 2) + "\n";
      if (jsonToStdout) yield* Console.log(text.trimEnd());
      else {
        yield* writeFile(i.json.value, text, "--json");
        lines.push(`json      ${i.json.value}`);
      }
    }
    yield* out(lines.join("\n"));
  });

/** Fails with `InputError` when `path`'s folder does not exist or is not writable, or `path` is a folder. */
/** The `run` command (exported for a future multi-command entry point). */
export const runCommand = Command.make("run", flags, (i) => Effect.scoped(main(i))).pipe(
  Command.withDescription(
    "Run a model on a document with dense attention and the planned pipeline, and compare",
  ),
);

if (import.meta.main) runCli(runCommand, { version: "0.1.0" });
