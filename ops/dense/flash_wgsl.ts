/**
 * WGSL generator for causal flash attention (online softmax, GQA, LSE out), dense or block-sparse (BSR).
 *
 * One workgroup of 128 invocations owns `bq` query rows of one query head and walks key tiles of `bk` keys:
 * K and V tiles are staged in workgroup memory (in the input dtype), the raw scores of the tile go through
 * workgroup memory once for the row max, and each invocation keeps an unrolled register tile of
 * `bq/16` rows × `bk/8` scores and `bq/16` rows × `headDim/32` vec4 output columns; loads are vec4 (the register tiles are written
 * out as scalar variables by this generator; runtime-indexed arrays are much slower on NVIDIA). Scores and
 * accumulation are f32; inputs may be f16 (`enable f16`).
 *
 * Sparse mode walks the BSR list of the workgroup's query block (`indptr [heads, qBlocks+1]`,
 * `indices [heads, nnzCap]`, ascending key blocks of `blockK` keys) instead of all causal tiles; with a full
 * mask it runs exactly the dense schedule, so it returns the same bits.
 * @module
 */

/** What to generate. All shapes are baked into the source (one kernel per shape). */
export interface FlashConfig {
  readonly heads: number;
  readonly kvHeads: number;
  readonly seq: number;
  readonly headDim: number;
  readonly dtype: "f32" | "f16";
  /** Softmax scale (usually 1/sqrt(headDim)). */
  readonly scale: number;
  /** Query rows per workgroup (multiple of 16). */
  readonly bq: number;
  /** Keys per tile (multiple of 8). */
  readonly bk: number;
  /** Stage the workgroup's Q tile in workgroup memory (needs more of it). */
  readonly qShared: boolean;
  /** Block-sparse mode: BSR blocks of `blockK` keys (multiple of `bk`); `blockQ` must equal `bq`. */
  readonly sparse?: { readonly blockK: number; readonly nnzCap: number };
}

const WG = 128;

/** Workgroup memory bytes a config needs (K, V tiles, score tile, optional Q tile). */
export const flashWorkgroupBytes = (
  c: Pick<FlashConfig, "dtype" | "bq" | "bk" | "headDim" | "qShared">,
): number => {
  const e = c.dtype === "f16" ? 2 : 4;
  // K and Q rows are padded by one vec4 (bank-conflict-free column reads)
  return 2 * c.bk * (c.headDim + 4) * e + c.bq * c.bk * 4 + (c.qShared ? c.bq * (c.headDim + 4) * e : 0) + 16;
};

/**
 * Pick tile sizes for a workgroup-memory budget (bytes): `bq` is fixed by the caller (the sparse block),
 * `bk` the largest of 64/32/16/8 dividing `keyBlock` that fits, then Q staging if it still fits.
 */
export const chooseTiles = (
  dtype: "f32" | "f16",
  headDim: number,
  bq: number,
  keyBlock: number,
  budget: number,
): { bk: number; qShared: boolean } => {
  for (const bk of [64, 32, 16, 8]) {
    if (keyBlock % bk !== 0 || bk > keyBlock) continue;
    if (flashWorkgroupBytes({ dtype, bq, bk, headDim, qShared: false }) > budget) continue;
    const qShared = flashWorkgroupBytes({ dtype, bq, bk, headDim, qShared: true }) <= budget;
    return { bk, qShared };
  }
  return { bk: 8, qShared: false };
};

const f = (x: number): string => {
  const s = x.toPrecision(9);
  return s.includes(".") || s.includes("e") ? s : `${s}.0`;
};

/** Stable cache key for a config. */
export const flashKey = (c: FlashConfig): string =>
  `flash:${
    c.sparse ? `bsr${c.sparse.blockK}x${c.sparse.nnzCap}` : "dense"
  }:${c.heads}/${c.kvHeads}:${c.seq}x${c.headDim}:${c.dtype}:` +
  `${c.bq}x${c.bk}:${c.qShared ? "qs" : "qg"}:${f(c.scale)}`;

/** Generate the WGSL source. Bindings: q, k, v, [indptr, indices,] o (f32), lse (f32). */
export const flashWgsl = (c: FlashConfig): string => {
  const { heads, kvHeads, seq, headDim: D, dtype, bq, bk } = c;
  if (bq % 16 !== 0 || bk % 8 !== 0 || D % 32 !== 0) {
    throw new RangeError(`bad tiles bq=${bq} bk=${bk} D=${D}`);
  }
  // Register tile per invocation: TM rows × TN keys of scores, TM rows × TV vec4 columns of output.
  const TM = bq / 16, TN = bk / 8, D4 = D / 4, TV = D4 / 8, P4 = D4 + 1;
  const T = dtype;
  const V4 = `vec4<${T}>`;
  const group = heads / kvHeads;
  const qBlocks = Math.ceil(seq / bq);
  const sc = f(c.scale * Math.LOG2E);
  const L: string[] = [];
  const p = (s: string) => L.push(s);
  if (dtype === "f16") p("enable f16;");
  let b = 0;
  p(`@group(0) @binding(${b++}) var<storage, read> Q: array<${V4}>;`);
  p(`@group(0) @binding(${b++}) var<storage, read> K: array<${V4}>;`);
  p(`@group(0) @binding(${b++}) var<storage, read> V: array<${V4}>;`);
  if (c.sparse) {
    p(`@group(0) @binding(${b++}) var<storage, read> INDPTR: array<i32>;`);
    p(`@group(0) @binding(${b++}) var<storage, read> INDICES: array<i32>;`);
  }
  p(`@group(0) @binding(${b++}) var<storage, read_write> O: array<vec4<f32>>;`);
  p(`@group(0) @binding(${b++}) var<storage, read_write> LSE: array<f32>;`);
  p(`var<workgroup> Ks: array<${V4}, ${bk * P4}>;`);
  p(`var<workgroup> Vs: array<${V4}, ${bk * D4}>;`);
  p(`var<workgroup> Ps: array<f32, ${bq * bk}>;`);
  if (c.qShared) p(`var<workgroup> Qs: array<${V4}, ${bq * P4}>;`);
  if (c.sparse) p(`var<workgroup> uni: array<i32, 2>;`);
  p(`const NEG: f32 = -3.0e38;`);
  p(`@compute @workgroup_size(${WG})`);
  p(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {`);
  p(`  let qt = wid.x; let h = wid.y;`);
  p(`  let kvh = h / ${group}u;`);
  p(`  let q0 = qt * ${bq}u;`);
  p(`  let qbase = h * ${seq * D4}u; let kbase = kvh * ${seq * D4}u;`);
  p(`  let rg = tid / 8u; let cg = tid % 8u;`);
  for (let i = 0; i < TM; i++) {
    p(`  let row${i} = q0 + rg * ${TM}u + ${i}u; let rl${i} = min(row${i}, ${seq - 1}u);`);
    p(`  var m${i}: f32 = NEG; var l${i}: f32 = 0.0;`);
    for (let v = 0; v < TV; v++) p(`  var o${i}_${v} = vec4<f32>(0.0);`);
  }
  if (c.qShared) {
    p(`  for (var x = tid; x < ${bq * D4}u; x += ${WG}u) {`);
    p(`    let r = min(q0 + x / ${D4}u, ${seq - 1}u);`);
    p(`    Qs[(x / ${D4}u) * ${P4}u + x % ${D4}u] = Q[qbase + r * ${D4}u + x % ${D4}u];`);
    p(`  }`);
  }
  const body: string[] = [];
  const bp = (s: string) => body.push(s);
  bp(`    workgroupBarrier();`);
  bp(`    for (var x = tid; x < ${bk * D4}u; x += ${WG}u) {`);
  bp(`      let src = kbase + min(k0 + x / ${D4}u, ${seq - 1}u) * ${D4}u + x % ${D4}u;`);
  bp(`      Ks[(x / ${D4}u) * ${P4}u + x % ${D4}u] = K[src]; Vs[x] = V[src];`);
  bp(`    }`);
  bp(`    workgroupBarrier();`);
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) bp(`    var s${i}_${j}: f32 = 0.0;`);
  bp(`    for (var d = 0u; d < ${D4}u; d++) {`);
  for (let i = 0; i < TM; i++) {
    const qi = c.qShared ? `Qs[(rg * ${TM}u + ${i}u) * ${P4}u + d]` : `Q[qbase + rl${i} * ${D4}u + d]`;
    bp(`      let a${i} = vec4<f32>(${qi});`);
  }
  for (let j = 0; j < TN; j++) bp(`      let b${j} = vec4<f32>(Ks[(${j}u * 8u + cg) * ${P4}u + d]);`);
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN; j++) bp(`      s${i}_${j} = s${i}_${j} + dot(a${i}, b${j});`);
  }
  bp(`    }`);
  for (let j = 0; j < TN; j++) bp(`    let key${j} = k0 + ${j}u * 8u + cg;`);
  for (let i = 0; i < TM; i++) {
    for (let j = 0; j < TN; j++) {
      bp(
        `    Ps[(rg * ${TM}u + ${i}u) * ${bk}u + ${j}u * 8u + cg] = select(NEG, s${i}_${j} * ${sc}, key${j} <= row${i} && key${j} < ${seq}u);`,
      );
    }
  }
  bp(`    workgroupBarrier();`);
  for (let i = 0; i < TM; i++) {
    bp(`    var mt${i}: f32 = m${i};`);
    bp(
      `    for (var kk = 0u; kk < ${bk}u; kk++) { mt${i} = max(mt${i}, Ps[(rg * ${TM}u + ${i}u) * ${bk}u + kk]); }`,
    );
    bp(`    let al${i} = exp2(m${i} - mt${i}); m${i} = mt${i}; l${i} = l${i} * al${i};`);
    for (let v = 0; v < TV; v++) bp(`    o${i}_${v} = o${i}_${v} * al${i};`);
  }
  bp(`    for (var kk = 0u; kk < ${bk}u; kk++) {`);
  for (let i = 0; i < TM; i++) {
    bp(`      let sv${i} = Ps[(rg * ${TM}u + ${i}u) * ${bk}u + kk];`);
    bp(`      let p${i} = select(0.0, exp2(sv${i} - m${i}), sv${i} > -1.0e38);`);
    bp(`      l${i} = l${i} + p${i};`);
  }
  for (let v = 0; v < TV; v++) {
    bp(`      let v${v} = vec4<f32>(Vs[kk * ${D4}u + ${v}u * 8u + cg]);`);
    for (let i = 0; i < TM; i++) bp(`      o${i}_${v} = fma(vec4<f32>(p${i}), v${v}, o${i}_${v});`);
  }
  bp(`    }`);

  if (!c.sparse) {
    p(`  let nTiles = (min(q0 + ${bq}u, ${seq}u) + ${bk - 1}u) / ${bk}u;`);
    p(`  for (var t = 0u; t < nTiles; t++) {`);
    p(`    let k0 = t * ${bk}u;`);
    L.push(...body);
    p(`  }`);
  } else {
    const sub = c.sparse.blockK / bk;
    p(`  if (tid == 0u) { uni[0] = INDPTR[h * ${qBlocks + 1}u + qt]; uni[1] = INDPTR[h * ${
      qBlocks + 1
    }u + qt + 1u]; }`);
    p(`  let e0 = u32(workgroupUniformLoad(&uni[0]));`);
    p(`  let e1 = u32(workgroupUniformLoad(&uni[1]));`);
    p(`  let qlast = min(q0 + ${bq - 1}u, ${seq - 1}u);`);
    p(`  for (var e = e0; e < e1; e++) {`);
    p(`    workgroupBarrier();`);
    p(`    if (tid == 0u) { uni[0] = INDICES[h * ${c.sparse.nnzCap}u + e]; }`);
    p(`    let kb = u32(workgroupUniformLoad(&uni[0]));`);
    p(`    for (var sb = 0u; sb < ${sub}u; sb++) {`);
    p(`      let k0 = kb * ${c.sparse.blockK}u + sb * ${bk}u;`);
    p(`      if (k0 > qlast) { break; }`);
    L.push(...body.map((s) => "  " + s));
    p(`    }`);
    p(`  }`);
  }
  for (let i = 0; i < TM; i++) {
    p(`  if (row${i} < ${seq}u) {`);
    p(`    let inv${i} = select(0.0, 1.0 / l${i}, l${i} > 0.0);`);
    for (let v = 0; v < TV; v++) {
      p(`    O[qbase + row${i} * ${D4}u + ${v}u * 8u + cg] = o${i}_${v} * inv${i};`);
    }
    p(`    if (cg == 0u) { LSE[h * ${seq}u + row${i}] = select(NEG, (m${i} + log2(l${i})) * ${
      f(Math.LN2)
    }, l${i} > 0.0); }`);
    p(`  }`);
  }
  p(`}`);
  return L.join("\n");
};
