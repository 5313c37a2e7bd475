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
 * SALE runs as `ops/sale/gemm_attention.ts` (the `sale.*` CPU-reference arithmetic organised as OpenBLAS GEMMs,
 * checked against `saleCpu` by `tests/ops/sale_blas_test.ts`), so the whole run stays on the CPU.
 *
 * Run: `deno run -A tests/ops/sale_fidelity.ts [--doc alice-in-wonderland] [--tokens 8192]
 *   [--threshold 0.004] [--out benchmarks/results/sale_fidelity.json]`
 * Prints one line per layer and a summary; writes rows `{metric, value, unit, layer?, ...}` to `--out`.
 * Time on 2 CPU cores: a few minutes (two 8K-token forward passes plus SALE and dense per layer).
 * @module
 */
import { parseArgs } from "node:util";
import { Effect } from "effect";
import { loadLlama } from "../../runtime/src/model/llama.ts";
import {
  compareHidden,
  documentHidden,
  logProbsFromHidden,
  perplexity,
} from "../../runtime/src/model/metrics.ts";
import { modelPath, readDocument } from "../../runtime/src/paths.ts";
import { saleParams } from "../../ops/sale/params.ts";
import { type Gemm, saleAttentionBlas } from "../../ops/sale/gemm_attention.ts";

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
const p = saleParams({ threshold: Number(args.threshold) });
const gemm: Gemm = (...a) => model.sgemm.gemm(...a);
console.error(
  `model ${modelPath()} (${cfg.nLayer} layers, ${cfg.nHead}/${cfg.nKvHead} heads), doc ${args.doc}: ${N} of ${all.length} tokens, ` +
    `GEMM ${model.sgemm.name}, SALE blockQ ${p.blockQ} blockK ${p.blockK} local ${p.localWindow} sink ${p.sinkBlocks} τ ${p.threshold}`,
);

interface LayerRow {
  layer: number;
  density: number;
  recall: number;
  minRecall: number;
  outRelErr: number;
}
const layers: LayerRow[] = [];
const capture = (layer: number, q: Float32Array, k: Float32Array, v: Float32Array, offset: number) => {
  if (offset !== 0) throw new Error("capture expects one prefill chunk");
  const H = cfg.nHead, HK = cfg.nKvHead, D = q.length / (H * N);
  const dense = saleAttentionBlas(gemm, p, q, k, v, H, HK, N, D, N, true);
  const sale = saleAttentionBlas(gemm, p, q, k, v, H, HK, N, D, N, false);
  let rec = 0, minRec = 1, num = 0, den = 0;
  for (let i = 0; i < sale.lse.length; i++) {
    const r = Math.exp(sale.lse[i] - dense.lse[i]);
    rec += r;
    minRec = Math.min(minRec, r);
  }
  for (let i = 0; i < sale.o.length; i++) {
    num += (sale.o[i] - dense.o[i]) ** 2;
    den += dense.o[i] ** 2;
  }
  const row = {
    layer,
    density: sale.density.reduce((a, b) => a + b, 0) / H,
    recall: rec / sale.lse.length,
    minRecall: minRec,
    outRelErr: Math.sqrt(num / den),
  };
  layers.push(row);
  console.error(
    `layer ${String(layer).padStart(2)}: density ${row.density.toFixed(4)}, recall ${
      row.recall.toFixed(5)
    } (min ${row.minRecall.toFixed(4)}), out rel err ${row.outRelErr.toExponential(3)}`,
  );
};

const hDense = await Effect.runPromise(documentHidden(model, tokens, { chunk: N, capture }));
const pplDense = perplexity(logProbsFromHidden(model, hDense, tokens));
console.error(`dense pass: ppl ${pplDense.toFixed(4)} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);

let calls = 0;
const hSale = await Effect.runPromise(documentHidden(model, tokens, {
  chunk: N,
  attention: (q, k, v, ctx) => {
    if (ctx.offset !== 0) throw new Error("SALE attention runs whole-prefill chunks");
    calls++;
    return saleAttentionBlas(gemm, p, q, k, v, ctx.heads, ctx.kvHeads, ctx.seq, ctx.headDim, ctx.kvStride).o;
  },
}));
const pplSale = perplexity(logProbsFromHidden(model, hSale, tokens));
const cmp = await Effect.runPromise(compareHidden(model, hDense, hSale));
const change = (pplSale - pplDense) / pplDense * 100;
const meanDensity = layers.reduce((a, b) => a + b.density, 0) / layers.length;
console.error(
  `SALE pass (${calls} layers replaced): ppl ${pplSale.toFixed(4)} vs dense ${pplDense.toFixed(4)}: ${
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
