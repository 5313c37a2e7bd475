/**
 * Micro benchmark of the CPU model path's two hot spots at a 4K prefill (SmolLM2-135M shapes: 9 query heads,
 * 3 KV heads, head dim 64, hidden 576, MLP 1536), on random f32 inputs, printed only (no results file):
 *   1. one layer's seven weight GEMMs (`[seq, 576] × Wᵀ`) through {@link loadSgemm}: ms and GFLOP/s;
 *   2. one layer's dense causal attention (`denseCausalAttention`) with the TypeScript and the WebAssembly
 *      softmax on one thread, and with the worker pool on 2 threads (after the workers are warm); each
 *      variant `--reps` times, alternating, plus the largest difference from the first variant's output.
 *
 *   deno run -A benchmarks/model_attention_micro.ts [--seq 4096] [--reps 3]
 *   OPENBLAS_CORETYPE=Prescott deno run -A benchmarks/model_attention_micro.ts   # OpenBLAS's own CPU pick
 *   bun benchmarks/model_attention_micro.ts
 * @module
 */
import * as os from "node:os";
import process from "node:process";
import { loadSgemm } from "../runtime/src/model/blas.ts";
import { denseCausalAttention, setAttentionThreads, setWasmSoftmax } from "../runtime/src/model/llama.ts";

const args = process.argv.slice(2);
const opt = (name: string, def: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? Number(args[i + 1]) : def;
};
const seq = opt("seq", 4096), reps = opt("reps", 3);
const H = 9, KH = 3, d = 64, E = 576, F = 1536;
const sgemm = await loadSgemm();
const rnd = (n: number) => {
  const a = new Float32Array(new SharedArrayBuffer(4 * n));
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
};

// 1. weight GEMMs of one layer
const x = rnd(seq * E), wq = rnd(E * E), wkv = rnd(KH * d * E), wf = rnd(F * E), wd = rnd(E * F);
const y = new Float32Array(seq * F), z = new Float32Array(seq * E);
const flops = 2 * seq * (2 * E * E + 2 * KH * d * E + 3 * E * F);
for (let r = 0; r < reps; r++) {
  const t = performance.now();
  sgemm.gemm(false, true, seq, E, E, 1, x, E, wq, E, 0, z, E);
  sgemm.gemm(false, true, seq, KH * d, E, 1, x, E, wkv, E, 0, y, KH * d);
  sgemm.gemm(false, true, seq, KH * d, E, 1, x, E, wkv, E, 0, y, KH * d);
  sgemm.gemm(false, true, seq, E, E, 1, z, E, wq, E, 1, x, E);
  sgemm.gemm(false, true, seq, F, E, 1, x, E, wf, E, 0, y, F);
  sgemm.gemm(false, true, seq, F, E, 1, x, E, wf, E, 0, y, F);
  sgemm.gemm(false, true, seq, E, F, 1, y, F, wd, F, 1, z, E);
  const ms = performance.now() - t;
  console.log(`weight GEMMs, one layer: ${ms.toFixed(0)} ms (${(flops / ms / 1e6).toFixed(1)} GFLOP/s)`);
}

// 2. attention of one layer
const q = rnd(H * seq * d), k = rnd(KH * seq * d), v = rnd(KH * seq * d);
const ctx = {
  layer: 0,
  offset: 0,
  seq,
  kvLen: seq,
  kvStride: seq,
  heads: H,
  kvHeads: KH,
  headDim: d,
  scale: 1 / Math.sqrt(d),
  sgemm,
};
setAttentionThreads(2);
for (let i = 0; i < 50; i++) {
  if (denseCausalAttention(q, k, v, ctx).buffer instanceof SharedArrayBuffer) break; // pool warm
  await new Promise((r) => setTimeout(r, 100));
}
const variants = [
  { name: "TypeScript softmax, 1 thread ", wasm: false, threads: 1 },
  { name: "WebAssembly softmax, 1 thread", wasm: true, threads: 1 },
  { name: "WebAssembly softmax, 2 threads", wasm: true, threads: 2 },
];
let ref: Float32Array | undefined;
const times: number[][] = variants.map(() => []);
const diffs = variants.map(() => 0);
for (let r = 0; r < reps; r++) {
  for (const [i, va] of variants.entries()) {
    setWasmSoftmax(va.wasm);
    setAttentionThreads(va.threads);
    const t = performance.now();
    const o = denseCausalAttention(q, k, v, ctx);
    times[i].push(performance.now() - t);
    ref ??= o;
    for (let j = 0; j < o.length; j++) diffs[i] = Math.max(diffs[i], Math.abs(o[j] - ref[j]));
  }
}
for (const [i, va] of variants.entries()) {
  console.log(
    `attention, one layer, ${va.name}: ${times[i].map((t) => t.toFixed(0)).join(", ")} ms ` +
      `(max |Δ| vs first ${diffs[i].toExponential(1)})`,
  );
}
console.log(`blas ${sgemm.name}; load avg ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`);
