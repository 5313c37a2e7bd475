/**
 * Lowered programs: plan once, run many (as FlashInfer's plan/run split and ggml's graph plan).
 *
 * `lower(graph, backend, inputs)` does everything that depends only on shapes and the device, once: shape
 * inference, each node's path, the operators' GPU lowerings, the buffer plan, allocation of every buffer the
 * program owns (intermediates, workspaces, one uniform buffer per launch that has uniforms), kernel
 * compilation, and the launch list with every binding resolved. `Program.run` then only uploads the uniforms
 * that depend on runtime scalars (`Scalars`, e.g. the decode position `pos`), records the launches (one
 * `dispatch` per maximal run of GPU-path nodes) and runs host-path nodes: **a run compiles nothing and
 * allocates nothing**.
 *
 * Device-resident data: graph inputs named in `bind` are caller-owned buffers (model weights, a KV cache);
 * the program never allocates, uploads or frees them. Other inputs get program-owned buffers the caller
 * fills with `write` (or with its own kernels through `buffer(name)`). Outputs stay on the device until
 * `read`. State is an input bound to a persistent buffer plus an operator whose output aliases it
 * (`Operator.aliases`: a KV-cache append); later nodes read the alias, so the order is explicit in the graph.
 *
 * Host-path nodes (`cpu` on the cpu backend, `cpu-fallback` on a GPU) run the operator's reference on host
 * tensors: on a backend with `view` (the cpu backend) the tensors are the buffers' own memory, without
 * copies; elsewhere they are downloaded and the outputs uploaded.
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Effect } from "effect";
import type { Backend, DeviceBuffer, DispatchTiming, Launch } from "./backend.ts";
import { BackendError, type LongctxError, ShapeError } from "./errors.ts";
import { type NodeReport, planRun, type RunOptions, type RunPlan } from "./executor.ts";
import { type Graph, refKey, showType } from "./graph.ts";
import type { CpuContext, HostOf, LoweredLaunch, Ports, Scalars } from "./operator.ts";
import { allocHost, descBytes, type HostArray, type HostTensor, type TensorDesc } from "./tensor.ts";

/** Options of {@link lower}. */
export interface LowerOptions {
  /** As {@link RunOptions.lowering} (default `"auto"`). */
  readonly lowering?: RunOptions["lowering"];
  /**
   * Graph inputs bound to caller-owned device buffers (weights, KV-cache state), by input name. Each must
   * hold at least the input's bytes; the program reads (and, through in-place outputs, writes) it in place.
   */
  readonly bind?: Readonly<Record<string, DeviceBuffer>>;
  /** Tensor keys (`refKey`) kept readable after a run besides the graph outputs. */
  readonly keepAlive?: readonly string[];
  /** Label prefix of the program's buffers (default the graph's name). */
  readonly label?: string;
}

/** Options of {@link Program.run}. */
export interface ProgramRunOptions {
  /** Runtime scalars; every scalar an operator of the graph declares must be given. */
  readonly scalars?: Scalars;
  /** Ask for GPU timestamps (when the backend has `timestamp-query`); `gpuMs` in the result. */
  readonly timed?: boolean;
  /** Wait for the device before returning (default true). */
  readonly sync?: boolean;
  /**
   * Dispatch and wait node by node and report each node's wall time (`nodes` in the result); default false:
   * one dispatch per maximal run of GPU-path nodes, no waiting in between.
   */
  readonly perNode?: boolean;
}

/** What one run did. */
export interface ProgramRunReport {
  /** Wall time in ms (uniform uploads, encoding, host nodes; device work too when synced). */
  readonly ms: number;
  /** Device time in ms from timestamp queries, when asked for and available. */
  readonly gpuMs?: number;
  /** Kernel launches issued, and `dispatch` calls (command buffers). */
  readonly launches: number;
  /** `dispatch` calls (command buffers) issued. */
  readonly dispatches: number;
  /** Host-path nodes run. */
  readonly hostNodes: number;
  /** Per-node reports, with {@link ProgramRunOptions.perNode}. */
  readonly nodes?: readonly NodeReport[];
}

/** A graph lowered for given input shapes on one backend (see the module doc). */
export interface Program<I extends Ports = Ports, O extends Ports = Ports> {
  /** The graph it was lowered from. */
  readonly graph: Graph<I, O>;
  /** The backend it runs on (owns its buffers). */
  readonly backend: Backend;
  /** The plan it was lowered from (shapes, paths, lowerings, buffer plan). */
  readonly plan: RunPlan;
  /** Runtime scalars the graph's operators read. */
  readonly scalars: readonly string[];
  /** Bytes of device memory the program owns (bound inputs not counted). */
  readonly bytes: number;
  /** Shape of a graph input, output or any tensor (`refKey` or a graph input/output name). */
  desc(name: string): TensorDesc;
  /** The device buffer holding a graph input or output (or any tensor, by `refKey`). */
  buffer(name: string): DeviceBuffer;
  /** Upload a host tensor into a graph input the program owns. Fails with `ShapeError` on a shape mismatch. */
  write(name: string, t: HostTensor): Effect.Effect<void, ShapeError | BackendError>;
  /** Run every node once. */
  run(options?: ProgramRunOptions): Effect.Effect<ProgramRunReport, LongctxError>;
  /** Download a graph output (or a kept-alive tensor) as a host tensor. */
  read(name: string): Effect.Effect<HostTensor, BackendError>;
  /** Free the buffers the program owns (not bound ones). Idempotent; the program cannot run afterwards. */
  release(): void;
}

/** Pad to a multiple of 4 bytes (f16 tensors of odd length), as uploads require. */
export const uploadBytes = (t: HostTensor): Uint8Array => {
  const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, descBytes(t.desc));
  if (bytes.byteLength % 4 === 0) return bytes;
  const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  padded.set(bytes);
  return padded;
};

/** A host tensor over existing memory (no copy). */
const hostOver = (desc: TensorDesc, mem: ArrayBuffer): HostTensor => {
  const n = desc.shape.reduce((a, b) => a * b, 1);
  const words = descBytes(desc) / 4;
  const data = desc.dtype === "f32"
    ? new Float32Array(mem, 0, n)
    : desc.dtype === "f16"
    ? new Uint16Array(mem, 0, n)
    : desc.dtype === "i32"
    ? new Int32Array(mem, 0, n)
    : new Uint32Array(mem, 0, desc.dtype === "u32" ? n : words);
  return { desc, data: data as HostArray[typeof desc.dtype] };
};

const internal = (b: Backend, message: string, hint: string) =>
  new BackendError({ backend: b.kind, reason: "internal", message, hint });

/** A launch with its buffers resolved; dynamic uniforms and workgroups recomputed per run. */
interface BoundLaunch {
  readonly kernel: Launch["kernel"];
  readonly buffers: readonly DeviceBuffer[];
  workgroups: readonly [number, number, number];
  readonly dynamic?: LoweredLaunch["dynamic"];
  /** Uniform workspace name → this launch's own uniform buffer. */
  readonly uniformBufs: ReadonlyMap<string, DeviceBuffer>;
}

type Step =
  | { readonly kind: "gpu"; readonly node: number; readonly launches: readonly BoundLaunch[] }
  | { readonly kind: "host"; readonly node: number };

/**
 * Lower graph `g` for input descriptions `inputs` on `backend` (see the module doc). Allocates and compiles
 * everything a run needs; nothing stays allocated when it fails.
 *
 * Fails with `ShapeError` (inputs do not fit the graph, a bound buffer is too small, an in-place output
 * differs in size from its input), `BackendError` (`unsupported`: a lowering refused the shapes or device;
 * `internal`: a lowering binds an unknown name; allocation, upload) or `KernelCompileError`.
 */
export const lower = <I extends Ports, O extends Ports>(
  g: Graph<I, O>,
  backend: Backend,
  inputs: Readonly<Record<string, TensorDesc>>,
  options: LowerOptions = {},
): Effect.Effect<Program<I, O>, LongctxError> =>
  Effect.gen(function* () {
    const graph = g as unknown as Graph;
    const bind = options.bind ?? {};
    for (const name of Object.keys(bind)) {
      if (!graph.inputs.some((i) => i.name === name)) {
        return yield* new ShapeError({
          message: `bind names "${name}", which is no input of graph "${graph.name}"`,
          hint: `bind one of: ${graph.inputs.map((i) => i.name).join(", ")}`,
        });
      }
    }
    const plan = yield* planRun(graph, backend, inputs, {
      ...(options.lowering ? { lowering: options.lowering } : {}),
      bound: new Set(Object.keys(bind)),
      ...(options.keepAlive ? { keepAlive: options.keepAlive } : {}),
    });
    for (const [name, b] of Object.entries(bind)) {
      const want = descBytes(plan.shapes.get(refKey({ input: name }))!);
      if (b.bytes < want) {
        return yield* new ShapeError({
          message:
            `bound buffer "${b.label}" for input "${name}" holds ${b.bytes} bytes, the input needs ${want}`,
          hint: "bind a buffer at least as large as the input's description",
        });
      }
    }
    const scalars = [...new Set(graph.nodes.flatMap((n) => n.op.scalars ?? []))];
    const owned: DeviceBuffer[] = [];
    const label = options.label ?? graph.name;
    const build = Effect.gen(function* () {
      const bufs: DeviceBuffer[] = [];
      for (const [i, bytes] of plan.memory.buffers.entries()) {
        const b = yield* backend.allocate(bytes, `${label}#${i}`);
        owned.push(b);
        bufs.push(b);
      }
      const bufOfKey = (key: string): DeviceBuffer | undefined => {
        const c = plan.canonical.get(key) ?? key;
        if (c.startsWith("in:") && bind[c.slice(3)]) return bind[c.slice(3)];
        const i = plan.memory.assign.get(c);
        return i === undefined ? undefined : bufs[i];
      };
      const steps: Step[] = [];
      for (const [s, n] of graph.nodes.entries()) {
        if (plan.paths.get(n.name) !== "gpu") {
          steps.push({ kind: "host", node: s });
          continue;
        }
        const low = plan.lowerings.get(n.name)!;
        const launches: BoundLaunch[] = [];
        for (const [li, l] of low.launches.entries()) {
          const uniformBufs = new Map<string, DeviceBuffer>();
          for (const [ws, bytes] of Object.entries(l.uniforms ?? {})) {
            if (!(ws in low.workspaces)) {
              return yield* internal(
                backend,
                `node ${n.name}(${n.op.name}): uniform "${ws}" has no workspace`,
                `declare "${ws}" in the lowering's workspaces`,
              );
            }
            // Each launch gets its own uniform buffer: all uploads of a run precede its command buffer.
            const u = yield* backend.allocate(
              Math.max(16, Math.ceil(bytes.byteLength / 4) * 4),
              `${n.name}.${li}.${ws}`,
            );
            owned.push(u);
            yield* backend.upload(u, bytes);
            uniformBufs.set(ws, u);
          }
          const buffers: DeviceBuffer[] = [];
          for (const name of l.buffers) {
            const c = name.indexOf(":");
            const [kind, port] = [name.slice(0, c), name.slice(c + 1)];
            let b: DeviceBuffer | undefined;
            if (kind === "in" && n.inputs[port]) b = bufOfKey(refKey(n.inputs[port]));
            else if (kind === "out" && port in n.op.outputs) b = bufOfKey(refKey({ node: n.name, port }));
            else if (kind === "ws" && port in low.workspaces) {
              b = uniformBufs.get(port) ?? bufOfKey(`ws:${n.name}:${port}`);
            }
            if (b === undefined) {
              return yield* internal(
                backend,
                `node ${n.name}(${n.op.name}): its lowering binds "${name}", which is no port or workspace`,
                `bindings are in:<input port>, out:<output port> or ws:<workspace>; fix ${n.op.name}.gpu`,
              );
            }
            buffers.push(b);
          }
          yield* backend.compile(l.kernel);
          launches.push({
            kernel: l.kernel,
            buffers,
            workgroups: l.workgroups,
            ...(l.dynamic ? { dynamic: l.dynamic } : {}),
            uniformBufs,
          });
        }
        steps.push({ kind: "gpu", node: s, launches });
      }
      return { steps, bufOfKey };
    });
    const built = yield* Effect.onError(build, () =>
      Effect.sync(() => owned.forEach((b) => backend.release(b))));
    const { steps, bufOfKey } = built;
    let released = false;

    const keyOf = (name: string): string => {
      if (name.includes(":")) {
        return name;
      }
      const o = graph.outputs.find((x) =>
        x.name === name
      );
      if (o) return refKey(o.ref);
      return refKey({ input: name });
    };
    const desc = (name: string): TensorDesc => {
      const d = plan.shapes.get(keyOf(name));
      if (!d) throw new RangeError(`graph "${graph.name}" has no tensor "${name}"`);
      return d;
    };
    const buffer = (name: string): DeviceBuffer => {
      const b = bufOfKey(keyOf(name));
      if (!b) throw new RangeError(`graph "${graph.name}" has no buffer for "${name}"`);
      return b;
    };
    const gone = () =>
      new BackendError({
        backend: backend.kind,
        reason: "released",
        message: `program of graph "${graph.name}" is released`,
        hint: "lower the graph again",
      });

    const readKey = (key: string) =>
      Effect.gen(function* () {
        const d = plan.shapes.get(key)!;
        const b = bufOfKey(key)!;
        const bytes = yield* backend.download(b, 0, Math.ceil(descBytes(d) / 4) * 4);
        const t = allocHost(d);
        new Uint8Array(t.data.buffer, t.data.byteOffset, descBytes(d)).set(bytes.subarray(0, descBytes(d)));
        return t;
      });
    /** A host-path input: the buffer's own memory on host backends, else a downloaded copy. */
    const hostIn = (key: string) =>
      Effect.gen(function* () {
        const d = plan.shapes.get(key)!;
        if (backend.view) return hostOver(d, yield* backend.view(bufOfKey(key)!));
        return yield* readKey(key);
      });

    const runHost = (s: number, ctx: CpuContext) =>
      Effect.gen(function* () {
        const n = graph.nodes[s];
        const host: Record<string, HostTensor> = {};
        for (const [port, r] of Object.entries(n.inputs)) host[port] = yield* hostIn(refKey(r));
        const out = yield* Effect.try({
          try: () => n.op.cpu(n.params, host as HostOf<Ports>, ctx) as Readonly<Record<string, HostTensor>>,
          // a RangeError is the operators' convention for a runtime scalar or an input value out of the range
          // the call allows (a `pos` past the cache, a token id past the vocabulary): the caller's input, as
          // the GPU path's `dynamic` errors; anything else is a bug of the reference
          catch: (e) =>
            e instanceof RangeError
              ? new ShapeError({
                message: `node ${n.name}(${n.op.name}): ${e.message}`,
                hint: "runtime scalars or input values out of the range this call allows",
              })
              : internal(
                backend,
                `node ${n.name}(${n.op.name}): cpu reference threw: ${
                  e instanceof Error ? e.message : String(e)
                }`,
                `a bug in ${n.op.name}.cpu, or inputs its infer() should have rejected`,
              ),
        });
        for (const port of Object.keys(n.op.outputs)) {
          const key = refKey({ node: n.name, port });
          const want = plan.shapes.get(key)!;
          const t = out[port];
          if (!t || t.data.byteLength < descBytes(want) || t.desc.shape.join() !== want.shape.join()) {
            return yield* new ShapeError({
              message: `node ${n.name}(${n.op.name}).${port}: cpu returned ${
                t ? `[${t.desc.shape}] (${t.data.byteLength} bytes)` : "nothing"
              }, infer said ${showType(want)} [${want.shape}]`,
              hint: `make ${n.op.name}.cpu and ${n.op.name}.infer agree`,
            });
          }
          const dst = bufOfKey(key)!;
          if (backend.view) {
            const mem = yield* backend.view(dst);
            if (t.data.buffer === mem && t.data.byteOffset === 0) continue; // written in place
          }
          yield* backend.upload(dst, uploadBytes(t));
        }
      });

    const program: Program<I, O> = {
      graph: g,
      backend,
      plan,
      scalars,
      bytes: owned.reduce((a, b) => a + b.bytes, 0),
      desc,
      buffer,
      write: (name, t) =>
        Effect.gen(function* () {
          if (released) return yield* gone();
          const input = graph.inputs.find((i) => i.name === name);
          if (!input || bind[name]) {
            return yield* new ShapeError({
              message: `"${name}" is no program-owned input of graph "${graph.name}"`,
              hint: bind[name]
                ? "write a bound input through the buffer you bound"
                : `inputs: ${graph.inputs.map((i) => i.name).join(", ")}`,
            });
          }
          const d = plan.shapes.get(refKey({ input: name }))!;
          if (t.desc.dtype !== d.dtype || t.desc.shape.join() !== d.shape.join()) {
            return yield* new ShapeError({
              message:
                `input "${name}" was lowered as ${d.dtype} [${d.shape}], got ${t.desc.dtype} [${t.desc.shape}]`,
              hint: "lower the graph again for other shapes",
            });
          }
          if (t.data.byteLength < descBytes(t.desc)) {
            return yield* new ShapeError({
              message:
                `input "${name}" holds ${t.data.byteLength} bytes, ${showType(t.desc)} [${t.desc.shape}] ` +
                `needs ${descBytes(t.desc)}`,
              hint: "build inputs with hostTensor(), which checks the size",
            });
          }
          yield* backend.upload(bufOfKey(refKey({ input: name }))!, uploadBytes(t));
        }),
      run: (opts = {}) =>
        Effect.gen(function* () {
          if (released) return yield* gone();
          const t0 = performance.now();
          const sc = opts.scalars ?? {};
          for (const name of scalars) {
            const v = sc[name];
            if (v === undefined || !Number.isInteger(v) || v < 0) {
              return yield* new ShapeError({
                message: `graph "${graph.name}" reads runtime scalar "${name}", given ${v}`,
                hint: `pass scalars: { ${scalars.map((s) => `${s}: <non-negative integer>`).join(", ")} }`,
              });
            }
          }
          const ctx: CpuContext = { scalars: sc, ...(backend.gemm ? { gemm: backend.gemm } : {}) };
          const timed = opts.timed === true && backend.features.has("timestamp-query");
          let pending: Launch[] = [];
          let gpuMs: number | undefined;
          let launchMs: readonly number[] = [];
          let launches = 0, dispatches = 0, hostNodes = 0;
          const flush = Effect.gen(function* () {
            if (pending.length === 0) return;
            const t: DispatchTiming | undefined = yield* backend.dispatch(pending, { timed });
            if (t) gpuMs = (gpuMs ?? 0) + t.totalMs;
            launchMs = t?.perLaunchMs ?? [];
            dispatches++;
            pending = [];
          });
          const nodes: NodeReport[] = [];
          for (const step of steps) {
            const n = graph.nodes[step.node];
            const ts = performance.now();
            if (step.kind === "host") {
              yield* flush;
              yield* Effect.yieldNow;
              yield* runHost(step.node, ctx);
              hostNodes++;
              if (opts.perNode) {
                yield* backend.sync();
                nodes.push({
                  node: n.name,
                  op: n.op.name,
                  path: plan.paths.get(n.name)!,
                  ms: performance.now() - ts,
                  launches: 0,
                });
              }
              continue;
            }
            const g0 = gpuMs ?? 0, l0 = launches;
            for (const l of step.launches) {
              if (l.dynamic) {
                const d = yield* Effect.try({
                  try: () => l.dynamic!(sc),
                  catch: (e) =>
                    new ShapeError({
                      message: `node ${n.name}: ${e instanceof Error ? e.message : String(e)}`,
                      hint: "runtime scalars out of the range the program was lowered for",
                    }),
                });
                for (const [ws, bytes] of Object.entries(d.uniforms ?? {})) {
                  const u = l.uniformBufs.get(ws);
                  if (!u || bytes.byteLength > u.bytes) {
                    return yield* internal(
                      backend,
                      `node ${n.name}: dynamic uniform "${ws}" is not a static uniform of that size`,
                      "name every dynamic uniform in the launch's uniforms too, with its full size",
                    );
                  }
                  // A uniform upload between launches of one command buffer would be seen by all of them.
                  yield* backend.upload(u, bytes);
                }
                if (d.workgroups) l.workgroups = d.workgroups;
              }
              if (l.workgroups.some((w) => w === 0)) continue;
              pending.push({ kernel: l.kernel, buffers: l.buffers, workgroups: l.workgroups });
              launches++;
            }
            if (opts.perNode) {
              yield* Effect.yieldNow;
              yield* flush;
              yield* backend.sync();
              nodes.push({
                node: n.name,
                op: n.op.name,
                path: "gpu",
                ms: performance.now() - ts,
                ...(gpuMs === undefined ? {} : { gpuMs: gpuMs - g0, launchMs }),
                launches: launches - l0,
              });
            }
          }
          yield* flush;
          if (opts.sync !== false) yield* backend.sync();
          return {
            ms: performance.now() - t0,
            ...(gpuMs === undefined ? {} : { gpuMs }),
            launches,
            dispatches,
            hostNodes,
            ...(opts.perNode ? { nodes } : {}),
          };
        }),
      read: (name) =>
        Effect.gen(function* () {
          if (released) return yield* gone();
          const key = keyOf(name);
          if (!plan.shapes.has(key) || !bufOfKey(key)) {
            return yield* internal(
              backend,
              `graph "${graph.name}" has no tensor "${name}"`,
              "read a graph output",
            );
          }
          return yield* readKey(key);
        }),
      release: () => {
        if (released) return;
        released = true;
        for (const b of owned.splice(0)) backend.release(b);
      },
    };
    return program;
  });

/** A program's input descriptions from host tensors (`write` them afterwards). */
export const descsOf = (inputs: Readonly<Record<string, HostTensor>>): Record<string, TensorDesc> =>
  Object.fromEntries(Object.entries(inputs).map(([k, t]) => [k, t.desc]));
