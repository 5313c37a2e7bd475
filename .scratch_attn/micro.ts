import { denseCausalAttention, fastExp } from "../runtime/src/model/llama.ts";
import { loadSgemm } from "../runtime/src/model/blas.ts";
const sg = await loadSgemm();
const seq = Number(Deno.args[0] ?? 4096), H = 9, KH = 3, d = 64;
const rnd = (n: number) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1; return a; };
const q = rnd(H * seq * d), k = rnd(KH * seq * d), v = rnd(KH * seq * d);
const ctx = { layer: 0, offset: 0, seq, kvLen: seq, kvStride: seq, heads: H, kvHeads: KH, headDim: d, scale: 0.125, sgemm: sg };
// gemm only
let t = performance.now();
const s = new Float32Array(384 * seq), op = new Float32Array(384 * d);
for (let g = 0; g < KH; g++) for (let i0 = 0; i0 < seq; i0 += 128) { const end = i0 + 128; sg.gemm(false, true, 384, end, d, 0.125, q, d, k, d, 0, s, end); sg.gemm(false,false,384,d,end,1,s,end,v,d,0,op,d);}
const tg = performance.now() - t;
t = performance.now();
let n = 0;
for (let g = 0; g < KH; g++) for (let i0 = 0; i0 < seq; i0 += 128) { const end = i0 + 128; for (let r = 0; r < 384; r++) { const base = r*end, stop = base + end; let mx=-Infinity; for (let j=base;j<stop;j++) if (s[j]>mx) mx=s[j]; let sum=0; for (let j=base;j<stop;j++){const e=fastExp(s[j]-mx); s[j]=e; sum+=e;} n+=end; s[0]+=sum*1e-30;} }
const ts = performance.now() - t;
t = performance.now();
denseCausalAttention(q, k, v, ctx);
const tf = performance.now() - t;
console.log(`seq ${seq}: gemms ${tg.toFixed(0)} ms, softmax ${ts.toFixed(0)} ms (${(ts*1e6/n).toFixed(2)} ns/elt, ${n}), full ${tf.toFixed(0)} ms; load ${Deno.loadavg()[0]}`);
