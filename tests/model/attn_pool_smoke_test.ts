/**
 * The dense attention's fast paths, in Deno and Bun: the WebAssembly SIMD row softmax against `Math.exp`
 * (f64) and the TypeScript loop, and the worker pool (2 threads, SharedArrayBuffer inputs) against the
 * single-threaded path (to 1e-6 of the largest output) and a float64 computation, on odd shapes, GQA ratios and cache offsets.
 */
import { assert, test } from "../harness.ts";
import { denseCausalAttention, setAttentionThreads, setWasmSoftmax } from "../../runtime/src/model/llama.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
import { newSoftmaxKernel } from "../../runtime/src/model/attn_wasm.ts";
import { fastExp } from "../../runtime/src/model/attn_block.ts";
// OpenBLAS is loaded once per process and kept (runtime/src/model/blas.ts): load it before any test, so the
// resource sanitizer sees a library held for the process, not one a test forgot to close.
await loadSgemm();

const rand = (n: number, seed: number, shared: boolean) => {
  let s = seed >>> 0;
  const a = shared ? new Float32Array(new SharedArrayBuffer(4 * n)) : new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 4;
  }
  return a;
};

test("WebAssembly softmax rows: exp(s − max) within 1.3e-7 of Math.exp, f32 values equal fastExp's, tail zeroed", () => {
  const kern = newSoftmaxKernel();
  assert.ok(kern, "WebAssembly SIMD kernel unavailable");
  let worst = 0;
  for (
    const [ci, [len, ld]] of [[1, 1], [1, 6], [2, 2], [3, 8], [4, 4], [5, 5], [7, 19], [1001, 1003]].entries()
  ) {
    const src = rand(ld, 7 + ci, false).map((x) => x * 20);
    const at = 5 + ci;
    const s = kern!.scratch(at + ld + 1);
    s.fill(-7);
    s.set(src, at);
    const sum = kern!.row(at, len, ld);
    let mx = -Infinity;
    for (let j = 0; j < len; j++) mx = Math.max(mx, src[j]);
    let ref = 0;
    for (let j = 0; j < len; j++) {
      const e = Math.exp(src[j] - mx);
      ref += e;
      worst = Math.max(worst, Math.abs(s[at + j] / e - 1));
      assert.equal(s[at + j], Math.fround(fastExp(src[j] - mx)), `len ${len}: element ${j}`);
    }
    for (let j = len; j < ld; j++) assert.equal(s[at + j], 0, `len ${len} ld ${ld}: tail ${j} not zeroed`);
    assert.equal(s[at - 1], -7, "wrote before the row");
    assert.equal(s[at + ld], -7, "wrote after the row");
    assert.ok(Math.abs(sum / ref - 1) < 5e-8, `len ${len}: sum ${sum} vs ${ref}`);
  }
  // f32 rounding of the stored value is ≤ 6e-8; the polynomial adds < 3e-8.
  assert.ok(worst < 1.3e-7, `worst relative error ${worst}`);
});

// Each case has ≥ 2^20 scores (heads · seq · kvLen), the size from which denseCausalAttention uses the pool.
test("worker-pool attention equals the single-threaded path and a float64 computation", async () => {
  const sgemm = await loadSgemm();
  const cases = [
    { heads: 9, kvHeads: 3, seq: 400, offset: 0, d: 64 },
    { heads: 6, kvHeads: 2, seq: 333, offset: 301, d: 40 },
    { heads: 4, kvHeads: 4, seq: 600, offset: 3, d: 16 },
  ];
  for (const [ci, c] of cases.entries()) {
    const kvLen = c.offset + c.seq, stride = kvLen + 5;
    const q = rand(c.heads * c.seq * c.d, 11 + ci, true);
    const k = rand(c.kvHeads * stride * c.d, 300 + ci, true);
    const v = rand(c.kvHeads * stride * c.d, 400 + ci, true);
    const ctx = {
      layer: 0,
      offset: c.offset,
      seq: c.seq,
      kvLen,
      kvStride: stride,
      heads: c.heads,
      kvHeads: c.kvHeads,
      headDim: c.d,
      scale: 1 / Math.sqrt(c.d),
      sgemm,
    };
    setAttentionThreads(1);
    setWasmSoftmax(false);
    const ts = denseCausalAttention(q, k, v, ctx);
    setWasmSoftmax(true);
    const one = denseCausalAttention(q, k, v, ctx);
    setAttentionThreads(2);
    // Workers start asynchronously: until one is ready the call runs on this thread (a non-shared result).
    let two = denseCausalAttention(q, k, v, ctx);
    for (let i = 0; i < 100 && !(two.buffer instanceof SharedArrayBuffer); i++) {
      await new Promise((r) => setTimeout(r, 100));
      two = denseCausalAttention(q, k, v, ctx);
    }
    if (sgemm.name.startsWith("openblas")) {
      assert.ok(two.buffer instanceof SharedArrayBuffer, "the worker pool never became ready");
    }
    assert.deepEqual(one, ts, `case ${ci}: WebAssembly softmax differs from the TypeScript loop`);
    // OpenBLAS runs single-threaded inside the pool and may then round a GEMM's edge tiles differently.
    let worst = 0, scaleMax = 0;
    for (let i = 0; i < one.length; i++) {
      worst = Math.max(worst, Math.abs(two[i] - one[i]));
      scaleMax = Math.max(scaleMax, Math.abs(one[i]));
    }
    assert.ok(worst <= 1e-6 * scaleMax, `case ${ci}: pool differs from one thread by ${worst}`);
    // float64 reference on every 7th query row of every head
    let num = 0, den = 0;
    for (let h = 0; h < c.heads; h++) {
      const g = Math.floor(h / (c.heads / c.kvHeads));
      for (let i = h % 7; i < c.seq; i += 7) {
        const n = c.offset + i + 1;
        const s = new Float64Array(n);
        let mx = -Infinity;
        for (let j = 0; j < n; j++) {
          let dot = 0;
          for (let t = 0; t < c.d; t++) dot += q[(h * c.seq + i) * c.d + t] * k[(g * stride + j) * c.d + t];
          s[j] = dot * ctx.scale;
          mx = Math.max(mx, s[j]);
        }
        let sum = 0;
        for (let j = 0; j < n; j++) sum += s[j] = Math.exp(s[j] - mx);
        for (let t = 0; t < c.d; t++) {
          let acc = 0;
          for (let j = 0; j < n; j++) acc += s[j] * v[(g * stride + j) * c.d + t];
          const want = acc / sum;
          num += (two[(h * c.seq + i) * c.d + t] - want) ** 2;
          den += want ** 2;
        }
      }
    }
    assert.ok(Math.sqrt(num / den) < 1e-5, `case ${ci}: relative error ${Math.sqrt(num / den)}`);
  }
  setAttentionThreads(2);
});
