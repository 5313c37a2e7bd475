/**
 * CacheGen's quantiser: per (layer, token) absmax over every channel of the layer (the KV heads merged,
 * `C = kvHeads · headDim`, channel `c = h · headDim + j` as HF's `[tokens, heads, headDim] → [tokens, C]`
 * reshape), `bins` bins, `MAX = bins / 2 − 1`, symbol `s = round(x · (MAX / a) + MAX) ∈ [0, 2·MAX]` with
 * round-half-to-even as `torch.round`, the multiply and the add each rounded to f32 (official
 * `torch_quant_vectorized` in LMCache's `cachegen_encoder.py`, the GPU path; the older CPU path
 * `round(x · MAX / a) + MAX` differs from it only on exact ties when `MAX` is odd), and the inverse
 * `x̂ = (s − MAX) / MAX · a`.
 *
 * The scale `a` is stored as fp16 (the official artifact keeps it in the KV's dtype, fp16): the f32 absmax
 * rounded **up** to the nearest fp16 (relative change ≤ 2⁻¹⁰), and that stored value is the one the symbols
 * are computed with, so `|x| ≤ a` holds and every element's error is at most `a / (2·MAX)` (plus f32
 * rounding). A row of zeros has `a = 0` and every symbol `MAX`.
 * @module
 */
import { floatToHalf, halfToFloat } from "../kernels/half.ts";
import { maxOf } from "./params.ts";

/** The largest finite fp16 value (a scale above it cannot be stored). */
export const F16_MAX = 65504;

/** Round half to even (as `torch.round` and IEEE `roundTiesToEven`): `2.5 → 2`, `3.5 → 4`, `-0.5 → 0`. */
export const roundHalfEven = (y: number): number => {
  const f = Math.floor(y), d = y - f;
  return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1;
};

/** The fp16 bits of the smallest fp16 value `≥ a` (`a` finite, `0 ≤ a ≤ 65504`). */
export const scaleUp = (a: number): number => {
  const h = floatToHalf(a);
  return halfToFloat(h) < a ? h + 1 : h;
};

/** One layer's K or V in the KV cache's layout. */
export interface LayerShape {
  /** Key/value heads. */
  readonly kvHeads: number;
  /** Tokens (rows). */
  readonly tokens: number;
  /** Elements per head vector. */
  readonly headDim: number;
}

/** Why a row cannot be quantised (see {@link quantizeLayer}). */
export interface QuantIssue {
  /** The token (row) at fault. */
  readonly token: number;
  /** `nan`: a NaN or ±Infinity in the row; `range`: an absmax beyond fp16's 65504. */
  readonly reason: "nan" | "range";
}

/**
 * Quantise one layer's K or V, `x` `f32 [kvHeads, tokens, headDim]` (the KV cache's layout), with `bins`
 * bins (`4 ≤ bins ≤ 256`, even): writes symbols `u8 [tokens, C]` (C = kvHeads · headDim, heads merged) to
 * `symbols` at `symAt` and the per-token scales (fp16 bits, `[tokens]`) to `scales` at `scaleAt`. Returns the
 * first row that cannot be quantised (NaN / infinity, or a scale beyond fp16), else `undefined`; the outputs
 * are then incomplete. Throws a `RangeError` for a wrong length of `x` or an invalid `bins` (defects).
 */
export const quantizeLayer = (
  x: Float32Array,
  shape: LayerShape,
  bins: number,
  symbols: Uint8Array,
  symAt: number,
  scales: Uint16Array,
  scaleAt: number,
): QuantIssue | undefined => {
  const { kvHeads: H, tokens: N, headDim: d } = shape, C = H * d;
  if (x.length !== H * N * d) throw new RangeError(`quantizeLayer: ${x.length} values, want ${H * N * d}`);
  if (!Number.isInteger(bins) || bins < 4 || bins > 256 || bins % 2) {
    throw new RangeError(`quantizeLayer: bins ${bins}; want an even count in [4, 256]`);
  }
  const MAX = maxOf(bins), top = 2 * MAX, fr = Math.fround;
  for (let t = 0; t < N; t++) {
    let m = 0, nan = false;
    for (let h = 0; h < H; h++) {
      const base = (h * N + t) * d;
      for (let j = 0; j < d; j++) {
        const ax = Math.abs(x[base + j]);
        if (ax > m) m = ax;
        else if (ax !== ax) nan = true;
      }
    }
    if (nan || m === Infinity) return { token: t, reason: "nan" };
    if (m > F16_MAX) return { token: t, reason: "range" };
    const sh = scaleUp(m);
    scales[scaleAt + t] = sh;
    const out = symAt + t * C;
    if (sh === 0) {
      symbols.fill(MAX, out, out + C);
      continue;
    }
    const factor = fr(MAX / halfToFloat(sh));
    for (let h = 0; h < H; h++) {
      const base = (h * N + t) * d, o = out + h * d;
      for (let j = 0; j < d; j++) {
        const s = roundHalfEven(fr(fr(x[base + j] * factor) + MAX));
        symbols[o + j] = s < 0 ? 0 : s > top ? top : s;
      }
    }
  }
  return undefined;
};

/**
 * The inverse of {@link quantizeLayer}: symbols `u8 [tokens, C]` at `symAt` and scales (fp16 bits) at
 * `scaleAt` → `f32 [kvHeads, tokens, headDim]`, `x̂ = (s − MAX) / MAX · a` in f32 (official decoder's
 * dequantisation). Symbols above `2·MAX` are not checked here (the container does).
 */
export const dequantizeLayer = (
  symbols: Uint8Array,
  symAt: number,
  scales: Uint16Array,
  scaleAt: number,
  shape: LayerShape,
  bins: number,
  out: Float32Array = new Float32Array(shape.kvHeads * shape.tokens * shape.headDim),
): Float32Array => {
  const { kvHeads: H, tokens: N, headDim: d } = shape, C = H * d, MAX = maxOf(bins);
  const level = new Float32Array(256);
  for (let s = 0; s < 256; s++) level[s] = (s - MAX) / MAX;
  for (let t = 0; t < N; t++) {
    const a = halfToFloat(scales[scaleAt + t]), row = symAt + t * C;
    for (let h = 0; h < H; h++) {
      const o = (h * N + t) * d, at = row + h * d;
      for (let j = 0; j < d; j++) out[o + j] = level[symbols[at + j]] * a;
    }
  }
  return out;
};
