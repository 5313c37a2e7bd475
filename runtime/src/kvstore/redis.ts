/**
 * @internal The `redis://host:port[/db]` backend, through node-redis (npm `redis`). An entry is one Redis
 * string `<prefix><key>` holding the whole envelope, written with one `SET` (Redis applies a command whole or
 * not at all, so no reader sees half a value); the envelope's length and SHA-256 catch anything else
 * (a value written by another tool, a truncated copy). Connecting and every operation have time limits, so
 * an unreachable server is an `unreachable` error, never a hang.
 * @module
 */
import { Buffer } from "node:buffer";
import type { BackendImpl } from "./backend.ts";
import { describe, KvStoreError, redactUrl } from "./errors.ts";
import type { KvStoreLocation, KvStoreOptions } from "./store.ts";

/** The commands the store sends, on a client that returns strings as `Buffer`. */
interface RawRedis {
  get(key: string): Promise<Buffer | null>;
  set(key: string, value: Buffer): Promise<unknown>;
  del(key: string): Promise<number>;
  exists(key: string): Promise<number>;
  ping(): Promise<unknown>;
}

/** The client's lifecycle. */
interface RedisClient {
  readonly isReady: boolean;
  readonly isOpen: boolean;
  connect(): Promise<unknown>;
  close(): Promise<void>;
  destroy(): void;
  on(event: "error", listener: (e: unknown) => void): unknown;
  withTypeMapping(mapping: Record<number, unknown>): unknown;
  configGet(parameter: string): Promise<Record<string, string>>;
}

/** `p`, or a rejection with `onTimeout()` after `ms` (the timer is cleared either way). */
const within = <A>(p: Promise<A>, ms: number, onTimeout: () => Error): Promise<A> => {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
};

const isTooLarge = (msg: string) =>
  /bulk length|proto-max-bulk-len|string exceeds maximum|max.*size/i.test(msg);

/** Connect to the server at `loc` and check that it answers. */
export const openRedisBackend = async (
  loc: Extract<KvStoreLocation, { backend: "redis" }>,
  options: KvStoreOptions,
): Promise<BackendImpl> => {
  const shown = redactUrl(loc.url);
  const connectMs = options.connectTimeoutMs ?? 5000;
  const prefix = options.redisPrefix ?? "longctx:kv:";
  const { createClient, RESP_TYPES } = await import("redis");
  let lastError: unknown;
  const client = createClient({
    url: loc.url,
    socket: {
      connectTimeout: connectMs,
      // A dropped connection is retried twice (0.1 s, 0.2 s), then operations fail until the store reopens.
      reconnectStrategy: (retries: number, cause: Error) => retries >= 2 ? cause : 100 * (retries + 1),
    },
    // Commands while disconnected fail at once instead of waiting for a reconnection.
    disableOfflineQueue: true,
  }) as unknown as RedisClient;
  client.on("error", (e) => {
    lastError = e;
  });
  const unreachable = (what: string) =>
    new KvStoreError({
      reason: "unreachable",
      message: `cannot reach the Redis server ${shown}: ${what}`,
      hint: `start redis-server on ${loc.host}:${loc.port} (or fix the URL), then retry`,
    });
  const raw = client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer }) as RawRedis;
  try {
    await within(
      client.connect().then(() => raw.ping()),
      connectMs + 500,
      () => unreachable(`no answer in ${connectMs} ms`),
    );
  } catch (e) {
    try {
      client.destroy();
    } catch { /* already closed */ }
    if (e instanceof KvStoreError) throw e;
    const msg = describe(e);
    if (/NOAUTH|WRONGPASS|auth/i.test(msg)) {
      throw new KvStoreError({
        reason: "unreachable",
        message: `the Redis server ${shown} refused the login: ${msg}`,
        hint: "put the right user and password in the URL: redis://user:password@host:port/db",
      });
    }
    if (/DB index|invalid DB/i.test(msg)) {
      throw new KvStoreError({
        reason: "bad-url",
        message: `the Redis server ${shown} has no database ${loc.db}: ${msg}`,
        hint: "use a database number below the server's `databases` setting (16 by default)",
      });
    }
    throw unreachable(msg);
  }
  const where = (key: string) => `${shown} key ${prefix}${key}`;
  // The server's largest value: one beyond it is refused before it is sent (a server that reads an oversize
  // bulk string drops the connection, so its error reply can lose the race with the write). CONFIG may be
  // disabled (renamed commands, managed services): then the server's own reply is the check.
  let maxBulk: number | undefined;
  try {
    const v = Number(
      (await within(client.configGet("proto-max-bulk-len"), connectMs, () => new Error("timeout")))[
        "proto-max-bulk-len"
      ],
    );
    if (Number.isFinite(v) && v > 0) maxBulk = v;
  } catch { /* no CONFIG: rely on the server's reply */ }
  let closed = false;
  /**
   * Run a command; after a connection failure (not an error reply of the server) wait up to the connect
   * timeout for the client to reconnect and run it once more. Every command the store sends is idempotent.
   */
  const retried = async <A>(command: () => Promise<A>): Promise<A> => {
    try {
      return await command();
    } catch (e) {
      if (closed || /^[A-Z]{2,}\b/.test(describe(e))) throw e; // ERR, WRONGTYPE, NOAUTH, OOM, …: a reply
      const t0 = Date.now();
      while (client.isOpen && !client.isReady && Date.now() - t0 < connectMs) {
        await new Promise((r) => setTimeout(r, 20));
      }
      if (!client.isReady) throw e;
      return await command();
    }
  };
  return {
    where,
    timeoutMs: options.timeoutMs ?? 60_000,
    mapError: (e, op, key) => {
      const msg = describe(e);
      if (isTooLarge(msg)) {
        return new KvStoreError({
          reason: "too-large",
          message: `${op} ${where(key)}: the server refused the value: ${msg}`,
          hint: "store smaller chunks, or raise the server's proto-max-bulk-len",
        });
      }
      const last = lastError === undefined ? "" : ` (last connection error: ${describe(lastError)})`;
      return new KvStoreError({
        reason: "unreachable",
        message: `${op} ${where(key)}: ${msg}${last}`,
        hint: "check that the Redis server is up and reachable, then reopen the store",
      });
    },
    readEntry: async (key) => {
      const b = await retried(() => raw.get(prefix + key));
      return b === null ? undefined : new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    },
    writeEntry: async (key, entry) => {
      if (maxBulk !== undefined && entry.byteLength > maxBulk) {
        throw new Error(
          `a value of ${entry.byteLength} bytes exceeds the server's proto-max-bulk-len of ${maxBulk}`,
        );
      }
      const value = Buffer.from(entry.buffer, entry.byteOffset, entry.byteLength);
      await retried(() => raw.set(prefix + key, value));
    },
    remove: async (key) => (await retried(() => raw.del(prefix + key))) > 0,
    exists: async (key) => (await retried(() => raw.exists(prefix + key))) > 0,
    close: async () => {
      if (closed) return;
      closed = true;
      try {
        await within(client.close(), 2000, () => new Error("close timed out"));
      } catch {
        try {
          client.destroy();
        } catch { /* already closed */ }
      }
    },
  };
};
