/**
 * The KV store: one interface ({@link KvStore}) over three backends, chosen by the URL given to
 * {@link openKvStore}:
 *
 * - `file:///abs/dir`: one file per key in a folder (written to a temporary file, fsynced, renamed over the
 *   old one, then the folder fsynced);
 * - `sqlite:///abs/path.db`: one SQLite database (the runtime's built-in `node:sqlite` under Deno,
 *   `bun:sqlite` under Bun; WAL, one transaction per put);
 * - `redis://host:port[/db]` (and `rediss://` for TLS): a Redis server, through node-redis; a value is stored
 *   whole with one `SET`.
 *
 * Every backend keeps a value in a checksummed envelope (`envelope.ts`), so `get` refuses a partial or
 * damaged entry with {@link KvStoreError} `corrupt` and never returns damaged bytes. A store is a scoped
 * resource: the scope that opened it closes it.
 * @module
 */
/** @internal Effect's types (`Effect`, `Scope`) are documented by the `effect` package. */
import { Effect, type Scope } from "effect";
import type { BackendImpl } from "./backend.ts";
import { describe, KvStoreError, redactUrl } from "./errors.ts";
import { decodeKvEntrySync, encodeKvEntry } from "./envelope.ts";
import { openFileBackend } from "./file.ts";
import { openRedisBackend } from "./redis.ts";
import { openSqliteBackend } from "./sqlite.ts";
import { kvKeyProblem } from "./key.ts";

/** The backend a {@link KvStore} runs on. */
export type KvStoreBackend = "file" | "sqlite" | "redis";

/**
 * A key-value store of byte values (a context's KV cache chunks, keyed by `kvKey`). Every operation is an
 * Effect that fails only with {@link KvStoreError}.
 */
export interface KvStore {
  /** The backend. */
  readonly backend: KvStoreBackend;
  /** The store's URL as opened, with any password replaced by `***` (for messages and logs). */
  readonly url: string;
  /**
   * The value stored under `key` (a fresh copy the caller owns), or `undefined` when there is none. A
   * partial or damaged entry fails with `corrupt` (a newer envelope format with `version`).
   */
  get(key: string): Effect.Effect<Uint8Array | undefined, KvStoreError>;
  /**
   * Store `value` under `key`, replacing any old value, atomically: a reader sees the old value or the new
   * one, whole, even when this process is killed during the write. Fails with `too-large` for a value
   * beyond `maxValueBytes`.
   */
  put(key: string, value: Uint8Array): Effect.Effect<void, KvStoreError>;
  /** Remove `key`; `true` when there was an entry under it. */
  delete(key: string): Effect.Effect<boolean, KvStoreError>;
  /** Whether an entry is stored under `key` (its checksum is not verified: `get` does that). */
  has(key: string): Effect.Effect<boolean, KvStoreError>;
  /**
   * Release the store's connection or database handle. Idempotent; the scope that opened the store calls it
   * too. Later operations fail with `closed`.
   */
  close(): Effect.Effect<void>;
}

/** The default of {@link KvStoreOptions.maxValueBytes}: 512 MiB less 4 KiB, so that a whole envelope fits Redis' default `proto-max-bulk-len` (512 MiB). */
export const KV_MAX_VALUE_BYTES: number = 512 * 2 ** 20 - 4096;

/** Options of {@link openKvStore}. */
export interface KvStoreOptions {
  /** The largest value `put` accepts, in bytes (default {@link KV_MAX_VALUE_BYTES}). */
  readonly maxValueBytes?: number;
  /** Redis: milliseconds to connect and get the server's first answer before `unreachable` (default 5000). */
  readonly connectTimeoutMs?: number;
  /** Redis: milliseconds one operation may take before `unreachable` (default 60000). */
  readonly timeoutMs?: number;
  /** Redis: the prefix of every key on the server (default `longctx:kv:`), to share a database. */
  readonly redisPrefix?: string;
  /**
   * File: temporary files of writers that died (`.tmp-*` in the folder) older than this many milliseconds
   * are removed when the store opens (default one hour; a live writer's temporary file is younger).
   */
  readonly staleTempMs?: number;
}

/** Where a store URL points ({@link parseKvStoreUrl}). */
export type KvStoreLocation =
  | {
    /** A folder of files. */
    readonly backend: "file";
    /** The folder's absolute path. */
    readonly path: string;
  }
  | {
    /** A SQLite database. */
    readonly backend: "sqlite";
    /** The database file's absolute path. */
    readonly path: string;
  }
  | {
    /** A Redis server. */
    readonly backend: "redis";
    /** The URL to connect to (as given, normalised). */
    readonly url: string;
    /** Host name or address. */
    readonly host: string;
    /** TCP port (default 6379). */
    readonly port: number;
    /** Database number (default 0). */
    readonly db: number;
    /** Whether the connection uses TLS (`rediss://`). */
    readonly tls: boolean;
  };

const FORMS = "file:///abs/dir, sqlite:///abs/path.db or redis://host:port[/db]";

const badUrl = (message: string, hint: string = `write the store as ${FORMS}`): KvStoreError =>
  new KvStoreError({ reason: "bad-url", message, hint });

/** An absolute local path from a `file:` or `sqlite:` URL, or a `bad-url` error. */
const localPath = (raw: string, scheme: "file" | "sqlite", what: string): string => {
  const m = new RegExp(`^${scheme}://(localhost)?(/[^?#]*)$`, "i").exec(raw);
  if (!m) {
    const rest = raw.slice(scheme.length + 1);
    const example = `${scheme}:///tmp/longctx-kv${scheme === "sqlite" ? ".db" : ""}`;
    throw badUrl(
      /[?#]/.test(rest)
        ? `${raw}: a ${scheme} store URL takes no query or fragment`
        : `${raw}: the ${what} must be an absolute path, after three slashes (${scheme}:///abs/…)`,
      `write the ${what} as an absolute path, e.g. ${example}`,
    );
  }
  let path: string;
  try {
    path = decodeURIComponent(m[2]);
  } catch {
    throw badUrl(
      `${raw}: bad percent-encoding in the path`,
      "write the path with %XX escapes only for bytes",
    );
  }
  if (path.includes("\0")) throw badUrl(`${raw}: the path has a NUL byte`);
  if (path.length > 1 && path.endsWith("/")) path = path.replace(/\/+$/, "");
  if (scheme === "sqlite" && path === "/") throw badUrl(`${raw}: no database file named`);
  return path;
};

/**
 * Where a store URL points, or {@link KvStoreError} `bad-url` (thrown) for an unknown scheme, a relative
 * path, a host on a `file:`/`sqlite:` URL, or a bad Redis port or database number.
 */
export const parseKvStoreUrl = (url: string): KvStoreLocation => {
  if (typeof url !== "string" || url.trim() === "") throw badUrl("the KV store URL is empty");
  const raw = url.trim();
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(raw)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    throw badUrl(
      `"${raw}" is not a store URL (no scheme)`,
      raw.startsWith("/")
        ? `for a folder write file://${raw}, for a database sqlite://${raw}`
        : `write the store as ${FORMS} (paths absolute)`,
    );
  }
  if (scheme === "file") return { backend: "file", path: localPath(raw, "file", "folder") };
  if (scheme === "sqlite") return { backend: "sqlite", path: localPath(raw, "sqlite", "database") };
  if (scheme === "redis" || scheme === "rediss") {
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      throw badUrl(
        `${redactUrl(raw)}: not a valid URL`,
        "write redis://host:port[/db], e.g. redis://127.0.0.1:6379/0",
      );
    }
    if (u.hostname === "") throw badUrl(`${redactUrl(raw)}: no host`, "write redis://host:port[/db]");
    const port = u.port === "" ? 6379 : Number(u.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw badUrl(
        `${redactUrl(raw)}: port ${u.port} is not a TCP port`,
        "write a port 1–65535 (Redis: 6379)",
      );
    }
    const dbText = u.pathname.replace(/^\//, "");
    const db = dbText === "" ? 0 : Number(dbText);
    if (!/^\d{0,5}$/.test(dbText) || !Number.isInteger(db)) {
      throw badUrl(
        `${redactUrl(raw)}: "${dbText}" is not a Redis database number`,
        "write redis://host:port/N with N a database number (0–15 on a default server), or no path",
      );
    }
    if (u.search !== "" || u.hash !== "") throw badUrl(`${redactUrl(raw)}: a redis store URL takes no query`);
    return { backend: "redis", url: raw, host: u.hostname, port, db, tls: scheme === "rediss" };
  }
  throw badUrl(`unknown KV store scheme "${scheme}:" in ${redactUrl(raw)}`, `write the store as ${FORMS}`);
};

/** @internal A {@link KvStore} over a backend's envelope operations. */
export const makeStore = (
  backend: KvStoreBackend,
  url: string,
  impl: BackendImpl,
  options: KvStoreOptions,
): KvStore => {
  const maxValue = options.maxValueBytes ?? KV_MAX_VALUE_BYTES;
  let closed = false;
  let closing: Promise<void> | undefined;
  const shown = redactUrl(url);
  const op = <A>(name: string, key: string, run: () => Promise<A>): Effect.Effect<A, KvStoreError> => {
    const e = Effect.tryPromise({
      try: async () => {
        if (closed) {
          throw new KvStoreError({
            reason: "closed",
            message: `${name} on the KV store ${shown} after it was closed`,
            hint: "keep the store's scope open while using it (Effect.scoped around every use)",
          });
        }
        const problem = kvKeyProblem(key);
        if (problem) {
          throw new KvStoreError({
            reason: "bad-key",
            message: `${name}: ${problem}`,
            hint: "make keys with kvKey(), or use only A–Z a–z 0–9 . _ - (at most 200)",
          });
        }
        return await run();
      },
      catch: (err) => err instanceof KvStoreError ? err : impl.mapError(err, name, key),
    });
    const ms = impl.timeoutMs;
    return ms === undefined ? e : Effect.timeoutOrElse(e, {
      duration: ms,
      orElse: () =>
        Effect.fail(
          new KvStoreError({
            reason: "unreachable",
            message: `${name} ${impl.where(key)}: no answer in ${ms} ms`,
            hint: "check that the server is up and not overloaded, or raise timeoutMs",
          }),
        ),
    });
  };
  return {
    backend,
    url: shown,
    get: (key) =>
      op("get", key, async () => {
        const entry = await impl.readEntry(key);
        return entry === undefined ? undefined : decodeKvEntrySync(key, entry, impl.where(key));
      }),
    put: (key, value) =>
      op("put", key, async () => {
        if (!(value instanceof Uint8Array)) {
          throw new KvStoreError({
            reason: "io",
            message: `put ${impl.where(key)}: the value is not a Uint8Array`,
            hint: "pass the bytes as a Uint8Array",
          });
        }
        if (value.length > maxValue) {
          throw new KvStoreError({
            reason: "too-large",
            message: `put ${impl.where(key)}: ${value.length} bytes, beyond this store's ${maxValue}`,
            hint: "store the value in smaller chunks (more kvKey chunks), or raise maxValueBytes",
          });
        }
        await impl.writeEntry(key, encodeKvEntry(key, value));
      }),
    delete: (key) => op("delete", key, () => impl.remove(key)),
    has: (key) => op("has", key, () => impl.exists(key)),
    close: () =>
      Effect.promise(() => {
        closed = true;
        closing ??= impl.close().catch(() => {});
        return closing;
      }),
  };
};

/**
 * Open the KV store at `url` ({@link parseKvStoreUrl}) as a scoped resource: the scope that opens it closes it
 * (on success, failure and interruption), so no connection or database handle outlives it.
 *
 * ```ts
 * import { Effect } from "effect";
 * import { kvKey, openKvStore } from "@longctx/runtime";
 * await Effect.runPromise(Effect.scoped(Effect.gen(function* () {
 *   const store = yield* openKvStore("sqlite:///var/cache/longctx/kv.db");
 *   const key = kvKey({ model, tokensSha256, codec: { name: "cachegen", level: 2 }, chunk: 0 });
 *   yield* store.put(key, bytes);
 *   const back = yield* store.get(key); // bytes, undefined, or KvStoreError "corrupt"
 * })));
 * ```
 *
 * A folder or a database file that does not exist is created (with its parent folders). Fails with
 * {@link KvStoreError}: `bad-url`, `unreachable` (a Redis server that refuses or does not answer within
 * `connectTimeoutMs`), `io` (a folder or database that cannot be created or opened) or `corrupt` (a file
 * that is not a SQLite database).
 */
export const openKvStore = (
  url: string,
  options: KvStoreOptions = {},
): Effect.Effect<KvStore, KvStoreError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.suspend(() => {
      let loc: KvStoreLocation;
      try {
        loc = parseKvStoreUrl(url);
      } catch (e) {
        return Effect.fail(e instanceof KvStoreError ? e : badUrl(`${url}: ${describe(e)}`));
      }
      const max = options.maxValueBytes;
      if (max !== undefined && !(Number.isSafeInteger(max) && max >= 0)) {
        return Effect.fail(badUrl(`maxValueBytes ${max} is not a byte count`, "pass a non-negative integer"));
      }
      return Effect.tryPromise({
        try: async () => {
          if (loc.backend === "file") {
            return makeStore("file", url, await openFileBackend(loc.path, options), options);
          }
          if (loc.backend === "sqlite") {
            return makeStore("sqlite", url, await openSqliteBackend(loc.path), options);
          }
          return makeStore("redis", url, await openRedisBackend(loc, options), options);
        },
        catch: (e) =>
          e instanceof KvStoreError ? e : new KvStoreError({
            reason: "io",
            message: `cannot open the KV store ${redactUrl(url)}: ${describe(e)}`,
            hint: "check the path's permissions and free space",
          }),
      });
    }),
    (store) => store.close(),
  );
