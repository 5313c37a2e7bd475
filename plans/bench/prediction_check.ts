/**
 * Prediction check: the planner's predicted per-layer latency of dense and SALE against the latencies the
 * SALE speed benchmark measured (`benchmarks/results/sale.json`, rows `latency_ms` with `impl` `ours-dense`
 * / `ours-sale` and `density` per context), on the device of a profile (the target: within ±25 %
 * from 8K to 128K on the H200).
 *
 *   deno run -A plans/bench/prediction_check.ts --profile plans/profiles/h200.json \
 *     [--results benchmarks/results/sale.json] [--model llama-3.1-8b] [--dtype f16] [--write]
 *
 * The SALE prediction is costed at the density the benchmark measured at that context (same run), so
 * this checks the latency model, not the density estimate. `--write` appends rows
 * (`metric: prediction_ratio` = predicted / measured, per context and impl) to
 * `benchmarks/results/plans.json`.
 * @module
 */
import { parseArgs } from "node:util";
import { readFileSync } from "node:fs";
import { Effect } from "effect";
import { defaultOperators, type DensitySample, parseProfile, plan } from "@longctx/plans";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    profile: { type: "string" },
    results: { type: "string", default: "benchmarks/results/sale.json" },
    model: { type: "string", default: "llama-3.1-8b" },
    dtype: { type: "string", default: "f16" },
    write: { type: "boolean", default: false },
  },
});
if (!a.profile) {
  console.error(
    "usage: --profile <device profile json> [--results sale.json] [--model id] [--dtype f16|f32]",
  );
  Deno.exit(2);
}
const profile = Effect.runSync(parseProfile(readFileSync(a.profile, "utf8")));
type Row = { metric: string; value: number; context?: number; impl?: string };
const rows = (JSON.parse(readFileSync(a.results!, "utf8")) as Row[]).filter((r) =>
  typeof r.context === "number"
);
const contexts = [...new Set(rows.map((r) => r.context!))].sort((x, y) => x - y);
const last = (metric: string, impl: string, ctx: number) =>
  rows.filter((r) => r.metric === metric && r.impl === impl && r.context === ctx).at(-1)?.value;

const out: { context: number; impl: string; predictedMs: number; measuredMs: number; ratio: number }[] = [];
for (const ctx of contexts) {
  const density = last("density", "ours-sale", ctx);
  const densities: DensitySample[] = density === undefined
    ? []
    : [{ pipeline: "sale", model: a.model!, contextLength: ctx, params: {}, density }];
  const p = Effect.runSync(Effect.result(plan(
    { model: a.model!, contextLength: ctx, phase: "prefill", dtype: a.dtype as "f32" | "f16" },
    { profile, operators: defaultOperators(), densities },
  )));
  if (p._tag === "Failure") {
    console.error(`${ctx}: ${p.failure.message} (${p.failure.hint})`);
    continue;
  }
  const layers = p.success.model.layers;
  const predicted = {
    "ours-dense": p.success.predicted.denseAttentionMs / layers,
    "ours-sale": (p.success.alternatives.find((x) => x.pipeline === "sale")?.totalMs ?? NaN) / layers,
  };
  for (const [impl, pred] of Object.entries(predicted)) {
    const measured = last("latency_ms", impl, ctx);
    if (measured === undefined || !Number.isFinite(pred)) continue;
    out.push({ context: ctx, impl, predictedMs: pred, measuredMs: measured, ratio: pred / measured });
  }
}
console.table(
  out.map((r) => ({
    ...r,
    predictedMs: r.predictedMs.toFixed(2),
    measuredMs: r.measuredMs.toFixed(2),
    ratio: r.ratio.toFixed(3),
    within25: Math.abs(r.ratio - 1) <= 0.25,
  })),
);
if (a.write && out.length > 0) {
  const { appendRows } = await import("../../benchmarks/lib/results.ts");
  await appendRows(
    "plans",
    out.map((r) => ({
      metric: "prediction_ratio",
      value: r.ratio,
      unit: "x",
      context: r.context,
      model: `${a.model} (${a.dtype})`,
      backend: profile.profile.device.backend,
      impl: r.impl,
      gpu: profile.profile.device.adapter,
      // the profile's device, not this machine (the check itself is arithmetic and runs anywhere)
      driver: profile.profile.device.driver ??
        `${profile.profile.device.backend} (profile ${profile.profile.name})`,
      params: { predictedMs: r.predictedMs, measuredMs: r.measuredMs, profile: profile.profile.name },
      note: "planner prediction / measured latency per layer (target within ±25 %)",
      command:
        `deno run -A plans/bench/prediction_check.ts --profile ${a.profile} --results ${a.results} --write`,
    })),
  );
}
