/**
 * Synchronous access to shards in worker processes, for the CPU model forward (whose `AttentionFn` is
 * synchronous): a thread of this process (a `Worker` running `bridge_worker.ts`) holds the Redis clients of
 * the remote shards (`openRemoteShard`) and their `shardedKv`; the forward's thread hands it a request
 * through a `SharedArrayBuffer` (the tensors copied in, a small message posted) and blocks in `Atomics.wait`
 * until the thread has awaited every shard and written the merged `(o, lse)` back. Only this process's two
 * threads share that memory; between processes, the Redis transport carries the queries and partials.
 *
 * Memory layout of the buffer: bytes 0–63 `Int32` control (`[0]` 0 while a request runs, 1 when answered;
 * `[1]` 1 ok / 0 error; `[2]` UTF-8 bytes of the error), bytes 64–95 `Float64` stats (query, partial, append
 * bytes, calls), bytes 128… the `f32` payload.
 * @module
 */
import { ShapeError } from "@longctx/graph";
import type { Part, ShardShape } from "./shard.ts";
import type { SyncKvAttention, TransferStats } from "./sharded.ts";
import { type ShardAddress, TransportError } from "./transport.ts";

/** A request of the forward's thread to the bridge thread. */
export interface BridgeRequest {
  /** What to do. */
  readonly op: "init" | "append" | "attend" | "close";
  /** Layer (append, attend). */
  readonly layer?: number;
  /** Rows appended, or queries attended. */
  readonly n?: number;
  /** Position of query 0 (attend). */
  readonly pos?: number;
  /** init: the shared buffer, the workers' addresses and the shards' capacities, the shape. */
  readonly init?: {
    readonly sab: SharedArrayBuffer;
    readonly addresses: readonly ShardAddress[];
    readonly capacities: readonly number[];
    readonly shape: ShardShape;
  };
}

/** Bytes of the control and stats header before the payload. */
export const BRIDGE_HEADER = 128;

/** A {@link SyncKvAttention} over worker-process shards, and its shutdown. */
export interface BridgedKv extends SyncKvAttention {
  /** Close the shards (their workers exit) and stop the bridge thread. */
  close(): Promise<void>;
}

/**
 * Open shards in the worker processes at `addresses` (started beforehand, e.g. by `spawnShardWorker`), shard
 * `i` holding `capacities[i]` tokens in position order, behind a bridge thread (see the module doc). Calls
 * carry at most `maxRows` rows or queries (the prefill chunk). Rejects with `TransportError` when a worker
 * cannot be reached.
 */
export const openBridgedKv = async (
  addresses: readonly ShardAddress[],
  shape: ShardShape,
  capacities: readonly number[],
  maxRows: number,
  timeoutMs = 120_000,
): Promise<BridgedKv> => {
  const { heads: H, kvHeads: KH, headDim: D } = shape;
  const floats = Math.max(H * maxRows * (D + 1), 2 * KH * maxRows * D);
  const sab = new SharedArrayBuffer(BRIDGE_HEADER + 4 * floats);
  const ctl = new Int32Array(sab, 0, 16), st = new Float64Array(sab, 64, 4);
  const pay = new Float32Array(sab, BRIDGE_HEADER, floats);
  const worker = new Worker(new URL("./bridge_worker.ts", import.meta.url).href, { type: "module" });
  const len = new Array<number>(shape.layers).fill(0);
  const error = () => {
    const n = ctl[2];
    const text = new TextDecoder().decode(new Uint8Array(sab, BRIDGE_HEADER, n).slice());
    return new TransportError({ message: text, hint: "see the worker's message; is every worker running?" });
  };
  const call = (r: BridgeRequest) => {
    Atomics.store(ctl, 0, 0);
    worker.postMessage(r);
    if (Atomics.wait(ctl, 0, 0, timeoutMs) === "timed-out") {
      throw new TransportError({
        message: `the bridge thread did not answer ${r.op} in ${timeoutMs} ms`,
        hint: "check that the shard workers and redis-server are running",
      });
    }
    if (ctl[1] !== 1) throw error();
  };
  const ready = new Promise<void>((resolve, reject) => {
    worker.onmessage = () => (ctl[1] === 1 ? resolve() : reject(error()));
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new TransportError({ message: `bridge thread: ${e.message}`, hint: "see the error above" }));
    };
  });
  worker.postMessage({ op: "init", init: { sab, addresses, capacities, shape } } satisfies BridgeRequest);
  try {
    await ready;
  } catch (e) {
    worker.terminate();
    throw e;
  }
  const stats: TransferStats = { queryBytes: 0, partialBytes: 0, appendBytes: 0, calls: 0 };
  const readStats = () => {
    stats.queryBytes = st[0];
    stats.partialBytes = st[1];
    stats.appendBytes = st[2];
    stats.calls = st[3];
  };
  const tooMany = (n: number) => {
    if (n > maxRows) {
      throw new ShapeError({
        message: `a call of ${n} rows exceeds the bridge's ${maxRows}`,
        hint: "open the bridge with maxRows ≥ the prefill chunk",
      });
    }
  };
  return {
    shape,
    stats,
    length: (l) => len[l],
    appendSync(layer, k, v, n) {
      tooMany(n);
      pay.set(k, 0);
      pay.set(v, k.length);
      call({ op: "append", layer, n });
      len[layer] += n;
      readStats();
    },
    attendSync(layer, q, seq, pos): Part {
      tooMany(seq);
      pay.set(q, 0);
      call({ op: "attend", layer, n: seq, pos });
      readStats();
      const o = pay.slice(0, H * seq * D), lse = pay.slice(H * seq * D, H * seq * (D + 1));
      return { o, lse };
    },
    close() {
      try {
        call({ op: "close" });
      } finally {
        worker.terminate();
      }
      return Promise.resolve();
    },
  };
};
