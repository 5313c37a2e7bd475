/**
 * `sale.select`: Relative Attention Score ≥ τ → block mask in BSR form per head, always keeping the sink and
 * local-window blocks; reports density = nnz / causal blocks per head.
 *
 * BSR layout (as SciPy / FlashInfer, one matrix per query head): `indptr [heads, qBlocks + 1]` (i32, row `r`
 * of head `h` owns `indices[h, indptr[h, r] .. indptr[h, r + 1])`), `indices [heads, nnzCap]` (i32 key-block
 * ids, ascending within a row; `nnzCap` = causal blocks, entries past `indptr[h, qBlocks]` are −1),
 * `density [heads]` (f32).
 *
 * Reference: SALE (arXiv 2505.24179) §3 (block selection by threshold, sink + local window kept).
 * @module
 */
import { Effect } from "effect";
import { allocHost, tensorType } from "@longctx/graph";
import type { DescsOf, GpuLowering, HostOf, Kernel, Operator, TensorType } from "@longctx/graph";
import { causalKBlocks, need } from "../dense/common.ts";
import { isForced, saleGeometry, SaleParams } from "./params.ts";

/** Input ports of `sale.select`. */
export type SaleSelectInputs = {
  /** Relative Attention Score per block pair, `f32 [heads, qBlocks, kBlocks]` (`sale.estimate`'s output). */
  readonly scores: TensorType<"f32", readonly ["heads", "qBlocks", "kBlocks"]>;
};
/** Output ports of `sale.select`: the padded per-head BSR mask and its density. */
export type SaleSelectOutputs = {
  /** BSR row pointers, `i32 [heads, qBlocks + 1]`. */
  readonly indptr: TensorType<"i32", readonly ["heads", "indptr"]>;
  /** Kept key-block ids, ascending per query block, `i32 [heads, nnz]` (unused slots -1). */
  readonly indices: TensorType<"i32", readonly ["heads", "nnz"]>;
  /** Kept blocks / causal blocks, `f32 [heads]`. */
  readonly density: TensorType<"f32", readonly ["heads"]>;
};

const pt: { readonly inputs: SaleSelectInputs; readonly outputs: SaleSelectOutputs } = {
  inputs: { scores: tensorType("f32", ["heads", "qBlocks", "kBlocks"] as const) },
  outputs: {
    indptr: tensorType("i32", ["heads", "indptr"] as const),
    indices: tensorType("i32", ["heads", "nnz"] as const),
    density: tensorType("f32", ["heads"] as const),
  },
};
type In = SaleSelectInputs;
type Out = SaleSelectOutputs;

/** A block mask in BSR form (host). */
export interface Bsr {
  /** Query heads (one mask each). */
  readonly heads: number;
  /** Query blocks per head. */
  readonly qBlocks: number;
  /** Capacity of `indices` per head (causal block pairs). */
  readonly nnzCap: number;
  /** Row pointers, `[heads, qBlocks + 1]`, offsets from 0 per head. */
  readonly indptr: Int32Array;
  /** Kept key-block ids, `[heads, nnzCap]`, ascending per query block (unused slots -1). */
  readonly indices: Int32Array;
  /** Kept blocks / causal blocks, per head `[heads]`. */
  readonly density: Float32Array;
}

/**
 * Build a BSR mask from a keep predicate over causal (h, r, kb) (host helper used by select and by tests).
 * Unused tail entries of `indices` are −1.
 */
export const bsrFrom = (
  heads: number,
  seq: number,
  p: Pick<SaleParams, "blockQ" | "blockK" | "localWindow">,
  keep: (h: number, r: number, kb: number, nMax: number) => boolean,
): Bsr => {
  const g = saleGeometry(seq, p);
  const indptr = new Int32Array(heads * (g.qBlocks + 1));
  const indices = new Int32Array(heads * g.nnzCap).fill(-1);
  const density = new Float32Array(heads);
  for (let h = 0; h < heads; h++) {
    let n = 0;
    for (let r = 0; r < g.qBlocks; r++) {
      indptr[h * (g.qBlocks + 1) + r] = n;
      const nMax = causalKBlocks(r, seq, p.blockQ, p.blockK);
      for (let kb = 0; kb < nMax; kb++) if (keep(h, r, kb, nMax)) indices[h * g.nnzCap + n++] = kb;
    }
    indptr[h * (g.qBlocks + 1) + g.qBlocks] = n;
    density[h] = n / g.nnzCap;
  }
  return { heads, qBlocks: g.qBlocks, nnzCap: g.nnzCap, indptr, indices, density };
};

/** CPU reference of select on a score tensor `[heads, qBlocks, kBlocks]`. */
export const selectReference = (p: SaleParams, score: Float32Array, heads: number, seq: number): Bsr => {
  const g = saleGeometry(seq, p);
  return bsrFrom(
    heads,
    seq,
    p,
    (h, r, kb, nMax) =>
      isForced(kb, nMax, p.sinkBlocks, g.localBlocks) ||
      score[(h * g.qBlocks + r) * g.kBlocks + kb] >= p.threshold,
  );
};

const SEGS = 64;

const keepExpr = (p: SaleParams, localBlocks: number) =>
  `(kb < ${p.sinkBlocks}u || kb + ${localBlocks}u >= nMax || SC[base + kb] >= ${p.threshold.toPrecision(9)})`;

const selectKernels = (p: SaleParams, heads: number, seq: number): Kernel[] => {
  const g = saleGeometry(seq, p);
  const tag = `${heads}:${seq}:${p.blockQ}x${p.blockK}:s${p.sinkBlocks}:l${g.localBlocks}:t${p.threshold}`;
  const rowHead = `
  let r = wid.x; let h = wid.y;
  let nMax = min(${g.kBlocks}u, (min(r * ${p.blockQ}u + ${p.blockQ}u, ${seq}u) + ${
    p.blockK - 1
  }u) / ${p.blockK}u);
  let base = (h * ${g.qBlocks}u + r) * ${g.kBlocks}u;
  let seg = (nMax + ${SEGS - 1}u) / ${SEGS}u;
  let kb0 = tid * seg; let kb1 = min(nMax, kb0 + seg);
  var n: u32 = 0u;
  for (var kb = kb0; kb < kb1; kb++) { if ${keepExpr(p, g.localBlocks)} { n++; } }`;
  const count: Kernel = {
    key: `sale.select.count:${tag}`,
    entryPoint: "main",
    bindings: ["read", "read_write"],
    wgsl: `@group(0) @binding(0) var<storage, read> SC: array<f32>;
@group(0) @binding(1) var<storage, read_write> CNT: array<u32>;
var<workgroup> tot: atomic<u32>;
@compute @workgroup_size(${SEGS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {${rowHead}
  if (tid == 0u) { atomicStore(&tot, 0u); }
  workgroupBarrier();
  atomicAdd(&tot, n);
  workgroupBarrier();
  if (tid == 0u) { CNT[h * ${g.qBlocks}u + r] = atomicLoad(&tot); }
}`,
  };
  const per = Math.ceil(g.qBlocks / 256);
  const scan: Kernel = {
    key: `sale.select.scan:${tag}`,
    entryPoint: "main",
    bindings: ["read", "read_write", "read_write", "read_write"],
    wgsl: `@group(0) @binding(0) var<storage, read> CNT: array<u32>;
@group(0) @binding(1) var<storage, read_write> INDPTR: array<i32>;
@group(0) @binding(2) var<storage, read_write> DENS: array<f32>;
@group(0) @binding(3) var<storage, read_write> IDX: array<i32>;
var<workgroup> part: array<u32, 256>;
var<workgroup> total: u32;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wid.x;
  let r0 = min(tid * ${per}u, ${g.qBlocks}u); let r1 = min(r0 + ${per}u, ${g.qBlocks}u);
  var s: u32 = 0u;
  for (var r = r0; r < r1; r++) { s += CNT[h * ${g.qBlocks}u + r]; }
  part[tid] = s;
  workgroupBarrier();
  if (tid == 0u) {
    var acc: u32 = 0u;
    for (var i = 0u; i < 256u; i++) { let v = part[i]; part[i] = acc; acc += v; }
    INDPTR[h * ${g.qBlocks + 1}u + ${g.qBlocks}u] = i32(acc);
    DENS[h] = f32(acc) / ${g.nnzCap}.0;
    total = acc;
  }
  workgroupBarrier();
  for (var e = total + tid; e < ${g.nnzCap}u; e += 256u) { IDX[h * ${g.nnzCap}u + e] = -1; }
  var off = part[tid];
  for (var r = r0; r < r1; r++) { INDPTR[h * ${
      g.qBlocks + 1
    }u + r] = i32(off); off += CNT[h * ${g.qBlocks}u + r]; }
}`,
  };
  const fill: Kernel = {
    key: `sale.select.fill:${tag}`,
    entryPoint: "main",
    bindings: ["read", "read", "read_write"],
    wgsl: `@group(0) @binding(0) var<storage, read> SC: array<f32>;
@group(0) @binding(1) var<storage, read> INDPTR: array<i32>;
@group(0) @binding(2) var<storage, read_write> IDX: array<i32>;
var<workgroup> cnt: array<u32, ${SEGS}>;
@compute @workgroup_size(${SEGS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {${rowHead}
  cnt[tid] = n;
  workgroupBarrier();
  var off = u32(INDPTR[h * ${g.qBlocks + 1}u + r]);
  for (var t = 0u; t < tid; t++) { off += cnt[t]; }
  for (var kb = kb0; kb < kb1; kb++) {
    if ${keepExpr(p, g.localBlocks)} { IDX[h * ${g.nnzCap}u + off] = i32(kb); off++; }
  }
}`,
  };
  return [count, scan, fill];
};

/** The `sale.select` operator. */
export const saleSelect: Operator<SaleParams, In, Out> = {
  name: "sale.select",
  kind: "select",
  reference: "SALE (arXiv 2505.24179) §3: threshold on the Relative Attention Score → block-sparse mask",
  params: SaleParams,
  inputs: pt.inputs,
  outputs: pt.outputs,
  infer: (p, i) =>
    Effect.gen(function* () {
      yield* need(
        i.scores.shape.length === 3,
        "score",
        `rank ${i.scores.shape.length}`,
        "[heads, qBlocks, kBlocks]",
      );
      const [heads, qBlocks, kBlocks] = i.scores.shape as [number, number, number];
      // seq is not stored in the score: recover the largest seq consistent with the block grid.
      const seq = Math.min(qBlocks * p.blockQ, kBlocks * p.blockK);
      const g = saleGeometry(seq, p);
      yield* need(
        g.qBlocks === qBlocks && g.kBlocks === kBlocks,
        "score",
        `grid ${qBlocks}×${kBlocks} does not match blockQ ${p.blockQ} / blockK ${p.blockK}`,
        "use the estimate's block sizes",
      );
      return {
        indptr: { ...pt.outputs.indptr, shape: [heads, qBlocks + 1] },
        indices: { ...pt.outputs.indices, shape: [heads, g.nnzCap] },
        density: { ...pt.outputs.density, shape: [heads] },
      } as DescsOf<Out>;
    }),
  cpu: (p, i) => {
    const [heads, qBlocks, kBlocks] = i.scores.desc.shape as [number, number, number];
    const seq = Math.min(qBlocks * p.blockQ, kBlocks * p.blockK);
    const b = selectReference(p, i.scores.data as Float32Array, heads, seq);
    const indptr = allocHost({ ...pt.outputs.indptr, shape: [heads, qBlocks + 1] });
    indptr.data.set(b.indptr);
    const indices = allocHost({ ...pt.outputs.indices, shape: [heads, b.nnzCap] });
    indices.data.set(b.indices);
    const density = allocHost({ ...pt.outputs.density, shape: [heads] });
    density.data.set(b.density);
    return { indptr, indices, density } as HostOf<Out>;
  },
  gpu: (p, i): GpuLowering => {
    const [heads, qBlocks, kBlocks] = i.scores.shape as [number, number, number];
    const seq = Math.min(qBlocks * p.blockQ, kBlocks * p.blockK);
    const [count, scan, fill] = selectKernels(p, heads, seq);
    return {
      workspaces: { cnt: heads * qBlocks * 4 },
      launches: [
        { kernel: count, buffers: ["in:scores", "ws:cnt"], workgroups: [qBlocks, heads, 1] },
        {
          kernel: scan,
          buffers: ["ws:cnt", "out:indptr", "out:density", "out:indices"],
          workgroups: [heads, 1, 1],
        },
        {
          kernel: fill,
          buffers: ["in:scores", "out:indptr", "out:indices"],
          workgroups: [qBlocks, heads, 1],
        },
      ],
    };
  },
  cost: (p, i) => {
    const [heads, qBlocks, kBlocks] = i.scores.shape as [number, number, number];
    const seq = Math.min(qBlocks * p.blockQ, kBlocks * p.blockK);
    const g = saleGeometry(seq, p);
    return {
      flops: 2 * heads * g.nnzCap,
      bytesRead: 2 * heads * qBlocks * kBlocks * 4,
      bytesWritten: heads * (qBlocks + 1 + g.nnzCap) * 4 + heads * 4,
      workspaceBytes: heads * qBlocks * 4,
    };
  },
};
