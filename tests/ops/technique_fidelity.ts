/**
 * A technique's fidelity on real attention (a script, not a test): SmolLM2-135M on a real ≥ 8K-token document,
 * any registered technique (`--technique`, default `sale`) at one value of its knob (`--knob`, default the
 * technique's own default: SALE's threshold τ, HiP's top-k).
 *
 * 1. Dense pass; per layer, the technique run as a shadow of the layer's dense attention on that layer's own
 *    Q/K/V: density (attended / causal), attention-mass recall (mean over query rows and heads of the exact
 *    attention probability mass inside what it attends, `exp(lse_technique − lse_dense)`), output relative
 *    error `‖o − o_dense‖ / ‖o_dense‖`.
 * 2. Technique pass: the model's attention replaced by the technique in every layer (but the first
 *    `denseLayers` when the technique has that parameter: HiP's official default keeps 3 dense); perplexity
 *    change against the dense pass, KL(dense ‖ technique) and top-1 agreement of the next-token distributions.
 *
 * Both passes are the graph forward (`runtime/src/model/llama_graph.ts`) on the cpu backend with OpenBLAS; the
 * technique is the registry's prefill graph (e.g. `sale.quantize → sale.estimate → sale.select →
 * sale.sparseAttn`, `hip.mask → dense.indexAttn`), whose CPU references run as GEMMs there; recall and error
 * are computed by `model.lseRecall` / `model.sqDiff` on the backend (`shadowGraph`, `onCompare`).
 *
 * Run: `deno run -A tests/ops/technique_fidelity.ts [--technique sale] [--knob 0.004] [--params '{"denseLayers":0}']
 *   [--doc alice-in-wonderland]
 *   [--tokens 8192] [--out benchmarks/results/<technique>_fidelity.json]` (`--params`: more technique
 *   parameters as JSON, decoded by the technique's schema)
 * Prints one line per layer and a summary; writes rows `{metric, value, unit, layer?, ...}` to `--out`.
 * Time on 2 CPU cores: a few minutes (two 8K-token forward passes plus the technique and dense per layer).
 * @module
 */
import { parseArgs } from "node:util";
import { Effect } from "effect";
import { decodeTechniqueParams, denseLayersOf, type Graph } from "@longctx/graph";
import { techniqueByName } from "@longctx/ops";
import { loadLlama } from "../../runtime/src/model/llama.ts";
import { type AttnComparison, loadLlamaGraph } from "../../runtime/src/model/llama_graph.ts";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { compareLogits, logSumExp, perplexity } from "../../runtime/src/model/metrics.ts";
import { modelPath, readDocument } from "../../runtime/src/paths.ts";
import { gitCommit, gpuInfo } from "../../benchmarks/lib/results.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    doc: { type: "string", default: "alice-in-wonderland" },
    tokens: { type: "string", default: "8192" },
    technique: { type: "string", default: "sale" },
    knob: { type: "string" },
    params: { type: "string" },
    out: { type: "string" },
  },
  strict: true,
});

const t0 = performance.now();
const model = await Effect.runPromise(loadLlama(modelPath()));
const cfg = model.config;
const text = await Effect.runPromise(readDocument(args.doc));
const all = model.tokenizer.encode(text);
const N = Math.min(Number(args.tokens), all.length);
if (N < 8192 && Number(args.tokens) >= 8192) console.error(`warning: document has only ${all.length} tokens`);
const tokens = all.slice(0, N);
const technique = await Effect.runPromise(techniqueByName(args.technique));
const knob = technique.knob;
const extra = args.params ? JSON.parse(args.params) as Record<string, unknown> : {};
const p = (await Effect.runPromise(
  decodeTechniqueParams(
    technique,
    knob && args.knob !== undefined ? { ...extra, [knob.param]: Number(args.knob) } : extra,
  ),
)) as Record<string, unknown>;
const knobValue = knob ? p[knob.param] : undefined;
const denseLayers = denseLayersOf(p);
const out = args.out ?? `benchmarks/results/${technique.name}_fidelity.json`;
const backend = await Effect.runPromise(makeCpuBackend({ gemm: model.sgemm.gemm }));
const g = await Effect.runPromise(loadLlamaGraph(model, backend));
const dims = { heads: cfg.nHead, kvHeads: cfg.nKvHead, headDim: cfg.headDim, seq: N, kvSeq: N };
const techGraph: Graph = await Effect.runPromise(technique.graph(p, dims, "prefill", "f32"));
console.error(
  `model ${modelPath()} (${cfg.nLayer} layers, ${cfg.nHead}/${cfg.nKvHead} heads), doc ${args.doc}: ${N} of ${all.length} tokens, ` +
    `graph forward on the cpu backend, GEMM ${model.sgemm.name}, ${technique.name} ${JSON.stringify(p)}` +
    (denseLayers > 0 ? ` (first ${denseLayers} layers dense in the replacement pass)` : ""),
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

// Pass 1: dense, with the technique run as a shadow of every layer on that layer's own Q/K/V.
let cmp1: readonly (AttnComparison | undefined)[] = [];
let dens1: readonly (Float32Array | undefined)[] = [];
const c1 = await Effect.runPromise(g.newCache(N));
const logitsDense = await Effect.runPromise(g.forward(tokens, c1, {
  logits: "all",
  shadowGraph: () => techGraph,
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

// Pass 2: the technique as every layer's attention (but the first denseLayers).
const c2 = await Effect.runPromise(g.newCache(N));
const logitsTech = await Effect.runPromise(
  g.forward(tokens, c2, { logits: "all", attentionGraph: (l) => (l < denseLayers ? undefined : techGraph) }),
);
c2.release();
g.release();
const pplTech = perplexity(logProbs(logitsTech));
const cmp = compareLogits(logitsDense, logitsTech, V);
const change = (pplTech - pplDense) / pplDense * 100;
const meanDensity = layers.reduce((a, b) => a + b.density, 0) / layers.length;
console.error(
  `${technique.name} pass (${cfg.nLayer - denseLayers} layers replaced): ppl ${pplTech.toFixed(4)} vs dense ${
    pplDense.toFixed(4)
  }: ${change >= 0 ? "+" : ""}${change.toFixed(3)} %, mean density ${meanDensity.toFixed(4)}, mean KL ${
    cmp.meanKl.toExponential(3)
  } nats, top-1 agreement ${(cmp.top1Agreement * 100).toFixed(2)} % (${
    ((performance.now() - t0) / 1000).toFixed(0)
  } s)`,
);

const common = {
  model: "SmolLM2-135M-Instruct Q4_1",
  backend: `cpu (${model.sgemm.name})`,
  ...gpuInfo(),
  commit: gitCommit(),
  run: 1,
  date: new Date().toISOString(),
  command: `deno run -A tests/ops/technique_fidelity.ts ${Deno.args.join(" ")}`.trim(),
  note:
    `graph forward (llama_graph.ts) on the cpu backend; ${technique.name} = the registry's technique graph`,
};
/** Row parameters (what `benchmarks/render.ts` groups rows by): the setting, and the layer for per-layer rows. */
const params = (layer?: number) => ({
  document: args.doc,
  tokens: N,
  technique: technique.name,
  ...(knob ? { [knob.param]: knobValue as number } : {}),
  replacedLayers: cfg.nLayer - denseLayers,
  ...(layer === undefined ? {} : { layer }),
});
const rows = [
  ...layers.flatMap((l) => [
    { metric: "density", value: l.density, unit: "fraction", params: params(l.layer), ...common },
    {
      metric: "attention_mass_recall",
      value: l.recall,
      unit: "fraction",
      params: params(l.layer),
      ...common,
    },
    { metric: "min_row_recall", value: l.minRecall, unit: "fraction", params: params(l.layer), ...common },
    { metric: "output_rel_err", value: l.outRelErr, unit: "fraction", params: params(l.layer), ...common },
  ]),
  { metric: "perplexity", impl: "dense", value: pplDense, unit: "ppl", params: params(), ...common },
  { metric: "perplexity", impl: technique.name, value: pplTech, unit: "ppl", params: params(), ...common },
  {
    metric: "perplexity_change",
    impl: technique.name,
    value: change,
    unit: "%",
    params: params(),
    ...common,
  },
  {
    metric: "mean_density",
    impl: technique.name,
    value: meanDensity,
    unit: "fraction",
    params: params(),
    ...common,
  },
  { metric: "mean_kl", impl: technique.name, value: cmp.meanKl, unit: "nats", params: params(), ...common },
  {
    metric: "top1_agreement",
    impl: technique.name,
    value: cmp.top1Agreement,
    unit: "fraction",
    params: params(),
    ...common,
  },
];
await Deno.writeTextFile(out, JSON.stringify(rows, null, 1) + "\n");
console.error(`wrote ${rows.length} rows to ${out}`);
