/**
 * IEEE 754 binary16 conversion for host code (cpu kernel bodies, tests): `f16` tensors are stored as raw
 * half bits in `Uint16Array`s (see `HostArray` in `@longctx/graph`). Written out rather than relying on
 * `Float16Array`, which not every runtime we support ships.
 * @module
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Half bits → number (exact). Handles subnormals, infinities and NaN. */
export const halfToFloat = (h: number): number => {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
};

/** Number → half bits, round to nearest even (as GPUs convert f32 → f16); overflow → ±Infinity. */
export const floatToHalf = (x: number): number => {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 255) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (r & 1))) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
};

/** Round a number to the nearest f16 value (returned as a number). */
export const roundHalf = (x: number): number => halfToFloat(floatToHalf(x));

/** Convert an array of numbers to half bits. */
export const toHalfArray = (xs: ArrayLike<number>): Uint16Array => {
  const out = new Uint16Array(xs.length);
  for (let i = 0; i < xs.length; i++) out[i] = floatToHalf(xs[i]);
  return out;
};

/** Convert half bits to a `Float32Array`. */
export const fromHalfArray = (hs: ArrayLike<number>): Float32Array => {
  const out = new Float32Array(hs.length);
  for (let i = 0; i < hs.length; i++) out[i] = halfToFloat(hs[i]);
  return out;
};
