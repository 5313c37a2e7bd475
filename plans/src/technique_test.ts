/**
 * The planner through the technique registry: plans unchanged for the registered techniques (golden plans
 * from the planner before the registry), techniques of a test-local registry picked up without editing core
 * code, `pipeline` restricting the candidates, and SALE's decode planned as its dense delegate.
 */
import { Effect, Schema } from "effect";
import { stagedTechnique } from "@longctx/graph";
import { dense, sale } from "@longctx/ops";
import { assert, test } from "../../tests/harness.ts";
import { decodeFixture, FIT, OPERATOR_NAMES, syntheticProfile } from "../testdata/fixtures.ts";
import { goldenPlans } from "../testdata/golden.ts";
import golden from "../testdata/golden-plans.json" with { type: "json" };
import * as plans from "../mod.ts";
import { defaultOperators } from "./registry.ts";
import { plan, type PlanEnv, type PlanRequest, resolveTechnique } from "./plan.ts";
import { decodeProfile, type DensitySample } from "./profile.ts";

const profile = Effect.runSync(
  decodeProfile(
    syntheticProfile(Object.fromEntries([...OPERATOR_NAMES, "dense.decode"].map((n) => [n, FIT]))),
  ),
);
const operators = defaultOperators();
const density = (pipeline: string, contextLength: number, d: number): DensitySample => ({
  pipeline,
  model: "llama-3.1-8b",
  contextLength,
  params: {},
  density: d,
});
const env: PlanEnv = { profile, operators, densities: [density("sale", 131072, 0.1)] };
const req: PlanRequest = { model: "llama-3.1-8b", contextLength: 131072, phase: "prefill" };
const run = (r: PlanRequest, e: PlanEnv = env) => Effect.runSync(plan(r, e));
const fail = (r: PlanRequest, e: PlanEnv = env) => Effect.runSync(Effect.flip(plan(r, e)));

/** A toy exact technique: dense attention with 32-row query blocks by default — no core code edited. */
const denseBq32 = stagedTechnique({
  ...dense.denseTechnique,
  name: "dense-bq32",
  params: Schema.Struct({
    ...dense.DenseAttnParams.fields,
    blockQ: Schema.Int.check(Schema.isGreaterThanOrEqualTo(16), Schema.isLessThanOrEqualTo(128)).pipe(
      Schema.withDecodingDefaultKey(Effect.succeed(32)),
    ),
  }),
});
/** A toy sparse technique: SALE's operators under another name with a stricter default threshold. */
const saleStrict = stagedTechnique({
  ...sale.saleTechnique,
  name: "sale-strict",
  params: Schema.Struct({
    ...sale.SaleParams.fields,
    threshold: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
      Schema.withDecodingDefaultKey(Effect.succeed(0.05)),
    ),
  }),
});

test("plans of the registered techniques are unchanged (golden plans from the pre-registry planner)", () => {
  assert.deepEqual(goldenPlans(plans), golden);
});

test("a technique of a test-local registry is planned without editing core code", () => {
  const local = [denseBq32, saleStrict];
  const densities = [density("sale-strict", 131072, 0.1)];
  const p = run(req, { ...env, techniques: local, densities });
  assert.deepEqual(p.groups.map((g) => g.pipeline), ["sale-strict"]);
  assert.equal(p.groups[0].stages[3].operator, "sale.sparseAttn");
  assert.equal(p.groups[0].stages[3].params.threshold, 0.05);
  // the toy exact technique is the baseline: its blockQ reaches dense.attn and its cost model
  const exact = run(req, { ...env, techniques: local, densities: [] });
  assert.deepEqual(exact.groups.map((g) => g.pipeline), ["dense-bq32"]);
  assert.equal(exact.groups[0].stages[0].operator, "dense.attn");
  assert.equal(exact.groups[0].stages[0].params.blockQ, 32);
  assert.match(exact.groups[0].reason, /^dense-bq32: .* ms\/layer predicted; sale-strict unmeasured/);
  const registry = run(req, { ...env, densities: [] });
  assert.equal(registry.groups[0].stages[0].params.blockQ, 64);
  assert.notEqual(exact.groups[0].stages[0].flops, registry.groups[0].stages[0].flops);
  // the default registry knows neither toy
  assert.ok(!run(req).alternatives.some((a) => a.pipeline === "sale-strict"));
});

test("pipeline restricts the planner to one technique; unknown names list the registry", () => {
  assert.deepEqual(run({ ...req, pipeline: "sale" }).groups.map((g) => g.pipeline), ["sale"]);
  const d = run({ ...req, pipeline: "dense" });
  assert.deepEqual(d.groups.map((g) => g.pipeline), ["dense"]);
  assert.deepEqual(d.alternatives, [], "sale is not considered");
  const e = fail({ ...req, pipeline: "quest" });
  assert.equal(e.reason, "unknown-technique");
  assert.match(e.message, /"quest"/);
  assert.match(e.hint, /dense, sale/);
  const local = fail({ ...req, pipeline: "sale" }, { ...env, techniques: [denseBq32] });
  assert.match(local.hint, /use one of: dense-bq32$/);
});

test("SALE's decode is planned as dense decode, with SALE's reason", () => {
  const dec = { ...env, operators: [decodeFixture, ...operators] };
  const p = run({ ...req, phase: "decode", pipeline: "sale" }, dec);
  assert.deepEqual(p.groups.map((g) => g.pipeline), ["dense"]);
  assert.equal(p.groups[0].stages[0].operator, "dense.decode");
  assert.match(p.groups[0].reason, /sale decode runs dense: SALE is a prefill method \(§3\)/);
  // without the decode fixture, the delegate plans dense.attn (kvSeq ≥ seq, bottom-right causal)
  const plain = run({ ...req, phase: "decode", pipeline: "sale" });
  assert.equal(plain.groups[0].stages[0].operator, "dense.attn");
  assert.match(plain.groups[0].reason, /sale decode runs dense/);
  // a technique with neither the phase nor a delegate
  const prefillOnly = stagedTechnique({
    ...dense.denseTechnique,
    name: "dense-prefill",
    phases: ["prefill"],
  });
  const e = fail({ ...req, phase: "decode", pipeline: "dense-prefill" }, {
    ...dec,
    techniques: [dense.denseTechnique, prefillOnly],
  });
  assert.equal(e.reason, "bad-request");
  assert.match(e.message, /has no decode phase/);
  assert.match(e.hint, /dense/);
});

test("technique parameters reach the planner's stages; bad ones name the parameter", () => {
  const r = Effect.runSync(resolveTechnique(sale.saleTechnique, operators, "prefill", { threshold: 0.3 }));
  assert.deepEqual(r.ops.map((o) => o.params.threshold), [0.3, 0.3, 0.3, 0.3]);
  const e = Effect.runSync(
    Effect.flip(resolveTechnique(sale.saleTechnique, operators, "prefill", { threshold: -0.5 })),
  );
  assert.equal(e.reason, "bad-request");
  assert.match(e.message, /sale: parameter "threshold"/);
  const u = Effect.runSync(
    Effect.flip(resolveTechnique(dense.denseTechnique, operators, "prefill", { tau: 1 })),
  );
  assert.match(u.message, /dense: unknown parameter "tau"/);
  assert.match(u.hint, /scale, blockQ, workgroupMemory/);
});

test("HiP is planned at its density by construction where none is measured, its first denseLayers dense", () => {
  const fits = Object.fromEntries(
    [...OPERATOR_NAMES, "hip.mask", "dense.indexAttn"].map((n) => [n, FIT]),
  );
  const prof = Effect.runSync(decodeProfile(syntheticProfile(fits)));
  const p = run({ ...req, pipeline: "hip" }, { profile: prof, operators, densities: [] });
  assert.deepEqual(p.groups.map((g) => [g.pipeline, g.layers]), [["dense", [0, 3]], ["hip", [3, 32]]]);
  assert.match(p.groups[0].reason, /hip keeps its first 3 layers dense/);
  assert.match(p.groups[1].reason, /by construction/);
  // the density is HiP's own at 128K: sink + 512 + window keys of ≈ 65K causal keys per query on average
  const d = p.groups[1].density!;
  assert.ok(d > 0.011 && d < 0.013, `density ${d}`);
  // a measured density wins over the constructed one
  const measured = run({ ...req, pipeline: "hip" }, {
    profile: prof,
    operators,
    densities: [{ pipeline: "hip", model: "llama-3.1-8b", contextLength: 131072, params: {}, density: 0.5 }],
  });
  assert.equal(measured.groups.find((g) => g.pipeline === "hip")?.density, 0.5);
});
