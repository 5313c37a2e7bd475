/**
 * The planner's route evidence from `bench fidelity` rows: every `accuracy` row of one task type (not `all`)
 * becomes one {@link RouteEvidence} cell (model, context, task type, option, tasks, correct, ms per task, and the
 * haystack as its group).
 * @module
 */
import { ROUTE_TASKS, type RouteEvidence, type RouteOption, type RouteTask } from "@longctx/plans";

/** What this reads of a result row (a stored `Row` has it). */
export interface EvidenceRow {
  readonly metric: string;
  readonly context?: number;
  readonly impl?: string;
  readonly params?: Readonly<Record<string, string | number | boolean>>;
}

/**
 * Route evidence from result rows: `accuracy` rows whose `params` carry `model_id`, `task_type` (one of
 * {@link ROUTE_TASKS}), `tasks`, `correct`, `ms_per_task`, `haystack` and, for LC, `technique` (with
 * `knob_param` / `knob_value` for a swept technique); `impl: "rag"` rows are RAG. Other rows are skipped.
 */
export const evidenceFromRows = (rows: readonly EvidenceRow[]): RouteEvidence[] => {
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
