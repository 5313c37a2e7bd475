import process from "node:process";
import os from "node:os";
import { denseCausalAttention, setAttentionThreads } from "../runtime/src/model/llama.ts";
import { loadSgemm } from "../runtime/src/model/blas.ts";
const sg = await loadSgemm();
const seq = Number(process.argv[2] ?? 4096), H = 9, KH = 3, d = 64;
const rnd = (n: number) => { const a = new Float32Array(new SharedArrayBuffer(4 * n)); for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1; return a; };
const q = rnd(H * seq * d), k = rnd(KH * seq * d), v = rnd(KH * seq * d);
const ctx = { layer: 0, offset: 0, seq, kvLen: seq, kvStride: seq, heads: H, kvHeads: KH, headDim: d, scale: 0.125, sgemm: sg };
setAttentionThreads(2); denseCausalAttention(q, k, v, ctx); await new Promise((r) => setTimeout(r, 2000));
const res: Record<number, number[]> = { 1: [], 2: [] };
for (let it = 0; it < 6; it++) for (const th of [1, 2]) {
  setAttentionThreads(th);
  const c0 = process.cpuUsage(); const t = performance.now();
  denseCausalAttention(q, k, v, ctx);
  res[th].push(performance.now() - t);
}
for (const th of [1, 2]) console.log(`threads ${th}: ${res[th].map((x) => x.toFixed(0)).join(" ")} ms`);
console.log("load", os.loadavg().map((x) => x.toFixed(2)).join(" "));
