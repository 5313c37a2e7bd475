/**
 * Matmul throughput (TFLOP/s) of the generated kernels on every GPU backend available in this process —
 * wgpu-native through FFI (`wgpu`) and the runtime's built-in WebGPU (`webgpu`, Deno only) — timed with
 * GPU timestamp queries, in the same run so the two are comparable.
 *
 * For each backend and each of f32 (f32 accumulate), f16 (f16 and f32 accumulate) and, when the backend
 * exposes wgpu-native's cooperative matrix, f16 on the cooperative-matrix kernel, it tries a few tile
 * configurations (a small autotune), prints each, and appends the best per metric to
 * `benchmarks/results/backend.json` (metrics `matmul_f32_tflops`, `matmul_f16_tflops`,
 * `matmul_f16_coop_tflops`). Each configuration's result is verified on sampled entries against a float64
 * CPU dot product before its time counts. FLOPs = 2·M·N·K; time = median of `--reps` launches in one
 * timed submission (after one warm-up launch).
 *
 * Sizes: `--size N` (M = N = K), default 8192 on a discrete GPU and 256 on a CPU adapter (lavapipe).
 * Other flags: `--backends wgpu,webgpu`, `--reps 5`, `--no-write`, `--emulate-coop` (run the cooperative
 * kernels with emulated builtins, to test this script without tensor cores; implies `--no-write`),
 * `--budget-s 38` (stop trying configs
 * past this wall time, shared equally between the backends, to fit the device suite's 45 s step cap).
 *
 *   deno run -A benchmarks/device/matmul_bench.ts            # on the H200: bash .device/enter.sh deno run -A …
 *   bun benchmarks/device/matmul_bench.ts                    # wgpu only
 * @module
 */
import { Effect } from "effect";
import process from "node:process";
import type { Backend, DeviceBuffer, Kernel } from "@longctx/graph";
import { kernels as K } from "@longctx/ops";
import { appendRows, type RowInput } from "../lib/results.ts";
import { parseFlags } from "../lib/args.ts";

const args = parseFlags("deno run -A benchmarks/device/matmul_bench.ts [flags]", {
  reps: { kind: "int", default: 5, min: 1, help: "timed launches per configuration (the median counts)" },
  "budget-s": { kind: "number", default: 38, min: 1, help: "wall-time budget over all backends, seconds" },
  size: {
    kind: "int",
    min: 16,
    help: "matrix size n of the n³ matmul (default: 256 on a CPU adapter, else 8192)",
  },
  backends: { kind: "string", default: "wgpu,webgpu", help: "comma-separated backends to measure" },
  "emulate-coop": {
    kind: "switch",
    help: "run the cooperative kernels emulated, to test the plumbing (writes nothing)",
  },
  "no-write": { kind: "switch", help: "print only, append no rows" },
});
const reps = args.reps;
const budgetS = args["budget-s"];
/** Testing the plumbing without tensor cores: run the cooperative kernels emulated (never written). */
const emulateCoop = args["emulate-coop"];
const write = !args["no-write"] && !emulateCoop;
const wanted = args.backends.split(",");
const t0 = performance.now();
const elapsedS = () => (performance.now() - t0) / 1000;
/** Wall time (s) at which the current backend must stop trying configurations. */
let deadlineS = budgetS;

/** Open the GPU backends that load here. */
const openBackends = async (): Promise<Backend[]> => {
  const out: Backend[] = [];
  if (wanted.includes("wgpu")) {
    try {
      const path = "../../runtime/src/backends/wgpu.ts";
      // deno-lint-ignore no-explicit-any
      const m: any = await import(path);
      out.push(await Effect.runPromise(m.makeWgpuBackend()) as Backend);
    } catch (e) {
      console.log(`wgpu: unavailable — ${e instanceof Error ? e.message : e}`);
    }
  }
  if (wanted.includes("webgpu")) {
    if (!(globalThis.navigator as Navigator | undefined)?.gpu) console.log("webgpu: navigator.gpu absent");
    else {
      const { makeWebgpuBackend } = await import("../../runtime/src/backends/webgpu.ts");
      const r = await Effect.runPromise(Effect.result(makeWebgpuBackend()));
      if (r._tag === "Success") out.push(r.success);
      else console.log(`webgpu: unavailable — ${r.failure.message}`);
    }
  }
  return out;
};

/** Random nonzero f16 values in ±[2^-5, 1) as half bits, and the same values as f32 (exact). */
const randomHalves = (n: number, seed: number): { h: Uint16Array; f: Float32Array } => {
  const lut = new Float32Array(65536);
  for (let i = 0; i < 65536; i++) lut[i] = K.halfToFloat(i);
  const h = new Uint16Array(n);
  const f = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const r = s >>> 0;
    const bits = ((r & 1) << 15) | ((10 + ((r >>> 1) % 5)) << 10) | ((r >>> 4) & 0x3ff);
    h[i] = bits;
    f[i] = lut[bits];
  }
  return { h, f };
};

interface Variant {
  readonly metric: "matmul_f32_tflops" | "matmul_f16_tflops" | "matmul_f16_coop_tflops";
  readonly label: string;
  readonly plan: K.KernelPlan<K.MatmulSizes>;
  readonly inDtype: K.KDType;
  readonly outDtype: K.KDType;
  readonly fits: boolean;
  readonly wgBytes: number;
  readonly invocations: number;
  readonly rtol: number;
}

const variants = (n: number): Variant[] => {
  const s = { M: n, N: n, K: n };
  const out: Variant[] = [];
  const tiled = (metric: Variant["metric"], o: K.MatmulOptions) => {
    const c = K.matmulConfig(o);
    const plan = Effect.runSync(K.matmul(o));
    const wgBytes = K.matmulWorkgroupBytes(c);
    out.push({
      metric,
      label: plan.kernel.key,
      plan,
      inDtype: c.dtype,
      outDtype: c.dtype,
      fits: K.matmulFits(o, s),
      wgBytes,
      invocations: (c.tileM / c.threadM) * (c.tileN / c.threadN),
      rtol: c.dtype === "f32" ? 1e-5 : c.accum === "f32" ? 1e-3 : 2e-2,
    });
  };
  // Most promising first in each list (a budget cut drops the tail). `pipeline`: register prefetch of the
  // next K step + double-buffered workgroup memory (see benchmarks/device/NOTES.md, "Matmul v2").
  type Tile = Omit<K.MatmulOptions, "dtype" | "accum" | "aligned">;
  // Order and figures: wgpu-native on the H200, 8192³, suite runs of 2026-12-01 (benchmarks/results/backend.json).
  // Dropped after that run: f32 128×128×16 16×8 pipe (20.5), f16 128×256×32 16×16 pipe (3.4) and
  // 128×128×32 16×16 pipe (1.9): their register tiles spill.
  const f32Tiles: Tile[] = [
    { tileM: 128, tileN: 128, tileK: 16, threadM: 8, threadN: 8, pipeline: true }, // 39.7–39.8
    { tileM: 256, tileN: 128, tileK: 8, threadM: 16, threadN: 8, pipeline: true }, // 39.4
    { tileM: 128, tileN: 256, tileK: 16, threadM: 8, threadN: 16, pipeline: true }, // 38.8
    { tileM: 128, tileN: 128, tileK: 16, threadM: 8, threadN: 8 }, // 37.6
    { tileM: 64, tileN: 128, tileK: 16, threadM: 4, threadN: 8, pipeline: true }, // 36.0
    { tileM: 128, tileN: 128, tileK: 8, threadM: 8, threadN: 8, pipeline: true }, // 34.7
  ];
  const f16Tiles: Tile[] = [
    { tileM: 128, tileN: 128, tileK: 16, threadM: 16, threadN: 8 }, // 53.7–53.9
    { tileM: 128, tileN: 128, tileK: 16, threadM: 16, threadN: 8, pipeline: true }, // 46.9
    { tileM: 256, tileN: 128, tileK: 32, threadM: 16, threadN: 8, pipeline: true }, // 44.5
    { tileM: 128, tileN: 256, tileK: 16, threadM: 8, threadN: 16, pipeline: true }, // 43.8
    { tileM: 128, tileN: 128, tileK: 32, threadM: 16, threadN: 8, pipeline: true }, // 31.8
  ];
  for (const t of f32Tiles) tiled("matmul_f32_tflops", { dtype: "f32", aligned: true, ...t });
  for (const t of f16Tiles) tiled("matmul_f16_tflops", { dtype: "f16", accum: "f16", aligned: true, ...t });
  tiled("matmul_f16_tflops", { dtype: "f16", accum: "f32", aligned: true, ...f32Tiles[0] });
  const coops: K.CoopMatmulOptions[] = [
    { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 32 },
    { warpsM: 2, warpsN: 4, fragsM: 4, fragsN: 2, tileK: 32 },
    { warpsM: 4, warpsN: 2, fragsM: 2, fragsN: 4, tileK: 16 },
    { warpsM: 2, warpsN: 2, fragsM: 2, fragsN: 2, tileK: 32 },
    { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 32, accum: "f16" },
  ];
  for (const o0 of coops) {
    const o = { ...o0, aligned: true, emulate: emulateCoop };
    const c = K.coopMatmulConfig(o);
    const plan = Effect.runSync(K.coopMatmul(o));
    out.push({
      metric: "matmul_f16_coop_tflops",
      label: plan.kernel.key,
      plan,
      inDtype: "f16",
      outDtype: c.accum,
      fits: K.coopMatmulFits(o, s),
      wgBytes: K.coopWorkgroupBytes(o),
      invocations: c.subgroupSize * c.warpsM * c.warpsN,
      rtol: c.accum === "f32" ? 1e-3 : 2e-2,
    });
  }
  // Round-robin over metrics (first guess of each first), so a budget cut drops the long tail, not a metric.
  const byMetric = new Map<string, Variant[]>();
  for (const v of out) byMetric.set(v.metric, [...(byMetric.get(v.metric) ?? []), v]);
  const lists = [...byMetric.values()];
  const order: Variant[] = [];
  for (let i = 0; order.length < out.length; i++) for (const l of lists) if (i < l.length) order.push(l[i]);
  return order;
};

const hasCoop = (b: Backend) =>
  emulateCoop ? b.features.has("shader-f16") : [...b.features].some((f) => /cooperative.?matrix/i.test(f));

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

interface Best {
  readonly tflops: number;
  readonly ms: number;
  readonly v: Variant;
  readonly maxRelErr: number;
}

const benchBackend = async (b: Backend, n: number) => {
  console.log(`\n== ${b.kind}: ${b.adapter.name} (${b.adapter.api}, ${b.adapter.driver}) size ${n}³`);
  if (!b.features.has("timestamp-query")) {
    console.log("  no timestamp-query: skipped");
    return;
  }
  const nn = n * n;
  const A = randomHalves(nn, 12345);
  const B = randomHalves(nn, 67890);
  const run = <X, E>(e: Effect.Effect<X, E>) => Effect.runPromise(e);
  const bufs: DeviceBuffer[] = [];
  const alloc = async (bytes: number, label: string) => {
    const x = await run(b.allocate(bytes, label));
    bufs.push(x);
    return x;
  };
  try {
    const a32 = await alloc(nn * 4, "A f32");
    const b32 = await alloc(nn * 4, "B f32");
    const a16 = await alloc(nn * 2, "A f16");
    const b16 = await alloc(nn * 2, "B f16");
    const c = await alloc(nn * 4, "C");
    const u = await alloc(16, "uniform");
    await run(b.upload(a32, A.f));
    await run(b.upload(b32, B.f));
    await run(b.upload(a16, A.h));
    await run(b.upload(b16, B.h));
    await run(b.upload(u, K.u32Uniform(n, n, n)));
    const coop = hasCoop(b);
    if (!coop) {
      console.log("  cooperative matrix: not exposed by this backend/adapter — coop variants skipped");
    }
    const best = new Map<string, Best>();
    const tried = new Map<string, number>();
    // Plain kernels first, then (riskiest: experimental driver path) the cooperative ones, after the plain
    // rows are written, with a share of the time reserved for them.
    const all = variants(n).filter((v) => v.metric !== "matmul_f16_coop_tflops" || coop);
    const plain = all.filter((v) => v.metric !== "matmul_f16_coop_tflops");
    const coopVs = all.filter((v) => v.metric === "matmul_f16_coop_tflops");
    const backendDeadline = deadlineS;
    const reserve = coopVs.length ? 0.35 * Math.max(0, backendDeadline - elapsedS()) : 0;
    deadlineS = backendDeadline - reserve;
    for (const v of [...plain, ...coopVs]) {
      if (v === coopVs[0]) {
        await flush(best, tried);
        deadlineS = backendDeadline;
      }
      if ((v.inDtype === "f16" || v.outDtype === "f16") && !b.features.has("shader-f16")) continue;
      if (!v.fits) continue;
      if (v.wgBytes > b.limits.maxComputeWorkgroupStorageSize) {
        console.log(`  ${v.label}: needs ${v.wgBytes} B of workgroup memory > limit, skipped`);
        continue;
      }
      if (v.invocations > b.limits.maxComputeInvocationsPerWorkgroup) {
        console.log(`  ${v.label}: ${v.invocations} invocations > limit, skipped`);
        continue;
      }
      if (elapsedS() > deadlineS) {
        console.log(`  ${v.label}: skipped, past this backend's share of the ${budgetS} s budget`);
        continue;
      }
      const kernel: Kernel = v.plan.kernel;
      const compiled = await run(Effect.result(b.compile(kernel)));
      if (compiled._tag === "Failure") {
        console.log(
          `  ${v.label}: compile failed — ${compiled.failure.message.split("\n").slice(0, 6).join(" | ")}`,
        );
        continue;
      }
      const launch = {
        kernel,
        buffers: v.inDtype === "f32" ? [a32, b32, c, u] : [a16, b16, c, u],
        workgroups: v.plan.workgroups({ M: n, N: n, K: n }),
      };
      const r = await run(Effect.result(Effect.andThen(
        b.dispatch([launch]),
        () => b.dispatch(Array.from({ length: reps }, () => launch), { timed: true }),
      )));
      if (r._tag === "Failure") {
        console.log(`  ${v.label}: dispatch failed — ${r.failure.message}`);
        continue;
      }
      const ms = median(r.success!.perLaunchMs);
      const tflops = K.matmulFlops({ M: n, N: n, K: n }) / (ms * 1e-3) / 1e12;
      // Sampled correctness check (16 entries) against float64 dot products.
      let maxRelErr = 0;
      let ok = true;
      const es = v.outDtype === "f32" ? 4 : 2;
      for (let i = 0; i < 16; i++) {
        const m = (i * 2654435761 >>> 0) % n;
        const col = ((i + 7) * 40503 >>> 0) % n;
        const idx = m * n + col;
        const off = Math.floor((idx * es) / 4) * 4;
        const raw = await run(b.download(c, off, 4));
        const got = es === 4
          ? new Float32Array(raw.buffer)[0]
          : K.halfToFloat(new Uint16Array(raw.buffer)[(idx * es - off) / 2]);
        let ref = 0;
        let scale = 0;
        for (let k = 0; k < n; k++) {
          const p = A.f[m * n + k] * B.f[k * n + col];
          ref += p;
          scale += Math.abs(p);
        }
        const rel = Math.abs(got - ref) / scale;
        maxRelErr = Math.max(maxRelErr, rel);
        if (!(rel <= v.rtol)) ok = false;
      }
      tried.set(v.metric, (tried.get(v.metric) ?? 0) + 1);
      console.log(
        `  ${v.label}: ${ms.toFixed(3)} ms, ${tflops.toPrecision(4)} TFLOP/s, sampled max |err|/Σ|ab| ${
          maxRelErr.toExponential(2)
        } ${ok ? "ok" : `FAILED (> ${v.rtol})`}`,
      );
      if (!ok) continue;
      const prev = best.get(v.metric);
      if (!prev || tflops > prev.tflops) best.set(v.metric, { tflops, ms, v, maxRelErr });
    }
    await flush(best, tried);
  } finally {
    for (const x of bufs) b.release(x);
  }

  /** Append the best row per metric found so far (and forget them), so a later crash loses nothing. */
  async function flush(best: Map<string, Best>, tried: Map<string, number>) {
    const rows: RowInput[] = [];
    for (const [metric, x] of best) {
      console.log(`  best ${metric}: ${x.tflops.toPrecision(4)} TFLOP/s (${x.v.label})`);
      rows.push({
        metric,
        value: Number(x.tflops.toPrecision(4)),
        unit: "TFLOP/s",
        backend: b.kind,
        gpu: b.adapter.name,
        ...(b.adapter.driver ? { driver: b.adapter.driver } : {}),
        op: "matmul",
        dtype: x.v.inDtype,
        flops: K.matmulFlops({ M: n, N: n, K: n }),
        timeMs: Number(x.ms.toFixed(4)),
        params: {
          M: n,
          N: n,
          K: n,
          kernel: x.v.label,
          configsTried: tried.get(metric) ?? 0,
          reps,
          sampledMaxRelErr: Number(x.maxRelErr.toExponential(3)),
        },
      });
    }
    best.clear();
    if (write && rows.length) {
      await appendRows("backend", rows);
      console.log(`  appended ${rows.length} rows to benchmarks/results/backend.json`);
    }
  }
};

const backends = await openBackends();
for (const [i, b] of backends.entries()) {
  // Each backend gets an equal share of what is left of the budget.
  // (at least 10 s, so an overrun of one backend does not starve the next).
  deadlineS = elapsedS() + Math.max(10, (budgetS - elapsedS()) / (backends.length - i));
  const cpuLike = /llvmpipe|lavapipe|swiftshader|cpu/i.test(b.adapter.name);
  const n = args.size ?? (cpuLike ? 256 : 8192);
  try {
    await benchBackend(b, n);
  } catch (e) {
    console.log(`  ${b.kind}: failed — ${e instanceof Error ? e.message : e}`);
  } finally {
    await Effect.runPromise(b.close());
  }
}
console.log(`done in ${elapsedS().toFixed(1)} s`);
process.exit(0);
