/**
 * Llama-architecture forward pass on a GPU `Backend` (`wgpu`: wgpu-native through FFI; `webgpu`: any standard
 * `GPUDevice`, e.g. Deno's `navigator.gpu`), f32 storage and arithmetic, for SmolLM2-135M-Instruct and other
 * small llama models. Same computation as the CPU forward (`llama.ts`): token embedding → `nLayer` ×
 * [RMSNorm → fused Q/K/V projection → rotate-half RoPE (Hugging Face layout) → K/V into a GPU KV cache →
 * causal GQA attention → output projection → residual → RMSNorm → SwiGLU MLP (fused gate/up projection) →
 * residual] → RMSNorm → output head (tied to the embedding when the file has none).
 *
 * - Weights: the loaded model's dequantised f32 arrays, uploaded once (Q/K/V rows concatenated into one
 *   `[(H + 2·KH)·D, E]` matrix, gate/up into one `[2F, E]` matrix); about 4 bytes per parameter.
 * - Projections `x·Wᵀ`: the tiled matmul of `@longctx/ops` (`kernels.matmul`, `transB`, general boundaries;
 *   Volkov & Demmel 2008 tiling, unrolled register tiles) when a call has more than 8 tokens, else a GEMV
 *   kernel (32 lanes per output).
 * - Attention: a prefill starting at position 0 runs the dense flash kernel of `@longctx/ops`
 *   (`dense.flashWgsl`, FlashAttention-2, Dao 2023, reading the cache in place through `kvStride`); any call
 *   at an offset (decode steps, later prefill chunks) runs a split-KV kernel (keys in chunks, partial
 *   online-softmax states merged by a second kernel: "flash-decoding"), see `llama_gpu_kernels.ts`.
 * - One `dispatch` (one command buffer) per forward call; only the argmax (4 bytes) or the requested logits
 *   are read back.
 *
 * References: Touvron et al. 2023 (LLaMA) §2.2; Su et al. 2021 (RoFormer) §3.4.2; Ainslie et al. 2023 (GQA);
 * Shazeer 2020 (GLU variants, SwiGLU); Dao 2023 (FlashAttention-2).
 *
 * ```ts
 * const m = await Effect.runPromise(loadLlama(modelPath()));
 * const { backend } = await Effect.runPromise(selectBackend({ backend: "wgpu" }));
 * const g = await Effect.runPromise(loadLlamaGpu(m, backend));
 * const { ids } = await Effect.runPromise(generateGreedyGpu(g, prompt, 32));
 * ```
 * @module
 */
import { Effect } from "effect";
import {
  type Backend,
  type BackendError,
  type DeviceBuffer,
  type Kernel,
  type KernelCompileError,
  type Launch,
  ShapeError,
} from "@longctx/graph";
import { dense, kernels } from "@longctx/ops";
import type { LlamaConfig, LlamaModel } from "./llama.ts";
import {
  addNormKernel,
  argmaxKernel,
  combineKernel,
  embedKernel,
  gemvKernel,
  headsToRowsKernel,
  ropeKernel,
  splitAttnKernel,
  swigluKernel,
} from "./llama_gpu_kernels.ts";

/** What the GPU forward needs of a model: config and f32 weights (a loaded {@link LlamaModel} has them). */
export type LlamaWeights = Pick<LlamaModel, "config" | "tokEmbd" | "output" | "outputNorm" | "layers">;

/** Errors of GPU work: the backend's, and kernel compilation. */
export type GpuError = BackendError | KernelCompileError;

/** A KV cache on the device: per layer K (after RoPE) and V `[nKvHead, capacity, headDim]` f32. */
export interface GpuKvCache {
  /** Tokens it can hold. */
  readonly capacity: number;
  /** Valid rows (tokens already run). */
  length: number;
  readonly k: readonly DeviceBuffer[];
  readonly v: readonly DeviceBuffer[];
  /** Free the device buffers (the cache must not be used afterwards). */
  release(): void;
}

/** Which attention kernel a forward call uses. */
export type GpuAttention = "auto" | "flash" | "split";

/** Options of {@link GpuLlama.forward}. */
export interface GpuForwardOptions {
  /**
   * Logits to read back: `"last"` (default) the last token's `[1, vocab]`, `"all"` every token's
   * `[seq, vocab]` (computed and read in row chunks that fit a binding), `"none"` nothing (an empty array;
   * the call still waits for the GPU).
   */
  readonly logits?: "last" | "all" | "none";
  /**
   * `"auto"` (default): the flash kernel for a call starting at position 0, split-KV otherwise; `"split"`
   * forces split-KV (for tests); `"flash"` fails with `ShapeError` when the cache is not empty.
   */
  readonly attention?: GpuAttention;
  /** Split-KV: keys per chunk for short calls (a multiple of 64; default 256). */
  readonly splitKeys?: number;
}

/**
 * A model on a GPU backend. Forward calls share the model's activation buffers: run them one after another
 * (await each), not concurrently.
 */
export interface GpuLlama {
  readonly config: LlamaConfig;
  readonly backend: Backend;
  /** Storage and arithmetic type of weights and activations. */
  readonly dtype: "f32";
  /** Bytes of weights on the device. */
  readonly weightBytes: number;
  /**
   * A new empty KV cache for up to `capacity` tokens (`2 · nLayer · nKvHead · headDim · 4` bytes per token).
   * Fails with `ShapeError` for a capacity < 1 or a per-layer buffer beyond the device's binding limit.
   */
  newCache(capacity: number): Effect.Effect<GpuKvCache, ShapeError | GpuError>;
  /**
   * Run `tokens` at positions `cache.length …`, appending their K/V to `cache`.
   * @returns f32 logits: `[1, vocab]` for the last token, `[tokens.length, vocab]` with `logits: "all"`,
   * or an empty array with `"none"`.
   * Fails with `ShapeError` for an empty input, a token id outside `[0, vocab)` or a full cache, and with the
   * backend's errors.
   */
  forward(
    tokens: ArrayLike<number>,
    cache: GpuKvCache,
    options?: GpuForwardOptions,
  ): Effect.Effect<Float32Array, ShapeError | GpuError>;
  /**
   * As {@link GpuLlama.forward}, but returns the index of the last token's largest logit (first on ties),
   * computed on the device: only 4 bytes are read back.
   */
  forwardArgmax(
    tokens: ArrayLike<number>,
    cache: GpuKvCache,
    options?: Pick<GpuForwardOptions, "attention" | "splitKeys">,
  ): Effect.Effect<number, ShapeError | GpuError>;
  /** Free every device buffer of the model (weights, activations; not caches). */
  release(): void;
}

const u32s = (...w: number[]) => kernels.u32Uniform(...w);
const shapeError = (message: string, hint: string) => new ShapeError({ message, hint });

/** Split-KV keys per chunk for decode-sized calls (multiple of 64). */
const SPLIT_KEYS = 256;
/** Calls with at most this many tokens use the GEMV kernel for projections. */
const GEMV_MAX_ROWS = 8;

/**
 * Upload a model's weights to `backend` and build the GPU forward. Needs `headDim` a multiple of 64,
 * `nEmbd`/`nFf` multiples of 4, and every weight matrix within the device's storage binding limit.
 * Fails with `ShapeError` for an unsupported shape, `BackendError` (allocation, upload) and
 * `KernelCompileError` (when the kernels are compiled up front).
 */
export const loadLlamaGpu = (
  weights: LlamaWeights,
  backend: Backend,
): Effect.Effect<GpuLlama, ShapeError | GpuError> =>
  Effect.gen(function* () {
    const config = weights.config;
    const { nEmbd: E, nHead: H, nKvHead: KH, headDim: D, nFf: F, vocab: V, nLayer } = config;
    if (D % 64 !== 0 || E % 4 !== 0 || F % 4 !== 0 || H % KH !== 0 || H * D !== E) {
      return yield* Effect.fail(
        shapeError(
          `unsupported shape: hidden ${E}, heads ${H}/${KH}, head dim ${D}, MLP ${F}`,
          "the GPU forward needs headDim a multiple of 64, hidden and MLP widths multiples of 4, " +
            "heads·headDim = hidden and heads divisible by kv heads",
        ),
      );
    }
    const maxBind = Math.min(backend.limits.maxStorageBufferBindingSize, backend.limits.maxBufferSize);
    const NQKV = (H + 2 * KH) * D;
    const biggest = Math.max(V * E, 2 * F * E, NQKV * E) * 4;
    if (biggest > maxBind) {
      return yield* Effect.fail(
        shapeError(
          `a weight matrix of ${biggest} bytes exceeds the device's storage binding limit of ${maxBind} bytes`,
          "use a device with a larger maxStorageBufferBindingSize or a smaller model",
        ),
      );
    }
    const owned: DeviceBuffer[] = [];
    const put = (data: Float32Array | Uint32Array, label: string) =>
      Effect.gen(function* () {
        const b = yield* backend.allocate(data.byteLength, label);
        owned.push(b);
        yield* backend.upload(b, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        return b;
      });
    const alloc = (bytes: number, label: string) =>
      Effect.map(backend.allocate(Math.max(16, bytes), label), (b) => {
        owned.push(b);
        return b;
      });
    let weightBytes = 0;
    const putW = (data: Float32Array, label: string) => {
      weightBytes += data.byteLength;
      return put(data, label);
    };
    const concat = (...parts: Float32Array[]) => {
      const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
      let o = 0;
      for (const p of parts) {
        out.set(p, o);
        o += p.length;
      }
      return out;
    };
    const tokEmbd = yield* putW(weights.tokEmbd, "tok_embd");
    const output = weights.output === weights.tokEmbd ? tokEmbd : yield* putW(weights.output, "output");
    const outputNorm = yield* putW(weights.outputNorm, "output_norm");
    const layers: {
      attnNorm: DeviceBuffer;
      wqkv: DeviceBuffer;
      wo: DeviceBuffer;
      ffnNorm: DeviceBuffer;
      wgu: DeviceBuffer;
      wdown: DeviceBuffer;
    }[] = [];
    for (let l = 0; l < nLayer; l++) {
      const L = weights.layers[l];
      layers.push({
        attnNorm: yield* putW(L.attnNorm, `blk.${l}.attn_norm`),
        wqkv: yield* putW(concat(L.wq, L.wk, L.wv), `blk.${l}.wqkv`),
        wo: yield* putW(L.wo, `blk.${l}.wo`),
        ffnNorm: yield* putW(L.ffnNorm, `blk.${l}.ffn_norm`),
        wgu: yield* putW(concat(L.wGate, L.wUp), `blk.${l}.wgu`),
        wdown: yield* putW(L.wDown, `blk.${l}.wdown`),
      });
    }

    // Kernels.
    const shape = { heads: H, kvHeads: KH, headDim: D };
    const scale = 1 / Math.sqrt(D);
    const K = {
      embed: embedKernel(E),
      addNorm: addNormKernel(E, config.eps),
      gemv: gemvKernel(),
      rope: ropeKernel(shape),
      split: splitAttnKernel(shape, scale),
      combine: combineKernel(shape),
      h2r: headsToRowsKernel(shape),
      swiglu: swigluKernel(F),
      argmax: argmaxKernel(),
    };
    const mmSmall = yield* kernels.matmul({ dtype: "f32", transB: true });
    const mmLarge = yield* kernels.matmul({
      dtype: "f32",
      transB: true,
      tileM: 128,
      tileN: 128,
      tileK: 8,
      threadM: 8,
      threadN: 8,
    });
    const wgMem = backend.limits.maxComputeWorkgroupStorageSize;
    const flashBq = 64;
    const flashTiles = dense.chooseTiles("f32", D, flashBq, 64, wgMem);
    const canLarge =
      kernels.matmulWorkgroupBytes({ dtype: "f32", tileM: 128, tileN: 128, tileK: 8 }) <= wgMem &&
      backend.limits.maxComputeInvocationsPerWorkgroup >= 256;
    for (const k of Object.values(K)) yield* backend.compile(k);
    yield* backend.compile(mmSmall.kernel);
    if (canLarge) yield* backend.compile(mmLarge.kernel);

    // RoPE tables [positions, D/2] (angles in f64, as llama.ts), grown with the largest cache.
    const half = D / 2;
    let ropePositions = 0;
    let ropeCos: DeviceBuffer | undefined;
    let ropeSin: DeviceBuffer | undefined;
    const ensureRope = (upTo: number) =>
      Effect.gen(function* () {
        if (upTo <= ropePositions) return;
        const n = Math.max(upTo, config.contextLength);
        const cos = new Float32Array(n * half), sin = new Float32Array(n * half);
        for (let p = 0; p < n; p++) {
          for (let i = 0; i < half; i++) {
            const a = p * config.ropeTheta ** (-(2 * i) / D);
            cos[p * half + i] = Math.cos(a);
            sin[p * half + i] = Math.sin(a);
          }
        }
        if (ropeCos) drop(ropeCos);
        if (ropeSin) drop(ropeSin);
        ropeCos = yield* put(cos, "rope_cos");
        ropeSin = yield* put(sin, "rope_sin");
        ropePositions = n;
      });
    const drop = (b: DeviceBuffer) => {
      const i = owned.indexOf(b);
      if (i >= 0) owned.splice(i, 1);
      backend.release(b);
    };

    // Activations, grown on demand (sizes in bytes).
    const act = new Map<string, DeviceBuffer>();
    const buf = (name: string, bytes: number) =>
      Effect.gen(function* () {
        const have = act.get(name);
        if (have && have.bytes >= bytes) return have;
        if (have) drop(have);
        if (bytes > maxBind) {
          return yield* Effect.fail(
            shapeError(
              `activation ${name} needs ${bytes} bytes, over the device's binding limit of ${maxBind}`,
              "prefill in smaller chunks (generateGreedyGpu's chunk option)",
            ),
          );
        }
        const b = yield* alloc(bytes, name);
        act.set(name, b);
        return b;
      });
    const uniforms = new Map<string, DeviceBuffer>();
    const uni = (name: string, data: Uint8Array) =>
      Effect.gen(function* () {
        let b = uniforms.get(name);
        if (!b) {
          b = yield* alloc(Math.max(16, data.byteLength), `u:${name}`);
          uniforms.set(name, b);
        }
        yield* backend.upload(b, data);
        return b;
      });

    const launch = (kernel: Kernel, buffers: DeviceBuffer[], workgroups: readonly [number, number, number]) =>
      ({ kernel, buffers, workgroups }) as Launch;
    const flashKernels = new Map<string, Kernel>();
    const flashKernel = (seq: number, kvStride: number): Kernel => {
      const cfg = {
        heads: H,
        kvHeads: KH,
        seq,
        headDim: D,
        dtype: "f32",
        scale,
        bq: flashBq,
        bk: flashTiles.bk,
        qShared: flashTiles.qShared,
        kvStride,
      } as const;
      const key = dense.flashKey(cfg);
      let k = flashKernels.get(key);
      if (!k) {
        k = {
          key,
          wgsl: dense.flashWgsl(cfg),
          entryPoint: "main",
          bindings: ["read", "read", "read", "read_write", "read_write"],
        };
        flashKernels.set(key, k);
      }
      return k;
    };

    const checkCall = (tokens: ArrayLike<number>, cache: GpuKvCache): ShapeError | undefined => {
      const seq = tokens.length;
      if (seq === 0) return shapeError("forward of 0 tokens", "pass at least one token");
      if (cache.length + seq > cache.capacity) {
        return shapeError(
          `KV cache holds ${cache.capacity} tokens; ${cache.length} cached + ${seq} new exceed it`,
          "allocate newCache(capacity) with room for the prompt and every generated token",
        );
      }
      for (let i = 0; i < seq; i++) {
        const t = tokens[i];
        if (!Number.isInteger(t) || t < 0 || t >= V) {
          return shapeError(`token ${i} = ${t} outside [0, ${V})`, "tokenize with this model");
        }
      }
      return undefined;
    };

    /** A projection `C[M, N] = A[M, K] · W[N, K]ᵀ`. */
    const project = (
      name: string,
      a: DeviceBuffer,
      w: DeviceBuffer,
      c: DeviceBuffer,
      M: number,
      N: number,
      Kd: number,
    ) =>
      Effect.gen(function* () {
        if (M <= GEMV_MAX_ROWS) {
          const u = yield* uni(`gemv.${name}`, u32s(M, N, Kd / 4));
          return launch(K.gemv, [a, w, c, u], [Math.ceil(N / 8), M, 1]);
        }
        const plan = canLarge && M >= 512 ? mmLarge : mmSmall;
        const u = yield* uni(`mm.${name}`, plan.uniform({ M, N, K: Kd }));
        return launch(plan.kernel, [a, w, c, u], plan.workgroups({ M, N, K: Kd }));
      });

    /** Encode the layers (and the embedding) of one call; returns the launches. Leaves x, t for the head. */
    const encodeLayers = (tokens: ArrayLike<number>, cache: GpuKvCache, opts: GpuForwardOptions) =>
      Effect.gen(function* () {
        const seq = tokens.length;
        const offset = cache.length;
        const attention = opts.attention ?? "auto";
        const splitKeys = opts.splitKeys ?? SPLIT_KEYS;
        if (!Number.isInteger(splitKeys) || splitKeys < 64 || splitKeys % 64 !== 0) {
          return yield* Effect.fail(shapeError(`splitKeys ${splitKeys}`, "pass a positive multiple of 64"));
        }
        yield* ensureRope(offset + seq);
        const useFlash = attention === "flash" || (attention === "auto" && offset === 0);
        if (useFlash && offset !== 0) {
          return yield* Effect.fail(
            shapeError(
              `the flash kernel runs only from position 0 (cache holds ${offset})`,
              "use attention auto or split",
            ),
          );
        }
        const tok = yield* buf("tok", seq * 4);
        yield* backend.upload(tok, Uint32Array.from(tokens as ArrayLike<number>));
        const x = yield* buf("x", seq * E * 4);
        const t = yield* buf("t", seq * E * 4);
        const h = yield* buf("h", seq * E * 4);
        const qkv = yield* buf("qkv", seq * NQKV * 4);
        const q = yield* buf("q", seq * H * D * 4);
        const o = yield* buf("o", seq * H * D * 4);
        const gu = yield* buf("gu", seq * 2 * F * 4);
        const g = yield* buf("g", seq * F * 4);
        const L: Launch[] = [];
        const n4 = (seq * E) / 4;
        const uEmbed = yield* uni("embed", u32s(n4));
        L.push(launch(K.embed, [tok, tokEmbd, x, uEmbed], kernels.grid1d(Math.ceil(n4 / 256))));
        const uNorm0 = yield* uni("norm0", u32s(seq, 0, 0));
        const uNorm1 = yield* uni("norm1", u32s(seq, 0, 1));
        const uRope = yield* uni("rope", u32s(seq, offset, cache.capacity));
        const ropeGroups = kernels.grid1d(Math.ceil((seq * (H + 2 * KH) * half) / 256));
        const uSwiglu = yield* uni("swiglu", u32s(seq * F));
        const swGroups = kernels.grid1d(Math.ceil((seq * F) / 256));
        // Attention plumbing.
        let attnLaunches: (l: number) => Launch[];
        if (useFlash) {
          const fk = flashKernel(seq, cache.capacity);
          const fo = yield* buf("flash_o", seq * H * D * 4);
          const lse = yield* buf("lse", seq * H * 4);
          const uH2r = yield* uni("h2r", u32s(seq));
          const h2rGroups = kernels.grid1d(Math.ceil((seq * H * D) / 4 / 256));
          attnLaunches = (l) => [
            launch(fk, [q, cache.k[l], cache.v[l], fo, lse], [Math.ceil(seq / flashBq), H, 1]),
            launch(K.h2r, [fo, o, uH2r], h2rGroups),
          ];
        } else {
          const kvLen = offset + seq;
          // Chunks of SPLIT_KEYS keys for decode-sized calls; fewer, longer chunks when the partial states
          // of a long call would not fit a binding.
          const perSplit = seq * H * (D + 2) * 4;
          const maxSplits = Math.max(
            1,
            Math.min(1024, Math.floor(Math.min(maxBind, 256 * 2 ** 20) / perSplit)),
          );
          let splitLen = splitKeys;
          while (Math.ceil(kvLen / splitLen) > maxSplits) splitLen *= 2;
          const nsplit = Math.ceil(kvLen / splitLen);
          const part = yield* buf("part", seq * H * nsplit * D * 4);
          const ml = yield* buf("ml", seq * H * nsplit * 2 * 4);
          const uA = yield* uni("attn", u32s(seq, offset, cache.capacity, splitLen, nsplit));
          attnLaunches = (l) => [
            launch(K.split, [q, cache.k[l], cache.v[l], part, ml, uA], [seq, H, nsplit]),
            launch(K.combine, [part, ml, o, uA], [seq, H, 1]),
          ];
        }
        for (let l = 0; l < nLayer; l++) {
          const W = layers[l];
          L.push(launch(K.addNorm, [x, t, W.attnNorm, h, l === 0 ? uNorm0 : uNorm1], [seq, 1, 1]));
          L.push(yield* project("qkv", h, W.wqkv, qkv, seq, NQKV, E));
          L.push(launch(K.rope, [qkv, ropeCos!, ropeSin!, q, cache.k[l], cache.v[l], uRope], ropeGroups));
          L.push(...attnLaunches(l));
          L.push(yield* project("o", o, W.wo, t, seq, E, H * D));
          L.push(launch(K.addNorm, [x, t, W.ffnNorm, h, uNorm1], [seq, 1, 1]));
          L.push(yield* project("gu", h, W.wgu, gu, seq, 2 * F, E));
          L.push(launch(K.swiglu, [gu, g, uSwiglu], swGroups));
          L.push(yield* project("down", g, W.wdown, t, seq, E, F));
        }
        return { launches: L, x, t };
      });

    /** Final residual + norm of rows `start … start + rows − 1` and their logits, appended to `L`. */
    const encodeHead = (
      L: Launch[],
      x: DeviceBuffer,
      t: DeviceBuffer,
      start: number,
      rows: number,
      tag: string,
    ) =>
      Effect.gen(function* () {
        const hl = yield* buf("hl", rows * E * 4);
        const logits = yield* buf("logits", rows * V * 4);
        L.push(
          launch(K.addNorm, [x, t, outputNorm, hl, yield* uni(`normf.${tag}`, u32s(rows, start, 1))], [
            rows,
            1,
            1,
          ]),
        );
        L.push(yield* project(`head.${tag}`, hl, output, logits, rows, V, E));
        return logits;
      });

    const run = (launches: Launch[]) => backend.dispatch(launches);

    const forward: GpuLlama["forward"] = (tokens, cache, opts = {}) =>
      Effect.gen(function* () {
        const bad = checkCall(tokens, cache);
        if (bad) return yield* Effect.fail(bad);
        const seq = tokens.length;
        const want = opts.logits ?? "last";
        const { launches, x, t } = yield* encodeLayers(tokens, cache, opts);
        cache.length += seq;
        if (want === "none") {
          // Only the layers (K/V into the cache): run them and wait.
          yield* run(launches);
          yield* backend.sync();
          return new Float32Array(0);
        }
        if (want === "last") {
          const logits = yield* encodeHead(launches, x, t, seq - 1, 1, "last");
          yield* run(launches);
          const b = yield* backend.download(logits, 0, V * 4);
          return new Float32Array(b.buffer, b.byteOffset, V).slice();
        }
        // "all": row chunks whose logits fit one binding (each row's residual is added exactly once).
        const rowsPer = Math.max(1, Math.min(seq, Math.floor(Math.min(maxBind, 256 * 2 ** 20) / (V * 4))));
        const out = new Float32Array(seq * V);
        for (let s = 0; s < seq; s += rowsPer) {
          const rows = Math.min(rowsPer, seq - s);
          const L = s === 0 ? launches : [];
          const logits = yield* encodeHead(L, x, t, s, rows, rows === rowsPer ? "all" : "rest");
          yield* run(L);
          const b = yield* backend.download(logits, 0, rows * V * 4);
          out.set(new Float32Array(b.buffer, b.byteOffset, rows * V), s * V);
        }
        return out;
      });

    const forwardArgmax: GpuLlama["forwardArgmax"] = (tokens, cache, opts = {}) =>
      Effect.gen(function* () {
        const bad = checkCall(tokens, cache);
        if (bad) return yield* Effect.fail(bad);
        const seq = tokens.length;
        const { launches, x, t } = yield* encodeLayers(tokens, cache, opts);
        cache.length += seq;
        const logits = yield* encodeHead(launches, x, t, seq - 1, 1, "last");
        const am = yield* buf("argmax", 4);
        launches.push(launch(K.argmax, [logits, am, yield* uni("argmax", u32s(V, 0))], [1, 1, 1]));
        yield* run(launches);
        const b = yield* backend.download(am, 0, 4);
        return new Uint32Array(b.buffer.slice(b.byteOffset, b.byteOffset + 4))[0];
      });

    const newCache: GpuLlama["newCache"] = (capacity) =>
      Effect.gen(function* () {
        const bytes = KH * capacity * D * 4;
        if (!Number.isInteger(capacity) || capacity < 1) {
          return yield* Effect.fail(shapeError(`cache capacity ${capacity}`, "pass a positive integer"));
        }
        if (bytes > maxBind) {
          return yield* Effect.fail(
            shapeError(
              `a ${capacity}-token cache needs ${bytes} bytes per layer, over the binding limit of ${maxBind}`,
              "use a smaller capacity",
            ),
          );
        }
        yield* ensureRope(capacity);
        const k: DeviceBuffer[] = [], v: DeviceBuffer[] = [];
        for (let l = 0; l < nLayer; l++) {
          k.push(yield* backend.allocate(bytes, `kv.k.${l}`));
          v.push(yield* backend.allocate(bytes, `kv.v.${l}`));
        }
        return {
          capacity,
          length: 0,
          k,
          v,
          release: () => {
            for (const b of [...k, ...v]) backend.release(b);
          },
        };
      });

    return {
      config,
      backend,
      dtype: "f32",
      weightBytes,
      newCache,
      forward,
      forwardArgmax,
      release: () => {
        for (const b of owned.splice(0)) backend.release(b);
        act.clear();
        uniforms.clear();
      },
    } satisfies GpuLlama;
  });

/** Options of {@link generateGreedyGpu}. */
export interface GpuGenerateOptions {
  /** Stop after emitting one of these ids (e.g. the tokenizer's EOS and control ids); default none. */
  readonly stop?: ReadonlySet<number>;
  /** Prefill chunk size in tokens (default 2048; bounds activation memory). */
  readonly chunk?: number;
}

/**
 * Prefill `prompt` in chunks into a fresh GPU KV cache, then greedy-decode up to `maxNew` tokens, one forward
 * (one command buffer, a 4-byte argmax read back) per token.
 * @returns the generated ids (without the prompt), the cache (release it when done) and wall times in ms
 * (each includes waiting for the GPU).
 * Fails with `ShapeError` for an empty prompt or out-of-range ids, and with the backend's errors.
 */
export const generateGreedyGpu = (
  model: GpuLlama,
  prompt: readonly number[],
  maxNew: number,
  options: GpuGenerateOptions = {},
): Effect.Effect<
  { ids: number[]; cache: GpuKvCache; prefillMs: number; decodeMs: number },
  ShapeError | GpuError
> =>
  Effect.gen(function* () {
    if (prompt.length === 0) {
      return yield* Effect.fail(shapeError("empty prompt", "pass at least one token"));
    }
    const chunk = options.chunk ?? 2048;
    const cache = yield* model.newCache(prompt.length + Math.max(0, maxNew));
    const t0 = performance.now();
    let next = 0;
    for (let s = 0; s < prompt.length; s += chunk) {
      next = yield* model.forwardArgmax(prompt.slice(s, s + chunk), cache);
    }
    const t1 = performance.now();
    const ids: number[] = [];
    while (ids.length < maxNew) {
      ids.push(next);
      if (options.stop?.has(next) || ids.length === maxNew) break;
      next = yield* model.forwardArgmax([next], cache);
    }
    return { ids, cache, prefillMs: t1 - t0, decodeMs: performance.now() - t1 };
  });
