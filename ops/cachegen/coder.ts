/**
 * CacheGen's entropy coder, the released one (LMCache `third_party/torchac_cuda/cal_cdf.cu`,
 * `torchac_kernel_enc_new.cu`, `torchac_kernel_dec_new.cu`), on the host:
 *
 * - **Probability model.** One histogram per (layer, channel) over the chunk's tokens, as a CDF of `Lp`
 *   entries (`Lp = maxBins + 1`, the largest bin count of any layer plus one) integerised to `precision` bits
 *   (16 officially) with the "+i" trick: `cdf[i] = ⌊(2^p − 1 − maxBins) · count(s < i) / total⌋ + i`, which is
 *   strictly increasing, so every symbol `0 … Lp − 2` has a nonzero frequency; the last symbol's upper bound is
 *   `2^p` (not `cdf[Lp − 1] = 2^p − 1`).
 * - **Coder.** 32-bit `low`/`high`, `span = high − low + 1`,
 *   `high = low + ⌊span · c_high / 2^p⌋ − 1`, `low = low + ⌊span · c_low / 2^p⌋`, then renormalisation: E1
 *   (`high < 2³¹`: emit 0 and the pending 1s), E2 (`low ≥ 2³¹`: emit 1 and the pending 0s), E3 (`2³⁰ ≤ low`,
 *   `high < 3·2³⁰`: one more pending bit); finish with one more pending bit and a 0 when `low < 2³⁰`, else a 1;
 *   bits packed MSB-first, the last byte zero-padded. The decoder reads zeros past a stream's end.
 * - `span · c` needs 48 bits: exact in a double (53-bit integers), so no BigInt (the official code uses
 *   64-bit integers for it).
 *
 * One stream per (layer, channel) and slice of at most `slice` tokens (official 256), independently decodable.
 * @module
 */

const HALF = 0x80000000, QUARTER = 0x40000000, THREE_QUARTERS = 0xc0000000;

/**
 * A table of integer CDFs, one per (row, channel): `data` `u16 [rows, channels, lp]` (a row is one layer's K
 * or V), each strictly increasing from 0, below `2^precision`.
 */
export interface CdfTable {
  /** The CDFs, `u16 [rows, channels, lp]`. */
  readonly data: Uint16Array;
  /** Entries per CDF: the alphabet is `0 … lp − 2` (`lp − 1` symbols). */
  readonly lp: number;
  /** Bits of probability precision (16 officially). */
  readonly precision: number;
}

/**
 * The integer CDF of each channel of one row (a layer's K or V): symbols `u8 [tokens, channels]` at `at`
 * (every symbol `≤ lp − 2`), counted over all `tokens`, written to `out` (`u16 [channels, lp]`) at `outAt`
 * (official `calculate_cdf` of `cal_cdf.cu`). Throws a `RangeError` for a symbol outside the alphabet.
 */
export const rowCdf = (
  symbols: Uint8Array,
  at: number,
  tokens: number,
  channels: number,
  lp: number,
  precision: number,
  out: Uint16Array,
  outAt: number,
): void => {
  const maxBins = lp - 1, scale = 2 ** precision - 1 - maxBins;
  const counts = new Uint32Array(channels * lp);
  for (let t = 0; t < tokens; t++) {
    const row = at + t * channels;
    for (let c = 0; c < channels; c++) {
      const s = symbols[row + c];
      if (s > lp - 2) throw new RangeError(`rowCdf: symbol ${s} outside 0 … ${lp - 2}`);
      counts[c * lp + s + 1]++;
    }
  }
  for (let c = 0; c < channels; c++) {
    let below = 0;
    const o = outAt + c * lp, b = c * lp;
    for (let i = 0; i < lp; i++) {
      below += counts[b + i];
      out[o + i] = Math.floor((scale * below) / tokens) + i;
    }
  }
};

/**
 * Whether `cdf` (`lp` entries at `at`) is a valid table for the decoder: `cdf[0] = 0`, strictly increasing,
 * every entry below `2^precision`.
 */
export const validCdf = (cdf: Uint16Array, at: number, lp: number, precision: number): boolean => {
  if (cdf[at] !== 0) return false;
  const top = 2 ** precision;
  for (let i = 1; i < lp; i++) if (cdf[at + i] <= cdf[at + i - 1] || cdf[at + i] >= top) return false;
  return true;
};

/** The most bytes a stream of `count` symbols can take (every symbol ≤ 16 bits, plus the finish). */
export const streamBound = (count: number, precision = 16): number =>
  Math.ceil((count * (precision + 0.01) + 34) / 8);

/**
 * Encode `count` symbols (`symbols[at + i · stride]`, each `≤ lp − 2`) with the CDF at `cdfAt` of `cdf`
 * into `out` from `outAt` (room for {@link streamBound} bytes); returns the stream's length in bytes.
 */
export const encodeStream = (
  cdf: CdfTable,
  cdfAt: number,
  symbols: Uint8Array,
  at: number,
  stride: number,
  count: number,
  out: Uint8Array,
  outAt: number,
): number => {
  const table = cdf.data, maxSym = cdf.lp - 2, top = 2 ** cdf.precision, inv = 1 / top;
  let low = 0, high = 0xffffffff, pending = 0, acc = 0, nb = 0, pos = outAt;
  for (let i = 0; i < count; i++) {
    const s = symbols[at + i * stride];
    const span = high - low + 1;
    const cHigh = s === maxSym ? top : table[cdfAt + s + 1];
    high = low + Math.floor(span * cHigh * inv) - 1;
    low = low + Math.floor(span * table[cdfAt + s] * inv);
    for (;;) {
      let bit: number;
      if (high < HALF) {
        bit = 0;
      } else if (low >= HALF) {
        bit = 1;
        low -= HALF;
        high -= HALF;
      } else if (low >= QUARTER && high < THREE_QUARTERS) {
        pending++;
        low = (low - QUARTER) * 2;
        high = (high - QUARTER) * 2 + 1;
        continue;
      } else break;
      low *= 2;
      high = high * 2 + 1;
      // the bit, then the pending opposite bits
      acc = (acc << 1) | bit;
      if (++nb === 8) out[pos++] = acc, acc = 0, nb = 0;
      for (; pending > 0; pending--) {
        acc = (acc << 1) | (bit ^ 1);
        if (++nb === 8) out[pos++] = acc, acc = 0, nb = 0;
      }
    }
  }
  // finish: one more pending bit, and the bit that puts the final value inside [low, high]
  pending++;
  const bit = low < QUARTER ? 0 : 1;
  acc = (acc << 1) | bit;
  if (++nb === 8) out[pos++] = acc, acc = 0, nb = 0;
  for (; pending > 0; pending--) {
    acc = (acc << 1) | (bit ^ 1);
    if (++nb === 8) out[pos++] = acc, acc = 0, nb = 0;
  }
  if (nb > 0) out[pos++] = acc << (8 - nb);
  return pos - outAt;
};

/**
 * Decode `count` symbols from the stream `bytes[at … at + length)` (zeros read past its end) with the CDF at
 * `cdfAt` of `cdf`, writing them to `out[outAt + i · stride]`. Every decoded symbol is in `0 … lp − 2`; a
 * corrupt stream decodes to wrong symbols, never out of bounds.
 */
export const decodeStream = (
  cdf: CdfTable,
  cdfAt: number,
  bytes: Uint8Array,
  at: number,
  length: number,
  count: number,
  out: Uint8Array,
  outAt: number,
  stride: number,
): void => {
  const table = cdf.data, maxSym = cdf.lp - 2, top = 2 ** cdf.precision, inv = 1 / top;
  const end = at + length;
  // the first 32 bits, big-endian (zeros past the end), then bit by bit from byte p
  let value = 0;
  for (let i = 0; i < 4; i++) value = value * 256 + (at + i < end ? bytes[at + i] : 0);
  let p = at + 4, byte = 0, nb = 0;
  let low = 0, high = 0xffffffff;
  for (let i = 0; i < count; i++) {
    const span = high - low + 1;
    const num = (value - low + 1) * top - 1;
    let target = Math.floor(num / span);
    if (target * span > num) target--; // guard (cannot happen for 48-bit integers; cheap)
    // the largest symbol s ≤ maxSym with cdf[s] ≤ target
    let lo = 0, hi = maxSym + 1;
    while (hi - lo > 1) {
      const m = (lo + hi) >> 1;
      if (table[cdfAt + m] <= target) lo = m;
      else hi = m;
    }
    out[outAt + i * stride] = lo;
    if (i === count - 1) break;
    const cHigh = lo === maxSym ? top : table[cdfAt + lo + 1];
    high = low + Math.floor(span * cHigh * inv) - 1;
    low = low + Math.floor(span * table[cdfAt + lo] * inv);
    for (;;) {
      if (high < HALF) {
        // E1: nothing to subtract
      } else if (low >= HALF) {
        low -= HALF;
        high -= HALF;
        value -= HALF;
      } else if (low >= QUARTER && high < THREE_QUARTERS) {
        low -= QUARTER;
        high -= QUARTER;
        value -= QUARTER;
      } else break;
      low *= 2;
      high = high * 2 + 1;
      if (nb === 0) byte = p < end ? bytes[p] : 0, p++, nb = 8;
      value = value * 2 + ((byte >> --nb) & 1);
    }
  }
};

/**
 * The ideal code length in bits of `count` symbols (`symbols[at + i · stride]`) under the CDF at `cdfAt`:
 * `Σ −log2((c_high − c_low) / 2^p)` — the empirical entropy under the shipped CDF, which an arithmetic coder
 * approaches within a few bits per stream.
 */
export const idealBits = (
  cdf: CdfTable,
  cdfAt: number,
  symbols: Uint8Array,
  at: number,
  stride: number,
  count: number,
): number => {
  const table = cdf.data, maxSym = cdf.lp - 2, top = 2 ** cdf.precision;
  let bits = 0;
  for (let i = 0; i < count; i++) {
    const s = symbols[at + i * stride];
    const f = (s === maxSym ? top : table[cdfAt + s + 1]) - table[cdfAt + s];
    bits -= Math.log2(f / top);
  }
  return bits;
};

/** Geometry of a symbol tensor and its streams (see {@link encodeSymbols}). */
export interface StreamLayout {
  /** Rows (layers' K then V: `2 · layers`). */
  readonly rows: number;
  /** Tokens per row. */
  readonly tokens: number;
  /** Channels per row (`kvHeads · headDim`). */
  readonly channels: number;
  /** Tokens per stream at most (official 256). */
  readonly slice: number;
}

/** Coded streams: their lengths and bytes. */
export interface CodedStreams {
  /** Bytes of each stream, `u16 [slices, rows, channels]` (stream order). */
  readonly lengths: Uint16Array;
  /** The streams back to back in that order. */
  readonly bytes: Uint8Array;
}

/** Slices of a row of `tokens` tokens: `⌈tokens / slice⌉`. */
export const sliceCount = (tokens: number, slice: number): number => Math.ceil(tokens / slice);

/**
 * Encode symbols `u8 [rows, tokens, channels]` (official `encode_input` layout) with `cdf` (`[rows, channels,
 * lp]`): one stream per (slice, row, channel), slice-major as the official GPU encoder's chunks.
 */
export const encodeSymbols = (symbols: Uint8Array, cdf: CdfTable, layout: StreamLayout): CodedStreams => {
  const { rows, tokens: N, channels: C, slice } = layout, slices = sliceCount(N, slice);
  const lengths = new Uint16Array(slices * rows * C);
  const parts: Uint8Array[] = [];
  let total = 0;
  const scratch = new Uint8Array(rows * C * streamBound(Math.min(slice, N), cdf.precision));
  for (let sl = 0; sl < slices; sl++) {
    const t0 = sl * slice, n = Math.min(slice, N - t0);
    let pos = 0;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < C; c++) {
        const len = encodeStream(
          cdf,
          (r * C + c) * cdf.lp,
          symbols,
          (r * N + t0) * C + c,
          C,
          n,
          scratch,
          pos,
        );
        lengths[(sl * rows + r) * C + c] = len;
        pos += len;
      }
    }
    parts.push(scratch.slice(0, pos));
    total += pos;
  }
  const bytes = new Uint8Array(total);
  let off = 0;
  for (const p of parts) bytes.set(p, off), off += p.length;
  return { lengths, bytes };
};

/**
 * The inclusive prefix sums of stream byte lengths (`u16 [slices, rows, channels]`, stream order): stream `i`
 * occupies bytes `[ends[i − 1], ends[i])` of the concatenated streams (`ends[−1] = 0`), and `ends[last]` is
 * their total. The form {@link decodeStreamsAt} and the GPU decoder (`cachegen.decode`) read. Throws a
 * `RangeError` past 2³² − 1 bytes.
 */
export const streamEnds = (lengths: Uint16Array): Uint32Array => {
  const ends = new Uint32Array(lengths.length);
  let off = 0;
  for (let i = 0; i < lengths.length; i++) ends[i] = off += lengths[i];
  if (off > 0xffffffff) throw new RangeError(`streamEnds: ${off} stream bytes, past 2^32 - 1`);
  return ends;
};

/**
 * Decode the streams of a symbol tensor `u8 [rows, tokens, channels]` from their ends (see {@link streamEnds}):
 * stream `i` (order `[slices, rows, channels]`) is `bytes[ends[i − 1] … min(ends[i], bytes.length))`, read with
 * zeros past that end (so bytes padded with zeros after the last stream change nothing). No check of the
 * ends against the bytes: {@link decodeSymbols} does it for coded streams, the container before it.
 */
export const decodeStreamsAt = (
  bytes: Uint8Array,
  ends: Uint32Array,
  cdf: CdfTable,
  layout: StreamLayout,
  out: Uint8Array = new Uint8Array(layout.rows * layout.tokens * layout.channels),
): Uint8Array => {
  const { rows, tokens: N, channels: C, slice } = layout, slices = sliceCount(N, slice);
  for (let sl = 0, i = 0; sl < slices; sl++) {
    const t0 = sl * slice, n = Math.min(slice, N - t0);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < C; c++, i++) {
        const at = i === 0 ? 0 : ends[i - 1], end = Math.min(ends[i], bytes.length);
        decodeStream(cdf, (r * C + c) * cdf.lp, bytes, at, end - at, n, out, (r * N + t0) * C + c, C);
      }
    }
  }
  return out;
};

/**
 * Decode streams written by {@link encodeSymbols} back to symbols `u8 [rows, tokens, channels]`. Throws a
 * `RangeError` when the lengths do not add up to the bytes (the container checks that first).
 */
export const decodeSymbols = (
  streams: CodedStreams,
  cdf: CdfTable,
  layout: StreamLayout,
  out: Uint8Array = new Uint8Array(layout.rows * layout.tokens * layout.channels),
): Uint8Array => {
  const { rows, tokens: N, channels: C, slice } = layout;
  if (streams.lengths.length !== sliceCount(N, slice) * rows * C) {
    throw new RangeError("decodeSymbols: lengths of another layout");
  }
  const ends = streamEnds(streams.lengths), total = ends.length ? ends[ends.length - 1] : 0;
  if (total > streams.bytes.length) throw new RangeError("decodeSymbols: lengths past the streams");
  if (total !== streams.bytes.length) {
    throw new RangeError("decodeSymbols: streams longer than their lengths");
  }
  return decodeStreamsAt(streams.bytes, ends, cdf, layout, out);
};
