/**
 * A tiny WebGPU runner for operator lowerings (tests and device scripts): runs a `GpuLowering` on a
 * standard `GPUDevice` (Deno's `navigator.gpu`: lavapipe here, Vulkan on the H200) without the executor.
 * @module
 */
import { descBytes, numel } from "@longctx/graph";
import type {
  AnyOperator,
  Backend,
  DescsOf,
  GpuLowering,
  HostTensor,
  Ports,
  TensorDesc,
} from "@longctx/graph";
import { Effect } from "effect";

/** A device plus its feature names. */
export interface Gpu {
  readonly device: GPUDevice;
  readonly features: ReadonlySet<string>;
  readonly workgroupMemory: number;
  /** The device's `maxStorageBufferBindingSize` (bytes). */
  readonly maxBinding: number;
  readonly name: string;
}

/** Open the default adapter with its f16/timestamp features and full workgroup memory; undefined without one. */
export const openGpu = async (): Promise<Gpu | undefined> => {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (!nav?.gpu) return undefined;
  const adapter = await nav.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) return undefined;
  const want = ["shader-f16", "timestamp-query", "subgroups"].filter((x) => adapter.features.has(x));
  const device = await adapter.requestDevice({
    requiredFeatures: want as GPUFeatureName[],
    requiredLimits: {
      maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
      maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
    },
  });
  return {
    device,
    features: new Set(want),
    workgroupMemory: adapter.limits.maxComputeWorkgroupStorageSize,
    maxBinding: Math.min(adapter.limits.maxStorageBufferBindingSize, adapter.limits.maxBufferSize),
    name: adapter.info?.description || adapter.info?.device || "gpu",
  };
};

const pipelines = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

const pipeline = async (gpu: Gpu, key: string, wgsl: string, entry: string): Promise<GPUComputePipeline> => {
  let cache = pipelines.get(gpu.device);
  if (!cache) pipelines.set(gpu.device, cache = new Map());
  const hit = cache.get(key);
  if (hit) return hit;
  gpu.device.pushErrorScope("validation");
  const module = gpu.device.createShaderModule({ code: wgsl });
  const info = await module.getCompilationInfo();
  const errs = info.messages.filter((m) => m.type === "error");
  if (errs.length) throw new Error(`${key}: ${errs.map((m) => `${m.lineNum}:${m.message}`).join("\n")}`);
  const p = gpu.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: entry } });
  const err = await gpu.device.popErrorScope();
  if (err) throw new Error(`${key}: ${err.message}`);
  cache.set(key, p);
  return p;
};

/** Device buffers of one run, by name (`in:x`, `out:y`, `ws:z`). */
export type BufferSet = Map<string, GPUBuffer>;

// WebGPU flag values (GPUBufferUsage / GPUMapMode), spelled out so the file also type-checks without DOM globals.
const STORAGE = 0x80, COPY_SRC = 0x4, COPY_DST = 0x8, MAP_READ = 0x1, MAP_MODE_READ = 0x1;
const usage = () => STORAGE | COPY_SRC | COPY_DST;

/** Allocate and upload a host tensor. */
export const upload = (gpu: Gpu, t: HostTensor): GPUBuffer => {
  const bytes = Math.max(4, Math.ceil(descBytes(t.desc) / 4) * 4);
  const b = gpu.device.createBuffer({ size: bytes, usage: usage(), mappedAtCreation: true });
  new Uint8Array(b.getMappedRange()).set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  b.unmap();
  return b;
};

/** Allocate a zeroed buffer for a description. */
export const alloc = (gpu: Gpu, d: TensorDesc | number): GPUBuffer =>
  gpu.device.createBuffer({
    size: Math.max(4, Math.ceil((typeof d === "number" ? d : descBytes(d)) / 4) * 4),
    usage: usage(),
  });

/** Encode a lowering's launches into `enc` with the buffers named in `bufs` (workspaces are allocated here). */
export const encodeLowering = async (
  gpu: Gpu,
  enc: GPUCommandEncoder,
  low: GpuLowering,
  bufs: BufferSet,
  /** Write a timestamp at the start of the first pass (index 0) and the end of the last (index 1). */
  timestamps?: GPUQuerySet,
): Promise<void> => {
  for (const [name, bytes] of Object.entries(low.workspaces)) {
    if (!bufs.has(`ws:${name}`)) bufs.set(`ws:${name}`, alloc(gpu, bytes));
  }
  for (const [n, l] of low.launches.entries()) {
    const p = await pipeline(gpu, l.kernel.key, l.kernel.wgsl, l.kernel.entryPoint);
    const entries = l.buffers.map((n, i) => {
      const b = bufs.get(n);
      if (!b) throw new Error(`${l.kernel.key}: no buffer ${n}`);
      return { binding: i, resource: { buffer: b } };
    });
    const first = n === 0, last = n === low.launches.length - 1;
    const pass = enc.beginComputePass(
      timestamps && (first || last)
        ? {
          timestampWrites: {
            querySet: timestamps,
            ...(first ? { beginningOfPassWriteIndex: 0 } : {}),
            ...(last ? { endOfPassWriteIndex: 1 } : {}),
          },
        }
        : {},
    );
    pass.setPipeline(p);
    pass.setBindGroup(0, gpu.device.createBindGroup({ layout: p.getBindGroupLayout(0), entries }));
    pass.dispatchWorkgroups(...l.workgroups);
    pass.end();
  }
};

/** Read a buffer back as bytes. */
export const download = async (gpu: Gpu, b: GPUBuffer, bytes = b.size): Promise<Uint8Array> => {
  const size = Math.ceil(bytes / 4) * 4;
  const st = gpu.device.createBuffer({ size, usage: MAP_READ | COPY_DST });
  const enc = gpu.device.createCommandEncoder();
  enc.copyBufferToBuffer(b, 0, st, 0, size);
  gpu.device.queue.submit([enc.finish()]);
  await st.mapAsync(MAP_MODE_READ);
  const out = new Uint8Array(st.getMappedRange().slice(0, bytes));
  st.unmap();
  st.destroy();
  return out;
};

const viewAs = (d: TensorDesc, bytes: Uint8Array): HostTensor => {
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  const data = d.dtype === "f32"
    ? new Float32Array(buf)
    : d.dtype === "i32"
    ? new Int32Array(buf)
    : d.dtype === "f16"
    ? new Uint16Array(buf, 0, numel(d.shape))
    : new Uint32Array(buf);
  return { desc: d, data } as HostTensor;
};

/**
 * Run an operator's GPU lowering on host inputs; returns host outputs. Throws on compile or validation errors.
 * `params` must already be decoded.
 */
export const runOperatorGpu = async <I extends Ports, O extends Ports>(
  gpu: Gpu,
  op: AnyOperator,
  params: unknown,
  inputs: { readonly [K in keyof I]: HostTensor },
): Promise<{ [K in keyof O]: HostTensor }> => {
  const inDescs = Object.fromEntries(Object.entries(inputs).map(([k, t]) => [k, t.desc])) as DescsOf<Ports>;
  const outDescs = await Effect.runPromise(op.infer(params, inDescs));
  if (!op.gpu) throw new Error(`${op.name} has no GPU lowering`);
  const low = op.gpu(params, inDescs, gpu.features);
  const bufs: BufferSet = new Map();
  for (const [k, t] of Object.entries(inputs)) bufs.set(`in:${k}`, upload(gpu, t));
  for (const [k, d] of Object.entries(outDescs)) bufs.set(`out:${k}`, alloc(gpu, d as TensorDesc));
  const enc = gpu.device.createCommandEncoder();
  await encodeLowering(gpu, enc, low, bufs);
  gpu.device.queue.submit([enc.finish()]);
  const out: Record<string, HostTensor> = {};
  for (const [k, d] of Object.entries(outDescs)) {
    const desc = d as TensorDesc;
    out[k] = viewAs(desc, await download(gpu, bufs.get(`out:${k}`)!, descBytes(desc)));
  }
  for (const b of bufs.values()) b.destroy();
  return out as { [K in keyof O]: HostTensor };
};

/** The wgpu backend (`makeWgpuBackend` of the runtime), or undefined where it does not open (tests skip then). */
export const openWgpuBackend = (): Promise<Backend | undefined> =>
  import("../../runtime/src/backends/wgpu.ts")
    .then((m) => Effect.runPromise(m.makeWgpuBackend()))
    .catch(() => undefined);
