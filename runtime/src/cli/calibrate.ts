/**
 * `calibrate`: time every operator of the planner's pipeline templates on the current backend across
 * context lengths and write a device profile (`plans/profiles/<name>.json` format).
 *
 * ```sh
 * deno task calibrate --backend cpu --name cpu --sizes 256,512,1k --out plans/profiles/cpu.json
 * deno task calibrate --backend wgpu --name lavapipe --model smollm2-135m --sizes 256,512,1k,2k
 * # on the H200 (lead):
 * bash .device/enter.sh deno run -A runtime/src/cli/calibrate.ts --backend wgpu --name h200 \
 *   --model llama-3.1-8b --sizes 8k,16k,32k,64k,128k --reps 5 --out plans/profiles/h200.json
 * ```
 *
 * For each registered technique (`TECHNIQUES` of `@longctx/ops`) with a prefill phase and each size, the
 * technique's stages run as one graph through the
 * executor (random f32 Q/K/V from a seeded generator: a speed input only), each node timed on its own
 * (GPU timestamps when the backend has them, else wall time with a sync per node), median over `--reps`
 * after warm-up runs (at least one, and at least `WARMUP_MS` of wall time). Each sample records the operator's
 * own cost model at that size; the technique's `densityScaled` stages are costed at the density its graph's
 * `density` output reports (`scaleCost`), as the planner does. A technique with a knob (SALE: threshold τ)
 * runs at each of the knob's values (its `knob.values`, or `--knob-values`) so its sparse kernels are sampled
 * over a range of densities; the sample's shape records the knob under its parameter name.
 * The fit `ms = a + b·flops + c·bytes` is stored with the samples.
 * @module
 */
import process from "node:process";
import { execFileSync } from "node:child_process";
import { Console, Effect, FileSystem } from "effect";
import { Command, Flag } from "effect/cli";
import {
  type Backend,
  type DescsOf,
  hostTensor,
  inferShapes,
  InputError,
  type Ports,
  refKey,
  run,
  seededNormals,
  type TensorDesc,
} from "@longctx/graph";
import {
  buildPipelineGraph,
  defaultOperators,
  type DeviceProfile,
  fitSamples,
  getModel,
  type KernelSample,
  PROFILE_VERSION,
  resolveTechnique,
  scaleCost,
} from "@longctx/plans";
import { kernels, TECHNIQUES } from "@longctx/ops";
import { selectBackend } from "../backends/select.ts";
import { parseTokens } from "./plan.ts";
import { runCli, withShownDefault } from "./main.ts";

/** Wall time (ms) of warm-up runs before each size's timed runs (at least one run). */
export const WARMUP_MS = 400;
/** Whether the first (5× longer) warm-up of this process ran: an idle GPU needs seconds of load to clock up. */
let warmedUp = false;

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** `LONGCTX_COMMIT` (set on machines whose checkout has no current `.git`), else git, else `unknown`. */
const gitCommit = (): string => {
  if (process.env.LONGCTX_COMMIT) return process.env.LONGCTX_COMMIT;
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain"], { encoding: "utf8" }).trim().length > 0;
    return dirty ? `${head}-dirty` : head;
  } catch {
    return "unknown";
  }
};

/** Options of one calibration. */
export interface CalibrateOptions {
  /** Head configuration (heads, kvHeads, headDim) from this registry model. */
  readonly model: string;
  /** Context lengths (tokens). */
  readonly sizes: readonly number[];
  /** Timed repetitions per size after one warm-up. */
  readonly reps: number;
  /**
   * Values of each technique's knob (SALE: threshold τ) to sample its sparse kernels over densities;
   * absent: the technique's own `knob.values`.
   */
  readonly knobValues?: readonly number[];
  /**
   * Run with this many KV heads (query heads keep the model's GQA ratio) instead of the model's: keeps
   * buffers under binding limits at long contexts; costs scale with heads, so the fit still applies.
   */
  readonly kvHeads?: number;
  /** Element type of Q/K/V (selects `*.f16` operators for f16). */
  readonly dtype: "f32" | "f16";
  /** Only these operators (names); empty: all. */
  readonly only: readonly string[];
  /** Stop starting new sizes after this many ms (partial profiles are still written). */
  readonly budgetMs?: number;
  /** Called after each measured graph (progress). */
  readonly log?: (line: string) => Effect.Effect<void>;
}

/**
 * Measure the registered techniques' operators on `backend`. Returns the kernel profiles (samples and fit).
 * Fails with the executor's errors (`BackendError`, `ShapeError`, …) or `PlanError`.
 */
export const calibrate = (backend: Backend, o: CalibrateOptions) =>
  Effect.gen(function* () {
    const spec = yield* getModel(o.model);
    const kvHeads = o.kvHeads ?? spec.kvHeads;
    const heads = o.kvHeads === undefined ? spec.heads : kvHeads * (spec.heads / spec.kvHeads);
    const model = { heads, kvHeads, headDim: spec.headDim };
    const operators = defaultOperators();
    const samples = new Map<string, KernelSample[]>();
    const gpuTiming = backend.features.has("timestamp-query");
    const started = performance.now();
    for (const t of TECHNIQUES.filter((t) => t.phases.includes("prefill"))) {
      const knob = t.knob;
      for (const value of knob ? o.knobValues ?? knob.values : [undefined]) {
        const r = yield* resolveTechnique(
          t,
          operators,
          "prefill",
          knob && value !== undefined ? { [knob.param]: value } : {},
          o.dtype,
        );
        if (o.only.length > 0 && !r.ops.some(({ op }) => o.only.includes(op.name))) continue;
        const g = yield* buildPipelineGraph(`calibrate.${t.name}`, r.ops, ["density", ...t.extraOutputs]);
        const measure = (T: number) =>
          Effect.gen(function* () {
            const tensor = (dims: readonly string[], shape: number[], seed: number) => {
              const x = seededNormals(shape.reduce((a, b) => a * b, 1), seed);
              return o.dtype === "f16"
                ? hostTensor("f16", dims, shape, kernels.toHalfArray(x))
                : hostTensor("f32", dims, shape, x);
            };
            const q = tensor(["heads", "seq", "headDim"], [model.heads, T, model.headDim], 1);
            const k = tensor(["kvHeads", "kvSeq", "headDim"], [model.kvHeads, T, model.headDim], 2);
            const v = tensor(["kvHeads", "kvSeq", "headDim"], [model.kvHeads, T, model.headDim], 3);
            const inputs = { q, k, v };
            const times = new Map<string, number[]>();
            let density = 1;
            // Warm-up: at least one run (kernel compilation), and runs until WARMUP_MS of wall time have passed,
            // so a GPU that idled while the host generated inputs is back at its working clocks (seen on the
            // H200: 8K–16K samples 3–10× slow right after input generation without it).
            const warm0 = performance.now();
            for (let rep = 0; rep <= o.reps; rep++) {
              // deno-lint-ignore no-explicit-any
              const res = yield* run(g, backend, inputs as any, { syncEachNode: true, gpuTiming });
              if (rep === 0) {
                const d = (res.outputs as Record<string, { data: Float32Array }>).density;
                if (d) density = d.data.reduce((a, b) => a + b, 0) / d.data.length;
                if (performance.now() - warm0 < (warmedUp ? WARMUP_MS : 5 * WARMUP_MS)) rep = -1;
                else warmedUp = true;
                continue; // warm-up
              }
              for (const n of res.report.nodes) {
                times.set(n.node, [...(times.get(n.node) ?? []), n.gpuMs ?? n.ms]);
              }
            }
            const shapes = yield* inferShapes(g, { q: q.desc, k: k.desc, v: v.desc });
            const got: [string, KernelSample][] = [];
            for (const n of g.nodes) {
              if (o.only.length > 0 && !o.only.includes(n.op.name)) continue;
              const descs: Record<string, TensorDesc> = {};
              for (const [port, ref] of Object.entries(n.inputs)) descs[port] = shapes.get(refKey(ref))!;
              const full = n.op.cost(n.params, descs as DescsOf<Ports>);
              const cost = t.densityScaled.includes(n.op.kind) ? scaleCost(full, density) : full;
              const ms = times.get(n.name) ?? [];
              if (ms.length === 0 || !(median(ms) > 0)) continue;
              got.push([n.op.name, {
                shape: {
                  heads: model.heads,
                  kvHeads: model.kvHeads,
                  headDim: model.headDim,
                  seq: T,
                  ...(t.sparse ? { density } : {}),
                  ...(knob ? { [knob.param]: value ?? 0 } : {}),
                },
                flops: cost.flops,
                bytes: cost.bytesRead + cost.bytesWritten,
                ms: median(ms),
                samplesMs: ms,
              }]);
            }
            const line = `${t.name}${knob && value !== undefined ? ` ${knob.name}=${value}` : ""} T=${T}` +
              (t.sparse ? ` density=${density.toFixed(3)}` : "") + ": " +
              g.nodes.map((n) => `${n.op.name} ${median(times.get(n.name) ?? [0]).toFixed(3)} ms`).join(", ");
            return { got, line };
          });
        for (const T of o.sizes) {
          if (o.budgetMs !== undefined && performance.now() - started > o.budgetMs) {
            if (o.log) yield* o.log(`${t.name} T=${T}: skipped (time budget spent)`);
            break;
          }
          const m = yield* Effect.result(measure(T));
          if (m._tag === "Failure") {
            // Larger sizes would fail the same way (memory, limits): report and go on to the next config.
            if (o.log) yield* o.log(`${t.name} T=${T}: failed, larger sizes skipped: ${m.failure.message}`);
            break;
          }
          for (const [name, sample] of m.success.got) {
            samples.set(name, [...(samples.get(name) ?? []), sample]);
          }
          if (o.log) yield* o.log(m.success.line);
        }
      }
    }
    return [...samples.entries()].map(([operator, s]) => ({ operator, samples: s, fit: fitSamples(s) }));
  });

const csv = (s: string) => s.split(",").map((x) => x.trim()).filter((x) => x.length > 0);

const flags = {
  backend: Flag.Literals("backend", ["auto", "wgpu", "webgpu", "cpu"]).pipe(
    withShownDefault<"auto" | "wgpu" | "webgpu" | "cpu">("the backend to measure", "auto"),
  ),
  dtype: Flag.Literals("dtype", ["f32", "f16"]).pipe(
    withShownDefault<"f32" | "f16">("element type of Q/K/V (f16 measures the *.f16 operators)", "f32"),
  ),
  name: Flag.String("name").pipe(
    Flag.withDescription("profile name (h200, lavapipe, cpu; default: the backend's kind)"),
    Flag.optional,
  ),
  model: Flag.String("model").pipe(withShownDefault("head configuration from this model", "smollm2-135m")),
  sizes: Flag.String("sizes").pipe(withShownDefault("context lengths, e.g. 256,512,1k", "256,512,1k")),
  reps: Flag.Int("reps").pipe(withShownDefault("timed repetitions per size (an integer ≥ 1)", 3)),
  knobValues: Flag.String("knob-values").pipe(
    Flag.withDescription(
      `values of each technique's knob, sampling sparse kernels over densities (default: the technique's own: ${
        TECHNIQUES.filter((t) => t.knob).map((t) => `${t.name} ${t.knob!.name} ${t.knob!.values.join(",")}`)
          .join("; ")
      })`,
    ),
    Flag.optional,
  ),
  thresholds: Flag.String("thresholds").pipe(
    Flag.withDescription("the same as --knob-values (the name from when SALE's τ was the only knob)"),
    Flag.optional,
  ),
  budgetS: Flag.Finite("budget-s").pipe(
    Flag.withDescription("stop starting new sizes after this many seconds (default: no limit)"),
    Flag.optional,
  ),
  kvHeads: Flag.Int("kv-heads").pipe(
    Flag.withDescription("measure with this many KV heads (GQA ratio of --model kept; default: --model's)"),
    Flag.optional,
  ),
  ops: Flag.String("ops").pipe(
    withShownDefault("only these operators (comma-separated)", "", "every operator"),
  ),
  out: Flag.String("out").pipe(
    Flag.withDescription("profile JSON to write (default: print it to stdout)"),
    Flag.optional,
  ),
};

/** The `calibrate` command. */
export const calibrateCommand = Command.make("calibrate", flags, (i) =>
  Effect.gen(function* () {
    const sizes = yield* Effect.forEach(csv(i.sizes), (s) => parseTokens(s, "sizes"));
    if (i.knobValues._tag === "Some" && i.thresholds._tag === "Some") {
      return yield* new InputError({
        message: "--knob-values and --thresholds both given",
        hint: "give one (--thresholds is the older name of --knob-values)",
      });
    }
    const knobFlag = i.knobValues._tag === "Some" ? i.knobValues : i.thresholds;
    const knobValues = knobFlag._tag === "Some" ? csv(knobFlag.value).map(Number) : undefined;
    if (knobValues && (knobValues.length === 0 || knobValues.some((x) => !Number.isFinite(x)))) {
      return yield* new InputError({
        message: `--knob-values "${knobFlag._tag === "Some" ? knobFlag.value : ""}" is not a list of numbers`,
        hint: "comma-separated numbers, e.g. 0,0.1,0.3,1",
      });
    }
    if (!(i.reps >= 1)) {
      return yield* new InputError({ message: `--reps ${i.reps} is below 1`, hint: "give --reps 1 or more" });
    }
    if (i.kvHeads._tag === "Some" && !(i.kvHeads.value >= 1)) {
      return yield* new InputError({
        message: `--kv-heads ${i.kvHeads.value} is below 1`,
        hint: "give --kv-heads 1 or more",
      });
    }
    if (i.budgetS._tag === "Some" && !(i.budgetS.value > 0)) {
      return yield* new InputError({
        message: `--budget-s ${i.budgetS.value} is not positive`,
        hint: "give a number of seconds above 0, or leave --budget-s out",
      });
    }
    const sel = yield* selectBackend({ backend: i.backend });
    yield* Console.error(`backend: ${sel.report}`);
    const backend = sel.backend;
    const kernels = yield* calibrate(backend, {
      model: i.model,
      sizes,
      reps: i.reps,
      ...(knobValues ? { knobValues } : {}),
      dtype: i.dtype,
      ...(i.kvHeads._tag === "Some" ? { kvHeads: i.kvHeads.value } : {}),
      ...(i.budgetS._tag === "Some" ? { budgetMs: i.budgetS.value * 1000 } : {}),
      only: csv(i.ops),
      log: (l) => Console.error(l),
    }).pipe(Effect.ensuring(backend.close()));
    const profile: DeviceProfile = {
      version: PROFILE_VERSION,
      name: i.name._tag === "Some" ? i.name.value : backend.kind,
      device: {
        adapter: backend.adapter.name,
        backend: backend.kind,
        api: backend.adapter.api,
        driver: backend.adapter.driver,
      },
      date: new Date().toISOString(),
      commit: gitCommit(),
      command: ["calibrate", ...process.argv.slice(2)].join(" "),
      kernels,
    };
    const text = JSON.stringify(profile, null, 2) + "\n";
    for (const k of kernels) {
      yield* Console.error(
        `${k.operator}: ms = ${k.fit.a.toPrecision(3)} + ${k.fit.b.toPrecision(3)}·flops + ${
          k.fit.c.toPrecision(3)
        }·bytes` +
          ` (max rel. error ${(k.fit.maxRelError * 100).toFixed(1)} % over ${k.samples.length} samples)`,
      );
    }
    if (i.out._tag === "Some") {
      const fs = yield* FileSystem.FileSystem;
      yield* fs.writeFileString(i.out.value, text);
      yield* Console.error(`wrote ${i.out.value}`);
    } else yield* Console.log(text);
  })).pipe(Command.withDescription("Measure operator latencies on this device and write a device profile"));

if (import.meta.main) runCli(calibrateCommand, { version: "0.1.0" });
