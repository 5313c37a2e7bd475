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
 * # decode (one query row against a cache of each size: dense.attn, squeezed.lookup → squeezed.attend, …)
 * bash .device/enter.sh deno run -A runtime/src/cli/calibrate.ts --backend wgpu --phase decode --name h200 \
 *   --model llama-3.1-8b --sizes 32k,64k,128k --reps 3 --ops dense.attn,squeezed.lookup,squeezed.attend
 * ```
 *
 * For each registered technique (`TECHNIQUES` of `@longctx/ops`) with a phase of `--phase` (default prefill)
 * and each size, one layer of the technique runs as one graph through the executor — the graph the planner
 * costs (`techniqueLayerGraph` of `@longctx/plans`): its stages, or in decode a cache-decode technique's own
 * decode graph (Squeezed Attention: `squeezed.lookup → squeezed.attend`; TokenSelect: select → compact →
 * attention), with the runtime position `pos = kvSeq − 1` where an operator reads it. Inputs: random Q/K/V
 * (and RoPE tables) from a seeded generator, a speed input only, and the technique's own speed inputs for the
 * rest (`graphInputs.speed`: Squeezed Attention's index of runs of consecutive keys, τ the `percentile`
 * quantile of the call's per-key scores). Each node is timed on its own
 * (GPU timestamps when the backend has them, else wall time with a sync per node), median over `--reps`
 * after warm-up runs (at least one, and at least `WARMUP_MS` of wall time). Each sample records the operator's
 * own cost model at that size; the technique's `densityScaled` stages are costed at the density its graph's
 * `density` output reports (`scaleCost`), as the planner does. A technique with a knob (SALE: threshold τ)
 * runs at each of the knob's values (its `knob.values`, or `--knob-values`) so its sparse kernels are sampled
 * over a range of densities; the sample's shape records the knob under its parameter name.
 * The fit `ms = a + b·flops + c·bytes` is stored with the samples; decode kernels carry `phase: "decode"` (the
 * planner predicts decode from them: `dense.attn` runs split-KV kernels there, not its prefill tiles).
 * @module
 */
import process from "node:process";
import { execFileSync } from "node:child_process";
import { Console, Effect, FileSystem } from "effect";
import { Command, Flag } from "effect/cli";
import {
  type AttnDims,
  type Backend,
  type DescsOf,
  type HostTensor,
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
  defaultOperators,
  type DeviceProfile,
  fitSamples,
  getModel,
  type KernelSample,
  PROFILE_VERSION,
  scaleCost,
  techniqueLayerGraph,
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
  /**
   * The phase to measure (default prefill): decode runs one query row against a cache of each size, through
   * the techniques with a decode phase (a cache-decode technique's own decode graph, at its speed inputs).
   */
  readonly phase?: "prefill" | "decode";
  /** Only these operators (names); empty: all. */
  readonly only: readonly string[];
  /** Stop starting new sizes after this many ms (partial profiles are still written). */
  readonly budgetMs?: number;
  /** Called after each measured graph (progress). */
  readonly log?: (line: string) => Effect.Effect<void>;
}

/**
 * Measure the registered techniques' operators on `backend` in `o.phase`: each technique running that phase
 * as one layer's graph (`techniqueLayerGraph` of `@longctx/plans`, the graph the planner costs: its stages, or a
 * cache-decode technique's own decode graph), per knob value and size. Returns the kernel profiles (samples and
 * fit; decode ones tagged `phase: "decode"`). Fails with the executor's errors (`BackendError`, `ShapeError`,
 * …), `PlanError`, `TechniqueError` (a technique's speed inputs) or `InputError` (an input calibrate cannot make).
 */
export const calibrate = (backend: Backend, o: CalibrateOptions) =>
  Effect.gen(function* () {
    const spec = yield* getModel(o.model);
    const kvHeads = o.kvHeads ?? spec.kvHeads;
    const heads = o.kvHeads === undefined ? spec.heads : kvHeads * (spec.heads / spec.kvHeads);
    const model = { heads, kvHeads, headDim: spec.headDim };
    const phase = o.phase ?? "prefill";
    const dimsAt = (T: number): AttnDims => ({ ...model, seq: phase === "prefill" ? T : 1, kvSeq: T });
    const operators = defaultOperators();
    const samples = new Map<string, KernelSample[]>();
    const gpuTiming = backend.features.has("timestamp-query");
    const started = performance.now();
    // seeded random inputs, made once per element type, shape and seed (every knob value of every technique
    // reads the same data; the dims' names are the graph's: `kvSeq` for dense, `capacity` for a cache graph)
    const made = new Map<string, HostTensor>();
    const random = (d: TensorDesc, seed: number): HostTensor => {
      const key = `${d.dtype}:${d.shape.join(",")}:${seed}`;
      let h = made.get(key);
      if (!h) {
        const x = seededNormals(d.shape.reduce((a, b) => a * b, 1), seed);
        h = d.dtype === "f16"
          ? hostTensor("f16", d.dims, d.shape, kernels.toHalfArray(x))
          : hostTensor("f32", d.dims, d.shape, x);
        made.set(key, h);
      }
      return { desc: { ...h.desc, dims: d.dims }, data: h.data };
    };
    const wanted = (names: readonly string[]) => o.only.length === 0 || names.some((n) => o.only.includes(n));
    for (const t of TECHNIQUES.filter((t) => t.phases.includes(phase))) {
      const knob = t.knob;
      for (const value of knob ? o.knobValues ?? knob.values : [undefined]) {
        const overrides = knob && value !== undefined ? { [knob.param]: value } : {};
        const label = `${t.name}${knob && value !== undefined ? ` ${knob.name}=${value}` : ""}`;
        const first = yield* Effect.result(
          techniqueLayerGraph(t, operators, phase, dimsAt(o.sizes[0]), overrides, o.dtype),
        );
        if (first._tag === "Failure") {
          // e.g. a technique that runs on the f32 KV cache only, asked for f16
          if (o.log && wanted(t.operators.map((op) => op.name))) {
            yield* o.log(`${label}: skipped: ${first.failure.message}`);
          }
          continue;
        }
        if (!wanted(first.success.resolved.ops.map(({ op }) => op.name))) continue;
        const measure = (T: number) =>
          Effect.gen(function* () {
            const dims = dimsAt(T);
            const lg = yield* techniqueLayerGraph(t, operators, phase, dims, overrides, o.dtype);
            const g = lg.graph;
            const inputs: Record<string, HostTensor> = {};
            for (const [name, seed] of [["q", 1], ["k", 2], ["v", 3]] as const) {
              if (lg.inputs[name]) inputs[name] = random(lg.inputs[name], seed);
            }
            if (t.graphInputs?.speed && inputs.q && inputs.k) {
              Object.assign(
                inputs,
                yield* t.graphInputs.speed(lg.resolved.params, dims, { q: inputs.q, k: inputs.k }),
              );
            }
            let seed = 4;
            for (const [name, d] of Object.entries(lg.inputs)) {
              if (inputs[name]) continue;
              if (d.dtype !== "f32" && d.dtype !== "f16") {
                return yield* new InputError({
                  message: `calibrate cannot make input "${name}" (${d.dtype} [${d.dims}]) of ${g.name}`,
                  hint: `give technique "${t.name}" graphInputs.speed for it`,
                });
              }
              inputs[name] = random(d, seed++);
            }
            // a cache attention reads the runtime position of the call: the cache holds pos + seq rows
            const names = [...new Set(g.nodes.flatMap((n) => n.op.scalars ?? []))];
            const odd = names.find((n) => n !== "pos");
            if (odd !== undefined) {
              return yield* new InputError({
                message: `calibrate does not know runtime scalar "${odd}" of ${g.name}`,
                hint: "calibrate sets pos (kvSeq − seq) only",
              });
            }
            const scalars = names.length > 0 ? { pos: dims.kvSeq - dims.seq } : undefined;
            const times = new Map<string, number[]>();
            let density: number | undefined;
            // Warm-up: at least one run (kernel compilation), and runs until WARMUP_MS of wall time have passed,
            // so a GPU that idled while the host generated inputs is back at its working clocks (seen on the
            // H200: 8K–16K samples 3–10× slow right after input generation without it).
            const warm0 = performance.now();
            for (let rep = 0; rep <= o.reps; rep++) {
              // deno-lint-ignore no-explicit-any
              const res = yield* run(g, backend, inputs as any, {
                syncEachNode: true,
                gpuTiming,
                ...(scalars ? { scalars } : {}),
              });
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
            // a technique without a density output: its density by construction at this shape, else all kept
            const dens = density ??
              (t.constructedDensity ? t.constructedDensity(lg.resolved.params, dims) : 1);
            const shapes = yield* inferShapes(g, lg.inputs);
            const got: [string, KernelSample][] = [];
            for (const n of g.nodes) {
              if (o.only.length > 0 && !o.only.includes(n.op.name)) continue;
              const descs: Record<string, TensorDesc> = {};
              for (const [port, ref] of Object.entries(n.inputs)) descs[port] = shapes.get(refKey(ref))!;
              const full = n.op.cost(n.params, descs as DescsOf<Ports>);
              const cost = t.densityScaled.includes(n.op.kind) ? scaleCost(full, dens) : full;
              const ms = times.get(n.name) ?? [];
              if (ms.length === 0 || !(median(ms) > 0)) continue;
              got.push([n.op.name, {
                shape: {
                  heads: model.heads,
                  kvHeads: model.kvHeads,
                  headDim: model.headDim,
                  seq: dims.seq,
                  ...(phase === "decode" ? { kvSeq: dims.kvSeq } : {}),
                  ...(t.sparse ? { density: dens } : {}),
                  ...(knob ? { [knob.param]: value ?? 0 } : {}),
                },
                flops: cost.flops,
                bytes: cost.bytesRead + cost.bytesWritten,
                ms: median(ms),
                samplesMs: ms,
              }]);
            }
            const line = `${label} T=${T}${phase === "decode" ? " decode" : ""}` +
              (t.sparse ? ` density=${dens.toFixed(3)}` : "") + ": " +
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
    return [...samples.entries()].map(([operator, s]) => ({
      operator,
      ...(phase === "decode" ? { phase } : {}),
      samples: s,
      fit: fitSamples(s),
    }));
  });

const csv = (s: string) => s.split(",").map((x) => x.trim()).filter((x) => x.length > 0);

const flags = {
  backend: Flag.Literals("backend", ["auto", "wgpu", "webgpu", "cpu"]).pipe(
    withShownDefault<"auto" | "wgpu" | "webgpu" | "cpu">("the backend to measure", "auto"),
  ),
  dtype: Flag.Literals("dtype", ["f32", "f16"]).pipe(
    withShownDefault<"f32" | "f16">("element type of Q/K/V (f16 measures the *.f16 operators)", "f32"),
  ),
  phase: Flag.Literals("phase", ["prefill", "decode"]).pipe(
    withShownDefault<"prefill" | "decode">(
      "prefill (seq = size) or decode (one query row against a cache of each size; techniques with a decode phase)",
      "prefill",
    ),
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
      phase: i.phase,
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
        `${k.operator}${k.phase === "decode" ? " (decode)" : ""}: ms = ${k.fit.a.toPrecision(3)} + ${
          k.fit.b.toPrecision(3)
        }·flops + ${k.fit.c.toPrecision(3)}·bytes` +
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
