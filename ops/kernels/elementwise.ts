/**
 * Elementwise kernels (`add`, `mul`, `silu`) over f32 or f16 vectors, and a vec4 copy kernel used to
 * measure memory bandwidth.
 *
 * SiLU (Elfwing et al., "Sigmoid-Weighted Linear Units", 2017): `silu(x) = x / (1 + exp(-x))`, computed in
 * f32 for both storage types.
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

/** Elementwise operations: binary `add`/`mul` (`out = a ∘ b`), unary `silu` (`out = silu(a)`). */
export type ElementwiseOp = "add" | "mul" | "silu";

/** Sizes of an elementwise launch: `n` elements (all operands `[n]`). */
export interface ElementwiseSizes {
  /** Elements of each operand. */
  readonly n: number;
}

const WG = 256;

const arity = (op: ElementwiseOp): 1 | 2 => (op === "silu" ? 1 : 2);

const exprOf = (op: ElementwiseOp): string => {
  switch (op) {
    case "add":
      return "a + b";
    case "mul":
      return "a * b";
    case "silu":
      return "a / (1.0 + exp(-a))";
  }
};

const hostOp = (op: ElementwiseOp): (a: number, b: number) => number => {
  switch (op) {
    case "add":
      return (a, b) => a + b;
    case "mul":
      return (a, b) => a * b;
    case "silu":
      return (a) => a / (1 + Math.exp(-a));
  }
};

/**
 * Elementwise kernel over `n` elements of `dtype`. Bindings: `a: [n]` (read), `b: [n]` (read, binary ops
 * only), `out: [n]` (read_write), uniform `{ n }`. Math is done in f32 and rounded to the storage type.
 * Workgroups of 256 invocations, one element each; the grid spans x and y when `n / 256 > 65535`.
 */
export const elementwise = (op: ElementwiseOp, dtype: KDType): KernelPlan<ElementwiseSizes> => {
  const t = wgslType(dtype);
  const two = arity(op) === 2;
  const bindings = two
    ? ["read", "read", "read_write", "uniform"] as const
    : ["read", "read_write", "uniform"] as const;
  const wgsl = `${prelude(dtype)}
struct Params { n: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<storage, read> A: array<${t}>;
${two ? `@group(0) @binding(1) var<storage, read> B: array<${t}>;\n` : ""}@group(0) @binding(${
    two ? 2 : 1
  }) var<storage, read_write> O: array<${t}>;
@group(0) @binding(${two ? 3 : 2}) var<uniform> P: Params;

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * ${WG}u;
  if (i >= P.n) { return; }
  let a = f32(A[i]);
  ${two ? "let b = f32(B[i]);" : ""}
  O[i] = ${t}(${exprOf(op)});
}
`;
  const f = hostOp(op);
  const kernel: Kernel = {
    key: `ew.${op}.${dtype}`,
    wgsl,
    entryPoint: "main",
    bindings,
    enables: dtype === "f16" ? ["f16"] : [],
    cpu: (bufs) => {
      const n = uniformWord(bufs[bufs.length - 1], 0);
      const a = reader(bufs[0], dtype);
      const b = two ? reader(bufs[1], dtype) : () => 0;
      const o = writer(bufs[two ? 2 : 1], dtype);
      for (let i = 0; i < n; i++) o(i, Math.fround(f(a(i), b(i))));
    },
  };
  return {
    kernel,
    uniform: ({ n }) => u32Uniform(n),
    workgroups: ({ n }) => grid1d(Math.ceil(n / WG)),
  };
};

/** Sizes of a vec4 copy: `n4` vec4<f32> elements (16 bytes each). */
export interface CopySizes {
  /** vec4<f32> elements to copy (4 floats each). */
  readonly n4: number;
}

/**
 * Bandwidth kernel: `dst[i] = src[i]` over `n4` `vec4<f32>` (bytes moved = 32·n4: 16 read + 16 written).
 * Bindings: `src: [n4·4] f32` (read), `dst: [n4·4] f32` (read_write), uniform `{ n4 }`. Each invocation
 * copies `perThread` vec4s strided by the grid (default 4) so large buffers fit the workgroup-count limit.
 */
export const copyVec4 = (perThread = 4): KernelPlan<CopySizes> => {
  const wgsl = `struct Params { n4: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<storage, read> S: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> D: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> P: Params;

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let stride = nwg.x * nwg.y * ${WG}u;
  let base = gid.x + gid.y * nwg.x * ${WG}u;
${
    Array.from({ length: perThread }, (_, j) =>
      `  if (base + ${j}u * stride < P.n4) { D[base + ${j}u * stride] = S[base + ${j}u * stride]; }`)
      .join("\n")
  }
}
`;
  const kernel: Kernel = {
    key: `copy.vec4.x${perThread}`,
    wgsl,
    entryPoint: "main",
    bindings: ["read", "read_write", "uniform"],
    cpu: (bufs) => {
      const n4 = uniformWord(bufs[2], 0);
      new Float32Array(bufs[1], 0, n4 * 4).set(new Float32Array(bufs[0], 0, n4 * 4));
    },
  };
  return {
    kernel,
    uniform: ({ n4 }) => u32Uniform(n4),
    workgroups: ({ n4 }) => grid1d(Math.ceil(n4 / (WG * perThread))),
  };
};
