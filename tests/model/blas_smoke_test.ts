/**
 * The GEMM in use (OpenBLAS via FFI under Deno and Bun, or the TypeScript fallback) against a float64
 * computation: all four transpose combinations, leading dimensions larger than the rows, subarray offsets,
 * alpha/beta, and odd sizes.
 */
import { assert, test } from "../harness.ts";
import { loadSgemm, tsSgemm } from "../../runtime/src/model/blas.ts";
// OpenBLAS is loaded once per process and kept (runtime/src/model/blas.ts): load it before any test, so the
// resource sanitizer sees a library held for the process, not one a test forgot to close.
await loadSgemm();

const rand = (n: number, seed: number) => {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
};

test("sgemm (FFI and fallback) matches float64 on odd shapes, transposes, strides and offsets", async () => {
  const fast = await loadSgemm();
  console.log(`gemm backend: ${fast.name}`);
  for (const g of [fast, tsSgemm]) {
    for (const [m, n, k] of [[1, 1, 1], [37, 29, 53], [5, 130, 7], [64, 3, 200]]) {
      for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        const lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 5;
        const a = rand((ta ? k : m) * lda + 11, m + n), b = rand((tb ? n : k) * ldb + 13, k + 1);
        const c0 = rand(m * ldc + 7, 3);
        const c = c0.slice();
        g.gemm(ta, tb, m, n, k, 0.75, a.subarray(11), lda, b.subarray(13), ldb, -0.5, c.subarray(7), ldc);
        let worst = 0;
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let s = 0;
            for (let p = 0; p < k; p++) {
              s += a[11 + (ta ? p * lda + i : i * lda + p)] * b[13 + (tb ? j * ldb + p : p * ldb + j)];
            }
            const want = 0.75 * s - 0.5 * c0[7 + i * ldc + j];
            worst = Math.max(worst, Math.abs(c[7 + i * ldc + j] - want) / (1 + Math.abs(want)));
          }
        }
        assert.ok(worst < 1e-5, `${g.name} ${m}x${n}x${k} ${ta} ${tb}: ${worst}`);
        assert.deepEqual(c.subarray(0, 7), c0.subarray(0, 7)); // nothing before the C view is touched
      }
    }
  }
});
