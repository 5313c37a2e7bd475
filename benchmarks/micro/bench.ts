/**
 * Micro benchmarks (tinybench) of every operator `@longctx/ops` exports, on each backend available here:
 * `cpu` (the operator's TypeScript reference, `op.cpu`), `webgpu` (Deno's built-in `navigator.gpu`) and
 * `wgpu` (wgpu-native through FFI) — the GPU backends run the operator's own `gpu` lowering.
 *
 *   deno task bench                                  # all operators, all backends, default small dims
 *   deno task bench --backends cpu,webgpu --filter sale --dims seq=512,heads=8 --time 300 --no-write
 *
 * Prints a table (median / mean / min / max latency in ms, relative margin of error, samples) and appends one
 * row per (operator, backend) to `benchmarks/results/micro.json` (`metric: op_latency_ms` = median of the
 * samples, with `flops`/`bytes` from the operator's cost model so RESULTS.md has a roofline note), plus
 * `op_gpu_ms` (median of timestamp-query device times) where the backend has timestamps. Then it re-renders
 * RESULTS.md (`--no-render` to skip).
 *
 * GPU tasks lower the operator once as a one-node program (`lower` of `@longctx/graph`: buffers allocated,
 * kernels compiled, inputs uploaded before timing) and time one run of it plus a device sync. Shapes are small on purpose: this machine has 2 cores and a
 * software Vulkan (lavapipe); the H200 numbers come from `benchmarks/device/suite.sh`.
 * @module
 */
import { Effect } from "effect";
import process from "node:process";
import { Bench } from "tinybench";
import type { Backend, DispatchTiming, Port, Ports } from "@longctx/graph";
import { graph, InputError, lower } from "@longctx/graph";
import { type FlagSpec, helpText, readFlags } from "../lib/args.ts";
import { failureLine } from "../../runtime/src/main.ts";
import { appendRows, type RowInput } from "../lib/results.ts";
import {
  DEFAULT_DIMS,
  discoverOperators,
  prepare,
  type Prepared,
  PrepareError,
  scalarsOf,
  shapeSummary,
} from "./discover.ts";
import { median } from "../charts/latency.ts";

/** Backends this file knows how to make, in order. */
export const BACKEND_KINDS = ["cpu", "webgpu", "wgpu"] as const;
type Kind = (typeof BACKEND_KINDS)[number];

interface Args {
  backends: Kind[];
  filter?: string;
  dims: Record<string, number>;
  timeMs: number;
  write: boolean;
  render: boolean;
}

const USAGE = "deno task bench [flags]   (see the module doc of benchmarks/micro/bench.ts)";
const FLAGS = {
  backends: { kind: "string", default: BACKEND_KINDS.join(","), help: "comma-separated backends to measure" },
  filter: { kind: "string", help: "only operators whose name contains this (default: all)" },
  dims: {
    kind: "string",
    help: "sizes as name=n pairs, e.g. seq=512,heads=8 (default: DEFAULT_DIMS of discover.ts)",
  },
  time: { kind: "number", default: 150, min: 20, help: "tinybench time per case, ms" },
  "no-write": { kind: "switch", help: "print only, append no rows" },
  "no-render": { kind: "switch", help: "do not re-render RESULTS.md" },
} as const satisfies Readonly<Record<string, FlagSpec>>;

/** The flags of `argv`; throws an `InputError` naming the flag for a bad one (`--help` prints the flags). */
const parseArgs = (argv: readonly string[]): Args => {
  const { values: v, help } = readFlags(FLAGS, argv);
  if (help) {
    console.log(helpText(USAGE, FLAGS));
    process.exit(0);
  }
  const backends = v.backends.split(",").map((b) => b.trim()).filter((b) => b.length > 0);
  for (const b of backends) {
    if (!(BACKEND_KINDS as readonly string[]).includes(b)) {
      throw new InputError({
        message: `unknown backend "${b}" in --backends`,
        hint: `use ${BACKEND_KINDS.join(", ")}`,
      });
    }
  }
  const dims: Record<string, number> = { ...DEFAULT_DIMS };
  if (v.dims !== undefined) {
    for (const kv of v.dims.split(",")) {
      const [k, n] = kv.split("=");
      if (!k || !/^\d+$/.test(n ?? "") || Number(n) < 1) {
        throw new InputError({
          message: `--dims "${kv}" is not name=n`,
          hint: "give sizes as name=n pairs, e.g. --dims seq=512,heads=8",
        });
      }
      dims[k] = Number(n);
    }
    if (v.dims.includes("seq=") && !v.dims.includes("kvSeq=")) dims.kvSeq = dims.seq;
  }
  return {
    backends: backends as Kind[],
    ...(v.filter === undefined ? {} : { filter: v.filter }),
    dims,
    timeMs: v.time,
    write: !v["no-write"],
    render: !v["no-render"],
  };
};

type Maker = (o?: Record<string, unknown>) => Effect.Effect<Backend, unknown>;

/** Make a backend of `kind` through `@longctx/runtime` (or its backend files until it exports them). */
const makeBackend = async (kind: Kind): Promise<Backend> => {
  const fn = { cpu: "makeCpuBackend", webgpu: "makeWebgpuBackend", wgpu: "makeWgpuBackend" }[kind];
  let make: Maker | undefined;
  try {
    make = (await import("@longctx/runtime") as Record<string, unknown>)[fn] as Maker | undefined;
  } catch { /* fall through to the file */ }
  if (!make) {
    const file = new URL(`../../runtime/src/backends/${kind}.ts`, import.meta.url).href;
    make = (await import(file) as Record<string, unknown>)[fn] as Maker | undefined;
  }
  if (!make) throw new Error(`no ${fn} in @longctx/runtime`);
  return await Effect.runPromise(make());
};

const msg = (e: unknown): string => {
  const m = e instanceof Error
    ? e.message
    : typeof e === "object" && e && "message" in e
    ? String(e.message)
    : String(e);
  return m.split("\n")[0].slice(0, 160);
};

/** A prepared GPU run: the operator lowered once as a one-node program; `step` runs it once and waits. */
interface GpuRun {
  step(timed: boolean): Promise<DispatchTiming | undefined>;
  release(): void;
}

const prepareGpu = async (b: Backend, p: Prepared): Promise<GpuRun> => {
  const g = graph(p.op.name);
  const ins: Record<string, Port> = {};
  for (const [port, t] of Object.entries(p.op.inputs as Ports)) ins[port] = g.input(port, t);
  const outs = g.add(p.op, p.params as never, ins as never) as Record<string, Port>;
  for (const [port, h] of Object.entries(outs)) g.output(port, h);
  const gr = await Effect.runPromise(g.build());
  const prog = await Effect.runPromise(lower(gr, b, p.descs));
  try {
    for (const [port, h] of Object.entries(p.inputs)) await Effect.runPromise(prog.write(port, h));
  } catch (e) {
    prog.release();
    throw e;
  }
  return {
    step: (timed) =>
      Effect.runPromise(
        Effect.map(
          prog.run({ timed, scalars: scalarsOf(p.op) }),
          (r) => (r.gpuMs === undefined ? undefined : { totalMs: r.gpuMs, perLaunchMs: [] }),
        ),
      ),
    release: () => prog.release(),
  };
};

interface Outcome {
  readonly op: string;
  readonly backend: Kind;
  readonly status: string;
  readonly rows: RowInput[];
  readonly table?: Record<string, string | number>;
}

const benchOne = async (b: Backend, kind: Kind, p: Prepared, timeMs: number): Promise<Outcome> => {
  const op = p.op;
  let gpu: GpuRun | undefined;
  let fn: () => unknown;
  if (kind === "cpu") {
    fn = () => op.cpu(p.params, p.inputs as never, { scalars: scalarsOf(op) });
  } else {
    if (!op.gpu) return { op: op.name, backend: kind, status: "skipped: no gpu lowering", rows: [] };
    try {
      op.gpu(p.params, p.descs as never, b.features);
    } catch (e) {
      return { op: op.name, backend: kind, status: `skipped: lowering: ${msg(e)}`, rows: [] };
    }
    try {
      gpu = await prepareGpu(b, p);
    } catch (e) {
      return { op: op.name, backend: kind, status: `failed: ${msg(e)}`, rows: [] };
    }
    const g = gpu;
    fn = () => g.step(false);
  }
  try {
    const bench = new Bench({
      time: timeMs,
      iterations: 5,
      warmupTime: Math.min(100, timeMs / 2),
      throws: true,
    });
    bench.add(`${op.name} ${kind}`, fn as () => void);
    await bench.run();
    const r = bench.tasks[0].result;
    if (r.state !== "completed") {
      return { op: op.name, backend: kind, status: `failed: ${r.state}`, rows: [] };
    }
    const lat = r.latency;
    const cost = op.cost(p.params, p.descs as never);
    const dtypes = [...new Set(Object.values(p.descs).map((d) => d.dtype))].join("+");
    const adapter = kind === "cpu" ? undefined : b.adapter;
    const base = {
      unit: "ms",
      backend: kind,
      op: op.name,
      dtype: dtypes,
      flops: cost.flops,
      bytes: cost.bytesRead + cost.bytesWritten,
      params: { shapes: shapeSummary(p) },
      note: `tinybench: ${lat.samplesCount} samples, median, rme ${lat.rme.toFixed(1)} %`,
      ...(adapter ? { gpu: adapter.name, driver: adapter.driver || adapter.api } : {}),
    };
    const rows: RowInput[] = [{ ...base, metric: "op_latency_ms", value: lat.p50, timeMs: lat.p50 }];
    let gpuMs: number | undefined;
    if (gpu && b.features.has("timestamp-query")) {
      const times: number[] = [];
      for (let i = 0; i < 5; i++) {
        const t = await gpu.step(true).catch(() => undefined);
        if (t) times.push(t.totalMs);
      }
      if (times.length) {
        gpuMs = median(times);
        rows.push({
          ...base,
          metric: "op_gpu_ms",
          value: gpuMs,
          timeMs: gpuMs,
          note: `timestamp queries: median of ${times.length} submissions`,
        });
      }
    }
    const f = (x: number) => Number(x.toPrecision(4));
    return {
      op: op.name,
      backend: kind,
      status: "ok",
      rows,
      table: {
        op: op.name,
        backend: kind,
        "median ms": f(lat.p50),
        "mean ms": f(lat.mean),
        "min ms": f(lat.min),
        "max ms": f(lat.max),
        "rme %": f(lat.rme),
        samples: lat.samplesCount,
        "gpu ms": gpuMs === undefined ? "" : f(gpuMs),
        "GFLOP/s": f(cost.flops / (lat.p50 * 1e-3) / 1e9),
        shapes: shapeSummary(p),
      },
    };
  } catch (e) {
    return { op: op.name, backend: kind, status: `failed: ${msg(e)}`, rows: [] };
  } finally {
    gpu?.release();
  }
};

/** Run the micro benchmarks; returns the outcomes (also printed, and written unless `--no-write`). */
export const main = async (argv: readonly string[]): Promise<Outcome[]> => {
  const args = parseArgs(argv);
  const { ops, error } = await discoverOperators();
  if (error) console.error(error);
  const chosen = ops.filter((o) => !args.filter || o.name.includes(args.filter));
  console.log(
    `operators (${chosen.length} of ${ops.length}): ${chosen.map((o) => o.name).join(", ") || "none"}`,
  );
  const prepared: Prepared[] = [];
  const outcomes: Outcome[] = [];
  for (const op of chosen) {
    try {
      prepared.push(prepare(op, ops, args.dims));
    } catch (e) {
      const why = e instanceof PrepareError ? e.message : `cpu producer threw: ${msg(e)}`;
      for (const k of args.backends) {
        outcomes.push({ op: op.name, backend: k, status: `skipped: ${why}`, rows: [] });
      }
    }
  }
  for (const kind of args.backends) {
    let b: Backend;
    try {
      b = await makeBackend(kind);
    } catch (e) {
      console.log(`backend ${kind}: not available (${msg(e)})`);
      for (const p of prepared) {
        outcomes.push({ op: p.op.name, backend: kind, status: `skipped: backend unavailable`, rows: [] });
      }
      continue;
    }
    console.log(`backend ${kind}: ${b.adapter.name}`);
    for (const p of prepared) outcomes.push(await benchOne(b, kind, p, args.timeMs));
    await Effect.runPromise(b.close());
  }
  const table = outcomes.filter((o) => o.table).map((o) => o.table!);
  if (table.length) console.table(table);
  for (const o of outcomes.filter((o) => o.status !== "ok")) {
    console.log(`${o.op} on ${o.backend}: ${o.status}`);
  }
  const rows = outcomes.flatMap((o) => o.rows);
  if (!args.render) process.env.LONGCTX_NO_RENDER = "1";
  if (args.write && rows.length) {
    await appendRows("micro", rows);
    console.log(
      `appended ${rows.length} rows to benchmarks/results/micro.json${
        args.render ? " (RESULTS.md re-rendered)" : ""
      }`,
    );
  }
  return outcomes;
};

if (import.meta.main) {
  try {
    await main(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof InputError)) throw e;
    process.stderr.write(`${failureLine(e)}\n`);
    process.exit(1);
  }
  // GPU runtimes may keep handles alive; the work is done.
  process.exit(0);
}
