/**
 * Squeezed Attention speed on a GPU (written for the H200, issue 16): the Llama-3.1-8B head layout (32 query
 * heads, 8 KV heads, head dim 128), structured synthetic inputs (ops/sale/synthetic.ts, generated on the device)
 * in f32 — the model forward's KV cache dtype — a fixed context of T tokens and a question of `--question`
 * tokens after it, through the registry's `squeezed` graphs (the question: `squeezed.lookup` → `squeezed.select`
 * → `dense.indexCacheAttn`; a decode step: `squeezed.lookup` → `squeezed.attend`), against our dense cache attention over all T keys and PyTorch SDPA (flash, cuDNN;
 * benchmarks/device/sdpa_peer.py, bf16) in the same job.
 *
 * The index is a speed input, not the method's clustering: the clustered keys are cut into runs of
 * ⌊S / C⌋ consecutive keys (C = 5 % of S, the official cluster count; synthetic keys are local, so runs are
 * clusters of similar keys), centroids their raw means computed on the host; τ is set, per call (the question,
 * the decode step), to the global quantile of that call's per-key scores that gives each `--reductions` (the paper's 3× and 8× budget cuts: 1/3 and 1/8
 * of the fixed-context keys kept, over all heads). Reported: the kept fraction reached, the question's prefill
 * and one decode step (per stage: lookup, select, attention) against dense, and SDPA for both.
 *
 * Run (repo root, on the GPU machine): `bash .device/go.sh deno run -A benchmarks/device/squeezed_bench.ts`
 * Options: `--contexts=32768,65536,131072 --question=64 --reductions=3,8 --no-peer --backend=webgpu
 * --out=benchmarks/results/squeezed.json`. Timing: GPU timestamps per launch (summed per node), else wall
 * clock; median of `--runs` runs after a warm-up.
 * @module
 */
import { Effect } from "effect";
import { type Backend, type DeviceBuffer, graph, lower, type Program } from "@longctx/graph";
import { dense, squeezed } from "@longctx/ops";
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

const args = parseFlags("deno run -A benchmarks/device/squeezed_bench.ts [flags]", {
  contexts: { kind: "list", default: [32768, 65536, 131072], min: 256, help: "fixed-context tokens" },
  heads: { kind: "int", default: 32, min: 1, help: "query heads" },
  "kv-heads": { kind: "int", default: 8, min: 1, help: "KV heads (divides --heads)" },
  dim: { kind: "int", default: 128, min: 64, help: "head dim (a multiple of 64)" },
  question: { kind: "int", default: 64, min: 1, help: "question tokens (the prefill after the context)" },
  reductions: { kind: "list", default: [3, 8], min: 1, help: "KV budget cuts measured (kept = 1 / cut)" },
  "attend-splits": {
    kind: "list",
    default: [0],
    min: 0,
    help:
      "squeezed.attend's splitKeys for the decode step (0: its automatic choice); one decode row set each",
  },
  runs: { kind: "int", default: 20, min: 1, help: "timed runs per measurement (median)" },
  "no-peer": { kind: "switch", help: "skip PyTorch SDPA" },
  backend: { kind: "string", default: "webgpu", choices: ["webgpu", "wgpu", "dawn"], help: "the backend" },
  out: { kind: "string", default: "benchmarks/results/squeezed.json", help: "results file to write" },
});
const H = args.heads, HK = args["kv-heads"], D = args.dim, GROUP = headGroup(H, HK), Q = args.question;
const t0 = performance.now();
const backend: Backend = await openBenchBackend("squeezed_bench", args.backend);
const gpuName = Deno.env.get("LONGCTX_GPU_NAME") ?? backend.adapter.name;
console.error(`squeezed_bench: ${backend.kind} on ${backend.adapter.name}`);
const runner = gpuRunner(backend);
const must = <A, E>(e: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(e);
const rows: PeerRow[] = [];

let warmed = false;
const warm = async (prog: Program, scalars: Readonly<Record<string, number>>) => {
  // an idle H200 runs at a low SM clock until it has been busy for a while
  const w0 = performance.now(), ms = warmed ? 300 : 2000;
  do await runner.run(prog, false, scalars); while (performance.now() - w0 < ms);
  warmed = true;
};
const stageOf = (op: string) =>
  op.startsWith("squeezed.lookup") ? "lookup" : op.startsWith("squeezed.select") ? "select" : "attn";

for (const T of args.contexts) {
  const p0 = squeezed.squeezedParams({ workgroupMemory: backend.limits.maxComputeWorkgroupStorageSize });
  const S = T - p0.obsWindow, C = squeezed.clusterCount(p0, T), cap = T + Q + 1;
  const kvBytes = HK * cap * D * 4;
  const bufs: Record<string, DeviceBuffer> = {};
  for (
    const [name, bytes] of [["q", H * Q * D * 4], ["q1", H * D * 4], ["k", kvBytes], ["v", kvBytes]] as const
  ) {
    bufs[name] = await must(backend.allocate(bytes, name));
  }
  await fillSynthetic(
    backend,
    [[0, H, Q, bufs.q], [0, H, 1, bufs.q1], [1, HK, cap, bufs.k], [2, HK, cap, bufs.v]],
    D,
    GROUP,
    "f32",
  );
  // the speed index: runs of consecutive keys, raw means as centroids (host)
  const k = new Float32Array((await must(backend.download(bufs.k))).slice().buffer);
  const speed = squeezed.runsIndex(k, { Hk: HK, rows: cap, S, C, D });
  const { labels, centroids, sizes } = speed;
  /** The call's per-key scores (its queries' lookup through the labels), sorted: τ for a cut is a quantile. */
  const sortedScores = async (buf: DeviceBuffer, seq: number) =>
    squeezed.sortedKeyScores(0, new Float32Array((await must(backend.download(buf))).slice().buffer), speed, {
      H,
      Hk: HK,
      seq,
      S,
      C,
      D,
    });
  const sortedQ = await sortedScores(bufs.q, Q), sorted1 = await sortedScores(bufs.q1, 1);
  const index: Record<string, DeviceBuffer> = {};
  for (
    const [name, data] of [["centroids", centroids], ["sizes", sizes], ["labels", labels]] as const
  ) {
    index[name] = await must(backend.allocate(data.byteLength, name));
    await must(backend.upload(index[name], data));
  }
  index.threshold = await must(backend.allocate(4, "threshold"));
  const desc = (dims: string[], shape: number[], dtype: "f32" | "i32" = "f32") => ({ dtype, dims, shape });
  const cd = desc(["kvHeads", "capacity", "headDim"], [HK, cap, D]);
  // our dense: dense.cacheAttn over every cached key
  const dgb = graph("dense.cache");
  const da = dgb.add(dense.cacheAttn, dense.cacheAttnParams(), {
    q: dgb.input("q", dense.cacheAttn.inputs.q),
    kCache: dgb.input("kCache", dense.cacheAttn.inputs.kCache),
    vCache: dgb.input("vCache", dense.cacheAttn.inputs.vCache),
  });
  dgb.output("o", da.o);
  const denseGraph = await must(dgb.build());
  for (const red of args.reductions) {
    // τ per call: the quantile of that call's own per-key scores that keeps 1 / cut of the clustered keys
    const tauOf = (sorted: Float32Array) =>
      sorted[Math.min(sorted.length - 1, Math.floor((1 - 1 / red) * sorted.length))];
    const measure = async (seq: number, pos: number, qBuf: DeviceBuffer, splitKeys = 0) => {
      const p = { ...p0, percentile: 0.9, splitKeys };
      const tau = tauOf(seq === 1 ? sorted1 : sortedQ);
      await must(backend.upload(index.threshold, Float32Array.of(tau)));
      const qd = desc(["heads", "seq", "headDim"], [H, seq, D]);
      // the question through the lists, a decode step through the fused selection and attention
      const sg = await must(squeezed.squeezedGraph(p, "squeezed.cache", seq === 1 ? "fused" : "lists"));
      const sp = await must(lower(sg, backend, {
        q: qd,
        k: cd,
        v: cd,
        centroids: desc(["kvHeads", "clusters", "headDim"], [HK, C, D]),
        sizes: desc(["kvHeads", "clusters"], [HK, C]),
        labels: desc(["kvHeads", "clustered"], [HK, S], "i32"),
        threshold: desc(["one"], [1]),
      } as never, { bind: { q: qBuf, k: bufs.k, v: bufs.v, ...index }, label: `squeezed.${seq}x${T}` }));
      const dp = await must(lower(denseGraph, backend, { q: qd, kCache: cd, vCache: cd } as never, {
        bind: { q: qBuf, kCache: bufs.k, vCache: bufs.v },
        label: `dense.${seq}x${T}`,
      }));
      const sc = { pos };
      await warm(dp, sc);
      await warm(sp, sc);
      const d: number[] = [],
        tot: number[] = [],
        st: Record<string, number[]> = { lookup: [], select: [], attn: [] };
      for (let r = 0; r < args.runs; r++) {
        d.push((await runner.run(dp, false, sc)).ms);
        tot.push((await runner.run(sp, false, sc)).ms);
        const per = await runner.run(sp, true, sc);
        const acc: Record<string, number> = { lookup: 0, select: 0, attn: 0 };
        for (const n of per.nodes) acc[stageOf(n.op)] += n.gpuMs ?? n.ms;
        for (const x of Object.keys(acc)) st[x].push(acc[x]);
      }
      const density = (await must(sp.read("density"))).data as Float32Array;
      if (seq > 1) {
        // the lists are real: ascending, inside the cache, each fixed key at most once
        const idx = (await must(sp.read("indices"))).data as Int32Array;
        for (let e = 1; e < Math.min(idx.length, cap); e++) {
          if (idx[e] >= 0 && (idx[e] <= idx[e - 1] || idx[e] >= pos + seq)) {
            throw new Error(`the list is malformed at entry ${e}: ${idx[e - 1]}, ${idx[e]}`);
          }
        }
      }
      sp.release();
      dp.release();
      return {
        dense: median(d),
        total: median(tot),
        lookup: median(st.lookup),
        select: median(st.select),
        attn: median(st.attn),
        budget: density.reduce((a, b) => a + b, 0) / density.length,
        tau,
      };
    };
    const calls: ["question" | "decode", Awaited<ReturnType<typeof measure>>, number][] = [
      ["question", await measure(Q, T, bufs.q), 0],
    ];
    for (const sk of args["attend-splits"]) calls.push(["decode", await measure(1, T + Q, bufs.q1, sk), sk]);
    for (const [what, m, sk] of calls) {
      console.error(
        `${what}${sk ? ` (splitKeys ${sk})` : ""} T=${T} ${red}× cut: kept ${
          (m.budget * 100).toFixed(1)
        }% of the context; squeezed ${m.total.toFixed(3)} ms (lookup ${m.lookup.toFixed(3)}, select ${
          m.select.toFixed(3)
        }, attention ${m.attn.toFixed(3)}); ` +
          `our dense ${m.dense.toFixed(3)} ms: ${(m.dense / m.total).toFixed(2)}×`,
      );
      const metric = what === "question" ? "chunk_latency_ms" : "decode_latency_ms";
      const extra = {
        reduction: red,
        keptFraction: m.budget,
        tau: m.tau,
        seq: what === "question" ? Q : 1,
        ...(what === "decode" ? { splitKeys: sk } : {}),
      };
      rows.push(
        { metric, impl: "ours-squeezed", context: T, value: m.total, unit: "ms", ...extra },
        { metric, impl: "ours-squeezed-lookup", context: T, value: m.lookup, unit: "ms", ...extra },
        { metric, impl: "ours-squeezed-select", context: T, value: m.select, unit: "ms", ...extra },
        { metric, impl: "ours-squeezed-attention", context: T, value: m.attn, unit: "ms", ...extra },
        { metric, impl: "ours-dense", context: T, value: m.dense, unit: "ms", ...extra },
        {
          metric: `${what === "question" ? "chunk" : "decode"}_speedup_vs_own_dense`,
          impl: "ours-squeezed",
          context: T,
          value: m.dense / m.total,
          unit: "x",
          ...extra,
        },
      );
    }
  }
  for (const b of [...Object.values(bufs), ...Object.values(index)]) backend.release(b);
}

if (!args["no-peer"]) {
  rows.push(...(await sdpaPeer("squeezed_bench", args.contexts.map((t) => t + Q), H, HK, D, Q)));
  rows.push(...(await sdpaPeer("squeezed_bench", args.contexts.map((t) => t + Q), H, HK, D, true)));
}

const common = {
  model: `Llama-3.1-8B attention heads (${H} q / ${HK} kv, d ${D}), synthetic structured inputs ` +
    `(ops/sale/synthetic.ts), f32 KV cache; speed index: runs of consecutive keys`,
  gpu: gpuName,
  driver: Deno.env.get("LONGCTX_GPU_DRIVER") ?? backend.adapter.driver,
  date: new Date().toISOString(),
  commit: gitCommit(),
  command: `deno run -A benchmarks/device/squeezed_bench.ts ${Deno.args.join(" ")}`.trim(),
  params: { question: Q, percentClusters: 5, obsWindow: 100 },
  timing: runner.summary(),
};
const final = rows.map((r) => ({
  backend: backend.kind === "webgpu" ? "webgpu (Deno navigator.gpu)" : backend.kind,
  path: "lowered programs (graph/src/program.ts) of the registry's squeezed graph and dense.cacheAttn",
  ...common,
  ...r,
  gpu: r.gpu ?? gpuName,
}));
await writeDeviceRows("squeezed_bench", args.out, "squeezed.json", final, t0);
