import { Effect } from "effect";
import { assert, test } from "../../tests/harness.ts";
import { FIT, OPERATOR_NAMES, syntheticProfile } from "../testdata/fixtures.ts";
import { defaultOperators } from "./registry.ts";
import { compile, compileLayer } from "./compile.ts";
import { plan } from "./plan.ts";
import { decodeProfile, type DensitySample } from "./profile.ts";

const profile = Effect.runSync(
  decodeProfile(syntheticProfile(Object.fromEntries(OPERATOR_NAMES.map((n) => [n, FIT])))),
);
const operators = defaultOperators();
const d = (layer: number, density: number): DensitySample => ({
  pipeline: "sale",
  model: "llama-3.2-1b",
  contextLength: 65536,
  layer,
  params: {},
  density,
});
const densities = Array.from({ length: 16 }, (_, l) => d(l, l === 0 ? 1 : 0.05));
const p = Effect.runSync(plan({ model: "llama-3.2-1b", contextLength: 65536, phase: "prefill" }, {
  profile,
  operators,
  densities,
}));

test("compile: one graph per layer group, stages wired by port name", () => {
  assert.deepEqual(p.groups.map((g) => [g.pipeline, ...g.layers]), [["dense", 0, 1], ["sale", 1, 16]]);
  const gs = Effect.runSync(compile(p, operators));
  assert.equal(gs.length, 2);
  const [dense, sale] = gs.map((g) => g.graph);
  assert.deepEqual(dense.nodes.map((n) => n.op.name), ["dense.attn"]);
  assert.deepEqual(sale.nodes.map((n) => n.op.name), [
    "sale.quantize",
    "sale.estimate",
    "sale.select",
    "sale.sparseAttn",
  ]);
  assert.deepEqual(sale.inputs.map((i) => i.name).sort(), ["k", "q", "v"]);
  assert.deepEqual(sale.outputs.map((o) => o.name), ["o", "lse"]);
  const sparse = sale.nodes[3];
  assert.deepEqual(sparse.inputs.indptr, { node: "sale.select", port: "indptr" });
  assert.deepEqual(sparse.inputs.q, { input: "q" });
  assert.deepEqual(sale.nodes[1].inputs.kScales, { node: "sale.quantize", port: "kScales" });
  const l5 = Effect.runSync(compileLayer(p, operators, 5));
  assert.equal(l5.nodes.length, 4);
});

test("compile: unknown operators, bad parameters and layers outside the model fail with PlanError", () => {
  const e1 = Effect.runSync(Effect.flip(compile(p, operators.filter((o) => o.name === "dense.attn"))));
  assert.equal(e1._tag, "PlanError");
  assert.equal((e1 as { reason: string }).reason, "unknown-operator");
  const bad = {
    ...p,
    groups: [{ ...p.groups[0], stages: [{ ...p.groups[0].stages[0], params: { scale: "x" } }] }],
  };
  const e2 = Effect.runSync(Effect.flip(compile(bad, operators)));
  assert.equal((e2 as { reason: string }).reason, "bad-plan");
  const e3 = Effect.runSync(Effect.flip(compileLayer(p, operators, 16)));
  assert.equal((e3 as { reason: string }).reason, "bad-request");
});
