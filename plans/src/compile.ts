/**
 * `compile(plan)`: a plan's layer groups as graphs of `@longctx/graph`, one attention graph per group.
 *
 * Every graph has inputs `q: [heads, seq, headDim]`, `k`, `v: [kvHeads, kvSeq, headDim]` (typed by the
 * first stage that reads them) and outputs `o: f32 [heads, seq, headDim]`, `lse: f32 [heads, seq]` (the last
 * stage's). Stage inputs are wired by port name: a port is fed by the latest earlier stage output of that
 * name, else by the graph input of that name (`quantize.qq → estimate.qq`, `select.indptr → sparse.indptr`).
 * A decode group of a technique that decodes on the KV cache (`costsOwnGraph`: Squeezed Attention,
 * TokenSelect) compiles to the technique's own decode graph at the plan's shape, its parameters from the
 * stages'; its inputs are the technique's (the cache `k`, `v` indexed by `capacity`, Squeezed Attention's
 * prefix index).
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Effect, Schema } from "effect";
import {
  type AnyOperator,
  type AnyTechnique,
  type Graph,
  type GraphError,
  paramNames,
  type ParamsError,
  pipelineGraph,
  type PipelineStage,
  type ShapeError,
} from "@longctx/graph";
import { TECHNIQUES } from "@longctx/ops";
import { PlanError } from "./errors.ts";
import { costsOwnGraph, techniqueLayerGraph } from "./layer.ts";
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

/** A decode group of a technique that decodes on the KV cache: its own graph at the plan's shape. */
const ownGraph = (
  plan: Plan,
  group: Plan["groups"][number],
  t: AnyTechnique,
  operators: readonly AnyOperator[],
): Effect.Effect<Graph, CompileError> =>
  Effect.gen(function* () {
    // the technique's parameters from its stages' (the first stage that carries one wins)
    const names = new Set(paramNames(t.params));
    const params: Record<string, unknown> = {};
    for (const st of group.stages) {
      for (const [k, v] of Object.entries(st.params)) if (names.has(k) && !(k in params)) params[k] = v;
    }
    const m = plan.model;
    const dims = {
      heads: m.heads,
      kvHeads: m.kvHeads,
      headDim: m.headDim,
      seq: 1,
      kvSeq: plan.contextLength,
    };
    const lg = yield* techniqueLayerGraph(t, operators, plan.phase, dims, params, plan.dtype);
    const got = lg.graph.nodes.map((n) => n.op.name).join(", ");
    const want = group.stages.map((st) => st.operator).join(", ");
    if (got !== want) {
      return yield* new PlanError({
        reason: "bad-plan",
        message: `plan group ${t.name} lists stages ${want}; the technique's decode graph runs ${got}`,
        hint: "re-plan with this version of @longctx/plans and @longctx/ops",
      });
    }
    return lg.graph;
  });

const compileGroup = (
  plan: Plan,
  groupIndex: number,
  operators: readonly AnyOperator[],
  techniques: readonly AnyTechnique[],
): Effect.Effect<CompiledGroup, CompileError> =>
  Effect.gen(function* () {
    const group = plan.groups[groupIndex];
    const own = techniques.find((t) => t.name === group.pipeline);
    if (own && costsOwnGraph(own, plan.phase)) {
      return {
        layers: group.layers,
        pipeline: group.pipeline,
        graph: yield* ownGraph(plan, group, own, operators),
      };
    }
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
 * parameters with the operator's schema; a decode group of a technique of `techniques` (default: the
 * registry) that decodes on the KV cache is that technique's own decode graph.
 *
 * Fails with `PlanError` (`unknown-operator`, `bad-plan`, `bad-request`) or the builder's `GraphError` /
 * `ParamsError`.
 */
export const compile = (
  plan: Plan,
  operators: readonly AnyOperator[],
  techniques: readonly AnyTechnique[] = TECHNIQUES,
): Effect.Effect<readonly CompiledGroup[], CompileError> =>
  Effect.forEach(plan.groups, (_, i) => compileGroup(plan, i, operators, techniques));

/**
 * The attention graph layer `layer` runs under `plan` (as `compile` builds it, with `techniques`). Fails like
 * `compile`, and with `PlanError` `bad-request` when the layer is outside the model.
 */
export const compileLayer = (
  plan: Plan,
  operators: readonly AnyOperator[],
  layer: number,
  techniques: readonly AnyTechnique[] = TECHNIQUES,
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
    : Effect.map(compileGroup(plan, i, operators, techniques), (c) => c.graph);
};
