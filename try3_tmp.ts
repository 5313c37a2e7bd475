import { loadSgemm } from "./runtime/src/model/blas.ts";
const g = await loadSgemm();
for (const [M, N, K] of [[1024, 1536, 576], [1024, 576, 1536], [1024, 576, 576], [128, 1024, 64], [128, 64, 1024]]) {
  const A = new Float32Array(M * K).fill(0.01), B = new Float32Array(N * K).fill(0.02), C = new Float32Array(M * N);
  const reps = Math.max(2, Math.round(2e10 / (2 * M * N * K)));
  let t = performance.now(); for (let i = 0; i < reps; i++) g.gemm(false, true, M, N, K, 1, A, K, B, K, 0, C, N);
  console.log(M, N, K, "GFLOPS", (reps * 2 * M * N * K / ((performance.now() - t) / 1000) / 1e9).toFixed(1));
}
