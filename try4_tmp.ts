import { loadSgemm } from "./runtime/src/model/blas.ts";
import { denseCausalAttention } from "./runtime/src/model/llama.ts";
const sg = await loadSgemm();
const N = 1024, H = 9, KH = 3, D = 64;
const q = new Float32Array(H * N * D).map(() => Math.random() - 0.5);
const k = new Float32Array(KH * N * D).map(() => Math.random() - 0.5);
const v = new Float32Array(KH * N * D).map(() => Math.random() - 0.5);
let gemmMs = 0;
const timedSg = { name: "t", gemm(...a: Parameters<typeof sg.gemm>) { const t = performance.now(); sg.gemm(...a); gemmMs += performance.now() - t; } };
const noSg = { name: "none", gemm() {} };
for (const s of [timedSg, noSg, timedSg]) {
  gemmMs = 0;
  const t = performance.now();
  denseCausalAttention(q, k, v, { layer: 0, offset: 0, seq: N, kvLen: N, kvStride: N, heads: H, kvHeads: KH, headDim: D, scale: 0.125, sgemm: s as any });
  console.log(s.name, "total ms", performance.now() - t, "gemm ms", gemmMs);
}
