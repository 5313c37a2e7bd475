// Dense attention against SALE on the cpu and wgpu backends, then a plan for Llama-3.1-8B at 64K on an H200.
import { Effect } from "effect";
import { type Backend, type Graph, hostTensor, run } from "@longctx/graph";
import { dense, sale } from "@longctx/ops";
import { builtinDensities, builtinProfile, defaultOperators, plan } from "@longctx/plans";
import { runMain, selectBackend } from "@longctx/runtime";

const [heads, kvHeads, seq, headDim] = [8, 2, 1024, 128]; // Llama-3.1-8B's GQA ratio and head size
const dims = { heads, kvHeads, headDim, seq, kvSeq: seq };
// Sinks, a local band and heavy hitters, structured like real prefill attention (ops/sale/synthetic.ts).
const t = (x: 0 | 1 | 2, h: number, names: readonly string[]) =>
  hostTensor("f32", names, [h, seq, headDim], sale.syntheticCpu(x, h, seq, headDim, heads / kvHeads));
const kv = ["kvHeads", "kvSeq", "headDim"] as const;
const inputs = { q: t(0, heads, ["heads", "seq", "headDim"]), k: t(1, kvHeads, kv), v: t(2, kvHeads, kv) };
const timed = (g: Graph, b: Backend) =>
  Effect.gen(function* () { // the first run compiles the kernels: time the second
    const t0 = (yield* run(g, b, inputs), performance.now()), { outputs } = yield* run(g, b, inputs);
    return { ms: performance.now() - t0, o: dense.asF32(outputs.o), density: outputs.density };
  });
const sq = (x: Float32Array, y?: Float32Array) => x.reduce((a, v, i) => a + (v - (y?.[i] ?? 0)) ** 2, 0);
const request = { model: "llama-3.1-8b", contextLength: 65536, phase: "prefill" } as const;
await runMain(Effect.gen(function* () {
  const denseGraph = yield* dense.denseTechnique.graph(dense.denseParams(), dims, "prefill");
  const saleGraph = yield* sale.saleTechnique.graph(sale.saleParams({ threshold: 0.004 }), dims, "prefill");
  for (const choice of ["cpu", "wgpu"] as const) {
    const { backend, report } = yield* selectBackend({ backend: choice });
    const d = yield* timed(denseGraph, backend), s = yield* timed(saleGraph, backend);
    const error = Math.sqrt(sq(s.o, d.o) / sq(d.o)).toExponential(2), speedup = (d.ms / s.ms).toFixed(2);
    const density = s.density ? dense.asF32(s.density).reduce((a, x) => a + x / heads, 0).toFixed(3) : "1";
    console.log(`${report}\n  dense ${d.ms.toFixed(0)} ms, sale ${s.ms.toFixed(0)} ms (${speedup}×)`);
    console.log(`  sale's density ${density}, output error against dense ${error} (${seq} tokens)`);
    yield* backend.close();
  }
  const profile = yield* builtinProfile("h200"), operators = defaultOperators();
  const p = yield* plan(request, { profile, operators, densities: yield* builtinDensities() });
  const [ms, denseMs] = [p.predicted.attentionMs.toFixed(0), p.predicted.denseAttentionMs.toFixed(0)];
  console.log(`plan llama-3.1-8b at 64K (${p.device.profile}, ${p.dtype}): ${ms} ms, dense ${denseMs} ms`);
  for (const g of p.groups) console.log(`  layers ${g.layers[0]}–${g.layers[1] - 1}: ${g.reason}`);
}));
