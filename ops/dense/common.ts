/**
 * Shared helpers for the attention operators (dense and SALE): f16 conversion, shape checks that fail with
 * typed `ShapeError`s, causal block geometry and the GQA head mapping.
 * @module
 */
import { Effect } from "effect";
import { ShapeError } from "@longctx/graph";
import type { HostTensor, TensorDesc } from "@longctx/graph";

/** Convert IEEE half bits (`Uint16Array`) to float32 values. */
export const halfToF32 = (bits: Uint16Array): Float32Array =>
  Float32Array.from(new Float16Array(bits.buffer, bits.byteOffset, bits.length));

/** Round float32 values to IEEE half and return the raw bits (`Uint16Array`), as `f16` host tensors store them. */
export const f32ToHalf = (x: ArrayLike<number>): Uint16Array => {
  const h = Float16Array.from(x as ArrayLike<number>);
  return new Uint16Array(h.buffer, h.byteOffset, h.length);
};

/** The values of an `f32` or `f16` host tensor as float32 (a copy for f16, the same array for f32). */
export const asF32 = (t: HostTensor): Float32Array => {
  if (t.desc.dtype === "f32") return t.data as Float32Array;
  if (t.desc.dtype === "f16") return halfToF32(t.data as Uint16Array);
  throw new RangeError(`expected f32 or f16, got ${t.desc.dtype}`);
};

/** Fail with a `ShapeError` naming `port` when `ok` is false. */
export const need = (
  ok: boolean,
  port: string,
  message: string,
  hint: string,
): Effect.Effect<void, ShapeError> =>
  ok ? Effect.void : Effect.fail(new ShapeError({ message: `${port}: ${message}`, hint }));

/** Attention problem size read from Q `[heads, seq, headDim]` and K/V `[kvHeads, seq, headDim]`. */
export interface AttnShape {
  /** Query heads (`q`'s first dim). */
  readonly heads: number;
  /** Key/value heads (`k`'s first dim); divides `heads` (GQA). */
  readonly kvHeads: number;
  /** Tokens (query rows, equal to key rows in prefill). */
  readonly seq: number;
  /** Elements per head vector. */
  readonly headDim: number;
}

/**
 * Check Q/K/V descriptions for causal self-attention prefill: rank 3, same seq and headDim, heads divisible by
 * kvHeads, float dtypes (`f32` or `f16`, all the same). Fails with `ShapeError` naming the bad port.
 */
export const checkQKV = (
  q: TensorDesc,
  k: TensorDesc,
  v: TensorDesc,
): Effect.Effect<AttnShape, ShapeError> =>
  Effect.flatMap(checkQKVCross(q, k, v), (s) =>
    s.kvSeq === s.seq ? Effect.succeed(s) : Effect.fail(
      new ShapeError({
        message: `k: shape [${k.shape}] vs q [${q.shape}]: this operator needs as many keys as queries`,
        hint: "K is [kvHeads, seq, headDim] (prefill from position 0)",
      }),
    ));

/** Attention shape with a key length of its own (`kvSeq ≥ seq`, bottom-right causal alignment). */
export interface CrossAttnShape extends AttnShape {
  /** Key rows; query `i` sits at position `kvSeq − seq + i`. */
  readonly kvSeq: number;
}

/**
 * As {@link checkQKV}, but K/V may hold more rows than Q (`kvSeq ≥ seq`): the queries are the last `seq`
 * positions of the `kvSeq` keys (bottom-right causal alignment, as FlashAttention ≥ 2.1 for `seqQ ≠ seqK`).
 */
export const checkQKVCross = (
  q: TensorDesc,
  k: TensorDesc,
  v: TensorDesc,
): Effect.Effect<CrossAttnShape, ShapeError> =>
  Effect.gen(function* () {
    for (const [name, d] of [["q", q], ["k", k], ["v", v]] as const) {
      yield* need(
        d.shape.length === 3,
        name,
        `expected rank 3 [heads, seq, headDim], got [${d.shape}]`,
        "reshape",
      );
      yield* need(
        d.dtype === "f32" || d.dtype === "f16",
        name,
        `dtype ${d.dtype}`,
        "pass f32 or f16 tensors",
      );
    }
    yield* need(k.dtype === q.dtype && v.dtype === q.dtype, "k/v", "dtypes differ from q", "use one dtype");
    const [heads, seq, headDim] = q.shape as [number, number, number];
    const [kvHeads, kSeq, kDim] = k.shape as [number, number, number];
    yield* need(seq > 0 && headDim > 0 && heads > 0 && kvHeads > 0, "q", "empty tensor", "seq, heads > 0");
    yield* need(
      kSeq >= seq && kDim === headDim,
      "k",
      `shape [${k.shape}] vs q [${q.shape}]`,
      "K is [kvHeads, kvSeq ≥ seq, headDim]",
    );
    yield* need(
      v.shape[0] === kvHeads && v.shape[1] === kSeq && v.shape[2] === headDim,
      "v",
      `shape [${v.shape}] vs k [${k.shape}]`,
      "V has K's shape",
    );
    yield* need(
      heads % kvHeads === 0,
      "q",
      `heads ${heads} not a multiple of kvHeads ${kvHeads}`,
      "GQA groups",
    );
    yield* need(headDim % 4 === 0, "q", `headDim ${headDim} not a multiple of 4`, "pad headDim to 4");
    return { heads, kvHeads, seq, headDim, kvSeq: kSeq };
  });

/** Number of key blocks of `blockK` tokens that query block `r` (of `blockQ` rows) can see causally. */
export const causalKBlocks = (r: number, seq: number, blockQ: number, blockK: number): number =>
  Math.min(Math.ceil(seq / blockK), Math.ceil(Math.min((r + 1) * blockQ, seq) / blockK));

/** Causal (query block, key block) pairs in a `seq`-token prefill: the denominator of density. */
export const causalBlockCount = (seq: number, blockQ: number, blockK: number): number => {
  let n = 0;
  const qBlocks = Math.ceil(seq / blockQ);
  for (let r = 0; r < qBlocks; r++) n += causalKBlocks(r, seq, blockQ, blockK);
  return n;
};

/** The softmax scale actually used: `scale`, or 1/sqrt(headDim) for 0. */
export const effectiveScale = (scale: number, headDim: number): number =>
  scale > 0 ? scale : 1 / Math.sqrt(headDim);

/** Round-half-to-even (as `float2int_rn` on CUDA and WGSL's `round`). */
export const roundEven = (x: number): number => {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
};
