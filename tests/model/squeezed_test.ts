/**
 * Squeezed Attention on the real model (SmolLM2-135M-Instruct, cpu backend; wgpu where it opens): a fixed
 * context's prefix index built from the forward's own keys and queries, the question answered through the
 * squeezed cache attention — exactly dense when every key is kept, fewer keys at a real percentile — the
 * index saved, loaded and its K/V restored without a prefill giving the same answer, and the typed errors of
 * a stale index and of a decode graph without its index.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import type { Backend, CacheDecodeGraphs } from "@longctx/graph";
import { squeezed } from "@longctx/ops";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
import { loadLlamaGraph } from "../../runtime/src/model/llama_graph.ts";
import { readDocument } from "../../runtime/src/paths.ts";
import {
  askContext,
  loadSqueezedIndex,
  prepareContext,
  restoreContext,
  saveSqueezedIndex,
  squeezedDecode,
} from "../../runtime/src/squeezed/squeezed.ts";
import { haveModel, model } from "./fixture.ts";
import { openWgpuBackend } from "../ops/gpu_helper.ts";

const wgpu: Backend | undefined = haveModel ? await openWgpuBackend() : undefined;

/** A ~700-token fixed context (chat head + document) and a question suffix. */
const prompt = async () => {
  const m = await model();
  const tok = m.tokenizer;
  const doc = (await Effect.runPromise(readDocument("alice-in-wonderland"))).slice(2000, 4200);
  // the chat head up to the user turn's <|im_start|>, then the user's text: the document first
  const head = await Effect.runPromise(tok.encodeChat([{ role: "user", content: "x" }], false));
  const userAt = head.lastIndexOf(tok.encode("<|im_start|>")[0]);
  const fixed = [
    ...head.slice(0, userAt + 1),
    ...tok.encodeOrdinary(`user\nRead this document:\n\n${doc}\n\n`),
  ];
  const question = [
    ...tok.encodeOrdinary("Question: Who ran close by Alice?"),
    ...tok.encode("<|im_end|>\n<|im_start|>assistant\n"),
  ];
  return { m, fixed, question };
};

const stop = (ids: readonly number[]) => ids.length >= 6;
const keepAll = (dec: (l: number) => CacheDecodeGraphs) => (l: number) => {
  const x = dec(l);
  return { ...x, inputs: { ...x.inputs!, threshold: { ...x.inputs!.threshold, data: Float32Array.of(-1) } } };
};

for (
  const [name, make] of [
    ["cpu", async () => Effect.runPromise(makeCpuBackend({ gemm: (await loadSgemm()).gemm }))],
    ["wgpu", () => Promise.resolve(wgpu)],
  ] as const
) {
  test(
    `squeezed on ${name}: every key kept = dense; p 0.9 keeps fewer keys; the saved index answers alike`,
    async () => {
      const { m, fixed, question } = await prompt();
      const backend = (await make())!;
      const g = await Effect.runPromise(loadLlamaGraph(m, backend));
      const p = squeezed.squeezedParams({ percentile: 0.9 });
      const ctx = await Effect.runPromise(prepareContext(g, m, fixed, p, { room: 64 }));
      assert.equal(ctx.index.fixed, fixed.length);
      assert.equal(ctx.index.clusters, squeezed.clusterCount(p, fixed.length));
      const dense = await Effect.runPromise(askContext(g, ctx, question, 6, stop));
      const dec = await Effect.runPromise(squeezedDecode(ctx.index, p));
      const all = await Effect.runPromise(askContext(g, ctx, question, 6, stop, keepAll(dec)));
      let diff = 0;
      for (let i = 0; i < dense.firstLogits.length; i++) {
        diff = Math.max(diff, Math.abs(dense.firstLogits[i] - all.firstLogits[i]));
      }
      assert.ok(diff < 2e-3, `every key kept: logits differ from dense by ${diff}`);
      assert.deepEqual(all.ids, dense.ids);
      assert.ok(all.density.every((x) => x === 1), "every key kept: budget 1");
      const sparse = await Effect.runPromise(askContext(g, ctx, question, 6, stop, dec));
      const budget = sparse.density.reduce((a, b) => a + b, 0) / sparse.density.length;
      assert.ok(budget > 0.02 && budget < 0.5, `p 0.9: budget ${budget}`);
      // the artifact: saved, loaded, K/V restored (no prefill), the same answer and logits
      const path = await Deno.makeTempFile({ suffix: ".sqz" });
      try {
        await Effect.runPromise(saveSqueezedIndex(path, ctx.index));
        const loaded = await Effect.runPromise(loadSqueezedIndex(path));
        const back = await Effect.runPromise(restoreContext(g, m, fixed, loaded, 64));
        const again = await Effect.runPromise(
          askContext(g, back, question, 6, stop, await Effect.runPromise(squeezedDecode(loaded, p))),
        );
        assert.deepEqual(again.ids, sparse.ids);
        assert.deepEqual(again.firstLogits, sparse.firstLogits);
        // a stale index: the same file for another document
        const r = await Effect.runPromise(
          Effect.result(restoreContext(g, m, [...fixed.slice(0, -1), 13], loaded)),
        );
        assert.ok(
          r._tag === "Failure" && r.failure._tag === "PrefixIndexError" && r.failure.reason === "stale",
        );
        back.cache.release();
      } finally {
        await Deno.remove(path);
      }
      // the decode graph without its index: a ShapeError naming the input
      const bare = await Effect.runPromise(squeezed.squeezedCacheDecode(p));
      const r = await Effect.runPromise(
        Effect.result(askContext(g, ctx, question, 1, stop, () => bare)),
      );
      assert.ok(r._tag === "Failure" && r.failure._tag === "ShapeError", "a typed failure");
      assert.match(String(r._tag === "Failure" ? r.failure.message : ""), /centroids/);
      ctx.cache.release();
      g.release();
    },
    { ignore: !haveModel || (name === "wgpu" && wgpu === undefined) },
  );
}

test(
  "squeezed hierarchical on cpu: both thresholds below every score = dense; a flat index refuses it",
  async () => {
    const { m, fixed, question } = await prompt();
    const backend = await Effect.runPromise(makeCpuBackend({ gemm: (await loadSgemm()).gemm }));
    const g = await Effect.runPromise(loadLlamaGraph(m, backend));
    const p = squeezed.squeezedParams({ hierarchical: true });
    const ctx = await Effect.runPromise(prepareContext(g, m, fixed, p, { room: 64, keepKv: false }));
    assert.equal(ctx.index.clustersL1, squeezed.clusterCountL1(p, fixed.length));
    const dense = await Effect.runPromise(askContext(g, ctx, question, 6, stop));
    const dec = await Effect.runPromise(squeezedDecode(ctx.index, p));
    const open = (l: number) => {
      const x = dec(l);
      const one = (v: number) => ({ ...x.inputs!.threshold, data: Float32Array.of(v) });
      return { ...x, inputs: { ...x.inputs!, threshold: one(-1), thresholdL1: one(-1) } };
    };
    const all = await Effect.runPromise(askContext(g, ctx, question, 6, stop, open));
    let diff = 0;
    for (let i = 0; i < dense.firstLogits.length; i++) {
      diff = Math.max(diff, Math.abs(dense.firstLogits[i] - all.firstLogits[i]));
    }
    assert.ok(diff < 2e-3, `both thresholds open: logits differ from dense by ${diff}`);
    assert.deepEqual(all.ids, dense.ids);
    const sparse = await Effect.runPromise(askContext(g, ctx, question, 6, stop, dec));
    const budget = sparse.density.reduce((a, b) => a + b, 0) / sparse.density.length;
    assert.ok(budget > 0.01 && budget < 0.5, `hierarchical p 0.9 / 0.7: budget ${budget}`);
    // a flat index cannot serve the hierarchical lookup
    const flat = await Effect.runPromise(
      prepareContext(g, m, fixed, squeezed.squeezedParams({}), { room: 8, keepKv: false }),
    );
    const r = await Effect.runPromise(Effect.result(squeezedDecode(flat.index, p)));
    assert.ok(r._tag === "Failure" && r.failure._tag === "PrefixIndexError" && r.failure.reason === "shape");
    flat.cache.release();
    ctx.cache.release();
    g.release();
  },
  { ignore: !haveModel },
);
