/**
 * The typed graph builder and graph validation.
 *
 * A graph is a DAG of operator nodes. Node outputs are typed handles (`Port<D, N>`: a dtype and a tuple of
 * dimension names), so wiring an output into an input of another dtype or other dimension names is a
 * TypeScript error; where the types are not visible to TypeScript (graphs from JSON, loosened types) the
 * same check runs when the graph is built and fails with a `GraphError` naming both ends.
 *
 * ```ts
 * const g = graph("prefill");
 * const q = g.input("q", portTypes.q);
 * const k = g.input("k", portTypes.kv);
 * const v = g.input("v", portTypes.kv);
 * const a = g.add(denseAttn, { causal: true }, { q, k, v });
 * g.output("o", a.o);
 * const built = yield* g.build(); // Effect<Graph, GraphError | ParamsError | ShapeError>
 * ```
 * or, with the graph's input and output types kept for `run`: `defineGraph(name, inputs, body)`.
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Cause, Effect, Exit, Schema } from "effect";
import { GraphError, ParamsError, ShapeError } from "./errors.ts";
import { describeIssue, paramNames, schemaIssue } from "./issue.ts";
import type { AnyOperator, DescsOf, Operator, Ports } from "./operator.ts";
import type { DType, TensorDesc, TensorType } from "./tensor.ts";

/**
 * Wildcard dimension list: a port typed `tensorType(dtype, [ANY_DIMS])` (TypeScript type
 * `TensorType<D, readonly string[]>`) accepts any dimension names at build time (generic operators such
 * as elementwise ones). Its shape comes from `infer`.
 */
export const ANY_DIMS = "...";

/** A port type that accepts any dims of `dtype` (see `ANY_DIMS`). */
export const anyDims = <D extends DType>(dtype: D): TensorType<D, readonly string[]> => ({
  dtype,
  dims: [ANY_DIMS],
});

/** Where a tensor comes from: a graph input or a node's output port. */
export type PortRef =
  | { readonly input: string }
  | { readonly node: string; readonly port: string };

/** A typed handle to a tensor of a graph under construction. */
export interface Port<D extends DType = DType, N extends readonly string[] = readonly string[]>
  extends TensorType<D, N> {
  /** Where the tensor comes from (a graph input or a node's output port). */
  readonly ref: PortRef;
  /** Id of the builder that made it (ports cannot cross graphs). */
  readonly owner: number;
}

/** Input handles an operator with input ports `I` takes. */
export type PortsIn<I extends Ports> = { readonly [K in keyof I]: Port<I[K]["dtype"], I[K]["dims"]> };

/** Output handles a node of an operator with output ports `O` gives. */
export type PortsOut<O extends Ports> = { readonly [K in keyof O]: Port<O[K]["dtype"], O[K]["dims"]> };

/** Tensor types of a record of ports. */
export type TypesOf<R extends Readonly<Record<string, Port>>> = {
  readonly [K in keyof R]: TensorType<R[K]["dtype"], R[K]["dims"]>;
};

/** A graph input: its type and, optionally, a fixed shape (elements per dim). */
export interface GraphInput {
  /** Input name (`q`, `k`, `v`, …): what `run` and `Program.write` take. */
  readonly name: string;
  /** Dtype and dim names. */
  readonly type: TensorType;
  /** Fixed size of each dim, in elements, when the graph only accepts one shape. */
  readonly shape?: readonly number[];
}

/** An operator node: its operator, validated parameters and where each input port reads from. */
export interface GraphNode {
  /** Node name, unique in the graph (reports and errors name it). */
  readonly name: string;
  /** The operator it runs. */
  readonly op: AnyOperator;
  /** Parameters decoded by the operator's schema (defaults filled in). */
  readonly params: unknown;
  /** Input port name → the tensor it reads. */
  readonly inputs: Readonly<Record<string, PortRef>>;
}

/** A named graph output. */
export interface GraphOutput {
  /** Output name (a key of the run's outputs). */
  readonly name: string;
  /** The tensor it returns. */
  readonly ref: PortRef;
}

/** An unvalidated graph description (what the builder and the JSON reader assemble). */
export interface GraphSpec {
  /** Graph name (reports, errors, JSON). */
  readonly name: string;
  /** Graph inputs, in declaration order. */
  readonly inputs: readonly GraphInput[];
  /** Operator nodes. */
  readonly nodes: readonly GraphNode[];
  /** Named outputs. */
  readonly outputs: readonly GraphOutput[];
}

/**
 * A validated graph: no cycles, no dangling inputs, every edge type-correct, parameters decoded.
 * `nodes` are in topological order. `I` / `O` are the input and output port types (`run` uses them).
 */
export interface Graph<I extends Ports = Ports, O extends Ports = Ports> extends GraphSpec {
  /** Input name → tensor type. */
  readonly inputTypes: I;
  /** Output name → tensor type. */
  readonly outputTypes: O;
}

/** A stable string key for a tensor reference (`in:<name>` or `node:<node>:<port>`). */
export const refKey = (ref: PortRef): string =>
  "input" in ref ? `in:${ref.input}` : `node:${ref.node}:${ref.port}`;

/** `f32[heads,seq,headDim]`. */
export const showType = (t: TensorType): string => `${t.dtype}[${t.dims.join(",")}]`;

/** Whether a producer type may feed a consumer port: same dtype and same dim names (or a wildcard). */
export const typesMatch = (producer: TensorType, consumer: TensorType): boolean =>
  producer.dtype === consumer.dtype &&
  (isWildcard(consumer) || isWildcard(producer) ||
    (producer.dims.length === consumer.dims.length && producer.dims.every((d, i) => d === consumer.dims[i])));

const isWildcard = (t: TensorType): boolean => t.dims.length === 1 && t.dims[0] === ANY_DIMS;

const nodeLabel = (n: GraphNode): string => `${n.name}(${n.op.name})`;

/** Human name of a reference: `input:q` or `node(op).port`. */
const refLabel = (spec: GraphSpec, ref: PortRef): string => {
  if ("input" in ref) return `input:${ref.input}`;
  const n = spec.nodes.find((x) => x.name === ref.node);
  return n ? `${nodeLabel(n)}.${ref.port}` : `${ref.node}.${ref.port}`;
};

/** The type a reference carries, or a GraphError when it points nowhere. */
const refType = (spec: GraphSpec, ref: PortRef, to: string): Effect.Effect<TensorType, GraphError> => {
  if ("input" in ref) {
    const i = spec.inputs.find((x) => x.name === ref.input);
    return i ? Effect.succeed(i.type) : Effect.fail(
      new GraphError({
        reason: "dangling-input",
        message: `${to} reads graph input "${ref.input}", which the graph does not declare`,
        hint: `declare it with g.input("${ref.input}", type) or wire ${to} to an existing tensor`,
        from: `input:${ref.input}`,
        to,
      }),
    );
  }
  const n = spec.nodes.find((x) => x.name === ref.node);
  if (!n) {
    return Effect.fail(
      new GraphError({
        reason: "dangling-input",
        message: `${to} reads from node "${ref.node}", which is not in the graph`,
        hint: `add node "${ref.node}" or wire ${to} to an existing tensor`,
        from: `${ref.node}.${ref.port}`,
        to,
      }),
    );
  }
  const t = n.op.outputs[ref.port];
  return t ? Effect.succeed(t) : Effect.fail(
    new GraphError({
      reason: "dangling-input",
      message: `${to} reads port "${ref.port}" of ${nodeLabel(n)}, which has outputs [${
        Object.keys(n.op.outputs).join(", ")
      }]`,
      hint: `use one of ${nodeLabel(n)}'s output ports`,
      from: `${nodeLabel(n)}.${ref.port}`,
      to,
    }),
  );
};

const duplicates = (
  names: readonly string[],
): string[] => [...new Set(names.filter((n, i) => names.indexOf(n) !== i))];

/**
 * Validate a graph description: unique names, every input port wired to an existing tensor of a matching
 * type, no unknown ports, at least one output, no cycles. Returns the graph with nodes in topological order.
 *
 * Fails with `GraphError` (`duplicate`, `dangling-input`, `unknown-port`, `type-mismatch`, `no-outputs`,
 * `cycle`), naming the two ends of the offending edge in `from` / `to`.
 */
export const validateGraph = <I extends Ports = Ports, O extends Ports = Ports>(
  spec: GraphSpec,
): Effect.Effect<Graph<I, O>, GraphError> =>
  Effect.gen(function* () {
    for (
      const [what, names] of [
        ["graph input", spec.inputs.map((i) => i.name)],
        ["node", spec.nodes.map((n) => n.name)],
        ["graph output", spec.outputs.map((o) => o.name)],
      ] as const
    ) {
      const dup = duplicates(names);
      if (dup.length > 0) {
        return yield* new GraphError({
          reason: "duplicate",
          message: `${what} name "${dup[0]}" is used more than once`,
          hint: `give every ${what} a unique name`,
        });
      }
    }
    for (const n of spec.nodes) {
      for (const port of Object.keys(n.inputs)) {
        if (!(port in n.op.inputs)) {
          return yield* new GraphError({
            reason: "unknown-port",
            message: `${nodeLabel(n)} has no input port "${port}"; its inputs are [${
              Object.keys(n.op.inputs).join(", ")
            }]`,
            hint: `wire only ${n.op.name}'s declared inputs`,
            from: refLabel(spec, n.inputs[port]),
            to: `${nodeLabel(n)}.${port}`,
          });
        }
      }
      for (const [port, want] of Object.entries(n.op.inputs)) {
        const to = `${nodeLabel(n)}.${port}`;
        const ref = n.inputs[port];
        if (ref === undefined) {
          return yield* new GraphError({
            reason: "dangling-input",
            message: `${to} (${showType(want)}) is not connected`,
            hint: `pass a tensor for "${port}" when adding node ${n.name}`,
            to,
          });
        }
        const got = yield* refType(spec, ref, to);
        if (!typesMatch(got, want)) {
          const from = refLabel(spec, ref);
          return yield* new GraphError({
            reason: "type-mismatch",
            message: `${from} gives ${showType(got)} but ${to} expects ${showType(want)}`,
            hint: got.dtype !== want.dtype
              ? `insert a conversion (e.g. quantize/dequantize) between ${from} and ${to}`
              : `the dims differ by name: wire a tensor whose dims are [${want.dims.join(", ")}]`,
            from,
            to,
          });
        }
      }
    }
    if (spec.outputs.length === 0) {
      return yield* new GraphError({
        reason: "no-outputs",
        message: `graph "${spec.name}" has no outputs`,
        hint: `mark the results with g.output(name, port)`,
      });
    }
    for (const o of spec.outputs) yield* refType(spec, o.ref, `output:${o.name}`);

    // Kahn's algorithm; what remains is on (or downstream of) a cycle.
    const byName = new Map(spec.nodes.map((n) => [n.name, n]));
    const indeg = new Map<string, number>();
    const users = new Map<string, string[]>();
    for (const n of spec.nodes) {
      const deps = new Set(
        Object.values(n.inputs).flatMap((r) => ("node" in r ? [r.node] : [])),
      );
      indeg.set(n.name, deps.size);
      for (const d of deps) users.set(d, [...(users.get(d) ?? []), n.name]);
    }
    const ready = spec.nodes.filter((n) => indeg.get(n.name) === 0).map((n) => n.name);
    const order: GraphNode[] = [];
    while (ready.length > 0) {
      const name = ready.shift()!;
      order.push(byName.get(name)!);
      for (const u of users.get(name) ?? []) {
        const d = indeg.get(u)! - 1;
        indeg.set(u, d);
        if (d === 0) ready.push(u);
      }
    }
    if (order.length < spec.nodes.length) {
      const stuck = spec.nodes.filter((n) => !order.includes(n)).map((n) => n);
      const cycle = findCycle(stuck);
      return yield* new GraphError({
        reason: "cycle",
        message: `graph "${spec.name}" has a cycle: ${cycle.map(nodeLabel).join(" -> ")}`,
        hint: "a node cannot depend on its own output; break the loop (unroll it into separate nodes)",
        from: nodeLabel(cycle[cycle.length - 2] ?? cycle[0]),
        to: nodeLabel(cycle[cycle.length - 1]),
      });
    }
    const inputTypes = Object.fromEntries(spec.inputs.map((i) => [i.name, i.type])) as unknown as I;
    const outputTypes = {} as Record<string, TensorType>;
    for (const o of spec.outputs) outputTypes[o.name] = yield* refType(spec, o.ref, `output:${o.name}`);
    return { ...spec, nodes: order, inputTypes, outputTypes: outputTypes as unknown as O };
  });

/** A cycle among nodes that Kahn's algorithm could not order, as a closed path (first === last). */
const findCycle = (stuck: readonly GraphNode[]): GraphNode[] => {
  const byName = new Map(stuck.map((n) => [n.name, n]));
  const deps = (n: GraphNode) =>
    Object.values(n.inputs).flatMap((r) => ("node" in r && byName.has(r.node) ? [byName.get(r.node)!] : []));
  // Every stuck node has a stuck predecessor; walking predecessors must revisit a node.
  const path: GraphNode[] = [];
  let cur: GraphNode | undefined = stuck[0];
  while (cur && !path.includes(cur)) {
    path.push(cur);
    cur = deps(cur)[0];
  }
  if (!cur) return path;
  const loop = path.slice(path.indexOf(cur)).reverse();
  return [...loop, loop[0]];
};

const paramsError = (op: AnyOperator, node: string, failure: unknown): ParamsError => {
  const issue = schemaIssue(failure);
  return new ParamsError({
    operator: op.name,
    ...(issue.param === undefined ? {} : { param: issue.param }),
    message: `node ${node}(${op.name}): ${describeIssue(issue)}`,
    hint: `${op.name}'s parameters are ${paramNames(op.params).join(", ") || "none"} (${op.reference})`,
  });
};

/**
 * An integer parameter schema for an operator's or technique's `params`: in `[min, max]`, a multiple of `step`
 * when `step > 1`, defaulting to `def` when the key is absent.
 */
export const intParam = (
  min: number,
  max: number,
  def: number,
  step = 1,
): Schema.withDecodingDefaultKey<Schema.Int> =>
  (step > 1
    ? Schema.Int.check(
      Schema.isGreaterThanOrEqualTo(min),
      Schema.isLessThanOrEqualTo(max),
      Schema.isMultipleOf(step, { expected: `a multiple of ${step}` }),
    )
    : Schema.Int.check(Schema.isGreaterThanOrEqualTo(min), Schema.isLessThanOrEqualTo(max))).pipe(
      Schema.withDecodingDefaultKey(Effect.succeed(def)),
    );

/** A finite number parameter schema in `[min, max]`, defaulting to `def` when the key is absent. */
export const finiteParam = (
  min: number,
  max: number,
  def: number,
): Schema.withDecodingDefaultKey<Schema.Finite> =>
  Schema.Finite.check(Schema.isGreaterThanOrEqualTo(min), Schema.isLessThanOrEqualTo(max)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(def)),
  );

/**
 * Decode user parameters with `schema`, filling defaults, and reject keys it does not declare: what the
 * `saleParams()`-style helpers of `@longctx/ops` do. Throws a `ParamsError` whose `param` and message name the
 * offending parameter (`sale: parameter "blockQ": Expected a multiple of 16`) and whose hint lists the known
 * parameters — thrown, not returned, since these helpers build plain values for scripts.
 */
export const decodeParamsSync = <P>(name: string, schema: Schema.Codec<P, unknown>, input: unknown): P => {
  const r = Schema.decodeUnknownExit(schema)(input ?? {}, { onExcessProperty: "error" });
  if (Exit.isSuccess(r)) return r.value;
  const issue = schemaIssue(Cause.squash(r.cause));
  throw new ParamsError({
    operator: name,
    ...(issue.param === undefined ? {} : { param: issue.param }),
    message: `${name}: ${describeIssue(issue)}`,
    hint: `${name}'s parameters are ${paramNames(schema).join(", ") || "none"}`,
  });
};

/**
 * Validate typed parameters with the operator's Schema (encode, then decode), returning the decoded
 * value. A key the schema does not declare is an error too. Fails with `ParamsError` naming the operator, the
 * node and the parameter.
 */
export const checkParams = (
  op: AnyOperator,
  node: string,
  params: unknown,
): Effect.Effect<unknown, ParamsError> =>
  Effect.gen(function* () {
    const enc = Schema.encodeUnknownExit(op.params)(params, { onExcessProperty: "error" });
    if (Exit.isFailure(enc)) return yield* paramsError(op, node, firstError(enc));
    return yield* decodeParams(op, node, enc.value);
  });

/** Decode encoded (JSON) parameters with the operator's Schema, unknown keys rejected. Fails with `ParamsError`. */
export const decodeParams = (
  op: AnyOperator,
  node: string,
  encoded: unknown,
): Effect.Effect<unknown, ParamsError> => {
  const dec = Schema.decodeUnknownExit(op.params)(encoded, { onExcessProperty: "error" });
  return Exit.isSuccess(dec)
    ? Effect.succeed(dec.value)
    : Effect.fail(paramsError(op, node, firstError(dec)));
};

const firstError = (exit: Exit.Exit<unknown, unknown>): unknown =>
  Exit.isSuccess(exit) ? undefined : Cause.squash(exit.cause);

let nextBuilderId = 1;

/**
 * Fluent, typed graph builder. `input` declares graph inputs, `add` appends operator nodes (typed: the
 * input handles must have the operator's dtypes and dim names), `output` names results, `build` validates.
 * Errors found while adding (bad parameters, foreign ports) are reported by `build`.
 */
export class GraphBuilder {
  /** Id stamped on the ports this builder makes (ports cannot cross graphs). */
  readonly id: number = nextBuilderId++;
  /** Name the built graph gets. */
  readonly name: string;
  readonly #inputs: GraphInput[] = [];
  readonly #nodes: GraphNode[] = [];
  readonly #outputs: GraphOutput[] = [];
  readonly #errors: (GraphError | ParamsError)[] = [];
  readonly #pending: Effect.Effect<void, ParamsError>[] = [];

  /** A builder for a graph named `name` (usually through `graph(name)`). */
  constructor(name: string) {
    this.name = name;
  }

  /** Declare a graph input of `type`; `shape` (elements per dim), when given, is checked at run time. */
  input<D extends DType, const N extends readonly string[]>(
    name: string,
    type: TensorType<D, N>,
    shape?: readonly number[],
  ): Port<D, N> {
    this.#inputs.push({ name, type: { dtype: type.dtype, dims: type.dims }, ...(shape ? { shape } : {}) });
    return { dtype: type.dtype, dims: type.dims, ref: { input: name }, owner: this.id };
  }

  /**
   * Append a node running `op` with `params` on `inputs` (one handle per input port). Returns one handle
   * per output port. `name` defaults to the operator's name (suffixed `_2`, `_3`, … when repeated).
   */
  add<P, I extends Ports, O extends Ports>(
    op: Operator<P, I, O>,
    params: NoInfer<P>,
    inputs: NoInfer<PortsIn<I>>,
    name?: string,
  ): PortsOut<O> {
    const base = name ?? op.name;
    let nodeName = base;
    for (let i = 2; name === undefined && this.#nodes.some((n) => n.name === nodeName); i++) {
      nodeName = `${base}_${i}`;
    }
    const refs: Record<string, PortRef> = {};
    for (const [port, h] of Object.entries(inputs as Readonly<Record<string, Port>>)) {
      if (h === undefined) continue;
      if (h.owner !== this.id) {
        this.#errors.push(
          new GraphError({
            reason: "dangling-input",
            message: `${nodeName}(${op.name}).${port} is wired to a tensor of another graph`,
            hint: "ports cannot cross graphs: declare the tensor as an input of this graph",
            to: `${nodeName}(${op.name}).${port}`,
          }),
        );
        continue;
      }
      refs[port] = h.ref;
    }
    const node: { -readonly [K in keyof GraphNode]: GraphNode[K] } = {
      name: nodeName,
      op: op as unknown as AnyOperator,
      params,
      inputs: refs,
    };
    this.#nodes.push(node);
    this.#pending.push(
      Effect.map(checkParams(node.op, nodeName, params), (p) => {
        node.params = p;
      }),
    );
    const out: Record<string, Port> = {};
    for (const [port, t] of Object.entries(op.outputs)) {
      out[port] = { dtype: t.dtype, dims: t.dims, ref: { node: nodeName, port }, owner: this.id };
    }
    return out as unknown as PortsOut<O>;
  }

  /** Mark `port` as the graph output `name`. */
  output(name: string, port: Port): this {
    if (port.owner !== this.id) {
      this.#errors.push(
        new GraphError({
          reason: "dangling-input",
          message: `output "${name}" is a tensor of another graph`,
          hint: "outputs must be tensors of this graph",
          to: `output:${name}`,
        }),
      );
    } else this.#outputs.push({ name, ref: port.ref });
    return this;
  }

  /** The description built so far (unvalidated). */
  spec(): GraphSpec {
    return {
      name: this.name,
      inputs: [...this.#inputs],
      nodes: [...this.#nodes],
      outputs: [...this.#outputs],
    };
  }

  /**
   * Validate and return the graph. Fails with `ParamsError` (a node's parameters do not satisfy its
   * operator's Schema), `GraphError` (see `validateGraph`) or, when every input has a fixed shape,
   * `ShapeError` from shape inference (see `checkFixedShapes`).
   */
  build<I extends Ports = Ports, O extends Ports = Ports>(): Effect.Effect<
    Graph<I, O>,
    GraphError | ParamsError | ShapeError
  > {
    const errors = [...this.#errors];
    const pending = [...this.#pending];
    const spec = this.spec();
    return Effect.gen(function* () {
      if (errors.length > 0) return yield* Effect.fail(errors[0]);
      for (const p of pending) yield* p;
      return yield* checkFixedShapes(yield* validateGraph<I, O>(spec));
    });
  }
}

/** Start a graph. */
export const graph = (name = "graph"): GraphBuilder => new GraphBuilder(name);

/**
 * Define a graph whose input and output types are kept in its type: `inputs` maps input names to tensor
 * types (optionally `shapes` fixes their sizes), `body` wires nodes and returns the output handles.
 *
 * Fails with `GraphError`, `ParamsError` or `ShapeError` like `GraphBuilder.build`.
 */
export const defineGraph = <
  const I extends Readonly<Record<string, TensorType>>,
  R extends Readonly<Record<string, Port>>,
>(
  name: string,
  inputs: I,
  body: (g: GraphBuilder, inputs: PortsIn<I>) => R,
  shapes?: { readonly [K in keyof I]?: readonly number[] },
): Effect.Effect<Graph<I, TypesOf<R>>, GraphError | ParamsError | ShapeError> =>
  Effect.suspend(() => {
    const g = graph(name);
    const handles: Record<string, Port> = {};
    for (const [k, t] of Object.entries(inputs)) handles[k] = g.input(k, t, shapes?.[k]);
    const outs = body(g, handles as unknown as PortsIn<I>);
    for (const [k, p] of Object.entries(outs)) g.output(k, p);
    return g.build<I, TypesOf<R>>();
  });

/** Concrete descriptions of every tensor of a graph, by `refKey`. */
export type ShapeMap = ReadonlyMap<string, TensorDesc>;

const shapeError = (message: string, hint: string) => new ShapeError({ message, hint });

/**
 * Shape inference over a validated graph: checks each input description against its declared type and
 * shape, then runs every node's `infer` in order and checks its results against the operator's declared
 * output types.
 *
 * Fails with `ShapeError` naming the graph input or node port at fault.
 */
export const inferShapes = (
  g: Graph,
  inputs: Readonly<Record<string, TensorDesc>>,
): Effect.Effect<ShapeMap, ShapeError> =>
  Effect.gen(function* () {
    const map = new Map<string, TensorDesc>();
    for (const i of g.inputs) {
      const d = inputs[i.name];
      if (!d) {
        return yield* shapeError(
          `graph "${g.name}" needs input "${i.name}" (${showType(i.type)}), which was not given`,
          `pass a tensor for "${i.name}"`,
        );
      }
      if (!typesMatch(d, i.type)) {
        return yield* shapeError(
          `input "${i.name}" is ${showType(d)}, graph "${g.name}" declares ${showType(i.type)}`,
          `pass a ${showType(i.type)} tensor`,
        );
      }
      if (
        (d.shape.length !== d.dims.length && !isWildcard(d)) ||
        d.shape.some((s) => !Number.isInteger(s) || s < 0)
      ) {
        return yield* shapeError(
          `input "${i.name}" has shape [${d.shape}] for dims [${d.dims}]`,
          "give one non-negative integer size per dim",
        );
      }
      if (i.shape && (i.shape.length !== d.shape.length || i.shape.some((s, j) => s !== d.shape[j]))) {
        return yield* shapeError(
          `input "${i.name}" has shape [${d.shape}], graph "${g.name}" fixes [${i.shape}]`,
          `pass a tensor of shape [${i.shape}] or rebuild the graph without a fixed shape`,
        );
      }
      map.set(refKey({ input: i.name }), d);
    }
    for (const n of g.nodes) {
      const descs: Record<string, TensorDesc> = {};
      for (const [port, ref] of Object.entries(n.inputs)) descs[port] = map.get(refKey(ref))!;
      const out = yield* n.op.infer(n.params, descs as DescsOf<Ports>).pipe(
        Effect.mapError((e) => shapeError(`node ${nodeLabel(n)}: ${e.message}`, e.hint)),
      );
      for (const [port, t] of Object.entries(n.op.outputs)) {
        const d = out[port];
        if (
          !d || d.dtype !== t.dtype || (d.shape.length !== d.dims.length && !isWildcard(d)) ||
          !typesMatch(d, t)
        ) {
          return yield* shapeError(
            `node ${nodeLabel(n)}: infer gave ${
              d ? `${showType(d)} [${d.shape}]` : "nothing"
            } for output "${port}", ` +
              `declared ${showType(t)}`,
            `fix ${n.op.name}.infer to return a ${showType(t)} description for "${port}"`,
          );
        }
        map.set(refKey({ node: n.name, port }), d);
      }
    }
    return map;
  });

/**
 * When every graph input declares a fixed shape, run shape inference now (graph-build time) so shape
 * errors surface before any run; otherwise return the graph unchanged (shapes are checked per run).
 * Fails with `ShapeError` naming the node at fault.
 */
export const checkFixedShapes = <G extends Graph>(g: G): Effect.Effect<G, ShapeError> => {
  if (g.inputs.length === 0 || g.inputs.some((i) => i.shape === undefined)) return Effect.succeed(g);
  const descs: Record<string, TensorDesc> = {};
  for (const i of g.inputs) descs[i.name] = { dtype: i.type.dtype, dims: i.type.dims, shape: i.shape! };
  return Effect.as(inferShapes(g, descs), g);
};
