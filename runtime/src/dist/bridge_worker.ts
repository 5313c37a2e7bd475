/**
 * The bridge thread of `bridge.ts`: holds the remote shards' Redis clients and their `shardedKv`, runs each
 * request of the forward's thread, writes the answer into the shared buffer and wakes it (`Atomics.notify`).
 * @module
 */
import { openRemoteShard } from "./transport.ts";
import { type ShardedKv, shardedKv } from "./sharded.ts";
import { BRIDGE_HEADER, type BridgeRequest } from "./bridge.ts";

let kv: ShardedKv | undefined;
let ctl: Int32Array, st: Float64Array, pay: Float32Array, sab: SharedArrayBuffer;

const answer = (ok: boolean, message = "") => {
  if (!ok) {
    const b = new TextEncoder().encode(message);
    const n = Math.min(b.length, pay.byteLength);
    new Uint8Array(sab, BRIDGE_HEADER, n).set(b.subarray(0, n));
    ctl[2] = n;
  }
  if (kv) {
    st[0] = kv.stats.queryBytes;
    st[1] = kv.stats.partialBytes;
    st[2] = kv.stats.appendBytes;
    st[3] = kv.stats.calls;
  }
  ctl[1] = ok ? 1 : 0;
  Atomics.store(ctl, 0, 1);
  Atomics.notify(ctl, 0);
};

const run = async (r: BridgeRequest) => {
  if (r.op === "init") {
    const i = r.init!;
    sab = i.sab;
    ctl = new Int32Array(sab, 0, 16);
    st = new Float64Array(sab, 64, 4);
    pay = new Float32Array(sab, BRIDGE_HEADER);
    const shards = [];
    let at = 0;
    for (const [j, a] of i.addresses.entries()) {
      shards.push(await openRemoteShard(a, i.shape, at, i.capacities[j]));
      at += i.capacities[j];
    }
    kv = shardedKv(i.shape, shards);
    return;
  }
  if (!kv) throw new Error(`${r.op} before init`);
  const { heads: H, kvHeads: KH, headDim: D } = kv.shape;
  const n = r.n ?? 0;
  if (r.op === "append") {
    const m = KH * n * D;
    await kv.append(r.layer!, pay.slice(0, m), pay.slice(m, 2 * m), n);
  } else if (r.op === "attend") {
    const p = await kv.attend(r.layer!, pay.slice(0, H * n * D), n, r.pos!);
    pay.set(p.o, 0);
    pay.set(p.lse, H * n * D);
  } else if (r.op === "close") {
    await kv.close();
    kv = undefined;
  }
};

// requests run one at a time, in order
let chain: Promise<void> = Promise.resolve();
(self as unknown as { onmessage: (e: MessageEvent<BridgeRequest>) => void }).onmessage = (e) => {
  const r = e.data;
  chain = chain.then(() => run(r)).then(
    () => {
      answer(true);
      if (r.op === "init") (self as unknown as { postMessage(x: unknown): void }).postMessage("ready");
    },
    (err) => {
      answer(false, err instanceof Error ? err.message : String(err));
      if (r.op === "init") (self as unknown as { postMessage(x: unknown): void }).postMessage("failed");
    },
  );
};
