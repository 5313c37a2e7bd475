/**
 * Causal flash-attention prefill on subgroup matrices (Dawn's `chromium_experimental_subgroup_matrix`,
 * tensor cores on NVIDIA): `O = softmax(scale · Q Kᵀ, causal) V` with online softmax, GQA and LSE, f16
 * Q/K/V `[heads | kvHeads, seq, headDim]`, f32 O `[heads, seq, headDim]` and LSE `[heads, seq]` (natural
 * log), the interface of `flash_wgsl.ts`. Head dims 64 and 128 (any multiple of 16).
 *
 * A workgroup of 4 subgroups owns 64 query rows of one query head; subgroup `s` owns 16 rows starting at
 * `min(q0 + 16·s, seq − 16)` (so its Q fragments, loaded once from the storage buffer into registers,
 * never read past the sequence; at the sequence end two subgroups may compute the same rows and store the
 * same values). Per key tile of 16 keys:
 *
 * 1. all invocations stage K and V rows (f16, rows padded by 8) in workgroup memory;
 * 2. each subgroup computes its 16×16 score fragment `S = Q Kᵀ` (`headDim / 16` MMAs, K read
 *    column-major) and stores it to its f32 scratch;
 * 3. invocation `lane < 16` of the subgroup owns row `lane`: scale into log2 units, causal mask, running
 *    max `m`, `α = 2^(m_old − m)`, `p = 2^(s − m)` stored as f16 to the P tile, running sum `l`;
 * 4. the output fragments go through the scratch to be scaled by their row's α (a subgroup-matrix scalar
 *    multiply takes one uniform scalar, not one per row) and come back;
 * 5. `O += P V` (`headDim / 16` MMAs, V read row-major).
 *
 * At the end O goes through the scratch once more, divided by `l`. Workgroup memory for headDim 128:
 * K, V tiles 2 × 4352 B, P tiles 3072 B, scratch 4 × 16 × 128 × 4 = 32 KiB: 44.8 KiB.
 *
 * `emulate`: the matrix types and builtins become plain-WGSL functions with the same offsets, strides
 * and layouts (see `ops/kernels/matmul_sgmat.ts`), so the tiling, staging, masking and softmax run — and
 * are checked — on devices without subgroup matrices.
 * @module
 */

/** What to generate (shapes are baked into the source). */
export interface FlashSgmatConfig {
  readonly heads: number;
  readonly kvHeads: number;
  /** Sequence length, ≥ 16. */
  readonly seq: number;
  /** A multiple of 16 (64 and 128 are the targets). */
  readonly headDim: number;
  /** Softmax scale (usually 1/sqrt(headDim)). */
  readonly scale: number;
  /** Subgroup size of the device (NVIDIA 32); default 32. */
  readonly subgroupSize?: number;
  /** Plain-WGSL stand-ins for the matrix builtins; default false. */
  readonly emulate?: boolean;
}

const NSG = 4;
const BQ = 16 * NSG;
const BK = 16;

/** Query rows per workgroup (dispatch `[ceil(seq / 64), heads, 1]`). */
export const FLASH_SGMAT_ROWS = BQ;

/** Workgroup memory bytes of a configuration. */
export const flashSgmatWorkgroupBytes = (headDim: number): number =>
  2 * BK * (headDim + 8) * 2 + NSG * 16 * (BK + 8) * 2 + NSG * 16 * headDim * 4 + BQ * 4;

const f = (x: number): string => {
  const s = x.toPrecision(9);
  return s.includes(".") || s.includes("e") ? s : `${s}.0`;
};

/** Stable cache key. */
export const flashSgmatKey = (c: FlashSgmatConfig): string =>
  `flash-sgmat:${c.heads}/${c.kvHeads}:${c.seq}x${c.headDim}:${f(c.scale)}:sg${c.subgroupSize ?? 32}${
    c.emulate ? ":emulated" : ""
  }`;

/** Generate the WGSL. Bindings: Q, K, V (f16, read), O (f32), LSE (f32) (read_write). */
export const flashSgmatWgsl = (c: FlashSgmatConfig): string => {
  const { heads, kvHeads, seq, headDim: D } = c;
  const SG = c.subgroupSize ?? 32;
  const em = c.emulate ?? false;
  if (D % 16 || seq < 16 || heads % kvHeads || 256 % SG || SG < 16) {
    throw new RangeError(`flash-sgmat: bad config ${JSON.stringify(c)} (headDim % 16, seq ≥ 16, SG ≥ 16)`);
  }
  const D4 = D / 4;
  const SK4 = (D + 8) / 4; // K/V tile row stride (vec4)
  const SP4 = (BK + 8) / 4; // P tile row stride (vec4)
  const SCR = 16 * D; // scratch floats per subgroup
  const ND = D / 16;
  const T = SG * NSG;
  const group = heads / kvHeads;
  const sc = f(c.scale * Math.LOG2E);
  const LEFT = "subgroup_matrix_left<f16, 16, 16>";
  const RIGHT = "subgroup_matrix_right<f16, 16, 16>";
  const RES = "subgroup_matrix_result<f32, 16, 16>";
  const L: string[] = [];
  const p = (s: string) => L.push(s);
  p("enable f16;");
  if (!em) {
    p("enable subgroups;");
    p("enable chromium_experimental_subgroup_matrix;");
  }
  p("@group(0) @binding(0) var<storage, read> Q: array<vec4<f16>>;");
  p("@group(0) @binding(1) var<storage, read> K: array<vec4<f16>>;");
  p("@group(0) @binding(2) var<storage, read> V: array<vec4<f16>>;");
  p("@group(0) @binding(3) var<storage, read_write> O: array<vec4<f32>>;");
  p("@group(0) @binding(4) var<storage, read_write> LSE: array<f32>;");
  p(`var<workgroup> Ks: array<vec4<f16>, ${BK * SK4}>;`);
  p(`var<workgroup> Vs: array<vec4<f16>, ${BK * SK4}>;`);
  p(`var<workgroup> Ps: array<vec4<f16>, ${NSG * 16 * SP4}>;`);
  p(`var<workgroup> Sc: array<f32, ${NSG * SCR}>;`);
  p(`var<workgroup> Al: array<f32, ${BQ}>;`);
  p("const NEG: f32 = -3.0e38;");
  p(`@compute @workgroup_size(${T})`);
  p(
    "fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32" +
      (em
        ? ") {"
        : ",\n        @builtin(subgroup_id) sgid: u32, @builtin(subgroup_invocation_id) sgl: u32) {"),
  );
  p(em ? `  let sg = lid / ${SG}u;` : "  let sg = sgid;");
  p(em ? `  let lane = lid % ${SG}u;` : "  let lane = sgl;");
  p("  let h = wid.y;");
  p(`  let kvh = h / ${group}u;`);
  p(`  let q0 = wid.x * ${BQ}u;`);
  p(`  let r0 = min(q0 + sg * 16u, ${seq - 16}u);`);
  p(`  let qb4 = h * ${seq * D4}u;`);
  p(`  let kb4 = kvh * ${seq * D4}u;`);
  p(`  let scr = sg * ${SCR}u;`);
  // Q fragments (left, row-major) straight from storage, kept for the whole loop.
  for (let d = 0; d < ND; d++) {
    const off = `qb4 + r0 * ${D4}u + ${d * 4}u`;
    p(
      em
        ? `  let qf${d} = Opnd(${off}, ${D4}u, false);`
        : `  let qf${d} = subgroupMatrixLoad<${LEFT}, row_major>(&Q, ${off}, ${D4}u);`,
    );
  }
  for (let d = 0; d < ND; d++) p(`  var o${d} = ${em ? "Frag()" : `${RES}()`};`);
  p("  var m: f32 = NEG;");
  p("  var l: f32 = 0.0;");
  p("  let row = r0 + lane;");
  p(`  let nTiles = (min(q0 + ${BQ}u, ${seq}u) + ${BK - 1}u) / ${BK}u;`);
  p("  for (var t = 0u; t < nTiles; t++) {");
  p(`    let k0 = t * ${BK}u;`);
  p("    workgroupBarrier();");
  p(`    for (var x = lid; x < ${BK * D4}u; x += ${T}u) {`);
  p(`      let src = kb4 + min(k0 + x / ${D4}u, ${seq - 1}u) * ${D4}u + x % ${D4}u;`);
  p(`      let dst = (x / ${D4}u) * ${SK4}u + x % ${D4}u;`);
  p("      Ks[dst] = K[src];");
  p("      Vs[dst] = V[src];");
  p("    }");
  p("    workgroupBarrier();");
  // S = Q Kᵀ: right operand (k = d, n = key) is Ks[key][d], i.e. Ks read column-major.
  p(`    var s = ${em ? "Frag()" : `${RES}()`};`);
  for (let d = 0; d < ND; d++) {
    p(
      em
        ? `    s = emuMmaQK(qf${d}, Opnd(${d * 4}u, ${SK4}u, true), s, lane);`
        : `    s = subgroupMatrixMultiplyAccumulate(qf${d}, subgroupMatrixLoad<${RIGHT}, col_major>(&Ks, ${
          d * 4
        }u, ${SK4}u), s);`,
    );
  }
  p(em ? "    emuStoreSc(s, scr, 16u, lane);" : "    subgroupMatrixStore<row_major>(&Sc, scr, s, 16u);");
  p("    workgroupBarrier();");
  p("    if (lane < 16u) {");
  p("      var mx = m;");
  for (let j = 0; j < BK; j++) {
    p(`      let k${j} = k0 + ${j}u;`);
    p(`      let s${j} = select(Sc[scr + lane * 16u + ${j}u] * ${sc}, NEG, k${j} > row);`);
    p(`      mx = max(mx, s${j});`);
  }
  p("      let al = exp2(m - mx);");
  p("      m = mx;");
  for (let j = 0; j < BK; j++) p(`      let p${j} = select(0.0, exp2(s${j} - mx), s${j} > -1.0e38);`);
  p(`      l = l * al + ${Array.from({ length: BK }, (_, j) => `p${j}`).join(" + ")};`);
  for (let q = 0; q < BK / 4; q++) {
    p(
      `      Ps[(sg * 16u + lane) * ${SP4}u + ${q}u] = vec4<f16>(vec4<f32>(p${4 * q}, p${4 * q + 1}, p${
        4 * q + 2
      }, p${4 * q + 3}));`,
    );
  }
  p("      Al[sg * 16u + lane] = al;");
  p("    }");
  p("    workgroupBarrier();");
  // Rescale O by α per row through the scratch ([16 rows][D] per subgroup).
  for (let d = 0; d < ND; d++) {
    p(
      em
        ? `    emuStoreSc(o${d}, scr + ${d * 16}u, ${D}u, lane);`
        : `    subgroupMatrixStore<row_major>(&Sc, scr + ${d * 16}u, o${d}, ${D}u);`,
    );
  }
  p("    workgroupBarrier();");
  p(`    for (var e = lane; e < ${SCR}u; e += ${SG}u) {`);
  p(`      Sc[scr + e] = Sc[scr + e] * Al[sg * 16u + e / ${D}u];`);
  p("    }");
  p("    workgroupBarrier();");
  for (let d = 0; d < ND; d++) {
    p(
      em
        ? `    o${d} = emuLoadSc(scr + ${d * 16}u, ${D}u, lane);`
        : `    o${d} = subgroupMatrixLoad<${RES}, row_major>(&Sc, scr + ${d * 16}u, ${D}u);`,
    );
  }
  // O += P V.
  p(
    em
      ? `    let pf = Opnd(sg * ${16 * SP4}u, ${SP4}u, false);`
      : `    let pf = subgroupMatrixLoad<${LEFT}, row_major>(&Ps, sg * ${16 * SP4}u, ${SP4}u);`,
  );
  for (let d = 0; d < ND; d++) {
    p(
      em
        ? `    o${d} = emuMmaPV(pf, Opnd(${d * 4}u, ${SK4}u, false), o${d}, lane);`
        : `    o${d} = subgroupMatrixMultiplyAccumulate(pf, subgroupMatrixLoad<${RIGHT}, row_major>(&Vs, ${
          d * 4
        }u, ${SK4}u), o${d});`,
    );
  }
  p("  }");
  // Epilogue: O / l through the scratch, LSE.
  p("  workgroupBarrier();");
  for (let d = 0; d < ND; d++) {
    p(
      em
        ? `  emuStoreSc(o${d}, scr + ${d * 16}u, ${D}u, lane);`
        : `  subgroupMatrixStore<row_major>(&Sc, scr + ${d * 16}u, o${d}, ${D}u);`,
    );
  }
  p("  if (lane < 16u) {");
  p("    Al[sg * 16u + lane] = select(0.0, 1.0 / l, l > 0.0);");
  p(`    LSE[h * ${seq}u + row] = select(NEG, (m + log2(l)) * ${f(Math.LN2)}, l > 0.0);`);
  p("  }");
  p("  workgroupBarrier();");
  p(`  for (var e = lane; e < ${16 * D4}u; e += ${SG}u) {`);
  p(`    let r = e / ${D4}u;`);
  p(`    let c4 = e % ${D4}u;`);
  p("    let b = scr + r * " + `${D}u + c4 * 4u;`);
  p("    let v = vec4<f32>(Sc[b], Sc[b + 1u], Sc[b + 2u], Sc[b + 3u]);");
  p(`    O[h * ${seq * D4}u + (r0 + r) * ${D4}u + c4] = v * Al[sg * 16u + r];`);
  p("  }");
  p("}");
  if (em) p(emulation(SG));
  return L.join("\n") + "\n";
};

/** Plain-WGSL stand-ins (same conventions as `matmul_sgmat.ts`'s emulation). */
const emulation = (SG: number): string => {
  const per = 256 / SG;
  const mma = (name: string, aArr: string, bArr: string) =>
    `fn ${name}(a: Opnd, b: Opnd, acc: Frag, lane: u32) -> Frag {
  var d = acc;
  for (var t = 0u; t < ${per}u; t++) {
    let e = lane + ${SG}u * t;
    let r = e / 16u;
    let c = e % 16u;
    var s = d.v[t];
    for (var k = 0u; k < 16u; k++) {
      let ia = opIdx(a, r, k);
      let ib = opIdx(b, k, c);
      s += f32(${aArr}[ia / 4u][ia % 4u]) * f32(${bArr}[ib / 4u][ib % 4u]);
    }
    d.v[t] = s;
  }
  return d;
}`;
  return `
struct Frag { v: array<f32, ${per}> }
struct Opnd { off: u32, stride: u32, colMajor: bool }
fn opIdx(o: Opnd, r: u32, c: u32) -> u32 {
  return select((o.off + r * o.stride) * 4u + c, (o.off + c * o.stride) * 4u + r, o.colMajor);
}
${mma("emuMmaQK", "Q", "Ks")}
${mma("emuMmaPV", "Ps", "Vs")}
fn emuStoreSc(f: Frag, off: u32, stride: u32, lane: u32) {
  for (var t = 0u; t < ${per}u; t++) {
    let e = lane + ${SG}u * t;
    Sc[off + (e / 16u) * stride + e % 16u] = f.v[t];
  }
}
fn emuLoadSc(off: u32, stride: u32, lane: u32) -> Frag {
  var f: Frag;
  for (var t = 0u; t < ${per}u; t++) {
    let e = lane + ${SG}u * t;
    f.v[t] = Sc[off + (e / 16u) * stride + e % 16u];
  }
  return f;
}`;
};
