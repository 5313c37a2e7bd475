/**
 * The Llama forward as one graph of `@longctx/ops` operators, lowered into programs (`lower` of
 * `@longctx/graph`) and run on any `Backend` — a GPU (`wgpu`, `webgpu`) or the cpu backend (whose GEMM is
 * OpenBLAS): token embedding (`model.embed`) → `nLayer` × [RMSNorm with the residual add (`model.addRmsNorm`)
 * → fused Q/K/V projection (`model.linear`) → RoPE, appending K/V to the cache (`model.rope`) → attention →
 * output projection → residual + RMSNorm → fused gate/up projection → SwiGLU → down projection] → final norm
 * → output head (tied to the embedding when the file has none) → argmax.
 *
 * - **State**: the KV cache is per layer `k`, `v f32 [nKvHead, capacity, headDim]` device buffers bound as
 *   graph inputs; `model.rope` appends this call's rows in place (an aliased output) and attention reads the
 *   alias. The position of the call (`cache.length`) is the runtime scalar `pos`.
 * - **Attention**: a prefill from position 0 runs `dense.attn` (FlashAttention-2) on the cache's first rows
 *   (`model.kvRead`), or the layer's attention sub-graph (`attentionGraph`, e.g. SALE's four operators from the
 *   planner's `compileLayer`), inlined into the forward graph; a decode step runs the layer's stateful decode
 *   attention when one is given (`decodeAttention`, e.g. HiP's mask search on refresh steps and the attention
 *   through the last mask in between; the state lives in the search program's output buffers), else — and for
 *   later prefill chunks — `dense.cacheAttn` (split-KV, bottom-right causal) over the cache.
 * - **Programs**: one per (tokens per call, capacity, start at 0 or not, logits mode, attention graphs); a
 *   decode step reuses its program, so it compiles nothing and allocates nothing: it uploads the token id and
 *   the `pos` uniforms and records one command buffer.
 *
 * References: Touvron et al. 2023 (LLaMA) §2.2; Su et al. 2021 (RoFormer) §3.4.2; Ainslie et al. 2023 (GQA);
 * Shazeer 2020 (SwiGLU); Dao 2023 (FlashAttention-2).
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Effect } from "effect";
import {
  anyDims,
  type Backend,
  type BackendError,
  type CacheDecodeGraphs,
  type DeviceBuffer,
  type Graph,
  graph,
  type GraphBuilder,
  type HostTensor,
  hostTensor,
  inferShapes,
  type LongctxError,
  lower,
  type Port,
  type Program,
  refKey,
  ShapeError,
} from "@longctx/graph";
import { dense, model as ops } from "@longctx/ops";
import type { LlamaConfig, LlamaModel } from "./llama.ts";

/** What the graph forward needs of a model: config and f32 weights (a loaded {@link LlamaModel} has them). */
export type LlamaWeights = Pick<LlamaModel, "config" | "tokEmbd" | "output" | "outputNorm" | "layers">;

/**
 * The attention graph of layer `layer` for a prefill from position 0 (or `undefined`: `dense.attn`). Its
 * contract: inputs named `q` `f32 [heads, seq, headDim]` (after RoPE) and `k`, `v` `f32 [kvHeads, seq,
 * headDim]` (the cache's first rows), each optional, no others; f16 graphs are refused (the forward is f32):
 * plan with `dtype: "f32"`; an output `o` `f32 [heads, seq, headDim]`; a `density` tensor `f32 [heads]` (a
 * graph output of that name, else the last node output port of that name) is what `onDensity` reports. The
 * graph's nodes are inlined into the forward graph (node names prefixed `l<layer>.`), so they run on the
 * forward's backend like every other operator.
 */
export type AttentionGraphFn = (layer: number) => Graph | undefined;

/** A KV cache on a backend: per layer K (after RoPE) and V `[nKvHead, capacity, headDim]` f32. */
export interface KvState {
  /** Tokens it can hold. */
  readonly capacity: number;
  /** Valid rows (tokens already run). */
  length: number;
  /** Per layer, the key buffer (after RoPE). */
  readonly k: readonly DeviceBuffer[];
  /** Per layer, the value buffer. */
  readonly v: readonly DeviceBuffer[];
  /** Free the device buffers (the cache must not be used afterwards). */
  release(): void;
}

/** Options of {@link GraphLlama.forward}. */
export interface GraphForwardOptions {
  /** `"last"` (default): `[1, vocab]`; `"all"`: `[seq, vocab]` (head in row chunks); `"none"`: nothing. */
  readonly logits?: "last" | "all" | "none";
  /**
   * Attention sub-graph per layer for a call starting at position 0 (see {@link AttentionGraphFn} for its
   * contract: inputs q, k, v f32, output o, optional density); `undefined` for a layer: `dense.attn`. Calls at
   * an offset run `dense.cacheAttn`.
   */
  readonly attentionGraph?: AttentionGraphFn;
  /** Per-layer densities (`f32 [heads]`) of the attention graphs that output one (read back after the call). */
  readonly onDensity?: (density: readonly (Float32Array | undefined)[]) => void;
  /**
   * A graph run beside a layer's dense attention on the same Q/K/V, its outputs used only for
   * {@link GraphForwardOptions.onCompare} (and `onDensity`): measures a technique on the dense run's own inputs.
   * Ignored for layers with an `attentionGraph`. Prefill from position 0 only.
   */
  readonly shadowGraph?: AttentionGraphFn;
  /**
   * Per layer, the sparse attention against dense on that layer's own inputs: for a layer with an
   * `attentionGraph`, its output against `dense.attn` run beside it; for a layer with a `shadowGraph`, the
   * shadow's output against the layer's dense attention. Computed on the backend (`model.sqDiff`,
   * `model.lseRecall`; 16 bytes read back per layer); `undefined` for other layers. The extra dense (or
   * shadow) attention costs time: time such a call separately.
   */
  readonly onCompare?: (layers: readonly (AttnComparison | undefined)[]) => void;
  /**
   * Stateful decode attention per layer for single-token calls after a prefill (see `CacheDecodeGraphs` of
   * `@longctx/graph`): step `s` since the last call of more than one token runs the layer's `search` graph when
   * `s % refresh === 0`, else its `reuse` graph on the state the last search left. `undefined` for a layer:
   * `dense.cacheAttn`. Every layer given one must share one `refresh`.
   */
  readonly decodeAttention?: (layer: number) => CacheDecodeGraphs | undefined;
  /**
   * Further outputs of the layers' `attentionGraph`s to read back after a prefill from position 0 (f32
   * tensors, e.g. the traced graph's `trace f32 [seq]` of `@longctx/ops` `traceback.tracebackGraph`); each
   * layer's graph that has an output of such a name gets it read. Ignored without {@link onOutputs}.
   */
  readonly readOutputs?: readonly string[];
  /** Per layer, the `readOutputs` its attention graph produced (name → data; empty for other layers). */
  readonly onOutputs?: (layers: readonly Readonly<Record<string, Float32Array>>[]) => void;
}

/** One layer's sparse attention against dense on the same inputs. */
export interface AttnComparison {
  /** `‖o − o_dense‖ / ‖o_dense‖`. */
  readonly relErr: number;
  /** Mean over heads and query rows of the attention mass inside the kept keys, `exp(lse − lse_dense)`. */
  readonly recall: number;
  /** The smallest row's recall. */
  readonly minRecall: number;
}

/** The first non-finite value of a prefill, see {@link GraphLlama.diagnose}. */
export interface NonFiniteAt {
  /** Layer, or −1 for the head. */
  readonly layer: number;
  /** `qkv`: the layer's attention input (from the layer before); `mlp`: its MLP output; `head`: the logits. */
  readonly part: "qkv" | "mlp" | "head";
  /** Flat index of the first non-finite element in that tensor. */
  readonly index: number;
  /** Its value (NaN, Infinity or -Infinity). */
  readonly value: number;
}

/** What a forward call did (program reuse, time). */
export interface ForwardStats {
  /** Programs lowered so far (each lowering compiles and allocates; a reused program does neither). */
  readonly programs: number;
  /** Whether the last call reused a program. */
  readonly reused: boolean;
}

/** The graph forward on a backend. Calls share programs: run them one after another (await each). */
export interface GraphLlama {
  /** Hyper-parameters of the model. */
  readonly config: LlamaConfig;
  /** The backend the weights and programs live on. */
  readonly backend: Backend;
  /** Bytes of weights on the device. */
  readonly weightBytes: number;
  /** A new empty KV cache for `capacity` tokens. Fails with `ShapeError` for a bad capacity. */
  newCache(capacity: number): Effect.Effect<KvState, ShapeError | BackendError>;
  /**
   * Run `tokens` at positions `cache.length …`, appending their K/V to `cache`. Returns f32 logits
   * (`[1, vocab]`, `[seq, vocab]` with `"all"`, empty with `"none"`). Fails with `ShapeError` for an empty
   * call, an id outside `[0, vocab)` or a full cache, and with the backend's errors.
   */
  forward(
    tokens: ArrayLike<number>,
    cache: KvState,
    options?: GraphForwardOptions,
  ): Effect.Effect<Float32Array, LongctxError>;
  /** As `forward`, returning the last token's argmax (computed on the device; 4 bytes read back). */
  forwardArgmax(
    tokens: ArrayLike<number>,
    cache: KvState,
    options?: Pick<GraphForwardOptions, "attentionGraph" | "onDensity" | "decodeAttention">,
  ): Effect.Effect<number, LongctxError>;
  /**
   * Where a prefill first produces NaN or ±∞: runs `tokens` from position 0 into a scratch cache (with the same
   * attention graphs), keeping every layer's Q/K/V projection and MLP output, and returns the first layer whose
   * attention input (`qkv`, produced by the layer before or the embeddings) or output (`mlp`) holds one, with
   * the flat index and value; `"head"` when only the final norm/head does; `undefined` when all is finite.
   */
  diagnose(
    tokens: ArrayLike<number>,
    options?: Pick<GraphForwardOptions, "attentionGraph">,
  ): Effect.Effect<NonFiniteAt | undefined, LongctxError>;
  /**
   * The bytes of tensor `name` that layer `layer`'s cache attention carries for `cache` (see
   * `CacheDecodeGraphs.carried`; TokenSelect's `selStats` counters), or `undefined` when it carries none.
   */
  carried(cache: KvState, layer: number, name: string): Effect.Effect<Uint8Array | undefined, BackendError>;
  /** Program statistics (see {@link ForwardStats}). */
  stats(): ForwardStats;
  /** Bytes the cached programs own (activations, workspaces, uniforms). */
  programBytes(): number;
  /** Free the weights and every program (not caches). */
  release(): void;
}

/** A layer's decode attention in one program: its graphs and which of them this step runs. */
interface DecodeChoice {
  readonly spec: CacheDecodeGraphs;
  readonly mode: "search" | "reuse";
}

const F32 = anyDims("f32");
const shapeError = (message: string, hint: string) => new ShapeError({ message, hint });
/** Rows of the output head per chunk for all-position logits. */
const headRows = (seq: number, vocab: number, maxBind: number) =>
  Math.max(1, Math.min(seq, Math.floor(Math.min(maxBind, 256 * 2 ** 20) / (vocab * 4))));

/**
 * Upload a model's weights to `backend` and build the graph forward. Needs `headDim` a multiple of 64 and
 * hidden/MLP widths multiples of 4 (the kernels' vector widths), every weight within the binding limit.
 * Fails with `ShapeError` for an unsupported shape and with the backend's errors.
 */
export const loadLlamaGraph = (
  weights: LlamaWeights,
  backend: Backend,
): Effect.Effect<GraphLlama, ShapeError | BackendError> =>
  Effect.gen(function* () {
    const config = weights.config;
    const { nEmbd: E, nHead: H, nKvHead: KH, headDim: D, nFf: F, vocab: V, nLayer } = config;
    const dStep = backend.kind === "cpu" ? 4 : 64; // the GPU attention kernels tile headDim by 64
    if (D % dStep !== 0 || E % 4 !== 0 || F % 4 !== 0 || H % KH !== 0 || H * D !== E) {
      return yield* Effect.fail(
        shapeError(
          `unsupported shape: hidden ${E}, heads ${H}/${KH}, head dim ${D}, MLP ${F}`,
          `the graph forward needs headDim a multiple of ${dStep} on a ${backend.kind} backend, hidden and ` +
            "MLP widths multiples of 4, heads·headDim = hidden and heads divisible by kv heads",
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
    const w: Record<string, DeviceBuffer> = {};
    const shapes: Record<string, number[]> = {};
    let weightBytes = 0;
    const put = (name: string, data: Float32Array, shape: number[]) =>
      Effect.gen(function* () {
        const b = yield* backend.allocate(data.byteLength, name);
        owned.push(b);
        yield* backend.upload(b, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        w[name] = b;
        shapes[name] = shape;
        weightBytes += data.byteLength;
      });
    const concat = (...parts: Float32Array[]) => {
      const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
      let o = 0;
      for (const p of parts) {
        out.set(p, o);
        o += p.length;
      }
      return out;
    };
    const load = Effect.gen(function* () {
      yield* put("tok_embd", weights.tokEmbd, [V, E]);
      if (weights.output === weights.tokEmbd) {
        w.output = w.tok_embd;
        shapes.output = [V, E];
      } else yield* put("output", weights.output, [V, E]);
      yield* put("output_norm", weights.outputNorm, [E]);
      for (let l = 0; l < nLayer; l++) {
        const L = weights.layers[l];
        yield* put(`blk.${l}.attn_norm`, L.attnNorm, [E]);
        yield* put(`blk.${l}.wqkv`, concat(L.wq, L.wk, L.wv), [NQKV, E]);
        yield* put(`blk.${l}.wo`, L.wo, [E, H * D]);
        yield* put(`blk.${l}.ffn_norm`, L.ffnNorm, [E]);
        yield* put(`blk.${l}.wgu`, concat(L.wGate, L.wUp), [2 * F, E]);
        yield* put(`blk.${l}.wdown`, L.wDown, [E, F]);
      }
    });
    yield* Effect.onError(load, () => Effect.sync(() => owned.splice(0).forEach((b) => backend.release(b))));
    // RoPE tables [positions, D/2] (angles in f64, as llama.ts): the trained context, grown with the largest
    // cache (positions past the trained context are allowed: length extrapolation is the caller's call).
    const ropeTables = (n: number) =>
      Effect.gen(function* () {
        const half = D / 2;
        const { cos, sin } = ops.ropeTables(n, D, config.ropeTheta);
        for (const name of ["rope_cos", "rope_sin"]) {
          const old = w[name];
          if (old) {
            owned.splice(owned.indexOf(old), 1);
            backend.release(old);
          }
        }
        yield* put("rope_cos", cos, [n, half]);
        yield* put("rope_sin", sin, [n, half]);
        weightBytes -= 2 * n * half * 4;
      });
    yield* Effect.onError(
      ropeTables(config.contextLength),
      () => Effect.sync(() => owned.splice(0).forEach((b) => backend.release(b))),
    );

    const linearParams = {
      workgroupMemory: backend.limits.maxComputeWorkgroupStorageSize,
      invocations: backend.limits.maxComputeInvocationsPerWorkgroup,
    };
    const denseParams = { workgroupMemory: backend.limits.maxComputeWorkgroupStorageSize };
    const norm = { eps: config.eps, lastRow: false };

    /** Build the forward graph of one program shape. */
    const buildGraph = (
      seq: number,
      capacity: number,
      fromZero: boolean,
      mode: "last" | "all" | "none",
      attention: readonly (Graph | undefined)[],
      shadow: readonly (Graph | undefined)[],
      compare: boolean,
      decode: readonly (DecodeChoice | undefined)[] = [],
      readOut: readonly string[] = [],
    ) =>
      Effect.gen(function* () {
        const g: GraphBuilder = graph(
          `llama.${seq}x${capacity}${fromZero ? ".0" : ""}.${mode}${compare ? ".cmp" : ""}` +
            (decode.some((d) => d) ? `.${decode.find((d) => d)!.mode}` : ""),
        );
        const inp = (name: string) => g.input(name, F32, shapes[name]);
        const tokens = g.input("tokens", anyDims("u32"), [seq]);
        const cos = inp("rope_cos"), sin = inp("rope_sin");
        let x: Port<"f32"> = g.add(ops.embed, {}, { tokens, table: inp("tok_embd") }, "embed").x;
        let t: Port<"f32"> | undefined;
        const densities: string[] = [];
        const errors: string[] = [];
        const extras: Record<string, string>[] = Array.from({ length: nLayer }, () => ({}));
        for (let l = 0; l < nLayer; l++) {
          const p = `l${l}.`;
          const norm1 = t
            ? g.add(ops.addRmsNorm, norm, { x, t, w: inp(`blk.${l}.attn_norm`) }, `${p}attn_norm`)
            : { xo: x, ...g.add(ops.rmsNorm, norm, { x, w: inp(`blk.${l}.attn_norm`) }, `${p}attn_norm`) };
          x = norm1.xo;
          const qkv = g.add(ops.linear, linearParams, { x: norm1.y, w: inp(`blk.${l}.wqkv`) }, `${p}qkv`).y;
          const kc = g.input(`kv.k.${l}`, F32, [KH, capacity, D]);
          const vc = g.input(`kv.v.${l}`, F32, [KH, capacity, D]);
          const r = g.add(ops.rope, { heads: H, kvHeads: KH, headDim: D }, {
            qkv,
            cos,
            sin,
            kCache: kc,
            vCache: vc,
          }, `${p}rope`);
          let o: Port<"f32">;
          const dec = decode[l];
          if (dec) {
            // the layer's stateful decode attention: search (outputs the state) or reuse (reads it)
            const graphOf = seq > 1 && dec.spec.chunk
              ? dec.spec.chunk
              : dec.mode === "search"
              ? dec.spec.search
              : dec.spec.reuse;
            // the cache under both names (`kCache`: HiP's operators, `k`: a technique's staged graph) and the
            // RoPE tables (TokenSelect's compacted positions)
            const bindIn: Record<string, Port> = {
              q: r.q,
              kCache: r.kCacheOut,
              vCache: r.vCacheOut,
              k: r.kCacheOut,
              v: r.vCacheOut,
              ropeCos: cos,
              ropeSin: sin,
            };
            if (dec.mode === "reuse") {
              // the state's shapes: the search graph's outputs, inferred on this step's Q and cache
              const cacheDesc = {
                dtype: "f32",
                dims: ["kvHeads", "capacity", "headDim"],
                shape: [KH, capacity, D],
              } as const;
              const all = {
                q: { dtype: "f32", dims: ["heads", "seq", "headDim"], shape: [H, 1, D] },
                kCache: cacheDesc,
                vCache: cacheDesc,
                k: cacheDesc,
                v: cacheDesc,
                ropeCos: { dtype: "f32", dims: ["positions", "half"], shape: [...shapes.rope_cos] },
                ropeSin: { dtype: "f32", dims: ["positions", "half"], shape: [...shapes.rope_cos] },
              } as const;
              const shapesOf = yield* inferShapes(
                dec.spec.search,
                Object.fromEntries(
                  dec.spec.search.inputs.map((i) => [i.name, all[i.name as keyof typeof all]]),
                ),
              );
              for (const name of dec.spec.state) {
                const t = graphOf.inputs.find((i) => i.name === name);
                const out = dec.spec.search.outputs.find((o) => o.name === name);
                const desc = out ? shapesOf.get(refKey(out.ref)) : undefined;
                if (!t || !desc) {
                  return yield* Effect.fail(shapeError(
                    `decode graphs "${dec.spec.search.name}" / "${graphOf.name}" of layer ${l} do not carry ` +
                      `the state "${name}" (search outputs it, reuse reads it)`,
                    "a search graph outputs every state tensor and its reuse graph reads it",
                  ));
                }
                bindIn[name] = g.input(`state.${l}.${name}`, t.type, [...desc.shape]);
              }
            }
            // tensors the forward carries across calls (zeroed when a sequence starts), updated in place
            const carried = dec.spec.carried ?? [];
            for (const c of carried) {
              const t = graphOf.inputs.find((i) => i.name === c.name);
              if (!t) {
                return yield* Effect.fail(shapeError(
                  `decode graph "${graphOf.name}" of layer ${l} does not read its carried tensor "${c.name}"`,
                  "a carried tensor is an input of the search graph",
                ));
              }
              bindIn[c.name] = g.input(`carry.${l}.${c.name}`, t.type, [
                ...c.shape({ heads: H, kvHeads: KH, headDim: D }),
              ]);
            }
            // tensors the caller binds per layer (Squeezed Attention's prefix index), uploaded once
            const given = Object.entries(dec.spec.inputs ?? {});
            for (const [name, t] of given) {
              const at = graphOf.inputs.find((i) => i.name === name);
              if (!at) {
                return yield* Effect.fail(shapeError(
                  `decode graph "${graphOf.name}" of layer ${l} has no input "${name}" to bind`,
                  `bind only the graph's inputs: ${graphOf.inputs.map((i) => i.name).join(", ")}`,
                ));
              }
              bindIn[name] = g.input(`const.${l}.${name}`, at.type, [...t.desc.shape]);
            }
            const unbound = graphOf.inputs.find((i) => !bindIn[i.name]);
            if (unbound) {
              return yield* Effect.fail(shapeError(
                `decode graph "${graphOf.name}" of layer ${l} reads "${unbound.name}", which nothing binds`,
                `give it in the layer's CacheDecodeGraphs.inputs (squeezed: the prefix index's layerInputs, ` +
                  `see squeezedDecode of @longctx/runtime)`,
              ));
            }
            const sub = yield* inline(g, graphOf, `${p}dec.`, bindIn, densities, l, [
              ...dec.spec.state,
              ...carried.map((c) => c.name),
              ...given.map(([name]) => name),
            ]);
            if (dec.mode === "search") {
              for (const name of dec.spec.state) {
                const h = sub.ports[name];
                if (!h) {
                  return yield* Effect.fail(shapeError(
                    `decode graph "${graphOf.name}" of layer ${l} does not output its state "${name}"`,
                    "a search graph outputs every state tensor",
                  ));
                }
                g.output(`state.${l}.${name}`, h);
              }
            }
            o = g.add(ops.headsToRows, {}, { a: sub.o as Port<"f32"> }, `${p}h2r`).o;
          } else if (!fromZero) {
            o = g.add(dense.cacheAttn, {
              scale: 0,
              window: 0,
              layout: "rows",
              splitKeys: 256,
              compacted: false,
            }, {
              q: r.q,
              kCache: r.kCacheOut,
              vCache: r.vCacheOut,
            } as never, `${p}attn`).o as Port<"f32">;
          } else {
            const kv = g.add(
              ops.kvRead,
              { rows: seq },
              { kCache: r.kCacheOut, vCache: r.vCacheOut },
              `${p}kv`,
            );
            const sub = attention[l];
            const qkvIn = { q: r.q, k: kv.k, v: kv.v };
            const denseAttn = (name: string) =>
              g.add(dense.denseAttn, { scale: 0, blockQ: 64, ...denseParams }, qkvIn as never, `${p}${name}`);
            /** Compare a sparse attention's (o, lse) with dense's; outputs the stats as `cmp.<layer>`. */
            const compareWith = (
              sparse: { o: Port; lse?: Port },
              ref: { o: Port; lse: Port },
            ) => {
              const err = g.add(ops.sqDiff, {}, { a: sparse.o, b: ref.o } as never, `${p}cmp_err`).sums;
              g.output(`cmp.err.${l}`, err);
              if (sparse.lse) {
                g.output(
                  `cmp.recall.${l}`,
                  g.add(ops.lseRecall, {}, { lse: sparse.lse, lseRef: ref.lse } as never, `${p}cmp_recall`)
                    .stats,
                );
              }
              errors[l] = String(l);
            };
            let oh: Port<"f32">;
            if (!sub) {
              const d = denseAttn("attn");
              oh = d.o;
              const sh = shadow[l];
              if (sh) {
                const probe = yield* inline(g, sh, `${p}shadow.`, qkvIn, densities, l);
                if (compare) compareWith(probe, d);
              }
            } else {
              const main = yield* inline(g, sub, p, qkvIn, densities, l);
              oh = main.o as Port<"f32">;
              for (const name of readOut) {
                const port = main.ports[name];
                if (!port) continue;
                g.output(`read.${l}.${name}`, port);
                extras[l][name] = `read.${l}.${name}`;
              }
              if (compare) compareWith(main, denseAttn("attn_ref"));
            }
            o = g.add(ops.headsToRows, {}, { a: oh }, `${p}h2r`).o;
          }
          t = g.add(ops.linear, linearParams, { x: o, w: inp(`blk.${l}.wo`) }, `${p}wo`).y;
          const norm2 = g.add(ops.addRmsNorm, norm, { x, t, w: inp(`blk.${l}.ffn_norm`) }, `${p}ffn_norm`);
          x = norm2.xo;
          const gu = g.add(ops.linear, linearParams, { x: norm2.y, w: inp(`blk.${l}.wgu`) }, `${p}wgu`).y;
          const sw = g.add(ops.swiglu, {}, { gu }, `${p}swiglu`).g;
          t = g.add(ops.linear, linearParams, { x: sw, w: inp(`blk.${l}.wdown`) }, `${p}wdown`).y;
        }
        if (mode === "last") {
          const hl = g.add(ops.addRmsNorm, { eps: config.eps, lastRow: true }, {
            x,
            t: t!,
            w: inp("output_norm"),
          }, "output_norm").y;
          const logits = g.add(ops.linear, linearParams, { x: hl, w: inp("output") }, "head").y;
          g.output("logits", logits);
          g.output("id", g.add(ops.argmax, {}, { logits }, "argmax").id);
        } else if (mode === "all") {
          g.output("h", g.add(ops.addRmsNorm, norm, { x, t: t!, w: inp("output_norm") }, "output_norm").y);
        } else {
          // Only the K/V appends matter; the last layer's output is an output so nothing is pruned.
          g.output("t", t!);
        }
        return { graph: yield* g.build(), densities, errors, extras };
      });

    /** Inline an attention sub-graph: its nodes get the layer's prefix; returns its `o`. */
    const inline = (
      g: GraphBuilder,
      sub: Graph,
      prefix: string,
      bind: Readonly<Record<string, Port>>,
      densities: string[],
      layer: number,
      state: readonly string[] = [],
    ): Effect.Effect<{ o: Port; lse?: Port; ports: Readonly<Record<string, Port>> }, ShapeError> =>
      Effect.gen(function* () {
        const where = `attention graph "${sub.name}" of layer ${layer}`;
        for (const i of sub.inputs) {
          if (!bind[i.name]) {
            return yield* Effect.fail(
              shapeError(
                `${where} has input "${i.name}"; the forward binds only ${Object.keys(bind).join(", ")}`,
                "an attention graph reads q [heads, seq, headDim] and k, v [kvHeads, seq, headDim]",
              ),
            );
          }
          if (i.type.dtype !== "f32" && !state.includes(i.name)) {
            return yield* Effect.fail(
              shapeError(
                `${where} reads ${i.name} as ${i.type.dtype}; the forward holds Q/K/V in f32`,
                'use the f32 operators (dense.attn, sale.*): plan with dtype "f32"',
              ),
            );
          }
        }
        const ports = new Map<string, Port>();
        const resolve = (r: { input: string } | { node: string; port: string }): Port =>
          "input" in r ? bind[r.input] : ports.get(`${r.node}:${r.port}`)!;
        for (const n of sub.nodes) {
          const ins: Record<string, Port> = {};
          for (const [port, r] of Object.entries(n.inputs)) ins[port] = resolve(r);
          const out = g.add(n.op, n.params as never, ins as never, `${prefix}${n.name}`) as Record<
            string,
            Port
          >;
          for (const [port, h] of Object.entries(out)) ports.set(`${n.name}:${port}`, h);
        }
        const oRef = sub.outputs.find((o) => o.name === "o");
        if (!oRef) {
          return yield* Effect.fail(
            shapeError(
              `${where} has no output "o"`,
              "an attention graph must output o: f32 [heads, seq, headDim]",
            ),
          );
        }
        const dRef = sub.outputs.find((o) => o.name === "density")?.ref ??
          [...sub.nodes].reverse().filter((n) => "density" in n.op.outputs).map((n) => ({
            node: n.name,
            port: "density",
          }))[0];
        if (dRef) {
          const name = `density.${layer}`;
          g.output(name, resolve(dRef));
          densities[layer] = name;
        }
        const lseRef = sub.outputs.find((o) => o.name === "lse");
        const named: Record<string, Port> = {};
        for (const out of sub.outputs) named[out.name] = resolve(out.ref);
        return { o: resolve(oRef.ref), ...(lseRef ? { lse: resolve(lseRef.ref) } : {}), ports: named };
      });

    // Carried tensors of cache attentions (CacheDecodeGraphs.carried), per cache: name → buffer, zeroed when a
    // sequence starts (a call at position 0)
    const carriedBufs = new WeakMap<KvState, Map<string, DeviceBuffer>>();
    const carriedBuffer = (cache: KvState, name: string, shape: readonly number[]) =>
      Effect.gen(function* () {
        let m = carriedBufs.get(cache);
        if (!m) carriedBufs.set(cache, m = new Map());
        const have = m.get(name);
        if (have) return have;
        const bytes = 4 * shape.reduce((a, b) => a * b, 1);
        const b = yield* backend.allocate(bytes, name);
        yield* backend.upload(b, new Uint8Array(bytes));
        m.set(name, b);
        return b;
      });
    const zeroCarried = (cache: KvState) =>
      Effect.gen(function* () {
        for (const b of carriedBufs.get(cache)?.values() ?? []) {
          yield* backend.upload(b, new Uint8Array(b.bytes));
        }
      });

    // Tensors the callers bind to decode graphs (CacheDecodeGraphs.inputs), per binding name: one buffer and the
    // tensor it holds. Programs are keyed by the tensors' shapes, not their identity: a call with another tensor
    // of the same size under a name uploads it into the same buffer before the program runs (Squeezed
    // Attention's threshold per percentile); another size replaces the buffer and the programs bound to it.
    const constBufs = new Map<string, { src: HostTensor; buf: DeviceBuffer }>();
    const inputsKey = (inputs: CacheDecodeGraphs["inputs"]): string =>
      Object.entries(inputs ?? {}).map(([n, t]) => `${n}:${t.desc.dtype}[${t.desc.shape.join(",")}]`).join(
        ",",
      );
    const constBuffer = (name: string, t: HostTensor) =>
      Effect.gen(function* () {
        const have = constBufs.get(name);
        if (have?.src === t) return have.buf;
        const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
        if (have && have.buf.bytes === Math.ceil(Math.max(4, bytes.byteLength) / 4) * 4) {
          yield* backend.upload(have.buf, bytes);
          constBufs.set(name, { src: t, buf: have.buf });
          return have.buf;
        }
        if (have) {
          // programs bound the old buffer: lower again
          for (const p of programs.values()) p.program.release();
          programs.clear();
          backend.release(have.buf);
        }
        const buf = yield* backend.allocate(Math.max(4, bytes.byteLength), name);
        yield* backend.upload(buf, bytes);
        constBufs.set(name, { src: t, buf });
        return buf;
      });
    /** Upload this call's bound decode inputs (before a program is looked up: a reused one reads them too). */
    const bindConstants = (decode: readonly (DecodeChoice | undefined)[]) =>
      Effect.gen(function* () {
        for (let l = 0; l < decode.length; l++) {
          for (const [name, t] of Object.entries(decode[l]?.spec.inputs ?? {})) {
            yield* constBuffer(`const.${l}.${name}`, t);
          }
        }
      });

    // Programs, by shape key.
    const programs = new Map<
      string,
      { program: Program; densities: string[]; errors: string[]; extras: Record<string, string>[] }
    >();
    /** Decode steps per cache since its last multi-token call. */
    const decodeSteps = new WeakMap<KvState, number>();
    let lowered = 0;
    let reused = false;
    const structKeys = new WeakMap<Graph, string>();
    const structKey = (sub: Graph | undefined): string => {
      if (!sub) return "-";
      let k = structKeys.get(sub);
      if (k === undefined) {
        k = JSON.stringify([
          sub.name,
          sub.nodes.map((n) => [n.name, n.op.name, n.params, n.inputs]),
          sub.outputs,
        ]);
        structKeys.set(sub, k);
      }
      return k;
    };
    const programFor = (
      seq: number,
      cache: KvState,
      mode: "last" | "all" | "none",
      opts: GraphForwardOptions,
      keep: readonly string[] = [],
    ) =>
      Effect.gen(function* () {
        const fromZero = cache.length === 0 && seq > 1;
        const attention: (Graph | undefined)[] = [];
        for (let l = 0; l < nLayer; l++) attention.push(fromZero ? opts.attentionGraph?.(l) : undefined);
        const shadow: (Graph | undefined)[] = [];
        for (let l = 0; l < nLayer; l++) shadow.push(fromZero ? opts.shadowGraph?.(l) : undefined);
        const compare = opts.onCompare !== undefined &&
          (attention.some((a) => a !== undefined) || shadow.some((a) => a !== undefined));
        // decode steps with a stateful attention: search on refresh steps, reuse the last search's state else
        const decode: (DecodeChoice | undefined)[] = [];
        let decodeGraphs = "", decodeMode = ""; // this step's decode graphs (key) and their mode
        const specs0 = opts.decodeAttention
          ? Array.from({ length: nLayer }, (_, l) => opts.decodeAttention!(l))
          : [];
        const single = seq === 1 && !fromZero;
        if (specs0.some((x) => x && (single || x.prefill))) {
          // a multi-token call runs only the specs that serve prefill chunks (TokenSelect's); decode steps all
          const specs = specs0.map((x) => (x && (single || x.prefill) ? x : undefined));
          const limit = Math.min(...specs.map((x) => x?.maxChunk ?? Infinity));
          if (seq > limit) {
            return yield* Effect.fail(shapeError(
              `a call of ${seq} tokens; the layers' cache attention takes at most ${limit} per call`,
              `run the prompt in chunks of at most ${limit} tokens (generateGreedyGraph's chunk)`,
            ));
          }
          const refresh = new Set(specs.filter((x) => x).map((x) => x!.refresh));
          if (refresh.size > 1) {
            return yield* Effect.fail(shapeError(
              `decode attentions with different refresh intervals (${[...refresh].join(", ")})`,
              "give every layer's decode attention one refresh interval",
            ));
          }
          const r = [...refresh][0];
          if (r !== undefined) {
            const step = single ? (decodeSteps.get(cache) ?? 0) : 0;
            const m: "search" | "reuse" = step % r === 0 ? "search" : "reuse";
            for (const x of specs) decode.push(x ? { spec: x, mode: m } : undefined);
            decodeGraphs = specs.map((x) =>
              x
                ? structKey(x.search) + structKey(x.reuse) + (x.chunk ? structKey(x.chunk) : "") +
                  inputsKey(x.inputs)
                : "-"
            ).join(";");
            decodeMode = m;
          }
        }
        const readOut = fromZero && opts.onOutputs ? (opts.readOutputs ?? []) : [];
        const keyOf = (decodeAs: string) =>
          `${seq}|${cache.capacity}|${fromZero}|${mode}|${compare}|${attention.map(structKey).join(";")}|${
            shadow.map(structKey).join(";")
          }|${decodeGraphs && `${decodeAs}:${decodeGraphs}`}|${readOut.join(",")}`;
        const key = keyOf(decodeMode);
        yield* bindConstants(decode);
        const have = programs.get(key);
        if (have) {
          reused = true;
          return have;
        }
        // One program per shape at a time for prefills (bounded memory); decode programs stay.
        if (seq > 1) {
          for (const [k, p] of programs) {
            if (!k.startsWith("1|")) {
              p.program.release();
              programs.delete(k);
            }
          }
        }
        const { graph: gr, densities, errors, extras } = yield* buildGraph(
          seq,
          cache.capacity,
          fromZero,
          mode,
          attention,
          shadow,
          compare,
          decode,
          readOut,
        );
        const all: Record<string, DeviceBuffer> = { ...w };
        for (let l = 0; l < nLayer; l++) {
          all[`kv.k.${l}`] = cache.k[l];
          all[`kv.v.${l}`] = cache.v[l];
        }
        if (decode.some((d) => d?.mode === "reuse")) {
          // the state: the output buffers of this shape's search program (lowered on the first decode step)
          const search = programs.get(keyOf("search"));
          if (!search) {
            return yield* Effect.fail(shapeError(
              "a decode step reuses attention state that no search step produced",
              "decode after a prefill: step 0 searches",
            ));
          }
          for (let l = 0; l < nLayer; l++) {
            for (const name of decode[l]?.spec.state ?? []) {
              all[`state.${l}.${name}`] = search.program.buffer(`state.${l}.${name}`);
            }
          }
        }
        for (let l = 0; l < nLayer; l++) {
          for (const name of Object.keys(decode[l]?.spec.inputs ?? {})) {
            all[`const.${l}.${name}`] = constBufs.get(`const.${l}.${name}`)!.buf;
          }
          for (const c of decode[l]?.spec.carried ?? []) {
            const shape = c.shape({ heads: H, kvHeads: KH, headDim: D });
            all[`carry.${l}.${c.name}`] = yield* carriedBuffer(cache, `carry.${l}.${c.name}`, shape);
          }
        }
        const bind: Record<string, DeviceBuffer> = {};
        for (const i of gr.inputs) if (all[i.name]) bind[i.name] = all[i.name];
        const descs: Record<string, { dtype: "f32" | "u32"; dims: readonly string[]; shape: number[] }> = {};
        for (const i of gr.inputs) {
          descs[i.name] = { dtype: i.type.dtype as "f32" | "u32", dims: i.type.dims, shape: [...i.shape!] };
        }
        const program = yield* lower(gr, backend, descs, {
          bind,
          lowering: backend.kind === "cpu" ? "never" : "auto",
          ...(keep.length > 0 ? { keepAlive: keep } : {}),
        });
        lowered++;
        reused = false;
        const entry = { program, densities, errors, extras };
        programs.set(key, entry);
        return entry;
      });
    // Programs are lowered against one cache's buffers: a call with another cache re-lowers.
    let boundCache: KvState | undefined;
    /** Release every cached program (they bind one cache's buffers and the RoPE tables). */
    const dropPrograms = () => {
      for (const p of programs.values()) p.program.release();
      programs.clear();
    };
    /** Programs are lowered against one cache's buffers: a call with another cache lowers them again. */
    const bindCache = (cache: KvState) => {
      if (boundCache === cache) return;
      dropPrograms();
      boundCache = cache;
    };

    const checkCall = (tokens: ArrayLike<number>, cache: KvState): ShapeError | undefined => {
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

    const runLayers = (
      tokens: ArrayLike<number>,
      cache: KvState,
      mode: "last" | "all" | "none",
      opts: GraphForwardOptions,
    ) =>
      Effect.gen(function* () {
        const bad = checkCall(tokens, cache);
        if (bad) return yield* Effect.fail(bad);
        bindCache(cache);
        const seq = tokens.length;
        const { program, densities, errors, extras } = yield* programFor(seq, cache, mode, opts);
        if (cache.length === 0) yield* zeroCarried(cache);
        yield* program.write("tokens", hostTensor("u32", ["seq"], [seq], Uint32Array.from(tokens)));
        yield* program.run({ scalars: { pos: cache.length } });
        cache.length += seq;
        // decode steps since the last multi-token call (the stateful decode attentions' refresh clock)
        decodeSteps.set(cache, seq > 1 ? 0 : (decodeSteps.get(cache) ?? 0) + 1);
        if (opts.onOutputs && extras.some((e) => Object.keys(e).length > 0)) {
          const out: Record<string, Float32Array>[] = [];
          for (let l = 0; l < nLayer; l++) {
            const r: Record<string, Float32Array> = {};
            for (const [name, at] of Object.entries(extras[l])) {
              r[name] = (yield* program.read(at)).data as Float32Array;
            }
            out.push(r);
          }
          opts.onOutputs(out);
        }
        if (opts.onDensity && densities.length > 0) {
          const out: (Float32Array | undefined)[] = [];
          for (let l = 0; l < nLayer; l++) {
            out.push(densities[l] ? (yield* program.read(densities[l])).data as Float32Array : undefined);
          }
          opts.onDensity(out);
        }
        if (opts.onCompare && errors.length > 0) {
          const out: (AttnComparison | undefined)[] = [];
          for (let l = 0; l < nLayer; l++) {
            if (!errors[l]) {
              out.push(undefined);
              continue;
            }
            const e = (yield* program.read(`cmp.err.${l}`)).data as Float32Array;
            const hasRecall = program.graph.outputs.some((o) => o.name === `cmp.recall.${l}`);
            const r = hasRecall ? (yield* program.read(`cmp.recall.${l}`)).data as Float32Array : undefined;
            const rows = H * seq;
            out.push({
              relErr: e[1] > 0 ? Math.sqrt(e[0] / e[1]) : 0,
              recall: r ? r[0] / rows : NaN,
              minRecall: r ? r[1] : NaN,
            });
          }
          opts.onCompare(out);
        }
        return program;
      });

    // The output head over all rows, a chunk at a time: h [seq, E] → sliceRows → linear → logits [R, V].
    const heads = new Map<string, Program>();
    const headFor = (seq: number, hBuf: DeviceBuffer) =>
      Effect.gen(function* () {
        const R = headRows(seq, V, maxBind);
        const key = `${seq}|${hBuf.id}`;
        const have = heads.get(key);
        if (have) return have;
        for (const p of heads.values()) p.release();
        heads.clear();
        const g = graph(`llama.head.${seq}`);
        const h = g.input("h", F32, [seq, E]);
        const rows = g.add(ops.sliceRows, { rows: R }, { a: h }, "rows").o;
        g.output(
          "logits",
          g.add(ops.linear, linearParams, { x: rows, w: g.input("output", F32, [V, E]) }, "head").y,
        );
        const gr = yield* g.build();
        const p = yield* lower(gr, backend, {
          h: { dtype: "f32", dims: F32.dims, shape: [seq, E] },
          output: { dtype: "f32", dims: F32.dims, shape: [V, E] },
        }, { bind: { h: hBuf, output: w.output }, lowering: backend.kind === "cpu" ? "never" : "auto" });
        heads.set(key, p);
        return p;
      });

    const forward: GraphLlama["forward"] = (tokens, cache, opts = {}) =>
      Effect.gen(function* () {
        const mode = opts.logits ?? "last";
        const program = yield* runLayers(tokens, cache, mode, opts);
        if (mode === "none") return new Float32Array(0);
        if (mode === "last") return (yield* program.read("logits")).data as Float32Array;
        const seq = tokens.length;
        const head = yield* headFor(seq, program.buffer("h"));
        const R = headRows(seq, V, maxBind);
        const out = new Float32Array(seq * V);
        for (let s = 0; s < seq; s += R) {
          const start = Math.min(s, seq - R);
          yield* head.run({ scalars: { start } });
          const l = (yield* head.read("logits")).data as Float32Array;
          out.set(l.subarray((s - start) * V), s * V);
        }
        return out;
      });

    const forwardArgmax: GraphLlama["forwardArgmax"] = (tokens, cache, opts = {}) =>
      Effect.gen(function* () {
        const program = yield* runLayers(tokens, cache, "last", opts);
        return ((yield* program.read("id")).data as Uint32Array)[0];
      });

    const diagnose: GraphLlama["diagnose"] = (tokens, opts = {}) =>
      Effect.gen(function* () {
        const bad = checkCall(tokens, { capacity: tokens.length, length: 0 } as KvState);
        if (bad) return yield* Effect.fail(bad);
        const seq = tokens.length;
        const keep: string[] = [];
        for (let l = 0; l < nLayer; l++) keep.push(`node:l${l}.qkv:y`, `node:l${l}.wdown:y`);
        const cache = yield* newCache(seq);
        const run = Effect.gen(function* () {
          bindCache(cache);
          const { program } = yield* programFor(seq, cache, "last", opts, keep);
          yield* program.write("tokens", hostTensor("u32", ["seq"], [seq], Uint32Array.from(tokens)));
          yield* program.run({ scalars: { pos: 0 } });
          const first = (a: Float32Array) => a.findIndex((x) => !Number.isFinite(x));
          for (let l = 0; l < nLayer; l++) {
            for (const [part, key] of [["qkv", `node:l${l}.qkv:y`], ["mlp", `node:l${l}.wdown:y`]] as const) {
              const a = (yield* program.read(key)).data as Float32Array;
              const i = first(a);
              if (i >= 0) return { layer: l, part, index: i, value: a[i] } satisfies NonFiniteAt;
            }
          }
          const lg = (yield* program.read("logits")).data as Float32Array;
          const i = first(lg);
          return i >= 0
            ? ({ layer: -1, part: "head", index: i, value: lg[i] } satisfies NonFiniteAt)
            : undefined;
        });
        return yield* Effect.ensuring(
          run,
          Effect.sync(() => {
            for (const [k, p] of programs) {
              if (k.endsWith(keep.join(","))) {
                p.program.release();
                programs.delete(k);
              }
            }
            cache.release();
            boundCache = undefined;
          }),
        );
      });

    const newCache: GraphLlama["newCache"] = (capacity) =>
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
        if (capacity > shapes.rope_cos[0]) {
          // Longer tables: every program binds the old ones, so they are lowered again.
          dropPrograms();
          boundCache = undefined;
          yield* ropeTables(capacity);
        }
        const k: DeviceBuffer[] = [], v: DeviceBuffer[] = [];
        const alloc = Effect.gen(function* () {
          for (let l = 0; l < nLayer; l++) {
            k.push(yield* backend.allocate(bytes, `kv.k.${l}`));
            v.push(yield* backend.allocate(bytes, `kv.v.${l}`));
          }
        });
        yield* Effect.onError(
          alloc,
          () => Effect.sync(() => [...k, ...v].forEach((b) => backend.release(b))),
        );
        const st: KvState = {
          capacity,
          length: 0,
          k,
          v,
          release: () => {
            for (const b of [...k, ...v, ...(carriedBufs.get(st)?.values() ?? [])]) backend.release(b);
            carriedBufs.delete(st);
          },
        };
        return st;
      });

    const carried: GraphLlama["carried"] = (cache, layer, name) =>
      Effect.gen(function* () {
        const b = carriedBufs.get(cache)?.get(`carry.${layer}.${name}`);
        return b ? yield* backend.download(b) : undefined;
      });

    return {
      config,
      backend,
      weightBytes,
      newCache,
      carried,
      forward,
      forwardArgmax,
      diagnose,
      stats: () => ({ programs: lowered, reused }),
      programBytes: () =>
        [...programs.values()].reduce((a, p) => a + p.program.bytes, 0) +
        [...heads.values()].reduce((a, p) => a + p.bytes, 0),
      release: () => {
        dropPrograms();
        for (const p of heads.values()) p.release();
        heads.clear();
        for (const b of owned.splice(0)) backend.release(b);
        for (const c of constBufs.values()) backend.release(c.buf);
        constBufs.clear();
      },
    } satisfies GraphLlama;
  });

/**
 * The most tokens one call may hold under `decodeAttention` (the smallest `maxChunk` of the layers' cache
 * attentions that serve prefill chunks; Infinity when none limits it): the prefill chunk to use.
 */
export const cacheAttentionChunk = (
  decodeAttention: GraphForwardOptions["decodeAttention"],
  nLayer: number,
): number => {
  let limit = Infinity;
  for (let l = 0; l < nLayer && decodeAttention; l++) {
    const d = decodeAttention(l);
    if (d?.prefill && d.maxChunk !== undefined) limit = Math.min(limit, d.maxChunk);
  }
  return limit;
};

/** Options of {@link generateGreedyGraph}. */
export interface GraphGenerateOptions {
  /** Stop after emitting one of these ids (e.g. EOS and control ids); default none. */
  readonly stop?: ReadonlySet<number>;
  /** Prefill chunk size in tokens (default 2048; bounds activation memory). */
  readonly chunk?: number;
  /** Attention sub-graph per layer for the first prefill chunk (see {@link GraphForwardOptions}). */
  readonly attentionGraph?: AttentionGraphFn;
  /** Per-layer densities of that first chunk. */
  readonly onDensity?: (density: readonly (Float32Array | undefined)[]) => void;
  /** Stateful decode attention per layer for the decode steps (see {@link GraphForwardOptions}). */
  readonly decodeAttention?: GraphForwardOptions["decodeAttention"];
}

/**
 * Prefill `prompt` in chunks into a fresh KV cache, then greedy-decode up to `maxNew` tokens, one program run
 * (one command buffer on a GPU, 4 bytes read back) per token. Returns the generated ids (without the prompt),
 * the cache (release it) and wall times in ms. Fails with `ShapeError` for an empty prompt or bad ids.
 */
export const generateGreedyGraph = (
  m: GraphLlama,
  prompt: readonly number[],
  maxNew: number,
  options: GraphGenerateOptions = {},
): Effect.Effect<{ ids: number[]; cache: KvState; prefillMs: number; decodeMs: number }, LongctxError> =>
  Effect.gen(function* () {
    if (prompt.length === 0) return yield* Effect.fail(shapeError("empty prompt", "pass at least one token"));
    const chunk = options.chunk ??
      Math.min(2048, cacheAttentionChunk(options.decodeAttention, m.config.nLayer));
    const cache = yield* m.newCache(prompt.length + Math.max(0, maxNew));
    const t0 = performance.now();
    let next = 0;
    for (let s = 0; s < prompt.length; s += chunk) {
      next = yield* m.forwardArgmax(
        prompt.slice(s, s + chunk),
        cache,
        {
          ...(s === 0 && options.attentionGraph
            ? {
              attentionGraph: options.attentionGraph,
              ...(options.onDensity ? { onDensity: options.onDensity } : {}),
            }
            : {}),
          ...(options.decodeAttention ? { decodeAttention: options.decodeAttention } : {}),
        },
      );
    }
    const t1 = performance.now();
    const ids: number[] = [];
    while (ids.length < maxNew) {
      ids.push(next);
      if (options.stop?.has(next) || ids.length === maxNew) break;
      next = yield* m.forwardArgmax(
        [next],
        cache,
        options.decodeAttention ? { decodeAttention: options.decodeAttention } : {},
      );
    }
    return { ids, cache, prefillMs: t1 - t0, decodeMs: performance.now() - t1 };
  });
