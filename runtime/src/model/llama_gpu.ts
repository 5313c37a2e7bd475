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
 * - Pluggable attention (`attentionGraph`): a prefill from position 0 can run any attention `Graph` of
 *   `@longctx/graph` per layer instead — e.g. `dense.attn`, or SALE's `sale.quantize → sale.estimate →
 *   sale.select → sale.sparseAttn` (arXiv 2505.24179 §3) as `compileLayer` of `@longctx/plans` builds it from
 *   a plan. The graph is lowered once per (graph, seq) with `planRun`, its tensors get device buffers from a
 *   lifetime plan (`planBuffers`) shared by every layer that runs the same graph, and its launches are encoded
 *   into the forward's command buffer between the RoPE and the output projection.
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
  BackendError,
  descBytes,
  type DeviceBuffer,
  type Graph,
  type Kernel,
  type KernelCompileError,
  type Launch,
  type Lifetime,
  planBuffers,
  planRun,
  type PortRef,
  refKey,
  ShapeError,
  type TensorDesc,
} from "@longctx/graph";
import { dense, kernels } from "@longctx/ops";
import type { LlamaConfig, LlamaModel } from "./llama.ts";
import {
  addNormKernel,
  argmaxKernel,
  combineKernel,
  copyKernel,
  embedKernel,
  gemvKernel,
  headsToRowsKernel,
  kvCompactKernel,
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
  /**
   * Attention as a sub-graph, per layer (`undefined` for a layer: the built-in kernel chosen by `attention`).
   * Used only by a call starting at position 0 (a prefill; decode steps and later chunks keep the built-in
   * split-KV kernel, SALE being a prefill method). See {@link AttentionGraphFn} for the graph's contract.
   */
  readonly attentionGraph?: AttentionGraphFn;
  /**
   * Called after the call's GPU work with, per layer, the attention graph's per-head density (`f32 [heads]`,
   * kept / causal blocks, e.g. `sale.select`'s `density` output; read back as `nLayer·heads·4` bytes), or
   * `undefined` for a layer whose graph has no density tensor or that ran a built-in kernel. Not called
   * when no layer's graph has a density tensor.
   */
  readonly onDensity?: (density: readonly (Float32Array | undefined)[]) => void;
}

/**
 * The attention graph of layer `layer` (or `undefined`: built-in kernel). Its contract:
 * - inputs named `q` `f32 [heads, seq, headDim]` (after RoPE), `k`, `v` `f32 [kvHeads, seq, headDim]`
 *   (the layer's cache rows `0 … seq − 1`), each optional, no other inputs; f16 graphs (`*.f16` operators) are
 *   refused (the forward is f32 throughout): build the plan with `dtype: "f32"`;
 * - an output `o` `f32 [heads, seq, headDim]` (causal attention output, normalised), any other outputs
 *   (`lse`, …) are computed and ignored; a `density` tensor `f32 [heads]` (a graph output of that name, else the
 *   last node output port of that name) is what {@link GpuForwardOptions.onDensity} reports;
 * - every node has a GPU lowering (`Operator.gpu`), and lowerings size their work from shapes or uniforms,
 *   never from the bound buffers' sizes (buffers are shared and may be larger, as with the executor).
 *
 * The same graph object (or structurally equal graphs: same nodes, operators and parameters) for several
 * layers shares one lowering and one set of intermediate buffers.
 */
export type AttentionGraphFn = (layer: number) => Graph | undefined;

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
    options?: Pick<GpuForwardOptions, "attention" | "splitKeys" | "attentionGraph" | "onDensity">,
  ): Effect.Effect<number, ShapeError | GpuError>;
  /**
   * Device bytes held for attention graphs (intermediates, workspaces, uniforms of the lowerings cached for
   * the last call's length); freed by a call of another length and by {@link GpuLlama.release}.
   */
  graphBytes(): number;
  /** Free every device buffer of the model (weights, activations, attention-graph buffers; not caches). */
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
      compact: kvCompactKernel(shape),
      copy: copyKernel(),
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

    // ---- Attention sub-graphs (GpuForwardOptions.attentionGraph).
    /** A graph lowered for one length: launches with q/k/v left as placeholders, and the buffers it owns. */
    interface PreparedGraph {
      readonly seq: number;
      readonly buffers: DeviceBuffer[];
      readonly launches: {
        readonly kernel: Kernel;
        readonly buffers: readonly (DeviceBuffer | "q" | "k" | "v")[];
        readonly workgroups: readonly [number, number, number];
      }[];
      /** Where the graph's output `o` lies (a graph input only for a pass-through graph). */
      readonly o: DeviceBuffer | "q" | "k" | "v";
      readonly density?: { readonly buf: DeviceBuffer; readonly heads: number };
    }
    const prepared = new Map<string, PreparedGraph>();
    const structKeys = new WeakMap<Graph, string>();
    const structKey = (g: Graph): string => {
      let k = structKeys.get(g);
      if (k === undefined) {
        k = JSON.stringify([
          g.name,
          g.inputs.map((i) => [i.name, i.type.dtype, i.type.dims]),
          g.nodes.map((n) => [n.name, n.op.name, n.params, n.inputs]),
          g.outputs,
        ]);
        structKeys.set(g, k);
      }
      return k;
    };
    const graphBytes = () =>
      [...prepared.values()].reduce((a, p) => a + p.buffers.reduce((b, x) => b + x.bytes, 0), 0);
    const dropPrepared = (keep: (p: PreparedGraph) => boolean) => {
      for (const [k, p] of prepared) {
        if (keep(p)) continue;
        for (const b of p.buffers) drop(b);
        prepared.delete(k);
      }
    };
    const QKV = new Set(["q", "k", "v"]);

    /**
     * Lower graph `g` for a `seq`-token prefill (cached per structure and length). Fails with `ShapeError`
     * (inputs other than q/k/v, f16 inputs, no `o` or an `o` of the wrong shape, an operator's `infer`
     * rejecting the shapes, a buffer over the binding limit) or `BackendError` (`unsupported`: a node without
     * a GPU lowering or whose lowering refuses these shapes; `internal`: a lowering binding an unknown name),
     * and with allocation / compilation errors. Nothing stays allocated on failure.
     */
    const prepareGraph = (g: Graph, seq: number) =>
      Effect.gen(function* () {
        const key = `${structKey(g)}|${seq}`;
        const have = prepared.get(key);
        if (have) return have;
        const where = `attention graph "${g.name}"`;
        const descs: Record<string, TensorDesc> = {};
        for (const i of g.inputs) {
          if (!QKV.has(i.name)) {
            return yield* Effect.fail(
              shapeError(
                `${where} has input "${i.name}"; the GPU forward binds only q, k and v`,
                "an attention graph reads q [heads, seq, headDim] and k, v [kvHeads, seq, headDim] " +
                  "(compileLayer of @longctx/plans builds such graphs)",
              ),
            );
          }
          if (i.type.dtype !== "f32") {
            return yield* Effect.fail(
              shapeError(
                `${where} reads ${i.name} as ${i.type.dtype}; the GPU forward holds Q/K/V in f32`,
                'use the f32 operators (dense.attn, sale.*): plan with dtype "f32" (the planner\'s default)',
              ),
            );
          }
          descs[i.name] = {
            dtype: "f32",
            dims: i.type.dims,
            shape: i.name === "q" ? [H, seq, D] : [KH, seq, D],
          };
        }
        const oOut = g.outputs.find((o) => o.name === "o");
        if (!oOut) {
          return yield* Effect.fail(
            shapeError(
              `${where} has no output "o" (outputs: ${g.outputs.map((o) => o.name).join(", ") || "none"})`,
              "an attention graph must output o: f32 [heads, seq, headDim]",
            ),
          );
        }
        const plan = yield* planRun(g, backend, descs, { lowering: "prefer" });
        for (const n of g.nodes) {
          if (plan.paths.get(n.name) !== "gpu") {
            return yield* Effect.fail(
              new BackendError({
                backend: backend.kind,
                reason: "unsupported",
                message:
                  `${where}: node ${n.name} (${n.op.name}) has no GPU lowering; the GPU forward runs ` +
                  "attention graphs entirely on the device",
                hint:
                  `use an operator with a gpu lowering instead of ${n.op.name}, or run this layer with the ` +
                  "built-in attention (return undefined for it) or on the CPU forward (llama.ts)",
              }),
            );
          }
        }
        const oDesc = plan.shapes.get(refKey(oOut.ref))!;
        if (oDesc.dtype !== "f32" || oDesc.shape.join() !== [H, seq, D].join()) {
          return yield* Effect.fail(
            shapeError(
              `${where}: output o is ${oDesc.dtype} [${oDesc.shape}], the forward needs f32 [${[H, seq, D]}]`,
              "the graph's o must be the attention output [heads, seq, headDim] in f32",
            ),
          );
        }
        // The density tensor: a graph output named so, else the last node output port of that name.
        let densityRef: PortRef | undefined = g.outputs.find((o) => o.name === "density")?.ref;
        if (!densityRef) {
          for (let s = g.nodes.length - 1; s >= 0 && !densityRef; s--) {
            if ("density" in g.nodes[s].op.outputs) densityRef = { node: g.nodes[s].name, port: "density" };
          }
        }
        let densityHeads = 0;
        if (densityRef) {
          const d = plan.shapes.get(refKey(densityRef))!;
          if (d.dtype === "f32" && d.shape.length === 1 && d.shape[0] > 0) densityHeads = d.shape[0];
          else densityRef = undefined;
        }
        // Lifetimes of node outputs and workspaces (graph inputs are the forward's buffers); o and the
        // density live to the end, since kernels after the graph read them.
        const last = g.nodes.length;
        const end = new Map<string, number>();
        const use = (k: string, step: number) => end.set(k, Math.max(end.get(k) ?? step, step));
        g.nodes.forEach((n, s) => Object.values(n.inputs).forEach((r) => use(refKey(r), s)));
        for (const o of g.outputs) use(refKey(o.ref), last);
        if (densityRef) use(refKey(densityRef), last);
        const lifetimes: Lifetime[] = [];
        for (const [s, n] of g.nodes.entries()) {
          for (const port of Object.keys(n.op.outputs)) {
            const k = refKey({ node: n.name, port });
            lifetimes.push({ key: k, bytes: descBytes(plan.shapes.get(k)!), start: s, end: end.get(k) ?? s });
          }
          for (const [ws, bytes] of Object.entries(plan.lowerings.get(n.name)!.workspaces)) {
            lifetimes.push({ key: `ws:${n.name}:${ws}`, bytes, start: s, end: s });
          }
        }
        const mem = planBuffers(lifetimes);
        const big = mem.buffers.findIndex((b) => b > maxBind);
        if (big >= 0) {
          return yield* Effect.fail(
            shapeError(
              `${where} needs a ${
                mem.buffers[big]
              }-byte buffer at ${seq} tokens, over the device's binding ` +
                `limit of ${maxBind}`,
              "prefill in smaller chunks (generateGreedyGpu's chunk option)",
            ),
          );
        }
        const ownedHere: DeviceBuffer[] = [];
        const build = Effect.gen(function* () {
          const bufs: DeviceBuffer[] = [];
          for (const [i, bytes] of mem.buffers.entries()) {
            const b = yield* alloc(bytes, `${g.name}#${i}`);
            ownedHere.push(b);
            bufs.push(b);
          }
          const bufOf = (k: string) => bufs[mem.assign.get(k)!];
          const resolve = (r: PortRef): DeviceBuffer | "q" | "k" | "v" =>
            "input" in r ? (r.input as "q" | "k" | "v") : bufOf(refKey(r));
          const launches: PreparedGraph["launches"] = [];
          for (const n of g.nodes) {
            const low = plan.lowerings.get(n.name)!;
            // Uniform bytes go into a buffer of their own per launch (all uploads precede the one command
            // buffer, so a workspace re-uploaded between launches, as the executor allows, cannot be shared).
            const current = new Map<string, DeviceBuffer>();
            for (const [li, l] of low.launches.entries()) {
              for (const [ws, bytes] of Object.entries(l.uniforms ?? {})) {
                if (!(ws in low.workspaces)) {
                  return yield* Effect.fail(
                    new BackendError({
                      backend: backend.kind,
                      reason: "internal",
                      message: `${where}: node ${n.name}(${n.op.name}): uniform "${ws}" has no workspace`,
                      hint: `declare "${ws}" in the lowering's workspaces`,
                    }),
                  );
                }
                const u = yield* alloc(
                  Math.max(16, Math.ceil(bytes.byteLength / 4) * 4),
                  `${n.name}.${li}.${ws}`,
                );
                ownedHere.push(u);
                yield* backend.upload(u, bytes);
                current.set(ws, u);
              }
              const bound: (DeviceBuffer | "q" | "k" | "v")[] = [];
              for (const name of l.buffers) {
                const c = name.indexOf(":");
                const [kind, port] = [name.slice(0, c), name.slice(c + 1)];
                let b: DeviceBuffer | "q" | "k" | "v" | undefined;
                if (kind === "in" && n.inputs[port]) b = resolve(n.inputs[port]);
                else if (kind === "out" && port in n.op.outputs) b = bufOf(refKey({ node: n.name, port }));
                else if (kind === "ws" && port in low.workspaces) {
                  b = current.get(port) ?? bufOf(`ws:${n.name}:${port}`);
                }
                if (b === undefined) {
                  return yield* Effect.fail(
                    new BackendError({
                      backend: backend.kind,
                      reason: "internal",
                      message:
                        `${where}: node ${n.name}(${n.op.name}): its lowering binds "${name}", which is ` +
                        "no port or workspace",
                      hint:
                        `bindings are in:<input port>, out:<output port> or ws:<workspace>; fix ${n.op.name}.gpu`,
                    }),
                  );
                }
                bound.push(b);
              }
              yield* backend.compile(l.kernel);
              launches.push({ kernel: l.kernel, buffers: bound, workgroups: l.workgroups });
            }
          }
          const p: PreparedGraph = {
            seq,
            buffers: ownedHere,
            launches,
            o: resolve(oOut.ref),
            ...(densityRef ? { density: { buf: bufOf(refKey(densityRef)), heads: densityHeads } } : {}),
          };
          return p;
        });
        const p = yield* Effect.onError(build, () => Effect.sync(() => ownedHere.forEach(drop)));
        prepared.set(key, p);
        return p;
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
        // Attention sub-graphs of this call (prefill from position 0 only).
        const graphs: (PreparedGraph | undefined)[] = [];
        if (opts.attentionGraph && offset === 0) {
          // Lowerings cached for other lengths are freed (one length's buffers at a time).
          dropPrepared((p) => p.seq === seq);
          for (let l = 0; l < nLayer; l++) {
            const gl = opts.attentionGraph(l);
            graphs.push(gl ? yield* prepareGraph(gl, seq) : undefined);
          }
        }
        const anyGraph = graphs.some((p) => p !== undefined);
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
        // Graph layers: K/V compacted out of the cache unless it holds exactly `seq` rows; the graph's o
        // [H, seq, D] transposed into the rows the output projection reads; densities gathered per layer.
        let graphLaunches: (l: number, p: PreparedGraph) => Launch[] = () => [];
        let density: { buf: DeviceBuffer; stride: number } | undefined;
        if (anyGraph) {
          const compact = cache.capacity !== seq;
          const kc = compact ? yield* buf("graph_k", KH * seq * D * 4) : undefined;
          const vc = compact ? yield* buf("graph_v", KH * seq * D * 4) : undefined;
          const uCompact = yield* uni("compact", u32s(seq, cache.capacity));
          const compactGroups = kernels.grid1d(Math.ceil((KH * seq * D) / 4 / 256));
          const uH2r = yield* uni("h2r", u32s(seq));
          const h2rGroups = kernels.grid1d(Math.ceil((seq * H * D) / 4 / 256));
          const stride = Math.max(0, ...graphs.map((p) => p?.density?.heads ?? 0));
          if (opts.onDensity && stride > 0) {
            density = { buf: yield* buf("density", nLayer * stride * 4), stride };
          }
          const uCopy: DeviceBuffer[] = [];
          for (let l = 0; l < nLayer; l++) {
            const n = graphs[l]?.density?.heads ?? 0;
            if (density && n > 0) uCopy[l] = yield* uni(`density.${l}`, u32s(n, l * density.stride));
          }
          graphLaunches = (l, p) => {
            const k = kc ?? cache.k[l], v = vc ?? cache.v[l];
            const pick = (b: DeviceBuffer | "q" | "k" | "v") =>
              b === "q" ? q : b === "k" ? k : b === "v" ? v : b;
            const out: Launch[] = [];
            if (kc && vc) {
              out.push(launch(K.compact, [cache.k[l], cache.v[l], kc, vc, uCompact], compactGroups));
            }
            for (const x of p.launches) out.push(launch(x.kernel, x.buffers.map(pick), x.workgroups));
            out.push(launch(K.h2r, [pick(p.o), o, uH2r], h2rGroups));
            if (density && p.density && uCopy[l]) {
              out.push(
                launch(
                  K.copy,
                  [p.density.buf, density.buf, uCopy[l]],
                  kernels.grid1d(Math.ceil(p.density.heads / 256)),
                ),
              );
            }
            return out;
          };
        }
        for (let l = 0; l < nLayer; l++) {
          const W = layers[l];
          L.push(launch(K.addNorm, [x, t, W.attnNorm, h, l === 0 ? uNorm0 : uNorm1], [seq, 1, 1]));
          L.push(yield* project("qkv", h, W.wqkv, qkv, seq, NQKV, E));
          L.push(launch(K.rope, [qkv, ropeCos!, ropeSin!, q, cache.k[l], cache.v[l], uRope], ropeGroups));
          const gl = graphs[l];
          L.push(...(gl ? graphLaunches(l, gl) : attnLaunches(l)));
          L.push(yield* project("o", o, W.wo, t, seq, E, H * D));
          L.push(launch(K.addNorm, [x, t, W.ffnNorm, h, uNorm1], [seq, 1, 1]));
          L.push(yield* project("gu", h, W.wgu, gu, seq, 2 * F, E));
          L.push(launch(K.swiglu, [gu, g, uSwiglu], swGroups));
          L.push(yield* project("down", g, W.wdown, t, seq, E, F));
        }
        /** After the call's GPU work: read the densities back and report them (when asked and present). */
        const report = Effect.gen(function* () {
          if (!density || !opts.onDensity) return;
          const b = yield* backend.download(density.buf, 0, nLayer * density.stride * 4);
          const all = new Float32Array(
            b.buffer.slice(b.byteOffset, b.byteOffset + nLayer * density.stride * 4),
          );
          const stride = density.stride;
          opts.onDensity(
            graphs.map((p, l) =>
              p?.density ? all.slice(l * stride, l * stride + p.density.heads) : undefined
            ),
          );
        });
        return { launches: L, x, t, report };
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
        const { launches, x, t, report } = yield* encodeLayers(tokens, cache, opts);
        cache.length += seq;
        if (want === "none") {
          // Only the layers (K/V into the cache): run them and wait.
          yield* run(launches);
          yield* backend.sync();
          yield* report;
          return new Float32Array(0);
        }
        if (want === "last") {
          const logits = yield* encodeHead(launches, x, t, seq - 1, 1, "last");
          yield* run(launches);
          const b = yield* backend.download(logits, 0, V * 4);
          yield* report;
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
        yield* report;
        return out;
      });

    const forwardArgmax: GpuLlama["forwardArgmax"] = (tokens, cache, opts = {}) =>
      Effect.gen(function* () {
        const bad = checkCall(tokens, cache);
        if (bad) return yield* Effect.fail(bad);
        const seq = tokens.length;
        const { launches, x, t, report } = yield* encodeLayers(tokens, cache, opts);
        cache.length += seq;
        const logits = yield* encodeHead(launches, x, t, seq - 1, 1, "last");
        const am = yield* buf("argmax", 4);
        launches.push(launch(K.argmax, [logits, am, yield* uni("argmax", u32s(V, 0))], [1, 1, 1]));
        yield* run(launches);
        const b = yield* backend.download(am, 0, 4);
        yield* report;
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
      graphBytes,
      release: () => {
        for (const b of owned.splice(0)) backend.release(b);
        act.clear();
        uniforms.clear();
        prepared.clear();
      },
    } satisfies GpuLlama;
  });

/** Options of {@link generateGreedyGpu}. */
export interface GpuGenerateOptions {
  /** Stop after emitting one of these ids (e.g. the tokenizer's EOS and control ids); default none. */
  readonly stop?: ReadonlySet<number>;
  /** Prefill chunk size in tokens (default 2048; bounds activation memory). */
  readonly chunk?: number;
  /**
   * Attention sub-graph per layer for the first prefill chunk (the one at position 0), as
   * {@link GpuForwardOptions.attentionGraph}; later chunks and decode steps use the built-in kernels. Pass
   * a `chunk` ≥ the prompt length to run the whole prompt through the graphs.
   */
  readonly attentionGraph?: AttentionGraphFn;
  /** Per-layer densities of that first chunk, as {@link GpuForwardOptions.onDensity}. */
  readonly onDensity?: (density: readonly (Float32Array | undefined)[]) => void;
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
      next = yield* model.forwardArgmax(
        prompt.slice(s, s + chunk),
        cache,
        s === 0 && options.attentionGraph
          ? {
            attentionGraph: options.attentionGraph,
            ...(options.onDensity ? { onDensity: options.onDensity } : {}),
          }
          : {},
      );
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
