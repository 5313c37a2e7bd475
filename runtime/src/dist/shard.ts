/**
 * KV shards of DistAttention (Infinite-LLM, arXiv 2401.02669 §4): one shard holds, for every layer, the keys
 * and values of one contiguous block of a sequence's positions, `[start, start + capacity)`, and computes the
 * partial attention of queries over its block locally with `distattn.partialAttn`; only the queries go in and
 * `(o, lse)` come out. Two kinds live in this process: {@link openHostShard} (host memory, the operator's CPU
 * reference called directly, also synchronously) and {@link openBackendShard} (the operator lowered on any
 * `Backend`: wgpu, webgpu or cpu; its block buffers stay on that backend). `transport.ts` adds shards in worker
 * processes.
 * @module
 */
import { Effect } from "effect";
import {
  type Backend,
  type DeviceBuffer,
  graph,
  hostTensor,
  lower,
  type Program,
  ShapeError,
} from "@longctx/graph";
import { type dense, distattn } from "@longctx/ops";

/** The attention shape every shard of a sequence shares. */
export interface ShardShape {
  /** Transformer layers (one block per layer). */
  readonly layers: number;
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads (divides `heads`). */
  readonly kvHeads: number;
  /** Elements per head vector. */
  readonly headDim: number;
}

/** One partial attention: `o f32 [heads, seq, headDim]`, `lse f32 [heads, seq]` (−Infinity: no key seen). */
export type Part = dense.AttentionPart;

/** A shard: the KV block `[start, start + capacity)` of every layer of one sequence (see the module doc). */
export interface KvShard {
  /** A name for reports (`host`, `wgpu:1`, `worker:s2`). */
  readonly name: string;
  /** Global position of the block's row 0. */
  readonly start: number;
  /** Rows the block holds at most (tokens). */
  readonly capacity: number;
  /** Bytes of KV storage the shard holds: `2 · layers · kvHeads · capacity · headDim · 4`. */
  readonly bytes: number;
  /** Valid rows of `layer`'s block. */
  length(layer: number): number;
  /**
   * Append `n` rows to `layer`'s block: `k`, `v f32 [kvHeads, n, headDim]` (K after RoPE), the keys at global
   * positions `start + length(layer) …`. Rejects with `ShapeError` when they do not fit.
   */
  append(layer: number, k: Float32Array, v: Float32Array, n: number): Promise<void>;
  /**
   * Partial attention of `q f32 [heads, seq, headDim]` (global positions `pos …`) over `layer`'s valid rows:
   * query `i` sees the block's keys at positions `≤ pos + i`.
   */
  partial(layer: number, q: Float32Array, seq: number, pos: number): Promise<Part>;
  /** Free the shard's memory. */
  close(): Promise<void>;
}

/** A shard that also answers synchronously (host memory): what the CPU model forward's `AttentionFn` needs. */
export interface SyncKvShard extends KvShard {
  /** {@link KvShard.append}, synchronously (throws `ShapeError`). */
  appendSync(layer: number, k: Float32Array, v: Float32Array, n: number): void;
  /** {@link KvShard.partial}, synchronously. */
  partialSync(layer: number, q: Float32Array, seq: number, pos: number): Part;
}

const overflow = (name: string, layer: number, at: number, n: number, capacity: number) =>
  new ShapeError({
    message: `shard ${name}, layer ${layer}: ${at} rows + ${n} new exceed its capacity ${capacity}`,
    hint: "give the sharded cache more shards or larger ones (its capacities sum to the longest context)",
  });

const checkRows = (s: ShardShape, k: Float32Array, v: Float32Array, n: number) => {
  const want = s.kvHeads * n * s.headDim;
  if (k.length !== want || v.length !== want) {
    throw new ShapeError({
      message: `append of ${n} rows: k has ${k.length} values, v ${v.length}, expected ${want}`,
      hint: "k and v are [kvHeads, n, headDim]",
    });
  }
};

/** `rows [KH, n, D]` into `block [KH, cap, D]` at row `at`. */
const putRows = (
  block: Float32Array,
  rows: Float32Array,
  s: ShardShape,
  cap: number,
  at: number,
  n: number,
) => {
  const D = s.headDim;
  for (let g = 0; g < s.kvHeads; g++) {
    block.set(rows.subarray(g * n * D, (g + 1) * n * D), (g * cap + at) * D);
  }
};

/**
 * A shard in host memory: per layer `k`, `v f32 [kvHeads, capacity, headDim]`; the partial attention is
 * `distattn.partialAttn`'s CPU reference (float64 accumulation) called directly, so it also runs
 * synchronously (inside the CPU model forward).
 */
export const openHostShard = (
  shape: ShardShape,
  start: number,
  capacity: number,
  name = "host",
): SyncKvShard => {
  const { layers, kvHeads: KH, headDim: D, heads: H } = shape;
  const k = Array.from({ length: layers }, () => new Float32Array(KH * capacity * D));
  const v = Array.from({ length: layers }, () => new Float32Array(KH * capacity * D));
  const len = new Array<number>(layers).fill(0);
  const params = distattn.partialAttnParams();
  const kd = { ...distattn.partialAttn.inputs.kBlock, shape: [KH, capacity, D] };
  const shard: SyncKvShard = {
    name,
    start,
    capacity,
    bytes: 2 * layers * KH * capacity * D * 4,
    length: (l) => len[l],
    appendSync(l, kr, vr, n) {
      checkRows(shape, kr, vr, n);
      if (len[l] + n > capacity) throw overflow(name, l, len[l], n, capacity);
      putRows(k[l], kr, shape, capacity, len[l], n);
      putRows(v[l], vr, shape, capacity, len[l], n);
      len[l] += n;
    },
    partialSync(l, q, seq, pos) {
      const r = distattn.partialAttn.cpu(params, {
        q: hostTensor("f32", distattn.partialAttn.inputs.q.dims, [H, seq, D], q),
        kBlock: hostTensor("f32", kd.dims, kd.shape, k[l]),
        vBlock: hostTensor("f32", kd.dims, kd.shape, v[l]),
      }, { scalars: { pos, start, len: len[l] } });
      return { o: r.o.data, lse: r.lse.data };
    },
    append: (l, kr, vr, n) => new Promise((resolve) => resolve(shard.appendSync(l, kr, vr, n))),
    partial: (l, q, seq, pos) => new Promise((resolve) => resolve(shard.partialSync(l, q, seq, pos))),
    close: () => Promise.resolve(),
  };
  return shard;
};

/** A one-node `distattn.partialAttn` program for `seq` queries over the block buffers `kb`, `vb` (bound). */
const partialProgram = async (
  backend: Backend,
  shape: ShardShape,
  seq: number,
  capacity: number,
  kb: DeviceBuffer,
  vb: DeviceBuffer,
): Promise<Program> => {
  const op = distattn.partialAttn;
  const g = graph("distattn.partial");
  const q = g.input("q", op.inputs.q), kIn = g.input("kBlock", op.inputs.kBlock);
  const vIn = g.input("vBlock", op.inputs.vBlock);
  const r = g.add(op, distattn.partialAttnParams(), { q, kBlock: kIn, vBlock: vIn });
  g.output("o", r.o).output("lse", r.lse);
  const gr = await Effect.runPromise(g.build());
  const { heads: H, kvHeads: KH, headDim: D } = shape;
  return await Effect.runPromise(
    lower(gr, backend, {
      q: { ...op.inputs.q, shape: [H, seq, D] },
      kBlock: { ...op.inputs.kBlock, shape: [KH, capacity, D] },
      vBlock: { ...op.inputs.vBlock, shape: [KH, capacity, D] },
    }, { bind: { kBlock: kb, vBlock: vb }, label: `distattn.${seq}` }),
  );
};

/**
 * A shard on `backend`: per layer two buffers `[kvHeads, capacity, headDim]` f32 on the backend (device memory
 * on a GPU) hold the block; appends upload only the new rows (one upload per KV head and tensor); the partial
 * attention is a lowered `distattn.partialAttn` program bound to those buffers, one per (layer, query count),
 * lowered on first use (decode: `seq = 1`; a prefill chunk: its length). Rejects with the backend's error
 * when the buffers cannot be allocated.
 */
export const openBackendShard = async (
  backend: Backend,
  shape: ShardShape,
  start: number,
  capacity: number,
  name = `${backend.kind}`,
): Promise<KvShard> => {
  const { layers, heads: H, kvHeads: KH, headDim: D } = shape;
  const blockBytes = KH * capacity * D * 4;
  const bufs: DeviceBuffer[] = [];
  const run = <A, E>(e: Effect.Effect<A, E>) => Effect.runPromise(e);
  try {
    for (let l = 0; l < 2 * layers; l++) bufs.push(await run(backend.allocate(blockBytes, `${name}.kv${l}`)));
  } catch (e) {
    for (const b of bufs) backend.release(b);
    throw e;
  }
  const programs = new Map<string, Program>();
  const programFor = async (l: number, seq: number) => {
    const key = `${l}.${seq}`;
    let p = programs.get(key);
    if (!p) {
      p = await partialProgram(backend, shape, seq, capacity, bufs[2 * l], bufs[2 * l + 1]);
      programs.set(key, p);
    }
    return p;
  };
  const len = new Array<number>(layers).fill(0);
  return {
    name,
    start,
    capacity,
    bytes: 2 * layers * blockBytes,
    length: (l) => len[l],
    async append(l, kr, vr, n) {
      checkRows(shape, kr, vr, n);
      if (len[l] + n > capacity) throw overflow(name, l, len[l], n, capacity);
      for (const [buf, rows] of [[bufs[2 * l], kr], [bufs[2 * l + 1], vr]] as const) {
        for (let g = 0; g < KH; g++) {
          await run(
            backend.upload(buf, rows.subarray(g * n * D, (g + 1) * n * D), (g * capacity + len[l]) * D * 4),
          );
        }
      }
      len[l] += n;
    },
    async partial(l, q, seq, pos) {
      const p = await programFor(l, seq);
      await run(p.write("q", hostTensor("f32", distattn.partialAttn.inputs.q.dims, [H, seq, D], q)));
      await run(p.run({ scalars: { pos, start, len: len[l] } }));
      const o = (await run(p.read("o"))).data as Float32Array;
      const lse = (await run(p.read("lse"))).data as Float32Array;
      return { o, lse };
    },
    close() {
      for (const p of programs.values()) p.release();
      programs.clear();
      for (const b of bufs.splice(0)) backend.release(b);
      return Promise.resolve();
    },
  };
};
