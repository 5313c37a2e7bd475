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
import { allocHost, decodeParamsSync, storageBytes, tensorType } from "@longctx/graph";
import type {
  Cost,
  CpuContext,
  DescsOf,
  Gemm,
  GpuLowering,
  HostOf,
  HostTensor,
  Operator,
  TensorDesc,
  TensorType,
} from "@longctx/graph";
import { asF32, checkQKVCross, effectiveScale, need } from "./common.ts";
import { chooseTiles, flashKey, flashWgsl } from "./flash_wgsl.ts";

/** The schema of {@link IndexAttnParams}: every field optional on input, the default filled in on decode. */
export type IndexAttnParamsSchema = Schema.Struct<{
  readonly blockQ: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly sink: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly window: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly scale: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly workgroupMemory: Schema.withDecodingDefaultKey<Schema.Int>;
}>;

/** Parameters of `dense.indexAttn` and `dense.indexCacheAttn`. */
export const IndexAttnParams: IndexAttnParamsSchema = Schema.Struct({
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

/**
 * `dense.indexAttn` parameters from a partial object, defaults filled. Throws a `ParamsError` naming the
 * parameter for an impossible value or an unknown key.
 */
export const indexAttnParams = (p: Partial<IndexAttnParams> = {}): IndexAttnParams =>
  decodeParamsSync("dense.indexAttn", IndexAttnParams, p);

/** The `dense.indexAttn` parameters of a wider parameter set (e.g. a technique's): the keys it declares. */
export const indexAttnParamsOf = (p: Readonly<Record<string, unknown>>): IndexAttnParams =>
  indexAttnParams(
    Object.fromEntries(Object.entries(p).filter(([k]) => k in IndexAttnParams.fields)) as Partial<
      IndexAttnParams
    >,
  );

/** Input ports of `dense.indexAttn`: `q`, `k`, `v` of dtype `D` and the index lists. */
export type IndexAttnInputs<D extends "f32" | "f16"> = {
  /** Queries, `D [heads, seq, headDim]` (the last `seq` positions of the keys). */
  readonly q: TensorType<D, readonly ["heads", "seq", "headDim"]>;
  /** Keys, `D [kvHeads, kvSeq, headDim]`. */
  readonly k: TensorType<D, readonly ["kvHeads", "kvSeq", "headDim"]>;
  /** Values, `D [kvHeads, kvSeq, headDim]`. */
  readonly v: TensorType<D, readonly ["kvHeads", "kvSeq", "headDim"]>;
  /** Ascending token lists, −1 padded, `i32 [selHeads (heads or 1), ceil(seq / blockQ), kCap]`. */
  readonly indices: TensorType<"i32", readonly ["selHeads", "qBlocks", "kCap"]>;
};
/** Output ports of `dense.indexAttn` and `dense.indexCacheAttn` (always f32). */
export type IndexAttnOutputs = {
  /** Attention output, `f32 [heads, seq, headDim]`. */
  readonly o: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Log-sum-exp (natural log) of the scaled scores of the attended keys, `f32 [heads, seq]`. */
  readonly lse: TensorType<"f32", readonly ["heads", "seq"]>;
};

const ports = <D extends "f32" | "f16">(
  dtype: D,
): { readonly inputs: IndexAttnInputs<D>; readonly outputs: IndexAttnOutputs } => ({
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
type In<D extends "f32" | "f16"> = IndexAttnInputs<D>;
type Out = IndexAttnOutputs;

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
export interface IndexAttnDims {
  /** Query heads. */
  readonly H: number;
  /** Key/value heads. */
  readonly Hk: number;
  /** Query rows. */
  readonly seq: number;
  /** K/V rows per head (the row stride: `kvSeq`, or a cache's capacity). */
  readonly kvSeq: number;
  /** Position of query row 0 (default `kvSeq − seq`; a KV cache's `pos`). */
  readonly off?: number;
  /** Head dimension. */
  readonly d: number;
  /** Heads of the index lists: `H` (per head) or 1 (shared). */
  readonly selHeads: number;
  /** List entries per (selection head, query block). */
  readonly kCap: number;
}

const dimsOf = (q: HostTensor, k: HostTensor, indices: HostTensor): IndexAttnDims => {
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
  dm: IndexAttnDims,
): { o: Float32Array; lse: Float32Array } => {
  const { H, Hk, seq, kvSeq, d, selHeads, kCap } = dm;
  const qB = Math.ceil(seq / p.blockQ), g = H / Hk, off = dm.off ?? kvSeq - seq;
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
  dm: IndexAttnDims,
): { o: Float32Array; lse: Float32Array } => {
  const { H, Hk, seq, kvSeq, d, selHeads, kCap } = dm;
  const bq = p.blockQ, qB = Math.ceil(seq / bq), g = H / Hk, off = dm.off ?? kvSeq - seq;
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

/** The CPU path of both index attentions: float64 loops, or the backend's GEMM when given. */
const indexHost = (
  p: IndexAttnParams,
  q: HostTensor,
  k: HostTensor,
  v: HostTensor,
  indices: HostTensor,
  gemm: Gemm | undefined,
  off?: number,
): HostOf<Out> => {
  const dm0 = dimsOf(q, k, indices);
  const dm = off === undefined ? dm0 : { ...dm0, off };
  const args = [p, asF32(q), asF32(k), asF32(v), indices.data as Int32Array, dm] as const;
  const r = gemm ? indexAttentionGemm(gemm, ...args) : indexAttentionReference(...args);
  const pt = ports("f32").outputs;
  const o = allocHost({ ...pt.o, shape: [dm.H, dm.seq, dm.d] });
  o.data.set(r.o);
  const lse = allocHost({ ...pt.lse, shape: [dm.H, dm.seq] });
  lse.data.set(r.lse);
  return { o, lse } as HostOf<Out>;
};

/**
 * The GPU lowering of both index attentions: the flash generator's gather mode on K/V rows `kvRows` per head
 * (a prefill's `kvSeq`, or a cache's capacity with the offset from the `pos` uniform when `cache` is set),
 * bound to the ports `kPort`, `vPort`.
 */
const indexLowering = (
  p: IndexAttnParams,
  dtype: "f32" | "f16",
  q: TensorDesc,
  kvHeads: number,
  kvRows: number,
  indices: TensorDesc,
  features: ReadonlySet<string>,
  cache: boolean,
): GpuLowering => {
  const [heads, seq, headDim] = q.shape as [number, number, number];
  if (dtype === "f16" && !features.has("shader-f16")) throw new RangeError("needs shader-f16");
  if (headDim % 32 !== 0) throw new RangeError(`the flash kernel needs headDim % 32 = 0, got ${headDim}`);
  // One query block (a decode step, a short chunk): as few query rows per workgroup as cover it; the
  // block's list is the same (there is one).
  const bq = seq <= p.blockQ ? Math.min(p.blockQ, 16 * Math.ceil(seq / 16)) : p.blockQ;
  const t = chooseTiles(dtype, headDim, bq, 64, p.workgroupMemory);
  const cfg = {
    heads,
    kvHeads,
    seq,
    headDim,
    dtype,
    scale: effectiveScale(p.scale, headDim),
    bq,
    bk: t.bk,
    qShared: t.qShared,
    gather: {
      kvSeq: kvRows,
      kCap: indices.shape[2],
      selHeads: indices.shape[0],
      sink: p.sink,
      window: p.window,
      ...(cache ? { dynamic: true } : {}),
    },
  } as const;
  const [kPort, vPort] = cache ? ["kCache", "vCache"] : ["k", "v"];
  return {
    workspaces: cache ? { pos: 16 } : {},
    launches: [{
      kernel: {
        key: flashKey(cfg),
        wgsl: flashWgsl(cfg),
        entryPoint: "main",
        bindings: [
          "read",
          "read",
          "read",
          "read",
          "read_write",
          "read_write",
          ...(cache ? ["uniform" as const] : []),
        ],
        enables: dtype === "f16" ? ["f16"] : [],
      },
      buffers: [
        "in:q",
        `in:${kPort}`,
        `in:${vPort}`,
        "in:indices",
        "out:o",
        "out:lse",
        ...(cache ? ["ws:pos"] : []),
      ],
      workgroups: [Math.ceil(seq / bq), heads, 1],
      ...(cache
        ? {
          uniforms: { pos: posUniform(0, seq) },
          dynamic: (sc: Readonly<Record<string, number>>) => ({
            uniforms: { pos: posUniform(cachePos(sc, seq, kvRows), seq) },
          }),
        }
        : {}),
    }],
  };
};

/** Build `dense.indexAttn` for inputs of dtype `dtype` (f32: `dense.indexAttn`, f16: `dense.indexAttn.f16`). */
export const makeIndexAttn = <D extends "f32" | "f16">(dtype: D): Operator<IndexAttnParams, In<D>, Out> => {
  const pt = ports(dtype);
  return {
    name: dtype === "f32" ? "dense.indexAttn" : "dense.indexAttn.f16",
    kind: "index-attn",
    reference:
      "HiP (ICLR 2025, arXiv 2406.09827 v2): attention over sink ∪ selected keys ∪ sliding window, disjoint; " +
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
    cpu: (p, i, ctx) =>
      indexHost(
        p,
        i.q as HostTensor,
        i.k as HostTensor,
        i.v as HostTensor,
        i.indices as HostTensor,
        ctx?.gemm,
      ),
    gpu: (p, i, features): GpuLowering =>
      indexLowering(p, dtype, i.q, i.k.shape[0], i.k.shape[1], i.indices, features, false),
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
export const indexAttn: Operator<IndexAttnParams, IndexAttnInputs<"f32">, IndexAttnOutputs> = makeIndexAttn(
  "f32",
);
/** `dense.indexAttn.f16` for f16 inputs (f32 accumulation). */
export const indexAttnF16: Operator<IndexAttnParams, IndexAttnInputs<"f16">, IndexAttnOutputs> =
  makeIndexAttn(
    "f16",
  );

/** Input ports of `dense.indexCacheAttn`: `q`, the KV cache (`kCache`, `vCache`) and the index lists. */
export type IndexCacheAttnInputs<D extends "f32" | "f16"> = {
  /** Queries, `D [heads, seq, headDim]` at positions `pos … pos + seq − 1`. */
  readonly q: TensorType<D, readonly ["heads", "seq", "headDim"]>;
  /** Key cache, `D [kvHeads, capacity, headDim]` holding `pos + seq` valid rows. */
  readonly kCache: TensorType<D, readonly ["kvHeads", "capacity", "headDim"]>;
  /** Value cache, `D [kvHeads, capacity, headDim]`. */
  readonly vCache: TensorType<D, readonly ["kvHeads", "capacity", "headDim"]>;
  /** Ascending token lists, −1 padded, `i32 [selHeads, ceil(seq / blockQ), kCap]`. */
  readonly indices: TensorType<"i32", readonly ["selHeads", "qBlocks", "kCap"]>;
};

const cachePorts = <D extends "f32" | "f16">(
  dtype: D,
): { readonly inputs: IndexCacheAttnInputs<D>; readonly outputs: IndexAttnOutputs } => ({
  inputs: {
    q: tensorType(dtype, ["heads", "seq", "headDim"] as const),
    kCache: tensorType(dtype, ["kvHeads", "capacity", "headDim"] as const),
    vCache: tensorType(dtype, ["kvHeads", "capacity", "headDim"] as const),
    indices: tensorType("i32", ["selHeads", "qBlocks", "kCap"] as const),
  },
  outputs: ports(dtype).outputs,
});
type CacheIn<D extends "f32" | "f16"> = IndexCacheAttnInputs<D>;

/** A KV-cache call's descriptions as `dense.indexAttn`'s (the cache's rows named `kvSeq`). */
const asKv = <D extends "f32" | "f16">(i: DescsOf<CacheIn<D>>): DescsOf<In<D>> => {
  const kv = (t: TensorDesc) => ({ ...t, dims: ["kvHeads", "kvSeq", "headDim"] as const });
  return { q: i.q, k: kv(i.kCache), v: kv(i.vCache), indices: i.indices } as DescsOf<In<D>>;
};

/** The runtime scalar `pos` of a KV-cache call, checked against the capacity (throws `RangeError`). */
export const cachePos = (
  scalars: CpuContext["scalars"] | undefined,
  seq: number,
  capacity: number,
): number => {
  const pos = scalars?.pos;
  if (pos === undefined || !Number.isInteger(pos) || pos < 0) throw new RangeError(`scalar pos = ${pos}`);
  if (pos + seq > capacity) {
    throw new RangeError(`pos ${pos} + ${seq} queries exceed the cache capacity ${capacity}`);
  }
  return pos;
};

/** The `POS` uniform of the KV-cache kernels: `(pos, pos + seq, 0, 0)` as u32. */
export const posUniform = (pos: number, seq: number): Uint8Array =>
  new Uint8Array(Uint32Array.of(pos, pos + seq, 0, 0).buffer);

/**
 * Build `dense.indexCacheAttn` (f32) / `dense.indexCacheAttn.f16`: `dense.indexAttn` on a KV cache — `kCache`,
 * `vCache [kvHeads, capacity, headDim]` holding `pos + seq` valid rows, queries at positions `pos + i` (runtime
 * scalar `pos`, so one lowered program serves every decode step). Same semantics, reference and kernel (the
 * gather mode with its offset from a uniform).
 */
export const makeIndexCacheAttn = <D extends "f32" | "f16">(
  dtype: D,
): Operator<IndexAttnParams, CacheIn<D>, Out> => {
  const pt = cachePorts(dtype);
  const base = makeIndexAttn(dtype);
  return {
    name: dtype === "f32" ? "dense.indexCacheAttn" : "dense.indexCacheAttn.f16",
    kind: "index-cache-attn",
    reference: base.reference + "; on a KV cache at a runtime position",
    params: IndexAttnParams,
    inputs: pt.inputs,
    outputs: pt.outputs,
    scalars: ["pos"],
    infer: (p, i) =>
      Effect.gen(function* () {
        yield* need(i.kCache.shape[1] >= i.q.shape[1], "kCache", "capacity below seq", "capacity ≥ seq");
        return yield* base.infer(p, asKv(i));
      }),
    cpu: (p, i, ctx) => {
      const [, seq] = i.q.desc.shape, cap = i.kCache.desc.shape[1];
      return indexHost(
        p,
        i.q as HostTensor,
        i.kCache as HostTensor,
        i.vCache as HostTensor,
        i.indices as HostTensor,
        ctx?.gemm,
        cachePos(ctx?.scalars, seq, cap),
      );
    },
    gpu: (p, i, features): GpuLowering =>
      indexLowering(p, dtype, i.q, i.kCache.shape[0], i.kCache.shape[1], i.indices, features, true),
    cost: (p, i): Cost => base.cost(p, asKv(i)),
  };
};

/** `dense.indexCacheAttn` for an f32 KV cache. */
export const indexCacheAttn: Operator<IndexAttnParams, IndexCacheAttnInputs<"f32">, IndexAttnOutputs> =
  makeIndexCacheAttn("f32");
