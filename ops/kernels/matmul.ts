/**
 * Tiled matmul generator: `C[M, N] = A[M, K] · B[K, N]` (or `A · Bᵀ` with `B` stored `[N, K]`), row-major,
 * f32 or f16 storage, f32 or f16 accumulation.
 *
 * Shape of the generated kernel (the classic shared-memory + register tiling, as in Volkov & Demmel 2008
 * and every GEMM since): a workgroup of `(BN/TN) × (BM/TM)` invocations computes a `BM × BN` tile of C,
 * stepping over K by `BK`; each step stages an `A` tile (transposed, `[BK][BM]`) and a `B` tile (`[BK][BN]`)
 * in workgroup memory; each invocation then keeps a `TM × TN` register tile. The register tile is
 * **fully unrolled** in the generated WGSL: one `vec4` variable per 4 columns of each row (`acc_i_c`), and
 * the K step is unrolled too — no function-scope arrays indexed at run time (those spill to memory: a
 * 128×128-tile f32 kernel ran at 1.9 TFLOP/s with loop-indexed registers vs 39.5 TFLOP/s unrolled on an
 * H200). An invocation's column groups are interleaved (`c·(BN/TN) + tx`) so neighbouring invocations read
 * neighbouring `vec4`s of the B tile.
 *
 * Software pipelining (`pipeline: true`): each invocation prefetches its share of the next K step's A and B
 * tiles from global memory into registers (`pf_*`, one unrolled variable per load slot) before computing the
 * current step, then stores them into the other half of double-buffered workgroup memory; one barrier per K
 * step instead of two, and the global-load latency overlaps the FMAs (the classic GEMM prefetch, e.g. CUTLASS's
 * two-stage mainloop). Costs twice the workgroup memory (`matmulWorkgroupBytes`) and the prefetch registers.
 *
 * Boundary handling: the general variant checks every global load (zero padding) and store, so any
 * `M, N, K ≥ 1` works. The `aligned` variant assumes `M % BM == 0`, `N % BN == 0`, `K % BK == 0` and uses
 * `vec4` global loads and stores with no checks; use `matmulFits` to pick it.
 * @module
 */
import { Effect } from "effect";
import { type Kernel, ShapeError } from "@longctx/graph";
import {
  type KDType,
  type KernelPlan,
  MAX_GROUPS,
  prelude,
  reader,
  u32Uniform,
  uniformWord,
  writer,
} from "./types.ts";

/** Matmul sizes (elements). */
export interface MatmulSizes {
  /** Rows of A and C. */
  readonly M: number;
  /** Columns of B and C. */
  readonly N: number;
  /** Columns of A, rows of B (the inner size). */
  readonly K: number;
}

/** Options of the matmul generator; all tile sizes in elements. */
export interface MatmulOptions {
  /** Storage type of A, B and C. */
  readonly dtype: KDType;
  /** Accumulation (and shared-memory) type; default `f32`. `f16` needs `dtype: "f16"`. */
  readonly accum?: KDType;
  /** B stored transposed, `[N, K]` (as attention's `Q·Kᵀ`); default false. */
  readonly transB?: boolean;
  /** Workgroup tile rows (BM), default 64. */
  readonly tileM?: number;
  /** Workgroup tile columns (BN), default 64. */
  readonly tileN?: number;
  /** K step staged in workgroup memory (BK), default 8. */
  readonly tileK?: number;
  /** Register tile rows per invocation (TM ∈ {4, 8, 12, 16}), default 4. */
  readonly threadM?: number;
  /** Register tile columns per invocation (TN ∈ {4, 8, 12, 16}), default 4. */
  readonly threadN?: number;
  /** Assume tile-aligned sizes (see module doc); default false. */
  readonly aligned?: boolean;
  /**
   * Software pipelining; default false. Registers prefetch the next K step's tiles from global memory while
   * the current step computes, and workgroup memory is double-buffered (twice the bytes), so each K step
   * has one barrier instead of two and the global-load latency overlaps the FMAs.
   */
  readonly pipeline?: boolean;
}

/** The resolved options (every field set). */
export type MatmulConfig = Required<MatmulOptions>;

/** Fill in defaults. */
export const matmulConfig = (o: MatmulOptions): MatmulConfig => ({
  dtype: o.dtype,
  accum: o.accum ?? "f32",
  transB: o.transB ?? false,
  tileM: o.tileM ?? 64,
  tileN: o.tileN ?? 64,
  tileK: o.tileK ?? 8,
  threadM: o.threadM ?? 4,
  threadN: o.threadN ?? 4,
  aligned: o.aligned ?? false,
  pipeline: o.pipeline ?? false,
});

/** Whether the `aligned` variant of `o` can run `sizes` (tile-aligned M, N, K). */
export const matmulFits = (o: MatmulOptions, s: MatmulSizes): boolean => {
  const c = matmulConfig(o);
  return s.M % c.tileM === 0 && s.N % c.tileN === 0 && s.K % c.tileK === 0;
};

/** Workgroup memory of a configuration (bytes): the A and B tiles, twice when pipelined. */
export const matmulWorkgroupBytes = (o: MatmulOptions): number => {
  const c = matmulConfig(o);
  return (c.tileM + c.tileN) * c.tileK * (c.accum === "f16" ? 2 : 4) * (c.pipeline ? 2 : 1);
};

/** FLOPs of one matmul (a multiply-add counts 2). */
export const matmulFlops = (s: MatmulSizes): number => 2 * s.M * s.N * s.K;

const bad = (message: string) =>
  Effect.fail(
    new ShapeError({
      message,
      hint: "tile sizes: TM, TN in {4, 8, 12, 16}; BM % TM == 0, BN % TN == 0; (BM/TM)·(BN/TN) ≤ 1024; " +
        "aligned needs BK % 4 == 0; f16 accumulation needs f16 storage",
    }),
  );

const comp = ["x", "y", "z", "w"];

/** Generate the WGSL source of a matmul configuration (exported for inspection and tests). */
export const matmulWgsl = (c: MatmulConfig): string => {
  const { tileM: BM, tileN: BN, tileK: BK, threadM: TM, threadN: TN, aligned, transB, pipeline } = c;
  const ST = c.dtype;
  const CT = c.accum;
  const TX = BN / TN;
  const TY = BM / TM;
  const T = TX * TY;
  const BM4 = BM / 4;
  const BN4 = BN / 4;
  const nbuf = pipeline ? 2 : 1;
  const arr = aligned ? `vec4<${ST}>` : ST;
  const L: string[] = [];
  L.push(prelude(ST, CT));
  L.push("struct Params { M: u32, N: u32, K: u32, _p: u32 }");
  L.push(`@group(0) @binding(0) var<storage, read> A: array<${arr}>;`);
  L.push(`@group(0) @binding(1) var<storage, read> B: array<${arr}>;`);
  L.push(`@group(0) @binding(2) var<storage, read_write> C: array<${arr}>;`);
  L.push("@group(0) @binding(3) var<uniform> P: Params;");
  L.push(`var<workgroup> As: array<vec4<${CT}>, ${nbuf * BK * BM4}>;`);
  L.push(`var<workgroup> Bs: array<vec4<${CT}>, ${nbuf * BK * BN4}>;`);
  L.push("");
  L.push(`@compute @workgroup_size(${TX}, ${TY}, 1)`);
  L.push("fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,");
  L.push("        @builtin(local_invocation_index) lid: u32) {");
  L.push("  let tx = lid3.x;");
  L.push("  let ty = lid3.y;");
  L.push(`  let row0 = wg.y * ${BM}u;`);
  L.push(`  let col0 = wg.x * ${BN}u;`);
  if (aligned) {
    L.push("  let K4 = P.K / 4u;");
    L.push("  let N4 = P.N / 4u;");
  }
  for (let i = 0; i < TM; i++) {
    for (let q = 0; q < TN / 4; q++) L.push(`  var acc_${i}_${q} = vec4<${CT}>();`);
  }
  /**
   * One staging slot: `pre` computes tile indices from `idx`, `load` defines `v` (the value read from global
   * memory at K offset `kb`), `put(base)` stores `v` into workgroup memory at tile buffer offset `base`.
   */
  interface Slot {
    readonly total: number;
    readonly l: number;
    readonly type: string;
    readonly pre: string[];
    readonly load: string[];
    readonly put: (aBase: string, bBase: string) => string[];
  }
  const slots: Slot[] = [];
  const addSlots = (
    total: number,
    type: string,
    body: { pre: string[]; load: string[]; put: (aBase: string, bBase: string) => string[] },
  ) => {
    for (let l = 0; l < Math.ceil(total / T); l++) slots.push({ total, l, type, ...body });
  };
  /** Store a K-contiguous vec4 `v` of row/col `r` (within a tile of width W4 vec4s) transposed. */
  const scatter = (tile: string, base: string, W4: number, r: string, q: string, v: string) =>
    comp.map((e, j) => `${tile}[${base}(${q} * 4u + ${j}u) * ${W4}u + ${r} / 4u][${r} % 4u] = ${v}.${e};`);
  const V4 = `vec4<${CT}>`;
  if (aligned) {
    addSlots(BM * BK / 4, V4, {
      pre: [`let r = idx / ${BK / 4}u;`, `let q = idx % ${BK / 4}u;`],
      load: [`let v = ${V4}(A[(row0 + r) * K4 + kb / 4u + q]);`],
      put: (a) => scatter("As", a, BM4, "r", "q", "v"),
    });
    if (transB) {
      addSlots(BN * BK / 4, V4, {
        pre: [`let n = idx / ${BK / 4}u;`, `let q = idx % ${BK / 4}u;`],
        load: [`let v = ${V4}(B[(col0 + n) * K4 + kb / 4u + q]);`],
        put: (_a, b) => scatter("Bs", b, BN4, "n", "q", "v"),
      });
    } else {
      addSlots(BK * BN / 4, V4, {
        pre: [`let kk = idx / ${BN4}u;`, `let q = idx % ${BN4}u;`],
        load: [`let v = ${V4}(B[(kb + kk) * N4 + col0 / 4u + q]);`],
        put: (_a, b) => [`Bs[${b}kk * ${BN4}u + q] = v;`],
      });
    }
  } else {
    addSlots(BM * BK, CT, {
      pre: [`let r = idx / ${BK}u;`, `let kk = idx % ${BK}u;`],
      load: [
        `let gr = row0 + r;`,
        `let gk = kb + kk;`,
        `var v = ${CT}(0);`,
        `if (gr < P.M && gk < P.K) { v = ${CT}(A[gr * P.K + gk]); }`,
      ],
      put: (a) => [`As[${a}kk * ${BM4}u + r / 4u][r % 4u] = v;`],
    });
    if (transB) {
      addSlots(BN * BK, CT, {
        pre: [`let n = idx / ${BK}u;`, `let kk = idx % ${BK}u;`],
        load: [
          `let gn = col0 + n;`,
          `let gk = kb + kk;`,
          `var v = ${CT}(0);`,
          `if (gn < P.N && gk < P.K) { v = ${CT}(B[gn * P.K + gk]); }`,
        ],
        put: (_a, b) => [`Bs[${b}kk * ${BN4}u + n / 4u][n % 4u] = v;`],
      });
    } else {
      addSlots(BK * BN, CT, {
        pre: [`let kk = idx / ${BN}u;`, `let n = idx % ${BN}u;`],
        load: [
          `let gn = col0 + n;`,
          `let gk = kb + kk;`,
          `var v = ${CT}(0);`,
          `if (gn < P.N && gk < P.K) { v = ${CT}(B[gk * P.N + gn]); }`,
        ],
        put: (_a, b) => [`Bs[${b}kk * ${BN4}u + n / 4u][n % 4u] = v;`],
      });
    }
  }
  /** Emit every slot at `indent`: `mode` "both" (load and store), "fetch" (into pf_s) or "stash" (from pf_s). */
  const stage = (indent: string, mode: "both" | "fetch" | "stash", aBase = "", bBase = "") => {
    slots.forEach((s, si) => {
      const guard = (s.l + 1) * T > s.total;
      const I = indent + (guard ? "    " : "  ");
      L.push(`${indent}{`);
      L.push(`${indent}  let idx = lid + ${s.l * T}u;`);
      if (guard) L.push(`${indent}  if (idx < ${s.total}u) {`);
      for (const x of s.pre) L.push(I + x);
      if (mode !== "stash") { for (const x of s.load) L.push(I + x); }
      if (mode === "fetch") L.push(`${I}pf_${si} = v;`);
      if (mode === "stash") L.push(`${I}let v = pf_${si};`);
      if (mode !== "fetch") { for (const x of s.put(aBase, bBase)) L.push(I + x); }
      if (guard) L.push(`${indent}  }`);
      L.push(`${indent}}`);
    });
  };
  /** The unrolled K step and register tile, reading the tiles at buffer offsets `aBase`, `bBase`. */
  const compute = (aBase: string, bBase: string) => {
    for (let kk = 0; kk < BK; kk++) {
      L.push("    {");
      for (let q = 0; q < TM / 4; q++) {
        L.push(`      let a${q} = As[${aBase}${kk * BM4}u + ty * ${TM / 4}u + ${q}u];`);
      }
      for (let q = 0; q < TN / 4; q++) L.push(`      let b${q} = Bs[${bBase}${kk * BN4 + q * TX}u + tx];`);
      for (let i = 0; i < TM; i++) {
        const a = `a${Math.floor(i / 4)}.${comp[i % 4]}`;
        for (let q = 0; q < TN / 4; q++) {
          L.push(`      acc_${i}_${q} = fma(${V4}(${a}), b${q}, acc_${i}_${q});`);
        }
      }
      L.push("    }");
    }
  };
  if (!pipeline) {
    L.push(`  for (var k0 = 0u; k0 < P.K; k0 += ${BK}u) {`);
    L.push("    let kb = k0;");
    stage("    ", "both");
    L.push("    workgroupBarrier();");
    compute("", "");
    L.push("    workgroupBarrier();");
    L.push("  }");
  } else {
    // Prologue: tile 0 into buffer 0. Loop: prefetch tile k+1 into registers, compute tile k from buffer
    // `cur`, stash the prefetched tile into buffer 1 - cur, one barrier (see MatmulOptions.pipeline).
    slots.forEach((s, si) => L.push(`  var pf_${si}: ${s.type};`));
    L.push("  {");
    L.push("    let kb = 0u;");
    stage("    ", "both");
    L.push("  }");
    L.push("  workgroupBarrier();");
    L.push("  var cur = 0u;");
    L.push(`  for (var k0 = 0u; k0 < P.K; k0 += ${BK}u) {`);
    L.push(`    let kb = k0 + ${BK}u;`);
    L.push("    let more = kb < P.K;");
    L.push("    if (more) {");
    stage("      ", "fetch");
    L.push("    }");
    L.push(`    let ar = cur * ${BK * BM4}u;`);
    L.push(`    let br = cur * ${BK * BN4}u;`);
    compute("ar + ", "br + ");
    L.push("    if (more) {");
    L.push(`      let aw = (1u - cur) * ${BK * BM4}u;`);
    L.push(`      let bw = (1u - cur) * ${BK * BN4}u;`);
    stage("      ", "stash", "aw + ", "bw + ");
    L.push("    }");
    L.push("    cur = 1u - cur;");
    L.push("    workgroupBarrier();");
    L.push("  }");
  }
  // Store.
  for (let i = 0; i < TM; i++) {
    L.push(`  {`);
    L.push(`    let r = row0 + ty * ${TM}u + ${i}u;`);
    if (!aligned) L.push("    if (r < P.M) {");
    for (let q = 0; q < TN / 4; q++) {
      L.push(`      {`);
      L.push(`        let cb = col0 + (${q * TX}u + tx) * 4u;`);
      if (aligned) {
        L.push(`        C[r * N4 + cb / 4u] = vec4<${ST}>(acc_${i}_${q});`);
      } else {
        comp.forEach((e, j) => {
          L.push(`        if (cb + ${j}u < P.N) { C[r * P.N + cb + ${j}u] = ${ST}(acc_${i}_${q}.${e}); }`);
        });
      }
      L.push(`      }`);
    }
    if (!aligned) L.push("    }");
    L.push(`  }`);
  }
  L.push("}");
  return L.join("\n") + "\n";
};

/**
 * cpu body shared by every matmul variant: inputs of `dtype`, float64 accumulation, C rounded to `out`
 * (default `dtype`).
 */
export const matmulCpu =
  (dtype: KDType, transB: boolean, out: KDType = dtype): (bufs: readonly ArrayBuffer[]) => void =>
  (bufs: readonly ArrayBuffer[]): void => {
    const M = uniformWord(bufs[3], 0);
    const N = uniformWord(bufs[3], 1);
    const K = uniformWord(bufs[3], 2);
    const a = reader(bufs[0], dtype);
    const b = reader(bufs[1], dtype);
    const put = writer(bufs[2], out);
    const arow = new Float64Array(K);
    for (let m = 0; m < M; m++) {
      for (let k = 0; k < K; k++) arow[k] = a(m * K + k);
      for (let n = 0; n < N; n++) {
        let s = 0;
        if (transB) { for (let k = 0; k < K; k++) s += arow[k] * b(n * K + k); }
        else for (let k = 0; k < K; k++) s += arow[k] * b(k * N + n);
        put(m * N + n, s);
      }
    }
  };

/**
 * Generate a tiled matmul kernel. Bindings: `A: [M, K]` (read), `B: [K, N]` or `[N, K]` with `transB`
 * (read), `C: [M, N]` (read_write), all of `dtype`; uniform `{ M, N, K }`. Workgroups
 * `[ceil(N / BN), ceil(M / BM), 1]`. Needs `shader-f16` for f16. Fails with `ShapeError` for an invalid
 * tiling (see `MatmulOptions`).
 */
export const matmul = (options: MatmulOptions): Effect.Effect<KernelPlan<MatmulSizes>, ShapeError> => {
  const c = matmulConfig(options);
  const { tileM: BM, tileN: BN, tileK: BK, threadM: TM, threadN: TN } = c;
  const ints = [BM, BN, BK, TM, TN].every((x) => Number.isInteger(x) && x > 0);
  if (!ints) return bad(`matmul tiles must be positive integers, got ${JSON.stringify(c)}`);
  if (TM % 4 || TN % 4 || TM > 16 || TN > 16) return bad(`register tile ${TM}×${TN} must use 4, 8, 12 or 16`);
  if (BM % TM || BN % TN) return bad(`workgroup tile ${BM}×${BN} is not a multiple of ${TM}×${TN}`);
  if ((BM / TM) * (BN / TN) > 1024) return bad(`${(BM / TM) * (BN / TN)} invocations per workgroup > 1024`);
  if (c.aligned && BK % 4) return bad(`aligned matmul needs BK % 4 == 0, got ${BK}`);
  if (c.accum === "f16" && c.dtype !== "f16") return bad("f16 accumulation needs f16 storage");
  const wgsl = matmulWgsl(c);
  const kernel: Kernel = {
    key: `matmul.${c.dtype}.acc-${c.accum}.${c.transB ? "bt" : "bn"}.${BM}x${BN}x${BK}.${TM}x${TN}.${
      c.aligned ? "aligned" : "general"
    }${c.pipeline ? ".pipe" : ""}`,
    wgsl,
    entryPoint: "main",
    bindings: ["read", "read", "read_write", "uniform"],
    enables: c.dtype === "f16" ? ["f16"] : [],
    cpu: matmulCpu(c.dtype, c.transB),
  };
  return Effect.succeed({
    kernel,
    uniform: ({ M, N, K }) => u32Uniform(M, N, K),
    workgroups: ({ M, N }) => {
      const gx = Math.ceil(N / BN);
      const gy = Math.ceil(M / BM);
      if (gx > MAX_GROUPS || gy > MAX_GROUPS) throw new RangeError(`matmul grid ${gx}×${gy} exceeds 65535`);
      return [gx, gy, 1];
    },
  });
};
