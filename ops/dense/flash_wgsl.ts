/**
 * WGSL generator for causal flash attention (online softmax, GQA, LSE out), dense or block-sparse (BSR).
 *
 * One workgroup of 128 invocations owns `bq` query rows of one query head and walks key tiles of `bk` keys
 * (only tiles left of the diagonal; the causal mask is evaluated only on tiles that reach the diagonal or the
 * sequence end). K and V tiles are converted to f32 once when staged in workgroup memory (K rows padded by a
 * vec4 for conflict-free column reads). Invocation (rg, cg) = (tid / 8, tid % 8) keeps unrolled register tiles
 * of `bq/16` rows × `bk/8` keys of S = QKᵀ (keys j·8 + cg) and `bq/16` rows × `headDim/32` vec4 output columns
 * (columns v·8 + cg); scores are prescaled by scale·log2(e) and exponentiated with exp2 by their owner only.
 * The row max goes through a [bq × 8] table of per-invocation partials in workgroup memory; the row sum stays
 * per invocation and is reduced through the same table once at the end; P is stored once and read as vec4 in
 * the PV loop. No runtime-indexed function-scope arrays (the register tiles are named scalars/vec4s: such
 * arrays land in slow memory on NVIDIA). Scores and accumulation are f32; inputs may be f16 (`enable f16`).
 *
 * Sparse mode walks the BSR list of the workgroup's query block (`indptr [heads, qBlocks+1]`,
 * `indices [heads, nnzCap]`, ascending key blocks of `blockK` keys) instead of all causal tiles; with a full
 * mask it runs exactly the dense schedule, so it returns the same bits.
 *
 * Gather mode (`dense.indexAttn`) walks three disjoint key sets of the query block, as HiP (ICLR 2025) and
 * TokenSelect attend: the sink `[0, sink)`, the block's token index list (`indices [selHeads, qBlocks, kCap]`,
 * ascending, −1 padded; gathered `bk` entries per tile, a key visible to query position `p` only when
 * `sink ≤ key ≤ p − window`) and the local window (contiguous keys `(p − window, p]`). Queries sit at
 * positions `kvSeq − seq + i` (bottom-right causal alignment), so a decode step is `seq = 1`.
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
  /**
   * Row stride between K/V heads (rows; default `seq`): head `g` of K and V starts at row `g · kvStride`, so a
   * KV cache `[kvHeads, capacity, headDim]` holding `seq` valid rows per head can be read in place.
   */
  readonly kvStride?: number;
  /** Gather mode (see the module doc); `bq` is the index list's query block. */
  readonly gather?: {
    /** Key rows (≥ `seq`); query `i` sits at position `kvSeq − seq + i`. */
    readonly kvSeq: number;
    /** Index list entries per (selection head, query block). */
    readonly kCap: number;
    /** Heads of the index list: `heads` (one list per query head) or 1 (shared by all heads). */
    readonly selHeads: number;
    /** Sink tokens `[0, sink)`, always visible (causally). */
    readonly sink: number;
    /** Local window in tokens: query position `p` sees keys `(p − window, p]` (0: none). */
    readonly window: number;
  };
}

const WG = 128;

/** Workgroup memory bytes a config needs (f32 K, V tiles, P tile, row-max partials, optional Q tile). */
export const flashWorkgroupBytes = (
  c: Pick<FlashConfig, "dtype" | "bq" | "bk" | "headDim" | "qShared">,
): number => {
  const e = c.dtype === "f16" ? 2 : 4;
  // K and V are staged as f32 whatever the input dtype (converted once); K and Q rows are padded by one vec4
  // (bank-conflict-free column reads); 8 row-max partials per row.
  return c.bk * (c.headDim + 4) * 4 + c.bk * c.headDim * 4 + c.bq * c.bk * 4 + c.bq * 8 * 4 +
    (c.qShared ? c.bq * (c.headDim + 4) * e : 0) + 16;
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
  `flash2:${
    c.gather
      ? `gather${c.gather.kvSeq}x${c.gather.kCap}/${c.gather.selHeads}s${c.gather.sink}w${c.gather.window}`
      : c.sparse
      ? `bsr${c.sparse.blockK}x${c.sparse.nnzCap}`
      : "dense"
  }:${c.heads}/${c.kvHeads}:${c.seq}x${c.headDim}:${c.dtype}:` +
  `${c.bq}x${c.bk}:${c.qShared ? "qs" : "qg"}:${f(c.scale)}` +
  (c.kvStride !== undefined && c.kvStride !== c.seq ? `:kv${c.kvStride}` : "");

/** Generate the WGSL source. Bindings: q, k, v, [indptr, indices,] o (f32), lse (f32). */
export const flashWgsl = (c: FlashConfig): string => {
  const { heads, kvHeads, seq, headDim: D, dtype, bq, bk } = c;
  if (bq % 16 !== 0 || bk % 8 !== 0 || D % 32 !== 0) {
    throw new RangeError(`bad tiles bq=${bq} bk=${bk} D=${D}`);
  }
  // Invocation (rg = tid / 8, cg = tid % 8) owns rows rg·TM + i (i < TM) and keys j·8 + cg (j < TN) of a tile:
  // TM × TN scores and TM rows × TV vec4 output columns (columns v·8 + cg), all unrolled named registers.
  const TM = bq / 16, TN = bk / 8, D4 = D / 4, TV = D4 / 8, P4 = D4 + 1, BK4 = bk / 4;
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
  } else if (c.gather) {
    p(`@group(0) @binding(${b++}) var<storage, read> INDICES: array<i32>;`);
  }
  p(`@group(0) @binding(${b++}) var<storage, read_write> O: array<vec4<f32>>;`);
  p(`@group(0) @binding(${b++}) var<storage, read_write> LSE: array<f32>;`);
  p(`var<workgroup> Ks: array<vec4<f32>, ${bk * P4}>;`);
  p(`var<workgroup> Vs: array<vec4<f32>, ${bk * D4}>;`);
  // P tile [bq rows][bk keys] viewed as vec4 of 4 consecutive keys; row-max / row-sum partials [bq][8].
  p(`var<workgroup> Ps: array<vec4<f32>, ${bq * BK4}>;`);
  p(`var<workgroup> Mx: array<vec4<f32>, ${bq * 2}>;`);
  if (c.qShared) p(`var<workgroup> Qs: array<${V4}, ${bq * P4}>;`);
  if (c.sparse || c.gather) p(`var<workgroup> uni: array<i32, 2>;`);
  if (c.gather) p(`var<workgroup> Kid: array<i32, ${bk}>;`);
  p(`const NEG: f32 = -3.0e38;`);
  p(`@compute @workgroup_size(${WG})`);
  p(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {`);
  p(`  let qt = wid.x; let h = wid.y;`);
  p(`  let kvh = h / ${group}u;`);
  p(`  let q0 = qt * ${bq}u;`);
  p(`  let qbase = h * ${seq * D4}u; let kbase = kvh * ${(c.kvStride ?? (c.gather?.kvSeq ?? seq)) * D4}u;`);
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
  const gat = c.gather;
  const kvRows = gat ? gat.kvSeq : seq;
  /**
   * One key tile: stage K/V rows `src(x)` (x = flat element of the tile), S = QKᵀ, mask, online softmax,
   * O += PV. `keyOf(j)` is the key of register column j; `masked(i, j)` whether row i must not see it.
   */
  const tile = (
    src: string,
    keyOf: (j: number) => string,
    masked: (i: number, j: number) => string,
    pre: readonly string[] = [],
  ): string[] => {
    const body: string[] = [];
    const bp = (s: string) => body.push(s);
    // Stage K (padded rows) and V of the tile as f32: converted once here, never in the inner loops.
    bp(`    workgroupBarrier();`);
    for (const x of pre) bp(x);
    bp(`    for (var x = tid; x < ${bk * D4}u; x += ${WG}u) {`);
    bp(`      let src = kbase + ${src} * ${D4}u + x % ${D4}u;`);
    bp(`      Ks[(x / ${D4}u) * ${P4}u + x % ${D4}u] = vec4<f32>(K[src]); Vs[x] = vec4<f32>(V[src]);`);
    bp(`    }`);
    bp(`    workgroupBarrier();`);
    // S = Q Kᵀ, TM × TN register tile.
    for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) bp(`    var s${i}_${j}: f32 = 0.0;`);
    bp(`    for (var d = 0u; d < ${D4}u; d++) {`);
    for (let i = 0; i < TM; i++) {
      const qi = c.qShared ? `Qs[(rg * ${TM}u + ${i}u) * ${P4}u + d]` : `Q[qbase + rl${i} * ${D4}u + d]`;
      bp(`      let a${i} = vec4<f32>(${qi});`);
    }
    for (let j = 0; j < TN; j++) bp(`      let b${j} = Ks[(${j}u * 8u + cg) * ${P4}u + d];`);
    for (let i = 0; i < TM; i++) {
      for (let j = 0; j < TN; j++) bp(`      s${i}_${j} = fma(a${i}.x, b${j}.x, s${i}_${j});`);
      for (let j = 0; j < TN; j++) bp(`      s${i}_${j} = fma(a${i}.y, b${j}.y, s${i}_${j});`);
      for (let j = 0; j < TN; j++) bp(`      s${i}_${j} = fma(a${i}.z, b${j}.z, s${i}_${j});`);
      for (let j = 0; j < TN; j++) bp(`      s${i}_${j} = fma(a${i}.w, b${j}.w, s${i}_${j});`);
    }
    bp(`    }`);
    // Scale into log2 units; mask (causal / past the end) only where the tile reaches the diagonal or the end.
    if (!gat) bp(`    let edge = k0 + ${bk - 1}u > q0 || k0 + ${bk}u > ${seq}u;`);
    for (let j = 0; j < TN; j++) bp(`    let key${j} = ${keyOf(j)};`);
    for (let i = 0; i < TM; i++) {
      for (let j = 0; j < TN; j++) bp(`    s${i}_${j} = select(s${i}_${j} * ${sc}, NEG, ${masked(i, j)});`);
    }
    // Row max: partial over own keys → Mx[row][cg] → max of the 8 partials.
    for (let i = 0; i < TM; i++) {
      const terms = Array.from({ length: TN }, (_, j) => `s${i}_${j}`);
      let e = terms[0];
      for (let j = 1; j < TN; j++) e = `max(${e}, ${terms[j]})`;
      bp(`    Mx[(rg * ${TM}u + ${i}u) * 2u + cg / 4u][cg % 4u] = ${e};`);
    }
    bp(`    workgroupBarrier();`);
    for (let i = 0; i < TM; i++) {
      bp(
        `    let mxa${i} = Mx[(rg * ${TM}u + ${i}u) * 2u]; let mxb${i} = Mx[(rg * ${TM}u + ${i}u) * 2u + 1u];`,
      );
      bp(`    let mx${i} = max(max(mxa${i}, mxb${i}), vec4<f32>(m${i}));`);
      bp(`    let mt${i} = max(max(mx${i}.x, mx${i}.y), max(mx${i}.z, mx${i}.w));`);
      bp(`    let al${i} = exp2(m${i} - mt${i}); m${i} = mt${i};`);
      for (let j = 0; j < TN; j++) {
        bp(`    let p${i}_${j} = select(0.0, exp2(s${i}_${j} - mt${i}), s${i}_${j} > -1.0e38);`);
      }
      let sum = `p${i}_0`;
      for (let j = 1; j < TN; j++) sum = `${sum} + p${i}_${j}`;
      bp(`    l${i} = l${i} * al${i} + (${sum});`);
      for (let v = 0; v < TV; v++) bp(`    o${i}_${v} = o${i}_${v} * al${i};`);
      for (let j = 0; j < TN; j++) {
        bp(`    Ps[(rg * ${TM}u + ${i}u) * ${BK4}u + ${j * 2}u + cg / 4u][cg % 4u] = p${i}_${j};`);
      }
    }
    bp(`    workgroupBarrier();`);
    // O += P V: 4 keys per step, P read as vec4, V columns v·8 + cg.
    bp(`    for (var kq = 0u; kq < ${BK4}u; kq++) {`);
    for (let i = 0; i < TM; i++) bp(`      let pv${i} = Ps[(rg * ${TM}u + ${i}u) * ${BK4}u + kq];`);
    for (const [cc, comp] of ["x", "y", "z", "w"].entries()) {
      for (let v = 0; v < TV; v++) {
        bp(`      let v${comp}${v} = Vs[(kq * 4u + ${cc}u) * ${D4}u + ${v}u * 8u + cg];`);
        for (let i = 0; i < TM; i++) {
          bp(`      o${i}_${v} = fma(vec4<f32>(pv${i}.${comp}), v${comp}${v}, o${i}_${v});`);
        }
      }
    }
    bp(`    }`);
    return body;
  };
  const contiguous = `min(k0 + x / ${D4}u, ${kvRows - 1}u)`;
  const body = tile(
    contiguous,
    (j) => `k0 + ${j}u * 8u + cg`,
    (i, j) => `edge && (key${j} > row${i} || key${j} >= ${seq}u)`,
  );

  if (gat) {
    const off = gat.kvSeq - seq;
    const sink = Math.min(gat.sink, gat.kvSeq), W = gat.window;
    const qB = Math.ceil(seq / bq);
    for (let i = 0; i < TM; i++) p(`  let ap${i} = i32(row${i}) + ${off};`);
    p(`  let pfirst = i32(q0) + ${off};`);
    p(`  let plast = i32(min(q0 + ${bq - 1}u, ${seq - 1}u)) + ${off};`);
    const cont = (j: number) => `i32(k0 + ${j}u * 8u + cg)`;
    // 1. Sink keys [0, sink), causal.
    if (sink > 0) {
      p(`  for (var k0 = 0u; k0 < ${sink}u && i32(k0) <= plast; k0 += ${bk}u) {`);
      L.push(...tile(contiguous, cont, (i, j) => `key${j} >= ${sink} || key${j} > ap${i}`));
      p(`  }`);
    }
    // 2. The index list: visible when sink ≤ key ≤ p − window.
    p(`  let lbase = ${gat.selHeads === 1 ? "0u" : "h"} * ${qB * gat.kCap}u + qt * ${gat.kCap}u;`);
    p(`  for (var e = 0u; e < ${gat.kCap}u; e += ${bk}u) {`);
    p(`    workgroupBarrier();`);
    p(`    if (tid == 0u) { uni[0] = INDICES[lbase + e]; }`);
    p(`    let first = workgroupUniformLoad(&uni[0]);`);
    p(`    if (first < 0 || first + ${W} > plast) { break; }`);
    L.push(
      ...tile(
        `u32(max(Kid[x / ${D4}u], 0))`,
        (j) => `Kid[${j}u * 8u + cg]`,
        (i, j) => `key${j} < ${sink} || key${j} + ${W} > ap${i} || key${j} >= ${gat.kvSeq}`,
        [
          `    if (tid < ${bk}u) { Kid[tid] = select(-1, INDICES[lbase + e + tid], e + tid < ${gat.kCap}u); }`,
          `    workgroupBarrier();`,
        ],
      ).map((s) => "  " + s),
    );
    p(`  }`);
    // 3. The local window (p − window, p], keys ≥ sink.
    if (W > 0) {
      p(`  let wlo = u32(max(${sink}, pfirst - ${W - 1}));`);
      p(`  for (var k0 = wlo; i32(k0) <= plast; k0 += ${bk}u) {`);
      L.push(
        ...tile(
          contiguous,
          cont,
          (i, j) => `key${j} + ${W} <= ap${i} || key${j} > ap${i} || key${j} >= ${gat.kvSeq}`,
        ),
      );
      p(`  }`);
    }
  } else if (!c.sparse) {
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
  // Row sums: reduce the 8 per-invocation partials through Mx.
  p(`  workgroupBarrier();`);
  for (let i = 0; i < TM; i++) p(`  Mx[(rg * ${TM}u + ${i}u) * 2u + cg / 4u][cg % 4u] = l${i};`);
  p(`  workgroupBarrier();`);
  for (let i = 0; i < TM; i++) {
    p(`  let ls${i} = Mx[(rg * ${TM}u + ${i}u) * 2u] + Mx[(rg * ${TM}u + ${i}u) * 2u + 1u];`);
    p(`  let lt${i} = (ls${i}.x + ls${i}.y) + (ls${i}.z + ls${i}.w);`);
    p(`  if (row${i} < ${seq}u) {`);
    p(`    let inv${i} = select(0.0, 1.0 / lt${i}, lt${i} > 0.0);`);
    for (let v = 0; v < TV; v++) {
      p(`    O[qbase + row${i} * ${D4}u + ${v}u * 8u + cg] = o${i}_${v} * inv${i};`);
    }
    p(`    if (cg == 0u) { LSE[h * ${seq}u + row${i}] = select(NEG, (m${i} + log2(lt${i})) * ${
      f(Math.LN2)
    }, lt${i} > 0.0); }`);
    p(`  }`);
  }
  p(`}`);
  return L.join("\n");
};
