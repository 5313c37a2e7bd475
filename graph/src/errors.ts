/**
 * Typed errors shared by every longctx package. Each carries a `hint` saying what to do about it.
 *
 * Errors are Effect tagged classes (`Data.TaggedError`), so they appear in `Effect<A, E>` signatures and
 * can be handled with `Effect.catchTag`. Each class extends a base whose type is written out
 * ({@link TaggedErrorClass}), so that JSR's fast check reads the classes without inferring a call.
 * @module
 */
/** @internal Effect's types (`Cause`, `Data`) are documented by the `effect` package. */
import { type Cause, Data } from "effect";

/**
 * The class `Data.TaggedError(tag)<F>` returns, written out: `new (fields)` gives an `Error` with
 * `_tag === Tag` and the fields as read-only properties, which is also an Effect (`yield* new ShapeError(…)`
 * fails an `Effect.gen`).
 */
export type TaggedErrorClass<Tag extends string, F extends object> = new (
  fields: F,
) => Cause.YieldableError & { readonly _tag: Tag } & Readonly<F>;

/** What every longctx error carries: what went wrong and what to do about it. */
export interface ErrorFields {
  /** What went wrong, naming the value, port, file or parameter at fault. */
  readonly message: string;
  /** What to do about it: the fix, in one sentence (the CLIs print it after `— fix:`). */
  readonly hint: string;
}

/** @internal */
const ShapeErrorBase: TaggedErrorClass<"ShapeError", ErrorFields> = Data.TaggedError("ShapeError")<
  ErrorFields
>;
/** A tensor's shape or dtype does not fit what an operator or kernel expects. */
export class ShapeError extends ShapeErrorBase {}

/** The fields of a {@link ParamsError}. */
export interface ParamsErrorFields extends ErrorFields {
  /** The operator (`sale.estimate`) or technique (`technique sale`) whose parameters were rejected. */
  readonly operator: string;
  /** The parameter at fault (`blockQ`), when the schema's issue names one. */
  readonly param?: string;
}
/** @internal */
const ParamsErrorBase: TaggedErrorClass<"ParamsError", ParamsErrorFields> = Data.TaggedError("ParamsError")<
  ParamsErrorFields
>;
/** Operator parameters failed their Effect Schema. */
export class ParamsError extends ParamsErrorBase {}

/** Why a graph is malformed (the `reason` of a {@link GraphError}). */
export type GraphErrorReason =
  | "cycle"
  | "dangling-input"
  | "type-mismatch"
  | "unknown-operator"
  | "bad-json"
  | "duplicate"
  | "unknown-port"
  | "no-outputs";

/** The fields of a {@link GraphError}. */
export interface GraphErrorFields extends ErrorFields {
  /** Which rule the graph breaks. */
  readonly reason: GraphErrorReason;
  /** The edge's source, `node(operator).port` or `input:<name>`, when the error is about an edge. */
  readonly from?: string;
  /** The edge's target, `node(operator).port`, when the error is about an edge. */
  readonly to?: string;
}
/** @internal */
const GraphErrorBase: TaggedErrorClass<"GraphError", GraphErrorFields> = Data.TaggedError("GraphError")<
  GraphErrorFields
>;
/**
 * A graph is malformed: a cycle, a dangling input, a mis-wired port, a port the operator does not have,
 * a graph without outputs, an unknown operator or a bad JSON document. `from` / `to` name the two ends
 * of the offending edge as `node(operator).port` (graph inputs as `input:<name>`) when there is one.
 */
export class GraphError extends GraphErrorBase {}

/** Why a backend operation failed (the `reason` of a {@link BackendError}). */
export type BackendErrorReason =
  | "library-missing"
  | "no-adapter"
  | "device-lost"
  | "out-of-memory"
  | "validation"
  | "map-failed"
  | "released"
  | "unsupported"
  | "internal";

/** The fields of a {@link BackendError}. */
export interface BackendErrorFields extends ErrorFields {
  /** The backend that failed: `cpu`, `wgpu`, `webgpu` or `dawn`. */
  readonly backend: string;
  /** What kind of failure it was. */
  readonly reason: BackendErrorReason;
}
/** @internal */
const BackendErrorBase: TaggedErrorClass<"BackendError", BackendErrorFields> = Data.TaggedError(
  "BackendError",
)<BackendErrorFields>;
/** A backend operation failed (device lost, mapping failed, wrong buffer, library missing, …). */
export class BackendError extends BackendErrorBase {}

/** The fields of a {@link KernelCompileError}. */
export interface KernelCompileErrorFields extends ErrorFields {
  /** The kernel's cache key (`Kernel.key`). */
  readonly kernel: string;
}
/** @internal */
const KernelCompileErrorBase: TaggedErrorClass<"KernelCompileError", KernelCompileErrorFields> = Data
  .TaggedError("KernelCompileError")<KernelCompileErrorFields>;
/** A kernel's WGSL (or SPIR-V) source failed to compile or to build a pipeline. */
export class KernelCompileError extends KernelCompileErrorBase {}

/** @internal */
const InputErrorBase: TaggedErrorClass<"InputError", ErrorFields> = Data.TaggedError("InputError")<
  ErrorFields
>;
/** Bad user input at the edges: files, CLI arguments, documents, model files. */
export class InputError extends InputErrorBase {}

/** Union of the errors a graph run can fail with. */
export type LongctxError =
  | ShapeError
  | ParamsError
  | GraphError
  | BackendError
  | KernelCompileError
  | InputError;
