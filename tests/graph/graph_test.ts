/**
 * Graph builder, type-level wiring checks, validation errors and JSON round-trip.
 * Run: deno test -A tests/graph/graph_test.ts
 */
import { Effect, Exit } from "effect";
import { assert, test } from "../harness.ts";
import {
  type AnyOperator,
  defineGraph,
  fromJSON,
  graph,
  GraphError,
  type GraphJSON,
  operatorRegistry,
  ParamsError,
  type Port,
  portTypes,
  run,
  ShapeError,
  tensorType,
  toJSON,
} from "../../graph/mod.ts";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import {
  addOp,
  denseAttnOp,
  estimateOp,
  matmulOp,
  quantizeOp,
  randomTensor,
  selectOp,
  softmaxOp,
  sparseAttnOp,
  testOps,
} from "./test_ops.ts";

const failure = <A, E>(eff: Effect.Effect<A, E>): E => {
  const exit = Effect.runSyncExit(eff);
  if (Exit.isSuccess(exit)) throw new Error("expected a failure, got success");
  const e = exit.cause.reasons.find((r) => r._tag === "Fail");
  if (!e || e._tag !== "Fail") throw new Error(`expected a typed failure, got ${String(exit.cause)}`);
  return e.error;
};

test("type-level: mis-wired ports are TypeScript errors; the same wiring fails the build when types are loosened", () => {
  const g = graph("miswired");
  const q = g.input("q", portTypes.q);
  const k = g.input("k", portTypes.kv);
  const v = g.input("v", portTypes.kv);
  const qz = g.add(quantizeOp, { blockSize: 4 }, { q, k });
  // @ts-expect-error dims: q is f32[heads,seq,headDim], port k wants f32[kvHeads,kvSeq,headDim]
  g.add(denseAttnOp, {}, { q, k: q, v });
  // @ts-expect-error dtype: qq is int4[heads,seq,headDim], port q wants f32[heads,seq,headDim]
  g.add(denseAttnOp, {}, { q: qz.qq, k, v });
  // @ts-expect-error a missing input port
  g.add(denseAttnOp, {}, { q, k });
  // @ts-expect-error parameters are typed too
  g.add(quantizeOp, { blockSize: "4" }, { q, k });
  const lse = g.input("lse", portTypes.lse);
  const b = g.input("b", tensorType("f32", ["inner", "cols"]));
  // @ts-expect-error matmul wants a: [rows, inner]; a [heads, seq] tensor does not fit
  g.add(matmulOp, {}, { a: lse, b });
  // Correct wiring type-checks.
  const ok: Port<"f32", readonly ["heads", "seq", "headDim"]> = g.add(denseAttnOp, {}, { q, k, v }).o;
  assert.deepEqual(ok.dims, ["heads", "seq", "headDim"]);

  // Loosened (as a dynamic caller would be): the build names both ends.
  const h = graph("loose");
  const hq = h.input("q", portTypes.q);
  const hk = h.input("k", portTypes.kv);
  const hv = h.input("v", portTypes.kv);
  // deno-lint-ignore no-explicit-any
  const a = h.add(denseAttnOp as AnyOperator, {}, { q: hq, k: hq as any, v: hv }, "attn");
  h.output("o", a.o);
  const e = failure(h.build());
  if (!(e instanceof GraphError)) throw new Error(`expected a GraphError, got ${e}`);
  assert.equal(e.reason, "type-mismatch");
  assert.equal(e.from, "input:q");
  assert.equal(e.to, "attn(test.dense-attn).k");
  assert.match(e.message, /f32\[heads,seq,headDim\].*f32\[kvHeads,kvSeq,headDim\]/);
  void hk;
});

test("invalid graphs: each kind fails with a typed error and a hint", async () => {
  const reg = Effect.runSync(operatorRegistry(testOps as unknown as AnyOperator[]));
  const good = Effect.runSync(
    defineGraph("chain", { x: tensorType("f32", ["rows", "cols"]) }, (g, { x }) => {
      const s = g.add(softmaxOp, {}, { x }, "sm");
      return { y: s.y };
    }),
  );
  const doc = Effect.runSync(toJSON(good));
  const edit = (f: (d: { -readonly [K in keyof GraphJSON]: unknown }) => void): unknown => {
    const d = structuredClone(doc) as { -readonly [K in keyof GraphJSON]: unknown };
    f(d);
    return d;
  };
  type N = { name: string; op: string; params: unknown; inputs: Record<string, unknown> };
  const cases: [string, unknown, string, string][] = [
    ["not JSON", "{oops", "GraphError", "bad-json"],
    ["not a graph document", { hello: 1 }, "GraphError", "bad-json"],
    ["other version", edit((d) => (d.version = 99)), "GraphError", "bad-json"],
    ["unknown operator", edit((d) => ((d.nodes as N[])[0].op = "nope.op")), "GraphError", "unknown-operator"],
    [
      "dangling input (no such graph input)",
      edit((d) => ((d.nodes as N[])[0].inputs = { x: { input: "missing" } })),
      "GraphError",
      "dangling-input",
    ],
    [
      "dangling input (unconnected port)",
      edit((d) => ((d.nodes as N[])[0].inputs = {})),
      "GraphError",
      "dangling-input",
    ],
    [
      "dangling input (no such node)",
      edit((d) => ((d.nodes as N[])[0].inputs = { x: { node: "ghost", port: "y" } })),
      "GraphError",
      "dangling-input",
    ],
    [
      "unknown port",
      edit((d) => ((d.nodes as N[])[0].inputs = { x: { input: "x" }, extra: { input: "x" } })),
      "GraphError",
      "unknown-port",
    ],
    [
      "duplicate node",
      edit((d) => (d.nodes = [(d.nodes as N[])[0], (d.nodes as N[])[0]])),
      "GraphError",
      "duplicate",
    ],
    ["no outputs", edit((d) => (d.outputs = [])), "GraphError", "no-outputs"],
    [
      "type mismatch (dtype)",
      edit((d) => (d.inputs = [{ name: "x", dtype: "i32", dims: ["rows", "cols"] }])),
      "GraphError",
      "type-mismatch",
    ],
    [
      "cycle",
      edit((d) => {
        d.nodes = [
          { name: "a", op: "test.softmax", params: {}, inputs: { x: { node: "b", port: "y" } } },
          { name: "b", op: "test.softmax", params: {}, inputs: { x: { node: "a", port: "y" } } },
        ];
        d.outputs = [{ name: "y", from: { node: "b", port: "y" } }];
      }),
      "GraphError",
      "cycle",
    ],
    [
      "bad params",
      edit((
        d,
      ) => ((d.nodes as N[])[0] = {
        ...(d.nodes as N[])[0],
        op: "test.quantize",
        params: { blockSize: -1 },
      })),
      "ParamsError",
      "",
    ],
  ];
  for (const [name, input, tag, reason] of cases) {
    const e = failure(fromJSON(input, reg)) as GraphError | ParamsError;
    assert.equal(e._tag, tag, `${name}: ${e._tag} ${e.message}`);
    if (e._tag === "GraphError") assert.equal(e.reason, reason, `${name}: ${e.message}`);
    assert.ok(e.hint.length > 10, `${name}: hint`);
    console.log(`  ${name}: ${e._tag}${e._tag === "GraphError" ? `(${e.reason})` : ""}: ${e.message}`);
  }
  const cyc = failure(fromJSON(cases.find((c) => c[0] === "cycle")![1], reg)) as GraphError;
  assert.match(
    cyc.message,
    /a\(test\.softmax\) -> b\(test\.softmax\) -> a|b\(test\.softmax\) -> a\(test\.softmax\) -> b/,
  );

  // Builder-side errors: bad params (typed value out of the schema's range), foreign ports.
  const g = graph("p");
  const q = g.input("q", portTypes.q);
  const k = g.input("k", portTypes.kv);
  const z = g.add(quantizeOp, { blockSize: 0 }, { q, k });
  g.output("s", z.qScales);
  assert.equal(failure(g.build())._tag, "ParamsError");
  const other = graph("other");
  const g2 = graph("g2");
  const k2 = g2.input("k", portTypes.kv);
  g2.add(quantizeOp, { blockSize: 4 }, { q: other.input("q", portTypes.q), k: k2 });
  const fe = failure(g2.build());
  assert.ok(fe instanceof GraphError && fe.reason === "dangling-input", fe.message);

  // Shape errors at build time: every input has a fixed shape, and infer rejects them.
  const bt = failure(defineGraph(
    "fixed-bad",
    { a: portTypes.q, b: portTypes.q },
    (gg, { a, b }) => ({ c: gg.add(addOp, { alpha: 1 }, { a, b }, "sum").c }),
    { a: [2, 3, 8], b: [2, 4, 8] },
  ));
  assert.ok(bt instanceof ShapeError && /node sum\(test\.add\)/.test(bt.message), String(bt));
  // Shape errors at run time: wrong shape for a fixed-shape input; infer rejecting inputs.
  const cpu = await Effect.runPromise(makeCpuBackend());
  const fixed = Effect.runSync(defineGraph(
    "fixed",
    { a: portTypes.q, b: portTypes.q },
    (gg, { a, b }) => ({ c: gg.add(addOp, { alpha: 1 }, { a, b }).c }),
    { a: [2, 3, 8] },
  ));
  const se = await Effect.runPromise(Effect.flip(
    run(fixed, cpu, {
      a: randomTensor(portTypes.q.dims, [2, 4, 8], 1),
      b: randomTensor(portTypes.q.dims, [2, 4, 8], 2),
    }),
  ));
  assert.ok(se instanceof ShapeError && /fixes \[2,3,8\]/.test(se.message), String(se));
  const se2 = await Effect.runPromise(Effect.flip(
    run(fixed, cpu, {
      a: randomTensor(portTypes.q.dims, [2, 3, 8], 1),
      b: randomTensor(portTypes.q.dims, [2, 5, 8], 2),
    }),
  ));
  assert.ok(se2 instanceof ShapeError && /node test\.add\(test\.add\)/.test(se2.message), String(se2));
  assert.deepEqual(cpu.live(), { buffers: 0, bytes: 0 });
});

test("JSON round-trip of a multi-operator graph (SALE-shaped chain + dense branch + merge-free outputs)", async () => {
  const built = Effect.runSync(defineGraph(
    "sale-prefill",
    { q: portTypes.q, k: portTypes.kv, v: portTypes.kv },
    (g, { q, k, v }) => {
      const z = g.add(quantizeOp, { blockSize: 8 }, { q, k }, "quantize");
      const s = g.add(estimateOp, { blockSize: 8 }, { q, k, ...z }, "estimate");
      const m = g.add(selectOp, { threshold: 2, sinkBlocks: 1, localBlocks: 1 }, s, "select");
      const a = g.add(
        sparseAttnOp,
        { blockSize: 8 },
        { q, k, v, indptr: m.indptr, indices: m.indices },
        "sparse",
      );
      const d = g.add(denseAttnOp, { scale: 0.125 }, { q, k, v }, "dense");
      const diff = g.add(addOp, { alpha: -1 }, { a: a.o, b: d.o }, "diff");
      return { o: a.o, lse: a.lse, diff: diff.c, indptr: m.indptr };
    },
    { q: [3, 24, 16] },
  ));
  const reg = Effect.runSync(operatorRegistry(testOps as unknown as AnyOperator[]));
  const doc = Effect.runSync(toJSON(built));
  const text = JSON.stringify(doc);
  const back = Effect.runSync(fromJSON(text, reg));
  assert.deepEqual(Effect.runSync(toJSON(back)), doc, "toJSON(fromJSON(toJSON(g))) == toJSON(g)");
  assert.equal(back.nodes.length, 6);
  assert.deepEqual(back.nodes.map((n) => n.op.name), built.nodes.map((n) => n.op.name));
  assert.deepEqual(doc.inputs[0].shape, [3, 24, 16]);
  assert.equal(doc.version, 1);
  // Same results from the original and the reloaded graph.
  const cpu = await Effect.runPromise(makeCpuBackend());
  const inputs = {
    q: randomTensor(portTypes.q.dims, [3, 24, 16], 11),
    k: randomTensor(portTypes.kv.dims, [1, 24, 16], 12),
    v: randomTensor(portTypes.kv.dims, [1, 24, 16], 13),
  };
  const r1 = await Effect.runPromise(run(built, cpu, inputs));
  const r2 = await Effect.runPromise(run(back, cpu, inputs));
  assert.deepEqual([...r2.outputs.o.data], [...r1.outputs.o.data]);
  assert.deepEqual([...r2.outputs.indptr.data], [...r1.outputs.indptr.data]);
  assert.deepEqual(cpu.live(), { buffers: 0, bytes: 0 });
  console.log(
    `  ${text.length} bytes of JSON, ${back.nodes.length} nodes: ${back.nodes.map((n) => n.name).join(" ")}`,
  );
});
