/**
 * `sale.sparseAttn`: block-sparse causal flash attention over a BSR block mask (GQA, LSE out). With a full
 * causal mask it runs the dense schedule and equals `dense.attn`.
 *
 * Reference: SALE (arXiv 2505.24179) §3 (block-sparse prefill over the selected blocks); FlashAttention-2
 * Alg. 1 for the per-block online softmax.
 * @module
 */
import { Effect } from "effect";
import { allocHost, tensorType } from "@longctx/graph";
import type { DescsOf, Gemm, GpuLowering, HostOf, HostTensor, Operator, TensorType } from "@longctx/graph";
import { asF32, checkQKV, need } from "../dense/common.ts";
import { attentionReference, flashCost } from "../dense/attn.ts";
import { effectiveScale } from "../dense/common.ts";
import { chooseTiles, flashKey, flashWgsl } from "../dense/flash_wgsl.ts";
import { blockProblem, saleGeometry, SaleParams } from "./params.ts";

/** Input ports of `sale.sparseAttn`: `q`, `k`, `v` of dtype `D` and a padded per-head BSR block mask. */
export type SaleSparseAttnInputs<D extends "f32" | "f16"> = {
  /** Queries, `D [heads, seq, headDim]`. */
  readonly q: TensorType<D, readonly ["heads", "seq", "headDim"]>;
  /** Keys, `D [kvHeads, kvSeq, headDim]`. */
  readonly k: TensorType<D, readonly ["kvHeads", "kvSeq", "headDim"]>;
  /** Values, `D [kvHeads, kvSeq, headDim]`. */
  readonly v: TensorType<D, readonly ["kvHeads", "kvSeq", "headDim"]>;
  /** BSR row pointers, `i32 [heads, qBlocks + 1]`. */
  readonly indptr: TensorType<"i32", readonly ["heads", "indptr"]>;
  /** Kept key-block ids, ascending per query block, `i32 [heads, nnz]`. */
  readonly indices: TensorType<"i32", readonly ["heads", "nnz"]>;
};
/** Output ports of `sale.sparseAttn` (always f32). */
export type SaleSparseAttnOutputs = {
  /** Attention output, `f32 [heads, seq, headDim]`. */
  readonly o: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Log-sum-exp of the scaled scores of the kept keys, `f32 [heads, seq]`. */
  readonly lse: TensorType<"f32", readonly ["heads", "seq"]>;
};

const ports = <D extends "f32" | "f16">(
  dtype: D,
): { readonly inputs: SaleSparseAttnInputs<D>; readonly outputs: SaleSparseAttnOutputs } => ({
  inputs: {
    q: tensorType(dtype, ["heads", "seq", "headDim"] as const),
    k: tensorType(dtype, ["kvHeads", "kvSeq", "headDim"] as const),
    v: tensorType(dtype, ["kvHeads", "kvSeq", "headDim"] as const),
    indptr: tensorType("i32", ["heads", "indptr"] as const),
    indices: tensorType("i32", ["heads", "nnz"] as const),
  },
  outputs: {
    o: tensorType("f32", ["heads", "seq", "headDim"] as const),
    lse: tensorType("f32", ["heads", "seq"] as const),
  },
});
type In<D extends "f32" | "f16"> = SaleSparseAttnInputs<D>;
type Out = SaleSparseAttnOutputs;

/**
 * Host predicate "query row i of head h sees key j" for a BSR mask (plus causality).
 */
export const bsrKeep = (
  indptr: Int32Array,
  indices: Int32Array,
  qBlocks: number,
  nnzCap: number,
  blockQ: number,
  blockK: number,
): (h: number, i: number, j: number) => boolean => {
  const sets = new Map<number, Set<number>>();
  return (h, i, j) => {
    const r = Math.floor(i / blockQ);
    const key = h * qBlocks + r;
    let s = sets.get(key);
    if (!s) {
      s = new Set();
      for (let e = indptr[h * (qBlocks + 1) + r]; e < indptr[h * (qBlocks + 1) + r + 1]; e++) {
        s.add(indices[h * nnzCap + e]);
      }
      sets.set(key, s);
    }
    return j <= i && s.has(Math.floor(j / blockK));
  };
};

/**
 * `sale.sparseAttn`'s output through `gemm`: per head and query block, the kept key blocks of the BSR list
 * (`indptr [H, qBlocks + 1]`, `indices [H, nnzCap]`) gathered into contiguous K and V, scores as one GEMM,
 * the causal mask and the softmax in float64, `P·V` as one GEMM. Returns `o [H, seq, d]` and `lse [H, seq]`
 * (−∞ and o = 0 for a row that sees no key).
 */
export const sparseAttnGemm = (
  gemm: Gemm,
  p: SaleParams,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  indptr: Int32Array,
  indices: Int32Array,
  H: number,
  Hk: number,
  seq: number,
  d: number,
): { o: Float32Array; lse: Float32Array } => {
  const { qBlocks, nnzCap } = saleGeometry(seq, p);
  const { blockQ: bq, blockK: bk } = p;
  const scale = effectiveScale(p.scale, d);
  const g = H / Hk;
  const o = new Float32Array(H * seq * d), lse = new Float32Array(H * seq);
  const kSel = new Float32Array(seq * d), vSel = new Float32Array(seq * d);
  const S = new Float32Array(bq * seq), oBlk = new Float32Array(bq * d);
  const keyOf = new Int32Array(seq);
  for (let h = 0; h < H; h++) {
    const kb0 = Math.floor(h / g) * seq * d;
    for (let r = 0; r < qBlocks; r++) {
      const i0 = r * bq, rows = Math.min(seq, i0 + bq) - i0;
      let n = 0;
      for (let e = indptr[h * (qBlocks + 1) + r]; e < indptr[h * (qBlocks + 1) + r + 1]; e++) {
        const kb = indices[h * nnzCap + e];
        const a = kb * bk, b = Math.min(seq, a + bk);
        kSel.set(k.subarray(kb0 + a * d, kb0 + b * d), n * d);
        vSel.set(v.subarray(kb0 + a * d, kb0 + b * d), n * d);
        for (let j = a; j < b; j++) keyOf[n + j - a] = j;
        n += b - a;
      }
      if (n === 0) {
        for (let x = 0; x < rows; x++) lse[h * seq + i0 + x] = -Infinity;
        continue;
      }
      gemm(false, true, rows, n, d, scale, q.subarray((h * seq + i0) * d), d, kSel, d, 0, S, seq);
      for (let x = 0; x < rows; x++) {
        const i = i0 + x, row = x * seq;
        let m = -Infinity;
        for (let c = 0; c < n; c++) if (keyOf[c] <= i) m = Math.max(m, S[row + c]);
        if (m === -Infinity) {
          S.fill(0, row, row + n);
          lse[h * seq + i] = -Infinity;
          continue;
        }
        let l = 0;
        for (let c = 0; c < n; c++) {
          const e = keyOf[c] <= i ? Math.exp(S[row + c] - m) : 0;
          S[row + c] = e;
          l += e;
        }
        for (let c = 0; c < n; c++) S[row + c] /= l;
        lse[h * seq + i] = m + Math.log(l);
      }
      gemm(false, false, rows, d, n, 1, S, seq, vSel, d, 0, oBlk, d);
      o.set(oBlk.subarray(0, rows * d), (h * seq + i0) * d);
    }
  }
  return { o, lse };
};

/** Build `sale.sparseAttn` for inputs of dtype `dtype`. */
export const makeSaleSparseAttn = <D extends "f32" | "f16">(dtype: D): Operator<SaleParams, In<D>, Out> => {
  const pt = ports(dtype);
  return {
    name: dtype === "f32" ? "sale.sparseAttn" : "sale.sparseAttn.f16",
    kind: "sparse-attn",
    reference: "SALE (arXiv 2505.24179) §3: block-sparse causal flash attention over the selected blocks",
    params: SaleParams,
    inputs: pt.inputs,
    outputs: pt.outputs,
    infer: (p, i) =>
      Effect.gen(function* () {
        const s = yield* checkQKV(i.q, i.k, i.v);
        const bad = blockProblem(p, s.headDim);
        yield* need(bad === undefined, "q", bad ?? "", "fix blockQ/blockK");
        const g = saleGeometry(s.seq, p);
        yield* need(
          i.indptr.shape.join() === `${s.heads},${g.qBlocks + 1}`,
          "indptr",
          `shape [${i.indptr.shape}], want [${s.heads}, ${g.qBlocks + 1}]`,
          "indptr is [heads, qBlocks + 1] from sale.select",
        );
        yield* need(
          i.indices.shape.join() === `${s.heads},${g.nnzCap}`,
          "indices",
          `shape [${i.indices.shape}], want [${s.heads}, ${g.nnzCap}]`,
          "indices is [heads, causal blocks] from sale.select",
        );
        return {
          o: { ...pt.outputs.o, shape: [s.heads, s.seq, s.headDim] },
          lse: { ...pt.outputs.lse, shape: [s.heads, s.seq] },
        } as DescsOf<Out>;
      }),
    cpu: (p, i, ctx) => {
      const [H, seq, d] = i.q.desc.shape as [number, number, number];
      const Hk = i.k.desc.shape[0];
      const g = saleGeometry(seq, p);
      if (ctx?.gemm) {
        // With the backend's GEMM: gathered kept blocks, f32 GEMMs, float64 softmax.
        const r = sparseAttnGemm(
          ctx.gemm,
          p,
          asF32(i.q as HostTensor),
          asF32(i.k as HostTensor),
          asF32(i.v as HostTensor),
          i.indptr.data as Int32Array,
          i.indices.data as Int32Array,
          H,
          Hk,
          seq,
          d,
        );
        const o = allocHost({ ...pt.outputs.o, shape: [H, seq, d] });
        o.data.set(r.o);
        const lse = allocHost({ ...pt.outputs.lse, shape: [H, seq] });
        lse.data.set(r.lse);
        return { o, lse } as HostOf<Out>;
      }
      const keep = bsrKeep(
        i.indptr.data as Int32Array,
        i.indices.data as Int32Array,
        g.qBlocks,
        g.nnzCap,
        p.blockQ,
        p.blockK,
      );
      const r = attentionReference(
        asF32(i.q as HostTensor),
        asF32(i.k as HostTensor),
        asF32(i.v as HostTensor),
        H,
        Hk,
        seq,
        d,
        effectiveScale(p.scale, d),
        keep,
      );
      const o = allocHost({ ...pt.outputs.o, shape: [H, seq, d] });
      o.data.set(r.o);
      const lse = allocHost({ ...pt.outputs.lse, shape: [H, seq] });
      lse.data.set(r.lse);
      return { o, lse } as HostOf<Out>;
    },
    gpu: (p, i, features): GpuLowering => {
      const [heads, seq, headDim] = i.q.shape as [number, number, number];
      if (dtype === "f16" && !features.has("shader-f16")) throw new RangeError("needs shader-f16");
      const g = saleGeometry(seq, p);
      const t = chooseTiles(dtype, headDim, p.blockQ, p.blockK, p.workgroupMemory);
      const cfg = {
        heads,
        kvHeads: i.k.shape[0],
        seq,
        headDim,
        dtype,
        scale: effectiveScale(p.scale, headDim),
        bq: p.blockQ,
        bk: t.bk,
        qShared: t.qShared,
        sparse: { blockK: p.blockK, nnzCap: g.nnzCap },
      } as const;
      return {
        workspaces: {},
        launches: [{
          kernel: {
            key: flashKey(cfg),
            wgsl: flashWgsl(cfg),
            entryPoint: "main",
            bindings: ["read", "read", "read", "read", "read", "read_write", "read_write"],
            enables: dtype === "f16" ? ["f16"] : [],
          },
          buffers: ["in:q", "in:k", "in:v", "in:indptr", "in:indices", "out:o", "out:lse"],
          workgroups: [g.qBlocks, heads, 1],
        }],
      };
    },
    cost: (p, i) => {
      const [heads, seq, d] = i.q.shape as [number, number, number];
      const g = saleGeometry(seq, p);
      // Worst case (full mask): nnz is only known at run time; scale by the measured density.
      return flashCost(heads, seq, d, dtype === "f16" ? 2 : 4, p.blockQ, p.blockK, g.nnzCap);
    },
  };
};

/** `sale.sparseAttn` for f32 inputs. */
export const saleSparseAttn: Operator<SaleParams, SaleSparseAttnInputs<"f32">, SaleSparseAttnOutputs> =
  makeSaleSparseAttn("f32");
/** `sale.sparseAttn.f16` for f16 inputs (f32 accumulation). */
export const saleSparseAttnF16: Operator<SaleParams, SaleSparseAttnInputs<"f16">, SaleSparseAttnOutputs> =
  makeSaleSparseAttn("f16");
