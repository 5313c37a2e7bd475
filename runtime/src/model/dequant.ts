/**
 * Dequantisation of GGML tensor blocks to f32, bit-exact with llama.cpp's `dequantize_row_*`
 * (ggml/src/ggml-quants.c): every value is `f32(d) · q` or `f32(d) · q + f32(m)` computed in f32.
 *
 * Block layouts (little-endian, 32 values per block for the quantised types):
 * - `Q4_0` (18 B): f16 `d`; 16 B nibbles. `x[j] = (lo(q[j]) − 8)·d`, `x[j+16] = (hi(q[j]) − 8)·d`.
 * - `Q4_1` (20 B): f16 `d`, f16 `m`; 16 B nibbles. `x[j] = lo(q[j])·d + m`, `x[j+16] = hi(q[j])·d + m`.
 * - `Q8_0` (34 B): f16 `d`; 32 int8 `q`. `x[j] = q[j]·d`.
 * - `F16` (2 B per value), `F32` (4 B per value).
 * @module
 */
import { InputError } from "@longctx/graph";

/** GGML type ids (ggml.h `enum ggml_type`) for the types this module reads. */
export const GgmlType = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 8 } as const;

/** Values per block and bytes per block of each supported GGML type. */
export const ggmlTypeInfo: Readonly<
  Record<number, { name: string; blockValues: number; blockBytes: number }>
> = {
  [GgmlType.F32]: { name: "F32", blockValues: 1, blockBytes: 4 },
  [GgmlType.F16]: { name: "F16", blockValues: 1, blockBytes: 2 },
  [GgmlType.Q4_0]: { name: "Q4_0", blockValues: 32, blockBytes: 18 },
  [GgmlType.Q4_1]: { name: "Q4_1", blockValues: 32, blockBytes: 20 },
  [GgmlType.Q8_0]: { name: "Q8_0", blockValues: 32, blockBytes: 34 },
};

const HALF = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const f = h & 0x3ff;
    t[h] = e === 0
      ? s * f * 2 ** -24
      : e === 31
      ? (f ? NaN : s * Infinity)
      : s * (1 + f / 1024) * 2 ** (e - 15);
  }
  return t;
})();

/** IEEE-754 binary16 bits → number (exact). */
export const halfToFloat = (bits: number): number => HALF[bits & 0xffff];

/** number → IEEE-754 binary16 bits, round-to-nearest-even (for building test blocks). */
export const floatToHalf = (x: number): number => {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  e = h >>> 10;
  return sign | h;
};

/**
 * Dequantise `n` values of GGML type `type` from `bytes` (starting at byte 0 of the view) into an f32 array.
 * @param type a {@link GgmlType} id
 * @param bytes the tensor's raw bytes, at least `n / blockValues · blockBytes` long
 * @param n number of values (a multiple of the block size)
 * @returns `Float32Array(n)` in storage order (for a GGUF tensor with `ne = [ne0, ne1]`, row-major `[ne1, ne0]`)
 * @throws InputError (as a thrown value, see {@link dequantizeEffect} for the typed form) for an unsupported type,
 *   a length that is not a whole number of blocks, or too few bytes.
 */
export const dequantize = (type: number, bytes: Uint8Array, n: number): Float32Array => {
  const info = ggmlTypeInfo[type];
  if (!info) {
    throw new InputError({
      message: `GGML type ${type} is not supported`,
      hint: "supported: F32, F16, Q4_0, Q4_1, Q8_0; re-quantise the model (llama-quantize) to one of them",
    });
  }
  if (n % info.blockValues !== 0) {
    throw new InputError({
      message: `${info.name}: ${n} values is not a whole number of ${info.blockValues}-value blocks`,
      hint: "the tensor's row length must be a multiple of the block size",
    });
  }
  const need = (n / info.blockValues) * info.blockBytes;
  if (bytes.byteLength < need) {
    throw new InputError({
      message: `${info.name}: ${n} values need ${need} bytes, got ${bytes.byteLength}`,
      hint: "the file is truncated or the tensor offset is wrong",
    });
  }
  const out = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, need);
  switch (type) {
    case GgmlType.F32:
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
      break;
    case GgmlType.F16:
      for (let i = 0; i < n; i++) out[i] = HALF[dv.getUint16(2 * i, true)];
      break;
    case GgmlType.Q4_0:
      for (let b = 0, o = 0; o < n; b += 18, o += 32) {
        const d = HALF[dv.getUint16(b, true)];
        for (let j = 0; j < 16; j++) {
          const q = bytes[b + 2 + j];
          out[o + j] = ((q & 15) - 8) * d;
          out[o + j + 16] = ((q >> 4) - 8) * d;
        }
      }
      break;
    case GgmlType.Q4_1:
      for (let b = 0, o = 0; o < n; b += 20, o += 32) {
        const d = HALF[dv.getUint16(b, true)];
        const m = HALF[dv.getUint16(b + 2, true)];
        for (let j = 0; j < 16; j++) {
          const q = bytes[b + 4 + j];
          // f32 multiply-add as in ggml (Math.fround keeps the product at f32 before the add).
          out[o + j] = Math.fround((q & 15) * d) + m;
          out[o + j + 16] = Math.fround((q >> 4) * d) + m;
        }
      }
      break;
    case GgmlType.Q8_0:
      for (let b = 0, o = 0; o < n; b += 34, o += 32) {
        const d = HALF[dv.getUint16(b, true)];
        for (let j = 0; j < 32; j++) out[o + j] = dv.getInt8(b + 2 + j) * d;
      }
      break;
  }
  return out;
};
