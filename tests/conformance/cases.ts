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
import { Effect, Schema } from "effect";
import { ANY_DIMS, hostTensor, mulberry32, seededNormals } from "@longctx/graph";
import type { AnyOperator, HostTensor, Scalars, TensorDesc } from "@longctx/graph";
import { f32ToHalf, halfToF32 } from "../../ops/dense/common.ts";
import { dense, hip, squeezed, tokenselect } from "@longctx/ops";
import { cachegen } from "@longctx/ops";
import {
  compactFromRaw,
  type TsCase,
  type TsProblem,
  tsProblem,
  votesFromRaw,
} from "../ops/tokenselect_ref.ts";
import {
  saleEstimate,
  saleEstimateF16,
  saleQuantize,
  saleQuantizeF16,
  saleSelect,
} from "../../ops/sale/mod.ts";
import {
  argmaxLast64,
  attention64,
  blocksOf,
  bsrMask,
  cacheAttn64,
  estimate64,
  FORCED64,
  linear64,
  means64,
  nibble,
  qmk64,
  quantize64,
  rmsNorm64,
  rotateHalf64,
  select64,
  swiglu64,
} from "./ref.ts";
import { codeMetrics, maxAbs, maxRel, maxScaled, type Metric, mismatches, relL2, values } from "./metrics.ts";
import { squeezedLists64, squeezedLookup64, tracebackWeights64 } from "../ops/ref64.ts";
import { mergeCases, partialAttnCases } from "./distattn_cases.ts";
import { cachegenEncodeCases } from "./cachegen_encode_cases.ts";
import { treeAttnCases } from "./longspec_cases.ts";

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
  /** Runtime scalars of the case (e.g. `{ pos: 5 }`), given to the CPU reference and to every backend run. */
  readonly scalars?: Scalars;
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

// ---- HiP: hip.mask and dense.indexAttn

/** HiP configurations: [shape, parameters]; odd lengths, GQA, decode (S1), partial key blocks, no sink/window. */
const HIP_GRID: readonly (readonly [Shape, Readonly<Record<string, number>>])[] = [
  [[3, 1, 700, 700, 64], { topK: 64, sink: 4, window: 32 }],
  [[4, 2, 333, 333, 128], { topK: 30, blockK: 3, sink: 5, window: 17, blockQ: 32 }],
  [[9, 3, 257, 257, 64], { topK: 48, sink: 16, window: 24, blockQ: 16 }],
  [[2, 2, 1, 901, 64], { topK: 128, sink: 16, window: 64 }],
  [[2, 1, 129, 517, 64], { topK: 40, blockK: 4, sink: 0, window: 0, blockStrideQ: 1 }],
];

/**
 * Integer-valued Q/K (multiples of 1/4 in [−3/4, 3/4], rounded to the dtype exactly): every f32 score is exact,
 * so backends must return the CPU's lists bit for bit, ties included (they are frequent).
 */
const hipInts = (n: number, seed: number): Float32Array => {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => (Math.floor(r() * 7) - 3) / 4);
};

const hipQK = (op: AnyOperator, [H, Hk, S, kS, D]: Shape, seed: number) => ({
  q: floatTensor(op, "q", [H, S, D], hipInts(H * S * D, seed)),
  k: floatTensor(op, "k", [Hk, kS, D], hipInts(Hk * kS * D, seed + 1)),
});

/** The CPU hip.mask of a case (the lists `dense.indexAttn` cases attend). */
const hipMaskOf = (s: Shape, raw: Readonly<Record<string, unknown>>, seed: number) => {
  const [H, Hk, S, kS, D] = s;
  const p = hip.hipParams(raw);
  const { q, k } = hipQK(hip.hipMask, s, seed);
  return { p, q, k, ...hip.hipMaskReference(p, q.x, k.x, H, Hk, S, kS, D) };
};

/**
 * Violations of hip.mask's list properties and the density by brute force (attended / causal pairs per head).
 */
const hipListCheck = (p: hip.HipParams, idx: Int32Array, H: number, S: number, kS: number) => {
  const qB = Math.ceil(S / p.blockQ), cap = Math.max(1, p.topK), off = kS - S;
  let bad = 0;
  const density = new Float64Array(H);
  for (let h = 0; h < H; h++) {
    let seen = 0, causal = 0;
    for (let b = 0; b < qB; b++) {
      const i0 = b * p.blockQ, i1 = Math.min(S, i0 + p.blockQ);
      const reg = hip.hipRegion(p, i1 - 1 + off);
      const list = [...idx.subarray((h * qB + b) * cap, (h * qB + b + 1) * cap)].filter((x) => x >= 0);
      for (let e = 0; e < list.length; e++) {
        if ((e > 0 && list[e] <= list[e - 1]) || list[e] < p.sink || list[e] >= reg.start + reg.tokens) bad++;
      }
      const partial = reg.tokens % p.blockK, last = reg.start + (reg.blocks - 1) * p.blockK;
      const want = reg.dense
        ? reg.tokens
        : p.topK - (partial > 0 && list.includes(last) ? p.blockK - partial : 0);
      if (list.length !== want) bad++;
      const set = new Set(list);
      for (let i = i0; i < i1; i++) {
        const pos = i + off;
        for (let j = 0; j <= pos; j++) if (j < p.sink || j > pos - p.window || set.has(j)) seen++;
        causal += pos + 1;
      }
    }
    density[h] = seen / causal;
  }
  return { bad, density };
};

/** hip.mask: index lists exact (integer scores: no rounding can reorder); density within 1e-6. */
const hipMaskCases: CaseGenerator = (op) =>
  HIP_GRID.map(([s, raw], n) => {
    const [H, Hk, S, kS, D] = s;
    return {
      shape: `${shapeLabel(s)} k${raw.topK} bk${raw.blockK ?? 2}`,
      dtype: dtypeOf(op),
      qk: kS !== S,
      params: raw,
      descs: { q: descOf(op, "q", [H, S, D]), k: descOf(op, "k", [Hk, kS, D]) },
      ...(kS !== S ? { equalDescs: { q: descOf(op, "q", [H, S, D]), k: descOf(op, "k", [Hk, S, D]) } } : {}),
      build: () => {
        const { q, k } = hipQK(op, s, 301 + n);
        const p = hip.hipParams(raw);
        return {
          inputs: { q: q.t, k: k.t },
          // ref64: the lists' properties (ascending, unique, inside the search region, min(k, region) keys) and
          // the density recounted by brute force over (query, key) pairs from the lists.
          ref64: (cpu) => {
            const idx = cpu.indices.data as Int32Array;
            const { bad, density } = hipListCheck(p, idx, H, S, kS);
            return [
              mismatches("list properties", [bad], [0]),
              maxAbs("density", values(cpu.density), density, 1e-6),
            ];
          },
          compare: (got, cpu) => [
            mismatches("indices", got.indices.data as Int32Array, cpu.indices.data as Int32Array),
            maxAbs("density", values(got.density), values(cpu.density), 1e-6),
          ],
        };
      },
    };
  });

/** dense.indexAttn over hip.mask's lists (per head) or one list shared by the heads, against float64. */
const indexAttnCases: CaseGenerator = (op) =>
  HIP_GRID.map(([s, raw], n) => {
    const [H, Hk, S, kS, D] = s;
    const shared = n % 2 === 1;
    const params = { blockQ: raw.blockQ ?? 64, sink: raw.sink, window: raw.window };
    const p = Schema.decodeUnknownSync(op.params)(params) as dense.IndexAttnParams;
    const qB = Math.ceil(S / p.blockQ), cap = Math.max(1, raw.topK);
    const descs = (ks: number) => ({
      q: descOf(op, "q", [H, S, D]),
      k: descOf(op, "k", [Hk, ks, D]),
      v: descOf(op, "v", [Hk, ks, D]),
      indices: descOf(op, "indices", [shared ? 1 : H, qB, cap]),
    });
    const dtype = dtypeOf(op);
    return {
      shape: `${shapeLabel(s)} ${shared ? "shared" : "per-head"} lists sink${p.sink} w${p.window}`,
      dtype,
      qk: kS !== S,
      params,
      descs: descs(kS),
      ...(kS !== S ? { equalDescs: descs(S) } : {}),
      build: () => {
        const m = hipMaskOf(s, raw, 311 + n);
        const { q, k, v } = qkvData(op, s, 321 + n, true);
        const lists = shared ? m.indices.subarray(0, qB * cap) : m.indices;
        const off = kS - S;
        const sets = Array.from({ length: (shared ? 1 : H) * qB }, (_, e) =>
          new Set(lists.subarray(e * cap, (e + 1) * cap)));
        const keep = (h: number, i: number, j: number) => {
          const pos = i + off;
          return j < p.sink || j > pos - p.window ||
            sets[(shared ? 0 : h) * qB + Math.floor(i / p.blockQ)].has(j);
        };
        return {
          inputs: {
            q: q.t,
            k: k.t,
            v: v!.t,
            indices: hostTensor("i32", op.inputs.indices.dims, [shared ? 1 : H, qB, cap], lists.slice()),
          },
          note: `hip density ${
            (m.density.reduce((a, b) => a + b, 0) / H).toFixed(3)
          }`,
          ref64: (cpu) => {
            const r = attention64(q.x, k.x, v!.x, H, Hk, S, kS, D, scaleOf(p, D), keep);
            return attnMetrics(cpu, r.o, r.lse, ATTN_TOL.ref64);
          },
          compare: (got, cpu) => attnMetrics(got, values(cpu.o), values(cpu.lse), ATTN_TOL[dtype]),
        };
      },
    };
  });

/** KV-cache HiP cases: [H, Hk, seq, capacity, D, pos, parameters]: decode steps and a chunk, GQA, d 64/128. */
const HIP_CACHE_GRID:
  readonly (readonly [number, number, number, number, number, number, Readonly<Record<string, number>>])[] = [
    [2, 2, 1, 901, 64, 900, { topK: 128, sink: 16, window: 64 }],
    [9, 3, 1, 700, 64, 517, { topK: 64, sink: 4, window: 32 }],
    [4, 1, 17, 600, 128, 300, { topK: 48, sink: 5, window: 17, blockQ: 16 }],
    [3, 1, 1, 300, 64, 10, { topK: 64, sink: 4, window: 32 }],
  ];

/** TokenSelect calls: [heads, kvHeads, queries, pos, cache rows, headDim, raw parameters]. */
const TS_GRID:
  readonly (readonly [number, number, number, number, number, number, Record<string, unknown>])[] = [
    [4, 2, 1, 700, 720, 64, { nInit: 8, nLocal: 32, topK: 96 }],
    [9, 3, 5, 611, 640, 64, { nInit: 16, nLocal: 64, topK: 128, kernelSize: 5 }],
    [8, 2, 1, 900, 960, 128, { nInit: 4, nLocal: 48, topK: 200, headMap: "modulo" }],
    [4, 4, 3, 300, 320, 64, { nInit: 8, nLocal: 32, topK: 300 }], // dense: every token fits the list
  ];

/** The inputs of a TokenSelect case (q, k, rope tables; v for the gather). */
const tsInputs = (op: AnyOperator, c: TsCase, x: TsProblem) => ({
  q: hostTensor("f32", op.inputs.q.dims, [c.H, c.seq, c.d], x.q),
  k: hostTensor("f32", op.inputs.k.dims, [c.Hk, c.cap, c.d], x.k),
  ropeCos: hostTensor("f32", op.inputs.ropeCos.dims, [c.cap, c.d / 2], x.cos),
  ropeSin: hostTensor("f32", op.inputs.ropeSin.dims, [c.cap, c.d / 2], x.sin),
});
const tsDescs = (op: AnyOperator, c: TsCase) => ({
  q: descOf(op, "q", [c.H, c.seq, c.d]),
  k: descOf(op, "k", [c.Hk, c.cap, c.d]),
  ropeCos: descOf(op, "ropeCos", [c.cap, c.d / 2]),
  ropeSin: descOf(op, "ropeSin", [c.cap, c.d / 2]),
});
/** The selection from the votes derived from the raw Q/K (independent of the operator's arithmetic). */
const tsWant = (p: tokenselect.TokenSelectParams, c: TsCase, x: TsProblem): Int32Array => {
  const out = new Int32Array(p.topK).fill(-1);
  if (!tokenselect.selectGeometry(p, c.pos, c.seq).dense) {
    const votes = votesFromRaw(p, c, x.qRaw, x.kRaw);
    let pooled: ArrayLike<number> = votes;
    if (p.kernelSize > 1) {
      const pad = Math.floor((p.kernelSize - 1) / 2), n = tokenselect.selectGeometry(p, c.pos, c.seq).pooled;
      pooled = Array.from({ length: n }, (_, i) => {
        let m = -Infinity;
        for (let j = Math.max(0, i - pad); j < Math.min(votes.length, i - pad + p.kernelSize); j++) {
          m = Math.max(m, votes[j]);
        }
        return m;
      });
    }
    out.set(tokenselect.topKAscending(pooled, p.topK, p.nInit));
  }
  return out;
};

/** tokenselect.select: lists exact against the selection from raw-Q/K votes and against the CPU reference. */
const tsSelectCases: CaseGenerator = (op) =>
  TS_GRID.map(([H, Hk, S, pos, cap, D, raw], n) => {
    const c: TsCase = { H, Hk, seq: S, pos, cap, d: D };
    return {
      shape: `H${H}/${Hk} S${S} pos${pos} cap${cap} D${D} k${raw.topK}`,
      dtype: "f32",
      qk: false,
      params: raw,
      scalars: { pos },
      descs: tsDescs(op, c),
      build: () => {
        const p = tokenselect.tokenSelectParams(raw);
        const x = tsProblem(c, 1701 + n);
        const want = tsWant(p, c, x);
        return {
          inputs: tsInputs(op, c, x),
          ref64: (cpu) => [mismatches("indices", cpu.indices.data as Int32Array, want)],
          compare: (
            got,
            cpu,
          ) => [mismatches("indices", got.indices.data as Int32Array, cpu.indices.data as Int32Array)],
        };
      },
    };
  });

/**
 * tokenselect.selectCached: from an empty state (a miss: the selection as tokenselect.select's, the query stored),
 * and from a state holding this call's own query and a planted list (a hit: the planted list kept).
 */
const tsSelectCachedCases: CaseGenerator = (op) =>
  TS_GRID.slice(0, 3).flatMap(([H, Hk, S, pos, cap, D, raw], n) =>
    (["miss", "hit"] as const).map((mode) => {
      const c: TsCase = { H, Hk, seq: S, pos, cap, d: D };
      const params = { ...raw, selectionCache: true };
      return {
        shape: `H${H}/${Hk} S${S} pos${pos} D${D} ${mode}`,
        dtype: "f32" as const,
        qk: false,
        params,
        scalars: { pos },
        descs: {
          ...tsDescs(op, c),
          selQ: descOf(op, "selQ", [H, D]),
          selIdx: descOf(op, "selIdx", [1, 1, Number(raw.topK)]),
          selStats: descOf(op, "selStats", [4]),
        },
        build: () => {
          const p = tokenselect.tokenSelectParams(params);
          const x = tsProblem(c, 1801 + n);
          const qbar = Float32Array.from(
            tokenselect.selectionQuery(p, x.q, x.cos, x.sin, { H, seq: S, d: D, pos }),
          );
          const planted = Int32Array.from({ length: p.topK }, (_, i) => p.nInit + 2 * i);
          const want = mode === "hit" ? planted : tsWant(p, c, x);
          return {
            inputs: {
              ...tsInputs(op, c, x),
              selQ: hostTensor(
                "f32",
                op.inputs.selQ.dims,
                [H, D],
                mode === "hit" ? qbar : new Float32Array(H * D),
              ),
              selIdx: hostTensor(
                "i32",
                op.inputs.selIdx.dims,
                [1, 1, p.topK],
                mode === "hit" ? planted : new Int32Array(p.topK),
              ),
              selStats: hostTensor("u32", op.inputs.selStats.dims, [4], Uint32Array.of(3, 5, 0, 0)),
            },
            ref64: (cpu) => [
              mismatches("indices", cpu.indices.data as Int32Array, want),
              mismatches(
                "selStats",
                cpu.selStatsOut.data as Uint32Array,
                Uint32Array.of(mode === "hit" ? 4 : 3, 6, 0, 0),
              ),
              maxAbs("selQ", values(cpu.selQOut), qbar, 1e-6),
            ],
            compare: (got, cpu) => [
              mismatches("indices", got.indices.data as Int32Array, cpu.indices.data as Int32Array),
              mismatches(
                "selStats",
                got.selStatsOut.data as Uint32Array,
                cpu.selStatsOut.data as Uint32Array,
              ),
              maxAbs("selQ", values(got.selQOut), values(cpu.selQOut), 1e-5),
            ],
          };
        },
      };
    })
  );

/** tokenselect.compact: the list against keys rotated straight to their list index (valid rows compared). */
const tsCompactCases: CaseGenerator = (op) =>
  TS_GRID.flatMap(([H, Hk, S, pos, cap, D, raw], n) =>
    (["compacted", "original"] as const).map((positions) => {
      const c: TsCase = { H, Hk, seq: S, pos, cap, d: D };
      const params = { ...raw, positions };
      const topK = Number(raw.topK);
      return {
        shape: `H${H}/${Hk} S${S} pos${pos} D${D} ${positions}`,
        dtype: "f32" as const,
        qk: false,
        params,
        scalars: { pos },
        descs: {
          ...tsDescs(op, c),
          v: descOf(op, "v", [Hk, cap, D]),
          indices: descOf(op, "indices", [1, 1, topK]),
        },
        build: () => {
          const p = tokenselect.tokenSelectParams(params);
          const x = tsProblem(c, 1901 + n);
          const idx = tsWant(p, c, x);
          const want = compactFromRaw(p, c, x, idx);
          const R = tokenselect.listRows(p), rows = want.rows;
          /** The valid rows of a `[Hk, R, D]` list. */
          const valid = (a: ArrayLike<number>) => {
            const o = new Float64Array(Hk * rows * D);
            for (let h = 0; h < Hk; h++) {
              for (let e = 0; e < rows * D; e++) o[h * rows * D + e] = a[h * R * D + e];
            }
            return o;
          };
          return {
            inputs: {
              ...tsInputs(op, c, x),
              v: hostTensor("f32", op.inputs.v.dims, [Hk, cap, D], x.v),
              indices: hostTensor("i32", op.inputs.indices.dims, [1, 1, topK], idx),
            },
            ref64: (cpu) => [
              maxAbs("q", values(cpu.q), want.q, 2e-5),
              maxAbs("k", valid(values(cpu.kCache)), valid(want.k), 2e-5),
              maxAbs("v", valid(values(cpu.vCache)), valid(want.v), 0),
            ],
            compare: (got, cpu) => [
              maxAbs("q", values(got.q), values(cpu.q), 2e-5),
              maxAbs("k", valid(values(got.kCache)), valid(values(cpu.kCache)), 2e-5),
              maxAbs("v", valid(values(got.vCache)), valid(values(cpu.vCache)), 0),
            ],
          };
        },
      };
    })
  );

/** [heads, kvHeads, seq, headDim, answerTokens] */
const TRACE_GRID: readonly (readonly [number, number, number, number, number])[] = [
  [9, 3, 77, 64, 5],
  [4, 1, 130, 64, 1],
  [2, 2, 33, 128, 31],
  [8, 2, 300, 64, 24],
];

/**
 * traceback.weights: the CPU reference against float64 softmax probabilities (its `lse` input computed in
 * float64 from the same Q/K), a backend against the CPU reference.
 */
const tracebackCases: CaseGenerator = (op) =>
  TRACE_GRID.map(([H, Hk, S, D, A], n) => ({
    shape: `H${H}/${Hk} S${S} D${D} A${A}`,
    dtype: "f32" as const,
    qk: false,
    params: { answerTokens: A },
    descs: {
      q: descOf(op, "q", [H, S, D]),
      k: descOf(op, "k", [Hk, S, D]),
      lse: descOf(op, "lse", [H, S]),
    },
    build: () => {
      const q = seededNormals(H * S * D, 2301 + n).map((x) => 1.5 * x);
      const k = seededNormals(Hk * S * D, 2401 + n).map((x) => 1.5 * x);
      // the LSE input in float64 from the same Q/K; the weights from scratch (tests/ops/ref64.ts)
      const scale = 1 / Math.sqrt(D), lse = new Float32Array(H * S);
      for (let h = 0; h < H; h++) {
        const hk = Math.floor(h / (H / Hk));
        for (let r = 0; r < S; r++) {
          const s = new Float64Array(r + 1);
          for (let j = 0; j <= r; j++) {
            for (let x = 0; x < D; x++) s[j] += q[(h * S + r) * D + x] * k[(hk * S + j) * D + x] * scale;
          }
          const mx = Math.max(...s);
          lse[h * S + r] = mx + Math.log(s.reduce((a, b) => a + Math.exp(b - mx), 0));
        }
      }
      const w = tracebackWeights64(q, k, { H, Hk, seq: S, d: D, A });
      return {
        inputs: {
          q: hostTensor("f32", op.inputs.q.dims, [H, S, D], q),
          k: hostTensor("f32", op.inputs.k.dims, [Hk, S, D], k),
          lse: hostTensor("f32", op.inputs.lse.dims, [H, S], lse),
        },
        ref64: (cpu) => [maxAbs("w", values(cpu.w), w, 2e-6)],
        compare: (got, cpu) => [maxAbs("w", values(got.w), values(cpu.w), 1e-6)],
      };
    },
  }));

/** [heads, kvHeads, seq, clusters, headDim] of the squeezed.lookup cases (decode seq 1, odd sizes, GQA 3 and 4). */
const SQ_LOOKUP_GRID: readonly (readonly [number, number, number, number, number])[] = [
  [9, 3, 37, 41, 64],
  [4, 1, 1, 130, 64],
  [8, 2, 100, 257, 128],
  [2, 2, 5, 7, 32],
];

/** squeezed.lookup: the CPU reference against a float64 log-sum-exp; a backend against the CPU per head scale. */
const squeezedLookupCases: CaseGenerator = (op) =>
  SQ_LOOKUP_GRID.map(([H, Hk, S, C, D], n) => ({
    shape: `H${H}/${Hk} S${S} C${C} D${D}`,
    dtype: "f32" as const,
    qk: false,
    params: {},
    descs: {
      q: descOf(op, "q", [H, S, D]),
      centroids: descOf(op, "centroids", [Hk, C, D]),
      sizes: descOf(op, "sizes", [Hk, C]),
    },
    build: () => {
      const q = seededNormals(H * S * D, 2501 + n).map((x) => 1.5 * x);
      const c = seededNormals(Hk * C * D, 2601 + n).map((x) => 1.5 * x);
      const rnd = mulberry32(2701 + n);
      // sizes 0 … 40, about one cluster in eight empty
      const sizes = Float32Array.from(
        { length: Hk * C },
        () => (rnd() < 0.125 ? 0 : 1 + Math.floor(rnd() * 40)),
      );
      const want = squeezedLookup64(q, c, sizes, { H, Hk, seq: S, C, d: D });
      // per head, the largest score: the scale a score's error is measured against
      const mag = new Float64Array(H * C);
      for (let h = 0; h < H; h++) {
        let m = 0;
        for (let j = 0; j < C; j++) m = Math.max(m, want[h * C + j]);
        mag.fill(m, h * C, h * C + C);
      }
      return {
        inputs: {
          q: hostTensor("f32", op.inputs.q.dims, [H, S, D], q),
          centroids: hostTensor("f32", op.inputs.centroids.dims, [Hk, C, D], c),
          sizes: hostTensor("f32", op.inputs.sizes.dims, [Hk, C], sizes),
        },
        ref64: (cpu) => [maxRel("score", values(cpu.score), want, 1e-6, 1e-30)],
        compare: (got, cpu) => [maxScaled("score", values(got.score), values(cpu.score), mag, 2e-5)],
      };
    },
  }));

/** squeezed.lookupHier: against float64 — the L1 gate, then the fine lookup over the survivors' children. */
const squeezedLookupHierCases: CaseGenerator = (op) =>
  ([[9, 3, 37, 41, 7, 64], [4, 1, 1, 130, 11, 64], [8, 2, 20, 257, 16, 128]] as const).map(
    ([H, Hk, S, C, C1, D], n) => ({
      shape: `H${H}/${Hk} S${S} C${C}/${C1} D${D}`,
      dtype: "f32" as const,
      qk: false,
      params: {},
      descs: {
        q: descOf(op, "q", [H, S, D]),
        centroids: descOf(op, "centroids", [Hk, C, D]),
        sizes: descOf(op, "sizes", [Hk, C]),
        centroidsL1: descOf(op, "centroidsL1", [Hk, C1, D]),
        sizesL1: descOf(op, "sizesL1", [Hk, C1]),
        ptrL1: descOf(op, "ptrL1", [Hk, C1 + 1]),
        parentL1: descOf(op, "parentL1", [Hk, C]),
        thresholdL1: descOf(op, "thresholdL1", [1]),
      },
      build: () => {
        const q = seededNormals(H * S * D, 3001 + n).map((x) => 1.5 * x);
        const c = seededNormals(Hk * C * D, 3101 + n).map((x) => 1.5 * x);
        const c1 = seededNormals(Hk * C1 * D, 3201 + n).map((x) => 1.5 * x);
        const rnd = mulberry32(3301 + n);
        const sizes = Float32Array.from(
          { length: Hk * C },
          () => (rnd() < 0.1 ? 0 : 1 + Math.floor(rnd() * 30)),
        );
        // fine clusters in parent order: each L1 cluster gets a contiguous run (some of one, one possibly empty)
        const ptr = new Int32Array(Hk * (C1 + 1)), parent = new Int32Array(Hk * C);
        const sizesL1 = new Float32Array(Hk * C1);
        for (let hk = 0; hk < Hk; hk++) {
          const cuts = Array.from({ length: C1 - 1 }, () => Math.floor(rnd() * (C + 1))).sort((a, b) =>
            a - b
          );
          const bounds = [0, ...cuts, C];
          for (let a = 0; a <= C1; a++) ptr[hk * (C1 + 1) + a] = bounds[a];
          for (let a = 0; a < C1; a++) {
            for (let x = bounds[a]; x < bounds[a + 1]; x++) {
              parent[hk * C + x] = a;
              sizesL1[hk * C1 + a] += sizes[hk * C + x];
            }
          }
        }
        const s1 = squeezedLookup64(q, c1, sizesL1, { H, Hk, seq: S, C: C1, d: D });
        // τ₁ in the middle of the largest gap among the middle L1 scores: about half of them pass
        const sorted = [...s1].filter((v) => v > 0).sort((a, b) => a - b);
        let at = sorted.length >> 1, wide = -1;
        for (let i = Math.floor(sorted.length * 0.3); i < Math.floor(sorted.length * 0.7); i++) {
          if (sorted[i + 1] - sorted[i] > wide) wide = sorted[i + 1] - sorted[i], at = i;
        }
        const tau1 = (sorted[at] + sorted[at + 1]) / 2;
        // the fine lookup per head over the children of its passing L1 clusters: the others' sizes zeroed
        const want = new Float64Array(H * C), mag = new Float64Array(H * C);
        for (let h = 0; h < H; h++) {
          const hk = Math.floor(h / (H / Hk));
          const qs = q.subarray(h * S * D, (h + 1) * S * D);
          const masked = Float32Array.from(
            { length: C },
            (_, x) => (s1[h * C1 + parent[hk * C + x]] > tau1 ? sizes[hk * C + x] : 0),
          );
          const one = squeezedLookup64(qs, c.subarray(hk * C * D, (hk + 1) * C * D), masked, {
            H: 1,
            Hk: 1,
            seq: S,
            C,
            d: D,
          });
          want.set(one, h * C);
          mag.fill(Math.max(...one, 1e-30), h * C, h * C + C);
        }
        const mag1 = new Float64Array(H * C1);
        for (let h = 0; h < H; h++) {
          mag1.fill(Math.max(...s1.subarray(h * C1, h * C1 + C1)), h * C1, h * C1 + C1);
        }
        return {
          inputs: {
            q: hostTensor("f32", op.inputs.q.dims, [H, S, D], q),
            centroids: hostTensor("f32", op.inputs.centroids.dims, [Hk, C, D], c),
            sizes: hostTensor("f32", op.inputs.sizes.dims, [Hk, C], sizes),
            centroidsL1: hostTensor("f32", op.inputs.centroidsL1.dims, [Hk, C1, D], c1),
            sizesL1: hostTensor("f32", op.inputs.sizesL1.dims, [Hk, C1], sizesL1),
            ptrL1: hostTensor("i32", op.inputs.ptrL1.dims, [Hk, C1 + 1], ptr),
            parentL1: hostTensor("i32", op.inputs.parentL1.dims, [Hk, C], parent),
            thresholdL1: hostTensor("f32", op.inputs.thresholdL1.dims, [1], Float32Array.of(tau1)),
          },
          ref64: (cpu) => [
            maxRel("score", values(cpu.score), want, 1e-6, 1e-30),
            maxRel("scoreL1", values(cpu.scoreL1), s1, 1e-6, 1e-30),
          ],
          compare: (got, cpu) => [
            maxScaled("score", values(got.score), values(cpu.score), mag, 2e-5),
            maxScaled("scoreL1", values(got.scoreL1), values(cpu.scoreL1), mag1, 2e-5),
          ],
        };
      },
    }),
  );

/**
 * A seeded squeezed selection problem: cluster scores `f32 [H, C]` (skewed small, as probabilities), labels `i32
 * [Hk, Sc]`, and τ between the two scores around quantile `qt` (no score equals it).
 */
const clusterScores = (seed: number, H: number, Hk: number, Sc: number, C: number, qt: number) => {
  const rnd = mulberry32(seed);
  const score = Float32Array.from({ length: H * C }, () => rnd() * rnd() * 0.1);
  const labels = Int32Array.from({ length: Hk * Sc }, () => Math.floor(rnd() * C));
  const sorted = [...score].sort((a, b) => a - b);
  const at = Math.floor(qt * (sorted.length - 1));
  return { score, labels, tau: (sorted[at] + sorted[at + 1]) / 2 };
};

/** [heads, kvHeads, seq, capacity, clustered, clusters, obsWindow, pos, blockQ, gqa, budget quantile] */
const SQ_SELECT_GRID: readonly (readonly [
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  "head" | "union",
  number,
])[] = [
  [9, 3, 37, 700, 513, 41, 7, 520, 16, "head", 0.5],
  [9, 3, 1, 700, 513, 41, 7, 600, 64, "union", 0.8],
  [4, 1, 130, 1200, 900, 45, 100, 1000, 64, "head", 0.9],
  [8, 2, 40, 600, 300, 17, 9, 309, 32, "union", 0.3],
];

/**
 * squeezed.select (runtime pos): lists exact against lists built from scratch (sorted sets), τ at a quantile of
 * the scores; a backend's lists and budgets against the CPU reference's.
 */
const squeezedSelectCases: CaseGenerator = (op) =>
  SQ_SELECT_GRID.map(([H, Hk, S, cap, Sc, C, obs, pos, blockQ, gqa, qt], n) => ({
    shape: `H${H}/${Hk} S${S} cap${cap} clustered${Sc} C${C} obs${obs} pos${pos} ${gqa}`,
    dtype: "f32" as const,
    qk: false,
    params: { obsWindow: obs, blockQ, gqa },
    scalars: { pos },
    descs: {
      q: descOf(op, "q", [H, S, 64]),
      kCache: descOf(op, "kCache", [Hk, cap, 64]),
      score: descOf(op, "score", [H, C]),
      labels: descOf(op, "labels", [Hk, Sc]),
      threshold: descOf(op, "threshold", [1]),
    },
    build: () => {
      const { score, labels, tau } = clusterScores(2801 + n, H, Hk, Sc, C, qt);
      const want = squeezedLists64(score, labels, tau, {
        H,
        Hk,
        seq: S,
        cap,
        S: Sc,
        C,
        obs,
        pos,
        blockQ,
        union: gqa === "union",
      });
      return {
        inputs: {
          q: hostTensor("f32", op.inputs.q.dims, [H, S, 64], seededNormals(H * S * 64, 2901 + n)),
          kCache: hostTensor("f32", op.inputs.kCache.dims, [Hk, cap, 64], new Float32Array(Hk * cap * 64)),
          score: hostTensor("f32", op.inputs.score.dims, [H, C], score),
          labels: hostTensor("i32", op.inputs.labels.dims, [Hk, Sc], labels),
          threshold: hostTensor("f32", op.inputs.threshold.dims, [1], Float32Array.of(tau)),
        },
        note: `τ ${tau.toExponential(2)}, budget ${(want.density.reduce((a, b) => a + b, 0) / H).toFixed(2)}`,
        ref64: (cpu) => [
          mismatches("indices", cpu.indices.data as Int32Array, want.indices),
          maxAbs("density", values(cpu.density), want.density, 1e-7),
        ],
        compare: (got, cpu) => [
          mismatches("indices", got.indices.data as Int32Array, cpu.indices.data as Int32Array),
          maxAbs("density", values(got.density), values(cpu.density), 1e-7),
        ],
      };
    },
  }));

/** [heads, kvHeads, seq, cap, clustered, clusters, obs, pos, headDim, gqa, τ quantile] of squeezed.attend. */
const SQ_ATTEND_GRID: readonly (readonly [
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  number,
  "head" | "union",
  number,
])[] = [
  [9, 3, 1, 700, 513, 41, 7, 600, 64, "head", 0.5],
  [9, 3, 1, 1400, 1100, 57, 60, 1300, 64, "union", 0.8],
  [4, 1, 3, 1200, 900, 45, 100, 1010, 128, "head", 0.9],
  [8, 2, 2, 600, 300, 17, 9, 309, 64, "union", 0.3],
];

/**
 * squeezed.attend (runtime pos): float64 attention over the keys of lists built from scratch (the clusters
 * above τ, the window, the tokens after the context); a backend against the CPU reference, density too.
 */
const squeezedAttendCases: CaseGenerator = (op) =>
  SQ_ATTEND_GRID.map(([H, Hk, S, cap, Sc, C, obs, pos, D, gqa, qt], n) => ({
    shape: `H${H}/${Hk} S${S} cap${cap} clustered${Sc} C${C} obs${obs} pos${pos} D${D} ${gqa}`,
    dtype: "f32" as const,
    qk: false,
    params: { obsWindow: obs, gqa },
    scalars: { pos },
    descs: {
      q: descOf(op, "q", [H, S, D]),
      kCache: descOf(op, "kCache", [Hk, cap, D]),
      vCache: descOf(op, "vCache", [Hk, cap, D]),
      score: descOf(op, "score", [H, C]),
      labels: descOf(op, "labels", [Hk, Sc]),
      threshold: descOf(op, "threshold", [1]),
    },
    build: () => {
      const { score, labels, tau } = clusterScores(3101 + n, H, Hk, Sc, C, qt);
      const lists = squeezedLists64(score, labels, tau, {
        H,
        Hk,
        seq: S,
        cap,
        S: Sc,
        C,
        obs,
        pos,
        blockQ: 64,
        union: gqa === "union",
      });
      const q = floatTensor(op, "q", [H, S, D], activations(H, S, D, 3201 + n, 1.2, 0.6));
      const k = floatTensor(op, "kCache", [Hk, cap, D], activations(Hk, cap, D, 3211 + n, 1, 1.5, 2));
      const v = floatTensor(op, "vCache", [Hk, cap, D], activations(Hk, cap, D, 3221 + n, 1, 0.3));
      const L = pos + S;
      const cut = (x: Float32Array) => {
        const o = new Float32Array(Hk * L * D);
        for (let h = 0; h < Hk; h++) o.set(x.subarray(h * cap * D, (h * cap + L) * D), h * L * D);
        return o;
      };
      // seq ≤ 64: one list per head
      const sets = Array.from(
        { length: H },
        (_, h) => new Set(lists.indices.subarray(h * cap, (h + 1) * cap)),
      );
      const r = attention64(
        q.x,
        cut(k.x),
        cut(v.x),
        H,
        Hk,
        S,
        L,
        D,
        1 / Math.sqrt(D),
        (h, _i, j) => sets[h].has(j),
      );
      return {
        inputs: {
          q: q.t,
          kCache: k.t,
          vCache: v.t,
          score: hostTensor("f32", op.inputs.score.dims, [H, C], score),
          labels: hostTensor("i32", op.inputs.labels.dims, [Hk, Sc], labels),
          threshold: hostTensor("f32", op.inputs.threshold.dims, [1], Float32Array.of(tau)),
        },
        note: `τ ${tau.toExponential(2)}, budget ${
          (lists.density.reduce((a, b) => a + b, 0) / H).toFixed(2)
        }`,
        ref64: (cpu) => [
          ...attnMetrics(cpu, r.o, r.lse, ATTN_TOL.ref64),
          maxAbs("density", values(cpu.density), lists.density, 1e-7),
        ],
        compare: (got, cpu) => [
          ...attnMetrics(got, values(cpu.o), values(cpu.lse), ATTN_TOL.f32),
          maxAbs("density", values(got.density), values(cpu.density), 1e-7),
        ],
      };
    },
  }));

// ---- squeezed's GPU k-means: squeezed.normalize, squeezed.seed, squeezed.lloyd, squeezed.assign ----------------

/** [kvHeads, points, clusters, headDim, tile] of the k-means cases: odd sizes, both assignment tiles, one cluster. */
const SQ_KMEANS_GRID = [
  [1, 203, 17, 64, 64],
  [3, 301, 31, 128, 64],
  [2, 517, 129, 64, 128],
  [2, 130, 1, 32, 0],
] as const;

const kmeansLabel = ([Hk, n, K, d, tile]: readonly number[]) => `H${Hk} n${n} K${K} D${d} tile ${tile}`;

/** Key-like rows (seeded normals around a shared direction, a scale per row) and their unit copy (float64). */
const kmeansKeys = (Hk: number, n: number, d: number, seed: number) => {
  const raw = seededNormals(Hk * n * d, seed),
    mu = seededNormals(d, seed ^ 0x3c6ef372),
    rnd = mulberry32(seed);
  const unit = new Float32Array(raw.length);
  for (let r = 0; r < Hk * n; r++) {
    const s = 1 + 3 * rnd();
    let nn = 0;
    for (let t = 0; t < d; t++) nn += (raw[r * d + t] = (raw[r * d + t] + 0.7 * mu[t]) * s) ** 2;
    for (let t = 0; t < d; t++) unit[r * d + t] = raw[r * d + t] / Math.sqrt(nn);
  }
  return { raw, unit };
};

/** `K` centres per head: spread-out points plus a little noise. */
const kmeansCentres = (x: Float32Array, Hk: number, n: number, K: number, d: number, seed: number) => {
  const c = new Float32Array(Hk * K * d), e = seededNormals(Hk * K * d, seed);
  for (let h = 0; h < Hk; h++) {
    for (let j = 0; j < K; j++) {
      const p = (j * 7919 + h * 13) % n;
      for (let t = 0; t < d; t++) {
        c[(h * K + j) * d + t] = x[(h * n + p) * d + t] + 0.02 * e[(h * K + j) * d + t];
      }
    }
  }
  return c;
};

/** From scratch (float64, `Σ (x − c)²` directly): each point's nearest centre and that squared distance. */
const nearest64 = (x: Float32Array, c: Float32Array, Hk: number, n: number, K: number, d: number) => {
  const labels = new Int32Array(Hk * n), dist = new Float64Array(Hk * n);
  for (let h = 0; h < Hk; h++) {
    for (let i = 0; i < n; i++) {
      let bj = 0, bv = Infinity;
      for (let j = 0; j < K; j++) {
        let s = 0;
        for (let t = 0; t < d; t++) s += (x[(h * n + i) * d + t] - c[(h * K + j) * d + t]) ** 2;
        if (s < bv) bv = s, bj = j;
      }
      labels[h * n + i] = bj, dist[h * n + i] = bv;
    }
  }
  return { labels, dist };
};

/** Per cluster: member count and float64 mean of `v` by `labels`. */
const clusterMeans64 = (v: Float32Array, labels: Int32Array, Hk: number, n: number, K: number, d: number) => {
  const cnt = new Float64Array(Hk * K), mean = new Float64Array(Hk * K * d);
  for (let h = 0; h < Hk; h++) {
    for (let i = 0; i < n; i++) {
      const j = h * K + labels[h * n + i];
      cnt[j]++;
      for (let t = 0; t < d; t++) mean[j * d + t] += v[(h * n + i) * d + t];
    }
  }
  for (let j = 0; j < Hk * K; j++) if (cnt[j]) { for (let t = 0; t < d; t++) mean[j * d + t] /= cnt[j]; }
  return { cnt, mean };
};

/** A Lloyd state `u32 [kvHeads, 4]` as its integer fields (done, iterations, changed) and its shifts (f32 bits). */
const lloydState = (t: HostTensor) => {
  const s = t.data as Uint32Array,
    f = new Float32Array(s.slice().buffer),
    ints: number[] = [],
    shift: number[] = [];
  for (let h = 0; h < s.length / 4; h++) {
    ints.push(s[h * 4], s[h * 4 + 1], s[h * 4 + 2]), shift.push(f[h * 4 + 3]);
  }
  return { ints, shift };
};

const kmeansDescs = (op: AnyOperator, shapes: Readonly<Record<string, readonly number[]>>) =>
  Object.fromEntries(Object.entries(shapes).map(([port, shape]) => [port, descOf(op, port, shape)]));

/** squeezed.normalize: unit rows and the tolerance against float64 from scratch (E[x²] − E[x]² per dim). */
const squeezedNormalizeCases: CaseGenerator = (op) =>
  SQ_KMEANS_GRID.map(([Hk, n, K, d, tile], c) => ({
    shape: kmeansLabel([Hk, n, K, d, tile]),
    dtype: "f32" as const,
    qk: false,
    params: {},
    descs: kmeansDescs(op, { keys: [Hk, n, d] }),
    build: () => {
      const { raw, unit } = kmeansKeys(Hk, n, d, 3401 + c);
      const tol = new Float64Array(Hk);
      for (let h = 0; h < Hk; h++) {
        let v = 0;
        for (let t = 0; t < d; t++) {
          let s = 0, s2 = 0;
          for (let i = 0; i < n; i++) s += unit[(h * n + i) * d + t], s2 += unit[(h * n + i) * d + t] ** 2;
          v += s2 / n - (s / n) ** 2;
        }
        tol[h] = 1e-4 * v / d;
      }
      return {
        inputs: { keys: hostTensor("f32", op.inputs.keys.dims, [Hk, n, d], raw) },
        ref64: (
          cpu,
        ) => [
          maxAbs("unit", values(cpu.unit), unit, 1e-7),
          maxRel("tolerance", values(cpu.tolerance), tol, 1e-6),
        ],
        compare: (got, cpu) => [
          maxAbs("unit", values(got.unit), values(cpu.unit), 1e-6),
          maxRel("tolerance", values(got.tolerance), values(cpu.tolerance), 1e-4),
        ],
      };
    },
  }));

/** [kvHeads, points, clusters, headDim, first step, steps per call] of the squeezed.seed cases. */
const SQ_SEED_GRID = [[2, 300, 23, 64, 0, 32], [1, 517, 40, 128, 5, 8], [3, 129, 9, 32, 1, 4]] as const;

/**
 * squeezed.seed (runtime step): each chosen centre is a point (step 0's the hashed one), the potential the
 * squared distance to the nearest earlier centre (float64 from scratch); a backend: the same centres exactly.
 * A case starting past step 0 starts from the state the CPU reference leaves after the earlier steps.
 */
const squeezedSeedCases: CaseGenerator = (op) =>
  SQ_SEED_GRID.map(([Hk, n, K, d, step, steps], c) => ({
    shape: `H${Hk} n${n} K${K} D${d} steps ${step}…${Math.min(K, step + steps) - 1}`,
    dtype: "f32" as const,
    qk: false,
    params: { seedSteps: steps, seed: 7 + c },
    scalars: { step },
    descs: kmeansDescs(op, { x: [Hk, n, d], centers: [Hk, K, d], potential: [Hk, n] }),
    build: () => {
      const { unit } = kmeansKeys(Hk, n, d, 3501 + c);
      const centers = new Float32Array(Hk * K * d), potential = seededNormals(Hk * n, 3601 + c);
      const dm = { Hk, n, K, d };
      if (step > 0) squeezed.seedReference(unit, centers, potential, dm, 7 + c, 0, step);
      const last = Math.min(K, step + steps) - 1;
      return {
        inputs: {
          x: hostTensor("f32", op.inputs.x.dims, [Hk, n, d], unit),
          centers: hostTensor("f32", op.inputs.centers.dims, [Hk, K, d], centers),
          potential: hostTensor("f32", op.inputs.potential.dims, [Hk, n], potential),
        },
        ref64: (cpu) => {
          const cen = values(cpu.centersOut);
          // rows step … last are points; the potential is D² to centres 0 … last − 1
          let notPoints = 0;
          for (let h = 0; h < Hk; h++) {
            for (let j = step; j <= last; j++) {
              let found = false;
              for (let i = 0; i < n && !found; i++) {
                found = true;
                for (let t = 0; t < d && found; t++) {found =
                    cen[(h * K + j) * d + t] === unit[(h * n + i) * d + t];}
              }
              if (!found) notPoints++;
            }
          }
          const first = squeezed.seedHash(7 + c, 0, 0) % n;
          const want = new Float64Array(Hk * n);
          for (let h = 0; h < Hk; h++) {
            for (let i = 0; i < n; i++) {
              let m = Infinity;
              for (let j = 0; j < last; j++) {
                let s = 0;
                for (let t = 0; t < d; t++) s += (unit[(h * n + i) * d + t] - cen[(h * K + j) * d + t]) ** 2;
                m = Math.min(m, s);
              }
              want[h * n + i] = last >= 1 ? m : potential[h * n + i];
            }
          }
          return [
            { name: "centres that are no point", err: notPoints, tol: 0 },
            ...(step === 0
              ? [
                mismatches(
                  "centre 0",
                  Array.from(cen).slice(0, d),
                  Array.from(unit.subarray(first * d, first * d + d)),
                ),
              ]
              : []),
            maxScaled("potential", values(cpu.potentialOut), want, new Float64Array(Hk * n).fill(4), 1e-6),
          ];
        },
        compare: (got, cpu) => [
          mismatches("centers", values(got.centersOut), values(cpu.centersOut)),
          maxScaled(
            "potential",
            values(got.potentialOut),
            values(cpu.potentialOut),
            new Float64Array(Hk * n).fill(4),
            1e-6,
          ),
        ],
      };
    },
  }));

/**
 * squeezed.lloyd (in place): labels and sizes exact, centres (the members' means; the empty clusters' farthest
 * points) and the state against float64 from scratch; case 0 has empty clusters, case 1 a head already done,
 * case 3 a head whose tolerance ends it. A backend: labels, sizes and state counters exact, centres within 1e-5.
 */
const squeezedLloydCases: CaseGenerator = (op) =>
  SQ_KMEANS_GRID.map(([Hk, n, K, d, tile], c) => ({
    shape: kmeansLabel([Hk, n, K, d, tile]),
    dtype: "f32" as const,
    qk: false,
    params: { tile },
    descs: kmeansDescs(op, {
      x: [Hk, n, d],
      centers: [Hk, K, d],
      labels: [Hk, n],
      state: [Hk, 4],
      tolerance: [Hk],
    }),
    build: () => {
      const { unit } = kmeansKeys(Hk, n, d, 3701 + c);
      const cen = kmeansCentres(unit, Hk, n, K, d, 3801 + c);
      if (c === 0) { for (const j of [3, 11]) cen.fill(3, j * d, (j + 1) * d); // far from every point: empty
       }
      const state = new Uint32Array(Hk * 4);
      if (c === 1) state[4] = 1, state[5] = 4; // head 1 done after 4 iterations
      const rnd = mulberry32(3901 + c);
      const labels = Int32Array.from({ length: Hk * n }, () => (c === 2 ? Math.floor(rnd() * K) : -1));
      const tolerance = Float32Array.from({ length: Hk }, (_, h) => (c === 3 && h === 1 ? 1e9 : 0));
      // from scratch: per live head the nearest centres, the members' means, the empty ones' farthest points
      const live = (h: number) => state[h * 4] === 0;
      const near = nearest64(unit, cen, Hk, n, K, d);
      const { cnt, mean } = clusterMeans64(unit, near.labels, Hk, n, K, d);
      const wantC = Float64Array.from(cen), wantL = Int32Array.from(labels), wantS = new Float64Array(Hk * K);
      const ints: number[] = [], shift: number[] = [];
      for (let h = 0; h < Hk; h++) {
        if (!live(h)) {
          ints.push(...state.subarray(h * 4, h * 4 + 3)), shift.push(0);
          continue;
        }
        let changed = 0;
        for (let i = 0; i < n; i++) changed += near.labels[h * n + i] !== labels[h * n + i] ? 1 : 0;
        wantL.set(near.labels.subarray(h * n, (h + 1) * n), h * n);
        wantS.set(cnt.subarray(h * K, (h + 1) * K), h * K);
        const taken = new Set<number>();
        let sh = 0;
        for (let j = 0; j < K; j++) {
          const o = (h * K + j) * d;
          let src: ArrayLike<number> = mean.subarray(o, o + d);
          if (!cnt[h * K + j]) {
            let far = -1;
            for (let i = 0; i < n; i++) {
              if (!taken.has(i) && (far < 0 || near.dist[h * n + i] > near.dist[h * n + far])) far = i;
            }
            taken.add(far);
            src = unit.subarray((h * n + far) * d, (h * n + far + 1) * d);
          }
          for (let t = 0; t < d; t++) sh += (src[t] - cen[o + t]) ** 2, wantC[o + t] = src[t];
        }
        ints.push(sh <= tolerance[h] ? 1 : 0, 1, changed), shift.push(sh);
      }
      return {
        inputs: {
          x: hostTensor("f32", op.inputs.x.dims, [Hk, n, d], unit),
          centers: hostTensor("f32", op.inputs.centers.dims, [Hk, K, d], cen),
          labels: hostTensor("i32", op.inputs.labels.dims, [Hk, n], labels),
          state: hostTensor("u32", op.inputs.state.dims, [Hk, 4], state),
          tolerance: hostTensor("f32", op.inputs.tolerance.dims, [Hk], tolerance),
        },
        note: `${cnt.filter((x, j) => x === 0 && live(Math.floor(j / K))).length} empty`,
        ref64: (cpu) => {
          const st = lloydState(cpu.stateOut);
          return [
            mismatches("labels", cpu.labelsOut.data as Int32Array, wantL),
            mismatches("sizes", values(cpu.sizes), wantS),
            maxAbs("centers", values(cpu.centersOut), wantC, 1e-6),
            mismatches("state (done, iterations, changed)", st.ints, ints),
            maxRel("shift", st.shift, shift, 1e-5, 1e-12),
          ];
        },
        compare: (got, cpu) => {
          const g = lloydState(got.stateOut), w = lloydState(cpu.stateOut);
          return [
            mismatches("labels", got.labelsOut.data as Int32Array, cpu.labelsOut.data as Int32Array),
            mismatches("sizes", values(got.sizes), values(cpu.sizes)),
            maxAbs("centers", values(got.centersOut), values(cpu.centersOut), 1e-5),
            mismatches("state (done, iterations, changed)", g.ints, w.ints),
            maxRel("shift", g.shift, w.shift, 1e-4, 1e-12),
          ];
        },
      };
    },
  }));

/** squeezed.assign: labels and sizes exact, the raw keys' means and the inertia against float64 from scratch. */
const squeezedAssignCases: CaseGenerator = (op) =>
  SQ_KMEANS_GRID.map(([Hk, n, K, d, tile], c) => ({
    shape: kmeansLabel([Hk, n, K, d, tile]),
    dtype: "f32" as const,
    qk: false,
    params: { tile },
    descs: kmeansDescs(op, { x: [Hk, n, d], centers: [Hk, K, d], values: [Hk, n, d] }),
    build: () => {
      const { raw, unit } = kmeansKeys(Hk, n, d, 4001 + c);
      const cen = kmeansCentres(unit, Hk, n, K, d, 4101 + c);
      const near = nearest64(unit, cen, Hk, n, K, d);
      const { cnt, mean } = clusterMeans64(raw, near.labels, Hk, n, K, d);
      const inertia = Array.from({ length: Hk }, (_, h) =>
        near.dist.subarray(h * n, (h + 1) * n).reduce((a, b) => a + b, 0));
      const mag = new Float64Array(mean.length).fill(Math.max(...mean.map(Math.abs)));
      return {
        inputs: {
          x: hostTensor("f32", op.inputs.x.dims, [Hk, n, d], unit),
          centers: hostTensor("f32", op.inputs.centers.dims, [Hk, K, d], cen),
          values: hostTensor("f32", op.inputs.values.dims, [Hk, n, d], raw),
        },
        ref64: (cpu) => [
          mismatches("labels", cpu.labels.data as Int32Array, near.labels),
          mismatches("sizes", values(cpu.sizes), cnt),
          maxScaled("means", values(cpu.means), mean, mag, 1e-7),
          maxRel("inertia", values(cpu.inertia), inertia, 1e-6),
        ],
        compare: (got, cpu) => [
          mismatches("labels", got.labels.data as Int32Array, cpu.labels.data as Int32Array),
          mismatches("sizes", values(got.sizes), values(cpu.sizes)),
          maxScaled("means", values(got.means), values(cpu.means), mag, 1e-5),
          maxRel("inertia", values(got.inertia), values(cpu.inertia), 1e-5),
        ],
      };
    },
  }));

/** hip.cacheMask (runtime pos): lists exact against the CPU reference; CPU against the list properties. */
const hipCacheMaskCases: CaseGenerator = (op) =>
  HIP_CACHE_GRID.map(([H, Hk, S, cap, D, pos, raw], n) => ({
    shape: `H${H}/${Hk} S${S} cap${cap} pos${pos} D${D} k${raw.topK}`,
    dtype: dtypeOf(op),
    qk: false,
    params: raw,
    scalars: { pos },
    descs: { q: descOf(op, "q", [H, S, D]), kCache: descOf(op, "kCache", [Hk, cap, D]) },
    build: () => {
      const p = hip.hipParams(raw);
      const q = floatTensor(op, "q", [H, S, D], hipInts(H * S * D, 401 + n));
      const k = floatTensor(op, "kCache", [Hk, cap, D], hipInts(Hk * cap * D, 411 + n));
      // the same search on the valid rows only (a prefix of each head's cache): rows past pos + S must not matter
      const valid = new Float32Array(Hk * (pos + S) * D);
      for (let h = 0; h < Hk; h++) {
        valid.set(
          k.x.subarray(h * cap * D, (h * cap + pos + S) * D),
          h * (pos + S) * D,
        );
      }
      const want = hip.hipMaskReference(p, q.x, valid, H, Hk, S, pos + S, D);
      return {
        inputs: { q: q.t, kCache: k.t },
        ref64: (cpu) => [
          mismatches("indices", cpu.indices.data as Int32Array, want.indices),
          maxAbs("density", values(cpu.density), want.density, 1e-7),
        ],
        compare: (got, cpu) => [
          mismatches("indices", got.indices.data as Int32Array, cpu.indices.data as Int32Array),
          maxAbs("density", values(got.density), values(cpu.density), 1e-6),
        ],
      };
    },
  }));

/** dense.indexCacheAttn (runtime pos) over hip lists, against float64 on the valid rows. */
const indexCacheAttnCases: CaseGenerator = (op) =>
  HIP_CACHE_GRID.map(([H, Hk, S, cap, D, pos, raw], n) => {
    const params = { blockQ: raw.blockQ ?? 64, sink: raw.sink, window: raw.window };
    const p = Schema.decodeUnknownSync(op.params)(params) as dense.IndexAttnParams;
    const qB = Math.ceil(S / p.blockQ), kCap = raw.topK;
    return {
      shape: `H${H}/${Hk} S${S} cap${cap} pos${pos} D${D} sink${p.sink} w${p.window}`,
      dtype: dtypeOf(op),
      qk: false,
      params,
      scalars: { pos },
      descs: {
        q: descOf(op, "q", [H, S, D]),
        kCache: descOf(op, "kCache", [Hk, cap, D]),
        vCache: descOf(op, "vCache", [Hk, cap, D]),
        indices: descOf(op, "indices", [H, qB, kCap]),
      },
      build: () => {
        const hp = hip.hipParams(raw);
        const q = floatTensor(op, "q", [H, S, D], activations(H, S, D, 421 + n, 1.2, 0.6));
        const k = floatTensor(op, "kCache", [Hk, cap, D], activations(Hk, cap, D, 431 + n, 1, 1.5, 2));
        const v = floatTensor(op, "vCache", [Hk, cap, D], activations(Hk, cap, D, 441 + n, 1, 0.3));
        const m = hip.hipMaskReference(hp, q.x, k.x, H, Hk, S, cap, D, undefined, pos);
        const L = pos + S;
        const cut = (x: Float32Array) => {
          const o = new Float32Array(Hk * L * D);
          for (let h = 0; h < Hk; h++) o.set(x.subarray(h * cap * D, (h * cap + L) * D), h * L * D);
          return o;
        };
        const sets = Array.from({ length: H * qB }, (_, e) =>
          new Set(m.indices.subarray(e * kCap, (e + 1) * kCap)));
        const keep = (h: number, i: number, j: number) => {
          const at = i + pos;
          return j < p.sink || j > at - p.window || sets[h * qB + Math.floor(i / p.blockQ)].has(j);
        };
        return {
          inputs: {
            q: q.t,
            kCache: k.t,
            vCache: v.t,
            indices: hostTensor("i32", op.inputs.indices.dims, [H, qB, kCap], m.indices),
          },
          ref64: (cpu) => {
            const r = attention64(q.x, cut(k.x), cut(v.x), H, Hk, S, L, D, scaleOf(p, D), keep);
            return attnMetrics(cpu, r.o, r.lse, ATTN_TOL.ref64);
          },
          compare: (got, cpu) =>
            attnMetrics(got, values(cpu.o), values(cpu.lse), ATTN_TOL.f32),
        };
      },
    };
  });

// ---- dense.cacheAttn and the model.* operators

/** An input port's description; a wildcard port (`anyDims`) gets dims `d0, d1, …`. */
const portDesc = (op: AnyOperator, port: string, shape: readonly number[]): TensorDesc => {
  const t = op.inputs[port];
  if (!t) throw new Error(`${op.name} has no input port "${port}": update its case generator`);
  const dims = t.dims.length === 1 && t.dims[0] === ANY_DIMS ? shape.map((_, i) => `d${i}`) : t.dims;
  return { dtype: t.dtype, dims, shape };
};

/** A case's data: per input port its values (copied into the tensor: the checks keep the originals). */
type Data = Readonly<Record<string, Float32Array | Uint32Array>>;

/** A model-operator case: shapes per input port up front (for `infer`), data and checks on `build`. */
const modelCase = (
  op: AnyOperator,
  c: {
    shape: string;
    params?: Readonly<Record<string, unknown>>;
    scalars?: Scalars;
    shapes: Readonly<Record<string, readonly number[]>>;
    build: () => { data: Data } & Omit<Built, "inputs">;
  },
): ConfCase => {
  const descs = Object.fromEntries(Object.entries(c.shapes).map(([k, sh]) => [k, portDesc(op, k, sh)]));
  return {
    shape: c.shape,
    dtype: "f32",
    qk: false,
    params: c.params ?? {},
    ...(c.scalars ? { scalars: c.scalars } : {}),
    descs,
    build: () => {
      const { data, ...checks } = c.build();
      const inputs = Object.fromEntries(
        Object.entries(descs).map((
          [k, d],
        ) => [k, hostTensor(d.dtype, d.dims, d.shape, data[k].slice() as never)]),
      );
      return { inputs, ...checks };
    },
  };
};

/** Values of `t` at the flat indices `idx`. */
const pick = (t: ArrayLike<number>, idx: readonly number[]): Float64Array =>
  Float64Array.from(idx, (e) => t[e]);

/** Normals times `amp` (seeded; never zeros). */
const normals = (n: number, seed: number, amp = 1): Float32Array =>
  seededNormals(n, seed).map((v) => v * amp);

interface CacheCfg {
  readonly H: number;
  readonly KH: number;
  readonly D: number;
  readonly seq: number;
  readonly cap: number;
  readonly pos: number;
  readonly window: number;
  readonly layout: "heads" | "rows";
  readonly scale?: number;
  readonly splitKeys?: number;
  /** A compacted list (TokenSelect's): `pos` may exceed the capacity; the queries sit at its end. */
  readonly compacted?: boolean;
}

/**
 * Cache attention: grid of GQA 1/3/4/8, headDim 64/128, seq 1 and odd > 1, odd capacities, pos 0 … capacity −
 * seq, window 0 / 1 / > 0, both layouts, split-KV chunks 1 … 4. Cache rows ≥ pos + seq hold junk (K ≈ 1e3, V ≈
 * 1e4): a kernel that reads past the valid length gets a score that dominates and an `o` far off. Thresholds as
 * `dense.attn` (ATTN_TOL): the same arithmetic per (query, key).
 */
const CACHE_GRID: readonly CacheCfg[] = [
  { H: 1, KH: 1, D: 64, seq: 1, cap: 17, pos: 0, window: 0, layout: "heads" },
  { H: 3, KH: 1, D: 128, seq: 1, cap: 33, pos: 32, window: 0, layout: "rows" },
  { H: 4, KH: 1, D: 64, seq: 7, cap: 257, pos: 100, window: 16, layout: "heads" },
  { H: 8, KH: 1, D: 64, seq: 17, cap: 101, pos: 0, window: 0, layout: "rows" },
  { H: 9, KH: 3, D: 64, seq: 1, cap: 301, pos: 299, window: 0, layout: "heads" },
  { H: 9, KH: 3, D: 64, seq: 7, cap: 33, pos: 26, window: 0, layout: "rows" },
  { H: 8, KH: 1, D: 128, seq: 33, cap: 513, pos: 480, window: 64, layout: "heads" },
  { H: 4, KH: 1, D: 128, seq: 5, cap: 65, pos: 7, window: 1, layout: "rows", scale: 0.05 },
  { H: 3, KH: 1, D: 64, seq: 3, cap: 201, pos: 150, window: 100, layout: "heads", splitKeys: 64 },
  { H: 6, KH: 2, D: 64, seq: 9, cap: 99, pos: 0, window: 5, layout: "rows", splitKeys: 64 },
  {
    H: 4,
    KH: 2,
    D: 64,
    seq: 1,
    cap: 120,
    pos: 500,
    window: 0,
    layout: "heads",
    splitKeys: 64,
    compacted: true,
  },
  { H: 8, KH: 2, D: 128, seq: 16, cap: 160, pos: 1000, window: 0, layout: "heads", compacted: true },
  { H: 3, KH: 1, D: 64, seq: 5, cap: 90, pos: 40, window: 0, layout: "rows", compacted: true },
];

const cacheAttnCases: CaseGenerator = (op) =>
  CACHE_GRID.map((c, n) => {
    const { H, KH, D, seq, cap, window, layout } = c;
    // a compacted list: the queries at min(pos, cap − seq)
    const pos = c.compacted ? Math.min(c.pos, cap - seq) : c.pos;
    const params = {
      window,
      layout,
      ...(c.scale !== undefined ? { scale: c.scale } : {}),
      ...(c.splitKeys !== undefined ? { splitKeys: c.splitKeys } : {}),
      ...(c.compacted ? { compacted: true } : {}),
    };
    return modelCase(op, {
      shape: `H${H}/${KH} S${seq} cap${cap} pos${c.pos} D${D} w${window} ${layout}` +
        (c.splitKeys ? ` split${c.splitKeys}` : "") + (c.scale ? ` scale${c.scale}` : "") +
        (c.compacted ? " compacted" : ""),
      params,
      scalars: { pos: c.pos },
      shapes: { q: [H, seq, D], kCache: [KH, cap, D], vCache: [KH, cap, D] },
      build: () => {
        const seed = 401 + 17 * n;
        const q = activations(H, seq, D, seed, 1.2, 0.6);
        const k = activations(KH, cap, D, seed + 1, 1, 1.5, 2);
        const v = activations(KH, cap, D, seed + 2, 1, 0.3);
        const junk = seededNormals(KH * cap * D, seed + 3);
        for (let h = 0; h < KH; h++) {
          for (let j = pos + seq; j < cap; j++) {
            for (let x = 0; x < D; x++) {
              const e = (h * cap + j) * D + x;
              k[e] = 1e3 * junk[e];
              v[e] = 1e4 * (1 + Math.abs(junk[e]));
            }
          }
        }
        const p = Schema.decodeUnknownSync(op.params)(params) as { scale: number };
        return {
          data: { q, kCache: k, vCache: v },
          note: cap > pos + seq ? `${cap - pos - seq} junk rows` : "full cache",
          ref64: (cpu) => {
            const r = cacheAttn64(
              q,
              k,
              v,
              { heads: H, kvHeads: KH, seq, cap, d: D },
              scaleOf(p, D),
              pos,
              window,
              layout,
            );
            return attnMetrics(cpu, r.o, r.lse, ATTN_TOL.ref64);
          },
          compare: (got, cpu) => attnMetrics(got, values(cpu.o), values(cpu.lse), ATTN_TOL.f32),
        };
      },
    });
  });

/** SmolLM2-135M's shapes: hidden 576, 9 query / 3 KV heads of 64, ffn 1536; a small vocabulary for speed. */
const SMOL = { E: 576, H: 9, KH: 3, D: 64, F: 1536, V: 1000 } as const;

const embedCases: CaseGenerator = (op) =>
  [1, 7, 33].map((seq, n) =>
    modelCase(op, {
      shape: `S${seq} V${SMOL.V} E${SMOL.E}`,
      shapes: { tokens: [seq], table: [SMOL.V, SMOL.E] },
      build: () => {
        const { V, E } = SMOL;
        const r = mulberry32(71 + n);
        const tokens = Uint32Array.from({ length: seq }, () => Math.floor(r() * V));
        tokens[0] = V - 1; // the last row of the table
        if (seq > 2) [tokens[1], tokens[seq - 1]] = [0, V - 1]; // the first row, and a repeated token
        const table = normals(V * E, 73 + n);
        const want = new Float32Array(seq * E);
        for (let t = 0; t < seq; t++) for (let c = 0; c < E; c++) want[t * E + c] = table[tokens[t] * E + c];
        return {
          data: { tokens, table },
          ref64: (cpu) => [mismatches("x", values(cpu.x), want)],
          compare: (got, cpu) => [mismatches("x", values(got.x), values(cpu.x))],
        };
      },
    })
  );

interface NormCfg {
  readonly rows: number;
  readonly E: number;
  readonly lastRow?: boolean;
  readonly eps?: number;
}
const NORM_GRID: readonly NormCfg[] = [
  { rows: 1, E: SMOL.E },
  { rows: 7, E: SMOL.E, lastRow: true },
  { rows: 33, E: SMOL.E },
  { rows: 33, E: SMOL.E, lastRow: true, eps: 1e-6 },
  { rows: 7, E: 1536, eps: 1e-6 },
];
const normLabel = (c: NormCfg) =>
  `rows${c.rows} E${c.E}${c.lastRow ? " lastRow" : ""}${c.eps !== undefined ? ` eps${c.eps}` : ""}`;
const normParams = (c: NormCfg) => ({
  ...(c.lastRow ? { lastRow: true } : {}),
  ...(c.eps !== undefined ? { eps: c.eps } : {}),
});
/** Rows of different scales (2⁻³ … 2⁴: RMSNorm is scale-invariant) over seeded normals. */
const rowsOfScales = (rows: number, E: number, seed: number) => {
  const x = normals(rows * E, seed);
  for (let r = 0; r < rows; r++) for (let c = 0; c < E; c++) x[r * E + c] *= 2 ** ((r % 8) - 3);
  return x;
};

/**
 * RMSNorm thresholds (max-rel per element). ref64: the CPU reference sums in float64 and rounds twice to f32
 * (`x·inv`, then `·w`): ≤ 2·2⁻²⁴ ≈ 1.19e-7, so 1.2e-7. Backend vs CPU: f32 sum of squares (tree of 256
 * partial sums), WGSL `inverseSqrt` (≤ 2 ulp) and two f32 products: 1e-6.
 */
const NORM_TOL = { ref64: 1.2e-7, backend: 1e-6 } as const;

const rmsNormCases: CaseGenerator = (op) =>
  NORM_GRID.map((c, n) =>
    modelCase(op, {
      shape: normLabel(c),
      params: normParams(c),
      shapes: { x: [c.rows, c.E], w: [c.E] },
      build: () => {
        const x = rowsOfScales(c.rows, c.E, 91 + n), w = normals(c.E, 93 + n);
        const p = Schema.decodeUnknownSync(op.params)(normParams(c)) as { eps: number };
        const first = c.lastRow ? c.rows - 1 : 0, nr = c.lastRow ? 1 : c.rows;
        return {
          data: { x, w },
          ref64: (
            cpu,
          ) => [maxRel("y", values(cpu.y), rmsNorm64(x, w, first, nr, c.E, p.eps), NORM_TOL.ref64)],
          compare: (got, cpu) => [maxRel("y", values(got.y), values(cpu.y), NORM_TOL.backend)],
        };
      },
    })
  );

const addRmsNormCases: CaseGenerator = (op) =>
  NORM_GRID.map((c, n) =>
    modelCase(op, {
      shape: normLabel(c),
      params: normParams(c),
      shapes: { x: [c.rows, c.E], t: [c.rows, c.E], w: [c.E] },
      build: () => {
        const x = rowsOfScales(c.rows, c.E, 111 + n), t = normals(c.rows * c.E, 113 + n, 0.5);
        const w = normals(c.E, 115 + n);
        const p = Schema.decodeUnknownSync(op.params)(normParams(c)) as { eps: number };
        const first = c.lastRow ? c.rows - 1 : 0, nr = c.lastRow ? 1 : c.rows;
        // x + t is one f32 addition: exact as fround of the float64 sum; rows before `first` stay x.
        const xo = x.map((v, e) => (e >= first * c.E ? Math.fround(v + t[e]) : v));
        return {
          data: { x, t, w },
          note: c.lastRow ? "xo: only the last row added" : undefined,
          ref64: (cpu) => [
            mismatches("xo", values(cpu.xo), xo),
            maxRel("y", values(cpu.y), rmsNorm64(xo, w, first, nr, c.E, p.eps), NORM_TOL.ref64),
          ],
          compare: (got, cpu) => [
            mismatches("xo", values(got.xo), values(cpu.xo)),
            maxRel("y", values(got.y), values(cpu.y), NORM_TOL.backend),
          ],
        };
      },
    })
  );

/**
 * `model.linear` grid `[rows, in, out]`: GEMV (≤ 8 rows) and the tiled matmul (small tile; the 128×128 tile
 * from 512 rows), SmolLM2's projections (qkv 576→960, down 1536→576, gate/up 576→3072, head 576→V) and odd
 * widths. Thresholds (max-scaled: |error| / Σ|x||w|): ref64 2⁻²⁴ ≈ 6e-8 (the CPU reference accumulates in
 * float64, one f32 rounding); backend vs CPU: f32 accumulation over `in` ≤ 1536 terms in the kernels' orders,
 * 5e-7 (about 8 ulp of the magnitude; the worst-case bound in·2⁻²⁴ would be 9e-5).
 */
const LINEAR_GRID: readonly (readonly [number, number, number])[] = [
  [1, SMOL.E, (SMOL.H + 2 * SMOL.KH) * SMOL.D],
  [1, SMOL.E, SMOL.V],
  [7, SMOL.F, SMOL.E],
  [7, SMOL.E, 1001],
  [33, SMOL.E, 2 * SMOL.F],
  [33, SMOL.F, 577],
  [513, 64, 200],
];
const LINEAR_TOL = { ref64: 6e-8, backend: 5e-7 } as const;

const linearCases: CaseGenerator = (op) =>
  LINEAR_GRID.map(([M, K, N], n) =>
    modelCase(op, {
      shape: `rows${M} in${K} out${N}`,
      shapes: { x: [M, K], w: [N, K] },
      build: () => {
        const x = normals(M * K, 131 + n), w = normals(N * K, 133 + n, 0.05);
        const r = linear64(x, w, M, N, K);
        return {
          data: { x, w },
          note: M <= 8 ? "gemv" : M >= 512 ? "large tile" : "tiled",
          ref64: (cpu) => [maxScaled("y", values(cpu.y), r.y, r.mag, LINEAR_TOL.ref64)],
          compare: (got, cpu) => [maxScaled("y", values(got.y), values(cpu.y), r.mag, LINEAR_TOL.backend)],
        };
      },
    })
  );

interface RopeCfg {
  readonly H: number;
  readonly KH: number;
  readonly D: number;
  readonly seq: number;
  readonly cap: number;
  readonly pos: number;
}
const ROPE_GRID: readonly RopeCfg[] = [
  { H: SMOL.H, KH: SMOL.KH, D: SMOL.D, seq: 1, cap: 17, pos: 0 },
  { H: SMOL.H, KH: SMOL.KH, D: SMOL.D, seq: 7, cap: 33, pos: 0 },
  { H: SMOL.H, KH: SMOL.KH, D: SMOL.D, seq: 7, cap: 33, pos: 5 },
  { H: SMOL.H, KH: SMOL.KH, D: SMOL.D, seq: 1, cap: 33, pos: 32 },
  { H: SMOL.H, KH: SMOL.KH, D: SMOL.D, seq: 33, cap: 101, pos: 60 },
  { H: 4, KH: 1, D: 128, seq: 7, cap: 17, pos: 10 },
];

/** RoPE tables `cos`, `sin [positions, D/2]` with θ = 100000 (SmolLM2's `rope_theta`), rounded to f32. */
const ropeTables = (positions: number, D: number) => {
  const half = D / 2;
  const cos = new Float32Array(positions * half), sin = new Float32Array(positions * half);
  for (let t = 0; t < positions; t++) {
    for (let j = 0; j < half; j++) {
      const a = t * 100000 ** (-(2 * j) / D);
      cos[t * half + j] = Math.cos(a);
      sin[t * half + j] = Math.sin(a);
    }
  }
  return { cos, sin };
};

/**
 * RoPE thresholds (max-scaled: |error| / (|x·cos| + |rot(x)·sin|)): ref64 2⁻²⁴ ≈ 6e-8 (products of f32 exact
 * in float64, one f32 rounding); backend vs CPU 2.4e-7 (f32: two products and a sum, or an fma, ≤ 3 ulp of the
 * magnitude, plus the CPU's own rounding). V rows and every cache row outside [pos, pos + seq) exact.
 */
const ROPE_TOL = { ref64: 6e-8, backend: 2.4e-7 } as const;

const ropeCases: CaseGenerator = (op) =>
  ROPE_GRID.map((c, n) => {
    const { H, KH, D, seq, cap, pos } = c;
    const params = { heads: H, kvHeads: KH, headDim: D };
    const W = (H + 2 * KH) * D, half = D / 2;
    return modelCase(op, {
      shape: `H${H}/${KH} D${D} S${seq} cap${cap} pos${pos}`,
      params,
      scalars: { pos },
      shapes: {
        qkv: [seq, W],
        cos: [cap, half],
        sin: [cap, half],
        kCache: [KH, cap, D],
        vCache: [KH, cap, D],
      },
      build: () => {
        const qkv = normals(seq * W, 151 + n);
        const { cos, sin } = ropeTables(cap, D);
        const kCache = normals(KH * cap * D, 153 + n, 100), vCache = normals(KH * cap * D, 155 + n, 100);
        // Expected (float64): q [H, seq, D]; K (rotated) and V rows written at cache rows pos … pos + seq − 1.
        const q64 = new Float64Array(H * seq * D), qMag = new Float64Array(H * seq * D);
        const written: number[] = [], kept: number[] = [];
        const k64: number[] = [], kMag: number[] = [], v32: number[] = [];
        for (let h = 0; h < KH; h++) {
          for (let j = 0; j < cap; j++) {
            for (let x = 0; x < D; x++) {
              (j >= pos && j < pos + seq ? written : kept).push((h * cap + j) * D + x);
            }
          }
        }
        const rot = (t: number, slot: number) =>
          rotateHalf64(
            qkv.subarray(t * W + slot * D, t * W + (slot + 1) * D),
            cos.subarray((pos + t) * half, (pos + t + 1) * half),
            sin.subarray((pos + t) * half, (pos + t + 1) * half),
          );
        for (let h = 0; h < H; h++) {
          for (let t = 0; t < seq; t++) {
            const r = rot(t, h);
            q64.set(r.y, (h * seq + t) * D);
            qMag.set(r.mag, (h * seq + t) * D);
          }
        }
        for (let h = 0; h < KH; h++) {
          for (let t = 0; t < seq; t++) {
            const r = rot(t, H + h);
            k64.push(...r.y);
            kMag.push(...r.mag);
            v32.push(...qkv.subarray(t * W + (H + KH + h) * D, t * W + (H + KH + h + 1) * D));
          }
        }
        const keptK = pick(kCache, kept), keptV = pick(vCache, kept);
        const checks = (got: Outputs, q: ArrayLike<number>, k: ArrayLike<number>, tol: number) => [
          maxScaled("q", values(got.q), q, qMag, tol),
          maxScaled("kCache rows written", pick(values(got.kCacheOut), written), k, kMag, tol),
          mismatches("vCache rows written", pick(values(got.vCacheOut), written), v32),
          mismatches("kCache rows outside [pos, pos+seq)", pick(values(got.kCacheOut), kept), keptK),
          mismatches("vCache rows outside [pos, pos+seq)", pick(values(got.vCacheOut), kept), keptV),
        ];
        return {
          data: { qkv, cos, sin, kCache, vCache },
          ref64: (cpu) => checks(cpu, q64, k64, ROPE_TOL.ref64),
          compare: (got, cpu) =>
            checks(got, values(cpu.q), pick(values(cpu.kCacheOut), written), ROPE_TOL.backend),
        };
      },
    });
  });

const KVREAD_GRID: readonly (readonly [number, number, number, number])[] = [
  [SMOL.KH, 33, SMOL.D, 1],
  [SMOL.KH, 33, SMOL.D, 7],
  [SMOL.KH, 33, SMOL.D, 33],
  [1, 100, 128, 17],
];

const kvReadCases: CaseGenerator = (op) =>
  KVREAD_GRID.map(([KH, cap, D, rows], n) =>
    modelCase(op, {
      shape: `KH${KH} cap${cap} D${D} rows${rows}`,
      params: { rows },
      shapes: { kCache: [KH, cap, D], vCache: [KH, cap, D] },
      build: () => {
        const kCache = normals(KH * cap * D, 171 + n), vCache = normals(KH * cap * D, 173 + n);
        const idx: number[] = [];
        for (let h = 0; h < KH; h++) {
          for (let j = 0; j < rows; j++) for (let x = 0; x < D; x++) idx.push((h * cap + j) * D + x);
        }
        const k = pick(kCache, idx), v = pick(vCache, idx);
        return {
          data: { kCache, vCache },
          ref64: (cpu) => [mismatches("k", values(cpu.k), k), mismatches("v", values(cpu.v), v)],
          compare: (got, cpu) => [
            mismatches("k", values(got.k), values(cpu.k)),
            mismatches("v", values(got.v), values(cpu.v)),
          ],
        };
      },
    })
  );

const headsToRowsCases: CaseGenerator = (op) =>
  ([[SMOL.H, 1, SMOL.D], [SMOL.H, 7, SMOL.D], [SMOL.H, 33, SMOL.D], [3, 17, 128]] as const).map((
    [H, S, D],
    n,
  ) =>
    modelCase(op, {
      shape: `H${H} S${S} D${D}`,
      shapes: { a: [H, S, D] },
      build: () => {
        const a = normals(H * S * D, 181 + n);
        const want = new Float32Array(H * S * D);
        for (let t = 0; t < S; t++) {
          for (let h = 0; h < H; h++) {
            for (let x = 0; x < D; x++) want[t * H * D + h * D + x] = a[(h * S + t) * D + x];
          }
        }
        return {
          data: { a },
          ref64: (cpu) => [mismatches("o", values(cpu.o), want)],
          compare: (got, cpu) => [mismatches("o", values(got.o), values(cpu.o))],
        };
      },
    })
  );

/**
 * SwiGLU thresholds (max-rel per element). ref64: float64 then one f32 rounding, 2⁻²⁴ ≈ 6e-8. Backend vs CPU:
 * f32 `exp` (WGSL: 3 + 2·|x| ulp) and three f32 operations: 2e-6 on gates of |a| ≲ 12.
 */
const SWIGLU_TOL = { ref64: 6e-8, backend: 2e-6 } as const;

const swigluCases: CaseGenerator = (op) =>
  ([[1, SMOL.F], [7, SMOL.F], [33, SMOL.F], [5, 777]] as const).map(([S, F], n) =>
    modelCase(op, {
      shape: `S${S} F${F}`,
      shapes: { gu: [S, 2 * F] },
      build: () => {
        const gu = normals(S * 2 * F, 191 + n, 3);
        const g = swiglu64(gu, S, F);
        return {
          data: { gu },
          ref64: (cpu) => [maxRel("g", values(cpu.g), g, SWIGLU_TOL.ref64)],
          compare: (got, cpu) => [maxRel("g", values(got.g), values(cpu.g), SWIGLU_TOL.backend)],
        };
      },
    })
  );

/** `model.sqDiff`: float64 sums Σ(a − b)², Σ b² (stored as f32); the GPU sums in f32 (256 partials, a tree). */
const SQDIFF_TOL = { ref64: 6e-8, backend: 2e-5 } as const; // ref64: one f32 rounding of each sum
const sqDiffCases: CaseGenerator = (op) =>
  ([[1, 64], [9, 37, 64], [3, 257, 64], [4, 100, 128]] as const).map((shape, n) =>
    modelCase(op, {
      shape: `[${shape.join(",")}]`,
      shapes: { a: [...shape], b: [...shape] },
      build: () => {
        const len = shape.reduce((x: number, y: number) => x * y, 1);
        const b = normals(len, 301 + n, 1);
        const a = Float32Array.from(normals(len, 311 + n, 0.01), (x, k) => b[k] + x);
        let d = 0, q = 0;
        for (let k = 0; k < len; k++) {
          d += (a[k] - b[k]) ** 2;
          q += b[k] ** 2;
        }
        const want = Float64Array.of(d, q);
        return {
          data: { a, b },
          ref64: (cpu) => [maxRel("sums", values(cpu.sums), want, SQDIFF_TOL.ref64)],
          compare: (got, cpu) => [maxRel("sums", values(got.sums), values(cpu.sums), SQDIFF_TOL.backend)],
        };
      },
    })
  );

/** `model.lseRecall`: float64 Σ exp(lse − lseRef) and its min (stored as f32); GPU: f32 exp and sums. */
const RECALL_TOL = { ref64: 6e-8, backend: 2e-5 } as const;
const lseRecallCases: CaseGenerator = (op) =>
  ([[1, 1], [9, 37], [3, 257], [32, 100]] as const).map((shape, n) =>
    modelCase(op, {
      shape: `[${shape.join(",")}]`,
      shapes: { lse: [...shape], lseRef: [...shape] },
      build: () => {
        const len = shape[0] * shape[1];
        const lseRef = Float32Array.from(normals(len, 401 + n, 3), (x) => x + 5);
        // a sparse LSE is at most the dense one: subtract a non-negative gap (some rows exactly 0)
        const gap = normals(len, 411 + n, 0.05);
        const lse = Float32Array.from(lseRef, (x, k) => (k % 5 === 0 ? x : x - Math.abs(gap[k])));
        let sum = 0, min = Infinity;
        for (let k = 0; k < len; k++) {
          const r = Math.exp(lse[k] - lseRef[k]);
          sum += r;
          min = Math.min(min, r);
        }
        const want = Float64Array.of(sum, min);
        return {
          data: { lse, lseRef },
          ref64: (cpu) => [maxRel("stats", values(cpu.stats), want, RECALL_TOL.ref64)],
          compare: (got, cpu) => [maxRel("stats", values(got.stats), values(cpu.stats), RECALL_TOL.backend)],
        };
      },
    })
  );

interface ArgmaxCfg {
  readonly rows: number;
  readonly V: number;
  /** Indices of the last row set to the row's maximum (a tie when more than one: the first wins). */
  readonly top: readonly number[];
}
const ARGMAX_GRID: readonly ArgmaxCfg[] = [
  { rows: 1, V: SMOL.V, top: [17, 900] },
  { rows: 7, V: SMOL.V, top: [SMOL.V - 1] },
  { rows: 33, V: SMOL.V, top: [0, SMOL.V - 1] },
  { rows: 1, V: 4099, top: [4000, 4098] },
  { rows: 7, V: SMOL.V, top: [513, 514, 2] },
  { rows: 33, V: 49152, top: [256, 255 + 256 * 3, 49151] },
];

const argmaxCases: CaseGenerator = (op) =>
  ARGMAX_GRID.map(({ rows, V, top }, n) =>
    modelCase(op, {
      shape: `rows${rows} V${V} max at ${top.join(",")}`,
      shapes: { logits: [rows, V] },
      build: () => {
        const logits = normals(rows * V, 201 + n, 4);
        const last = (rows - 1) * V;
        let m = -Infinity;
        for (let j = 0; j < V; j++) m = Math.max(m, logits[last + j]);
        for (const j of top) logits[last + j] = m + 1;
        for (let r = 0; r < rows - 1; r++) logits[r * V + (n * 37 + r) % V] = m + 10; // decoys in earlier rows
        const want = [argmaxLast64(logits, rows, V)];
        return {
          data: { logits },
          note: `id ${want[0]}`,
          ref64: (cpu) => [mismatches("id", cpu.id.data as Uint32Array, want)],
          compare: (got, cpu) => [mismatches("id", got.id.data as Uint32Array, cpu.id.data as Uint32Array)],
        };
      },
    })
  );

const SLICE_GRID: readonly (readonly [number, number, number, number])[] = [
  [33, SMOL.E, 7, 0],
  [33, SMOL.E, 7, 26],
  [33, SMOL.E, 1, 17],
  [100, 64, 33, 67],
];

const sliceRowsCases: CaseGenerator = (op) =>
  SLICE_GRID.map(([N, E, rows, start], n) =>
    modelCase(op, {
      shape: `a[${N}, ${E}] rows${rows} start${start}`,
      params: { rows },
      scalars: { start },
      shapes: { a: [N, E] },
      build: () => {
        const a = normals(N * E, 211 + n);
        const want = Float32Array.from({ length: rows * E }, (_, e) => a[start * E + e]);
        return {
          data: { a },
          ref64: (cpu) => [mismatches("o", values(cpu.o), want)],
          compare: (got, cpu) => [mismatches("o", values(got.o), values(cpu.o))],
        };
      },
    })
  );

// ---- cachegen.decode: real containers of structured KV -----------------------------------------------------

/** [layers, kvHeads, headDim, tokens, level, slice] of the cachegen.decode cases (odd tokens, slices < and = 256). */
const CACHEGEN_GRID: readonly (readonly [number, number, number, number, 1 | 2 | 3, number])[] = [
  [2, 2, 64, 300, 2, 256],
  [3, 1, 16, 17, 1, 5],
  [2, 2, 32, 257, 3, 100],
  [4, 1, 8, 1, 1, 256],
  [3, 3, 16, 129, 3, 256],
];

/**
 * cachegen.decode: inputs are real containers (the host encoder on `structuredKv`, layer groups 1/2/1 so rows
 * differ in bins). The CPU reference (the host decoder) against the container path's `decompressKv` bit for bit
 * and against the original KV within the quantiser's bound `a / (2·MAX)`; a backend against the CPU bit for bit.
 */
const cachegenDecodeCases: CaseGenerator = () =>
  CACHEGEN_GRID.map(([L, H, d, N, level, slice], n) => {
    const dims = { layers: L, kvHeads: H, headDim: d, tokens: N }, rows = 2 * L, C = H * d;
    const params = { level, slice, keyFirstLayers: 1, keySecondLayers: 2, valueFirstLayers: 1 };
    const p = cachegen.cachegenParams(params);
    const { k, v } = cachegen.structuredKv(dims, 2601 + n);
    const c = Effect.runSync(cachegen.compressKv(k, v, dims, p));
    const inputs = cachegen.deviceInputs(c);
    const bits = (t: HostTensor) => new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 4);
    return {
      shape: `L${L} H${H} D${d} N${N} level ${level} slice ${slice}`,
      dtype: "f32" as const,
      qk: false,
      params,
      descs: Object.fromEntries(Object.entries(inputs).map(([port, t]) => [port, t.desc])),
      build: () => {
        const { k: hk, v: hv } = Effect.runSync(cachegen.decompressKv(c));
        const want = new Float32Array(rows * H * N * d), x = new Float32Array(rows * H * N * d);
        [...hk, ...hv].forEach((y, r) => want.set(y, r * H * N * d));
        [...k, ...v].forEach((y, r) => x.set(y, r * H * N * d));
        const bound = cachegen.quantErrorBound(c, 1e-6);
        return {
          inputs,
          note: `${C} channels, ${c.streams.length} stream bytes`,
          ref64: (cpu) => [
            mismatches("kv bits vs decompressKv", bits(cpu.kv), new Uint32Array(want.buffer)),
            maxScaled("kv vs the original within a/(2·MAX)", values(cpu.kv), x, bound, 1),
            mismatches("invalid", values(cpu.invalid), new Uint32Array(rows)),
          ],
          compare: (got, cpu) => [
            mismatches("kv bits", bits(got.kv), bits(cpu.kv)),
            mismatches("invalid", values(got.invalid), values(cpu.invalid)),
          ],
        };
      },
    };
  });

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
  "dense.cacheAttn": cacheAttnCases,
  "distattn.partialAttn": partialAttnCases,
  "distattn.merge": mergeCases,
  "longspec.treeAttn": treeAttnCases,
  "dense.indexAttn": indexAttnCases,
  "dense.indexAttn.f16": indexAttnCases,
  "hip.mask": hipMaskCases,
  "hip.cacheMask": hipCacheMaskCases,
  "tokenselect.select": tsSelectCases,
  "tokenselect.selectCached": tsSelectCachedCases,
  "tokenselect.compact": tsCompactCases,
  "traceback.weights": tracebackCases,
  "squeezed.lookup": squeezedLookupCases,
  "squeezed.select": squeezedSelectCases,
  "squeezed.attend": squeezedAttendCases,
  "squeezed.lookupHier": squeezedLookupHierCases,
  "squeezed.normalize": squeezedNormalizeCases,
  "squeezed.seed": squeezedSeedCases,
  "squeezed.lloyd": squeezedLloydCases,
  "squeezed.assign": squeezedAssignCases,
  "dense.indexCacheAttn": indexCacheAttnCases,
  "hip.mask.f16": hipMaskCases,
  "model.embed": embedCases,
  "model.rmsNorm": rmsNormCases,
  "model.addRmsNorm": addRmsNormCases,
  "model.linear": linearCases,
  "model.rope": ropeCases,
  "model.kvRead": kvReadCases,
  "model.headsToRows": headsToRowsCases,
  "model.swiglu": swigluCases,
  "model.sqDiff": sqDiffCases,
  "model.lseRecall": lseRecallCases,
  "model.argmax": argmaxCases,
  "model.sliceRows": sliceRowsCases,
  "cachegen.decode": cachegenDecodeCases,
  "cachegen.encode": cachegenEncodeCases,
};
