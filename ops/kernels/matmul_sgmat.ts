/**
 * Subgroup-matrix (tensor-core) matmul generator for Dawn's WGSL extension
 * `enable chromium_experimental_subgroup_matrix;`: types `subgroup_matrix_left<T, K, M>`,
 * `subgroup_matrix_right<T, N, K>`, `subgroup_matrix_result<T, N, M>` (template order: columns, rows),
 * builtins `subgroupMatrixLoad<type, row_major | col_major>(ptr, offset, stride)` (this form accepts arrays of
 * vectors: offsets and strides then count vectors),
 * `subgroupMatrixStore<row_major | col_major>(ptr, offset, value, stride)` and
 * `subgroupMatrixMultiplyAccumulate(left, right, acc)`; lowered by Dawn to Vulkan cooperative matrices.
 *
 * `C[M, N] = A[M, K] · B[K, N]` (or `A · Bᵀ` with B stored `[N, K]`): f16 inputs, 16×16×16 fragments,
 * accumulation (and C storage) in f32 or f16. A workgroup of `WM × WN` subgroups computes a
 * `BM × BN = (WM·SM·16) × (WN·SN·16)` tile; each subgroup keeps `SM × SN` result fragments as separately
 * named variables (unrolled). Each K step of `BK` stages the A tile (`[BM][BK + pad]`) and the B tile
 * (`[BK][BN + pad]`, or `[BN][BK + pad]` for `transB`, then loaded column-major) in workgroup memory as
 * `array<vec4<f16>>`. With such an array, fragment offsets and strides count vec4s (four f16), so every
 * row stride and pad is a multiple of 4 elements (8 here: 16-byte strides, as Vulkan requires of
 * cooperative-matrix loads).
 *
 * Rules of the extension the generator meets: load/store offsets must be uniform, so subgroups are
 * indexed by `@builtin(subgroup_id)` (dividing `local_invocation_index` is rejected by the uniformity
 * analysis); every matrix builtin runs in uniform control flow.
 *
 * Options: `pipeline` prefetches the next K step's tiles from global memory into registers while the
 * current step computes and double-buffers workgroup memory (one barrier per step); `aligned` (M % BM,
 * N % BN, K % BK all 0) uses `vec4<f16>` global loads and stores fragments straight to C; otherwise loads
 * are guarded with zero padding and each fragment goes through a per-subgroup 16×16 scratch so only
 * in-bounds elements are stored (any `M, N, K ≥ 1`).
 *
 * `emulate` (tests on devices without subgroup matrices): the matrix types and builtins become plain WGSL
 * functions with the same arguments and index arithmetic — a left/right operand is its (offset, stride,
 * layout) into the staged tile, read when multiplied; a result fragment is spread over the `SG`
 * invocations of its subgroup (lane `l` holds elements `l + SG·t`), and the subgroup is `lid / SG`.
 * @module
 */
import { Effect } from "effect";
import { type Kernel, ShapeError } from "@longctx/graph";
import { matmulCpu, type MatmulSizes } from "./matmul.ts";
import { type KDType, type KernelPlan, MAX_GROUPS, u32Uniform } from "./types.ts";

/** Options of the subgroup-matrix matmul generator. */
export interface SgmatMatmulOptions {
  /** Accumulation type, also C's storage type; default `f32` (A and B are f16). */
  readonly accum?: KDType;
  /** B stored `[N, K]`; default false. */
  readonly transB?: boolean;
  /** Subgroups per workgroup along M (WM); default 2. */
  readonly warpsM?: number;
  /** Subgroups per workgroup along N (WN); default 2. */
  readonly warpsN?: number;
  /** 16×16 fragments per subgroup along M (SM); default 4. */
  readonly fragsM?: number;
  /** 16×16 fragments per subgroup along N (SN); default 4. */
  readonly fragsN?: number;
  /** K step in elements, a multiple of 16; default 32. */
  readonly tileK?: number;
  /** Subgroup size of the device (NVIDIA 32); default 32. */
  readonly subgroupSize?: number;
  /** Row padding of the staged tiles (f16 elements, a multiple of 8); default 8. */
  readonly pad?: number;
  /** Register prefetch + double-buffered workgroup memory; default false. */
  readonly pipeline?: boolean;
  /** Assume tile-aligned sizes; default false. */
  readonly aligned?: boolean;
  /** Testing only: plain-WGSL stand-ins for the matrix builtins (see module doc); default false. */
  readonly emulate?: boolean;
}

/** Resolved options. */
export type SgmatMatmulConfig = Required<SgmatMatmulOptions>;

/** Fill in defaults. */
export const sgmatMatmulConfig = (o: SgmatMatmulOptions = {}): SgmatMatmulConfig => ({
  accum: o.accum ?? "f32",
  transB: o.transB ?? false,
  warpsM: o.warpsM ?? 2,
  warpsN: o.warpsN ?? 2,
  fragsM: o.fragsM ?? 4,
  fragsN: o.fragsN ?? 4,
  tileK: o.tileK ?? 32,
  subgroupSize: o.subgroupSize ?? 32,
  pad: o.pad ?? 8,
  pipeline: o.pipeline ?? false,
  aligned: o.aligned ?? false,
  emulate: o.emulate ?? false,
});

/** Workgroup tile `[BM, BN]`. */
export const sgmatTile = (c: SgmatMatmulConfig): readonly [number, number] => [
  c.warpsM * c.fragsM * 16,
  c.warpsN * c.fragsN * 16,
];

/** Whether the `aligned` variant of `o` can run `s`. */
export const sgmatMatmulFits = (o: SgmatMatmulOptions, s: MatmulSizes): boolean => {
  const c = sgmatMatmulConfig(o);
  const [BM, BN] = sgmatTile(c);
  return s.M % BM === 0 && s.N % BN === 0 && s.K % c.tileK === 0;
};

/** Workgroup-memory bytes the kernel declares. */
export const sgmatWorkgroupBytes = (o: SgmatMatmulOptions): number => {
  const c = sgmatMatmulConfig(o);
  const [BM, BN] = sgmatTile(c);
  const b = c.transB ? BN * (c.tileK + c.pad) : c.tileK * (BN + c.pad);
  const scratch = c.aligned ? 0 : c.warpsM * c.warpsN * 256 * (c.accum === "f32" ? 4 : 2);
  return (BM * (c.tileK + c.pad) + b) * 2 * (c.pipeline ? 2 : 1) + scratch;
};

/** Generate the WGSL source of a configuration. */
export const sgmatMatmulWgsl = (c: SgmatMatmulConfig): string => {
  const [BM, BN] = sgmatTile(c);
  const { tileK: BK, subgroupSize: SG, fragsM: SM, fragsN: SN, transB, aligned, pipeline, emulate } = c;
  const NSG = c.warpsM * c.warpsN;
  const T = SG * NSG;
  const CT = c.accum;
  const SA4 = (BK + c.pad) / 4; // A tile row stride in vec4s
  const SB4 = transB ? (BK + c.pad) / 4 : (BN + c.pad) / 4; // B tile row stride in vec4s
  const aTile4 = BM * SA4;
  const bTile4 = transB ? BN * SB4 : BK * SB4;
  const nbuf = pipeline ? 2 : 1;
  const L: string[] = [];
  const p = (s: string) => L.push(s);
  p("enable f16;");
  if (!emulate) {
    p("enable subgroups;");
    p("enable chromium_experimental_subgroup_matrix;");
  }
  p("struct Params { M: u32, N: u32, K: u32, _p: u32 }");
  const inArr = aligned ? "vec4<f16>" : "f16";
  p(`@group(0) @binding(0) var<storage, read> A: array<${inArr}>;`);
  p(`@group(0) @binding(1) var<storage, read> B: array<${inArr}>;`);
  p(`@group(0) @binding(2) var<storage, read_write> C: array<${CT}>;`);
  p("@group(0) @binding(3) var<uniform> P: Params;");
  p(`var<workgroup> As: array<vec4<f16>, ${nbuf * aTile4}>;`);
  p(`var<workgroup> Bs: array<vec4<f16>, ${nbuf * bTile4}>;`);
  if (!aligned) p(`var<workgroup> Cs: array<${CT}, ${NSG * 256}>;`);
  p("");
  p(`@compute @workgroup_size(${T}, 1, 1)`);
  p(
    "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32" +
      (emulate
        ? ") {"
        : ",\n        @builtin(subgroup_id) sgid: u32, @builtin(subgroup_invocation_id) sgl: u32) {"),
  );
  p(emulate ? `  let sg = lid / ${SG}u;` : "  let sg = sgid;");
  p(emulate ? `  let lane = lid % ${SG}u;` : "  let lane = sgl;");
  p(`  let sm0 = (sg / ${c.warpsN}u) * ${SM * 16}u;`);
  p(`  let sn0 = (sg % ${c.warpsN}u) * ${SN * 16}u;`);
  p(`  let row0 = wg.y * ${BM}u;`);
  p(`  let col0 = wg.x * ${BN}u;`);
  if (aligned) {
    p("  let K4 = P.K / 4u;");
    p("  let N4 = P.N / 4u;");
  }
  const RES = `subgroup_matrix_result<${CT}, 16, 16>`;
  for (let i = 0; i < SM; i++) {
    for (let j = 0; j < SN; j++) p(`  var acc_${i}_${j} = ${emulate ? "Frag()" : `${RES}()`};`);
  }

  /** Staging slots: `load` defines `v` from global memory at K offset `kb`; `put(ab, bb)` stores it. */
  interface Slot {
    readonly total: number;
    readonly l: number;
    readonly type: string;
    readonly pre: string[];
    readonly load: string[];
    readonly put: (ab: string, bb: string) => string[];
  }
  const slots: Slot[] = [];
  const add = (total: number, type: string, pre: string[], load: string[], put: Slot["put"]) => {
    for (let l = 0; l < Math.ceil(total / T); l++) slots.push({ total, l, type, pre, load, put });
  };
  if (aligned) {
    const q4 = BK / 4;
    add(BM * q4, "vec4<f16>", [`let r = idx / ${q4}u;`, `let q = idx % ${q4}u;`], [
      `let v = A[(row0 + r) * K4 + kb / 4u + q];`,
    ], (ab) => [`As[${ab}r * ${SA4}u + q] = v;`]);
    if (transB) {
      add(BN * q4, "vec4<f16>", [`let n = idx / ${q4}u;`, `let q = idx % ${q4}u;`], [
        `let v = B[(col0 + n) * K4 + kb / 4u + q];`,
      ], (_a, bb) => [`Bs[${bb}n * ${SB4}u + q] = v;`]);
    } else {
      const n4 = BN / 4;
      add(BK * n4, "vec4<f16>", [`let kk = idx / ${n4}u;`, `let q = idx % ${n4}u;`], [
        `let v = B[(kb + kk) * N4 + col0 / 4u + q];`,
      ], (_a, bb) => [`Bs[${bb}kk * ${SB4}u + q] = v;`]);
    }
  } else {
    add(BM * BK, "f16", [`let r = idx / ${BK}u;`, `let kk = idx % ${BK}u;`], [
      "var v = f16(0);",
      "if (row0 + r < P.M && kb + kk < P.K) { v = A[(row0 + r) * P.K + kb + kk]; }",
    ], (ab) => [`As[${ab}r * ${SA4}u + kk / 4u][kk % 4u] = v;`]);
    if (transB) {
      add(BN * BK, "f16", [`let n = idx / ${BK}u;`, `let kk = idx % ${BK}u;`], [
        "var v = f16(0);",
        "if (col0 + n < P.N && kb + kk < P.K) { v = B[(col0 + n) * P.K + kb + kk]; }",
      ], (_a, bb) => [`Bs[${bb}n * ${SB4}u + kk / 4u][kk % 4u] = v;`]);
    } else {
      add(BK * BN, "f16", [`let kk = idx / ${BN}u;`, `let n = idx % ${BN}u;`], [
        "var v = f16(0);",
        "if (col0 + n < P.N && kb + kk < P.K) { v = B[(kb + kk) * P.N + col0 + n]; }",
      ], (_a, bb) => [`Bs[${bb}kk * ${SB4}u + n / 4u][n % 4u] = v;`]);
    }
  }
  const stage = (ind: string, mode: "both" | "fetch" | "stash", ab = "", bb = "") => {
    slots.forEach((s, si) => {
      const guard = (s.l + 1) * T > s.total;
      const I = ind + (guard ? "    " : "  ");
      p(`${ind}{`);
      p(`${ind}  let idx = lid + ${s.l * T}u;`);
      if (guard) p(`${ind}  if (idx < ${s.total}u) {`);
      for (const x of s.pre) p(I + x);
      if (mode !== "stash") { for (const x of s.load) p(I + x); }
      if (mode === "fetch") p(`${I}pf_${si} = v;`);
      if (mode === "stash") p(`${I}let v = pf_${si};`);
      if (mode !== "fetch") { for (const x of s.put(ab, bb)) p(I + x); }
      if (guard) p(`${ind}  }`);
      p(`${ind}}`);
    });
  };
  const LEFT = "subgroup_matrix_left<f16, 16, 16>";
  const RIGHT = "subgroup_matrix_right<f16, 16, 16>";
  /** The MMAs of one staged K step, tiles at vec4 offsets `ab` / `bb`. */
  const compute = (ind: string, ab: string, bb: string) => {
    for (let ks = 0; ks < BK / 16; ks++) {
      p(`${ind}{`);
      for (let i = 0; i < SM; i++) {
        const off = `${ab}(sm0 + ${i * 16}u) * ${SA4}u + ${ks * 4}u`;
        p(
          emulate
            ? `${ind}  let a${i} = Opnd(${off}, ${SA4}u, false);`
            : `${ind}  let a${i} = subgroupMatrixLoad<${LEFT}, row_major>(&As, ${off}, ${SA4}u);`,
        );
      }
      for (let j = 0; j < SN; j++) {
        const off = transB
          ? `${bb}(sn0 + ${j * 16}u) * ${SB4}u + ${ks * 4}u`
          : `${bb}${ks * 16 * SB4}u + (sn0 + ${j * 16}u) / 4u`;
        p(
          emulate
            ? `${ind}  let b${j} = Opnd(${off}, ${SB4}u, ${transB});`
            : `${ind}  let b${j} = subgroupMatrixLoad<${RIGHT}, ${
              transB ? "col_major" : "row_major"
            }>(&Bs, ${off}, ${SB4}u);`,
        );
      }
      for (let i = 0; i < SM; i++) {
        for (let j = 0; j < SN; j++) {
          p(
            emulate
              ? `${ind}  acc_${i}_${j} = emuMma(a${i}, b${j}, acc_${i}_${j}, lane);`
              : `${ind}  acc_${i}_${j} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}, acc_${i}_${j});`,
          );
        }
      }
      p(`${ind}}`);
    }
  };
  if (!pipeline) {
    p(`  for (var k0 = 0u; k0 < P.K; k0 += ${BK}u) {`);
    p("    let kb = k0;");
    stage("    ", "both");
    p("    workgroupBarrier();");
    compute("    ", "", "");
    p("    workgroupBarrier();");
    p("  }");
  } else {
    slots.forEach((s, si) => p(`  var pf_${si}: ${s.type};`));
    p("  {");
    p("    let kb = 0u;");
    stage("    ", "both");
    p("  }");
    p("  workgroupBarrier();");
    p("  var cur = 0u;");
    p(`  for (var k0 = 0u; k0 < P.K; k0 += ${BK}u) {`);
    p(`    let kb = k0 + ${BK}u;`);
    p("    let more = kb < P.K;");
    p("    if (more) {");
    stage("      ", "fetch");
    p("    }");
    p(`    let ar = cur * ${aTile4}u;`);
    p(`    let br = cur * ${bTile4}u;`);
    compute("    ", "ar + ", "br + ");
    p("    if (more) {");
    p(`      let aw = (1u - cur) * ${aTile4}u;`);
    p(`      let bw = (1u - cur) * ${bTile4}u;`);
    stage("      ", "stash", "aw + ", "bw + ");
    p("    }");
    p("    cur = 1u - cur;");
    p("    workgroupBarrier();");
    p("  }");
  }
  for (let i = 0; i < SM; i++) {
    for (let j = 0; j < SN; j++) {
      const r = `row0 + sm0 + ${i * 16}u`;
      const col = `col0 + sn0 + ${j * 16}u`;
      p("  {");
      if (aligned) {
        p(`    let cIdx = (${r}) * P.N + ${col};`);
        p(
          emulate
            ? `    emuStoreC(acc_${i}_${j}, cIdx, P.N, lane);`
            : `    subgroupMatrixStore<row_major>(&C, cIdx, acc_${i}_${j}, P.N);`,
        );
      } else {
        p(
          emulate
            ? `    emuStoreCs(acc_${i}_${j}, sg * 256u, 16u, lane);`
            : `    subgroupMatrixStore<row_major>(&Cs, sg * 256u, acc_${i}_${j}, 16u);`,
        );
        p("    workgroupBarrier();");
        p(`    for (var e = lane; e < 256u; e += ${SG}u) {`);
        p(`      let gr = ${r} + e / 16u;`);
        p(`      let gc = ${col} + e % 16u;`);
        p("      if (gr < P.M && gc < P.N) { C[gr * P.N + gc] = Cs[sg * 256u + e]; }");
        p("    }");
        p("    workgroupBarrier();");
      }
      p("  }");
    }
  }
  p("}");
  if (emulate) p(sgmatEmulation(CT, SG, !aligned));
  return L.join("\n") + "\n";
};

/**
 * Plain-WGSL stand-ins for the subgroup-matrix builtins over the staged tiles `As` (left operands) and `Bs`
 * (right operands), both `array<vec4<f16>>` with offsets and strides in vec4s as on the hardware: element
 * `(r, c)` of a row-major operand at vec4 offset `o`, stride `s` is f16 number `(o + r·s)·4 + c`; of a
 * column-major one `(o + c·s)·4 + r`. Results are spread over the subgroup's lanes (lane `l`: elements
 * `l + SG·t`, `[row, col] = [e / 16, e % 16]`); stores are row-major at element offsets.
 */
const sgmatEmulation = (CT: KDType, SG: number, scratch: boolean): string => {
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
struct Opnd { off: u32, stride: u32, colMajor: bool }
fn opIdx(o: Opnd, r: u32, c: u32) -> u32 {
  return select((o.off + r * o.stride) * 4u + c, (o.off + c * o.stride) * 4u + r, o.colMajor);
}
fn emuMma(a: Opnd, b: Opnd, acc: Frag, lane: u32) -> Frag {
  var d = acc;
  for (var t = 0u; t < ${per}u; t++) {
    let e = lane + ${SG}u * t;
    let r = e / 16u;
    let c = e % 16u;
    var s = d.v[t];
    for (var k = 0u; k < 16u; k++) {
      let ia = opIdx(a, r, k);
      let ib = opIdx(b, k, c);
      s += ${CT}(As[ia / 4u][ia % 4u]) * ${CT}(Bs[ib / 4u][ib % 4u]);
    }
    d.v[t] = s;
  }
  return d;
}
${store("emuStoreC", "C")}
${scratch ? store("emuStoreCs", "Cs") : ""}`;
};

const bad = (message: string) =>
  Effect.fail(
    new ShapeError({
      message,
      hint:
        "subgroup-matrix matmul: tileK a multiple of 16; pad a multiple of 8; warps and fragments positive " +
        "integers; subgroupSize a power of two dividing 256; ≤ 1024 invocations per workgroup",
    }),
  );

/**
 * Generate a subgroup-matrix matmul kernel. Bindings: `A: [M, K] f16` (read), `B: [K, N] f16` or `[N, K]`
 * with `transB` (read), `C: [M, N]` of `accum` (read_write), uniform `{ M, N, K }`. Workgroups
 * `[ceil(N / BN), ceil(M / BM), 1]`. Needs `shader-f16`, `subgroups` and
 * `chromium-experimental-subgroup-matrix` with an f16 16×16×16 configuration accumulating in `accum`
 * (the `dawn` backend's `subgroup-matrix:f16-<accum>:16x16x16`), unless emulated.
 */
export const sgmatMatmul = (
  options: SgmatMatmulOptions = {},
): Effect.Effect<KernelPlan<MatmulSizes>, ShapeError> => {
  const c = sgmatMatmulConfig(options);
  const ints = [c.warpsM, c.warpsN, c.fragsM, c.fragsN, c.tileK, c.subgroupSize].every((x) =>
    Number.isInteger(x) && x > 0
  );
  if (!ints) return bad(`bad subgroup-matrix matmul options ${JSON.stringify(c)}`);
  if (!Number.isInteger(c.pad) || c.pad < 0 || c.pad % 8) return bad(`pad ${c.pad} must be a multiple of 8`);
  if (c.tileK % 16) return bad(`tileK ${c.tileK} is not a multiple of 16`);
  if (c.subgroupSize & (c.subgroupSize - 1) || 256 % c.subgroupSize) {
    return bad("subgroupSize must be a power of two dividing 256");
  }
  if (c.subgroupSize * c.warpsM * c.warpsN > 1024) return bad("more than 1024 invocations per workgroup");
  const [BM, BN] = sgmatTile(c);
  const kernel: Kernel = {
    key: `matmul-sgmat.f16.acc-${c.accum}.${
      c.transB ? "bt" : "bn"
    }.w${c.warpsM}x${c.warpsN}.f${c.fragsM}x${c.fragsN}.k${c.tileK}.p${c.pad}.sg${c.subgroupSize}.${
      c.aligned ? "aligned" : "general"
    }${c.pipeline ? ".pipe" : ""}${c.emulate ? ".emulated" : ""}`,
    wgsl: sgmatMatmulWgsl(c),
    entryPoint: "main",
    bindings: ["read", "read", "read_write", "uniform"],
    enables: c.emulate ? ["f16"] : ["f16", "subgroups", "chromium_experimental_subgroup_matrix"],
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
