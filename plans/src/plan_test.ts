import { Effect } from "effect";
import { assert, test } from "../../tests/harness.ts";
import { decodeFixture, FIT, OPERATOR_NAMES, syntheticProfile } from "../testdata/fixtures.ts";
import { defaultOperators } from "./registry.ts";
import { decodePlan, parsePlan, plan, type PlanEnv, type PlanRequest } from "./plan.ts";
import { decodeProfile, type DensitySample } from "./profile.ts";

const profile = Effect.runSync(
  decodeProfile(syntheticProfile(Object.fromEntries(OPERATOR_NAMES.map((n) => [n, FIT])))),
);
const operators = defaultOperators();
const density = (contextLength: number, d: number, layer?: number): DensitySample => ({
  pipeline: "sale",
  model: "llama-3.1-8b",
  contextLength,
  params: { threshold: 0.004 },
  density: d,
  ...(layer === undefined ? {} : { layer }),
});
const env: PlanEnv = { profile, operators, densities: [density(1024, 0.9), density(131072, 0.1)] };
const req: PlanRequest = { model: "llama-3.1-8b", contextLength: 131072, phase: "prefill" };
const run = (r: PlanRequest, e: PlanEnv = env) => Effect.runSync(plan(r, e));
const fail = (r: PlanRequest, e: PlanEnv = env) => Effect.runSync(Effect.flip(plan(r, e)));

test("sparse where it pays: SALE at 128K with a measured density of 0.1", () => {
  const p = run(req);
  assert.equal(p.groups.length, 1);
  const g = p.groups[0];
  assert.equal(g.pipeline, "sale");
  assert.deepEqual(g.layers, [0, 32]);
  assert.deepEqual(g.stages.map((s) => s.operator), [
    "sale.quantize",
    "sale.estimate",
    "sale.select",
    "sale.sparseAttn",
  ]);
  assert.equal(g.stages[3].params.threshold, 0.004);
  assert.equal(g.density, 0.1);
  assert.match(g.reason, /measured density 0\.100/);
  assert.ok(p.predicted.attentionMs < p.predicted.denseAttentionMs);
  const alt = p.alternatives.find((a) => a.pipeline === "sale")!;
  assert.ok(alt.breakEvenDensity! > 0.1 && alt.breakEvenDensity! < 1);
});

test("dense where sparse does not pay: short context with a measured density of 0.9", () => {
  const p = run({ ...req, contextLength: 1024 });
  assert.deepEqual(p.groups.map((g) => g.pipeline), ["dense"]);
  assert.match(p.groups[0].reason, /sale would take .* at measured density 0\.900/);
  assert.ok(Math.abs(p.predicted.attentionMs / p.predicted.denseAttentionMs - 1) < 1e-12);
});

test("crossover comes from the profile: break-even density rises with context length", () => {
  const at = (t: number) =>
    run({ ...req, contextLength: t }).alternatives.find((a) => a.pipeline === "sale")!;
  const d8 = at(8192).breakEvenDensity!;
  const d128 = at(131072).breakEvenDensity!;
  assert.ok(d8 < d128, `${d8} < ${d128}`);
  // A slower sparse kernel (10× per FLOP) moves the crossover down.
  const slow = Effect.runSync(decodeProfile(syntheticProfile({
    "dense.attn": FIT,
    "sale.quantize": FIT,
    "sale.estimate": FIT,
    "sale.select": FIT,
    "sale.sparseAttn": { ...FIT, b: 1e-8 },
  })));
  const dSlow = run(req, { ...env, profile: slow }).alternatives.find((a) => a.pipeline === "sale")!
    .breakEvenDensity!;
  assert.ok(dSlow < d128 / 5, `${dSlow} vs ${d128}`);
});

test("no measured density: dense is kept and the break-even density is reported", () => {
  const p = run(req, { ...env, densities: [] });
  assert.deepEqual(p.groups.map((g) => g.pipeline), ["dense"]);
  assert.match(p.groups[0].reason, /sale unmeasured on llama-3\.1-8b \(pays below density 0\.\d+\)/);
});

test("per-layer densities split the model into layer groups", () => {
  const per = [
    density(131072, 0.95, 0),
    density(131072, 0.95, 1),
    ...Array.from({ length: 30 }, (_, i) => density(131072, 0.05, i + 2)),
  ];
  const p = run(req, { ...env, densities: per });
  assert.deepEqual(p.groups.map((g) => [g.pipeline, ...g.layers]), [["dense", 0, 2], ["sale", 2, 32]]);
});

test("exact budget keeps dense; decode plans dense only", () => {
  assert.deepEqual(run({ ...req, budget: { exact: true } }).groups.map((g) => g.pipeline), ["dense"]);
  const withDecode = Effect.runSync(decodeProfile(syntheticProfile({ "dense.decode": FIT })));
  const d = run({ ...req, phase: "decode" }, {
    ...env,
    profile: withDecode,
    operators: [decodeFixture, ...operators],
  });
  assert.deepEqual(d.groups.map((g) => g.pipeline), ["dense"]);
  assert.equal(d.groups[0].stages[0].operator, "dense.decode");
  assert.ok(!d.alternatives.some((a) => a.pipeline === "sale"), "SALE is prefill-only");
  // Without a dedicated decode operator, dense.attn plans decode: it takes kvSeq ≥ seq (bottom-right causal).
  const dd = run({ ...req, phase: "decode" });
  assert.deepEqual(dd.groups.map((g) => g.pipeline), ["dense"]);
  assert.equal(dd.groups[0].stages[0].operator, "dense.attn");
  assert.ok(dd.groups[0].msPerLayer > 0);
});

test("invalid requests: context beyond the limit, bad numbers, unknown model, unprofiled dense", () => {
  const long = fail({ ...req, model: "smollm2-135m", contextLength: 16384 });
  assert.equal(long.reason, "context-too-long");
  assert.match(long.hint, /at most 8192/);
  assert.equal(fail({ ...req, contextLength: 0 }).reason, "bad-request");
  assert.equal(fail({ ...req, contextLength: 1.5 }).reason, "bad-request");
  assert.equal(fail({ ...req, budget: { latencyMs: -1 } }).reason, "bad-request");
  assert.equal(fail({ ...req, model: "gpt-5" }).reason, "unknown-model");
  const empty = Effect.runSync(decodeProfile(syntheticProfile({})));
  const np = fail(req, { ...env, profile: empty });
  assert.equal(np.reason, "not-profiled");
  assert.match(np.hint, /calibrate/);
});

test("unsatisfiable budgets name the best achievable value", () => {
  const best = run(req).predicted;
  const lat = fail({ ...req, budget: { latencyMs: best.attentionMs / 2 } });
  assert.equal(lat.reason, "unsatisfiable-budget");
  assert.match(lat.hint, /at least/);
  const mem = fail({ ...req, budget: { memoryBytes: best.memory.totalBytes / 2 } });
  assert.equal(mem.reason, "unsatisfiable-budget");
  assert.match(mem.message, /GiB/);
  // A budget that fits passes.
  assert.ok(
    run({
      ...req,
      budget: { latencyMs: best.attentionMs * 1.01, memoryBytes: best.memory.totalBytes * 1.01 },
    }),
  );
});

test("plans are JSON that round-trips through the versioned schema", () => {
  const p = run(req);
  const back = Effect.runSync(parsePlan(JSON.stringify(p)));
  assert.deepEqual(back, p);
});

test("malformed plan files fail with bad-plan and a hint", () => {
  const p = JSON.parse(JSON.stringify(run(req)));
  const cases: [unknown, RegExp][] = [
    [{ ...p, version: 99 }, /version 99/],
    [{ ...p, phase: "train" }, /malformed/],
    [{ ...p, groups: [{ ...p.groups[0], layers: [0, 10] }] }, /cover 10 layers/],
    [{ ...p, groups: [{ ...p.groups[0], layers: [1, 32] }] }, /in order/],
    [[], /malformed/],
  ];
  for (const [doc, re] of cases) {
    const e = Effect.runSync(Effect.flip(decodePlan(doc)));
    assert.equal(e.reason, "bad-plan");
    assert.match(e.message, re);
    assert.ok(e.hint.length > 0);
  }
  assert.equal(Effect.runSync(Effect.flip(parsePlan("{"))).reason, "bad-plan");
});

test("planning is fast (sanity bound; the benchmark measures it)", () => {
  run(req); // warm up
  const t0 = performance.now();
  for (let i = 0; i < 5; i++) run({ ...req, model: "llama-3.1-70b" });
  const ms = (performance.now() - t0) / 5;
  assert.ok(ms < 100, `${ms} ms per plan`);
});

test("dtype f16 plans the *.f16 operators", () => {
  const names = OPERATOR_NAMES.map((n) => (n === "sale.select" ? n : `${n}.f16`));
  const f16 = Effect.runSync(decodeProfile(syntheticProfile(Object.fromEntries(names.map((n) => [n, FIT])))));
  const p = run({ ...req, dtype: "f16" }, { ...env, profile: f16 });
  assert.equal(p.dtype, "f16");
  assert.deepEqual(p.groups[0].stages.map((s) => s.operator), [
    "sale.quantize.f16",
    "sale.estimate.f16",
    "sale.select",
    "sale.sparseAttn.f16",
  ]);
  // The f32 profile has no f16 kernels: a typed error naming the missing measurement.
  assert.equal(fail({ ...req, dtype: "f16" }).reason, "not-profiled");
});

test("without dtype the plan follows the profile: f16 when only f16 was measured, f32 when f32 was", () => {
  const names = OPERATOR_NAMES.map((n) => (n === "sale.select" ? n : `${n}.f16`));
  const f16 = Effect.runSync(decodeProfile(syntheticProfile(Object.fromEntries(names.map((n) => [n, FIT])))));
  const p16 = run(req, { ...env, profile: f16 });
  assert.equal(p16.dtype, "f16");
  assert.ok(
    p16.groups.every((g) =>
      g.stages.every((s) => s.operator === "sale.select" || s.operator.endsWith(".f16"))
    ),
  );
  assert.equal(run(req).dtype, "f32");
  const both = Effect.runSync(
    decodeProfile(syntheticProfile(Object.fromEntries([...OPERATOR_NAMES, ...names].map((n) => [n, FIT])))),
  );
  assert.equal(run(req, { ...env, profile: both }).dtype, "f32");
  // an explicit dtype still wins
  assert.equal(run({ ...req, dtype: "f16" }, { ...env, profile: both }).dtype, "f16");
});
