/**
 * `dense.attn`: causal flash attention with online softmax and GQA, returning the LSE — the baseline of every
 * technique and the oracle of `sale.sparseAttn`.
 *
 * Reference: FlashAttention-2 (Dao, 2023), Algorithm 1 (forward pass, online softmax, LSE output).
 * @module
 */
import { Effect, Schema } from "effect";
import { allocHost, decodeParamsSync, storageBytes, tensorType } from "@longctx/graph";
import type {
  Cost,
  DescsOf,
  GpuLowering,
  HostOf,
  HostTensor,
  Operator,
  ShapeError,
  TensorType,
} from "@longctx/graph";
import { asF32, causalBlockCount, checkQKVCross, effectiveScale } from "./common.ts";
import { cacheAttentionGemm, cacheAttentionReference, splitKvLowering } from "./cache_attn.ts";
import { chooseTiles, flashKey, flashWgsl } from "./flash_wgsl.ts";

/** The schema of {@link DenseAttnParams}: every field optional on input, with the default filled in on decode. */
export type DenseAttnParamsSchema = Schema.Struct<{
  readonly scale: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly blockQ: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly workgroupMemory: Schema.withDecodingDefaultKey<Schema.Int>;
}>;

/** Parameters of `dense.attn`. */
export const DenseAttnParams: DenseAttnParamsSchema = Schema.Struct({
  /** Softmax scale; 0 means 1/sqrt(headDim). */
  scale: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0)),
  ),
  /** Query rows per workgroup (multiple of 16). */
  blockQ: Schema.Int.check(Schema.isGreaterThanOrEqualTo(16), Schema.isLessThanOrEqualTo(128)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(64)),
  ),
  /** The device's `maxComputeWorkgroupStorageSize` (bytes) the kernel may use; picks tiles. */
  workgroupMemory: Schema.Int.check(Schema.isGreaterThanOrEqualTo(8192)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(32768)),
  ),
});
/** Decoded `dense.attn` parameters. */
export type DenseAttnParams = typeof DenseAttnParams.Type;

/**
 * `dense.attn` parameters from a partial object, defaults filled (`denseParams()`: scale 1/√d, 64 query rows
 * per workgroup, 32 KiB of workgroup memory). Throws a `ParamsError` naming the parameter for an impossible
 * value or an unknown key.
 */
export const denseParams = (p: Partial<DenseAttnParams> = {}): DenseAttnParams =>
  decodeParamsSync("dense.attn", DenseAttnParams, p);

/** Input ports of attention with `q`, `k`, `v` of dtype `D`. */
export type AttnInputs<D extends "f32" | "f16"> = {
  /** Queries, `D [heads, seq, headDim]`. */
  readonly q: TensorType<D, readonly ["heads", "seq", "headDim"]>;
  /** Keys, `D [kvHeads, kvSeq, headDim]`. */
  readonly k: TensorType<D, readonly ["kvHeads", "kvSeq", "headDim"]>;
  /** Values, `D [kvHeads, kvSeq, headDim]`. */
  readonly v: TensorType<D, readonly ["kvHeads", "kvSeq", "headDim"]>;
};
/** Output ports of attention (always f32). */
export type AttnOutputs = {
  /** Attention output, `f32 [heads, seq, headDim]`. */
  readonly o: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Natural-log log-sum-exp of the scaled scores per query row, `f32 [heads, seq]`. */
  readonly lse: TensorType<"f32", readonly ["heads", "seq"]>;
};

/** Port types of attention in dtype `D`. */
export const attnPorts = <D extends "f32" | "f16">(
  dtype: D,
): { readonly inputs: AttnInputs<D>; readonly outputs: AttnOutputs } => ({
  inputs: {
    q: tensorType(dtype, ["heads", "seq", "headDim"] as const),
    k: tensorType(dtype, ["kvHeads", "kvSeq", "headDim"] as const),
    v: tensorType(dtype, ["kvHeads", "kvSeq", "headDim"] as const),
  },
  outputs: {
    o: tensorType("f32", ["heads", "seq", "headDim"] as const),
    lse: tensorType("f32", ["heads", "seq"] as const),
  },
});

type AttnIn<D extends "f32" | "f16"> = AttnInputs<D>;
type AttnOut = AttnOutputs;

/**
 * CPU reference for (masked) causal attention with float64 accumulation and an exact two-pass softmax.
 * `q [heads, seq, d]`, `k`/`v [kvHeads, seq, d]` as float32 values; `keep(h, i, j)` optionally restricts the
 * keys a query row sees (block-sparse masks); rows with no visible key get o = 0, lse = -Infinity.
 * Returns `o [heads, seq, d]` (f32) and `lse [heads, seq]` (natural log of the sum of exp(scaled scores)).
 */
export const attentionReference = (
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  heads: number,
  kvHeads: number,
  seq: number,
  d: number,
  scale: number,
  keep?: (h: number, i: number, j: number) => boolean,
): { o: Float32Array; lse: Float32Array } => {
  const o = new Float32Array(heads * seq * d);
  const lse = new Float32Array(heads * seq);
  const s = new Float64Array(seq);
  const acc = new Float64Array(d);
  const g = heads / kvHeads;
  for (let h = 0; h < heads; h++) {
    const kb = Math.floor(h / g) * seq * d;
    for (let i = 0; i < seq; i++) {
      const qo = (h * seq + i) * d;
      let m = -Infinity;
      for (let j = 0; j <= i; j++) {
        if (keep && !keep(h, i, j)) {
          s[j] = -Infinity;
          continue;
        }
        let dot = 0;
        const ko = kb + j * d;
        for (let x = 0; x < d; x++) dot += q[qo + x] * k[ko + x];
        s[j] = dot * scale;
        if (s[j] > m) m = s[j];
      }
      if (m === -Infinity) {
        lse[h * seq + i] = -Infinity;
        continue;
      }
      let l = 0;
      acc.fill(0);
      for (let j = 0; j <= i; j++) {
        if (s[j] === -Infinity) continue;
        const p = Math.exp(s[j] - m);
        l += p;
        const vo = kb + j * d;
        for (let x = 0; x < d; x++) acc[x] += p * v[vo + x];
      }
      for (let x = 0; x < d; x++) o[qo + x] = acc[x] / l;
      lse[h * seq + i] = m + Math.log(l);
    }
  }
  return { o, lse };
};

/** FLOPs and bytes of causal flash attention that visits `blocks` (query block × key block) pairs per head. */
export const flashCost = (
  heads: number,
  seq: number,
  d: number,
  elt: number,
  blockQ: number,
  blockK: number,
  blocks: number,
): Cost => ({
  flops: 4 * d * heads * blocks * blockQ * blockK,
  bytesRead: heads * seq * d * elt + heads * blocks * blockK * d * 2 * elt,
  bytesWritten: heads * seq * (d + 1) * 4,
  workspaceBytes: 0,
});

/** Build the `dense.attn` operator for inputs of dtype `dtype` (`f32`: `dense.attn`, `f16`: `dense.attn.f16`). */
export const makeDenseAttn = <D extends "f32" | "f16">(
  dtype: D,
): Operator<DenseAttnParams, AttnIn<D>, AttnOut> => {
  const ports = attnPorts(dtype);
  return {
    name: dtype === "f32" ? "dense.attn" : "dense.attn.f16",
    kind: "dense-attn",
    reference: "FlashAttention-2 (Dao 2023), Alg. 1: causal forward with online softmax; GQA; LSE output",
    params: DenseAttnParams,
    inputs: ports.inputs,
    outputs: ports.outputs,
    infer: (_p, i) =>
      Effect.map(checkQKVCross(i.q, i.k, i.v), (s) => ({
        o: { ...ports.outputs.o, shape: [s.heads, s.seq, s.headDim] },
        lse: { ...ports.outputs.lse, shape: [s.heads, s.seq] },
      })) as Effect.Effect<DescsOf<AttnOut>, ShapeError>,
    cpu: (p, i, ctx) => {
      const [heads, seq, d] = i.q.desc.shape as [number, number, number];
      const kvHeads = i.k.desc.shape[0];
      const kvSeq = i.k.desc.shape[1];
      const shape = { heads, kvHeads, seq, headDim: d, capacity: kvSeq };
      const r = ctx?.gemm
        // With the backend's GEMM (cpu backend: OpenBLAS): the same attention as GEMMs, float64 softmax.
        ? cacheAttentionGemm(
          ctx.gemm,
          asF32(i.q as HostTensor),
          asF32(i.k as HostTensor),
          asF32(i.v as HostTensor),
          shape,
          kvSeq - seq,
          effectiveScale(p.scale, d),
          0,
          "heads",
        )
        : kvSeq !== seq
        ? cacheAttentionReference(
          asF32(i.q as HostTensor),
          asF32(i.k as HostTensor),
          asF32(i.v as HostTensor),
          shape,
          kvSeq - seq,
          effectiveScale(p.scale, d),
          0,
          "heads",
        )
        : attentionReference(
          asF32(i.q as HostTensor),
          asF32(i.k as HostTensor),
          asF32(i.v as HostTensor),
          heads,
          kvHeads,
          seq,
          d,
          effectiveScale(p.scale, d),
        );
      const o = allocHost({ ...ports.outputs.o, shape: [heads, seq, d] });
      o.data.set(r.o);
      const lse = allocHost({ ...ports.outputs.lse, shape: [heads, seq] });
      lse.data.set(r.lse);
      return { o, lse } as HostOf<AttnOut>;
    },
    gpu: (p, i, features): GpuLowering => {
      const [heads, seq, headDim] = i.q.shape as [number, number, number];
      if (dtype === "f16" && !features.has("shader-f16")) {
        throw new RangeError("dense.attn.f16 needs the shader-f16 feature");
      }
      if (headDim % 32 !== 0) throw new RangeError(`the flash kernel needs headDim % 32 = 0, got ${headDim}`);
      const kvSeq = i.k.shape[1];
      if (kvSeq !== seq) {
        // q ≠ k (decode, later chunks): the split-KV kernels of dense.cacheAttn at the fixed offset kvSeq − seq.
        if (dtype !== "f32") {
          throw new RangeError("dense.attn.f16 with kvSeq ≠ seq is not lowered (f32 only)");
        }
        const s = { heads, kvHeads: i.k.shape[0], seq, headDim, capacity: kvSeq };
        return splitKvLowering(s, effectiveScale(p.scale, headDim), 0, "heads", 256, kvSeq - seq, ["k", "v"]);
      }
      const t = chooseTiles(dtype, headDim, p.blockQ, 64, p.workgroupMemory);
      const cfg = {
        heads,
        kvHeads: i.k.shape[0],
        seq,
        headDim,
        dtype,
        scale: effectiveScale(p.scale, headDim),
        bq: p.blockQ,
        bk: t.bk,
        qShared: t.qShared,
      } as const;
      return {
        workspaces: {},
        launches: [{
          kernel: {
            key: flashKey(cfg),
            wgsl: flashWgsl(cfg),
            entryPoint: "main",
            bindings: ["read", "read", "read", "read_write", "read_write"],
            enables: dtype === "f16" ? ["f16"] : [],
          },
          buffers: ["in:q", "in:k", "in:v", "out:o", "out:lse"],
          workgroups: [Math.ceil(seq / p.blockQ), heads, 1],
        }],
      };
    },
    cost: (p, i) => {
      const [heads, seq, d] = i.q.shape as [number, number, number];
      const kvSeq = i.k.shape[1];
      if (kvSeq !== seq) {
        // Split-KV: every query reads its visible keys once (bottom-right causal).
        const keys = seq * kvSeq - (seq * (seq - 1)) / 2;
        return {
          flops: 4 * d * heads * keys,
          bytesRead: heads * seq * d * storageBytes(dtype, 1) +
            2 * i.k.shape[0] * kvSeq * d * storageBytes(dtype, 1),
          bytesWritten: heads * seq * (d + 1) * 4,
          workspaceBytes: heads * seq * Math.ceil(kvSeq / 256) * (d + 2) * 4,
        };
      }
      // The key tile the lowering picks for this device budget (chooseTiles), so cost and kernel agree.
      const bk = chooseTiles(dtype, d, p.blockQ, 64, p.workgroupMemory).bk;
      return flashCost(
        heads,
        seq,
        d,
        storageBytes(dtype, 1),
        p.blockQ,
        bk,
        causalBlockCount(seq, p.blockQ, bk),
      );
    },
  };
};

/** `dense.attn` for f32 inputs. */
export const denseAttn: Operator<DenseAttnParams, AttnInputs<"f32">, AttnOutputs> = makeDenseAttn("f32");
/** `dense.attn.f16` for f16 inputs (f32 accumulation, f32 outputs). */
export const denseAttnF16: Operator<DenseAttnParams, AttnInputs<"f16">, AttnOutputs> = makeDenseAttn("f16");
