/**
 * Error measures of the conformance test. A `Metric` is one measured error and its threshold; a case passes
 * when every metric has `err ≤ tol` (NaN fails).
 * @module
 */
import type { HostTensor } from "@longctx/graph";
import { halfToF32 } from "../../ops/dense/common.ts";
import { maxAbsDiff, relErr } from "../ops/ref64.ts";
import { nibble, TIE_WINDOW } from "./ref.ts";

/** One measured error against its threshold. */
export interface Metric {
  /** What was measured, e.g. `o rel-L2`, `indices mismatches`. */
  readonly name: string;
  readonly err: number;
  readonly tol: number;
}

/** Whether a metric passes. */
export const passes = (m: Metric): boolean => m.err <= m.tol;

/** err / tol, for picking the worst metric (exact metrics: 0 when equal, Infinity otherwise). */
export const ratio = (m: Metric): number =>
  Number.isNaN(m.err) ? Infinity : m.tol === 0 ? (m.err === 0 ? 0 : Infinity) : m.err / m.tol;

/** An f32 or f16 host tensor's values as numbers. */
export const values = (t: HostTensor): ArrayLike<number> =>
  t.desc.dtype === "f16" ? halfToF32(t.data as Uint16Array) : t.data as ArrayLike<number>;

/** Relative L2 error ‖got − ref‖ / ‖ref‖ (reuses tests/ops/ref64.ts). */
export const relL2 = (name: string, got: ArrayLike<number>, ref: ArrayLike<number>, tol: number): Metric => ({
  name: `${name} rel-L2`,
  err: got.length === ref.length ? relErr(got, ref) : Infinity,
  tol,
});

/** Largest absolute difference where both are finite; Infinity when finiteness differs (ref64's maxAbsDiff). */
export const maxAbs = (
  name: string,
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: number,
): Metric => ({
  name: `${name} max-abs`,
  err: got.length === ref.length ? maxAbsDiff(got, ref) : Infinity,
  tol,
});

/** Largest |got − ref| / max(|ref|, floor): relative error per element. */
export const maxRel = (
  name: string,
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  tol: number,
  floor = 1e-30,
): Metric => {
  let e = got.length === ref.length ? 0 : Infinity;
  for (let i = 0; i < ref.length && e !== Infinity; i++) {
    const d = Math.abs(got[i] - ref[i]);
    e = Math.max(e, d === 0 ? 0 : d / Math.max(Math.abs(ref[i]), floor));
  }
  return { name: `${name} max-rel`, err: e, tol };
};

/** Largest |got − ref| / mag: error against each element's natural magnitude. */
export const maxScaled = (
  name: string,
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  mag: ArrayLike<number>,
  tol: number,
): Metric => {
  let e = got.length === ref.length ? 0 : Infinity;
  for (let i = 0; i < ref.length && e !== Infinity; i++) {
    const d = Math.abs(got[i] - ref[i]);
    e = Math.max(e, d === 0 ? 0 : d / Math.max(mag[i], 1e-30));
  }
  return { name: `${name} max-scaled`, err: e, tol };
};

/** Number of positions where integer (or bit-exact) outputs differ; threshold 0 unless stated. */
export const mismatches = (name: string, got: ArrayLike<number>, ref: ArrayLike<number>, tol = 0): Metric => {
  let n = Math.abs(got.length - ref.length);
  for (let i = 0; i < Math.min(got.length, ref.length); i++) if (!Object.is(got[i], ref[i])) n++;
  return { name: `${name} mismatches`, err: n, tol };
};

/**
 * Packed int4 codes against expected codes: mismatches away from a rounding tie must be 0; mismatches at a tie
 * (|code difference| = 1 where `tie` marks the element) are allowed up to `tieFraction` of the elements, as
 * tests/ops/attn_gpu_test.ts documents for the quantize kernel ("rounding ties only", ≤ 1e-3).
 */
export const codeMetrics = (
  name: string,
  got: ArrayLike<number>,
  want: ArrayLike<number> | ((e: number) => number),
  tie: (e: number) => boolean,
  n: number,
  tieFraction: number,
): Metric[] => {
  let hard = 0, ties = 0;
  for (let e = 0; e < n; e++) {
    const w = typeof want === "function" ? want(e) : want[e];
    const g = nibble(got, e);
    if (g === w) continue;
    if (Math.abs(g - w) === 1 && tie(e)) ties++;
    else hard++;
  }
  return [
    { name: `${name} code mismatches (not at a tie)`, err: hard, tol: 0 },
    {
      name: `${name} code mismatches at ties (fraction, window ${TIE_WINDOW})`,
      err: ties / n,
      tol: tieFraction,
    },
  ];
};
