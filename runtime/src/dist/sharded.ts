/**
 * A sharded KV cache (DistAttention, Infinite-LLM arXiv 2401.02669 §4): the KV of one sequence split into
 * contiguous blocks, shard `i` holding the positions `[start_i, start_i + capacity_i)` (the shards in order,
 * `start_0 = 0`, `start_{i+1} = start_i + capacity_i`), each on its own backend or process. New tokens'
 * K/V rows go once to the shard that owns their positions; attention sends the queries to every shard that
 * holds rows, gets back its `(o, lse)` (`distattn.partialAttn`) and merges them exactly by LSE
 * (`mergeAttentionReference`, the CPU reference of `distattn.merge`). The KV itself never moves after its
 * append. {@link shardedAttention} plugs it into the CPU model forward (`ForwardOptions.attention`).
 * @module
 */
import { ShapeError } from "@longctx/graph";
import { dense } from "@longctx/ops";
import type { AttentionFn } from "../model/llama.ts";
import type { KvShard, Part, ShardShape, SyncKvShard } from "./shard.ts";

/** Bytes that crossed between the coordinator and the shards, by kind. */
export interface TransferStats {
  /** Queries sent (`4 · heads · seq · headDim` per shard that holds rows, per layer call). */
  queryBytes: number;
  /** Partial results received (`4 · heads · seq · (headDim + 1)` per such shard and call). */
  partialBytes: number;
  /** K/V rows sent once at append (`2 · 4 · kvHeads · headDim` per token and layer). */
  appendBytes: number;
  /** Attention calls (one per layer and forward call). */
  calls: number;
}

/** The sharded cache of one sequence (see the module doc). */
export interface ShardedKv {
  /** The shape every shard shares. */
  readonly shape: ShardShape;
  /** The shards, in position order. */
  readonly shards: readonly KvShard[];
  /** Total capacity in tokens (the sum of the shards'). */
  readonly capacity: number;
  /** Bytes moved so far (reset it with {@link ShardedKv.resetStats}). */
  readonly stats: TransferStats;
  /** Zero the transfer counters. */
  resetStats(): void;
  /** Valid rows of `layer` (over all shards). */
  length(layer: number): number;
  /**
   * Append rows at the end of `layer`: `k`, `v f32 [kvHeads, n, headDim]`, split across the shards that own
   * their positions. Rejects with `ShapeError` past the total capacity.
   */
  append(layer: number, k: Float32Array, v: Float32Array, n: number): Promise<void>;
  /** Attention of `q f32 [heads, seq, headDim]` (global positions `pos …`) over `layer`'s rows, merged. */
  attend(layer: number, q: Float32Array, seq: number, pos: number): Promise<Part>;
  /** Close every shard. */
  close(): Promise<void>;
}

/** What {@link shardedAttention} needs: a sharded cache that appends and attends synchronously. */
export interface SyncKvAttention {
  /** The shape every shard shares. */
  readonly shape: ShardShape;
  /** Bytes moved so far. */
  readonly stats: TransferStats;
  /** Valid rows of `layer` (over all shards). */
  length(layer: number): number;
  /** {@link ShardedKv.append}, synchronously (throws `ShapeError`). */
  appendSync(layer: number, k: Float32Array, v: Float32Array, n: number): void;
  /** {@link ShardedKv.attend}, synchronously. */
  attendSync(layer: number, q: Float32Array, seq: number, pos: number): Part;
}

/** A sharded cache whose shards all answer synchronously (host shards): usable inside the CPU forward. */
export interface SyncShardedKv extends ShardedKv, SyncKvAttention {}

/** Rows `[r0, r0 + n)` of `x [kvHeads, rows, headDim]` as `[kvHeads, n, headDim]`. */
const rowsOf = (x: Float32Array, s: ShardShape, rows: number, r0: number, n: number): Float32Array => {
  if (r0 === 0 && n === rows) return x;
  const D = s.headDim, out = new Float32Array(s.kvHeads * n * D);
  for (let g = 0; g < s.kvHeads; g++) {
    out.set(x.subarray((g * rows + r0) * D, (g * rows + r0 + n) * D), g * n * D);
  }
  return out;
};

const build = <S extends KvShard>(shape: ShardShape, shards: readonly S[]) => {
  if (shards.length === 0) {
    throw new ShapeError({ message: "a sharded cache of 0 shards", hint: "give at least one shard" });
  }
  let at = 0;
  for (const [i, s] of shards.entries()) {
    if (s.start !== at) {
      throw new ShapeError({
        message: `shard ${i} (${s.name}) starts at ${s.start}, expected ${at}`,
        hint: "shards tile the positions in order: start_{i+1} = start_i + capacity_i",
      });
    }
    at += s.capacity;
  }
  const stats: TransferStats = { queryBytes: 0, partialBytes: 0, appendBytes: 0, calls: 0 };
  const length = (l: number) => shards.reduce((a, s) => a + s.length(l), 0);
  /** The pieces of an append of `n` rows to `layer`: (shard, first row of k/v, rows). */
  const pieces = (l: number, n: number) => {
    let p = length(l), left = n;
    const out: { shard: S; r0: number; n: number }[] = [];
    for (const s of shards) {
      if (left === 0) break;
      if (p >= s.start + s.capacity) continue;
      const m = Math.min(left, s.start + s.capacity - p);
      out.push({ shard: s, r0: n - left, n: m });
      left -= m;
      p += m;
    }
    if (left > 0) {
      throw new ShapeError({
        message: `layer ${l}: ${length(l)} rows + ${n} new exceed the sharded cache's capacity ${at}`,
        hint: "add a shard or enlarge one",
      });
    }
    return out;
  };
  const count = (seq: number, holders: number) => {
    const { heads: H, headDim: D } = shape;
    stats.calls++;
    stats.queryBytes += holders * 4 * H * seq * D;
    stats.partialBytes += holders * 4 * H * seq * (D + 1);
  };
  const merge = (parts: Part[], seq: number): Part =>
    parts.length === 1 ? parts[0] : dense.mergeAttentionReference(parts, shape.heads, seq, shape.headDim);
  return { stats, length, pieces, count, merge, capacity: at };
};

/** A sharded cache over `shards` (ordered, tiling `[0, Σ capacity)`); throws `ShapeError` otherwise. */
export const shardedKv = (shape: ShardShape, shards: readonly KvShard[]): ShardedKv => {
  const b = build(shape, shards);
  const { stats } = b;
  return {
    shape,
    shards,
    capacity: b.capacity,
    stats,
    resetStats: () => Object.assign(stats, { queryBytes: 0, partialBytes: 0, appendBytes: 0, calls: 0 }),
    length: b.length,
    async append(l, k, v, n) {
      for (const p of b.pieces(l, n)) {
        stats.appendBytes += 2 * 4 * shape.kvHeads * p.n * shape.headDim;
        await p.shard.append(l, rowsOf(k, shape, n, p.r0, p.n), rowsOf(v, shape, n, p.r0, p.n), p.n);
      }
    },
    async attend(l, q, seq, pos) {
      const holders = shards.filter((s) => s.length(l) > 0);
      b.count(seq, holders.length);
      const parts = await Promise.all(holders.map((s) => s.partial(l, q, seq, pos)));
      return b.merge(parts, seq);
    },
    close: async () => {
      for (const s of shards) await s.close();
    },
  };
};

/** {@link shardedKv} over shards that answer synchronously (see {@link SyncShardedKv}). */
export const syncShardedKv = (shape: ShardShape, shards: readonly SyncKvShard[]): SyncShardedKv => {
  const b = build(shape, shards);
  const base = shardedKv(shape, shards);
  return {
    ...base,
    appendSync(l, k, v, n) {
      for (const p of b.pieces(l, n)) {
        base.stats.appendBytes += 2 * 4 * shape.kvHeads * p.n * shape.headDim;
        p.shard.appendSync(l, rowsOf(k, shape, n, p.r0, p.n), rowsOf(v, shape, n, p.r0, p.n), p.n);
      }
    },
    attendSync(l, q, seq, pos) {
      const holders = shards.filter((s) => s.length(l) > 0);
      base.stats.calls++;
      base.stats.queryBytes += holders.length * 4 * shape.heads * seq * shape.headDim;
      base.stats.partialBytes += holders.length * 4 * shape.heads * seq * (shape.headDim + 1);
      return b.merge(holders.map((s) => s.partialSync(l, q, seq, pos)), seq);
    },
  };
};

/**
 * The CPU model forward's attention (`ForwardOptions.attention`) over a sharded cache: per layer call, the
 * new rows `offset … offset + seq − 1` of the forward's own cache (which `llama.ts` writes before calling
 * attention) are appended to the shards once, then the queries attend over the shards only and the parts
 * are merged; the forward's cache is never read for attention. The shards must start empty with the
 * forward's cache, and their shape match the model's. Throws `ShapeError` on a mismatch. Shards in worker
 * processes answer through `bridge.ts` ({@link SyncKvAttention} over a thread that awaits them).
 */
export const shardedAttention = (kv: SyncKvAttention): AttentionFn => (q, k, v, ctx) => {
  const s = kv.shape;
  if (
    ctx.heads !== s.heads || ctx.kvHeads !== s.kvHeads || ctx.headDim !== s.headDim || ctx.layer >= s.layers
  ) {
    throw new ShapeError({
      message:
        `the model's attention (layer ${ctx.layer}, ${ctx.heads}/${ctx.kvHeads} heads of ${ctx.headDim}) ` +
        `does not match the sharded cache (${s.layers} layers, ${s.heads}/${s.kvHeads} heads of ${s.headDim})`,
      hint: "build the shards with the model's config",
    });
  }
  if (kv.length(ctx.layer) !== ctx.offset) {
    throw new ShapeError({
      message: `layer ${ctx.layer}: the shards hold ${
        kv.length(ctx.layer)
      } rows, the forward is at ${ctx.offset}`,
      hint: "start the shards empty with a fresh model cache, and run every forward call through them",
    });
  }
  const D = s.headDim, seq = ctx.seq;
  const rows = (x: Float32Array) => {
    const out = new Float32Array(s.kvHeads * seq * D);
    for (let g = 0; g < s.kvHeads; g++) {
      const src = (g * ctx.kvStride + ctx.offset) * D;
      out.set(x.subarray(src, src + seq * D), g * seq * D);
    }
    return out;
  };
  kv.appendSync(ctx.layer, rows(k), rows(v), seq);
  return kv.attendSync(ctx.layer, q, seq, ctx.offset).o;
};
