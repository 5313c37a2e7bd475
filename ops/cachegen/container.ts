/**
 * The CacheGen container: one chunk of a context's KV cache (every layer's K and V over `tokens` tokens)
 * quantised and arithmetic-coded (`quant.ts`, `coder.ts`), as a versioned, checksummed artifact for a KV
 * store. A partial or corrupt container is refused with a typed {@link CacheGenError}, never decoded.
 *
 * Layout (little-endian):
 *
 * | bytes | what |
 * |---|---|
 * | 8 | magic `LCCGKV\r\n` |
 * | 4 | format version (u32) |
 * | 4 | JSON header length `hl` (u32) |
 * | 8 | total container length (u64) |
 * | hl | JSON header: format, version, model fingerprint, tokens' SHA-256, codec level and parameters, dims, per-layer bins, section sizes |
 * | 2·rows·C·lp | CDFs `u16 [rows, C, lp]` (rows: the layers' K, then their V; C = kvHeads · headDim) |
 * | 2·rows·tokens | scales, fp16 bits `[rows, tokens]` |
 * | 2·slices·rows·C | stream byte lengths `u16 [slices, rows, C]` |
 * | Σ lengths | the streams, in that order |
 * | 32 | SHA-256 of every byte before it |
 *
 * The fixed prelude lets a reader tell a truncated container (shorter than its declared length: a killed
 * writer) from a corrupt one (checksum) before it parses anything.
 *
 * The official code pickles the encoder output (`CacheGenGPUEncoderOutput` in LMCache's
 * `cachegen_basics.py`: CDF int16 `[rows, C, Lp]`, scales in the KV dtype, int32 lengths per chunk, the
 * bytestream); ours stores the same sections with u16 lengths (a stream is at most ~8 KiB).
 * @module
 */
import { Data, Effect, Schema } from "effect";
import type { TaggedErrorClass } from "@longctx/graph";
import { type CdfTable, decodeSymbols, encodeSymbols, rowCdf, sliceCount, validCdf } from "./coder.ts";
import { type CacheGenParams, layerBins, maxOf } from "./params.ts";
import { dequantizeLayer, quantizeLayer } from "./quant.ts";
import { halfToFloat } from "../kernels/half.ts";

/** Why a container cannot be written or read (the `reason` of a {@link CacheGenError}). */
export type CacheGenErrorReason =
  | "bad-magic"
  | "version"
  | "checksum"
  | "truncated"
  | "corrupt"
  | "stale"
  | "bad-input";

/** The fields of a {@link CacheGenError}. */
export interface CacheGenErrorFields {
  /** What is wrong. */
  readonly reason: CacheGenErrorReason;
  /** What went wrong. */
  readonly message: string;
  /** What to do about it. */
  readonly hint: string;
}
/** @internal */
const CacheGenErrorBase: TaggedErrorClass<"CacheGenError", CacheGenErrorFields> = Data.TaggedError(
  "CacheGenError",
)<CacheGenErrorFields>;
/**
 * A KV cache that cannot be encoded (`bad-input`: NaN, wrong shapes, zero tokens, a value beyond fp16) or a
 * container that cannot be decoded: `bad-magic` (not a CacheGen container), `version` (another format
 * version), `truncated` (shorter than its declared length), `checksum` (SHA-256 mismatch), `corrupt` (a
 * checksummed container whose contents are inconsistent), `stale` (made for another model or other tokens).
 */
export class CacheGenError extends CacheGenErrorBase {}

/** The geometry of a KV cache chunk. */
export interface KvDims {
  /** Transformer layers. */
  readonly layers: number;
  /** Key/value heads. */
  readonly kvHeads: number;
  /** Elements per head vector. */
  readonly headDim: number;
  /** Tokens in the chunk (≥ 1). */
  readonly tokens: number;
}

/** Where a KV cache came from: checked by {@link checkKv} before it is used. */
export interface KvProvenance {
  /** A string naming the model (the caller's fingerprint, e.g. shapes and a weights hash). */
  readonly model: string;
  /** SHA-256 (hex) of the chunk's token ids (and, for a chunk after the first, of its prefix). */
  readonly tokensSha256: string;
}

/** A chunk's KV cache quantised and coded, in memory (the container's sections). */
export interface CompressedKv {
  /** The chunk's geometry. */
  readonly dims: KvDims;
  /** The codec parameters used. */
  readonly params: CacheGenParams;
  /** Bins per layer of the keys, `[layers]`. */
  readonly keyBins: readonly number[];
  /** Bins per layer of the values, `[layers]`. */
  readonly valueBins: readonly number[];
  /** CDFs `u16 [2·layers, C, lp]` (K rows, then V rows), with `lp` and `precision`. */
  readonly cdf: CdfTable;
  /** Scales, fp16 bits `[2·layers, tokens]`. */
  readonly scales: Uint16Array;
  /** Stream byte lengths `u16 [slices, 2·layers, C]`. */
  readonly lengths: Uint16Array;
  /** The streams. */
  readonly streams: Uint8Array;
}

/** The bytes of each part of a container. */
export interface KvSizes {
  /** Prelude, JSON header and checksum. */
  readonly header: number;
  /** The CDFs. */
  readonly cdf: number;
  /** The scales. */
  readonly scales: number;
  /** The stream lengths. */
  readonly lengths: number;
  /** The coded streams. */
  readonly streams: number;
  /** Everything. */
  readonly total: number;
}

/** The container's header (JSON), as read back. */
export interface KvHeader extends KvProvenance {
  /** Format name, {@link KV_FORMAT}. */
  readonly format: string;
  /** Format version, {@link KV_VERSION}. */
  readonly version: number;
  /** The chunk's geometry. */
  readonly dims: KvDims;
  /** The codec parameters used. */
  readonly params: CacheGenParams;
  /** Bins per layer of the keys. */
  readonly keyBins: readonly number[];
  /** Bins per layer of the values. */
  readonly valueBins: readonly number[];
  /** CDF entries per (row, channel). */
  readonly lp: number;
  /** Section sizes in bytes. */
  readonly sections: {
    readonly cdf: number;
    readonly scales: number;
    readonly lengths: number;
    readonly streams: number;
  };
}

/** A decoded container. */
export interface DecodedKv {
  /** Per layer, the keys `f32 [kvHeads, tokens, headDim]` (post-RoPE, as cached). */
  readonly k: Float32Array[];
  /** Per layer, the values `f32 [kvHeads, tokens, headDim]`. */
  readonly v: Float32Array[];
  /** The chunk's geometry. */
  readonly dims: KvDims;
  /** The header (provenance, parameters, bins). */
  readonly header: KvHeader;
}

/** The format's name in the header. */
export const KV_FORMAT = "longctx-cachegen-kv";
/** The format version this code writes and reads. */
export const KV_VERSION = 1;
const MAGIC = new Uint8Array([0x4c, 0x43, 0x43, 0x47, 0x4b, 0x56, 0x0d, 0x0a]); // "LCCGKV\r\n"
const PRELUDE = 24, SHA = 32;

const badInput = (message: string, hint: string) => new CacheGenError({ reason: "bad-input", message, hint });
const corrupt = (message: string) =>
  new CacheGenError({
    reason: "corrupt",
    message,
    hint: "the entry was not written by this codec or was altered after its checksum: encode the KV again",
  });

const checkDims = (dims: KvDims): CacheGenError | undefined => {
  for (const key of ["layers", "kvHeads", "headDim", "tokens"] as const) {
    const x = dims[key];
    if (!Number.isInteger(x) || x < 1) {
      return badInput(
        `KV dims: ${key} = ${x}`,
        key === "tokens" ? "encode a chunk of at least one token" : `${key} must be a positive integer`,
      );
    }
  }
  if (dims.kvHeads * dims.headDim > 1 << 16) {
    return badInput(`KV dims: ${dims.kvHeads * dims.headDim} channels per layer`, "at most 65536");
  }
  return undefined;
};

/**
 * Quantise and code one chunk's KV cache: `k[l]`, `v[l]` `f32 [kvHeads, tokens, headDim]` per layer (the KV
 * cache's layout: post-RoPE keys), with `params` (decoded, e.g. by `cachegenParams`). The CDF is counted
 * over the chunk's tokens; streams are cut every `params.slice` tokens. Fails with `CacheGenError`
 * `bad-input` for wrong dims or array lengths, zero tokens, a NaN or infinity (naming layer, K/V and token),
 * or a row whose absmax exceeds fp16's range.
 */
export const compressKv = (
  k: readonly Float32Array[],
  v: readonly Float32Array[],
  dims: KvDims,
  params: CacheGenParams,
): Effect.Effect<CompressedKv, CacheGenError> =>
  Effect.gen(function* () {
    const bad = checkDims(dims);
    if (bad) return yield* bad;
    const { layers: L, kvHeads: H, headDim: d, tokens: N } = dims, C = H * d, rows = 2 * L;
    if (params.keySecondLayers < params.keyFirstLayers) {
      return yield* badInput(
        `keySecondLayers ${params.keySecondLayers} < keyFirstLayers ${params.keyFirstLayers}`,
        "decode the parameters with cachegenParams",
      );
    }
    if (k.length !== L || v.length !== L) {
      return yield* badInput(
        `${k.length} key and ${v.length} value layers for ${L} layers`,
        "pass one K and one V array per layer",
      );
    }
    for (let l = 0; l < L; l++) {
      for (const [name, x] of [["K", k[l]], ["V", v[l]]] as const) {
        if (!(x instanceof Float32Array) || x.length !== H * N * d) {
          return yield* badInput(
            `layer ${l} ${name}: ${x instanceof Float32Array ? x.length : typeof x} values, want ` +
              `kvHeads·tokens·headDim = ${H}·${N}·${d} = ${H * N * d} (f32 [kvHeads, tokens, headDim])`,
            "pass each layer's cache rows [kvHeads, tokens, headDim] for exactly the chunk's tokens",
          );
        }
      }
    }
    const bins = layerBins(params, L), all = [...bins.key, ...bins.value];
    const lp = Math.max(...all) + 1;
    const symbols = new Uint8Array(rows * N * C), scales = new Uint16Array(rows * N);
    for (let r = 0; r < rows; r++) {
      const l = r % L, x = r < L ? k[l] : v[l];
      const issue = quantizeLayer(
        x,
        { kvHeads: H, tokens: N, headDim: d },
        all[r],
        symbols,
        r * N * C,
        scales,
        r * N,
      );
      if (issue) {
        return yield* badInput(
          `layer ${l} ${r < L ? "K" : "V"}, token ${issue.token}: ` +
            (issue.reason === "nan" ? "a NaN or infinity" : "an absolute value beyond fp16's 65504"),
          issue.reason === "nan" ? "encode a KV cache of finite values" : "CacheGen stores scales as fp16",
        );
      }
    }
    const cdf: CdfTable = { data: new Uint16Array(rows * C * lp), lp, precision: params.precision };
    for (let r = 0; r < rows; r++) {
      rowCdf(symbols, r * N * C, N, C, lp, params.precision, cdf.data, r * C * lp);
    }
    const coded = encodeSymbols(symbols, cdf, { rows, tokens: N, channels: C, slice: params.slice });
    return {
      dims: { layers: L, kvHeads: H, headDim: d, tokens: N },
      params,
      keyBins: bins.key,
      valueBins: bins.value,
      cdf,
      scales,
      lengths: coded.lengths,
      streams: coded.bytes,
    };
  });

/**
 * Decode symbols and dequantise: `c` back to per-layer K and V `f32 [kvHeads, tokens, headDim]`. Fails with
 * `CacheGenError` `corrupt` when a decoded symbol is outside its layer's range (a container altered after its
 * checksum) or the lengths do not add up.
 */
export const decompressKv = (
  c: CompressedKv,
): Effect.Effect<{ k: Float32Array[]; v: Float32Array[] }, CacheGenError> =>
  Effect.gen(function* () {
    const { layers: L, kvHeads: H, headDim: d, tokens: N } = c.dims, C = H * d, rows = 2 * L;
    let symbols: Uint8Array;
    try {
      symbols = decodeSymbols({ lengths: c.lengths, bytes: c.streams }, c.cdf, {
        rows,
        tokens: N,
        channels: C,
        slice: c.params.slice,
      });
    } catch (e) {
      return yield* corrupt(`stream lengths: ${e instanceof Error ? e.message : e}`);
    }
    const k: Float32Array[] = [], v: Float32Array[] = [];
    for (let r = 0; r < rows; r++) {
      const bins = r < L ? c.keyBins[r] : c.valueBins[r - L], top = 2 * maxOf(bins), at = r * N * C;
      for (let i = at; i < at + N * C; i++) {
        if (symbols[i] > top) return yield* corrupt(`row ${r}: a decoded symbol above ${top}`);
      }
      const x = dequantizeLayer(symbols, at, c.scales, r * N, { kvHeads: H, tokens: N, headDim: d }, bins);
      (r < L ? k : v).push(x);
    }
    return { k, v };
  });

/** The byte sizes of `c`'s container parts (its JSON header for `provenance` included). */
export const kvSizes = (c: CompressedKv, provenance: KvProvenance): KvSizes => {
  const header = PRELUDE + headerBytes(c, provenance).length + SHA;
  const cdf = c.cdf.data.length * 2, scales = c.scales.length * 2, lengths = c.lengths.length * 2;
  const streams = c.streams.length;
  return { header, cdf, scales, lengths, streams, total: header + cdf + scales + lengths + streams };
};

const headerBytes = (c: CompressedKv, provenance: KvProvenance): Uint8Array =>
  new TextEncoder().encode(JSON.stringify({
    format: KV_FORMAT,
    version: KV_VERSION,
    model: provenance.model,
    tokensSha256: provenance.tokensSha256,
    dims: c.dims,
    params: c.params,
    keyBins: c.keyBins,
    valueBins: c.valueBins,
    lp: c.cdf.lp,
    sections: {
      cdf: c.cdf.data.length * 2,
      scales: c.scales.length * 2,
      lengths: c.lengths.length * 2,
      streams: c.streams.length,
    },
  }));

/**
 * A SHA-256 implementation: the 32-byte digest of `bytes`. The default is WebCrypto's `crypto.subtle.digest`,
 * available everywhere the planner runs (a browser included); a runtime may pass a faster one (Deno's and Bun's
 * `node:crypto` `createHash("sha256")` hashes about 4× faster than their `crypto.subtle` here: 5 against 20–27
 * ms for a 7.4 MB container on the 2-core machine).
 */
export type Sha256 = (bytes: Uint8Array) => Uint8Array | Promise<Uint8Array>;

const sha256 = (b: Uint8Array, digest?: Sha256): Effect.Effect<Uint8Array> =>
  digest ? Effect.promise(async () => await digest(b)) : Effect.promise(async () =>
    new Uint8Array(
      await crypto.subtle.digest(
        "SHA-256",
        b.buffer instanceof ArrayBuffer ? b as Uint8Array<ArrayBuffer> : b.slice(),
      ),
    )
  );

const putU16 = (view: DataView, off: number, a: Uint16Array): number => {
  for (let i = 0; i < a.length; i++) view.setUint16(off + 2 * i, a[i], true);
  return off + 2 * a.length;
};
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;
const getU16 = (view: DataView, off: number, n: number): Uint16Array => {
  // a copy of the section (aligned, whatever its offset in the container); element by element on a
  // big-endian host
  if (LITTLE_ENDIAN) {
    const at = view.byteOffset + off;
    return new Uint16Array(new Uint8Array(view.buffer, at, 2 * n).slice().buffer);
  }
  const a = new Uint16Array(n);
  for (let i = 0; i < n; i++) a[i] = view.getUint16(off + 2 * i, true);
  return a;
};

/** Serialise `c` as a container (see the module doc) for `provenance`. */
export const serializeKv = (c: CompressedKv, provenance: KvProvenance): Effect.Effect<Uint8Array> =>
  Effect.gen(function* () {
    const header = headerBytes(c, provenance), sizes = kvSizes(c, provenance);
    const out = new Uint8Array(sizes.total), view = new DataView(out.buffer);
    out.set(MAGIC);
    view.setUint32(8, KV_VERSION, true);
    view.setUint32(12, header.length, true);
    view.setUint32(16, sizes.total % 2 ** 32, true);
    view.setUint32(20, Math.floor(sizes.total / 2 ** 32), true);
    out.set(header, PRELUDE);
    let off = PRELUDE + header.length;
    off = putU16(view, off, c.cdf.data);
    off = putU16(view, off, c.scales);
    off = putU16(view, off, c.lengths);
    out.set(c.streams, off);
    off += c.streams.length;
    out.set(yield* sha256(out.subarray(0, off)), off);
    return out;
  });

/**
 * Encode one chunk's KV cache as a container: {@link compressKv} then {@link serializeKv}. `k[l]`, `v[l]`
 * `f32 [kvHeads, tokens, headDim]` per layer; `provenance` names the model and the tokens. Fails with
 * `CacheGenError` `bad-input` (see {@link compressKv}).
 */
export const encodeKv = (
  k: readonly Float32Array[],
  v: readonly Float32Array[],
  dims: KvDims,
  params: CacheGenParams,
  provenance: KvProvenance,
): Effect.Effect<Uint8Array, CacheGenError> =>
  Effect.flatMap(compressKv(k, v, dims, params), (c) => serializeKv(c, provenance));

const KvDimsSchema = Schema.Struct({
  layers: Schema.Int,
  kvHeads: Schema.Int,
  headDim: Schema.Int,
  tokens: Schema.Int,
});
const HeaderSchema = Schema.Struct({
  format: Schema.Literal(KV_FORMAT),
  version: Schema.Int,
  model: Schema.String,
  tokensSha256: Schema.String,
  dims: KvDimsSchema,
  params: Schema.Struct({
    level: Schema.Int,
    keyFirstLayers: Schema.Int,
    keySecondLayers: Schema.Int,
    valueFirstLayers: Schema.Int,
    slice: Schema.Int,
    precision: Schema.Int,
  }),
  keyBins: Schema.Array(Schema.Int),
  valueBins: Schema.Array(Schema.Int),
  lp: Schema.Int,
  sections: Schema.Struct({ cdf: Schema.Int, scales: Schema.Int, lengths: Schema.Int, streams: Schema.Int }),
});

/**
 * Read a container back to its sections, checked: fails with `CacheGenError` `bad-magic` (no magic),
 * `truncated` (fewer bytes than the prelude or the declared length), `corrupt` (more bytes than declared, a
 * header or sections that do not agree), `checksum` (SHA-256 mismatch), `version` (another format version).
 * The checksum is verified before the header is parsed (by `digest`, default WebCrypto's). Sections are
 * copied out of `bytes`.
 */
export const parseKv = (
  bytes: Uint8Array,
  digest?: Sha256,
): Effect.Effect<{ header: KvHeader; compressed: CompressedKv }, CacheGenError> =>
  Effect.gen(function* () {
    const n = Math.min(bytes.length, MAGIC.length);
    if (MAGIC.subarray(0, n).some((b, i) => bytes[i] !== b)) {
      return yield* new CacheGenError({
        reason: "bad-magic",
        message: `not a CacheGen KV container (${bytes.length} bytes, no "LCCGKV" magic)`,
        hint: "pass bytes written by encodeKv",
      });
    }
    if (bytes.length < PRELUDE + SHA) {
      return yield* new CacheGenError({
        reason: "truncated",
        message: `a CacheGen container of ${bytes.length} bytes: shorter than its prelude and checksum`,
        hint: "the entry is partial (a writer stopped early): encode the KV again",
      });
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const total = view.getUint32(16, true) + view.getUint32(20, true) * 2 ** 32;
    if (bytes.length < total) {
      return yield* new CacheGenError({
        reason: "truncated",
        message: `a CacheGen container of ${bytes.length} bytes; its prelude declares ${total}`,
        hint: "the entry is partial (a writer stopped early): encode the KV again",
      });
    }
    if (bytes.length > total) {
      return yield* corrupt(`a CacheGen container of ${bytes.length} bytes; its prelude declares ${total}`);
    }
    const body = bytes.subarray(0, total - SHA), want = bytes.subarray(total - SHA);
    const got = yield* sha256(body, digest);
    if (got.some((b, i) => b !== want[i])) {
      return yield* new CacheGenError({
        reason: "checksum",
        message: "CacheGen container checksum mismatch (SHA-256)",
        hint: "the entry is damaged: encode the KV again",
      });
    }
    const version = view.getUint32(8, true);
    if (version !== KV_VERSION) {
      return yield* new CacheGenError({
        reason: "version",
        message: `CacheGen container format version ${version}; this longctx reads version ${KV_VERSION}`,
        hint: "encode the KV again with this version",
      });
    }
    const hl = view.getUint32(12, true);
    if (PRELUDE + hl > body.length) return yield* corrupt(`a header of ${hl} bytes past the end`);
    let raw: unknown;
    try {
      raw = JSON.parse(
        new TextDecoder("utf-8", { fatal: true }).decode(body.subarray(PRELUDE, PRELUDE + hl)),
      );
    } catch {
      return yield* corrupt("the header is not JSON");
    }
    const h = yield* Schema.decodeUnknownEffect(HeaderSchema)(raw).pipe(
      Effect.mapError((e) => corrupt(`header: ${String(e).split("\n")[0]}`)),
    );
    if (h.version !== version) return yield* corrupt(`header version ${h.version}, prelude ${version}`);
    const dimsBad = checkDims(h.dims);
    if (dimsBad) return yield* corrupt(`header: ${dimsBad.message}`);
    const { layers: L, kvHeads: H, headDim: d, tokens: N } = h.dims, C = H * d, rows = 2 * L;
    const p = h.params;
    const okParams = p.level >= 1 && p.level <= 3 && p.slice >= 1 && p.slice <= 4096 && p.precision >= 12 &&
      p.precision <= 16 && p.keyFirstLayers >= 0 && p.keySecondLayers >= p.keyFirstLayers &&
      p.valueFirstLayers >= 0;
    if (!okParams) return yield* corrupt("header: impossible codec parameters");
    const bins = layerBins(p, L);
    const sameBins = h.keyBins.length === L && h.valueBins.length === L &&
      bins.key.every((b, l) => b === h.keyBins[l]) && bins.value.every((b, l) => b === h.valueBins[l]);
    if (!sameBins) return yield* corrupt("header: per-layer bins that the parameters do not give");
    const lp = Math.max(...bins.key, ...bins.value) + 1;
    const slices = sliceCount(N, p.slice);
    const s = h.sections;
    const sizesOk = h.lp === lp && s.cdf === rows * C * lp * 2 && s.scales === rows * N * 2 &&
      s.lengths === slices * rows * C * 2 && s.streams >= 0 &&
      PRELUDE + hl + s.cdf + s.scales + s.lengths + s.streams === body.length;
    if (!sizesOk) return yield* corrupt("header: section sizes that do not match the dims or the length");
    let off = PRELUDE + hl;
    const cdfData = getU16(view, off, rows * C * lp);
    off += s.cdf;
    const scales = getU16(view, off, rows * N);
    off += s.scales;
    const lengths = getU16(view, off, slices * rows * C);
    off += s.lengths;
    const streams = body.slice(off, off + s.streams);
    let sum = 0;
    for (let i = 0; i < lengths.length; i++) sum += lengths[i];
    if (sum !== s.streams) {
      return yield* corrupt(`stream lengths add up to ${sum}, the section holds ${s.streams}`);
    }
    for (let i = 0; i < rows * C; i++) {
      if (!validCdf(cdfData, i * lp, lp, p.precision)) {
        return yield* corrupt(`CDF of row ${Math.floor(i / C)}, channel ${i % C} is not strictly increasing`);
      }
    }
    for (let i = 0; i < scales.length; i++) {
      if ((scales[i] & 0x7c00) === 0x7c00 || scales[i] & 0x8000) {
        return yield* corrupt(`scale ${i} is not a finite non-negative fp16`);
      }
    }
    const params: CacheGenParams = {
      level: p.level,
      keyFirstLayers: p.keyFirstLayers,
      keySecondLayers: p.keySecondLayers,
      valueFirstLayers: p.valueFirstLayers,
      slice: p.slice,
      precision: p.precision,
    };
    const header: KvHeader = {
      format: h.format,
      version: h.version,
      model: h.model,
      tokensSha256: h.tokensSha256,
      dims: { layers: L, kvHeads: H, headDim: d, tokens: N },
      params,
      keyBins: bins.key,
      valueBins: bins.value,
      lp,
      sections: { cdf: s.cdf, scales: s.scales, lengths: s.lengths, streams: s.streams },
    };
    return {
      header,
      compressed: {
        dims: header.dims,
        params,
        keyBins: bins.key,
        valueBins: bins.value,
        cdf: { data: cdfData, lp, precision: p.precision },
        scales,
        lengths,
        streams,
      },
    };
  });

/**
 * Check that a container was made for this model and these tokens: fails with `CacheGenError` `stale` when
 * the model fingerprint or the tokens' hash differ (and, when `expect.dims` is given, the geometry).
 */
export const checkKv = (
  header: KvHeader,
  expect: KvProvenance & { readonly dims?: Partial<KvDims> },
): Effect.Effect<void, CacheGenError> =>
  Effect.gen(function* () {
    if (header.model !== expect.model) {
      return yield* new CacheGenError({
        reason: "stale",
        message: `the KV cache was encoded with model "${header.model}", not "${expect.model}"`,
        hint: "prefill with this model and encode its KV cache again",
      });
    }
    if (header.tokensSha256 !== expect.tokensSha256) {
      return yield* new CacheGenError({
        reason: "stale",
        message: `the KV cache was encoded for other tokens (${header.tokensSha256.slice(0, 12)}…, these ` +
          `${expect.tokensSha256.slice(0, 12)}…)`,
        hint: "look the entry up by this chunk's token hash, or prefill these tokens",
      });
    }
    for (const key of ["layers", "kvHeads", "headDim", "tokens"] as const) {
      const want = expect.dims?.[key];
      if (want !== undefined && header.dims[key] !== want) {
        return yield* new CacheGenError({
          reason: "stale",
          message: `the KV cache has ${key} ${header.dims[key]}, expected ${want}`,
          hint: "prefill with this model and encode its KV cache again",
        });
      }
    }
  });

/**
 * Decode a container (see the module doc) to per-layer K and V `f32 [kvHeads, tokens, headDim]`, refusing a
 * partial or corrupt one: every failure of {@link parseKv} and {@link decompressKv}, and, when `expect` is
 * given, `stale` ({@link checkKv}) before any stream is decoded. `digest`: the SHA-256 to check with (see
 * {@link Sha256}).
 */
export const decodeKv = (
  bytes: Uint8Array,
  expect?: KvProvenance & { readonly dims?: Partial<KvDims> },
  digest?: Sha256,
): Effect.Effect<DecodedKv, CacheGenError> =>
  Effect.gen(function* () {
    const { header, compressed } = yield* parseKv(bytes, digest);
    if (expect) yield* checkKv(header, expect);
    const { k, v } = yield* decompressKv(compressed);
    return { k, v, dims: header.dims, header };
  });

/**
 * The quantiser's error bound of a compressed chunk, per element: `a / (2·MAX) + slack · a`, with `a` the
 * element's (layer, token) fp16 scale and `MAX = bins/2 − 1` of its row. Layout `f32 [rows, kvHeads, tokens,
 * headDim]` (rows: every layer's K, then its V). Every decoded element lies within it of the original
 * (`slack` 0 up to f32 rounding; the tests pass 1e-6).
 */
export const quantErrorBound = (c: CompressedKv, slack = 0): Float32Array => {
  const { layers: L, kvHeads: H, headDim: d, tokens: N } = c.dims, rows = 2 * L;
  const bins = [...c.keyBins, ...c.valueBins], out = new Float32Array(rows * H * N * d);
  for (let r = 0; r < rows; r++) {
    const M = maxOf(bins[r]);
    for (let t = 0; t < N; t++) {
      const a = halfToFloat(c.scales[r * N + t]), b = a / (2 * M) + slack * a;
      for (let h = 0; h < H; h++) out.fill(b, ((r * H + h) * N + t) * d, ((r * H + h) * N + t + 1) * d);
    }
  }
  return out;
};
