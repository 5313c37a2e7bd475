/**
 * Row reductions and row softmax over a row-major `[rows, cols]` matrix, one workgroup per row: each of
 * the 256 invocations folds a strided slice of the row, then a shared-memory tree (unrolled, log2(256)
 * steps) combines the partials. Math in f32 for both storage types.
 *
 * Softmax is the numerically stable form (subtract the row max before `exp`), as in every attention
 * kernel (e.g. FlashAttention, Dao et al. 2022, §2.1).
 * @module
 */
import type { Kernel } from "@longctx/graph";
import {
  grid1d,
  type KDType,
  type KernelPlan,
  prelude,
  reader,
  u32Uniform,
  uniformWord,
  wgslType,
  writer,
} from "./types.ts";

/** Row reduction operations. */
export type ReduceOp = "sum" | "max";

/** Sizes of a row-wise launch: a `[rows, cols]` matrix. */
export interface RowSizes {
  /** Rows of the matrix (one reduction each). */
  readonly rows: number;
  /** Columns of the matrix (elements reduced per row). */
  readonly cols: number;
}

const WG = 256;
// The f32 maximum as an exact hex float: the decimal "3.40282347e+38" rounds above it, which Tint (Dawn)
// rejects as not representable in f32 (naga accepts it).
const NEG_MAX = "-0x1.fffffep+127f";

/** WGSL: tree-reduce `sh[0..WG)` into `sh[0]` with `op` (every invocation must call it). */
const treeReduce = (combine: (a: string, b: string) => string): string => {
  const lines: string[] = [];
  for (let s = WG / 2; s >= 1; s /= 2) {
    lines.push(`  if (l < ${s}u) { sh[l] = ${combine("sh[l]", `sh[l + ${s}u]`)}; }`);
    lines.push("  workgroupBarrier();");
  }
  return lines.join("\n");
};

const header = (dtype: KDType, outType: string): string =>
  `${prelude(dtype)}
struct Params { rows: u32, cols: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<storage, read> X: array<${wgslType(dtype)}>;
@group(0) @binding(1) var<storage, read_write> O: array<${outType}>;
@group(0) @binding(2) var<uniform> P: Params;
var<workgroup> sh: array<f32, ${WG}>;
`;

const launch = (kernel: Kernel): KernelPlan<RowSizes> => ({
  kernel,
  uniform: ({ rows, cols }) => u32Uniform(rows, cols),
  workgroups: ({ rows }) => grid1d(rows),
});

/**
 * Row reduction: `out[r] = Σ_c x[r, c]` (`sum`) or `max_c x[r, c]` (`max`). Bindings: `x: [rows, cols]` of
 * `dtype` (read), `out: [rows] f32` (read_write), uniform `{ rows, cols }`. One 256-invocation workgroup
 * per row. `cols ≥ 1`.
 */
export const rowReduce = (op: ReduceOp, dtype: KDType): KernelPlan<RowSizes> => {
  const combine = op === "sum"
    ? (a: string, b: string) => `${a} + ${b}`
    : (a: string, b: string) => `max(${a}, ${b})`;
  const wgsl = `${header(dtype, "f32")}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= P.rows) { return; }
  let base = row * P.cols;
  var acc = ${op === "sum" ? "0.0" : NEG_MAX};
  for (var c = l; c < P.cols; c += ${WG}u) { acc = ${combine("acc", "f32(X[base + c])")}; }
  sh[l] = acc;
  workgroupBarrier();
${treeReduce(combine)}
  if (l == 0u) { O[row] = sh[0]; }
}
`;
  return launch({
    key: `reduce.${op}.${dtype}`,
    wgsl,
    entryPoint: "main",
    bindings: ["read", "read_write", "uniform"],
    enables: dtype === "f16" ? ["f16"] : [],
    cpu: (bufs) => {
      const rows = uniformWord(bufs[2], 0);
      const cols = uniformWord(bufs[2], 1);
      const x = reader(bufs[0], dtype);
      const o = new Float32Array(bufs[1]);
      for (let r = 0; r < rows; r++) {
        let acc = op === "sum" ? 0 : -Infinity;
        for (let c = 0; c < cols; c++) {
          const v = x(r * cols + c);
          acc = op === "sum" ? acc + v : Math.max(acc, v);
        }
        o[r] = acc;
      }
    },
  });
};

/**
 * Numerically stable row softmax: `out[r, c] = exp(x[r, c] − m_r) / Σ_j exp(x[r, j] − m_r)` with
 * `m_r = max_j x[r, j]`. Bindings: `x: [rows, cols]` (read), `out: [rows, cols]` (read_write), both of
 * `dtype`; uniform `{ rows, cols }`. Three passes over the row (max, sum, write) in one workgroup.
 */
export const softmax = (dtype: KDType): KernelPlan<RowSizes> => {
  const t = wgslType(dtype);
  const wgsl = `${header(dtype, t)}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) l: u32) {
  let row = wg.x + wg.y * nwg.x;
  if (row >= P.rows) { return; }
  let base = row * P.cols;
  var m = ${NEG_MAX};
  for (var c = l; c < P.cols; c += ${WG}u) { m = max(m, f32(X[base + c])); }
  sh[l] = m;
  workgroupBarrier();
${treeReduce((a, b) => `max(${a}, ${b})`)}
  let rowMax = sh[0];
  workgroupBarrier();
  var s = 0.0;
  for (var c = l; c < P.cols; c += ${WG}u) { s += exp(f32(X[base + c]) - rowMax); }
  sh[l] = s;
  workgroupBarrier();
${treeReduce((a, b) => `${a} + ${b}`)}
  let inv = 1.0 / sh[0];
  for (var c = l; c < P.cols; c += ${WG}u) { O[base + c] = ${t}(exp(f32(X[base + c]) - rowMax) * inv); }
}
`;
  return launch({
    key: `softmax.${dtype}`,
    wgsl,
    entryPoint: "main",
    bindings: ["read", "read_write", "uniform"],
    enables: dtype === "f16" ? ["f16"] : [],
    cpu: (bufs) => {
      const rows = uniformWord(bufs[2], 0);
      const cols = uniformWord(bufs[2], 1);
      const x = reader(bufs[0], dtype);
      const o = writer(bufs[1], dtype);
      for (let r = 0; r < rows; r++) {
        let m = -Infinity;
        for (let c = 0; c < cols; c++) m = Math.max(m, x(r * cols + c));
        let s = 0;
        for (let c = 0; c < cols; c++) s += Math.exp(x(r * cols + c) - m);
        for (let c = 0; c < cols; c++) o(r * cols + c, Math.exp(x(r * cols + c) - m) / s);
      }
    },
  });
};
