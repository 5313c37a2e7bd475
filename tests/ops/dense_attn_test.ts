/**
 * `dense.attn` CPU reference against an independent float64 computation over many shapes (odd lengths, head
 * dims 64 and 128, GQA ratios 1, 3, 4, 8), f32 and f16 inputs; typed shape errors.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect, Exit, Schema } from "effect";
import { hostTensor } from "@longctx/graph";
import { denseAttn, denseAttnF16 } from "../../ops/dense/attn.ts";
import { f32ToHalf, halfToF32 } from "../../ops/dense/common.ts";
import { maxAbsDiff, naiveAttention64, randn, relErr } from "./ref64.ts";

const shapes: [number, number, number, number][] = [
  // heads, kvHeads, seq, headDim
  [1, 1, 1, 64],
  [2, 2, 37, 64],
  [3, 1, 61, 128],
  [4, 1, 101, 64],
  [8, 1, 29, 128],
  [8, 2, 77, 64],
  [6, 2, 130, 128],
];

const qkv = (H: number, Hk: number, S: number, D: number, seed: number) => ({
  q: randn(H * S * D, seed, 1.5),
  k: randn(Hk * S * D, seed + 1, 1.5),
  v: randn(Hk * S * D, seed + 2),
});

test("dense.attn cpu f32 matches float64 (rel err ≤ 1e-5) over shapes and GQA ratios", () => {
  const p = Schema.decodeUnknownSync(denseAttn.params)({});
  for (const [H, Hk, S, D] of shapes) {
    const { q, k, v } = qkv(H, Hk, S, D, H * 1000 + S);
    const ref = naiveAttention64(q, k, v, H, Hk, S, D, 1 / Math.sqrt(D));
    const out = denseAttn.cpu(p, {
      q: hostTensor("f32", ["heads", "seq", "headDim"], [H, S, D], q),
      k: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [Hk, S, D], k),
      v: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [Hk, S, D], v),
    });
    const e = relErr(out.o.data, ref.o);
    assert.ok(e <= 1e-5, `[${H},${Hk},${S},${D}] o rel err ${e}`);
    assert.ok(relErr(out.lse.data, ref.lse) <= 1e-6, `lse rel err`);
  }
});

test("dense.attn cpu f16 inputs within 1e-2 of float64 on the unrounded inputs", () => {
  const p = Schema.decodeUnknownSync(denseAttnF16.params)({});
  for (const [H, Hk, S, D] of shapes.slice(2, 5)) {
    const { q, k, v } = qkv(H, Hk, S, D, 7 + S);
    const ref = naiveAttention64(q, k, v, H, Hk, S, D, 1 / Math.sqrt(D));
    const out = denseAttnF16.cpu(p, {
      q: hostTensor("f16", ["heads", "seq", "headDim"], [H, S, D], f32ToHalf(q)),
      k: hostTensor("f16", ["kvHeads", "kvSeq", "headDim"], [Hk, S, D], f32ToHalf(k)),
      v: hostTensor("f16", ["kvHeads", "kvSeq", "headDim"], [Hk, S, D], f32ToHalf(v)),
    });
    const e = relErr(out.o.data, ref.o);
    assert.ok(e <= 1e-2 && e > 0, `[${H},${Hk},${S},${D}] f16 rel err ${e}`);
  }
});

test("f16 conversion round-trips within half precision", () => {
  const x = randn(1000, 3, 10);
  const y = halfToF32(f32ToHalf(x));
  for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - y[i]) <= Math.abs(x[i]) * 2 ** -11 + 1e-7);
});

test("dense.attn with scale: explicit scale changes the result like the reference", () => {
  const [H, Hk, S, D] = [2, 1, 19, 64];
  const { q, k, v } = qkv(H, Hk, S, D, 99);
  const p = Schema.decodeUnknownSync(denseAttn.params)({ scale: 0.3 });
  const ref = naiveAttention64(q, k, v, H, Hk, S, D, 0.3);
  const out = denseAttn.cpu(p, {
    q: hostTensor("f32", ["heads", "seq", "headDim"], [H, S, D], q),
    k: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [Hk, S, D], k),
    v: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [Hk, S, D], v),
  });
  assert.ok(relErr(out.o.data, ref.o) <= 1e-5);
  assert.ok(maxAbsDiff(out.lse.data, ref.lse) <= 1e-5);
});

test("dense.attn infer: typed ShapeError for bad GQA, mismatched seq, bad rank; ParamsError-able schema", () => {
  const p = Schema.decodeUnknownSync(denseAttn.params)({});
  const d = (dims: string[], shape: number[]) => ({ dtype: "f32" as const, dims, shape });
  const run = (q: number[], k: number[], v: number[]) =>
    Effect.runSyncExit(
      denseAttn.infer(
        p,
        {
          q: d(["heads", "seq", "headDim"], q),
          k: d(["kvHeads", "kvSeq", "headDim"], k),
          v: d(["kvHeads", "kvSeq", "headDim"], v),
        } as never,
      ),
    );
  const ok = run([8, 10, 64], [2, 10, 64], [2, 10, 64]);
  assert.ok(Exit.isSuccess(ok));
  for (
    const [q, k, v] of [
      [[6, 10, 64], [4, 10, 64], [4, 10, 64]],
      [[8, 11, 64], [2, 10, 64], [2, 10, 64]],
      [
        [8, 10],
        [2, 10, 64],
        [2, 10, 64],
      ],
      [[8, 10, 62], [2, 10, 62], [2, 10, 62]],
      [[8, 10, 64], [2, 11, 64], [2, 12, 64]],
    ]
  ) {
    const e = run(q, k, v);
    assert.ok(Exit.isFailure(e), `should fail for ${q} ${k}`);
    assert.match(String(Exit.isFailure(e) ? e.cause : ""), /ShapeError/);
  }
  assert.ok(Exit.isFailure(Schema.decodeUnknownExit(denseAttn.params)({ blockQ: 3.5 })));
});
