/**
 * The `webgpu` backend: the `Backend` contract over any standard `GPUDevice` — Deno's built-in
 * `navigator.gpu` (needs `--unstable-webgpu`), a browser, or a device the caller already has. Same
 * kernels (WGSL) as the `wgpu` FFI backend, so kernels are portable.
 *
 * - Pipelines are cached by `kernel.key` (explicit bind-group layouts from `kernel.bindings`).
 * - Shader errors (validation error scope) → `KernelCompileError`; allocation failures (out-of-memory
 *   scope, or a size beyond `maxBufferSize`) → `BackendError` `out-of-memory`; other validation errors →
 *   `validation`; `device.lost` → `device-lost` on every later call.
 * - `dispatch({ timed: true })` writes a timestamp pair around each launch's compute pass (feature
 *   `timestamp-query`, requested when the adapter has it) and returns GPU milliseconds.
 *
 * `webgpuBackendOver` builds the same backend over a device obtained elsewhere under another name: the
 * `dawn` backend (`dawn.ts`) is this code over Dawn's `GPUDevice`.
 * @module
 */
import { Effect } from "effect";
import { workgroupLimitViolation } from "../wgpu/wgsl_limits.ts";
import {
  type AdapterInfo,
  type Backend,
  BackendError,
  type BackendKind,
  type BackendLimits,
  type DeviceBuffer,
  type DispatchTiming,
  type Kernel,
  KernelCompileError,
  type Launch,
} from "@longctx/graph";

/** Options of `makeWebgpuBackend`. */
export interface WebgpuBackendOptions {
  /** Use this device (not destroyed by `close`); default: request one from `navigator.gpu`. */
  readonly device?: GPUDevice;
  /** Adapter preference when requesting one. */
  readonly powerPreference?: GPUPowerPreference;
}

// GPUBufferUsage / GPUMapMode / GPUShaderStage bits (numeric so nothing global is needed at import time).
const MAP_READ = 1, COPY_SRC = 4, COPY_DST = 8, UNIFORM = 64, STORAGE = 128, QUERY_RESOLVE = 512;
const STAGE_COMPUTE = 4;

const NAME = "webgpu";

const errOf = (backend: string) => (reason: BackendError["reason"], message: string, hint: string) =>
  new BackendError({ backend, reason, message, hint });
const err = errOf(NAME);

/** Features requested from the adapter when present. */
const WANTED: readonly GPUFeatureName[] = ["shader-f16", "timestamp-query", "subgroups" as GPUFeatureName];

/** Limits raised to the adapter's maximum (kernels use large workgroup tiles and big buffers). */
const RAISED = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxStorageBuffersPerShaderStage",
] as const;

interface Compiled {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
}

/** Map a kernel's `enables` to the WebGPU feature each needs (undefined: not available in WebGPU). */
const featureOf = (e: NonNullable<Kernel["enables"]>[number]): string | undefined =>
  e === "f16"
    ? "shader-f16"
    : e === "subgroups"
    ? "subgroups"
    : e === "chromium_experimental_subgroup_matrix"
    ? "chromium-experimental-subgroup-matrix"
    : undefined;

const requestDevice = async (
  o: WebgpuBackendOptions,
): Promise<{ device: GPUDevice; info: Partial<GPUAdapterInfo>; owned: boolean }> => {
  if (o.device) {
    const info = (o.device as GPUDevice & { adapterInfo?: GPUAdapterInfo }).adapterInfo ?? {};
    return { device: o.device, info, owned: false };
  }
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) {
    throw err(
      "library-missing",
      "navigator.gpu is not available in this runtime",
      "run Deno with --unstable-webgpu (set in deno.json), use a browser, or choose the wgpu or cpu backend",
    );
  }
  const adapter = await gpu.requestAdapter({ powerPreference: o.powerPreference });
  if (!adapter) {
    throw err(
      "no-adapter",
      "navigator.gpu.requestAdapter() returned null",
      "no GPU (or Vulkan ICD) is visible",
    );
  }
  const requiredFeatures = WANTED.filter((f) => adapter.features.has(f));
  const requiredLimits: Record<string, number> = {};
  for (const k of RAISED) {
    const v = (adapter.limits as unknown as Record<string, number>)[k];
    if (typeof v === "number") requiredLimits[k] = v;
  }
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  return { device, info: adapter.info ?? {}, owned: true };
};

/**
 * Create a `webgpu` backend. Fails with `BackendError` `library-missing` (no `navigator.gpu`),
 * `no-adapter`, or `internal` (device request rejected).
 */
export const makeWebgpuBackend = (options: WebgpuBackendOptions = {}): Effect.Effect<Backend, BackendError> =>
  Effect.tryPromise({
    try: async () => build(await requestDevice(options)),
    catch: (e) =>
      e instanceof BackendError ? e : err("internal", String(e), "the adapter refused the device request"),
  });

/** What distinguishes a backend built by `webgpuBackendOver` from the plain `webgpu` one. */
export interface WebgpuFlavour {
  /** Reported `kind` (and the `backend` of its errors). */
  readonly kind: BackendKind;
  /** Reported `adapter.api`. */
  readonly api: string;
  /** Feature names reported besides `device.features` (e.g. Dawn's subgroup-matrix configurations). */
  readonly extraFeatures?: readonly string[];
}

/**
 * The `webgpu` backend's implementation over an existing device, reported as `flavour.kind`. `owned`: the
 * backend destroys the device on `close`.
 */
export const webgpuBackendOver = (
  device: GPUDevice,
  info: Partial<GPUAdapterInfo>,
  owned: boolean,
  flavour: WebgpuFlavour,
): Backend => build({ device, info, owned }, flavour);

const build = (
  { device, info, owned }: { device: GPUDevice; info: Partial<GPUAdapterInfo>; owned: boolean },
  flavour: WebgpuFlavour = { kind: "webgpu", api: "webgpu" },
) => {
  const err = errOf(flavour.kind);
  let lost: GPUDeviceLostInfo | undefined;
  let closed = false;
  device.lost.then((l) => (lost = l));
  const buffers = new Map<number, { gpu: GPUBuffer; bytes: number }>();
  const pipelines = new Map<string, Compiled>();
  let nextId = 1;
  let liveBytes = 0;
  const features = new Set<string>([
    ...device.features as Iterable<string>,
    ...(flavour.extraFeatures ?? []),
  ]);
  const lim = device.limits;
  const limits: BackendLimits = {
    maxBufferSize: lim.maxBufferSize,
    maxStorageBufferBindingSize: lim.maxStorageBufferBindingSize,
    maxComputeWorkgroupStorageSize: lim.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: lim.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupsPerDimension: lim.maxComputeWorkgroupsPerDimension,
    maxStorageBuffersPerShaderStage: lim.maxStorageBuffersPerShaderStage,
  };
  const adapter: AdapterInfo = {
    name: info.description || info.device || "unknown WebGPU adapter",
    vendor: info.vendor || "unknown",
    driver: info.architecture || "",
    api: flavour.api,
  };

  /** Fail fast when the device is gone. */
  const alive = () => {
    if (lost || closed) {
      throw err(
        "device-lost",
        `device lost: ${lost ? `${lost.reason} ${lost.message}` : "backend closed"}`,
        "create a new backend (the device was destroyed, reset or the backend was closed)",
      );
    }
  };

  /** Run `f` inside validation + out-of-memory error scopes and throw the first error as a BackendError. */
  const scoped = async <A>(what: string, f: () => A): Promise<A> => {
    alive();
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    let out: A | undefined;
    let thrown: unknown;
    try {
      out = f();
    } catch (e) {
      thrown = e;
    }
    const v = await device.popErrorScope();
    const m = await device.popErrorScope();
    if (m) throw err("out-of-memory", `${what}: ${m.message}`, "free buffers or use smaller sizes");
    if (v) throw err("validation", `${what}: ${v.message}`, "check sizes, offsets and bindings");
    if (thrown !== undefined) throw thrown;
    return out as A;
  };

  const run = <A, E extends BackendError | KernelCompileError = BackendError>(
    f: () => Promise<A>,
  ): Effect.Effect<A, E> =>
    Effect.tryPromise({
      try: f,
      catch: (e) =>
        (e instanceof BackendError || e instanceof KernelCompileError
          ? e
          : lost
          ? err("device-lost", `device lost: ${lost.message}`, "create a new backend")
          : err("internal", String(e), "unexpected WebGPU exception")) as E,
    });

  const get = (buf: DeviceBuffer): { gpu: GPUBuffer; bytes: number } => {
    const b = buffers.get(buf.id);
    if (!b) {
      throw err(
        "released",
        `buffer ${buf.id} (${buf.label}) is released or foreign`,
        "allocate a new buffer",
      );
    }
    return b;
  };

  const compileNow = async (kernel: Kernel): Promise<Compiled> => {
    const hit = pipelines.get(kernel.key);
    if (hit) return hit;
    alive();
    const storageBindings = kernel.bindings.filter((b) => b !== "uniform").length;
    const tooBig = storageBindings > lim.maxStorageBuffersPerShaderStage
      ? `kernel ${kernel.key} binds ${storageBindings} storage buffers, more than maxStorageBuffersPerShaderStage ${lim.maxStorageBuffersPerShaderStage}`
      : workgroupLimitViolation(kernel.key, kernel.wgsl, kernel.entryPoint, lim);
    if (tooBig) {
      throw new KernelCompileError({
        kernel: kernel.key,
        message: tooBig,
        hint: "pick a kernel variant (tiles, bindings) within backend.limits for this device",
      });
    }
    for (const e of kernel.enables ?? []) {
      const f = featureOf(e);
      if (!f || !features.has(f)) {
        throw err(
          "unsupported",
          `kernel ${kernel.key} needs WGSL extension '${e}' (${f ?? "not in standard WebGPU"}), absent here`,
          e === "wgpu_cooperative_matrix"
            ? "cooperative matrices are wgpu-native only: use the wgpu backend"
            : e === "chromium_experimental_subgroup_matrix"
            ? "subgroup matrices are Dawn's: use the dawn backend on an adapter that lists subgroup-matrix configs"
            : `pick a kernel variant without '${e}' or an adapter with the feature`,
        );
      }
    }
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ code: kernel.wgsl, label: kernel.key });
    const layout = device.createBindGroupLayout({
      label: kernel.key,
      entries: kernel.bindings.map((a, i) => ({
        binding: i,
        visibility: STAGE_COMPUTE,
        buffer: { type: a === "read" ? "read-only-storage" : a === "read_write" ? "storage" : "uniform" },
      })),
    });
    const pipeline = device.createComputePipeline({
      label: kernel.key,
      layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: kernel.entryPoint },
    });
    const v = await device.popErrorScope();
    if (v) {
      throw new KernelCompileError({
        kernel: kernel.key,
        message: v.message,
        hint: "fix the generated WGSL (the message quotes the line); check the device limits it needs",
      });
    }
    const c = { pipeline, layout };
    pipelines.set(kernel.key, c);
    return c;
  };

  const readBack = async (src: GPUBuffer, offset: number, bytes: number): Promise<Uint8Array> => {
    const staging = await scoped(
      "download",
      () => device.createBuffer({ size: Math.max(4, bytes), usage: MAP_READ | COPY_DST, label: "staging" }),
    );
    try {
      await scoped("download", () => {
        const enc = device.createCommandEncoder();
        enc.copyBufferToBuffer(src, offset, staging, 0, bytes);
        device.queue.submit([enc.finish()]);
      });
      try {
        await staging.mapAsync(1);
      } catch (e) {
        alive();
        throw err("map-failed", `mapAsync failed: ${e}`, "the device may be lost or the buffer busy");
      }
      const out = new Uint8Array(bytes);
      out.set(new Uint8Array(staging.getMappedRange(0, bytes)));
      staging.unmap();
      return out;
    } finally {
      staging.destroy();
    }
  };

  const backend: Backend = {
    kind: flavour.kind,
    adapter,
    features,
    limits,

    allocate: (bytes, label = "buffer") =>
      run(async () => {
        alive();
        if (!Number.isFinite(bytes) || bytes < 0) {
          throw err("validation", `allocate(${bytes}): not a byte count`, "pass a non-negative integer");
        }
        const size = Math.max(4, Math.ceil(bytes / 4) * 4);
        if (size > limits.maxBufferSize) {
          throw err(
            "out-of-memory",
            `allocate(${bytes}) exceeds maxBufferSize ${limits.maxBufferSize}`,
            "split the tensor or use a device with a larger maxBufferSize",
          );
        }
        if (size > limits.maxStorageBufferBindingSize) {
          throw err(
            "out-of-memory",
            `allocate(${bytes}) "${label}" exceeds maxStorageBufferBindingSize ${limits.maxStorageBufferBindingSize} (kernels bind whole buffers)`,
            "split the tensor (fewer tokens or heads per launch) so each buffer fits backend.limits.maxStorageBufferBindingSize",
          );
        }
        const gpu = await scoped(`allocate(${bytes}, ${label})`, () =>
          device.createBuffer({ size, usage: STORAGE | UNIFORM | COPY_SRC | COPY_DST, label }));
        const id = nextId++;
        buffers.set(id, { gpu, bytes: size });
        liveBytes += size;
        return { id, bytes: size, label };
      }),

    upload: (buf, data, offsetBytes = 0) =>
      run(async () => {
        alive();
        const b = get(buf);
        const n = data.byteLength;
        if (offsetBytes % 4 || offsetBytes < 0 || offsetBytes + Math.ceil(n / 4) * 4 > b.bytes) {
          throw err(
            "validation",
            `upload of ${n} bytes at ${offsetBytes} into a ${b.bytes}-byte buffer`,
            "offset must be a multiple of 4 and the data must fit",
          );
        }
        let bytes = new Uint8Array(data.buffer, data.byteOffset, n);
        if (n % 4) {
          const padded = new Uint8Array(Math.ceil(n / 4) * 4);
          padded.set(bytes);
          bytes = padded;
        }
        await scoped(
          "upload",
          // (`Uint8Array<ArrayBuffer>`: Deno's own WebGPU types take no SharedArrayBuffer view.)
          () =>
            device.queue.writeBuffer(
              b.gpu,
              offsetBytes,
              bytes as Uint8Array<ArrayBuffer>,
              0,
              bytes.byteLength,
            ),
        );
      }),

    download: (buf, offsetBytes = 0, bytes) =>
      run(async () => {
        alive();
        const b = get(buf);
        const n = bytes ?? b.bytes - offsetBytes;
        if (offsetBytes % 4 || n % 4 || offsetBytes < 0 || n < 0 || offsetBytes + n > b.bytes) {
          throw err(
            "validation",
            `download of ${n} bytes at ${offsetBytes} from a ${b.bytes}-byte buffer`,
            "offset and size must be multiples of 4 within the buffer",
          );
        }
        if (n === 0) return new Uint8Array(0);
        return await readBack(b.gpu, offsetBytes, n);
      }),

    compile: (kernel) =>
      run<void, KernelCompileError | BackendError>(async () => void (await compileNow(kernel))),

    dispatch: (launches, options = {}) =>
      run<DispatchTiming | undefined, KernelCompileError | BackendError>(async () => {
        alive();
        const timed = options.timed ?? false;
        if (timed && !features.has("timestamp-query")) {
          throw err(
            "unsupported",
            "timed dispatch needs 'timestamp-query'",
            "dispatch untimed on this adapter",
          );
        }
        if (timed && launches.length * 2 > 4096) {
          throw err("validation", `${launches.length} timed launches > 2048`, "split into smaller batches");
        }
        const compiled: Compiled[] = [];
        for (const l of launches) compiled.push(await compileNow(l.kernel));
        const groups = launches.map((l: Launch, i) => {
          if (l.buffers.length !== l.kernel.bindings.length) {
            throw err(
              "validation",
              `kernel ${l.kernel.key} has ${l.kernel.bindings.length} bindings, launch gives ${l.buffers.length}`,
              "bind one buffer per kernel binding, in order",
            );
          }
          const max = limits.maxComputeWorkgroupsPerDimension;
          if (l.workgroups.some((w) => !Number.isInteger(w) || w < 0 || w > max)) {
            throw err(
              "validation",
              `workgroups [${l.workgroups}] out of range (max ${max})`,
              "split the launch",
            );
          }
          l.kernel.bindings.forEach((access, j) => {
            const b = l.buffers[j];
            const max = access === "uniform"
              ? lim.maxUniformBufferBindingSize
              : lim.maxStorageBufferBindingSize;
            if (b.bytes > max) {
              throw err(
                "validation",
                `kernel ${l.kernel.key} binding ${j} (${access}): buffer "${b.label}" has ${b.bytes} bytes, more than the binding limit ${max}`,
                "bind a smaller buffer (kernels bind large tensors only as storage)",
              );
            }
          });
          return device.createBindGroup({
            layout: compiled[i].layout,
            entries: l.buffers.map((b, j) => ({ binding: j, resource: { buffer: get(b).gpu } })),
          });
        });
        let querySet: GPUQuerySet | undefined;
        let resolve: GPUBuffer | undefined;
        const n = launches.length;
        await scoped("dispatch", () => {
          const enc = device.createCommandEncoder();
          if (timed && n > 0) {
            querySet = device.createQuerySet({ type: "timestamp", count: 2 * n });
            resolve = device.createBuffer({ size: 16 * n, usage: QUERY_RESOLVE | COPY_SRC });
            launches.forEach((l, i) => {
              const pass = enc.beginComputePass({
                timestampWrites: {
                  querySet: querySet!,
                  beginningOfPassWriteIndex: 2 * i,
                  endOfPassWriteIndex: 2 * i + 1,
                },
              });
              pass.setPipeline(compiled[i].pipeline);
              pass.setBindGroup(0, groups[i]);
              pass.dispatchWorkgroups(...l.workgroups);
              pass.end();
            });
            enc.resolveQuerySet(querySet, 0, 2 * n, resolve, 0);
          } else {
            const pass = enc.beginComputePass();
            launches.forEach((l, i) => {
              pass.setPipeline(compiled[i].pipeline);
              pass.setBindGroup(0, groups[i]);
              pass.dispatchWorkgroups(...l.workgroups);
            });
            pass.end();
          }
          device.queue.submit([enc.finish()]);
        });
        if (!timed) return undefined;
        if (n === 0) return { totalMs: 0, perLaunchMs: [] };
        try {
          const raw = await readBack(resolve!, 0, 16 * n);
          const t = new BigUint64Array(raw.buffer, 0, 2 * n);
          const ms = (a: bigint, b: bigint) => Number(b - a) / 1e6;
          const perLaunchMs = Array.from({ length: n }, (_, i) => ms(t[2 * i], t[2 * i + 1]));
          return { totalMs: ms(t[0], t[2 * n - 1]), perLaunchMs };
        } finally {
          querySet?.destroy();
          resolve?.destroy();
        }
      }),

    sync: () =>
      run(async () => {
        alive();
        await device.queue.onSubmittedWorkDone();
        alive();
      }),

    release: (buf) => {
      const b = buffers.get(buf.id);
      if (!b) return;
      buffers.delete(buf.id);
      liveBytes -= b.bytes;
      b.gpu.destroy();
    },

    live: () => ({ buffers: buffers.size, bytes: liveBytes }),

    close: () =>
      Effect.sync(() => {
        if (closed) return;
        for (const b of buffers.values()) b.gpu.destroy();
        buffers.clear();
        liveBytes = 0;
        pipelines.clear();
        closed = true;
        if (owned) device.destroy();
      }),
  };
  return backend;
};
