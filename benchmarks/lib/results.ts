/**
 * Benchmark result rows: one schema (Effect Schema) shared by every suite, and `appendRows(suite, rows)`,
 * which fills the provenance fields and appends to `benchmarks/results/<suite>.json`.
 *
 * A results file is a JSON array of rows. Every row is one measured number with the command that
 * reproduces it. Only measured rows go there (fixtures live in `tests/fixtures/`).
 *
 * ```ts
 * import { appendRows } from "../lib/results.ts";
 * await appendRows("backend", [
 *   { metric: "copy_tbps", value: 3.91, unit: "TB/s", backend: "wgpu", bytes: 2 * 2 ** 30, timeMs: 0.55 },
 * ]);
 * ```
 *
 * Fields filled when a row leaves them out (environment variables first, so the device suite can set them):
 * - `date`: now, ISO 8601 UTC.
 * - `commit`: `LONGCTX_COMMIT`, else `git rev-parse --short HEAD` (+ `-dirty` when the tree has changes),
 *   else `"unknown"` (the device machine has no `.git`: the suite passes `LONGCTX_COMMIT`).
 * - `gpu`, `driver`: `LONGCTX_GPU` / `LONGCTX_DRIVER`, else `nvidia-smi`, else `"none"` / `"none"`
 *   (for cpu rows: `gpu: "none"`, and `driver` is the OS/CPU description).
 * - `command`: `LONGCTX_BENCH_COMMAND`, else `deno run -A <script> <args>` (or `bun <script> <args>`).
 * - `run`: `LONGCTX_BENCH_RUN` (the device suite sets 1 and 2, for the spread between runs), if set.
 *
 * Python peers (PyTorch SDPA) that cannot import this file pipe rows through the CLI, which fills the
 * same fields:  `python3 peer.py | deno run -A benchmarks/lib/results.ts <suite>`  (stdin: a JSON array;
 * each row must carry its own `command`, or set `LONGCTX_BENCH_COMMAND`).
 *
 * Files: `LONGCTX_RESULTS_DIR` (default `<repo>/benchmarks/results`); when `LONGCTX_RESULTS_MIRROR` is set
 * (the device suite sets `$OUT/new-rows`), rows are also appended to `<mirror>/<suite>.json`. After appending
 * to the default directory, `benchmarks/RESULTS.md` and `benchmarks/charts/latency.svg` are re-rendered
 * (`LONGCTX_NO_RENDER=1` skips that), so the committed tables never lag the JSON.
 * @module
 */
import { Schema } from "effect";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** A scalar detail value (shape sizes, dtypes, flags). */
const Scalar = Schema.Union([Schema.String, Schema.Number, Schema.Boolean]);

const NonEmpty = Schema.String.check(Schema.isMinLength(1));
const Finite = Schema.Number.check(Schema.isFinite());
const NonNegInt = Schema.Number.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0));
const NonNeg = Schema.Number.check(Schema.isFinite(), Schema.isGreaterThanOrEqualTo(0));

/**
 * The fields a benchmark writes itself. Provenance fields may be given; `appendRows` fills missing ones.
 *
 * Conventions the renderer relies on:
 * - `metric` in snake_case with the unit implied (`latency_ms`, `copy_tbps`, `matmul_f16_tflops`, …);
 * - `impl`: which implementation produced the row when a metric compares several (`dense`, `sale`,
 *   `sdpa-flash`, `sdpa-cudnn`); the chart and tables group by it (falling back to `backend`);
 * - `flops` / `bytes`: counted work of ONE measured invocation (multiply-add = 2 FLOPs; bytes read + written
 *   from device memory), with `timeMs` its measured time: the renderer's roofline note uses these;
 * - `run` (suite run id, e.g. 1 or 2) and `repeat` (index of a repeat inside one run): the renderer reports
 *   min / median / max over rows that differ only in these.
 */
export const RowInputFields = {
  /** Metric name, snake_case, e.g. `latency_ms`, `copy_tbps`. */
  metric: NonEmpty,
  /** The measured number. */
  value: Finite,
  /** Unit of `value`: `ms`, `TB/s`, `TFLOP/s`, `x`, `share`, `ops/s`, … */
  unit: NonEmpty,
  /** Context length in tokens, when the metric depends on it. */
  context: Schema.optionalKey(NonNegInt),
  /** Model or head configuration, e.g. `llama-3.1-8b-heads (32/8, d=128)`. */
  model: Schema.optionalKey(Schema.String),
  /** Backend: `cpu`, `wgpu`, `webgpu`, `torch`, … */
  backend: NonEmpty,
  /** Implementation when several compete on one metric: `dense`, `sale`, `sdpa-flash`, `sdpa-cudnn`. */
  impl: Schema.optionalKey(Schema.String),
  /** Operator name (`dense.attn`, `sale.estimate`, …) for per-kernel rows. */
  op: Schema.optionalKey(Schema.String),
  /** Element type of the inputs: `f32`, `f16`, `bf16`, … */
  dtype: Schema.optionalKey(Schema.String),
  /** Counted FLOPs of one measured invocation (multiply-add = 2). */
  flops: Schema.optionalKey(NonNeg),
  /** Counted bytes moved to/from device memory by one measured invocation (read + write). */
  bytes: Schema.optionalKey(NonNeg),
  /** Measured time of one invocation in ms (the time `flops` and `bytes` refer to). */
  timeMs: Schema.optionalKey(NonNeg),
  /** Suite run id (1, 2, … or a label). */
  run: Schema.optionalKey(Schema.Union([Schema.String, Schema.Number])),
  /** Repeat index inside one run. */
  repeat: Schema.optionalKey(NonNegInt),
  /** Free-form details: shapes, block sizes, thresholds, iterations. */
  params: Schema.optionalKey(Schema.Record(Schema.String, Scalar)),
  /** A short human note (what limits it, what it measures). */
  note: Schema.optionalKey(Schema.String),
  /** GPU name (`NVIDIA H200`), or `none` for cpu-only rows. */
  gpu: Schema.optionalKey(Schema.String),
  /** Driver version (or the OS/CPU description on cpu rows). */
  driver: Schema.optionalKey(Schema.String),
  /** ISO 8601 time of the measurement. */
  date: Schema.optionalKey(Schema.String),
  /** Git commit the code was at (`abc1234` or `abc1234-dirty`). */
  commit: Schema.optionalKey(Schema.String),
  /** Shell command that reproduces the row, run from the repo root. */
  command: Schema.optionalKey(Schema.String),
} as const;

/** What a benchmark passes to `appendRows` (provenance optional). */
export const RowInput = Schema.Struct(RowInputFields);
/** What a benchmark passes to `appendRows`. */
export type RowInput = typeof RowInput.Type;

/** A complete row as stored in `benchmarks/results/<suite>.json`: provenance fields required. */
export const Row = Schema.Struct({
  ...RowInputFields,
  gpu: Schema.String,
  driver: Schema.String,
  date: NonEmpty,
  commit: NonEmpty,
  command: NonEmpty,
});
/** A stored row. */
export type Row = typeof Row.Type;

/** A results file: an array of rows. */
export const RowsFile = Schema.Array(Row);

const decodeInput = Schema.decodeUnknownSync(RowInput);
const decodeRow = Schema.decodeUnknownSync(Row);
const decodeRows = Schema.decodeUnknownSync(RowsFile);

/** The repository root (two levels above this file). */
export const repoRoot = (): string => path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Directory of `<suite>.json` files: `LONGCTX_RESULTS_DIR`, default `<repo>/benchmarks/results`. */
export const resultsDir = (): string =>
  process.env.LONGCTX_RESULTS_DIR ?? path.join(repoRoot(), "benchmarks", "results");

/** Suite names are file stems: lowercase letters, digits, `-`, `_`. */
const SUITE_RE = /^[a-z0-9][a-z0-9_-]*$/;

const run = (cmd: string, args: string[]): string | undefined => {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 10_000 })
      .trim();
  } catch {
    return undefined;
  }
};

/** Provenance of this process: what `appendRows` fills in. Computed once per process. */
export interface Provenance {
  readonly gpu: string;
  readonly driver: string;
  readonly commit: string;
  readonly command: string;
  readonly run?: string | number;
}

let cached: Provenance | undefined;

/** Git commit of the repo (`LONGCTX_COMMIT` first), `-dirty` when tracked files changed; `unknown` without git. */
export const gitCommit = (): string => {
  const env = process.env.LONGCTX_COMMIT;
  if (env) return env;
  const head = run("git", ["-C", repoRoot(), "rev-parse", "--short", "HEAD"]);
  if (!head) return "unknown";
  const dirty = run("git", ["-C", repoRoot(), "status", "--porcelain", "--untracked-files=no"]);
  return dirty ? `${head}-dirty` : head;
};

/** GPU name and driver from `LONGCTX_GPU`/`LONGCTX_DRIVER`, else `nvidia-smi`, else `none` + the CPU model. */
export const gpuInfo = (): { gpu: string; driver: string } => {
  const smi = run("nvidia-smi", ["--query-gpu=name,driver_version", "--format=csv,noheader"]);
  const [smiGpu, smiDriver] = smi ? smi.split("\n")[0].split(",").map((s) => s.trim()) : [];
  const cpu = `${os.type()} ${os.release()}; cpu ${os.cpus()[0]?.model?.trim() ?? "?"} x${os.cpus().length}`;
  return {
    gpu: process.env.LONGCTX_GPU ?? smiGpu ?? "none",
    driver: process.env.LONGCTX_DRIVER ?? smiDriver ?? cpu,
  };
};

/** The command that reproduces this process: `LONGCTX_BENCH_COMMAND`, else built from argv. */
export const currentCommand = (): string => {
  const env = process.env.LONGCTX_BENCH_COMMAND;
  if (env) return env;
  const script = process.argv[1] ? path.relative(repoRoot(), path.resolve(process.argv[1])) : "?";
  const args = process.argv.slice(2).map((
    a,
  ) => (/^[\w./=:,-]+$/.test(a) ? a : `'${a.replaceAll("'", "'\\''")}'`));
  const runtime = "Bun" in globalThis ? "bun" : "deno run -A";
  return [runtime, script, ...args].join(" ");
};

/**
 * Seconds this benchmark may run: `LONGCTX_BENCH_BUDGET_S` (set by `benchmarks/device/suite.sh` for each step,
 * which kills a step past its limit), else `defaultS`. Scripts should stop starting new work when it is spent
 * and append their rows before exiting.
 */
export const benchBudgetS = (defaultS: number): number => {
  const v = Number(process.env.LONGCTX_BENCH_BUDGET_S);
  return Number.isFinite(v) && v > 0 ? v : defaultS;
};

/** Provenance for this process (cached). */
export const provenance = (): Provenance => {
  if (cached) return cached;
  const { gpu, driver } = gpuInfo();
  const r = process.env.LONGCTX_BENCH_RUN;
  cached = {
    gpu,
    driver,
    commit: gitCommit(),
    command: currentCommand(),
    ...(r ? { run: /^\d+$/.test(r) ? Number(r) : r } : {}),
  };
  return cached;
};

/**
 * Fill a row's missing provenance (`date`, `commit`, `gpu`, `driver`, `command`, `run`) and validate it.
 * Unknown extra keys are kept as given. Throws a `RangeError` naming the row and the schema issue when a
 * row is invalid (a benchmark bug: fail loudly, never write a bad row).
 */
export const completeRow = (row: RowInput, index = 0, date = new Date().toISOString()): Row => {
  let input: RowInput;
  try {
    input = decodeInput(row);
  } catch (e) {
    throw new RangeError(`benchmark row ${index} (${JSON.stringify(row)}) is invalid: ${String(e)}`);
  }
  const p = provenance();
  const full = {
    ...row,
    ...input,
    date: input.date ?? date,
    commit: input.commit && !(input.commit === "unknown" && p.commit !== "unknown") ? input.commit : p.commit,
    gpu: input.gpu ?? p.gpu,
    driver: input.driver ?? p.driver,
    command: input.command ?? p.command,
    ...(input.run === undefined && p.run !== undefined ? { run: p.run } : {}),
  };
  decodeRow(full);
  return full as Row;
};

/** Read and validate one results file (an array of rows); a missing file reads as `[]`. */
export const readRows = (file: string): Row[] => {
  if (!fs.existsSync(file)) return [];
  const text = fs.readFileSync(file, "utf8").trim();
  if (text === "") return [];
  return [...decodeRows(JSON.parse(text))] as Row[];
};

/** All suites in a results directory: suite name → rows (sorted by suite name). Throws on an invalid file. */
export const readAllResults = (dir = resultsDir()): Map<string, Row[]> => {
  const { suites, errors } = readAllResultsLenient(dir);
  if (errors.size) {
    const [file, why] = [...errors.entries()][0];
    throw new RangeError(`${file}: ${why}`);
  }
  return suites;
};

/**
 * Like `readAllResults`, but a file that is not valid JSON or has a row failing the schema is left out and
 * reported (file name → first line of the error) instead of throwing: the renderer lists such files.
 */
export const readAllResultsLenient = (
  dir = resultsDir(),
): { suites: Map<string, Row[]>; errors: Map<string, string> } => {
  const suites = new Map<string, Row[]>();
  const errors = new Map<string, string>();
  if (!fs.existsSync(dir)) return { suites, errors };
  for (const f of fs.readdirSync(dir).filter((f) => f.endsWith(".json")).sort()) {
    try {
      suites.set(f.slice(0, -5), readRows(path.join(dir, f)));
    } catch (e) {
      errors.set(f, String(e instanceof Error ? e.message : e).replaceAll("\n", " ").slice(0, 300));
    }
  }
  return { suites, errors };
};

const appendTo = (dir: string, suite: string, rows: readonly Row[]): string => {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${suite}.json`);
  const all = [...readRows(file), ...rows];
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(all, null, 1) + "\n");
  fs.renameSync(tmp, file);
  return file;
};

/**
 * Append measured rows to `<resultsDir>/<suite>.json` (and to `LONGCTX_RESULTS_MIRROR/<suite>.json` when
 * set), filling provenance. `suite`: a file stem such as `backend`, `matmul`, `sale`, `model`, `micro`.
 * Returns the completed rows, then re-renders RESULTS.md (see the module doc). Rejects with `RangeError` for a
 * bad suite name or an invalid row (nothing written).
 */
export const appendRows = (suite: string, rows: readonly RowInput[]): Promise<Row[]> => {
  if (!SUITE_RE.test(suite)) {
    return Promise.reject(new RangeError(`suite name "${suite}" must match ${SUITE_RE} (it is a file name)`));
  }
  let done: Row[];
  try {
    const date = new Date().toISOString();
    done = rows.map((r, i) => completeRow(r, i, date));
    appendTo(resultsDir(), suite, done);
    const mirror = process.env.LONGCTX_RESULTS_MIRROR;
    if (mirror) appendTo(mirror, suite, done);
  } catch (e) {
    return Promise.reject(e);
  }
  return rerender().then(() => done);
};

/**
 * Keep `benchmarks/RESULTS.md` and the chart in step with the default results directory: re-render after
 * appending there (not when `LONGCTX_RESULTS_DIR` points elsewhere, nor with `LONGCTX_NO_RENDER=1`). A render
 * failure is printed, not thrown: the rows are already written.
 */
const rerender = async (): Promise<void> => {
  if (process.env.LONGCTX_RESULTS_DIR || process.env.LONGCTX_NO_RENDER === "1") return;
  try {
    const { renderFiles } = await import("../render.ts");
    const root = repoRoot();
    await renderFiles(
      resultsDir(),
      path.join(root, "benchmarks", "RESULTS.md"),
      path.join(root, "benchmarks", "charts", "latency.svg"),
    );
  } catch (e) {
    console.error(`appendRows: rows written, but rendering RESULTS.md failed: ${e}`);
  }
};

// CLI: `<producer of a JSON array of rows> | deno run -A benchmarks/lib/results.ts <suite>`
// No top-level await here: appendRows re-renders through a dynamic import of render.ts, which imports this
// module; with this module's evaluation still pending on a top-level await, that import would never settle.
/** Bad input to the CLI: printed as the repository's one line `error: … — fix: …` (this file imports nothing). */
class CliInputError extends Error {
  constructor(message: string, readonly hint: string) {
    super(message);
  }
}
const cli = async (suite: string | undefined): Promise<void> => {
  if (!suite || suite.startsWith("-")) {
    throw new CliInputError(
      suite ? `unknown flag ${suite}` : "no suite given",
      "<JSON rows on stdin> | deno run -A benchmarks/lib/results.ts <suite>",
    );
  }
  const text = fs.readFileSync(0, "utf8").trim();
  let parsed: unknown;
  try {
    parsed = text === "" ? [] : JSON.parse(text);
  } catch (e) {
    throw new CliInputError(
      `stdin is not JSON: ${e instanceof Error ? e.message : e}`,
      "pipe a JSON array of rows {metric, value, unit, command, …}",
    );
  }
  const rows = (Array.isArray(parsed) ? parsed : [parsed]) as RowInput[];
  // The command that produced rows arriving on stdin is the producer's, not this CLI's: require it.
  const missing = rows.findIndex((r) => !r.command);
  if (missing >= 0 && !process.env.LONGCTX_BENCH_COMMAND) {
    throw new CliInputError(`row ${missing} has no "command"`, "set it in the row or LONGCTX_BENCH_COMMAND");
  }
  const done = await appendRows(suite, rows);
  console.error(`appended ${done.length} row(s) to ${path.join(resultsDir(), suite + ".json")}`);
};
if (import.meta.main) {
  cli(process.argv[2]).catch((e) => {
    // an invalid row or results file (RangeError) is bad input too, with the row or file named in the message
    const hint = e instanceof CliInputError
      ? e.hint
      : e instanceof RangeError
      ? "fix the row: {metric, value, unit, context?, model?, backend, command, …} (RowInput in benchmarks/lib/results.ts)"
      : "rerun with the rows printed and report the message";
    console.error(`error: ${e instanceof Error ? e.message.replace(/\s*\n\s*/g, " ") : e} — fix: ${hint}`);
    process.exit(1);
  });
}
