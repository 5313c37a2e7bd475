/**
 * `cachegen.encode`: CacheGen's encoder as a graph operator — a KV tensor in, the sections `cachegen.decode`
 * reads out, so `encode → decode` is a graph. Its CPU path is the host codec of this folder (`compressKv`:
 * per-(layer, token) absmax quantisation, per-(row, channel) CDFs, the arithmetic coder, one stream per (slice,
 * row, channel)), then `deviceInputs`' layout. There is no GPU lowering: the official encoder is a CUDA kernel
 * (LMCache `torchac_kernel_enc_new.cu`), and here the store path encodes on the host (a GPU backend runs this
 * node's CPU reference).
 *
 * The streams' total length depends on the data, a tensor's shape cannot: `streams` is sized by the coder's
 * bound (`streamBound(min(slice, tokens))` bytes per stream), the coded bytes packed at its start and zero
 * after; `ends` (the inclusive prefix sums of the streams' lengths) says where each ends, as `cachegen.decode`
 * reads it.
 * @module
 */
import { Effect } from "effect";
import {
  allocHost,
  type Cost,
  type DescsOf,
  type HostOf,
  type Operator,
  type TensorType,
  tensorType,
} from "@longctx/graph";
import { need } from "../dense/common.ts";
import { streamBound } from "./coder.ts";
import { compressKv } from "./container.ts";
import { decode, decodeGeometry, type DecodeInputs, deviceInputs, structuredKv } from "./decode_gpu.ts";
import { CacheGenParams } from "./params.ts";

/** Input ports of `cachegen.encode`. */
export type EncodeInputs = {
  /** K (rows `0 … L − 1`) and V (rows `L … 2L − 1`) of every layer, `f32 [rows, kvHeads, tokens, headDim]`. */
  readonly kv: TensorType<"f32", readonly ["kvRows", "kvHeads", "tokens", "headDim"]>;
};
/** Output ports of `cachegen.encode`: `cachegen.decode`'s inputs, and the values it could not code. */
export type EncodeOutputs = DecodeInputs & {
  /** Per row, the values that are NaN, ±∞ or beyond fp16's 65504, `u32 [rows]`: coded as 0. */
  readonly invalid: TensorType<"u32", readonly ["kvRows"]>;
};

const inputs: EncodeInputs = { kv: tensorType("f32", ["kvRows", "kvHeads", "tokens", "headDim"] as const) };
const outputs: EncodeOutputs = {
  ...decode.inputs,
  invalid: tensorType("u32", ["kvRows"] as const),
};

/** The output sizes of `cachegen.encode` for `kv [rows, kvHeads, tokens, headDim]` under `p`. */
const sizes = (p: CacheGenParams, shape: readonly number[]) => {
  const [rows, kvHeads, tokens, headDim] = shape as [number, number, number, number];
  const g = decodeGeometry(p, { rows, kvHeads, headDim, tokens });
  return {
    g,
    cdfWords: Math.ceil(rows * g.channels * g.lp / 2),
    streamWords: Math.max(1, Math.ceil(g.streams * streamBound(Math.min(p.slice, tokens), p.precision) / 4)),
  };
};

const FP16_MAX = 65504;

/**
 * `cachegen.encode` (see the module doc). Input `kv f32 [rows, kvHeads, tokens, headDim]` (rows = 2 · layers:
 * K then V); outputs `cdf u32 [⌈rows·C·lp / 2⌉]`, `scales f16 [rows, tokens]`, `ends u32 [slices, rows, kvHeads,
 * headDim]`, `streams u32 [bound words]` (`cachegen.decode`'s inputs) and `invalid u32 [rows]` (values NaN, ±∞ or
 * beyond 65504, coded as 0 — `encodeKv` refuses such a tensor instead). Parameters: `CacheGenParams`. Shape
 * errors: an odd row count or an empty dim.
 */
export const encode: Operator<CacheGenParams, EncodeInputs, EncodeOutputs> = {
  name: "cachegen.encode",
  kind: "encode",
  reference: "CacheGen (arXiv 2310.07240) as released: LMCache cachegen_encoder.py (per-token absmax " +
    "quantisation over all channels) and torchac_cuda cal_cdf.cu / torchac_kernel_enc_new.cu (per-(row, " +
    "channel) CDFs, one arithmetic-coded stream per (slice, row, channel)); host code, no GPU lowering",
  params: CacheGenParams,
  inputs,
  outputs,
  example: {
    dims: { kvRows: 4, kvHeads: 2, tokens: 300, headDim: 64 },
    inputs: (dims) => {
      const layers = Math.max(1, Math.floor((dims.kvRows ?? 4) / 2));
      const kvd = {
        layers,
        kvHeads: dims.kvHeads ?? 2,
        headDim: dims.headDim ?? 64,
        tokens: dims.tokens ?? 300,
      };
      const { k, v } = structuredKv(kvd, 5), slab = kvd.kvHeads * kvd.tokens * kvd.headDim;
      const kv = allocHost({ ...inputs.kv, shape: [2 * layers, kvd.kvHeads, kvd.tokens, kvd.headDim] });
      [...k, ...v].forEach((x, r) => kv.data.set(x, r * slab));
      return { kv };
    },
  },
  infer: (p, i) =>
    Effect.gen(function* () {
      const [rows, H, N, d] = i.kv.shape as [number, number, number, number];
      yield* need(
        rows >= 2 && rows % 2 === 0 && H >= 1 && N >= 1 && d >= 1,
        "kv",
        `kv [${i.kv.shape}]`,
        "kv is [2·layers, kvHeads, tokens, headDim]: every layer's K rows, then its V rows",
      );
      yield* need(
        p.keySecondLayers >= p.keyFirstLayers,
        "kv",
        `keySecondLayers ${p.keySecondLayers} < keyFirstLayers ${p.keyFirstLayers}`,
        "decode the parameters with cachegenParams",
      );
      const { g, cdfWords, streamWords } = sizes(p, i.kv.shape);
      return {
        cdf: { ...outputs.cdf, shape: [cdfWords] },
        scales: { ...outputs.scales, shape: [rows, N] },
        ends: { ...outputs.ends, shape: [g.slices, rows, H, d] },
        streams: { ...outputs.streams, shape: [streamWords] },
        invalid: { ...outputs.invalid, shape: [rows] },
      } as DescsOf<EncodeOutputs>;
    }),
  cpu: (p, i) => {
    const [rows, H, N, d] = i.kv.desc.shape as [number, number, number, number];
    const L = rows / 2, slab = H * N * d, src = i.kv.data as Float32Array;
    const { streamWords } = sizes(p, i.kv.desc.shape);
    const invalid = allocHost({ ...outputs.invalid, shape: [rows] });
    let x = src;
    for (let r = 0; r < rows; r++) {
      for (let j = r * slab; j < (r + 1) * slab; j++) {
        if (!(Math.abs(src[j]) <= FP16_MAX)) {
          if (x === src) x = src.slice();
          x[j] = 0;
          invalid.data[r]++;
        }
      }
    }
    const layer = (r: number) => x.subarray(r * slab, (r + 1) * slab);
    const k = Array.from({ length: L }, (_, l) => layer(l)),
      v = Array.from({ length: L }, (_, l) => layer(L + l));
    const c = Effect.runSync(compressKv(k, v, { layers: L, kvHeads: H, headDim: d, tokens: N }, p));
    const sec = deviceInputs(c);
    const streams = allocHost({ ...outputs.streams, shape: [streamWords] });
    streams.data.set((sec.streams.data as Uint32Array).subarray(0, Math.ceil(c.streams.length / 4)));
    return {
      // fresh arrays of this call's compressKv: nothing aliases the input
      cdf: sec.cdf,
      scales: sec.scales,
      ends: sec.ends,
      streams,
      invalid,
    } as HostOf<EncodeOutputs>;
  },
  cost: (p, i): Cost => {
    const { g, cdfWords, streamWords } = sizes(p, i.kv.shape), symbols = g.rows * g.tokens * g.channels;
    // per symbol: the absmax pass, the quantiser, the histogram and ~4 coder steps (a rough count)
    return {
      flops: 60 * symbols,
      bytesRead: 4 * symbols,
      bytesWritten: 4 * (cdfWords + g.streams + streamWords) + 2 * g.rows * g.tokens + 4 * g.rows,
      workspaceBytes: symbols + 4 * g.channels * g.lp,
    };
  },
};
