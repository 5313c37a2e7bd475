/**
 * The envelope every KV store backend keeps a value in, so a partial or damaged entry is detected on read:
 *
 * | bytes | what |
 * |---|---|
 * | 8 | magic `LCKV\r\n\x1a\n` |
 * | 4 | envelope version (u32 little-endian), {@link KV_ENTRY_VERSION} |
 * | 4 | key length `k` in bytes (u32) |
 * | 8 | value length `n` in bytes (u64) |
 * | k | the key (ASCII) |
 * | n | the value |
 * | 32 | SHA-256 of every byte before it |
 *
 * The key inside the entry binds it to its name: a file copied or renamed to another key's name is refused.
 * @module
 */
import { createHash } from "node:crypto";
/** @internal Effect's types are documented by the `effect` package. */
import { Effect } from "effect";
import { KvStoreError } from "./errors.ts";

/** The envelope's magic: `LCKV`, CR LF, SUB, LF (a text-mode copy or a truncated header breaks it). */
export const KV_ENTRY_MAGIC: Uint8Array = new Uint8Array([0x4c, 0x43, 0x4b, 0x56, 0x0d, 0x0a, 0x1a, 0x0a]);
/** The envelope format version written and read. */
export const KV_ENTRY_VERSION = 1;
/** Bytes of the fixed prelude: magic, version, key length, value length. */
const PRELUDE = 24;
/** Bytes of the SHA-256 trailer. */
const DIGEST = 32;

/** Bytes an envelope adds around a value stored under `key`. */
export const kvEntryOverhead = (key: string): number => PRELUDE + key.length + DIGEST;

/** Wrap `value`, stored under `key` (an ASCII store key), in an envelope: one new buffer. */
export const encodeKvEntry = (key: string, value: Uint8Array): Uint8Array => {
  const k = new TextEncoder().encode(key);
  const out = new Uint8Array(PRELUDE + k.length + value.length + DIGEST);
  const dv = new DataView(out.buffer);
  out.set(KV_ENTRY_MAGIC, 0);
  dv.setUint32(8, KV_ENTRY_VERSION, true);
  dv.setUint32(12, k.length, true);
  dv.setBigUint64(16, BigInt(value.length), true);
  out.set(k, PRELUDE);
  out.set(value, PRELUDE + k.length);
  const end = out.length - DIGEST;
  out.set(createHash("sha256").update(out.subarray(0, end)).digest(), end);
  return out;
};

const corrupt = (where: string, what: string): KvStoreError =>
  new KvStoreError({
    reason: "corrupt",
    message: `${where}: ${what}`,
    hint: "the entry is damaged or was cut short; delete it and put it again (recompute the value)",
  });

/**
 * Check an envelope read back for `key` and return a copy of its value. Fails with {@link KvStoreError}
 * `corrupt` (bad magic, shorter or longer than declared, checksum mismatch, stored under another key) or
 * `version` (a newer envelope format); never returns damaged bytes. `where` names the entry in messages.
 */
export const decodeKvEntry = (
  key: string,
  entry: Uint8Array,
  where: string,
): Effect.Effect<Uint8Array, KvStoreError> =>
  Effect.try({
    try: () => decodeKvEntrySync(key, entry, where),
    catch: (e) => e instanceof KvStoreError ? e : corrupt(where, String(e)),
  });

/** @internal {@link decodeKvEntry}, throwing its {@link KvStoreError}. */
export const decodeKvEntrySync = (key: string, entry: Uint8Array, where: string): Uint8Array => {
  if (entry.length < PRELUDE + DIGEST) {
    throw corrupt(where, `${entry.length} bytes, shorter than an entry's ${PRELUDE + DIGEST}-byte frame`);
  }
  for (let i = 0; i < KV_ENTRY_MAGIC.length; i++) {
    if (entry[i] !== KV_ENTRY_MAGIC[i]) throw corrupt(where, "not a longctx KV entry (bad magic)");
  }
  const dv = new DataView(entry.buffer, entry.byteOffset, entry.byteLength);
  const version = dv.getUint32(8, true);
  if (version !== KV_ENTRY_VERSION) {
    throw new KvStoreError({
      reason: "version",
      message: `${where}: envelope version ${version}; this code reads version ${KV_ENTRY_VERSION}`,
      hint: "update longctx, or delete the entry and put it again with this version",
    });
  }
  const kLen = dv.getUint32(12, true);
  const nLen = dv.getBigUint64(16, true);
  const total = BigInt(PRELUDE + kLen + DIGEST) + nLen;
  if (total !== BigInt(entry.length)) {
    throw corrupt(
      where,
      BigInt(entry.length) < total
        ? `${entry.length} bytes of a ${total}-byte entry (cut short: a partial write)`
        : `${entry.length} bytes where the header declares ${total} (trailing bytes)`,
    );
  }
  const end = entry.length - DIGEST;
  const digest = createHash("sha256").update(entry.subarray(0, end)).digest();
  for (let i = 0; i < DIGEST; i++) {
    if (digest[i] !== entry[end + i]) throw corrupt(where, "SHA-256 mismatch (damaged bytes)");
  }
  const stored = new TextDecoder().decode(entry.subarray(PRELUDE, PRELUDE + kLen));
  if (stored !== key) throw corrupt(where, `the entry was stored under key "${stored}", not "${key}"`);
  return entry.slice(PRELUDE + kLen, end);
};
