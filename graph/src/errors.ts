/**
 * Typed errors shared by every longctx package. Each carries a `hint` saying what to do about it.
 *
 * Errors are Effect tagged classes (`Data.TaggedError`), so they appear in `Effect<A, E>` signatures and
 * can be handled with `Effect.catchTag`.
 * @module
 */
import { Data } from "effect";

/** A tensor's shape or dtype does not fit what an operator or kernel expects. */
export class ShapeError extends Data.TaggedError("ShapeError")<{
  readonly message: string;
  readonly hint: string;
}> {}

/** Operator parameters failed their Effect Schema. */
export class ParamsError extends Data.TaggedError("ParamsError")<{
  readonly operator: string;
  readonly message: string;
  readonly hint: string;
}> {}

/**
 * A graph is malformed: a cycle, a dangling input, a mis-wired port, a port the operator does not have,
 * a graph without outputs, an unknown operator or a bad JSON document. `from` / `to` name the two ends
 * of the offending edge as `node(operator).port` (graph inputs as `input:<name>`) when there is one.
 */
export class GraphError extends Data.TaggedError("GraphError")<{
  readonly reason:
    | "cycle"
    | "dangling-input"
    | "type-mismatch"
    | "unknown-operator"
    | "bad-json"
    | "duplicate"
    | "unknown-port"
    | "no-outputs";
  readonly message: string;
  readonly hint: string;
  readonly from?: string;
  readonly to?: string;
}> {}

/** A backend operation failed (device lost, mapping failed, wrong buffer, library missing, …). */
export class BackendError extends Data.TaggedError("BackendError")<{
  readonly backend: string;
  readonly reason:
    | "library-missing"
    | "no-adapter"
    | "device-lost"
    | "out-of-memory"
    | "validation"
    | "map-failed"
    | "released"
    | "unsupported"
    | "internal";
  readonly message: string;
  readonly hint: string;
}> {}

/** A kernel's WGSL (or SPIR-V) source failed to compile or to build a pipeline. */
export class KernelCompileError extends Data.TaggedError("KernelCompileError")<{
  readonly kernel: string;
  readonly message: string;
  readonly hint: string;
}> {}

/** Bad user input at the edges: files, CLI arguments, documents, model files. */
export class InputError extends Data.TaggedError("InputError")<{
  readonly message: string;
  readonly hint: string;
}> {}

/** Union of the errors a graph run can fail with. */
export type LongctxError =
  | ShapeError
  | ParamsError
  | GraphError
  | BackendError
  | KernelCompileError
  | InputError;
