/**
 * `distattn.partialAttn`: DistAttention's local step (Infinite-LLM, arXiv 2401.02669 §4, the "micro-attention"
 * of one KV block, as the abstract and TECHNIQUES.md §6 describe it: no public code exists) — the attention of
 * the queries over the keys of one block of a sharded KV cache, returning the block's normalised output and its
 * log-sum-exp, so that the host of the block sends back only `(o, lse)` and `distattn.merge` combines the blocks
 * exactly.
 *
 * The block holds the keys at global positions `[start, start + len)` (runtime scalars, so one lowered program
 * serves a block that grows by one row per decode step); the queries sit at global positions `pos … pos + seq −
 * 1` (runtime scalar `pos`), and query `i` sees the block's keys at positions `≤ pos + i` — causal across the
 * block's boundary, as for the newest block that straddles a prefill chunk. A row that sees none gets
 * `lse = −Infinity` and `o = 0`.
 *
 * It is `dense.cacheAttn`'s arithmetic with a key offset: the CPU reference is `cacheAttentionReference` with a
 * `block`, the GPU lowering `splitKvLowering` with `block` (the split-KV kernels and their combine).
 * @module
 */
import { Effect, Schema } from "effect";
import { allocHost, type CpuContext, decodeParamsSync, ShapeError, tensorType } from "@longctx/graph";
import type { Cost, DescsOf, GpuLowering, HostOf, Operator, TensorType } from "@longctx/graph";
import { effectiveScale } from "../dense/common.ts";
import { cacheAttentionReference, splitKvLowering, type SplitKvShape } from "../dense/cache_attn.ts";

/** The schema of {@link PartialAttnParams}: every field optional on input, defaults filled on decode. */
export type PartialAttnParamsSchema = Schema.Struct<{
  readonly scale: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly splitKeys: Schema.withDecodingDefaultKey<Schema.Int>;
}>;

/** Parameters of `distattn.partialAttn`. */
export const PartialAttnParams: PartialAttnParamsSchema = Schema.Struct({
  /** Softmax scale; 0 means 1/sqrt(headDim). */
  scale: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0)),
  ),
  /** Keys per split-KV chunk of the GPU kernels (multiple of 64). */
  splitKeys: Schema.Int.check(Schema.isGreaterThanOrEqualTo(64), Schema.isMultipleOf(64)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(256)),
  ),
});
/** Decoded `distattn.partialAttn` parameters. */
export type PartialAttnParams = typeof PartialAttnParams.Type;

/** `distattn.partialAttn` parameters from a partial object, defaults filled; a `ParamsError` for a bad value. */
export const partialAttnParams = (p: Partial<PartialAttnParams> = {}): PartialAttnParams =>
  decodeParamsSync("distattn.partialAttn", PartialAttnParams, p);

/** Input ports of `distattn.partialAttn`. */
export type PartialAttnInputs = {
  /** Queries, `f32 [heads, seq, headDim]` (after RoPE), at global positions `pos … pos + seq − 1`. */
  readonly q: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** The block's keys, `f32 [kvHeads, capacity, headDim]`: row `r` is global position `start + r`, `len` valid. */
  readonly kBlock: TensorType<"f32", readonly ["kvHeads", "capacity", "headDim"]>;
  /** The block's values, `f32 [kvHeads, capacity, headDim]`. */
  readonly vBlock: TensorType<"f32", readonly ["kvHeads", "capacity", "headDim"]>;
};
/** Output ports of `distattn.partialAttn`. */
export type PartialAttnOutputs = {
  /** The block's normalised attention output, `f32 [heads, seq, headDim]` (0 for a row that sees no key). */
  readonly o: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Natural-log sum of exp of the block's scaled scores, `f32 [heads, seq]`; −Infinity for no key. */
  readonly lse: TensorType<"f32", readonly ["heads", "seq"]>;
};

const ports: { readonly inputs: PartialAttnInputs; readonly outputs: PartialAttnOutputs } = {
  inputs: {
    q: tensorType("f32", ["heads", "seq", "headDim"] as const),
    kBlock: tensorType("f32", ["kvHeads", "capacity", "headDim"] as const),
    vBlock: tensorType("f32", ["kvHeads", "capacity", "headDim"] as const),
  },
  outputs: {
    o: tensorType("f32", ["heads", "seq", "headDim"] as const),
    lse: tensorType("f32", ["heads", "seq"] as const),
  },
};
type In = PartialAttnInputs;
type Out = PartialAttnOutputs;

const shapes = (i: DescsOf<In>): SplitKvShape => {
  const [heads, seq, headDim] = i.q.shape as [number, number, number];
  const [kvHeads, capacity] = i.kBlock.shape as [number, number, number];
  return { heads, kvHeads, seq, headDim, capacity };
};

/** The block of a run: `pos`, `start`, `len` from the scalars, checked (throws `RangeError`). */
export const blockScalars = (
  scalars: CpuContext["scalars"] | undefined,
  capacity: number,
): { readonly pos: number; readonly start: number; readonly len: number } => {
  const get = (name: string) => {
    const x = scalars?.[name];
    if (x === undefined || !Number.isInteger(x) || x < 0) {
      throw new RangeError(`scalar ${name} = ${x} (distattn.partialAttn reads pos, start and len)`);
    }
    return x;
  };
  const pos = get("pos"), start = get("start"), len = get("len");
  if (len > capacity) throw new RangeError(`block len ${len} exceeds its capacity ${capacity}`);
  return { pos, start, len };
};

const bad = (message: string, hint: string) => Effect.fail(new ShapeError({ message, hint }));

/**
 * `distattn.partialAttn` (see the module doc). Inputs `q f32 [heads, seq, headDim]`, `kBlock`, `vBlock
 * f32 [kvHeads, capacity, headDim]`; runtime scalars `pos` (global position of query 0), `start` (global
 * position of block row 0), `len` (valid block rows, ≤ capacity). Outputs `o f32 [heads, seq, headDim]`,
 * `lse f32 [heads, seq]` (natural log; −Infinity where a query sees no key of the block). Work
 * `O(heads · seq · len · headDim)`. Shape errors: ranks, heads not a multiple of kvHeads, headDim not a
 * multiple of 4, blocks of different shapes; the GPU lowering needs headDim % 64 = 0.
 */
export const partialAttn: Operator<PartialAttnParams, In, Out> = {
  name: "distattn.partialAttn",
  kind: "partial-attn",
  reference:
    "Infinite-LLM (arXiv 2401.02669) §4 DistAttention micro-attention; FlashAttention-2 §3.1 split-KV",
  params: PartialAttnParams,
  inputs: ports.inputs,
  outputs: ports.outputs,
  scalars: ["pos", "start", "len"],
  example: { scalars: { pos: 0, start: 0, len: 256 } },
  infer: (_p, i) => {
    if (i.q.shape.length !== 3 || i.kBlock.shape.length !== 3 || i.vBlock.shape.length !== 3) {
      return bad(`q [${i.q.shape}], kBlock [${i.kBlock.shape}]: expected rank 3`, "q [heads, seq, headDim]");
    }
    const s = shapes(i);
    if (i.vBlock.shape.join() !== i.kBlock.shape.join()) {
      return bad(`vBlock [${i.vBlock.shape}] differs from kBlock [${i.kBlock.shape}]`, "one shape for both");
    }
    if (i.kBlock.shape[2] !== s.headDim) {
      return bad(
        `kBlock headDim ${i.kBlock.shape[2]} ≠ q's ${s.headDim}`,
        "blocks are [kvHeads, capacity, headDim]",
      );
    }
    if (s.heads % s.kvHeads !== 0 || s.seq < 1 || s.capacity < 1) {
      return bad(
        `heads ${s.heads}, kvHeads ${s.kvHeads}, seq ${s.seq}, capacity ${s.capacity}`,
        "heads a multiple of kvHeads (GQA), at least one query and one block row",
      );
    }
    if (s.headDim % 4 !== 0) return bad(`headDim ${s.headDim} is not a multiple of 4`, "pad headDim to 4");
    return Effect.succeed({
      o: { ...ports.outputs.o, shape: [s.heads, s.seq, s.headDim] },
      lse: { ...ports.outputs.lse, shape: [s.heads, s.seq] },
    } as DescsOf<Out>);
  },
  cpu: (p, i, ctx) => {
    const s = shapes({ q: i.q.desc, kBlock: i.kBlock.desc, vBlock: i.vBlock.desc });
    const b = blockScalars(ctx?.scalars, s.capacity);
    const r = cacheAttentionReference(
      i.q.data,
      i.kBlock.data,
      i.vBlock.data,
      s,
      b.pos,
      effectiveScale(p.scale, s.headDim),
      0,
      "heads",
      { start: b.start, len: b.len },
    );
    const o = allocHost({ ...ports.outputs.o, shape: [s.heads, s.seq, s.headDim] });
    o.data.set(r.o);
    const lse = allocHost({ ...ports.outputs.lse, shape: [s.heads, s.seq] });
    lse.data.set(r.lse);
    return { o, lse } as HostOf<Out>;
  },
  gpu: (p, i): GpuLowering =>
    splitKvLowering(
      shapes(i),
      effectiveScale(p.scale, i.q.shape[2]),
      0,
      "heads",
      p.splitKeys,
      "pos",
      ["kBlock", "vBlock"],
      false,
      undefined,
      true,
    ),
  cost: (p, i): Cost => {
    const s = shapes(i);
    // Up to the whole block: the cost at the largest length this program serves.
    const keys = s.capacity;
    return {
      flops: 4 * s.heads * s.seq * keys * s.headDim,
      bytesRead: s.heads * s.seq * s.headDim * 4 + 2 * s.kvHeads * keys * s.headDim * 4,
      bytesWritten: s.heads * s.seq * (s.headDim + 1) * 4,
      workspaceBytes: s.seq * s.heads * Math.ceil(keys / p.splitKeys) * (s.headDim + 2) * 4,
    };
  },
};
