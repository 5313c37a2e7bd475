/**
 * Llama-architecture forward pass on the CPU (f32), for SmolLM2-135M-Instruct and other small llama GGUFs:
 * token embedding → `nLayer` × [RMSNorm → Q/K/V projections → RoPE → attention (pluggable) → output projection
 * → residual → RMSNorm → SwiGLU MLP → residual] → RMSNorm → output head (tied to the embedding when the file
 * has no `output.weight`).
 *
 * Weights are dequantised to f32 once at load. Weight matmuls, and the dense attention's QKᵀ and PV, run through
 * {@link Sgemm} (OpenBLAS via FFI, TypeScript fallback).
 *
 * Q/K layout: llama.cpp's converter permutes the rows of `attn_q`/`attn_k` so that its "normal" RoPE rotates
 * adjacent pairs. The loader undoes that permutation, so Q and K here are in Hugging Face's layout and RoPE is
 * the rotate-half form (pairs `(i, i + headDim/2)`, angle `pos · θ^(−2i/headDim)`): captured Q/K match what
 * `transformers` computes. References: Touvron et al. 2023 (LLaMA) §2.2; Su et al. 2021 (RoFormer) §3.4.2;
 * Ainslie et al. 2023 (GQA).
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Effect } from "effect";
import { InputError, ShapeError } from "@longctx/graph";
import { type GgufFile, meta, openGguf, tensorF32 } from "./gguf.ts";
import { loadSgemm, type Sgemm } from "./blas.ts";
import { dense } from "@longctx/ops";
import { type TextTokenizer, tokenizerFromGguf } from "./tokenizer.ts";

/** Model hyper-parameters (from GGUF `llama.*` metadata). */
export interface LlamaConfig {
  /** Transformer layers (30 for SmolLM2-135M). */
  readonly nLayer: number;
  /** Hidden size (576 for SmolLM2-135M). */
  readonly nEmbd: number;
  /** Query heads (9). */
  readonly nHead: number;
  /** Key/value heads (3; GQA). */
  readonly nKvHead: number;
  /** Elements per head vector (64). */
  readonly headDim: number;
  /** MLP inner size (1536). */
  readonly nFf: number;
  /** Vocabulary size (49152). */
  readonly vocab: number;
  /** RoPE base θ (100000 for SmolLM2). */
  readonly ropeTheta: number;
  /** RMSNorm epsilon. */
  readonly eps: number;
  /** Trained context length (tokens). */
  readonly contextLength: number;
}

/** One layer's f32 weights, each row-major `[out, in]`. */
export interface LlamaLayer {
  /** `[nEmbd]` RMSNorm weight before attention. */
  readonly attnNorm: Float32Array;
  /** `[nHead·headDim, nEmbd]`, rows in HF (un-permuted) order. */
  readonly wq: Float32Array;
  /** `[nKvHead·headDim, nEmbd]`, rows in HF order. */
  readonly wk: Float32Array;
  /** `[nKvHead·headDim, nEmbd]` */
  readonly wv: Float32Array;
  /** `[nEmbd, nHead·headDim]` */
  readonly wo: Float32Array;
  /** `[nEmbd]` RMSNorm weight before the MLP. */
  readonly ffnNorm: Float32Array;
  /** `[nFf, nEmbd]` */
  readonly wGate: Float32Array;
  /** `[nFf, nEmbd]` */
  readonly wUp: Float32Array;
  /** `[nEmbd, nFf]` */
  readonly wDown: Float32Array;
}

/** The KV cache: per layer K and V `[nKvHead, capacity, headDim]` f32 (post-RoPE K); `length` rows are valid. */
export interface KvCache {
  /** Tokens it can hold. */
  readonly capacity: number;
  /** Valid rows (tokens already run). */
  length: number;
  /** Per layer, keys after RoPE `[nKvHead, capacity, headDim]`. */
  readonly k: Float32Array[];
  /** Per layer, values `[nKvHead, capacity, headDim]`. */
  readonly v: Float32Array[];
}

/** What an attention function is told besides Q, K and V. */
export interface AttentionContext {
  /** Layer index. */
  readonly layer: number;
  /** Absolute position of the first new query (= cached tokens before this call). */
  readonly offset: number;
  /** New query tokens in this call. */
  readonly seq: number;
  /** Valid K/V rows: `offset + seq`. Query `i` (absolute `offset + i`) may see keys `0 … offset + i`. */
  readonly kvLen: number;
  /** Row stride between K/V heads: head `g` starts at `g · kvStride · headDim` (the cache capacity). */
  readonly kvStride: number;
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads. */
  readonly kvHeads: number;
  /** Elements per head vector. */
  readonly headDim: number;
  /** Softmax scale, `1/√headDim`. */
  readonly scale: number;
  /** The GEMM in use (OpenBLAS or TypeScript). */
  readonly sgemm: Sgemm;
}

/**
 * Pluggable attention: `q [heads, seq, headDim]` f32 (after RoPE), `k`/`v` the layer's cache
 * `[kvHeads, kvStride, headDim]` with `kvLen` valid rows (K after RoPE) → `o [heads, seq, headDim]` f32.
 * GQA: query head `h` reads KV head `floor(h / (heads / kvHeads))`. Must be causal for decoding to be exact.
 */
export type AttentionFn = (
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  ctx: AttentionContext,
) => Float32Array;

/**
 * Capture hook, called per layer and per forward call with the new tokens' `q [heads, seq, headDim]`,
 * `k`, `v [kvHeads, seq, headDim]` (copies; Q and K after RoPE) and `offset` (absolute position of row 0).
 */
export type CaptureFn = (
  layer: number,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  offset: number,
) => void;

/** Options of {@link LlamaModel.forward}. */
export interface ForwardOptions {
  /** Attention to use (default {@link denseCausalAttention}). */
  readonly attention?: AttentionFn;
  /** Per-layer Q/K/V capture. */
  readonly capture?: CaptureFn;
  /**
   * Absolute RoPE position of each token (`tokens.length` integers ≥ 0; default `cache.length + i`): a
   * speculative tree's nodes sit at `base + depth` (LongSpec). K/V still go to the cache rows
   * `cache.length …` in order; only the rotation angles change.
   */
  readonly positions?: ArrayLike<number>;
}

const LOG2E = 1.4426950408889634;
const LN2 = 0.6931471805599453;
const POW2 = (() => {
  const t = new Float64Array(512);
  for (let i = 0; i < 512; i++) t[i] = 2 ** (i - 256);
  return t;
})();

/**
 * `exp(x)` for `x` in [−170, 88] (smaller x gives ≈ 0, larger is clamped): range reduction `x = (k + f)·ln 2`,
 * `|f| ≤ 1/2`, and a degree-7 Taylor polynomial for `e^{f ln 2}` (relative error < 2e-8, below f32 rounding).
 * Faster than `Math.exp` in V8 and JavaScriptCore (the CPU forward's SwiGLU uses it).
 */
export const fastExp = (x: number): number => {
  let t = x * LOG2E;
  if (t < -250) t = -250;
  else if (t > 127) t = 127;
  const k = ((t + 256.5) | 0) - 256; // round(t)
  const g = (t - k) * LN2;
  return (1 + g * (1 + g * (0.5 + g * (1 / 6 + g * (1 / 24 + g * (1 / 120 + g * (1 / 720 + g / 5040))))))) *
    POW2[k + 256];
};

/**
 * Dense causal attention (the default {@link AttentionFn}): `dense.cacheAttn`'s CPU arithmetic from
 * `@longctx/ops` (`cacheAttentionGemm`: per head and block of 64 queries, the scores and `P·V` as GEMMs through
 * `ctx.sgemm`, the softmax in float64) over the cache rows `0 … kvLen − 1`, bottom-right causal. Shapes as
 * {@link AttentionFn}; work `O(heads · seq · kvLen · headDim)`.
 */
export const denseCausalAttention: AttentionFn = (q, k, v, ctx): Float32Array =>
  dense.cacheAttentionGemm(
    ctx.sgemm.gemm,
    q,
    k,
    v,
    { heads: ctx.heads, kvHeads: ctx.kvHeads, seq: ctx.seq, headDim: ctx.headDim, capacity: ctx.kvStride },
    ctx.offset,
    ctx.scale,
    0,
    "heads",
  ).o;

/** A loaded model: config, f32 weights, tokenizer, and the forward pass. */
export interface LlamaModel {
  /** Hyper-parameters. */
  readonly config: LlamaConfig;
  /** The model's tokenizer and chat template. */
  readonly tokenizer: TextTokenizer;
  /** The GEMM the forward uses (OpenBLAS when found, else TypeScript). */
  readonly sgemm: Sgemm;
  /** `[vocab, nEmbd]` token embedding (also the output head when tied). */
  readonly tokEmbd: Float32Array;
  /** `[vocab, nEmbd]` output head (the same array as `tokEmbd` when tied). */
  readonly output: Float32Array;
  /** `[nEmbd]` final RMSNorm weight. */
  readonly outputNorm: Float32Array;
  /** Per-layer weights, `nLayer` of them. */
  readonly layers: readonly LlamaLayer[];
  /** A new empty KV cache for up to `capacity` tokens (memory: `2 · nLayer · nKvHead · headDim · 4` B/token). */
  newCache(capacity: number): KvCache;
  /**
   * Run `tokens` at positions `cache.length …`, appending their K/V to `cache`.
   * @returns `[tokens.length, nEmbd]` f32 final hidden states (after the output RMSNorm).
   * Fails with `ShapeError` for an empty input, a token id outside `[0, vocab)`, or a full cache.
   */
  forward(
    tokens: ArrayLike<number>,
    cache: KvCache,
    options?: ForwardOptions,
  ): Effect.Effect<Float32Array, ShapeError>;
  /**
   * Logits of hidden-state rows: `hidden [*, nEmbd]`, rows `start … start + count − 1` → `[count, vocab]` f32.
   */
  logits(hidden: Float32Array, start: number, count: number): Float32Array;
}

const rmsNorm = (
  x: Float32Array,
  w: Float32Array,
  rows: number,
  n: number,
  eps: number,
  out: Float32Array,
) => {
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[o + i] * x[o + i];
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) out[o + i] = x[o + i] * inv * w[i];
  }
};

/** Undo llama.cpp's Q/K row permutation: GGUF row `h·d + 2j + s` → HF row `h·d + s·d/2 + j`. */
const unpermuteRows = (w: Float32Array, nHead: number, inDim: number): Float32Array => {
  const rows = w.length / inDim;
  const d = rows / nHead;
  const half = d / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < nHead; h++) {
    for (let j = 0; j < half; j++) {
      for (let s = 0; s < 2; s++) {
        const src = (h * d + 2 * j + s) * inDim;
        const dst = (h * d + s * half + j) * inDim;
        out.set(w.subarray(src, src + inDim), dst);
      }
    }
  }
  return out;
};

const need = <T>(file: GgufFile, key: string): Effect.Effect<T, InputError> => {
  const v = meta<T>(file, key);
  return v === undefined
    ? Effect.fail(new InputError({ message: `GGUF metadata ${key} missing`, hint: "not a llama GGUF" }))
    : Effect.succeed(v);
};

/**
 * Load a llama-architecture GGUF (SmolLM2-135M-Instruct: 30 layers, 576 hidden, 9/3 heads, head dim 64):
 * reads the file, builds the tokenizer, dequantises every weight to f32 (~540 MB for 135M parameters) and
 * opens the GEMM library.
 * Fails with `InputError` for a missing/corrupt file, a non-llama architecture, or unsupported tensor types.
 */
export const loadLlama = (path: string): Effect.Effect<LlamaModel, InputError> =>
  Effect.gen(function* () {
    const file = yield* openGguf(path);
    const arch = meta<string>(file, "general.architecture");
    if (arch !== "llama") {
      return yield* Effect.fail(
        new InputError({
          message: `architecture ${arch} is not llama`,
          hint: "use a llama-architecture GGUF",
        }),
      );
    }
    const nEmbd = yield* need<number>(file, "llama.embedding_length");
    const nHead = yield* need<number>(file, "llama.attention.head_count");
    const tokEmbd = yield* tensorF32(file, "token_embd.weight");
    const config: LlamaConfig = {
      nLayer: yield* need<number>(file, "llama.block_count"),
      nEmbd,
      nHead,
      nKvHead: meta<number>(file, "llama.attention.head_count_kv") ?? nHead,
      headDim: meta<number>(file, "llama.rope.dimension_count") ?? nEmbd / nHead,
      nFf: yield* need<number>(file, "llama.feed_forward_length"),
      vocab: tokEmbd.length / nEmbd,
      ropeTheta: meta<number>(file, "llama.rope.freq_base") ?? 10000,
      eps: meta<number>(file, "llama.attention.layer_norm_rms_epsilon") ?? 1e-5,
      contextLength: meta<number>(file, "llama.context_length") ?? 2048,
    };
    if (config.headDim * nHead !== nEmbd || nHead % config.nKvHead !== 0) {
      return yield* Effect.fail(
        new InputError({
          message:
            `unsupported head layout: ${nHead} heads × ${config.headDim} vs ${nEmbd}, ${config.nKvHead} kv`,
          hint: "this forward needs headDim·heads = hidden and heads divisible by kv heads",
        }),
      );
    }
    const layers: LlamaLayer[] = [];
    for (let i = 0; i < config.nLayer; i++) {
      const t = (n: string) => tensorF32(file, `blk.${i}.${n}.weight`);
      layers.push({
        attnNorm: yield* t("attn_norm"),
        wq: unpermuteRows(yield* t("attn_q"), nHead, nEmbd),
        wk: unpermuteRows(yield* t("attn_k"), config.nKvHead, nEmbd),
        wv: yield* t("attn_v"),
        wo: yield* t("attn_output"),
        ffnNorm: yield* t("ffn_norm"),
        wGate: yield* t("ffn_gate"),
        wUp: yield* t("ffn_up"),
        wDown: yield* t("ffn_down"),
      });
    }
    const outputNorm = yield* tensorF32(file, "output_norm.weight");
    const output = file.tensors.has("output.weight") ? yield* tensorF32(file, "output.weight") : tokEmbd;
    const tokenizer = yield* tokenizerFromGguf(file);
    const sgemm = yield* Effect.promise(() => loadSgemm());
    return makeModel(config, { tokEmbd, output, outputNorm, layers }, tokenizer, sgemm);
  });

/** RoPE tables `[positions, headDim/2]` (cos, sin), angles computed in f64. */
const ropeTables = (theta: number, headDim: number, upTo: number) => {
  const half = headDim / 2;
  const cos = new Float32Array(upTo * half);
  const sin = new Float32Array(upTo * half);
  for (let p = 0; p < upTo; p++) {
    for (let i = 0; i < half; i++) {
      const a = p * theta ** (-(2 * i) / headDim);
      cos[p * half + i] = Math.cos(a);
      sin[p * half + i] = Math.sin(a);
    }
  }
  return { cos, sin };
};

const makeModel = (
  config: LlamaConfig,
  w: { tokEmbd: Float32Array; output: Float32Array; outputNorm: Float32Array; layers: LlamaLayer[] },
  tokenizer: TextTokenizer,
  sgemm: Sgemm,
): LlamaModel => {
  const { nEmbd: E, nHead: H, nKvHead: KH, headDim: D, nFf: F, vocab: V, eps } = config;
  const half = D / 2;
  let rope = ropeTables(config.ropeTheta, D, Math.max(config.contextLength, 1));
  const ropeFor = (upTo: number) => {
    if (rope.cos.length < upTo * half) rope = ropeTables(config.ropeTheta, D, upTo);
    return rope;
  };
  // x [seq, heads·D] (row i at absolute position p0 + i, or at[i]) → out [heads, seq, D], RoPE (rotate-half).
  const toHeads = (
    x: Float32Array,
    seq: number,
    heads: number,
    p0: number,
    out: Float32Array,
    outStride: number,
    rotate: boolean,
    at?: ArrayLike<number>,
  ) => {
    let top = p0 + seq;
    if (at) { for (let i = 0; i < seq; i++) top = Math.max(top, at[i] + 1); }
    const { cos, sin } = ropeFor(top);
    for (let i = 0; i < seq; i++) {
      const c = (at ? at[i] : p0 + i) * half;
      for (let h = 0; h < heads; h++) {
        const src = (i * heads + h) * D;
        const dst = (h * outStride + i) * D;
        if (!rotate) {
          out.set(x.subarray(src, src + D), dst);
          continue;
        }
        for (let j = 0; j < half; j++) {
          const a = x[src + j], b = x[src + j + half];
          const cs = cos[c + j], sn = sin[c + j];
          out[dst + j] = a * cs - b * sn;
          out[dst + j + half] = b * cs + a * sn;
        }
      }
    }
  };
  const model: LlamaModel = {
    config,
    tokenizer,
    sgemm,
    tokEmbd: w.tokEmbd,
    output: w.output,
    outputNorm: w.outputNorm,
    layers: w.layers,
    newCache(capacity) {
      const n = KH * capacity * D;
      return {
        capacity,
        length: 0,
        k: w.layers.map(() => new Float32Array(n)),
        v: w.layers.map(() => new Float32Array(n)),
      };
    },
    forward(tokens, cache, options = {}) {
      const seq = tokens.length;
      const offset = cache.length;
      if (seq === 0) {
        return Effect.fail(
          new ShapeError({ message: "forward of 0 tokens", hint: "pass at least one token" }),
        );
      }
      if (offset + seq > cache.capacity) {
        return Effect.fail(
          new ShapeError({
            message: `KV cache holds ${cache.capacity} tokens; ${offset} cached + ${seq} new exceed it`,
            hint: "allocate newCache(capacity) with room for the prompt and every generated token",
          }),
        );
      }
      const at = options.positions;
      if (at && (at.length !== seq || Array.from(at).some((p) => !Number.isInteger(p) || p < 0))) {
        return Effect.fail(
          new ShapeError({
            message: `positions: ${at.length} entries for ${seq} tokens, or not integers ≥ 0`,
            hint: "pass one absolute position per token",
          }),
        );
      }
      for (let i = 0; i < seq; i++) {
        const t = tokens[i];
        if (!Number.isInteger(t) || t < 0 || t >= V) {
          return Effect.fail(
            new ShapeError({
              message: `token ${i} = ${t} outside [0, ${V})`,
              hint: "tokenize with this model",
            }),
          );
        }
      }
      return Effect.sync(() => {
        const attention = options.attention ?? denseCausalAttention;
        const x = new Float32Array(seq * E);
        for (let i = 0; i < seq; i++) x.set(w.tokEmbd.subarray(tokens[i] * E, (tokens[i] + 1) * E), i * E);
        const h = new Float32Array(seq * E);
        const qf = new Float32Array(seq * H * D);
        const kf = new Float32Array(seq * KH * D);
        const vf = new Float32Array(seq * KH * D);
        const q = new Float32Array(H * seq * D);
        const oFlat = new Float32Array(seq * H * D);
        const g = new Float32Array(seq * F);
        const u = new Float32Array(seq * F);
        const kvLen = offset + seq;
        for (let l = 0; l < config.nLayer; l++) {
          const L = w.layers[l];
          rmsNorm(x, L.attnNorm, seq, E, eps, h);
          sgemm.gemm(false, true, seq, H * D, E, 1, h, E, L.wq, E, 0, qf, H * D);
          sgemm.gemm(false, true, seq, KH * D, E, 1, h, E, L.wk, E, 0, kf, KH * D);
          sgemm.gemm(false, true, seq, KH * D, E, 1, h, E, L.wv, E, 0, vf, KH * D);
          toHeads(qf, seq, H, offset, q, seq, true, at);
          // K/V straight into the cache rows offset … offset + seq − 1 (head stride = capacity).
          toHeads(kf, seq, KH, offset, cache.k[l].subarray(offset * D), cache.capacity, true, at);
          toHeads(vf, seq, KH, offset, cache.v[l].subarray(offset * D), cache.capacity, false);
          if (options.capture) {
            const kc = new Float32Array(KH * seq * D), vc = new Float32Array(KH * seq * D);
            for (let g2 = 0; g2 < KH; g2++) {
              const src = (g2 * cache.capacity + offset) * D;
              kc.set(cache.k[l].subarray(src, src + seq * D), g2 * seq * D);
              vc.set(cache.v[l].subarray(src, src + seq * D), g2 * seq * D);
            }
            options.capture(l, q.slice(), kc, vc, offset);
          }
          const o = attention(q, cache.k[l], cache.v[l], {
            layer: l,
            offset,
            seq,
            kvLen,
            kvStride: cache.capacity,
            heads: H,
            kvHeads: KH,
            headDim: D,
            scale: 1 / Math.sqrt(D),
            sgemm,
          });
          for (let hh = 0; hh < H; hh++) {
            for (let i = 0; i < seq; i++) {
              oFlat.set(o.subarray((hh * seq + i) * D, (hh * seq + i + 1) * D), (i * H + hh) * D);
            }
          }
          sgemm.gemm(false, true, seq, E, H * D, 1, oFlat, H * D, L.wo, H * D, 1, x, E);
          rmsNorm(x, L.ffnNorm, seq, E, eps, h);
          sgemm.gemm(false, true, seq, F, E, 1, h, E, L.wGate, E, 0, g, F);
          sgemm.gemm(false, true, seq, F, E, 1, h, E, L.wUp, E, 0, u, F);
          for (let i = 0; i < g.length; i++) {
            const a = g[i];
            g[i] = (a / (1 + fastExp(-a))) * u[i];
          }
          sgemm.gemm(false, true, seq, E, F, 1, g, F, L.wDown, F, 1, x, E);
        }
        cache.length = kvLen;
        rmsNorm(x, w.outputNorm, seq, E, eps, h);
        return h;
      });
    },
    logits(hidden, start, count) {
      const out = new Float32Array(count * V);
      sgemm.gemm(false, true, count, V, E, 1, hidden.subarray(start * E), E, w.output, E, 0, out, V);
      return out;
    },
  };
  return model;
};

/** Index of the largest value of `row[start, start + n)` relative to `start` (first on ties). */
export const argmax = (row: Float32Array, start: number = 0, n: number = row.length - start): number => {
  let best = 0;
  for (let j = 1; j < n; j++) if (row[start + j] > row[start + best]) best = j;
  return best;
};

/** Options of {@link generateGreedy}. */
export interface GenerateOptions extends ForwardOptions {
  /** Stop early on EOS / `<|im_end|>` (default true). */
  readonly stopAtEos?: boolean;
  /** Prefill chunk size in tokens (default 2048; bounds activation memory). */
  readonly chunk?: number;
}

/**
 * Prefill `prompt` in chunks into a fresh KV cache, then greedy-decode up to `maxNew` tokens one at a time.
 * @returns the generated ids (without the prompt), the cache, and timings in ms.
 * Fails with `ShapeError` for an empty prompt or out-of-range ids.
 */
export const generateGreedy = (
  model: LlamaModel,
  prompt: readonly number[],
  maxNew: number,
  options: GenerateOptions = {},
): Effect.Effect<{ ids: number[]; cache: KvCache; prefillMs: number; decodeMs: number }, ShapeError> =>
  Effect.gen(function* () {
    const cache = model.newCache(prompt.length + maxNew);
    const t0 = performance.now();
    const last = yield* prefill(model, prompt, cache, options);
    const t1 = performance.now();
    const ids: number[] = [];
    let next = argmax(last);
    const stop = options.stopAtEos ?? true;
    while (ids.length < maxNew) {
      ids.push(next);
      if (stop && (next === model.tokenizer.eosId || model.tokenizer.controlIds.has(next))) break;
      if (ids.length === maxNew) break;
      const h = yield* model.forward([next], cache, options);
      next = argmax(model.logits(h, 0, 1));
    }
    return { ids, cache, prefillMs: t1 - t0, decodeMs: performance.now() - t1 };
  });

/**
 * Run `tokens` through the model in chunks of `options.chunk` (default 2048) tokens, appending to `cache`.
 * @returns logits `[vocab]` of the last token. Fails with `ShapeError` as {@link LlamaModel.forward}.
 */
export const prefill = (
  model: LlamaModel,
  tokens: readonly number[],
  cache: KvCache,
  options: GenerateOptions = {},
): Effect.Effect<Float32Array, ShapeError> =>
  Effect.gen(function* () {
    const chunk = options.chunk ?? 2048;
    if (tokens.length === 0) {
      return yield* Effect.fail(new ShapeError({ message: "empty prompt", hint: "pass at least one token" }));
    }
    let h: Float32Array = new Float32Array(0);
    for (let s = 0; s < tokens.length; s += chunk) {
      h = yield* model.forward(tokens.slice(s, s + chunk), cache, options);
    }
    return model.logits(h, h.length / model.config.nEmbd - 1, 1);
  });

/**
 * The KV update after a speculative verification: keeps the cache rows `base + rows[j]` (ascending,
 * `rows[j] ≥ j`, e.g. the accepted tree path's node indices) as rows `base + j` of every layer's K and V
 * (`[kvHeads, capacity, headDim]`), and sets `cache.length = base + rows.length`; the other rows past `base`
 * are dropped. Positions stay right when the kept rows' RoPE positions are `base + j` (a tree path: the node at
 * depth j). Throws `RangeError` for rows that are not ascending or lie past the valid rows.
 */
export const keepCacheRows = (
  cache: KvCache,
  dims: { readonly kvHeads: number; readonly headDim: number },
  base: number,
  rows: readonly number[],
): void => {
  for (const [j, r] of rows.entries()) {
    if (!Number.isInteger(r) || r < j || (j > 0 && r <= rows[j - 1]) || base + r >= cache.length) {
      throw new RangeError(
        `keepCacheRows: row ${r} at ${j} (base ${base}, ${cache.length} valid rows): ascending rows ≥ their index`,
      );
    }
  }
  const { kvHeads: KH, headDim: D } = dims, C = cache.capacity;
  for (const buf of [...cache.k, ...cache.v]) {
    for (let g = 0; g < KH; g++) {
      for (const [j, r] of rows.entries()) {
        if (r === j) continue;
        const src = (g * C + base + r) * D;
        buf.copyWithin((g * C + base + j) * D, src, src + D);
      }
    }
  }
  cache.length = base + rows.length;
};
