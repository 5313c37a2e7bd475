/**
 * The block kernel of the dense causal attention, shared by the calling thread and the attention workers
 * (`attn_pool.ts`, `attn_worker.ts`): one work item is one KV head `g` and one block of up to `qBlock`
 * queries. The block's rows of the `group` query heads sharing KV head `g` are stacked (`[group·bq, headDim]`),
 * then `S = scale · Q Kᵀ[0:end]` (sgemm; `end` = keys visible to the block's last query, so only the causal
 * part up to the block's diagonal is computed), row softmax numerators with the causal mask (WebAssembly SIMD
 * kernel, TypeScript fallback), `O = P V[0:end]` (sgemm), rows divided by their f64 sums.
 * References: Vaswani et al. 2017 §3.2.1 (scaled dot-product attention); Ainslie et al. 2023 (GQA).
 * @module
 */
import type { Sgemm } from "./blas.ts";
import { newSoftmaxKernel, type SoftmaxKernel } from "./attn_wasm.ts";

const LN2 = 0.6931471805599453;
const LOG2E = 1.4426950408889634;
const POW2 = (() => {
  const t = new Float64Array(512);
  for (let i = 0; i < 512; i++) t[i] = 2 ** (i - 256);
  return t;
})();

/**
 * `exp(x)` for `x` in [−170, 88] (smaller x gives ≈ 0, larger is clamped): range reduction `x = (k + f)·ln 2`,
 * `|f| ≤ 1/2`, and a degree-7 Taylor polynomial for `e^{f ln 2}` (relative error < 2e-8, below f32 rounding).
 * Faster than `Math.exp` in V8 and JavaScriptCore (the TypeScript softmax fallback and the SwiGLU use it).
 */
export const fastExp = (x: number): number => {
  let t = x * LOG2E;
  if (t < -250) t = -250;
  else if (t > 127) t = 127;
  const k = ((t + 256.5) | 0) - 256; // round(t)
  const g = (t - k) * LN2;
  return (1 + g * (1 + g * (0.5 + g * (1 / 6 + g * (1 / 24 + g * (1 / 120 + g * (1 / 720 + g / 5040))))))) *
    POW2[k + 256];
};

/** Row softmax numerators in TypeScript (the fallback of {@link SoftmaxKernel}; same f32 values). */
const softmaxRowsTs = (
  s: Float32Array,
  inv: Float64Array,
  rows: number,
  end: number,
  first: number,
  bq: number,
) => {
  for (let r = 0; r < rows; r++) {
    const len = first + (r % bq) + 1;
    const base = r * end;
    const stop = base + len;
    let mx = -Infinity;
    for (let j = base; j < stop; j++) if (s[j] > mx) mx = s[j];
    let sum = 0;
    for (let j = base; j < stop; j++) {
      const e = fastExp(s[j] - mx);
      s[j] = e;
      sum += e;
    }
    inv[r] = 1 / sum;
    if (len < end) s.fill(0, stop, base + end);
  }
};

/** Shapes of one dense attention call (as `AttentionContext` in llama.ts) plus the query block size. */
export interface BlockJob {
  readonly seq: number;
  readonly offset: number;
  readonly kvLen: number;
  readonly kvStride: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly scale: number;
  /** Queries per work item (128 by default). */
  readonly qBlock: number;
}

/** Number of work items of a job: `kvHeads · ⌈seq / qBlock⌉`. */
export const blockCount = (j: BlockJob): number => j.kvHeads * Math.ceil(j.seq / j.qBlock);

let kernel: SoftmaxKernel | null | undefined;
let useWasm = true;
/** This thread's WebAssembly softmax kernel (created once), or undefined when disabled/unavailable. */
export const softmaxKernel = (): SoftmaxKernel | undefined => {
  if (kernel === undefined) kernel = useWasm ? newSoftmaxKernel() ?? null : null;
  return kernel ?? undefined;
};
/** Use the WebAssembly SIMD softmax (default) or the TypeScript loop, on this thread. */
export const setWasmSoftmax = (on: boolean): void => {
  useWasm = on;
  kernel = undefined;
};

/**
 * Run work items `next()` (until it returns < 0) of `job`: item `t` is KV head `t % kvHeads` and query block
 * `nb − 1 − ⌊t / kvHeads⌋` (largest blocks first, for balance when threads share the items). Writes the
 * items' rows of `o [heads, seq, headDim]` from `q [heads, seq, headDim]`, `k`/`v [kvHeads, kvStride,
 * headDim]` (f32). Scratch: `[group·qBlock, kvLen]` f32 in the softmax kernel's memory.
 */
export const runBlocks = (
  job: BlockJob,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  o: Float32Array,
  sgemm: Sgemm,
  next: () => number,
): void => {
  const { seq, offset, kvStride, heads, kvHeads, headDim: d, scale, qBlock } = job;
  const group = heads / kvHeads;
  const nb = Math.ceil(seq / qBlock);
  const bqMax = Math.min(qBlock, seq);
  const kern = softmaxKernel();
  const s = kern ? kern.scratch(group * bqMax * job.kvLen) : new Float32Array(group * bqMax * job.kvLen);
  const qp = new Float32Array(group * bqMax * d);
  const op = new Float32Array(group * bqMax * d);
  const inv = new Float64Array(group * bqMax);
  for (let t = next(); t >= 0; t = next()) {
    const g = t % kvHeads;
    const i0 = (nb - 1 - Math.floor(t / kvHeads)) * qBlock;
    const kh = k.subarray(g * kvStride * d);
    const vh = v.subarray(g * kvStride * d);
    const bq = Math.min(qBlock, seq - i0);
    const rows = group * bq;
    const end = offset + i0 + bq; // keys needed by the block's last query
    for (let j = 0; j < group; j++) {
      const src = ((g * group + j) * seq + i0) * d;
      qp.set(q.subarray(src, src + bq * d), j * bq * d);
    }
    sgemm.gemm(false, true, rows, end, d, scale, qp, d, kh, d, 0, s, end);
    if (kern) {
      for (let r = 0; r < rows; r++) inv[r] = 1 / kern.row(r * end, offset + i0 + (r % bq) + 1, end);
    } else {
      softmaxRowsTs(s, inv, rows, end, offset + i0, bq);
    }
    sgemm.gemm(false, false, rows, d, end, 1, s, end, vh, d, 0, op, d);
    for (let r = 0; r < rows; r++) {
      const j = Math.floor(r / bq);
      const dst = ((g * group + j) * seq + i0 + (r % bq)) * d;
      const f = inv[r];
      for (let c = 0; c < d; c++) o[dst + c] = op[r * d + c] * f;
    }
  }
};
