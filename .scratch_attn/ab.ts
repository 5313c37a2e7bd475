import { denseCausalAttention, setWasmSoftmax } from "../runtime/src/model/llama.ts";
import { loadSgemm } from "../runtime/src/model/blas.ts";
const sg = await loadSgemm();
const seq = Number(Deno.args[0] ?? 4096), H = 9, KH = 3, d = 64;
const rnd = (n: number) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1; return a; };
const q = rnd(H * seq * d), k = rnd(KH * seq * d), v = rnd(KH * seq * d);
const ctx = { layer: 0, offset: 0, seq, kvLen: seq, kvStride: seq, heads: H, kvHeads: KH, headDim: d, scale: 0.125, sgemm: sg };
let ref: Float32Array | undefined;
for (const w of [false, true, false, true]) {
  setWasmSoftmax(w);
  const t = performance.now();
  const o = denseCausalAttention(q, k, v, ctx);
  const ms = performance.now() - t;
  if (!ref) ref = o; let md = 0; for (let i = 0; i < o.length; i++) md = Math.max(md, Math.abs(o[i] - ref[i]));
  console.log(`${w ? "wasm" : "ts  "} ${ms.toFixed(0)} ms maxdiff ${md} load ${Deno.loadavg()[0].toFixed(2)}`);
}
