import { newSoftmaxKernel } from "../runtime/src/model/attn_wasm.ts";
import { fastExp } from "../runtime/src/model/llama.ts";
const k = newSoftmaxKernel()!;
console.log("kernel", !!k);
let worst = 0, worstSum = 0;
for (const [len, ld] of [[1, 1], [1, 5], [2, 2], [3, 7], [4, 4], [5, 9], [17, 17], [1000, 1003], [4095, 4096]]) {
  const s = k.scratch(ld * 2 + 3);
  const at = 3;
  const src = new Float32Array(ld); for (let i = 0; i < ld; i++) src[i] = (Math.random() * 2 - 1) * 30;
  s.set(src, at); s[at + ld] = 12345;
  const sum = k.row(at, len, ld);
  let mx = -Infinity; for (let j = 0; j < len; j++) mx = Math.max(mx, src[j]);
  let ref = 0;
  for (let j = 0; j < len; j++) { const e = Math.exp(src[j] - mx); ref += e; worst = Math.max(worst, Math.abs(s[at + j] / Math.fround(e) - 1)); if (Math.fround(fastExp(src[j]-mx)) !== s[at+j]) console.log("diff fastExp", len, j); }
  for (let j = len; j < ld; j++) if (s[at + j] !== 0) throw new Error("tail " + len);
  if (s[at + ld] !== 12345 || s[at-1] !== 0) throw new Error("overrun");
  worstSum = Math.max(worstSum, Math.abs(sum / ref - 1));
}
console.log("worst rel", worst, "sum rel", worstSum);
// speed
const N = 4096, R = 64; const s = k.scratch(R * N);
const src = new Float32Array(R * N); for (let i = 0; i < src.length; i++) src[i] = Math.random() * 8 - 4;
let best = Infinity;
for (let it = 0; it < 60; it++) { s.set(src); const t = performance.now(); for (let r = 0; r < R; r++) k.row(r * N, N, N); best = Math.min(best, performance.now() - t); }
console.log("wasm", (best * 1e6 / (R * N)).toFixed(2), "ns/elt");
