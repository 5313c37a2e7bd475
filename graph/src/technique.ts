/**
 * The Technique contract: one attention technique (dense, SALE, …) as data the planner, `calibrate`, `run`,
 * the benchmarks and the tests read through a registry (`TECHNIQUES` in `@longctx/ops`), so that adding one
 * touches its folder under `ops/`, one registry line and calibration data — no core code.
 *
 * A technique is a chain of operator *kinds* (`stages`) run for one attention layer: graph inputs
 * `q: [heads, seq, headDim]`, `k`, `v: [kvHeads, kvSeq, headDim]` (f32 or f16), outputs
 * `o: f32 [heads, seq, headDim]`, `lse: f32 [heads, seq]` (natural log), plus `extraOutputs` such as
 * SALE's `density: f32 [heads]`. Each stage's operator is found by kind among the technique's operators
 * (`findStageOperator`), its input ports wired by name from the graph inputs or an earlier stage's outputs
 * (`pipelineGraph`). The contract lives in `@longctx/graph` because both `@longctx/ops` (which implements
 * techniques) and `@longctx/plans` (which plans with them) need it, and `ops` must not import `plans`.
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Cause, Data, Effect, Exit, Schema } from "effect";
import type { ErrorFields, GraphError, ParamsError, ShapeError, TaggedErrorClass } from "./errors.ts";
import { type Graph, graph, inferShapes, type Port } from "./graph.ts";
import type { AnyOperator, OperatorKind } from "./operator.ts";
import type { HostTensor, TensorDesc } from "./tensor.ts";
import { describeIssue, paramNames, schemaIssue } from "./issue.ts";

/** Prefill (every prompt row at once) or decode (one new row against the KV cache). */
export type Phase = "prefill" | "decode";

/** Element type of the attention inputs Q, K, V (outputs are f32 either way). */
export type AttnDType = "f32" | "f16";

/** One layer's attention shape, in elements. */
export interface AttnDims {
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads (GQA: `heads` is a multiple). */
  readonly kvHeads: number;
  /** Elements per head. */
  readonly headDim: number;
  /** Query rows: the context length in prefill, 1 in decode. */
  readonly seq: number;
  /** Key rows: the context length. */
  readonly kvSeq: number;
}

/**
 * The one parameter the planner's density table, `calibrate`'s sweep and accuracy/speed trade-offs are
 * keyed by (SALE: the Relative Attention Score threshold τ; a top-k technique: its budget).
 */
export interface TechniqueKnob {
  /** Human-readable name (`threshold τ`). */
  readonly name: string;
  /** The key of the technique's `params` it sets (`threshold`). */
  readonly param: string;
  /** Values `calibrate` sweeps by default, to sample the sparse kernels over a range of densities. */
  readonly values: readonly number[];
  /** Which way of the knob keeps fewer blocks (less work, lower accuracy). */
  readonly sparser: "higher" | "lower";
  /** What the knob means, with its unit. */
  readonly description: string;
}

/** Per-sequence state a technique keeps across steps, besides the KV cache every technique reads. */
export interface TechniqueState {
  /** Whether anything survives from one step (prefill or decode step) to the next. */
  readonly perSequence: boolean;
  /** What it keeps and its size, or why nothing (`none: reads the KV cache only`). */
  readonly description: string;
}

/** How a technique runs a phase it does not implement itself: another technique's graph, and why. */
export interface PhaseDelegate<P> {
  /** The technique whose graph runs the phase. */
  readonly technique: AnyTechnique;
  /** The delegate's parameters from this technique's (e.g. the softmax scale carried over). */
  readonly params: (params: P) => Readonly<Record<string, unknown>>;
  /** Why (reported by the planner): `SALE is a prefill method (§3): decode runs dense`. */
  readonly reason: string;
}

/**
 * A stateful decode attention on a KV cache (the model forward's decode steps): `search` runs on a refresh step
 * and outputs the state besides `o`, `reuse` reads the state of the last refresh. Both read `q f32 [heads,
 * seq, headDim]` (after RoPE) and the cache `f32 [kvHeads, capacity, headDim]` holding `pos + seq` rows
 * (runtime scalar `pos`) under either name — `kCache`, `vCache` (HiP's operators) or `k`, `v` (a staged
 * technique's graph, TokenSelect's) — and may read the RoPE tables ({@link ROPE_INPUTS}) and `carried` tensors;
 * they output `o f32 [heads, seq, headDim]`; `state` names the tensors `search` outputs and `reuse` reads as
 * inputs (e.g. HiP's `indices`).
 */
export interface CacheDecodeGraphs {
  /** Decode steps per search: step s after a prefill searches when `s % refresh === 0`. */
  readonly refresh: number;
  /** The refresh step's graph: inputs q, kCache, vCache; outputs o and every `state` name. */
  readonly search: Graph;
  /** The other steps' graph: inputs q, kCache, vCache and every `state` name; output o. */
  readonly reuse: Graph;
  /** State tensors carried from a search to the reuses after it. */
  readonly state: readonly string[];
  /**
   * Whether `search` also runs the calls of more than one token — the prompt's chunks, the first from position
   * 0 included (TokenSelect selects per prefill chunk); default false: prefill runs the forward's own attention.
   */
  readonly prefill?: boolean;
  /**
   * With `prefill`, the graph of the calls of more than one token (default `search`): for a technique whose
   * decode step and multi-token calls take different kernels (Squeezed Attention: the fused selection and
   * split-KV attention for a step, the lists and the tiled gather for a question). Same inputs and state
   * outputs as `search`.
   */
  readonly chunk?: Graph;
  /** The most queries one call may hold (TokenSelect: `nLocal`); the forward refuses longer calls. */
  readonly maxChunk?: number;
  /**
   * Inputs of `search` the forward keeps per layer and per KV cache across calls, zeroed when a sequence starts
   * (a call at position 0), which the graph updates in place (an operator output aliasing the input):
   * TokenSelect's Selection Cache (the last selection query, its list, hit counters).
   */
  readonly carried?: readonly CarriedTensor[];
  /**
   * Tensors the caller binds to inputs of `search` / `reuse` by name, for this layer: data that is neither the
   * cache nor state, such as Squeezed Attention's prefix index (centroids, labels, threshold). The forward
   * uploads each once per tensor object and binds it to every call of this layer.
   */
  readonly inputs?: Readonly<Record<string, HostTensor>>;
}

/**
 * The inputs of a technique's own graph (`graph(params, dims, phase)` for a phase of `phases`) beyond the attention
 * layout — data besides Q and the KV cache, such as Squeezed Attention's prefix index: what the planner needs to
 * cost that graph (the sizes of the dims those inputs name) and what `calibrate` runs it on (speed inputs).
 */
export interface TechniqueInputs<P> {
  /**
   * Sizes of the dims the graph's inputs name besides {@link attnDimSizes}'s, at `dims` (Squeezed Attention:
   * `clusters`, `clustered`, `one`); {@link graphInputDescs} makes the inputs' descriptions from them.
   */
  readonly dims: (params: P, dims: AttnDims) => Readonly<Record<string, number>>;
  /**
   * Speed inputs for `calibrate` (never fidelity inputs): the data of every input besides q, k, v and the RoPE
   * tables, consistent with the random `q` and `k` calibrate generated, so that the graph keeps what its
   * parameters say (Squeezed Attention: an index of runs of consecutive keys, its threshold the `percentile`
   * quantile of the call's own per-key scores). Absent: calibrate fills every float input with random normals.
   */
  readonly speed?: (
    params: P,
    dims: AttnDims,
    qk: { readonly q: HostTensor; readonly k: HostTensor },
  ) => Effect.Effect<Readonly<Record<string, HostTensor>>, TechniqueError>;
}

/** A tensor a cache attention carries across calls (see {@link CacheDecodeGraphs.carried}). */
export interface CarriedTensor {
  /** The graph input's name. */
  readonly name: string;
  /** Its shape for a model's attention layout. */
  readonly shape: (dims: Pick<AttnDims, "heads" | "kvHeads" | "headDim">) => readonly number[];
}

/**
 * Graph inputs an attention graph may read besides `q`, `k`, `v`: the model's RoPE tables `ropeCos`, `ropeSin
 * f32 [positions, headDim / 2]` (rotate-half pairs `(a, a + headDim/2)`, angle `p · θ_a`), for techniques that
 * re-position keys (TokenSelect's compacted positions). The forward binds them to its own tables.
 */
export const ROPE_INPUTS: readonly string[] = ["ropeCos", "ropeSin"];

/**
 * Fails with `TechniqueError` `unsupported-phase` unless `dtype` is f32: for a technique whose decode graph runs
 * on the model forward's f32 KV cache (TokenSelect, Squeezed Attention).
 */
export const requireF32Cache = (technique: string, dtype: AttnDType): Effect.Effect<void, TechniqueError> =>
  dtype === "f32" ? Effect.void : Effect.fail(
    new TechniqueError({
      reason: "unsupported-phase",
      technique,
      message: `${technique} runs on the f32 KV cache; ${dtype} was asked`,
      hint: 'build its decode graph with dtype "f32"',
    }),
  );

/**
 * The shape of graph input `port` of a technique's graph at `dims`: `q [heads, seq, headDim]`, `k`/`v`
 * `[kvHeads, kvSeq, headDim]`, the RoPE tables `[kvSeq, headDim / 2]`; undefined for any other port.
 */
export const attnInputShape = (port: string, dims: AttnDims): number[] | undefined =>
  port === "q"
    ? [dims.heads, dims.seq, dims.headDim]
    : port === "k" || port === "v"
    ? [dims.kvHeads, dims.kvSeq, dims.headDim]
    : ROPE_INPUTS.includes(port)
    ? [dims.kvSeq, dims.headDim / 2]
    : undefined;

/**
 * The sizes of the dims the attention layout names at `dims`: `heads`, `kvHeads`, `headDim`, `seq`, `kvSeq`, the
 * KV cache's `capacity` (= `kvSeq`: a cache holding the context and the call) and the RoPE tables' `positions`
 * (= `kvSeq`) and `half` (= `headDim / 2`).
 */
export const attnDimSizes = (dims: AttnDims): Readonly<Record<string, number>> => ({
  heads: dims.heads,
  kvHeads: dims.kvHeads,
  headDim: dims.headDim,
  seq: dims.seq,
  kvSeq: dims.kvSeq,
  capacity: dims.kvSeq,
  positions: dims.kvSeq,
  half: dims.headDim / 2,
});

/**
 * The descriptions of graph `g`'s inputs at `dims`: each input's dims sized by {@link attnDimSizes}, then by
 * `sizes` (a technique's {@link TechniqueInputs.dims}: Squeezed Attention's `clusters`, `clustered`). Fails with
 * `TechniqueError` `bad-stages` naming an input whose dim neither sizes.
 */
export const graphInputDescs = (
  g: Graph,
  dims: AttnDims,
  sizes: Readonly<Record<string, number>> = {},
): Effect.Effect<Readonly<Record<string, TensorDesc>>, TechniqueError> =>
  Effect.gen(function* () {
    const all: Readonly<Record<string, number>> = { ...attnDimSizes(dims), ...sizes };
    const out: Record<string, TensorDesc> = {};
    for (const i of g.inputs) {
      const missing = i.type.dims.find((d) => all[d] === undefined);
      if (missing !== undefined) {
        return yield* new TechniqueError({
          reason: "bad-stages",
          message:
            `graph "${g.name}" input "${i.name}" names dim "${missing}", which neither the attention ` +
            `layout (${Object.keys(attnDimSizes(dims)).join(", ")}) nor the technique's graphInputs size`,
          hint: `size "${missing}" in the technique's graphInputs.dims`,
        });
      }
      out[i.name] = { ...i.type, shape: i.type.dims.map((d) => all[d]) };
    }
    return out;
  });

/**
 * How many first layers a technique's decoded parameters keep dense: its numeric `denseLayers` parameter (HiP's
 * official default is 3), else 0. The one reading of that convention for `run`, the planner and the scripts.
 */
export const denseLayersOf = (params: unknown): number => {
  const d = (params as { readonly denseLayers?: unknown } | null | undefined)?.denseLayers;
  return typeof d === "number" ? d : 0;
};

/** What building a technique's graph can fail with. */
export type TechniqueGraphError = TechniqueError | GraphError | ParamsError | ShapeError;

/**
 * The technique contract. `P` is the decoded type of its user-facing parameters.
 *
 * Invariants the registry tests check: `name` is unique and is the prefix of the names of the operators it
 * owns (`sale.*`); every kind of `stages` has an operator in `operators` for each phase of `phases`;
 * `params` decodes `{}` (every parameter has a default); `knob.param` is a key of `params`.
 */
export interface Technique<P> {
  /** Registry name (`dense`, `sale`): `run --pipeline <name>`, plan `pipeline`, density tables. */
  readonly name: string;
  /** Paper and section it implements. */
  readonly reference: string;
  /** Phases it runs its own graph in. Other phases go to `delegates` (or are unsupported). */
  readonly phases: readonly Phase[];
  /** Whether it skips work: its cost depends on a measured density (the planner needs one to choose it). */
  readonly sparse: boolean;
  /** Effect Schema of its user-facing parameters; decode with `decodeTechniqueParams` (rejects unknown keys). */
  readonly params: Schema.Codec<P, unknown>;
  /** Every operator it owns (all element types and phases). */
  readonly operators: readonly AnyOperator[];
  /** Operator kinds of one layer, in order. */
  readonly stages: readonly OperatorKind[];
  /**
   * Kinds whose cost model describes the full causal mask and whose work scales with the kept share of
   * blocks: the planner and `calibrate` multiply their FLOPs and bytes read by the density.
   */
  readonly densityScaled: readonly OperatorKind[];
  /** Graph outputs besides `o` and `lse` it produces when asked (`density`: kept / causal blocks per head). */
  readonly extraOutputs: readonly string[];
  /** The parameter sweeps and density tables are keyed by; absent for exact techniques. */
  readonly knob?: TechniqueKnob;
  /** What it keeps per sequence across steps. */
  readonly state: TechniqueState;
  /** Phases it hands to another technique (SALE: decode → dense). */
  readonly delegates: Readonly<Partial<Record<Phase, PhaseDelegate<P>>>>;
  /**
   * The density (attended / causal (query, key) pairs) the technique has by construction at `dims`, when its
   * budget does not depend on the data (HiP: sink + k + window keys per query); the planner uses it where no
   * density was measured. Absent for data-dependent techniques (SALE's threshold).
   */
  readonly constructedDensity?: (params: P, dims: AttnDims) => number;
  /**
   * The decode attention on the model forward's KV cache, for a technique whose decode keeps state between
   * steps (HiP's mask, refreshed every `refresh` steps); absent: decode runs dense over the cache.
   */
  readonly cacheDecode?: (params: P) => Effect.Effect<CacheDecodeGraphs, TechniqueGraphError>;
  /**
   * The inputs of its own graph beyond the attention layout (see {@link TechniqueInputs}), for a technique whose
   * graph reads more than Q, K, V and the RoPE tables (Squeezed Attention's prefix index); absent: the layout's
   * only. The planner costs a cache-decode technique's `decode` graph with these sizes, and `calibrate` runs it
   * on these speed inputs.
   */
  readonly graphInputs?: TechniqueInputs<P>;
  /**
   * The attention graph of one layer for `phase` (see the module doc for its ports), shape-generic (dims
   * named, sizes not fixed) but checked against `dims` by shape inference. A delegated phase returns the
   * delegate's graph. `extraOutputs` are included when a stage produces them.
   *
   * Fails with `TechniqueError` (`unsupported-phase`, `missing-operator`, `bad-params`, `bad-stages`), `ShapeError` (an
   * operator rejects `dims`), or the builder's `GraphError` / `ParamsError`.
   */
  graph(
    params: P,
    dims: AttnDims,
    phase: Phase,
    dtype?: AttnDType,
  ): Effect.Effect<Graph, TechniqueGraphError>;
}

/** Any technique (for registries). */
// deno-lint-ignore no-explicit-any
export type AnyTechnique = Technique<any>;

/** Why a technique, its parameters or a phase was rejected (the `reason` of a {@link TechniqueError}). */
export type TechniqueErrorReason =
  | "unknown-technique"
  | "unsupported-phase"
  | "missing-operator"
  | "bad-params"
  | "bad-stages";

/** The fields of a {@link TechniqueError}. */
export interface TechniqueErrorFields extends ErrorFields {
  /** What was rejected. */
  readonly reason: TechniqueErrorReason;
  /** The technique at fault (absent for `unknown-technique`). */
  readonly technique?: string;
  /** The parameter at fault (`bad-params`). */
  readonly param?: string;
}
/** @internal */
const TechniqueErrorBase: TaggedErrorClass<"TechniqueError", TechniqueErrorFields> = Data.TaggedError(
  "TechniqueError",
)<TechniqueErrorFields>;
/** A technique name, parameter set or phase was rejected; the hint lists what would have been accepted. */
export class TechniqueError extends TechniqueErrorBase {}

export { paramNames } from "./issue.ts";

/**
 * Decode `input` with `t.params`, rejecting keys the schema does not declare. Fails with `TechniqueError`
 * `bad-params` whose `param` and message name the offending parameter (`sale: parameter "threshold": …`) and
 * whose hint lists the known parameters.
 */
export const decodeTechniqueParams = <P>(
  t: Technique<P>,
  input: unknown,
): Effect.Effect<P, TechniqueError> => {
  const r = Schema.decodeUnknownExit(t.params)(input ?? {}, { onExcessProperty: "error" });
  if (Exit.isSuccess(r)) return Effect.succeed(r.value);
  const issue = schemaIssue(Cause.squash(r.cause));
  return Effect.fail(
    new TechniqueError({
      reason: "bad-params",
      technique: t.name,
      ...(issue.param === undefined ? {} : { param: issue.param }),
      message: `${t.name}: ${describeIssue(issue)}`,
      hint: `${t.name}'s parameters are ${paramNames(t.params).join(", ") || "none"} (${t.reference})`,
    }),
  );
};

/**
 * The operator a stage of `technique` runs: kind `kind`, queries of `dtype` (operators without a `q` port
 * qualify for any dtype); in decode, only operators whose key port is indexed by `kvSeq` (query rows ≠ key
 * rows, as `signatures.ts` defines) or is a KV cache (`kCache` indexed by `capacity`: `dense.cacheAttn`).
 * The first match in `operators` wins.
 */
export const findStageOperator = (
  operators: readonly AnyOperator[],
  kind: string,
  phase: Phase,
  dtype: AttnDType = "f32",
): AnyOperator | undefined =>
  operators.find((o) =>
    o.kind === kind && (o.inputs.q?.dtype ?? dtype) === dtype &&
    (phase === "prefill" || (o.inputs.k?.dims ?? []).includes("kvSeq") ||
      (o.inputs.kCache?.dims ?? []).includes("capacity"))
  );

/** One stage of a pipeline graph: an operator and its decoded parameters. */
export interface PipelineStage {
  /** The operator of the stage. */
  readonly op: AnyOperator;
  /** Its parameters, decoded by its schema. */
  readonly params: unknown;
}

/**
 * The stages of `t` for `phase` and `dtype`, found in `operators` (default: the technique's own), each
 * operator's parameters decoded by its own schema from `params` (the technique's decoded parameters; only
 * the keys the operator's struct schema declares).
 * Fails with `TechniqueError` `missing-operator` (no operator of a stage's kind, or one whose schema
 * cannot be configured from the technique's parameters).
 */
export const resolveStages = <P>(
  t: Technique<P>,
  params: P,
  phase: Phase,
  dtype: AttnDType = "f32",
  operators: readonly AnyOperator[] = t.operators,
): Effect.Effect<readonly PipelineStage[], TechniqueError> =>
  Effect.gen(function* () {
    const stages: PipelineStage[] = [];
    for (const kind of t.stages) {
      const op = findStageOperator(operators, kind, phase, dtype);
      if (!op) {
        return yield* new TechniqueError({
          reason: "missing-operator",
          technique: t.name,
          message: `technique "${t.name}" needs an ${dtype} operator of kind ${kind}` +
            (phase === "decode" ? " whose keys are indexed by kvSeq (decode)" : "") + "; none is registered",
          hint: `add it to ${t.name}'s operators (known: ${
            operators.map((o) => o.name).join(", ") || "none"
          })`,
        });
      }
      // the technique's parameters the operator declares (all of them when its schema is not a struct)
      const fields = (op.params as { fields?: unknown }).fields;
      const own = typeof fields === "object" && fields !== null
        ? Object.fromEntries(Object.entries(params as object).filter(([k]) => k in fields))
        : params;
      const decoded = Schema.decodeUnknownExit(op.params)(own);
      if (Exit.isFailure(decoded)) {
        return yield* new TechniqueError({
          reason: "missing-operator",
          technique: t.name,
          message: `operator ${op.name} cannot be configured from technique "${t.name}"'s parameters`,
          hint: `give every parameter of ${op.name} a decoding default so the planner can configure it`,
        });
      }
      stages.push({ op, params: decoded.value });
    }
    return stages;
  });

const GRAPH_INPUTS = new Set(["q", "k", "v", ...ROPE_INPUTS]);

/**
 * Build the attention graph of a chain of stages. A stage's input port is fed by the latest earlier stage
 * output of that name, else by the graph input of that name (`q`, `k`, `v`, typed by the first stage that
 * reads them): `quantize.qq → estimate.qq`, `select.indptr → sparse.indptr`. Outputs `o` and `lse` of the
 * last stage, plus every name of `extraOutputs` (duplicates ignored) some earlier stage produces (the latest
 * one wins).
 *
 * Fails with `TechniqueError` `bad-stages` (a port no earlier stage produces, or a last stage without `o`
 * or `lse`), or the builder's `GraphError` / `ParamsError` / `ShapeError`.
 */
export const pipelineGraph = (
  name: string,
  stages: readonly PipelineStage[],
  extraOutputs: readonly string[] = [],
): Effect.Effect<Graph, TechniqueError | GraphError | ParamsError | ShapeError> =>
  Effect.gen(function* () {
    const g = graph(name);
    const available = new Map<string, Port>();
    let last: Readonly<Record<string, Port>> = {};
    for (const { op, params } of stages) {
      const inputs: Record<string, Port> = {};
      for (const [port, type] of Object.entries(op.inputs)) {
        let h = available.get(port);
        if (!h && GRAPH_INPUTS.has(port)) {
          h = g.input(port, type);
          available.set(port, h);
        }
        if (!h) {
          return yield* new TechniqueError({
            reason: "bad-stages",
            message: `stage ${op.name} reads "${port}", which no earlier stage produces`,
            hint: "stages must be ordered so that every input is produced first; regenerate the plan",
          });
        }
        inputs[port] = h;
      }
      // deno-lint-ignore no-explicit-any
      last = g.add(op, params as any, inputs as any) as Readonly<Record<string, Port>>;
      for (const [port, h] of Object.entries(last)) available.set(port, h);
    }
    for (const out of ["o", "lse"]) {
      if (!last[out]) {
        return yield* new TechniqueError({
          reason: "bad-stages",
          message: `the last stage of ${name} does not produce "${out}"`,
          hint: "an attention pipeline must end in an operator with outputs o and lse",
        });
      }
      g.output(out, last[out]);
    }
    for (const out of new Set(extraOutputs)) {
      const h = available.get(out);
      if (h && !(out in last)) g.output(out, h);
    }
    return yield* g.build();
  });

/** A technique as declared in its folder: everything but `graph`, which `stagedTechnique` derives. */
export type TechniqueSpec<P> = Omit<Technique<P>, "graph" | "delegates" | "extraOutputs"> & {
  readonly delegates?: Technique<P>["delegates"];
  readonly extraOutputs?: readonly string[];
};

/**
 * A technique whose graph is its chain of `stages`: `graph(params, dims, phase, dtype)` resolves each
 * stage among the technique's operators (`resolveStages`), wires them (`pipelineGraph`) and checks `dims` by
 * running every operator's `infer` on Q `[heads, seq, headDim]`, K/V `[kvHeads, kvSeq, headDim]` of `dtype`.
 * A phase outside `phases` goes to `delegates[phase]` (its graph, with its parameters mapped), else fails
 * with `TechniqueError` `unsupported-phase`.
 */
export const stagedTechnique = <P>(spec: TechniqueSpec<P>): Technique<P> => {
  const t: Technique<P> = {
    ...spec,
    extraOutputs: spec.extraOutputs ?? [],
    delegates: spec.delegates ?? {},
    graph: (params, dims, phase, dtype = "f32") =>
      Effect.gen(function* () {
        if (!t.phases.includes(phase)) {
          const d = t.delegates[phase];
          if (!d) {
            return yield* new TechniqueError({
              reason: "unsupported-phase",
              technique: t.name,
              message: `technique "${t.name}" has no ${phase} phase (it runs ${t.phases.join(", ")})`,
              hint: `plan ${phase} with a technique that has it, or give "${t.name}" a ${phase} delegate`,
            });
          }
          const dp = yield* decodeTechniqueParams(d.technique, d.params(params));
          return yield* d.technique.graph(dp, dims, phase, dtype);
        }
        const stages = yield* resolveStages(t, params, phase, dtype);
        const g = yield* pipelineGraph(`${t.name}.${phase}`, stages, t.extraOutputs);
        const descs: Record<string, TensorDesc> = {};
        for (const i of g.inputs) descs[i.name] = { ...i.type, shape: attnInputShape(i.name, dims)! };
        yield* inferShapes(g, descs);
        return g;
      }),
  };
  return t;
};
