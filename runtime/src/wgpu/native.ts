/**
 * wgpu-native through the runtime-neutral FFI layer: instance → adapter → device, buffers, shader
 * modules, compute pipelines with explicit layouts, command encoding with timestamp queries, buffer
 * mapping, error scopes, and the device-lost / uncaptured-error callbacks. Synchronous: every future is
 * driven to completion with `wgpuInstanceProcessEvents` / `wgpuDevicePoll` (callback mode
 * `AllowProcessEvents`), so callbacks only ever run on the calling JS thread.
 *
 * Failures throw `WgpuFailure` (reason + message); `runtime/src/backends/wgpu.ts` maps them to the typed
 * `BackendError` / `KernelCompileError`.
 * @module
 */
import { enums, flags, structs } from "./ffi_generated.ts";
import { type Ffi, type FunctionName, getFfi, type NativeCallback, type NativeLib, type Ptr } from "./ffi.ts";
import { Arena, readStringView, readStruct } from "./structs.ts";

/** Why a native call failed (mirrors `BackendError.reason` plus `compile`). */
export type FailureReason =
  | "library-missing"
  | "no-adapter"
  | "device-lost"
  | "out-of-memory"
  | "validation"
  | "map-failed"
  | "unsupported"
  | "internal"
  | "compile";

/** A failure of the native layer. */
export class WgpuFailure extends Error {
  constructor(readonly reason: FailureReason, message: string) {
    super(message);
  }
}

/** The symbols this layer binds. */
const SYMBOLS = [
  "wgpuGetVersion",
  "wgpuCreateInstance",
  "wgpuInstanceRelease",
  "wgpuInstanceRequestAdapter",
  "wgpuInstanceProcessEvents",
  "wgpuAdapterGetInfo",
  "wgpuAdapterInfoFreeMembers",
  "wgpuAdapterGetLimits",
  "wgpuAdapterGetFeatures",
  "wgpuAdapterRequestDevice",
  "wgpuAdapterRelease",
  "wgpuSupportedFeaturesFreeMembers",
  "wgpuDeviceGetFeatures",
  "wgpuDeviceGetLimits",
  "wgpuDeviceGetQueue",
  "wgpuDeviceCreateBuffer",
  "wgpuDeviceCreateShaderModule",
  "wgpuDeviceCreateShaderModuleSpirV",
  "wgpuDeviceCreateBindGroupLayout",
  "wgpuDeviceCreatePipelineLayout",
  "wgpuDeviceCreateComputePipeline",
  "wgpuDeviceCreateBindGroup",
  "wgpuDeviceCreateCommandEncoder",
  "wgpuDeviceCreateQuerySet",
  "wgpuDevicePushErrorScope",
  "wgpuDevicePopErrorScope",
  "wgpuDevicePoll",
  "wgpuDeviceDestroy",
  "wgpuDeviceRelease",
  "wgpuQueueWriteBuffer",
  "wgpuQueueSubmit",
  "wgpuQueueGetTimestampPeriod",
  "wgpuQueueRelease",
  "wgpuBufferMapAsync",
  "wgpuBufferGetConstMappedRange",
  "wgpuBufferUnmap",
  "wgpuBufferDestroy",
  "wgpuBufferRelease",
  "wgpuShaderModuleRelease",
  "wgpuBindGroupLayoutRelease",
  "wgpuPipelineLayoutRelease",
  "wgpuComputePipelineRelease",
  "wgpuBindGroupRelease",
  "wgpuCommandEncoderBeginComputePass",
  "wgpuCommandEncoderCopyBufferToBuffer",
  "wgpuCommandEncoderResolveQuerySet",
  "wgpuCommandEncoderFinish",
  "wgpuCommandEncoderRelease",
  "wgpuCommandBufferRelease",
  "wgpuComputePassEncoderSetPipeline",
  "wgpuComputePassEncoderSetBindGroup",
  "wgpuComputePassEncoderDispatchWorkgroups",
  "wgpuComputePassEncoderEnd",
  "wgpuComputePassEncoderRelease",
  "wgpuQuerySetRelease",
] as const satisfies readonly FunctionName[];
type Sym = (typeof SYMBOLS)[number];
type Lib = NativeLib<Sym>;

/** WebGPU's feature strings for `WGPUFeatureName` values. */
const WEBGPU_FEATURE_NAMES: Record<string, string> = {
  CoreFeaturesAndLimits: "core-features-and-limits",
  DepthClipControl: "depth-clip-control",
  Depth32FloatStencil8: "depth32float-stencil8",
  TextureCompressionBC: "texture-compression-bc",
  TextureCompressionBCSliced3D: "texture-compression-bc-sliced-3d",
  TextureCompressionETC2: "texture-compression-etc2",
  TextureCompressionASTC: "texture-compression-astc",
  TextureCompressionASTCSliced3D: "texture-compression-astc-sliced-3d",
  TimestampQuery: "timestamp-query",
  IndirectFirstInstance: "indirect-first-instance",
  ShaderF16: "shader-f16",
  RG11B10UfloatRenderable: "rg11b10ufloat-renderable",
  BGRA8UnormStorage: "bgra8unorm-storage",
  Float32Filterable: "float32-filterable",
  Float32Blendable: "float32-blendable",
  ClipDistances: "clip-distances",
  DualSourceBlending: "dual-source-blending",
  Subgroups: "subgroups",
  TextureFormatsTier1: "texture-formats-tier1",
  TextureFormatsTier2: "texture-formats-tier2",
  PrimitiveIndex: "primitive-index",
  TextureComponentSwizzle: "texture-component-swizzle",
};

const kebab = (s: string) =>
  s.replace(/([a-z0-9])([A-Z])/g, "$1-$2").replace(/([A-Z]+)([A-Z][a-z])/g, "$1-$2").toLowerCase();

/** Feature value → name: WebGPU names for standard features, kebab-case enum names for native ones
 * (`WGPUNativeFeature_CooperativeMatrix` → `cooperative-matrix`, `Immediates` → `immediates`). */
export const featureName = (value: number): string => {
  for (const [k, v] of Object.entries(enums.WGPUFeatureName)) {
    if (v === value) return WEBGPU_FEATURE_NAMES[k] ?? kebab(k);
  }
  for (const [k, v] of Object.entries(enums.WGPUNativeFeature)) if (v === value) return kebab(k);
  return `unknown-0x${value.toString(16)}`;
};

/** Name → feature value (inverse of `featureName`). */
export const featureValue = (name: string): number | undefined => {
  for (const [k, v] of Object.entries(enums.WGPUFeatureName)) {
    if ((WEBGPU_FEATURE_NAMES[k] ?? kebab(k)) === name) return v;
  }
  for (const [k, v] of Object.entries(enums.WGPUNativeFeature)) if (kebab(k) === name) return v;
  return undefined;
};

/**
 * Features requested at device creation when the adapter has them.
 *
 * `cooperative-matrix` is reported when the adapter has it but NOT requested: in wgpu-native 29.0.1.1 it is
 * an experimental wgpu feature, and the C API has no way to enable experimental features — on the H200
 * (2026-11-30) requesting it failed the device request with "Some experimental features,
 * EXPERIMENTAL_COOPERATIVE_MATRIX, were requested, but experimental features are not enabled".
 */
export const WANTED_FEATURES = [
  "timestamp-query",
  "shader-f16",
  "subgroups",
  "timestamp-query-inside-encoders",
  "timestamp-query-inside-passes",
  "immediates",
  "subgroup-barrier",
  "shader-int64",
  "shader-f64",
] as const;

/** Adapter facts read at open. */
export interface AdapterFacts {
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  readonly backendType: string;
  readonly adapterType: string;
  readonly vendorId: number;
  readonly deviceId: number;
  readonly subgroupMinSize: number;
  readonly subgroupMaxSize: number;
}

/** Limits as numbers (WGPULimits fields; u64 ones converted). */
export type Limits = Record<string, number>;

const decodeLimits = (b: Uint8Array): Limits => {
  const d = readStruct("WGPULimits", b);
  const out: Limits = {};
  for (const [k, v] of Object.entries(d)) if (k !== "nextInChain") out[k] = Number(v);
  return out;
};

const nameOf = (e: Record<string, number>, v: number) =>
  Object.entries(e).find(([, x]) => x === v)?.[0] ?? `${v}`;

/** An error captured from a callback (uncaptured error or error scope). */
export interface CapturedError {
  readonly type: "validation" | "out-of-memory" | "internal" | "unknown";
  readonly message: string;
}

const errorTypeName = (t: number): CapturedError["type"] =>
  t === enums.WGPUErrorType.Validation
    ? "validation"
    : t === enums.WGPUErrorType.OutOfMemory
    ? "out-of-memory"
    : t === enums.WGPUErrorType.Internal
    ? "internal"
    : "unknown";

/** Options for `openWgpu`. */
export interface OpenOptions {
  /** Path of libwgpu_native. */
  readonly libPath: string;
  /** Prefer a low-power adapter (default high-performance). */
  readonly lowPower?: boolean;
  /** Limits to request instead of the adapter's own (WGPULimits field names; others stay the adapter's). */
  readonly limits?: Readonly<Record<string, number>>;
}

/** One wgpu-native instance + adapter + device + queue, with the callbacks that keep them honest. */
export class WgpuDevice {
  /** Device-lost state, set by the device-lost callback. */
  lost: { reason: string; message: string } | undefined;
  /** Errors reported through the uncaptured-error callback since the last `takeErrors()`. */
  private uncaptured: CapturedError[] = [];
  private callbacks: NativeCallback[] = [];
  private closed = false;
  private pending = new Map<number, (args: (number | bigint | Uint8Array)[]) => void>();
  private nextToken = 1;
  private mapCb!: NativeCallback;
  private popCb!: NativeCallback;

  private constructor(
    readonly ffi: Ffi,
    readonly lib: Lib,
    readonly instance: Ptr,
    public adapter: Ptr,
    public device: Ptr,
    public queue: Ptr,
    readonly info: AdapterFacts,
    readonly limits: Limits,
    readonly adapterFeatures: ReadonlySet<string>,
    readonly features: ReadonlySet<string>,
    readonly timestampPeriodNs: number,
    readonly version: string,
  ) {}

  /** Load the library, pick an adapter, create the device. Throws `WgpuFailure`. */
  static async open(opts: OpenOptions): Promise<WgpuDevice> {
    let ffi: Ffi;
    let lib: Lib;
    try {
      ffi = await getFfi();
      lib = ffi.open(opts.libPath, SYMBOLS);
    } catch (e) {
      throw new WgpuFailure("library-missing", `cannot load ${opts.libPath}: ${(e as Error).message}`);
    }
    const c = lib.call;
    const v = Number(c.wgpuGetVersion());
    const version = `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
    const cbs: NativeCallback[] = [];
    const closeAll = () => cbs.forEach((cb) => cb.close());
    const instance = c.wgpuCreateInstance(0) as number;
    if (!instance) {
      lib.close();
      throw new WgpuFailure("internal", "wgpuCreateInstance returned NULL");
    }
    const arena = new Arena(ffi);
    // Adapter.
    let adapter = 0;
    let adapterMsg = "";
    let adapterDone = false;
    const adapterCb = ffi.callback("WGPURequestAdapterCallback", (status, a, msg) => {
      adapterDone = true;
      if (status === enums.WGPURequestAdapterStatus.Success) adapter = a as number;
      else {adapterMsg = `${nameOf(enums.WGPURequestAdapterStatus, status as number)}: ${
          readStringView(ffi, msg as Uint8Array)
        }`;}
    });
    cbs.push(adapterCb);
    const options = arena.struct("WGPURequestAdapterOptions", {
      featureLevel: enums.WGPUFeatureLevel.Core,
      powerPreference: opts.lowPower
        ? enums.WGPUPowerPreference.LowPower
        : enums.WGPUPowerPreference.HighPerformance,
    });
    const info1 = arena.struct("WGPURequestAdapterCallbackInfo", {
      mode: enums.WGPUCallbackMode.AllowProcessEvents,
      callback: adapterCb.ptr,
    });
    c.wgpuInstanceRequestAdapter(instance, options.ptr, info1.bytes);
    for (let i = 0; i < 10_000 && !adapterDone; i++) c.wgpuInstanceProcessEvents(instance);
    if (!adapter) {
      closeAll();
      c.wgpuInstanceRelease(instance);
      lib.close();
      throw new WgpuFailure("no-adapter", adapterMsg || "no adapter was returned");
    }
    // Adapter info.
    const infoS = arena.struct("WGPUAdapterInfo");
    c.wgpuAdapterGetInfo(adapter, infoS.ptr);
    const id = readStruct("WGPUAdapterInfo", infoS.bytes);
    const sv = (f: string) => {
      const o = structs.WGPUAdapterInfo.fields[f].offset;
      return readStringView(ffi, infoS.bytes.subarray(o, o + 16));
    };
    const info: AdapterFacts = {
      vendor: sv("vendor"),
      architecture: sv("architecture"),
      device: sv("device"),
      description: sv("description"),
      backendType: nameOf(enums.WGPUBackendType, id.backendType as number),
      adapterType: nameOf(enums.WGPUAdapterType, id.adapterType as number),
      vendorId: id.vendorID as number,
      deviceId: id.deviceID as number,
      subgroupMinSize: id.subgroupMinSize as number,
      subgroupMaxSize: id.subgroupMaxSize as number,
    };
    c.wgpuAdapterInfoFreeMembers(infoS.bytes);
    // Limits and features.
    let lim = arena.struct("WGPULimits");
    c.wgpuAdapterGetLimits(adapter, lim.ptr);
    if (opts.limits && Object.keys(opts.limits).length > 0) {
      const cur = readStruct("WGPULimits", lim.bytes);
      const want: Record<string, number | bigint> = {};
      for (const [k, v] of Object.entries(cur)) if (k !== "nextInChain") want[k] = v as number | bigint;
      for (const [k, v] of Object.entries(opts.limits)) {
        if (!(k in want)) {
          closeAll();
          c.wgpuAdapterRelease(adapter);
          c.wgpuInstanceRelease(instance);
          lib.close();
          throw new WgpuFailure("validation", `unknown limit "${k}" (not a WGPULimits field)`);
        }
        want[k] = typeof cur[k] === "bigint" ? BigInt(v) : v;
      }
      lim = arena.struct("WGPULimits", want);
    }
    const readFeatures = (fn: "wgpuAdapterGetFeatures" | "wgpuDeviceGetFeatures", obj: Ptr): Set<string> => {
      const sf = arena.struct("WGPUSupportedFeatures");
      c[fn](obj, sf.ptr);
      const d = readStruct("WGPUSupportedFeatures", sf.bytes);
      const n = d.featureCount as number;
      const raw = ffi.copyOut(d.features as number, n * 4);
      const dv = new DataView(raw.buffer);
      const out = new Set<string>();
      for (let i = 0; i < n; i++) out.add(featureName(dv.getUint32(i * 4, true)));
      c.wgpuSupportedFeaturesFreeMembers(sf.bytes);
      return out;
    };
    const adapterFeatures = readFeatures("wgpuAdapterGetFeatures", adapter);
    // Device with the wanted features and the adapter's own limits.
    const required = WANTED_FEATURES.filter((f) => adapterFeatures.has(f)).map((f) => featureValue(f)!);
    let device = 0;
    let deviceMsg = "";
    let deviceDone = false;
    const deviceCb = ffi.callback("WGPURequestDeviceCallback", (status, d, msg) => {
      deviceDone = true;
      if (status === enums.WGPURequestDeviceStatus.Success) device = d as number;
      else deviceMsg = readStringView(ffi, msg as Uint8Array);
    });
    cbs.push(deviceCb);
    // The device object is created before its callbacks exist on our side: route through a holder.
    const holder: { dev?: WgpuDevice } = {};
    const lostCb = ffi.callback("WGPUDeviceLostCallback", (_d, reason, msg) => {
      const m = readStringView(ffi, msg as Uint8Array);
      const r = nameOf(enums.WGPUDeviceLostReason, reason as number);
      if (holder.dev && r !== "CallbackCancelled") holder.dev.lost = { reason: r, message: m };
    });
    const errCb = ffi.callback("WGPUUncapturedErrorCallback", (_d, type, msg) => {
      holder.dev?.uncaptured.push({
        type: errorTypeName(type as number),
        message: readStringView(ffi, msg as Uint8Array),
      });
    });
    cbs.push(lostCb, errCb);
    const desc = arena.struct("WGPUDeviceDescriptor", {
      label: "longctx",
      requiredFeatureCount: required.length,
      requiredFeatures: arena.u32s(required),
      requiredLimits: lim.ptr,
      defaultQueue: { label: "longctx-queue" },
      deviceLostCallbackInfo: { mode: enums.WGPUCallbackMode.AllowProcessEvents, callback: lostCb.ptr },
      uncapturedErrorCallbackInfo: { callback: errCb.ptr },
    });
    const info2 = arena.struct("WGPURequestDeviceCallbackInfo", {
      mode: enums.WGPUCallbackMode.AllowProcessEvents,
      callback: deviceCb.ptr,
    });
    c.wgpuAdapterRequestDevice(adapter, desc.ptr, info2.bytes);
    for (let i = 0; i < 10_000 && !deviceDone; i++) c.wgpuInstanceProcessEvents(instance);
    if (!device) {
      closeAll();
      c.wgpuAdapterRelease(adapter);
      c.wgpuInstanceRelease(instance);
      lib.close();
      // The adapter exists: a refused device request is about what was asked (limits, features), not a missing
      // driver.
      throw new WgpuFailure(
        "unsupported",
        `device request refused by ${info.device || info.vendor}: ${deviceMsg}`,
      );
    }
    const dlim = arena.struct("WGPULimits");
    c.wgpuDeviceGetLimits(device, dlim.ptr);
    const features = readFeatures("wgpuDeviceGetFeatures", device);
    const queue = c.wgpuDeviceGetQueue(device) as number;
    const period = Number(c.wgpuQueueGetTimestampPeriod(queue));
    const dev = new WgpuDevice(
      ffi,
      lib,
      instance,
      adapter,
      device,
      queue,
      info,
      decodeLimits(dlim.bytes),
      adapterFeatures,
      features,
      period,
      version,
    );
    holder.dev = dev;
    dev.callbacks = cbs;
    dev.mapCb = ffi.callback(
      "WGPUBufferMapCallback",
      (status, msg, u1) => dev.resolve(u1 as number, [status, msg]),
    );
    dev.popCb = ffi.callback(
      "WGPUPopErrorScopeCallback",
      (status, type, msg, u1) => dev.resolve(u1 as number, [status, type, msg]),
    );
    cbs.push(dev.mapCb, dev.popCb);
    return dev;
  }

  private resolve(token: number, args: (number | bigint | Uint8Array)[]) {
    const f = this.pending.get(token);
    if (f) {
      this.pending.delete(token);
      f(args);
    }
  }

  /** Throw `device-lost` when the device is gone; throw the first uncaptured error, if any. */
  check(): void {
    if (this.closed) throw new WgpuFailure("device-lost", "the backend was closed");
    if (this.lost) {
      throw new WgpuFailure("device-lost", `device lost (${this.lost.reason}): ${this.lost.message}`);
    }
    const e = this.takeErrors()[0];
    if (!e) return;
    if (/device is (lost|invalid)/i.test(e.message)) throw new WgpuFailure("device-lost", e.message);
    throw new WgpuFailure(
      e.type === "out-of-memory" ? "out-of-memory" : e.type === "validation" ? "validation" : "internal",
      e.message,
    );
  }

  /** Drain the uncaptured errors. */
  takeErrors(): CapturedError[] {
    const e = this.uncaptured;
    this.uncaptured = [];
    return e;
  }

  /** Run `fn` inside validation + out-of-memory + internal error scopes; return the first captured error. */
  scoped<T>(fn: () => T): { value: T; error?: CapturedError } {
    const c = this.lib.call;
    const filters = [enums.WGPUErrorFilter.OutOfMemory, enums.WGPUErrorFilter.Validation];
    for (const f of filters) c.wgpuDevicePushErrorScope(this.device, f);
    let value: T | undefined;
    let thrown: { e: unknown } | undefined;
    try {
      value = fn();
    } catch (e) {
      thrown = { e }; // the scopes are popped below before rethrowing
    }
    let error: CapturedError | undefined;
    const arena = new Arena(this.ffi);
    for (let i = 0; i < filters.length; i++) {
      let done = false;
      const token = this.nextToken++;
      this.pending.set(token, ([status, type, msg]) => {
        done = true;
        if (
          status === enums.WGPUPopErrorScopeStatus.Success && type !== enums.WGPUErrorType.NoError && !error
        ) {
          error = {
            type: errorTypeName(type as number),
            message: readStringView(this.ffi, msg as Uint8Array),
          };
        }
      });
      const info = arena.struct("WGPUPopErrorScopeCallbackInfo", {
        mode: enums.WGPUCallbackMode.AllowProcessEvents,
        callback: this.popCb.ptr,
        userdata1: token,
      });
      c.wgpuDevicePopErrorScope(this.device, info.bytes);
      for (let k = 0; k < 10_000 && !done; k++) c.wgpuInstanceProcessEvents(this.instance);
      this.pending.delete(token);
    }
    arena.free();
    if (thrown) throw thrown.e;
    return { value: value as T, error };
  }

  /** Block until the queue is idle, then deliver pending callbacks. */
  poll(wait = true): void {
    this.lib.call.wgpuDevicePoll(this.device, wait ? 1 : 0, 0);
    this.lib.call.wgpuInstanceProcessEvents(this.instance);
  }

  /** Create a buffer (`usage`: WGPUBufferUsage bits). */
  createBuffer(bytes: number, usage: number, label: string): Ptr {
    const arena = new Arena(this.ffi);
    const d = arena.struct("WGPUBufferDescriptor", { label, usage, size: bytes, mappedAtCreation: 0 });
    const h = this.lib.call.wgpuDeviceCreateBuffer(this.device, d.ptr) as number;
    arena.free();
    return h;
  }

  /** Map `buffer` for reading [offset, offset+bytes) and copy it out; polls until the map completes. */
  readMapped(buffer: Ptr, offset: number, bytes: number): Uint8Array {
    const c = this.lib.call;
    const arena = new Arena(this.ffi);
    let status = 0;
    let msg = "";
    const token = this.nextToken++;
    this.pending.set(token, ([s, m]) => {
      status = s as number;
      msg = readStringView(this.ffi, m as Uint8Array);
    });
    const info = arena.struct("WGPUBufferMapCallbackInfo", {
      mode: enums.WGPUCallbackMode.AllowProcessEvents,
      callback: this.mapCb.ptr,
      userdata1: token,
    });
    c.wgpuBufferMapAsync(buffer, flags.WGPUMapMode.Read, offset, bytes, info.bytes);
    arena.free();
    for (let i = 0; i < 1_000_000 && status === 0; i++) {
      c.wgpuDevicePoll(this.device, 1, 0);
      c.wgpuInstanceProcessEvents(this.instance);
      if (this.lost) break;
    }
    this.pending.delete(token);
    if (status !== enums.WGPUMapAsyncStatus.Success) {
      if (this.lost) throw new WgpuFailure("device-lost", `device lost during map: ${this.lost.message}`);
      throw new WgpuFailure("map-failed", `mapAsync ${nameOf(enums.WGPUMapAsyncStatus, status)}: ${msg}`);
    }
    // (wgpuBufferReadMappedRange panics "not implemented" in wgpu-native 29: copy from the mapped range.)
    const p = c.wgpuBufferGetConstMappedRange(buffer, offset, bytes) as number;
    if (!p) {
      c.wgpuBufferUnmap(buffer);
      throw new WgpuFailure("map-failed", "wgpuBufferGetConstMappedRange returned NULL");
    }
    const out = this.ffi.copyOut(p, bytes);
    c.wgpuBufferUnmap(buffer);
    return out;
  }

  /** Simulate device loss (tests): `wgpuDeviceDestroy`, then deliver the lost callback. */
  destroyDevice(): void {
    this.lib.call.wgpuDeviceDestroy(this.device);
    this.poll(false);
    // wgpu-native 29 delivers the lost callback only when the device is dropped: record it now.
    this.lost ??= { reason: "Destroyed", message: "wgpuDeviceDestroy was called" };
  }

  /** Release device, queue, adapter, instance, callbacks and the library handle. Idempotent. */
  close(): void {
    if (this.closed) return;
    const c = this.lib.call;
    try {
      if (!this.lost) this.poll(true);
    } catch { /* best effort */ }
    c.wgpuQueueRelease(this.queue);
    c.wgpuDeviceRelease(this.device);
    c.wgpuAdapterRelease(this.adapter);
    // Let the runtime deliver CallbackCancelled for pending futures while our callbacks still exist.
    c.wgpuInstanceProcessEvents(this.instance);
    c.wgpuInstanceRelease(this.instance);
    this.closed = true;
    for (const cb of this.callbacks) cb.close();
    this.callbacks = [];
    // Each open dlopens the library: close our handle (the OS keeps it mapped while other backends hold one),
    // or every backend opened and closed leaks a library handle (Deno's resource sanitizer reports it).
    this.lib.close();
  }
}
