/**
 * `sale.quantize`: smoothed, symmetric 4-bit quantisation of Q and K per block (blockQ / blockK tokens).
 *
 * Scheme (SALE §3 and the official `quant_triton.py`): subtract the per-head mean over the sequence
 * (Q − mean(Q), K − mean(K)); one scale per (head, block), `s = max|x| / 7`; codes
 * `c = round_half_even(x / s)` in [−7, 7], stored as two's-complement nibbles, eight per `u32` word (element
 * `e` of the row-major tensor in word `e >> 3`, bits `4 (e & 7)`). Removing mean(K) shifts every score of a query
 * row by the same amount (softmax is unchanged); removing mean(Q) is undone by the exact correction term
 * `qmk[h, j] = mean(Q_h) · (k_j − mean(K))`, which estimate adds back. Round-trip bound per element: |x − s c| ≤ s / 2.
 * @module
 */
import { Effect } from "effect";
import { allocHost, tensorType } from "@longctx/graph";
import type { DescsOf, GpuLowering, HostOf, HostTensor, Kernel, Operator, TensorType } from "@longctx/graph";
import { asF32, checkQKV, need, roundEven } from "../dense/common.ts";
import { blockProblem, SaleParams } from "./params.ts";

/** Input ports of `sale.quantize`: `q` and `k` of dtype `D`. */
export type SaleQuantizeInputs<D extends "f32" | "f16"> = {
  /** Queries, `D [heads, seq, headDim]`. */
  readonly q: TensorType<D, readonly ["heads", "seq", "headDim"]>;
  /** Keys, `D [kvHeads, kvSeq, headDim]`. */
  readonly k: TensorType<D, readonly ["kvHeads", "kvSeq", "headDim"]>;
};
/** Output ports of `sale.quantize` (4-bit codes in [-7, 7], eight per `u32` word along `headDim`). */
export type SaleQuantizeOutputs = {
  /** Smoothed 4-bit queries `(q − mean) / qScales`, `int4 [heads, seq, headDim]`. */
  readonly qq: TensorType<"int4", readonly ["heads", "seq", "headDim"]>;
  /** One scale per (head, query block), `f32 [heads, qBlocks]`. */
  readonly qScales: TensorType<"f32", readonly ["heads", "qBlocks"]>;
  /** Smoothed 4-bit keys, `int4 [kvHeads, kvSeq, headDim]`. */
  readonly kq: TensorType<"int4", readonly ["kvHeads", "kvSeq", "headDim"]>;
  /** One scale per (KV head, key block), `f32 [kvHeads, kBlocks]`. */
  readonly kScales: TensorType<"f32", readonly ["kvHeads", "kBlocks"]>;
  /** Mean key per KV head, `f32 [kvHeads, headDim]`. */
  readonly kMean: TensorType<"f32", readonly ["kvHeads", "headDim"]>;
  /** Exact correction `mean(Q_h) · (k_j − mean(K))` that undoes the query smoothing, `f32 [heads, kvSeq]`. */
  readonly qmk: TensorType<"f32", readonly ["heads", "kvSeq"]>;
};

const ports = <D extends "f32" | "f16">(
  dtype: D,
): { readonly inputs: SaleQuantizeInputs<D>; readonly outputs: SaleQuantizeOutputs } => ({
  inputs: {
    q: tensorType(dtype, ["heads", "seq", "headDim"] as const),
    k: tensorType(dtype, ["kvHeads", "kvSeq", "headDim"] as const),
  },
  outputs: {
    qq: tensorType("int4", ["heads", "seq", "headDim"] as const),
    qScales: tensorType("f32", ["heads", "qBlocks"] as const),
    kq: tensorType("int4", ["kvHeads", "kvSeq", "headDim"] as const),
    kScales: tensorType("f32", ["kvHeads", "kBlocks"] as const),
    kMean: tensorType("f32", ["kvHeads", "headDim"] as const),
    qmk: tensorType("f32", ["heads", "kvSeq"] as const),
  },
});
type In<D extends "f32" | "f16"> = SaleQuantizeInputs<D>;
type Out = SaleQuantizeOutputs;

/** Column means over the sequence: `x [H, seq, d]` → `[H, d]` (float64 accumulation). */
export const seqMeans = (x: Float32Array, H: number, seq: number, d: number): Float32Array => {
  const m = new Float64Array(H * d);
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < seq; t++) for (let i = 0; i < d; i++) m[h * d + i] += x[(h * seq + t) * d + i];
  }
  return Float32Array.from(m, (v) => v / seq);
};

/**
 * Quantise `x [H, seq, d]` (minus `mean [H, d]`) in token groups: returns packed codes (`u32` words of
 * `H·seq·d/8`) and scales `[H, ceil(seq/G)]`. Values are computed in float32 like the GPU kernel.
 */
export const quantizeGroups = (
  x: Float32Array,
  mean: Float32Array,
  H: number,
  seq: number,
  d: number,
  G: number,
): { codes: Uint32Array; scales: Float32Array } => {
  const nG = Math.ceil(seq / G);
  const codes = new Uint32Array((H * seq * d) / 8);
  const scales = new Float32Array(H * nG);
  for (let h = 0; h < H; h++) {
    for (let g = 0; g < nG; g++) {
      const t1 = Math.min(seq, (g + 1) * G);
      let mx = 0;
      for (let t = g * G; t < t1; t++) {
        for (let i = 0; i < d; i++) {
          mx = Math.max(mx, Math.abs(Math.fround(x[(h * seq + t) * d + i] - mean[h * d + i])));
        }
      }
      const s = Math.fround(mx / 7);
      scales[h * nG + g] = s;
      for (let t = g * G; t < t1; t++) {
        for (let i = 0; i < d; i++) {
          const e = (h * seq + t) * d + i;
          const c = s > 0
            ? Math.max(-7, Math.min(7, roundEven(Math.fround(Math.fround(x[e] - mean[h * d + i]) / s))))
            : 0;
          codes[e >> 3] |= (c & 15) << (4 * (e & 7));
        }
      }
    }
  }
  return { codes, scales };
};

/** Signed 4-bit code of element `e` of a packed tensor. */
export const code4 = (codes: Uint32Array, e: number): number => {
  const n = (codes[e >> 3] >>> (4 * (e & 7))) & 15;
  return n >= 8 ? n - 16 : n;
};

const meanKernels = (
  nH: number,
  seq: number,
  d: number,
  dtype: string,
  tag: string,
): [Kernel, Kernel, number] => {
  const CH = 128;
  const nC = Math.ceil(seq / CH);
  const en = dtype === "f16" ? "enable f16;\n" : "";
  const partial: Kernel = {
    key: `sale.mean.partial:${tag}:${nH}:${seq}x${d}:${dtype}`,
    entryPoint: "main",
    bindings: ["read", "read_write"],
    enables: dtype === "f16" ? ["f16"] : [],
    wgsl: `${en}@group(0) @binding(0) var<storage, read> X: array<${dtype}>;
@group(0) @binding(1) var<storage, read_write> P: array<f32>;
@compute @workgroup_size(${d})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let c = wid.x; let h = wid.y;
  let t1 = min(${seq}u, (c + 1u) * ${CH}u);
  var acc: f32 = 0.0;
  for (var t = c * ${CH}u; t < t1; t++) { acc += f32(X[(h * ${seq}u + t) * ${d}u + tid]); }
  P[(h * ${nC}u + c) * ${d}u + tid] = acc;
}`,
  };
  const reduce: Kernel = {
    key: `sale.mean.reduce:${tag}:${nH}:${seq}x${d}`,
    entryPoint: "main",
    bindings: ["read", "read_write"],
    wgsl: `@group(0) @binding(0) var<storage, read> P: array<f32>;
@group(0) @binding(1) var<storage, read_write> M: array<f32>;
@compute @workgroup_size(${d})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let h = wid.x;
  var acc: f32 = 0.0;
  for (var c = 0u; c < ${nC}u; c++) { acc += P[(h * ${nC}u + c) * ${d}u + tid]; }
  M[h * ${d}u + tid] = acc / ${seq}.0;
}`,
  };
  return [partial, reduce, nC];
};

const quantKernel = (
  nH: number,
  seq: number,
  d: number,
  G: number,
  dtype: string,
  qmk?: { heads: number; group: number },
): Kernel => {
  const nG = Math.ceil(seq / G);
  const en = dtype === "f16" ? "enable f16;\n" : "";
  const words = (G * d) / 8;
  const qmkDecl = qmk
    ? `@group(0) @binding(4) var<storage, read> QM: array<f32>;
@group(0) @binding(5) var<storage, read_write> QMK: array<f32>;`
    : "";
  const qmkBody = qmk
    ? `  for (var pr = tid; pr < ${G * qmk.group}u; pr += 64u) {
    let t = g * ${G}u + pr / ${qmk.group}u;
    let hq = h * ${qmk.group}u + pr % ${qmk.group}u;
    if (t < ${seq}u) {
      var acc: f32 = 0.0;
      for (var i = 0u; i < ${d}u; i++) {
        acc = fma(QM[hq * ${d}u + i], f32(X[(h * ${seq}u + t) * ${d}u + i]) - M[h * ${d}u + i], acc);
      }
      QMK[hq * ${seq}u + t] = acc;
    }
  }`
    : "";
  return {
    key: `sale.quant:${qmk ? `k${qmk.group}` : "q"}:${nH}:${seq}x${d}:g${G}:${dtype}`,
    entryPoint: "main",
    bindings: qmk
      ? ["read", "read", "read_write", "read_write", "read", "read_write"]
      : ["read", "read", "read_write", "read_write"],
    enables: dtype === "f16" ? ["f16"] : [],
    wgsl: `${en}@group(0) @binding(0) var<storage, read> X: array<${dtype}>;
@group(0) @binding(1) var<storage, read> M: array<f32>;
@group(0) @binding(2) var<storage, read_write> C: array<u32>;
@group(0) @binding(3) var<storage, read_write> S: array<f32>;
${qmkDecl}
var<workgroup> red: array<f32, 64>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let g = wid.x; let h = wid.y;
  var mx: f32 = 0.0;
  for (var x = tid; x < ${G * d}u; x += 64u) {
    let t = g * ${G}u + x / ${d}u;
    if (t < ${seq}u) { mx = max(mx, abs(f32(X[(h * ${seq}u + t) * ${d}u + x % ${d}u]) - M[h * ${d}u + x % ${d}u])); }
  }
  red[tid] = mx;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (tid < s) { red[tid] = max(red[tid], red[tid + s]); }
    workgroupBarrier();
  }
  let sc = red[0] / 7.0;
  if (tid == 0u) { S[h * ${nG}u + g] = sc; }
  for (var w = tid; w < ${words}u; w += 64u) {
    let t = g * ${G}u + (w * 8u) / ${d}u;
    if (t < ${seq}u) {
      let e0 = (h * ${seq}u + t) * ${d}u + (w * 8u) % ${d}u;
      let i0 = (w * 8u) % ${d}u;
      var word: u32 = 0u;
      for (var n = 0u; n < 8u; n++) {
        let a = f32(X[e0 + n]) - M[h * ${d}u + i0 + n];
        let c = select(0, i32(clamp(round(a / sc), -7.0, 7.0)), sc > 0.0);
        word = word | ((u32(c) & 15u) << (4u * n));
      }
      C[e0 / 8u] = word;
    }
  }
${qmkBody}
}`,
  };
};

/** Build `sale.quantize` for inputs of dtype `dtype`. */
export const makeSaleQuantize = <D extends "f32" | "f16">(
  dtype: D,
): Operator<SaleParams, In<D>, Out> => {
  const pt = ports(dtype);
  return {
    name: dtype === "f32" ? "sale.quantize" : "sale.quantize.f16",
    kind: "quantize",
    reference: "SALE (arXiv 2505.24179) §3: 4-bit per-block quantisation of smoothed Q and K",
    params: SaleParams,
    inputs: pt.inputs,
    outputs: pt.outputs,
    infer: (p, i) =>
      Effect.gen(function* () {
        const s = yield* checkQKV(i.q, i.k, i.k);
        const bad = blockProblem(p, s.headDim);
        yield* need(bad === undefined, "q", bad ?? "", "fix blockQ/blockK");
        const nQ = Math.ceil(s.seq / p.blockQ), nK = Math.ceil(s.seq / p.blockK);
        return {
          qq: { ...pt.outputs.qq, shape: [s.heads, s.seq, s.headDim] },
          qScales: { ...pt.outputs.qScales, shape: [s.heads, nQ] },
          kq: { ...pt.outputs.kq, shape: [s.kvHeads, s.seq, s.headDim] },
          kScales: { ...pt.outputs.kScales, shape: [s.kvHeads, nK] },
          kMean: { ...pt.outputs.kMean, shape: [s.kvHeads, s.headDim] },
          qmk: { ...pt.outputs.qmk, shape: [s.heads, s.seq] },
        } as DescsOf<Out>;
      }),
    cpu: (p, i) => {
      const [H, seq, d] = i.q.desc.shape as [number, number, number];
      const Hk = i.k.desc.shape[0];
      const q = asF32(i.q as HostTensor), k = asF32(i.k as HostTensor);
      const qMean = seqMeans(q, H, seq, d), kMean = seqMeans(k, Hk, seq, d);
      const Q = quantizeGroups(q, qMean, H, seq, d, p.blockQ);
      const K = quantizeGroups(k, kMean, Hk, seq, d, p.blockK);
      const qmk = new Float32Array(H * seq);
      const g = H / Hk;
      for (let h = 0; h < H; h++) {
        const kh = Math.floor(h / g);
        for (let t = 0; t < seq; t++) {
          let acc = 0;
          for (let x = 0; x < d; x++) {
            acc += qMean[h * d + x] * (k[(kh * seq + t) * d + x] - kMean[kh * d + x]);
          }
          qmk[h * seq + t] = acc;
        }
      }
      const mk = (port: keyof Out, shape: number[], data: Float32Array | Uint32Array) => {
        const t = allocHost({ ...(pt.outputs[port] as TensorType), shape });
        (t.data as Float32Array | Uint32Array).set(data);
        return t;
      };
      return {
        qq: mk("qq", [H, seq, d], Q.codes),
        qScales: mk("qScales", [H, Math.ceil(seq / p.blockQ)], Q.scales),
        kq: mk("kq", [Hk, seq, d], K.codes),
        kScales: mk("kScales", [Hk, Math.ceil(seq / p.blockK)], K.scales),
        kMean: mk("kMean", [Hk, d], kMean),
        qmk: mk("qmk", [H, seq], qmk),
      } as unknown as HostOf<Out>;
    },
    gpu: (p, i): GpuLowering => {
      const [H, seq, d] = i.q.shape as [number, number, number];
      const Hk = i.k.shape[0];
      const [qPart, qRed, nC] = meanKernels(H, seq, d, dtype, "q");
      const [kPart, kRed] = meanKernels(Hk, seq, d, dtype, "k");
      return {
        workspaces: { qPartial: H * nC * d * 4, kPartial: Hk * nC * d * 4, qMean: H * d * 4 },
        launches: [
          { kernel: qPart, buffers: ["in:q", "ws:qPartial"], workgroups: [nC, H, 1] },
          { kernel: qRed, buffers: ["ws:qPartial", "ws:qMean"], workgroups: [H, 1, 1] },
          { kernel: kPart, buffers: ["in:k", "ws:kPartial"], workgroups: [nC, Hk, 1] },
          { kernel: kRed, buffers: ["ws:kPartial", "out:kMean"], workgroups: [Hk, 1, 1] },
          {
            kernel: quantKernel(H, seq, d, p.blockQ, dtype),
            buffers: ["in:q", "ws:qMean", "out:qq", "out:qScales"],
            workgroups: [Math.ceil(seq / p.blockQ), H, 1],
          },
          {
            kernel: quantKernel(Hk, seq, d, p.blockK, dtype, { heads: H, group: H / Hk }),
            buffers: ["in:k", "out:kMean", "out:kq", "out:kScales", "ws:qMean", "out:qmk"],
            workgroups: [Math.ceil(seq / p.blockK), Hk, 1],
          },
        ],
      };
    },
    cost: (p, i) => {
      const [H, seq, d] = i.q.shape as [number, number, number];
      const Hk = i.k.shape[0];
      const elt = dtype === "f16" ? 2 : 4;
      return {
        flops: 6 * (H + Hk) * seq * d + 2 * H * seq * d,
        bytesRead: 2 * (H + Hk) * seq * d * elt + Hk * seq * d * elt * (H / Hk),
        bytesWritten: (H + Hk) * seq * d / 2 +
          (H * Math.ceil(seq / p.blockQ) + Hk * Math.ceil(seq / p.blockK)) * 4 + H * seq * 4,
        workspaceBytes: (H + Hk) * Math.ceil(seq / 128) * d * 4 + H * d * 4,
      };
    },
  };
};

/** `sale.quantize` for f32 inputs. */
export const saleQuantize: Operator<SaleParams, SaleQuantizeInputs<"f32">, SaleQuantizeOutputs> =
  makeSaleQuantize("f32");
/** `sale.quantize.f16` for f16 inputs. */
export const saleQuantizeF16: Operator<SaleParams, SaleQuantizeInputs<"f16">, SaleQuantizeOutputs> =
  makeSaleQuantize("f16");
