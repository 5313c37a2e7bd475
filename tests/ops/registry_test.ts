/**
 * The technique registry of `@longctx/ops`: lookup and its typed error, the invariants every registered
 * technique must keep, parameter decoding (unknown keys and impossible values named), each technique's
 * `graph` (ports, shape checks, SALE's decode delegated to dense) and the SALE graph's numbers on the CPU
 * backend against `saleCpu`.
 * @module
 */
import { Effect } from "effect";
import {
  type AnyTechnique,
  decodeTechniqueParams,
  graphInputDescs,
  hostTensor,
  inferShapes,
  paramNames,
  resolveStages,
  run,
  stagedTechnique,
  TechniqueError,
} from "@longctx/graph";
import { dense, sale, techniqueByName, techniqueNames, TECHNIQUES } from "@longctx/ops";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { decodeFixture } from "../../plans/testdata/fixtures.ts";
import { assert, test } from "../harness.ts";
import { randn, relErr } from "./ref64.ts";

/** The error `e` fails with (throws when it succeeds). */
const failure = <A, E>(e: Effect.Effect<A, E>): E => Effect.runSync(Effect.flip(e));
const prefillDims = { heads: 4, kvHeads: 2, headDim: 64, seq: 96, kvSeq: 96 };
const decodeDims = { ...prefillDims, seq: 1 };

test("registry: unique names, exact baseline first, lookup by name with a typed error", () => {
  assert.deepEqual(techniqueNames(), ["dense", "sale", "hip", "tokenselect", "squeezed"]);
  assert.equal(new Set(techniqueNames()).size, TECHNIQUES.length);
  assert.ok(!TECHNIQUES[0].sparse, "the first technique is the exact baseline");
  assert.equal(Effect.runSync(techniqueByName("sale")), sale.saleTechnique);
  const e = failure(techniqueByName("quest"));
  assert.ok(e instanceof TechniqueError);
  assert.equal(e.reason, "unknown-technique");
  assert.match(e.message, /"quest"/);
  assert.match(e.hint, /dense, sale, hip, tokenselect/);
  // a test-local registry is searched instead of the default one
  assert.match(failure(techniqueByName("sale", [dense.denseTechnique])).hint, /use one of: dense$/);
});

for (const t of TECHNIQUES) {
  test(`registry invariants: ${t.name}`, () => {
    for (const op of t.operators) {
      // its own operators, or the shared attention operators of `dense` (dense.indexAttn)
      assert.ok(
        op.name.startsWith(`${t.name}.`) || op.name.startsWith("dense."),
        `${op.name} belongs to ${t.name} or is shared`,
      );
    }
    const p = Effect.runSync(decodeTechniqueParams(t, {}));
    assert.ok(typeof p === "object" && p !== null, "every parameter has a default");
    if (t.knob) {
      assert.ok(paramNames(t.params).includes(t.knob.param), `knob ${t.knob.param} is a parameter`);
      assert.ok(t.knob.values.length >= 2, "the knob sweep has at least two values");
      for (const v of t.knob.values) Effect.runSync(decodeTechniqueParams(t, { [t.knob.param]: v }));
    }
    // a sparse technique scales some stage by density, or its stages' costs are already its sparse costs (the
    // density is its constructed one: TokenSelect's attention over a list of fixed length)
    assert.equal(
      t.sparse,
      t.densityScaled.length > 0 || t.constructedDensity !== undefined,
      "sparse techniques scale some stage by density or have a constructed density",
    );
    if (!t.sparse) assert.equal(t.densityScaled.length, 0, "an exact technique scales nothing");
    assert.ok(t.state.description.length > 0);
    for (const phase of ["prefill", "decode"] as const) {
      assert.ok(t.phases.includes(phase) || t.delegates[phase] !== undefined, `${t.name} covers ${phase}`);
    }
    // its own decode graph's inputs are sized by the attention layout and its graphInputs alone (the planner
    // and calibrate size them so), and the graph infers at those sizes
    if (t.phases.includes("decode")) {
      const dims = { ...decodeDims, kvSeq: 1024 };
      const g = Effect.runSync(t.graph(p, dims, "decode"));
      const descs = Effect.runSync(graphInputDescs(g, dims, t.graphInputs?.dims(p, dims)));
      assert.deepEqual(Object.keys(descs).sort(), g.inputs.map((i) => i.name).sort());
      Effect.runSync(inferShapes(g, descs));
    }
    for (const dtype of ["f32", "f16"] as const) {
      if (!t.phases.includes("prefill")) continue;
      const stages = Effect.runSync(resolveStages(t, p, "prefill", dtype));
      assert.deepEqual(stages.map((s) => s.op.kind), [...t.stages]);
    }
  });
}

test("technique parameters: unknown keys and impossible values fail naming the parameter", () => {
  const t = sale.saleTechnique;
  const cases: [unknown, string, RegExp][] = [
    [{ treshold: 0.1 }, "treshold", /unknown parameter "treshold"/],
    [{ threshold: -1 }, "threshold", /parameter "threshold": .*greater than or equal to 0/],
    [{ blockQ: 1.5 }, "blockQ", /parameter "blockQ"/],
    [{ blockK: 4096 }, "blockK", /parameter "blockK": .*less than or equal to 128/],
    [{ localWindow: "wide" }, "localWindow", /parameter "localWindow": Expected number/],
  ];
  for (const [input, param, re] of cases) {
    const e = failure(decodeTechniqueParams(t, input));
    assert.equal(e.reason, "bad-params");
    assert.equal(e.technique, "sale");
    assert.equal(e.param, param);
    assert.match(e.message, re);
    assert.match(e.hint, /threshold/);
  }
  assert.equal(failure(decodeTechniqueParams(dense.denseTechnique, { threshold: 0.1 })).param, "threshold");
  assert.match(failure(decodeTechniqueParams(t, 3)).message, /sale: invalid parameters/);
  const ok = Effect.runSync(decodeTechniqueParams(t, { threshold: 0.1 }));
  assert.equal(ok.threshold, 0.1);
  assert.equal(ok.blockQ, 64);
});

test("technique graphs: ports, extra outputs, dims checked, unknown phases rejected", () => {
  const dp = Effect.runSync(decodeTechniqueParams(dense.denseTechnique, {}));
  const dg = Effect.runSync(dense.denseTechnique.graph(dp, prefillDims, "prefill"));
  assert.deepEqual(dg.inputs.map((i) => i.name), ["q", "k", "v"]);
  assert.deepEqual(dg.outputs.map((o) => o.name), ["o", "lse"]);
  const sp = Effect.runSync(decodeTechniqueParams(sale.saleTechnique, {}));
  const sg = Effect.runSync(sale.saleTechnique.graph(sp, prefillDims, "prefill", "f16"));
  assert.deepEqual(sg.nodes.map((n) => n.op.name), [
    "sale.quantize.f16",
    "sale.estimate.f16",
    "sale.select",
    "sale.sparseAttn.f16",
  ]);
  assert.deepEqual(sg.outputs.map((o) => o.name), ["o", "lse", "density"]);
  // SALE needs headDim % 8 == 0: the dims are checked by the operators' own shape inference
  const bad = failure(sale.saleTechnique.graph(sp, { ...prefillDims, headDim: 12 }, "prefill"));
  assert.equal(bad._tag, "ShapeError");
  // a technique with neither the phase nor a delegate for it
  const prefillOnly = stagedTechnique({
    ...dense.denseTechnique,
    name: "dense-prefill",
    phases: ["prefill"],
  });
  const e = failure(prefillOnly.graph(dp, decodeDims, "decode"));
  assert.ok(e._tag === "TechniqueError" && e.reason === "unsupported-phase", String(e));
});

test("SALE's decode phase is dense: the delegate, its reason, and the same graph as dense's", () => {
  const d = sale.saleTechnique.delegates.decode!;
  assert.equal(d.technique, dense.denseTechnique);
  assert.match(d.reason, /prefill method \(§3\)/);
  assert.ok(!sale.saleTechnique.phases.includes("decode"));
  // With a decode-capable dense (the planner's fixture operator), SALE's decode graph is that dense graph.
  const denseDecode = stagedTechnique({ ...dense.denseTechnique, operators: [decodeFixture] });
  const saleLike: AnyTechnique = stagedTechnique({
    ...sale.saleTechnique,
    delegates: { decode: { ...d, technique: denseDecode } },
  });
  const sp = Effect.runSync(decodeTechniqueParams(sale.saleTechnique, { scale: 0.125 }));
  const g = Effect.runSync(saleLike.graph(sp, decodeDims, "decode"));
  assert.deepEqual(g.nodes.map((n) => n.op.name), ["dense.decode"]);
  assert.equal(g.name, "dense.decode");
  // SALE's real delegate: dense.attn, which takes kvSeq ≥ seq (bottom-right causal) — the same graph as dense's.
  const real = Effect.runSync(sale.saleTechnique.graph(sp, decodeDims, "decode"));
  const direct = Effect.runSync(
    dense.denseTechnique.graph(
      { ...Effect.runSync(decodeTechniqueParams(dense.denseTechnique, {})), scale: 0.125 },
      decodeDims,
      "decode",
    ),
  );
  assert.deepEqual(real.nodes.map((n) => n.op.name), ["dense.attn"]);
  assert.deepEqual(real.nodes.map((n) => n.op.name), direct.nodes.map((n) => n.op.name));
});

test("SALE technique graph on the CPU backend equals saleCpu (o, lse, density)", async () => {
  const backend = await Effect.runPromise(makeCpuBackend());
  const p = Effect.runSync(
    decodeTechniqueParams(sale.saleTechnique, { blockQ: 16, blockK: 8, localWindow: 16, threshold: 1 }),
  );
  const [H, Hk, S, D] = [4, 2, 237, 64];
  const g = await Effect.runPromise(
    sale.saleTechnique.graph(p, { heads: H, kvHeads: Hk, headDim: D, seq: S, kvSeq: S }, "prefill"),
  );
  const q = randn(H * S * D, S, 2), k = randn(Hk * S * D, S + 1, 2), v = randn(Hk * S * D, S + 2);
  const res = await Effect.runPromise(run(g, backend, {
    q: hostTensor("f32", ["heads", "seq", "headDim"], [H, S, D], q),
    k: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [Hk, S, D], k),
    v: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [Hk, S, D], v),
  }));
  const want = sale.saleCpu(p, q, k, v, H, Hk, S, D);
  const out = res.outputs as Record<string, { data: Float32Array }>;
  assert.ok(relErr(out.o.data, want.o) <= 1e-6, `o ${relErr(out.o.data, want.o)}`);
  assert.deepEqual([...out.density.data], [...want.density]);
  assert.ok(want.density.some((x) => x < 1), "the threshold skipped some blocks");
  await Effect.runPromise(backend.close());
});
