/**
 * SALE fidelity on real attention (a script, not a test): SmolLM2-135M on a real ≥ 8K-token document.
 *
 * 1. Dense pass with Q/K/V capture in all 30 layers; per layer, SALE at the given threshold vs the dense
 *    oracle on the captured tensors: density (kept / causal blocks), attention-mass recall (mean over query
 *    rows and heads of the exact attention probability mass inside the kept blocks, `exp(lse_sale −
 *    lse_dense)`), output relative error `‖o − o_dense‖ / ‖o_dense‖`.
 * 2. SALE pass: the model's pluggable attention replaced by SALE in every layer; perplexity change against
 *    the dense pass, KL(dense ‖ SALE) and top-1 agreement of the next-token distributions.
 *
 * Both passes are the graph forward (`runtime/src/model/llama_graph.ts`) on the cpu backend with OpenBLAS: SALE is
 * the registry's `sale` technique graph (`sale.quantize → sale.estimate → sale.select → sale.sparseAttn`, whose
 * CPU references run as GEMMs there), pass 1 runs it as a shadow of each layer's dense attention
 * (`shadowGraph`, `onCompare`: recall and error computed by `model.lseRecall` / `model.sqDiff`), pass 2 as each
 * layer's attention.
 *
 * Run: `deno run -A tests/ops/sale_fidelity.ts [--doc alice-in-wonderland] [--tokens 8192]
 *   [--threshold 0.004] [--out benchmarks/results/sale_fidelity.json]`
 * Prints one line per layer and a summary; writes rows `{metric, value, unit, layer?, ...}` to `--out`.
 * Time on 2 CPU cores: a few minutes (two 8K-token forward passes plus SALE and dense per layer).
 * @module
 */
import { parseArgs } from "node:util";
import { Effect } from "effect";
import type { Graph } from "@longctx/graph";
import { sale } from "@longctx/ops";
import { loadLlama } from "../../runtime/src/model/llama.ts";
import { type AttnComparison, loadLlamaGraph } from "../../runtime/src/model/llama_graph.ts";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { compareLogits, logSumExp, perplexity } from "../../runtime/src/model/metrics.ts";
import { modelPath, readDocument } from "../../runtime/src/paths.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    doc: { type: "string", default: "alice-in-wonderland" },
    tokens: { type: "string", default: "8192" },
    threshold: { type: "string", default: "0.004" },
    out: { type: "string", default: "benchmarks/results/sale_fidelity.json" },
  },
});

const t0 = performance.now();
const model = await Effect.runPromise(loadLlama(modelPath()));
const cfg = model.config;
const text = await Effect.runPromise(readDocument(args.doc));
const all = model.tokenizer.encode(text);
const N = Math.min(Number(args.tokens), all.length);
if (N < 8192 && Number(args.tokens) >= 8192) console.error(`warning: document has only ${all.length} tokens`);
const tokens = all.slice(0, N);
const p = sale.saleParams({ threshold: Number(args.threshold) });
const backend = await Effect.runPromise(makeCpuBackend({ gemm: model.sgemm.gemm }));
const g = await Effect.runPromise(loadLlamaGraph(model, backend));
const dims = { heads: cfg.nHead, kvHeads: cfg.nKvHead, headDim: cfg.headDim, seq: N, kvSeq: N };
const saleGraph: Graph = await Effect.runPromise(sale.saleTechnique.graph(p, dims, "prefill", "f32"));
console.error(
  `model ${modelPath()} (${cfg.nLayer} layers, ${cfg.nHead}/${cfg.nKvHead} heads), doc ${args.doc}: ${N} of ${all.length} tokens, ` +
    `graph forward on the cpu backend, GEMM ${model.sgemm.name}, SALE blockQ ${p.blockQ} blockK ${p.blockK} ` +
    `local ${p.localWindow} sink ${p.sinkBlocks} τ ${p.threshold}`,
);

interface LayerRow {
  layer: number;
  density: number;
  recall: number;
  minRecall: number;
  outRelErr: number;
}
const V = cfg.vocab;
/** Log-probabilities of the next document token at every position (from all-position logits). */
const logProbs = (logits: Float32Array) => {
  const lp: number[] = [];
  for (let i = 0; i + 1 < N; i++) lp.push(logits[i * V + tokens[i + 1]] - logSumExp(logits, i * V, V));
  return lp;
};

// Pass 1: dense, with SALE run as a shadow of every layer on that layer's own Q/K/V.
let cmp1: readonly (AttnComparison | undefined)[] = [];
let dens1: readonly (Float32Array | undefined)[] = [];
const c1 = await Effect.runPromise(g.newCache(N));
const logitsDense = await Effect.runPromise(g.forward(tokens, c1, {
  logits: "all",
  shadowGraph: () => saleGraph,
  onCompare: (c) => (cmp1 = c),
  onDensity: (d) => (dens1 = d),
}));
c1.release();
const layers: LayerRow[] = cmp1.map((c, layer) => {
  const d = dens1[layer]!;
  const row = {
    layer,
    density: d.reduce((a, b) => a + b, 0) / d.length,
    recall: c!.recall,
    minRecall: c!.minRecall,
    outRelErr: c!.relErr,
  };
  console.error(
    `layer ${String(layer).padStart(2)}: density ${row.density.toFixed(4)}, recall ${
      row.recall.toFixed(5)
    } (min ${row.minRecall.toFixed(4)}), out rel err ${row.outRelErr.toExponential(3)}`,
  );
  return row;
});
const pplDense = perplexity(logProbs(logitsDense));
console.error(`dense pass: ppl ${pplDense.toFixed(4)} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);

// Pass 2: SALE as every layer's attention.
const c2 = await Effect.runPromise(g.newCache(N));
const logitsSale = await Effect.runPromise(
  g.forward(tokens, c2, { logits: "all", attentionGraph: () => saleGraph }),
);
c2.release();
g.release();
const pplSale = perplexity(logProbs(logitsSale));
const cmp = compareLogits(logitsDense, logitsSale, V);
const change = (pplSale - pplDense) / pplDense * 100;
const meanDensity = layers.reduce((a, b) => a + b.density, 0) / layers.length;
console.error(
  `SALE pass (${cfg.nLayer} layers replaced): ppl ${pplSale.toFixed(4)} vs dense ${pplDense.toFixed(4)}: ${
    change >= 0 ? "+" : ""
  }${change.toFixed(3)} %, mean density ${meanDensity.toFixed(4)}, mean KL ${
    cmp.meanKl.toExponential(3)
  } nats, top-1 agreement ${(cmp.top1Agreement * 100).toFixed(2)} % (${
    ((performance.now() - t0) / 1000).toFixed(0)
  } s)`,
);

const common = {
  model: "SmolLM2-135M-Instruct Q4_1",
  document: args.doc,
  tokens: N,
  threshold: p.threshold,
  backend: `cpu (${model.sgemm.name})`,
  path: "graph forward (llama_graph.ts) on the cpu backend; SALE = the registry's sale technique graph",
  date: new Date().toISOString(),
  command: `deno run -A tests/ops/sale_fidelity.ts ${Deno.args.join(" ")}`.trim(),
};
const rows = [
  ...layers.flatMap((l) => [
    { metric: "density", value: l.density, unit: "fraction", layer: l.layer, ...common },
    { metric: "attention_mass_recall", value: l.recall, unit: "fraction", layer: l.layer, ...common },
    { metric: "min_row_recall", value: l.minRecall, unit: "fraction", layer: l.layer, ...common },
    { metric: "output_rel_err", value: l.outRelErr, unit: "fraction", layer: l.layer, ...common },
  ]),
  { metric: "perplexity", impl: "dense", value: pplDense, unit: "ppl", ...common },
  { metric: "perplexity", impl: "sale", value: pplSale, unit: "ppl", ...common },
  { metric: "perplexity_change", impl: "sale", value: change, unit: "%", ...common },
  { metric: "mean_density", impl: "sale", value: meanDensity, unit: "fraction", ...common },
  { metric: "mean_kl", impl: "sale", value: cmp.meanKl, unit: "nats", ...common },
  { metric: "top1_agreement", impl: "sale", value: cmp.top1Agreement, unit: "fraction", ...common },
];
await Deno.writeTextFile(args.out, JSON.stringify(rows, null, 1) + "\n");
console.error(`wrote ${rows.length} rows to ${args.out}`);
