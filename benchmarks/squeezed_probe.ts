/**
 * Where Squeezed Attention loses a planted fact: for one haystack question (benchmarks/fidelity/tasks.ts), the
 * dense greedy answer on the independent CPU forward (runtime/src/model/llama.ts), then — at the row that
 * predicts the answer's first digit — every head's true attention mass on the fact's tokens (float64 softmax of
 * the captured Q/K) against the part of it the squeezed selection keeps (the prefix index built from the same
 * keys and the last `obsWindow` queries; that row's own lookup, as a decode step does), and the head's recall
 * (the attention mass on kept keys). Prints heads whose fact mass is at least `--min-mass`.
 *
 * Usage: `deno run -A benchmarks/squeezed_probe.ts [--context 2048] [--doc alice-in-wonderland] [--task 0]
 * [--percentiles 0.5,0.9] [--min-mass 0.05]` (CPU; prints only).
 * @module
 */
import { Effect } from "effect";
import { squeezed } from "@longctx/ops";
import { loadLlama } from "../runtime/src/model/llama.ts";
import { modelPath, readDocument } from "../runtime/src/paths.ts";
import { buildHaystack, planHaystack } from "./fidelity/tasks.ts";
import { fail, parseFlags } from "./lib/args.ts";

const args = parseFlags("deno run -A benchmarks/squeezed_probe.ts [flags]", {
  context: { kind: "int", default: 2048, min: 1024, help: "haystack tokens" },
  doc: { kind: "string", default: "alice-in-wonderland", help: "bundled document" },
  task: { kind: "int", default: 0, min: 0, help: "task index (a single-fact task)" },
  seed: { kind: "int", default: 1, min: 0, help: "haystack seed" },
  percentiles: { kind: "string", default: "0.5,0.9", help: "threshold percentiles" },
  "min-mass": { kind: "number", default: 0.05, min: 0, help: "heads shown: fact mass at least this" },
});
const must = <A, E>(e: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(e);
const m = await must(loadLlama(modelPath()));
const tok = m.tokenizer;
const text = await must(readDocument(args.doc));
const plan = await must(planHaystack(args.seed, args.doc, text, args.context));
const h = await must(buildHaystack(tok, text, plan, 24));
const task = plan.tasks[args.task] ??
  fail(`--task ${args.task}: no such task`, `use 0 … ${plan.tasks.length - 1}`);
if (task.facts.length !== 1) {
  fail(`task ${task.id} needs ${task.facts.length} facts`, "pick a single-fact task");
}
const fact = h.facts[task.facts[0]], F = h.prefix.length, factAt = h.head.length + fact.at;
const { nLayer: L, nHead: H, nKvHead: Hk, headDim: d, vocab: V, nEmbd: E } = m.config;
const ids = [...h.prefix, ...h.suffixes[args.task]];
const cache = m.newCache(ids.length + 32);
const next = (hrow: Float32Array) => {
  let best = 0, bv = -Infinity;
  for (let v = 0; v < V; v++) {
    let s = 0;
    for (let t = 0; t < E; t++) s += hrow[t] * m.output[v * E + t];
    if (s > bv) bv = s, best = v;
  }
  return best;
};
let hs = await must(m.forward(ids, cache));
const ans: number[] = [];
let t = next(hs.subarray((ids.length - 1) * E));
while (ans.length < 24 && t !== tok.eosId && !tok.controlIds.has(t)) {
  ans.push(t);
  hs = await must(m.forward([t], cache));
  t = next(hs.subarray(0, E));
}
const digitAt = ans.findIndex((x) => /\d/.test(tok.decode([x])));
console.log(
  `${task.id}: fact ${JSON.stringify(fact.sentence)} at tokens ${factAt}…${factAt + fact.tokens - 1} of ${F}`,
);
console.log(`dense answer ${JSON.stringify(tok.decode(ans))}`);
if (digitAt < 0) fail("the dense answer has no digit", "pick a task the model answers");
// Q/K of the sequence up to the row predicting the first digit
const seq = [...ids, ...ans.slice(0, digitAt)], n = seq.length, row = n - 1;
const Qs: Float32Array[] = [], Ks: Float32Array[] = [];
await must(m.forward(seq, m.newCache(n), { capture: (l, q, k) => ((Qs[l] = q), (Ks[l] = k)) }));
const p = squeezed.squeezedParams({}), obs = p.obsWindow, S = F - obs;
const index = squeezed.buildPrefixIndex(
  {
    keys: (l) => {
      const out = new Float32Array(Hk * F * d);
      for (let g = 0; g < Hk; g++) out.set(Ks[l].subarray(g * n * d, (g * n + F) * d), g * F * d);
      return out;
    },
    queries: (l) => {
      const out = new Float32Array(H * obs * d);
      for (let x = 0; x < H; x++) {
        out.set(Qs[l].subarray((x * n + F - obs) * d, (x * n + F) * d), x * obs * d);
      }
      return out;
    },
  },
  { layers: L, heads: H, kvHeads: Hk, headDim: d, fixed: F },
  p,
  { model: "probe", tokensSha256: "probe" },
  {
    gemm: m.sgemm.gemm,
  },
);
for (const pc of args.percentiles.split(",").map(Number)) {
  const tau = squeezed.thresholdOf(index, pc, "head");
  console.log(
    `\npercentile ${pc} (τ ${tau.toExponential(2)}), row predicting ${
      JSON.stringify(tok.decode([ans[digitAt]]))
    }:`,
  );
  for (let l = 0; l < L; l++) {
    const lay = index.perLayer[l], q1 = new Float32Array(H * d);
    for (let x = 0; x < H; x++) q1.set(Qs[l].subarray((x * n + row) * d, (x * n + row + 1) * d), x * d);
    const sc = squeezed.lookupReference(0, q1, lay.centroids, lay.sizes, {
      H,
      Hk,
      seq: 1,
      C: index.clusters,
      d,
    });
    const parts: string[] = [];
    for (let x = 0; x < H; x++) {
      const g = squeezed.kvHeadOf(x, H, Hk), s = new Float64Array(row + 1);
      let mx = -Infinity;
      for (let i = 0; i <= row; i++) {
        let v = 0;
        for (let y = 0; y < d; y++) v += q1[x * d + y] * Ks[l][(g * n + i) * d + y];
        mx = Math.max(mx, s[i] = v / Math.sqrt(d));
      }
      let z = 0;
      for (let i = 0; i <= row; i++) z += Math.exp(s[i] - mx);
      let factMass = 0, keptFact = 0, kept = 0;
      for (let i = 0; i <= row; i++) {
        const pr = Math.exp(s[i] - mx) / z;
        const keep = i >= S || sc[x * index.clusters + lay.labels[g * S + i]] > tau;
        if (i >= factAt && i < factAt + fact.tokens) factMass += pr, keptFact += keep ? pr : 0;
        if (keep) kept += pr;
      }
      if (factMass >= args["min-mass"]) {
        parts.push(`h${x} fact ${factMass.toFixed(2)} kept ${keptFact.toFixed(2)} recall ${kept.toFixed(2)}`);
      }
    }
    if (parts.length) console.log(`  layer ${l}: ${parts.join("; ")}`);
  }
}
