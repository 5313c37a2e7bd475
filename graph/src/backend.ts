/**
 * The `Backend` contract: what the executor needs from a device. Read it like ggml's backend table —
 * each member is one line of purpose; optional members say so.
 *
 * Implementations live in `@longctx/runtime`: `wgpu` (wgpu-native through FFI, Deno and Bun), `webgpu`
 * (any standard `GPUDevice`), `dawn` (Dawn's Node-API addon from npm `webgpu`, with subgroup matrices) and
 * `cpu` (TypeScript reference). A kernel is data (`Kernel`): WGSL source
 * for GPU backends plus, optionally, a TypeScript body the cpu backend runs with the same bindings.
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import type { Effect } from "effect";
import type { BackendError, KernelCompileError } from "./errors.ts";

/**
 * Row-major `C = alpha · op(A) · op(B) + beta · C` over f32 arrays (BLAS `sgemm`'s shape): `m × n` result,
 * inner size `k`, leading dimensions in elements. The cpu backend passes one to kernel bodies and cpu
 * references (OpenBLAS through FFI in `@longctx/runtime`, else a TypeScript loop).
 */
export type Gemm = (
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: Float32Array,
  lda: number,
  b: Float32Array,
  ldb: number,
  beta: number,
  c: Float32Array,
  ldc: number,
) => void;

/** Which implementation a backend is. */
export type BackendKind = "cpu" | "wgpu" | "webgpu" | "dawn";

/** What a backend runs on (the adapter it reports to users). */
export interface AdapterInfo {
  /** e.g. "NVIDIA H200", "llvmpipe (LLVM 15.0.6, 256 bits)", "cpu (2 threads)". */
  readonly name: string;
  /** Vendor name as the adapter reports it ("nvidia", "mesa", "cpu"); may be empty. */
  readonly vendor: string;
  /** Driver description when the API reports one. */
  readonly driver: string;
  /** Graphics API underneath: "vulkan", "metal", "dx12", "gl", "cpu". */
  readonly api: string;
}

/** Limits the kernels generator must respect (bytes and counts as WebGPU defines them). */
export interface BackendLimits {
  /** Largest single allocation, in bytes. */
  readonly maxBufferSize: number;
  /** Largest storage-buffer binding a kernel may see, in bytes. */
  readonly maxStorageBufferBindingSize: number;
  /** Workgroup (shared) memory per workgroup, in bytes. */
  readonly maxComputeWorkgroupStorageSize: number;
  /** Most invocations (threads) in one workgroup. */
  readonly maxComputeInvocationsPerWorkgroup: number;
  /** Most workgroups along each of x, y, z in one launch. */
  readonly maxComputeWorkgroupsPerDimension: number;
  /** Most storage-buffer bindings one kernel may declare. */
  readonly maxStorageBuffersPerShaderStage: number;
}

/** An allocation on a backend. Opaque: only the backend that made it can use it. */
export interface DeviceBuffer {
  /** Unique per backend instance. */
  readonly id: number;
  /** Size in bytes (a multiple of 4). */
  readonly bytes: number;
  /** Debug label given at allocation (shown in backend errors and GPU debuggers). */
  readonly label: string;
}

/** How a kernel binding is accessed; binding `i` of group 0 is `bindings[i]`. */
export type BindingAccess = "read" | "read_write" | "uniform";

/**
 * A compute kernel as data. `key` identifies the specialisation (backends compile each key once).
 * `cpu`, when present, lets the cpu backend run the same launch: it receives the bound buffers as
 * `ArrayBuffer`s in binding order, the uniform bytes, and the workgroup count.
 */
export interface Kernel {
  /** Cache key: identifies the source and its specialisation (two kernels with one key must be identical). */
  readonly key: string;
  /** WGSL source of the compute shader. */
  readonly wgsl: string;
  /** Name of the `@compute` entry point in `wgsl`. */
  readonly entryPoint: string;
  /** Access of each binding of group 0, in binding order (a launch binds one buffer each). */
  readonly bindings: readonly BindingAccess[];
  /**
   * WGSL `enable` extensions the source needs; the backend checks its features first
   * (`f16` → `shader-f16`, `subgroups` → `subgroups`, `wgpu_cooperative_matrix` → the native
   * cooperative-matrix feature of wgpu-native, `chromium_experimental_subgroup_matrix` →
   * `chromium-experimental-subgroup-matrix`, Dawn's).
   */
  readonly enables?: readonly (
    | "f16"
    | "subgroups"
    | "wgpu_cooperative_matrix"
    | "chromium_experimental_subgroup_matrix"
  )[];
  /**
   * Optional TypeScript body for the cpu backend: gets the bound buffers' storage in binding order (uniforms
   * included), the launch's workgroup count and the host's GEMM, and writes its `read_write` buffers in
   * place.
   */
  readonly cpu?: (
    buffers: readonly ArrayBuffer[],
    workgroups: readonly [number, number, number],
    host?: { readonly gemm?: Gemm },
  ) => void;
}

/**
 * One kernel launch: buffers bound in order (uniform bindings take a `DeviceBuffer` too). Rule for GPU
 * backends: every allocation is a storage buffer, and every allocation of at most 64 KiB (and at most the
 * device's `maxUniformBufferBindingSize`) has uniform usage too, so such a small buffer can be bound to a
 * `"uniform"` binding (`var<uniform>` in WGSL); kernels bind larger buffers only as storage.
 */
export interface Launch {
  /** The kernel to run (compiled on first use when not compiled yet). */
  readonly kernel: Kernel;
  /** One buffer per entry of `kernel.bindings`, in order. */
  readonly buffers: readonly DeviceBuffer[];
  /** Workgroup count along x, y, z (each at most `maxComputeWorkgroupsPerDimension`). */
  readonly workgroups: readonly [number, number, number];
}

/** GPU time of a submitted sequence of launches, from timestamp queries (ms), one entry per launch. */
export interface DispatchTiming {
  /** GPU time from the first launch's start to the last one's end, in ms. */
  readonly totalMs: number;
  /** GPU time of each launch, in ms, in submission order. */
  readonly perLaunchMs: readonly number[];
}

/** The device contract. Every method that can fail returns an `Effect` with typed errors. */
export interface Backend {
  /** Which implementation this is. */
  readonly kind: BackendKind;
  /** The adapter in use. */
  readonly adapter: AdapterInfo;
  /** Feature names: WebGPU's (`shader-f16`, `timestamp-query`, `subgroups`) and native ones by name. */
  readonly features: ReadonlySet<string>;
  /** Device limits. */
  readonly limits: BackendLimits;
  /** Allocate `bytes` (rounded up to 4) of device memory. Fails with `out-of-memory` or `validation`. */
  allocate(bytes: number, label?: string): Effect.Effect<DeviceBuffer, BackendError>;
  /** Copy host bytes into a buffer at `offsetBytes` (multiple of 4). */
  upload(buf: DeviceBuffer, data: ArrayBufferView, offsetBytes?: number): Effect.Effect<void, BackendError>;
  /** Read `bytes` (default: all) back from `offsetBytes`; waits for queued work. */
  download(buf: DeviceBuffer, offsetBytes?: number, bytes?: number): Effect.Effect<Uint8Array, BackendError>;
  /** Compile a kernel once (cached by `kernel.key`); later dispatches reuse the pipeline. */
  compile(kernel: Kernel): Effect.Effect<void, KernelCompileError | BackendError>;
  /**
   * Submit launches in order (one command buffer on GPU backends). With `timed`, returns GPU times from
   * timestamp queries (optional: backends without `timestamp-query` fail with `unsupported`).
   */
  dispatch(
    launches: readonly Launch[],
    options?: { readonly timed?: boolean },
  ): Effect.Effect<DispatchTiming | undefined, KernelCompileError | BackendError>;
  /** Wait until all submitted work is done. */
  sync(): Effect.Effect<void, BackendError>;
  /** Free a buffer now. Releasing twice is a no-op. */
  release(buf: DeviceBuffer): void;
  /**
   * Optional, host-memory backends only (cpu): the buffer's storage itself, not a copy, so host-path
   * operators read and write it without transfers. GPU backends leave it out.
   */
  view?(buf: DeviceBuffer): Effect.Effect<ArrayBuffer, BackendError>;
  /** Optional: the GEMM host-path operators may use on this backend (the cpu backend's BLAS). */
  readonly gemm?: Gemm;
  /** Number of live buffers and their bytes: the executor's leak check reads this. */
  live(): { readonly buffers: number; readonly bytes: number };
  /** Release everything the backend holds (device, pipelines, buffers). */
  close(): Effect.Effect<void>;
}
