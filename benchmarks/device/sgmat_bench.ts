/**
 * Subgroup-matrix (tensor-core) f16 matmul on the `dawn` backend: `--size`³ (default 8192) for each of a list
 * of tile configurations of `ops/kernels/matmul_sgmat.ts` (f32 and f16 accumulation), timed with GPU
 * timestamp queries (2 s of warm-up first; per configuration one warm-up launch, then the median of `--reps`
 * launches in one submission; the whole list twice, the better pass counts), each
 * verified on 32 sampled entries against a float64 dot product before its time counts; and, in the same
 * run, cuBLAS through PyTorch (`benchmarks/device/matmul_peer.py`) on the same GPU.
 *
 * Appends to `benchmarks/results/backend.json`: metric `matmul_f16_tensor_tflops`, the best configuration
 * per accumulation type (backend `dawn`, params.accum) and the cuBLAS row (impl `cublas`); every
 * configuration's figure is printed. `--no-write` prints only; `--no-peer` skips PyTorch;
 * `--only a,b` runs the configurations whose labels contain one of the strings.
 *
 *   bash .device/go.sh deno run -A benchmarks/device/sgmat_bench.ts          # on the H200
 * @module
 */
import { Effect } from "effect";
import process from "node:process";
import { spawnSync } from "node:child_process";
import type { Backend, DeviceBuffer } from "@longctx/graph";
import { kernels as K } from "@longctx/ops";
import { makeDawnBackend, subgroupMatrixConfigs } from "../../runtime/src/backends/dawn.ts";
import { appendRows, type RowInput } from "../lib/results.ts";
import { parseFlags } from "../lib/args.ts";

const args = parseFlags("deno run -A benchmarks/device/sgmat_bench.ts [flags]", {
  size: { kind: "int", default: 8192, min: 16, help: "matrix size n of the n³ matmul" },
  reps: { kind: "int", default: 10, min: 1, help: "timed launches per configuration (the median counts)" },
  "no-write": { kind: "switch", help: "print only, append no rows" },
  "no-peer": { kind: "switch", help: "skip cuBLAS through PyTorch" },
  only: {
    kind: "string",
    help: "run the configurations whose labels contain one of these comma-separated strings (default: all)",
  },
});
const n = args.size;
const reps = args.reps;
const write = !args["no-write"];
const peer = !args["no-peer"];
const only = args.only?.split(",");

/** The configurations, most promising first within each accumulation type. */
const CONFIGS: K.SgmatMatmulOptions[] = [
  { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 32 },
  { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 32, pipeline: true },
  { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 64 },
  { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 32, pad: 0 },
  { warpsM: 4, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 32 },
  { warpsM: 4, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 32, pipeline: true },
  { warpsM: 2, warpsN: 4, fragsM: 4, fragsN: 4, tileK: 32, pipeline: true },
  { warpsM: 4, warpsN: 4, fragsM: 4, fragsN: 4, tileK: 16, pipeline: true },
  { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 32, accum: "f16" },
  { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 32, pipeline: true, accum: "f16" },
  { warpsM: 4, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 32, pipeline: true, accum: "f16" },
  { warpsM: 2, warpsN: 2, fragsM: 8, fragsN: 4, tileK: 32, pipeline: true, accum: "f16" },
  { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 8, tileK: 32, pipeline: true, accum: "f16" },
  { warpsM: 4, warpsN: 4, fragsM: 4, fragsN: 4, tileK: 16, pipeline: true, accum: "f16" },
  // Added after run 7 (the 256×128 / 128×256 tiles that fit 48 KiB).
  { warpsM: 4, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 16, pipeline: true },
  { warpsM: 2, warpsN: 4, fragsM: 4, fragsN: 4, tileK: 32 },
  { warpsM: 4, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 64 },
  { warpsM: 4, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 32, accum: "f16" },
  { warpsM: 2, warpsN: 4, fragsM: 4, fragsN: 4, tileK: 32, accum: "f16" },
  { warpsM: 2, warpsN: 2, fragsM: 8, fragsN: 4, tileK: 32, accum: "f16" },
  { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 8, tileK: 32, accum: "f16" },
  { warpsM: 4, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 16, pipeline: true, accum: "f16" },
  { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 4, tileK: 64, accum: "f16" },
];

/** Random nonzero f16 values in ±[2^-5, 1) as half bits, and the same values as f32 (exact). */
const randomHalves = (len: number, seed: number): { h: Uint16Array; f: Float32Array } => {
  const h = new Uint16Array(len);
  const f = new Float32Array(len);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const r = s >>> 0;
    const bits = ((r & 1) << 15) | ((10 + ((r >>> 1) % 5)) << 10) | ((r >>> 4) & 0x3ff);
    h[i] = bits;
    f[i] = K.halfToFloat(bits);
  }
  return { h, f };
};

const run = <X, E>(e: Effect.Effect<X, E>) => Effect.runPromise(e);
const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

interface Result {
  readonly label: string;
  readonly accum: K.KDType;
  readonly ms: number;
  readonly tflops: number;
  readonly err: number;
}

const bench = async (b: Backend): Promise<Result[]> => {
  const nn = n * n;
  const A = randomHalves(nn, 12345);
  const B = randomHalves(nn, 67890);
  const bufs: DeviceBuffer[] = [];
  const alloc = async (bytes: number, label: string) => {
    const x = await run(b.allocate(bytes, label));
    bufs.push(x);
    return x;
  };
  const out: Result[] = [];
  try {
    const a16 = await alloc(nn * 2, "A");
    const b16 = await alloc(nn * 2, "B");
    const c = await alloc(nn * 4, "C");
    const u = await alloc(16, "uniform");
    await run(b.upload(a16, A.h));
    await run(b.upload(b16, B.h));
    await run(b.upload(u, K.u32Uniform(n, n, n)));
    // Warm-up: ~2 s of the first configuration, so clocks have left idle (345 MHz) before anything is timed.
    {
      const plan = Effect.runSync(K.sgmatMatmul({ ...CONFIGS[0], aligned: true }));
      const launch = {
        kernel: plan.kernel,
        buffers: [a16, b16, c, u],
        workgroups: plan.workgroups({ M: n, N: n, K: n }),
      };
      const t0 = performance.now();
      while (performance.now() - t0 < 2000) {
        await run(b.dispatch(Array.from({ length: 20 }, () => launch), { timed: true }));
      }
    }
    for (
      const [pass, o0] of [
        ...CONFIGS.map((o) => [1, o] as const),
        ...CONFIGS.map((o) => [2, o] as const),
      ]
    ) {
      const o = { ...o0, aligned: true };
      const plan = Effect.runSync(K.sgmatMatmul(o));
      const cfg = K.sgmatMatmulConfig(o);
      const label = `${plan.kernel.key} (pass ${pass})`;
      if (only && !only.some((s) => label.includes(s))) continue;
      if (!K.sgmatMatmulFits(o, { M: n, N: n, K: n })) continue;
      const wg = K.sgmatWorkgroupBytes(o);
      if (wg > b.limits.maxComputeWorkgroupStorageSize) {
        console.log(
          `  ${label}: ${wg} B of workgroup memory > ${b.limits.maxComputeWorkgroupStorageSize}, skipped`,
        );
        continue;
      }
      const compiled = await run(Effect.result(b.compile(plan.kernel)));
      if (compiled._tag === "Failure") {
        console.log(
          `  ${label}: compile failed — ${compiled.failure.message.split("\n").slice(0, 8).join(" | ")}`,
        );
        continue;
      }
      const launch = {
        kernel: plan.kernel,
        buffers: [a16, b16, c, u],
        workgroups: plan.workgroups({ M: n, N: n, K: n }),
      };
      const r = await run(Effect.result(Effect.andThen(
        b.dispatch([launch]),
        () => b.dispatch(Array.from({ length: reps }, () => launch), { timed: true }),
      )));
      if (r._tag === "Failure") {
        console.log(`  ${label}: dispatch failed — ${r.failure.message}`);
        continue;
      }
      const ms = median(r.success!.perLaunchMs);
      const tflops = K.matmulFlops({ M: n, N: n, K: n }) / (ms * 1e-3) / 1e12;
      const es = cfg.accum === "f32" ? 4 : 2;
      let err = 0;
      for (let i = 0; i < 32; i++) {
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
          const pr = A.f[m * n + k] * B.f[k * n + col];
          ref += pr;
          scale += Math.abs(pr);
        }
        err = Math.max(err, Math.abs(got - ref) / scale);
      }
      const tol = cfg.accum === "f32" ? 1e-3 : 2e-2;
      const ok = err <= tol;
      console.log(
        `  ${label}: ${ms.toFixed(3)} ms, ${tflops.toFixed(1)} TFLOP/s, sampled max |err|/Σ|ab| ${
          err.toExponential(2)
        } ${ok ? "ok" : `FAILED (> ${tol})`}`,
      );
      if (ok) out.push({ label: plan.kernel.key, accum: cfg.accum, ms, tflops, err });
    }
  } finally {
    for (const x of bufs) b.release(x);
  }
  return out;
};

const opened = await run(Effect.result(makeDawnBackend()));
if (opened._tag === "Failure") {
  console.log(`sgmat_bench: dawn unavailable — ${opened.failure.message}`);
  process.exit(1);
}
const b = opened.success;
const cfgs = subgroupMatrixConfigs(b);
console.log(`== dawn: ${b.adapter.name} (${b.adapter.vendor}, ${b.adapter.api}) ${n}³`);
console.log(
  `  subgroup-matrix configs: ${
    cfgs.map((c) => `${c.component}->${c.result} ${c.M}x${c.N}x${c.K}`).join(", ")
  }`,
);
console.log(`  max workgroup memory ${b.limits.maxComputeWorkgroupStorageSize} B`);
const results = cfgs.length ? await bench(b) : [];
await run(b.close());

const rows: RowInput[] = [];
for (const accum of ["f32", "f16"] as const) {
  const best = results.filter((r) => r.accum === accum).sort((x, y) => y.tflops - x.tflops)[0];
  if (!best) continue;
  console.log(`  best acc-${accum}: ${best.tflops.toFixed(1)} TFLOP/s (${best.label})`);
  rows.push({
    metric: "matmul_f16_tensor_tflops",
    value: Number(best.tflops.toFixed(1)),
    unit: "TFLOP/s",
    backend: "dawn",
    impl: `sgmat-acc-${accum}`,
    op: "matmul",
    dtype: "f16",
    flops: K.matmulFlops({ M: n, N: n, K: n }),
    timeMs: Number(best.ms.toFixed(4)),
    params: {
      M: n,
      N: n,
      K: n,
      accum,
      kernel: best.label,
      configsTried: results.length,
      reps,
      sampledMaxRelErr: Number(best.err.toExponential(3)),
    },
  });
}
if (peer) {
  const py = spawnSync("python3", ["benchmarks/device/matmul_peer.py", "--size", String(n)], {
    encoding: "utf8",
    timeout: 300_000,
  });
  process.stderr.write(py.stderr ?? "");
  if (py.status === 0) {
    for (const r of JSON.parse(py.stdout) as RowInput[]) {
      rows.push({ ...r, command: "python3 benchmarks/device/matmul_peer.py --size " + n });
    }
  } else console.log(`sgmat_bench: matmul_peer.py failed (${py.status})`);
}
if (write && rows.length) {
  await appendRows("backend", rows);
  console.log(`  appended ${rows.length} rows to benchmarks/results/backend.json`);
}
process.exit(0);
