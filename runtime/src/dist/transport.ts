/**
 * KV shards in worker processes, reached through Redis (node-redis, npm `redis`, already the KV store's client:
 * it runs under Deno and Bun, and `scripts/setup.sh` installs `redis-server`). The coordinator and each worker
 * exchange messages as Redis hashes — one field per value (`op`, `layer`, `n`, `seq`, `pos`, and the tensors
 * `q`, `k`, `v`, `o`, `lse` as the raw little-endian f32 bytes) — announced on Redis lists (`RPUSH` the
 * message id, the other side `BLPOP`s it), one request list per worker and one reply list per request
 * stream; so ordering, blocking and framing are Redis's, not a protocol of ours.
 *
 * Keys, under `<prefix><id>:` (default prefix `longctx:dist:`): `req` (request ids), `m:<n>` (request `n`),
 * `rep` (reply ids), `r:<n>` (reply `n`). Ops: `init` (shape, start, capacity), `append` (k, v of n rows),
 * `partial` (q, seq, pos → o, lse), `close`. A worker holds its block in host memory or on a backend
 * (`openBackendShard`); during attention only `q` goes to it and `(o, lse)` come back.
 * @module
 */
import { Buffer } from "node:buffer";
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { Data } from "effect";
import { type Backend, type ErrorFields, ShapeError, type TaggedErrorClass } from "@longctx/graph";
import { type KvShard, openBackendShard, openHostShard, type Part, type ShardShape } from "./shard.ts";

/** Where a worker's messages go. */
export interface ShardAddress {
  /** `redis://host:port[/db]`. */
  readonly url: string;
  /** The worker's id (unique per server and prefix). */
  readonly id: string;
  /** Key prefix (default `longctx:dist:`). */
  readonly prefix?: string;
}

/** The Effect tagged-error base of {@link TransportError} (`_tag: "TransportError"`, `message`, `hint`). */
export const TransportErrorBase: TaggedErrorClass<"TransportError", ErrorFields> = Data.TaggedError(
  "TransportError",
)<
  ErrorFields
>;
/** A failure of the transport or of a worker (the message carries the worker's own error). */
export class TransportError extends TransportErrorBase {}
const transportError = (message: string, hint: string) => new TransportError({ message, hint });

/** The few commands used, on a client that returns bulk strings as `Buffer`. */
interface Wire {
  hSet(key: string, fields: Record<string, string | Buffer>): Promise<unknown>;
  hmGet(key: string, fields: string[]): Promise<(Buffer | null)[]>;
  rPush(key: string, value: string): Promise<unknown>;
  blPop(key: string, timeout: number): Promise<{ key: Buffer; element: Buffer } | null>;
  del(key: string | string[]): Promise<unknown>;
}
interface Client {
  connect(): Promise<unknown>;
  close(): Promise<void>;
  destroy(): void;
  on(event: "error", f: (e: unknown) => void): unknown;
  withTypeMapping(m: Record<number, unknown>): unknown;
}

const connect = async (url: string): Promise<{ wire: Wire; client: Client }> => {
  if (new Uint8Array(Uint16Array.of(1).buffer)[0] !== 1) {
    throw transportError("this host is big-endian", "tensors go as little-endian f32 bytes: run on LE");
  }
  const { createClient, RESP_TYPES } = await import("redis");
  const client = createClient({
    url,
    socket: { connectTimeout: 5000, reconnectStrategy: false },
  }) as unknown as Client;
  client.on("error", () => {});
  try {
    await client.connect();
  } catch (e) {
    throw transportError(
      `cannot reach Redis at ${url}: ${e instanceof Error ? e.message : e}`,
      "start redis-server",
    );
  }
  return { client, wire: client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer }) as Wire };
};

const bytes = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
/** A `Buffer` of f32 bytes as an aligned `Float32Array` (copied). */
const floats = (b: Buffer | null): Float32Array => {
  if (!b || b.byteLength % 4 !== 0) {
    throw transportError("a tensor field is missing or not f32", "version skew?");
  }
  const out = new Float32Array(b.byteLength / 4);
  new Uint8Array(out.buffer).set(b);
  return out;
};
const num = (b: Buffer | null) => Number(b?.toString() ?? NaN);

/**
 * A shard in a worker process (see the module doc): `init`s the worker with the block `[start, start +
 * capacity)` of `shape`, then forwards appends and partial attentions. Requests run one at a time per shard
 * (the shards of a cache run in parallel). `timeoutMs` (default 60 s) bounds each reply.
 */
export const openRemoteShard = async (
  address: ShardAddress,
  shape: ShardShape,
  start: number,
  capacity: number,
  timeoutMs = 60_000,
): Promise<KvShard> => {
  const pre = `${address.prefix ?? "longctx:dist:"}${address.id}:`;
  const { wire, client } = await connect(address.url);
  const len = new Array<number>(shape.layers).fill(0);
  let n = 0, queue: Promise<unknown> = Promise.resolve();
  /** Send one request and wait for its reply fields (serialised per shard). */
  const call = (fields: Record<string, string | Buffer>, want: string[]): Promise<(Buffer | null)[]> => {
    const go = async () => {
      const id = String(n++);
      await wire.hSet(`${pre}m:${id}`, fields);
      await wire.rPush(`${pre}req`, id);
      const got = await wire.blPop(`${pre}rep`, timeoutMs / 1000);
      if (!got) {
        throw transportError(
          `worker ${address.id} did not answer ${fields.op} in ${timeoutMs} ms`,
          "start the worker (runtime/src/dist/worker.ts) with the same Redis URL and id",
        );
      }
      const rid = got.element.toString();
      const [err, ...vals] = await wire.hmGet(`${pre}r:${rid}`, ["err", ...want]);
      await wire.del(`${pre}r:${rid}`);
      if (rid !== id) throw transportError(`reply ${rid} to request ${id}`, "one coordinator per worker id");
      if (err) throw transportError(`worker ${address.id}: ${err.toString()}`, "see the worker's error");
      return vals;
    };
    const p = queue.then(go, go);
    queue = p.catch(() => {});
    return p;
  };
  await call({
    op: "init",
    shape: JSON.stringify(shape),
    start: String(start),
    capacity: String(capacity),
  }, []);
  return {
    name: `worker:${address.id}`,
    start,
    capacity,
    bytes: 2 * shape.layers * shape.kvHeads * capacity * shape.headDim * 4,
    length: (l) => len[l],
    async append(layer, k, v, rows) {
      if (len[layer] + rows > capacity) {
        throw new ShapeError({
          message: `shard worker:${address.id}, layer ${layer}: ${
            len[layer]
          } rows + ${rows} exceed ${capacity}`,
          hint: "give the sharded cache more shards or larger ones",
        });
      }
      len[layer] += rows;
      await call({ op: "append", layer: String(layer), n: String(rows), k: bytes(k), v: bytes(v) }, []);
    },
    async partial(layer, q, seq, pos): Promise<Part> {
      const [o, lse] = await call({
        op: "partial",
        layer: String(layer),
        seq: String(seq),
        pos: String(pos),
        q: bytes(q),
      }, ["o", "lse"]);
      return { o: floats(o), lse: floats(lse) };
    },
    async close() {
      try {
        await call({ op: "close" }, []);
      } finally {
        await client.close().catch(() => client.destroy());
      }
    },
  };
};

/**
 * The worker's loop: serve requests for `address` until a `close` (then resolve). The block lives on
 * `backend` (device memory on a GPU) when given, else in host memory. Errors of a request go back to the
 * coordinator as its reply's `err` field; the loop continues.
 */
export const serveShard = async (address: ShardAddress, backend?: Backend): Promise<void> => {
  const pre = `${address.prefix ?? "longctx:dist:"}${address.id}:`;
  const { wire, client } = await connect(address.url);
  let shard: KvShard | undefined;
  try {
    for (;;) {
      const got = await wire.blPop(`${pre}req`, 0);
      if (!got) continue;
      const id = got.element.toString();
      const key = `${pre}m:${id}`;
      const [op, layer, n, seq, pos, q, k, v, shape, start, capacity] = await wire.hmGet(key, [
        "op",
        "layer",
        "n",
        "seq",
        "pos",
        "q",
        "k",
        "v",
        "shape",
        "start",
        "capacity",
      ]);
      await wire.del(key);
      const reply: Record<string, string | Buffer> = { ok: "1" };
      const what = op?.toString();
      try {
        if (what === "init") {
          await shard?.close();
          const s = JSON.parse(shape!.toString()) as ShardShape;
          shard = backend
            ? await openBackendShard(backend, s, num(start), num(capacity), `${backend.kind}@${address.id}`)
            : openHostShard(s, num(start), num(capacity), `host@${address.id}`);
        } else if (!shard) {
          throw new Error(`${what} before init`);
        } else if (what === "append") {
          await shard.append(num(layer), floats(k), floats(v), num(n));
        } else if (what === "partial") {
          const r = await shard.partial(num(layer), floats(q), num(seq), num(pos));
          reply.o = bytes(r.o);
          reply.lse = bytes(r.lse);
        } else if (what !== "close") {
          throw new Error(`unknown op ${what}`);
        }
      } catch (e) {
        reply.err = e instanceof Error ? e.message : String(e);
      }
      await wire.hSet(`${pre}r:${id}`, reply);
      await wire.rPush(`${pre}rep`, id);
      if (what === "close") return;
    }
  } finally {
    await shard?.close();
    await client.close().catch(() => client.destroy());
  }
};

/** A worker process started by {@link spawnShardWorker}. */
export interface ShardWorker {
  /** The worker's address. */
  readonly address: ShardAddress;
  /** The child process. */
  readonly child: ChildProcess;
  /** Resolves with the exit code once the process has exited. */
  readonly exited: Promise<number | null>;
  /** Kill the process (SIGTERM) and wait for it. */
  stop(): Promise<void>;
}

/**
 * Start `worker.ts` in a new process of the running runtime (Deno: `deno run -A --no-check`, as `deno check` covers it; Bun: `bun`), serving
 * `address`; `backend` `"host"` (default) keeps the block in host memory, `"wgpu"` on a wgpu device.
 */
export const spawnShardWorker = (address: ShardAddress, backend: "host" | "wgpu" = "host"): ShardWorker => {
  const script = fileURLToPath(new URL("./worker.ts", import.meta.url));
  const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
  const args = [
    ...(isBun ? [] : ["run", "-A", "--unstable-webgpu", "--no-check"]),
    script,
    "--url",
    address.url,
    "--id",
    address.id,
    "--backend",
    backend,
    ...(address.prefix ? ["--prefix", address.prefix] : []),
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "inherit", "inherit"] });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return {
    address,
    child,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
};
