/**
 * `dense.cacheAttn`: causal GQA attention of a chunk of queries against a KV cache whose valid length is a
 * runtime scalar — the decode step and the later chunks of a chunked prefill, on the cache as state.
 *
 * The cache holds `pos` earlier tokens plus this call's `seq` (already appended: `model.rope` writes them);
 * query `i` sits at absolute position `pos + i` and sees keys `j ≤ pos + i` (bottom-right causal alignment, as
 * FlashAttention ≥ 2.1 for `seqQ ≠ seqK`), and with a local window `w > 0` only keys `j > pos + i − w`.
 *
 * GPU: split-KV ("flash-decoding"): keys in chunks of `splitLen`, one workgroup per (query, head, chunk)
 * keeping an online-softmax state (FlashAttention-2, Dao 2023, §3.1), merged by a second kernel that also
 * writes the LSE. The number of chunks follows `pos` at run time (workgroups and uniforms are recomputed; no
 * kernel or buffer changes), so one lowered program serves every decode step up to the capacity.
 * @module
 */
import { Effect, Schema } from "effect";
import {
  allocHost,
  anyDims,
  type CpuContext,
  decodeParamsSync,
  ShapeError,
  tensorType,
} from "@longctx/graph";
import type {
  Cost,
  DescsOf,
  GpuLowering,
  HostOf,
  Kernel,
  Operator,
  TensorDesc,
  TensorType,
} from "@longctx/graph";
import { effectiveScale } from "./common.ts";
import { newSoftmaxKernel, type SoftmaxKernel } from "./softmax_wasm.ts";

let kernelInstance: SoftmaxKernel | null | undefined;
/** The process's WebAssembly softmax kernel (one instance, created on first use), or undefined without SIMD. */
const softmaxKernel = (): SoftmaxKernel | undefined => {
  if (kernelInstance === undefined) kernelInstance = newSoftmaxKernel() ?? null;
  return kernelInstance ?? undefined;
};

/** The schema of {@link CacheAttnParams}: every field optional on input, with the default filled in on decode. */
export type CacheAttnParamsSchema = Schema.Struct<{
  readonly scale: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly window: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly layout: Schema.withDecodingDefaultKey<Schema.Literals<readonly ["heads", "rows"]>>;
  readonly splitKeys: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly compacted: Schema.withDecodingDefaultKey<Schema.Boolean>;
}>;

/** Parameters of `dense.cacheAttn`. */
export const CacheAttnParams: CacheAttnParamsSchema = Schema.Struct({
  /** Softmax scale; 0 means 1/sqrt(headDim). */
  scale: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0)),
  ),
  /** Local window in tokens (0: none): query at position p sees keys (p − window, p]. */
  window: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0)),
  ),
  /**
   * Output layout: `"heads"` → `o [heads, seq, headDim]` (the attention operators' layout); `"rows"` →
   * `o [seq, heads·headDim]` (the layout the model's output projection reads; saves a transpose).
   */
  layout: Schema.Literals(["heads", "rows"]).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed("heads" as const)),
  ),
  /** Keys per split-KV chunk for short calls (multiple of 64). */
  splitKeys: Schema.Int.check(Schema.isGreaterThanOrEqualTo(64), Schema.isMultipleOf(64)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(256)),
  ),
  /**
   * The cache is a compacted key list of at most `capacity` rows (TokenSelect's sink ∪ selected ∪ local
   * window): the queries sit at `min(pos, capacity − seq)`, i.e. at the end of the list once the context
   * outgrows it, and `pos` may exceed the capacity.
   */
  compacted: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(false))),
});
/** Decoded `dense.cacheAttn` parameters. */
export type CacheAttnParams = typeof CacheAttnParams.Type;

/**
 * `dense.cacheAttn` parameters from a partial object, defaults filled (`cacheAttnParams()` = scale 1/√d, no
 * window, heads layout, 256-key splits). Throws a `ParamsError` naming the parameter for an impossible value
 * (e.g. `splitKeys: 100`) or an unknown key.
 */
export const cacheAttnParams = (p: Partial<CacheAttnParams> = {}): CacheAttnParams =>
  decodeParamsSync("dense.cacheAttn", CacheAttnParams, p);

/** Input ports of `dense.cacheAttn`: new queries and the layer's KV cache. */
export type CacheAttnInputs = {
  /** Queries of this call's tokens, `f32 [heads, seq, headDim]` (positions `pos … pos + seq − 1`). */
  readonly q: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Key cache, `f32 [kvHeads, capacity, headDim]`; rows `0 … pos + seq − 1` are read. */
  readonly kCache: TensorType<"f32", readonly ["kvHeads", "capacity", "headDim"]>;
  /** Value cache, `f32 [kvHeads, capacity, headDim]`. */
  readonly vCache: TensorType<"f32", readonly ["kvHeads", "capacity", "headDim"]>;
};
/** Output ports of `dense.cacheAttn`. */
export type CacheAttnOutputs = {
  /** Attention output: `f32 [heads, seq, headDim]` (`layout: "heads"`) or `f32 [seq, heads·headDim]` (`"rows"`). */
  readonly o: TensorType<"f32", readonly string[]>;
  /** Natural-log log-sum-exp of the scaled scores per query row, `f32 [heads, seq]`. */
  readonly lse: TensorType<"f32", readonly ["heads", "seq"]>;
};

const ports: { readonly inputs: CacheAttnInputs; readonly outputs: CacheAttnOutputs } = {
  inputs: {
    q: tensorType("f32", ["heads", "seq", "headDim"] as const),
    kCache: tensorType("f32", ["kvHeads", "capacity", "headDim"] as const),
    vCache: tensorType("f32", ["kvHeads", "capacity", "headDim"] as const),
  },
  outputs: { o: anyDims("f32"), lse: tensorType("f32", ["heads", "seq"] as const) },
};
type In = CacheAttnInputs;
type Out = CacheAttnOutputs;

const bad = (message: string, hint: string) => Effect.fail(new ShapeError({ message, hint }));

/** Split length for a cache of `capacity` rows and `seq` queries, so the partial states fit a binding. */
const splitGeometry = (seq: number, heads: number, d: number, capacity: number, splitKeys: number) => {
  const perSplit = seq * heads * (d + 2) * 4;
  const maxSplits = Math.max(1, Math.min(1024, Math.floor((256 * 2 ** 20) / perSplit)));
  let splitLen = splitKeys;
  while (Math.ceil(capacity / splitLen) > maxSplits) splitLen *= 2;
  return { splitLen, maxSplit: Math.ceil(capacity / splitLen) };
};

/** The scalar `pos` of a run, checked against the capacity (throws `RangeError`). */
const posOf = (
  scalars: CpuContext["scalars"] | undefined,
  seq: number,
  capacity: number,
  compacted = false,
): number => {
  const raw = scalars?.pos;
  if (raw === undefined || !Number.isInteger(raw) || raw < 0) throw new RangeError(`scalar pos = ${raw}`);
  const pos = compacted ? Math.min(raw, capacity - seq) : raw;
  if (pos + seq > capacity) {
    throw new RangeError(`pos ${pos} + ${seq} queries exceed the cache capacity ${capacity}`);
  }
  return pos;
};

const f = (x: number) => x.toExponential(9);

/**
 * A key filter of the split-KV kernels: the fused selection of a sparse decode. Each split first compacts the
 * keys of its range that the filter keeps (in ascending order, in workgroup memory), then runs the online
 * softmax over those only, so the arithmetic and the K/V reads follow the kept keys.
 */
export interface SplitKeyFilter {
  /** Kernel-key suffix naming the filter and its constants. */
  readonly key: string;
  /** WGSL module-scope declarations: the filter's bindings (group 0, from binding 6 on), constants, functions. */
  readonly decls: readonly string[];
  /** The buffers of the filter's bindings, in binding order (e.g. `"in:labels"`), all `read`. */
  readonly buffers: readonly string[];
  /** WGSL `bool` expression: whether query row `i` of head `h` attends key `key` (all `u32`). */
  readonly keep: string;
  /**
   * WGSL `bool` expression over `key`: the kept keys that count towards `density` (e.g. the fixed context's);
   * with it the lowering writes `out:density f32 [heads]`, those keys of query row 0 over `countOf`.
   */
  readonly counts?: string;
  /** The divisor of the count (e.g. the fixed context's length); default 1. */
  readonly countOf?: number;
  /** Check of a run's position (throws a `RangeError` for one the filter cannot serve). */
  readonly checkPos?: (pos: number) => void;
}

/** The most keys one split of a filtered split-KV kernel compacts (its workgroup list, 16 KiB). */
export const FILTER_SPLIT_MAX = 4096;

/**
 * Split-KV partial states (see the module doc). Workgroups `[seq, heads, nsplit]` of 64. With a `filter`,
 * each split compacts its kept keys first: thread `t` scans its `⌈splitLen / 64⌉` consecutive keys twice (count,
 * then write at its exclusive prefix), so the list is ascending and the result deterministic.
 */
const splitKernel = (
  H: number,
  KH: number,
  D: number,
  scale: number,
  window: number,
  filter?: SplitKeyFilter,
  splitLen = 0,
): Kernel => {
  const D4 = D / 4, R = D / 64, group = H / KH;
  const L: string[] = [];
  const p = (x: string) => L.push(x);
  p(`struct U { seq: u32, offset: u32, cap: u32, splitLen: u32, nsplit: u32, a: u32, b: u32, c: u32 }`);
  p(`@group(0) @binding(0) var<storage, read> Q: array<vec4<f32>>;`);
  p(`@group(0) @binding(1) var<storage, read> KC: array<vec4<f32>>;`);
  p(`@group(0) @binding(2) var<storage, read> VC: array<f32>;`);
  p(`@group(0) @binding(3) var<storage, read_write> PART: array<f32>;`);
  p(`@group(0) @binding(4) var<storage, read_write> ML: array<f32>;`);
  p(`@group(0) @binding(5) var<uniform> P: U;`);
  p(`var<workgroup> qs: array<vec4<f32>, ${D4}>;`);
  p(`var<workgroup> ps: array<f32, 64>;`);
  p(`const NEG: f32 = -3.0e38;`);
  if (filter) {
    if (filter.counts) {
      p(`@group(0) @binding(${6 + filter.buffers.length}) var<storage, read_write> CNT: array<u32>;`);
    }
    for (const x of filter.decls) p(x);
    p(`var<workgroup> sel: array<u32, ${splitLen}>;`);
    p(`var<workgroup> cnt: array<u32, 64>;`);
    p(`var<workgroup> total: u32;`);
  }
  p(`@compute @workgroup_size(64)`);
  p(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {`);
  p(`  let i = wid.x; let h = wid.y; let sp = wid.z;`);
  p(`  let kb = (h / ${group}u) * P.cap;`);
  p(`  for (var x = lid; x < ${D4}u; x += 64u) { qs[x] = Q[(h * P.seq + i) * ${D4}u + x] * ${f(scale)}; }`);
  p(`  workgroupBarrier();`);
  // Keys are rows of a block holding the global positions [P.a, P.a + P.b): query i (global P.offset + i)
  // sees rows < P.offset + i + 1 − P.a (none when the block starts past it), and at most P.b of them. A cache
  // is the block at 0 with P.b = pos + seq.
  p(`  let ke = select(0u, P.offset + i + 1u - P.a, P.offset + i + 1u > P.a);`);
  p(
    window > 0 ? `  let lo = select(0u, ke - ${window}u, ke > ${window}u);` : `  let lo = 0u;`,
  );
  p(`  let kvEnd = min(ke, P.b);`);
  p(`  let k0 = max(sp * P.splitLen, lo);`);
  p(`  let k1 = min(kvEnd, sp * P.splitLen + P.splitLen);`);
  // the tile loop's range and key: the split's keys, or the compacted list of the kept ones
  let first = "k0", end = "k1", keyAt = (x: string) => x;
  if (filter) {
    const per = Math.ceil(splitLen / 64);
    p(`  let a0 = min(k0 + lid * ${per}u, max(k0, k1));`);
    p(`  let a1 = min(k1, a0 + ${per}u);`);
    p(`  var c = 0u;`);
    if (filter.counts) p(`  var cf = 0u;`);
    p(`  for (var key = a0; key < a1; key++) {`);
    p(`    if (${filter.keep}) { c++;${filter.counts ? ` if (${filter.counts}) { cf++; }` : ""} }`);
    p(`  }`);
    p(`  cnt[lid] = c;`);
    p(`  workgroupBarrier();`);
    p(`  var at = 0u;`);
    p(`  for (var x = 0u; x < lid; x++) { at += cnt[x]; }`);
    p(`  if (lid == 63u) { total = at + c; }`);
    p(`  for (var key = a0; key < a1; key++) { if (${filter.keep}) { sel[at] = key; at++; } }`);
    if (filter.counts) {
      p(`  workgroupBarrier();`);
      p(`  cnt[lid] = cf;`);
      p(`  workgroupBarrier();`);
      p(`  if (lid == 0u && i == 0u) {`);
      p(`    var nf = 0u;`);
      p(`    for (var x = 0u; x < 64u; x++) { nf += cnt[x]; }`);
      p(`    CNT[h * P.nsplit + sp] = nf;`);
      p(`  }`);
    }
    p(`  let nsel = workgroupUniformLoad(&total);`);
    first = "0u";
    end = "nsel";
    keyAt = (x: string) => `sel[${x}]`;
  }
  p(`  var m = NEG; var l = 0.0;`);
  for (let r = 0; r < R; r++) p(`  var acc${r} = 0.0;`);
  p(`  for (var t0 = ${first}; t0 < ${end}; t0 += 64u) {`);
  p(`    let e = t0 + lid;`);
  p(`    var sc = NEG;`);
  p(`    if (e < ${end}) {`);
  p(`      let key = ${keyAt("e")};`);
  p(`      var d = 0.0;`);
  p(`      for (var x = 0u; x < ${D4}u; x++) { d += dot(qs[x], KC[(kb + key) * ${D4}u + x]); }`);
  p(`      sc = d;`);
  p(`    }`);
  p(`    ps[lid] = sc;`);
  p(`    workgroupBarrier();`);
  p(`    var mt = m;`);
  p(`    for (var j = 0u; j < 64u; j++) { mt = max(mt, ps[j]); }`);
  p(`    workgroupBarrier();`);
  p(`    ps[lid] = select(0.0, exp(sc - mt), e < ${end});`);
  p(`    workgroupBarrier();`);
  p(`    let al = exp(m - mt);`);
  p(`    m = mt;`);
  p(`    let n = min(64u, ${end} - t0);`);
  p(`    var sum = 0.0;`);
  for (let r = 0; r < R; r++) p(`    var pv${r} = 0.0;`);
  // P·V four keys at a time (their V loads independent, issued together), then the tile's rest
  p(`    var j = 0u;`);
  p(`    for (; j + 4u <= n; j += 4u) {`);
  for (let u = 0; u < 4; u++) {
    p(`      let p${u} = ps[j + ${u}u];`);
    p(`      let w${u} = (kb + ${keyAt(`t0 + j + ${u}u`)}) * ${D}u + lid;`);
  }
  p(`      sum += (p0 + p1) + (p2 + p3);`);
  for (let r = 0; r < R; r++) {
    const o = r * 64;
    p(`      let v${r}a = VC[w0 + ${o}u]; let v${r}b = VC[w1 + ${o}u]; let v${r}c = VC[w2 + ${o}u]; let v${r}d = VC[w3 + ${o}u];`);
    p(`      pv${r} = fma(p3, v${r}d, fma(p2, v${r}c, fma(p1, v${r}b, fma(p0, v${r}a, pv${r}))));`);
  }
  p(`    }`);
  p(`    for (; j < n; j++) {`);
  p(`      let pj = ps[j];`);
  p(`      sum += pj;`);
  p(`      let vrow = (kb + ${keyAt("t0 + j")}) * ${D}u + lid;`);
  for (let r = 0; r < R; r++) p(`      pv${r} = fma(pj, VC[vrow + ${r * 64}u], pv${r});`);
  p(`    }`);
  p(`    l = l * al + sum;`);
  for (let r = 0; r < R; r++) p(`    acc${r} = acc${r} * al + pv${r};`);
  p(`    workgroupBarrier();`);
  p(`  }`);
  p(`  let base = (i * ${H}u + h) * P.nsplit + sp;`);
  for (let r = 0; r < R; r++) p(`  PART[base * ${D}u + lid + ${r * 64}u] = acc${r};`);
  p(`  if (lid == 0u) { ML[base * 2u] = m; ML[base * 2u + 1u] = l; }`);
  p(`}`);
  const fb = filter
    ? [...filter.buffers.map(() => "read" as const), ...(filter.counts ? ["read_write" as const] : [])]
    : [];
  return {
    key: `dense.cacheAttn.split.${H}.${KH}.${D}.${scale}.w${window}${
      filter ? `.f${splitLen}.${filter.key}` : ""
    }`,
    wgsl: L.join("\n") + "\n",
    entryPoint: "main",
    bindings: ["read", "read", "read", "read_write", "read_write", "uniform", ...fb],
  };
};

/**
 * Merge of the partial states into `o` and `lse` (natural log, scaled scores). Workgroups `[seq, heads, 1]`.
 * A row without a key gets `lse = −3e38`, or with `negInf` −Infinity (the uniform's field `c` holds its bits).
 */
const combineKernel = (H: number, D: number, rows: boolean, countOf = 0, negInf = false): Kernel => {
  const R = D / 64;
  const L: string[] = [];
  const p = (x: string) => L.push(x);
  p(`struct U { seq: u32, offset: u32, cap: u32, splitLen: u32, nsplit: u32, a: u32, b: u32, c: u32 }`);
  p(`@group(0) @binding(0) var<storage, read> PART: array<f32>;`);
  p(`@group(0) @binding(1) var<storage, read> ML: array<f32>;`);
  p(`@group(0) @binding(2) var<storage, read_write> O: array<f32>;`);
  p(`@group(0) @binding(3) var<storage, read_write> LSE: array<f32>;`);
  p(`@group(0) @binding(4) var<uniform> P: U;`);
  if (countOf > 0) {
    p(`@group(0) @binding(5) var<storage, read> CNT: array<u32>;`);
    p(`@group(0) @binding(6) var<storage, read_write> DEN: array<f32>;`);
  }
  p(`@compute @workgroup_size(64)`);
  p(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {`);
  p(`  let i = wid.x; let h = wid.y;`);
  p(`  let base = (i * ${H}u + h) * P.nsplit;`);
  if (countOf > 0) {
    p(`  if (i == 0u && lid == 0u) {`);
    p(`    var nk = 0u;`);
    p(`    for (var s = 0u; s < P.nsplit; s++) { nk += CNT[h * P.nsplit + s]; }`);
    p(`    DEN[h] = f32(nk) / ${f(countOf)};`);
    p(`  }`);
  }
  p(`  var mx = -3.0e38;`);
  p(`  for (var s = 0u; s < P.nsplit; s++) { mx = max(mx, ML[(base + s) * 2u]); }`);
  p(`  var l = 0.0;`);
  for (let r = 0; r < R; r++) p(`  var o${r} = 0.0;`);
  p(`  for (var s = 0u; s < P.nsplit; s++) {`);
  p(`    let ls = ML[(base + s) * 2u + 1u];`);
  p(`    if (ls > 0.0) {`);
  p(`      let w = exp(ML[(base + s) * 2u] - mx);`);
  p(`      l += w * ls;`);
  for (let r = 0; r < R; r++) p(`      o${r} = fma(w, PART[(base + s) * ${D}u + lid + ${r * 64}u], o${r});`);
  p(`    }`);
  p(`  }`);
  p(`  let inv = select(0.0, 1.0 / l, l > 0.0);`);
  p(`  let ob = ${rows ? `(i * ${H}u + h) * ${D}u` : `(h * P.seq + i) * ${D}u`};`);
  for (let r = 0; r < R; r++) p(`  O[ob + lid + ${r * 64}u] = o${r} * inv;`);
  const empty = negInf ? "bitcast<f32>(P.c)" : "-3.0e38";
  p(`  if (lid == 0u) { LSE[h * P.seq + i] = select(${empty}, mx + log(l), l > 0.0); }`);
  p(`}`);
  return {
    key: `dense.cacheAttn.combine.${H}.${D}.${rows ? "rows" : "heads"}${countOf > 0 ? `.n${countOf}` : ""}${
      negInf ? ".ninf" : ""
    }`,
    wgsl: L.join("\n") + "\n",
    entryPoint: "main",
    bindings: [
      "read",
      "read",
      "read_write",
      "read_write",
      "uniform",
      ...(countOf > 0 ? ["read", "read_write"] as const : []),
    ],
  };
};

/**
 * CPU reference of cache attention (float64 accumulation, exact two-pass softmax per row; with a GEMM in
 * `ctx`, the scores and `P·V` go through it per KV head, in f32). `q [H, seq, D]`, caches
 * `[KH, capacity, D]` with `pos + seq` valid rows. Returns `o` (in `layout`) and `lse [H, seq]`
 * (−Infinity for a row that sees no key, o = 0 there). With `block`, the caches are one block of a sharded KV
 * (`distattn.partialAttn`): row `r` holds the key at global position `block.start + r`, `block.len` rows are
 * valid, and query `i` (global `pos + i`) sees the block's keys at global positions `≤ pos + i`.
 */
export const cacheAttentionReference = (
  q: Float32Array,
  kc: Float32Array,
  vc: Float32Array,
  s: { heads: number; kvHeads: number; seq: number; headDim: number; capacity: number },
  pos: number,
  scale: number,
  window: number,
  layout: "heads" | "rows",
  block?: { readonly start: number; readonly len: number },
): { o: Float32Array; lse: Float32Array } => {
  const { heads: H, kvHeads: KH, seq, headDim: D, capacity: C } = s;
  const o = new Float32Array(H * seq * D), lse = new Float32Array(H * seq);
  const g = H / KH, len = pos + seq;
  // global positions of the rows: [b0, b0 + bn) (a cache: the block at 0 of pos + seq rows)
  const b0 = block?.start ?? 0, bn = block?.len ?? len;
  const sc = new Float64Array(Math.max(0, bn)), acc = new Float64Array(D);
  for (let h = 0; h < H; h++) {
    const kb = Math.floor(h / g) * C * D;
    for (let i = 0; i < seq; i++) {
      const p = pos + i, lo = Math.max(b0, window > 0 ? Math.max(0, p + 1 - window) : 0);
      const hi = Math.min(p, b0 + bn - 1);
      const qo = (h * seq + i) * D;
      let m = -Infinity;
      for (let j = lo; j <= hi; j++) {
        let dot = 0;
        const kr = kb + (j - b0) * D;
        for (let x = 0; x < D; x++) dot += q[qo + x] * kc[kr + x];
        sc[j - b0] = dot * scale;
        if (sc[j - b0] > m) m = sc[j - b0];
      }
      const oo = layout === "heads" ? qo : (i * H + h) * D;
      if (m === -Infinity) {
        lse[h * seq + i] = -Infinity;
        continue;
      }
      let l = 0;
      acc.fill(0);
      for (let j = lo; j <= hi; j++) {
        const e = Math.exp(sc[j - b0] - m);
        l += e;
        const vr = kb + (j - b0) * D;
        for (let x = 0; x < D; x++) acc[x] += e * vc[vr + x];
      }
      for (let x = 0; x < D; x++) o[oo + x] = acc[x] / l;
      lse[h * seq + i] = m + Math.log(l);
    }
  }
  return { o, lse };
};

/**
 * The same arithmetic as {@link cacheAttentionReference} through a GEMM (per head and block of 64 queries: the
 * scores as one GEMM, the softmax in float64, `P·V` as one GEMM), f32 products: the cpu backend's path.
 */
export const cacheAttentionGemm = (
  gemm: NonNullable<CpuContext["gemm"]>,
  q: Float32Array,
  kc: Float32Array,
  vc: Float32Array,
  s: { heads: number; kvHeads: number; seq: number; headDim: number; capacity: number },
  pos: number,
  scale: number,
  window: number,
  layout: "heads" | "rows",
): { o: Float32Array; lse: Float32Array } => {
  const { heads: H, kvHeads: KH, seq, headDim: D, capacity: C } = s;
  const o = new Float32Array(H * seq * D), lse = new Float32Array(H * seq);
  const g = H / KH;
  const BQ = 64;
  // Without a window, the row softmax runs as the WebAssembly SIMD kernel over scores kept in its memory
  // (softmax_wasm.ts); with a window (or without WebAssembly SIMD), as the loop below.
  const wasm = window === 0 ? softmaxKernel() : undefined;
  const S = wasm ? wasm.scratch(BQ * (pos + seq)) : new Float32Array(BQ * (pos + seq));
  const ob = new Float32Array(BQ * D);
  const inv = new Float64Array(BQ);
  for (let h = 0; h < H; h++) {
    const kv = Math.floor(h / g);
    const K = kc.subarray(kv * C * D, (kv + 1) * C * D), V = vc.subarray(kv * C * D, (kv + 1) * C * D);
    for (let i0 = 0; i0 < seq; i0 += BQ) {
      const rows = Math.min(BQ, seq - i0);
      const last = pos + i0 + rows; // keys [0, last) cover every row of the block
      const lo0 = window > 0 ? Math.max(0, pos + i0 + 1 - window) : 0;
      const n = last - lo0;
      gemm(
        false,
        true,
        rows,
        n,
        D,
        scale,
        q.subarray((h * seq + i0) * D),
        D,
        K.subarray(lo0 * D),
        D,
        0,
        S,
        n,
      );
      for (let r = 0; r < rows && wasm; r++) {
        // keys 0 … p of row r (lo0 = 0 without a window): max, then exp(s − max) in place and the sum
        const p = pos + i0 + r, at = r * n;
        let m = -Infinity;
        for (let j = at; j <= at + p; j++) if (S[j] > m) m = S[j];
        const l = wasm.row(at, p + 1, n);
        inv[r] = 1 / l;
        lse[h * seq + i0 + r] = m + Math.log(l);
      }
      for (let r = 0; r < rows && !wasm; r++) {
        const p = pos + i0 + r, lo = window > 0 ? Math.max(0, p + 1 - window) : 0;
        const row = S.subarray(r * n, (r + 1) * n);
        let m = -Infinity;
        for (let j = lo; j <= p; j++) m = Math.max(m, row[j - lo0]);
        let l = 0;
        for (let j = 0; j < n; j++) {
          const k = j + lo0;
          const e = k >= lo && k <= p ? Math.exp(row[j] - m) : 0;
          row[j] = e;
          l += e;
        }
        inv[r] = 1 / l;
        lse[h * seq + i0 + r] = m + Math.log(l);
      }
      gemm(false, false, rows, D, n, 1, S, n, V.subarray(lo0 * D), D, 0, ob, D);
      for (let r = 0; r < rows; r++) {
        const i = i0 + r, dst = layout === "heads" ? (h * seq + i) * D : (i * H + h) * D;
        for (let x = 0; x < D; x++) o[dst + x] = ob[r * D + x] * inv[r];
      }
    }
  }
  return { o, lse };
};

/** Shape of a split-KV attention call. */
export interface SplitKvShape {
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads (divides `heads`: GQA). */
  readonly kvHeads: number;
  /** Query rows of this call (new tokens). */
  readonly seq: number;
  /** Elements per head vector. */
  readonly headDim: number;
  /** Key rows of the cache (its capacity). */
  readonly capacity: number;
}

/**
 * The split-KV lowering (partial states + merge, see the module doc) for queries at position `pos` of a
 * cache, bindings `in:q`, `in:<kvPorts[0]>`, `in:<kvPorts[1]>` (default kCache, vCache), `out:o`, `out:lse`. `pos` is a
 * fixed offset, or `"pos"`: the runtime scalar (workgroups and uniforms follow it per run), clamped to
 * `capacity − seq` when `compacted` (see {@link CacheAttnParams}). With a `filter`, each split attends only the
 * keys the filter keeps (see {@link SplitKeyFilter}; `splitKeys` at most {@link FILTER_SPLIT_MAX}), its buffers
 * bound after the caches, and with `filter.counts` the merge writes `out:density`. Throws `RangeError` for a
 * `pos` past the capacity (or refused by `filter.checkPos`), or a filtered split longer than the maximum.
 *
 * With `block` (needs `pos = "pos"`), the cache is one block of a sharded KV (`distattn.partialAttn`): its
 * rows hold the keys at the global positions `[start, start + len)`, the runtime scalars `start` and `len`
 * (`len ≤ capacity`), the queries sit at the global positions `pos …` (any `pos ≥ 0`, also before or past the
 * block), the causal limit is taken across the block's boundary, and a row that sees no key of the block gets
 * `lse = −Infinity`. Throws `RangeError` at run time for a missing or negative scalar, or `len > capacity`.
 */
export const splitKvLowering = (
  s: SplitKvShape,
  scale: number,
  window: number,
  layout: "heads" | "rows",
  splitKeys: number,
  pos: number | "pos",
  kvPorts: readonly [string, string] = ["kCache", "vCache"],
  compacted = false,
  filter?: SplitKeyFilter,
  block = false,
): GpuLowering => {
  if (block && (pos !== "pos" || compacted || filter)) {
    throw new RangeError("a block lowering reads the runtime pos, and is neither compacted nor filtered");
  }
  if (s.headDim % 64 !== 0) {
    throw new RangeError(`the split-KV kernels need headDim % 64 = 0, got ${s.headDim}`);
  }
  const { splitLen, maxSplit } = splitGeometry(s.seq, s.heads, s.headDim, s.capacity, splitKeys);
  if (filter && splitLen > FILTER_SPLIT_MAX) {
    throw new RangeError(
      `a filtered split of ${splitLen} keys (capacity ${s.capacity}, ${s.seq} queries) exceeds ${FILTER_SPLIT_MAX}`,
    );
  }
  /** The block's `[start, len)` from a run's scalars (a cache: the block at 0 of `pos + seq` rows). */
  const span = (sc: Readonly<Record<string, number>>, at: number): readonly [number, number] => {
    if (!block) return [0, at + s.seq];
    const start = sc.start, len = sc.len;
    for (const [name, x] of [["start", start], ["len", len]] as const) {
      if (x === undefined || !Number.isInteger(x) || x < 0) throw new RangeError(`scalar ${name} = ${x}`);
    }
    if (len > s.capacity) throw new RangeError(`block len ${len} exceeds its capacity ${s.capacity}`);
    return [start, len];
  };
  /** Keys of the block some query row sees (≥ 1 split is launched; an empty split writes l = 0). */
  const seen = (at: number, [start, len]: readonly [number, number]) =>
    Math.max(1, Math.min(len, Math.max(0, at + s.seq - start)));
  const uniform = (at: number, sp: readonly [number, number]) =>
    new Uint8Array(
      Uint32Array.of(
        s.seq,
        at,
        s.capacity,
        splitLen,
        Math.ceil(seen(at, sp) / splitLen),
        sp[0],
        sp[1],
        block ? 0xff800000 : 0,
      ).buffer,
    );
  const blockAt = (sc: Readonly<Record<string, number>>) => {
    const raw = sc.pos;
    if (raw === undefined || !Number.isInteger(raw) || raw < 0) throw new RangeError(`scalar pos = ${raw}`);
    return raw;
  };
  const at = (sc: Readonly<Record<string, number>>) => {
    if (block) return blockAt(sc);
    const x = pos === "pos"
      ? posOf(sc, s.seq, s.capacity, compacted)
      : posOf({ pos }, s.seq, s.capacity, compacted);
    filter?.checkPos?.(x);
    return x;
  };
  const fixed = pos === "pos" ? 0 : at({});
  const fixedSpan: readonly [number, number] = block ? [0, 1] : [0, fixed + s.seq];
  const counting = filter?.counts !== undefined;
  const groups = (p: number, sp: readonly [number, number]) =>
    [s.seq, s.heads, Math.ceil(seen(p, sp) / splitLen)] as const;
  const dynamic = pos === "pos"
    ? (sc: Readonly<Record<string, number>>) => {
      const a = at(sc), sp = span(sc, a);
      return { uniforms: { u: uniform(a, sp) }, workgroups: groups(a, sp) };
    }
    : undefined;
  const kin = `in:${kvPorts[0]}`, vin = `in:${kvPorts[1]}`;
  return {
    workspaces: {
      part: s.seq * s.heads * maxSplit * s.headDim * 4,
      ml: s.seq * s.heads * maxSplit * 2 * 4,
      u: 32,
      u2: 32,
      ...(counting ? { cnt: s.heads * maxSplit * 4 } : {}),
    },
    launches: [
      {
        kernel: splitKernel(s.heads, s.kvHeads, s.headDim, scale, window, filter, splitLen),
        buffers: [
          "in:q",
          kin,
          vin,
          "ws:part",
          "ws:ml",
          "ws:u",
          ...(filter?.buffers ?? []),
          ...(counting ? ["ws:cnt"] : []),
        ],
        workgroups: groups(fixed, fixedSpan),
        uniforms: { u: uniform(fixed, fixedSpan) },
        ...(dynamic ? { dynamic } : {}),
      },
      {
        kernel: combineKernel(
          s.heads,
          s.headDim,
          layout === "rows",
          counting ? (filter?.countOf ?? 1) : 0,
          block,
        ),
        buffers: [
          "ws:part",
          "ws:ml",
          "out:o",
          "out:lse",
          "ws:u2",
          ...(counting ? ["ws:cnt", "out:density"] : []),
        ],
        workgroups: [s.seq, s.heads, 1],
        uniforms: { u2: uniform(fixed, fixedSpan) },
        ...(dynamic
          ? {
            dynamic: (sc: Readonly<Record<string, number>>) => {
              const a = at(sc);
              return { uniforms: { u2: uniform(a, span(sc, a)) } };
            },
          }
          : {}),
      },
    ],
  };
};

const shapes = (i: DescsOf<In>): SplitKvShape => {
  const [heads, seq, headDim] = i.q.shape as [number, number, number];
  const [kvHeads, capacity] = i.kCache.shape as [number, number, number];
  return { heads, kvHeads, seq, headDim, capacity };
};

/**
 * `dense.cacheAttn` (see the module doc). Inputs `q f32 [heads, seq, headDim]` (after RoPE), `kCache`,
 * `vCache f32 [kvHeads, capacity, headDim]` holding `pos + seq` valid rows; runtime scalar `pos`. Outputs
 * `o f32` (`[heads, seq, headDim]`, or `[seq, heads·headDim]` with `layout: "rows"`) and `lse f32 [heads, seq]`.
 * Shape errors: rank, heads not a multiple of kvHeads, headDim not a multiple of 4, or caches of different
 * shapes; the GPU lowering needs headDim a multiple of 64 (else `unsupported`); a `pos` past the capacity fails
 * the run.
 */
export const cacheAttn: Operator<CacheAttnParams, In, Out> = {
  name: "dense.cacheAttn",
  kind: "cache-attn",
  reference:
    "FlashAttention-2 (Dao 2023) §3.1 online softmax, split-KV decoding; bottom-right causal (FA ≥ 2.1)",
  params: CacheAttnParams,
  inputs: ports.inputs,
  outputs: ports.outputs,
  scalars: ["pos"],
  infer: (p, i) => {
    if (i.q.shape.length !== 3 || i.kCache.shape.length !== 3 || i.vCache.shape.length !== 3) {
      return bad(`q [${i.q.shape}], kCache [${i.kCache.shape}]: expected rank 3`, "q [heads, seq, headDim]");
    }
    const s = shapes(i);
    if (i.vCache.shape.join() !== i.kCache.shape.join()) {
      return bad(`vCache [${i.vCache.shape}] differs from kCache [${i.kCache.shape}]`, "one shape for both");
    }
    if (i.kCache.shape[2] !== s.headDim) {
      return bad(
        `kCache headDim ${i.kCache.shape[2]} ≠ q's ${s.headDim}`,
        "caches are [kvHeads, capacity, headDim]",
      );
    }
    if (s.heads % s.kvHeads !== 0 || s.seq < 1 || s.seq > s.capacity) {
      return bad(
        `heads ${s.heads}, kvHeads ${s.kvHeads}, seq ${s.seq}, capacity ${s.capacity}`,
        "heads a multiple of kvHeads, 1 ≤ seq ≤ capacity",
      );
    }
    if (s.headDim % 4 !== 0) return bad(`headDim ${s.headDim} is not a multiple of 4`, "pad headDim to 4");
    const o: TensorDesc = p.layout === "rows"
      ? { dtype: "f32", dims: ["seq", "hidden"], shape: [s.seq, s.heads * s.headDim] }
      : { dtype: "f32", dims: ["heads", "seq", "headDim"], shape: [s.heads, s.seq, s.headDim] };
    return Effect.succeed({ o, lse: { ...ports.outputs.lse, shape: [s.heads, s.seq] } } as DescsOf<Out>);
  },
  cpu: (p, i, ctx) => {
    const s = shapes({ q: i.q.desc, kCache: i.kCache.desc, vCache: i.vCache.desc });
    const pos = posOf(ctx?.scalars, s.seq, s.capacity, p.compacted);
    const scale = effectiveScale(p.scale, s.headDim);
    const args = [i.q.data, i.kCache.data, i.vCache.data, s, pos, scale, p.window, p.layout] as const;
    const r = ctx?.gemm ? cacheAttentionGemm(ctx.gemm, ...args) : cacheAttentionReference(...args);
    const o = allocHost<"f32", readonly string[]>(
      p.layout === "rows"
        ? { dtype: "f32", dims: ["seq", "hidden"], shape: [s.seq, s.heads * s.headDim] }
        : { dtype: "f32", dims: ["heads", "seq", "headDim"], shape: [s.heads, s.seq, s.headDim] },
    );
    o.data.set(r.o);
    const lse = allocHost({ ...ports.outputs.lse, shape: [s.heads, s.seq] });
    lse.data.set(r.lse);
    return { o, lse } as HostOf<Out>;
  },
  gpu: (p, i): GpuLowering =>
    splitKvLowering(
      shapes(i),
      effectiveScale(p.scale, i.q.shape[2]),
      p.window,
      p.layout,
      p.splitKeys,
      "pos",
      ["kCache", "vCache"],
      p.compacted,
    ),
  cost: (p, i): Cost => {
    const s = shapes(i);
    const { splitLen } = splitGeometry(s.seq, s.heads, s.headDim, s.capacity, p.splitKeys);
    // Up to the full cache: the cost at the largest position this program serves.
    const keys = s.capacity;
    return {
      flops: 4 * s.heads * s.seq * keys * s.headDim,
      bytesRead: s.heads * s.seq * s.headDim * 4 + 2 * s.kvHeads * keys * s.headDim * 4,
      bytesWritten: s.heads * s.seq * (s.headDim + 1) * 4,
      workspaceBytes: s.seq * s.heads * Math.ceil(keys / splitLen) * (s.headDim + 2) * 4,
    };
  },
};
