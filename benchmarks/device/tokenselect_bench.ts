/**
 * TokenSelect speed on a GPU (written for the H200, issue 17): the Llama-3.1-8B head layout (32 query heads, 8
 * KV heads, head dim 128), structured synthetic inputs (ops/sale/synthetic.ts, generated on the device) in f32 —
 * the model forward's KV cache dtype — with the RoPE tables of θ = 500000 (Llama 3), the registry's
 * `tokenselect` decode graph (`tokenselect.select` → `tokenselect.compact` → `dense.cacheAttn` over the list)
 * against our dense decode and PyTorch SDPA decode (flash, cuDNN; benchmarks/device/sdpa_peer.py, f16) in the
 * same job.
 *
 * - **Decode** (`--contexts`, default 32K, 64K, 128K): per-token attention latency of one query against T
 *   cached tokens: the selection, the gather, the attention over the list and their sum, our dense decode, and
 *   SDPA decode.
 * - **Prefill chunk** (`--chunk`, default 512 — the official selection granularity): one chunk of queries at the
 *   end of T cached tokens: TokenSelect against our `dense.cacheAttn` over all T keys.
 *
 * Run (repo root, on the GPU machine): `bash .device/go.sh deno run -A benchmarks/device/tokenselect_bench.ts`
 * Options: `--contexts=32768,65536,131072 --top-k=2048 --chunk=512 --no-peer --backend=webgpu
 * --out=benchmarks/results/tokenselect.json`. Timing: GPU timestamps per launch (summed per node), else wall
 * clock; median of 20 runs after a warm-up. Writes rows to `--out` (and `$OUT/tokenselect.json` when `$OUT`
 * is set).
 * @module
 */
import { Effect } from "effect";
import { type Backend, type DeviceBuffer, graph, lower, type Program } from "@longctx/graph";
import { dense, model, tokenselect } from "@longctx/ops";
import { gitCommit } from "../lib/results.ts";
import {
  fillSynthetic,
  gpuRunner,
  headGroup,
  median,
  openBenchBackend,
  type PeerRow,
  sdpaPeer,
  writeDeviceRows,
} from "../lib/gpu_run.ts";
import { parseFlags } from "../lib/args.ts";

const args = parseFlags("deno run -A benchmarks/device/tokenselect_bench.ts [flags]", {
  contexts: { kind: "list", default: [32768, 65536, 131072], min: 1, help: "cached tokens" },
  heads: { kind: "int", default: 32, min: 1, help: "query heads" },
  "kv-heads": { kind: "int", default: 8, min: 1, help: "KV heads (divides --heads)" },
  dim: { kind: "int", default: 128, min: 64, help: "head dim (a multiple of 64)" },
  "top-k": { kind: "int", default: 2048, min: 1, help: "TokenSelect's k (official 2048)" },
  chunk: {
    kind: "int",
    default: 512,
    min: 0,
    help: "prefill chunk queries measured (0: none; ≤ nLocal 512)",
  },
  theta: { kind: "number", default: 500000, min: 1, help: "RoPE base of the tables" },
  runs: { kind: "int", default: 20, min: 1, help: "timed runs per measurement (median)" },
  "no-peer": { kind: "switch", help: "skip PyTorch SDPA" },
  backend: { kind: "string", default: "webgpu", choices: ["webgpu", "wgpu", "dawn"], help: "the backend" },
  out: { kind: "string", default: "benchmarks/results/tokenselect.json", help: "results file to write" },
});
const H = args.heads, HK = args["kv-heads"], D = args.dim, GROUP = headGroup(H, HK);
const t0 = performance.now();
const backend: Backend = await openBenchBackend("tokenselect_bench", args.backend);
const maxBinding = Math.min(backend.limits.maxStorageBufferBindingSize, backend.limits.maxBufferSize);
const gpuName = Deno.env.get("LONGCTX_GPU_NAME") ?? backend.adapter.name;
console.error(`tokenselect_bench: ${backend.kind} on ${backend.adapter.name}, max binding ${maxBinding} B`);
const p = tokenselect.tokenSelectParams({ topK: args["top-k"] });
const runner = gpuRunner(backend);

const rows: PeerRow[] = [];

let warmed = false;
const warm = async (prog: Program, scalars?: Readonly<Record<string, number>>) => {
  // an idle H200 runs at a low SM clock until it has been busy for a while
  const w0 = performance.now(), ms = warmed ? 300 : 2000;
  do await runner.run(prog, false, scalars); while (performance.now() - w0 < ms);
  warmed = true;
};

const stageOf = (op: string) =>
  op.startsWith("tokenselect.select") ? "select" : op.startsWith("tokenselect.compact") ? "compact" : "attn";

/** Median TokenSelect time (total and per stage) and our dense time for `S` queries against `T` keys. */
const measure = async (S: number, T: number) => {
  const dims = { heads: H, kvHeads: HK, headDim: D, seq: S, kvSeq: T };
  const qd = { dtype: "f32", dims: ["heads", "seq", "headDim"], shape: [H, S, D] } as const;
  const kd = { dtype: "f32", dims: ["kvHeads", "kvSeq", "headDim"], shape: [HK, T, D] } as const;
  const rd = { dtype: "f32", dims: ["positions", "half"], shape: [T, D / 2] } as const;
  if (HK * T * D * 4 > maxBinding) {
    throw new RangeError(`K of ${HK * T * D * 4} B exceeds the device's binding limit ${maxBinding} B`);
  }
  const tg = await Effect.runPromise(tokenselect.tokenSelectTechnique.graph(p, dims, "decode", "f32"));
  // the inputs in buffers of their own, bound to both programs
  const bufs: Record<string, DeviceBuffer> = {};
  for (const [name, bytes] of [["q", H * S * D * 4], ["k", HK * T * D * 4], ["v", HK * T * D * 4]] as const) {
    bufs[name] = await Effect.runPromise(backend.allocate(bytes, name));
  }
  const tab = model.ropeTables(T, D, args.theta);
  for (const [name, data] of [["ropeCos", tab.cos], ["ropeSin", tab.sin]] as const) {
    bufs[name] = await Effect.runPromise(backend.allocate(data.byteLength, name));
    await Effect.runPromise(backend.upload(bufs[name], data));
  }
  await fillSynthetic(backend, [[0, H, S, bufs.q], [1, HK, T, bufs.k], [2, HK, T, bufs.v]], D, GROUP, "f32");
  const tp = await Effect.runPromise(
    lower(tg, backend, { q: qd, k: kd, v: kd, ropeCos: rd, ropeSin: rd }, {
      bind: bufs,
      label: `tokenselect.${S}x${T}`,
    }),
  );
  const cd = { dtype: "f32", dims: ["kvHeads", "capacity", "headDim"], shape: [HK, T, D] } as const;
  // our dense: dense.cacheAttn (split-KV) over all T keys — the forward's own decode and chunk attention
  const dgb = graph("dense.cache");
  const da = dgb.add(dense.cacheAttn, dense.cacheAttnParams(), {
    q: dgb.input("q", dense.cacheAttn.inputs.q),
    kCache: dgb.input("kCache", dense.cacheAttn.inputs.kCache),
    vCache: dgb.input("vCache", dense.cacheAttn.inputs.vCache),
  });
  dgb.output("o", da.o);
  const dp = await Effect.runPromise(lower(
    await Effect.runPromise(dgb.build()),
    backend,
    { q: qd, kCache: cd, vCache: cd },
    { bind: { q: bufs.q, kCache: bufs.k, vCache: bufs.v }, label: `dense.${S}x${T}` },
  ));
  const sc = { pos: T - S };
  await warm(dp, sc);
  await warm(tp, sc);
  const d: number[] = [],
    tot: number[] = [],
    st: Record<string, number[]> = { select: [], compact: [], attn: [] };
  const launches: number[][] = [];
  for (let r = 0; r < args.runs; r++) {
    d.push((await runner.run(dp, false, sc)).ms);
    tot.push((await runner.run(tp, false, sc)).ms);
    const per = await runner.run(tp, true, sc);
    const acc: Record<string, number> = { select: 0, compact: 0, attn: 0 };
    for (const n of per.nodes) acc[stageOf(n.op)] += n.gpuMs ?? n.ms;
    for (const k of Object.keys(acc)) st[k].push(acc[k]);
    const sn = per.nodes.find((n) => stageOf(n.op) === "select");
    if (sn?.launchMs) sn.launchMs.forEach((ms, i) => (launches[i] ??= []).push(ms));
  }
  if (launches.length > 0) {
    // the selection's launches (qbar, score, lse, vote, pool, find, hist, find, hist, find, count, scan, write)
    console.error(`  select launches (median ms): ${launches.map((x) => median(x).toFixed(3)).join(" ")}`);
  }
  // back to back, as a decode loop runs: `args.runs * 5` runs queued without waiting, one sync at the end
  // (wall clock per run; the GPU stays at its working clock, which short synced runs let it leave)
  const pipelined = async (prog: Program) => {
    const n = args.runs * 5;
    await Effect.runPromise(prog.run({ scalars: sc }));
    const t = performance.now();
    for (let r = 0; r < n; r++) await Effect.runPromise(prog.run({ scalars: sc, sync: false }));
    await Effect.runPromise(backend.sync());
    return (performance.now() - t) / n;
  };
  const densePiped = await pipelined(dp), totalPiped = await pipelined(tp);
  // the selection is real: its list is sorted, unique and inside the candidates
  const idx = (await Effect.runPromise(tp.read("indices"))).data as Int32Array;
  for (let e = 0; e < idx.length; e++) {
    if (idx[e] < p.nInit || idx[e] >= T - p.nLocal || (e > 0 && idx[e] <= idx[e - 1])) {
      throw new Error(`the selection is malformed at entry ${e}: ${idx[e]}`);
    }
  }
  dp.release();
  tp.release();
  for (const b of Object.values(bufs)) backend.release(b);
  return {
    densePiped,
    totalPiped,
    dense: median(d),
    total: median(tot),
    select: median(st.select),
    compact: median(st.compact),
    attn: median(st.attn),
  };
};

for (const T of args.contexts) {
  // the chunk first: its long dense runs keep the GPU at its working clock for the short decode runs after
  const c = args.chunk > 0 ? await measure(args.chunk, T) : undefined;
  const m = await measure(1, T);
  console.error(
    `decode T=${T}: tokenselect ${m.total.toFixed(3)} ms (select ${m.select.toFixed(3)}, gather ${
      m.compact.toFixed(3)
    }, attention ${m.attn.toFixed(3)} per node); our dense ${m.dense.toFixed(3)} ms: ${
      (m.dense / m.total).toFixed(2)
    }×; back to back ${m.totalPiped.toFixed(3)} against ${m.densePiped.toFixed(3)} ms: ${
      (m.densePiped / m.totalPiped).toFixed(2)
    }×`,
  );
  rows.push(
    { metric: "decode_latency_ms", impl: "ours-tokenselect", context: T, value: m.total, unit: "ms" },
    { metric: "decode_latency_ms", impl: "ours-tokenselect-select", context: T, value: m.select, unit: "ms" },
    {
      metric: "decode_latency_ms",
      impl: "ours-tokenselect-gather",
      context: T,
      value: m.compact,
      unit: "ms",
    },
    {
      metric: "decode_latency_ms",
      impl: "ours-tokenselect-attention",
      context: T,
      value: m.attn,
      unit: "ms",
    },
    { metric: "decode_latency_ms", impl: "ours-dense", context: T, value: m.dense, unit: "ms" },
    {
      metric: "decode_latency_pipelined_ms",
      impl: "ours-tokenselect",
      context: T,
      value: m.totalPiped,
      unit: "ms",
      note: "wall clock per step of back-to-back runs, one sync at the end",
    },
    {
      metric: "decode_latency_pipelined_ms",
      impl: "ours-dense",
      context: T,
      value: m.densePiped,
      unit: "ms",
      note: "wall clock per step of back-to-back runs, one sync at the end",
    },
    {
      metric: "decode_speedup_vs_own_dense",
      impl: "ours-tokenselect",
      context: T,
      value: m.dense / m.total,
      unit: "x",
    },
  );
  if (c) {
    console.error(
      `chunk of ${args.chunk} at T=${T}: tokenselect ${c.total.toFixed(3)} ms (select ${
        c.select.toFixed(3)
      }); ` +
        `our dense ${c.dense.toFixed(3)} ms: ${(c.dense / c.total).toFixed(2)}×`,
    );
    rows.push(
      { metric: "chunk_latency_ms", impl: "ours-tokenselect", context: T, value: c.total, unit: "ms" },
      { metric: "chunk_latency_ms", impl: "ours-dense", context: T, value: c.dense, unit: "ms" },
      {
        metric: "chunk_speedup_vs_own_dense",
        impl: "ours-tokenselect",
        context: T,
        value: c.dense / c.total,
        unit: "x",
      },
    );
  }
}

if (!args["no-peer"]) {
  rows.push(...(await sdpaPeer("tokenselect_bench", args.contexts, H, HK, D, true)));
}

const common = {
  model: `Llama-3.1-8B attention heads (${H} q / ${HK} kv, d ${D}), synthetic structured inputs ` +
    `(ops/sale/synthetic.ts), f32 KV cache; RoPE θ ${args.theta}`,
  gpu: gpuName,
  driver: Deno.env.get("LONGCTX_GPU_DRIVER") ?? backend.adapter.driver,
  date: new Date().toISOString(),
  commit: gitCommit(),
  command: `deno run -A benchmarks/device/tokenselect_bench.ts ${Deno.args.join(" ")}`.trim(),
  params: { topK: p.topK, nInit: p.nInit, nLocal: p.nLocal, chunk: args.chunk },
  timing: runner.summary(),
};
const final = rows.map((r) => ({
  backend: backend.kind === "webgpu" ? "webgpu (Deno navigator.gpu)" : backend.kind,
  path: "lowered programs (graph/src/program.ts) of the registry's tokenselect technique and dense.cacheAttn",
  ...common,
  ...r,
  gpu: r.gpu ?? gpuName,
}));
await writeDeviceRows("tokenselect_bench", args.out, "tokenselect.json", final, t0);
