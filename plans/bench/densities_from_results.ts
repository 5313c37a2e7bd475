/**
 * Turn measured density rows of a benchmark results file (`benchmarks/results/<suite>.json`, rows with
 * `metric: "density"`) into a planner density table (`plans/profiles/density-*.json`).
 *
 *   deno run -A plans/bench/densities_from_results.ts --in benchmarks/results/sale.json \
 *     --model llama-3.1-8b --impl ours-sale --out plans/profiles/density-llama-3.1-8b.json
 *
 * `--model` is the registry id the densities stand for: say in `--source` what the attention came from
 * (the model on a real document, or a documented synthetic generator at that model's head layout); the
 * table keeps it. Rows carry their context (`context`), and optionally `params.layer` and
 * `params.threshold` (else `--threshold`, default 0.004, SALE's default).
 * @module
 */
import { parseArgs } from "node:util";
import { readFileSync, writeFileSync } from "node:fs";
import { Effect } from "effect";
import { decodeDensityTable, type DensitySample, getModel } from "@longctx/plans";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    in: { type: "string" },
    model: { type: "string" },
    impl: { type: "string", default: "ours-sale" },
    pipeline: { type: "string", default: "sale" },
    threshold: { type: "string", default: "0.004" },
    source: { type: "string" },
    out: { type: "string" },
  },
});
if (!a.in || !a.model || !a.out) {
  console.error("usage: --in <results.json> --model <registry id> --out <density.json> [--source text]");
  Deno.exit(2);
}
const model = Effect.runSync(getModel(a.model));
type Row = {
  metric: string;
  value: number;
  context?: number;
  impl?: string;
  params?: Record<string, unknown>;
  commit?: string;
  command?: string;
};
const rows = (JSON.parse(readFileSync(a.in, "utf8")) as Row[]).filter((r) =>
  r.metric === "density" && (r.impl === undefined || r.impl === a.impl) && typeof r.context === "number"
);
const samples: DensitySample[] = rows.map((r) => ({
  pipeline: a.pipeline!,
  model: model.id,
  contextLength: r.context!,
  ...(typeof r.params?.layer === "number" ? { layer: r.params.layer } : {}),
  params: { threshold: typeof r.params?.threshold === "number" ? r.params.threshold : Number(a.threshold) },
  density: r.value,
}));
const commits = [...new Set(rows.map((r) => r.commit).filter(Boolean))].join(", ");
const table = {
  version: 1 as const,
  source:
    `${a.source ?? "benchmark rows"} — ${a.in} (${rows.length} rows; commits ${commits || "unknown"}; ` +
    `command ${rows[0]?.command ?? "unknown"})`,
  date: new Date().toISOString(),
  samples,
};
Effect.runSync(decodeDensityTable(table)); // validate before writing
writeFileSync(a.out, JSON.stringify(table, null, 2) + "\n");
console.error(`wrote ${a.out}: ${samples.length} densities for ${model.id}`);
