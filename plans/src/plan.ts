/**
 * The planner: `plan(request, env)` picks, per layer group, the attention pipeline with the lowest
 * latency predicted from a measured device profile and the operators' own cost models, within a budget.
 *
 * Decision rule (prefill): a sparse technique replaces dense in a layer only when its predicted latency at
 * the *measured* density of that layer (or of the model, interpolated in log context length) beats dense
 * by more than the profile's own fit error (the largest relative residual of the kernels involved). With
 * no measured density, dense is kept and the plan reports the break-even density below which the sparse
 * technique would pay — the crossover comes from measurements, never from an assumed sparsity.
 * Decode (one query row against a cache of the context: `seq` 1, `kvSeq` = the context): the techniques
 * declaring the decode phase compete under the same rule. A technique that decodes on the KV cache
 * (`cacheDecode`: Squeezed Attention, TokenSelect, HiP) is costed as the graph its own `graph(p, dims, "decode")`
 * builds, its inputs sized by the attention layout and the technique's `graphInputs` (Squeezed Attention's
 * prefix index), each node's `densityScaled` kinds scaled by the density — Squeezed Attention's step is
 * `squeezed.lookup` at full cost + `squeezed.attend` × the measured KV budget; others (dense) as their stages.
 * Decode latencies come from the profile's decode measurements (`calibrate --phase decode`; a prefill fit of
 * the same operator stands in, with a warning when it has samples). A technique asked for by name
 * (`pipeline`) that delegates decode (SALE → dense) is planned as its delegate, with the delegate's reason.
 *
 * The candidates are the registered techniques (`TECHNIQUES` of `@longctx/ops`, or `env.techniques`): the
 * planner lists none by name. The baseline is the first exact (non-sparse) one.
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Effect, Schema } from "effect";
import {
  type AnyOperator,
  type AnyTechnique,
  attnInputShape,
  type Cost,
  decodeTechniqueParams,
  denseLayersOf,
  descBytes,
  type DescsOf,
  findStageOperator,
  inferShapes,
  type Ports,
  refKey,
  type TensorDesc,
  type TensorType,
} from "@longctx/graph";
import { techniqueByName, TECHNIQUES } from "@longctx/ops";
import { PlanError } from "./errors.ts";
import { getModel, kvCacheBytes, type ModelSpec, parameterCount } from "./models.ts";
import {
  type DensitySample,
  fitKey,
  type KernelFit,
  type LoadedProfile,
  lookupDensity,
  predictMs,
} from "./profile.ts";
import { type AttnDims, type AttnDType, type Phase, scaleCost } from "./templates.ts";
import {
  costsOwnGraph,
  fromTechniqueError,
  type LayerGraph,
  type Resolved,
  resolveTechnique,
  techniqueLayerGraph,
} from "./layer.ts";

export {
  costsOwnGraph,
  type LayerGraph,
  type Resolved,
  resolveTechnique,
  techniqueLayerGraph,
} from "./layer.ts";

/** Current plan format version. */
export const PLAN_VERSION = 1 as const;

const NonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0));
const ParamValue = Schema.Union([Schema.Finite, Schema.Boolean, Schema.String]);

/** One operator of a pipeline with its decoded parameters and predicted cost. */
export interface PlanStage {
  /** Operator name (`sale.estimate`). */
  readonly operator: string;
  /** Operator kind (`estimate`). */
  readonly kind: string;
  /** Decoded parameters, as JSON values. */
  readonly params: { readonly [param: string]: number | boolean | string };
  /** Predicted latency per layer, ms. */
  readonly ms: number;
  /** FLOPs per layer from the operator's cost model (density-scaled for sparse stages). */
  readonly flops: number;
  /** Bytes read and written per layer from the cost model (density-scaled for sparse stages). */
  readonly bytes: number;
}
/** The schema of {@link PlanStage} : decoding checks every field's type and range. */
export const PlanStage: Schema.Codec<PlanStage> = Schema.Struct({
  operator: Schema.NonEmptyString,
  kind: Schema.NonEmptyString,
  params: Schema.Record(Schema.String, ParamValue),
  /** Predicted latency per layer, ms. */
  ms: NonNegative,
  flops: NonNegative,
  bytes: NonNegative,
});

/** Consecutive layers that run the same pipeline. */
export interface LayerGroup {
  /** First layer (inclusive) and last layer (exclusive). */
  readonly layers: readonly [number, number];
  /** Technique name (`dense`, `sale`). */
  readonly pipeline: string;
  /** Its operators, in order. */
  readonly stages: readonly PlanStage[];
  /** Measured density the sparse stages were costed at (sparse pipelines only). */
  readonly density?: number;
  /** Predicted latency of one layer of this group, ms. */
  readonly msPerLayer: number;
  /** Why this pipeline was chosen. */
  readonly reason: string;
}
/** The schema of {@link LayerGroup} : decoding checks every field's type and range. */
export const LayerGroup: Schema.Codec<LayerGroup> = Schema.Struct({
  /** First layer (inclusive) and last layer (exclusive). */
  layers: Schema.Tuple([Schema.Int, Schema.Int]),
  pipeline: Schema.NonEmptyString,
  stages: Schema.Array(PlanStage),
  /** Measured density the sparse stages were costed at (sparse pipelines only). */
  density: Schema.optionalKey(NonNegative),
  /** Predicted latency of one layer of this group, ms. */
  msPerLayer: NonNegative,
  /** Why this pipeline was chosen. */
  reason: Schema.String,
});

/** A pipeline that was considered and not chosen (or only partly chosen). */
export interface Alternative {
  /** Technique name. */
  readonly pipeline: string;
  /** Predicted attention latency over all layers if it ran everywhere, ms (absent: not predictable). */
  readonly totalMs?: number;
  /** Density below which it beats dense at this context length (sparse techniques). */
  readonly breakEvenDensity?: number;
  /** Why it was not chosen, or what it would take. */
  readonly note: string;
}
/** The schema of {@link Alternative} : decoding checks every field's type and range. */
export const Alternative: Schema.Codec<Alternative> = Schema.Struct({
  pipeline: Schema.NonEmptyString,
  /** Predicted attention latency over all layers if it ran everywhere, ms (absent: not predictable). */
  totalMs: Schema.optionalKey(NonNegative),
  /** Density below which it beats dense at this context length (sparse techniques). */
  breakEvenDensity: Schema.optionalKey(NonNegative),
  note: Schema.String,
});

/** The plan document (JSON): what runs in each layer, what it is predicted to cost, and why. */
export interface Plan {
  /** Format version: {@link PLAN_VERSION}. */
  readonly version: typeof PLAN_VERSION;
  /** The model's attention geometry. */
  readonly model: {
    /** Registry id. */
    readonly id: string;
    /** Transformer layers. */
    readonly layers: number;
    /** Query heads. */
    readonly heads: number;
    /** Key/value heads (GQA). */
    readonly kvHeads: number;
    /** Elements per head vector. */
    readonly headDim: number;
  };
  /** Tokens in the context. */
  readonly contextLength: number;
  /** Prefill of the whole context, or one decode step at that context. */
  readonly phase: "prefill" | "decode";
  /** Element type of Q/K/V the chosen kernels read. */
  readonly dtype: "f32" | "f16";
  /** The device profile the predictions come from. */
  readonly device: {
    /** Profile name (`h200`). */
    readonly profile: string;
    /** Adapter it was measured on. */
    readonly adapter: string;
    /** Backend it was measured through. */
    readonly backend: string;
    /** Date of the measurement. */
    readonly date: string;
    /** Commit the kernels were measured at. */
    readonly commit: string;
  };
  /** The request's budget. */
  readonly budget: {
    /** Upper bound on the predicted attention latency over all layers, ms. */
    readonly latencyMs?: number;
    /** Upper bound on weights + KV cache + working set, bytes. */
    readonly memoryBytes?: number;
    /** Only exact pipelines. */
    readonly exact?: boolean;
  };
  /** Layer groups covering every layer, in order. */
  readonly groups: readonly LayerGroup[];
  /** What the plan is predicted to cost. */
  readonly predicted: {
    /** Attention latency over all layers for one prefill (or one decode step), ms. */
    readonly attentionMs: number;
    /** Same with dense everywhere, ms. */
    readonly denseAttentionMs: number;
    /** Memory estimate, bytes. */
    readonly memory: {
      /** Parameter count × bytes per parameter. */
      readonly weightsBytes: number;
      /** K and V of every layer for the context, f32 as the kernels store them. */
      readonly kvCacheBytes: number;
      /** Largest per-layer working set: Q/K/V, every stage's outputs and workspaces. */
      readonly workingBytes: number;
      /** Sum of the three. */
      readonly totalBytes: number;
    };
    /** Largest relative residual of the profile fits this plan relies on. */
    readonly fitError: number;
  };
  /** Pipelines considered and not chosen. */
  readonly alternatives: readonly Alternative[];
  /** Anything the reader should know (extrapolated fits, missing densities, …). */
  readonly warnings: readonly string[];
}
/** The schema of {@link Plan} : decoding checks every field's type and range. */
export const Plan: Schema.Codec<Plan> = Schema.Struct({
  version: Schema.Literal(PLAN_VERSION),
  model: Schema.Struct({
    id: Schema.NonEmptyString,
    layers: Schema.Int,
    heads: Schema.Int,
    kvHeads: Schema.Int,
    headDim: Schema.Int,
  }),
  contextLength: Schema.Int.check(Schema.isGreaterThan(0)),
  phase: Schema.Literals(["prefill", "decode"]),
  /** Element type of Q/K/V the chosen kernels read. */
  dtype: Schema.Literals(["f32", "f16"]),
  device: Schema.Struct({
    profile: Schema.String,
    adapter: Schema.String,
    backend: Schema.String,
    date: Schema.String,
    commit: Schema.String,
  }),
  budget: Schema.Struct({
    latencyMs: Schema.optionalKey(NonNegative),
    memoryBytes: Schema.optionalKey(NonNegative),
    exact: Schema.optionalKey(Schema.Boolean),
  }),
  groups: Schema.Array(LayerGroup),
  predicted: Schema.Struct({
    /** Attention latency over all layers for one prefill (or one decode step), ms. */
    attentionMs: NonNegative,
    /** Same with dense everywhere, ms. */
    denseAttentionMs: NonNegative,
    memory: Schema.Struct({
      /** Parameter count × bytes per parameter. */
      weightsBytes: NonNegative,
      /** K and V of every layer for the context, f32 as the kernels store them. */
      kvCacheBytes: NonNegative,
      /** Largest per-layer working set: Q/K/V, every stage's outputs and workspaces. */
      workingBytes: NonNegative,
      totalBytes: NonNegative,
    }),
    /** Largest relative residual of the profile fits this plan relies on. */
    fitError: NonNegative,
  }),
  alternatives: Schema.Array(Alternative),
  warnings: Schema.Array(Schema.String),
});

/** What to plan. */
export interface PlanRequest {
  /** Registry id or alias (`llama-3.1-8b`). */
  readonly model: string;
  /** Tokens in the context. */
  readonly contextLength: number;
  /** Prefill of the whole context, or one decode step at that context length. */
  readonly phase: Phase;
  /**
   * Element type of Q/K/V the kernels read. Default: the one the device profile measured the exact technique's
   * operators at for this phase — f32 when it has both (or neither), f16 when it has only f16 (the H200 profile).
   */
  readonly dtype?: AttnDType;
  /** Constraints the plan must meet; a pipeline that breaks one is not chosen. */
  readonly budget?: {
    /** Upper bound on the predicted attention latency over all layers, ms. */
    readonly latencyMs?: number;
    /** Upper bound on weights + KV cache + working set, bytes. */
    readonly memoryBytes?: number;
    /** Only exact pipelines (dense). */
    readonly exact?: boolean;
  };
  /** Bytes per weight for the memory estimate (2: f16/bf16; default 2). */
  readonly weightBytesPerParam?: number;
  /**
   * Plan only this technique (a registry name), against the exact baseline when it is sparse. A phase the
   * technique delegates (SALE's decode) is planned as the delegate, with the delegate's reason.
   */
  readonly pipeline?: string;
}

/** What the planner plans with. */
export interface PlanEnv {
  /** The device profile (loaded with `decodeProfile` / `builtinProfile`). */
  readonly profile: LoadedProfile;
  /**
   * Operators available (normally `defaultOperators()`). A technique's stage runs the first operator of its
   * kind named `<technique>.*` here, else the first of the technique's own `operators`.
   */
  readonly operators: readonly AnyOperator[];
  /** Measured densities for sparse techniques (empty: sparse is never chosen). */
  readonly densities?: readonly DensitySample[];
  /** Techniques to consider (default: the registry, `TECHNIQUES` of `@longctx/ops`). */
  readonly techniques?: readonly AnyTechnique[];
}

interface StagePrediction {
  readonly stage: PlanStage;
  readonly cost: Cost;
  readonly fitError: number;
  readonly extrapolated: boolean;
  readonly footprint: number;
}

/** A stage's cost at the full mask (before density scaling). */
interface StageCost {
  readonly op: AnyOperator;
  readonly params: Record<string, unknown>;
  readonly cost: Cost;
  readonly scaled: boolean;
  /** `params` as JSON values (computed once). */
  readonly json: Record<string, number | boolean | string>;
  /** Bytes this stage allocates: its outputs, its workspace, and graph inputs it reads first. */
  readonly footprint: number;
}

const bad = (reason: PlanError["reason"], message: string, hint: string) =>
  new PlanError({ reason, message, hint });

/**
 * The operator a technique stage runs: kind `kind`, named `<technique>.*`, queries of `dtype` (operators
 * without a `q` port qualify for any dtype); in decode, only operators whose key port is indexed by
 * `kvSeq` (query rows ≠ key rows, as `signatures.ts` defines).
 */
export const findOperator = (
  operators: readonly AnyOperator[],
  technique: string,
  kind: string,
  phase: Phase,
  dtype: AttnDType = "f32",
): AnyOperator | undefined =>
  findStageOperator(operators.filter((o) => o.name.startsWith(`${technique}.`)), kind, phase, dtype);

const jsonParams = (p: Record<string, unknown>): Record<string, number | boolean | string> => {
  const out: Record<string, number | boolean | string> = {};
  for (const [k, v] of Object.entries(p)) {
    if (typeof v === "number" || typeof v === "boolean" || typeof v === "string") out[k] = v;
  }
  return out;
};

/**
 * Cost every stage of one layer at the full mask: inputs are wired by port name (graph inputs `q`
 * `[heads, seq, headDim]`, `k`/`v` `[kvHeads, kvSeq, headDim]`, f32; or an earlier stage's output), shapes
 * come from each operator's `infer`. Fails with `PlanError` `bad-request` when an operator rejects the
 * model's shapes.
 */
const layerCosts = (r: Resolved, dims: AttnDims): Effect.Effect<readonly StageCost[], PlanError> =>
  Effect.gen(function* () {
    const avail = new Map<string, TensorDesc>();
    const graphInput = (port: string, t: TensorType): TensorDesc | undefined => {
      const shape = attnInputShape(port, dims);
      return shape ? { ...t, shape } : undefined;
    };
    const out: StageCost[] = [];
    for (const { op, params } of r.ops) {
      const inputs: Record<string, TensorDesc> = {};
      let footprint = 0;
      for (const [port, t] of Object.entries(op.inputs)) {
        let d = avail.get(port);
        if (!d) {
          d = graphInput(port, t);
          if (d) {
            avail.set(port, d);
            footprint += descBytes(d);
          }
        }
        if (!d) {
          return yield* bad(
            "unknown-operator",
            `${op.name} reads "${port}", which no earlier stage of "${r.technique.name}" produces`,
            `fix the stage order of technique "${r.technique.name}"`,
          );
        }
        inputs[port] = d;
      }
      const outs = yield* op.infer(params, inputs as DescsOf<Ports>).pipe(
        Effect.mapError((e) =>
          bad(
            "bad-request",
            `${op.name} rejects this model's attention shape: ${e.message}`,
            `${e.hint} (${r.technique.name} cannot run this model)`,
          )
        ),
      );
      for (const [port, d] of Object.entries(outs)) {
        avail.set(port, d as TensorDesc);
        footprint += descBytes(d as TensorDesc);
      }
      const cost = op.cost(params, inputs as DescsOf<Ports>);
      out.push({
        op,
        params,
        cost,
        footprint: footprint + cost.workspaceBytes,
        scaled: r.technique.densityScaled.includes(op.kind),
        json: jsonParams(params),
      });
    }
    return out;
  });

/**
 * Cost every node of a layer's graph (a technique's own decode graph, {@link techniqueLayerGraph}) at the full
 * mask: shapes from shape inference over the graph at its inputs' descriptions, each node's cost from its
 * operator's `cost`; a graph input counts toward the footprint of the first node that reads it. Fails with
 * `PlanError` `bad-request` when an operator rejects the shapes.
 */
const graphCosts = (lg: LayerGraph): Effect.Effect<readonly StageCost[], PlanError> =>
  Effect.gen(function* () {
    const t = lg.resolved.technique;
    const shapes = yield* inferShapes(lg.graph, lg.inputs).pipe(
      Effect.mapError((e) =>
        bad("bad-request", `${t.name} rejects this model's attention shape: ${e.message}`, e.hint)
      ),
    );
    const counted = new Set<string>();
    const out: StageCost[] = [];
    for (const n of lg.graph.nodes) {
      const inputs: Record<string, TensorDesc> = {};
      let footprint = 0;
      for (const [port, ref] of Object.entries(n.inputs)) {
        const key = refKey(ref);
        inputs[port] = shapes.get(key)!;
        if ("input" in ref && !counted.has(key)) {
          counted.add(key);
          footprint += descBytes(inputs[port]);
        }
      }
      for (const port of Object.keys(n.op.outputs)) {
        const d = shapes.get(refKey({ node: n.name, port }));
        if (d) footprint += descBytes(d);
      }
      const params = n.params as Record<string, unknown>;
      const cost = n.op.cost(params, inputs as DescsOf<Ports>);
      out.push({
        op: n.op,
        params,
        cost,
        footprint: footprint + cost.workspaceBytes,
        scaled: t.densityScaled.includes(n.op.kind),
        json: jsonParams(params),
      });
    }
    return out;
  });

/** A technique's layer for `phase` at `dims`, resolved, and how to cost it (stages, or its own graph). */
interface Layer {
  readonly r: Resolved;
  readonly costs: Effect.Effect<readonly StageCost[], PlanError>;
}
const resolveLayer = (
  t: AnyTechnique,
  operators: readonly AnyOperator[],
  phase: Phase,
  dims: AttnDims,
  overrides: Readonly<Record<string, unknown>>,
  dtype: AttnDType,
): Effect.Effect<Layer, PlanError> =>
  costsOwnGraph(t, phase)
    ? Effect.map(
      techniqueLayerGraph(t, operators, phase, dims, overrides, dtype),
      (lg) => ({ r: lg.resolved, costs: graphCosts(lg) }),
    )
    : Effect.map(
      resolveTechnique(t, operators, phase, overrides, dtype),
      (r) => ({ r, costs: layerCosts(r, dims) }),
    );

/**
 * The fit the planner predicts operator `name` in `phase` with: in decode its decode measurements
 * (`calibrate --phase decode`) when the profile has them, else — and in prefill — its prefill ones.
 */
const fitOf = (profile: LoadedProfile, name: string, phase: Phase): KernelFit | undefined =>
  (phase === "decode" ? profile.fits.get(fitKey(name, "decode")) : undefined) ?? profile.fits.get(name);

/** The {@link fitKey} of the measurements {@link fitOf} uses. */
const fitKeyOf = (profile: LoadedProfile, name: string, phase: Phase): string =>
  phase === "decode" && profile.fits.has(fitKey(name, "decode")) ? fitKey(name, "decode") : name;

/** The operators of `costs` that `profile` has no measurements of (for `phase`). */
const unprofiled = (
  costs: readonly StageCost[],
  profile: LoadedProfile,
  phase: Phase,
): PlanError | undefined => {
  const missing = costs.find((c) => !fitOf(profile, c.op.name, phase));
  if (!missing) return undefined;
  // the same operator measured at the other element type (`dense.attn` ↔ `dense.attn.f16`)
  const name = missing.op.name;
  const sibling = name.endsWith(".f16") ? name.slice(0, -4) : `${name}.f16`;
  return bad(
    "not-profiled",
    `device profile "${profile.profile.name}" has no measurements of ${name}`,
    fitOf(profile, sibling, phase)
      ? `it measured ${sibling}: plan with dtype ${sibling.endsWith(".f16") ? "f16" : "f32"} (--dtype), or ` +
        `calibrate that device with --dtype ${name.endsWith(".f16") ? "f16" : "f32"}`
      : `run calibrate on that device (deno run -A runtime/src/cli/calibrate.ts --ops ${name}${
        phase === "decode" ? " --phase decode" : ""
      })`,
  );
};

/**
 * The element type a request without `dtype` plans at: the first of f32, f16 whose operators of technique `t`
 * (for `phase`) the profile has all measured; f32 when neither is fully measured (planning then fails naming
 * the missing operator).
 */
const profiledDtype = (
  t: AnyTechnique,
  operators: readonly AnyOperator[],
  phase: Phase,
  params: Readonly<Record<string, unknown>>,
  profile: LoadedProfile,
): Effect.Effect<AttnDType> =>
  Effect.gen(function* () {
    for (const dt of ["f32", "f16"] as const) {
      const r = yield* Effect.result(resolveTechnique(t, operators, phase, params, dt));
      if (r._tag === "Success" && r.success.ops.every((s) => fitOf(profile, s.op.name, phase))) return dt;
    }
    return "f32" as const;
  });

/** Predict stage latencies in `phase` at `density` from full-mask costs (every operator must be profiled). */
const predictAt = (
  costs: readonly StageCost[],
  profile: LoadedProfile,
  density: number,
  phase: Phase,
): readonly StagePrediction[] =>
  costs.map(({ op, json, cost: full, scaled, footprint }) => {
    const fit = fitOf(profile, op.name, phase)!;
    const cost = scaled ? scaleCost(full, density) : full;
    const bytes = cost.bytesRead + cost.bytesWritten;
    const maxFlops = profile.maxFlops.get(fitKeyOf(profile, op.name, phase)) ?? 0;
    return {
      stage: {
        operator: op.name,
        kind: op.kind,
        params: json,
        ms: predictMs(fit, cost.flops, bytes),
        flops: cost.flops,
        bytes,
      },
      cost,
      fitError: fit.maxRelError,
      extrapolated: maxFlops > 0 && cost.flops > 4 * maxFlops,
      footprint,
    };
  });

const sumMs = (s: readonly StagePrediction[]) => s.reduce((a, p) => a + p.stage.ms, 0);
const maxErr = (s: readonly StagePrediction[]) => Math.max(0, ...s.map((p) => p.fitError));
/** Absolute uncertainty of a pipeline's predicted latency: Σ stage ms × the stage fit's max relative error. */
const uncertainty = (s: readonly StagePrediction[]) => s.reduce((a, p) => a + p.stage.ms * p.fitError, 0);
/** Bytes one layer allocates: graph inputs, every stage's outputs and workspaces (none freed early). */
const working = (s: readonly StagePrediction[]) => s.reduce((a, p) => a + p.footprint, 0);

const fmtMs = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms >= 1 ? ms.toFixed(2) : ms.toPrecision(3));
const GiB = 2 ** 30;

/** Density at which the stages cost as much as dense (bisection; latency is monotone in density). */
const breakEven = (
  costs: readonly StageCost[],
  profile: LoadedProfile,
  denseMs: number,
  phase: Phase,
): number => {
  const at = (d: number) => sumMs(predictAt(costs, profile, d, phase));
  if (at(1) <= denseMs) return 1;
  if (at(0) >= denseMs) return 0;
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 30; i++) {
    const mid = (lo + hi) / 2;
    if (at(mid) < denseMs) lo = mid;
    else hi = mid;
  }
  return lo;
};

/**
 * Validate a request's model, context length, phase and budget numbers without a profile, returning
 * the model. Fails with `PlanError` `unknown-model`, `context-too-long` or `bad-request`.
 */
export const validateRequest = (req: PlanRequest): Effect.Effect<ModelSpec, PlanError> =>
  Effect.gen(function* () {
    const model = yield* getModel(req.model);
    const n = req.contextLength;
    if (!Number.isInteger(n) || n <= 0) {
      return yield* bad(
        "bad-request",
        `context length must be a positive integer, got ${n}`,
        "give tokens as an integer, e.g. 8192 or 128k",
      );
    }
    if (n > model.maxContext) {
      return yield* bad(
        "context-too-long",
        `${n} tokens exceed ${model.id}'s maximum context of ${model.maxContext} tokens`,
        `use at most ${model.maxContext} tokens (max_position_embeddings in ${model.source}), ` +
          "or truncate the document",
      );
    }
    if (req.phase !== "prefill" && req.phase !== "decode") {
      return yield* bad("bad-request", `unknown phase "${req.phase}"`, 'phase is "prefill" or "decode"');
    }
    const b = req.budget ?? {};
    for (const [k, v] of Object.entries(b)) {
      if (typeof v === "number" && !(v > 0)) {
        return yield* bad(
          "bad-request",
          `budget ${k} must be positive, got ${v}`,
          `drop ${k} or make it > 0`,
        );
      }
    }
    return model;
  });

/**
 * Plan the attention pipeline of `req.model` at `req.contextLength` tokens for `req.phase` on the device
 * of `env.profile`. Latency is attention only (per layer: Q `[heads, seq, headDim]`, K/V
 * `[kvHeads, kvSeq, headDim]`, f32), predicted as Σ over stages of `a + b·flops + c·bytes` (fit of the
 * stage's operator in the profile) at the operator's cost model.
 *
 * Fails with `PlanError`: `unknown-model` (hint: nearest name), `context-too-long`, `bad-request`,
 * `unknown-technique` (`pipeline` is not registered; hint: the registered names), `unknown-operator` (a
 * technique's operator is not registered), `not-profiled` (the profile lacks the dense kernel),
 * `unsatisfiable-budget` (hint: the best achievable latency / memory).
 */
export const plan = (req: PlanRequest, env: PlanEnv): Effect.Effect<Plan, PlanError> =>
  Effect.gen(function* () {
    const model = yield* validateRequest(req);
    const T = req.contextLength;
    const dims: AttnDims = {
      heads: model.heads,
      kvHeads: model.kvHeads,
      headDim: model.headDim,
      seq: req.phase === "prefill" ? T : 1,
      kvSeq: T,
    };
    const budget = req.budget ?? {};
    const registered = env.techniques ?? TECHNIQUES;
    const inPhase = registered.filter((t) => t.phases.includes(req.phase));
    let techniques = inPhase;
    /** Parameters of the baseline: a delegate's, mapped from the technique that delegates to it. */
    let baseParams: Readonly<Record<string, unknown>> = {};
    /** Why the baseline runs, when `pipeline` delegated this phase to it. */
    let delegated = "";
    if (req.pipeline !== undefined) {
      const asked = yield* Effect.mapError(techniqueByName(req.pipeline, registered), fromTechniqueError);
      const d = asked.delegates[req.phase];
      if (asked.phases.includes(req.phase)) {
        techniques = asked.sparse ? [...inPhase.filter((t) => !t.sparse).slice(0, 1), asked] : [asked];
      } else if (d) {
        techniques = [d.technique];
        baseParams = d.params(yield* Effect.mapError(decodeTechniqueParams(asked, {}), fromTechniqueError));
        delegated = `${asked.name} ${req.phase} runs ${d.technique.name}: ${d.reason}`;
      } else {
        return yield* bad(
          "bad-request",
          `technique "${asked.name}" has no ${req.phase} phase (it runs ${asked.phases.join(", ")})`,
          `plan ${req.phase} with one of: ${inPhase.map((t) => t.name).join(", ") || "none registered"}`,
        );
      }
    }
    const denseT = techniques.find((t) => !t.sparse);
    if (!denseT) {
      return yield* bad(
        "bad-request",
        `no exact technique for ${req.phase} is registered`,
        "register an exact technique (sparse: false) for this phase in TECHNIQUES (@longctx/ops)",
      );
    }
    const warnings: string[] = [];
    const profile = env.profile;

    const dtype = req.dtype ?? (yield* profiledDtype(denseT, env.operators, req.phase, baseParams, profile));
    const denseLayer = yield* resolveLayer(denseT, env.operators, req.phase, dims, baseParams, dtype);
    const dense = denseLayer.r;
    const denseCosts = yield* denseLayer.costs.pipe(
      Effect.mapError((e) =>
        req.phase === "decode" && e.reason === "bad-request"
          ? bad(
            "unknown-operator",
            `no registered attention operator supports decode (1 query row against ${T} keys): ${e.message}`,
            "add a decode attention operator to @longctx/ops (kind dense-attn, keys [kvHeads, kvSeq, headDim]); " +
              "prefill plans work today",
          )
          : e
      ),
    );
    const denseMissing = unprofiled(denseCosts, profile, req.phase);
    if (denseMissing) return yield* denseMissing;
    const densePred = predictAt(denseCosts, profile, 1, req.phase);
    const denseMs = sumMs(densePred);

    // Per-layer choice: start from dense everywhere.
    type Choice = { r: Resolved; pred: readonly StagePrediction[]; density?: number; reason: string };
    const denseReason = (extra: string) =>
      `${denseT.name}: ${fmtMs(denseMs)} ms/layer predicted${
        [delegated, extra].filter((x) => x).map((x) => `; ${x}`).join("")
      }`;
    const choices: Choice[] = Array.from({ length: model.layers }, () => ({
      r: dense,
      pred: densePred,
      reason: denseReason(""),
    }));
    const alternatives: Alternative[] = [];

    for (const t of techniques.filter((t) => t.sparse)) {
      if (budget.exact) {
        alternatives.push({ pipeline: t.name, note: "excluded: the budget asks for exact attention" });
        continue;
      }
      const resolved = yield* Effect.result(resolveLayer(t, env.operators, req.phase, dims, {}, dtype));
      if (resolved._tag === "Failure") {
        alternatives.push({ pipeline: t.name, note: `unavailable: ${resolved.failure.message}` });
        continue;
      }
      const r = resolved.success.r;
      const missing = [
        ...new Set(r.ops.filter(({ op }) => !fitOf(profile, op.name, req.phase)).map((o) => o.op.name)),
      ];
      if (missing.length > 0) {
        alternatives.push({
          pipeline: t.name,
          note: `not profiled on ${profile.profile.name}: ${missing.join(", ")} (run calibrate${
            req.phase === "decode" ? " --phase decode" : ""
          })`,
        });
        continue;
      }
      const costsR = yield* Effect.result(resolved.success.costs);
      if (costsR._tag === "Failure") {
        alternatives.push({ pipeline: t.name, note: `unavailable: ${costsR.failure.message}` });
        continue;
      }
      const costs = costsR.success;
      const dStar = breakEven(costs, profile, denseMs, req.phase);
      const params = Object.assign({}, ...r.ops.map((o) => jsonParams(o.params))) as Record<string, number>;
      const numParams = Object.fromEntries(Object.entries(params).filter(([, v]) => typeof v === "number"));
      const lookup = (layer?: number) =>
        lookupDensity(env.densities ?? [], {
          pipeline: t.name,
          model: model.id,
          contextLength: T,
          layer,
          params: numParams,
        });
      const measured = lookup();
      // A technique whose budget does not depend on the data (HiP) has a density by construction.
      // (at the layer's shape: a prefill's T queries, or a decode step's one query against T keys)
      const constructed = !measured && !lookup(0) && t.constructedDensity
        ? t.constructedDensity(r.params ?? Object.assign({}, ...r.ops.map((o) => o.params)), dims)
        : undefined;
      const whole = measured ??
        (constructed === undefined
          ? undefined
          : { density: constructed, extrapolated: false, perLayer: false });
      if (!whole && !lookup(0)) {
        alternatives.push({
          pipeline: t.name,
          breakEvenDensity: dStar,
          note: `no measured density for ${model.id}; ${t.name} pays below density ${dStar.toFixed(3)} ` +
            `at ${T} tokens (from the profile)`,
        });
        for (const c of choices) {
          if (c.r !== dense) continue; // a layer an earlier technique took keeps its reason
          c.reason = denseReason(
            `${t.name} unmeasured on ${model.id} (pays below density ${dStar.toFixed(3)})`,
          );
        }
        continue;
      }
      let total = 0;
      let chosen = 0;
      // A technique that keeps its first layers dense (HiP's official `denseLayers`) is not planned there.
      const denseLayers = denseLayersOf(params);
      for (let l = 0; l < model.layers; l++) {
        if (l < denseLayers) {
          if (choices[l].r === dense) {
            choices[l].reason = denseReason(
              `${t.name} keeps its first ${denseLayers} layers dense (denseLayers)`,
            );
          }
          continue;
        }
        const d = lookup(l) ?? whole!;
        if (d.extrapolated && l === 0) {
          warnings.push(
            `${t.name} density for ${model.id} at ${T} tokens held from the nearest measured length`,
          );
        }
        const pred = predictAt(costs, profile, d.density, req.phase);
        const ms = sumMs(pred);
        total += ms;
        const cur = choices[l];
        const curMs = sumMs(cur.pred);
        // Worst case under the profile's own fit errors: the sparse pipeline as slow as its fits allow,
        // the current choice as fast as its fits allow (at least ±2.5 % each).
        const hiMs = ms + Math.max(uncertainty(pred), 0.025 * ms);
        const loCur = curMs - Math.max(uncertainty(cur.pred), 0.025 * curMs);
        const src = constructed !== undefined
          ? "by construction: sink + k + window keys per query"
          : d.perLayer
          ? "per-layer measurement"
          : "mean over layers";
        if (hiMs < loCur) {
          chosen++;
          choices[l] = {
            r,
            pred,
            density: d.density,
            reason:
              `${t.name}: ${fmtMs(ms)} ms/layer at ${constructed === undefined ? "measured " : ""}density ${
                d.density.toFixed(3)
              } (${src}) vs ` +
              `${denseT.name} ${fmtMs(denseMs)} ms (−${((1 - ms / denseMs) * 100).toFixed(0)} %, ` +
              `still faster at the fits' worst case); pays below density ${dStar.toFixed(3)}`,
          };
        } else if (cur.r === dense) {
          choices[l] = {
            ...cur,
            reason: denseReason(
              `${t.name} would take ${fmtMs(ms)} ms at ${
                constructed === undefined ? "measured " : ""
              }density ${d.density.toFixed(3)} (${src}), ` +
                `up to ${fmtMs(hiMs)} ms within its fit error; at best it pays below density ${
                  dStar.toFixed(3)
                }`,
            ),
          };
        }
      }
      alternatives.push({
        pipeline: t.name,
        totalMs: total,
        breakEvenDensity: dStar,
        note: `chosen for ${chosen} of ${model.layers} layers`,
      });
    }

    // Group consecutive layers with the same pipeline and density.
    const groups: LayerGroup[] = [];
    for (let l = 0; l < model.layers; l++) {
      const c = choices[l];
      const last = groups[groups.length - 1];
      if (
        last && last.pipeline === c.r.technique.name && last.density === c.density && last.reason === c.reason
      ) {
        groups[groups.length - 1] = { ...last, layers: [last.layers[0], l + 1] };
        continue;
      }
      groups.push({
        layers: [l, l + 1],
        pipeline: c.r.technique.name,
        stages: c.pred.map((p) => p.stage),
        ...(c.density === undefined ? {} : { density: c.density }),
        msPerLayer: sumMs(c.pred),
        reason: c.reason,
      });
    }

    const extrapolated = new Set(
      choices.flatMap((c) => c.pred.filter((p) => p.extrapolated).map((p) => p.stage.operator)),
    );
    for (const name of extrapolated) {
      warnings.push(`${name} is predicted beyond 4× the FLOPs of its largest profiled size (extrapolated)`);
    }
    if (req.phase === "decode") {
      // a decode prediction from prefill samples: the operator may run other kernels for one query row
      const fromPrefill = new Set(
        choices.flatMap((c) => c.pred.map((p) => p.stage.operator)).filter((name) =>
          !profile.fits.has(fitKey(name, "decode")) &&
          profile.profile.kernels.some((k) =>
            k.operator === name && k.phase !== "decode" && k.samples.length > 0
          )
        ),
      );
      for (const name of fromPrefill) {
        warnings.push(
          `${name} has no decode measurements on ${profile.profile.name}: its decode latency is predicted from ` +
            "its prefill samples (calibrate --phase decode measures it)",
        );
      }
    }
    const attentionMs = choices.reduce((a, c) => a + sumMs(c.pred), 0);
    const weightsBytes = parameterCount(model) * (req.weightBytesPerParam ?? 2);
    const kv = kvCacheBytes(model, T, 4);
    const workingBytes = Math.max(...choices.map((c) => working(c.pred)));
    const totalBytes = weightsBytes + kv + workingBytes;
    const fitError = Math.max(...choices.map((c) => maxErr(c.pred)));

    if (budget.latencyMs !== undefined && attentionMs > budget.latencyMs) {
      return yield* bad(
        "unsatisfiable-budget",
        `no pipeline meets ${budget.latencyMs} ms: the fastest plan predicts ${fmtMs(attentionMs)} ms of ` +
          `attention for ${T} tokens on ${profile.profile.name}`,
        `raise the latency budget to at least ${fmtMs(attentionMs)} ms, shorten the context` +
          (budget.exact ? ", or allow approximate (sparse) attention" : ""),
      );
    }
    if (budget.memoryBytes !== undefined && totalBytes > budget.memoryBytes) {
      return yield* bad(
        "unsatisfiable-budget",
        `the plan needs ${(totalBytes / GiB).toFixed(2)} GiB (weights ${(weightsBytes / GiB).toFixed(2)}, ` +
          `KV cache ${(kv / GiB).toFixed(2)}, working ${(workingBytes / GiB).toFixed(2)}), over the ` +
          `${(budget.memoryBytes / GiB).toFixed(2)} GiB budget`,
        "raise the memory budget, shorten the context, or pick a smaller model",
      );
    }

    return {
      version: PLAN_VERSION,
      model: {
        id: model.id,
        layers: model.layers,
        heads: model.heads,
        kvHeads: model.kvHeads,
        headDim: model.headDim,
      },
      contextLength: T,
      phase: req.phase,
      dtype,
      device: {
        profile: profile.profile.name,
        adapter: profile.profile.device.adapter,
        backend: profile.profile.device.backend,
        date: profile.profile.date,
        commit: profile.profile.commit,
      },
      budget: {
        ...(budget.latencyMs === undefined ? {} : { latencyMs: budget.latencyMs }),
        ...(budget.memoryBytes === undefined ? {} : { memoryBytes: budget.memoryBytes }),
        ...(budget.exact === undefined ? {} : { exact: budget.exact }),
      },
      groups,
      predicted: {
        attentionMs,
        denseAttentionMs: denseMs * model.layers,
        memory: { weightsBytes, kvCacheBytes: kv, workingBytes, totalBytes },
        fitError,
      },
      alternatives,
      warnings,
    } satisfies Plan;
  });

/**
 * Decode a plan document (parsed JSON). Fails with `PlanError` `bad-plan` on a schema violation or an
 * unsupported version, and on inconsistent layer groups (gaps, overlaps, wrong layer count).
 */
export const decodePlan = (json: unknown): Effect.Effect<Plan, PlanError> =>
  Effect.gen(function* () {
    const v = (json as { version?: unknown } | null)?.version;
    if (typeof json === "object" && json !== null && "version" in json && v !== PLAN_VERSION) {
      return yield* bad(
        "bad-plan",
        `plan version ${JSON.stringify(v)} is not supported (this planner reads version ${PLAN_VERSION})`,
        "re-plan with this version of @longctx/plans",
      );
    }
    const p = yield* Schema.decodeUnknownEffect(Plan)(json).pipe(
      Effect.mapError((e) =>
        bad(
          "bad-plan",
          `malformed plan: ${String(e.message).split("\n")[0]}`,
          "a plan is the JSON `plan --json` prints; regenerate it rather than editing by hand",
        )
      ),
    );
    let next = 0;
    for (const g of p.groups) {
      if (g.layers[0] !== next || g.layers[1] <= g.layers[0]) {
        return yield* bad(
          "bad-plan",
          `layer groups must cover layers 0..${p.model.layers} in order; group [${g.layers}] follows layer ${next}`,
          "regenerate the plan",
        );
      }
      next = g.layers[1];
    }
    if (next !== p.model.layers) {
      return yield* bad(
        "bad-plan",
        `layer groups cover ${next} layers, the model has ${p.model.layers}`,
        "regenerate the plan",
      );
    }
    return p;
  });

/** Parse JSON text then `decodePlan`. Fails with `PlanError` `bad-plan` (also on invalid JSON). */
export const parsePlan = (text: string): Effect.Effect<Plan, PlanError> =>
  Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: (e) =>
      bad(
        "bad-plan",
        `plan file is not JSON: ${e instanceof Error ? e.message : String(e)}`,
        "regenerate the plan",
      ),
  }).pipe(Effect.flatMap(decodePlan));
