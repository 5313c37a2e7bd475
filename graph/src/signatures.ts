/**
 * Tensor signatures (ports) of the design's operator kinds. An operator implements one of these by using
 * the same `inputs`/`outputs` objects, so every implementation of a kind wires into the same graphs:
 *
 * ```ts
 * const denseAttn: OperatorOf<DenseParams, typeof signatures.denseAttn> = {
 *   name: "dense.attn", kind: "dense-attn", ...signatures.denseAttn, ...
 * };
 * ```
 *
 * Conventions (all row-major, outermost dim first):
 * - Queries `[heads, seq, headDim]`, keys/values `[kvHeads, kvSeq, headDim]` (GQA: query head `h` reads
 *   KV head `floor(h / (heads / kvHeads))`). In prefill `kvSeq == seq` and query `i` sits at key
 *   position `kvSeq - seq + i` (causal, bottom-right aligned, as FlashAttention).
 * - Outputs `o: f32 [heads, seq, headDim]` and `lse: f32 [heads, seq]`: the natural-log log-sum-exp of the
 *   *scaled* scores of each query row (scores already multiplied by the softmax scale), so partial results
 *   merge exactly: `lse = logaddexp(lse1, lse2)`, `o = exp(lse1 - lse) o1 + exp(lse2 - lse) o2`.
 *   A row that attends to nothing has `lse = -Infinity` and `o = 0`.
 * - Packed `int4` tensors keep their *logical* dims (`[heads, seq, headDim]`) and pack eight signed
 *   4-bit values per `u32` word along the last dim (element `j` in bits `4 (j % 8)`, two's complement,
 *   range [-8, 7]; SALE's codes use [-7, 7]); `headDim` must be a multiple of 8. Value = `scale * q`
 *   (symmetric, no zero point).
 * - f16 variants of an operator keep these dims and change only the dtype of `q`, `k`, `v`.
 * - Blocks: `qBlocks = ceil(seq / blockQ)`, `kBlocks = ceil(kvSeq / blockK)`; block sizes (tokens) are
 *   operator parameters (SALE: `blockQ` 64, `blockK` 32).
 *
 * **Block-sparse masks (BSR, per query head, padded):**
 * - `indptr: i32 [heads, indptr]` with `indptr = qBlocks + 1`; per head, offsets start at 0:
 *   the key blocks of query block `b` of head `h` are `indices[h, indptr[h, b] .. indptr[h, b + 1])`.
 * - `indices: i32 [heads, nnz]`: key-block ids, ascending within each query block. `nnz` is a static
 *   *capacity per head* (chosen by the select operator's parameters, at most `qBlocks * kBlocks`; for a
 *   causal mask the number of (query block, key block) pairs with any causal entry), so shapes are known
 *   at plan time;
 *   slots past `indptr[h, qBlocks]` are unused and unspecified (cpu references write -1).
 * - density = `indptr[h, qBlocks]` / causal blocks, per head.
 * @module
 */
import type { Operator, Ports } from "./operator.ts";
import { type TensorType, tensorType } from "./tensor.ts";

/** An operator kind's ports. */
export interface Signature {
  /** Input ports: name → tensor type. */
  readonly inputs: Ports;
  /** Output ports: name → tensor type. */
  readonly outputs: Ports;
}

/** The operator type that implements signature `S` with parameters `P`. */
export type OperatorOf<P, S extends Signature> = Operator<P, S["inputs"], S["outputs"]>;

/** f32 [heads, seq, headDim]: queries, attention outputs. */
export type QType = TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
/** f32 [kvHeads, kvSeq, headDim]: keys, values. */
export type KvType = TensorType<"f32", readonly ["kvHeads", "kvSeq", "headDim"]>;
/** f32 [heads, seq]: log-sum-exp per query row. */
export type LseType = TensorType<"f32", readonly ["heads", "seq"]>;
/** i32 [heads, indptr]: BSR row pointers (`indptr = qBlocks + 1`). */
export type IndptrType = TensorType<"i32", readonly ["heads", "indptr"]>;
/** i32 [heads, nnz]: BSR key-block ids (padded capacity per head). */
export type IndicesType = TensorType<"i32", readonly ["heads", "nnz"]>;
/** int4 [heads, seq, headDim]: packed 4-bit queries. */
export type QInt4Type = TensorType<"int4", readonly ["heads", "seq", "headDim"]>;
/** int4 [kvHeads, kvSeq, headDim]: packed 4-bit keys. */
export type KInt4Type = TensorType<"int4", readonly ["kvHeads", "kvSeq", "headDim"]>;
/** f32 [heads, qBlocks]: query-block scales. */
export type QScalesType = TensorType<"f32", readonly ["heads", "qBlocks"]>;
/** f32 [kvHeads, kBlocks]: key-block scales. */
export type KScalesType = TensorType<"f32", readonly ["kvHeads", "kBlocks"]>;
/** f32 [heads, qBlocks, kBlocks]: block-pair scores. */
export type BlockScoresType = TensorType<"f32", readonly ["heads", "qBlocks", "kBlocks"]>;
/** f32 [kvHeads, groups, headDim]: cluster centroids. */
export type CentroidsType = TensorType<"f32", readonly ["kvHeads", "groups", "headDim"]>;
/** f32 [kvHeads, draftSeq, headDim]: draft keys/values. */
export type DraftKvType = TensorType<"f32", readonly ["kvHeads", "draftSeq", "headDim"]>;
/** f32 [heads, tree, headDim]: tree queries / outputs. */
export type TreeQType = TensorType<"f32", readonly ["heads", "tree", "headDim"]>;
/** f32 [kvHeads, tree, headDim]: tree keys/values. */
export type TreeKvType = TensorType<"f32", readonly ["kvHeads", "tree", "headDim"]>;
/** u32 [kvHeads, words]: an encoded bitstream per KV head. */
export type StreamType = TensorType<"u32", readonly ["kvHeads", "words"]>;
/** f32 [kvHeads, headDim]: per-KV-head mean key (SALE smoothing). */
export type KMeanType = TensorType<"f32", readonly ["kvHeads", "headDim"]>;
/** f32 [heads, kvSeq]: SALE's mean-query correction `mean(Q_h) · (k_j − mean(K))`. */
export type QmkType = TensorType<"f32", readonly ["heads", "kvSeq"]>;
/** f32 [heads]: per-head mask density. */
export type DensityType = TensorType<"f32", readonly ["heads"]>;
/** u32 [kvHeads]: used words per stream. */
export type LengthsType = TensorType<"u32", readonly ["kvHeads"]>;
/** f32 [kvHeads, headDim]: per-channel scales. */
export type ChannelScalesType = TensorType<"f32", readonly ["kvHeads", "headDim"]>;

const q: QType = tensorType("f32", ["heads", "seq", "headDim"]);
const kv: KvType = tensorType("f32", ["kvHeads", "kvSeq", "headDim"]);
const o: QType = q;
const lse: LseType = tensorType("f32", ["heads", "seq"]);
const indptr: IndptrType = tensorType("i32", ["heads", "indptr"]);
const indices: IndicesType = tensorType("i32", ["heads", "nnz"]);

/** The standard port types (see `portTypes`). */
export interface PortTypes {
  /** Queries, f32 [heads, seq, headDim]. */
  readonly q: QType;
  /** Keys or values, f32 [kvHeads, kvSeq, headDim]. */
  readonly kv: KvType;
  /** Attention output, f32 [heads, seq, headDim]. */
  readonly o: QType;
  /** Log-sum-exp of the scaled scores per query row, f32 [heads, seq]. */
  readonly lse: LseType;
  /** BSR row pointers, i32 [heads, qBlocks + 1]. */
  readonly indptr: IndptrType;
  /** BSR key-block ids, i32 [heads, nnz] (padded capacity per head). */
  readonly indices: IndicesType;
  /** Packed 4-bit queries, int4 [heads, seq, headDim]. */
  readonly qInt4: QInt4Type;
  /** Packed 4-bit keys, int4 [kvHeads, kvSeq, headDim]. */
  readonly kInt4: KInt4Type;
  /** Per-(head, query block) scales, f32 [heads, qBlocks]. */
  readonly qScales: QScalesType;
  /** Per-(KV head, key block) scales, f32 [kvHeads, kBlocks]. */
  readonly kScales: KScalesType;
  /** Block-pair importance scores, f32 [heads, qBlocks, kBlocks]. */
  readonly blockScores: BlockScoresType;
}

/** Port types of the standard tensors, for graph inputs (`g.input("q", portTypes.q)`). */
export const portTypes: PortTypes = {
  /** Queries, f32 [heads, seq, headDim]. */
  q,
  /** Keys or values, f32 [kvHeads, kvSeq, headDim]. */
  kv,
  /** Attention output, f32 [heads, seq, headDim]. */
  o,
  /** Log-sum-exp of scaled scores, f32 [heads, seq]. */
  lse,
  /** BSR row pointers, i32 [heads, qBlocks + 1]. */
  indptr,
  /** BSR key-block ids, i32 [heads, nnz] (padded capacity per head). */
  indices,
  /** Packed 4-bit queries, int4 [heads, seq, headDim] (8 per u32 along headDim). */
  qInt4: tensorType("int4", ["heads", "seq", "headDim"]),
  /** Packed 4-bit keys, int4 [kvHeads, kvSeq, headDim]. */
  kInt4: tensorType("int4", ["kvHeads", "kvSeq", "headDim"]),
  /** Per-(head, query block) scales, f32 [heads, qBlocks]. */
  qScales: tensorType("f32", ["heads", "qBlocks"]),
  /** Per-(KV head, key block) scales, f32 [kvHeads, kBlocks]. */
  kScales: tensorType("f32", ["kvHeads", "kBlocks"]),
  /** Block-pair importance scores, f32 [heads, qBlocks, kBlocks]. */
  blockScores: tensorType("f32", ["heads", "qBlocks", "kBlocks"]),
};

/** Ports of each declared operator kind (see `signatures` for shapes and meaning). */
export interface Signatures {
  /**
   * `quantize` (SALE §3.2): smoothed 4-bit Q/K per block, with the scales, the mean key and the smoothing
   * correction.
   */
  readonly quantize: {
    readonly inputs: { readonly q: QType; readonly k: KvType };
    readonly outputs: {
      readonly qq: QInt4Type;
      readonly qScales: QScalesType;
      readonly kq: KInt4Type;
      readonly kScales: KScalesType;
      readonly kMean: KMeanType;
      readonly qmk: QmkType;
    };
  };
  /** `estimate` (SALE §3.3): one score per (head, query block, key block) from the quantized Q/K. */
  readonly estimate: {
    readonly inputs: {
      readonly q: QType;
      readonly k: KvType;
      readonly qq: QInt4Type;
      readonly qScales: QScalesType;
      readonly kq: KInt4Type;
      readonly kScales: KScalesType;
      readonly kMean: KMeanType;
      readonly qmk: QmkType;
    };
    readonly outputs: { readonly scores: BlockScoresType };
  };
  /** `select` (SALE §3.3): block scores → a padded per-head BSR mask and its density. */
  readonly select: {
    readonly inputs: { readonly scores: BlockScoresType };
    readonly outputs: {
      readonly indptr: IndptrType;
      readonly indices: IndicesType;
      readonly density: DensityType;
    };
  };
  /** `sparse-attn`: block-sparse flash attention over a BSR mask; returns `o` and `lse`. */
  readonly sparseAttn: {
    readonly inputs: {
      readonly q: QType;
      readonly k: KvType;
      readonly v: KvType;
      readonly indptr: IndptrType;
      readonly indices: IndicesType;
    };
    readonly outputs: { readonly o: QType; readonly lse: LseType };
  };
  /** `dense-attn`: causal flash attention with GQA; returns `o` and `lse`. */
  readonly denseAttn: {
    readonly inputs: { readonly q: QType; readonly k: KvType; readonly v: KvType };
    readonly outputs: { readonly o: QType; readonly lse: LseType };
  };
  /** `cluster` (Squeezed Attention): k-means centroids of the keys and each key's cluster. */
  readonly cluster: {
    readonly inputs: { readonly k: KvType };
    readonly outputs: {
      readonly centroids: CentroidsType;
      readonly assign: TensorType<"i32", readonly ["kvHeads", "kvSeq"]>;
      readonly counts: TensorType<"i32", readonly ["kvHeads", "groups"]>;
    };
  };
  /** `draft` (LongSpec): a constant-size draft KV and the positions it kept. */
  readonly draft: {
    readonly inputs: { readonly k: KvType; readonly v: KvType };
    readonly outputs: {
      readonly dk: DraftKvType;
      readonly dv: DraftKvType;
      readonly positions: TensorType<"i32", readonly ["kvHeads", "draftSeq"]>;
    };
  };
  /** `verify` (LongSpec): tree attention of `tree` candidate tokens over the prefix and the tree. */
  readonly verify: {
    readonly inputs: {
      readonly q: TreeQType;
      readonly k: KvType;
      readonly v: KvType;
      readonly treeK: TreeKvType;
      readonly treeV: TreeKvType;
      readonly parents: TensorType<"i32", readonly ["tree"]>;
    };
    readonly outputs: { readonly o: TreeQType; readonly lse: TensorType<"f32", readonly ["heads", "tree"]> };
  };
  /** `merge` (DistAttention): exact LSE-weighted combination of two partial attentions. */
  readonly merge: {
    readonly inputs: {
      readonly o1: QType;
      readonly lse1: LseType;
      readonly o2: QType;
      readonly lse2: LseType;
    };
    readonly outputs: { readonly o: QType; readonly lse: LseType };
  };
  /** `encode` (CacheGen): a K or V tensor → a per-KV-head bitstream, its lengths and scales. */
  readonly encode: {
    readonly inputs: { readonly x: KvType };
    readonly outputs: {
      readonly stream: StreamType;
      readonly lengths: LengthsType;
      readonly scales: ChannelScalesType;
    };
  };
  /** `decode` (CacheGen): the inverse of `encode`. */
  readonly decode: {
    readonly inputs: {
      readonly stream: StreamType;
      readonly lengths: LengthsType;
      readonly scales: ChannelScalesType;
    };
    readonly outputs: { readonly x: KvType };
  };
}

/**
 * The design's operator kinds and their tensor signatures. Shapes are in elements; see the module doc
 * for layouts (GQA, LSE, int4 packing, padded BSR).
 */
export const signatures: Signatures = {
  /**
   * `quantize` (SALE §3.2, smoothed 4-bit Q/K per block): subtract the per-head mean over the sequence,
   * then symmetric int4 with one f32 scale per (head, block of `blockQ` or `blockK` tokens): `qq ≈ (q − mean) / qScales`.
   * - in  `q: f32 [heads, seq, headDim]`, `k: f32 [kvHeads, kvSeq, headDim]`
   * - out `qq: int4 [heads, seq, headDim]`, `qScales: f32 [heads, qBlocks]`,
   *       `kq: int4 [kvHeads, kvSeq, headDim]`, `kScales: f32 [kvHeads, kBlocks]`,
   *       `kMean: f32 [kvHeads, headDim]` (mean key), `qmk: f32 [heads, kvSeq]` (the exact correction
   *       `mean(Q_h) · (k_j − mean(K))` that undoes the query smoothing in the scores)
   */
  quantize: {
    inputs: { q, k: kv },
    outputs: {
      qq: portTypes.qInt4,
      qScales: portTypes.qScales,
      kq: portTypes.kInt4,
      kScales: portTypes.kScales,
      kMean: tensorType("f32", ["kvHeads", "headDim"]),
      qmk: tensorType("f32", ["heads", "kvSeq"]),
    },
  },
  /**
   * `estimate` (SALE §3.3, low-bit QK; Relative Attention Score per block pair): one importance score per
   * (query head, query block, key block) from the quantized Q/K (full-precision `q`, `k` for the parts the
   * paper computes exactly). Causally masked pairs get -Infinity.
   * - in  `q: f32 [heads, seq, headDim]`, `k: f32 [kvHeads, kvSeq, headDim]`,
   *       `qq: int4 [heads, seq, headDim]`, `qScales: f32 [heads, qBlocks]`,
   *       `kq: int4 [kvHeads, kvSeq, headDim]`, `kScales: f32 [kvHeads, kBlocks]`,
   *       `kMean: f32 [kvHeads, headDim]`, `qmk: f32 [heads, kvSeq]`
   * - out `scores: f32 [heads, qBlocks, kBlocks]`
   */
  estimate: {
    inputs: {
      q,
      k: kv,
      qq: portTypes.qInt4,
      qScales: portTypes.qScales,
      kq: portTypes.kInt4,
      kScales: portTypes.kScales,
      kMean: tensorType("f32", ["kvHeads", "headDim"]),
      qmk: tensorType("f32", ["heads", "kvSeq"]),
    },
    outputs: { scores: portTypes.blockScores },
  },
  /**
   * `select` (SALE §3.3, threshold → BSR mask; sinks and local window always kept): block scores to a
   * padded per-head BSR mask (module doc), with the density it reached.
   * - in  `scores: f32 [heads, qBlocks, kBlocks]`
   * - out `indptr: i32 [heads, qBlocks + 1]`, `indices: i32 [heads, nnz]`,
   *       `density: f32 [heads]` (kept blocks / causal blocks)
   */
  select: {
    inputs: { scores: portTypes.blockScores },
    outputs: { indptr, indices, density: tensorType("f32", ["heads"]) },
  },
  /**
   * `sparse-attn`: block-sparse flash attention (online softmax, GQA, causal within kept blocks) over the
   * key blocks a BSR mask keeps; returns LSE so partial results merge.
   * - in  `q: f32 [heads, seq, headDim]`, `k, v: f32 [kvHeads, kvSeq, headDim]`,
   *       `indptr: i32 [heads, qBlocks + 1]`, `indices: i32 [heads, nnz]`
   * - out `o: f32 [heads, seq, headDim]`, `lse: f32 [heads, seq]`
   */
  sparseAttn: {
    inputs: { q, k: kv, v: kv, indptr, indices },
    outputs: { o, lse },
  },
  /**
   * `dense-attn` (baseline): causal flash attention with online softmax and GQA; returns LSE.
   * - in  `q: f32 [heads, seq, headDim]`, `k, v: f32 [kvHeads, kvSeq, headDim]`
   * - out `o: f32 [heads, seq, headDim]`, `lse: f32 [heads, seq]`
   */
  denseAttn: {
    inputs: { q, k: kv, v: kv },
    outputs: { o, lse },
  },
  /**
   * `cluster` (Squeezed Attention §3, k-means over fixed-context keys): centroids and assignments per
   * KV head; a hierarchy is two `cluster` nodes (the second over the first's centroids, with `groups` as
   * its `kvSeq`).
   * - in  `k: f32 [kvHeads, kvSeq, headDim]`
   * - out `centroids: f32 [kvHeads, groups, headDim]`, `assign: i32 [kvHeads, kvSeq]` (cluster id per key),
   *       `counts: i32 [kvHeads, groups]` (keys per cluster)
   */
  cluster: {
    inputs: { k: kv },
    outputs: {
      centroids: tensorType("f32", ["kvHeads", "groups", "headDim"]),
      assign: tensorType("i32", ["kvHeads", "kvSeq"]),
      counts: tensorType("i32", ["kvHeads", "groups"]),
    },
  },
  /**
   * `draft` (LongSpec §3, constant-size draft KV: attention sinks + local window, or a sparse self-draft):
   * gathers `draftSeq` key/value rows from the full cache.
   * - in  `k, v: f32 [kvHeads, kvSeq, headDim]`
   * - out `dk, dv: f32 [kvHeads, draftSeq, headDim]`, `positions: i32 [kvHeads, draftSeq]` (source rows)
   */
  draft: {
    inputs: { k: kv, v: kv },
    outputs: {
      dk: tensorType("f32", ["kvHeads", "draftSeq", "headDim"]),
      dv: tensorType("f32", ["kvHeads", "draftSeq", "headDim"]),
      positions: tensorType("i32", ["kvHeads", "draftSeq"]),
    },
  },
  /**
   * `verify` (LongSpec §3, tree attention): `tree` candidate tokens attend to the whole prefix cache and,
   * within the tree, to their ancestors only (`parents[i] < i`, -1 for a root); prefix and tree parts are
   * merged by LSE.
   * - in  `q: f32 [heads, tree, headDim]`, `k, v: f32 [kvHeads, kvSeq, headDim]` (prefix),
   *       `treeK, treeV: f32 [kvHeads, tree, headDim]`, `parents: i32 [tree]`
   * - out `o: f32 [heads, tree, headDim]`, `lse: f32 [heads, tree]`
   */
  verify: {
    inputs: {
      q: tensorType("f32", ["heads", "tree", "headDim"]),
      k: kv,
      v: kv,
      treeK: tensorType("f32", ["kvHeads", "tree", "headDim"]),
      treeV: tensorType("f32", ["kvHeads", "tree", "headDim"]),
      parents: tensorType("i32", ["tree"]),
    },
    outputs: {
      o: tensorType("f32", ["heads", "tree", "headDim"]),
      lse: tensorType("f32", ["heads", "tree"]),
    },
  },
  /**
   * `merge` (Infinite-LLM / DistAttention §4, LSE-weighted): exact combination of two partial attention
   * results over disjoint key sets: `lse = logaddexp(lse1, lse2)`, `o = e^(lse1-lse) o1 + e^(lse2-lse) o2`.
   * - in  `o1, o2: f32 [heads, seq, headDim]`, `lse1, lse2: f32 [heads, seq]`
   * - out `o: f32 [heads, seq, headDim]`, `lse: f32 [heads, seq]`
   */
  merge: {
    inputs: { o1: o, lse1: lse, o2: o, lse2: lse },
    outputs: { o, lse },
  },
  /**
   * `encode` (CacheGen §5, KV quantization + entropy coding): one K or V tensor to a per-KV-head bitstream.
   * `words` is a static capacity (u32 words per head); `lengths` says how many are used.
   * - in  `x: f32 [kvHeads, kvSeq, headDim]`
   * - out `stream: u32 [kvHeads, words]`, `lengths: u32 [kvHeads]`, `scales: f32 [kvHeads, headDim]`
   *       (per-channel quantization scale)
   */
  encode: {
    inputs: { x: kv },
    outputs: {
      stream: tensorType("u32", ["kvHeads", "words"]),
      lengths: tensorType("u32", ["kvHeads"]),
      scales: tensorType("f32", ["kvHeads", "headDim"]),
    },
  },
  /**
   * `decode` (CacheGen §5): the inverse of `encode` (lossy by the quantization levels). `kvSeq` comes from
   * the operator's parameters.
   * - in  `stream: u32 [kvHeads, words]`, `lengths: u32 [kvHeads]`, `scales: f32 [kvHeads, headDim]`
   * - out `x: f32 [kvHeads, kvSeq, headDim]`
   */
  decode: {
    inputs: {
      stream: tensorType("u32", ["kvHeads", "words"]),
      lengths: tensorType("u32", ["kvHeads"]),
      scales: tensorType("f32", ["kvHeads", "headDim"]),
    },
    outputs: { x: kv },
  },
};

/** Names of the declared signatures. */
export type SignatureName = keyof Signatures;
