/**
 * `compile(plan)`: a plan's layer groups as graphs of `@longctx/graph`, one attention graph per group.
 *
 * Every graph has inputs `q: [heads, seq, headDim]`, `k`, `v: [kvHeads, kvSeq, headDim]` (typed by the
 * first stage that reads them) and outputs `o: f32 [heads, seq, headDim]`, `lse: f32 [heads, seq]` (the last
 * stage's). Stage inputs are wired by port name: a port is fed by the latest earlier stage output of that
 * name, else by the graph input of that name (`quantize.qq → estimate.qq`, `select.indptr → sparse.indptr`).
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Effect, Schema } from "effect";
import {
  type AnyOperator,
  type Graph,
  type GraphError,
  type ParamsError,
  pipelineGraph,
  type PipelineStage,
  type ShapeError,
} from "@longctx/graph";
import { PlanError } from "./errors.ts";
import type { Plan } from "./plan.ts";

/** What compiling can fail with: the planner's and the graph builder's typed errors. */
export type CompileError = PlanError | GraphError | ParamsError | ShapeError;

/** A compiled layer group. */
export interface CompiledGroup {
  /** First (inclusive) and last (exclusive) layer. */
  readonly layers: readonly [number, number];
  /** Technique name the group runs. */
  readonly pipeline: string;
  /** The attention graph of one layer of the group (`o`, `lse` outputs). */
  readonly graph: Graph;
}

/**
 * Build the attention graph of a chain of stages (`pipelineGraph` of `@longctx/graph`, which techniques'
 * `graph` use too; see the module doc for wiring). Outputs `o` and `lse` of the last stage, plus every name
 * of `extraOutputs` that some stage produces (the latest one wins), e.g. `["density"]` to read
 * `sale.select`'s measured density.
 *
 * Fails with `PlanError` `bad-plan` (an input no earlier stage produces, no `o`/`lse`) or the builder's
 * `GraphError` / `ParamsError`.
 */
export const buildPipelineGraph = (
  name: string,
  stages: readonly PipelineStage[],
  extraOutputs: readonly string[] = [],
): Effect.Effect<Graph, CompileError> =>
  pipelineGraph(name, stages, extraOutputs).pipe(
    Effect.mapError((e) =>
      e._tag === "TechniqueError"
        ? new PlanError({ reason: "bad-plan", message: e.message, hint: e.hint })
        : e
    ),
  );

const compileGroup = (
  plan: Plan,
  groupIndex: number,
  operators: readonly AnyOperator[],
): Effect.Effect<CompiledGroup, CompileError> =>
  Effect.gen(function* () {
    const group = plan.groups[groupIndex];
    const stages: PipelineStage[] = [];
    for (const stage of group.stages) {
      const op = operators.find((o) => o.name === stage.operator);
      if (!op) {
        return yield* new PlanError({
          reason: "unknown-operator",
          message: `plan stage ${stage.operator} names an operator that is not registered`,
          hint: `register ${stage.operator} (known: ${operators.map((o) => o.name).join(", ")}) or re-plan`,
        });
      }
      const decoded = Schema.decodeUnknownExit(op.params)(stage.params);
      if (decoded._tag === "Failure") {
        return yield* new PlanError({
          reason: "bad-plan",
          message: `plan stage ${stage.operator}: parameters do not satisfy the operator's schema`,
          hint: `regenerate the plan; ${op.name} is described in ${op.reference}`,
        });
      }
      stages.push({ op, params: decoded.value });
    }
    const name = `${plan.model.id}.${group.pipeline}.layers${group.layers[0]}-${group.layers[1] - 1}`;
    return { layers: group.layers, pipeline: group.pipeline, graph: yield* buildPipelineGraph(name, stages) };
  });

/**
 * Compile every layer group of `plan` into a graph (see the module doc for its ports), resolving the
 * plan's operator names in `operators` (normally `@longctx/ops`) and re-validating each stage's
 * parameters with the operator's schema.
 *
 * Fails with `PlanError` (`unknown-operator`, `bad-plan`) or the builder's `GraphError` / `ParamsError`.
 */
export const compile = (
  plan: Plan,
  operators: readonly AnyOperator[],
): Effect.Effect<readonly CompiledGroup[], CompileError> =>
  Effect.forEach(plan.groups, (_, i) => compileGroup(plan, i, operators));

/**
 * The attention graph layer `layer` runs under `plan`. Fails like `compile`, and with `PlanError`
 * `bad-request` when the layer is outside the model.
 */
export const compileLayer = (
  plan: Plan,
  operators: readonly AnyOperator[],
  layer: number,
): Effect.Effect<Graph, CompileError> => {
  const i = plan.groups.findIndex((g) => layer >= g.layers[0] && layer < g.layers[1]);
  return i < 0
    ? Effect.fail(
      new PlanError({
        reason: "bad-request",
        message: `layer ${layer} is outside ${plan.model.id} (${plan.model.layers} layers)`,
        hint: `pick a layer in 0..${plan.model.layers - 1}`,
      }),
    )
    : Effect.map(compileGroup(plan, i, operators), (c) => c.graph);
};
