/**
 * `dense.indexAttn`: causal GQA attention over three disjoint key sets per query — the sink tokens, a token
 * index list per (selection head, query block), and the local window — the attention of the token- and
 * block-selection methods (HiP's selected key blocks, TokenSelect's selected tokens).
 *
 * Query `i` sits at position `p = kvSeq − seq + i` (bottom-right causal alignment, so a decode step is
 * `seq = 1`) and sees key `j ≤ p` when `j < sink`, or `j > p − window` (the local window), or `j` is in the
 * list of its query block and `sink ≤ j ≤ p − window`. Each key counts once: a listed key inside the query's
 * window or sink is attended as part of those (HiP, ICLR 2025: sink, selected blocks and sliding window are
 * disjoint). Lists are ascending token indices padded with −1; entries must be unique.
 *
 * GPU: the flash-attention generator's gather mode (ops/dense/flash_wgsl.ts): one workgroup per (query block,
 * head) walks the sink tiles, the list gathered `bk` entries at a time, then the window tiles, with one
 * online softmax (FlashAttention-2, Dao 2023, Alg. 1).
 * @module
 */
import { Effect, Schema } from "effect";
import { allocHost, storageBytes, tensorType } from "@longctx/graph";
import type { Cost, DescsOf, Gemm, GpuLowering, HostOf, HostTensor, Operator } from "@longctx/graph";
import { asF32, checkQKVCross, effectiveScale, need } from "./common.ts";
import { chooseTiles, flashKey, flashWgsl } from "./flash_wgsl.ts";

/** Parameters of `dense.indexAttn`. */
export const IndexAttnParams = Schema.Struct({
  /** Query rows per index list (the selection's query block; multiple of 16, at most 128). */
  blockQ: Schema.Int.check(
    Schema.isGreaterThanOrEqualTo(16),
    Schema.isLessThanOrEqualTo(128),
    Schema.isMultipleOf(16),
  ).pipe(Schema.withDecodingDefaultKey(Effect.succeed(64))),
  /** Sink tokens `[0, sink)` every query sees (causally). */
  sink: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(16)),
  ),
  /** Local window in tokens: the query at position `p` sees keys `(p − window, p]`; 0: none. */
  window: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(256)),
  ),
  /** Softmax scale; 0 means 1/sqrt(headDim). */
  scale: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0)),
  ),
  /** The device's `maxComputeWorkgroupStorageSize` (bytes) the kernel may use; picks the key tile. */
  workgroupMemory: Schema.Int.check(Schema.isGreaterThanOrEqualTo(8192)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(32768)),
  ),
});
/** Decoded `dense.indexAttn` parameters. */
export type IndexAttnParams = typeof IndexAttnParams.Type;

/** `dense.indexAttn` parameters from a partial object, defaults filled. Throws the schema's error. */
export const indexAttnParams = (p: Partial<IndexAttnParams> = {}): IndexAttnParams =>
  Schema.decodeUnknownSync(IndexAttnParams)(p);

const ports = <D extends "f32" | "f16">(dtype: D) => ({
  inputs: {
    q: tensorType(dtype, ["heads", "seq", "headDim"] as const),
    k: tensorType(dtype, ["kvHeads", "kvSeq", "headDim"] as const),
    v: tensorType(dtype, ["kvHeads", "kvSeq", "headDim"] as const),
    indices: tensorType("i32", ["selHeads", "qBlocks", "kCap"] as const),
  },
  outputs: {
    o: tensorType("f32", ["heads", "seq", "headDim"] as const),
    lse: tensorType("f32", ["heads", "seq"] as const),
  },
});
type In<D extends "f32" | "f16"> = ReturnType<typeof ports<D>>["inputs"];
type Out = ReturnType<typeof ports<"f32">>["outputs"];

/** The key columns one query block attends: keys and which set each came from. */
export interface IndexColumns {
  /** Key token indices (a listed key inside the block's window range appears twice: as list and window). */
  readonly keys: Int32Array;
  /** Per column: 0 sink, 1 list, 2 window (see {@link indexVisible}). */
  readonly kind: Uint8Array;
  /** Number of columns used. */
  readonly n: number;
}

/**
 * The candidate key columns of a query block whose queries sit at positions `pFirst … pLast`: the sink
 * `[0, min(sink, pLast + 1))`, the list entries (stopping at the first −1) with `sink ≤ j ≤ pLast − window`,
 * and the window range `[max(sink, pFirst − window + 1), pLast]`. Row `p` of the block sees column `c` when
 * `indexVisible(kind[c], keys[c], p, window)`.
 */
export const indexColumns = (
  list: Int32Array,
  sink: number,
  window: number,
  pFirst: number,
  pLast: number,
): IndexColumns => {
  const sinkEnd = Math.min(sink, pLast + 1);
  const wlo = window > 0 ? Math.max(sink, pFirst - window + 1) : pLast + 1;
  const cap = sinkEnd + list.length + Math.max(0, pLast + 1 - wlo);
  const keys = new Int32Array(cap), kind = new Uint8Array(cap);
  let n = 0;
  for (let j = 0; j < sinkEnd; j++) keys[n++] = j;
  for (const j of list) {
    if (j < 0) break;
    if (j < sink || j + window > pLast) continue;
    kind[n] = 1;
    keys[n++] = j;
  }
  for (let j = wlo; j <= pLast; j++) {
    kind[n] = 2;
    keys[n++] = j;
  }
  return { keys, kind, n };
};

/** Whether the query at position `p` sees a column of kind `kind` (0 sink, 1 list, 2 window) holding key `j`. */
export const indexVisible = (kind: number, j: number, p: number, window: number): boolean =>
  j <= p && (kind === 0 || (kind === 1 ? j + window <= p : j + window > p));

/** Shapes of an index attention problem. */
interface Dims {
  readonly H: number;
  readonly Hk: number;
  readonly seq: number;
  readonly kvSeq: number;
  readonly d: number;
  readonly selHeads: number;
  readonly kCap: number;
}

const dimsOf = (q: HostTensor, k: HostTensor, indices: HostTensor): Dims => {
  const [H, seq, d] = q.desc.shape as [number, number, number];
  const [selHeads, , kCap] = indices.desc.shape as [number, number, number];
  return { H, Hk: k.desc.shape[0], seq, kvSeq: k.desc.shape[1], d, selHeads, kCap };
};

/**
 * `dense.indexAttn` in float64 (exact two-pass softmax per query): `q [H, seq, d]`, `k`/`v [Hk, kvSeq, d]`,
 * `indices [selHeads, qBlocks, kCap]`. Returns `o [H, seq, d]`, `lse [H, seq]` (natural log; −∞ and o = 0 for
 * a row that sees no key).
 */
export const indexAttentionReference = (
  p: IndexAttnParams,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  indices: Int32Array,
  dm: Dims,
): { o: Float32Array; lse: Float32Array } => {
  const { H, Hk, seq, kvSeq, d, selHeads, kCap } = dm;
  const qB = Math.ceil(seq / p.blockQ), g = H / Hk, off = kvSeq - seq;
  const scale = effectiveScale(p.scale, d);
  const o = new Float32Array(H * seq * d), lse = new Float32Array(H * seq);
  const acc = new Float64Array(d);
  for (let h = 0; h < H; h++) {
    const kb = Math.floor(h / g) * kvSeq * d, sh = selHeads === 1 ? 0 : h;
    for (let b = 0; b < qB; b++) {
      const i0 = b * p.blockQ, i1 = Math.min(seq, i0 + p.blockQ);
      const base = (sh * qB + b) * kCap;
      const cols = indexColumns(
        indices.subarray(base, base + kCap),
        p.sink,
        p.window,
        i0 + off,
        i1 - 1 + off,
      );
      const s = new Float64Array(cols.n);
      for (let i = i0; i < i1; i++) {
        const pos = i + off, qo = (h * seq + i) * d;
        let m = -Infinity;
        for (let c = 0; c < cols.n; c++) {
          if (!indexVisible(cols.kind[c], cols.keys[c], pos, p.window)) {
            s[c] = -Infinity;
            continue;
          }
          let dot = 0;
          const ko = kb + cols.keys[c] * d;
          for (let x = 0; x < d; x++) dot += q[qo + x] * k[ko + x];
          s[c] = dot * scale;
          if (s[c] > m) m = s[c];
        }
        if (m === -Infinity) {
          lse[h * seq + i] = -Infinity;
          continue;
        }
        let l = 0;
        acc.fill(0);
        for (let c = 0; c < cols.n; c++) {
          if (s[c] === -Infinity) continue;
          const e = Math.exp(s[c] - m);
          l += e;
          const vo = kb + cols.keys[c] * d;
          for (let x = 0; x < d; x++) acc[x] += e * v[vo + x];
        }
        for (let x = 0; x < d; x++) o[qo + x] = acc[x] / l;
        lse[h * seq + i] = m + Math.log(l);
      }
    }
  }
  return { o, lse };
};

/**
 * `dense.indexAttn` through `gemm` (the cpu backend's BLAS): per head and query block, the block's key columns
 * gathered into contiguous K and V, scores as one GEMM, the per-row visibility mask and the softmax in float64,
 * `P·V` as one GEMM. Same outputs as {@link indexAttentionReference}.
 */
export const indexAttentionGemm = (
  gemm: Gemm,
  p: IndexAttnParams,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  indices: Int32Array,
  dm: Dims,
): { o: Float32Array; lse: Float32Array } => {
  const { H, Hk, seq, kvSeq, d, selHeads, kCap } = dm;
  const bq = p.blockQ, qB = Math.ceil(seq / bq), g = H / Hk, off = kvSeq - seq;
  const scale = effectiveScale(p.scale, d);
  const o = new Float32Array(H * seq * d), lse = new Float32Array(H * seq);
  const oBlk = new Float32Array(bq * d);
  for (let h = 0; h < H; h++) {
    const kb = Math.floor(h / g) * kvSeq * d, sh = selHeads === 1 ? 0 : h;
    for (let b = 0; b < qB; b++) {
      const i0 = b * bq, rows = Math.min(seq, i0 + bq) - i0;
      const base = (sh * qB + b) * kCap;
      const cols = indexColumns(
        indices.subarray(base, base + kCap),
        p.sink,
        p.window,
        i0 + off,
        i0 + rows - 1 + off,
      );
      const n = cols.n;
      if (n === 0) {
        for (let x = 0; x < rows; x++) lse[h * seq + i0 + x] = -Infinity;
        continue;
      }
      const kSel = new Float32Array(n * d), vSel = new Float32Array(n * d);
      for (let c = 0; c < n; c++) {
        const src = kb + cols.keys[c] * d;
        kSel.set(k.subarray(src, src + d), c * d);
        vSel.set(v.subarray(src, src + d), c * d);
      }
      const S = new Float32Array(rows * n);
      gemm(false, true, rows, n, d, scale, q.subarray((h * seq + i0) * d), d, kSel, d, 0, S, n);
      for (let x = 0; x < rows; x++) {
        const pos = i0 + x + off, row = x * n;
        let m = -Infinity;
        for (let c = 0; c < n; c++) {
          if (indexVisible(cols.kind[c], cols.keys[c], pos, p.window)) m = Math.max(m, S[row + c]);
        }
        if (m === -Infinity) {
          S.fill(0, row, row + n);
          lse[h * seq + i0 + x] = -Infinity;
          continue;
        }
        let l = 0;
        for (let c = 0; c < n; c++) {
          const e = indexVisible(cols.kind[c], cols.keys[c], pos, p.window) ? Math.exp(S[row + c] - m) : 0;
          S[row + c] = e;
          l += e;
        }
        for (let c = 0; c < n; c++) S[row + c] /= l;
        lse[h * seq + i0 + x] = m + Math.log(l);
      }
      gemm(false, false, rows, d, n, 1, S, n, vSel, d, 0, oBlk, d);
      o.set(oBlk.subarray(0, rows * d), (h * seq + i0) * d);
    }
  }
  return { o, lse };
};

/** Build `dense.indexAttn` for inputs of dtype `dtype` (f32: `dense.indexAttn`, f16: `dense.indexAttn.f16`). */
export const makeIndexAttn = <D extends "f32" | "f16">(dtype: D): Operator<IndexAttnParams, In<D>, Out> => {
  const pt = ports(dtype);
  return {
    name: dtype === "f32" ? "dense.indexAttn" : "dense.indexAttn.f16",
    kind: "index-attn",
    reference:
      "HiP (Lee et al., ICLR 2025): attention over sink ∪ selected keys ∪ sliding window, disjoint; " +
      "FlashAttention-2 (Dao 2023) Alg. 1 for the online softmax",
    params: IndexAttnParams,
    inputs: pt.inputs,
    outputs: pt.outputs,
    infer: (p, i) =>
      Effect.gen(function* () {
        const s = yield* checkQKVCross(i.q, i.k, i.v);
        const qB = Math.ceil(s.seq / p.blockQ);
        const [sh, nb, kCap] = i.indices.shape;
        yield* need(
          i.indices.shape.length === 3 && (sh === 1 || sh === s.heads) && nb === qB && kCap >= 1,
          "indices",
          `shape [${i.indices.shape}], want [${s.heads} or 1, ${qB}, kCap ≥ 1]`,
          `indices is [selHeads, ceil(seq / blockQ), kCap]: one ascending −1-padded token list per ` +
            `(head, query block of ${p.blockQ} rows), or one list per block shared by all heads`,
        );
        return {
          o: { ...pt.outputs.o, shape: [s.heads, s.seq, s.headDim] },
          lse: { ...pt.outputs.lse, shape: [s.heads, s.seq] },
        } as DescsOf<Out>;
      }),
    cpu: (p, i, ctx) => {
      const dm = dimsOf(i.q as HostTensor, i.k as HostTensor, i.indices as HostTensor);
      const args = [
        p,
        asF32(i.q as HostTensor),
        asF32(i.k as HostTensor),
        asF32(i.v as HostTensor),
        i.indices.data as Int32Array,
        dm,
      ] as const;
      const r = ctx?.gemm ? indexAttentionGemm(ctx.gemm, ...args) : indexAttentionReference(...args);
      const o = allocHost({ ...pt.outputs.o, shape: [dm.H, dm.seq, dm.d] });
      o.data.set(r.o);
      const lse = allocHost({ ...pt.outputs.lse, shape: [dm.H, dm.seq] });
      lse.data.set(r.lse);
      return { o, lse } as HostOf<Out>;
    },
    gpu: (p, i, features): GpuLowering => {
      const [heads, seq, headDim] = i.q.shape as [number, number, number];
      if (dtype === "f16" && !features.has("shader-f16")) throw new RangeError("needs shader-f16");
      if (headDim % 32 !== 0) throw new RangeError(`the flash kernel needs headDim % 32 = 0, got ${headDim}`);
      // One query block (a decode step, a short chunk): as few query rows per workgroup as cover it; the
      // block's list is the same (there is one).
      const bq = seq <= p.blockQ ? Math.min(p.blockQ, 16 * Math.ceil(seq / 16)) : p.blockQ;
      const t = chooseTiles(dtype, headDim, bq, 64, p.workgroupMemory);
      const cfg = {
        heads,
        kvHeads: i.k.shape[0],
        seq,
        headDim,
        dtype,
        scale: effectiveScale(p.scale, headDim),
        bq,
        bk: t.bk,
        qShared: t.qShared,
        gather: {
          kvSeq: i.k.shape[1],
          kCap: i.indices.shape[2],
          selHeads: i.indices.shape[0],
          sink: p.sink,
          window: p.window,
        },
      } as const;
      return {
        workspaces: {},
        launches: [{
          kernel: {
            key: flashKey(cfg),
            wgsl: flashWgsl(cfg),
            entryPoint: "main",
            bindings: ["read", "read", "read", "read", "read_write", "read_write"],
            enables: dtype === "f16" ? ["f16"] : [],
          },
          buffers: ["in:q", "in:k", "in:v", "in:indices", "out:o", "out:lse"],
          workgroups: [Math.ceil(seq / bq), heads, 1],
        }],
      };
    },
    cost: (_p, i): Cost => {
      const [heads, seq, d] = i.q.shape as [number, number, number];
      const kvSeq = i.k.shape[1], kCap = i.indices.shape[2], elt = storageBytes(dtype, 1);
      // The full causal mask (every key j ≤ p of every query): which keys a list keeps is only known at run
      // time, so a technique scales this by its (measured or constructed) density, as sale.sparseAttn's.
      const keys = seq * kvSeq - (seq * (seq - 1)) / 2;
      return {
        flops: 4 * d * heads * keys,
        bytesRead: heads * seq * d * elt + (heads / Math.min(seq, 64)) * keys * 2 * d * elt +
          i.indices.shape[0] * i.indices.shape[1] * kCap * 4,
        bytesWritten: heads * seq * (d + 1) * 4,
        workspaceBytes: 0,
      };
    },
  };
};

/** `dense.indexAttn` for f32 inputs. */
export const indexAttn: Operator<IndexAttnParams, In<"f32">, Out> = makeIndexAttn("f32");
/** `dense.indexAttn.f16` for f16 inputs (f32 accumulation). */
export const indexAttnF16: Operator<IndexAttnParams, In<"f16">, Out> = makeIndexAttn("f16");
