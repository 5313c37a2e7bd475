/**
 * Backend device benchmark: `copy_tbps` (this section) and the matmul rates (added by the kernel-library
 * section below) for every GPU backend available in this run — `wgpu` (wgpu-native through FFI) and, under
 * Deno, `webgpu` (Deno's built-in `navigator.gpu`) — measured in the same process so they compare.
 *
 * Run: `deno run -A benchmarks/device/backend_bench.ts` (H200: `bash .device/enter.sh deno run -A
 * benchmarks/device/backend_bench.ts`). Appends rows to `benchmarks/results/backend.json` through
 * `appendRows("backend", …)` (fields metric, value, unit, backend, gpu, driver, date, commit, command).
 *
 * Copy: a vec4<f32> copy kernel `dst[i] = src[i]` over a buffer sized from the adapter's limits
 * (min(1 GiB, maxStorageBufferBindingSize, maxBufferSize) on a discrete GPU; 32 MiB on a CPU adapter such
 * as llvmpipe). Bandwidth = (bytes read + bytes written) / GPU time of one launch, from timestamp queries;
 * the median over 20 timed launches (after 3 warm-up launches) is reported, in TB/s (10^12 bytes/s).
 * @module
 */
import { Effect } from "effect";
import type { Backend, BackendError, Kernel } from "@longctx/graph";
import { appendRows } from "../lib/results.ts";
import { makeWgpuBackend } from "../../runtime/src/backends/wgpu.ts";

/** Result row as this script produces it (provenance filled by `appendRows`). */
export interface BenchRow {
  readonly metric: string;
  readonly value: number;
  readonly unit: string;
  readonly backend: string;
  readonly gpu?: string;
  readonly driver?: string;
  readonly bytes?: number;
  readonly flops?: number;
  readonly timeMs?: number;
  readonly dtype?: string;
  readonly params?: Record<string, string | number | boolean>;
}

/** Append rows to `benchmarks/results/backend.json` (the shared writer fills date, commit, command). */
export const rows = async (out: readonly BenchRow[]): Promise<void> => {
  await appendRows("backend", out as Parameters<typeof appendRows>[1]);
};

/** A backend to measure with its label and the GPU name for the rows. */
export interface BenchTarget {
  readonly label: "wgpu" | "webgpu";
  readonly backend: Backend;
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

const COPY_X = 32768; // workgroups along x; y covers the rest

const copyKernel: Kernel = {
  key: "bench.copy_vec4",
  entryPoint: "main",
  bindings: ["read", "read_write"],
  wgsl: `
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let i = (wg.y * ${COPY_X}u + wg.x) * 256u + li;
  if (i < arrayLength(&src)) { dst[i] = src[i]; }
}`,
};

/**
 * Measure vec4 copy bandwidth on `t.backend`. Returns one `copy_tbps` row (TB/s, read + write bytes over
 * GPU ms of one launch, median of 20 timed launches). Fails with the backend's typed errors.
 */
export const benchCopy = (t: BenchTarget) =>
  Effect.gen(function* () {
    const b = t.backend;
    const isCpu = /llvmpipe|lavapipe|swiftshader|cpu/i.test(`${b.adapter.name} ${b.adapter.driver}`);
    const cap = Math.min(2 ** 30, b.limits.maxStorageBufferBindingSize, b.limits.maxBufferSize);
    const bytes = isCpu ? 32 * 2 ** 20 : Math.floor(cap / (16 * 256)) * 16 * 256;
    const src = yield* b.allocate(bytes, "copy-src");
    const dst = yield* b.allocate(bytes, "copy-dst");
    const fill = new Float32Array(Math.min(bytes, 64 * 2 ** 20) / 4).map((_, i) => (i % 977) * 0.5);
    for (let off = 0; off < bytes; off += fill.byteLength) {
      yield* b.upload(src, fill.subarray(0, Math.min(fill.length, (bytes - off) / 4)), off);
    }
    const groups = bytes / 16 / 256;
    const launch = {
      kernel: copyKernel,
      buffers: [src, dst],
      workgroups: [Math.min(groups, COPY_X), Math.ceil(groups / COPY_X), 1] as const,
    };
    yield* b.dispatch([launch, launch, launch]);
    const timing = yield* b.dispatch(Array(20).fill(launch), { timed: true });
    // Spot-check the copy (first and last 4 KiB).
    const head = new Float32Array((yield* b.download(dst, 0, 4096)).slice().buffer);
    for (let i = 0; i < head.length; i++) {
      if (head[i] !== (i % 977) * 0.5) return yield* Effect.die(new Error(`copy mismatch at ${i}`));
    }
    b.release(src);
    b.release(dst);
    const ms = median(timing!.perLaunchMs);
    const moved = 2 * bytes;
    return {
      metric: "copy_tbps",
      value: moved / (ms * 1e-3) / 1e12,
      unit: "TB/s",
      backend: t.label,
      gpu: b.adapter.name,
      driver: b.adapter.driver,
      bytes: moved,
      timeMs: ms,
      dtype: "f32",
      params: { bufferBytes: bytes, launches: timing!.perLaunchMs.length, kernel: "vec4 copy, 256 threads" },
    } satisfies BenchRow;
  });

/** Open every GPU backend this runtime has: wgpu always tried; webgpu under Deno with navigator.gpu. */
export const openTargets = async (): Promise<BenchTarget[]> => {
  const out: BenchTarget[] = [];
  const open = <B extends Backend>(label: "wgpu" | "webgpu", e: Effect.Effect<B, BackendError>) =>
    Effect.runPromise(Effect.match(e, {
      onFailure: (err) => console.error(`${label} backend unavailable: ${err.reason}: ${err.message}`),
      onSuccess: (backend) => void out.push({ label, backend }),
    }));
  await open("wgpu", makeWgpuBackend());
  if ("Deno" in globalThis && (globalThis as { navigator?: { gpu?: unknown } }).navigator?.gpu) {
    const { makeWebgpuBackend } = await import("../../runtime/src/backends/webgpu.ts");
    await open("webgpu", makeWebgpuBackend());
  }
  return out;
};

if (import.meta.main) {
  const targets = await openTargets();
  const out: BenchRow[] = [];
  for (const t of targets) {
    console.log(`${t.label}: ${t.backend.adapter.name} (${t.backend.adapter.driver})`);
    const r = await Effect.runPromise(benchCopy(t));
    console.log(
      `  copy: ${r.value.toFixed(3)} TB/s (${r.timeMs.toFixed(3)} ms for ${
        (r.bytes / 2 ** 20).toFixed(0)
      } MiB moved)`,
    );
    out.push(r);
  }
  // ---- matmul section (kernel-library engineer): push matmul_f32_tflops / matmul_f16_tflops rows here ----
  await rows(out);
  for (const t of targets) await Effect.runPromise(t.backend.close());
}
