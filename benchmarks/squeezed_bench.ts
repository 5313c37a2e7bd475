/**
 * Squeezed Attention on SmolLM2 and real documents: KV budget against accuracy, swept over the threshold
 * percentile, against dense in the same run.
 *
 * Per haystack (a bundled document of `--context` tokens with planted facts and several questions,
 * benchmarks/fidelity/tasks.ts): the fixed context (chat head + document) is prefilled dense and its prefix
 * index built (k-means per layer and KV head, calibration from the last `obsWindow` queries), saved to disk and
 * loaded back (the K/V with it, so no second prefill); then every question is answered greedily with dense
 * attention over the cache and with `squeezed` at each `--percentiles` × `--gqa` point (`hier`: the
 * hierarchical lookup, L1 at `percentileL1` 0.7; the index is built once with both levels). Reported per point:
 * the KV budget (kept fixed-context keys / fixed-context tokens, mean over layers, heads and questions, in the
 * question's prefill), the budget reduction (1 / budget), accuracy (checkAnswer), agreement with dense's
 * answer, KL(dense ‖ squeezed) of the answer's first token, and the top-1 agreement of that token; per
 * haystack the index build time and size.
 *
 * Usage: `deno run -A benchmarks/squeezed_bench.ts [flags]` (`--help` lists them). Rows go to
 * `benchmarks/results/squeezed_fidelity.json`.
 * @module
 */
import { Effect } from "effect";
import { squeezed } from "@longctx/ops";
import { loadLlama } from "../runtime/src/model/llama.ts";
import { loadLlamaGraph } from "../runtime/src/model/llama_graph.ts";
import { selectBackend } from "../runtime/src/backends/select.ts";
import { modelPath, readDocument } from "../runtime/src/paths.ts";
import { compareLogits } from "../runtime/src/model/metrics.ts";
import { answerStopAt } from "../runtime/src/cli/run/execute.ts";
import {
  askContext,
  loadSqueezedIndex,
  prepareContext,
  restoreContext,
  saveSqueezedIndex,
  squeezedDecode,
} from "../runtime/src/squeezed/squeezed.ts";
import { buildHaystack, checkAnswer, planHaystack } from "./fidelity/tasks.ts";
import { appendRows, type RowInput } from "./lib/results.ts";
import { fail, list, parseFlags } from "./lib/args.ts";

const args = parseFlags("deno run -A benchmarks/squeezed_bench.ts [flags]", {
  context: { kind: "int", default: 7000, min: 1024, help: "tokens per haystack (prompt + answer)" },
  haystacks: { kind: "int", default: 2, min: 1, help: "haystacks (documents in turn)" },
  docs: {
    kind: "string",
    default: "alice-in-wonderland,as-you-like-it,paradise-lost",
    help: "bundled documents",
  },
  percentiles: { kind: "string", default: "0.5,0.7,0.8,0.9,0.95", help: "threshold percentiles swept" },
  gqa: {
    kind: "string",
    default: "head,union,hier",
    help: "lookup modes: head, union (GQA), hier (hierarchical, per head)",
  },
  "percent-clusters": { kind: "number", default: 5, min: 0.01, help: "clusters, % of clustered keys" },
  "max-new": { kind: "int", default: 24, min: 1, help: "answer tokens at most" },
  seed: { kind: "int", default: 1, min: 0, help: "haystack seed" },
  backend: { kind: "string", default: "cpu", help: "cpu | wgpu | webgpu | dawn" },
  "no-write": { kind: "switch", help: "print only; append no rows" },
});
const percentiles = list(args.percentiles).map((s) => {
  const x = Number(s);
  return Number.isFinite(x) && x >= 0 && x < 1 ? x : fail(`--percentiles: "${s}"`, "values in [0, 1)");
});
type Mode = "head" | "union" | "hier";
const modes = list(args.gqa).map((m): Mode =>
  m === "head" || m === "union" || m === "hier" ? m : fail(`--gqa: unknown "${m}"`, "head, union, hier")
);
const hier = modes.includes("hier");

const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
const must = <A, E>(e: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(e);
const model = await must(loadLlama(modelPath()));
const tok = model.tokenizer;
const sel = await must(selectBackend({ backend: args.backend as "cpu", cpu: { gemm: model.sgemm.gemm } }));
const backend = sel.backend;
const g = await must(loadLlamaGraph(model, backend));
const backendName = backend.kind === "cpu"
  ? `cpu (${model.sgemm.name})`
  : `${backend.kind} (${backend.adapter.name})`;
console.error(`bench squeezed: ${sel.report}`);
const docs = list(args.docs);
const base = squeezed.squeezedParams({ percentClusters: args["percent-clusters"], hierarchical: hier });
/** The parameters of a point: its mode and percentile over the base (one index serves every point). */
const paramsOf = (m: Mode, pc: number): squeezed.SqueezedParams => ({
  ...base,
  gqa: m === "union" ? "union" : "head",
  hierarchical: m === "hier",
  percentile: pc,
});
const rows: RowInput[] = [];
const common = {
  model: "SmolLM2-135M-Instruct Q4_1",
  backend: backendName,
  gpu: backend.kind === "cpu" ? "none" : backend.adapter.name,
};
const stop = (ids: readonly number[], next: number) => answerStopAt(tok, ids, next) !== undefined;
const dir = await Deno.makeTempDir({ prefix: "squeezed-bench-" });

interface Tally {
  budget: number;
  correct: number;
  agree: number;
  kl: number;
  top1: number;
  n: number;
}
const tally = new Map<string, Tally>();
let denseCorrect = 0, questions = 0, buildMs = 0, clusterMs = 0, indexBytes = 0, fixedSum = 0;
const summary: string[] = [];
const recallSum = new Map<string, number>();
let hierWork = 0;

for (let j = 0; j < args.haystacks; j++) {
  const doc = docs[j % docs.length];
  const text = await must(readDocument(doc));
  const plan = await must(planHaystack(args.seed + j, doc, text, args.context));
  const h = await must(buildHaystack(tok, text, plan, args["max-new"]));
  const room = Math.max(...h.suffixes.map((s) => s.length)) + args["max-new"] + 1;
  const tb = performance.now();
  const built = await must(prepareContext(g, model, h.prefix, base, { room, keepCapture: true }));
  buildMs += performance.now() - tb;
  clusterMs += built.ms.cluster;
  built.cache.release();
  // the selection's attention recall on the window's own (calibration) queries, per point
  const points = modes.filter((m): m is "head" | "union" => m !== "hier").flatMap((m) =>
    percentiles.map((pc) => ({ gqa: m, percentile: pc }))
  );
  if (hier) {
    // the hierarchical lookup's work on the window's queries (one L1 gate for them all, as a question):
    // the fine clusters computed / all fine clusters, mean over layers
    const { heads: H, kvHeads: Hk, headDim: d, clusters: C, clustersL1: C1 } = built.index;
    const tau1 = squeezed.thresholdOf(built.index, base.percentileL1, "head", 1);
    let work = 0;
    built.index.perLayer.forEach((lay, l) => {
      const r = squeezed.lookupHierReference(
        0,
        built.capture!.queries[l],
        lay.centroids,
        lay.sizes,
        lay.l1!.centroids,
        lay.l1!.sizes,
        lay.l1!.ptr,
        tau1,
        { H, Hk, seq: base.obsWindow, C, C1, d },
      );
      work += r.evaluated / (H * C) / built.index.layers;
    });
    hierWork += work;
  }
  const recall = squeezed.observationRecall(
    built.index,
    {
      keys: (l) => built.capture!.keys[l],
      queries: (l) => built.capture!.queries[l],
    },
    points,
    model.sgemm.gemm,
  );
  points.forEach((x, n) =>
    recallSum.set(`${x.gqa}@${x.percentile}`, (recallSum.get(`${x.gqa}@${x.percentile}`) ?? 0) + recall[n])
  );
  // the artifact: saved, loaded back, the K/V restored from it (no second prefill)
  const path = `${dir}/${j}.sqz`;
  indexBytes += await must(saveSqueezedIndex(path, built.index));
  const loaded = await must(loadSqueezedIndex(path));
  const ctx = await must(restoreContext(g, model, h.prefix, loaded, room));
  fixedSum += ctx.index.fixed;
  console.error(
    `[${elapsed()}] ${h.id}: ${ctx.index.fixed} fixed tokens, ${ctx.index.clusters} clusters/head, prefill ` +
      `${(built.ms.prefill / 1000).toFixed(1)} s, clustering ${
        (built.ms.cluster / 1000).toFixed(1)
      } s, index ` +
      `${(indexBytes / 2 ** 20).toFixed(0)} MiB; ${plan.tasks.length} questions`,
  );
  const decoders = new Map<string, (l: number) => import("@longctx/graph").CacheDecodeGraphs>();
  for (const m of modes) {
    for (const pc of percentiles) {
      decoders.set(`${m}@${pc}`, await must(squeezedDecode(ctx.index, paramsOf(m, pc))));
    }
  }
  for (const [i, task] of plan.tasks.entries()) {
    const d = await must(askContext(g, ctx, h.suffixes[i], args["max-new"], stop));
    const dAns = tok.decode([...d.ids], true).trim();
    const dOk = checkAnswer(task.expected, dAns).correct;
    denseCorrect += dOk ? 1 : 0;
    questions++;
    const line = [`${dOk ? "✓" : "✗"} ${task.id.padEnd(14)} dense ${JSON.stringify(dAns)}`];
    for (const [key, dec] of decoders) {
      const s = await must(askContext(g, ctx, h.suffixes[i], args["max-new"], stop, dec));
      const ans = tok.decode([...s.ids], true).trim();
      const ok = checkAnswer(task.expected, ans).correct;
      const c = compareLogits(d.firstLogits, s.firstLogits, model.config.vocab);
      const budget = s.density.reduce((a, b) => a + b, 0) / s.density.length;
      const t = tally.get(key) ?? { budget: 0, correct: 0, agree: 0, kl: 0, top1: 0, n: 0 };
      t.budget += budget;
      t.correct += ok ? 1 : 0;
      t.agree += ans === dAns ? 1 : 0;
      t.kl += c.meanKl;
      t.top1 += c.top1Agreement;
      t.n++;
      tally.set(key, t);
      line.push(
        `${key} ${(budget * 100).toFixed(1)}% ${ok ? "✓" : "✗"}${
          ans === dAns ? "=" : ` ${JSON.stringify(ans)}`
        }`,
      );
    }
    console.error(`[${elapsed()}]   ${line.join(" · ")}`);
  }
  ctx.cache.release();
  await Deno.remove(path);
}
await Deno.remove(dir, { recursive: true });

const meta = {
  haystacks: args.haystacks,
  questions,
  meanFixedTokens: Math.round(fixedSum / args.haystacks),
  percentClusters: base.percentClusters,
  obsWindow: base.obsWindow,
  answers: "greedy",
  seed: args.seed,
  docs: docs.slice(0, args.haystacks).join(","),
};
const row = (metric: string, value: number, unit: string, impl: string, params: Record<string, unknown>) =>
  rows.push({ metric, value, unit, ...common, context: args.context, impl, params: { ...meta, ...params } });
row("accuracy", denseCorrect / questions, "fraction", "dense", {});
row("index_build_ms", buildMs / args.haystacks, "ms", "squeezed", {
  what: "prefill + read back + k-means + calibration",
});
row("cluster_ms", clusterMs / args.haystacks, "ms", "squeezed", { what: "k-means + calibration (host)" });
row("index_bytes", indexBytes / args.haystacks, "bytes", "squeezed", { kv: "f32 K/V kept" });
if (hier) {
  row("lookup_work_fraction", hierWork / args.haystacks, "fraction", "squeezed-hier", {
    hierarchical: true,
    percentileL1: base.percentileL1,
    percentClustersL1: base.percentClustersL1,
    what: "share of the fine clusters computed, the window's queries as one question",
  });
  summary.push(
    `hierarchical lookup: ${((hierWork / args.haystacks) * 100).toFixed(1)}% of the fine clusters computed`,
  );
}
summary.push(
  `dense            accuracy ${(denseCorrect / questions).toFixed(3)} (${denseCorrect}/${questions})`,
);
for (const [key, t] of tally) {
  const [mode, pc] = key.split("@");
  const pp = paramsOf(mode as Mode, Number(pc));
  const p = {
    gqa: pp.gqa,
    percentile: pp.percentile,
    ...(pp.hierarchical
      ? { hierarchical: true, percentileL1: pp.percentileL1, percentClustersL1: pp.percentClustersL1 }
      : {}),
  };
  const budget = t.budget / t.n;
  // the hierarchical lookup's rows under their own impl (RESULTS.md groups by impl)
  const impl = pp.hierarchical ? "squeezed-hier" : "squeezed";
  row("kv_budget", budget, "fraction", impl, p);
  row("budget_reduction", 1 / budget, "x", impl, p);
  row("accuracy", t.correct / t.n, "fraction", impl, p);
  row("answer_agreement", t.agree / t.n, "fraction", impl, p);
  row("first_token_kl", t.kl / t.n, "nats", impl, p);
  row("first_token_top1", t.top1 / t.n, "fraction", impl, p);
  const rec = (recallSum.get(key) ?? NaN) / args.haystacks;
  if (recallSum.has(key)) {
    row("observation_recall", rec, "fraction", "squeezed", {
      ...p,
      what: "obs-window queries' softmax mass kept",
    });
  }
  summary.push(
    `${key.padEnd(16)} budget ${(budget * 100).toFixed(1)}% (${(1 / budget).toFixed(1)}×)  accuracy ${
      (t.correct / t.n).toFixed(3)
    }${
      recallSum.has(key) ? `  obs recall ${(recallSum.get(key)! / args.haystacks).toFixed(3)}` : ""
    }  same answer ${(t.agree / t.n).toFixed(3)}  KL ${(t.kl / t.n).toExponential(2)}  top-1 ${
      (t.top1 / t.n).toFixed(3)
    }`,
  );
}
g.release();
console.log(summary.join("\n"));
if (!args["no-write"]) {
  await appendRows("squeezed_fidelity", rows);
  console.error(`${rows.length} rows → benchmarks/results/squeezed_fidelity.json`);
}
