/**
 * One attention layer of a technique as the planner, `calibrate` and `compile` take it: its stage operators
 * (found by kind, wired by port name) or — for the decode of a technique that decodes on the KV cache
 * (`cacheDecode`) — the graph its own `graph(params, dims, "decode")` builds, whose inputs may go beyond Q and
 * the cache (Squeezed Attention's prefix index, sized by the technique's `graphInputs`).
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Effect } from "effect";
import {
  type AnyOperator,
  type AnyTechnique,
  decodeTechniqueParams,
  type Graph,
  graphInputDescs,
  pipelineGraph,
  resolveStages,
  type TechniqueError,
  type TechniqueGraphError,
  type TensorDesc,
} from "@longctx/graph";
import { PlanError } from "./errors.ts";
import type { AttnDims, AttnDType, Phase } from "./templates.ts";

/** A technique with its stage operators and their decoded parameters. */
export interface Resolved {
  /** The technique. */
  readonly technique: AnyTechnique;
  /** Its stages' operators with their decoded parameters, in stage order. */
  readonly ops: readonly { readonly op: AnyOperator; readonly params: Record<string, unknown> }[];
  /** The technique's decoded parameters (absent where only the stages' are known). */
  readonly params?: Readonly<Record<string, unknown>>;
}

const bad = (reason: PlanError["reason"], message: string, hint: string) =>
  new PlanError({ reason, message, hint });

/** A technique's error as the planner's (`unknown-technique`, `unknown-operator`, `bad-request`). */
export const fromTechniqueError = (e: TechniqueError): PlanError =>
  bad(
    e.reason === "unknown-technique"
      ? "unknown-technique"
      : e.reason === "missing-operator" || e.reason === "unsupported-phase"
      ? "unknown-operator"
      : "bad-request",
    e.message,
    e.hint,
  );

/** A technique graph's error as the planner's: a shape, graph or parameter error is `bad-request`. */
export const fromGraphError = (e: TechniqueGraphError): PlanError =>
  e._tag === "TechniqueError" ? fromTechniqueError(e) : bad("bad-request", e.message, e.hint);

/**
 * Decode `overrides` with the technique's parameter schema (unknown keys and impossible values rejected,
 * defaults filled), then find each stage's operator for `phase` and `dtype` — `<technique>.*` in
 * `operators` first, else the technique's own — and decode its parameters from the technique's. Fails with
 * `PlanError` `unknown-operator` (no operator of a stage's kind) or `bad-request` (bad parameters, naming
 * the parameter).
 */
export const resolveTechnique = (
  t: AnyTechnique,
  operators: readonly AnyOperator[],
  phase: Phase,
  overrides: Readonly<Record<string, unknown>> = {},
  dtype: AttnDType = "f32",
): Effect.Effect<Resolved, PlanError> =>
  Effect.gen(function* () {
    const params = yield* decodeTechniqueParams(t, overrides);
    const pool = [...operators.filter((o) => o.name.startsWith(`${t.name}.`)), ...t.operators];
    const ops = yield* resolveStages(t, params, phase, dtype, pool);
    return {
      technique: t,
      ops: ops.map((s) => ({ op: s.op, params: s.params as Record<string, unknown> })),
      params: params as Readonly<Record<string, unknown>>,
    };
  }).pipe(Effect.mapError(fromTechniqueError));

/**
 * Whether a layer of `t` in `phase` is the graph `t.graph` builds rather than the chain of its stages: the
 * decode of a technique that decodes on the KV cache (`cacheDecode`) — Squeezed Attention's step is
 * `squeezed.lookup → squeezed.attend`, not its stages (the question's lists), and reads the prefix index;
 * TokenSelect's attention reads the compacted list with its own parameters. What it runs per decode step is
 * that graph (refresh 1; HiP's graph searches every step, an upper bound on its refreshed decode).
 */
export const costsOwnGraph = (t: AnyTechnique, phase: Phase): boolean =>
  phase === "decode" && t.phases.includes("decode") && t.cacheDecode !== undefined;

/** One layer of a technique as a graph with its inputs' descriptions at a layer shape. */
export interface LayerGraph {
  /** The technique with the graph's operators in node order and its decoded parameters. */
  readonly resolved: Resolved;
  /** The layer's graph (outputs `o`, `lse`, and `density` where a stage produces it). */
  readonly graph: Graph;
  /** Its inputs' descriptions at the layer shape. */
  readonly inputs: Readonly<Record<string, TensorDesc>>;
}

/**
 * One layer of `t` for `phase` at `dims`: with {@link costsOwnGraph}, `t.graph(params, dims, phase, dtype)` (its
 * inputs sized by the attention layout and `t.graphInputs`); else its stages ({@link resolveTechnique}, overrides
 * by kind from `operators`) wired by port name (`pipelineGraph`), with `density` and the technique's
 * `extraOutputs` as outputs where a stage produces them. Fails with `PlanError` (`unknown-operator`,
 * `bad-request` — bad parameters, or the technique rejects the shape — or `bad-plan` for miswired stages).
 */
export const techniqueLayerGraph = (
  t: AnyTechnique,
  operators: readonly AnyOperator[],
  phase: Phase,
  dims: AttnDims,
  overrides: Readonly<Record<string, unknown>> = {},
  dtype: AttnDType = "f32",
): Effect.Effect<LayerGraph, PlanError> =>
  Effect.gen(function* () {
    if (costsOwnGraph(t, phase)) {
      const params = yield* Effect.mapError(decodeTechniqueParams(t, overrides), fromTechniqueError);
      const graph = yield* Effect.mapError(t.graph(params, dims, phase, dtype), fromGraphError);
      const sizes = t.graphInputs?.dims(params, dims) ?? {};
      const inputs = yield* Effect.mapError(graphInputDescs(graph, dims, sizes), fromTechniqueError);
      const ops = graph.nodes.map((n) => ({ op: n.op, params: n.params as Record<string, unknown> }));
      return { resolved: { technique: t, ops, params: params as Record<string, unknown> }, graph, inputs };
    }
    const resolved = yield* resolveTechnique(t, operators, phase, overrides, dtype);
    const graph = yield* pipelineGraph(`${t.name}.${phase}`, resolved.ops, ["density", ...t.extraOutputs])
      .pipe(
        Effect.mapError((e) =>
          e._tag === "TechniqueError"
            ? bad("bad-plan", e.message, e.hint)
            : bad("bad-request", e.message, e.hint)
        ),
      );
    const inputs = yield* Effect.mapError(graphInputDescs(graph, dims), fromTechniqueError);
    return { resolved, graph, inputs };
  });
