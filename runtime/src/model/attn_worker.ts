/**
 * Attention worker (started by `attn_pool.ts`; Deno and Bun module workers). Messages:
 * `{ type: "init", ctrl, index }` (loads OpenBLAS, then marks itself ready in the shared control block) and
 * `{ type: "job", job, n, q, k, v, o }` (SharedArrayBuffer-backed f32 arrays; runs work items claimed from the
 * shared counter with `runBlocks`, then counts itself done and notifies the caller). It closes itself after
 * {@link IDLE_MS} without work so that it never keeps a finished process alive.
 * @module
 */
import { loadSgemm, type Sgemm } from "./blas.ts";
import { type BlockJob, runBlocks } from "./attn_block.ts";
import {
  CTRL_DONE,
  CTRL_ERR,
  CTRL_NEXT,
  CTRL_STATUS,
  IDLE_MS,
  ST_BUSY,
  ST_CLOSED,
  ST_READY,
} from "./attn_pool.ts";

interface WorkerScope {
  onmessage: ((e: MessageEvent) => void) | null;
  close(): void;
}
const scope = globalThis as unknown as WorkerScope;

let ctrl: Int32Array | undefined;
let me = 0;
let sgemm: Sgemm | undefined;
let timer: ReturnType<typeof setTimeout> | undefined;

const arm = () => {
  if (timer !== undefined) clearTimeout(timer);
  timer = setTimeout(() => {
    // Close only when no job was handed to us meanwhile (the caller flips READY → BUSY before posting).
    if (ctrl && Atomics.compareExchange(ctrl, CTRL_STATUS + me, ST_READY, ST_CLOSED) === ST_READY) {
      scope.close();
    }
  }, IDLE_MS);
};

scope.onmessage = (e: MessageEvent) => {
  const m = e.data as
    | { type: "init"; ctrl: SharedArrayBuffer; index: number }
    | {
      type: "job";
      job: BlockJob;
      n: number;
      q: Float32Array;
      k: Float32Array;
      v: Float32Array;
      o: Float32Array;
    };
  if (m.type === "init") {
    ctrl = new Int32Array(m.ctrl);
    me = m.index;
    loadSgemm().then((s) => {
      sgemm = s;
      Atomics.store(ctrl!, CTRL_STATUS + me, ST_READY);
      arm();
    });
    return;
  }
  const c = ctrl!;
  try {
    if (Atomics.load(c, CTRL_STATUS + me) !== ST_BUSY || !sgemm) throw new Error("not claimed");
    runBlocks(m.job, m.q, m.k, m.v, m.o, sgemm, () => {
      const t = Atomics.add(c, CTRL_NEXT, 1);
      return t < m.n ? t : -1;
    });
  } catch {
    Atomics.store(c, CTRL_ERR, 1);
  }
  Atomics.store(c, CTRL_STATUS + me, ST_READY);
  Atomics.add(c, CTRL_DONE, 1);
  Atomics.notify(c, CTRL_DONE);
  arm();
};
