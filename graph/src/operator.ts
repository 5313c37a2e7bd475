/**
 * The Operator contract: every technique plugs in as operators of this shape.
 *
 * An operator is data: its ports (typed by dtype and named dims), an Effect Schema for its parameters,
 * shape inference, a CPU reference kernel (the oracle), optional GPU lowering to `Launch`es, and a cost
 * model the planner reads.
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import type { Effect, Schema } from "effect";
import type { Gemm, Kernel } from "./backend.ts";
import type { ShapeError } from "./errors.ts";
import type { HostTensor, TensorDesc, TensorType } from "./tensor.ts";

/**
 * An operator's kind: an open string, so a technique can bring a kind of its own without editing core code.
 * The planner matches a technique's `stages` against it and `densityScaled` names kinds whose cost scales
 * with the kept share of blocks. Well-known kinds of the design's catalog: `quantize`, `estimate`,
 * `select`, `sparse-attn`, `dense-attn`, `cache-attn`, `cluster`, `draft`, `verify`, `merge`, `encode`, `decode`,
 * `traceback`, `elementwise`, `matmul`, `norm`, `rope`, `embed`.
 */
export type OperatorKind = string;

/** Named ports: port name → tensor type. */
export type Ports = Readonly<Record<string, TensorType>>;

/** Concrete descriptions for each port of `P`. */
export type DescsOf<P extends Ports> = { readonly [K in keyof P]: TensorDesc<P[K]["dtype"], P[K]["dims"]> };

/** Host tensors for each port of `P`. */
export type HostOf<P extends Ports> = { readonly [K in keyof P]: HostTensor<P[K]["dtype"], P[K]["dims"]> };

/** What one run of an operator costs (the planner's input). */
export interface Cost {
  /** Floating-point (or integer multiply-add) operations, counting a multiply-add as 2. */
  readonly flops: number;
  /** Bytes read from device memory. */
  readonly bytesRead: number;
  /** Bytes written to device memory. */
  readonly bytesWritten: number;
  /** Scratch bytes needed besides inputs and outputs. */
  readonly workspaceBytes: number;
}

/**
 * Runtime scalars of a program run (e.g. `pos`, the tokens already in a KV cache before this step): values
 * that change per run without changing any shape, so a lowered program is reused as is. Non-negative
 * integers; an operator lists the names it reads in {@link Operator.scalars}.
 */
export type Scalars = Readonly<Record<string, number>>;

/** What a cpu reference receives besides parameters and inputs. */
export interface CpuContext {
  /** The run's scalars (those the operator declares in {@link Operator.scalars}). */
  readonly scalars: Scalars;
  /** A BLAS-shaped GEMM when the backend provides one (the cpu backend does), for fast references. */
  readonly gemm?: Gemm;
}

/** One launch of a lowering. */
export interface LoweredLaunch {
  /** The kernel to launch. */
  readonly kernel: Kernel;
  /** Bindings in order: `in:<port>`, `out:<port>` or `ws:<workspace>`. */
  readonly buffers: readonly string[];
  /** Workgroup count along x, y, z (for shapes fixed at lowering; see `dynamic`). */
  readonly workgroups: readonly [number, number, number];
  /** Bytes for a uniform binding, uploaded into `ws:<name>` before the launch, if any. */
  readonly uniforms?: Readonly<Record<string, Uint8Array>>;
  /**
   * Launch settings that depend on runtime scalars (see {@link Scalars}): uniform bytes (for workspaces
   * also named in `uniforms`, which give their size) and the workgroup count, recomputed before each run
   * of a lowered program. Only uniforms and workgroup counts may change: never buffers or kernels.
   */
  readonly dynamic?: (scalars: Scalars) => {
    readonly uniforms?: Readonly<Record<string, Uint8Array>>;
    readonly workgroups?: readonly [number, number, number];
  };
}

/**
 * A GPU lowering: workspace buffers to allocate (bytes) and launches whose buffers name ports
 * (`in:<port>`, `out:<port>`) or workspaces (`ws:<name>`).
 */
export interface GpuLowering {
  /** Scratch buffers by name → bytes, allocated by the program and bound as `ws:<name>`. */
  readonly workspaces: Readonly<Record<string, number>>;
  /** Kernel launches, run in order. */
  readonly launches: readonly LoweredLaunch[];
}

/** A valid example call of an operator (see {@link Operator.example}). */
export interface OperatorExample {
  /** Sizes of named dims (`clusters: 32`), overriding a harness's defaults. */
  readonly dims?: Readonly<Record<string, number>>;
  /** Runtime scalars of a valid call at those sizes (`{ pos: 500 }`). */
  readonly scalars?: Scalars;
  /**
   * Host inputs of a valid call, for ports whose valid contents random data cannot make (coded bitstreams and
   * their probability tables: `cachegen.decode`): given the harness's dim sizes (its defaults, overridden by
   * `dims`), returns tensors for some or all input ports; the harness synthesises the others as usual.
   */
  readonly inputs?: (dims: Readonly<Record<string, number>>) => Readonly<Record<string, HostTensor>>;
}

/** The operator contract. `P` parameters, `I` input ports, `O` output ports. */
export interface Operator<P, I extends Ports, O extends Ports> {
  /** Unique name, `<technique>.<kind>` (e.g. `sale.estimate`, `dense.attn`). */
  readonly name: string;
  /** Operator kind (`estimate`, `sparse-attn`, …): its tensor signature and pipeline stage. */
  readonly kind: OperatorKind;
  /** Paper and section it implements (docs and reports). */
  readonly reference: string;
  /** Parameter schema (decoding validates user input). */
  readonly params: Schema.Codec<P, unknown>;
  /** Input ports: name → tensor type (dtype and dim names). */
  readonly inputs: I;
  /** Output ports: name → tensor type (dtype and dim names). */
  readonly outputs: O;
  /** Output descriptions from input descriptions; fails with a `ShapeError` naming the bad port. */
  infer(params: P, inputs: DescsOf<I>): Effect.Effect<DescsOf<O>, ShapeError>;
  /**
   * Runtime scalars the operator reads (see {@link Scalars}), e.g. `["pos"]` for attention over a KV cache;
   * a program run must supply each of them.
   */
  readonly scalars?: readonly string[];
  /**
   * In-place outputs: output port → input port whose storage it is (e.g. a KV cache appended to). The
   * output is the same device buffer as the input (the memory planner never gives it another); the cpu
   * reference writes into that input's data and returns it. This is how graphs carry state.
   */
  readonly aliases?: Readonly<Record<string, string>>;
  /**
   * A valid example call for harnesses that synthesise inputs from dim names (the micro benchmarks): sizes of
   * dims this operator needs beyond the common ones (or that its domain constrains) and the runtime scalars
   * of a valid call at those sizes — e.g. `squeezed.select` needs a query position past its fixed context.
   */
  readonly example?: OperatorExample;
  /**
   * CPU reference kernel (float32 storage; float64 accumulation where it matters). `ctx` holds the run's
   * scalars and, on the cpu backend, a GEMM.
   */
  cpu(params: P, inputs: HostOf<I>, ctx?: CpuContext): HostOf<O>;
  /** GPU lowering for given shapes, absent when the operator is CPU-only for now. */
  gpu?(params: P, inputs: DescsOf<I>, features: ReadonlySet<string>): GpuLowering;
  /** Cost model as a function of shapes. */
  cost(params: P, inputs: DescsOf<I>): Cost;
}

/** Any operator (for registries and graphs). */
// deno-lint-ignore no-explicit-any
export type AnyOperator = Operator<any, Ports, Ports>;
