/**
 * Turn measured density rows of a benchmark results file (`benchmarks/results/<suite>.json`) into a planner
 * density table (`plans/profiles/density-*.json`).
 *
 *   deno run -A plans/bench/densities_from_results.ts --in benchmarks/results/sale.json \
 *     --model llama-3.1-8b --impl ours-sale --out plans/profiles/density-llama-3.1-8b.json
 *
 *   # Squeezed Attention's KV budget per threshold percentile (flat lookup, per-head GQA), added to a table
 *   deno run -A plans/bench/densities_from_results.ts --in benchmarks/results/squeezed_fidelity.json \
 *     --model smollm2-135m --pipeline squeezed --impl squeezed --metric kv_budget \
 *     --keys percentile,percentClusters,obsWindow --where gqa=head \
 *     --merge plans/profiles/density-smollm2-135m.json --out plans/profiles/density-smollm2-135m.json
 *
 * `--model` is the registry id the densities stand for: say in `--source` what the attention came from
 * (the model on a real document, or a documented synthetic generator at that model's head layout); the
 * table keeps it. Rows are those of `--metric` (default `density`) and `--impl`, and of every `--where k=v`
 * (a row parameter's value as text: string parameters such as `gqa`, which a density sample cannot key);
 * their context is `context` (else `params.tokens`), their layer `params.layer` when present. A sample's
 * parameters are the row's numeric `--keys` (default `threshold`, else `--threshold`, SALE's default 0.004):
 * the planner matches them against the technique's parameters. `--merge TABLE` keeps TABLE's samples of
 * other pipelines (and its source), replacing those of `--pipeline`.
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
    metric: { type: "string", default: "density" },
    keys: { type: "string", default: "threshold" },
    where: { type: "string", multiple: true, default: [] },
    threshold: { type: "string", default: "0.004" },
    source: { type: "string" },
    merge: { type: "string" },
    out: { type: "string" },
  },
});
if (!a.in || !a.model || !a.out) {
  console.error(
    "usage: --in <results.json> --model <registry id> --out <density.json> [--pipeline p] [--impl i] " +
      "[--metric m] [--keys k1,k2] [--where k=v]… [--merge <table.json>] [--source text]",
  );
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
const where = a.where.map((w) => {
  const i = w.indexOf("=");
  if (i <= 0) {
    console.error(`--where "${w}" is not k=v`);
    Deno.exit(2);
  }
  return [w.slice(0, i), w.slice(i + 1)] as const;
});
const keys = a.keys.split(",").map((k) => k.trim()).filter((k) => k.length > 0);
const contextOf = (r: Row): number | undefined =>
  typeof r.context === "number"
    ? r.context
    : typeof r.params?.tokens === "number"
    ? r.params.tokens
    : undefined;
const rows = (JSON.parse(readFileSync(a.in, "utf8")) as Row[]).filter((r) =>
  r.metric === a.metric && (r.impl === undefined || r.impl === a.impl) && contextOf(r) !== undefined &&
  where.every(([k, v]) => String(r.params?.[k]) === v)
);
const paramsOf = (r: Row): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const k of keys) {
    const v = r.params?.[k];
    if (typeof v === "number") out[k] = v;
    else if (k === "threshold") out[k] = Number(a.threshold); // SALE rows that predate the parameter
    else {
      console.error(`a ${a.metric} row at context ${contextOf(r)} has no numeric parameter "${k}"`);
      Deno.exit(1);
    }
  }
  return out;
};
const samples: DensitySample[] = rows.map((r) => ({
  pipeline: a.pipeline!,
  model: model.id,
  contextLength: contextOf(r)!,
  ...(typeof r.params?.layer === "number" ? { layer: r.params.layer } : {}),
  params: paramsOf(r),
  density: r.value,
}));
const commits = [...new Set(rows.map((r) => r.commit).filter(Boolean))].join(", ");
const source = `${a.source ?? "benchmark rows"} — ${a.metric} rows of ${a.in}` +
  (a.impl ? ` (impl ${a.impl}${where.map(([k, v]) => `, ${k} ${v}`).join("")})` : "") +
  ` (${rows.length} rows; commits ${commits || "unknown"}; command ${rows[0]?.command ?? "unknown"})`;
const kept = a.merge
  ? Effect.runSync(decodeDensityTable(JSON.parse(readFileSync(a.merge, "utf8"))))
  : undefined;
const others = kept ? kept.samples.filter((s) => s.pipeline !== a.pipeline) : [];
const table = {
  version: 1 as const,
  source: kept && others.length > 0
    ? `${
      kept.source.split(" || ")
        .filter((s) => !s.startsWith(`${a.pipeline}: `)).join(" || ")
    } || ${a.pipeline}: ${source}`
    : source,
  date: new Date().toISOString(),
  samples: [...others, ...samples],
};
Effect.runSync(decodeDensityTable(table)); // validate before writing
writeFileSync(a.out, JSON.stringify(table, null, 2) + "\n");
console.error(
  `wrote ${a.out}: ${samples.length} ${a.pipeline} densities for ${model.id}` +
    (others.length > 0 ? ` (+ ${others.length} kept from ${a.merge})` : ""),
);
