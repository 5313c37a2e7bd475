import { Effect } from "effect";
import { squeezed } from "@longctx/ops";
import { loadLlama } from "./runtime/src/model/llama.ts";
import { modelPath, readDocument } from "./runtime/src/paths.ts";
import { buildHaystack, planHaystack } from "./benchmarks/fidelity/tasks.ts";
const must = <A, E>(e: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(e);
const m = await must(loadLlama(modelPath()));
const tok = m.tokenizer;
const text = await must(readDocument("alice-in-wonderland"));
const plan = await must(planHaystack(1, "alice-in-wonderland", text, 2048));
const h = await must(buildHaystack(tok, text, plan, 24));
const task = 0, fact = h.facts[plan.tasks[task].facts[0]];
const F = h.prefix.length, factAt = h.head.length + fact.at;
console.log("fact", JSON.stringify(tok.decode(h.prefix.slice(factAt, factAt + fact.tokens))), factAt, fact.tokens);
// dense answer ids via the CPU forward, greedy
const ids = [...h.prefix, ...h.suffixes[task]];
const cache = m.newCache(ids.length + 30);
let hs = await must(m.forward(ids, cache));
const { nLayer: L, nHead: H, nKvHead: Hk, headDim: d, vocab: V, nEmbd: E } = m.config;
const logitsOf = (hrow: Float32Array) => { let best = 0, bv = -Infinity; for (let v = 0; v < V; v++) { let s = 0; for (let t = 0; t < E; t++) s += hrow[t] * m.output[v * E + t]; if (s > bv) bv = s, best = v; } return best; };
const ans: number[] = [];
let next = logitsOf(hs.subarray((ids.length - 1) * E));
for (let i = 0; i < 16 && next !== tok.eosId && !tok.controlIds.has(next); i++) { ans.push(next); hs = await must(m.forward([next], cache)); next = logitsOf(hs.subarray(0, E)); }
console.log("dense answer", JSON.stringify(tok.decode(ans)));
// the answer token that is the first digit
const digitAt = ans.findIndex((t) => /\d/.test(tok.decode([t])));
console.log("first digit answer index", digitAt, JSON.stringify(tok.decode([ans[digitAt]])));
// capture Q/K of the whole sequence up to the row predicting that digit
const seqIds = [...ids, ...ans.slice(0, digitAt)];
const row = seqIds.length - 1;
const Qs: Float32Array[] = [], Ks: Float32Array[] = [];
await must(m.forward(seqIds, m.newCache(seqIds.length), { capture: (l, q, k) => { Qs[l] = q; Ks[l] = k; } }));
const n = seqIds.length;
// the index from the fixed context's keys and the last 100 queries
const p = squeezed.squeezedParams({});
const obs = p.obsWindow, S = F - obs;
const keysF = (l: number) => { const out = new Float32Array(Hk * F * d); for (let g = 0; g < Hk; g++) out.set(Ks[l].subarray(g * n * d, (g * n + F) * d), g * F * d); return out; };
const qObs = (l: number) => { const out = new Float32Array(H * obs * d); for (let hh = 0; hh < H; hh++) out.set(Qs[l].subarray((hh * n + F - obs) * d, (hh * n + F) * d), hh * obs * d); return out; };
const idx = squeezed.buildPrefixIndex({ keys: keysF, queries: qObs }, { layers: L, heads: H, kvHeads: Hk, headDim: d, fixed: F }, p, { model: "x", tokensSha256: "y" }, { gemm: m.sgemm.gemm });
for (const pc of [0.5, 0.9]) {
  const tau = squeezed.thresholdOf(idx, pc, "head");
  let out = `p ${pc} τ ${tau.toExponential(2)}\n`;
  for (let l = 0; l < L; l++) {
    const lay = idx.perLayer[l];
    const q1 = new Float32Array(H * d);
    for (let hh = 0; hh < H; hh++) q1.set(Qs[l].subarray((hh * n + row) * d, (hh * n + row + 1) * d), hh * d);
    const sc = squeezed.lookupReference(0, q1, lay.centroids, lay.sizes, { H, Hk, seq: 1, C: idx.clusters, d });
    const parts: string[] = [];
    for (let hh = 0; hh < H; hh++) {
      const g = Math.floor(hh / (H / Hk));
      // true attention of this row
      const s = new Float64Array(row + 1); let mx = -Infinity;
      for (let i = 0; i <= row; i++) { let v = 0; for (let t = 0; t < d; t++) v += q1[hh * d + t] * Ks[l][(g * n + i) * d + t]; s[i] = v / 8; mx = Math.max(mx, s[i]); }
      let z = 0; for (let i = 0; i <= row; i++) z += Math.exp(s[i] - mx);
      let factMass = 0, keptMass = 0, keptFact = 0;
      for (let i = 0; i <= row; i++) {
        const pr = Math.exp(s[i] - mx) / z;
        const kept = i >= S ? true : sc[hh * idx.clusters + lay.labels[g * S + i]] > tau;
        if (i >= factAt && i < factAt + fact.tokens) { factMass += pr; if (kept) keptFact += pr; }
        if (kept) keptMass += pr;
      }
      if (factMass > 0.05) parts.push(`h${hh} fact ${factMass.toFixed(2)} kept ${keptFact.toFixed(2)} recall ${keptMass.toFixed(2)}`);
    }
    if (parts.length) out += `  L${l}: ${parts.join("; ")}\n`;
  }
  console.log(out);
}
