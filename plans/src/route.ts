/**
 * The planner's route between retrieval (RAG) and full long context (LC), after LaRA (Li et al. 2025, arXiv
 * 2502.09977: "no silver bullet for LC or RAG routing"): for a request (model, context length, task type) it
 * picks RAG or LC — and, for LC, which attention technique at which knob value — and says why.
 *
 * - **Prior**: LaRA's measured accuracy gaps LC − RAG (points, mean over its 11 models, `figs/main.png` of the
 *   official repository) per task category at 32K and 128K, shifted for small models by its smallest model's
 *   gap (Llama-3.2-3B) against the mean. Our task types map onto LaRA's categories (see {@link LARA_CATEGORY}).
 *   As accuracies: LC `0.5 + gap / 200`, RAG `0.5 − gap / 200`, worth `priorTasks` pseudo-tasks.
 * - **Evidence**: measured outcomes ({@link RouteEvidence}: tasks answered correctly out of tasks run, time per
 *   task) of the same model and task type at the measured context length nearest to the request (log scale),
 *   pooled over documents; `bench fidelity` (benchmarks/fidelity/bench.ts) measures them.
 * - **Choice**: the option with the highest posterior mean accuracy `(correct + priorTasks · prior) / (tasks +
 *   priorTasks)`; ties go to the faster option (measured time per task), then to the exact LC technique. A
 *   context beyond the model's trained context (`maxContext`) routes to RAG: LC cannot read the document.
 *
 * {@link evaluateRouting} checks the route against always-LC and always-RAG on the measured task set, both
 * in-sample and held out (each group of tasks — one haystack — routed by the evidence of the others).
 * Pure TypeScript: no runtime imports.
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Effect, Exit, Schema } from "effect";
import { TECHNIQUES } from "@longctx/ops";
import { PlanError } from "./errors.ts";
import { getModel, type ModelSpec, parameterCount } from "./models.ts";

/** Task types of the fidelity task set (benchmarks/fidelity/tasks.ts). */
export const ROUTE_TASKS = ["single", "multi", "compare", "aggregate", "unanswerable"] as const;
/** One task type. */
export type RouteTask = typeof ROUTE_TASKS[number];

/** LaRA's task categories. */
export type LaraCategory = "location" | "reasoning" | "comparison" | "hallucination";

/**
 * Which LaRA category each of our task types stands for: one planted fact → Location; two facts at once →
 * Reasoning (combining retrieved pieces); comparison and counting across the document → Comparison;
 * an absent fact → Hallucination detection.
 */
export const LARA_CATEGORY: Readonly<Record<RouteTask, LaraCategory>> = {
  single: "location",
  multi: "reasoning",
  compare: "comparison",
  aggregate: "comparison",
  unanswerable: "hallucination",
};

/** LaRA's main table: mean accuracy gap LC − RAG in points over 11 models, per context length (tokens). */
export const LARA_GAPS: Readonly<Record<32768 | 131072, Readonly<Record<LaraCategory, number>>>> = {
  32768: { location: 0.08, reasoning: 4.66, comparison: 15.22, hallucination: -10.38 },
  131072: { location: -5.25, reasoning: -1.39, comparison: 14.30, hallucination: -22.36 },
};

/**
 * LaRA's small-model shift (points): the overall gap of its smallest model, Llama-3.2-3B (LC / RAG 50.48 / 52.67
 * at 32K, 42.89 / 49.37 at 128K), minus the 11-model mean overall gap (+2.40, −3.68).
 */
export const LARA_SMALL_MODEL_SHIFT: Readonly<Record<32768 | 131072, number>> = {
  32768: (50.48 - 52.67) - 2.40,
  131072: (42.89 - 49.37) - -3.68,
};

/** Models with at most this many parameters get {@link LARA_SMALL_MODEL_SHIFT} (LaRA's smallest is 3.2B). */
export const SMALL_MODEL_PARAMS = 4e9;

/** RAG, or LC with one attention technique (and its knob value when it has one). */
export type RouteOption =
  | { readonly kind: "rag" }
  | {
    readonly kind: "lc";
    /** A registered technique's name (`dense`, `sale`, `hip`). */
    readonly technique: string;
    /** The technique's knob and its value, when it has one. */
    readonly knob?: { readonly param: string; readonly value: number };
  };

/** The schema of {@link RouteOption}. */
export const RouteOption: Schema.Codec<RouteOption> = Schema.Union([
  Schema.Struct({ kind: Schema.Literal("rag") }),
  Schema.Struct({
    kind: Schema.Literal("lc"),
    technique: Schema.String,
    knob: Schema.optionalKey(Schema.Struct({ param: Schema.String, value: Schema.Number })),
  }),
]);

/** Measured outcomes of one option on one group of tasks of one type. */
export interface RouteEvidence {
  /** Model id or alias of `plans/src/models.ts` (`smollm2-135m`). */
  readonly model: string;
  /** Context length (tokens) the tasks ran at. */
  readonly context: number;
  /** The task type. */
  readonly task: RouteTask;
  /** What ran. */
  readonly option: RouteOption;
  /** Tasks run. */
  readonly tasks: number;
  /** Tasks answered correctly. */
  readonly correct: number;
  /** Mean wall time per task (prefill + question + answer), ms. */
  readonly msPerTask: number;
  /** The group the tasks came from (one haystack), for held-out evaluation. */
  readonly group?: string;
}

/** The schema of {@link RouteEvidence}. */
export const RouteEvidence: Schema.Codec<RouteEvidence> = Schema.Struct({
  /** Model id or alias of `plans/src/models.ts` (`smollm2-135m`). */
  model: Schema.String,
  /** Context length (tokens) the tasks ran at. */
  context: Schema.Number.check(Schema.isInt(), Schema.isGreaterThan(0)),
  task: Schema.Literals(ROUTE_TASKS),
  option: RouteOption,
  /** Tasks run and answered correctly. */
  tasks: Schema.Number.check(Schema.isInt(), Schema.isGreaterThan(0)),
  correct: Schema.Number.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0)),
  /** Mean wall time per task (prefill + question + answer), ms. */
  msPerTask: Schema.Number.check(Schema.isFinite(), Schema.isGreaterThanOrEqualTo(0)),
  /** The group the tasks came from (one haystack), for held-out evaluation. */
  group: Schema.optionalKey(Schema.String),
});

/** A routing request. */
export interface RouteRequest {
  /** Model id or alias of `plans/src/models.ts`. */
  readonly model: string;
  /** Context length (tokens) of the full document + question. */
  readonly context: number;
  /** The task type. */
  readonly task: RouteTask;
}

/** One option as scored for a request. */
export interface ScoredOption {
  /** The option. */
  readonly option: RouteOption;
  /** `rag`, `lc:<technique>` or `lc:<technique>:<param>=<value>`. */
  readonly key: string;
  /** Prior accuracy from LaRA's reported gaps, in [0, 1]. */
  readonly prior: number;
  /** Measured tasks. */
  readonly tasks: number;
  /** Measured tasks answered correctly. */
  readonly correct: number;
  /** Posterior mean accuracy, in [0, 1]. */
  readonly score: number;
  /** Measured mean ms per task, or undefined. */
  readonly msPerTask?: number;
}

/** The route for one request. */
export interface RouteDecision {
  /** What was asked. */
  readonly request: RouteRequest;
  /** The chosen option. */
  readonly choice: ScoredOption;
  /** Every option considered, best first. */
  readonly options: readonly ScoredOption[];
  /** The measured context the evidence came from (undefined: prior only). */
  readonly evidenceContext?: number;
  /** LaRA's gap used as the prior (points, LC − RAG, small-model shift included). */
  readonly priorGap: number;
  /** One sentence: what was chosen and why. */
  readonly reason: string;
}

/** Options of {@link route}. */
export interface RouteOptions {
  /** Weight of LaRA's prior in pseudo-tasks (default 4). */
  readonly priorTasks?: number;
}

/** The option's key (see {@link ScoredOption.key}). */
export const optionKey = (o: RouteOption): string =>
  o.kind === "rag" ? "rag" : `lc:${o.technique}${o.knob ? `:${o.knob.param}=${o.knob.value}` : ""}`;

/** The registry's exact technique (the first that is not sparse): the LC option without evidence. */
const exactTechnique = (): string => TECHNIQUES.find((t) => !t.sparse)?.name ?? TECHNIQUES[0].name;

const laraRow = (context: number): 32768 | 131072 => (context <= 65536 ? 32768 : 131072);

/** LaRA's prior gap for a known model (see {@link priorGap}). */
const gapFor = (spec: ModelSpec, context: number, task: RouteTask): number => {
  const row = laraRow(context);
  const small = parameterCount(spec) <= SMALL_MODEL_PARAMS;
  return LARA_GAPS[row][LARA_CATEGORY[task]] + (small ? LARA_SMALL_MODEL_SHIFT[row] : 0);
};

/**
 * LaRA's prior gap LC − RAG (points) for `task` on `model` at `context` tokens: the 32K row up to 64K tokens,
 * the 128K row above, plus the small-model shift for models of at most {@link SMALL_MODEL_PARAMS} parameters.
 * Fails with `PlanError` `unknown-model`.
 */
export const priorGap = (model: string, context: number, task: RouteTask): Effect.Effect<number, PlanError> =>
  Effect.map(getModel(model), (spec) => gapFor(spec, context, task));

/** The value of a synchronous Effect, or `d` when it fails. */
const runSyncOr = <A, E, D>(e: Effect.Effect<A, E>, d: D): A | D => {
  const r = Effect.runSyncExit(e);
  return Exit.isSuccess(r) ? r.value : d;
};

const fmtPct = (x: number) => `${(100 * x).toFixed(1)} %`;
const describe = (o: RouteOption): string =>
  o.kind === "rag" ? "RAG" : `LC with ${o.technique}${o.knob ? ` (${o.knob.param} ${o.knob.value})` : ""}`;

/**
 * Route one request: score RAG and every LC option (the registry's exact technique always; others when
 * measured) by LaRA's prior and the evidence, and pick the best (see the module doc). Fails with `PlanError`
 * `unknown-model` for a model the registry does not know, and `bad-request` for a context that is not a
 * positive integer.
 */
export const route = (
  request: RouteRequest,
  evidence: readonly RouteEvidence[],
  opts: RouteOptions = {},
): Effect.Effect<RouteDecision, PlanError> =>
  Effect.gen(function* () {
    if (!Number.isInteger(request.context) || request.context <= 0) {
      return yield* new PlanError({
        reason: "bad-request",
        message: `route: context must be a positive integer number of tokens, got ${request.context}`,
        hint: "pass the document + question length in tokens, e.g. 4096",
      });
    }
    const spec = yield* getModel(request.model);
    const priorTasks = opts.priorTasks ?? 4;
    const row = laraRow(request.context);
    const small = parameterCount(spec) <= SMALL_MODEL_PARAMS;
    const gap = gapFor(spec, request.context, request.task);
    const mine = evidence.filter((e) =>
      e.task === request.task && runSyncOr(getModel(e.model), undefined)?.id === spec.id
    );
    let evidenceContext: number | undefined;
    for (const e of mine) {
      const d = Math.abs(Math.log2(e.context / request.context));
      if (evidenceContext === undefined || d < Math.abs(Math.log2(evidenceContext / request.context))) {
        evidenceContext = e.context;
      }
    }
    const cells = new Map<string, { option: RouteOption; tasks: number; correct: number; ms: number }>();
    const add = (option: RouteOption, tasks: number, correct: number, ms: number) => {
      const k = optionKey(option);
      const c = cells.get(k) ?? { option, tasks: 0, correct: 0, ms: 0 };
      cells.set(k, { option, tasks: c.tasks + tasks, correct: c.correct + correct, ms: c.ms + ms * tasks });
    };
    add({ kind: "rag" }, 0, 0, 0);
    add({ kind: "lc", technique: exactTechnique() }, 0, 0, 0);
    for (const e of mine) if (e.context === evidenceContext) add(e.option, e.tasks, e.correct, e.msPerTask);
    const exactKey = optionKey({ kind: "lc", technique: exactTechnique() });
    const scored: ScoredOption[] = [...cells.entries()].map(([key, c]) => {
      const prior = c.option.kind === "rag" ? 0.5 - gap / 200 : 0.5 + gap / 200;
      return {
        option: c.option,
        key,
        prior,
        tasks: c.tasks,
        correct: c.correct,
        score: (c.correct + priorTasks * prior) / (c.tasks + priorTasks),
        ...(c.tasks > 0 ? { msPerTask: c.ms / c.tasks } : {}),
      };
    });
    scored.sort((a, b) =>
      b.score - a.score > 1e-9 || a.score - b.score > 1e-9
        ? b.score - a.score
        : (a.msPerTask ?? Infinity) - (b.msPerTask ?? Infinity) ||
          Number(b.key === exactKey) - Number(a.key === exactKey)
    );
    // LC needs the whole document in the model's context: beyond it, only RAG is feasible.
    const fits = request.context <= spec.maxContext;
    if (!fits) scored.sort((a, b) => Number(b.key === "rag") - Number(a.key === "rag"));
    const choice = scored[0];
    const rag = scored.find((s) => s.key === "rag")!;
    const bestLc = scored.find((s) => s.key !== "rag")!;
    const measured = (s: ScoredOption) =>
      s.tasks > 0
        ? `${s.correct}/${s.tasks} correct${
          s.msPerTask !== undefined ? `, ${(s.msPerTask / 1000).toFixed(1)} s/task` : ""
        }`
        : "not measured";
    const priorText = `LaRA prior ${gap >= 0 ? "+" : ""}${gap.toFixed(1)} points LC − RAG (${
      LARA_CATEGORY[request.task]
    }, ${row === 32768 ? "32K" : "128K"} row${small ? ", small-model shift" : ""})`;
    const evidenceText = evidenceContext === undefined
      ? "no measurement: prior only"
      : `measured at ${evidenceContext} tokens: ${describe(bestLc.option)} ${measured(bestLc)}, RAG ${
        measured(rag)
      }`;
    const other = choice.key === "rag" ? bestLc : rag;
    const tie = Math.abs(choice.score - other.score) <= 1e-9;
    const reason = fits
      ? `${describe(choice.option)}: ${priorText}; ${evidenceText}; posterior ${fmtPct(choice.score)} vs ${
        fmtPct(other.score)
      } for ${describe(other.option)}${tie ? " (tie: the faster)" : ""}`
      : `RAG: ${request.context} tokens exceed ${spec.id}'s ${spec.maxContext}-token context, so LC cannot read ` +
        `the whole document (${priorText}; ${evidenceText})`;
    return {
      request,
      choice,
      options: scored,
      ...(evidenceContext === undefined ? {} : { evidenceContext }),
      priorGap: gap,
      reason,
    };
  });

/** Accuracy and time of one policy over a task set. */
export interface PolicyOutcome {
  /** Tasks scored. */
  readonly tasks: number;
  /** Tasks answered correctly. */
  readonly correct: number;
  /** Σ time per task × tasks, ms. */
  readonly ms: number;
}

/** How the route compares with always-LC (the exact technique) and always-RAG. */
export interface RoutingEvaluation {
  /** Each group's cells routed by the evidence of the other groups (prior only when there are none). */
  readonly heldOut: {
    readonly route: PolicyOutcome;
    readonly lc: PolicyOutcome;
    readonly rag: PolicyOutcome;
  };
  /** Every cell routed by all the evidence (its own included). */
  readonly inSample: {
    readonly route: PolicyOutcome;
    readonly lc: PolicyOutcome;
    readonly rag: PolicyOutcome;
  };
  /** The held-out decisions, per group. */
  readonly decisions: readonly { readonly group: string; readonly decision: RouteDecision }[];
}

/**
 * Evaluate the route on measured evidence (rows with `group`): for every group and (context, task) cell, the
 * route's choice is scored by that group's own outcome of the chosen option; always-LC takes the exact
 * technique, always-RAG RAG. The route chooses only among the options the group itself ran (evidence of
 * other options is left out for it). Fails with `PlanError` `bad-request` when a group lacks RAG's or the exact
 * technique's outcome for a cell, and as {@link route} does.
 */
export const evaluateRouting = (
  model: string,
  evidence: readonly RouteEvidence[],
  opts: RouteOptions = {},
): Effect.Effect<RoutingEvaluation, PlanError> =>
  Effect.gen(function* () {
    const groups = [...new Set(evidence.map((e) => e.group ?? ""))];
    const zero = () => ({ tasks: 0, correct: 0, ms: 0 });
    const held = { route: zero(), lc: zero(), rag: zero() };
    const ins = { route: zero(), lc: zero(), rag: zero() };
    const decisions: { group: string; decision: RouteDecision }[] = [];
    const exactKey = optionKey({ kind: "lc", technique: exactTechnique() });
    for (const g of groups) {
      const own = evidence.filter((e) => (e.group ?? "") === g);
      const others = evidence.filter((e) => (e.group ?? "") !== g);
      const cells = new Map<string, RouteEvidence[]>();
      for (const e of own) {
        cells.set(`${e.context}|${e.task}`, [...(cells.get(`${e.context}|${e.task}`) ?? []), e]);
      }
      for (const rows of cells.values()) {
        const { context, task } = rows[0];
        const outcome = (key: string) => rows.find((e) => optionKey(e.option) === key);
        const tally = (acc: { tasks: number; correct: number; ms: number }, key: string) =>
          Effect.gen(function* () {
            const r = outcome(key);
            if (!r) {
              return yield* new PlanError({
                reason: "bad-request",
                message:
                  `evaluateRouting: group ${g} has no outcome of ${key} for ${task} at ${context} tokens`,
                hint: "measure every option on every group (bench fidelity does)",
              });
            }
            acc.tasks += r.tasks;
            acc.correct += r.correct;
            acc.ms += r.msPerTask * r.tasks;
          });
        // The route may choose only among the options this group ran (a run may sweep fewer points).
        const ran = new Set(rows.map((e) => optionKey(e.option)));
        const pool = (xs: readonly RouteEvidence[]) => xs.filter((e) => ran.has(optionKey(e.option)));
        const h = yield* route({ model, context, task }, pool(others), opts);
        const i = yield* route({ model, context, task }, pool(evidence), opts);
        decisions.push({ group: g, decision: h });
        yield* tally(held.route, h.choice.key);
        yield* tally(ins.route, i.choice.key);
        for (const acc of [held, ins]) {
          yield* tally(acc.lc, exactKey);
          yield* tally(acc.rag, "rag");
        }
      }
    }
    return { heldOut: held, inSample: ins, decisions };
  });

/** What {@link routeEvidenceFromRows} reads of a result row (a stored benchmark `Row` has it). */
export interface EvidenceRow {
  /** The row's metric (`accuracy`, `ms_per_task`, …). */
  readonly metric: string;
  /** Context length, tokens. */
  readonly context?: number;
  /** What ran (`dense`, a technique, `rag`). */
  readonly impl?: string;
  /** The row's parameters (task type, knob, group, …). */
  readonly params?: Readonly<Record<string, string | number | boolean>>;
}

/**
 * The measured table as route evidence, from rows of `bench fidelity` (`benchmarks/results/fidelity.json`):
 * every `accuracy` row of one task type (not `all`) is one cell (model, context, task type, option, tasks,
 * correct, ms per task, and the haystack as its group). It reads `accuracy` rows whose `params` carry
 * `model_id`, `task_type` (one of {@link ROUTE_TASKS}), `tasks`, `correct`, `ms_per_task`, `haystack` and, for LC, `technique` (with
 * `knob_param` / `knob_value` for a swept technique); `impl: "rag"` rows are RAG. Other rows are skipped.
 */
export const routeEvidenceFromRows = (rows: readonly EvidenceRow[]): RouteEvidence[] => {
  const out: RouteEvidence[] = [];
  for (const r of rows) {
    const p = r.params;
    if (r.metric !== "accuracy" || !p || r.context === undefined) continue;
    const task = p.task_type;
    if (typeof task !== "string" || !(ROUTE_TASKS as readonly string[]).includes(task)) continue;
    const option: RouteOption = r.impl === "rag" ? { kind: "rag" } : {
      kind: "lc",
      technique: String(p.technique ?? r.impl),
      ...(typeof p.knob_param === "string" && typeof p.knob_value === "number"
        ? { knob: { param: p.knob_param, value: p.knob_value } }
        : {}),
    };
    out.push({
      model: String(p.model_id),
      context: r.context,
      task: task as RouteTask,
      option,
      tasks: Number(p.tasks),
      correct: Number(p.correct),
      msPerTask: Number(p.ms_per_task),
      ...(p.haystack === undefined ? {} : { group: String(p.haystack) }),
    });
  }
  return out;
};
