/**
 * `mergeAttentionReference` (ops/dense/merge.ts): partial attentions over a random partition of the keys
 * (1 to 64 blocks, uneven, some empty, causal so that early rows see no key of late blocks), merged by LSE,
 * equal causal attention over all keys (float64 reference), in any merge order and tree shape.
 * @module
 */
import { assert, test } from "../harness.ts";
import { dense } from "@longctx/ops";
import { maxAbsDiff, naiveAttention64, randn, rng } from "./ref64.ts";

const f32 = (x: Float64Array) => Float32Array.from(x);

test("merge: LSE merge of random causal key partitions equals attention over the union", () => {
  const r = rng(7);
  for (
    const [heads, kvHeads, seq, d, blocks] of [[4, 2, 37, 16, 1], [3, 1, 50, 8, 7], [8, 8, 64, 32, 64], [
      6,
      3,
      23,
      12,
      40,
    ]]
  ) {
    const q = randn(heads * seq * d, 11 + seq), k = randn(kvHeads * seq * d, 12 + seq);
    const v = randn(kvHeads * seq * d, 13 + seq);
    const scale = 1 / Math.sqrt(d);
    // Uneven random blocks over key indices: each key goes to a random block (some blocks end up empty).
    const blockOf = Array.from({ length: seq }, () => Math.floor(r() * blocks));
    const parts = Array.from({ length: blocks }, (_, b) => {
      const p = naiveAttention64(q, k, v, heads, kvHeads, seq, d, scale, (_h, _i, j) => blockOf[j] === b);
      return { o: f32(p.o), lse: f32(p.lse) };
    });
    const full = naiveAttention64(q, k, v, heads, kvHeads, seq, d, scale);
    const m = dense.mergeAttentionReference(parts, heads, seq, d);
    assert.ok(maxAbsDiff(m.o, full.o) < 1e-6, `o ${maxAbsDiff(m.o, full.o)}`);
    assert.ok(maxAbsDiff(m.lse, full.lse) < 1e-5, `lse ${maxAbsDiff(m.lse, full.lse)}`);
    // Associative: merging two halves' merges gives the same.
    const half = Math.ceil(blocks / 2);
    const a = dense.mergeAttentionReference(parts.slice(0, half), heads, seq, d);
    const b = dense.mergeAttentionReference(parts.slice(half), heads, seq, d);
    const ab = dense.mergeAttentionReference([b, a], heads, seq, d);
    assert.ok(maxAbsDiff(ab.o, full.o) < 1e-6, `tree o ${maxAbsDiff(ab.o, full.o)}`);
  }
});

test("merge: rows empty in every part come out o = 0, lse = −Infinity; bad lengths are a RangeError", () => {
  const e = { o: new Float32Array(2 * 3 * 4).fill(5), lse: new Float32Array(2 * 3).fill(-Infinity) };
  const gpuEmpty = { o: new Float32Array(2 * 3 * 4).fill(7), lse: new Float32Array(2 * 3).fill(-3e38) };
  const m = dense.mergeAttentionReference([e, gpuEmpty], 2, 3, 4);
  assert.ok(m.o.every((x) => x === 0));
  assert.ok(m.lse.every((x) => x === -Infinity));
  assert.throws(() => dense.mergeAttentionReference([e], 2, 3, 5), RangeError);
  const none = dense.mergeAttentionReference([], 2, 3, 4);
  assert.ok(none.lse.every((x) => x === -Infinity));
});
