/**
 * JSON (de)serialisation of graphs.
 *
 * Document (version 1):
 * ```json
 * { "format": "longctx.graph", "version": 1, "name": "prefill",
 *   "inputs":  [{ "name": "q", "dtype": "f32", "dims": ["heads", "seq", "headDim"], "shape": [9, 512, 64] }],
 *   "nodes":   [{ "name": "attn", "op": "dense.attn", "params": { ... },
 *                 "inputs": { "q": { "input": "q" }, "k": { "node": "rope", "port": "k" } } }],
 *   "outputs": [{ "name": "o", "from": { "node": "attn", "port": "o" } }] }
 * ```
 * Operators are referenced by name and resolved through an `OperatorRegistry`; parameters are stored in
 * their Schema's encoded form and decoded (re-validated) on load. `shape` is optional.
 * @module
 */
import { Effect, Schema } from "effect";
import { GraphError, ParamsError, type ShapeError } from "./errors.ts";
import {
  checkFixedShapes,
  decodeParams,
  type Graph,
  type GraphNode,
  type PortRef,
  validateGraph,
} from "./graph.ts";
import type { AnyOperator, Ports } from "./operator.ts";
import type { DType } from "./tensor.ts";

/** The version `toJSON` writes and `fromJSON` reads. */
export const GRAPH_JSON_VERSION = 1;

const Ref = Schema.Union([
  Schema.Struct({ input: Schema.String }),
  Schema.Struct({ node: Schema.String, port: Schema.String }),
]);

const DTypeSchema = Schema.Literals(["f32", "f16", "i32", "u32", "int8", "int4"]);

const GraphDoc = Schema.Struct({
  format: Schema.Literal("longctx.graph"),
  version: Schema.Number,
  name: Schema.String,
  inputs: Schema.Array(Schema.Struct({
    name: Schema.String,
    dtype: DTypeSchema,
    dims: Schema.Array(Schema.String),
    shape: Schema.optional(Schema.Array(Schema.Number)),
  })),
  nodes: Schema.Array(Schema.Struct({
    name: Schema.String,
    op: Schema.String,
    params: Schema.Unknown,
    inputs: Schema.Record(Schema.String, Ref),
  })),
  outputs: Schema.Array(Schema.Struct({ name: Schema.String, from: Ref })),
});

/** A graph document (what `toJSON` returns; `JSON.stringify` it). */
export interface GraphJSON {
  /** Always `"longctx.graph"`. */
  readonly format: "longctx.graph";
  /** Document version (`GRAPH_JSON_VERSION`); `fromJSON` rejects others. */
  readonly version: number;
  /** Graph name. */
  readonly name: string;
  /** Graph inputs: name, dtype, dim names and an optional fixed shape. */
  readonly inputs: readonly {
    readonly name: string;
    readonly dtype: DType;
    readonly dims: readonly string[];
    readonly shape?: readonly number[];
  }[];
  /** Nodes: name, operator name (looked up in the registry), parameters, input port → source. */
  readonly nodes: readonly {
    readonly name: string;
    readonly op: string;
    readonly params: unknown;
    readonly inputs: Readonly<Record<string, PortRef>>;
  }[];
  /** Named outputs and the tensor each returns. */
  readonly outputs: readonly { readonly name: string; readonly from: PortRef }[];
}

/** Operators by name, for `fromJSON`. */
export type OperatorRegistry = ReadonlyMap<string, AnyOperator>;

/** Build a registry from operators. Fails with `GraphError` (`duplicate`) when two share a name. */
export const operatorRegistry = (
  ops: readonly AnyOperator[],
): Effect.Effect<OperatorRegistry, GraphError> => {
  const m = new Map<string, AnyOperator>();
  for (const op of ops) {
    if (m.has(op.name) && m.get(op.name) !== op) {
      return Effect.fail(
        new GraphError({
          reason: "duplicate",
          message: `two different operators are named "${op.name}"`,
          hint: "operator names must be unique (`<technique>.<kind>`)",
        }),
      );
    }
    m.set(op.name, op);
  }
  return Effect.succeed(m);
};

/**
 * Serialise a graph. Parameters are encoded with each operator's Schema. Fails with `ParamsError` if a
 * node's parameters cannot be encoded.
 */
export const toJSON = (g: Graph): Effect.Effect<GraphJSON, ParamsError> =>
  Effect.gen(function* () {
    const nodes: GraphJSON["nodes"][number][] = [];
    for (const n of g.nodes) {
      const params = yield* Schema.encodeUnknownEffect(n.op.params)(n.params).pipe(
        Effect.mapError((e) =>
          new ParamsError({
            operator: n.op.name,
            message: `node ${n.name}(${n.op.name}): parameters cannot be encoded: ${e.message}`,
            hint: `check the parameters against ${n.op.name}'s schema`,
          })
        ),
      );
      nodes.push({ name: n.name, op: n.op.name, params, inputs: n.inputs });
    }
    return {
      format: "longctx.graph",
      version: GRAPH_JSON_VERSION,
      name: g.name,
      inputs: g.inputs.map((i) => ({
        name: i.name,
        dtype: i.type.dtype,
        dims: i.type.dims,
        ...(i.shape ? { shape: i.shape } : {}),
      })),
      nodes,
      outputs: g.outputs.map((o) => ({ name: o.name, from: o.ref })),
    };
  });

/**
 * Read a graph document (parsed JSON, or a JSON string), resolving operators through `registry` and
 * decoding every node's parameters with its operator's Schema, then validating the graph.
 *
 * Fails with `GraphError` (`bad-json`: not JSON, not a graph document or another version;
 * `unknown-operator`; and every `validateGraph` reason), `ParamsError`, or `ShapeError` when every input
 * has a fixed shape and shape inference fails (`checkFixedShapes`).
 */
export const fromJSON = (
  doc: unknown,
  registry: OperatorRegistry,
): Effect.Effect<Graph<Ports, Ports>, GraphError | ParamsError | ShapeError> =>
  Effect.gen(function* () {
    let raw = doc;
    if (typeof doc === "string") {
      try {
        raw = JSON.parse(doc);
      } catch (e) {
        return yield* new GraphError({
          reason: "bad-json",
          message: `not JSON: ${(e as Error).message}`,
          hint: "pass the text toJSON() produced, through JSON.stringify",
        });
      }
    }
    const d = yield* Schema.decodeUnknownEffect(GraphDoc)(raw).pipe(
      Effect.mapError((e) =>
        new GraphError({
          reason: "bad-json",
          message: `not a longctx graph document: ${e.message}`,
          hint: 'a graph document has format "longctx.graph", version, name, inputs, nodes and outputs',
        })
      ),
    );
    if (d.version !== GRAPH_JSON_VERSION) {
      return yield* new GraphError({
        reason: "bad-json",
        message: `graph document version ${d.version}, this library reads version ${GRAPH_JSON_VERSION}`,
        hint: "re-export the graph with this version of @longctx/graph",
      });
    }
    const nodes: GraphNode[] = [];
    for (const n of d.nodes) {
      const op = registry.get(n.op);
      if (!op) {
        return yield* new GraphError({
          reason: "unknown-operator",
          message: `node ${n.name} uses operator "${n.op}", which the registry does not know`,
          hint: `register it (operatorRegistry([...])); known: ${[...registry.keys()].join(", ") || "none"}`,
          to: `${n.name}(${n.op})`,
        });
      }
      const params = yield* decodeParams(op, n.name, n.params);
      nodes.push({ name: n.name, op, params, inputs: n.inputs });
    }
    const g = yield* validateGraph({
      name: d.name,
      inputs: d.inputs.map((i) => ({
        name: i.name,
        type: { dtype: i.dtype, dims: i.dims },
        ...(i.shape ? { shape: i.shape } : {}),
      })),
      nodes,
      outputs: d.outputs.map((o) => ({ name: o.name, ref: o.from })),
    });
    return yield* checkFixedShapes(g);
  });
