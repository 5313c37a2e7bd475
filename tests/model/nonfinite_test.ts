/**
 * Metrics never pass on NaN: a model whose numbers overflow (finite but huge weights, so the load checks pass)
 * makes `run`'s pass (`runPassGraph`: the graph forward on the cpu backend) fail with `NonFiniteError` naming
 * the layer (found by `GraphLlama.diagnose`), and a comparison holding NaN fails
 * `assertFiniteMetrics` (before: perplexity NaN, top-1 agreement 100 %, exit 0). Tiny 2-layer GGUF, no download.
 * @module
 */
import { Effect } from "effect";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { assert, test } from "../harness.ts";
import { loadLlama } from "../../runtime/src/model/llama.ts";
import { assertFiniteMetrics, compareLogits, NonFiniteError } from "../../runtime/src/model/metrics.ts";
import { compareOverDocument, runPassGraph } from "../../runtime/src/cli/run/execute.ts";
import { loadLlamaGraph } from "../../runtime/src/model/llama_graph.ts";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { T, tinyKv, tinyTensors, writeGguf } from "./gguf_writer.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
// OpenBLAS is loaded once per process and kept (runtime/src/model/blas.ts): load it before any test, so the
// resource sanitizer sees a library held for the process, not one a test forgot to close.
await loadSgemm();

const tinyModel = async (edit: (name: string, data: Float32Array) => void) => {
  const tensors = tinyTensors({}, 7, 2);
  for (const t of tensors) edit(t.name, t.data);
  const bytes = writeGguf(tinyKv({ "llama.block_count": ["llama.block_count", T.U32, 2] }), tensors);
  const path = join(mkdtempSync(join(tmpdir(), "longctx-nan-")), "tiny.gguf");
  writeFileSync(path, bytes);
  return await Effect.runPromise(loadLlama(path));
};
const dense2 = [{ kind: "dense" as const }, { kind: "dense" as const }];
/** `run`'s pass on the graph forward (cpu backend with OpenBLAS), as `run --backend cpu` does. */
const pass = (m: Awaited<ReturnType<typeof tinyModel>>) =>
  Effect.gen(function* () {
    const backend = yield* makeCpuBackend({ gemm: m.sgemm.gemm });
    const g = yield* loadLlamaGraph(m, backend);
    return yield* Effect.ensuring(runPassGraph(g, m, prompt, dense2, 3), Effect.sync(() => g.release()));
  });
const prompt = [1, 2, 3, 4, 5, 3, 2, 1];

test("run's pass on a sound tiny model succeeds and its comparison is finite", async () => {
  const m = await tinyModel(() => {});
  const r = await Effect.runPromise(pass(m));
  const cmp = compareOverDocument(m.config.vocab, prompt, 2, 6, r, r);
  const ok = await Effect.runPromise(assertFiniteMetrics(cmp, "document comparison"));
  assert.ok(Number.isFinite(ok.perplexityDense) && ok.top1Agreement === 1);
});

test("overflowing (finite) layer-0 FFN weights: NonFiniteError names layer 0's MLP output", async () => {
  const m = await tinyModel((name, d) => {
    if (name === "blk.0.ffn_gate.weight" || name === "blk.0.ffn_up.weight") d.fill(1e30); // gate·up overflows f32
  });
  const e = (await Effect.runPromise(Effect.flip(pass(m)))) as NonFiniteError;
  assert.ok(e instanceof NonFiniteError, String(e));
  assert.equal(e.layer, 0);
  assert.match(e.where, /prefill, layer 0 MLP output/);
  assert.ok(e.hint.length > 0);
});

test("overflow in the last layer's FFN is named as that layer's MLP output", async () => {
  const m = await tinyModel((name, d) => {
    if (name === "blk.1.ffn_gate.weight" || name === "blk.1.ffn_up.weight") d.fill(1e30);
  });
  const e = (await Effect.runPromise(Effect.flip(pass(m)))) as NonFiniteError;
  assert.ok(e instanceof NonFiniteError, String(e));
  assert.equal(e.layer, 1);
  assert.match(e.where, /prefill, layer 1 MLP output/);
});

test("a comparison with NaN logits fails (it reported top-1 agreement 100 % and exit 0 before)", async () => {
  const nan = new Float32Array(12).fill(NaN);
  const c = compareLogits(nan, nan, 6);
  assert.equal(c.top1Agreement, 1); // argmax of NaN rows "agrees": exactly why agreement alone cannot be trusted
  assert.ok(Number.isNaN(c.maxKl), "maxKl hides the NaN KL");
  const e = await Effect.runPromise(
    Effect.flip(assertFiniteMetrics({ perplexityDense: NaN, top1Agreement: 1 }, "document comparison")),
  );
  assert.ok(e instanceof NonFiniteError);
  assert.match(e.message, /perplexityDense = NaN in the document comparison/);
});
