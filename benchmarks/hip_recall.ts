/**
 * HiP attention recall on real attention (issue 15): SmolLM2-135M on a real ≥ 8K-token document, every layer's
 * post-RoPE Q/K captured from the CPU forward; per layer and head, on sampled query rows (every `--stride`-th),
 * the exact softmax mass inside the keys each method attends, at the same budget per query:
 *
 * - **HiP**: `hip.mask` (the registry operator's CPU reference, GEMM path) → sink ∪ selected ∪ window;
 * - **oracle top-B**: the B keys of largest true attention probability, B = the number of keys HiP attends for
 *   that query (the best any selection of that size can do);
 * - **StreamingLLM**: the `sink` first keys plus the last B − sink keys (sinks + a local window of the same
 *   budget).
 *
 * Recall = Σ p over the attended keys (1 for dense). Rows (`metric` `attention_recall` per method, mean over
 * layers, heads and sampled rows with position ≥ `--from`, and per layer) go to `--out`.
 *
 * Run: `deno run -A benchmarks/hip_recall.ts [--doc alice-in-wonderland] [--tokens 8192] [--top-k 512]
 * [--stride 16] [--from 1024] [--out benchmarks/results/hip_recall.json]`. About 3 minutes on 2 cores.
 * @module
 */
import { parseArgs } from "node:util";
import { Effect } from "effect";
import { hip } from "@longctx/ops";
import { loadLlama } from "../runtime/src/model/llama.ts";
import { modelPath, readDocument } from "../runtime/src/paths.ts";
import { gitCommit } from "./lib/results.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  strict: true,
  options: {
    doc: { type: "string", default: "alice-in-wonderland" },
    tokens: { type: "string", default: "8192" },
    "top-k": { type: "string", default: "512" },
    stride: { type: "string", default: "16" },
    from: { type: "string", default: "1024" },
    out: { type: "string", default: "benchmarks/results/hip_recall.json" },
  },
});
const t0 = performance.now();
const model = await Effect.runPromise(loadLlama(modelPath()));
const cfg = model.config;
const all = model.tokenizer.encode(await Effect.runPromise(readDocument(args.doc)));
const N = Math.min(Number(args.tokens), all.length);
const tokens = all.slice(0, N);
const p = hip.hipParams({ topK: Number(args["top-k"]) });
const stride = Number(args.stride), from = Number(args.from);
const H = cfg.nHead, HK = cfg.nKvHead, D = cfg.headDim, G = H / HK;
const scale = 1 / Math.sqrt(D);
console.error(
  `hip_recall: ${modelPath()}, ${args.doc}: ${N} tokens; HiP k ${p.topK}, blockQ ${p.blockQ}, blockK ${p.blockK}, ` +
    `sink ${p.sink}, window ${p.window}; rows every ${stride}, positions ≥ ${from} averaged`,
);

/** The k-th largest of `a[0..n)` (quickselect on a copy). */
const kthLargest = (src: Float64Array, n: number, k: number): number => {
  const a = src.slice(0, n);
  let lo = 0, hi = n - 1;
  const want = k - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >> 1];
    let i = lo, j = hi;
    while (i <= j) {
      while (a[i] > pivot) i++;
      while (a[j] < pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (want <= j) hi = j;
    else if (want >= i) lo = i;
    else return a[want];
  }
  return a[want];
};

interface LayerRecall {
  layer: number;
  hip: number;
  oracle: number;
  streaming: number;
  keys: number;
  rows: number;
}
const layers: LayerRecall[] = [];
const probs = new Float64Array(N);

const capture = (layer: number, q: Float32Array, k: Float32Array, _v: Float32Array, offset: number) => {
  if (offset !== 0 || q.length !== H * N * D) return;
  const mask = hip.hipMaskReference(p, q, k, H, HK, N, N, D, model.sgemm.gemm);
  const qB = Math.ceil(N / p.blockQ);
  let sh = 0, so = 0, ss = 0, keys = 0, rows = 0;
  const S = new Float32Array(N);
  for (let h = 0; h < H; h++) {
    const kb = Math.floor(h / G) * N * D;
    for (let i = Math.max(from, stride - 1); i < N; i += stride) {
      // exact probabilities of row i over keys 0..i (one GEMV through the BLAS)
      model.sgemm.gemm(
        false,
        true,
        1,
        i + 1,
        D,
        scale,
        q.subarray((h * N + i) * D),
        D,
        k.subarray(kb),
        D,
        0,
        S,
        N,
      );
      let m = -Infinity;
      for (let j = 0; j <= i; j++) m = Math.max(m, S[j]);
      let l = 0;
      for (let j = 0; j <= i; j++) l += probs[j] = Math.exp(S[j] - m);
      for (let j = 0; j <= i; j++) probs[j] /= l;
      // HiP: sink ∪ list ∪ window, each key once
      const b = Math.floor(i / p.blockQ), base = (h * qB + b) * p.topK;
      const list = new Set(mask.indices.subarray(base, base + p.topK));
      let mh = 0, count = 0;
      for (let j = 0; j <= i; j++) {
        if (j < p.sink || j > i - p.window || list.has(j)) {
          mh += probs[j];
          count++;
        }
      }
      // oracle: the top-`count` probabilities; StreamingLLM: sink + the last count − sink keys
      const kth = kthLargest(probs, i + 1, count);
      let mo = 0, above = 0;
      for (let j = 0; j <= i; j++) if (probs[j] > kth) (mo += probs[j], above++);
      mo += (count - above) * kth;
      let ms = 0;
      const sinkN = Math.min(p.sink, count);
      for (let j = 0; j < sinkN; j++) ms += probs[j];
      for (let j = Math.max(sinkN, i + 1 - (count - sinkN)); j <= i; j++) ms += probs[j];
      sh += mh;
      so += mo;
      ss += ms;
      keys += count;
      rows++;
    }
  }
  const r = { layer, hip: sh / rows, oracle: so / rows, streaming: ss / rows, keys: keys / rows, rows };
  layers.push(r);
  console.error(
    `layer ${String(layer).padStart(2)}: recall HiP ${r.hip.toFixed(4)}, oracle top-B ${
      r.oracle.toFixed(4)
    }, ` +
      `StreamingLLM ${r.streaming.toFixed(4)} (B ≈ ${r.keys.toFixed(0)} keys, ${rows} rows; ${
        ((performance.now() - t0) / 1000).toFixed(0)
      } s)`,
  );
};

const cache = model.newCache(N);
await Effect.runPromise(model.forward(tokens, cache, { capture }));
const mean = (f: (r: LayerRecall) => number) => layers.reduce((a, r) => a + f(r), 0) / layers.length;
const summary = {
  hip: mean((r) => r.hip),
  oracle: mean((r) => r.oracle),
  streaming: mean((r) => r.streaming),
};
console.error(
  `mean over ${layers.length} layers: HiP ${summary.hip.toFixed(4)}, oracle top-B ${
    summary.oracle.toFixed(4)
  }, ` +
    `StreamingLLM ${summary.streaming.toFixed(4)}; mean budget ${
      mean((r) => r.keys).toFixed(0)
    } keys per query ` +
    `(${((performance.now() - t0) / 1000).toFixed(0)} s)`,
);
const common = {
  model: "SmolLM2-135M-Instruct Q4_1",
  document: args.doc,
  tokens: N,
  backend: `cpu (${model.sgemm.name})`,
  params: { topK: p.topK, blockQ: p.blockQ, blockK: p.blockK, sink: p.sink, window: p.window },
  rowsSampled: `every ${stride}-th query row at positions ≥ ${from}, all heads`,
  date: new Date().toISOString(),
  commit: gitCommit(),
  command: `deno run -A benchmarks/hip_recall.ts ${Deno.args.join(" ")}`.trim(),
};
const rows = [
  ...(["hip", "oracle", "streaming"] as const).map((m) => ({
    metric: "attention_recall",
    impl: m === "hip" ? "hip" : m === "oracle" ? "oracle-top-b" : "streaming-llm",
    value: summary[m],
    unit: "fraction",
    ...common,
  })),
  { metric: "keys_per_query", impl: "hip", value: mean((r) => r.keys), unit: "tokens", ...common },
  ...layers.flatMap((r) =>
    (["hip", "oracle", "streaming"] as const).map((m) => ({
      metric: "attention_recall",
      impl: m === "hip" ? "hip" : m === "oracle" ? "oracle-top-b" : "streaming-llm",
      layer: r.layer,
      value: r[m],
      unit: "fraction",
      ...common,
    }))
  ),
];
await Deno.writeTextFile(args.out, JSON.stringify(rows, null, 1) + "\n");
console.error(`hip_recall: ${rows.length} rows → ${args.out}`);
