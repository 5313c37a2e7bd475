import { Effect } from "effect";
import { assert, test } from "../../tests/harness.ts";
import {
  evaluateRouting,
  LARA_GAPS,
  LARA_SMALL_MODEL_SHIFT,
  optionKey,
  priorGap,
  route,
  type RouteEvidence,
  type RouteTask,
} from "./route.ts";

const ev = (
  task: RouteTask,
  option: RouteEvidence["option"],
  correct: number,
  tasks: number,
  msPerTask: number,
  group = "g1",
  context = 4096,
): RouteEvidence => ({ model: "smollm2-135m", context, task, option, tasks, correct, msPerTask, group });
const RAG = { kind: "rag" } as const;
const DENSE = { kind: "lc", technique: "dense" } as const;
const SALE = { kind: "lc", technique: "sale", knob: { param: "threshold", value: 0.1 } } as const;
const decide = (task: RouteTask, evidence: RouteEvidence[], model = "smollm2-135m", context = 4096) =>
  Effect.runSync(route({ model, context, task }, evidence));

test("route prior: LaRA's gaps decide without measurements (RAG for unanswerable, LC for comparison)", () => {
  const u = decide("unanswerable", []);
  assert.equal(u.choice.key, "rag");
  assert.equal(u.evidenceContext, undefined);
  assert.match(u.reason, /no measurement: prior only/);
  assert.match(u.reason, /hallucination, 32K row, small-model shift/);
  assert.equal(decide("compare", []).choice.key, "lc:dense");
  // Small-model shift: single-fact location is +0.08 for the mean model, negative for a 135M one.
  assert.equal(decide("single", []).choice.key, "rag");
  assert.equal(decide("single", [], "llama-3.1-70b").choice.key, "lc:dense");
  assert.ok(
    Math.abs(Effect.runSync(priorGap("llama-3.1-70b", 8192, "single")) - LARA_GAPS[32768].location) < 1e-12,
  );
  const small = Effect.runSync(priorGap("smollm2-135m", 131072, "compare"));
  assert.ok(Math.abs(small - (LARA_GAPS[131072].comparison + LARA_SMALL_MODEL_SHIFT[131072])) < 1e-12);
});

test("route evidence: measurements outweigh the prior, pick the technique, and ties go to the faster", () => {
  const e = [ev("unanswerable", DENSE, 5, 6, 9000), ev("unanswerable", RAG, 1, 6, 3000)];
  const d = decide("unanswerable", e);
  assert.equal(d.choice.key, "lc:dense");
  assert.equal(d.evidenceContext, 4096);
  assert.match(d.reason, /5\/6 correct/);
  // A sparse LC option that does better than dense is chosen by name and knob.
  const s = decide("compare", [
    ev("compare", DENSE, 2, 6, 9000),
    ev("compare", SALE, 4, 6, 8000),
    ev("compare", RAG, 0, 6, 3000),
  ]);
  assert.equal(s.choice.key, "lc:sale:threshold=0.1");
  assert.equal(optionKey(s.choice.option), s.choice.key);
  // Equal posteriors: the faster option.
  const t = decide("multi", [ev("multi", DENSE, 1, 4, 9000), ev("multi", SALE, 1, 4, 5000)]);
  const tie = t.options.filter((o) => o.key !== "rag");
  assert.equal(tie[0].key, "lc:sale:threshold=0.1");
});

test("route evidence: the nearest measured context is used; unknown models and bad contexts are typed errors", () => {
  const e = [
    ev("single", DENSE, 6, 6, 9000, "a", 2048),
    ev("single", RAG, 0, 6, 3000, "a", 2048),
    ev("single", DENSE, 0, 6, 9000, "b", 8192),
    ev("single", RAG, 6, 6, 3000, "b", 8192),
  ];
  assert.equal(decide("single", e, "smollm2-135m", 2048).choice.key, "lc:dense");
  assert.equal(decide("single", e, "smollm2-135m", 2500).evidenceContext, 2048);
  assert.equal(decide("single", e, "smollm2-135m", 7000).choice.key, "rag");
  // Another model's evidence is not used.
  assert.equal(decide("single", e, "llama-3.1-70b", 2048).evidenceContext, undefined);
  const bad = Effect.runSync(Effect.flip(route({ model: "gpt-9", context: 2048, task: "single" }, e)));
  assert.equal(bad.reason, "unknown-model");
  // Beyond the model's 8K context LC cannot run, whatever the prior (compare favours LC) or the evidence.
  const long = decide("compare", [ev("compare", DENSE, 6, 6, 9000)], "smollm2-135m", 16384);
  assert.equal(long.choice.key, "rag");
  assert.match(long.reason, /16384 tokens exceed smollm2-135m's 8192-token context/);
  const ctx = Effect.runSync(Effect.flip(route({ model: "smollm2-135m", context: 0, task: "single" }, e)));
  assert.equal(ctx.reason, "bad-request");
});

test("evaluateRouting: held out by group, the route is scored on each group's own outcomes", () => {
  // Two groups where LC wins compare and RAG wins single: routed by the other group, the route gets both.
  const e: RouteEvidence[] = [];
  for (const g of ["a", "b"]) {
    e.push(ev("compare", DENSE, 3, 3, 10000, g), ev("compare", RAG, 0, 3, 2000, g));
    e.push(ev("single", DENSE, 0, 3, 10000, g), ev("single", RAG, 3, 3, 2000, g));
  }
  const r = Effect.runSync(evaluateRouting("smollm2-135m", e));
  assert.deepEqual(r.heldOut.route, { tasks: 12, correct: 12, ms: 2 * (3 * 10000 + 3 * 2000) });
  assert.deepEqual(r.heldOut.lc, { tasks: 12, correct: 6, ms: 12 * 10000 });
  assert.deepEqual(r.heldOut.rag, { tasks: 12, correct: 6, ms: 12 * 2000 });
  assert.equal(r.decisions.length, 4);
  // A group that ran fewer options is routed among those only (here: no sale in group "c").
  const partial = [
    ...e,
    ev("compare", SALE, 3, 3, 1000, "a"),
    ev("compare", DENSE, 0, 3, 10000, "c"),
    ev("compare", RAG, 3, 3, 2000, "c"),
  ];
  const p = Effect.runSync(evaluateRouting("smollm2-135m", partial));
  assert.ok(
    p.decisions.filter((d) => d.group === "c").every((d) =>
      d.decision.options.every((o) => o.key !== "lc:sale:threshold=0.1")
    ),
  );
  // A group missing RAG's or the exact technique's outcome is an error, not a silent skip.
  const missing = Effect.runSync(
    Effect.flip(evaluateRouting("smollm2-135m", [ev("single", RAG, 1, 1, 1, "a")])),
  );
  assert.match(missing.message, /no outcome of lc:dense/);
});
