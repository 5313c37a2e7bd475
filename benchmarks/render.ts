/**
 * Render `benchmarks/RESULTS.md` (and `benchmarks/charts/latency.svg`) from every `benchmarks/results/*.json`.
 *
 *   deno task bench:render                      # = deno run -A benchmarks/render.ts
 *   deno run -A benchmarks/render.ts --results DIR --out FILE.md --chart FILE.svg
 *
 * Sections: environments (gpu, driver, commits, dates); the latency chart; one table per suite where rows
 * that differ only in run/repeat/date/commit are one line with n, median, min, max, relative spread
 * ((max − min) / median) and every value in run order; a roofline note per kernel (rows with counted
 * `flops`/`bytes`): achieved TFLOP/s and TB/s from the median time, as shares of the best measured ceilings
 * on the same GPU (`copy_tbps`, `matmul_*_tflops`), and the roofline bound max(FLOPs/peak, bytes/bandwidth).
 * Every number printed is computed from the rows; `tests/benchmarks/results_md_test.ts` checks that.
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import process from "node:process";
import { median, renderLatencySvg, selectLatency } from "./charts/latency.ts";
import { renderFidelitySvg } from "./charts/fidelity.ts";
import { readAllResultsLenient, repoRoot, type Row } from "./lib/results.ts";
import { parseArgs } from "node:util";

/** Format a measured number to 4 significant digits (plain notation between 1e-3 and 1e6). */
export const fmt = (v: number): string => {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
};

/** Format a share (0.523 → "52.3 %"). */
export const pct = (v: number): string => `${(100 * v).toFixed(1)} %`;

/** Escape a table cell (pipes, newlines). */
const cell = (s: string): string => s.replaceAll("|", "\\|").replaceAll("\n", " ");

/** Separator between the parts of the details column. */
export const SEP = " · ";

/** `op`, `dtype`, `model` of a row as details parts (`params` are added per group, see `groupRows`). */
export const describeBase = (r: Row): string[] => {
  const parts: string[] = [];
  if (r.op) parts.push(`op=${r.op}`);
  if (r.dtype) parts.push(`dtype=${r.dtype}`);
  if (r.model) parts.push(`model=${r.model}`);
  return parts;
};

/** Series / implementation label: `impl` when given, else `backend`; both when they differ. */
export const implOf = (
  r: Row,
): string => (r.impl && r.impl !== r.backend ? `${r.impl} (${r.backend})` : r.backend);

/** Rows of one configuration, ordered by run then repeat then date. */
export interface Group {
  readonly suite: string;
  readonly rows: readonly Row[];
  readonly values: readonly number[];
  /** Details column: op, dtype, model, configuration params, and params that varied by run (`k=a / b`). */
  readonly details: string;
}

const baseKey = (r: Row): string =>
  JSON.stringify([r.metric, r.unit, r.context ?? null, implOf(r), describeBase(r), r.gpu]);

const runOrder = (a: Row, b: Row): number =>
  String(a.run ?? "").localeCompare(String(b.run ?? ""), undefined, { numeric: true }) ||
  (a.repeat ?? 0) - (b.repeat ?? 0) || a.date.localeCompare(b.date);

const bucket = <T>(xs: readonly T[], key: (x: T) => string): T[][] => {
  const m = new Map<string, T[]>();
  for (const x of xs) {
    const k = key(x);
    const g = m.get(k);
    if (g) g.push(x);
    else m.set(k, [x]);
  }
  return [...m.values()];
};

const paramStr = (r: Row, k: string): string => (r.params && k in r.params ? String(r.params[k]) : "");

/**
 * Group a suite's rows by configuration (first-appearance order). Rows are alike when metric, unit, context,
 * impl/backend, op, dtype, model and gpu agree, and so do their *configuration* params. With several runs, a
 * param is configuration when every run has the same multiset of its values (e.g. a threshold swept the same
 * way in each run); a param whose values differ between runs (an autotuned kernel label, a sample count) is a
 * per-run detail: it does not split the group and is shown as `k=v1 / v2` in run order.
 */
export const groupRows = (suite: string, rows: readonly Row[]): Group[] => {
  const out: Group[] = [];
  for (const base of bucket(rows, baseKey)) {
    const keys = [...new Set(base.flatMap((r) => Object.keys(r.params ?? {})))].sort();
    const byRun = bucket(base, (r) => String(r.run ?? ""));
    const config = keys.filter((k) => {
      if (byRun.length <= 1) return true;
      const sig = (rs: Row[]) => JSON.stringify(rs.map((r) => paramStr(r, k)).sort());
      return byRun.every((rs) => sig(rs) === sig(byRun[0]));
    });
    for (const g of bucket(base, (r) => JSON.stringify(config.map((k) => paramStr(r, k))))) {
      const sorted = [...g].sort(runOrder);
      const parts = [...describeBase(sorted[0])];
      for (const k of keys) {
        const vals = [...new Set(sorted.filter((r) => r.params && k in r.params).map((r) => paramStr(r, k)))];
        if (vals.length) parts.push(`${k}=${vals.join(" / ")}`);
      }
      out.push({ suite, rows: sorted, values: sorted.map((r) => r.value), details: parts.join(SEP) });
    }
  }
  return out;
};

/** Spread statistics of a group's values. */
export const stats = (values: readonly number[]) => {
  const med = median(values);
  const min = Math.min(...values);
  const max = Math.max(...values);
  return { median: med, min, max, spread: med !== 0 ? (max - min) / Math.abs(med) : 0 };
};

/** Header of every suite table (the test parses tables by these names). */
export const SUITE_HEADER = [
  "metric",
  "context",
  "impl",
  "details",
  "gpu",
  "n",
  "median",
  "min",
  "max",
  "spread",
  "unit",
  "values (run order)",
  "command",
] as const;

const line = (cells: readonly string[]): string => `| ${cells.map(cell).join(" | ")} |`;

/** One table line for a group. */
export const groupLine = (g: Group): string => {
  const r = g.rows[0];
  const s = stats(g.values);
  const commands = [...new Set(g.rows.map((x) => x.command))];
  const runs = g.rows.map((x) =>
    (x.run !== undefined ? `r${x.run}` : "") + (x.repeat !== undefined ? `.${x.repeat}` : "")
  );
  const vals = g.values.map((v, i) => (runs[i] ? `${fmt(v)} (${runs[i]})` : fmt(v))).join(", ");
  return line([
    r.metric,
    r.context !== undefined ? String(r.context) : "",
    implOf(r),
    g.details,
    r.gpu,
    String(g.values.length),
    fmt(s.median),
    fmt(s.min),
    fmt(s.max),
    g.values.length > 1 ? pct(s.spread) : "",
    r.unit,
    vals,
    commands.map((c) => `\`${c}\``).join("; "),
  ]);
};

/** Ceiling metrics (best measured per GPU): bandwidth in TB/s and matmul peaks in TFLOP/s. */
export const CEILING_METRICS = [
  "copy_tbps",
  "matmul_f32_tflops",
  "matmul_f16_tflops",
  "matmul_f16_coop_tflops",
];

/** Best measured value of each ceiling metric per GPU: gpu → metric → { value, backend }. */
export const ceilings = (
  all: readonly Row[],
): Map<string, Map<string, { value: number; backend: string }>> => {
  const out = new Map<string, Map<string, { value: number; backend: string }>>();
  for (const r of all) {
    if (!CEILING_METRICS.includes(r.metric)) continue;
    const m = out.get(r.gpu) ?? new Map();
    const cur = m.get(r.metric);
    if (!cur || r.value > cur.value) m.set(r.metric, { value: r.value, backend: r.backend });
    out.set(r.gpu, m);
  }
  return out;
};

/** The compute ceiling a kernel of this dtype is compared with (f16/bf16 → best of f16 and f16-coop). */
export const computeCeiling = (
  dtype: string | undefined,
  c: Map<string, { value: number; backend: string }> | undefined,
): { metric: string; value: number } | undefined => {
  if (!c) return undefined;
  const names = dtype === "f16" || dtype === "bf16" ? ["matmul_f16_coop_tflops", "matmul_f16_tflops"] : [
    "matmul_f32_tflops",
  ];
  let best: { metric: string; value: number } | undefined;
  for (const n of names) {
    const v = c.get(n);
    if (v && (!best || v.value > best.value)) best = { metric: n, value: v.value };
  }
  return best;
};

/** Roofline figures of one group (median time; counts from the first row). */
export interface Roofline {
  readonly timeMs: number;
  readonly flops?: number;
  readonly bytes?: number;
  readonly tflops?: number;
  readonly tbps?: number;
  readonly computeShare?: number;
  readonly computeCeiling?: string;
  readonly bandwidthShare?: number;
  readonly boundMs?: number;
  readonly boundBy?: "compute" | "memory";
}

/** Roofline of a group whose rows carry `flops` and/or `bytes` and a time (`timeMs`, or `value` in ms). */
export const roofline = (
  g: Group,
  ceil: Map<string, Map<string, { value: number; backend: string }>>,
): Roofline | undefined => {
  const r = g.rows[0];
  if (r.flops === undefined && r.bytes === undefined) return undefined;
  const times = g.rows.map((x) => x.timeMs ?? (x.unit === "ms" ? x.value : NaN)).filter(Number.isFinite);
  if (times.length === 0) return undefined;
  const timeMs = median(times);
  const sec = timeMs * 1e-3;
  const c = ceil.get(r.gpu);
  const cc = computeCeiling(r.dtype, c);
  const bw = c?.get("copy_tbps")?.value;
  const tflops = r.flops !== undefined ? r.flops / sec / 1e12 : undefined;
  const tbps = r.bytes !== undefined ? r.bytes / sec / 1e12 : undefined;
  const tc = r.flops !== undefined && cc ? (r.flops / (cc.value * 1e12)) * 1e3 : undefined;
  const tm = r.bytes !== undefined && bw ? (r.bytes / (bw * 1e12)) * 1e3 : undefined;
  const boundMs = tc !== undefined || tm !== undefined ? Math.max(tc ?? 0, tm ?? 0) : undefined;
  return {
    timeMs,
    flops: r.flops,
    bytes: r.bytes,
    tflops,
    tbps,
    computeShare: tflops !== undefined && cc ? tflops / cc.value : undefined,
    computeCeiling: cc?.metric,
    bandwidthShare: tbps !== undefined && bw ? tbps / bw : undefined,
    boundMs,
    boundBy: boundMs === undefined ? undefined : (tc ?? 0) >= (tm ?? 0) ? "compute" : "memory",
  };
};

/** Header of the roofline table. */
export const ROOFLINE_HEADER = [
  "suite",
  "metric",
  "context",
  "impl",
  "details",
  "gpu",
  "FLOPs",
  "bytes",
  "FLOP/byte",
  "median time (ms)",
  "TFLOP/s",
  "share of compute ceiling",
  "TB/s",
  "share of copy_tbps",
  "roofline bound (ms)",
  "time / bound",
] as const;

const rooflineLine = (g: Group, rf: Roofline): string => {
  const r = g.rows[0];
  const o = (v: number | undefined) => (v === undefined ? "—" : fmt(v));
  return line([
    g.suite,
    r.metric,
    r.context !== undefined ? String(r.context) : "",
    implOf(r),
    g.details,
    r.gpu,
    o(rf.flops),
    o(rf.bytes),
    rf.flops !== undefined && rf.bytes ? fmt(rf.flops / rf.bytes) : "—",
    fmt(rf.timeMs),
    o(rf.tflops),
    rf.computeShare !== undefined ? `${pct(rf.computeShare)} of ${rf.computeCeiling}` : "—",
    o(rf.tbps),
    rf.bandwidthShare !== undefined ? pct(rf.bandwidthShare) : "—",
    rf.boundMs !== undefined ? `${fmt(rf.boundMs)} (${rf.boundBy})` : "—",
    rf.boundMs ? `${fmt(rf.timeMs / rf.boundMs)}×` : "—",
  ]);
};

const table = (header: readonly string[], lines: readonly string[]): string[] => [
  `| ${header.join(" | ")} |`,
  `|${header.map(() => " --- ").join("|")}|`,
  ...lines,
];

/** Options of `renderMarkdown`. */
export interface RenderOptions {
  /** Relative link from the markdown file to the chart SVG, when a chart was drawn. */
  readonly chartLink?: string;
  /** Relative link to the fidelity chart (`charts/fidelity.ts`), when one was drawn from the `fidelity` suite. */
  readonly fidelityChartLink?: string;
  /** Where the rows came from (shown in the header). */
  readonly source?: string;
  /** Results files left out because they failed the schema: file → reason (listed, so nothing is silent). */
  readonly invalid?: ReadonlyMap<string, string>;
}

/** Render the markdown for suites (suite name → rows). Pure: same rows, same text. */
export const renderMarkdown = (
  suites: ReadonlyMap<string, readonly Row[]>,
  opts: RenderOptions = {},
): string => {
  const all = [...suites.values()].flat();
  const out: string[] = [
    "# Benchmark results",
    "",
    `Rendered by \`deno task bench:render\` from \`${
      opts.source ?? "benchmarks/results/*.json"
    }\`; do not edit by hand.`,
    "Every number below is a measured row of those files (or computed from them, as stated), with the command",
    "that reproduces it. Repeated runs of one configuration are one line: n, median, min, max, relative spread",
    "(max − min) / median, and each value with its run id (`r1`, `r2`, …).",
    "",
  ];
  if (opts.invalid?.size) {
    out.push(
      "## Files left out",
      "",
      "These results files failed the row schema (`benchmarks/lib/results.ts`):",
      "",
    );
    for (const [f, why] of opts.invalid) out.push(`- \`${f}\`: ${why.replaceAll("|", "\\|")}`);
    out.push("");
  }
  if (all.length === 0) {
    out.push("No results yet: run the suites (see `benchmarks/lib/README.md`).", "");
    return out.join("\n");
  }

  out.push("## Environments", "");
  const envs = new Map<string, Row[]>();
  for (const r of all) {
    const k = JSON.stringify([r.gpu, r.driver]);
    envs.set(k, [...(envs.get(k) ?? []), r]);
  }
  const envLines = [...envs.values()].map((rs) => {
    const dates = rs.map((r) => r.date).sort();
    const suitesOf = [...suites.entries()].filter(([, v]) => v.some((r) => rs.includes(r))).map(([s]) => s);
    return line([
      rs[0].gpu,
      rs[0].driver,
      [...new Set(rs.map((r) => r.commit))].join(", "),
      dates[0] === dates[dates.length - 1] ? dates[0] : `${dates[0]} … ${dates[dates.length - 1]}`,
      suitesOf.join(", "),
      String(rs.length),
    ]);
  });
  out.push(...table(["gpu", "driver", "commits", "dates", "suites", "rows"], envLines), "");

  const sel = selectLatency(all);
  if (sel && opts.chartLink) {
    out.push(
      "## Latency against context length",
      "",
      `![latency vs context, log–log](${opts.chartLink})`,
      "",
      `Median of runs per point, bar = min–max; ${sel.gpu}${sel.model ? `, ${sel.model}` : ""}; rows with ` +
        "`metric: latency_ms` and a `context` (values in the suite tables below)" +
        (sel.stages.length ? `; stages not drawn: ${sel.stages.map((x) => `\`${x}\``).join(", ")}.` : "."),
      "",
      ...sel.notes.flatMap((n) => [
        `Note on the drawn ${n.series.map((x) => `\`${x}\``).join(", ")} rows at ${n.contexts.join(", ")} ` +
        `tokens: ${n.note}.`,
        "",
      ]),
    );
  }

  if (opts.fidelityChartLink) {
    out.push(
      "## Fidelity against density",
      "",
      `![accuracy and perplexity change vs density](${opts.fidelityChartLink})`,
      "",
      "From the `fidelity` suite (`benchmarks/fidelity/bench.ts`): accuracy over the task set and perplexity " +
        "change against dense, per technique, knob value and context length, against density (mean over " +
        "haystacks and runs); RAG at its context fraction (values in the `fidelity` table below).",
      "",
    );
  }

  const ceil = ceilings(all);
  const roof: string[] = [];
  for (const [suite, rows] of suites) {
    if (rows.length === 0) continue;
    const groups = groupRows(suite, rows);
    const dir = (opts.source ?? "benchmarks/results/*.json").replace(/\/\*\.json$/, "");
    out.push(`## Suite \`${suite}\``, "", `Source: \`${dir}/${suite}.json\` (${rows.length} rows).`, "");
    out.push(...table(SUITE_HEADER, groups.map(groupLine)), "");
    for (const g of groups) {
      const rf = roofline(g, ceil);
      if (rf) roof.push(rooflineLine(g, rf));
    }
  }

  out.push("## Roofline notes", "");
  if (ceil.size === 0) {
    out.push("No ceiling rows (`copy_tbps`, `matmul_*_tflops`) measured yet: shares are not computed.", "");
  } else {
    const cl: string[] = [];
    for (const [gpu, m] of ceil) {
      for (const [metric, v] of m) cl.push(line([gpu, metric, fmt(v.value), v.backend]));
    }
    out.push(
      "Measured ceilings (best row per GPU and metric, from any suite):",
      "",
      ...table(["gpu", "ceiling", "value", "backend"], cl),
      "",
    );
  }
  if (roof.length === 0) {
    out.push("No kernel rows with counted `flops`/`bytes` yet.", "");
  } else {
    out.push(
      "Per kernel (rows carrying counted `flops` and/or `bytes` of one invocation): achieved rate = count /",
      "median time; share = achieved / best measured ceiling on the same GPU (compute ceiling by dtype: f16 →",
      "best of `matmul_f16_tflops` and `matmul_f16_coop_tflops`, else `matmul_f32_tflops`); roofline bound =",
      "max(FLOPs / compute ceiling, bytes / copy_tbps); time / bound = how far from that bound.",
      "",
      ...table(ROOFLINE_HEADER, roof),
      "",
    );
  }
  return out.join("\n");
};

/** Write a file through a temporary name and a rename (concurrent renders never leave half a file). */
const writeAtomic = (file: string, text: string): void => {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
};

/** Render files: returns the markdown path and the chart path (if drawn). */
export const renderFiles = async (
  resultsDir: string,
  outFile: string,
  chartFile: string,
): Promise<{ markdown: string; chart?: string }> => {
  const { suites, errors } = readAllResultsLenient(resultsDir);
  for (const [f, why] of errors) console.error(`render: ${f} left out: ${why}`);
  const all = [...suites.values()].flat();
  const svg = await renderLatencySvg(all);
  let chartLink: string | undefined;
  if (svg) {
    fs.mkdirSync(path.dirname(chartFile), { recursive: true });
    writeAtomic(chartFile, svg);
    chartLink = path.relative(path.dirname(outFile), chartFile).split(path.sep).join("/");
  }
  // The fidelity chart: beside the latency chart, from the `fidelity` suite's rows.
  const fidelitySvg = await renderFidelitySvg(suites.get("fidelity") ?? []);
  let fidelityChartLink: string | undefined;
  if (fidelitySvg) {
    const f = path.join(path.dirname(chartFile), "fidelity.svg");
    fs.mkdirSync(path.dirname(f), { recursive: true });
    writeAtomic(f, fidelitySvg);
    fidelityChartLink = path.relative(path.dirname(outFile), f).split(path.sep).join("/");
  }
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  const source = path.relative(repoRoot(), resultsDir).split(path.sep).join("/") + "/*.json";
  writeAtomic(outFile, renderMarkdown(suites, { chartLink, fidelityChartLink, source, invalid: errors }));
  return { markdown: outFile, chart: svg ? chartFile : undefined };
};

if (import.meta.main) {
  const root = repoRoot();
  const defaults = {
    results: process.env.LONGCTX_RESULTS_DIR ?? path.join(root, "benchmarks", "results"),
    out: path.join(root, "benchmarks", "RESULTS.md"),
    chart: path.join(root, "benchmarks", "charts", "latency.svg"),
  };
  const help = `deno task bench:render [--results DIR] [--out FILE] [--chart FILE]
  --results DIR  the results folder (default ${
    path.relative(root, defaults.results) || "."
  }; env LONGCTX_RESULTS_DIR)
  --out FILE     the Markdown to write (default ${path.relative(root, defaults.out)})
  --chart FILE   the latency chart to write (default ${path.relative(root, defaults.chart)})`;
  let flags: { results?: string; out?: string; chart?: string; help?: boolean };
  try {
    flags = parseArgs({
      args: process.argv.slice(2),
      options: {
        results: { type: "string" },
        out: { type: "string" },
        chart: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    // one line, as every CLI of the repository (this file imports no longctx module: see results_cli_test.ts)
    console.error(
      `error: ${e instanceof Error ? e.message.split("\n")[0] : e} — fix: run with --help for the flags`,
    );
    process.exit(1);
  }
  if (flags.help) {
    console.log(help);
    process.exit(0);
  }
  const res = await renderFiles(
    path.resolve(flags.results ?? defaults.results),
    path.resolve(flags.out ?? defaults.out),
    path.resolve(flags.chart ?? defaults.chart),
  );
  console.log(
    `wrote ${path.relative(root, res.markdown)}${res.chart ? ` and ${path.relative(root, res.chart)}` : ""}`,
  );
}
