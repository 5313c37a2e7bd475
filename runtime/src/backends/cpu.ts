/**
 * The `cpu` backend: a TypeScript reference implementation of the `Backend` contract, the oracle for
 * every kernel and the fallback where no GPU library is present.
 *
 * - Buffers are `ArrayBuffer`s (zero-filled), sizes rounded up to 4 bytes; upload/download are memcpy.
 * - `compile` records a kernel's key; a kernel needs a TypeScript body (`Kernel.cpu`) — WGSL is not run.
 * - `dispatch` runs the launches' `Kernel.cpu` bodies in order, on the calling thread, with the bound
 *   buffers' `ArrayBuffer`s; a kernel without a body fails with `BackendError` "unsupported".
 * - `timed` returns **wall-clock** milliseconds per launch (`performance.now()` around each body), not
 *   device timestamps: this backend has no device.
 * - The graph executor does not use dispatch on this backend by default: it runs operators' `cpu`
 *   references on host tensors (see `@longctx/graph` executor).
 * @module
 */
import { Effect } from "effect";
import {
  type Backend,
  BackendError,
  type BackendLimits,
  type DeviceBuffer,
  type DispatchTiming,
  type Gemm,
  type Kernel,
  type Launch,
} from "@longctx/graph";

/** Options of the cpu backend. */
export interface CpuBackendOptions {
  /**
   * Cap on live bytes (default 8 GiB): allocations past it fail with `out-of-memory`, as a GPU would,
   * so that plans can be tested against a budget.
   */
  readonly maxBytes?: number;
  /**
   * The GEMM kernel bodies and host-path operators use (`Backend.gemm`), e.g. OpenBLAS's `cblas_sgemm`
   * through `loadSgemm()` of the model package; default: none (operators fall back to their own loops).
   */
  readonly gemm?: Gemm;
}

const NAME = "cpu";

const err = (reason: BackendError["reason"], message: string, hint: string) =>
  new BackendError({ backend: NAME, reason, message, hint });

/**
 * Limits reported by the cpu backend. Buffer sizes: what one `ArrayBuffer` may hold here (2 GiB, the
 * largest size every supported runtime allocates); the compute limits mirror WebGPU's defaults so
 * kernel geometry chosen for the cpu backend is valid on GPUs too.
 */
const limits = (maxBytes: number): BackendLimits => ({
  maxBufferSize: Math.min(maxBytes, 2 ** 31),
  maxStorageBufferBindingSize: Math.min(maxBytes, 2 ** 31),
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBuffersPerShaderStage: 8,
});

/**
 * Make a cpu backend. Adapter name: `cpu (TypeScript, 1 thread)` (kernel bodies run on the calling
 * thread). Fails with `BackendError` ("validation") for a bad `maxBytes`.
 */
export const makeCpuBackend = (options: CpuBackendOptions = {}): Effect.Effect<Backend, BackendError> =>
  Effect.suspend(() => {
    const maxBytes = options.maxBytes ?? 8 * 2 ** 30;
    if (!Number.isFinite(maxBytes) || maxBytes <= 0) {
      return Effect.fail(
        err("validation", `maxBytes ${maxBytes} is not a positive number`, "pass bytes > 0"),
      );
    }
    const buffers = new Map<number, { readonly buf: DeviceBuffer; readonly data: ArrayBuffer }>();
    const compiled = new Set<string>();
    let nextId = 1;
    let liveBytes = 0;
    let closed = false;

    const lookup = (b: DeviceBuffer): Effect.Effect<ArrayBuffer, BackendError> => {
      const e = buffers.get(b.id);
      if (e && e.buf === b) return Effect.succeed(e.data);
      return Effect.fail(
        err(
          "released",
          `buffer ${b.id} "${b.label}" (${b.bytes} bytes) is released or belongs to another backend`,
          "keep buffers alive while they are in use, and use them only with the backend that made them",
        ),
      );
    };
    const range = (b: DeviceBuffer, offset: number, bytes: number, what: string) =>
      offset % 4 !== 0 || offset < 0 || bytes < 0 || offset + bytes > b.bytes
        ? Effect.fail(
          err(
            "validation",
            `${what} of ${bytes} bytes at offset ${offset} does not fit buffer "${b.label}" (${b.bytes} bytes)`,
            "offsets must be multiples of 4 and ranges inside the buffer",
          ),
        )
        : Effect.void;
    const notClosed = () =>
      closed
        ? Effect.fail(err("device-lost", "the cpu backend is closed", "make a new backend"))
        : Effect.void;

    const compile = (k: Kernel): Effect.Effect<void, BackendError> => {
      if (!k.cpu) {
        return Effect.fail(
          err(
            "unsupported",
            `kernel "${k.key}" has no TypeScript body (Kernel.cpu), so the cpu backend cannot run it`,
            "give the kernel a cpu body, or run it on a GPU backend",
          ),
        );
      }
      compiled.add(k.key);
      return Effect.void;
    };

    const host = options.gemm ? { gemm: options.gemm } : {};
    const backend: Backend = {
      kind: "cpu",
      ...(options.gemm ? { gemm: options.gemm } : {}),
      view: (buf) => lookup(buf),
      adapter: {
        name: options.gemm ? "cpu (TypeScript, GEMMs by the given BLAS)" : "cpu (TypeScript, 1 thread)",
        vendor: "longctx",
        driver: "TypeScript reference",
        api: "cpu",
      },
      features: new Set<string>(),
      limits: limits(maxBytes),
      allocate: (bytes, label = "buffer") =>
        Effect.gen(function* () {
          yield* notClosed();
          if (!Number.isInteger(bytes) || bytes < 0) {
            return yield* err(
              "validation",
              `cannot allocate ${bytes} bytes`,
              "sizes are non-negative integers",
            );
          }
          const size = Math.max(4, Math.ceil(bytes / 4) * 4);
          if (size > backend.limits.maxBufferSize || liveBytes + size > maxBytes) {
            return yield* err(
              "out-of-memory",
              `allocating ${size} bytes for "${label}" with ${liveBytes} live exceeds the cpu backend's ${maxBytes}-byte cap`,
              "release buffers, shrink the plan, or raise maxBytes",
            );
          }
          let data: ArrayBuffer;
          try {
            data = new ArrayBuffer(size);
          } catch (e) {
            return yield* err(
              "out-of-memory",
              `ArrayBuffer(${size}) failed: ${(e as Error).message}`,
              "use less memory",
            );
          }
          const buf: DeviceBuffer = { id: nextId++, bytes: size, label };
          buffers.set(buf.id, { buf, data });
          liveBytes += size;
          return buf;
        }),
      upload: (buf, data, offsetBytes = 0) =>
        Effect.gen(function* () {
          const dst = yield* lookup(buf);
          yield* range(buf, offsetBytes, data.byteLength, "upload");
          new Uint8Array(dst, offsetBytes, data.byteLength).set(
            new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
          );
        }),
      download: (buf, offsetBytes = 0, bytes) =>
        Effect.gen(function* () {
          const src = yield* lookup(buf);
          const n = bytes ?? buf.bytes - offsetBytes;
          yield* range(buf, offsetBytes, n, "download");
          return new Uint8Array(src.slice(offsetBytes, offsetBytes + n));
        }),
      compile,
      dispatch: (launches: readonly Launch[], options) =>
        Effect.gen(function* () {
          yield* notClosed();
          const perLaunchMs: number[] = [];
          for (const l of launches) {
            if (!compiled.has(l.kernel.key)) yield* compile(l.kernel);
            if (l.buffers.length !== l.kernel.bindings.length) {
              return yield* err(
                "validation",
                `kernel "${l.kernel.key}" has ${l.kernel.bindings.length} bindings, launch binds ${l.buffers.length} buffers`,
                "bind one buffer per binding, in order",
              );
            }
            const datas: ArrayBuffer[] = [];
            for (const b of l.buffers) datas.push(yield* lookup(b));
            const body = l.kernel.cpu!;
            const t0 = performance.now();
            yield* Effect.try({
              try: () => body(datas, l.workgroups, host),
              catch: (e) =>
                err(
                  "internal",
                  `kernel "${l.kernel.key}" cpu body threw: ${e instanceof Error ? e.message : String(e)}`,
                  "a bug in the kernel's TypeScript body or its launch geometry",
                ),
            });
            perLaunchMs.push(performance.now() - t0);
          }
          if (!options?.timed) return undefined;
          const timing: DispatchTiming = { totalMs: perLaunchMs.reduce((a, b) => a + b, 0), perLaunchMs };
          return timing;
        }),
      sync: () => notClosed(),
      release: (buf) => {
        const e = buffers.get(buf.id);
        if (e && e.buf === buf) {
          buffers.delete(buf.id);
          liveBytes -= e.buf.bytes;
        }
      },
      live: () => ({ buffers: buffers.size, bytes: liveBytes }),
      close: () =>
        Effect.sync(() => {
          buffers.clear();
          compiled.clear();
          liveBytes = 0;
          closed = true;
        }),
    };
    return Effect.succeed(backend);
  });
