/**
 * Store keys: {@link kvKey} names one chunk of a context's KV cache by the model, the tokens, the codec and
 * the chunk index; {@link checkKvKey} is the rule every store applies to a key (safe as a file name, a SQLite
 * text key and a Redis key).
 * @module
 */
import { createHash } from "node:crypto";
import { KvStoreError } from "./errors.ts";

/** The key-space version, the first part of every {@link kvKey}: a new layout of keys gets a new one. */
export const KV_KEY_VERSION = "lckv1";

/** The codec part of a {@link KvKeyParts}: how the stored bytes were made from the KV cache. */
export interface KvCodec {
  /** The codec's name: letters and digits (`cachegen`, `fp16`, `int8`). */
  readonly name: string;
  /** The compression level (`cachegen` levels 1–3), when the codec has levels. */
  readonly level?: number;
  /** Every other parameter that changes the bytes (JSON-like: objects, arrays, strings, finite numbers). */
  readonly params?: unknown;
}

/** What a {@link kvKey} names. */
export interface KvKeyParts {
  /** The model's fingerprint (any text, e.g. `modelFingerprint()` of the runtime); stored hashed. */
  readonly model: string;
  /** SHA-256 (64 hex digits) of the chunk's token ids (and of its prefix, for a chunk after the first). */
  readonly tokensSha256: string;
  /** The codec, its level and parameters; a bare name for a codec without any. */
  readonly codec: KvCodec | string;
  /** The chunk's index in its context (a non-negative integer). */
  readonly chunk: number;
}

/** A store key: 1–200 of `A–Z a–z 0–9 . _ -`, starting with a letter or a digit. */
const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const NAME_RE = /^[A-Za-z0-9]{1,32}$/;

const badKey = (message: string, hint: string): KvStoreError =>
  new KvStoreError({ reason: "bad-key", message, hint });

/** Why `key` is not a store key, or `undefined` when it is one. */
export const kvKeyProblem = (key: unknown): string | undefined =>
  typeof key !== "string"
    ? `a key must be a string, not ${typeof key}`
    : KEY_RE.test(key)
    ? undefined
    : `key ${JSON.stringify(key.length > 80 ? `${key.slice(0, 80)}…` : key)} is not a store key ` +
      "(1–200 of A–Z a–z 0–9 . _ -, starting with a letter or a digit)";

/** Throws {@link KvStoreError} `bad-key` unless `key` is a store key (see {@link kvKeyProblem}). */
export const checkKvKey = (key: unknown): void => {
  const p = kvKeyProblem(key);
  if (p) throw badKey(p, "make keys with kvKey(), or use only A–Z a–z 0–9 . _ - (at most 200)");
};

/** JSON with object keys sorted at every level; refuses what JSON would silently change (NaN, ∞, undefined). */
const canonical = (v: unknown, at: string): string => {
  if (v === null || typeof v === "boolean" || typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number") {
    if (!Number.isFinite(v)) throw badKey(`codec ${at} is ${v}`, "codec parameters must be finite numbers");
    return JSON.stringify(v);
  }
  if (Array.isArray(v)) return `[${v.map((x, i) => canonical(x, `${at}[${i}]`)).join(",")}]`;
  if (typeof v === "object") {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(o[k], `${at}.${k}`)}`).join(",")}}`;
  }
  throw badKey(`codec ${at} is a ${typeof v}`, "codec parameters must be JSON values");
};

const sha256Hex = (text: string): string => createHash("sha256").update(text, "utf8").digest("hex");

/**
 * The store key of one chunk of a context's KV cache:
 * `lckv1_m-<model>_t-<tokensSha256>_c-<name>[-l<level>]-p<params>_k-<chunk>`, where `<model>` is the first
 * 128 bits of the SHA-256 of the fingerprint and `<params>` the first 48 bits of the SHA-256 of the codec
 * parameters' canonical JSON (object keys sorted). At most 200 characters of `A–Z a–z 0–9 . _ -`: a valid
 * file name. Another model, other tokens, another codec, level or parameter, or another chunk gives another
 * key. Throws {@link KvStoreError} `bad-key` for parts that cannot make a key (an empty fingerprint, a
 * token hash that is not 64 hex digits, a codec name that is not alphanumeric, a negative or fractional
 * level or chunk, a non-finite parameter).
 */
export const kvKey = (parts: KvKeyParts): string => {
  const { model, tokensSha256, chunk } = parts;
  const codec: KvCodec = typeof parts.codec === "string" ? { name: parts.codec } : parts.codec;
  if (typeof model !== "string" || model.length === 0) {
    throw badKey(
      "kvKey: the model fingerprint is empty",
      "pass the model's fingerprint (modelFingerprint())",
    );
  }
  if (typeof tokensSha256 !== "string" || !/^[0-9a-fA-F]{64}$/.test(tokensSha256)) {
    throw badKey(
      `kvKey: tokensSha256 ${JSON.stringify(tokensSha256)} is not a SHA-256 (64 hex digits)`,
      "pass the hex SHA-256 of the chunk's token ids (tokensSha256())",
    );
  }
  if (typeof codec?.name !== "string" || !NAME_RE.test(codec.name)) {
    throw badKey(
      `kvKey: codec name ${JSON.stringify(codec?.name)} is not 1–32 letters and digits`,
      'name the codec with letters and digits, e.g. "cachegen"',
    );
  }
  if (codec.level !== undefined && !(Number.isSafeInteger(codec.level) && codec.level >= 0)) {
    throw badKey(`kvKey: codec level ${codec.level} is not a non-negative integer`, "pass a level such as 2");
  }
  if (!(Number.isSafeInteger(chunk) && chunk >= 0)) {
    throw badKey(`kvKey: chunk ${chunk} is not a non-negative integer`, "pass the chunk's index: 0, 1, 2, …");
  }
  const params = sha256Hex(canonical(codec.params ?? {}, "params")).slice(0, 12);
  const level = codec.level === undefined ? "" : `-l${codec.level}`;
  return `${KV_KEY_VERSION}_m-${sha256Hex(model).slice(0, 32)}_t-${tokensSha256.toLowerCase()}_` +
    `c-${codec.name.toLowerCase()}${level}-p${params}_k-${chunk}`;
};
