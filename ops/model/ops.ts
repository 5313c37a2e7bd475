/**
 * The Llama forward's operators (`model.*`), so that the whole forward is one graph: token embedding,
 * RMSNorm with the residual add fused, linear layers `x·Wᵀ`, rotate-half RoPE that appends K/V to the KV
 * cache (state, in place), reading the cache's first rows, head transposes, SwiGLU and argmax. f32 storage
 * and arithmetic; shapes (heads, widths) are baked into the kernels, per-call sizes come from shapes and the
 * runtime scalar `pos` (tokens already cached).
 *
 * References: Touvron et al. 2023 (LLaMA) §2.2 (pre-norm RMSNorm, SwiGLU, RoPE); Zhang & Sennrich 2019
 * (RMSNorm); Su et al. 2021 (RoFormer) §3.4.2 (Hugging Face's rotate-half layout); Shazeer 2020 (SwiGLU).
 * @module
 */
import { Effect, Schema } from "effect";
import {
  allocHost,
  anyDims,
  type Cost,
  type CpuContext,
  type DescsOf,
  type GpuLowering,
  type HostOf,
  type HostTensor,
  type Operator,
  type Ports,
  ShapeError,
  type TensorDesc,
  type TensorType,
} from "@longctx/graph";
import { grid1d, matmul, matmulWorkgroupBytes, u32Uniform } from "../kernels/mod.ts";
import {
  addNormKernel,
  argmaxKernel,
  embedKernel,
  gemvKernel,
  headsToRowsKernel,
  kvReadKernel,
  lseRecallKernel,
  ropeKernel,
  sliceRowsKernel,
  sqDiffKernel,
  swigluKernel,
} from "./kernels.ts";

const F32: TensorType<"f32", readonly string[]> = anyDims("f32");
const U32: TensorType<"u32", readonly string[]> = anyDims("u32");
const bad = (message: string, hint: string) => Effect.fail(new ShapeError({ message, hint }));
const desc = (shape: number[], dims: string[] = shape.map((_, i) => `d${i}`)): TensorDesc<"f32"> => ({
  dtype: "f32",
  dims,
  shape,
});
const f32Out = (shape: number[]): HostTensor<"f32"> => allocHost(desc(shape));
const none: Cost = { flops: 0, bytesRead: 0, bytesWritten: 0, workspaceBytes: 0 };
const bytes = (d: TensorDesc) => d.shape.reduce((a, b) => a * b, 1) * 4;
// deno-lint-ignore ban-types -- `Schema.Struct({})` is Effect's empty struct; its type parameter is `{}`
const NoParams: Schema.Struct<{}> = Schema.Struct({});

/** `pos` of a run (throws `RangeError` when absent). */
const posOf = (ctx: CpuContext | undefined): number => {
  const pos = ctx?.scalars.pos;
  if (pos === undefined || !Number.isInteger(pos) || pos < 0) throw new RangeError(`scalar pos = ${pos}`);
  return pos;
};

// ---- model.embed

const embedPorts = { inputs: { tokens: U32, table: F32 }, outputs: { x: F32 } };
/**
 * `model.embed`: `tokens u32 [seq]`, `table f32 [vocab, hidden]` → `x f32 [seq, hidden]` (row gather). Token
 * ids outside `[0, vocab)` are the caller's to reject (the GPU kernel does not check them).
 */
export const embed: Operator<typeof NoParams.Type, typeof embedPorts.inputs, typeof embedPorts.outputs> = {
  name: "model.embed",
  kind: "embed",
  reference: "LLaMA (Touvron et al. 2023) §2: token embedding",
  params: NoParams,
  ...embedPorts,
  infer: (_p, i) =>
    i.tokens.shape.length !== 1 || i.table.shape.length !== 2 || i.table.shape[1] % 4 !== 0
      ? bad(
        `tokens [${i.tokens.shape}], table [${i.table.shape}]`,
        "tokens [seq], table [vocab, hidden % 4 = 0]",
      )
      : Effect.succeed({ x: desc([i.tokens.shape[0], i.table.shape[1]], ["seq", "hidden"]) }),
  cpu: (_p, i) => {
    const [seq] = i.tokens.desc.shape, [V, E] = i.table.desc.shape;
    const x = f32Out([seq, E]);
    for (let t = 0; t < seq; t++) {
      const id = i.tokens.data[t];
      if (id >= V) throw new RangeError(`token ${t} = ${id} outside [0, ${V})`);
      x.data.set((i.table.data as Float32Array).subarray(id * E, (id + 1) * E), t * E);
    }
    return { x } as HostOf<typeof embedPorts.outputs>;
  },
  gpu: (_p, i): GpuLowering => {
    const [seq] = i.tokens.shape, [, E] = i.table.shape;
    const n4 = (seq * E) / 4;
    return {
      workspaces: { u: 16 },
      launches: [{
        kernel: embedKernel(E),
        buffers: ["in:tokens", "in:table", "out:x", "ws:u"],
        workgroups: grid1d(Math.ceil(n4 / 256)),
        uniforms: { u: u32Uniform(n4) },
      }],
    };
  },
  cost: (_p, i) => ({
    ...none,
    bytesRead: bytes({ ...i.table, shape: [i.tokens.shape[0], i.table.shape[1]] }),
  }),
};

// ---- model.rmsNorm / model.addRmsNorm

/** Parameters of the norm operators: epsilon, and whether only the last row is normalised (the head). */
export const NormParams: Schema.Struct<{
  readonly eps: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly lastRow: Schema.withDecodingDefaultKey<Schema.Boolean>;
}> = Schema.Struct({
  /** RMSNorm epsilon added to the mean square (> 0; default 1e-5). */
  eps: Schema.Finite.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(1e-5))),
  /** Normalise only the last row (output `[1, hidden]`): the logits of the last token. */
  lastRow: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(false))),
});
/** Decoded norm parameters. */
export type NormParams = typeof NormParams.Type;

const normCpu = (x: Float32Array, w: Float32Array, rows: number, start: number, E: number, eps: number) => {
  const y = f32Out([rows, E]);
  for (let r = 0; r < rows; r++) {
    const src = (start + r) * E;
    let ss = 0;
    for (let c = 0; c < E; c++) ss += x[src + c] * x[src + c];
    const inv = 1 / Math.sqrt(ss / E + eps);
    for (let c = 0; c < E; c++) y.data[r * E + c] = Math.fround(x[src + c] * inv) * w[c];
  }
  return y;
};
const checkNorm = (x: TensorDesc, w: TensorDesc) =>
  x.shape.length !== 2 || w.shape.length !== 1 || w.shape[0] !== x.shape[1] || x.shape[1] % 4 !== 0
    ? `x [${x.shape}], w [${w.shape}]: expected x [rows, hidden], w [hidden], hidden % 4 = 0`
    : undefined;
const normLaunch = (p: NormParams, rows: number, E: number, add: boolean, buffers: string[]) => {
  const start = p.lastRow ? rows - 1 : 0, n = p.lastRow ? 1 : rows;
  return {
    kernel: addNormKernel(E, p.eps, add),
    buffers,
    workgroups: [n, 1, 1] as [number, number, number],
    uniforms: { u: u32Uniform(n, start, add ? 1 : 0) },
  };
};

const normPorts = { inputs: { x: F32, w: F32 }, outputs: { y: F32 } };
/** `model.rmsNorm`: `x f32 [rows, hidden]`, `w f32 [hidden]` → `y = x / rms(x) · w` (`[rows or 1, hidden]`). */
export const rmsNorm: Operator<NormParams, typeof normPorts.inputs, typeof normPorts.outputs> = {
  name: "model.rmsNorm",
  kind: "norm",
  reference: "RMSNorm (Zhang & Sennrich 2019), as LLaMA §2.2 pre-normalisation",
  params: NormParams,
  ...normPorts,
  infer: (p, i) => {
    const e = checkNorm(i.x, i.w);
    return e ? bad(e, "RMSNorm normalises rows") : Effect.succeed({
      y: desc([p.lastRow ? 1 : i.x.shape[0], i.x.shape[1]], ["seq", "hidden"]),
    });
  },
  cpu: (p, i) => {
    const [rows, E] = i.x.desc.shape;
    const start = p.lastRow ? rows - 1 : 0;
    return {
      y: normCpu(i.x.data as Float32Array, i.w.data as Float32Array, p.lastRow ? 1 : rows, start, E, p.eps),
    };
  },
  gpu: (p, i) => ({
    workspaces: { u: 16 },
    launches: [normLaunch(p, i.x.shape[0], i.x.shape[1], false, ["in:x", "in:w", "out:y", "ws:u"])],
  }),
  cost: (_p, i) => ({ ...none, flops: 3 * bytes(i.x) / 4, bytesRead: bytes(i.x), bytesWritten: bytes(i.x) }),
};

const addNormPorts = { inputs: { x: F32, t: F32, w: F32 }, outputs: { xo: F32, y: F32 } };
/**
 * `model.addRmsNorm`: the residual add then RMSNorm: `x += t` in place (`xo` is `x`'s storage: the residual
 * stream), `y = rmsNorm(x) · w`. With `lastRow`, only the last row is added and normalised.
 */
export const addRmsNorm: Operator<NormParams, typeof addNormPorts.inputs, typeof addNormPorts.outputs> = {
  name: "model.addRmsNorm",
  kind: "norm",
  reference: "LLaMA (Touvron et al. 2023) §2.2: residual add, then RMSNorm (Zhang & Sennrich 2019)",
  params: NormParams,
  ...addNormPorts,
  aliases: { xo: "x" },
  infer: (p, i) => {
    const e = checkNorm(i.x, i.w) ??
      (i.t.shape.join() !== i.x.shape.join() ? `t [${i.t.shape}] differs from x [${i.x.shape}]` : undefined);
    return e ? bad(e, "x and t are [rows, hidden], w [hidden]") : Effect.succeed({
      xo: i.x,
      y: desc([p.lastRow ? 1 : i.x.shape[0], i.x.shape[1]], ["seq", "hidden"]),
    });
  },
  cpu: (p, i) => {
    const [rows, E] = i.x.desc.shape;
    const x = i.x.data as Float32Array, t = i.t.data as Float32Array;
    const start = p.lastRow ? rows - 1 : 0;
    for (let k = start * E; k < rows * E; k++) x[k] = x[k] + t[k];
    const y = normCpu(x, i.w.data as Float32Array, p.lastRow ? 1 : rows, start, E, p.eps);
    return { xo: i.x, y } as HostOf<typeof addNormPorts.outputs>;
  },
  gpu: (p, i) => ({
    workspaces: { u: 16 },
    launches: [normLaunch(p, i.x.shape[0], i.x.shape[1], true, ["in:x", "in:t", "in:w", "out:y", "ws:u"])],
  }),
  cost: (_p, i) => ({
    ...none,
    flops: 4 * bytes(i.x) / 4,
    bytesRead: 2 * bytes(i.x),
    bytesWritten: 2 * bytes(i.x),
  }),
};

// ---- model.linear

/** Calls with at most this many rows use the GEMV kernel. */
const GEMV_MAX_ROWS = 8;
/** Parameters of `model.linear`: the device's workgroup memory (bytes) and invocation limit pick the tile. */
export const LinearParams: Schema.Struct<{
  readonly workgroupMemory: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly invocations: Schema.withDecodingDefaultKey<Schema.Int>;
}> = Schema.Struct({
  workgroupMemory: Schema.Int.check(Schema.isGreaterThanOrEqualTo(4096)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(16384)),
  ),
  invocations: Schema.Int.check(Schema.isGreaterThanOrEqualTo(64)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(256)),
  ),
});
/** Decoded `model.linear` parameters. */
export type LinearParams = typeof LinearParams.Type;
const linearPorts = { inputs: { x: F32, w: F32 }, outputs: { y: F32 } };
const largeTile = {
  dtype: "f32",
  transB: true,
  tileM: 128,
  tileN: 128,
  tileK: 8,
  threadM: 8,
  threadN: 8,
} as const;
const smallTile = { dtype: "f32", transB: true } as const;

/**
 * `model.linear`: `y [rows, out] = x [rows, in] · w [out, in]ᵀ` (the layout of GGUF/PyTorch weights). GPU: a
 * GEMV kernel for ≤ 8 rows (decode), else the tiled matmul of `kernels.matmul` (Volkov & Demmel 2008 tiling);
 * CPU: the backend's GEMM (OpenBLAS on the cpu backend) or a float64 loop.
 */
export const linear: Operator<LinearParams, typeof linearPorts.inputs, typeof linearPorts.outputs> = {
  name: "model.linear",
  kind: "matmul",
  reference: "LLaMA (Touvron et al. 2023) §2: linear projections x·Wᵀ",
  params: LinearParams,
  ...linearPorts,
  infer: (_p, i) =>
    i.x.shape.length !== 2 || i.w.shape.length !== 2 || i.w.shape[1] !== i.x.shape[1] ||
      i.x.shape[1] % 4 !== 0
      ? bad(`x [${i.x.shape}], w [${i.w.shape}]`, "x [rows, in], w [out, in], in % 4 = 0")
      : Effect.succeed({ y: desc([i.x.shape[0], i.w.shape[0]], ["seq", "out"]) }),
  cpu: (_p, i, ctx) => {
    const [M, K] = i.x.desc.shape, [N] = i.w.desc.shape;
    const y = f32Out([M, N]);
    const x = i.x.data as Float32Array, w = i.w.data as Float32Array;
    if (ctx?.gemm) ctx.gemm(false, true, M, N, K, 1, x, K, w, K, 0, y.data, N);
    else {
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
          y.data[m * N + n] = s;
        }
      }
    }
    return { y };
  },
  gpu: (p, i): GpuLowering => {
    const [M, K] = i.x.shape, [N] = i.w.shape;
    if (M <= GEMV_MAX_ROWS) {
      return {
        workspaces: { u: 16 },
        launches: [{
          kernel: gemvKernel(),
          buffers: ["in:x", "in:w", "out:y", "ws:u"],
          workgroups: [Math.ceil(N / 8), M, 1],
          uniforms: { u: u32Uniform(M, N, K / 4) },
        }],
      };
    }
    const canLarge = matmulWorkgroupBytes(largeTile) <= p.workgroupMemory && p.invocations >= 256;
    const plan = Effect.runSync(matmul(canLarge && M >= 512 ? largeTile : smallTile));
    return {
      workspaces: { u: 16 },
      launches: [{
        kernel: plan.kernel,
        buffers: ["in:x", "in:w", "out:y", "ws:u"],
        workgroups: plan.workgroups({ M, N, K }),
        uniforms: { u: plan.uniform({ M, N, K }) },
      }],
    };
  },
  cost: (_p, i) => {
    const [M, K] = i.x.shape, [N] = i.w.shape;
    return {
      flops: 2 * M * N * K,
      bytesRead: (M * K + N * K) * 4,
      bytesWritten: M * N * 4,
      workspaceBytes: 0,
    };
  },
};

// ---- model.rope (RoPE + KV append)

/**
 * The RoPE tables `model.rope` (and TokenSelect's re-positioning) read: `cos`, `sin f32 [positions, headDim / 2]`,
 * entry `(p, a)` = cos / sin of `p · theta^(−2a / headDim)` computed in f64 (RoFormer §3.4.2, rotate-half pairs
 * `(a, a + headDim / 2)`). `positions` rows from position 0; `headDim` even.
 */
export const ropeTables = (
  positions: number,
  headDim: number,
  theta: number,
): { readonly cos: Float32Array; readonly sin: Float32Array } => {
  const half = headDim / 2;
  const cos = new Float32Array(positions * half), sin = new Float32Array(positions * half);
  for (let p = 0; p < positions; p++) {
    for (let a = 0; a < half; a++) {
      const x = p * theta ** (-(2 * a) / headDim);
      cos[p * half + a] = Math.cos(x);
      sin[p * half + a] = Math.sin(x);
    }
  }
  return { cos, sin };
};

/** Parameters of `model.rope`: the model's head layout. */
export const RopeParams: Schema.Struct<{
  readonly heads: Schema.Int;
  readonly kvHeads: Schema.Int;
  readonly headDim: Schema.Int;
}> = Schema.Struct({
  heads: Schema.Int.check(Schema.isGreaterThan(0)),
  kvHeads: Schema.Int.check(Schema.isGreaterThan(0)),
  headDim: Schema.Int.check(Schema.isGreaterThan(0), Schema.isMultipleOf(2)),
});
/** Decoded `model.rope` parameters. */
export type RopeParams = typeof RopeParams.Type;
const ropePorts = {
  inputs: { qkv: F32, cos: F32, sin: F32, kCache: F32, vCache: F32 },
  outputs: { q: F32, kCacheOut: F32, vCacheOut: F32 },
};

/**
 * `model.rope`: the fused Q/K/V projection's rows `qkv [seq, (heads + 2·kvHeads)·headDim]` (Q heads, K heads, V
 * heads) at absolute positions `pos … pos + seq − 1` (runtime scalar `pos`): rotate-half RoPE of Q and K from
 * the tables `cos`, `sin [positions, headDim/2]`, Q out as `q [heads, seq, headDim]`, K and V **appended** to
 * the caches `kCache`, `vCache [kvHeads, capacity, headDim]` at rows `pos …` (outputs `kCacheOut`, `vCacheOut`
 * are the caches themselves: state updated in place).
 */
export const rope: Operator<RopeParams, typeof ropePorts.inputs, typeof ropePorts.outputs> = {
  name: "model.rope",
  kind: "rope",
  reference: "RoFormer (Su et al. 2021) §3.4.2, rotate-half layout; LLaMA §2.2; K/V appended to the cache",
  params: RopeParams,
  ...ropePorts,
  scalars: ["pos"],
  aliases: { kCacheOut: "kCache", vCacheOut: "vCache" },
  infer: (p, i) => {
    const { heads: H, kvHeads: KH, headDim: D } = p;
    const seq = i.qkv.shape[0];
    const cache = [KH, i.kCache.shape[1], D].join();
    if (i.qkv.shape.length !== 2 || i.qkv.shape[1] !== (H + 2 * KH) * D) {
      return bad(`qkv [${i.qkv.shape}], want [seq, ${(H + 2 * KH) * D}]`, "qkv rows hold Q, K and V heads");
    }
    if (i.kCache.shape.join() !== cache || i.vCache.shape.join() !== cache || i.kCache.shape.length !== 3) {
      return bad(`caches [${i.kCache.shape}] / [${i.vCache.shape}]`, `caches are [${KH}, capacity, ${D}]`);
    }
    if (i.cos.shape.join() !== i.sin.shape.join() || i.cos.shape[1] !== D / 2) {
      return bad(`cos [${i.cos.shape}], sin [${i.sin.shape}]`, `tables are [positions, ${D / 2}]`);
    }
    if (seq < 1 || seq > i.kCache.shape[1]) {
      return bad(`seq ${seq} vs capacity ${i.kCache.shape[1]}`, "seq ≤ capacity");
    }
    return Effect.succeed({
      q: desc([H, seq, D], ["heads", "seq", "headDim"]),
      kCacheOut: i.kCache,
      vCacheOut: i.vCache,
    });
  },
  cpu: (p, i, ctx) => {
    const { heads: H, kvHeads: KH, headDim: D } = p;
    const half = D / 2, seq = i.qkv.desc.shape[0], cap = i.kCache.desc.shape[1], NQKV = (H + 2 * KH) * D;
    const pos0 = posOf(ctx);
    if (pos0 + seq > cap) {
      throw new RangeError(`pos ${pos0} + ${seq} tokens exceed the cache capacity ${cap}`);
    }
    if (pos0 + seq > i.cos.desc.shape[0]) {
      throw new RangeError(`positions past the RoPE table (${i.cos.desc.shape[0]})`);
    }
    const qkv = i.qkv.data as Float32Array,
      cos = i.cos.data as Float32Array,
      sin = i.sin.data as Float32Array;
    const kc = i.kCache.data as Float32Array, vc = i.vCache.data as Float32Array;
    const q = f32Out([H, seq, D]);
    for (let t = 0; t < seq; t++) {
      const pos = pos0 + t;
      for (let slot = 0; slot < H + 2 * KH; slot++) {
        for (let j = 0; j < half; j++) {
          const src = t * NQKV + slot * D + j;
          const a = qkv[src], b = qkv[src + half];
          if (slot >= H + KH) {
            const dst = ((slot - H - KH) * cap + pos) * D + j;
            vc[dst] = a;
            vc[dst + half] = b;
            continue;
          }
          const cs = cos[pos * half + j], sn = sin[pos * half + j];
          const ra = Math.fround(a * cs - b * sn), rb = Math.fround(b * cs + a * sn);
          if (slot < H) {
            q.data[(slot * seq + t) * D + j] = ra;
            q.data[(slot * seq + t) * D + j + half] = rb;
          } else {
            const dst = ((slot - H) * cap + pos) * D + j;
            kc[dst] = ra;
            kc[dst + half] = rb;
          }
        }
      }
    }
    return { q, kCacheOut: i.kCache, vCacheOut: i.vCache } as HostOf<typeof ropePorts.outputs>;
  },
  gpu: (p, i): GpuLowering => {
    const seq = i.qkv.shape[0], cap = i.kCache.shape[1];
    const uniform = (pos: number) => u32Uniform(seq, pos, cap);
    return {
      workspaces: { u: 16 },
      launches: [{
        kernel: ropeKernel(p),
        buffers: ["in:qkv", "in:cos", "in:sin", "out:q", "in:kCache", "in:vCache", "ws:u"],
        workgroups: grid1d(Math.ceil((seq * (p.heads + 2 * p.kvHeads) * (p.headDim / 2)) / 256)),
        uniforms: { u: uniform(0) },
        dynamic: (s) => {
          const pos = s.pos ?? 0;
          if (pos + seq > cap) {
            throw new RangeError(`pos ${pos} + ${seq} tokens exceed the cache capacity ${cap}`);
          }
          return { uniforms: { u: uniform(pos) } };
        },
      }],
    };
  },
  cost: (_p, i) => ({ ...none, bytesRead: bytes(i.qkv), bytesWritten: bytes(i.qkv) }),
};

// ---- model.kvRead

const kvReadPorts = { inputs: { kCache: F32, vCache: F32 }, outputs: { k: F32, v: F32 } };
/** Parameters of `model.kvRead`: how many rows to read. */
export const KvReadParams: Schema.Struct<{ readonly rows: Schema.Int }> = Schema.Struct({
  rows: Schema.Int.check(Schema.isGreaterThan(0)),
});
/**
 * `model.kvRead`: the cache's first `rows` rows `kCache`, `vCache [kvHeads, capacity, headDim]` → contiguous
 * `k`, `v [kvHeads, rows, headDim]` — what an attention sub-graph (dense, SALE) of a prefill from position 0
 * reads.
 */
export const kvRead: Operator<
  typeof KvReadParams.Type,
  typeof kvReadPorts.inputs,
  typeof kvReadPorts.outputs
> = {
  name: "model.kvRead",
  kind: "elementwise",
  reference: "KV cache read of rows [0, rows)",
  params: KvReadParams,
  ...kvReadPorts,
  infer: (p, i) =>
    i.kCache.shape.length !== 3 || i.kCache.shape.join() !== i.vCache.shape.join() ||
      p.rows > i.kCache.shape[1] ||
      i.kCache.shape[2] % 4 !== 0
      ? bad(`caches [${i.kCache.shape}] / [${i.vCache.shape}], rows ${p.rows}`, "rows ≤ capacity; one shape")
      : Effect.succeed({
        k: desc([i.kCache.shape[0], p.rows, i.kCache.shape[2]], ["kvHeads", "kvSeq", "headDim"]),
        v: desc([i.kCache.shape[0], p.rows, i.kCache.shape[2]], ["kvHeads", "kvSeq", "headDim"]),
      }),
  cpu: (p, i) => {
    const [KH, cap, D] = i.kCache.desc.shape;
    const k = f32Out([KH, p.rows, D]), v = f32Out([KH, p.rows, D]);
    for (let h = 0; h < KH; h++) {
      k.data.set(
        (i.kCache.data as Float32Array).subarray(h * cap * D, (h * cap + p.rows) * D),
        h * p.rows * D,
      );
      v.data.set(
        (i.vCache.data as Float32Array).subarray(h * cap * D, (h * cap + p.rows) * D),
        h * p.rows * D,
      );
    }
    const dims = ["kvHeads", "kvSeq", "headDim"];
    return { k: { ...k, desc: { ...k.desc, dims } }, v: { ...v, desc: { ...v.desc, dims } } } as HostOf<
      typeof kvReadPorts.outputs
    >;
  },
  gpu: (p, i) => {
    const [KH, cap, D] = i.kCache.shape;
    return {
      workspaces: { u: 16 },
      launches: [{
        kernel: kvReadKernel(KH, D),
        buffers: ["in:kCache", "in:vCache", "out:k", "out:v", "ws:u"],
        workgroups: grid1d(Math.ceil((KH * p.rows * D) / 4 / 256)),
        uniforms: { u: u32Uniform(p.rows, cap) },
      }],
    };
  },
  cost: (p, i) => ({ ...none, bytesRead: 2 * i.kCache.shape[0] * p.rows * i.kCache.shape[2] * 4 }),
};

// ---- model.headsToRows

const h2rPorts = { inputs: { a: F32 }, outputs: { o: F32 } };
/** `model.headsToRows`: `a [heads, seq, headDim]` → `o [seq, heads·headDim]` (attention out → projection in). */
export const headsToRows: Operator<typeof NoParams.Type, typeof h2rPorts.inputs, typeof h2rPorts.outputs> = {
  name: "model.headsToRows",
  kind: "elementwise",
  reference: "layout change [heads, seq, headDim] → [seq, heads·headDim]",
  params: NoParams,
  ...h2rPorts,
  infer: (_p, i) =>
    i.a.shape.length !== 3 || i.a.shape[2] % 4 !== 0
      ? bad(`a [${i.a.shape}]`, "a [heads, seq, headDim], headDim % 4 = 0")
      : Effect.succeed({ o: desc([i.a.shape[1], i.a.shape[0] * i.a.shape[2]], ["seq", "hidden"]) }),
  cpu: (_p, i) => {
    const [H, seq, D] = i.a.desc.shape;
    const o = f32Out([seq, H * D]);
    const a = i.a.data as Float32Array;
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < seq; t++) {
        o.data.set(a.subarray((h * seq + t) * D, (h * seq + t + 1) * D), (t * H + h) * D);
      }
    }
    return { o };
  },
  gpu: (_p, i) => {
    const [H, seq, D] = i.a.shape;
    return {
      workspaces: { u: 16 },
      launches: [{
        kernel: headsToRowsKernel(H, D),
        buffers: ["in:a", "out:o", "ws:u"],
        workgroups: grid1d(Math.ceil((seq * H * D) / 4 / 256)),
        uniforms: { u: u32Uniform(seq) },
      }],
    };
  },
  cost: (_p, i) => ({ ...none, bytesRead: bytes(i.a), bytesWritten: bytes(i.a) }),
};

// ---- model.swiglu

const swigluPorts = { inputs: { gu: F32 }, outputs: { g: F32 } };
/** `model.swiglu`: fused gate/up rows `gu [seq, 2F]` (gate `0…F−1`, up `F…2F−1`) → `g = silu(gate)·up [seq, F]`. */
export const swiglu: Operator<typeof NoParams.Type, typeof swigluPorts.inputs, typeof swigluPorts.outputs> = {
  name: "model.swiglu",
  kind: "elementwise",
  reference: "GLU variants (Shazeer 2020): SwiGLU, as LLaMA §2.2",
  params: NoParams,
  ...swigluPorts,
  infer: (_p, i) =>
    i.gu.shape.length !== 2 || i.gu.shape[1] % 2 !== 0
      ? bad(`gu [${i.gu.shape}]`, "gu [seq, 2·ffn]")
      : Effect.succeed({ g: desc([i.gu.shape[0], i.gu.shape[1] / 2], ["seq", "ffn"]) }),
  cpu: (_p, i) => {
    const [seq, F2] = i.gu.desc.shape, F = F2 / 2;
    const g = f32Out([seq, F]);
    const gu = i.gu.data as Float32Array;
    for (let t = 0; t < seq; t++) {
      for (let j = 0; j < F; j++) {
        const a = gu[t * F2 + j];
        g.data[t * F + j] = (a / (1 + Math.exp(-a))) * gu[t * F2 + F + j];
      }
    }
    return { g };
  },
  gpu: (_p, i) => {
    const [seq, F2] = i.gu.shape;
    return {
      workspaces: { u: 16 },
      launches: [{
        kernel: swigluKernel(F2 / 2),
        buffers: ["in:gu", "out:g", "ws:u"],
        workgroups: grid1d(Math.ceil((seq * F2) / 2 / 256)),
        uniforms: { u: u32Uniform((seq * F2) / 2) },
      }],
    };
  },
  cost: (_p, i) => ({
    ...none,
    flops: 2 * bytes(i.gu) / 4,
    bytesRead: bytes(i.gu),
    bytesWritten: bytes(i.gu) / 2,
  }),
};

// ---- model.argmax

const argmaxPorts = { inputs: { logits: F32 }, outputs: { id: U32 } };
/** `model.argmax`: index of the largest value of the last row of `logits [rows, vocab]` (first on ties) → `u32 [1]`. */
export const argmax: Operator<typeof NoParams.Type, typeof argmaxPorts.inputs, typeof argmaxPorts.outputs> = {
  name: "model.argmax",
  kind: "elementwise",
  reference: "greedy decoding: argmax of the last logits",
  params: NoParams,
  ...argmaxPorts,
  infer: (_p, i) =>
    i.logits.shape.length !== 2 || i.logits.shape[1] < 1
      ? bad(`logits [${i.logits.shape}]`, "logits [rows, vocab]")
      : Effect.succeed({
        id: { dtype: "u32", dims: ["one"], shape: [1] } as DescsOf<typeof argmaxPorts.outputs>["id"],
      }),
  cpu: (_p, i) => {
    const [rows, V] = i.logits.desc.shape;
    const x = i.logits.data as Float32Array;
    let best = 0;
    for (let j = 1; j < V; j++) if (x[(rows - 1) * V + j] > x[(rows - 1) * V + best]) best = j;
    const id = allocHost({ dtype: "u32", dims: ["one"], shape: [1] });
    id.data[0] = best;
    return { id } as HostOf<typeof argmaxPorts.outputs>;
  },
  gpu: (_p, i) => ({
    workspaces: { u: 16 },
    launches: [{
      kernel: argmaxKernel(),
      buffers: ["in:logits", "out:id", "ws:u"],
      workgroups: [1, 1, 1],
      uniforms: { u: u32Uniform(i.logits.shape[1], i.logits.shape[0] - 1) },
    }],
  }),
  cost: (_p, i) => ({ ...none, bytesRead: i.logits.shape[1] * 4 }),
};

// ---- model.sliceRows

const slicePorts = { inputs: { a: F32 }, outputs: { o: F32 } };
/** Parameters of `model.sliceRows`: rows per call. */
export const SliceRowsParams: Schema.Struct<{ readonly rows: Schema.Int }> = Schema.Struct({
  rows: Schema.Int.check(Schema.isGreaterThan(0)),
});
/**
 * `model.sliceRows`: rows `start … start + rows − 1` (runtime scalar `start`) of `a f32 [n, width]` →
 * `o [rows, width]`, e.g. the final hidden states a chunk at a time into the output head (all-position logits).
 * A run whose `start + rows` exceeds `n` fails.
 */
export const sliceRows: Operator<
  typeof SliceRowsParams.Type,
  typeof slicePorts.inputs,
  typeof slicePorts.outputs
> = {
  name: "model.sliceRows",
  kind: "elementwise",
  reference: "row slice with a runtime offset",
  params: SliceRowsParams,
  ...slicePorts,
  scalars: ["start"],
  infer: (p, i) =>
    i.a.shape.length !== 2 || p.rows > i.a.shape[0] || i.a.shape[1] % 4 !== 0
      ? bad(`a [${i.a.shape}], rows ${p.rows}`, "a [n, width % 4 = 0], rows ≤ n")
      : Effect.succeed({ o: desc([p.rows, i.a.shape[1]], ["seq", "hidden"]) }),
  cpu: (p, i, ctx) => {
    const [n, E] = i.a.desc.shape;
    const start = ctx?.scalars.start ?? -1;
    if (!Number.isInteger(start) || start < 0 || start + p.rows > n) {
      throw new RangeError(`rows ${start} + ${p.rows} outside [0, ${n})`);
    }
    const o = f32Out([p.rows, E]);
    o.data.set((i.a.data as Float32Array).subarray(start * E, (start + p.rows) * E));
    return { o };
  },
  gpu: (p, i) => {
    const [n, E] = i.a.shape;
    const n4 = (p.rows * E) / 4;
    return {
      workspaces: { u: 16 },
      launches: [{
        kernel: sliceRowsKernel(E),
        buffers: ["in:a", "out:o", "ws:u"],
        workgroups: grid1d(Math.ceil(n4 / 256)),
        uniforms: { u: u32Uniform(n4, 0) },
        dynamic: (s) => {
          const start = s.start ?? -1;
          if (!Number.isInteger(start) || start < 0 || start + p.rows > n) {
            throw new RangeError(`rows ${start} + ${p.rows} outside [0, ${n})`);
          }
          return { uniforms: { u: u32Uniform(n4, start) } };
        },
      }],
    };
  },
  cost: (p, i) => ({
    ...none,
    bytesRead: p.rows * i.a.shape[1] * 4,
    bytesWritten: p.rows * i.a.shape[1] * 4,
  }),
};

// ---- model.sqDiff

const sqDiffPorts = { inputs: { a: F32, b: F32 }, outputs: { sums: F32 } };
/**
 * `model.sqDiff`: `sums = [Σ (a − b)², Σ b²]` (`f32 [2]`) over two tensors of one shape — the relative error
 * `‖a − b‖ / ‖b‖ = sqrt(sums[0] / sums[1])` of a layer's attention output against a reference, computed where
 * the tensors live (8 bytes read back instead of both tensors).
 */
export const sqDiff: Operator<typeof NoParams.Type, typeof sqDiffPorts.inputs, typeof sqDiffPorts.outputs> = {
  name: "model.sqDiff",
  kind: "elementwise",
  reference: "relative L2 error ‖a − b‖ / ‖b‖ (its two sums)",
  params: NoParams,
  ...sqDiffPorts,
  infer: (_p, i) =>
    i.a.shape.join() !== i.b.shape.join()
      ? bad(`a [${i.a.shape}] vs b [${i.b.shape}]`, "compare tensors of one shape")
      : Effect.succeed({ sums: desc([2], ["two"]) }),
  cpu: (_p, i) => {
    const a = i.a.data as Float32Array, b = i.b.data as Float32Array;
    let d = 0, s = 0;
    for (let k = 0; k < b.length; k++) {
      d += (a[k] - b[k]) ** 2;
      s += b[k] ** 2;
    }
    const sums = f32Out([2]);
    sums.data[0] = d;
    sums.data[1] = s;
    return { sums };
  },
  gpu: (_p, i) => ({
    workspaces: { u: 16 },
    launches: [{
      kernel: sqDiffKernel(),
      buffers: ["in:a", "in:b", "out:sums", "ws:u"],
      workgroups: [1, 1, 1],
      uniforms: { u: u32Uniform(i.b.shape.reduce((x, y) => x * y, 1)) },
    }],
  }),
  cost: (_p, i) => ({ ...none, flops: 4 * bytes(i.b) / 4, bytesRead: 2 * bytes(i.b) }),
};

// ---- model.lseRecall

const recallPorts = { inputs: { lse: F32, lseRef: F32 }, outputs: { stats: F32 } };
/**
 * `model.lseRecall`: attention-mass recall of a sparse attention against the dense one over the same rows:
 * with `lse` the sparse and `lseRef` the dense log-sum-exp of each query row (`f32 [heads, seq]`), the share of
 * the row's exact attention mass inside the kept keys is `exp(lse − lseRef)`; `stats = [Σ, min]` of it over
 * the rows (`f32 [2]`; a row with no key in the reference counts as 1). Mean recall = `stats[0] / rows`.
 */
export const lseRecall: Operator<
  typeof NoParams.Type,
  typeof recallPorts.inputs,
  typeof recallPorts.outputs
> = {
  name: "model.lseRecall",
  kind: "elementwise",
  reference: "attention-mass recall exp(lse_sparse − lse_dense), as the SALE/HiP papers' recall",
  params: NoParams,
  ...recallPorts,
  infer: (_p, i) =>
    i.lse.shape.join() !== i.lseRef.shape.join()
      ? bad(`lse [${i.lse.shape}] vs lseRef [${i.lseRef.shape}]`, "compare LSEs of the same rows")
      : Effect.succeed({ stats: desc([2], ["two"]) }),
  cpu: (_p, i) => {
    const a = i.lse.data as Float32Array, b = i.lseRef.data as Float32Array;
    let s = 0, m = Infinity;
    for (let k = 0; k < b.length; k++) {
      const r = b[k] === -Infinity || b[k] < -1e38 ? 1 : Math.exp(Math.max(a[k], -1e30) - b[k]);
      s += r;
      m = Math.min(m, r);
    }
    const stats = f32Out([2]);
    stats.data[0] = s;
    stats.data[1] = b.length > 0 ? m : 1;
    return { stats };
  },
  gpu: (_p, i) => ({
    workspaces: { u: 16 },
    launches: [{
      kernel: lseRecallKernel(),
      buffers: ["in:lse", "in:lseRef", "out:stats", "ws:u"],
      workgroups: [1, 1, 1],
      uniforms: { u: u32Uniform(i.lseRef.shape.reduce((x, y) => x * y, 1)) },
    }],
  }),
  cost: (_p, i) => ({ ...none, flops: 4 * bytes(i.lse) / 4, bytesRead: 2 * bytes(i.lse) }),
};

/** Every `model.*` operator. */
export const MODEL_OPERATORS: readonly Operator<never, Ports, Ports>[] = [
  embed,
  rmsNorm,
  addRmsNorm,
  linear,
  rope,
  kvRead,
  headsToRows,
  swiglu,
  argmax,
  sliceRows,
  sqDiff,
  lseRecall,
] as unknown as readonly Operator<never, Ports, Ports>[];
