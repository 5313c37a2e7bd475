/**
 * The planner in decode: a cache-decode technique (Squeezed Attention, TokenSelect) competes with dense decode
 * under the prefill rule — chosen only at a measured (or constructed) density and only when faster beyond the
 * fits' error, else dense with the break-even density — costed as the graph its own `graph(p, dims, "decode")`
 * builds (squeezed: `squeezed.lookup` at full cost + `squeezed.attend` × density, at seq 1 against the context).
 *
 * Every device profile here is SYNTHETIC test data (made-up fits, `plans/testdata/fixtures.ts`), never a
 * measurement: dense decode on a device of 1 TFLOP/s and 1 TB/s with 50 µs per launch, the cache-decode
 * operators as fast per FLOP and byte with 5 µs per launch. Densities are made up too, except the test of the
 * built-in table (`plans/profiles/density-smollm2-135m.json`, measured rows of squeezed_fidelity.json).
 */
import { Effect } from "effect";
import { assert, test } from "../../tests/harness.ts";
import { FIT, syntheticProfile } from "../testdata/fixtures.ts";
import { builtinDensities } from "./builtin.ts";
import { compile } from "./compile.ts";
import { defaultOperators } from "./registry.ts";
import { plan, type PlanEnv, type PlanRequest } from "./plan.ts";
import { decodeProfile, type DensitySample, type KernelFit } from "./profile.ts";

/** Made-up fit of the cache-decode operators: FIT's throughput, a tenth of its launch cost. */
const FAST: KernelFit = { ...FIT, a: 0.005 };
const SQUEEZED_OPS = ["squeezed.lookup", "squeezed.attend"];
const TOKENSELECT_OPS = ["tokenselect.select", "tokenselect.compact", "dense.cacheAttn"];
/** A synthetic profile: dense.attn measured in decode with FIT, the named operators with `fit` (decode). */
const synthetic = (ops: readonly string[], fit: KernelFit = FAST, denseFit: KernelFit = FIT) =>
  Effect.runSync(
    decodeProfile(
      syntheticProfile({}, { "dense.attn": denseFit, ...Object.fromEntries(ops.map((n) => [n, fit])) }),
    ),
  );
const profile = synthetic(SQUEEZED_OPS);
const operators = defaultOperators();
/** A made-up squeezed density at the technique's default knob (percentile 0.9). */
const sq = (model: string, contextLength: number, density: number): DensitySample => ({
  pipeline: "squeezed",
  model,
  contextLength,
  params: { percentile: 0.9, percentClusters: 5, obsWindow: 100 },
  density,
});
const env: PlanEnv = { profile, operators, densities: [sq("llama-3.1-8b", 131072, 0.12)] };
const req: PlanRequest = { model: "llama-3.1-8b", contextLength: 131072, phase: "decode" };
const run = (r: PlanRequest, e: PlanEnv = env) => Effect.runSync(plan(r, e));

test("decode: squeezed replaces dense at a measured density (lookup full, attend × density, seq 1)", () => {
  const p = run(req);
  assert.equal(p.phase, "decode");
  assert.deepEqual(p.groups.map((g) => [g.pipeline, ...g.layers]), [["squeezed", 0, 32]]);
  const g = p.groups[0];
  assert.deepEqual(g.stages.map((s) => s.operator), SQUEEZED_OPS);
  assert.equal(g.density, 0.12);
  assert.match(g.reason, /^squeezed: .* ms\/layer at measured density 0\.120 \(mean over layers\) vs dense/);
  // attend is costed at the full cache × the density: Q·K and P·V of 32 heads × 1 query × 128K keys × d 128
  const attend = g.stages[1];
  assert.ok(Math.abs(attend.flops - 4 * 32 * 131072 * 128 * 0.12) < 1, `${attend.flops}`);
  // the lookup is not scaled: one query against clusterCount(131071) = 6548 centroids of each of 8 KV heads
  assert.equal(g.stages[0].params.percentile, 0.9);
  assert.ok(p.predicted.attentionMs < p.predicted.denseAttentionMs / 2);
  const alt = p.alternatives.find((a) => a.pipeline === "squeezed")!;
  assert.ok(alt.breakEvenDensity! > 0.12 && alt.breakEvenDensity! < 1, `${alt.breakEvenDensity}`);
  assert.equal(alt.note, "chosen for 32 of 32 layers");
  assert.deepEqual(p.warnings, []);
});

test("decode: without a measured density dense stays and the break-even density is reported", () => {
  const p = run(req, { ...env, densities: [] });
  assert.deepEqual(p.groups.map((g) => g.pipeline), ["dense"]);
  assert.match(p.groups[0].reason, /squeezed unmeasured on llama-3\.1-8b \(pays below density 0\.\d+\)/);
  const alt = p.alternatives.find((a) => a.pipeline === "squeezed")!;
  assert.ok(alt.breakEvenDensity! > 0 && alt.breakEvenDensity! < 1);
  assert.match(
    alt.note,
    /^no measured density for llama-3\.1-8b; squeezed pays below density 0\.\d{3} at 131072/,
  );
  assert.equal(alt.totalMs, undefined);
  assert.ok(Math.abs(p.predicted.attentionMs / p.predicted.denseAttentionMs - 1) < 1e-12);
});

test("decode with the built-in density table: squeezed for SmolLM2 (measured), dense for Llama-3.1-8B", () => {
  const densities = Effect.runSync(builtinDensities());
  // SmolLM2-135M's KV budget at percentile 0.9 was measured at 7000 tokens (squeezed_fidelity.json)
  const s = run({ model: "smollm2-135m", contextLength: 7000, phase: "decode" }, {
    profile,
    operators,
    densities,
  });
  assert.deepEqual(s.groups.map((g) => g.pipeline), ["squeezed"]);
  assert.ok(s.groups[0].density! > 0.1 && s.groups[0].density! < 0.13, `${s.groups[0].density}`);
  assert.match(s.groups[0].reason, /measured density/);
  // Llama-3.1-8B has no measured squeezed density: dense, with the break-even
  const l = run(req, { profile, operators, densities });
  assert.deepEqual(l.groups.map((g) => g.pipeline), ["dense"]);
  const alt = l.alternatives.find((a) => a.pipeline === "squeezed")!;
  assert.ok(alt.breakEvenDensity! > 0, `${alt.breakEvenDensity}`);
  assert.match(alt.note, /no measured density for llama-3\.1-8b/);
});

test("decode: a squeezed slower than dense at its measured density is not chosen", () => {
  // made-up: squeezed.attend 50× slower per FLOP than dense
  const slow = Effect.runSync(decodeProfile(syntheticProfile({}, {
    "dense.attn": FIT,
    "squeezed.lookup": FAST,
    "squeezed.attend": { ...FAST, b: 5e-8 },
  })));
  const p = run(req, { ...env, profile: slow });
  assert.deepEqual(p.groups.map((g) => g.pipeline), ["dense"]);
  assert.match(p.groups[0].reason, /squeezed would take .* at measured density 0\.120/);
  assert.ok(p.alternatives.find((a) => a.pipeline === "squeezed")!.breakEvenDensity! < 0.12);
});

test("pipeline squeezed plans squeezed decode; its prefill is dense's (the delegate)", () => {
  const p = run({ ...req, pipeline: "squeezed" });
  assert.deepEqual(p.groups.map((g) => g.pipeline), ["squeezed"]);
  assert.deepEqual(p.alternatives.map((a) => a.pipeline), ["squeezed"], "only squeezed against dense");
  const none = run({ ...req, pipeline: "squeezed" }, { ...env, densities: [] });
  assert.deepEqual(none.groups.map((g) => g.pipeline), ["dense"]);
  assert.ok(none.alternatives[0].breakEvenDensity! > 0);
  const pre = run({ ...req, phase: "prefill", pipeline: "squeezed" }, {
    ...env,
    profile: Effect.runSync(decodeProfile(syntheticProfile({ "dense.attn": FIT }))),
  });
  assert.deepEqual(pre.groups.map((g) => g.pipeline), ["dense"]);
  assert.match(
    pre.groups[0].reason,
    /squeezed prefill runs dense: Squeezed Attention prefills the fixed context/,
  );
});

test("decode: an unprofiled cache-decode technique is reported as such (calibrate --phase decode)", () => {
  const p = run(req, { ...env, profile: synthetic([]) });
  assert.deepEqual(p.groups.map((g) => g.pipeline), ["dense"]);
  const alt = p.alternatives.find((a) => a.pipeline === "squeezed")!;
  assert.equal(
    alt.note,
    "not profiled on synthetic: squeezed.lookup, squeezed.attend (run calibrate --phase decode)",
  );
});

test("decode predicts from decode measurements; prefill ignores them; prefill samples in decode warn", () => {
  // made-up: dense.attn 2× slower per byte in decode than its prefill fit says
  const both = Effect.runSync(
    decodeProfile(syntheticProfile({ "dense.attn": FIT }, { "dense.attn": { ...FIT, c: 2e-9 } })),
  );
  const dec = run({ ...req, pipeline: "dense" }, { ...env, profile: both });
  const pre = run({ ...req, phase: "prefill", pipeline: "dense" }, { ...env, profile: both });
  const bytes = dec.groups[0].stages[0].bytes, flops = dec.groups[0].stages[0].flops;
  assert.ok(Math.abs(dec.groups[0].msPerLayer - (0.05 + 1e-9 * flops + 2e-9 * bytes)) < 1e-9);
  const p0 = pre.groups[0].stages[0];
  assert.ok(Math.abs(pre.groups[0].msPerLayer - (0.05 + 1e-9 * p0.flops + 1e-9 * p0.bytes)) < 1e-9);
  assert.deepEqual(dec.warnings, []);
  // a decode plan on prefill *samples* says so (a fit without samples, as these fixtures, says nothing)
  const sampled = Effect.runSync(decodeProfile({
    ...syntheticProfile({}),
    kernels: [{
      operator: "dense.attn",
      samples: [1024, 2048, 4096].map((t) => ({
        shape: { seq: t },
        flops: t * t * 1e4,
        bytes: t * 1e5,
        ms: 0.05 + t * t * 1e-5,
      })),
    }],
  }));
  const w = run({ ...req, pipeline: "dense" }, { ...env, profile: sampled });
  assert.ok(
    w.warnings.some((x) => /^dense\.attn has no decode measurements on synthetic: .*prefill samples/.test(x)),
    w.warnings.join("; "),
  );
});

test("decode: tokenselect competes at its density by construction (its own decode graph)", () => {
  const prof = synthetic([...SQUEEZED_OPS, ...TOKENSELECT_OPS]);
  const p = run({ ...req, pipeline: "tokenselect" }, { ...env, profile: prof });
  assert.deepEqual(p.groups.map((g) => g.pipeline), ["tokenselect"]);
  const g = p.groups[0];
  assert.deepEqual(g.stages.map((s) => s.operator), TOKENSELECT_OPS);
  // the attention reads the compacted list (the graph's own parameters), sink 128 + top-k 2048 + window 512
  assert.equal(g.stages[2].params.compacted, true);
  assert.ok(Math.abs(g.density! - (128 + 2048 + 512) / 131072) < 1e-12, `${g.density}`);
  assert.match(g.reason, /by construction/);
  // both registered: each layer goes to the faster, each alternative keeps its own note
  const all = run(req, { ...env, profile: prof });
  assert.equal(all.groups.length, 1);
  assert.ok(["squeezed", "tokenselect"].includes(all.groups[0].pipeline));
  assert.match(all.groups[0].reason, new RegExp(`^${all.groups[0].pipeline}: `));
});

test("a squeezed decode plan compiles to the technique's decode graph (the prefix index as inputs)", () => {
  const p = run(req);
  const [c] = Effect.runSync(compile(p, operators));
  assert.equal(c.pipeline, "squeezed");
  assert.deepEqual(c.graph.nodes.map((n) => n.op.name), SQUEEZED_OPS);
  assert.deepEqual(
    c.graph.inputs.map((i) => i.name).sort(),
    ["centroids", "k", "labels", "q", "sizes", "threshold", "v"],
  );
});
