/**
 * GGUF model files: metadata and tensor directory parsed by `@huggingface/gguf` (local-file mode), tensor bytes
 * read here and dequantised to f32 by {@link dequantize}.
 *
 * GGUF spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (a 2-D tensor with `ne = [ne0, ne1]`
 * is stored row-major as `[ne1, ne0]`: `ne0` is the contiguous dimension).
 * @module
 */
import { Effect } from "effect";
import { gguf } from "@huggingface/gguf";
import { readFileSync } from "node:fs";
import { InputError } from "@longctx/graph";
import { dequantize, ggmlTypeInfo } from "./dequant.ts";

/** One tensor's directory entry. */
export interface GgufTensorInfo {
  /** Tensor name (`blk.0.attn_q.weight`). */
  readonly name: string;
  /** GGML type id (see `GgmlType`). */
  readonly type: number;
  /** GGML type name ("Q4_1", "F32", …) or `type<N>` when unknown to this reader. */
  readonly typeName: string;
  /** `ne` order: `shape[0]` is the contiguous dimension (elements). */
  readonly shape: readonly number[];
  /** Absolute byte offset of the tensor's data in the file. */
  readonly offset: number;
  /** Bytes of the tensor's data (0 when the type is unsupported). */
  readonly byteLength: number;
}

/** An opened GGUF file: metadata, tensor directory and the file's bytes. */
export interface GgufFile {
  /** The file it was read from. */
  readonly path: string;
  /** Key → value metadata (`general.architecture`, `llama.block_count`, tokenizer arrays, …). */
  readonly metadata: Readonly<Record<string, unknown>>;
  /** Tensor directory by name. */
  readonly tensors: ReadonlyMap<string, GgufTensorInfo>;
  /** The whole file (tensors are views into it). */
  readonly bytes: Uint8Array;
}

const bad = (path: string, message: string, hint: string) =>
  new InputError({ message: `${path}: ${message}`, hint });

const TRUNCATED_HINT = "the file is truncated (an interrupted download?): fetch it again (`npm run setup`)";
const CORRUPT_HINT = "the file is corrupt or not a model this loader knows; fetch it again (`npm run setup`)";

/** A `fetch` serving HTTP range requests from `bytes`, so `@huggingface/gguf` parses an in-memory file. */
const rangeFetch = (bytes: Uint8Array): typeof fetch =>
  ((_input: unknown, init?: RequestInit) => {
    const range = new Headers(init?.headers).get("range") ?? "";
    const m = /bytes=(\d+)-(\d+)/.exec(range);
    const a = m ? Math.min(Number(m[1]), bytes.byteLength) : 0;
    const b = m ? Math.min(Number(m[2]) + 1, bytes.byteLength) : bytes.byteLength;
    return Promise.resolve(
      new Response(bytes.slice(a, b), {
        status: 206,
        headers: { "content-range": `bytes ${a}-${Math.max(a, b - 1)}/${bytes.byteLength}` },
      }),
    );
  }) as typeof fetch;

const FIXED_SIZE: Record<number, number> = {
  0: 1,
  1: 1,
  2: 2,
  3: 2,
  4: 4,
  5: 4,
  6: 4,
  7: 1,
  10: 8,
  11: 8,
  12: 8,
};

/**
 * Walk the GGUF header (v2/v3: u64 sizes) with every count and length checked against the bytes left, before
 * `@huggingface/gguf` reads it: that library reads past the end of short data as zeros (a 25 MB string length
 * in a 4 KB file cost 3 s and 25 MB there). Throws `InputError` naming the field; returns nothing.
 */
const scanHeader = (bytes: Uint8Array, path: string): void => {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint32(4, true);
  if (version !== 2 && version !== 3) {
    throw bad(path, `GGUF version ${version} is not supported (2 and 3 are)`, CORRUPT_HINT);
  }
  let off = 8;
  let field = "header";
  const left = () => bytes.byteLength - off;
  const need = (n: number | bigint, what: string) => {
    if (BigInt(n) > BigInt(left())) {
      throw bad(
        path,
        `truncated: ${what} of ${field} needs ${n} bytes at offset ${off}, the file has ${left()} left (${bytes.byteLength} bytes)`,
        TRUNCATED_HINT,
      );
    }
  };
  const u64 = (what: string) => {
    need(8, what);
    const v = dv.getBigUint64(off, true);
    off += 8;
    return v;
  };
  const u32 = (what: string) => {
    need(4, what);
    const v = dv.getUint32(off, true);
    off += 4;
    return v;
  };
  const str = (what: string) => {
    const n = u64(`${what} length`);
    need(n, what);
    const s = new TextDecoder().decode(bytes.subarray(off, off + Number(n)));
    off += Number(n);
    return s;
  };
  const value = (type: number, depth: number): void => {
    const size = FIXED_SIZE[type];
    if (size !== undefined) return void (need(size, "value"), off += size);
    if (type === 8) return void str("string");
    if (type !== 9 || depth > 2) {
      throw bad(path, `${field}: unknown or too deeply nested value type ${type}`, CORRUPT_HINT);
    }
    const et = u32("array type");
    const count = u64("array count");
    const each = FIXED_SIZE[et];
    if (each !== undefined) {
      need(count * BigInt(each), `array of ${count} × ${each} bytes`);
      off += Number(count) * each;
      return;
    }
    need(count * 8n, `array of ${count} entries`); // every string or array entry takes at least 8 bytes
    for (let i = 0; i < Number(count); i++) value(et, depth + 1);
  };
  const nTensors = u64("tensor count"), nKv = u64("metadata count");
  need(nKv * 12n, `${nKv} metadata entries`);
  for (let i = 0; i < Number(nKv); i++) {
    field = `metadata entry ${i}`;
    field = `GGUF field "${str("key")}"`;
    value(u32("value type"), 0);
  }
  need(nTensors * 24n, `${nTensors} tensor entries`);
  for (let i = 0; i < Number(nTensors); i++) {
    field = `tensor entry ${i}`;
    field = `tensor "${str("name")}"`;
    const dims = u32("dimension count");
    if (dims > 4) throw bad(path, `${field} has ${dims} dimensions (1 to 4 allowed)`, CORRUPT_HINT);
    need(dims * 8 + 12, "shape, type and offset");
    off += dims * 8 + 12;
  }
};

/** bigint metadata (GGUF u64/i64) → number when it is a safe integer; others unchanged. */
const normalise = (v: unknown): unknown => {
  if (typeof v === "bigint") {
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  if (Array.isArray(v) && v.length > 0 && typeof v[0] === "bigint") return v.map(normalise);
  return v;
};

/**
 * Parse a GGUF file held in memory: metadata and tensor directory (by `@huggingface/gguf`, which bounds
 * counts, string lengths and dimensions), then checks every tensor against the file: a name, 1 to 4
 * dimensions each ≥ 1, a whole number of blocks, an offset aligned to `general.alignment`, and data inside
 * the file. For `general.architecture = "llama"` the hyper-parameters are bounded and checked against the
 * tensor shapes too (see {@link checkLlamaGguf}), so nothing is allocated from an unchecked number.
 * @param bytes the whole file
 * @param path name used in messages
 * Fails with `InputError` naming the field or tensor: not GGUF, truncated (header or tensor data past the end
 * of the file), a zero or inconsistent dimension, a misaligned offset, an out-of-range hyper-parameter.
 */
export const parseGguf = (bytes: Uint8Array, path = "<bytes>"): Effect.Effect<GgufFile, InputError> =>
  Effect.gen(function* () {
    if (bytes.byteLength < 4 || String.fromCharCode(...bytes.subarray(0, 4)) !== "GGUF") {
      return yield* bad(path, `not a GGUF file (${bytes.byteLength} bytes, no "GGUF" magic)`, CORRUPT_HINT);
    }
    if (bytes.byteLength < 24) {
      return yield* bad(
        path,
        `truncated: ${bytes.byteLength} bytes, shorter than a GGUF header`,
        TRUNCATED_HINT,
      );
    }
    yield* Effect.try({
      try: () => scanHeader(bytes, path),
      catch: (e) =>
        e instanceof InputError ? e : bad(path, `unreadable GGUF header: ${String(e)}`, CORRUPT_HINT),
    });
    const parsed = yield* Effect.tryPromise({
      try: () => gguf("https://gguf.invalid/model.gguf", { fetch: rangeFetch(bytes) }),
      catch: (cause) => {
        const m = (cause as Error)?.message ?? String(cause);
        // Reading past the end of the data shows as a RangeError or as the chunk-fetch limit.
        return /outside the bounds|Exceeded maximum chunk|out of range|RangeError/i.test(m) ||
            cause instanceof RangeError
          ? bad(
            path,
            `truncated: the header runs past the end of the file (${bytes.byteLength} bytes)`,
            TRUNCATED_HINT,
          )
          : bad(path, `not a readable GGUF file: ${m}`, CORRUPT_HINT);
      },
    });
    const metadata: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(parsed.metadata)) metadata[k] = normalise(v);
    const alignment = Number(metadata["general.alignment"] ?? 32);
    const base = Number(parsed.tensorDataOffset);
    if (base > bytes.byteLength) {
      return yield* bad(
        path,
        `truncated: tensor data would start at byte ${base}, the file has ${bytes.byteLength}`,
        TRUNCATED_HINT,
      );
    }
    const tensors = new Map<string, GgufTensorInfo>();
    for (const t of parsed.tensorInfos) {
      const name = t.name;
      if (name === "" || tensors.has(name)) {
        return yield* bad(
          path,
          `tensor name "${name}" is ${name === "" ? "empty" : "duplicated"}`,
          CORRUPT_HINT,
        );
      }
      const shape = t.shape.map(Number);
      if (shape.length < 1 || shape.length > 4) {
        return yield* bad(
          path,
          `tensor ${name} has ${shape.length} dimensions (1 to 4 allowed)`,
          CORRUPT_HINT,
        );
      }
      if (shape.some((d) => !Number.isSafeInteger(d) || d < 1)) {
        return yield* bad(path, `tensor ${name} has a zero or invalid dimension: [${shape}]`, CORRUPT_HINT);
      }
      const n = shape.reduce((a, b) => a * b, 1);
      const info = ggmlTypeInfo[t.dtype];
      const offset = Number(t.offset);
      if (!Number.isSafeInteger(offset) || offset % alignment !== 0) {
        return yield* bad(
          path,
          `tensor ${name} offset ${t.offset} is not a multiple of general.alignment ${alignment}`,
          CORRUPT_HINT,
        );
      }
      let byteLength = 0;
      if (info) {
        if (shape[0] % info.blockValues !== 0) {
          return yield* bad(
            path,
            `tensor ${name} (${info.name}) shape[0] = ${
              shape[0]
            } is not a multiple of its block of ${info.blockValues}`,
            CORRUPT_HINT,
          );
        }
        byteLength = (n / info.blockValues) * info.blockBytes;
        if (!Number.isSafeInteger(byteLength) || base + offset + byteLength > bytes.byteLength) {
          return yield* bad(
            path,
            `truncated: tensor ${name} data [${base + offset}, ${
              base + offset + byteLength
            }) runs past the end of the file (${bytes.byteLength} bytes)`,
            TRUNCATED_HINT,
          );
        }
      }
      tensors.set(name, {
        name,
        type: t.dtype,
        typeName: info?.name ?? `type${t.dtype}`,
        shape,
        offset: base + offset,
        byteLength,
      });
    }
    const file: GgufFile = { path, metadata, tensors, bytes };
    if (metadata["general.architecture"] === "llama") yield* checkLlamaGguf(file);
    return file;
  });

/**
 * Open a GGUF file: read it whole into memory (~98 MB for SmolLM2-135M Q4_1) and {@link parseGguf} it.
 * @param path local file path
 * @returns the parsed {@link GgufFile}
 * Fails with `InputError` when the file is missing or unreadable, and as {@link parseGguf}.
 */
export const openGguf = (path: string): Effect.Effect<GgufFile, InputError> =>
  Effect.flatMap(
    Effect.try({
      try: () => new Uint8Array(readFileSync(path)),
      catch: (cause) =>
        new InputError({
          message: `cannot read GGUF file ${path}: ${(cause as Error)?.message ?? String(cause)}`,
          hint: "check the path (LONGCTX_MODEL) and that the file is a complete GGUF v2/v3 model; " +
            "`deno task setup` fetches SmolLM2-135M-Instruct",
        }),
    }),
    (bytes) => parseGguf(bytes, path),
  );

/** Upper bounds of llama hyper-parameters that size allocations (far above any released llama model). */
export const LLAMA_BOUNDS = {
  "llama.block_count": 1024,
  "llama.embedding_length": 65536,
  "llama.attention.head_count": 1024,
  "llama.attention.head_count_kv": 1024,
  "llama.feed_forward_length": 1 << 20,
  "llama.context_length": 1 << 20,
  "llama.rope.dimension_count": 1024,
  vocab: 1 << 20,
} as const;

/**
 * Check a llama GGUF's hyper-parameters before anything is sized from them: each count is an integer in
 * `[1, LLAMA_BOUNDS[key]]`, `rope.freq_base` and `layer_norm_rms_epsilon` are finite and positive, the head
 * layout is consistent (`head_count · headDim = embedding_length`, `head_count_kv` divides `head_count`, an
 * even head dim), the vocabulary arrays have one entry per row of `token_embd.weight`, BOS/EOS are ids of it,
 * and every tensor the forward reads has the shape the hyper-parameters imply.
 * Fails with `InputError` naming the field or tensor.
 */
export const checkLlamaGguf = (file: GgufFile): Effect.Effect<void, InputError> =>
  Effect.try({
    try: () => {
      const f = (m: string) => {
        throw bad(file.path, m, CORRUPT_HINT);
      };
      const int = (key: keyof typeof LLAMA_BOUNDS, v: unknown): number => {
        const max = LLAMA_BOUNDS[key];
        if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > max) {
          f(`GGUF field ${key} = ${String(v)} is not an integer in [1, ${max}]`);
        }
        return v as number;
      };
      const need = (key: keyof typeof LLAMA_BOUNDS) => {
        if (file.metadata[key] === undefined) f(`GGUF field ${key} is missing`);
        return int(key, file.metadata[key]);
      };
      const pos = (key: string, fallback: number) => {
        const v = file.metadata[key] ?? fallback;
        if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
          f(`GGUF field ${key} = ${String(v)} is not a finite positive number`);
        }
        return v as number;
      };
      const nLayer = need("llama.block_count");
      const E = need("llama.embedding_length");
      const H = need("llama.attention.head_count");
      const KH = int("llama.attention.head_count_kv", file.metadata["llama.attention.head_count_kv"] ?? H);
      const F = need("llama.feed_forward_length");
      int("llama.context_length", file.metadata["llama.context_length"] ?? 2048);
      const D = int("llama.rope.dimension_count", file.metadata["llama.rope.dimension_count"] ?? E / H);
      pos("llama.rope.freq_base", 10000);
      const eps = pos("llama.attention.layer_norm_rms_epsilon", 1e-5);
      if (eps >= 1) f(`GGUF field llama.attention.layer_norm_rms_epsilon = ${eps} is not below 1`);
      if (D * H !== E || H % KH !== 0 || D % 2 !== 0) {
        f(`inconsistent heads: head_count ${H} × head dim ${D} vs embedding_length ${E}, head_count_kv ${KH} (needs H·D = E, KH | H, even D)`);
      }
      const shapeOf = (name: string, want: number[], optional = false) => {
        const t = file.tensors.get(name);
        if (!t) {
          if (!optional) f(`tensor ${name} is missing`);
          return;
        }
        if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i])) {
          f(`tensor ${name} has shape [${t.shape}], the hyper-parameters imply [${want}]`);
        }
      };
      const emb = file.tensors.get("token_embd.weight");
      if (!emb) f("tensor token_embd.weight is missing");
      const V = int("vocab", emb!.shape.length === 2 && emb!.shape[0] === E ? emb!.shape[1] : 0);
      shapeOf("token_embd.weight", [E, V]);
      shapeOf("output.weight", [E, V], true);
      shapeOf("output_norm.weight", [E]);
      for (let i = 0; i < nLayer; i++) {
        const b = `blk.${i}.`;
        shapeOf(`${b}attn_norm.weight`, [E]);
        shapeOf(`${b}attn_q.weight`, [E, H * D]);
        shapeOf(`${b}attn_k.weight`, [E, KH * D]);
        shapeOf(`${b}attn_v.weight`, [E, KH * D]);
        shapeOf(`${b}attn_output.weight`, [H * D, E]);
        shapeOf(`${b}ffn_norm.weight`, [E]);
        shapeOf(`${b}ffn_gate.weight`, [E, F]);
        shapeOf(`${b}ffn_up.weight`, [E, F]);
        shapeOf(`${b}ffn_down.weight`, [F, E]);
      }
      const tokens = file.metadata["tokenizer.ggml.tokens"];
      if (tokens !== undefined) {
        if (!Array.isArray(tokens) || tokens.length !== V || tokens.some((t) => typeof t !== "string")) {
          f(`GGUF field tokenizer.ggml.tokens has ${
            Array.isArray(tokens) ? tokens.length : typeof tokens
          } entries, token_embd.weight has ${V} rows`);
        }
        const types = file.metadata["tokenizer.ggml.token_type"];
        if (types !== undefined && (!Array.isArray(types) || types.length !== V)) {
          f(`GGUF field tokenizer.ggml.token_type has ${
            Array.isArray(types) ? types.length : typeof types
          } entries, the vocabulary ${V}`);
        }
        const merges = file.metadata["tokenizer.ggml.merges"];
        if (merges !== undefined && (!Array.isArray(merges) || merges.some((m) => typeof m !== "string"))) {
          f("GGUF field tokenizer.ggml.merges is not an array of strings");
        }
      }
      for (const key of ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"]) {
        const v = file.metadata[key];
        if (v !== undefined && (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= V)) {
          f(`GGUF field ${key} = ${String(v)} is not a token id below the vocabulary size ${V}`);
        }
      }
    },
    catch: (e) => e instanceof InputError ? e : bad(file.path, String(e), CORRUPT_HINT),
  });

/**
 * Dequantise one tensor to f32.
 * @returns `Float32Array` of `prod(shape)` values, row-major `[shape[n-1], …, shape[0]]`
 * Fails with `InputError` when the tensor is absent, its type unsupported, or its bytes run past the file end.
 */
export const tensorF32 = (file: GgufFile, name: string): Effect.Effect<Float32Array, InputError> =>
  Effect.try({
    try: () => {
      const t = file.tensors.get(name);
      if (!t) {
        throw new InputError({
          message: `tensor ${name} not in ${file.path}`,
          hint: "the file is not a llama-architecture GGUF this loader knows",
        });
      }
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (t.byteLength > 0 && t.offset + t.byteLength > file.bytes.byteLength) {
        throw new InputError({
          message: `tensor ${name} runs past the end of ${file.path}`,
          hint: "the file is truncated; fetch it again",
        });
      }
      const out = dequantize(t.type, file.bytes.subarray(t.offset, t.offset + t.byteLength), n);
      for (let i = 0; i < out.length; i++) {
        if (!Number.isFinite(out[i])) {
          throw new InputError({
            message: `tensor ${name} of ${file.path} has a non-finite weight (${out[i]}) at element ${i}`,
            hint: "the model file is corrupt: fetch it again (`npm run setup`)",
          });
        }
      }
      return out;
    },
    catch: (e) =>
      e instanceof InputError ? e : new InputError({
        message: `tensor ${name}: ${(e as Error)?.message ?? String(e)}`,
        hint: "the file may be corrupt",
      }),
  });

/** A metadata value (undefined when absent). */
export const meta = <T>(file: GgufFile, key: string): T | undefined => file.metadata[key] as T | undefined;
