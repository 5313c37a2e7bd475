/**
 * Planning-time benchmark (tinybench): `plan()` for several models and context lengths with the real
 * `@longctx/ops` operators, including the worst case of per-layer densities on Llama-3.1-70B (80 layers,
 * every layer costed for dense and SALE). The target is < 10 ms per plan.
 *
 *   deno run -A plans/bench/plan_bench.ts            # print the table
 *   deno run -A plans/bench/plan_bench.ts --write    # also append rows to benchmarks/results/plans.json
 *
 * The device profile is the hand-written test profile (`plans/testdata/synthetic-profile.json`): planning
 * time does not depend on its numbers, only on the amount of work, which is the same for any profile.
 * @module
 */
import { Effect } from "effect";
import { Bench } from "tinybench";
import { decodeProfile, defaultOperators, type DensitySample, plan, type PlanRequest } from "@longctx/plans";
import profileJson from "../testdata/synthetic-profile.json" with { type: "json" };

const profile = Effect.runSync(decodeProfile(profileJson));
const operators = defaultOperators();
const perLayer = (model: string, layers: number, contextLength: number): DensitySample[] =>
  Array.from({ length: layers }, (_, layer) => ({
    pipeline: "sale",
    model,
    contextLength,
    layer,
    params: {},
    density: layer < 2 ? 0.95 : 0.05 + 0.01 * (layer % 7),
  }));

const cases: { name: string; req: PlanRequest; densities: DensitySample[] }[] = [
  {
    name: "smollm2-135m 8k prefill",
    req: { model: "smollm2-135m", contextLength: 8192, phase: "prefill" },
    densities: [],
  },
  {
    name: "llama-3.1-8b 128k prefill",
    req: { model: "llama-3.1-8b", contextLength: 131072, phase: "prefill" },
    densities: [{ pipeline: "sale", model: "llama-3.1-8b", contextLength: 131072, params: {}, density: 0.1 }],
  },
  {
    name: "llama-3.1-70b 128k prefill, per-layer densities",
    req: { model: "llama-3.1-70b", contextLength: 131072, phase: "prefill" },
    densities: perLayer("llama-3.1-70b", 80, 131072),
  },
];

const bench = new Bench({ time: 500, warmupTime: 100 });
for (const c of cases) {
  bench.add(c.name, () => {
    Effect.runSync(plan(c.req, { profile, operators, densities: c.densities }));
  });
}
await bench.run();
const rows = bench.tasks.map((t) => {
  const r = t.result as unknown as {
    latency: { p50?: number; mean: number; max: number };
    throughput: { mean: number };
  };
  return {
    task: t.name,
    medianMs: r.latency.p50 ?? r.latency.mean,
    meanMs: r.latency.mean,
    maxMs: r.latency.max,
  };
});
console.table(
  rows.map((r) => ({
    ...r,
    medianMs: r.medianMs.toFixed(3),
    meanMs: r.meanMs.toFixed(3),
    maxMs: r.maxMs.toFixed(3),
  })),
);

if (Deno.args.includes("--write")) {
  const { appendRows } = await import("../../benchmarks/lib/results.ts");
  await appendRows(
    "plans",
    rows.map((r) => ({
      metric: "plan_ms",
      value: r.medianMs,
      unit: "ms",
      backend: "cpu",
      model: r.task,
      note: "median wall time of one plan() call (tinybench), target < 10 ms",
      command: "deno run -A plans/bench/plan_bench.ts --write",
    })),
  );
}
