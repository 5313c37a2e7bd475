/**
 * CacheGen's codec without the model: the arithmetic coder bit-exact against an independent reference of the
 * released CUDA coder (uint32/uint64 arithmetic in BigInt), lossless on random and structured symbol tensors
 * and on fuzzed degenerate histograms (one symbol, two symbols, uniform, never-seen symbols) at every slice
 * length 1…256, its coded length against the empirical entropy under the shipped CDF; the quantiser's rounding
 * (half to even) and error bound; the container's round trip, and a typed `CacheGenError` for every corruption,
 * truncation, foreign magic, other version, stale provenance and bad input.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { ParamsError } from "@longctx/graph";
import { cachegen, kernels } from "@longctx/ops";
import { randn, rng } from "./ref64.ts";

type CdfTable = cachegen.CdfTable;

// ---- an independent reference of the released coder (torchac_kernel_enc_new.cu / dec_new.cu) -------------

const M32 = 0xffffffffn;
/** The CUDA encoder's arithmetic, literally: uint32 low/high with wrap-around, uint64 span. */
const refEncode = (cdf: readonly number[], lp: number, symbols: readonly number[]): Uint8Array => {
  const bits: number[] = [];
  let low = 0n, high = M32, pending = 0;
  const emit = (bit: number) => {
    bits.push(bit);
    for (; pending > 0; pending--) bits.push(1 - bit);
  };
  const maxSym = lp - 2;
  for (const s of symbols) {
    const span = high - low + 1n;
    const cLow = BigInt(cdf[s]), cHigh = s === maxSym ? 0x10000n : BigInt(cdf[s + 1]);
    high = ((low - 1n) + ((span * cHigh) >> 16n)) & M32;
    low = (low + ((span * cLow) >> 16n)) & M32;
    for (;;) {
      if (high < 0x80000000n) {
        emit(0);
        low = (low << 1n) & M32;
        high = ((high << 1n) | 1n) & M32;
      } else if (low >= 0x80000000n) {
        emit(1);
        low = (low << 1n) & M32;
        high = ((high << 1n) | 1n) & M32;
      } else if (low >= 0x40000000n && high < 0xc0000000n) {
        pending++;
        low = (low << 1n) & 0x7fffffffn;
        high = ((high << 1n) | 0x80000001n) & M32;
      } else break;
    }
  }
  pending++;
  emit(low < 0x40000000n ? 0 : 1);
  const out = new Uint8Array(Math.ceil(bits.length / 8));
  bits.forEach((b, i) => (out[i >> 3] |= b << (7 - (i & 7))));
  return out;
};

/** The CUDA `calculate_cdf` normalisation: `(0xFFFF − maxBins) · count / total + i`, uint32 division. */
const refCdf = (symbols: readonly number[], lp: number): number[] => {
  const counts = new Array(lp).fill(0);
  for (const s of symbols) counts[s + 1]++;
  const out: number[] = [];
  let below = 0;
  for (let i = 0; i < lp; i++) {
    below += counts[i];
    out.push(Number((BigInt(0xffff - (lp - 1)) * BigInt(below)) / BigInt(symbols.length)) + i);
  }
  return out;
};

// ---- helpers -----------------------------------------------------------------------------------------------

/** One stream's symbols coded with a CDF counted over `histogramOf` (default: the symbols themselves). */
const roundTrip = (symbols: Uint8Array, lp: number, histogramOf: Uint8Array = symbols, precision = 16) => {
  const cdf: CdfTable = { data: new Uint16Array(lp), lp, precision };
  cachegen.rowCdf(histogramOf, 0, histogramOf.length, 1, lp, precision, cdf.data, 0);
  const buf = new Uint8Array(cachegen.streamBound(symbols.length, precision));
  const len = cachegen.encodeStream(cdf, 0, symbols, 0, 1, symbols.length, buf, 0);
  const out = new Uint8Array(symbols.length);
  cachegen.decodeStream(cdf, 0, buf, 0, len, symbols.length, out, 0, 1);
  const ideal = cachegen.idealBits(cdf, 0, symbols, 0, 1, symbols.length);
  return { cdf, bytes: buf.subarray(0, len), out, ideal };
};

/** Symbols from a discretised Laplacian around the middle of `levels` levels (structured, like real KV). */
const laplace = (n: number, levels: number, spread: number, seed: number): Uint8Array => {
  const r = rng(seed), out = new Uint8Array(n), mid = (levels - 1) / 2;
  for (let i = 0; i < n; i++) {
    const u = r() - 0.5, x = -spread * Math.sign(u) * Math.log(1 - 2 * Math.abs(u));
    out[i] = Math.max(0, Math.min(levels - 1, Math.round(mid + x)));
  }
  return out;
};

const failureOf = async <A>(e: Effect.Effect<A, cachegen.CacheGenError>): Promise<cachegen.CacheGenError> => {
  const r = await Effect.runPromise(Effect.result(e));
  if (r._tag !== "Failure") throw new Error("expected a CacheGenError, got a success");
  assert.equal(r.failure._tag, "CacheGenError");
  assert.ok(r.failure.hint.length > 0 && r.failure.message.length > 0);
  return r.failure;
};

/** A random KV chunk with per-channel magnitudes (outlier channels, as real keys have) and a zero row. */
const randomKv = (dims: cachegen.KvDims, seed: number) => {
  const { layers: L, kvHeads: H, headDim: d, tokens: N } = dims;
  const k: Float32Array[] = [], v: Float32Array[] = [];
  for (let l = 0; l < L; l++) {
    const a = randn(H * N * d, seed + 2 * l), b = randn(H * N * d, seed + 2 * l + 1, 0.3);
    for (let i = 0; i < a.length; i++) a[i] *= 1 + ((i % d) % 7 === 0 ? 6 : 0);
    k.push(a);
    v.push(b);
  }
  // one all-zero token in layer 0's values (scale 0), the others random
  for (let h = 0; h < H; h++) v[0].fill(0, (h * N + 1) * d, (h * N + 2) * d);
  return { k, v };
};

// ---- the coder ---------------------------------------------------------------------------------------------

test("cachegen coder: CDF and bitstream bit-exact against the released CUDA coder's arithmetic (BigInt)", () => {
  const r = rng(7);
  for (let trial = 0; trial < 60; trial++) {
    const lp = [5, 13, 17, 33, 49][trial % 5], n = 1 + Math.floor(r() * 256);
    const kind = trial % 3;
    const symbols = kind === 0
      ? laplace(n, lp - 1, 0.5 + r() * 4, trial)
      : kind === 1
      ? Uint8Array.from({ length: n }, () => Math.floor(r() * (lp - 1)))
      : Uint8Array.from({ length: n }, (_, i) => (i % 5 === 0 ? lp - 2 : 0));
    const { cdf, bytes } = roundTrip(symbols, lp);
    assert.deepEqual([...cdf.data], refCdf([...symbols], lp), `CDF, trial ${trial}`);
    assert.deepEqual([...bytes], [...refEncode([...cdf.data], lp, [...symbols])], `stream, trial ${trial}`);
  }
});

test("cachegen coder: lossless on random and structured symbol tensors (many streams, slices, shapes)", () => {
  const shapes = [
    { rows: 2, tokens: 1, channels: 3, slice: 256, lp: 33 },
    { rows: 4, tokens: 300, channels: 24, slice: 256, lp: 33 },
    { rows: 6, tokens: 513, channels: 16, slice: 100, lp: 17 },
    { rows: 2, tokens: 77, channels: 5, slice: 1, lp: 13 },
    { rows: 2, tokens: 1000, channels: 8, slice: 4096, lp: 49 },
  ];
  for (const [n, s] of shapes.entries()) {
    const { rows, tokens: N, channels: C, lp } = s;
    const symbols = new Uint8Array(rows * N * C);
    const r = rng(100 + n);
    for (let row = 0; row < rows; row++) {
      // half the rows uniform, half Laplacian per channel (different spreads)
      for (let c = 0; c < C; c++) {
        const col = row % 2 ? laplace(N, lp - 2, 0.3 + c * 0.4, 1000 * n + row * C + c) : undefined;
        for (let t = 0; t < N; t++) {
          symbols[(row * N + t) * C + c] = col ? col[t] : Math.floor(r() * (lp - 1));
        }
      }
    }
    const cdf: CdfTable = { data: new Uint16Array(rows * C * lp), lp, precision: 16 };
    for (let row = 0; row < rows; row++) {
      cachegen.rowCdf(symbols, row * N * C, N, C, lp, 16, cdf.data, row * C * lp);
    }
    const coded = cachegen.encodeSymbols(symbols, cdf, s);
    assert.equal(coded.lengths.length, cachegen.sliceCount(N, s.slice) * rows * C);
    const back = cachegen.decodeSymbols(coded, cdf, s);
    assert.deepEqual(back, symbols, `shape ${JSON.stringify(s)}`);
  }
});

test("cachegen coder: fuzzed degenerate histograms round-trip at every slice length 1…256", () => {
  const lp = 33, maxSym = lp - 2;
  const makers: Record<string, (n: number) => Uint8Array> = {
    "one symbol (0)": (n) => new Uint8Array(n),
    "one symbol (middle)": (n) => new Uint8Array(n).fill(15),
    "one symbol (the last, upper bound 2^16)": (n) => new Uint8Array(n).fill(maxSym),
    "two symbols": (n) => Uint8Array.from({ length: n }, (_, i) => (i * 7919 % 3 === 0 ? 3 : 29)),
    "uniform over every symbol": (n) => Uint8Array.from({ length: n }, (_, i) => (i * 13) % (maxSym + 1)),
    "one outlier": (n) => Uint8Array.from({ length: n }, (_, i) => (i === n >> 1 ? maxSym : 0)),
  };
  let worstOver = -Infinity;
  for (const [name, make] of Object.entries(makers)) {
    for (let n = 1; n <= 256; n++) {
      const s = make(n);
      const { out, bytes, ideal } = roundTrip(s, lp);
      assert.deepEqual(out, s, `${name}, ${n} symbols`);
      worstOver = Math.max(worstOver, bytes.length * 8 - ideal);
    }
  }
  // symbols the histogram never saw: frequency 1/65536 each (the "+i" trick), 16 bits per symbol
  for (let n = 1; n <= 256; n++) {
    const s = Uint8Array.from({ length: n }, (_, i) => 1 + (i % 30));
    const { out, bytes } = roundTrip(s, lp, new Uint8Array(64));
    assert.deepEqual(out, s, `never-seen symbols, ${n}`);
    assert.ok(
      bytes.length <= cachegen.streamBound(n),
      `never-seen symbols: ${bytes.length} bytes within the bound`,
    );
    assert.ok(
      bytes.length >= 2 * n - 1,
      `never-seen symbols cost ~16 bits each (${bytes.length} bytes, n ${n})`,
    );
  }
  // lower precisions and other alphabets
  for (const precision of [12, 14, 16]) {
    for (const alpha of [5, 17, 49]) {
      for (let n = 1; n <= 256; n += 17) {
        const s = laplace(n, alpha - 1, 1.5, n + alpha);
        assert.deepEqual(roundTrip(s, alpha, s, precision).out, s, `p ${precision}, lp ${alpha}, n ${n}`);
      }
    }
  }
  assert.ok(
    worstOver <= 10,
    `degenerate streams: at most ${worstOver.toFixed(2)} bits over the ideal length`,
  );
});

test("cachegen coder: coded length within a few bits per stream of the empirical entropy under the shipped CDF", () => {
  let streams = 0, over = 0, worst = -Infinity, best = Infinity, bits = 0;
  for (let seed = 0; seed < 400; seed++) {
    const n = 1 + (seed * 37) % 256, lp = seed % 2 ? 33 : 17;
    const s = laplace(n, lp - 2, 0.2 + (seed % 9) * 0.6, seed);
    const { bytes, ideal } = roundTrip(s, lp);
    const d = bytes.length * 8 - ideal;
    over += d;
    bits += ideal;
    worst = Math.max(worst, d);
    best = Math.min(best, d);
    streams++;
  }
  console.log(
    `  coded length − Σ −log2 p(s): mean ${(over / streams).toFixed(2)} bits/stream (min ${
      best.toFixed(2)
    }, ` +
      `max ${worst.toFixed(2)}) over ${streams} streams of ${
        (bits / streams).toFixed(0)
      } ideal bits on average ` +
      "(finish ≤ 2 bits, byte padding < 8)",
  );
  assert.ok(worst <= 10, `at most 10 bits over per stream (finish + byte padding), got ${worst}`);
  assert.ok(best >= -1, `never more than a bit under the ideal length, got ${best}`);
});

test("cachegen coder: a corrupt stream decodes to symbols of the alphabet, never out of bounds", () => {
  const lp = 33, r = rng(3);
  const s = laplace(256, 31, 2, 9);
  const { cdf } = roundTrip(s, lp);
  for (let trial = 0; trial < 50; trial++) {
    const junk = Uint8Array.from({ length: 1 + Math.floor(r() * 300) }, () => Math.floor(r() * 256));
    const out = new Uint8Array(256);
    cachegen.decodeStream(cdf, 0, junk, 0, junk.length, 256, out, 0, 1);
    assert.ok(out.every((x) => x <= lp - 2));
  }
});

// ---- the quantiser -----------------------------------------------------------------------------------------

test("cachegen quantiser: half-to-even rounding as torch.round, not JS Math.round", () => {
  assert.deepEqual([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, 2.4999, 2.5001].map(cachegen.roundHalfEven), [
    0,
    2,
    2,
    4,
    0,
    -2,
    2,
    3,
  ]);
  const shape = { kvHeads: 1, tokens: 1, headDim: 5 };
  const syms = new Uint8Array(5), scales = new Uint16Array(1);
  // bins 4: MAX 1, a = 1: y = x + 1 → [2, 1.5, 0.5, 0, 1.25] → [2, 2, 0, 0, 1] (Math.round: 0.5 → 1)
  cachegen.quantizeLayer(Float32Array.of(1, 0.5, -0.5, -1, 0.25), shape, 4, syms, 0, scales, 0);
  assert.deepEqual([...syms], [2, 2, 0, 0, 1]);
  assert.equal(kernels.halfToFloat(scales[0]), 1);
  // bins 8: MAX 3, a = 1: y = 3x + 3 → 0.5 → 4.5 → 4; −0.5 → 1.5 → 2
  cachegen.quantizeLayer(Float32Array.of(1, 0.5, -0.5, 0, -1), shape, 8, syms, 0, scales, 0);
  assert.deepEqual([...syms], [6, 4, 2, 3, 0]);
});

test("cachegen quantiser: every element within a/(2·MAX) of its value; scales fp16 ≥ the absmax", () => {
  const shape = { kvHeads: 3, tokens: 41, headDim: 16 }, { kvHeads: H, tokens: N, headDim: d } = shape;
  const C = H * d;
  for (const bins of [12, 16, 32, 256]) {
    for (const scale of [1e-6, 3e-3, 1, 250, 1500]) {
      const x = randn(H * N * d, bins + Math.round(scale * 1000), scale);
      for (let t = 0; t < N; t += 7) x[t * d] *= 9; // an outlier in some rows
      const syms = new Uint8Array(N * C), scales = new Uint16Array(N);
      assert.equal(cachegen.quantizeLayer(x, shape, bins, syms, 0, scales, 0), undefined);
      const y = cachegen.dequantizeLayer(syms, 0, scales, 0, shape, bins);
      const MAX = cachegen.maxOf(bins);
      assert.ok(syms.every((s) => s <= 2 * MAX));
      for (let t = 0; t < N; t++) {
        const a = kernels.halfToFloat(scales[t]);
        let m = 0;
        for (let h = 0; h < H; h++) {
          for (let j = 0; j < d; j++) m = Math.max(m, Math.abs(x[(h * N + t) * d + j]));
        }
        assert.ok(a >= m && (a - m) <= Math.max(m * 2 ** -10, 2 ** -24), `scale ${a} for absmax ${m}`);
        const bound = a / (2 * MAX) * (1 + 1e-5) + 1e-30;
        for (let h = 0; h < H; h++) {
          for (let j = 0; j < d; j++) {
            const i = (h * N + t) * d + j;
            assert.ok(Math.abs(y[i] - x[i]) <= bound, `bins ${bins}, |${y[i]} − ${x[i]}| > ${bound}`);
          }
        }
      }
    }
  }
});

test("cachegen quantiser: NaN, infinity and values beyond fp16 are reported by row", () => {
  const shape = { kvHeads: 2, tokens: 4, headDim: 3 };
  const syms = new Uint8Array(4 * 6), scales = new Uint16Array(4);
  const x = randn(24, 1);
  x[(1 * 4 + 2) * 3 + 1] = NaN;
  assert.deepEqual(cachegen.quantizeLayer(x, shape, 16, syms, 0, scales, 0), { token: 2, reason: "nan" });
  const y = randn(24, 2);
  y[3] = -Infinity;
  assert.deepEqual(cachegen.quantizeLayer(y, shape, 16, syms, 0, scales, 0), { token: 1, reason: "nan" });
  const z = randn(24, 3);
  z[0] = 70000;
  assert.deepEqual(cachegen.quantizeLayer(z, shape, 16, syms, 0, scales, 0), { token: 0, reason: "range" });
});

// ---- parameters --------------------------------------------------------------------------------------------

test("cachegen params: official defaults, level tables, and typed rejections", () => {
  const p = cachegen.cachegenParams();
  assert.deepEqual(p, {
    level: 2,
    keyFirstLayers: 10,
    keySecondLayers: 20,
    valueFirstLayers: 2,
    slice: 256,
    precision: 16,
  });
  const b = cachegen.layerBins(p, 30);
  assert.deepEqual(b.key, [...Array(10).fill(32), ...Array(20).fill(16)]);
  assert.deepEqual(b.value, [32, 32, ...Array(28).fill(16)]);
  const b1 = cachegen.layerBins(cachegen.cachegenParams({ level: 1 }), 32);
  assert.deepEqual([b1.key[0], b1.key[10], b1.key[31], b1.value[0], b1.value[2]], [16, 16, 12, 16, 12]);
  const b3 = cachegen.layerBins(cachegen.cachegenParams({ level: 3 }), 32);
  assert.ok([...b3.key, ...b3.value].every((x) => x === 32));
  for (const bad of [{ level: 4 }, { slice: 0 }, { precision: 17 }, { bins: 8 }, { keySecondLayers: 5 }]) {
    assert.throws(() => cachegen.cachegenParams(bad as never), (e: unknown) => e instanceof ParamsError);
  }
});

// ---- the container -----------------------------------------------------------------------------------------

const DIMS: cachegen.KvDims = { layers: 3, kvHeads: 3, headDim: 8, tokens: 300 };
const PROV: cachegen.KvProvenance = { model: "test-model L3 H3 D8", tokensSha256: "ab".repeat(32) };
const params = cachegen.cachegenParams({ keyFirstLayers: 1, keySecondLayers: 2, valueFirstLayers: 1 });

test("cachegen container: round trip equals the in-memory codec; sizes; error bound per element", async () => {
  const { k, v } = randomKv(DIMS, 11);
  const bytes = await Effect.runPromise(cachegen.encodeKv(k, v, DIMS, params, PROV));
  const dec = await Effect.runPromise(cachegen.decodeKv(bytes, PROV));
  const c = await Effect.runPromise(cachegen.compressKv(k, v, DIMS, params));
  const mem = await Effect.runPromise(cachegen.decompressKv(c));
  assert.equal(cachegen.kvSizes(c, PROV).total, bytes.length);
  assert.deepEqual(dec.dims, DIMS);
  assert.deepEqual(dec.header.keyBins, [32, 16, 16]);
  assert.deepEqual(dec.header.valueBins, [32, 16, 16]);
  const { kvHeads: H, headDim: d, tokens: N } = DIMS;
  for (let l = 0; l < DIMS.layers; l++) {
    assert.deepEqual(dec.k[l], mem.k[l]);
    assert.deepEqual(dec.v[l], mem.v[l]);
    for (
      const [x, y, bins, r] of [[k[l], dec.k[l], dec.header.keyBins[l], l], [
        v[l],
        dec.v[l],
        dec.header.valueBins[l],
        DIMS.layers + l,
      ]] as const
    ) {
      const MAX = cachegen.maxOf(bins);
      for (let t = 0; t < N; t++) {
        const a = kernels.halfToFloat(c.scales[r * N + t]);
        for (let h = 0; h < H; h++) {
          for (let j = 0; j < d; j++) {
            const i = (h * N + t) * d + j;
            assert.ok(Math.abs(x[i] - y[i]) <= a / (2 * MAX) * (1 + 1e-5), `layer ${l}`);
          }
        }
      }
    }
  }
  // the zero row decodes to zeros
  assert.ok(dec.v[0].subarray(d, 2 * d).every((x) => x === 0));
});

test("cachegen container: every corruption and truncation is a typed CacheGenError, never a decode", async () => {
  const { k, v } = randomKv(DIMS, 21);
  const bytes = await Effect.runPromise(cachegen.encodeKv(k, v, DIMS, params, PROV));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hl = view.getUint32(12, true);
  const c = await Effect.runPromise(cachegen.compressKv(k, v, DIMS, params));
  const sz = cachegen.kvSizes(c, PROV);
  const start = 24 + hl;
  const sections: Record<string, number> = {
    "prelude: version": 9,
    "prelude: header length": 13,
    "header": 24 + (hl >> 1),
    "CDFs": start + (sz.cdf >> 1),
    "scales": start + sz.cdf + (sz.scales >> 1),
    "lengths": start + sz.cdf + sz.scales + (sz.lengths >> 1),
    "streams (first byte)": start + sz.cdf + sz.scales + sz.lengths,
    "streams (middle)": start + sz.cdf + sz.scales + sz.lengths + (sz.streams >> 1),
    "checksum": bytes.length - 5,
  };
  for (const [name, at] of Object.entries(sections)) {
    for (const mask of [0x01, 0x80]) {
      const bad = bytes.slice();
      bad[at] ^= mask;
      const e = await failureOf(cachegen.decodeKv(bad));
      assert.equal(e.reason, "checksum", `flip in ${name}: ${e.reason} (${e.message})`);
    }
  }
  // the declared length: a truncation or a mismatch
  const len = bytes.slice();
  len[16] ^= 0x04;
  assert.ok(["truncated", "corrupt"].includes((await failureOf(cachegen.decodeKv(len))).reason));
  const magic = bytes.slice();
  magic[0] = 0x47;
  assert.equal((await failureOf(cachegen.decodeKv(magic))).reason, "bad-magic");
  assert.equal(
    (await failureOf(
      cachegen.decodeKv(new TextEncoder().encode("GGUF and more bytes than a prelude needs, surely")),
    )).reason,
    "bad-magic",
  );
  for (
    const cut of [
      0,
      3,
      8,
      23,
      24,
      56,
      start + 10,
      start + sz.cdf + 1,
      bytes.length >> 1,
      bytes.length - 33,
      bytes.length - 1,
    ]
  ) {
    const e = await failureOf(cachegen.decodeKv(bytes.slice(0, cut)));
    assert.equal(e.reason, "truncated", `cut at ${cut}: ${e.reason}`);
  }
  const longer = new Uint8Array(bytes.length + 3);
  longer.set(bytes);
  assert.equal((await failureOf(cachegen.decodeKv(longer))).reason, "corrupt");
});

/** Recompute a container's checksum after an edit (a writer that is wrong, not a damaged file). */
const rehash = async (b: Uint8Array): Promise<Uint8Array> => {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", b.slice(0, b.length - 32)));
  b.set(h, b.length - 32);
  return b;
};

test("cachegen container: another version, inconsistent contents with a valid checksum, stale provenance", async () => {
  const { k, v } = randomKv(DIMS, 31);
  const bytes = await Effect.runPromise(cachegen.encodeKv(k, v, DIMS, params, PROV));
  const hl = new DataView(bytes.buffer).getUint32(12, true), start = 24 + hl;
  const c = await Effect.runPromise(cachegen.compressKv(k, v, DIMS, params));
  const sz = cachegen.kvSizes(c, PROV);
  const v2 = bytes.slice();
  new DataView(v2.buffer).setUint32(8, 2, true);
  assert.equal((await failureOf(cachegen.decodeKv(await rehash(v2)))).reason, "version");
  // a CDF entry that breaks monotonicity
  const cdfBad = bytes.slice();
  cdfBad[start + 4] = 0xff, cdfBad[start + 5] = 0xff;
  assert.equal((await failureOf(cachegen.decodeKv(await rehash(cdfBad)))).reason, "corrupt");
  // a stream length that no longer adds up
  const lenBad = bytes.slice();
  lenBad[start + sz.cdf + sz.scales] ^= 1;
  assert.equal((await failureOf(cachegen.decodeKv(await rehash(lenBad)))).reason, "corrupt");
  // a negative scale
  const scaleBad = bytes.slice();
  scaleBad[start + sz.cdf + 1] |= 0x80;
  assert.equal((await failureOf(cachegen.decodeKv(await rehash(scaleBad)))).reason, "corrupt");
  // a header that is not the codec's
  const text = new TextDecoder().decode(bytes.subarray(24, 24 + hl));
  const other = new TextEncoder().encode(text.replace('"level":2', '"level":9'));
  assert.equal(other.length, hl);
  const hdrBad = bytes.slice();
  hdrBad.set(other, 24);
  assert.equal((await failureOf(cachegen.decodeKv(await rehash(hdrBad)))).reason, "corrupt");
  // stale: another model, other tokens, other dims
  assert.equal((await failureOf(cachegen.decodeKv(bytes, { ...PROV, model: "other" }))).reason, "stale");
  assert.equal(
    (await failureOf(cachegen.decodeKv(bytes, { ...PROV, tokensSha256: "cd".repeat(32) }))).reason,
    "stale",
  );
  assert.equal(
    (await failureOf(cachegen.decodeKv(bytes, { ...PROV, dims: { tokens: 301 } }))).reason,
    "stale",
  );
  // a decoded symbol beyond its layer's range (the same streams read as 4-bin layers)
  const wide = { ...c, keyBins: c.keyBins.map(() => 4) };
  assert.equal((await failureOf(cachegen.decompressKv(wide))).reason, "corrupt");
});

test("cachegen container: bad inputs are typed errors (NaN, infinity, fp16 range, shapes, zero tokens)", async () => {
  const { k, v } = randomKv(DIMS, 41);
  const enc = (kk: Float32Array[], vv: Float32Array[], dims: cachegen.KvDims = DIMS) =>
    failureOf(cachegen.encodeKv(kk, vv, dims, params, PROV));
  const nan = v.map((x) => x.slice());
  nan[2][100] = NaN;
  const e1 = await enc(k, nan);
  assert.equal(e1.reason, "bad-input");
  assert.match(e1.message, /layer 2 V, token/);
  const inf = k.map((x) => x.slice());
  inf[1][5] = Infinity;
  assert.equal((await enc(inf, v)).reason, "bad-input");
  const big = k.map((x) => x.slice());
  big[0][7] = 1e6;
  assert.match((await enc(big, v)).message, /fp16/);
  assert.equal((await enc(k.slice(0, 2), v)).reason, "bad-input");
  const short = k.map((x) => x.subarray(0, x.length - 1));
  assert.match((await enc(short, v)).message, /kvHeads·tokens·headDim/);
  assert.equal((await enc([], [], { ...DIMS, tokens: 0 })).reason, "bad-input");
  assert.equal((await enc(k, v, { ...DIMS, headDim: 8.5 })).reason, "bad-input");
  assert.equal((await enc(k, v, { ...DIMS, tokens: 299 })).reason, "bad-input");
});

test("controller: the highest level that fits its share of the budget, else text (or the fastest option); a bandwidth trace; bad inputs typed", () => {
  // a chunk's containers at levels 1–3 (bytes as level 3 > 2 > 1, as the codec's)
  const opts = [{ level: 1, bytes: 3.2e6 }, { level: 3, bytes: 5.2e6 }, { level: 2, bytes: 4.0e6 }];
  const chunks = Array.from({ length: 4 }, () => opts);
  // 10 Gbit/s: level 3 takes 4.16 ms, the share is 2000 / 4 = 500 ms → level 3 everywhere
  const fast = cachegen.chooseChunkLevels(chunks, { sloMs: 2000, gbps: 10 });
  assert.deepEqual(fast.choices.map((c) => c.kind === "kv" ? c.level : 0), [3, 3, 3, 3]);
  assert.ok(Math.abs(fast.totalMs - 4 * (5.2e6 * 8) / 1e7) < 1e-9);
  assert.equal(fast.bytes, 4 * 5.2e6);
  // share 10 ms at 3.5 Gbit/s: level 3 11.9 ms, level 2 9.1 ms → level 2
  const mid = cachegen.chooseChunkLevels(chunks, { sloMs: 40, gbps: 3.5 });
  assert.deepEqual(mid.choices.map((c) => c.kind === "kv" ? c.level : 0), [2, 2, 2, 2]);
  // a trace: a chunk on a slow link falls to a lower level, one on a very slow link to text (recompute 200 ms)
  const trace = cachegen.chooseChunkLevels(chunks, { sloMs: 40, gbps: [10, 3.5, 2.6, 0.1] });
  assert.deepEqual(trace.choices.map((c) => (c.kind === "kv" ? `kv${c.level}` : "text")), [
    "kv3",
    "kv2",
    "kv1",
    "text",
  ]);
  assert.equal(trace.choices[3].ms, 200);
  assert.equal(cachegen.chooseChunkLevels(chunks, { sloMs: 40, gbps: 0.1, recomputeMs: 50 }).totalMs, 200);
  // fallback "fastest": at 0.1 Gbit/s level 1 takes 256 ms, so against a 4 s recompute it is sent; against a
  // 100 ms recompute the text still wins; where a level fits, the choice is the official one
  const slow = { sloMs: 40, gbps: 0.1, recomputeMs: 4000, fallback: "fastest" } as const;
  const fb = cachegen.chooseChunkLevels(chunks, slow);
  assert.deepEqual(fb.choices.map((c) => c.kind === "kv" ? c.level : 0), [1, 1, 1, 1]);
  assert.ok(Math.abs(fb.totalMs - 4 * (3.2e6 * 8) / 1e5) < 1e-9);
  const cheap = cachegen.chooseChunkLevels(chunks, { ...slow, recomputeMs: 100 });
  assert.ok(cheap.choices.every((c) => c.kind === "text"));
  assert.deepEqual(
    cachegen.chooseChunkLevels(chunks, { ...slow, gbps: 3.5 }).choices.map((c) =>
      c.kind === "kv" ? c.level : 0
    ),
    [2, 2, 2, 2],
  );
  for (
    const bad of [
      () => cachegen.chooseChunkLevels([], { sloMs: 1, gbps: 1 }),
      () => cachegen.chooseChunkLevels(chunks, { sloMs: 0, gbps: 1 }),
      () => cachegen.chooseChunkLevels(chunks, { sloMs: 1, gbps: -1 }),
      () => cachegen.chooseChunkLevels(chunks, { sloMs: 1, gbps: [1, 1] }),
      () => cachegen.chooseChunkLevels([[]], { sloMs: 1, gbps: 1 }),
      () => cachegen.chooseChunkLevels([[{ level: 1, bytes: Number.NaN }]], { sloMs: 1, gbps: 1 }),
      () => cachegen.chooseChunkLevels(chunks, { sloMs: 1, gbps: 1, recomputeMs: -1 }),
    ]
  ) {
    assert.throws(bad, cachegen.CacheGenError);
  }
});
