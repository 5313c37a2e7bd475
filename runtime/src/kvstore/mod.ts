/**
 * The KV store of issue 19: byte values (a context's KV cache chunks, e.g. CacheGen containers) under keys
 * that name the model, the tokens, the codec and the chunk ({@link kvKey}), in a folder of files, a SQLite
 * database or a Redis server behind one interface ({@link KvStore}, {@link openKvStore}). Writes are atomic and
 * every value is kept in a checksummed envelope, so a partial or damaged entry is refused
 * ({@link KvStoreError} `corrupt`), never returned. See `runtime/src/kvstore/README.md`.
 * @module
 */
export { KvStoreError, type KvStoreErrorFields, type KvStoreErrorReason } from "./errors.ts";
export {
  decodeKvEntry,
  encodeKvEntry,
  KV_ENTRY_MAGIC,
  KV_ENTRY_VERSION,
  kvEntryOverhead,
} from "./envelope.ts";
export { checkKvKey, KV_KEY_VERSION, type KvCodec, kvKey, type KvKeyParts, kvKeyProblem } from "./key.ts";
export {
  KV_MAX_VALUE_BYTES,
  type KvStore,
  type KvStoreBackend,
  type KvStoreLocation,
  type KvStoreOptions,
  openKvStore,
  parseKvStoreUrl,
} from "./store.ts";
