/**
 * `cachegen.decode`: CacheGen's decoder as a graph operator: one container's sections, already on the device,
 * to the dequantised K and V of every layer in the KV cache's layout, with a GPU lowering that runs **one
 * invocation per coded stream** (as the released `torchac_cuda` decoder, `torchac_kernel_dec_new.cu`: one
 * thread per stream, the streams located by the prefix sum of their lengths).
 *
 * Inputs (the container's sections, see `container.ts`; {@link deviceInputs} makes them from a parsed
 * container with copies only — no per-element work on the host but the prefix sum of the lengths):
 *
 * - `cdf u32 [cdfWords]`: the CDFs `u16 [rows, C, lp]` packed two per word, little-endian (entry `e` is bits
 *   `16·(e % 2)` of word `⌊e / 2⌋`: the section's bytes as they are), `cdfWords = ⌈rows·C·lp / 2⌉`;
 * - `scales f16 [rows, tokens]`: the fp16 scales (the section as it is);
 * - `ends u32 [slices, rows, kvHeads, headDim]`: the inclusive prefix sums of the stream byte lengths
 *   (`streamEnds`): stream `i` is bytes `[ends[i − 1], ends[i])` of `streams` (`ends[−1] = 0`);
 * - `streams u32 [streamWords]`: the coded streams back to back, four bytes a word, little-endian (byte `b` is
 *   bits `8·(b % 4)` of word `⌊b / 4⌋`), zero-padded; at least `⌈ends[last] / 4⌉` words (more is allowed).
 *
 * Rows are the container's: the layers' K (`r = l`), then their V (`r = L + l`); `rows = 2L`;
 * `C = kvHeads · headDim`, channel `c = h · headDim + j`; `slices = ⌈tokens / slice⌉`.
 *
 * Outputs:
 * - `kv f32 [rows, kvHeads, tokens, headDim]`: row `r`'s slab (`kvHeads · tokens · headDim` contiguous
 *   floats at `r · kvHeads · tokens · headDim`) is exactly layer `r`'s K (`r < L`) or layer `r − L`'s V in the
 *   KV cache's layout (`KvState` of `runtime/src/model/llama_graph.ts`: `f32 [kvHeads, capacity, headDim]`),
 *   so a chunk at cache positions `pos … pos + tokens` is one strided copy per (row, head) —
 *   {@link decodeKvOnDevice} does it on the device;
 * - `invalid u32 [rows]`: per row, the decoded symbols above that row's `2·MAX` (0 for a container this codec
 *   wrote; a checksummed container whose streams or CDFs were altered can give more — `decodeKvOnDevice`
 *   refuses it as `corrupt`, as `decodeKv` does).
 *
 * Arithmetic (bit-exact with `decodeStream` of `coder.ts`, which is the CPU path, with `dequantizeLayer`):
 * the 32-bit `low`/`high`/`value` are WGSL `u32`; `span = high − low + 1` (up to 2³², so kept as
 * `high − low`); the products `span · c` (48 bits) are built from 16-bit pieces of `span − 1` times the 16-bit
 * `c` into a (hi, lo) `u32` pair; the last symbol's upper bound `2^precision` (0x10000) leaves `high` as it is
 * instead of being multiplied. The target `⌊((value − low + 1) · 2^p − 1) / span⌋` starts from an f32 estimate
 * and is corrected until `t · span ≤ num < (t + 1) · span` holds in that 48-bit arithmetic, so it is exact;
 * the symbol is then the same binary search over the 16-bit CDF as the host's. Dequantisation is
 * `level[s] · a` with the levels `(s − MAX) / MAX` rounded to f32 on the host (WGSL division is not correctly
 * rounded; the product is) and the fp16 scale `a` decoded from its bits (subnormals included).
 *
 * Preconditions (the container checks them; outside them the result is defined but no longer the host's):
 * CDFs strictly increasing from 0 and below `2^precision`, finite scales. Bytes past a stream's end read as
 * zero on both paths, so junk streams decode to junk symbols, never out of bounds.
 *
 * Reference: CacheGen (Liu et al., SIGCOMM 2024, arXiv 2310.07240) as released: LMCache
 * `third_party/torchac_cuda/torchac_kernel_dec_new.cu` and `cachegen_decoder.py`.
 * @module
 */
import { Effect, Schema } from "effect";
import {
  allocHost,
  decodeParamsSync,
  graph,
  hostTensor,
  intParam,
  lower,
  mulberry32,
  seededNormals,
  tensorType,
} from "@longctx/graph";
import type {
  Backend,
  Cost,
  DescsOf,
  DeviceBuffer,
  GpuLowering,
  HostOf,
  HostTensor,
  Kernel,
  LongctxError,
  Operator,
  TensorDesc,
  TensorType,
} from "@longctx/graph";
import { need } from "../dense/common.ts";
import { type CdfTable, decodeStreamsAt, sliceCount, streamEnds } from "./coder.ts";
import {
  CacheGenError,
  checkKv,
  type CompressedKv,
  compressKv,
  type KvDims,
  type KvHeader,
  type KvProvenance,
  parseKv,
  type Sha256,
} from "./container.ts";
import { CacheGenParams, cachegenParams, layerBins, maxOf } from "./params.ts";
import { dequantizeLayer } from "./quant.ts";

/** The schema of {@link CacheGenDecodeParams}: every field optional on input, the default filled in on decode. */
export type CacheGenDecodeParamsSchema = Schema.Struct<{
  readonly level: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly keyFirstLayers: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly keySecondLayers: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly valueFirstLayers: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly slice: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly precision: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly workgroupSize: Schema.withDecodingDefaultKey<Schema.Int>;
}>;

/**
 * Parameters of `cachegen.decode`: the container's codec parameters (`CacheGenParams`: they give each row's
 * bins, the alphabet `lp`, the slice and the precision — pass the header's `params`) and the GPU workgroup.
 */
export const CacheGenDecodeParams: CacheGenDecodeParamsSchema = Schema.Struct({
  ...CacheGenParams.fields,
  /** Invocations (streams) per workgroup of the GPU kernel: a multiple of 32 in [32, 256] (default 64). */
  workgroupSize: intParam(32, 256, 64, 32),
});
/** Decoded `cachegen.decode` parameters. */
export type CacheGenDecodeParams = typeof CacheGenDecodeParams.Type;

/** `cachegen.decode` parameters from a partial object (e.g. a header's `params`), defaults filled. */
export const cachegenDecodeParams = (p: Partial<CacheGenDecodeParams> = {}): CacheGenDecodeParams =>
  decodeParamsSync("cachegen.decode", CacheGenDecodeParams, p);

/** Input ports of `cachegen.decode` (see the module doc). */
export type DecodeInputs = {
  /** CDFs `u16 [rows, C, lp]` packed two per `u32` word, little-endian: `u32 [⌈rows·C·lp / 2⌉]`. */
  readonly cdf: TensorType<"u32", readonly ["cdfWords"]>;
  /** Per-(row, token) scales, fp16 bits, `f16 [rows, tokens]`. */
  readonly scales: TensorType<"f16", readonly ["kvRows", "tokens"]>;
  /** Inclusive prefix sums of the stream byte lengths, `u32 [slices, rows, kvHeads, headDim]` (stream order). */
  readonly ends: TensorType<"u32", readonly ["slices", "kvRows", "kvHeads", "headDim"]>;
  /** The coded streams, four bytes per `u32` word, little-endian, zero-padded: `u32 [streamWords]`. */
  readonly streams: TensorType<"u32", readonly ["streamWords"]>;
};
/** Output ports of `cachegen.decode`. */
export type DecodeOutputs = {
  /** Dequantised K (rows `0 … L − 1`) and V (rows `L … 2L − 1`), `f32 [rows, kvHeads, tokens, headDim]`. */
  readonly kv: TensorType<"f32", readonly ["kvRows", "kvHeads", "tokens", "headDim"]>;
  /** Decoded symbols above their row's `2·MAX`, per row, `u32 [rows]` (0 for a sound container). */
  readonly invalid: TensorType<"u32", readonly ["kvRows"]>;
};

const inputs: DecodeInputs = {
  cdf: tensorType("u32", ["cdfWords"] as const),
  scales: tensorType("f16", ["kvRows", "tokens"] as const),
  ends: tensorType("u32", ["slices", "kvRows", "kvHeads", "headDim"] as const),
  streams: tensorType("u32", ["streamWords"] as const),
};
const outputs: DecodeOutputs = {
  kv: tensorType("f32", ["kvRows", "kvHeads", "tokens", "headDim"] as const),
  invalid: tensorType("u32", ["kvRows"] as const),
};

/** The geometry of one container as `cachegen.decode` sees it. */
export interface DecodeGeometry {
  /** Rows, `2 · layers` (K rows, then V rows). */
  readonly rows: number;
  /** Key/value heads. */
  readonly kvHeads: number;
  /** Elements per head vector. */
  readonly headDim: number;
  /** Tokens of the container. */
  readonly tokens: number;
  /** Channels per row, `kvHeads · headDim`. */
  readonly channels: number;
  /** Tokens per stream at most (the `slice` parameter). */
  readonly slice: number;
  /** Stream slices, `⌈tokens / slice⌉`. */
  readonly slices: number;
  /** Coded streams, `slices · rows · channels` (= GPU invocations). */
  readonly streams: number;
  /** CDF entries per (row, channel): the largest bin count plus one. */
  readonly lp: number;
  /** Bins of each row, `[rows]` (K rows, then V rows). */
  readonly bins: readonly number[];
}

/** The geometry of a container of `dims` coded with `p` (see {@link DecodeGeometry}). */
export const decodeGeometry = (
  p: Pick<
    CacheGenParams,
    "level" | "keyFirstLayers" | "keySecondLayers" | "valueFirstLayers" | "slice"
  >,
  dims: Pick<KvDims, "kvHeads" | "headDim" | "tokens"> & { readonly rows: number },
): DecodeGeometry => {
  const { rows, kvHeads, headDim, tokens } = dims, L = rows / 2, b = layerBins(p, L);
  const bins = [...b.key, ...b.value], channels = kvHeads * headDim, slices = sliceCount(tokens, p.slice);
  return {
    rows,
    kvHeads,
    headDim,
    tokens,
    channels,
    slice: p.slice,
    slices,
    streams: slices * rows * channels,
    lp: Math.max(...bins) + 1,
    bins,
  };
};

const geometryOf = (p: CacheGenDecodeParams, i: DescsOf<DecodeInputs>): DecodeGeometry => {
  const [rows, tokens] = i.scales.shape as [number, number];
  const [, , kvHeads, headDim] = i.ends.shape as [number, number, number, number];
  return decodeGeometry(p, { rows, kvHeads, headDim, tokens });
};

/**
 * The decoder's table per row, as `u32` words: `[0, rows)` the offset of the row's levels in this table,
 * `[rows, 2·rows)` the row's largest valid symbol `2·MAX`, then for each distinct bin count the levels
 * `(s − MAX) / MAX` rounded to f32 (their bits) for every symbol `s` of the alphabet `0 … lp − 2`.
 */
export const decodeTable = (g: Pick<DecodeGeometry, "rows" | "lp" | "bins">): Uint32Array => {
  const distinct = [...new Set(g.bins)], n = g.lp - 1;
  const t = new Uint32Array(2 * g.rows + distinct.length * n), f = new Float32Array(1);
  const fbits = new Uint32Array(f.buffer);
  distinct.forEach((b, k) => {
    const M = maxOf(b);
    for (let s = 0; s < n; s++) {
      f[0] = (s - M) / M;
      t[2 * g.rows + k * n + s] = fbits[0];
    }
  });
  g.bins.forEach((b, r) => {
    t[r] = 2 * g.rows + distinct.indexOf(b) * n;
    t[g.rows + r] = 2 * maxOf(b);
  });
  return t;
};

/** Host arrays of the inputs of `cachegen.decode` (see {@link DecodeInputs}). */
export interface DecodeArrays {
  /** CDF words, `u32 [⌈rows·C·lp / 2⌉]` (u16 entries packed little-endian). */
  readonly cdf: Uint32Array;
  /** Scales, fp16 bits `[rows, tokens]`. */
  readonly scales: Uint16Array;
  /** Stream ends, `u32 [slices, rows, C]`. */
  readonly ends: Uint32Array;
  /** Stream words, `u32 [≥ ⌈ends[last] / 4⌉]` (bytes packed little-endian, zero-padded). */
  readonly streams: Uint32Array;
}

/**
 * `cachegen.decode` on host arrays (its CPU path): the host decoder of `coder.ts` (`decodeStreamsAt`) and
 * `dequantizeLayer` of `quant.ts`, with the same conventions as the GPU kernel (bytes past a stream's end and
 * past the words read as zero). Returns `kv f32 [rows, kvHeads, tokens, headDim]` and `invalid u32 [rows]`.
 */
export const decodeReference = (
  p: Pick<CacheGenParams, "precision">,
  g: DecodeGeometry,
  a: DecodeArrays,
): { kv: Float32Array; invalid: Uint32Array } => {
  const { rows, kvHeads: H, headDim: d, tokens: N, channels: C, lp } = g;
  // the packed words seen as the section's u16 entries and bytes (little-endian hosts, as the GPU reads them)
  const cdf: CdfTable = {
    data: new Uint16Array(a.cdf.buffer, a.cdf.byteOffset, Math.min(a.cdf.length * 2, rows * C * lp)),
    lp,
    precision: p.precision,
  };
  const bytes = new Uint8Array(a.streams.buffer, a.streams.byteOffset, a.streams.byteLength);
  const symbols = decodeStreamsAt(bytes, a.ends, cdf, { rows, tokens: N, channels: C, slice: g.slice });
  const kv = new Float32Array(rows * H * N * d), invalid = new Uint32Array(rows), slab = H * N * d;
  for (let r = 0; r < rows; r++) {
    const top = 2 * maxOf(g.bins[r]), at = r * N * C;
    let bad = 0;
    for (let i = at; i < at + N * C; i++) if (symbols[i] > top) bad++;
    invalid[r] = bad;
    dequantizeLayer(
      symbols,
      at,
      a.scales,
      r * N,
      { kvHeads: H, tokens: N, headDim: d },
      g.bins[r],
      kv.subarray(r * slab, (r + 1) * slab),
    );
  }
  return { kv, invalid };
};

/**
 * The inputs of `cachegen.decode` for a parsed (or in-memory) container: the CDF and scale sections as they
 * are (the CDF's u16 entries seen as `u32` words, copied only when odd-sized or unaligned), the stream ends
 * (the prefix sum of the lengths: the only per-element host work), the streams padded to whole words.
 */
export const deviceInputs = (c: CompressedKv): HostOf<DecodeInputs> => {
  const { layers: L, kvHeads: H, headDim: d, tokens: N } = c.dims, rows = 2 * L;
  const slices = sliceCount(N, c.params.slice);
  const words = (u8: Uint8Array): Uint32Array => {
    if (u8.byteOffset % 4 === 0 && u8.byteLength % 4 === 0 && u8.byteLength > 0) {
      return new Uint32Array(u8.buffer as ArrayBuffer, u8.byteOffset, u8.byteLength / 4);
    }
    const w = new Uint32Array(Math.max(1, Math.ceil(u8.byteLength / 4)));
    new Uint8Array(w.buffer).set(u8);
    return w;
  };
  const cd = c.cdf.data;
  const cdf = words(new Uint8Array(cd.buffer, cd.byteOffset, cd.byteLength));
  const streams = words(c.streams);
  return {
    cdf: hostTensor("u32", inputs.cdf.dims, [cdf.length], cdf),
    scales: hostTensor("f16", inputs.scales.dims, [rows, N], c.scales),
    ends: hostTensor("u32", inputs.ends.dims, [slices, rows, H, d], streamEnds(c.lengths)),
    streams: hostTensor("u32", inputs.streams.dims, [streams.length], streams),
  } as HostOf<DecodeInputs>;
};

/** Largest workgroup count along x used by the lowering (WebGPU's minimum `maxComputeWorkgroupsPerDimension`). */
const MAX_X = 65535;

/** The grid of `groups` workgroups: x at most 65535, the rest along y. */
const grid = (groups: number): readonly [number, number, number] => {
  const x = Math.max(1, Math.min(groups, MAX_X));
  return [x, Math.max(1, Math.ceil(groups / x)), 1];
};

/** The WGSL of the decode kernel (see the module doc); `nx`: workgroups along x. */
const decodeWgsl = (g: DecodeGeometry, precision: number, wg: number, nx: number): string => {
  const { rows, kvHeads: H, headDim: D, tokens: N, channels: C, streams, lp, slice } = g;
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> CDF: array<u32>;
@group(0) @binding(1) var<storage, read> SCL: array<u32>;
@group(0) @binding(2) var<storage, read> ENDS: array<u32>;
@group(0) @binding(3) var<storage, read> BYT: array<u32>;
@group(0) @binding(4) var<storage, read> TAB: array<u32>;
@group(0) @binding(5) var<storage, read_write> KV: array<f32>;
@group(0) @binding(6) var<storage, read_write> BAD: array<atomic<u32>>;

const ROWS = ${rows}u;
const H = ${H}u;
const D = ${D}u;
const N = ${N}u;
const C = ${C}u;
const STREAMS = ${streams}u;
const LP = ${lp}u;
const MAXSYM = ${lp - 2}u;
const SLICE = ${slice}u;
const P = ${precision}u;
const TOP = ${2 ** precision}u;
const HALF = 0x80000000u;
const QUARTER = 0x40000000u;
const THREEQ = 0xc0000000u;

// CDF entry e (u16 packed two per word)
fn cdf_at(e: u32) -> u32 {
  return (CDF[e >> 1u] >> ((e & 1u) << 4u)) & 0xffffu;
}

// byte q of the streams, zero at or past end (end <= the buffer's bytes)
fn byte_at(q: u32, end: u32) -> u32 {
  if (q < end) { return (BYT[q >> 2u] >> ((q & 3u) << 3u)) & 0xffu; }
  return 0u;
}

// fp16 bits -> f32, exactly (subnormals as m * 2^-24, which is a normal f32)
fn half_to_f32(h: u32) -> f32 {
  let s = (h & 0x8000u) << 16u;
  let e = (h >> 10u) & 0x1fu;
  let m = h & 0x3ffu;
  if (e == 0u) { return bitcast<f32>(s | bitcast<u32>(f32(m) * 5.9604644775390625e-8)); }
  if (e == 31u) { return bitcast<f32>(s | 0x7f800000u | (m << 13u)); }
  return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));
}

// (sm1 + 1) * c for c < 2^16, the 48-bit product as (hi, lo)
fn span_mul(sm1: u32, c: u32) -> vec2<u32> {
  let a = (sm1 & 0xffffu) * c + c; // <= 0xffff * 0xffff + 0xffff = 0xffff0000: no carry
  let b = (sm1 >> 16u) * c;
  let lo = a + (b << 16u);
  return vec2<u32>((b >> 16u) + select(0u, 1u, lo < a), lo);
}

// floor((sm1 + 1) * c / 2^P) for c < 2^P (< 2^32)
fn span_scale(sm1: u32, c: u32) -> u32 {
  let m = span_mul(sm1, c);
  return (m.y >> P) | (m.x << (32u - P));
}

fn le64(a: vec2<u32>, b: vec2<u32>) -> bool {
  return a.x < b.x || (a.x == b.x && a.y <= b.y);
}

@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let i = (wid.y * ${nx}u + wid.x) * ${wg}u + li;
  if (i >= STREAMS) { return; }
  let c = i % C;
  let rs = i / C;
  let r = rs % ROWS;
  let t0 = (rs / ROWS) * SLICE;
  let n = min(SLICE, N - t0);
  var start = 0u;
  if (i > 0u) { start = ENDS[i - 1u]; }
  let end = min(ENDS[i], arrayLength(&BYT) * 4u);
  var value = 0u;
  for (var k = 0u; k < 4u; k++) { value = (value << 8u) | byte_at(start + k, end); }
  var p = start + 4u;
  var byte = 0u;
  var nb = 0u;
  var low = 0u;
  var high = 0xffffffffu;
  let cb = (r * C + c) * LP;
  let lv = TAB[r];
  let top = TAB[ROWS + r];
  let ob = (r * H + c / D) * N * D + c % D;
  var bad = 0u;
  for (var k = 0u; k < n; k++) {
    let t = t0 + k;
    let sm1 = high - low;
    let x = value - low;
    // target = floor(((x + 1) 2^P - 1) / (sm1 + 1)): an f32 estimate, then exact 48-bit corrections
    let num = vec2<u32>(x >> (32u - P), (x << P) | (TOP - 1u));
    var tg = u32(clamp(floor((f32(x) + 1.0) * f32(TOP) / (f32(sm1) + 1.0)), 0.0, f32(TOP - 1u)));
    loop {
      if (tg > 0u && !le64(span_mul(sm1, tg), num)) { tg -= 1u; } else { break; }
    }
    loop {
      if (tg + 1u < TOP && le64(span_mul(sm1, tg + 1u), num)) { tg += 1u; } else { break; }
    }
    // the largest symbol s <= MAXSYM with cdf[s] <= target (the host's binary search)
    var lo = 0u;
    var hi = MAXSYM + 1u;
    loop {
      if (hi - lo <= 1u) { break; }
      let m = (lo + hi) >> 1u;
      if (cdf_at(cb + m) <= tg) { lo = m; } else { hi = m; }
    }
    if (lo > top) { bad += 1u; }
    let e = r * N + t;
    let a = half_to_f32((SCL[e >> 1u] >> ((e & 1u) << 4u)) & 0xffffu);
    KV[ob + t * D] = bitcast<f32>(TAB[lv + lo]) * a;
    if (k + 1u == n) { break; }
    if (lo != MAXSYM) { high = low + span_scale(sm1, cdf_at(cb + lo + 1u)) - 1u; }
    low = low + span_scale(sm1, cdf_at(cb + lo));
    loop {
      if (high < HALF) {
      } else if (low >= HALF) {
        low -= HALF;
        high -= HALF;
        value -= HALF;
      } else if (low >= QUARTER && high < THREEQ) {
        low -= QUARTER;
        high -= QUARTER;
        value -= QUARTER;
      } else {
        break;
      }
      low = low << 1u;
      high = (high << 1u) | 1u;
      if (nb == 0u) {
        byte = byte_at(p, end);
        p += 1u;
        nb = 8u;
      }
      nb -= 1u;
      value = (value << 1u) | ((byte >> nb) & 1u);
    }
  }
  if (bad > 0u) { atomicAdd(&BAD[r], bad); }
}
`;
};

const zeroWgsl = (rows: number): string => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> BAD: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x < ${rows}u) { BAD[gid.x] = 0u; }
}
`;

/** Seeded KV of one chunk with per-channel structure (means, spreads, outlier channels, a sink token). */
export const structuredKv = (
  dims: KvDims,
  seed = 1,
): { k: Float32Array[]; v: Float32Array[] } => {
  const { layers: L, kvHeads: H, headDim: d, tokens: N } = dims, C = H * d;
  const rnd = mulberry32(seed * 7919 + 17);
  const layer = (l: number, which: number): Float32Array => {
    const x = seededNormals(H * N * d, seed * 1009 + l * 31 + which);
    const mu = Float32Array.from({ length: C }, () => (rnd() - 0.5) * (which ? 0.4 : 2));
    const sd = Float32Array.from({ length: C }, (_, c) => (0.1 + rnd() * 1.4) * (c % 37 === 3 ? 5 : 1));
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < N; t++) {
        for (let j = 0; j < d; j++) {
          const c = h * d + j, e = (h * N + t) * d + j;
          x[e] = mu[c] + sd[c] * x[e] * (t === 0 ? 6 : 1);
        }
      }
    }
    return x;
  };
  const k: Float32Array[] = [], v: Float32Array[] = [];
  for (let l = 0; l < L; l++) k.push(layer(l, 0)), v.push(layer(l, 1));
  return { k, v };
};

/**
 * Valid example inputs (a real container, default parameters) for harnesses: `kvRows / 2` layers (default 2),
 * `kvHeads`, `headDim` and `tokens` from `dims` (defaults 2, 64, 300).
 */
const exampleInputs = (dims: Readonly<Record<string, number>>): Readonly<Record<string, HostTensor>> => {
  const layers = Math.max(1, Math.floor((dims.kvRows ?? 4) / 2));
  const kv: KvDims = {
    layers,
    kvHeads: dims.kvHeads ?? 2,
    headDim: dims.headDim ?? 64,
    tokens: dims.tokens ?? 300,
  };
  const { k, v } = structuredKv(kv, 3);
  return deviceInputs(Effect.runSync(compressKv(k, v, kv, cachegenParams())));
};

/**
 * `cachegen.decode` (see the module doc). Inputs `cdf u32 [⌈rows·C·lp / 2⌉]`, `scales f16 [rows, tokens]`,
 * `ends u32 [slices, rows, kvHeads, headDim]`, `streams u32 [≥ ⌈ends[last] / 4⌉]`; outputs `kv f32 [rows,
 * kvHeads, tokens, headDim]` and `invalid u32 [rows]`. Parameters: the container's codec parameters and the
 * workgroup size. Shape errors: an odd row count, a slice count other than `⌈tokens / slice⌉`, a CDF of
 * another size than the parameters' bins give, no stream words. The GPU lowering needs nothing optional (no
 * f16, no subgroups).
 */
export const decode: Operator<CacheGenDecodeParams, DecodeInputs, DecodeOutputs> = {
  name: "cachegen.decode",
  kind: "decode",
  reference: "CacheGen (arXiv 2310.07240) as released: LMCache torchac_cuda torchac_kernel_dec_new.cu (one " +
    "thread per coded stream, streams located by the prefix sum of their lengths) and cachegen_decoder.py " +
    "(x = (s − MAX) / MAX · a)",
  params: CacheGenDecodeParams,
  inputs,
  outputs,
  // a real container (2 layers, default parameters) made by the host encoder: random words are no stream
  example: { dims: { kvRows: 4, tokens: 300 }, inputs: exampleInputs },
  infer: (p, i) =>
    Effect.gen(function* () {
      const [rows, N] = i.scales.shape as [number, number];
      const [slices, rows2, H, d] = i.ends.shape as [number, number, number, number];
      yield* need(
        rows >= 2 && rows % 2 === 0 && rows2 === rows && N >= 1 && H >= 1 && d >= 1,
        "ends",
        `scales [${i.scales.shape}], ends [${i.ends.shape}]`,
        "scales is [2·layers, tokens] and ends [slices, 2·layers, kvHeads, headDim]",
      );
      yield* need(
        p.keySecondLayers >= p.keyFirstLayers,
        "cdf",
        `keySecondLayers ${p.keySecondLayers} < keyFirstLayers ${p.keyFirstLayers}`,
        "pass the container header's params",
      );
      const g = decodeGeometry(p, { rows, kvHeads: H, headDim: d, tokens: N });
      yield* need(
        slices === g.slices,
        "ends",
        `${slices} slices for ${N} tokens at slice ${p.slice}`,
        "ends has ⌈tokens / slice⌉ slices: pass the container header's params",
      );
      yield* need(
        i.cdf.shape[0] === Math.ceil(rows * g.channels * g.lp / 2),
        "cdf",
        `${i.cdf.shape[0]} words for ${rows} rows × ${g.channels} channels × ${g.lp} entries`,
        "the CDFs u16 [rows, C, lp] two per word, lp = the largest bin count of the parameters + 1",
      );
      yield* need(i.streams.shape[0] >= 1, "streams", `streams [${i.streams.shape}]`, "at least one word");
      return {
        kv: { ...outputs.kv, shape: [rows, H, N, d] },
        invalid: { ...outputs.invalid, shape: [rows] },
      } as DescsOf<DecodeOutputs>;
    }),
  cpu: (p, i) => {
    const g = geometryOf(p, { scales: i.scales.desc, ends: i.ends.desc } as DescsOf<DecodeInputs>);
    const r = decodeReference(p, g, {
      cdf: i.cdf.data as Uint32Array,
      scales: i.scales.data as Uint16Array,
      ends: i.ends.data as Uint32Array,
      streams: i.streams.data as Uint32Array,
    });
    const kv = allocHost({ ...outputs.kv, shape: [g.rows, g.kvHeads, g.tokens, g.headDim] });
    kv.data.set(r.kv);
    const invalid = allocHost({ ...outputs.invalid, shape: [g.rows] });
    invalid.data.set(r.invalid);
    return { kv, invalid } as HostOf<DecodeOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const g = geometryOf(p, i), wg = p.workgroupSize, groups = Math.ceil(g.streams / wg), wgs = grid(groups);
    const table = decodeTable(g);
    return {
      workspaces: { table: table.byteLength },
      launches: [
        {
          kernel: {
            key: `cachegen.decode.zero:${g.rows}`,
            wgsl: zeroWgsl(g.rows),
            entryPoint: "main",
            bindings: ["read_write"],
          },
          buffers: ["out:invalid"],
          workgroups: [Math.ceil(g.rows / 64), 1, 1],
        },
        {
          kernel: {
            key: `cachegen.decode:${g.rows}x${g.kvHeads}x${g.headDim}x${g.tokens}:${p.slice}/${g.lp}/` +
              `${p.precision}:wg${wg}x${wgs[0]}`,
            wgsl: decodeWgsl(g, p.precision, wg, wgs[0]),
            entryPoint: "main",
            bindings: ["read", "read", "read", "read", "read", "read_write", "read_write"],
          },
          buffers: ["in:cdf", "in:scales", "in:ends", "in:streams", "ws:table", "out:kv", "out:invalid"],
          workgroups: wgs,
          uniforms: { table: new Uint8Array(table.buffer) },
        },
      ],
    };
  },
  cost: (p, i): Cost => {
    const g = geometryOf(p, i), symbols = g.rows * g.tokens * g.channels;
    // per symbol, integer work: the target estimate and its 48-bit checks, ~log2(lp) CDF probes, the two
    // interval products and ~4 renormalisation steps (a rough count of u32 operations)
    return {
      flops: 120 * symbols,
      bytesRead: 4 * (i.cdf.shape[0] + g.streams + i.streams.shape[0]) + 2 * g.rows * g.tokens,
      bytesWritten: 4 * symbols + 4 * g.rows,
      workspaceBytes: decodeTable(g).byteLength,
    };
  },
};

// ---- the host helper: a container's bytes to per-layer device buffers ---------------------------------------

/** Where {@link decodeKvOnDevice} writes: per-layer KV cache buffers and the chunk's first position. */
export interface KvTarget {
  /** Per layer, the key buffer, `f32 [kvHeads, capacity, headDim]`. */
  readonly k: readonly DeviceBuffer[];
  /** Per layer, the value buffer, `f32 [kvHeads, capacity, headDim]`. */
  readonly v: readonly DeviceBuffer[];
  /** Tokens each buffer holds. */
  readonly capacity: number;
  /** The cache position of the container's first token (its tokens go to `pos … pos + tokens`). */
  readonly pos: number;
}

/** Options of {@link decodeKvOnDevice}. */
export interface DecodeKvOnDeviceOptions {
  /** Refuse (`stale`) a container for another model, other tokens or other dims, before any GPU work. */
  readonly expect?: KvProvenance & { readonly dims?: Partial<KvDims> };
  /** Write into these cache buffers (e.g. a `KvState`'s) instead of new ones of capacity `tokens`. */
  readonly into?: KvTarget;
  /** The decode kernel's workgroup size (see {@link CacheGenDecodeParams}). */
  readonly workgroupSize?: number;
  /** The SHA-256 that checks the container (default WebCrypto's; see `Sha256`). */
  readonly digest?: Sha256;
}

/** A container decoded on the device. */
export interface DeviceKv {
  /** Per layer, the keys, `f32 [kvHeads, capacity, headDim]` (the container's tokens at `pos …`). */
  readonly k: readonly DeviceBuffer[];
  /** Per layer, the values, `f32 [kvHeads, capacity, headDim]`. */
  readonly v: readonly DeviceBuffer[];
  /** Tokens each buffer holds (`tokens` when the buffers were made here). */
  readonly capacity: number;
  /** Position of the container's first token in the buffers. */
  readonly pos: number;
  /** The container's geometry. */
  readonly dims: KvDims;
  /** The container's header. */
  readonly header: KvHeader;
  /** Free the buffers this call allocated (none when it wrote `into` the caller's). Idempotent. */
  release(): void;
}

const SCATTER_WG = 256;

/** The kernel copying row slab `[kvHeads, tokens, headDim]` of `kv` into a cache buffer at `pos`. */
const scatterKernel = (H: number, N: number, d: number, nx: number): Kernel => {
  const n = H * N * d;
  return {
    key: `cachegen.scatter:${H}x${N}x${d}:x${nx}`,
    wgsl: /* wgsl */ `
@group(0) @binding(0) var<storage, read> SRC: array<f32>;
@group(0) @binding(1) var<storage, read_write> DST: array<f32>;
@group(0) @binding(2) var<uniform> U: vec4<u32>; // source offset, capacity, pos
@compute @workgroup_size(${SCATTER_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let e = (wid.y * ${nx}u + wid.x) * ${SCATTER_WG}u + li;
  if (e >= ${n}u) { return; }
  let j = e % ${d}u;
  let t = (e / ${d}u) % ${N}u;
  let h = e / ${N * d}u;
  DST[(h * U.y + U.z + t) * ${d}u + j] = SRC[U.x + e];
}
`,
    entryPoint: "main",
    bindings: ["read", "read_write", "uniform"],
    cpu: (buffers) => {
      const src = new Float32Array(buffers[0]), dst = new Float32Array(buffers[1]);
      const [off, cap, pos] = new Uint32Array(buffers[2], 0, 3);
      for (let h = 0; h < H; h++) {
        for (let t = 0; t < N; t++) {
          dst.set(src.subarray(off + (h * N + t) * d, off + (h * N + t + 1) * d), (h * cap + pos + t) * d);
        }
      }
    },
  };
};

const badInput = (message: string, hint: string) => new CacheGenError({ reason: "bad-input", message, hint });

/**
 * Decode a CacheGen container (`encodeKv`'s bytes) on `backend` into per-layer K and V buffers in the KV cache's
 * layout `f32 [kvHeads, capacity, headDim]`: `parseKv` first (the checksum is verified before anything is
 * parsed; a bad magic, a truncated, corrupt or other-version container fails with `CacheGenError` before any
 * device work), `checkKv` with `expect` (`stale`), then `cachegen.decode` on the device, its `invalid` count read
 * back (a symbol out of its row's range: `corrupt`, before anything is written `into` the caller's buffers), and
 * one strided copy per row into `into` (a `KvState`'s buffers at `pos`) or into new buffers of capacity `tokens`.
 * `into` that does not fit (layer count, buffer sizes, `pos + tokens > capacity`) is `bad-input`.
 */
export const decodeKvOnDevice = (
  backend: Backend,
  bytes: Uint8Array,
  options: DecodeKvOnDeviceOptions = {},
): Effect.Effect<DeviceKv, CacheGenError | LongctxError> =>
  Effect.gen(function* () {
    const { header, compressed } = yield* parseKv(bytes, options.digest);
    if (options.expect) yield* checkKv(header, options.expect);
    const { layers: L, kvHeads: H, headDim: d, tokens: N } = header.dims, rows = 2 * L;
    const into = options.into;
    if (into) {
      const need = H * into.capacity * d * 4;
      if (into.k.length !== L || into.v.length !== L) {
        return yield* badInput(
          `${into.k.length} key and ${into.v.length} value buffers for a container of ${L} layers`,
          "pass one K and one V cache buffer per layer",
        );
      }
      if (!Number.isInteger(into.pos) || into.pos < 0 || into.pos + N > into.capacity) {
        return yield* badInput(
          `${N} tokens at position ${into.pos} in a cache of ${into.capacity}`,
          "load the chunk at a position where it fits",
        );
      }
      const small = [...into.k, ...into.v].find((b) => b.bytes < need);
      if (small) {
        return yield* badInput(
          `cache buffer "${small.label}" holds ${small.bytes} bytes; [${H}, ${into.capacity}, ${d}] f32 needs ${need}`,
          "pass buffers of the cache's capacity",
        );
      }
    }
    const p = cachegenDecodeParams({
      ...header.params,
      ...(options.workgroupSize === undefined ? {} : { workgroupSize: options.workgroupSize }),
    });
    const host = deviceInputs(compressed);
    const gb = graph("cachegen.decode");
    const node = gb.add(decode, p, {
      cdf: gb.input("cdf", inputs.cdf),
      scales: gb.input("scales", inputs.scales),
      ends: gb.input("ends", inputs.ends),
      streams: gb.input("streams", inputs.streams),
    });
    gb.output("kv", node.kv);
    gb.output("invalid", node.invalid);
    const built = yield* gb.build();
    const descs: Record<string, TensorDesc> = {};
    for (const [name, t] of Object.entries(host)) descs[name] = t.desc;
    const prog = yield* lower(built, backend, descs as never, { label: "cachegen.decode" });
    const owned: DeviceBuffer[] = [];
    const work = Effect.gen(function* () {
      for (const [name, t] of Object.entries(host)) yield* prog.write(name, t as HostTensor);
      yield* prog.run();
      const invalid = (yield* prog.read("invalid")).data as Uint32Array;
      const r = invalid.findIndex((x) => x > 0);
      if (r >= 0) {
        return yield* new CacheGenError({
          reason: "corrupt",
          message: `row ${r}: ${invalid[r]} decoded symbols above ${
            2 * maxOf(
              decodeGeometry(p, {
                rows,
                kvHeads: H,
                headDim: d,
                tokens: N,
              }).bins[r],
            )
          }`,
          hint:
            "the entry was not written by this codec or was altered after its checksum: encode the KV again",
        });
      }
      const capacity = into?.capacity ?? N, pos = into?.pos ?? 0;
      const k: DeviceBuffer[] = [], v: DeviceBuffer[] = [];
      for (let l = 0; l < L; l++) {
        for (const [list, name] of [[k, "k"], [v, "v"]] as const) {
          const given = into?.[name][l];
          if (given) list.push(given);
          else {
            const b = yield* backend.allocate(H * capacity * d * 4, `cachegen.${name}${l}`);
            owned.push(b);
            list.push(b);
          }
        }
      }
      // one strided copy per row, each with its own uniform (uploads precede the command buffer)
      const src = prog.buffer("kv"), n = H * N * d, g = grid(Math.ceil(n / SCATTER_WG));
      const kernel = scatterKernel(H, N, d, g[0]);
      const uniforms: DeviceBuffer[] = [];
      yield* Effect.gen(function* () {
        const launches = [];
        for (let r = 0; r < rows; r++) {
          const u = yield* backend.allocate(16, `cachegen.scatter${r}`);
          uniforms.push(u);
          yield* backend.upload(u, Uint32Array.of(r * n, capacity, pos, 0));
          launches.push({ kernel, buffers: [src, r < L ? k[r] : v[r - L], u], workgroups: g });
        }
        yield* backend.dispatch(launches);
        yield* backend.sync();
      }).pipe(Effect.ensuring(Effect.sync(() => uniforms.forEach((u) => backend.release(u)))));
      let released = false;
      return {
        k,
        v,
        capacity,
        pos,
        dims: header.dims,
        header,
        release: () => {
          if (released) return;
          released = true;
          for (const b of owned) backend.release(b);
        },
      } satisfies DeviceKv;
    });
    return yield* work.pipe(
      Effect.onError(() => Effect.sync(() => owned.forEach((b) => backend.release(b)))),
      Effect.ensuring(Effect.sync(() => prog.release())),
    );
  });
