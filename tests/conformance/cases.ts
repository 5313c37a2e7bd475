/**
 * Conformance case generators: operator name → the cases (shapes × dtype, q ≠ k where the operator may accept
 * it) of that operator, each with its inputs, its float64 check of the CPU reference and its backend-vs-CPU
 * comparison with stated thresholds. Every registered operator needs an entry here, or the conformance test
 * fails for it.
 *
 * Inputs are seeded normals (`graph/src/random.ts`) shaped like real activations: Q and K carry a per-channel
 * mean (K with two outlier channels), so SALE's smoothing and `qmk` matter. SALE's chained operators get their
 * inputs from the previous stages' CPU references (quantize → estimate → select → sparseAttn); select's
 * threshold is the median of the estimated scores of its case (an exact f32 score value, so `score == τ` ties
 * occur), which keeps the block masks between empty and full.
 * @module
 */
import { Schema } from "effect";
import { hostTensor, seededNormals } from "@longctx/graph";
import type { AnyOperator, HostTensor, TensorDesc } from "@longctx/graph";
import { f32ToHalf, halfToF32 } from "../../ops/dense/common.ts";
import {
  saleEstimate,
  saleEstimateF16,
  saleQuantize,
  saleQuantizeF16,
  saleSelect,
} from "../../ops/sale/mod.ts";
import {
  attention64,
  blocksOf,
  bsrMask,
  estimate64,
  FORCED64,
  means64,
  nibble,
  qmk64,
  quantize64,
  select64,
} from "./ref.ts";
import { codeMetrics, maxAbs, maxRel, maxScaled, type Metric, mismatches, relL2, values } from "./metrics.ts";

/** Output host tensors by port. */
export type Outputs = Readonly<Record<string, HostTensor>>;

/** A case's data and checks (built once, shared by every backend). */
export interface Built {
  readonly inputs: Readonly<Record<string, HostTensor>>;
  /** Parameters fixed by the data (select's threshold), merged over the case's `params`. */
  readonly params?: Readonly<Record<string, unknown>>;
  /** A few words for the case label (e.g. the mask density). */
  readonly note?: string;
  /** The CPU reference's outputs against a float64 / exact computation. */
  readonly ref64: (cpu: Outputs) => Metric[];
  /** A backend's outputs against the CPU reference's. */
  readonly compare: (got: Outputs, cpu: Outputs) => Metric[];
}

/** One conformance case of an operator. */
export interface ConfCase {
  /** e.g. `H8/1 S257 D64` or `H4/1 S1 kS257 D64`. */
  readonly shape: string;
  readonly dtype: "f32" | "f16";
  /** kSeq ≠ seq: run only when the operator's `infer` accepts it. */
  readonly qk: boolean;
  /** Raw parameters (decoded by the operator's schema); the runner sets `workgroupMemory` per backend. */
  readonly params: Readonly<Record<string, unknown>>;
  /** Input descriptions (for `infer` probes before any data is made). */
  readonly descs: Readonly<Record<string, TensorDesc>>;
  /** For a q ≠ k case: the same inputs with kSeq = seq (`infer` must accept these). */
  readonly equalDescs?: Readonly<Record<string, TensorDesc>>;
  readonly build: () => Built;
}

/** Cases of one operator. */
export type CaseGenerator = (op: AnyOperator) => readonly ConfCase[];

/** [heads, kvHeads, seq, kSeq, headDim] */
type Shape = readonly [number, number, number, number, number];

const shapeLabel = ([H, Hk, S, kS, D]: Shape) => `H${H}/${Hk} S${S}${kS === S ? "" : ` kS${kS}`} D${D}`;

const descOf = (op: AnyOperator, port: string, shape: readonly number[]): TensorDesc => {
  const t = op.inputs[port];
  if (!t) throw new Error(`${op.name} has no input port "${port}": update its case generator`);
  return { dtype: t.dtype, dims: t.dims, shape };
};

const dtypeOf = (op: AnyOperator): "f32" | "f16" => (op.inputs.q?.dtype === "f16" ? "f16" : "f32");

/** Values rounded to the storage dtype, and the host tensor holding them. */
const floatTensor = (
  op: AnyOperator,
  port: string,
  shape: readonly number[],
  x: Float32Array,
): { t: HostTensor; x: Float32Array } => {
  const d = descOf(op, port, shape);
  if (d.dtype === "f16") {
    const bits = f32ToHalf(x);
    return { t: hostTensor("f16", d.dims, shape, bits), x: halfToF32(bits) };
  }
  return { t: hostTensor("f32", d.dims, shape, x), x };
};

/**
 * Activation-like data `[H, S, D]`: seeded normals times `amp`, plus a per-(head, channel) mean of size `bias`;
 * `outliers` channels get 4× the spread (as K's outlier channels in real models).
 */
const activations = (
  H: number,
  S: number,
  D: number,
  seed: number,
  amp: number,
  bias: number,
  outliers = 0,
) => {
  const x = seededNormals(H * S * D, seed);
  const mu = seededNormals(H * D, seed ^ 0x5bd1e995);
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < S; t++) {
      for (let i = 0; i < D; i++) {
        const e = (h * S + t) * D + i;
        x[e] = x[e] * amp * (i < outliers ? 4 : 1) + bias * mu[h * D + i];
      }
    }
  }
  return x;
};

const qkvData = (op: AnyOperator, [H, Hk, S, kS, D]: Shape, seed: number, withV: boolean) => {
  const q = floatTensor(op, "q", [H, S, D], activations(H, S, D, seed, 1.2, 0.6));
  const k = floatTensor(op, "k", [Hk, kS, D], activations(Hk, kS, D, seed + 1, 1, 1.5, 2));
  const v = withV ? floatTensor(op, "v", [Hk, kS, D], activations(Hk, kS, D, seed + 2, 1, 0.3)) : undefined;
  return { q, k, v };
};

const scaleOf = (p: { scale: number }, D: number) => (p.scale > 0 ? p.scale : 1 / Math.sqrt(D));

/**
 * Attention thresholds. ref64: the CPU reference accumulates in float64 and stores f32, so 1e-5 (as
 * tests/ops/dense_attn_test.ts). Backend vs CPU: f32 1e-5 on o and 1e-4 on lse (tests/ops/attn_gpu_test.ts);
 * f16 inputs — the kernels convert K/V to f32 and accumulate in f32 on the same f16 values the CPU reads.
 */
const ATTN_TOL = {
  ref64: { o: 1e-5, lse: 1e-5 },
  f32: { o: 1e-5, lse: 1e-4 },
  f16: { o: 1e-5, lse: 1e-4 },
} as const;

const attnMetrics = (
  got: Outputs,
  o: ArrayLike<number>,
  lse: ArrayLike<number>,
  tol: { o: number; lse: number },
) => [
  relL2("o", values(got.o), o, tol.o),
  maxAbs("lse", values(got.lse), lse, tol.lse),
];

/** `dense.attn`'s query tile per case, in turn (it changes only the GPU schedule). */
const DENSE_BLOCKQ = [64, 16, 128, 32] as const;

/** `dense.attn*`: causal attention, bottom-right aligned when kSeq ≠ seq. */
const denseAttnCases = (grid: readonly Shape[]): CaseGenerator => (op) =>
  grid.map((s, n) => {
    const [H, Hk, S, kS, D] = s;
    const descs = (ks: number) => ({
      q: descOf(op, "q", [H, S, D]),
      k: descOf(op, "k", [Hk, ks, D]),
      v: descOf(op, "v", [Hk, ks, D]),
    });
    const dtype = dtypeOf(op);
    return {
      shape: `${shapeLabel(s)} bq${DENSE_BLOCKQ[n % DENSE_BLOCKQ.length]}`,
      dtype,
      qk: kS !== S,
      params: { blockQ: DENSE_BLOCKQ[n % DENSE_BLOCKQ.length] },
      descs: descs(kS),
      ...(kS !== S ? { equalDescs: descs(S) } : {}),
      build: () => {
        const { q, k, v } = qkvData(op, s, 101 + 7 * n + S, true);
        const p = Schema.decodeUnknownSync(op.params)({}) as { scale: number };
        return {
          inputs: { q: q.t, k: k.t, v: v!.t },
          ref64: (cpu) => {
            const r = attention64(q.x, k.x, v!.x, H, Hk, S, kS, D, scaleOf(p, D));
            return attnMetrics(cpu, r.o, r.lse, ATTN_TOL.ref64);
          },
          compare: (got, cpu) => attnMetrics(got, values(cpu.o), values(cpu.lse), ATTN_TOL[dtype]),
        };
      },
    };
  });

const SMALL = { blockQ: 16, blockK: 8, localWindow: 16 } as const;
const DEFAULTS = {} as const;
/** No sink, no window beyond the diagonal, blockK = blockQ / 2, an explicit softmax scale. */
const EDGE = { blockQ: 32, blockK: 16, localWindow: 0, sinkBlocks: 0, scale: 0.05 } as const;
type SaleCfg = { blocks: Readonly<Record<string, number>>; shape: Shape };

const saleP = (op: AnyOperator, raw: Readonly<Record<string, unknown>>) =>
  Schema.decodeUnknownSync(op.params)(raw) as {
    blockQ: number;
    blockK: number;
    localWindow: number;
    sinkBlocks: number;
    threshold: number;
    scale: number;
  };

const blocksLabel = (raw: Readonly<Record<string, unknown>>) =>
  ("blockQ" in raw ? ` b${raw.blockQ}x${raw.blockK} w${raw.localWindow}` : " b64x32 w128") +
  ("sinkBlocks" in raw ? ` sink${raw.sinkBlocks}` : "") + ("scale" in raw ? ` scale${raw.scale}` : "");

const quantizeOf = (dtype: "f32" | "f16") => (dtype === "f16" ? saleQuantizeF16 : saleQuantize);
const estimateOf = (dtype: "f32" | "f16") => (dtype === "f16" ? saleEstimateF16 : saleEstimate);

/** q ≠ k description sets for the SALE operators with Q and K inputs (per-port shapes). */
const saleDescs = (op: AnyOperator, [H, Hk, S, kS, D]: Shape, p: ReturnType<typeof saleP>) => {
  const shapes: Record<string, number[]> = {
    q: [H, S, D],
    k: [Hk, kS, D],
    v: [Hk, kS, D],
    qq: [H, S, D],
    qScales: [H, Math.ceil(S / p.blockQ)],
    kq: [Hk, kS, D],
    kScales: [Hk, Math.ceil(kS / p.blockK)],
    kMean: [Hk, D],
    qmk: [H, kS],
    scores: [H, Math.ceil(S / p.blockQ), Math.ceil(kS / p.blockK)],
  };
  if ("indptr" in op.inputs) {
    const b = blocksOf(p);
    let cap = 0;
    for (let r = 0; r < Math.ceil(S / p.blockQ); r++) {
      cap += Math.ceil(Math.min((r + 1) * p.blockQ, S) / b.blockK);
    }
    shapes.indptr = [H, Math.ceil(S / p.blockQ) + 1];
    shapes.indices = [H, cap];
  }
  return Object.fromEntries(Object.keys(op.inputs).map((port) => [port, descOf(op, port, shapes[port])]));
};

/** Shared scaffolding of the SALE generators: params, labels, q ≠ k probes. */
const saleCases = (
  grid: readonly SaleCfg[],
  build: (op: AnyOperator, s: Shape, raw: Readonly<Record<string, unknown>>, seed: number) => Built,
): CaseGenerator =>
(op) =>
  grid.map(({ blocks, shape }, n) => {
    const [, , S, kS] = shape;
    const p = saleP(op, blocks);
    const qk = kS !== S;
    return {
      shape: shapeLabel(shape) + blocksLabel(blocks),
      dtype: dtypeOf(op),
      qk,
      params: blocks,
      descs: saleDescs(op, shape, p),
      ...(qk ? { equalDescs: saleDescs(op, [shape[0], shape[1], S, S, shape[4]], p) } : {}),
      build: () => {
        if (qk) {
          throw new Error(
            `${op.name}: infer accepts kSeq ≠ seq, but the conformance generator has no q ≠ k reference for it: ` +
              "add one to tests/conformance/cases.ts",
          );
        }
        return build(op, shape, blocks, 211 + 13 * n + S);
      },
    };
  });

/** The float64 view of one quantisation (means, scales, codes, ties) of Q and K. */
const quant64 = (q: Float32Array, k: Float32Array, [H, Hk, S, , D]: Shape, p: ReturnType<typeof saleP>) => {
  const qMean = means64(q, H, S, D), kMean = means64(k, Hk, S, D);
  const meanAbs = (x: Float32Array, nH: number) => means64(x.map(Math.abs), nH, S, D);
  return {
    qMean,
    kMean,
    kMeanMag: meanAbs(k, Hk),
    Q: quantize64(q, qMean, H, S, D, p.blockQ),
    K: quantize64(k, kMean, Hk, S, D, p.blockK),
    qmk: qmk64(qMean, k, kMean, H, Hk, S, D),
  };
};

/**
 * Quantize thresholds. ref64 (CPU stores f32, subtracts an f32 mean): 1e-6 relative; codes exact except at
 * rounding ties. Backend vs CPU (the kernel sums the mean in a different order, in f32): 1e-5; codes exact except
 * at ties, ≤ 1e-3 of the elements at ties (tests/ops/attn_gpu_test.ts: "rounding ties only").
 */
const quantizeMetrics = (
  got: Outputs,
  ref: {
    kMean: ArrayLike<number>;
    kMeanMag: ArrayLike<number>;
    qScales: ArrayLike<number>;
    kScales: ArrayLike<number>;
    qmk: ArrayLike<number>;
    qmkMag: ArrayLike<number>;
    qCode: (e: number) => number;
    kCode: (e: number) => number;
  },
  f64: ReturnType<typeof quant64>,
  nq: number,
  nk: number,
  tol: number,
): Metric[] => [
  maxScaled("kMean", values(got.kMean), ref.kMean, ref.kMeanMag, tol),
  maxRel("qScales", values(got.qScales), ref.qScales, tol),
  maxRel("kScales", values(got.kScales), ref.kScales, tol),
  maxScaled("qmk", values(got.qmk), ref.qmk, ref.qmkMag, tol),
  ...codeMetrics("qq", got.qq.data as Uint32Array, ref.qCode, (e) => f64.Q.tie[e] === 1, nq, 1e-3),
  ...codeMetrics("kq", got.kq.data as Uint32Array, ref.kCode, (e) => f64.K.tie[e] === 1, nk, 1e-3),
];

const saleQuantizeCases = (grid: readonly SaleCfg[]) =>
  saleCases(grid, (op, s, raw, seed) => {
    const [H, Hk, S, , D] = s;
    const p = saleP(op, raw);
    const { q, k } = qkvData(op, s, seed, false);
    const f64 = quant64(q.x, k.x, s, p);
    const nq = H * S * D, nk = Hk * S * D;
    return {
      inputs: { q: q.t, k: k.t },
      ref64: (cpu) =>
        quantizeMetrics(
          cpu,
          {
            kMean: f64.kMean,
            kMeanMag: f64.kMeanMag,
            qScales: f64.Q.scales,
            kScales: f64.K.scales,
            qmk: f64.qmk.qmk,
            qmkMag: f64.qmk.mag,
            qCode: (e) => f64.Q.codes[e],
            kCode: (e) => f64.K.codes[e],
          },
          f64,
          nq,
          nk,
          1e-6,
        ),
      compare: (got, cpu) =>
        quantizeMetrics(
          got,
          {
            kMean: values(cpu.kMean),
            kMeanMag: f64.kMeanMag,
            qScales: values(cpu.qScales),
            kScales: values(cpu.kScales),
            qmk: values(cpu.qmk),
            qmkMag: f64.qmk.mag,
            qCode: (e) => nibble(cpu.qq.data as Uint32Array, e),
            kCode: (e) => nibble(cpu.kq.data as Uint32Array, e),
          },
          f64,
          nq,
          nk,
          1e-5,
        ),
    };
  });

/** Log of a score, clamped below at log(1e-30) so underflow to 0 compares equal to a tiny score. */
const LOG_FLOOR = Math.log(1e-30);
const clampLog = (x: number) => Math.max(LOG_FLOOR, x);

/**
 * Scores: markers (FORCED for sink/local, −Infinity for non-causal) exact, estimated blocks compared in the log
 * domain. ref64: 1e-5 (CPU accumulates in float64). Backend vs CPU: 1e-4, tighter than tests/ops/attn_gpu_test.ts's
 * 1e-3 (the kernel's exact phase sums f32 products with exp2/log2; lavapipe measures ≤ 2e-6).
 */
const scoreMetrics = (
  got: ArrayLike<number>,
  marker: ArrayLike<number>,
  log: ArrayLike<number>,
  tol: number,
): Metric[] => {
  let bad = Math.abs(got.length - marker.length);
  let worst = 0;
  for (let i = 0; i < Math.min(got.length, marker.length); i++) {
    if (Number.isNaN(marker[i])) {
      if (!(got[i] >= 0 && got[i] < 1e30)) bad++;
      else worst = Math.max(worst, Math.abs(clampLog(Math.log(got[i])) - clampLog(log[i])));
    } else if (got[i] !== marker[i]) bad++;
  }
  return [
    { name: "scores marker mismatches", err: bad, tol: 0 },
    { name: "scores log max-abs", err: worst, tol },
  ];
};

const markersOf = (s: ArrayLike<number>) =>
  Float64Array.from(s, (x) => (x === -Infinity || x === FORCED64 ? x : NaN));

/** Q, K and the CPU quantisation of them (estimate's inputs). */
const quantized = (
  op: AnyOperator,
  s: Shape,
  raw: Readonly<Record<string, unknown>>,
  seed: number,
  v: boolean,
) => {
  const dtype = dtypeOf(op);
  const d = qkvData(op, s, seed, v);
  const p = Schema.decodeUnknownSync(quantizeOf(dtype).params)(raw);
  const z = quantizeOf(dtype).cpu(p, { q: d.q.t, k: d.k.t } as never) as unknown as Outputs;
  return { ...d, z };
};

const estimateInputs = (x: ReturnType<typeof quantized>) => ({ q: x.q.t, k: x.k.t, ...x.z });

const saleEstimateCases = (grid: readonly SaleCfg[]) =>
  saleCases(grid, (op, s, raw, seed) => {
    const [H, Hk, S, , D] = s;
    const p = saleP(op, raw);
    const x = quantized(op, s, raw, seed, false);
    return {
      inputs: estimateInputs(x),
      ref64: (cpu) => {
        const z = x.z;
        const r = estimate64(
          blocksOf(p),
          scaleOf(p, D),
          x.q.x,
          x.k.x,
          z.qq.data as Uint32Array,
          values(z.qScales),
          z.kq.data as Uint32Array,
          values(z.kScales),
          values(z.kMean),
          values(z.qmk),
          H,
          Hk,
          S,
          D,
        );
        return scoreMetrics(values(cpu.scores), r.marker, r.logScore, 1e-5);
      },
      compare: (got, cpu) => {
        const c = values(cpu.scores);
        return scoreMetrics(values(got.scores), markersOf(c), Float64Array.from(c, Math.log), 1e-4);
      },
    };
  });

/** Estimated scores of a case (CPU chain) and the median of its estimated (non-marker) blocks as τ. */
const scored = (
  op: AnyOperator,
  s: Shape,
  raw: Readonly<Record<string, unknown>>,
  seed: number,
  v: boolean,
) => {
  const x = quantized(op, s, raw, seed, v);
  const est = estimateOf(dtypeOf(op));
  const p = Schema.decodeUnknownSync(est.params)(raw);
  const scores = (est.cpu(p, estimateInputs(x) as never) as unknown as Outputs).scores;
  const mid = [...(scores.data as Float32Array)].filter((v) => v !== -Infinity && v !== FORCED64).sort((
    a,
    b,
  ) => a - b);
  const threshold = mid.length > 0 ? mid[Math.floor(mid.length / 2)] : 0.004;
  return { ...x, scores, threshold };
};

/** select: exact (indices and indptr); density within 2 f32 ulps of nnz / causal blocks. */
const selectMetrics = (
  got: Outputs,
  ref: { indptr: ArrayLike<number>; indices: ArrayLike<number>; density: ArrayLike<number> },
  densityTol: number,
) => [
  mismatches("indptr", got.indptr.data as Int32Array, ref.indptr),
  mismatches("indices", got.indices.data as Int32Array, ref.indices),
  maxAbs("density", values(got.density), ref.density, densityTol),
];

const saleSelectCases = (grid: readonly SaleCfg[]) =>
  saleCases(grid, (op, s, raw, seed) => {
    const [H, , S] = s;
    const x = scored(saleEstimate, s, raw, seed, false);
    const p = saleP(op, { ...raw, threshold: x.threshold });
    const r = select64(blocksOf(p), x.threshold, x.scores.data as Float32Array, H, S);
    const density = [...r.density].reduce((a, b) => a + b, 0) / H;
    return {
      inputs: { scores: x.scores },
      params: { threshold: x.threshold },
      note: `τ=${x.threshold.toPrecision(3)} density ${density.toFixed(2)}`,
      ref64: (cpu) => selectMetrics(cpu, r, 0),
      compare: (got, cpu) =>
        selectMetrics(got, {
          indptr: cpu.indptr.data as Int32Array,
          indices: cpu.indices.data as Int32Array,
          density: values(cpu.density),
        }, 1.2e-7),
    };
  });

const saleSparseAttnCases = (grid: readonly SaleCfg[]) =>
  saleCases(grid, (op, s, raw, seed) => {
    const [H, Hk, S, , D] = s;
    const x = scored(op, s, raw, seed, true);
    const p = saleP(op, { ...raw, threshold: x.threshold });
    const sp = Schema.decodeUnknownSync(saleSelect.params)({ ...raw, threshold: x.threshold });
    const m = saleSelect.cpu(sp, { scores: x.scores } as never) as unknown as Outputs;
    const b = blocksOf(p);
    const qB = Math.ceil(S / p.blockQ), cap = m.indices.desc.shape[1];
    const density = Array.from(values(m.density)).reduce((a, c) => a + c, 0) / H;
    const dtype = dtypeOf(op);
    return {
      inputs: { q: x.q.t, k: x.k.t, v: x.v!.t, indptr: m.indptr, indices: m.indices },
      params: { threshold: x.threshold },
      note: `mask density ${density.toFixed(2)}`,
      ref64: (cpu) => {
        const keep = bsrMask(
          m.indptr.data as Int32Array,
          m.indices.data as Int32Array,
          qB,
          cap,
          b.blockQ,
          b.blockK,
        );
        const r = attention64(x.q.x, x.k.x, x.v!.x, H, Hk, S, S, D, scaleOf(p, D), keep);
        return attnMetrics(cpu, r.o, r.lse, ATTN_TOL.ref64);
      },
      compare: (got, cpu) => attnMetrics(got, values(cpu.o), values(cpu.lse), ATTN_TOL[dtype]),
    };
  });

// Grids: odd lengths 1, 17, 100, 257; GQA 1, 3, 4, 8; headDim 64 and 128; q ≠ k where an operator may take it.
const denseF32: Shape[] = [[1, 1, 1, 1, 64], [3, 1, 17, 17, 128], [4, 1, 100, 100, 64], [8, 1, 257, 257, 64]];
const denseF16: Shape[] = [[2, 2, 17, 17, 64], [8, 1, 100, 100, 128], [4, 1, 257, 257, 64]];
const denseQk: Shape[] = [[4, 1, 1, 257, 64], [3, 1, 17, 100, 128]];
const sale32: SaleCfg[] = [
  { blocks: SMALL, shape: [1, 1, 1, 1, 64] },
  { blocks: SMALL, shape: [2, 2, 17, 17, 64] },
  { blocks: SMALL, shape: [3, 1, 100, 100, 128] },
  { blocks: SMALL, shape: [4, 1, 257, 257, 64] },
  { blocks: DEFAULTS, shape: [8, 1, 257, 257, 64] },
  { blocks: EDGE, shape: [8, 2, 129, 129, 128] },
];
const sale16: SaleCfg[] = [
  { blocks: SMALL, shape: [4, 1, 100, 100, 64] },
  { blocks: SMALL, shape: [6, 2, 257, 257, 128] },
];
const saleQk: SaleCfg[] = [{ blocks: SMALL, shape: [4, 1, 17, 100, 64] }];

/** Operator name → its case generator. A registered operator missing here fails the conformance test. */
export const caseGenerators: Readonly<Record<string, CaseGenerator>> = {
  "dense.attn": denseAttnCases([...denseF32, ...denseQk]),
  "dense.attn.f16": denseAttnCases([...denseF16, denseQk[0]]),
  "sale.quantize": saleQuantizeCases([...sale32, ...saleQk]),
  "sale.quantize.f16": saleQuantizeCases([...sale16, ...saleQk]),
  "sale.estimate": saleEstimateCases([...sale32, ...saleQk]),
  "sale.estimate.f16": saleEstimateCases([...sale16, ...saleQk]),
  "sale.select": saleSelectCases(sale32.slice(1)),
  "sale.sparseAttn": saleSparseAttnCases([...sale32, ...saleQk]),
  "sale.sparseAttn.f16": saleSparseAttnCases([...sale16, ...saleQk]),
};
