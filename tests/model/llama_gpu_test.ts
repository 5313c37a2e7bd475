/**
 * The GPU Llama forward (runtime/src/model/llama_gpu.ts) against the CPU forward (llama.ts) on the real
 * SmolLM2 GGUF, on the `wgpu` backend (lavapipe here): last-position logits to ≤ 1e-3 relative L2 error with
 * both attention paths (flash prefill and split-KV), an identical 8-token greedy continuation, a decode step
 * after a prefill equal to the prefill of the longer prompt, all-position logits, and the typed errors.
 * Skipped without the model file or without a wgpu adapter.
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import type { Backend } from "@longctx/graph";
import { generateGreedy } from "../../runtime/src/model/llama.ts";
import { generateGreedyGpu, type GpuLlama, loadLlamaGpu } from "../../runtime/src/model/llama_gpu.ts";
import { fixture, haveModel, model, relL2 } from "./fixture.ts";

const backend: Backend | undefined = haveModel
  ? await import("../../runtime/src/backends/wgpu.ts")
    .then((m) => Effect.runPromise(m.makeWgpuBackend()))
    .catch(() => undefined)
  : undefined;
if (haveModel && !backend) console.log("llama_gpu_test: skipped — no wgpu adapter");
const ignore = !haveModel || !backend;

let gpuModel: Promise<GpuLlama> | undefined;
const gpu = async (): Promise<GpuLlama> =>
  await (gpuModel ??= model().then((m) => Effect.runPromise(loadLlamaGpu(m, backend!))));

/** A real 12-token prompt: the first tokens of the fixture's text prompt. */
const prompt = (): number[] => fixture.prompts[1].ids.slice(0, 12);

test(
  "GPU last-position logits match the CPU forward to ≤ 1e-3 (flash prefill and split-KV paths)",
  async () => {
    const m = await model();
    const g = await gpu();
    const ids = prompt();
    const h = await Effect.runPromise(m.forward(ids, m.newCache(ids.length)));
    const want = m.logits(h, ids.length - 1, 1);
    for (const attention of ["auto", "split"] as const) {
      const cache = await Effect.runPromise(g.newCache(ids.length));
      const got = await Effect.runPromise(g.forward(ids, cache, { attention }));
      cache.release();
      assert.equal(got.length, m.config.vocab);
      const e = relL2(got, want);
      console.log(`${attention}: relative L2 logit error GPU vs CPU ${e.toExponential(2)}`);
      assert.ok(e <= 1e-3, `${attention}: relative L2 error ${e}`);
    }
  },
  { ignore },
);

test(
  "76-token prompt: flash prefill (2 query tiles), then a split-KV decode step over 2 key chunks, match the CPU",
  async () => {
    const m = await model();
    const g = await gpu();
    const ids = fixture.prompts[1].ids;
    const n = ids.length;
    assert.ok(n > 65);
    const h = await Effect.runPromise(m.forward(ids, m.newCache(n)));
    const want = m.logits(h, n - 1, 1);
    const cache = await Effect.runPromise(g.newCache(n));
    await Effect.runPromise(g.forward(ids.slice(0, n - 1), cache, { logits: "none" }));
    const got = await Effect.runPromise(g.forward(ids.slice(n - 1), cache, { splitKeys: 64 }));
    cache.release();
    const e = relL2(got, want);
    assert.ok(e <= 1e-3, `relative L2 error ${e}`);
  },
  { ignore },
);

test("8-token greedy continuation on the GPU is identical to the CPU's", async () => {
  const m = await model();
  const g = await gpu();
  const ids = prompt();
  const cpu = await Effect.runPromise(generateGreedy(m, ids, 8, { stopAtEos: false }));
  const out = await Effect.runPromise(generateGreedyGpu(g, ids, 8));
  out.cache.release();
  assert.equal(out.cache.length, ids.length + 7);
  assert.deepEqual(out.ids, cpu.ids, `GPU ${JSON.stringify(m.tokenizer.decode(out.ids))}`);
}, { ignore });

test(
  "a decode step after a prefill equals the prefill of the longer prompt; all-position logits agree",
  async () => {
    const g = await gpu();
    const ids = prompt();
    const n = ids.length;
    const V = g.config.vocab;
    const a = await Effect.runPromise(g.newCache(n));
    const short = await Effect.runPromise(g.forward(ids.slice(0, n - 1), a));
    assert.equal(a.length, n - 1);
    const step = await Effect.runPromise(g.forward(ids.slice(n - 1), a));
    assert.equal(a.length, n);
    const b = await Effect.runPromise(g.newCache(n));
    const all = await Effect.runPromise(g.forward(ids, b, { logits: "all" }));
    assert.equal(all.length, n * V);
    const last = all.subarray((n - 1) * V);
    assert.ok(relL2(step, last) <= 1e-4, `decode step vs prefill ${relL2(step, last)}`);
    // Row n−2 of the all-position logits is the last row of the shorter prefill.
    const e = relL2(all.subarray((n - 2) * V, (n - 1) * V), short);
    assert.ok(e <= 1e-4, `row n−2 vs shorter prefill ${e}`);
    for (const x of [a, b]) x.release();
  },
  { ignore },
);

test("GPU forward fails with typed ShapeErrors for bad calls", async () => {
  const g = await gpu();
  const cache = await Effect.runPromise(g.newCache(4));
  const tag = async (e: Effect.Effect<unknown, { _tag: string }>) => {
    const r = await Effect.runPromise(Effect.result(e));
    return r._tag === "Failure" ? r.failure._tag : "ok";
  };
  assert.equal(await tag(g.forward([], cache)), "ShapeError");
  assert.equal(await tag(g.forward([g.config.vocab], cache)), "ShapeError");
  assert.equal(await tag(g.forward([1, 2, 3, 4, 5], cache)), "ShapeError");
  assert.equal(await tag(g.newCache(0)), "ShapeError");
  assert.equal(cache.length, 0);
  await Effect.runPromise(g.forward([1, 2], cache, { logits: "none" }));
  assert.equal(await tag(g.forward([3], cache, { attention: "flash" })), "ShapeError");
  cache.release();
}, { ignore });
