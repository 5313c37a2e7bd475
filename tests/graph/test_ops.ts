/**
 * Small real operators for the graph tests (not part of the library): elementwise add, matmul, softmax,
 * causal GQA dense attention, and a SALE-shaped chain quantize → estimate → select → sparse-attn that
 * implements the declared `signatures`. All math in float64, stored as f32.
 *
 * The estimate here is a simplified stand-in (max dequantized score per block pair), not SALE's Relative
 * Attention Score; the real SALE operators live in `ops/`.
 * @module
 */
import { Effect, Schema } from "effect";
import {
  allocHost,
  anyDims,
  type HostTensor,
  type Kernel,
  mulberry32,
  type Operator,
  type OperatorOf,
  ShapeError,
  signatures,
  type TensorType,
  tensorType,
} from "../../graph/mod.ts";

const fail = (message: string) => Effect.fail(new ShapeError({ message, hint: "fix the test graph" }));
const same = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);
const zeroCost = { flops: 0, bytesRead: 0, bytesWritten: 0, workspaceBytes: 0 };

type HSD = TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
const hsd: HSD = tensorType("f32", ["heads", "seq", "headDim"]);

/** WGSL + TypeScript body of `c = a + alpha * b` (alpha and n in a uniform). */
export const addKernel: Kernel = {
  key: "test.add.v1",
  entryPoint: "main",
  bindings: ["read", "read", "read_write", "uniform"],
  wgsl: `
struct U { n: u32, alpha: f32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<uniform> u: U;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3u) {
  if (id.x < u.n) { c[id.x] = a[id.x] + u.alpha * b[id.x]; }
}`,
  cpu: ([a, b, c, u], [wx]) => {
    const n = new Uint32Array(u, 0, 1)[0];
    const alpha = new Float32Array(u, 4, 1)[0];
    const A = new Float32Array(a), B = new Float32Array(b), C = new Float32Array(c);
    for (let i = 0; i < Math.min(n, wx * 64); i++) C[i] = A[i] + alpha * B[i];
  },
};

/** `c = a + alpha * b`, f32 [heads, seq, headDim]; has a gpu lowering (one launch, one uniform). */
export const addOp: Operator<{ readonly alpha: number }, { a: HSD; b: HSD }, { c: HSD }> = {
  name: "test.add",
  kind: "elementwise",
  reference: "test operator",
  params: Schema.Struct({ alpha: Schema.Number }),
  inputs: { a: hsd, b: hsd },
  outputs: { c: hsd },
  infer: (_p, { a, b }) =>
    same(a.shape, b.shape) ? Effect.succeed({ c: a }) : fail(`add: [${a.shape}] vs [${b.shape}]`),
  cpu: ({ alpha }, { a, b }) => {
    const c = allocHost(a.desc);
    for (let i = 0; i < c.data.length; i++) c.data[i] = a.data[i] + alpha * b.data[i];
    return { c };
  },
  gpu: ({ alpha }, { a }) => {
    const n = a.shape.reduce((x, y) => x * y, 1);
    const u = new Uint8Array(8);
    new Uint32Array(u.buffer, 0, 1)[0] = n;
    new Float32Array(u.buffer, 4, 1)[0] = alpha;
    return {
      workspaces: { u: 8 },
      launches: [{
        kernel: addKernel,
        buffers: ["in:a", "in:b", "out:c", "ws:u"],
        workgroups: [Math.ceil(n / 64), 1, 1],
        uniforms: { u },
      }],
    };
  },
  cost: (_p, { a }) => {
    const n = a.shape.reduce((x, y) => x * y, 1);
    return { flops: 2 * n, bytesRead: 8 * n, bytesWritten: 4 * n, workspaceBytes: 8 };
  },
};

type RowsInner = TensorType<"f32", readonly ["rows", "inner"]>;
type InnerCols = TensorType<"f32", readonly ["inner", "cols"]>;
type RowsCols = TensorType<"f32", readonly ["rows", "cols"]>;
const rowsCols: RowsCols = tensorType("f32", ["rows", "cols"]);

/** `c[rows, cols] = a[rows, inner] · b[inner, cols]`, float64 accumulation. */
export const matmulOp: Operator<Record<string, never>, { a: RowsInner; b: InnerCols }, { c: RowsCols }> = {
  name: "test.matmul",
  kind: "matmul",
  reference: "test operator",
  params: Schema.Struct({}),
  inputs: { a: tensorType("f32", ["rows", "inner"]), b: tensorType("f32", ["inner", "cols"]) },
  outputs: { c: rowsCols },
  infer: (_p, { a, b }) =>
    a.shape[1] === b.shape[0]
      ? Effect.succeed({ c: { dtype: "f32", dims: rowsCols.dims, shape: [a.shape[0], b.shape[1]] } })
      : fail(`matmul: inner ${a.shape[1]} vs ${b.shape[0]}`),
  cpu: (_p, { a, b }) => {
    const [m, k] = a.desc.shape, n = b.desc.shape[1];
    const c = allocHost({ dtype: "f32", dims: rowsCols.dims, shape: [m, n] });
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let t = 0; t < k; t++) s += a.data[i * k + t] * b.data[t * n + j];
        c.data[i * n + j] = s;
      }
    }
    return { c };
  },
  cost: (_p, { a, b }) => ({
    flops: 2 * a.shape[0] * a.shape[1] * b.shape[1],
    bytesRead: 4 * (a.shape[0] * a.shape[1] + b.shape[0] * b.shape[1]),
    bytesWritten: 4 * a.shape[0] * b.shape[1],
    workspaceBytes: 0,
  }),
};

/** Row softmax over the last dim, f32 [rows, cols] (float64 inside). */
export const softmaxOp: Operator<Record<string, never>, { x: RowsCols }, { y: RowsCols }> = {
  name: "test.softmax",
  kind: "norm",
  reference: "test operator",
  params: Schema.Struct({}),
  inputs: { x: rowsCols },
  outputs: { y: rowsCols },
  infer: (_p, { x }) => Effect.succeed({ y: x }),
  cpu: (_p, { x }) => {
    const [m, n] = x.desc.shape;
    const y = allocHost(x.desc);
    for (let i = 0; i < m; i++) {
      let mx = -Infinity, s = 0;
      for (let j = 0; j < n; j++) mx = Math.max(mx, x.data[i * n + j]);
      for (let j = 0; j < n; j++) s += Math.exp(x.data[i * n + j] - mx);
      for (let j = 0; j < n; j++) y.data[i * n + j] = Math.exp(x.data[i * n + j] - mx) / s;
    }
    return { y };
  },
  cost: (_p, { x }) => ({ ...zeroCost, flops: 5 * x.shape[0] * x.shape[1] }),
};

/** Copy with a busy-wait of `ms`: a slow operator. */
export const slowOp: Operator<{ readonly ms: number }, { x: HSD }, { y: HSD }> & {
  calls: number;
} = {
  calls: 0,
  name: "test.slow",
  kind: "elementwise",
  reference: "test operator",
  params: Schema.Struct({ ms: Schema.Number }),
  inputs: { x: hsd },
  outputs: { y: hsd },
  infer: (_p, { x }) => Effect.succeed({ y: x }),
  cpu: ({ ms }, { x }) => {
    slowOp.calls++;
    const end = performance.now() + ms;
    while (performance.now() < end) { /* busy: a long kernel */ }
    return { y: { desc: x.desc, data: x.data.slice() } };
  },
  cost: () => zeroCost,
};

/** An operator whose cpu reference throws (to test failure cleanup); wildcard ports (any f32 dims). */
export const boomOp: Operator<Record<string, never>, { x: TensorType<"f32"> }, { y: TensorType<"f32"> }> = {
  name: "test.boom",
  kind: "elementwise",
  reference: "test operator",
  params: Schema.Struct({}),
  inputs: { x: anyDims("f32") },
  outputs: { y: anyDims("f32") },
  infer: (_p, { x }) => Effect.succeed({ y: x }),
  cpu: () => {
    throw new Error("boom");
  },
  cost: () => zeroCost,
};

type KV = TensorType<"f32", readonly ["kvHeads", "kvSeq", "headDim"]>;

/**
 * Stand-in for a layer's Q/K/V projections (no weights): from a hidden state x [heads, seq, headDim],
 * q = x, k[g] = mean of x over the heads of KV group g, v[g] = x of the group's first head
 * ([kvHeads, kvSeq = seq, headDim]). Gives every layer its own q/k/v, as a model's projections do.
 */
export const qkvOp: Operator<{ readonly kvHeads: number }, { x: HSD }, { q: HSD; k: KV; v: KV }> = {
  name: "test.qkv",
  kind: "matmul",
  reference: "test operator",
  params: Schema.Struct({ kvHeads: Schema.Int.check(Schema.isGreaterThan(0)) }),
  inputs: { x: hsd },
  outputs: {
    q: hsd,
    k: tensorType("f32", ["kvHeads", "kvSeq", "headDim"]),
    v: tensorType("f32", ["kvHeads", "kvSeq", "headDim"]),
  },
  infer: ({ kvHeads }, { x }) => {
    const [H, S, D] = x.shape;
    if (H % kvHeads !== 0) return fail(`qkv: heads ${H} not a multiple of kvHeads ${kvHeads}`);
    const kv = { ...qkvOp.outputs.k, shape: [kvHeads, S, D] };
    return Effect.succeed({ q: x, k: kv, v: kv });
  },
  cpu: ({ kvHeads }, { x }) => {
    const [H, S, D] = x.desc.shape, G = H / kvHeads, n = S * D;
    const k = allocHost({ ...qkvOp.outputs.k, shape: [kvHeads, S, D] });
    const v = allocHost({ ...qkvOp.outputs.v, shape: [kvHeads, S, D] });
    for (let g = 0; g < kvHeads; g++) {
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let h = g * G; h < (g + 1) * G; h++) s += x.data[h * n + i];
        k.data[g * n + i] = s / G;
        v.data[g * n + i] = x.data[g * G * n + i];
      }
    }
    return { q: { desc: x.desc, data: x.data.slice() }, k, v };
  },
  cost: () => zeroCost,
};

// ---------------------------------------------------------------- attention (float64 math, f32 storage)

/** Attention parameters shared by the test attention ops. */
export interface AttnParams {
  /** Softmax scale; default 1/sqrt(headDim). */
  readonly scale?: number;
}
const AttnParamsSchema = Schema.Struct({ scale: Schema.optional(Schema.Number) });

const checkQkv = (q: readonly number[], k: readonly number[], v: readonly number[]) =>
  k.length === 3 && same(k, v) && q[2] === k[2] && q[0] % k[0] === 0 && k[1] >= q[1]
    ? Effect.void
    : fail(`attention: q [${q}], k [${k}], v [${v}] do not fit (GQA heads % kvHeads, kvSeq >= seq)`);

/**
 * One query row of causal attention over the key set `keep(j)`; writes o and returns lse.
 * Online softmax in float64.
 */
const attnRow = (
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  qOff: number,
  kvOff: number,
  d: number,
  upto: number,
  keep: (j: number) => boolean,
  scale: number,
  o: Float32Array,
  oOff: number,
): number => {
  let m = -Infinity, l = 0;
  const acc = new Float64Array(d);
  for (let j = 0; j <= upto; j++) {
    if (!keep(j)) continue;
    let s = 0;
    for (let t = 0; t < d; t++) s += q[qOff + t] * k[kvOff + j * d + t];
    s *= scale;
    const mNew = Math.max(m, s);
    const corr = Math.exp(m - mNew), p = Math.exp(s - mNew);
    l = l * corr + p;
    for (let t = 0; t < d; t++) acc[t] = acc[t] * corr + p * v[kvOff + j * d + t];
    m = mNew;
  }
  for (let t = 0; t < d; t++) o[oOff + t] = l > 0 ? acc[t] / l : 0;
  return l > 0 ? m + Math.log(l) : -Infinity;
};

type Sig = typeof signatures;

/** Causal GQA dense attention with LSE (`signatures.denseAttn`). */
export const denseAttnOp: OperatorOf<AttnParams, Sig["denseAttn"]> = {
  name: "test.dense-attn",
  kind: "dense-attn",
  reference: "FlashAttention-2 (Dao 2023) §3, online softmax; test operator",
  params: AttnParamsSchema,
  ...signatures.denseAttn,
  infer: (_p, { q, k, v }) =>
    Effect.as(checkQkv(q.shape, k.shape, v.shape), {
      o: { ...signatures.denseAttn.outputs.o, shape: q.shape },
      lse: { ...signatures.denseAttn.outputs.lse, shape: [q.shape[0], q.shape[1]] },
    }),
  cpu: (p, { q, k, v }) => {
    const [H, S, D] = q.desc.shape, [HK, T] = k.desc.shape;
    const scale = p.scale ?? 1 / Math.sqrt(D);
    const o = allocHost({ ...signatures.denseAttn.outputs.o, shape: q.desc.shape });
    const lse = allocHost({ ...signatures.denseAttn.outputs.lse, shape: [H, S] });
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / (H / HK));
      for (let i = 0; i < S; i++) {
        lse.data[h * S + i] = attnRow(
          q.data,
          k.data,
          v.data,
          (h * S + i) * D,
          hk * T * D,
          D,
          T - S + i,
          () => true,
          scale,
          o.data,
          (h * S + i) * D,
        );
      }
    }
    return { o, lse };
  },
  cost: (_p, { q, k }) => {
    const [H, S, D] = q.shape, T = k.shape[1];
    return {
      flops: 4 * H * S * (T - S / 2) * D,
      bytesRead: 4 * (H * S * D + 2 * k.shape[0] * T * D),
      bytesWritten: 4 * (H * S * D + H * S),
      workspaceBytes: 0,
    };
  },
};

/** Block-size parameter of the SALE-shaped test chain. */
export interface BlockParams {
  readonly blockSize: number;
}
const BlockSchema = Schema.Struct({ blockSize: Schema.Int.check(Schema.isGreaterThan(0)) });

const packInt4 = (
  x: Float32Array,
  rows: number,
  d: number,
  block: number,
  scales: Float32Array,
  dst: Uint32Array,
) => {
  for (let r0 = 0, b = 0; r0 < rows; r0 += block, b++) {
    let mx = 0;
    for (let i = r0 * d; i < Math.min(rows, r0 + block) * d; i++) mx = Math.max(mx, Math.abs(x[i]));
    const s = mx > 0 ? mx / 7 : 1;
    scales[b] = s;
    for (let i = r0 * d; i < Math.min(rows, r0 + block) * d; i++) {
      const qv = Math.max(-8, Math.min(7, Math.round(x[i] / s)));
      dst[i >> 3] |= (qv & 0xf) << (4 * (i & 7));
    }
  }
};

/** Read element `i` of a packed int4 array. */
export const int4At = (w: Uint32Array, i: number): number => ((w[i >> 3] >>> (4 * (i & 7))) << 28) >> 28;

/** Per-head means over the sequence: x [H, S, D] -> [H, D] (float64 sums). */
const seqMean = (x: Float32Array, H: number, S: number, D: number): Float64Array => {
  const m = new Float64Array(H * D);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < S; i++) for (let t = 0; t < D; t++) m[h * D + t] += x[(h * S + i) * D + t] / S;
  }
  return m;
};

const centered = (x: Float32Array, m: Float64Array, H: number, S: number, D: number): Float32Array => {
  const y = new Float32Array(x.length);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < S; i++) {
      for (let t = 0; t < D; t++) y[(h * S + i) * D + t] = x[(h * S + i) * D + t] - m[h * D + t];
    }
  }
  return y;
};

/**
 * Mean-smoothed symmetric int4 per (head, block) of Q and K (`signatures.quantize`), with `kMean` and the
 * correction `qmk[h, j] = mean(Q_h) · (k_j − mean(K))`.
 */
export const quantizeOp: OperatorOf<BlockParams, Sig["quantize"]> = {
  name: "test.quantize",
  kind: "quantize",
  reference: "SALE §3.2 (smoothed 4-bit Q/K per block); test operator",
  params: BlockSchema,
  ...signatures.quantize,
  infer: ({ blockSize }, { q, k }) => {
    const [H, S, D] = q.shape, [HK, T] = k.shape;
    if (D % 8 !== 0 || k.shape[2] !== D) {
      return fail(`quantize: headDim ${D} must match and be a multiple of 8`);
    }
    const o = signatures.quantize.outputs;
    return Effect.succeed({
      qq: { ...o.qq, shape: q.shape },
      qScales: { ...o.qScales, shape: [H, Math.ceil(S / blockSize)] },
      kq: { ...o.kq, shape: k.shape },
      kScales: { ...o.kScales, shape: [HK, Math.ceil(T / blockSize)] },
      kMean: { ...o.kMean, shape: [HK, D] },
      qmk: { ...o.qmk, shape: [H, T] },
    });
  },
  cpu: ({ blockSize }, { q, k }) => {
    const o = signatures.quantize.outputs;
    const [H, S, D] = q.desc.shape, [HK, T] = k.desc.shape;
    const qm = seqMean(q.data, H, S, D), km = seqMean(k.data, HK, T, D);
    const qc = centered(q.data, qm, H, S, D), kc = centered(k.data, km, HK, T, D);
    const qq = allocHost({ ...o.qq, shape: q.desc.shape });
    const kq = allocHost({ ...o.kq, shape: k.desc.shape });
    const qb = Math.ceil(S / blockSize), kb = Math.ceil(T / blockSize);
    const qScales = allocHost({ ...o.qScales, shape: [H, qb] });
    const kScales = allocHost({ ...o.kScales, shape: [HK, kb] });
    const kMean = allocHost({ ...o.kMean, shape: [HK, D] });
    kMean.data.set(km);
    const qmk = allocHost({ ...o.qmk, shape: [H, T] });
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / (H / HK));
      for (let j = 0; j < T; j++) {
        let s = 0;
        for (let t = 0; t < D; t++) s += qm[h * D + t] * kc[(hk * T + j) * D + t];
        qmk.data[h * T + j] = s;
      }
      packInt4(
        qc.subarray(h * S * D, (h + 1) * S * D),
        S,
        D,
        blockSize,
        qScales.data.subarray(h * qb, (h + 1) * qb),
        qq.data.subarray(h * S * D / 8, (h + 1) * S * D / 8),
      );
    }
    for (let h = 0; h < HK; h++) {
      packInt4(
        kc.subarray(h * T * D, (h + 1) * T * D),
        T,
        D,
        blockSize,
        kScales.data.subarray(h * kb, (h + 1) * kb),
        kq.data.subarray(h * T * D / 8, (h + 1) * T * D / 8),
      );
    }
    return { qq, qScales, kq, kScales, kMean, qmk };
  },
  cost: (_p, { q, k }) => ({
    ...zeroCost,
    bytesRead: 4 * (q.shape[0] * q.shape[1] * q.shape[2] + k.shape[0] * k.shape[1] * k.shape[2]),
  }),
};

/**
 * Max estimated scaled score per (head, query block, key block), from int4 codes plus the `qmk`
 * correction (equal to q·k up to a per-row constant and quantization error); masked pairs -Infinity.
 */
export const estimateOp: OperatorOf<BlockParams, Sig["estimate"]> = {
  name: "test.estimate",
  kind: "estimate",
  reference: "SALE §3.3 shape (low-bit QK per block pair); simplified score; test operator",
  params: BlockSchema,
  ...signatures.estimate,
  infer: (_p, { qq, qScales, kScales }) =>
    Effect.succeed({
      scores: {
        ...signatures.estimate.outputs.scores,
        shape: [qq.shape[0], qScales.shape[1], kScales.shape[1]],
      },
    }),
  cpu: ({ blockSize: B }, { qq, qScales, kq, kScales, qmk }) => {
    const [H, S, D] = qq.desc.shape, [HK, T] = kq.desc.shape;
    const QB = qScales.desc.shape[1], KB = kScales.desc.shape[1];
    const scores = allocHost({ ...signatures.estimate.outputs.scores, shape: [H, QB, KB] });
    scores.data.fill(-Infinity);
    const scale = 1 / Math.sqrt(D);
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / (H / HK));
      for (let i = 0; i < S; i++) {
        const bi = Math.floor(i / B), sq = qScales.data[h * QB + bi];
        for (let j = 0; j <= T - S + i; j++) {
          const bj = Math.floor(j / B), sk = kScales.data[hk * KB + bj];
          let s = 0;
          for (let t = 0; t < D; t++) {
            s += int4At(qq.data, (h * S + i) * D + t) * int4At(kq.data, (hk * T + j) * D + t);
          }
          const at = (h * QB + bi) * KB + bj;
          scores.data[at] = Math.max(scores.data[at], (s * sq * sk + qmk.data[h * T + j]) * scale);
        }
      }
    }
    return { scores };
  },
  cost: () => zeroCost,
};

/** Threshold parameters of the test select. */
export interface SelectParams {
  /** Keep key blocks whose score is within `threshold` (natural-log units) of the row's best. */
  readonly threshold: number;
  /** First key blocks always kept (attention sinks). */
  readonly sinkBlocks: number;
  /** Key blocks at and before the diagonal always kept (local window). */
  readonly localBlocks: number;
}

/** Causal block count capacity of a [qBlocks, kBlocks] bottom-right aligned mask. */
export const causalBlocks = (qb: number, kb: number): number => {
  let n = 0;
  for (let b = 0; b < qb; b++) n += Math.min(kb, b + 1 + kb - qb);
  return n;
};

/** Scores → padded per-head BSR (`signatures.select`). */
export const selectOp: OperatorOf<SelectParams, Sig["select"]> = {
  name: "test.select",
  kind: "select",
  reference: "SALE §3 (threshold, sinks, local window); test operator",
  params: Schema.Struct({ threshold: Schema.Number, sinkBlocks: Schema.Int, localBlocks: Schema.Int }),
  ...signatures.select,
  infer: (_p, { scores }) => {
    const [H, QB, KB] = scores.shape;
    const o = signatures.select.outputs;
    return Effect.succeed({
      indptr: { ...o.indptr, shape: [H, QB + 1] },
      indices: { ...o.indices, shape: [H, causalBlocks(QB, KB)] },
      density: { ...o.density, shape: [H] },
    });
  },
  cpu: (p, { scores }) => {
    const [H, QB, KB] = scores.desc.shape;
    const cap = causalBlocks(QB, KB);
    const o = signatures.select.outputs;
    const indptr = allocHost({ ...o.indptr, shape: [H, QB + 1] });
    const indices = allocHost({ ...o.indices, shape: [H, cap] });
    const density = allocHost({ ...o.density, shape: [H] });
    indices.data.fill(-1);
    for (let h = 0; h < H; h++) {
      let n = 0;
      for (let b = 0; b < QB; b++) {
        indptr.data[h * (QB + 1) + b] = n;
        const last = b + KB - QB;
        let best = -Infinity;
        for (let j = 0; j <= last; j++) best = Math.max(best, scores.data[(h * QB + b) * KB + j]);
        for (let j = 0; j <= last; j++) {
          const s = scores.data[(h * QB + b) * KB + j];
          if (j < p.sinkBlocks || j > last - p.localBlocks || s >= best - p.threshold) {
            indices.data[h * cap + n++] = j;
          }
        }
      }
      indptr.data[h * (QB + 1) + QB] = n;
      density.data[h] = n / cap;
    }
    return { indptr, indices, density };
  },
  cost: () => zeroCost,
};

/** Block-sparse causal GQA attention over a padded BSR mask (`signatures.sparseAttn`). */
export const sparseAttnOp: OperatorOf<BlockParams & AttnParams, Sig["sparseAttn"]> = {
  name: "test.sparse-attn",
  kind: "sparse-attn",
  reference: "block-sparse FlashAttention; test operator",
  params: Schema.Struct({
    blockSize: Schema.Int.check(Schema.isGreaterThan(0)),
    scale: Schema.optional(Schema.Number),
  }),
  ...signatures.sparseAttn,
  infer: ({ blockSize }, { q, k, v, indptr }) =>
    indptr.shape[1] !== Math.ceil(q.shape[1] / blockSize) + 1
      ? fail(
        `sparse-attn: indptr [${indptr.shape}] does not fit ${
          Math.ceil(q.shape[1] / blockSize)
        } query blocks`,
      )
      : Effect.as(checkQkv(q.shape, k.shape, v.shape), {
        o: { ...signatures.sparseAttn.outputs.o, shape: q.shape },
        lse: { ...signatures.sparseAttn.outputs.lse, shape: [q.shape[0], q.shape[1]] },
      }),
  cpu: (p, { q, k, v, indptr, indices }) => {
    const [H, S, D] = q.desc.shape, [HK, T] = k.desc.shape;
    const B = p.blockSize, QB = indptr.desc.shape[1] - 1, cap = indices.desc.shape[1];
    const KB = Math.ceil(T / B);
    const scale = p.scale ?? 1 / Math.sqrt(D);
    const o = allocHost({ ...signatures.sparseAttn.outputs.o, shape: q.desc.shape });
    const lse = allocHost({ ...signatures.sparseAttn.outputs.lse, shape: [H, S] });
    const kept = new Uint8Array(KB);
    for (let h = 0; h < H; h++) {
      const hk = Math.floor(h / (H / HK));
      for (let b = 0; b < QB; b++) {
        kept.fill(0);
        for (let e = indptr.data[h * (QB + 1) + b]; e < indptr.data[h * (QB + 1) + b + 1]; e++) {
          kept[indices.data[h * cap + e]] = 1;
        }
        for (let i = b * B; i < Math.min(S, (b + 1) * B); i++) {
          lse.data[h * S + i] = attnRow(
            q.data,
            k.data,
            v.data,
            (h * S + i) * D,
            hk * T * D,
            D,
            T - S + i,
            (j) => kept[Math.floor(j / B)] === 1,
            scale,
            o.data,
            (h * S + i) * D,
          );
        }
      }
    }
    return { o, lse };
  },
  cost: () => zeroCost,
};

/** Reference attention in float64 over an explicit keep predicate (full score rows, two-pass softmax). */
export const attentionRef64 = (
  q: HostTensor<"f32">,
  k: HostTensor<"f32">,
  v: HostTensor<"f32">,
  keep: (h: number, i: number, j: number) => boolean = () => true,
): { o: Float64Array; lse: Float64Array } => {
  const [H, S, D] = q.desc.shape, [HK, T] = k.desc.shape;
  const scale = 1 / Math.sqrt(D);
  const o = new Float64Array(H * S * D), lse = new Float64Array(H * S);
  for (let h = 0; h < H; h++) {
    const hk = Math.floor(h / (H / HK));
    for (let i = 0; i < S; i++) {
      const s: number[] = [];
      const js: number[] = [];
      for (let j = 0; j <= T - S + i; j++) {
        if (!keep(h, i, j)) continue;
        let d = 0;
        for (let t = 0; t < D; t++) d += q.data[(h * S + i) * D + t] * k.data[(hk * T + j) * D + t];
        s.push(d * scale);
        js.push(j);
      }
      const m = Math.max(...s);
      const z = s.reduce((a, x) => a + Math.exp(x - m), 0);
      lse[h * S + i] = m + Math.log(z);
      for (let n = 0; n < s.length; n++) {
        const w = Math.exp(s[n] - m) / z;
        for (let t = 0; t < D; t++) o[(h * S + i) * D + t] += w * v.data[(hk * T + js[n]) * D + t];
      }
    }
  }
  return { o, lse };
};

/** Seeded uniform random f32 tensor in [-1, 1) (mulberry32). */
export const randomTensor = <const N extends readonly string[]>(
  dims: N,
  shape: readonly number[],
  seed: number,
): HostTensor<"f32", N> => {
  const rnd = mulberry32(seed);
  const t = allocHost({ dtype: "f32", dims, shape });
  for (let i = 0; i < t.data.length; i++) t.data[i] = 2 * rnd() - 1;
  return t;
};

/** All test operators, for `operatorRegistry`. */
export const testOps = [
  addOp,
  qkvOp,
  matmulOp,
  softmaxOp,
  slowOp,
  boomOp,
  denseAttnOp,
  quantizeOp,
  estimateOp,
  selectOp,
  sparseAttnOp,
] as const;
