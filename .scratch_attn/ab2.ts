import process from "node:process";
import { denseCausalAttention, setAttentionThreads, setWasmSoftmax } from "../runtime/src/model/llama.ts";
import { loadSgemm } from "../runtime/src/model/blas.ts";
const sg = await loadSgemm();
const seq = Number(process.argv[2] ?? 4096), H = 9, KH = 3, d = 64;
const rnd = (n: number) => { const a = new Float32Array(new SharedArrayBuffer(4 * n)); for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1; return a; };
const q = rnd(H * seq * d), k = rnd(KH * seq * d), v = rnd(KH * seq * d);
const ctx = { layer: 0, offset: 0, seq, kvLen: seq, kvStride: seq, heads: H, kvHeads: KH, headDim: d, scale: 0.125, sgemm: sg };
setAttentionThreads(2); denseCausalAttention(q, k, v, ctx); await new Promise((r) => setTimeout(r, 1500));
let ref: Float32Array | undefined;
for (const [th, w] of [[1, false], [1, true], [2, true], [1, true], [2, true]] as const) {
  setAttentionThreads(th); setWasmSoftmax(w);
  const t = performance.now();
  const o = denseCausalAttention(q, k, v, ctx);
  const ms = performance.now() - t;
  if (!ref) ref = o; let md = 0; for (let i = 0; i < o.length; i++) md = Math.max(md, Math.abs(o[i] - ref[i]));
  console.log(`threads ${th} ${w ? "wasm" : "ts  "} ${ms.toFixed(0)} ms maxdiff ${md} shared ${o.buffer instanceof SharedArrayBuffer}`);
}
console.log("load", (await import("node:os")).loadavg()[0]);
