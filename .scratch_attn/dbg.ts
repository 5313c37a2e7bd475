import { denseCausalAttention, setAttentionThreads } from "../runtime/src/model/llama.ts";
import { loadSgemm } from "../runtime/src/model/blas.ts";
const sgemm = await loadSgemm();
const rand = (n: number, seed: number) => { let s = seed >>> 0; const a = new Float32Array(new SharedArrayBuffer(4 * n)); for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; a[i] = (s / 2 ** 32 - 0.5) * 4; } return a; };
for (const c of [{ heads: 9, kvHeads: 3, seq: 400, offset: 0, d: 64 }, { heads: 6, kvHeads: 2, seq: 333, offset: 301, d: 40 }, { heads: 6, kvHeads: 2, seq: 333, offset: 301, d: 40 }]) {
  const kvLen = c.offset + c.seq, stride = kvLen + 5;
  const q = rand(c.heads * c.seq * c.d, 12), k = rand(c.kvHeads * stride * c.d, 301), v = rand(c.kvHeads * stride * c.d, 401);
  const ctx = { layer: 0, offset: c.offset, seq: c.seq, kvLen, kvStride: stride, heads: c.heads, kvHeads: c.kvHeads, headDim: c.d, scale: 1 / Math.sqrt(c.d), sgemm };
  setAttentionThreads(1); const one = denseCausalAttention(q, k, v, ctx);
  setAttentionThreads(2); let two = denseCausalAttention(q, k, v, ctx);
  for (let i = 0; i < 100 && !(two.buffer instanceof SharedArrayBuffer); i++) { await new Promise((r) => setTimeout(r, 100)); two = denseCausalAttention(q, k, v, ctx); }
  let bad = 0, first = -1; for (let i = 0; i < one.length; i++) if (one[i] !== two[i]) { bad++; if (first < 0) first = i; }
  console.log(c, "shared", two.buffer instanceof SharedArrayBuffer, "bad", bad, "first row", Math.floor(first / c.d), first >= 0 ? [one[first], two[first]] : "");
}
