/**
 * Context traceback on the real model (SmolLM2-135M-Instruct): every layer's traced weights from the graph
 * forward (cpu backend and wgpu) against a float64 masked softmax of the Q/K the independent CPU forward
 * (runtime/src/model/llama.ts) captures; the traceback prompt's pieces against the chat template encoded whole;
 * TracLLM's two-call value against a single all-position forward; AttnTrace's rounds and determinism.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import type { Backend } from "@longctx/graph";
import { traceback } from "@longctx/ops";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
import { loadLlamaGraph } from "../../runtime/src/model/llama_graph.ts";
import { readDocument } from "../../runtime/src/paths.ts";
import {
  answerLogProb,
  assemble,
  attnTrace,
  fullLength,
  TRACE_INSTRUCTION,
  tracePrompt,
} from "../../runtime/src/trace/trace.ts";
import { haveModel, model } from "./fixture.ts";
import { tracebackWeights64 } from "../ops/ref64.ts";
import { openWgpuBackend } from "../ops/gpu_helper.ts";

const wgpu: Backend | undefined = haveModel ? await openWgpuBackend() : undefined;

/** A small case: the first words of a real document as texts of 30 words, and an answer. */
const smallCase = async (texts: number) => {
  const m = await model();
  const doc = await Effect.runPromise(readDocument("alice-in-wonderland"));
  const spans = traceback.splitWords(doc, 30).slice(0, texts);
  const p = await Effect.runPromise(
    tracePrompt(m.tokenizer, "Who ran close by Alice?", spans.map((s) => s.text)),
  );
  const answer = m.tokenizer.encodeOrdinary("A White Rabbit with pink eyes ran close by her.");
  return { m, p, answer, spans };
};

for (
  const [name, make] of [
    ["cpu", async () => Effect.runPromise(makeCpuBackend({ gemm: (await loadSgemm()).gemm }))],
    ["wgpu", () => Promise.resolve(wgpu)],
  ] as const
) {
  test(
    `traced forward on ${name}: every layer's weights = float64 masked softmax of the CPU forward's Q/K`,
    async () => {
      const { m, p, answer } = await smallCase(6);
      const ids = [...assemble(p, [0, 1, 2, 3, 4, 5]).ids, ...answer];
      const seq = ids.length, A = answer.length;
      const { nHead: H, nKvHead: Hk, headDim: d, nLayer: L } = m.config;
      const want: Float64Array[] = [];
      await Effect.runPromise(m.forward(ids, m.newCache(seq), {
        capture: (layer, q, k) => (want[layer] = tracebackWeights64(q, k, { H, Hk, seq, d, A })),
      }));
      const backend = (await make())!;
      const g = await Effect.runPromise(loadLlamaGraph(m, backend));
      const graph = await Effect.runPromise(traceback.tracebackGraph(A));
      const cache = await Effect.runPromise(g.newCache(seq));
      let got: Float32Array[] = [];
      await Effect.runPromise(g.forward(ids, cache, {
        logits: "none",
        attentionGraph: () => graph,
        readOutputs: ["trace"],
        onOutputs: (layers) => (got = layers.map((l) => l.trace)),
      }));
      cache.release();
      g.release();
      assert.equal(got.length, L);
      let worst = 0, peak = 0;
      for (let l = 0; l < L; l++) {
        for (let j = 0; j < seq; j++) {
          worst = Math.max(worst, Math.abs(got[l][j] - want[l][j]));
          peak = Math.max(peak, want[l][j]);
        }
      }
      assert.ok(peak > 0.05, `real attention is peaked somewhere (${peak})`);
      assert.ok(worst < 2e-6, `max |traced − float64| = ${worst} over ${L} layers × ${seq} tokens`);
    },
    { ignore: !haveModel || (name === "wgpu" && !wgpu) },
  );
}

test("tracePrompt: the pieces are the chat template encoded whole; spans hold each text", async () => {
  const { m, p, spans } = await smallCase(5);
  const tok = m.tokenizer;
  const all = assemble(p, [0, 1, 2, 3, 4]);
  const content = `${TRACE_INSTRUCTION}\n\nContexts: ${
    spans.map((s) => s.text).join(" ")
  }\n\nQuery: Who ran close by Alice?`;
  const whole = await Effect.runPromise(tok.encodeChat([{ role: "user", content }], true));
  assert.deepEqual(all.ids, whole);
  all.spans.forEach(([s, e], i) => assert.equal(tok.decode(all.ids.slice(s, e)), ` ${spans[i].text}`));
  const sub = assemble(p, [1, 3]);
  assert.equal(sub.spans.length, 2);
  assert.deepEqual(sub.ids.slice(sub.spans[1][0], sub.spans[1][1]), p.texts[3]);
  assert.equal(fullLength(p, [1, 2, 3]), all.ids.length + 3);
  const bad = await Effect.runPromise(Effect.result(tracePrompt(tok, "  ", ["x"])));
  assert.ok(bad._tag === "Failure" && bad.failure._tag === "InputError");
  const none = await Effect.runPromise(Effect.result(tracePrompt(tok, "q?", [])));
  assert.ok(none._tag === "Failure" && /no text/.test(none.failure.message));
}, { ignore: !haveModel });

test(
  "answerLogProb: prefill + answer call at an offset = one all-position forward's log-probabilities",
  async () => {
    const { m, p, answer } = await smallCase(4);
    const g = await Effect.runPromise(
      loadLlamaGraph(m, await Effect.runPromise(makeCpuBackend({ gemm: (await loadSgemm()).gemm }))),
    );
    const cache = await Effect.runPromise(g.newCache(fullLength(p, answer)));
    const v = await Effect.runPromise(answerLogProb(g, cache, p, answer)([0, 2]));
    const ids = [...assemble(p, [0, 2]).ids, ...answer], P = ids.length - answer.length, V = m.config.vocab;
    cache.length = 0;
    const logits = await Effect.runPromise(g.forward(ids, cache, { logits: "all" }));
    let want = 0;
    for (let i = 0; i < answer.length; i++) {
      const row = logits.subarray((P - 1 + i) * V, (P + i) * V);
      const mx = row.reduce((a, b) => Math.max(a, b), -Infinity);
      const lse = mx + Math.log(row.reduce((a, b) => a + Math.exp(b - mx), 0));
      want += row[answer[i]] - lse;
    }
    cache.release();
    g.release();
    assert.ok(v < 0 && Math.abs(v - want) < 1e-3 * Math.abs(want), `${v} vs ${want}`);
  },
  { ignore: !haveModel },
);

test(
  "attnTrace: one forward per subsample, scores of sampled texts only, deterministic per seed",
  async () => {
    const { m, p, answer } = await smallCase(8);
    const g = await Effect.runPromise(
      loadLlamaGraph(m, await Effect.runPromise(makeCpuBackend({ gemm: (await loadSgemm()).gemm }))),
    );
    const params = traceback.attnTraceParams({ rounds: 3, sampleRatio: 0.25, topK: 3 });
    const a = await Effect.runPromise(attnTrace(g, p, answer, params));
    const b = await Effect.runPromise(attnTrace(g, p, answer, params));
    g.release();
    assert.equal(a.forwards, 3);
    assert.deepEqual([...a.scores], [...b.scores]);
    const sampled = new Set(a.rounds.flatMap((r) => r.texts));
    a.scores.forEach((s, t) => assert.ok(sampled.has(t) ? s > 0 : s === 0, `text ${t}: ${s}`));
    assert.equal(a.top.length, 3);
    const empty = await Effect.runPromise(Effect.result(attnTrace(g, p, [], params)));
    assert.ok(empty._tag === "Failure" && empty.failure._tag === "InputError");
  },
  { ignore: !haveModel },
);
