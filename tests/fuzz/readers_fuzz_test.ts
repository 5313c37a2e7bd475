/**
 * Seeded fuzzing of every reader of untrusted files: the GGUF reader (with every tensor dequantised and the
 * tokenizer built when a mutant parses), the plan, device-profile and density-table JSON readers, and the graph
 * JSON reader. Each target runs `fuzzCases()` deterministic cases (CI: 1500 per target; set
 * LONGCTX_FUZZ_CASES for a longer run) and must find zero crashes (see tests/fuzz/fuzz.ts).
 * @module
 */
import { Effect } from "effect";
import { readFileSync } from "node:fs";
import { assert, test } from "../harness.ts";
import {
  type AnyOperator,
  defineGraph,
  fromJSON,
  operatorRegistry,
  tensorType,
  toJSON,
} from "@longctx/graph";
import { parseGguf, tensorF32 } from "../../runtime/src/model/gguf.ts";
import { tokenizerFromGguf } from "../../runtime/src/model/tokenizer.ts";
import { builtinDensities, builtinProfile } from "../../plans/src/builtin.ts";
import { decodeDensityTable, parseProfile } from "../../plans/src/profile.ts";
import { parsePlan, plan } from "../../plans/src/plan.ts";
import { defaultOperators } from "../../plans/src/registry.ts";
import { softmaxOp, testOps } from "../graph/test_ops.ts";
import { tinyGguf } from "../model/gguf_writer.ts";
import { fuzz, fuzzCases, type FuzzReport, mutateBytes, mutateJson } from "./fuzz.ts";

const N = fuzzCases();
const check = (r: FuzzReport) => {
  console.log(
    `  ${r.target}: ${r.cases} cases, ${r.accepted} accepted, ${r.refused} refused (typed), ${r.crashes.length} crashes, slowest ${
      r.slowestMs.toFixed(1)
    } ms`,
  );
  assert.equal(r.crashes.length, 0, r.crashes.slice(0, 5).join("\n"));
  assert.ok(r.refused > 0, "the mutator produced no invalid input");
};

test("fuzz: GGUF reader (parse, dequantise every tensor, build the tokenizer)", async () => {
  const seed = tinyGguf();
  check(
    await fuzz("gguf", N, (rnd) => mutateBytes(seed, rnd), (bytes) =>
      Effect.gen(function* () {
        const f = yield* parseGguf(bytes, "fuzz.gguf");
        for (const name of f.tensors.keys()) yield* tensorF32(f, name);
        yield* tokenizerFromGguf(f);
      })),
  );
});

test("fuzz: plan JSON reader", async () => {
  const profile = await Effect.runPromise(builtinProfile("lavapipe"));
  const densities = await Effect.runPromise(builtinDensities());
  const p = await Effect.runPromise(
    plan({ model: "smollm2-135m", contextLength: 4096, phase: "prefill" }, {
      profile,
      operators: defaultOperators(),
      densities,
    }),
  );
  const doc = JSON.parse(JSON.stringify(p));
  check(await fuzz("plan-json", N, (rnd) => mutateJson(doc, rnd), (t) => parsePlan(t)));
});

test("fuzz: device-profile and density-table JSON readers", async () => {
  const dir = new URL("../../plans/profiles/", import.meta.url);
  const prof = JSON.parse(readFileSync(new URL("lavapipe.json", dir), "utf8"));
  check(await fuzz("profile-json", N, (rnd) => mutateJson(prof, rnd), (t) => parseProfile(t)));
  const dens = JSON.parse(readFileSync(new URL("density-smollm2-135m.json", dir), "utf8"));
  check(
    await fuzz(
      "density-json",
      N,
      (rnd) => mutateJson(dens, rnd),
      (t) =>
        Effect.flatMap(
          Effect.try({ try: () => JSON.parse(t) as unknown, catch: (e) => String(e) }),
          decodeDensityTable,
        ),
    ),
  );
});

test("fuzz: graph JSON reader", async () => {
  const reg = await Effect.runPromise(operatorRegistry(testOps as unknown as AnyOperator[]));
  const g = await Effect.runPromise(
    defineGraph("chain", { x: tensorType("f32", ["rows", "cols"]) }, (gr, { x }) => {
      const a = gr.add(softmaxOp, {}, { x }, "sm1");
      const b = gr.add(softmaxOp, {}, { x: a.y }, "sm2");
      return { y: b.y };
    }),
  );
  const doc = await Effect.runPromise(toJSON(g));
  check(await fuzz("graph-json", N, (rnd) => mutateJson(doc, rnd), (t) => fromJSON(t, reg)));
});

test("profile: numbers whose latency model overflows are refused (was a defect for ms 1e-300, ∞ predictions)", async () => {
  const prof = JSON.parse(
    readFileSync(new URL("../../plans/profiles/lavapipe.json", import.meta.url), "utf8"),
  );
  const edits: ((p: { kernels: { fit?: unknown; samples: { ms: number }[] }[] }) => void)[] = [
    (p) => p.kernels.forEach((k) => (delete k.fit, k.samples.forEach((s) => (s.ms = 1e-300)))),
    (p) => p.kernels.forEach((k) => (k.fit = { a: 1e308, b: 1e308, c: 1e308, maxRelError: 0 })),
  ];
  for (const edit of edits) {
    const p = structuredClone(prof);
    edit(p);
    const exit = await Effect.runPromiseExit(parseProfile(JSON.stringify(p)));
    if (exit._tag === "Success") throw new Error("accepted");
    const reasons =
      (exit.cause as unknown as { reasons: { _tag: string; error?: { message: string } }[] }).reasons;
    assert.equal(reasons[0]._tag, "Fail");
    assert.match(reasons[0].error!.message, /latency model overflows/);
  }
  const text = JSON.stringify(prof).replace(/"ms":\s*[0-9.]+/, '"ms":1e999');
  const e = await Effect.runPromise(Effect.flip(parseProfile(text)));
  assert.match(e.message, /malformed device profile/);
});
