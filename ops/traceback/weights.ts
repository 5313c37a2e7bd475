/**
 * `traceback.weights`: AttnTrace's token weights for one layer — the attention probabilities of the query rows
 * that predict the answer tokens (`seq − A − 1 … seq − 2` for `A` answer tokens at the end of the sequence)
 * over every key, averaged over the query heads and those rows:
 *
 *   `w[j] = 1/(H·A) · Σ_h Σ_{i<A} [j ≤ r_i] · exp(scale · q_{h,r_i} · k_{g(h),j} − lse_{h,r_i})`,  `r_i = seq − A − 1 + i`
 *
 * with `g(h) = ⌊h / (H / Hkv)⌋` (GQA: the key head repeated for its query heads, as `repeat_kv`) and `lse` the
 * natural-log normaliser of each row's causal softmax — `dense.attn`'s `lse` output, so the weights are the
 * probabilities of the very attention the layer ran (flash attention keeps no probabilities: this recomputes
 * only the `A` rows it needs from the layer's own post-RoPE Q/K).
 *
 * Reference: AttnTrace (arXiv 2508.03793); official code `AttnTraceAttribution.attribute` (per-layer
 * recomputation from each layer's input: norm → q/k projections → RoPE → repeat_kv → causal softmax).
 * @module
 */
import { Effect } from "effect";
import { allocHost, tensorType } from "@longctx/graph";
import type { Cost, CpuContext, DescsOf, GpuLowering, HostOf, Operator, TensorType } from "@longctx/graph";
import { effectiveScale, need } from "../dense/common.ts";
import { TracebackWeightsParams } from "./params.ts";

/** Input ports of `traceback.weights`. */
export type TracebackWeightsInputs = {
  /** Queries after RoPE, `f32 [heads, seq, headDim]` (a prefill from position 0). */
  readonly q: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Keys after RoPE, `f32 [kvHeads, seq, headDim]`. */
  readonly k: TensorType<"f32", readonly ["kvHeads", "kvSeq", "headDim"]>;
  /** Natural-log LSE of each row's scaled causal scores, `f32 [heads, seq]` (`dense.attn`'s `lse`). */
  readonly lse: TensorType<"f32", readonly ["heads", "seq"]>;
};
/** Output ports of `traceback.weights`. */
export type TracebackWeightsOutputs = {
  /** Per key token, its attention probability averaged over heads and answer rows, `f32 [seq]`. */
  readonly w: TensorType<"f32", readonly ["seq"]>;
};

const inputs: TracebackWeightsInputs = {
  q: tensorType("f32", ["heads", "seq", "headDim"] as const),
  k: tensorType("f32", ["kvHeads", "kvSeq", "headDim"] as const),
  lse: tensorType("f32", ["heads", "seq"] as const),
};
const outputs: TracebackWeightsOutputs = { w: tensorType("f32", ["seq"] as const) };

/** Problem size of one `traceback.weights` call. */
export interface TracebackDims {
  /** Query heads. */
  readonly H: number;
  /** Key/value heads (divides `H`). */
  readonly Hk: number;
  /** Tokens (queries and keys). */
  readonly seq: number;
  /** Head dimension. */
  readonly d: number;
}

/**
 * `traceback.weights` on host arrays (f32 storage, f64 sums): `q [H, seq, d]`, `k [Hk, seq, d]`, `lse [H, seq]`
 * → `w [seq]`. Score rows go through `gemm` (row-major SGEMM) when given, else plain loops.
 */
export const tracebackWeightsHost = (
  p: TracebackWeightsParams,
  q: Float32Array,
  k: Float32Array,
  lse: Float32Array,
  dm: TracebackDims,
  gemm?: CpuContext["gemm"],
): Float32Array => {
  const { H, Hk, seq, d } = dm, A = p.answerTokens, r0 = seq - A - 1, g = H / Hk;
  const scale = effectiveScale(p.scale, d);
  const acc = new Float64Array(seq);
  const keys = seq - 1; // the last row that is read is seq − 2: keys 0 … seq − 2
  const rowQ = new Float32Array(A * d), s = new Float32Array(A * keys);
  for (let h = 0; h < H; h++) {
    const hk = Math.floor(h / g);
    const K = k.subarray(hk * seq * d, (hk + 1) * seq * d);
    rowQ.set(q.subarray((h * seq + r0) * d, (h * seq + r0 + A) * d));
    if (gemm) gemm(false, true, A, keys, d, scale, rowQ, d, K, d, 0, s, keys);
    else {
      for (let i = 0; i < A; i++) {
        for (let j = 0; j <= r0 + i; j++) {
          let dot = 0;
          for (let c = 0; c < d; c++) dot += rowQ[i * d + c] * K[j * d + c];
          s[i * keys + j] = dot * scale;
        }
      }
    }
    for (let i = 0; i < A; i++) {
      const l = lse[h * seq + r0 + i], at = i * keys;
      for (let j = 0; j <= r0 + i; j++) acc[j] += Math.exp(s[at + j] - l);
    }
  }
  const w = new Float32Array(seq), inv = 1 / (H * A);
  for (let j = 0; j < seq; j++) w[j] = acc[j] * inv;
  return w;
};

const WG = 64;

const weightsWgsl = (p: TracebackWeightsParams, dm: TracebackDims) => {
  const { H, Hk, seq, d } = dm, A = p.answerTokens, r0 = seq - A - 1, v = d / 4;
  const scale = effectiveScale(p.scale, d);
  return [
    `@group(0) @binding(0) var<storage, read> Q: array<vec4<f32>>;`,
    `@group(0) @binding(1) var<storage, read> K: array<vec4<f32>>;`,
    `@group(0) @binding(2) var<storage, read> LSE: array<f32>;`,
    `@group(0) @binding(3) var<storage, read_write> PART: array<f32>;`,
    `@group(0) @binding(4) var<storage, read_write> W: array<f32>;`,
    // one thread per (key j, query head h): Σ_i over the answer rows that see key j
    `@compute @workgroup_size(${WG})`,
    `fn part(@builtin(global_invocation_id) gid: vec3<u32>) {`,
    `  let j = gid.x; let h = gid.y;`,
    `  if (j >= ${seq}u) { return; }`,
    `  let hk = h / ${H / Hk}u;`,
    `  var kr: array<vec4<f32>, ${v}>;`,
    `  for (var c = 0u; c < ${v}u; c++) { kr[c] = K[(hk * ${seq}u + j) * ${v}u + c]; }`,
    `  var acc = 0.0;`,
    `  var i0 = 0u;`,
    `  if (j > ${r0}u) { i0 = j - ${r0}u; }`,
    `  for (var i = i0; i < ${A}u; i++) {`,
    `    let r = ${r0}u + i; let qo = (h * ${seq}u + r) * ${v}u;`,
    `    var dot = vec4<f32>(0.0);`,
    `    for (var c = 0u; c < ${v}u; c++) { dot = fma(Q[qo + c], kr[c], dot); }`,
    `    acc += exp((dot.x + dot.y + dot.z + dot.w) * ${scale} - LSE[h * ${seq}u + r]);`,
    `  }`,
    `  PART[h * ${seq}u + j] = acc;`,
    `}`,
    // the mean over heads and rows
    `@compute @workgroup_size(${WG})`,
    `fn total(@builtin(global_invocation_id) gid: vec3<u32>) {`,
    `  let j = gid.x;`,
    `  if (j >= ${seq}u) { return; }`,
    `  var s = 0.0;`,
    `  for (var h = 0u; h < ${H}u; h++) { s += PART[h * ${seq}u + j]; }`,
    `  W[j] = s * ${1 / (H * A)};`,
    `}`,
  ].join("\n");
};

const dimsOf = (i: { q: { shape: readonly number[] }; k: { shape: readonly number[] } }): TracebackDims => {
  const [H, seq, d] = i.q.shape as [number, number, number];
  return { H, Hk: i.k.shape[0], seq, d };
};

/**
 * `traceback.weights` (see the module doc): `q f32 [heads, seq, headDim]`, `k f32 [kvHeads, seq, headDim]`
 * (after RoPE, a prefill from position 0), `lse f32 [heads, seq]` → `w f32 [seq]`. Shape errors: `k` not
 * `[kvHeads, seq, headDim]`, heads not a multiple of kvHeads, headDim not a multiple of 4, `lse` not `[heads,
 * seq]`, or `answerTokens ≥ seq` (the rows `seq − A − 1 …` must exist).
 */
export const weights: Operator<TracebackWeightsParams, TracebackWeightsInputs, TracebackWeightsOutputs> = {
  name: "traceback.weights",
  kind: "traceback",
  reference: "AttnTrace (arXiv 2508.03793): attention weights of the answer-predicting positions over the " +
    "context, averaged over heads and answer tokens (official AttnTraceAttribution.attribute)",
  params: TracebackWeightsParams,
  inputs,
  outputs,
  infer: (p, i) =>
    Effect.gen(function* () {
      const [H, seq, d] = i.q.shape as [number, number, number];
      const [Hk, kSeq, dk] = i.k.shape as [number, number, number];
      yield* need(
        kSeq === seq && dk === d && H % Hk === 0 && d % 4 === 0,
        "k",
        `q [${i.q.shape}], k [${i.k.shape}]`,
        "k is the prefill's keys [kvHeads, seq, headDim]; heads a multiple of kvHeads; headDim a multiple of 4",
      );
      yield* need(
        i.lse.shape.join() === `${H},${seq}`,
        "lse",
        `lse [${i.lse.shape}], q [${i.q.shape}]`,
        "lse is dense.attn's [heads, seq]",
      );
      yield* need(
        p.answerTokens + 1 <= seq,
        "answerTokens",
        `${p.answerTokens} answer tokens in a sequence of ${seq}`,
        "the sequence holds the prompt and then the answer: answerTokens < seq",
      );
      return { w: { ...outputs.w, shape: [seq] } } as DescsOf<TracebackWeightsOutputs>;
    }),
  cpu: (p, i, ctx) => {
    const dm = dimsOf({ q: i.q.desc, k: i.k.desc });
    const w = allocHost({ ...outputs.w, shape: [dm.seq] });
    w.data.set(
      tracebackWeightsHost(
        p,
        i.q.data as Float32Array,
        i.k.data as Float32Array,
        i.lse.data as Float32Array,
        dm,
        ctx?.gemm,
      ),
    );
    return { w } as HostOf<TracebackWeightsOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const dm = dimsOf(i), wgsl = weightsWgsl(p, dm);
    const key = `traceback.weights:${dm.H}/${dm.Hk}x${dm.seq}x${dm.d}:${p.answerTokens}:${p.scale}`;
    const groups = Math.ceil(dm.seq / WG);
    const bindings = ["read", "read", "read", "read_write", "read_write"] as const;
    const buffers = ["in:q", "in:k", "in:lse", "ws:part", "out:w"];
    return {
      workspaces: { part: 4 * dm.H * dm.seq },
      launches: [
        {
          kernel: { key: `${key}:part`, wgsl, entryPoint: "part", bindings: [...bindings] },
          buffers,
          workgroups: [groups, dm.H, 1],
        },
        {
          kernel: { key: `${key}:total`, wgsl, entryPoint: "total", bindings: [...bindings] },
          buffers,
          workgroups: [groups, 1, 1],
        },
      ],
    };
  },
  cost: (p, i): Cost => {
    const { H, Hk, seq, d } = dimsOf(i), A = p.answerTokens;
    return {
      flops: 2 * H * A * seq * d + 2 * H * A * seq,
      bytesRead: (Hk * seq * d + H * A * d + H * seq) * 4,
      bytesWritten: seq * 4,
      workspaceBytes: 4 * H * seq,
    };
  },
};
