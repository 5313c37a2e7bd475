/**
 * The typed error of the KV store ({@link KvStoreError}): every failure of `openKvStore` and of a store's
 * operations, with a `reason` to branch on, the message and what to do about it.
 * @module
 */
/** @internal Effect's types (`Data`) are documented by the `effect` package. */
import { Data } from "effect";
import type { TaggedErrorClass } from "@longctx/graph";

/**
 * Why a KV store operation failed (the `reason` of a {@link KvStoreError}):
 *
 * - `bad-url`: the store URL is malformed, relative, of an unknown scheme, or names something that is not a
 *   store (a SQLite database of another application);
 * - `bad-key`: a key that is not a store key (see `kvKey`), or parts of `kvKey` that cannot make one;
 * - `unreachable`: the Redis server refused the connection, did not answer in time, or went away;
 * - `io`: the file system or the database failed (permissions, a full disk, a locked database, …);
 * - `corrupt`: a stored entry is damaged or partial (bad magic, cut short, checksum mismatch, an entry
 *   stored under another key) or the file is not a database: it is refused, never returned;
 * - `version`: a stored entry of a newer envelope format than this code reads;
 * - `too-large`: a value beyond the store's `maxValueBytes` (or the Redis server's bulk-length limit);
 * - `closed`: an operation on a store after `close()` (or after its scope ended).
 */
export type KvStoreErrorReason =
  | "bad-url"
  | "bad-key"
  | "unreachable"
  | "io"
  | "corrupt"
  | "version"
  | "too-large"
  | "closed";

/** The fields of a {@link KvStoreError}. */
export interface KvStoreErrorFields {
  /** Why it failed. */
  readonly reason: KvStoreErrorReason;
  /** What went wrong, naming the store, the key or the file. */
  readonly message: string;
  /** What to do about it. */
  readonly hint: string;
}
/** @internal */
const KvStoreErrorBase: TaggedErrorClass<"KvStoreError", KvStoreErrorFields> = Data.TaggedError(
  "KvStoreError",
)<KvStoreErrorFields>;
/**
 * A KV store that cannot be opened or an operation on it that failed; `reason` says why
 * ({@link KvStoreErrorReason}). A damaged or partial entry is always this error with reason `corrupt`,
 * never damaged bytes.
 */
export class KvStoreError extends KvStoreErrorBase {}

/** @internal The text of an unknown thrown value (an `Error`'s message, with its `code` when it has one). */
export const describe = (e: unknown): string => {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return typeof code === "string" && !e.message.includes(code) ? `${code}: ${e.message}` : e.message;
  }
  return String(e);
};

/** @internal An unknown failure as an `io` error naming the operation and the entry. */
export const ioError = (e: unknown, op: string, where: string, hint: string): KvStoreError =>
  new KvStoreError({ reason: "io", message: `${op} ${where}: ${describe(e)}`, hint });

/** @internal A URL with its password hidden. */
export const redactUrl = (url: string): string => url.replace(/^([a-z]+:\/\/[^:/@]*:)[^@/]*@/i, "$1***@");
