/**
 * @internal The `sqlite:///abs/path.db` backend: one table `kv_entries(key TEXT PRIMARY KEY, value BLOB)` in
 * a SQLite database, through the runtime's built-in driver (`node:sqlite` under Deno, `bun:sqlite` under
 * Bun). The database runs in WAL mode with `synchronous = FULL`; each put is one `BEGIN IMMEDIATE … COMMIT`
 * transaction, so a writer killed mid-put leaves an uncommitted WAL tail that SQLite discards: a reader sees
 * the old value or the new one. Other processes may use the same file at once (`busy_timeout` 10 s). The
 * database is marked with `PRAGMA application_id` ("LCKV") so a foreign database is refused, not written.
 * @module
 */
import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import type { BackendImpl } from "./backend.ts";
import { describe, ioError, KvStoreError } from "./errors.ts";

/** `PRAGMA application_id` of a store: "LCKV". */
const APP_ID = 0x4c434b56;
/** `PRAGMA user_version` of the store's schema. */
const SCHEMA = 1;

/** The part of a SQLite driver the store uses (both drivers fit it). */
interface Db {
  exec(sql: string): void;
  run(sql: string, ...params: unknown[]): number;
  get(sql: string, ...params: unknown[]): Record<string, unknown> | undefined;
  close(): void;
}

interface Statement {
  run(...params: unknown[]): { changes: number | bigint };
  get(...params: unknown[]): unknown;
}

const wrap = (prepare: (sql: string) => Statement, exec: (sql: string) => void, close: () => void): Db => {
  const cache = new Map<string, Statement>();
  const stmt = (sql: string) => {
    let s = cache.get(sql);
    if (!s) cache.set(sql, s = prepare(sql));
    return s;
  };
  return {
    exec,
    run: (sql, ...p) => Number(stmt(sql).run(...p).changes),
    get: (sql, ...p) => (stmt(sql).get(...p) ?? undefined) as Record<string, unknown> | undefined,
    close: () => {
      cache.clear();
      close();
    },
  };
};

/** Open (creating) the database file with the runtime's own driver. */
const openDb = async (path: string): Promise<Db> => {
  if ("Bun" in globalThis) {
    // deno-lint-ignore no-explicit-any
    const { Database }: any = await import("bun:sqlite" as string);
    const db = new Database(path, { create: true, readwrite: true });
    return wrap((sql) => db.prepare(sql), (sql) => db.exec(sql), () => db.close(false));
  }
  const { DatabaseSync } = await import("node:sqlite");
  const db = new DatabaseSync(path);
  return wrap((sql) => db.prepare(sql) as unknown as Statement, (sql) => db.exec(sql), () => db.close());
};

/** SQLite's primary result code of a driver error (Deno: `errcode`, Bun: `errno` / `code`), if any. */
const sqliteCode = (e: unknown): number | string | undefined => {
  if (typeof e !== "object" || e === null) return undefined;
  const o = e as { errcode?: unknown; errno?: unknown; code?: unknown };
  const n = typeof o.errcode === "number" ? o.errcode : typeof o.errno === "number" ? o.errno : undefined;
  if (n !== undefined) return n & 0xff;
  return typeof o.code === "string" ? o.code : undefined;
};

const NAMES: Record<number, string> = {
  5: "SQLITE_BUSY",
  6: "SQLITE_LOCKED",
  8: "SQLITE_READONLY",
  10: "SQLITE_IOERR",
  11: "SQLITE_CORRUPT",
  13: "SQLITE_FULL",
  14: "SQLITE_CANTOPEN",
  26: "SQLITE_NOTADB",
};

/** A driver error as a typed error: a damaged or foreign file is `corrupt`, anything else `io`. */
const mapSqlite = (e: unknown, op: string, where: string): KvStoreError => {
  if (e instanceof KvStoreError) return e;
  const c = sqliteCode(e);
  const name = typeof c === "number" ? NAMES[c] : c;
  const msg = describe(e);
  if (name === "SQLITE_NOTADB" || name === "SQLITE_CORRUPT" || /not a database|malformed/i.test(msg)) {
    return new KvStoreError({
      reason: "corrupt",
      message: `${op} ${where}: ${msg}`,
      hint: "the file is not an intact SQLite database: point sqlite:// at a new file, or delete this one",
    });
  }
  const hint = name === "SQLITE_BUSY" || name === "SQLITE_LOCKED"
    ? "another process held the database's write lock for over 10 s: retry, or end that process"
    : name === "SQLITE_READONLY" || name === "SQLITE_CANTOPEN"
    ? "give this process read and write access to the database file and its folder"
    : name === "SQLITE_FULL"
    ? "free disk space, or delete entries of the store"
    : "check the database file (permissions, free space, the file system)";
  return ioError(e, op, where, hint);
};

/** Open (creating) the SQLite database at `path` as a store. */
export const openSqliteBackend = async (path: string): Promise<BackendImpl> => {
  try {
    await mkdir(dirname(path), { recursive: true });
  } catch (e) {
    throw ioError(
      e,
      "open",
      `the folder of ${path}`,
      "give this process write access there, or use another path",
    );
  }
  let db: Db;
  try {
    db = await openDb(path);
  } catch (e) {
    throw mapSqlite(e, "open", path);
  }
  try {
    db.exec("PRAGMA busy_timeout = 10000");
    db.get("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = FULL");
    const appId = Number(db.get("PRAGMA application_id")?.application_id ?? 0);
    if (appId !== APP_ID) {
      const tables = Number(db.get("SELECT count(*) AS n FROM sqlite_schema")?.n ?? 0);
      if (appId !== 0 || tables > 0) {
        throw new KvStoreError({
          reason: "bad-url",
          message: `${path} is a SQLite database of another application (application_id ${appId}, ` +
            `${tables} schema objects), not a longctx KV store`,
          hint: "point sqlite:// at a new file or at a store made by openKvStore",
        });
      }
      db.exec("BEGIN IMMEDIATE");
      try {
        db.exec("CREATE TABLE IF NOT EXISTS kv_entries (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)");
        db.exec(`PRAGMA application_id = ${APP_ID}`);
        db.exec(`PRAGMA user_version = ${SCHEMA}`);
        db.exec("COMMIT");
      } catch (e) {
        try {
          db.exec("ROLLBACK");
        } catch { /* already rolled back */ }
        throw e;
      }
    }
    const schema = Number(db.get("PRAGMA user_version")?.user_version ?? 0);
    if (schema !== SCHEMA) {
      throw new KvStoreError({
        reason: "version",
        message: `${path}: KV store schema ${schema}; this code reads schema ${SCHEMA}`,
        hint: "update longctx, or point sqlite:// at a new file",
      });
    }
  } catch (e) {
    db.close();
    throw mapSqlite(e, "open", path);
  }
  const where = (key: string) => `${path} key ${key}`;
  let closed = false;
  return {
    where,
    mapError: (e, op, key) => mapSqlite(e, op, where(key)),
    readEntry: (key) => {
      const row = db.get("SELECT value FROM kv_entries WHERE key = ?", key);
      if (row === undefined) return Promise.resolve(undefined);
      const v = row.value;
      if (!(v instanceof Uint8Array)) {
        throw new KvStoreError({
          reason: "corrupt",
          message: `${where(key)}: the stored value is a ${typeof v}, not a blob`,
          hint: "the entry is damaged; delete it and put it again",
        });
      }
      return Promise.resolve(v);
    },
    writeEntry: (key, entry) => {
      db.exec("BEGIN IMMEDIATE");
      try {
        db.run(
          "INSERT INTO kv_entries (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
          key,
          entry,
        );
        db.exec("COMMIT");
      } catch (e) {
        try {
          db.exec("ROLLBACK");
        } catch { /* already rolled back */ }
        throw e;
      }
      return Promise.resolve();
    },
    remove: (key) => Promise.resolve(db.run("DELETE FROM kv_entries WHERE key = ?", key) > 0),
    exists: (key) =>
      Promise.resolve(db.get("SELECT 1 AS x FROM kv_entries WHERE key = ?", key) !== undefined),
    close: () => {
      if (!closed) {
        closed = true;
        try {
          db.close();
        } catch { /* closing never fails the caller */ }
      }
      return Promise.resolve();
    },
  };
};
