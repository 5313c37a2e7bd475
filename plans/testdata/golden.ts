/**
 * Golden plans: requests whose plans (`golden-plans.json`, written by `deno run -A plans/testdata/golden.ts
 * <plans mod.ts>` from the planner before the technique registry) must not change when the planner's
 * internals do. Synthetic profile and densities only (no built-in measurement that a recalibration moves).
 * @module
 */
import { Effect } from "effect";
import type { DensitySample, PlanRequest } from "../mod.ts";
import { TECHNIQUES } from "@longctx/ops";
import { decodeFixture, FIT, OPERATOR_NAMES, syntheticProfile } from "./fixtures.ts";

/** The techniques the golden plans were recorded with (later techniques are planned by their own tests). */
const GOLDEN_TECHNIQUES = TECHNIQUES.filter((t) => t.name === "dense" || t.name === "sale");

/** Every fixture operator name at f32 and f16, and the decode fixture: all fitted with `FIT`. */
export const goldenProfile = syntheticProfile(
  Object.fromEntries(
    [...OPERATOR_NAMES, ...OPERATOR_NAMES.map((n) => `${n}.f16`), "dense.decode"].map((n) => [n, FIT]),
  ),
);

const d = (model: string, contextLength: number, density: number, layer?: number): DensitySample => ({
  pipeline: "sale",
  model,
  contextLength,
  params: {},
  density,
  ...(layer === undefined ? {} : { layer }),
});

/** Measured densities of the golden requests. */
export const goldenDensities: readonly DensitySample[] = [
  d("llama-3.1-8b", 8192, 0.5),
  d("llama-3.1-8b", 131072, 0.1),
  ...Array.from({ length: 16 }, (_, l) => d("llama-3.2-1b", 65536, l < 3 ? 0.95 : 0.04, l)),
];

/** The golden requests (decode ones plan with the decode fixture in front of the operators). */
export const goldenRequests: readonly PlanRequest[] = [
  { model: "llama-3.1-8b", contextLength: 131072, phase: "prefill" },
  { model: "llama-3.1-8b", contextLength: 131072, phase: "prefill", dtype: "f16" },
  { model: "llama-3.1-8b", contextLength: 8192, phase: "prefill" },
  { model: "llama-3.1-8b", contextLength: 1024, phase: "prefill" },
  { model: "llama-3.1-8b", contextLength: 131072, phase: "prefill", budget: { exact: true } },
  { model: "llama-3.1-8b", contextLength: 131072, phase: "prefill", budget: { latencyMs: 1 } },
  { model: "llama-3.2-1b", contextLength: 65536, phase: "prefill" },
  { model: "smollm2-135m", contextLength: 4096, phase: "prefill" },
  { model: "llama-3.1-8b", contextLength: 32768, phase: "decode" },
  { model: "llama-3.1-8b", contextLength: 32768, phase: "decode", dtype: "f16" },
];

/** Each request's plan, or its error as `{ error: reason, message, hint }`, from the planner at `mod`. */
export const goldenPlans = (mod: typeof import("../mod.ts")): unknown[] => {
  const profile = Effect.runSync(mod.decodeProfile(goldenProfile));
  return goldenRequests.map((req) => {
    const operators = req.phase === "decode"
      ? [decodeFixture, ...mod.defaultOperators()]
      : mod.defaultOperators();
    const r = Effect.runSync(
      Effect.result(
        mod.plan(req, { profile, operators, densities: goldenDensities, techniques: GOLDEN_TECHNIQUES }),
      ),
    );
    return r._tag === "Success"
      ? r.success
      : { error: r.failure.reason, message: r.failure.message, hint: r.failure.hint };
  });
};

if (import.meta.main) {
  const mod = await import(Deno.args[0] ? new URL(Deno.args[0], `file://${Deno.cwd()}/`).href : "../mod.ts");
  console.log(JSON.stringify(goldenPlans(mod), null, 2));
}
