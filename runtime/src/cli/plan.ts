/**
 * `plan`: print the attention pipeline the planner picks for a model, context length and device.
 *
 * ```sh
 * deno task plan --model llama-3.1-8b --context 128k [--phase decode] [--pipeline sale] [--json] [--device h200]
 *                [--profile my-device.json] [--densities densities.json] [--latency-ms 50]
 *                [--memory 80GiB] [--exact] [--out plan.json]
 * deno task plan --validate plan.json      # check a plan file against the versioned schema
 * deno task plan --list                    # models, device profiles and registered techniques
 * ```
 * `--pipeline <name>` plans only that registered technique (`TECHNIQUES` of `@longctx/ops`), against the
 * exact baseline when it is sparse; a phase it delegates (SALE's decode) is planned as the delegate.
 * Runs under Deno and Bun. Bad input (an unknown flag included) prints one line `error: … — fix: …` and exits
 * with 1 (`--verbose` adds the stack trace); `--help` shows every flag with its default.
 * @module
 */
import { ByteSize, Console, Effect, FileSystem, Option } from "effect";
import { Command, Flag } from "effect/cli";
import { InputError } from "@longctx/graph";
import { techniqueNames, TECHNIQUES } from "@longctx/ops";
import {
  builtinDensities,
  builtinProfile,
  builtinProfileNames,
  decodeDensityTable,
  defaultOperators,
  type DensitySample,
  type LoadedProfile,
  MODELS,
  parsePlan,
  parseProfile,
  type Plan,
  plan,
  PlanError,
  type PlanRequest,
  validateRequest,
} from "@longctx/plans";
import { runCli, withShownDefault } from "./main.ts";

/**
 * Parse a token count: `8192`, `8k` (×1024), `128K`, `1m` (×1024²), `1.5k`.
 * Fails with `InputError` naming `--<flag>` on anything else or a non-integral count.
 */
export const parseTokens = (s: string, flag = "context"): Effect.Effect<number, InputError> => {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$/.exec(s);
  const n = m ? Number(m[1]) * (m[2] === "" ? 1 : m[2].toLowerCase() === "k" ? 1024 : 1024 * 1024) : NaN;
  return Number.isSafeInteger(n) && n > 0 ? Effect.succeed(n) : Effect.fail(
    new InputError({
      message: `--${flag} "${s}" is not a token count`,
      hint: "write tokens as an integer or with k / m (×1024, ×1024²): 8192, 32k, 128k",
    }),
  );
};

/** Parse a byte size (`80GiB`, `141 GB`, `1.5TiB`, or plain bytes). Fails with `InputError`. */
export const parseBytes = (s: string): Effect.Effect<number, InputError> => {
  const size = /^\s*\d+\s*$/.test(s) ? Option.some(ByteSize.bytes(Number(s))) : ByteSize.fromString(s);
  return Option.match(size, {
    onNone: () =>
      Effect.fail(
        new InputError({ message: `--memory "${s}" is not a byte size`, hint: "e.g. 80GiB, 141GB" }),
      ),
    onSome: (b) => Effect.succeed(Number(ByteSize.toBigInt(b))),
  });
};

const readJson = (path: string, what: string) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem;
    return yield* fs.readFileString(path).pipe(
      Effect.mapError((e) =>
        new InputError({ message: `cannot read ${what} ${path}: ${e.message}`, hint: "check the path" })
      ),
    );
  });

/** Load the device profile: `--profile <file>`, else built-in `--device`, else `h200` (else the first built-in). */
const loadProfile = (file: Option.Option<string>, device: Option.Option<string>) =>
  Effect.gen(function* () {
    if (Option.isSome(file)) return yield* Effect.flatMap(readJson(file.value, "profile"), parseProfile);
    const names = builtinProfileNames();
    const name = Option.getOrElse(device, () => names.find((n) => n === "h200") ?? names[0] ?? "h200");
    return yield* builtinProfile(name);
  });

const loadDensities = (file: Option.Option<string>) =>
  Effect.gen(function* () {
    const builtin = yield* builtinDensities();
    if (Option.isNone(file)) return builtin;
    const text = yield* readJson(file.value, "density table");
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: () =>
        new PlanError({
          reason: "bad-profile",
          message: `${file.value} is not JSON`,
          hint: "check the file",
        }),
    });
    const t = yield* decodeDensityTable(json);
    return [...builtin, ...t.samples] as readonly DensitySample[];
  });

const GiB = 2 ** 30;
const fmt = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms >= 1 ? ms.toFixed(2) : ms.toPrecision(3));
const pad = (s: string, n: number) => s.padEnd(n);

/** The plan as a human-readable table. */
export const renderPlan = (p: Plan): string => {
  const lines: string[] = [];
  lines.push(
    `plan: ${p.model.id} (${p.model.layers} layers, ${p.model.heads}/${p.model.kvHeads} heads, d=${p.model.headDim})` +
      ` · ${p.contextLength} tokens · ${p.phase} · ${p.dtype}`,
  );
  lines.push(
    `device: ${p.device.profile} — ${p.device.adapter} (${p.device.backend}), profiled ${p.device.date} @ ${p.device.commit}`,
  );
  lines.push("");
  const rows = p.groups.map((g) => [
    g.layers[1] - g.layers[0] === 1 ? `${g.layers[0]}` : `${g.layers[0]}-${g.layers[1] - 1}`,
    g.pipeline,
    fmt(g.msPerLayer),
    g.density === undefined ? "—" : g.density.toFixed(3),
    g.stages.map((s) => s.operator).join(" → "),
  ]);
  const params = (g: Plan["groups"][number]) =>
    Object.entries(Object.assign({}, ...g.stages.map((s) => s.params))).map(([k, v]) => `${k}=${v}`).join(
      " ",
    );
  const head = ["layers", "pipeline", "ms/layer", "density", "stages"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  lines.push(head.map((h, i) => (i < 4 ? pad(h, widths[i]) : h)).join("  "));
  p.groups.forEach((g, j) => {
    lines.push(rows[j].map((c, i) => (i < 4 ? pad(c, widths[i]) : c)).join("  "));
    lines.push(`  params: ${params(g)}`);
    lines.push(`  why: ${g.reason}`);
  });
  const pr = p.predicted;
  const gain = pr.denseAttentionMs > 0 ? (1 - pr.attentionMs / pr.denseAttentionMs) * 100 : 0;
  lines.push("");
  lines.push(
    `predicted attention: ${fmt(pr.attentionMs)} ms (dense everywhere: ${fmt(pr.denseAttentionMs)} ms` +
      (gain > 0.5 ? `, −${gain.toFixed(0)} %` : "") +
      `); profile fit error ≤ ${(pr.fitError * 100).toFixed(1)} %`,
  );
  const m = pr.memory;
  lines.push(
    `predicted memory: ${(m.totalBytes / GiB).toFixed(2)} GiB = weights ${
      (m.weightsBytes / GiB).toFixed(2)
    }` +
      ` + KV cache ${(m.kvCacheBytes / GiB).toFixed(2)} + working ${(m.workingBytes / GiB).toFixed(2)}`,
  );
  for (const a of p.alternatives) {
    lines.push(
      `alternative ${a.pipeline}: ${a.note}` +
        (a.totalMs === undefined ? "" : ` (${fmt(a.totalMs)} ms everywhere)`),
    );
  }
  for (const w of p.warnings) lines.push(`warning: ${w}`);
  return lines.join("\n");
};

const flags = {
  model: Flag.String("model").pipe(
    Flag.withAlias("m"),
    Flag.withDescription("model id (see --list)"),
    Flag.optional,
  ),
  context: Flag.String("context").pipe(
    Flag.withAlias("c"),
    Flag.withDescription("context length in tokens: 8192, 32k, 128k"),
    Flag.optional,
  ),
  phase: Flag.Literals("phase", ["prefill", "decode"]).pipe(
    withShownDefault<"prefill" | "decode">(
      "prefill (the whole context) or decode (one step at that context)",
      "prefill",
    ),
  ),
  pipeline: Flag.String("pipeline").pipe(
    Flag.withDescription(`plan only this technique (${techniqueNames().join(", ")})`),
    Flag.optional,
  ),
  dtype: Flag.Literals("dtype", ["f32", "f16"]).pipe(
    Flag.withDescription(
      "element type of Q/K/V the kernels read (default: f32 when the device profile measured it, else f16)",
    ),
    Flag.optional,
  ),
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the plan as JSON"), Flag.withDefault(false)),
  device: Flag.String("device").pipe(
    Flag.withDescription(
      `built-in device profile: ${builtinProfileNames().join(", ")} (default h200; ignored with --profile)`,
    ),
    Flag.optional,
  ),
  profile: Flag.String("profile").pipe(
    Flag.withDescription("device profile JSON from calibrate"),
    Flag.optional,
  ),
  densities: Flag.String("densities").pipe(
    Flag.withDescription("measured density table JSON, added to the built-in ones (default: built-in only)"),
    Flag.optional,
  ),
  latencyMs: Flag.Finite("latency-ms").pipe(
    Flag.withDescription("attention latency budget, ms (default: none)"),
    Flag.optional,
  ),
  memory: Flag.String("memory").pipe(
    Flag.withDescription("memory budget, e.g. 80GiB (default: none)"),
    Flag.optional,
  ),
  exact: Flag.Boolean("exact").pipe(Flag.withDescription("dense attention only"), Flag.withDefault(false)),
  out: Flag.String("out").pipe(Flag.withDescription("also write the plan JSON to this file"), Flag.optional),
  validate: Flag.String("validate").pipe(
    Flag.withDescription("check a plan JSON file and print it"),
    Flag.optional,
  ),
  list: Flag.Boolean("list").pipe(
    Flag.withDescription("list known models, device profiles and techniques"),
    Flag.withDefault(false),
  ),
  verbose: Flag.Boolean("verbose").pipe(
    Flag.withDescription("print the stack trace on errors"),
    Flag.withDefault(false),
  ),
};

type Input = Command.Command.Config.Infer<typeof flags>;

const main = (i: Input) =>
  Effect.gen(function* () {
    if (i.list) {
      for (const m of MODELS) {
        yield* Console.log(
          `${m.id.padEnd(16)} ${
            String(m.layers).padStart(3)
          } layers  ${m.heads}/${m.kvHeads} heads  d=${m.headDim}  ` +
            `max ${m.maxContext} tokens  ${m.source}`,
        );
      }
      const names = builtinProfileNames();
      yield* Console.log(`device profiles: ${names.length > 0 ? names.join(", ") : "none measured yet"}`);
      for (const t of TECHNIQUES) {
        yield* Console.log(
          `technique ${t.name.padEnd(8)} ${t.phases.join("+")}${t.sparse ? ", sparse" : ", exact"}` +
            Object.entries(t.delegates).map(([ph, d]) => `, ${ph} via ${d!.technique.name}`).join("") +
            (t.knob
              ? `; knob ${t.knob.name} (${t.knob.param}), higher is ${
                t.knob.sparser === "higher" ? "sparser" : "denser"
              }`
              : "") +
            ` — ${t.reference}`,
        );
      }
      return;
    }
    if (Option.isSome(i.validate)) {
      const p = yield* Effect.flatMap(readJson(i.validate.value, "plan"), parsePlan);
      yield* Console.log(i.json ? JSON.stringify(p, null, 2) : renderPlan(p));
      return;
    }
    if (Option.isNone(i.model) || Option.isNone(i.context)) {
      return yield* new InputError({
        message: "--model and --context are required",
        hint: "e.g. plan --model llama-3.1-8b --context 128k (plan --list shows the models)",
      });
    }
    const contextLength = yield* parseTokens(i.context.value);
    const memoryBytes = Option.isSome(i.memory) ? yield* parseBytes(i.memory.value) : undefined;
    const profile: LoadedProfile = yield* loadProfile(i.profile, i.device);
    // without --dtype the planner plans at the element type the profile measured (f32 first)
    const request: PlanRequest = {
      model: i.model.value,
      contextLength,
      phase: i.phase,
      ...(Option.isSome(i.dtype) ? { dtype: i.dtype.value } : {}),
      ...(Option.isSome(i.pipeline) ? { pipeline: i.pipeline.value } : {}),
      budget: {
        ...(Option.isSome(i.latencyMs) ? { latencyMs: i.latencyMs.value } : {}),
        ...(memoryBytes === undefined ? {} : { memoryBytes }),
        ...(i.exact ? { exact: true } : {}),
      },
    };
    yield* validateRequest(request);
    const densities = yield* loadDensities(i.densities);
    const p = yield* plan(request, { profile, operators: defaultOperators(), densities });
    if (Option.isSome(i.out)) {
      const fs = yield* FileSystem.FileSystem;
      yield* fs.writeFileString(i.out.value, JSON.stringify(p, null, 2) + "\n").pipe(
        Effect.mapError((e) =>
          new InputError({
            message: `cannot write ${Option.getOrElse(i.out, () => "")}: ${e.message}`,
            hint: "check the path",
          })
        ),
      );
    }
    yield* Console.log(i.json ? JSON.stringify(p, null, 2) : renderPlan(p));
  });

/** The `plan` command (exported for tests and for a future multi-command entry point). */
export const planCommand = Command.make("plan", flags, main).pipe(
  Command.withDescription("Plan the attention pipeline for a model, context length and device"),
);

if (import.meta.main) runCli(planCommand, { version: "0.1.0" });
