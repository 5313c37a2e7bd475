/**
 * Cooperative-matrix (tensor-core) matmul generator for wgpu-native's WGSL extension
 * `enable wgpu_cooperative_matrix;` (naga 29: types `coop_mat8x8<T, R>` / `coop_mat16x16<T, R>` with
 * `T ∈ {f16, f32}` and role `R ∈ {A, B, C}`; builtins `coopLoad` (column-major), `coopLoadT` (row-major),
 * `coopStore`/`coopStoreT`, `coopMultiplyAdd(a, b, c) = a·b + c`; lowered to SPIR-V
 * `OpCooperativeMatrix*KHR`, i.e. Vulkan `VK_KHR_cooperative_matrix` with subgroup scope).
 *
 * `C[M, N] = A[M, K] · B[K, N]` (or `A · Bᵀ` with B stored `[N, K]`): f16 inputs, 16×16×16 fragments,
 * accumulation (and C storage) in f32 or f16. A workgroup of `WM × WN` subgroups computes a
 * `BM × BN = (WM·SM·16) × (WN·SN·16)` tile; each subgroup keeps `SM × SN` accumulator fragments as
 * separately named variables (unrolled). Each K step of `BK` stages the A tile (`[BM][BK]`) and B tile
 * (`[BK][BN]`, or `[BN][BK]` for `transB`, then read column-major) in workgroup memory with zero padding,
 * so odd `M, N, K` work; the general variant also stages each output fragment through a per-subgroup
 * 16×16 scratch to store only in-bounds elements. Staged rows are padded by `pad` elements (default 8)
 * so fragment loads spread over shared-memory banks. The `aligned` variant (M % BM, N % BN, K % BK all 0,
 * K and N multiples of 4) loads `vec4<f16>` and stores fragments straight to C.
 *
 * Storage buffers are named `gA`, `gB`, `gC`: `A`, `B`, `C` are the role enumerants in this extension.
 *
 * Subgroup scope: invocations `[s·SG, (s+1)·SG)` are taken to form subgroup `s` (true of NVIDIA's and
 * AMD's Vulkan drivers), and every cooperative op runs in uniform control flow.
 * @module
 */
import { Effect } from "effect";
import { type Kernel, ShapeError } from "@longctx/graph";
import { matmulCpu, type MatmulSizes } from "./matmul.ts";
import { type KDType, type KernelPlan, MAX_GROUPS, u32Uniform } from "./types.ts";

/** Options of the cooperative-matrix matmul generator. */
export interface CoopMatmulOptions {
  /** Accumulation type, also C's storage type; default `f32` (A and B are always f16). */
  readonly accum?: KDType;
  /** B stored `[N, K]`; default false. */
  readonly transB?: boolean;
  /** Subgroups per workgroup along M (WM); default 2. */
  readonly warpsM?: number;
  /** Subgroups per workgroup along N (WN); default 2. */
  readonly warpsN?: number;
  /** 16×16 fragments per subgroup along M (SM); default 2. */
  readonly fragsM?: number;
  /** 16×16 fragments per subgroup along N (SN); default 2. */
  readonly fragsN?: number;
  /** K step in elements, a multiple of 16; default 32. */
  readonly tileK?: number;
  /** Subgroup size the driver uses (NVIDIA 32, AMD 64); default 32. */
  readonly subgroupSize?: number;
  /** Assume tile-aligned sizes; default false. */
  readonly aligned?: boolean;
  /**
   * Padding (f16 elements, a multiple of 8) added to each row of the staged tiles so fragment loads spread
   * over shared-memory banks; default 8. Multiples of 8 keep every fragment pointer and stride 16-byte
   * aligned, as Vulkan requires of `OpCooperativeMatrixLoadKHR`/`StoreKHR` (VUID-RuntimeSpirv-
   * OpCooperativeMatrixLoadKHR-08986).
   */
  readonly pad?: number;
  /**
   * Testing only: replace the cooperative-matrix types and builtins by plain WGSL functions in which every
   * invocation computes whole 16×16 fragments (slow), so the tiling, staging, strides and boundary
   * handling of the generated kernel run — and are checked — on any WebGPU device; default false.
   */
  readonly emulate?: boolean;
}

/** Resolved options. */
export type CoopMatmulConfig = Required<CoopMatmulOptions>;

/** Fill in defaults. */
export const coopMatmulConfig = (o: CoopMatmulOptions = {}): CoopMatmulConfig => ({
  accum: o.accum ?? "f32",
  transB: o.transB ?? false,
  warpsM: o.warpsM ?? 2,
  warpsN: o.warpsN ?? 2,
  fragsM: o.fragsM ?? 2,
  fragsN: o.fragsN ?? 2,
  tileK: o.tileK ?? 32,
  subgroupSize: o.subgroupSize ?? 32,
  aligned: o.aligned ?? false,
  pad: o.pad ?? 8,
  emulate: o.emulate ?? false,
});

/** Workgroup tile `[BM, BN]` of a configuration. */
export const coopTile = (c: CoopMatmulConfig): readonly [number, number] => [
  c.warpsM * c.fragsM * 16,
  c.warpsN * c.fragsN * 16,
];

/** Whether the `aligned` variant of `o` can run `sizes`. */
export const coopMatmulFits = (o: CoopMatmulOptions, s: MatmulSizes): boolean => {
  const c = coopMatmulConfig(o);
  const [BM, BN] = coopTile(c);
  return s.M % BM === 0 && s.N % BN === 0 && s.K % c.tileK === 0;
};

/** Workgroup-memory bytes the kernel declares. */
export const coopWorkgroupBytes = (o: CoopMatmulOptions): number => {
  const c = coopMatmulConfig(o);
  const [BM, BN] = coopTile(c);
  const scratch = c.aligned ? 0 : c.warpsM * c.warpsN * 256 * (c.accum === "f32" ? 4 : 2);
  const b = c.transB ? BN * (c.tileK + c.pad) : c.tileK * (BN + c.pad);
  return (BM * (c.tileK + c.pad) + b) * 2 + scratch;
};

/** Generate the WGSL source of a cooperative-matrix configuration. */
export const coopMatmulWgsl = (c: CoopMatmulConfig): string => {
  const [BM, BN] = coopTile(c);
  const BK = c.tileK;
  const SA = BK + c.pad; // row stride of the staged A tile (elements)
  const SB = c.transB ? BK + c.pad : BN + c.pad; // row stride of the staged B tile
  const SG = c.subgroupSize;
  const NSG = c.warpsM * c.warpsN;
  const T = SG * NSG;
  const CT = c.accum;
  const L: string[] = [];
  const loads = (total: number, body: string[]) => {
    const n = Math.ceil(total / T);
    for (let l = 0; l < n; l++) {
      const guard = (l + 1) * T > total;
      L.push("    {");
      L.push(`      let idx = lid + ${l * T}u;`);
      if (guard) L.push(`      if (idx < ${total}u) {`);
      for (const s of body) L.push(`      ${guard ? "  " : ""}${s}`);
      if (guard) L.push("      }");
      L.push("    }");
    }
  };
  L.push("enable f16;");
  if (!c.emulate) L.push("enable wgpu_cooperative_matrix;");
  L.push("struct Params { M: u32, N: u32, K: u32, _p: u32 }");
  const inArr = c.aligned ? "vec4<f16>" : "f16";
  L.push(`@group(0) @binding(0) var<storage, read> gA: array<${inArr}>;`);
  L.push(`@group(0) @binding(1) var<storage, read> gB: array<${inArr}>;`);
  L.push(`@group(0) @binding(2) var<storage, read_write> gC: array<${CT}>;`);
  L.push("@group(0) @binding(3) var<uniform> P: Params;");
  L.push(`var<workgroup> As: array<f16, ${BM * SA}>;`);
  L.push(`var<workgroup> Bs: array<f16, ${c.transB ? BN * SB : BK * SB}>;`);
  if (!c.aligned) L.push(`var<workgroup> Cs: array<${CT}, ${NSG * 256}>;`);
  L.push("");
  L.push(`@compute @workgroup_size(${T}, 1, 1)`);
  L.push("fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {");
  L.push(`  let sg = lid / ${SG}u;`);
  L.push(`  let lane = lid % ${SG}u;`);
  L.push(`  let sm0 = (sg / ${c.warpsN}u) * ${c.fragsM * 16}u;`);
  L.push(`  let sn0 = (sg % ${c.warpsN}u) * ${c.fragsN * 16}u;`);
  L.push(`  let row0 = wg.y * ${BM}u;`);
  L.push(`  let col0 = wg.x * ${BN}u;`);
  L.push("  let ldc = P.N;");
  for (let i = 0; i < c.fragsM; i++) {
    for (let j = 0; j < c.fragsN; j++) {
      L.push(`  var acc_${i}_${j} = ${c.emulate ? "emuZero()" : `coop_mat16x16<${CT}, C>()`};`);
    }
  }
  L.push(`  for (var k0 = 0u; k0 < P.K; k0 += ${BK}u) {`);
  if (c.aligned) {
    const e4 = (dst: (j: number) => string, v: string) =>
      ["x", "y", "z", "w"].map((e, j) => `${dst(j)} = ${v}.${e};`);
    // A tile [BM][BK]: vec4 along K.
    loads(BM * BK / 4, [
      `let r = idx / ${BK / 4}u;`,
      `let q = idx % ${BK / 4}u;`,
      `let v = gA[((row0 + r) * P.K + k0) / 4u + q];`,
      ...e4((j) => `As[r * ${SA}u + q * 4u + ${j}u]`, "v"),
    ]);
    if (c.transB) {
      // Bs as [BN][BK].
      loads(BN * BK / 4, [
        `let n = idx / ${BK / 4}u;`,
        `let q = idx % ${BK / 4}u;`,
        `let v = gB[((col0 + n) * P.K + k0) / 4u + q];`,
        ...e4((j) => `Bs[n * ${SB}u + q * 4u + ${j}u]`, "v"),
      ]);
    } else {
      loads(BK * BN / 4, [
        `let kk = idx / ${BN / 4}u;`,
        `let q = idx % ${BN / 4}u;`,
        `let v = gB[((k0 + kk) * P.N + col0) / 4u + q];`,
        ...e4((j) => `Bs[kk * ${SB}u + q * 4u + ${j}u]`, "v"),
      ]);
    }
  } else {
    loads(BM * BK, [
      `let r = idx / ${BK}u;`,
      `let kk = idx % ${BK}u;`,
      "var v = f16(0);",
      "if (row0 + r < P.M && k0 + kk < P.K) { v = gA[(row0 + r) * P.K + k0 + kk]; }",
      `As[r * ${SA}u + kk] = v;`,
    ]);
    if (c.transB) {
      loads(BN * BK, [
        `let n = idx / ${BK}u;`,
        `let kk = idx % ${BK}u;`,
        "var v = f16(0);",
        "if (col0 + n < P.N && k0 + kk < P.K) { v = gB[(col0 + n) * P.K + k0 + kk]; }",
        `Bs[n * ${SB}u + kk] = v;`,
      ]);
    } else {
      loads(BK * BN, [
        `let kk = idx / ${BN}u;`,
        `let n = idx % ${BN}u;`,
        "var v = f16(0);",
        "if (col0 + n < P.N && k0 + kk < P.K) { v = gB[(k0 + kk) * P.N + col0 + n]; }",
        `Bs[kk * ${SB}u + n] = v;`,
      ]);
    }
  }
  L.push("    workgroupBarrier();");
  for (let ks = 0; ks < BK / 16; ks++) {
    L.push("    {");
    for (let i = 0; i < c.fragsM; i++) {
      const off = `(sm0 + ${i * 16}u) * ${SA}u + ${ks * 16}u`;
      L.push(
        c.emulate
          ? `      let a${i} = ${off};`
          : `      let a${i} = coopLoadT<coop_mat16x16<f16, A>>(&As[${off}], ${SA}u);`,
      );
    }
    for (let j = 0; j < c.fragsN; j++) {
      const off = c.transB
        ? `(sn0 + ${j * 16}u) * ${SB}u + ${ks * 16}u`
        : `${ks * 16 * SB}u + sn0 + ${j * 16}u`;
      const load = c.transB ? "coopLoad" : "coopLoadT";
      L.push(
        c.emulate
          ? `      let b${j} = ${off};`
          : `      let b${j} = ${load}<coop_mat16x16<f16, B>>(&Bs[${off}], ${SB}u);`,
      );
    }
    for (let i = 0; i < c.fragsM; i++) {
      for (let j = 0; j < c.fragsN; j++) {
        L.push(
          c.emulate
            ? `      acc_${i}_${j} = emuMma(a${i}, ${SA}u, b${j}, ${SB}u, ${!c.transB}, acc_${i}_${j}, lane);`
            : `      acc_${i}_${j} = coopMultiplyAdd(a${i}, b${j}, acc_${i}_${j});`,
        );
      }
    }
    L.push("    }");
  }
  L.push("    workgroupBarrier();");
  L.push("  }");
  for (let i = 0; i < c.fragsM; i++) {
    for (let j = 0; j < c.fragsN; j++) {
      const r = `row0 + sm0 + ${i * 16}u`;
      const col = `col0 + sn0 + ${j * 16}u`;
      if (c.aligned) {
        // Strides and offsets go through `let`s: naga's SPIR-V writer does not emit a uniform load used
        // directly as a coopStore argument ("Expression [..] is not cached", naga 30.0.1).
        L.push("  {");
        L.push(`    let cIdx = (${r}) * ldc + ${col};`);
        L.push(
          c.emulate
            ? `    emuStoreGC(acc_${i}_${j}, cIdx, ldc, lane);`
            : `    coopStoreT(acc_${i}_${j}, &gC[cIdx], ldc);`,
        );
        L.push("  }");
      } else {
        L.push("  {");
        L.push(
          c.emulate
            ? `    emuStoreCs(acc_${i}_${j}, sg * 256u, 16u, lane);`
            : `    coopStoreT(acc_${i}_${j}, &Cs[sg * 256u], 16u);`,
        );
        L.push("    workgroupBarrier();");
        L.push(`    for (var e = lane; e < 256u; e += ${SG}u) {`);
        L.push(`      let gr = ${r} + e / 16u;`);
        L.push(`      let gc = ${col} + e % 16u;`);
        L.push("      if (gr < P.M && gc < P.N) { gC[gr * P.N + gc] = Cs[sg * 256u + e]; }");
        L.push("    }");
        L.push("    workgroupBarrier();");
        L.push("  }");
      }
    }
  }
  L.push("}");
  if (c.emulate) L.push(emulation(CT, SG, !c.aligned));
  return L.join("\n") + "\n";
};

/**
 * WGSL stand-ins for the cooperative-matrix builtins (see `CoopMatmulOptions.emulate`). As on the hardware,
 * a fragment is spread over the `SG` invocations of its subgroup (here: `lid / SG`, no real subgroup
 * needed): lane `l` holds elements `e = l + SG·t` (`[row, col] = [e / 16, e % 16]`). A and B fragments are
 * represented by their offset into the staged tile; `emuMma` reads A row-major (as `coopLoadT`) and B
 * row-major or column-major (as `coopLoadT` / `coopLoad`) at the strides the kernel passes; stores are
 * row-major (as `coopStoreT`).
 */
const emulation = (CT: KDType, SG: number, scratch: boolean): string => {
  const per = 256 / SG;
  const store = (name: string, arr: string) =>
    `fn ${name}(f: Frag, off: u32, stride: u32, lane: u32) {
  for (var t = 0u; t < ${per}u; t++) {
    let e = lane + ${SG}u * t;
    ${arr}[off + (e / 16u) * stride + e % 16u] = f.v[t];
  }
}`;
  return `
struct Frag { v: array<${CT}, ${per}> }
fn emuZero() -> Frag { return Frag(); }
fn emuMma(aOff: u32, aStride: u32, bOff: u32, bStride: u32, bRowMajor: bool, acc: Frag, lane: u32) -> Frag {
  var d = acc;
  for (var t = 0u; t < ${per}u; t++) {
    let e = lane + ${SG}u * t;
    let r = e / 16u;
    let c = e % 16u;
    var s = d.v[t];
    for (var k = 0u; k < 16u; k++) {
      let bi = select(bOff + c * bStride + k, bOff + k * bStride + c, bRowMajor);
      s += ${CT}(As[aOff + r * aStride + k]) * ${CT}(Bs[bi]);
    }
    d.v[t] = s;
  }
  return d;
}
${store("emuStoreGC", "gC")}
${scratch ? store("emuStoreCs", "Cs") : ""}`;
};

const bad = (message: string) =>
  Effect.fail(
    new ShapeError({
      message,
      hint: "cooperative matmul: tileK a multiple of 16; warps and fragments positive integers; " +
        "subgroupSize a power of two ≥ 8; ≤ 1024 invocations per workgroup",
    }),
  );

/**
 * Generate a cooperative-matrix matmul kernel. Bindings: `A: [M, K] f16` (read), `B: [K, N] f16` or
 * `[N, K]` with `transB` (read), `C: [M, N]` of `accum` (read_write), uniform `{ M, N, K }`. Workgroups
 * `[ceil(N / BN), ceil(M / BM), 1]`. Needs features `shader-f16` and wgpu-native's cooperative matrix
 * with a 16×16×16 f16 configuration (A/B f16, C f32 or f16). Fails with `ShapeError` for a bad tiling.
 */
export const coopMatmul = (
  options: CoopMatmulOptions = {},
): Effect.Effect<KernelPlan<MatmulSizes>, ShapeError> => {
  const c = coopMatmulConfig(options);
  const ints = [c.warpsM, c.warpsN, c.fragsM, c.fragsN, c.tileK, c.subgroupSize].every((x) =>
    Number.isInteger(x) && x > 0
  );
  if (!ints) return bad(`bad cooperative matmul options ${JSON.stringify(c)}`);
  if (!Number.isInteger(c.pad) || c.pad < 0 || c.pad % 8) return bad(`pad ${c.pad} must be a multiple of 8`);
  if (c.tileK % 16) return bad(`tileK ${c.tileK} is not a multiple of 16`);
  if (c.subgroupSize < 8 || (c.subgroupSize & (c.subgroupSize - 1))) {
    return bad("subgroupSize must be 2^k ≥ 8");
  }
  if (c.subgroupSize * c.warpsM * c.warpsN > 1024) return bad("more than 1024 invocations per workgroup");
  const [BM, BN] = coopTile(c);
  const kernel: Kernel = {
    key: `matmul-coop.f16.acc-${c.accum}.${
      c.transB ? "bt" : "bn"
    }.w${c.warpsM}x${c.warpsN}.f${c.fragsM}x${c.fragsN}.k${c.tileK}.p${c.pad}.sg${c.subgroupSize}.${
      c.aligned ? "aligned" : "general"
    }${c.emulate ? ".emulated" : ""}`,
    wgsl: coopMatmulWgsl(c),
    entryPoint: "main",
    bindings: ["read", "read", "read_write", "uniform"],
    enables: c.emulate ? ["f16"] : ["f16", "wgpu_cooperative_matrix"],
    cpu: matmulCpu("f16", c.transB, c.accum),
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
