/**
 * The `wgpu` backend: wgpu-native through FFI (`Deno.dlopen` under Deno, `bun:ffi` under Bun), behind the
 * `Backend` contract of `@longctx/graph`.
 *
 * - Buffers: every allocation is `STORAGE | COPY_SRC | COPY_DST`, plus `UNIFORM` when it is at most
 *   `min(64 KiB, maxUniformBufferBindingSize)` bytes — so a small buffer can be bound to a `"uniform"`
 *   binding (`var<uniform>` in WGSL) and a large one only to storage bindings.
 * - Kernels: compiled once per `kernel.key` into a compute pipeline with an explicit layout built from
 *   `kernel.bindings` (group 0: `read` → read-only storage, `read_write` → storage, `uniform` → uniform),
 *   inside error scopes, so bad WGSL is a `KernelCompileError` carrying the compiler's message.
 * - Dispatch: one command buffer per call; untimed launches share one compute pass, timed launches get a
 *   pass each with `timestampWrites` (begin/end), resolved and read back, converted with the queue's
 *   timestamp period to milliseconds.
 * - Errors: the device-lost and uncaptured-error callbacks (set in the device descriptor) are turned into
 *   `BackendError`s (`device-lost`, `validation`, `out-of-memory`, `internal`) on the next operation.
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Effect } from "effect";
import { tmpdir } from "node:os";
import process from "node:process";
import {
  type AdapterInfo,
  type Backend,
  BackendError,
  type BackendLimits,
  type BindingAccess,
  type DeviceBuffer,
  type DispatchTiming,
  type Kernel,
  KernelCompileError,
  type Launch,
} from "@longctx/graph";
import { enums, flags } from "../wgpu/ffi_generated.ts";
import { Arena } from "../wgpu/structs.ts";
import { WgpuDevice, WgpuFailure } from "../wgpu/native.ts";
import { cacheDir, installHint, wgpuLibPath } from "../paths.ts";
import type { Ptr } from "../wgpu/ffi.ts";
import { bindingMinSizes, workgroupLimitViolation } from "../wgpu/wgsl_limits.ts";

/** Options of `makeWgpuBackend`. */
export interface WgpuBackendOptions {
  /** libwgpu_native path; default `wgpuLibPath()` (env `LONGCTX_WGPU_LIB`, else `.cache/wgpu/`). */
  readonly libPath?: string;
  /** Prefer a low-power adapter (default: high performance). */
  readonly lowPower?: boolean;
  /**
   * Device limits to request instead of the adapter's own (WGPULimits names, e.g. `maxStorageBufferBindingSize`),
   * e.g. lower ones to test a smaller device. A request beyond the adapter fails with `unsupported`.
   */
  readonly limits?: Readonly<Record<string, number>>;
}

/** The `wgpu` backend plus native facts and a test hook. */
export interface WgpuBackend extends Backend {
  /** Always `"wgpu"`. */
  readonly kind: "wgpu";
  /** wgpu-native version ("29.0.1.1"), adapter features (superset of `features`), ns per timestamp tick. */
  readonly native: {
    readonly version: string;
    readonly adapterFeatures: ReadonlySet<string>;
    readonly timestampPeriodNs: number;
    readonly limits: Readonly<Record<string, number>>;
  };
  /**
   * Bind groups held in the dispatch cache (one per distinct kernel and buffer list dispatched; dropped when a
   * buffer they bind is released, all dropped past 8192 or on `close`). For tests and diagnostics.
   */
  cachedBindGroups(): number;
  /**
   * Compile a SPIR-V compute shader (`spirv`: 32-bit words) into the pipeline cache under `key`; returns a
   * `Kernel` (with empty `wgsl`) that `dispatch` accepts. `mode`: `"naga"` (default) goes through
   * `WGPUShaderSourceSPIRV` — parsed and validated by naga; `"passthrough"` uses
   * `wgpuDeviceCreateShaderModuleSpirV`, which hands the words to the driver unchecked (needed for
   * extensions naga cannot parse, e.g. `SPV_KHR_cooperative_matrix`) and needs the `passthrough-shaders`
   * feature, which wgpu-native 29.0.1.1 does not expose (→ `BackendError` `unsupported`).
   * Errors: `KernelCompileError` (invalid SPIR-V), `BackendError`.
   */
  compileSpirv(
    key: string,
    spirv: Uint32Array,
    entryPoint: string,
    bindings: readonly BindingAccess[],
    mode?: "naga" | "passthrough",
  ): Effect.Effect<Kernel, KernelCompileError | BackendError>;
  /** Testing: destroy the device (`wgpuDeviceDestroy`); later operations fail with `device-lost`. */
  loseDevice(): void;
}

const HINTS: Record<string, string> = {
  "no-adapter":
    "install a Vulkan driver: `apt-get install mesa-vulkan-drivers` (lavapipe, CPU) or your GPU's driver; or use the cpu backend",
  "device-lost": "the GPU device was lost or destroyed; create a new backend",
  "out-of-memory": "allocate less (see backend.limits.maxBufferSize) or release buffers first",
  validation: "a WebGPU validation rule was broken; the message names the call",
  "map-failed": "reading back failed; check the device is alive and the buffer was not released",
  unsupported: "this adapter lacks the feature; check backend.features",
  internal: "wgpu-native reported an internal error",
  released: "the buffer was released; allocate a new one",
};

const fail = (reason: BackendError["reason"], message: string) =>
  new BackendError({
    backend: "wgpu",
    reason,
    message,
    hint: reason === "library-missing"
      ? `${installHint()} (installs wgpu-native into ${cacheDir()}/wgpu), or set LONGCTX_WGPU_LIB`
      : HINTS[reason] ?? "",
  });

const toBackendError = (e: unknown): BackendError => {
  if (e instanceof BackendError) return e;
  if (e instanceof WgpuFailure) return fail(e.reason === "compile" ? "validation" : e.reason, e.message);
  return fail("internal", String((e as Error)?.stack ?? e));
};

/** Cached bind groups at most (then the cache is emptied); a model forward uses a few hundred. */
const BIND_GROUP_CACHE_MAX = 8192;

interface BufRec {
  readonly handle: Ptr;
  readonly desc: DeviceBuffer;
}
interface Compiled {
  readonly module: Ptr;
  readonly bgl: Ptr;
  readonly layout: Ptr;
  readonly pipeline: Ptr;
}

const enableFeature = {
  f16: "shader-f16",
  subgroups: "subgroups",
  wgpu_cooperative_matrix: "cooperative-matrix",
  chromium_experimental_subgroup_matrix: "chromium-experimental-subgroup-matrix",
};

/**
 * Mesa's Vulkan drivers print "error: XDG_RUNTIME_DIR is invalid or not set" to stderr when it is unset (a
 * script outside a login session, CI); compute needs no runtime dir, so give them the temporary folder. Deno's
 * `process.env` writes the C environment the driver reads; Bun's does not, so there libc's `setenv` is called.
 */
const giveRuntimeDir = async (): Promise<void> => {
  if (process.env.XDG_RUNTIME_DIR) return;
  const dir = tmpdir();
  process.env.XDG_RUNTIME_DIR = dir;
  if (!("Bun" in globalThis) || process.platform !== "linux") return;
  try {
    // deno-lint-ignore no-explicit-any
    const ffi: any = await import("bun:ffi" as string);
    const libc = ffi.dlopen("libc.so.6", { setenv: { args: ["ptr", "ptr", "i32"], returns: "i32" } });
    const [name, value] = ["XDG_RUNTIME_DIR", dir].map((t) => new TextEncoder().encode(`${t}\0`));
    libc.symbols.setenv(ffi.ptr(name), ffi.ptr(value), 0);
    libc.close();
  } catch { /* only a warning is at stake */ }
};

/**
 * Open the wgpu backend: load libwgpu_native, pick the high-performance adapter, create a device with
 * the adapter's limits and the features in `WANTED_FEATURES` it has (timestamp queries, shader-f16,
 * subgroups, cooperative matrix, immediates, …).
 *
 * Fails with `BackendError` reason `library-missing` (library not found or not loadable), `no-adapter` (no
 * Vulkan/Metal/DX12/GL adapter at all) or `unsupported` (the adapter refused the device: limits or features).
 */
export const makeWgpuBackend = (options: WgpuBackendOptions = {}): Effect.Effect<WgpuBackend, BackendError> =>
  Effect.tryPromise({
    try: async () => {
      await giveRuntimeDir();
      return await WgpuDevice.open({
        libPath: options.libPath ?? wgpuLibPath(),
        lowPower: options.lowPower,
        limits: options.limits,
      });
    },
    catch: (e) =>
      e instanceof WgpuFailure && e.reason === "unsupported" && e.message.startsWith("device request refused")
        ? new BackendError({
          backend: "wgpu",
          reason: "unsupported",
          message: e.message,
          hint:
            "the adapter cannot give the requested limits or features (the message names them): request " +
            "less (WgpuBackendOptions.limits) or use a larger device; the driver itself is installed",
        })
        : toBackendError(e),
  }).pipe(Effect.map(build));

const build = (dev: WgpuDevice): WgpuBackend => {
  const c = dev.lib.call;
  const L = dev.limits;
  const uniformMax = Math.min(65536, L.maxUniformBufferBindingSize);
  const buffers = new Map<number, BufRec>();
  const pipelines = new Map<string, Compiled>();
  const minSizes = new Map<string, Map<number, number>>();
  const minSizesOf = (k: Kernel) => {
    let m = minSizes.get(k.key);
    if (!m) minSizes.set(k.key, m = k.wgsl === "" ? new Map() : bindingMinSizes(k.wgsl));
    return m;
  };
  // Bind groups, cached per (kernel, buffer ids): a model's forward re-dispatches the same kernels on the same
  // buffers every call, and creating a bind group costs wgpu-native validation and tracking on every launch.
  // Buffer ids are never reused, so a key never refers to a different buffer; releasing a buffer drops (and
  // releases) the groups that name it. The cache is emptied when it passes BIND_GROUP_CACHE_MAX entries.
  const bindGroups = new Map<string, { readonly group: Ptr; readonly ids: readonly number[] }>();
  const groupsOfBuffer = new Map<number, Set<string>>();
  const dropGroups = (keys: Iterable<string>) => {
    for (const k of [...keys]) {
      const e = bindGroups.get(k);
      if (e === undefined) continue;
      bindGroups.delete(k);
      for (const id of e.ids) groupsOfBuffer.get(id)?.delete(k);
      c.wgpuBindGroupRelease(e.group);
    }
  };
  const clearGroups = () => {
    dropGroups([...bindGroups.keys()]);
    groupsOfBuffer.clear();
  };
  let nextId = 1;
  let liveBytes = 0;
  let closed = false;

  const guard = <A>(f: () => A): Effect.Effect<A, BackendError> =>
    Effect.try({
      try: () => {
        if (closed) throw fail("device-lost", "the backend is closed");
        dev.check();
        const v = f();
        dev.check();
        return v;
      },
      catch: toBackendError,
    });

  const rec = (b: DeviceBuffer): BufRec => {
    const r = buffers.get(b.id);
    if (!r || r.desc !== b) {
      throw fail("released", `buffer #${b.id} "${b.label}" was released or belongs to another backend`);
    }
    return r;
  };

  const adapter: AdapterInfo = {
    name: dev.info.device || dev.info.vendor,
    vendor: dev.info.vendor,
    driver: dev.info.description,
    api: dev.info.backendType.toLowerCase(),
  };
  const limits: BackendLimits = {
    maxBufferSize: L.maxBufferSize,
    maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
    maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
    maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupsPerDimension: L.maxComputeWorkgroupsPerDimension,
    maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
  };

  const destroyBuffer = (h: Ptr) => {
    c.wgpuBufferDestroy(h);
    c.wgpuBufferRelease(h);
  };

  // Limits wgpu-native either does not check (workgroup memory on lavapipe) or reports without the numbers.
  const checkKernelLimits = (kernel: Kernel) => {
    const storage = kernel.bindings.filter((b) => b !== "uniform").length;
    const uniform = kernel.bindings.length - storage;
    const tooMany = (what: string, n: number, limit: string, max: number) =>
      new KernelCompileError({
        kernel: kernel.key,
        message: `kernel ${kernel.key} binds ${n} ${what}, more than ${adapter.name}'s ${limit} ${max}`,
        hint: "split the kernel into launches that bind fewer buffers, or pack tensors into one buffer",
      });
    if (storage > L.maxStorageBuffersPerShaderStage) {
      throw tooMany(
        "storage buffers",
        storage,
        "maxStorageBuffersPerShaderStage",
        L.maxStorageBuffersPerShaderStage,
      );
    }
    if (uniform > L.maxUniformBuffersPerShaderStage) {
      throw tooMany(
        "uniform buffers",
        uniform,
        "maxUniformBuffersPerShaderStage",
        L.maxUniformBuffersPerShaderStage,
      );
    }
    if (kernel.bindings.length > L.maxBindingsPerBindGroup) {
      throw tooMany("bindings", kernel.bindings.length, "maxBindingsPerBindGroup", L.maxBindingsPerBindGroup);
    }
    if (kernel.wgsl !== "") {
      const v = workgroupLimitViolation(kernel.key, kernel.wgsl, kernel.entryPoint, L as never);
      if (v) {
        throw new KernelCompileError({
          kernel: kernel.key,
          message: v,
          hint:
            "pick smaller tiles for this device (e.g. the operator's workgroupMemory parameter = backend.limits.maxComputeWorkgroupStorageSize)",
        });
      }
    }
  };

  const compileNow = (kernel: Kernel, spirv?: { words: Uint32Array; passthrough: boolean }): Compiled => {
    const hit = pipelines.get(kernel.key);
    if (hit) return hit;
    if (!spirv && kernel.wgsl === "") {
      throw fail("validation", `kernel ${kernel.key} has no WGSL and no compiled SPIR-V pipeline`);
    }
    for (const e of kernel.enables ?? []) {
      const f = enableFeature[e];
      if (!dev.features.has(f)) {
        throw fail("unsupported", `kernel ${kernel.key} needs "${f}", which ${adapter.name} lacks`);
      }
    }
    checkKernelLimits(kernel);
    const arena = new Arena(dev.ffi);
    const made: { -readonly [K in keyof Compiled]?: Compiled[K] } = {};
    // Two error-scoped phases: wgpu-native aborts the process when an invalid shader module (e.g. from
    // bad SPIR-V) reaches pipeline creation, so the module's errors are checked before it is used.
    const phase1 = dev.scoped(() => {
      if (spirv?.passthrough) {
        const words = arena.alloc(spirv.words.byteLength);
        words.bytes.set(new Uint8Array(spirv.words.buffer, spirv.words.byteOffset, spirv.words.byteLength));
        made.module = c.wgpuDeviceCreateShaderModuleSpirV(
          dev.device,
          arena.struct("WGPUShaderModuleDescriptorSpirV", {
            label: kernel.key,
            sourceSize: spirv.words.length,
            source: words.ptr,
          }).ptr,
        ) as number;
      } else {
        let source: Ptr;
        if (spirv) {
          const words = arena.alloc(spirv.words.byteLength);
          words.bytes.set(new Uint8Array(spirv.words.buffer, spirv.words.byteOffset, spirv.words.byteLength));
          source = arena.struct("WGPUShaderSourceSPIRV", {
            chain: { next: 0, sType: enums.WGPUSType.ShaderSourceSPIRV },
            codeSize: spirv.words.length,
            code: words.ptr,
          }).ptr;
        } else {
          source = arena.struct("WGPUShaderSourceWGSL", {
            chain: { next: 0, sType: enums.WGPUSType.ShaderSourceWGSL },
            code: kernel.wgsl,
          }).ptr;
        }
        made.module = c.wgpuDeviceCreateShaderModule(
          dev.device,
          arena.struct("WGPUShaderModuleDescriptor", { nextInChain: source, label: kernel.key }).ptr,
        ) as number;
      }
    });
    const phase2 = phase1.error || !made.module ? phase1 : dev.scoped(() => {
      const entries = kernel.bindings.map((b, i) => ({
        binding: i,
        visibility: flags.WGPUShaderStage.Compute,
        buffer: {
          type: b === "read"
            ? enums.WGPUBufferBindingType.ReadOnlyStorage
            : b === "read_write"
            ? enums.WGPUBufferBindingType.Storage
            : enums.WGPUBufferBindingType.Uniform,
        },
      }));
      made.bgl = c.wgpuDeviceCreateBindGroupLayout(
        dev.device,
        arena.struct("WGPUBindGroupLayoutDescriptor", {
          label: kernel.key,
          entryCount: entries.length,
          entries: arena.array("WGPUBindGroupLayoutEntry", entries),
        }).ptr,
      ) as number;
      if (!made.bgl) return;
      made.layout = c.wgpuDeviceCreatePipelineLayout(
        dev.device,
        arena.struct("WGPUPipelineLayoutDescriptor", {
          label: kernel.key,
          bindGroupLayoutCount: 1,
          bindGroupLayouts: arena.ptrs([made.bgl]),
        }).ptr,
      ) as number;
      if (!made.layout) return;
      made.pipeline = c.wgpuDeviceCreateComputePipeline(
        dev.device,
        arena.struct("WGPUComputePipelineDescriptor", {
          label: kernel.key,
          layout: made.layout,
          compute: { module: made.module!, entryPoint: kernel.entryPoint },
        }).ptr,
      ) as number;
    });
    const error = phase2.error;
    if (error || !made.pipeline) {
      if (made.pipeline) c.wgpuComputePipelineRelease(made.pipeline);
      if (made.layout) c.wgpuPipelineLayoutRelease(made.layout);
      if (made.bgl) c.wgpuBindGroupLayoutRelease(made.bgl);
      if (made.module) c.wgpuShaderModuleRelease(made.module);
      if (!error) {
        throw fail("internal", `kernel ${kernel.key}: pipeline creation returned NULL without an error`);
      }
      if (error.type === "validation") {
        throw new KernelCompileError({
          kernel: kernel.key,
          message: error.message,
          hint: "fix the WGSL (the message quotes the compiler); check the bindings match kernel.bindings",
        });
      }
      throw fail(error.type === "out-of-memory" ? "out-of-memory" : "internal", error.message);
    }
    const out = made as Compiled;
    pipelines.set(kernel.key, out);
    return out;
  };

  let pendingWrites = 0;
  let pendingBytes = 0;
  const flushWrites = () => {
    c.wgpuQueueSubmit(dev.queue, 0, 0);
    c.wgpuDevicePoll(dev.device, 0, 0);
    pendingWrites = 0;
    pendingBytes = 0;
  };

  const submitCommands = (cmd: Ptr) => {
    pendingWrites = 0;
    pendingBytes = 0;
    const arena = new Arena(dev.ffi);
    c.wgpuQueueSubmit(dev.queue, 1, arena.ptrs([cmd]));
    arena.free();
    c.wgpuCommandBufferRelease(cmd);
    // Non-blocking poll: lets wgpu-native retire finished submissions (and free their resources).
    c.wgpuDevicePoll(dev.device, 0, 0);
  };

  const readBack = (src: Ptr, offset: number, bytes: number): Uint8Array => {
    const size = Math.ceil(bytes / 4) * 4;
    const staging = dev.createBuffer(
      size,
      flags.WGPUBufferUsage.MapRead | flags.WGPUBufferUsage.CopyDst,
      "readback",
    );
    try {
      const enc = c.wgpuDeviceCreateCommandEncoder(dev.device, 0) as number;
      c.wgpuCommandEncoderCopyBufferToBuffer(enc, src, offset, staging, 0, size);
      const cmd = c.wgpuCommandEncoderFinish(enc, 0) as number;
      c.wgpuCommandEncoderRelease(enc);
      submitCommands(cmd);
      dev.check();
      return dev.readMapped(staging, 0, size).subarray(0, bytes);
    } finally {
      destroyBuffer(staging);
    }
  };

  const backend: WgpuBackend = {
    kind: "wgpu",
    adapter,
    features: dev.features,
    limits,
    native: {
      version: dev.version,
      adapterFeatures: dev.adapterFeatures,
      timestampPeriodNs: dev.timestampPeriodNs,
      limits: dev.limits,
    },

    allocate: (bytes, label = "buffer") =>
      Effect.suspend(() => {
        if (!Number.isSafeInteger(bytes) || bytes <= 0) {
          return Effect.fail(
            fail("validation", `allocate(${bytes}): size must be a positive integer of bytes`),
          );
        }
        const size = Math.ceil(bytes / 4) * 4;
        if (size > limits.maxBufferSize) {
          return Effect.fail(
            fail(
              "out-of-memory",
              `allocate(${size}) exceeds maxBufferSize ${limits.maxBufferSize} on ${adapter.name}`,
            ),
          );
        }
        if (size > limits.maxStorageBufferBindingSize) {
          // Kernels bind whole buffers (the Backend contract), and binding a buffer larger than this limit
          // makes wgpu-native abort the process at submit: refuse it here, before any work is done.
          return Effect.fail(
            new BackendError({
              backend: "wgpu",
              reason: "out-of-memory",
              message:
                `allocate(${size}) "${label}" exceeds maxStorageBufferBindingSize ${limits.maxStorageBufferBindingSize} on ${adapter.name} (kernels bind whole buffers)`,
              hint:
                "split the tensor (fewer tokens or heads per launch, a shorter context) so each buffer fits backend.limits.maxStorageBufferBindingSize",
            }),
          );
        }
        return guard(() => {
          let usage = flags.WGPUBufferUsage.Storage | flags.WGPUBufferUsage.CopySrc |
            flags.WGPUBufferUsage.CopyDst;
          if (size <= uniformMax) usage |= flags.WGPUBufferUsage.Uniform;
          const handle = dev.createBuffer(size, usage, label);
          const errs = dev.takeErrors();
          if (errs.length > 0 || !handle) {
            if (handle) destroyBuffer(handle);
            const e = errs[0];
            if (e && /device is (lost|invalid)/i.test(e.message)) throw fail("device-lost", e.message);
            throw fail(
              e?.type === "validation" ? "validation" : "out-of-memory",
              e?.message ?? "wgpuDeviceCreateBuffer returned NULL",
            );
          }
          const desc: DeviceBuffer = { id: nextId++, bytes: size, label };
          buffers.set(desc.id, { handle, desc });
          liveBytes += size;
          return desc;
        });
      }),

    upload: (buf, data, offsetBytes = 0) =>
      guard(() => {
        const r = rec(buf);
        if (offsetBytes % 4 !== 0 || offsetBytes < 0) {
          throw fail("validation", `upload offset ${offsetBytes} is not a multiple of 4`);
        }
        let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        if (bytes.byteLength % 4 !== 0) {
          const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
          padded.set(bytes);
          bytes = padded;
        }
        if (offsetBytes + bytes.byteLength > buf.bytes) {
          throw fail(
            "validation",
            `upload of ${data.byteLength} bytes at ${offsetBytes} overflows buffer of ${buf.bytes}`,
          );
        }
        if (bytes.byteLength === 0) {
          return;
        }
        c.wgpuQueueWriteBuffer(dev.queue, r.handle, offsetBytes, dev.ffi.ptrOf(bytes), bytes.byteLength);
        // wgpu holds queued writes (staging memory, and buffers released meanwhile) until a submit: flush
        // with an empty submit every 64 uploads / 64 MiB so upload-only loops do not accumulate them.
        pendingWrites++;
        pendingBytes += bytes.byteLength;
        if (pendingWrites >= 64 || pendingBytes >= 64 * 2 ** 20) flushWrites();
      }),

    download: (buf, offsetBytes = 0, bytes) =>
      guard(() => {
        const r = rec(buf);
        const n = bytes ?? buf.bytes - offsetBytes;
        if (offsetBytes % 4 !== 0 || offsetBytes < 0 || n < 0 || offsetBytes + n > buf.bytes) {
          throw fail(
            "validation",
            `download [${offsetBytes}, +${n}) outside buffer of ${buf.bytes} (offset must be a multiple of 4)`,
          );
        }
        if (n === 0) return new Uint8Array(0);
        return readBack(r.handle, offsetBytes, n).slice();
      }),

    compile: (kernel) =>
      Effect.try({
        try: () => {
          if (closed) throw fail("device-lost", "the backend is closed");
          dev.check();
          compileNow(kernel);
        },
        catch: (e) => (e instanceof KernelCompileError ? e : toBackendError(e)),
      }),

    dispatch: (launches: readonly Launch[], options = {}) =>
      Effect.try({
        try: (): DispatchTiming | undefined => {
          if (closed) throw fail("device-lost", "the backend is closed");
          dev.check();
          if (launches.length === 0) return options.timed ? { totalMs: 0, perLaunchMs: [] } : undefined;
          const timed = options.timed === true;
          if (timed && !dev.features.has("timestamp-query")) {
            throw fail("unsupported", `${adapter.name} has no timestamp-query feature`);
          }
          if (timed && launches.length > 2048) {
            throw fail("validation", "at most 2048 timed launches per dispatch");
          }
          const plans = launches.map((l) => {
            if (l.buffers.length !== l.kernel.bindings.length) {
              throw fail(
                "validation",
                `kernel ${l.kernel.key} has ${l.kernel.bindings.length} bindings, launch gives ${l.buffers.length} buffers`,
              );
            }
            const [x, y, z] = l.workgroups;
            for (const w of [x, y, z]) {
              if (!Number.isInteger(w) || w < 0 || w > limits.maxComputeWorkgroupsPerDimension) {
                throw fail(
                  "validation",
                  `workgroup count ${w} outside [0, ${limits.maxComputeWorkgroupsPerDimension}]`,
                );
              }
            }
            const writable = new Set<number>();
            l.kernel.bindings.forEach((access, i) => {
              if (access === "read_write") writable.add(l.buffers[i].id);
            });
            l.kernel.bindings.forEach((access, i) => {
              const b = l.buffers[i];
              const max = access === "uniform" ? uniformMax : limits.maxStorageBufferBindingSize;
              if (b.bytes > max) {
                throw fail(
                  "validation",
                  `kernel ${l.kernel.key} binding ${i} (${access}): buffer #${b.id} "${b.label}" has ${b.bytes} bytes, more than the ${
                    access === "uniform"
                      ? `uniform binding limit ${uniformMax}`
                      : `maxStorageBufferBindingSize ${max}`
                  }`,
                );
              }
              const need = minSizesOf(l.kernel).get(i);
              if (need !== undefined && b.bytes < need) {
                throw fail(
                  "validation",
                  `kernel ${l.kernel.key} binding ${i} (${access}) needs at least ${need} bytes (its declared type), buffer #${b.id} "${b.label}" has ${b.bytes}`,
                );
              }
              if (access !== "read_write" && writable.has(b.id)) {
                throw fail(
                  "validation",
                  `kernel ${l.kernel.key} binds buffer #${b.id} "${b.label}" both read_write and ${access} in one launch (a WebGPU usage conflict)`,
                );
              }
            });
            return {
              launch: l,
              compiled: compileNow(l.kernel),
              handles: l.buffers.map((b) => rec(b).handle),
              groupKey: `${l.kernel.key}\u0000${l.buffers.map((b) => b.id).join(",")}`,
            };
          });
          const arena = new Arena(dev.ffi);
          if (bindGroups.size > BIND_GROUP_CACHE_MAX) clearGroups();
          let querySet = 0;
          let resolve = 0;
          try {
            const groupOf = (p: typeof plans[number]): Ptr => {
              const hit = bindGroups.get(p.groupKey);
              if (hit !== undefined) return hit.group;
              const group = c.wgpuDeviceCreateBindGroup(
                dev.device,
                arena.struct("WGPUBindGroupDescriptor", {
                  layout: p.compiled.bgl,
                  entryCount: p.handles.length,
                  entries: arena.array(
                    "WGPUBindGroupEntry",
                    p.handles.map((h, b) => ({
                      binding: b,
                      buffer: h,
                      offset: 0,
                      size: 0xffffffffffffffffn,
                    })),
                  ),
                }).ptr,
              ) as number;
              // wgpu-native reports a bad bind group through the uncaptured-error callback, synchronously,
              // inside the call (dispatch starts with no pending error: `dev.check()` above). Cheaper than an
              // error scope per call, whose push/pop cost ~370 B of native memory per call under Deno 2.9's FFI.
              const errs = dev.takeErrors();
              if (errs.length > 0 || !group) {
                // An invalid bind group reaching wgpuQueueSubmit aborts the process: fail here instead.
                if (group) c.wgpuBindGroupRelease(group);
                throw fail(
                  errs[0]?.type === "out-of-memory" ? "out-of-memory" : "validation",
                  `kernel ${p.launch.kernel.key}: bind group refused: ${errs[0]?.message ?? "NULL"}`,
                );
              }
              const ids = p.launch.buffers.map((b) => b.id);
              bindGroups.set(p.groupKey, { group, ids });
              for (const id of ids) {
                const keys = groupsOfBuffer.get(id);
                if (keys) keys.add(p.groupKey);
                else groupsOfBuffer.set(id, new Set([p.groupKey]));
              }
              return group;
            };
            // Bind groups first, then the whole encoding, each followed by a check of the errors wgpu-native
            // raised meanwhile: an invalid command buffer reaching wgpuQueueSubmit aborts the process
            // (wgpu-native's handle_error_fatal), so a command buffer is submitted only when nothing was raised.
            const groups = plans.map(groupOf);
            if (timed) {
              querySet = c.wgpuDeviceCreateQuerySet(
                dev.device,
                arena.struct("WGPUQuerySetDescriptor", {
                  type: enums.WGPUQueryType.Timestamp,
                  count: 2 * plans.length,
                }).ptr,
              ) as number;
              resolve = dev.createBuffer(
                16 * plans.length,
                flags.WGPUBufferUsage.QueryResolve | flags.WGPUBufferUsage.CopySrc,
                "timestamps",
              );
            }
            const encoded = (() => {
              const enc = c.wgpuDeviceCreateCommandEncoder(dev.device, 0) as number;
              let pass = 0;
              plans.forEach((p, i) => {
                const group = groups[i];
                if (timed || pass === 0) {
                  const desc = timed
                    ? arena.struct("WGPUComputePassDescriptor", {
                      timestampWrites: arena.struct("WGPUPassTimestampWrites", {
                        querySet,
                        beginningOfPassWriteIndex: 2 * i,
                        endOfPassWriteIndex: 2 * i + 1,
                      }).ptr,
                    }).ptr
                    : 0;
                  pass = c.wgpuCommandEncoderBeginComputePass(enc, desc) as number;
                }
                c.wgpuComputePassEncoderSetPipeline(pass, p.compiled.pipeline);
                c.wgpuComputePassEncoderSetBindGroup(pass, 0, group, 0, 0);
                const [x, y, z] = p.launch.workgroups;
                c.wgpuComputePassEncoderDispatchWorkgroups(pass, x, y, z);
                if (timed || i === plans.length - 1) {
                  c.wgpuComputePassEncoderEnd(pass);
                  c.wgpuComputePassEncoderRelease(pass);
                  pass = 0;
                }
              });
              if (timed) {
                c.wgpuCommandEncoderResolveQuerySet(enc, querySet, 0, 2 * plans.length, resolve, 0);
              }
              const cmd = c.wgpuCommandEncoderFinish(enc, 0) as number;
              c.wgpuCommandEncoderRelease(enc);
              return { value: cmd, error: dev.takeErrors()[0] };
            })();
            if (encoded.error || !encoded.value) {
              if (encoded.value) c.wgpuCommandBufferRelease(encoded.value);
              // Let wgpu-native free what this dispatch and the caller released (it frees on poll; a loop of
              // refused dispatches would otherwise never poll).
              c.wgpuDevicePoll(dev.device, 0, 0);
              throw fail(
                encoded.error?.type === "out-of-memory" ? "out-of-memory" : "validation",
                `dispatch of ${plans.length} launch(es) (${
                  [...new Set(plans.map((p) => p.launch.kernel.key))].slice(0, 4).join(", ")
                }) refused before submit: ${
                  encoded.error?.message ?? "wgpuCommandEncoderFinish returned NULL"
                }`,
              );
            }
            submitCommands(encoded.value);
            dev.check();
            if (!timed) return undefined;
            const raw = readBack(resolve, 0, 16 * plans.length);
            const ticks = new BigUint64Array(raw.buffer, raw.byteOffset, 2 * plans.length);
            const ms = (a: bigint, b: bigint) => (Number(b - a) * dev.timestampPeriodNs) / 1e6;
            const perLaunchMs = plans.map((
              _,
              i,
            ) => (ticks[2 * i + 1] >= ticks[2 * i] ? ms(ticks[2 * i], ticks[2 * i + 1]) : 0));
            const last = 2 * plans.length - 1;
            return { totalMs: ticks[last] >= ticks[0] ? ms(ticks[0], ticks[last]) : 0, perLaunchMs };
          } finally {
            // (wgpuQuerySetDestroy + Release panics "vacant resource" in wgpu-native 29: release only.)
            if (querySet) c.wgpuQuerySetRelease(querySet);
            if (resolve) destroyBuffer(resolve);
            arena.free();
          }
        },
        catch: (e) => (e instanceof KernelCompileError ? e : toBackendError(e)),
      }),

    sync: () =>
      guard(() => {
        // An empty submit flushes queued writeBuffer uploads (wgpu keeps them pending until a submit).
        flushWrites();
        dev.poll(true);
      }),

    release: (buf) => {
      const r = buffers.get(buf.id);
      if (!r || r.desc !== buf || closed) return;
      buffers.delete(buf.id);
      liveBytes -= buf.bytes;
      const keys = groupsOfBuffer.get(buf.id);
      if (keys) dropGroups(keys);
      groupsOfBuffer.delete(buf.id);
      destroyBuffer(r.handle);
    },

    live: () => ({ buffers: buffers.size, bytes: liveBytes }),

    cachedBindGroups: () => bindGroups.size,

    close: () =>
      Effect.sync(() => {
        if (closed) return;
        clearGroups();
        for (const r of buffers.values()) destroyBuffer(r.handle);
        buffers.clear();
        liveBytes = 0;
        for (const p of pipelines.values()) {
          c.wgpuComputePipelineRelease(p.pipeline);
          c.wgpuPipelineLayoutRelease(p.layout);
          c.wgpuBindGroupLayoutRelease(p.bgl);
          c.wgpuShaderModuleRelease(p.module);
        }
        pipelines.clear();
        closed = true;
        dev.close();
      }),

    compileSpirv: (key, spirv, entryPoint, bindings, mode = "naga") =>
      Effect.try({
        try: () => {
          if (closed) throw fail("device-lost", "the backend is closed");
          dev.check();
          if (mode === "passthrough" && !dev.features.has("passthrough-shaders")) {
            // wgpu-native 29.0.1.1 keeps WGPUNativeFeature_PassthroughShaders commented out in wgpu.h, so the
            // device can never enable it and wgpuDeviceCreateShaderModuleSpirV always fails validation.
            throw fail(
              "unsupported",
              `SPIR-V passthrough needs the "passthrough-shaders" feature, which wgpu-native ${dev.version} does not expose`,
            );
          }
          const kernel: Kernel = { key, wgsl: "", entryPoint, bindings };
          compileNow(kernel, { words: spirv, passthrough: mode === "passthrough" });
          return kernel;
        },
        catch: (e) => (e instanceof KernelCompileError ? e : toBackendError(e)),
      }),

    loseDevice: () => dev.destroyDevice(),
  };
  return backend;
};
