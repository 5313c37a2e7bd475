/**
 * Parallel dense causal attention on Web Workers (Deno and Bun), behind the synchronous `AttentionFn`
 * contract: the calling thread hands a job to the ready workers (`postMessage` of SharedArrayBuffer-backed
 * arrays), claims work items itself from a shared atomic counter, and blocks in `Atomics.wait` until every
 * worker it engaged has counted itself done. OpenBLAS runs single-threaded meanwhile (one GEMM per thread,
 * no oversubscription), and its previous thread count is restored afterwards.
 *
 * Threads: `LONGCTX_ATTN_THREADS` (default: the CPU count, at most 8; `1` disables the pool) or
 * {@link setAttentionThreads}. Workers start on first use (asynchronously: calls made before they are ready
 * run on the calling thread alone) and close themselves after {@link IDLE_MS} idle.
 * @module
 */
import { setBlasThreads, type Sgemm } from "./blas.ts";
import { blockCount, type BlockJob, runBlocks } from "./attn_block.ts";

/** Control block layout (Int32 indices) shared with `attn_worker.ts`. */
export const CTRL_NEXT = 0;
export const CTRL_DONE = 1;
export const CTRL_ERR = 2;
export const CTRL_STATUS = 3;
/** Worker status values. */
export const ST_ABSENT = 0;
export const ST_READY = 1;
export const ST_BUSY = 2;
export const ST_CLOSED = 3;
export const ST_DEAD = 4;
/** A worker closes itself after this long without a job (ms). */
export const IDLE_MS = 3000;
const MAX_WORKERS = 8;
/** Wait this long for the workers of one call before giving up on the pool (ms). */
const WAIT_MS = 120_000;

type Env = { get(name: string): string | undefined };
const envGet = (name: string): string | undefined => {
  const g = globalThis as unknown as { Deno?: { env: Env }; process?: { env: Record<string, string> } };
  try {
    return g.Deno ? g.Deno.env.get(name) : g.process?.env[name];
  } catch {
    return undefined;
  }
};

const defaultThreads = (): number => {
  const forced = Number(envGet("LONGCTX_ATTN_THREADS"));
  if (Number.isInteger(forced) && forced >= 1) return forced;
  const n = (globalThis as unknown as { navigator?: { hardwareConcurrency?: number } }).navigator
    ?.hardwareConcurrency ?? 1;
  return Math.max(1, Math.min(MAX_WORKERS, n));
};

let threads: number | undefined;
/** Threads for the dense attention (the caller plus `n − 1` workers); `1` disables the pool. */
export const setAttentionThreads = (n: number): void => {
  threads = Math.max(1, Math.min(MAX_WORKERS, Math.floor(n)));
};
/** Threads the dense attention uses (see the module note). */
export const attentionThreads = (): number => threads ?? (threads = defaultThreads());

const ctrl = typeof SharedArrayBuffer === "function"
  ? new Int32Array(new SharedArrayBuffer(4 * (CTRL_STATUS + MAX_WORKERS)))
  : undefined;
const workers: (Worker | undefined)[] = [];
let broken = false;

/** Start workers whose slot is empty or closed (asynchronous; they become usable once ready). */
const ensureWorkers = (n: number) => {
  if (!ctrl || typeof Worker !== "function") return;
  for (let i = 0; i < n; i++) {
    const st = Atomics.load(ctrl, CTRL_STATUS + i);
    if (workers[i] && st !== ST_CLOSED && st !== ST_DEAD) continue;
    if (st === ST_DEAD) continue;
    try {
      const w = new Worker(new URL("./attn_worker.ts", import.meta.url).href, { type: "module" });
      Atomics.store(ctrl, CTRL_STATUS + i, ST_ABSENT);
      w.onerror = (e) => {
        Atomics.store(ctrl, CTRL_STATUS + i, ST_DEAD);
        (e as Event).preventDefault?.();
      };
      (w as unknown as { unref?: () => void }).unref?.(); // Bun: don't keep the process alive
      w.postMessage({ type: "init", ctrl: ctrl.buffer, index: i });
      workers[i] = w;
    } catch {
      Atomics.store(ctrl, CTRL_STATUS + i, ST_DEAD);
    }
  }
};

const isShared = (a: Float32Array) =>
  typeof SharedArrayBuffer === "function" && a.buffer instanceof SharedArrayBuffer;

/**
 * Dense causal attention on the pool: `q [heads, seq, headDim]`, `k`/`v [kvHeads, kvStride, headDim]` (all
 * SharedArrayBuffer-backed f32) → `o [heads, seq, headDim]` (SharedArrayBuffer-backed), or `undefined` when
 * the pool cannot take it (fewer than 2 threads, arrays not shared, no OpenBLAS, no worker ready yet, or a
 * worker failed): the caller then computes it alone. Never throws.
 */
export const pooledAttention = (
  job: BlockJob,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  sgemm: Sgemm,
): Float32Array | undefined => {
  const nThreads = attentionThreads();
  if (broken || !ctrl || nThreads < 2 || !sgemm.name.startsWith("openblas")) return undefined;
  if (!isShared(q) || !isShared(k) || !isShared(v)) return undefined;
  const nWorkers = nThreads - 1;
  ensureWorkers(nWorkers);
  const claimed: number[] = [];
  for (let i = 0; i < nWorkers; i++) {
    if (Atomics.compareExchange(ctrl, CTRL_STATUS + i, ST_READY, ST_BUSY) === ST_READY) claimed.push(i);
  }
  if (claimed.length === 0) return undefined;
  const n = blockCount(job);
  const o = new Float32Array(new SharedArrayBuffer(4 * job.heads * job.seq * job.headDim));
  Atomics.store(ctrl, CTRL_NEXT, 0);
  Atomics.store(ctrl, CTRL_DONE, 0);
  Atomics.store(ctrl, CTRL_ERR, 0);
  const prev = setBlasThreads(1);
  try {
    for (const i of claimed) workers[i]!.postMessage({ type: "job", job, n, q, k, v, o });
    runBlocks(job, q, k, v, o, sgemm, () => {
      const t = Atomics.add(ctrl, CTRL_NEXT, 1);
      return t < n ? t : -1;
    });
    const t0 = Date.now();
    for (;;) {
      const done = Atomics.load(ctrl, CTRL_DONE);
      if (done >= claimed.length) break;
      if (Date.now() - t0 > WAIT_MS) {
        broken = true; // a worker hung: never use the pool again in this process
        return undefined;
      }
      Atomics.wait(ctrl, CTRL_DONE, done, 1000);
    }
  } finally {
    if (prev > 0) setBlasThreads(prev);
  }
  return Atomics.load(ctrl, CTRL_ERR) === 0 ? o : undefined;
};
