/**
 * Pool the traceback bench's rows of several runs over disjoint case sets into one row per metric: TracLLM takes
 * 70–95 s per answer on the H200, so its 24 cases ran in several calls of `traceback_bench.ts --only … --deadline-s`
 * (each call's rows name the cases that ran in `params.caseSet`). A run is the rows of one `date` (one
 * `appendRows`); the runs pooled are those of `--backend` holding rows of `--method`, and every impl of those
 * runs in `--impls` (default `--method` and `random`, the analytic baseline) is pooled: precision and recall weighted by each run's
 * planted-fact cases, the injection metrics by its injection cases, time and forwards per answer by both.
 * Refuses overlapping case sets. Appends the pooled rows (impl `<impl>-pooled`, `params.caseSet`: `pooled
 * indices … of N`, `runs`: the runs' dates and commits) to `benchmarks/results/traceback.json`.
 *
 * Usage: `deno run -A benchmarks/traceback_pool.ts [--backend H200] [--method tracllm] [--no-write]`.
 * @module
 */
import { appendRows, type Row, type RowInput } from "./lib/results.ts";
import { fail, parseFlags } from "./lib/args.ts";

const args = parseFlags("deno run -A benchmarks/traceback_pool.ts [flags]", {
  backend: { kind: "string", default: "H200", help: "rows whose backend contains this" },
  method: { kind: "string", default: "tracllm", help: "pool the runs that ran this method" },
  impls: { kind: "string", default: "tracllm,random", help: "impls of those runs to pool" },
  "no-write": { kind: "switch", help: "print only; append no rows" },
});

const all = JSON.parse(await Deno.readTextFile("benchmarks/results/traceback.json")) as Row[];
const params = (r: Row) => (r.params ?? {}) as Record<string, unknown>;
const indicesOf = (r: Row): { idx: number[]; of: number } | undefined => {
  const m = /^indices ([\d,]+) of (\d+)$/.exec(String(params(r).caseSet ?? ""));
  return m ? { idx: m[1].split(",").map(Number), of: Number(m[2]) } : undefined;
};
const runs = new Map<string, Row[]>();
for (const r of all) {
  if (!String(r.backend).includes(args.backend) || !indicesOf(r)) continue;
  const k = String(r.date);
  runs.set(k, [...(runs.get(k) ?? []), r]);
}
const chosen = [...runs.values()].filter((rs) => rs.some((r) => r.impl === args.method));
if (chosen.length === 0) {
  fail(`no ${args.method} runs on a "${args.backend}" backend`, "check --backend and --method");
}
const seen = new Set<number>();
let total = 0;
for (const rs of chosen) {
  const c = indicesOf(rs.find((r) => r.impl === args.method)!)!;
  total = c.of;
  for (const i of c.idx) {
    if (seen.has(i)) fail(`case ${i} ran in two runs`, "pool runs over disjoint case sets only");
    seen.add(i);
  }
}
const ids = [...seen].sort((a, b) => a - b);
const WEIGHT: Record<string, "cases" | "injections" | "both"> = {
  precision_at_5: "cases",
  recall_at_5: "cases",
  injection_in_top_5: "injections",
  injection_first: "injections",
  ms_per_answer: "both",
  forwards_per_answer: "both",
};
const out: RowInput[] = [];
const impls = args.impls.split(",").map((s) => s.trim()).filter((s) => s !== "");
for (const impl of impls) {
  for (const [metric, by] of Object.entries(WEIGHT)) {
    let sum = 0, w = 0;
    let last: Row | undefined;
    for (const rs of chosen) {
      const r = rs.find((x) => x.impl === impl && x.metric === metric);
      if (!r) continue;
      const p = params(r),
        n = by === "cases"
          ? Number(p.cases)
          : by === "injections"
          ? Number(p.injections)
          : Number(p.cases) + Number(p.injections);
      sum += r.value * n;
      w += n;
      last = r;
    }
    if (!last || w === 0) continue;
    const runsUsed = chosen.filter((rs) => rs.some((x) => x.impl === impl));
    const cases = runsUsed.reduce((a, rs) => a + Number(params(rs.find((x) => x.impl === impl)!).cases), 0);
    const injections = runsUsed.reduce(
      (a, rs) => a + Number(params(rs.find((x) => x.impl === impl)!).injections),
      0,
    );
    const { date: _d, commit: _c, command: _m, run: _r, ...rest } = last;
    out.push({
      ...rest,
      impl: `${impl}-pooled`,
      value: sum / w,
      params: {
        ...params(last),
        cases,
        injections,
        caseSet: `pooled indices ${ids.join(",")} of ${total}`,
        runs: runsUsed.map((rs) => `${rs[0].date} ${rs[0].commit}`).join("; "),
      },
    } as RowInput);
  }
}
for (const r of out) {
  const p = r.params as Record<string, unknown>;
  console.log(
    `${String(r.impl).padEnd(10)} ${r.metric.padEnd(20)} ${
      r.value.toFixed(4)
    }  (${p.cases} + ${p.injections})`,
  );
}
console.log(`${chosen.length} runs, ${ids.length} of ${total} cases`);
if (!args["no-write"]) {
  await appendRows("traceback", out);
  console.error(`${out.length} rows → benchmarks/results/traceback.json`);
}
