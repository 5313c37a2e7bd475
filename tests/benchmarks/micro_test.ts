/** Micro-benchmark discovery and input synthesis: every exported operator gets inputs its `infer` accepts. */
import { assert, test } from "../harness.ts";
import {
  discoverOperators,
  findOperators,
  isOperator,
  prepare,
  PrepareError,
} from "../../benchmarks/micro/discover.ts";
import { main } from "../../benchmarks/micro/bench.ts";

const small = { heads: 2, kvHeads: 1, seq: 128, kvSeq: 128, headDim: 64, capacity: 128 };

test("discovery: operators from @longctx/ops namespaces, deduplicated by name, non-operators ignored", async () => {
  const { ops, error } = await discoverOperators();
  assert.equal(error, undefined);
  assert.ok(ops.length >= 1, "ops/mod.ts exports at least one operator");
  assert.equal(new Set(ops.map((o) => o.name)).size, ops.length);
  assert.ok(ops.every(isOperator));
  const fake = { ...ops[0], name: "zz.fake" };
  const found = findOperators({ a: { b: [fake, ops[0]] }, c: 3, d: "x", e: new Map([[1, fake]]) });
  assert.deepEqual(found.map((o) => o.name).sort(), [ops[0].name, "zz.fake"].sort());
  assert.ok(!isOperator({ name: "x", kind: "y" }));
});

test("inputs: every discovered operator is prepared (base dims or a producer chain) and infer accepts it", async () => {
  const { ops } = await discoverOperators();
  for (const op of ops) {
    const p = prepare(op, ops, small);
    for (const [port, t] of Object.entries(op.inputs)) {
      assert.equal(p.descs[port].dtype, t.dtype, `${op.name}.${port} dtype`);
      assert.equal(p.inputs[port].data.byteLength > 0, true);
    }
    assert.ok(Object.keys(p.outputs).length > 0, `${op.name} has inferred outputs`);
  }
  // a port nobody produces and without base sizes cannot be made
  const orphan = { ...ops[0], name: "zz.orphan", inputs: { w: { dtype: "i32", dims: ["mystery"] } } };
  assert.throws(() => prepare(orphan as typeof ops[0], ops, small), PrepareError);
});

// The seeded normal inputs (`seededNormals` of @longctx/graph) are tested in graph/src/random_test.ts.

test("bench main: one cheap operator on cpu yields measured rows with cost counts (nothing written)", async () => {
  const { ops } = await discoverOperators();
  const cheapest = ops.map((op) => ({
    op,
    c: op.cost(prepare(op, ops, small).params, prepare(op, ops, small).descs as never),
  }))
    .sort((a, b) => a.c.flops - b.c.flops)[0].op;
  const out = await main([
    "--backends",
    "cpu",
    "--filter",
    cheapest.name,
    "--time",
    "20",
    "--no-write",
    "--dims",
    "seq=128,heads=2,kvHeads=1",
  ]);
  const mine = out.filter((o) => o.op === cheapest.name);
  assert.equal(mine.length, 1);
  assert.equal(mine[0].status, "ok");
  const row = mine[0].rows[0];
  assert.equal(row.metric, "op_latency_ms");
  assert.ok(row.value > 0 && Number.isFinite(row.value));
  assert.ok(row.flops !== undefined && row.bytes !== undefined && row.bytes > 0);
});
