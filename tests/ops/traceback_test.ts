/**
 * Context traceback (`traceback.weights`, the traced layer graph, AttnTrace's and TracLLM's text logic): the
 * traced graph's token weights against a float64 masked softmax computed from scratch (no LSE given), on the
 * cpu backend (with and without its GEMM) and the wgpu kernels (lavapipe here), on random Q/K of many shapes
 * (odd lengths, GQA 9/3, 4/1, MHA); its attention output against dense; and the model-free parts — word
 * splitting, subsampling, top-k token means, round aggregation, and TracLLM's informed search and ensemble
 * on value functions whose answer is known.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { type Backend, hostTensor, run } from "@longctx/graph";
import { traceback } from "@longctx/ops";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
import { maxAbsDiff, randn, relErr, tracebackWeights64 } from "./ref64.ts";
import { openWgpuBackend } from "./gpu_helper.ts";

const wgpu: Backend | undefined = await openWgpuBackend();
const cpuTs = await Effect.runPromise(makeCpuBackend());
const sgemm = await loadSgemm();
const cpuBlas = await Effect.runPromise(makeCpuBackend({ gemm: sgemm.gemm }));

interface Case {
  readonly H: number;
  readonly Hk: number;
  readonly seq: number;
  readonly d: number;
  readonly A: number;
}
const CASES: readonly Case[] = [
  { H: 9, Hk: 3, seq: 77, d: 64, A: 5 },
  { H: 4, Hk: 1, seq: 130, d: 64, A: 1 },
  { H: 2, Hk: 2, seq: 33, d: 128, A: 31 },
  { H: 6, Hk: 2, seq: 257, d: 64, A: 12 },
];

const reference = (c: Case, q: Float32Array, k: Float32Array) => tracebackWeights64(q, k, c);

const runTraced = async (backend: Backend, c: Case, q: Float32Array, k: Float32Array, v: Float32Array) => {
  const g = await Effect.runPromise(traceback.tracebackGraph(c.A));
  const kv = (data: Float32Array) =>
    hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [c.Hk, c.seq, c.d], data);
  const { outputs } = await Effect.runPromise(
    run(g, backend, {
      q: hostTensor("f32", ["heads", "seq", "headDim"], [c.H, c.seq, c.d], q),
      k: kv(k),
      v: kv(v),
    }),
  );
  return { w: outputs.trace.data as Float32Array, o: outputs.o.data as Float32Array };
};

for (
  const [name, backend] of [["cpu (TypeScript GEMM)", cpuTs], ["cpu (OpenBLAS)", cpuBlas], [
    "wgpu",
    wgpu,
  ]] as const
) {
  test(`traceback.weights on ${name}: float64 masked softmax on random Q/K of many shapes`, async () => {
    for (const [n, c] of CASES.entries()) {
      const q = randn(c.H * c.seq * c.d, 10 + n, 1.5), k = randn(c.Hk * c.seq * c.d, 20 + n, 1.5);
      const v = randn(c.Hk * c.seq * c.d, 30 + n);
      const want = reference(c, q, k);
      const got = await runTraced(backend!, c, q, k, v);
      const err = maxAbsDiff(got.w, want);
      assert.ok(err < 2e-6, `${JSON.stringify(c)}: max |Δw| ${err}`);
      // each answer row's probabilities sum to 1: the weights sum to 1 too
      const total = got.w.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(total - 1) < 1e-4, `${JSON.stringify(c)}: Σw = ${total}`);
      // keys after the last answer-predicting row (seq − 1) get nothing; a spread, not a spike, on random keys
      assert.equal(got.w[c.seq - 1], 0);
      assert.ok(Math.max(...got.w) < 0.9, "weights are not all on one key");
    }
  }, { ignore: backend === undefined });
}

test("traceback graph: its o is dense attention (wgpu against cpu)", async () => {
  const c = CASES[0];
  const q = randn(c.H * c.seq * c.d, 1), k = randn(c.Hk * c.seq * c.d, 2), v = randn(c.Hk * c.seq * c.d, 3);
  const a = await runTraced(cpuBlas, c, q, k, v), b = await runTraced(wgpu!, c, q, k, v);
  assert.ok(relErr(b.o, a.o) < 1e-5, `o rel err ${relErr(b.o, a.o)}`);
}, { ignore: wgpu === undefined });

test("traceback.weights refuses an answer as long as the sequence: a ShapeError naming answerTokens", async () => {
  const g = await Effect.runPromise(traceback.tracebackGraph(4));
  const kv = (n: number) => hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [1, 4, 64], randn(n, 1));
  const q = hostTensor("f32", ["heads", "seq", "headDim"], [2, 4, 64], randn(512, 2));
  const r = await Effect.runPromise(Effect.result(run(g, cpuTs, { q, k: kv(256), v: kv(256) })));
  if (r._tag !== "Failure") throw new Error("expected a failure");
  assert.equal(r.failure._tag, "ShapeError");
  assert.match(String(r.failure.message), /answerTokens: 4 answer tokens in a sequence of 4/);
  assert.throws(() => traceback.tracebackWeightsParams({ answerTokens: 0 }), /answerTokens/);
});

test("splitWords: segments of n words with their character ranges", () => {
  const text = "  one two\tthree\n\nfour five six seven  ";
  const s = traceback.splitWords(text, 3);
  assert.deepEqual(s.map((x) => x.text), ["one two\tthree", "four five six", "seven"]);
  for (const x of s) assert.equal(text.slice(x.start, x.end), x.text);
  assert.deepEqual(traceback.splitWords(" \n ", 100), []);
  assert.throws(() => traceback.splitWords("a", 0), RangeError);
});

test("sampleTexts: seeded subsets of ⌊q·n⌋ distinct texts in order; q = 1 is every text once", () => {
  const p = { sampleRatio: 0.4, rounds: 30, seed: 7 };
  const a = traceback.sampleTexts(60, p), b = traceback.sampleTexts(60, p);
  assert.deepEqual(a, b);
  assert.equal(a.length, 30);
  const seen = new Set<number>();
  for (const s of a) {
    assert.equal(s.length, 24);
    assert.equal(new Set(s).size, 24);
    for (let i = 1; i < s.length; i++) assert.ok(s[i] > s[i - 1]);
    s.forEach((x) => seen.add(x));
  }
  assert.ok(seen.size > 55, `30 rounds of 24 cover most of 60 texts (${seen.size})`);
  assert.notDeepEqual(traceback.sampleTexts(60, { ...p, seed: 8 }), a);
  assert.deepEqual(traceback.sampleTexts(5, { ...p, sampleRatio: 1 }), [[0, 1, 2, 3, 4]]);
});

test("textScore, aggregateRounds, topTexts, precisionRecall", () => {
  const w = [0.1, 0.9, 0.2, 0.8, 0.3, 0.05];
  assert.ok(Math.abs(traceback.textScore(w, 0, 6, 2) - 0.85) < 1e-12);
  assert.ok(Math.abs(traceback.textScore(w, 4, 6, 5) - 0.175) < 1e-12, "fewer tokens than avgK: mean of all");
  assert.equal(traceback.textScore(w, 3, 3, 5), 0);
  const agg = traceback.aggregateRounds(4, [
    { texts: [0, 2], scores: [1, 3] },
    { texts: [2, 3], scores: [5, 2] },
  ]);
  assert.deepEqual([...agg], [1, 0, 4, 2]);
  assert.deepEqual(traceback.topTexts(agg, 3), [2, 3, 0]);
  assert.deepEqual(traceback.topTexts([1, 2, 2, 0], 2), [1, 2], "ties: the earlier text");
  assert.deepEqual(traceback.precisionRecall([2, 3, 0], [3, 7]), { precision: 1 / 3, recall: 1 / 2 });
});

// A value function whose texts 3, 17 and 40 carry the answer (additively, 5 nats each) and the rest noise.
const NEEDLES = [3, 17, 40];
const valueOf = (texts: readonly number[]) => {
  let v = -50;
  for (const t of texts) v += NEEDLES.includes(t) ? 5 : 0.01 * ((t * 7919) % 13) / 13;
  return Effect.succeed(v);
};

test("tracLlm: the informed search finds additive needles with each score function, and calls fewer values", async () => {
  for (const fn of ["stc", "loo", "shapley"] as const) {
    const p = traceback.tracLlmParams({ scores: [fn], permutations: 3 });
    const r = await Effect.runPromise(traceback.tracLlm(60, valueOf, p));
    const top = traceback.topTexts(
      Array.from({ length: 60 }, (_, i) => r.scores.get(i) ?? -Infinity),
      3,
    ).sort((a, b) => a - b);
    assert.deepEqual(top, NEEDLES, `${fn}: ${[...r.scores]}`);
    assert.equal(r.scores.size, 5, "topK texts end the search");
  }
  const all = await Effect.runPromise(traceback.tracLlm(60, valueOf, traceback.tracLlmParams()));
  // the ensemble: LOO (weight 2) gives 10 for each needle, more than STC's or Shapley's 5
  for (const t of NEEDLES) assert.ok(Math.abs(all.scores.get(t)! - 10) < 1e-9, `${t}: ${all.scores.get(t)}`);
  const loo = await Effect.runPromise(
    traceback.tracLlm(60, valueOf, traceback.tracLlmParams({ scores: ["loo"] })),
  );
  assert.ok(loo.calls < 60, `LOO's informed search: ${loo.calls} values for 60 texts`);
});

test("tracLlm: fewer texts than topK are scored once; a failing value function fails the search", async () => {
  const r = await Effect.runPromise(
    traceback.tracLlm(3, valueOf, traceback.tracLlmParams({ scores: ["stc"] })),
  );
  assert.deepEqual([...r.scores.keys()].sort(), [0, 1, 2]);
  assert.ok(r.scores.get(2)! < 0.01 && r.scores.get(0)! < 0.01);
  const bad = await Effect.runPromise(
    Effect.result(traceback.tracLlm(8, () => Effect.fail("boom"), traceback.tracLlmParams())),
  );
  assert.ok(bad._tag === "Failure" && bad.failure === "boom");
});
