/**
 * The planner's RAG-or-LC route from a measured table: reads `bench fidelity` rows
 * (`benchmarks/results/fidelity.json`), prints the route per (context length, task type) with its reason, and
 * how the route does against always-LC and always-RAG on those tasks (held out by haystack, and in-sample).
 *
 *   deno run -A plans/bench/route_from_results.ts [--in benchmarks/results/fidelity.json] [--model smollm2-135m]
 *     [--context 2048,4096,8192] [--prior-tasks 4]
 *
 * Without `--context`, the measured context lengths. A context without measurements is routed by the
 * nearest measured one (or by LaRA's prior alone when the model has none).
 * @module
 */
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import process from "node:process";
import { Cause, Effect, Exit } from "effect";
import { evaluateRouting, optionKey, route, ROUTE_TASKS, routeEvidenceFromRows } from "@longctx/plans";

const die = (message: string, hint: string): never => {
  console.error(`error: ${message} — fix: ${hint}`);
  return process.exit(2);
};
const a = (() => {
  try {
    return parseArgs({
      args: process.argv.slice(2),
      strict: true,
      options: {
        in: { type: "string", default: "benchmarks/results/fidelity.json" },
        model: { type: "string", default: "smollm2-135m" },
        context: { type: "string" },
        "prior-tasks": { type: "string", default: "4" },
        help: { type: "boolean", default: false },
      },
    }).values;
  } catch (e) {
    return die(
      String(e instanceof Error ? e.message : e),
      "see the module doc of plans/bench/route_from_results.ts",
    );
  }
})();
if (a.help) {
  console.log(
    "route_from_results [--in benchmarks/results/fidelity.json] [--model smollm2-135m] [--context L,L…] [--prior-tasks 4]",
  );
  process.exit(0);
}
const must = <A, E>(e: Effect.Effect<A, E>): A => {
  const r = Effect.runSyncExit(e);
  if (Exit.isSuccess(r)) return r.value;
  const x = Cause.squash(r.cause) as { message?: string; hint?: string };
  return die(x.message ?? String(x), x.hint ?? "see the module doc");
};
let rows: unknown;
try {
  rows = JSON.parse(readFileSync(a.in, "utf8"));
} catch (e) {
  die(
    `cannot read --in ${a.in}: ${e instanceof Error ? e.message : e}`,
    "run `deno task bench:fidelity` first",
  );
}
if (!Array.isArray(rows)) {
  die(`--in ${a.in} is not a JSON array of rows`, "pass a benchmarks/results/*.json file");
}
const evidence = routeEvidenceFromRows(rows as never[]);
const priorTasks = Number(a["prior-tasks"]);
if (!(priorTasks >= 0)) die(`--prior-tasks ${a["prior-tasks"]} must be a number ≥ 0`, "e.g. --prior-tasks 4");
const contexts = a.context
  ? a.context.split(",").map(Number)
  : [...new Set(evidence.map((e) => e.context))].sort((x, y) => x - y);
if (contexts.length === 0) {
  die(`no route evidence in ${a.in} and no --context`, "pass --context 4096 for the prior alone");
}
console.log(
  `route for ${a.model} (${evidence.length} measured cells in ${a.in}; prior weight ${priorTasks} tasks):`,
);
for (const context of contexts) {
  for (const task of ROUTE_TASKS) {
    const d = must(route({ model: a.model, context, task }, evidence, { priorTasks }));
    console.log(
      `  ${String(context).padStart(6)} ${task.padEnd(13)} → ${
        optionKey(d.choice.option).padEnd(24)
      } ${d.reason}`,
    );
  }
}
if (evidence.some((e) => e.option.kind === "rag")) {
  const ev = must(evaluateRouting(a.model, evidence, { priorTasks }));
  const pct = (o: { tasks: number; correct: number }) =>
    `${o.correct}/${o.tasks} (${(100 * o.correct / o.tasks).toFixed(1)} %)`;
  for (const [name, e] of [["held out by haystack", ev.heldOut], ["in-sample", ev.inSample]] as const) {
    console.log(
      `${name}: route ${pct(e.route)} in ${(e.route.ms / 1000).toFixed(1)} s; always-LC ${pct(e.lc)} in ${
        (e.lc.ms / 1000).toFixed(1)
      } s; always-RAG ${pct(e.rag)} in ${(e.rag.ms / 1000).toFixed(1)} s`,
    );
  }
}
