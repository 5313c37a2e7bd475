/**
 * HiP speed on a GPU (written for the H200): the Llama-3.1-8B head layout (32 query heads, 8 KV heads, head
 * dim 128), structured synthetic inputs (ops/sale/synthetic.ts: sinks, locality, heavy hitters; generated on
 * the device), the registry's `hip` technique (`hip.mask` → `dense.indexAttn`) against our dense kernel and
 * PyTorch SDPA (flash, cuDNN; benchmarks/device/sdpa_peer.py) in the same job.
 *
 * - **Prefill cost curve** (`--contexts`, default 8K…128K, f16): mask-search time and total time per context,
 *   with our dense flash kernel on the same device buffers; the search time fitted as `a · T log2 T` and as a
 *   power law `c · T^e` (rows `search_fit_exponent`, `search_fit_tlogt_rel_residual`): O(T log T) shows as
 *   e ≈ 1.1, O(T²) as e ≈ 2.
 * - **Decode** (`--decode-contexts`, default 32K, 64K, 128K, f32 — our dense decode, split-KV, is f32): per
 *   token attention latency of one query against T cached keys: the mask search (`hip.mask`, seq 1), the
 *   attention over the mask (`dense.indexAttn`), HiP's per-token cost with the mask refreshed every
 *   `refresh` steps (attention + search / refresh), our dense decode, and SDPA decode.
 *
 * Run (repo root, on the GPU machine): `bash .device/go.sh deno run -A benchmarks/device/hip_bench.ts`
 * Options: `--contexts=8192,…,131072 --decode-contexts=32768,65536,131072 --top-k=512 --head-chunk=8
 * --backend=webgpu --no-peer --no-dense-above=0 --out=benchmarks/results/hip.json`.
 * Timing: GPU timestamps per launch (summed per node), else wall clock; median of 3 runs (prefill ≤ 32K; 1
 * above), of 20 runs for decode. Writes rows `{metric, value, unit, context, impl, …}` to `--out` (and
 * `$OUT/hip.json` when `$OUT` is set).
 * @module
 */
import { Effect } from "effect";
import { type Backend, decodeTechniqueParams, type Graph, lower, type Program } from "@longctx/graph";
import { dense, hip } from "@longctx/ops";
import { gitCommit } from "../lib/results.ts";
import {
  fillSynthetic,
  gpuRunner,
  headGroup,
  median,
  openBenchBackend,
  sdpaPeer,
  writeDeviceRows,
} from "../lib/gpu_run.ts";
import { parseFlags } from "../lib/args.ts";

const args = parseFlags("deno run -A benchmarks/device/hip_bench.ts [flags]", {
  contexts: {
    kind: "list",
    default: [8192, 16384, 32768, 65536, 131072],
    min: 1,
    help: "prefill context lengths (tokens)",
  },
  "decode-contexts": {
    kind: "list",
    default: [32768, 65536, 131072],
    min: 1,
    help: "cached tokens of the decode measurements",
  },
  heads: { kind: "int", default: 32, min: 1, help: "query heads" },
  "kv-heads": { kind: "int", default: 8, min: 1, help: "KV heads (divides --heads)" },
  dim: { kind: "int", default: 128, min: 32, help: "head dim (a multiple of 32)" },
  "top-k": { kind: "int", default: 512, min: 0, help: "HiP's k: keys selected per query block" },
  "head-chunk": { kind: "int", default: 8, min: 1, help: "query heads per prefill program (GQA ratio kept)" },
  "no-dense-above": {
    kind: "int",
    default: 0,
    min: 0,
    help: "skip our dense prefill above this context (0: never)",
  },
  "no-peer": { kind: "switch", help: "skip PyTorch SDPA" },
  backend: { kind: "string", default: "webgpu", choices: ["webgpu", "wgpu", "dawn"], help: "the backend" },
  out: { kind: "string", default: "benchmarks/results/hip.json", help: "results file to write" },
});

const H = args.heads, HK = args["kv-heads"], D = args.dim, GROUP = headGroup(H, HK);
const contexts = args.contexts;
const decodeContexts = args["decode-contexts"];
const noDenseAbove = args["no-dense-above"];
const t0 = performance.now();

const backend: Backend = await openBenchBackend("hip_bench", args.backend);
const wgMem = Math.min(backend.limits.maxComputeWorkgroupStorageSize, 65536);
const maxBinding = Math.min(backend.limits.maxStorageBufferBindingSize, backend.limits.maxBufferSize);
const gpuName = Deno.env.get("LONGCTX_GPU_NAME") ?? backend.adapter.name;
console.error(`hip_bench: ${backend.kind} on ${backend.adapter.name}, workgroup memory ${wgMem} B`);
const p = await Effect.runPromise(decodeTechniqueParams(hip.hipTechnique, {
  topK: args["top-k"],
  workgroupMemory: wgMem,
}));
const runner = gpuRunner(backend);

interface Row {
  metric: string;
  value: number;
  unit: string;
  context?: number;
  impl?: string;
  [k: string]: unknown;
}
const rows: Row[] = [];

/** Fill a program's q, k, v with structured synthetic data (chunk `c`), on the device. */
const fill = (
  prog: Program,
  hc: number,
  hkc: number,
  S: number,
  kS: number,
  dtype: "f16" | "f32",
  c: number,
) =>
  fillSynthetic(
    backend,
    [[0, hc, S, prog.buffer("q")], [1, hkc, kS, prog.buffer("k")], [2, hkc, kS, prog.buffer("v")]],
    D,
    GROUP,
    dtype,
    1 + c,
  );

const isMask = (op: string) => op.startsWith("hip.mask");
let warmed = false;
const warm = async (prog: Program) => {
  // an idle H200 runs at a low SM clock until it has been busy for a while
  const w0 = performance.now(), ms = warmed ? 300 : 2000;
  do await runner.run(prog); while (performance.now() - w0 < ms);
  warmed = true;
};

// ---- prefill
const prefill: { S: number; search: number; total: number }[] = [];
for (const S of contexts) {
  let HC = Math.min(H, args["head-chunk"]);
  while (HC > GROUP && HC * S * D * 4 > maxBinding / 4) HC /= 2;
  const HKC = HC / GROUP, reps = S <= 32768 ? 3 : 1;
  const dims = { heads: HC, kvHeads: HKC, headDim: D, seq: S, kvSeq: S };
  const qd = { dtype: "f16", dims: ["heads", "seq", "headDim"], shape: [HC, S, D] } as const;
  const kd = { dtype: "f16", dims: ["kvHeads", "kvSeq", "headDim"], shape: [HKC, S, D] } as const;
  const hipG: Graph = await Effect.runPromise(hip.hipTechnique.graph(p, dims, "prefill", "f16"));
  const hp = await Effect.runPromise(lower(hipG, backend, { q: qd, k: kd, v: kd }, { label: `hip.${S}` }));
  const withDense = noDenseAbove === 0 || S <= noDenseAbove;
  const dp = withDense
    ? await Effect.runPromise(lower(
      await Effect.runPromise(
        dense.denseTechnique.graph({ scale: 0, blockQ: 64, workgroupMemory: wgMem }, dims, "prefill", "f16"),
      ),
      backend,
      { q: qd, k: kd, v: kd },
      { bind: { q: hp.buffer("q"), k: hp.buffer("k"), v: hp.buffer("v") }, label: `dense.${S}` },
    ))
    : undefined;
  let dT = 0, mT = 0, aT = 0, dens = 0, err = 0;
  const chunks = H / HC;
  for (let c = 0; c < chunks; c++) {
    await fill(hp, HC, HKC, S, S, "f16", c);
    await warm(dp ?? hp);
    const d: number[] = [], m: number[] = [], a: number[] = [];
    for (let r = 0; r < reps; r++) {
      if (dp) d.push((await runner.run(dp)).ms);
      const hr = await runner.run(hp, true);
      let ms = 0, as = 0;
      for (const n of hr.nodes) isMask(n.op) ? (ms += n.gpuMs ?? n.ms) : (as += n.gpuMs ?? n.ms);
      m.push(ms);
      a.push(as);
    }
    if (dp) dT += median(d);
    mT += median(m);
    aT += median(a);
    const dv = (await Effect.runPromise(hp.read("density"))).data as Float32Array;
    dens += dv.reduce((x, y) => x + y, 0) / HC / chunks;
    if (c === 0 && dp) {
      const x = (await Effect.runPromise(hp.read("o"))).data as Float32Array;
      const y = (await Effect.runPromise(dp.read("o"))).data as Float32Array;
      let num = 0, den = 0;
      for (let i = 0; i < x.length; i++) {
        num += (x[i] - y[i]) ** 2;
        den += y[i] ** 2;
      }
      err = Math.sqrt(num / den);
    }
  }
  dp?.release();
  hp.release();
  prefill.push({ S, search: mT, total: mT + aT });
  console.error(
    `prefill S=${S}: hip ${(mT + aT).toFixed(2)} ms (search ${mT.toFixed(2)}, attention ${aT.toFixed(2)}), ` +
      (dp ? `dense ${dT.toFixed(2)} ms, speedup ${(dT / (mT + aT)).toFixed(2)}×, ` : "") +
      `density ${dens.toFixed(4)}, rel err vs dense ${err.toExponential(2)}`,
  );
  rows.push(
    { metric: "latency_ms", impl: "ours-hip", context: S, value: mT + aT, unit: "ms" },
    { metric: "latency_ms", impl: "ours-hip-search", context: S, value: mT, unit: "ms" },
    { metric: "latency_ms", impl: "ours-hip-attention", context: S, value: aT, unit: "ms" },
    { metric: "density", impl: "ours-hip", context: S, value: dens, unit: "fraction" },
  );
  if (dp) {
    rows.push(
      { metric: "latency_ms", impl: "ours-dense", context: S, value: dT, unit: "ms" },
      { metric: "speedup_vs_own_dense", impl: "ours-hip", context: S, value: dT / (mT + aT), unit: "x" },
      { metric: "output_rel_err", impl: "ours-hip", context: S, value: err, unit: "fraction" },
    );
  }
}

// Fits of the search time: least squares a·T log2 T (relative residual), and the power-law exponent.
if (prefill.length >= 3) {
  const x = prefill.map((r) => r.S * Math.log2(r.S)), y = prefill.map((r) => r.search);
  const a = x.reduce((s, xi, i) => s + xi * y[i], 0) / x.reduce((s, xi) => s + xi * xi, 0);
  const res = Math.sqrt(y.reduce((s, yi, i) => s + ((yi - a * x[i]) / yi) ** 2, 0) / y.length);
  const lx = prefill.map((r) => Math.log(r.S)), ly = y.map(Math.log);
  const mx = lx.reduce((s, v) => s + v, 0) / lx.length, my = ly.reduce((s, v) => s + v, 0) / ly.length;
  const e = lx.reduce((s, v, i) => s + (v - mx) * (ly[i] - my), 0) /
    lx.reduce((s, v) => s + (v - mx) ** 2, 0);
  const lt = prefill.map((r) => Math.log(r.total));
  const mt = lt.reduce((s, v) => s + v, 0) / lt.length;
  const et = lx.reduce((s, v, i) => s + (v - mx) * (lt[i] - mt), 0) /
    lx.reduce((s, v) => s + (v - mx) ** 2, 0);
  console.error(
    `search time ≈ ${a.toExponential(3)} ms · T log2 T (relative RMS residual ${
      (res * 100).toFixed(1)
    } %); ` +
      `power law exponent: search ${e.toFixed(3)}, total ${et.toFixed(3)}`,
  );
  rows.push(
    { metric: "search_fit_tlogt_coeff", impl: "ours-hip", value: a, unit: "ms per T·log2(T)" },
    { metric: "search_fit_tlogt_rel_residual", impl: "ours-hip", value: res, unit: "fraction" },
    { metric: "search_fit_exponent", impl: "ours-hip", value: e, unit: "exponent of T" },
    { metric: "total_fit_exponent", impl: "ours-hip", value: et, unit: "exponent of T" },
  );
}

// ---- decode (f32: our dense decode is the split-KV f32 kernel)
for (const T of decodeContexts) {
  let HC = H;
  while (HC > GROUP && (HC / GROUP) * T * D * 4 > maxBinding / 2) HC /= 2;
  const HKC = HC / GROUP, chunks = H / HC;
  const dims = { heads: HC, kvHeads: HKC, headDim: D, seq: 1, kvSeq: T };
  const qd = { dtype: "f32", dims: ["heads", "seq", "headDim"], shape: [HC, 1, D] } as const;
  const kd = { dtype: "f32", dims: ["kvHeads", "kvSeq", "headDim"], shape: [HKC, T, D] } as const;
  const hp = await Effect.runPromise(
    lower(await Effect.runPromise(hip.hipTechnique.graph(p, dims, "decode", "f32")), backend, {
      q: qd,
      k: kd,
      v: kd,
    }, { label: `hip.decode.${T}` }),
  );
  const dp = await Effect.runPromise(lower(
    await Effect.runPromise(
      dense.denseTechnique.graph({ scale: 0, blockQ: 64, workgroupMemory: wgMem }, dims, "decode"),
    ),
    backend,
    { q: qd, k: kd, v: kd },
    { bind: { q: hp.buffer("q"), k: hp.buffer("k"), v: hp.buffer("v") }, label: `dense.decode.${T}` },
  ));
  let dT = 0, mT = 0, aT = 0;
  for (let c = 0; c < chunks; c++) {
    await fill(hp, HC, HKC, 1, T, "f32", c);
    await warm(dp);
    const d: number[] = [], m: number[] = [], a: number[] = [];
    for (let r = 0; r < 20; r++) {
      d.push((await runner.run(dp)).ms);
      const hr = await runner.run(hp, true);
      let ms = 0, as = 0;
      for (const n of hr.nodes) isMask(n.op) ? (ms += n.gpuMs ?? n.ms) : (as += n.gpuMs ?? n.ms);
      m.push(ms);
      a.push(as);
    }
    dT += median(d);
    mT += median(m);
    aT += median(a);
  }
  dp.release();
  hp.release();
  const amort = aT + mT / p.refresh;
  console.error(
    `decode T=${T}: hip search ${mT.toFixed(3)} ms, attention ${
      aT.toFixed(3)
    } ms, per token (refresh ${p.refresh}) ` +
      `${amort.toFixed(3)} ms; dense ${dT.toFixed(3)} ms: ${(dT / amort).toFixed(2)}× (every-step search: ${
        (dT / (mT + aT)).toFixed(2)
      }×)`,
  );
  rows.push(
    { metric: "decode_latency_ms", impl: "ours-hip-search", context: T, value: mT, unit: "ms" },
    { metric: "decode_latency_ms", impl: "ours-hip-attention", context: T, value: aT, unit: "ms" },
    {
      metric: "decode_latency_ms",
      impl: `ours-hip-refresh${p.refresh}`,
      context: T,
      value: amort,
      unit: "ms",
    },
    { metric: "decode_latency_ms", impl: "ours-dense", context: T, value: dT, unit: "ms" },
    {
      metric: "decode_speedup_vs_own_dense",
      impl: `ours-hip-refresh${p.refresh}`,
      context: T,
      value: dT / amort,
      unit: "x",
    },
  );
}

// ---- peers
if (!args["no-peer"]) {
  rows.push(...(await sdpaPeer("hip_bench", contexts, H, HK, D)) as Row[]);
  rows.push(...(await sdpaPeer("hip_bench", decodeContexts, H, HK, D, true)) as Row[]);
}

const common = {
  model:
    `Llama-3.1-8B attention heads (${H} q / ${HK} kv, d ${D}), synthetic structured inputs (ops/sale/synthetic.ts)`,
  gpu: gpuName,
  driver: Deno.env.get("LONGCTX_GPU_DRIVER") ?? backend.adapter.driver,
  date: new Date().toISOString(),
  commit: gitCommit(),
  command: `deno run -A benchmarks/device/hip_bench.ts ${Deno.args.join(" ")}`.trim(),
  params: {
    topK: p.topK,
    blockQ: p.blockQ,
    blockK: p.blockK,
    sink: p.sink,
    window: p.window,
    refresh: p.refresh,
  },
  timing: runner.summary(),
};
const final = rows.map((r) => ({
  backend: backend.kind === "webgpu" ? "webgpu (Deno navigator.gpu)" : backend.kind,
  path: "lowered programs (graph/src/program.ts) of the registry's dense and hip techniques",
  ...common,
  ...r,
  gpu: r.gpu ?? gpuName,
}));
await writeDeviceRows("hip_bench", args.out, "hip.json", final, t0);
