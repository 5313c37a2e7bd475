/**
 * The executor: runs a validated `Graph` on any `Backend`.
 *
 * 1. **Plan** (`planRun`): shape inference over the graph, the path of each node, and a buffer plan
 *    (`planBuffers`) over tensor lifetimes in topological order, with reuse.
 * 2. **Run** (`run`): inside one Effect `Scope`, allocate the planned buffers (each with
 *    `Effect.acquireRelease`, so every buffer is released on success, failure and interruption), upload the
 *    inputs, run the nodes in order, download the outputs.
 *
 * A node runs on one of two paths:
 * - `gpu`: the operator's `gpu` lowering — workspaces from the plan, uniforms uploaded into their
 *   workspace before the launch, launches dispatched in order with bindings `in:<port>`, `out:<port>`,
 *   `ws:<name>`. Used on GPU backends (`lowering: "auto"`), or on any backend with `lowering: "prefer"`
 *   (the cpu backend then runs the kernels' `Kernel.cpu` bodies).
 * - host: inputs are downloaded, the operator's `cpu` reference runs on host tensors, outputs are uploaded.
 *   On the cpu backend this is the normal path (upload/download are memcpy); on a GPU backend it is the
 *   fallback for an operator without a `gpu` lowering (`cpu-fallback` in the report).
 *
 * Buffers are shared between tensors (see `memory.ts`), so a buffer can be larger than the tensor bound to
 * it: kernels must take sizes from their uniforms or constants, never from WGSL `arrayLength`. Buffers
 * must be usable as storage, uniform, and copy source/destination.
 * @module
 */
import { Effect } from "effect";
import type { Backend } from "./backend.ts";
import { BackendError, type LongctxError, ShapeError } from "./errors.ts";
import { type Graph, type GraphNode, inferShapes, refKey, type ShapeMap, showType } from "./graph.ts";
import { type Lifetime, type MemoryPlan, planBuffers } from "./memory.ts";
import type { Cost, DescsOf, GpuLowering, HostOf, Ports, Scalars } from "./operator.ts";
import { descsOf, lower } from "./program.ts";
import { descBytes, type HostTensor, type TensorDesc } from "./tensor.ts";

/** How a node runs: its gpu lowering, its cpu reference on the cpu backend, or the cpu fallback on a GPU. */
export type NodePath = "gpu" | "cpu" | "cpu-fallback";

/** Executor options. */
export interface RunOptions {
  /**
   * When to use an operator's `gpu` lowering: `"auto"` (default) on GPU backends when the operator has one;
   * `"prefer"` whenever it has one, also on the cpu backend (which runs the kernels' `Kernel.cpu` bodies);
   * `"never"`: always the host path.
   */
  readonly lowering?: "auto" | "prefer" | "never";
  /** Wait for the device after each node so per-node wall times include its device work (default true). */
  readonly syncEachNode?: boolean;
  /** Ask the backend for per-launch timestamps on `gpu` nodes (`gpuMs` in the report); default false. */
  readonly gpuTiming?: boolean;
  /** Runtime scalars the graph's operators read (see `Operator.scalars`), e.g. `{ pos: 17 }`. */
  readonly scalars?: Scalars;
}

/** Options of {@link planRun}. */
export interface PlanOptions {
  /** As {@link RunOptions.lowering}. */
  readonly lowering?: RunOptions["lowering"];
  /** Graph inputs bound to caller-owned buffers: no buffer is planned for them. */
  readonly bound?: ReadonlySet<string>;
  /** Tensor keys (`refKey`) to keep alive to the end besides the graph outputs. */
  readonly keepAlive?: readonly string[];
}

/** What planning decided. */
export interface RunPlan {
  /** Description of every tensor, by `refKey`. */
  readonly shapes: ShapeMap;
  /** Path per node name. */
  readonly paths: ReadonlyMap<string, NodePath>;
  /** GPU lowering per node on the `gpu` path. */
  readonly lowerings: ReadonlyMap<string, GpuLowering>;
  /**
   * Buffer plan over tensors and workspaces (`ws:<node>:<name>`); an in-place output's key maps to its
   * input's buffer; bound inputs (and outputs aliasing them) have no entry.
   */
  readonly memory: MemoryPlan;
  /** In-place output key → the key whose storage it is (a graph input or an earlier node output). */
  readonly canonical: ReadonlyMap<string, string>;
}

/** Timing of one node. */
export interface NodeReport {
  /** Node name. */
  readonly node: string;
  /** Operator name. */
  readonly op: string;
  /**
   * How it ran: `gpu`, `cpu` (its reference on the cpu backend) or `cpu-fallback` (reference on a GPU
   * backend).
   */
  readonly path: NodePath;
  /** Wall time of the node in ms (host path: download + cpu + upload; gpu: submit, plus device work when synced). */
  readonly ms: number;
  /** Device time in ms from timestamp queries (gpu path with `gpuTiming`). */
  readonly gpuMs?: number;
  /** Kernel launches issued (0 on the host path). */
  readonly launches: number;
  /** Device time of each launch in ms, in order (a program's per-node run with timestamps). */
  readonly launchMs?: readonly number[];
}

/** What a run did. */
export interface RunReport {
  /** Graph name. */
  readonly graph: string;
  /** The backend's adapter name. */
  readonly backend: string;
  /** One report per node, in run order. */
  readonly nodes: readonly NodeReport[];
  /** Wall time of the whole run in ms (allocation, uploads, nodes, downloads, release). */
  readonly totalMs: number;
  /** Buffer plan totals in bytes. */
  readonly memory: {
    readonly buffers: number;
    readonly peakBytes: number;
    readonly naiveBytes: number;
    readonly lowerBoundBytes: number;
  };
}

/** Outputs (host tensors, by output name) and the report. */
export interface RunResult<O extends Ports> {
  /** Host tensors by output name. */
  readonly outputs: HostOf<O>;
  /** Timing and memory of the run. */
  readonly report: RunReport;
}

const pathOf = (n: GraphNode, backend: Pick<Backend, "kind">, lowering: RunOptions["lowering"]): NodePath => {
  const host: NodePath = backend.kind === "cpu" ? "cpu" : "cpu-fallback";
  if (!n.op.gpu || lowering === "never") return host;
  if (lowering === "prefer") return "gpu";
  return backend.kind === "cpu" ? "cpu" : "gpu";
};

/**
 * Plan a run without touching a device: shapes (`inferShapes`), each node's path, GPU lowerings and the
 * buffer plan. `inputs` are the graph inputs' descriptions ([dims] sizes in elements).
 *
 * Fails with `ShapeError` (an input does not fit, or an operator's `infer` rejects its inputs) or
 * `BackendError` ("unsupported": an operator's `gpu` lowering refused these shapes or device features).
 */
export const planRun = (
  g: Graph,
  backend: Pick<Backend, "kind" | "features">,
  inputs: Readonly<Record<string, TensorDesc>>,
  options: PlanOptions = {},
): Effect.Effect<RunPlan, ShapeError | BackendError> =>
  Effect.gen(function* () {
    const shapes = yield* inferShapes(g, inputs);
    const bound = options.bound ?? new Set<string>();
    // In-place outputs (Operator.aliases) share their input's storage: every key resolves to a canonical one.
    const canon = new Map<string, string>();
    const canonical = (key: string): string => canon.get(key) ?? key;
    for (const n of g.nodes) {
      for (const [out, inp] of Object.entries(n.op.aliases ?? {})) {
        const r = n.inputs[inp];
        if (!r || !(out in n.op.outputs)) {
          return yield* new ShapeError({
            message: `node ${n.name}(${n.op.name}): alias ${out} → ${inp} names no wired input or no output`,
            hint: `fix ${n.op.name}.aliases: output port → input port`,
          });
        }
        const a = shapes.get(refKey(r))!, b = shapes.get(refKey({ node: n.name, port: out }))!;
        if (descBytes(a) !== descBytes(b)) {
          return yield* new ShapeError({
            message: `node ${n.name}(${n.op.name}): in-place output ${out} (${descBytes(b)} bytes) differs ` +
              `from its input ${inp} (${descBytes(a)} bytes)`,
            hint: `an aliased output must have its input's size; fix ${n.op.name}.infer`,
          });
        }
        canon.set(refKey({ node: n.name, port: out }), canonical(refKey(r)));
      }
    }
    const last = g.nodes.length;
    const end = new Map<string, number>();
    const use = (key: string, step: number) => {
      const k = canonical(key);
      end.set(k, Math.max(end.get(k) ?? step, step));
    };
    g.nodes.forEach((n, s) => Object.values(n.inputs).forEach((r) => use(refKey(r), s)));
    for (const o of g.outputs) use(refKey(o.ref), last);
    for (const key of options.keepAlive ?? []) use(key, last);
    const lifetimes: Lifetime[] = [];
    // A program-owned input lives through the whole run: a program run again reads what was written into it
    // (`Program.write`), so no later tensor may take its memory.
    for (const i of g.inputs) {
      if (bound.has(i.name)) continue;
      const key = refKey({ input: i.name });
      lifetimes.push({ key, bytes: descBytes(shapes.get(key)!), start: -1, end: last });
    }
    const paths = new Map<string, NodePath>();
    const lowerings = new Map<string, GpuLowering>();
    for (const [s, n] of g.nodes.entries()) {
      const path = pathOf(n, backend, options.lowering);
      paths.set(n.name, path);
      for (const port of Object.keys(n.op.outputs)) {
        const key = refKey({ node: n.name, port });
        if (canon.has(key)) continue;
        lifetimes.push({ key, bytes: descBytes(shapes.get(key)!), start: s, end: end.get(key) ?? s });
      }
      if (path === "gpu") {
        const descs: Record<string, TensorDesc> = {};
        for (const [port, r] of Object.entries(n.inputs)) descs[port] = shapes.get(refKey(r))!;
        const low = yield* Effect.try({
          try: () => n.op.gpu!(n.params, descs as DescsOf<Ports>, backend.features),
          catch: (e) =>
            new BackendError({
              backend: backend.kind,
              reason: "unsupported",
              message: `node ${n.name}(${n.op.name}): no gpu lowering for these inputs on this device: ${
                e instanceof Error ? e.message : String(e)
              }`,
              hint:
                'run with lowering: "never" (cpu path), or use a device with the features the operator needs',
            }),
        });
        lowerings.set(n.name, low);
        for (const [ws, bytes] of Object.entries(low.workspaces)) {
          lifetimes.push({ key: `ws:${n.name}:${ws}`, bytes, start: s, end: s });
        }
      }
    }
    const memory = planBuffers(lifetimes);
    const assign = new Map(memory.assign);
    for (const [k, c] of canon) if (assign.has(c)) assign.set(k, assign.get(c)!);
    return { shapes, paths, lowerings, memory: { ...memory, assign }, canonical: new Map(canon) };
  });

/** Cost of one node and of the whole graph (see `Cost`: FLOPs, bytes read / written, workspace bytes). */
export interface GraphCost {
  /** Each node's cost, in topological order. */
  readonly nodes: readonly { readonly node: string; readonly op: string; readonly cost: Cost }[];
  /** Sums over nodes (workspace: the largest single node's, since nodes run one at a time). */
  readonly total: Cost;
}

/**
 * The operators' cost models over a graph for given input descriptions ([dims] sizes in elements): per
 * node and summed. Fails with `ShapeError` like `inferShapes`.
 */
export const graphCost = (
  g: Graph,
  inputs: Readonly<Record<string, TensorDesc>>,
): Effect.Effect<GraphCost, ShapeError> =>
  Effect.map(inferShapes(g, inputs), (shapes) => {
    const nodes = g.nodes.map((n) => {
      const descs: Record<string, TensorDesc> = {};
      for (const [port, r] of Object.entries(n.inputs)) descs[port] = shapes.get(refKey(r))!;
      return { node: n.name, op: n.op.name, cost: n.op.cost(n.params, descs as DescsOf<Ports>) };
    });
    const total: Cost = {
      flops: nodes.reduce((a, n) => a + n.cost.flops, 0),
      bytesRead: nodes.reduce((a, n) => a + n.cost.bytesRead, 0),
      bytesWritten: nodes.reduce((a, n) => a + n.cost.bytesWritten, 0),
      workspaceBytes: Math.max(0, ...nodes.map((n) => n.cost.workspaceBytes)),
    };
    return { nodes, total };
  });

/**
 * Run graph `g` on `backend` with host `inputs` (one `HostTensor` per graph input, by name); returns the
 * outputs as host tensors, by output name, and a report (per-node wall time in ms, paths, buffer plan in
 * bytes). Every buffer it allocates is released before the Effect completes, whether it succeeds, fails
 * or is interrupted (interruption is observed between nodes and inside the backend's own Effects).
 *
 * Fails with `ShapeError` (inputs do not fit the graph, or an operator's cpu reference returned a tensor
 * that does not match its inferred description), `BackendError` (allocation, transfer, dispatch, or an
 * operator's cpu reference threw) or `KernelCompileError`.
 */
export const run = <I extends Ports, O extends Ports>(
  g: Graph<I, O>,
  backend: Backend,
  inputs: HostOf<I>,
  options: RunOptions = {},
): Effect.Effect<RunResult<O>, LongctxError> =>
  Effect.gen(function* () {
    const t0 = performance.now();
    const hostIn = inputs as Readonly<Record<string, HostTensor>>;
    return yield* Effect.acquireUseRelease(
      lower(g, backend, descsOf(hostIn), options.lowering ? { lowering: options.lowering } : {}),
      (p) =>
        Effect.gen(function* () {
          for (const i of g.inputs) {
            const t = hostIn[i.name];
            if (t.data.byteLength < descBytes(t.desc)) {
              return yield* new ShapeError({
                message: `input "${i.name}" holds ${t.data.byteLength} bytes, ${
                  showType(t.desc)
                } [${t.desc.shape}] needs ${descBytes(t.desc)}`,
                hint: "build inputs with hostTensor(), which checks the size",
              });
            }
            yield* p.write(i.name, t);
          }
          const r = yield* p.run({
            perNode: options.syncEachNode !== false,
            timed: options.gpuTiming === true,
            ...(options.scalars ? { scalars: options.scalars } : {}),
          });
          const outputs: Record<string, HostTensor> = {};
          for (const o of g.outputs) outputs[o.name] = yield* p.read(o.name);
          const m = p.plan.memory;
          const report: RunReport = {
            graph: g.name,
            backend: backend.adapter.name,
            nodes: r.nodes ?? [],
            totalMs: performance.now() - t0,
            memory: {
              buffers: m.buffers.length,
              peakBytes: m.peakBytes,
              naiveBytes: m.naiveBytes,
              lowerBoundBytes: m.lowerBoundBytes,
            },
          };
          return { outputs: outputs as HostOf<O>, report };
        }),
      (p) => Effect.sync(() => p.release()),
    );
  });
