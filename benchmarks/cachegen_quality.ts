/**
 * CacheGen's quality of generation from the decoded KV cache, on SmolLM2 and a real document with planted facts,
 * against the original KV and plain 8-bit and 4-bit per-token quantisation, with the bytes each costs.
 *
 * One haystack (benchmarks/fidelity/tasks.ts: a bundled document of `--context` tokens, facts planted, 11
 * questions: single and multi facts, comparisons, a count, unanswerable ones) is prefilled once (dense, the
 * graph forward) and its fixed context's K/V (chat head + document) read back. Each configuration — the
 * original f32 KV, CacheGen at each `--levels` level and `--chunks` chunking (tokens per container, i.e. per
 * CDF), and the plain per-token absmax baselines (one fp16 scale per layer and token over all heads' channels,
 * bins 256 and 16) — is written into a fresh cache, and from it:
 *
 * - the perplexity of the document's next `--continuation` tokens (teacher-forced, one chunked forward);
 * - greedy agreement with the original KV over `--greedy` tokens continuing the document: the tokens equal
 *   before the first difference, and the share of equal positions;
 * - the answers to the haystack's questions (greedy, `checkAnswer`), and their agreement with the original's;
 * - KL(original ‖ config) of the first answer token, mean over questions.
 *
 * Usage: `deno run -A benchmarks/cachegen_quality.ts [flags]` (`--help` lists them). Rows go to
 * `benchmarks/results/cachegen_quality.json`.
 * @module
 */
import { Effect } from "effect";
import { cachegen, squeezed } from "@longctx/ops";
import { loadLlama } from "../runtime/src/model/llama.ts";
import { loadLlamaGraph } from "../runtime/src/model/llama_graph.ts";
import { type KvRows, readCacheRows, writeCacheRows } from "../runtime/src/model/kv_rows.ts";
import { askCache } from "../runtime/src/model/ask.ts";
import { compareLogits, logSumExp, perplexity } from "../runtime/src/model/metrics.ts";
import { selectBackend } from "../runtime/src/backends/select.ts";
import { modelPath, readDocument } from "../runtime/src/paths.ts";
import { modelFingerprint } from "../runtime/src/squeezed/squeezed.ts";
import { answerStopAt } from "../runtime/src/cli/run/execute.ts";
import { encodeOrdinaryPrefix } from "../runtime/src/cli/run/prompt.ts";
import { buildHaystack, checkAnswer, planHaystack } from "./fidelity/tasks.ts";
import { appendRows, type RowInput } from "./lib/results.ts";
import { fail, list, parseFlags } from "./lib/args.ts";

const args = parseFlags("deno run -A benchmarks/cachegen_quality.ts [flags]", {
  context: {
    kind: "int",
    default: 8192,
    min: 1024,
    help: "tokens of the haystack prompt (with answer room)",
  },
  doc: { kind: "string", default: "alice-in-wonderland", help: "bundled document" },
  levels: { kind: "string", default: "1,2,3", help: "CacheGen quantisation levels" },
  chunks: { kind: "string", default: "256,all", help: "tokens per container (per CDF); all = the context" },
  baselines: { kind: "string", default: "quant8,quant4", help: "plain absmax baselines (quant8, quant4)" },
  continuation: { kind: "int", default: 256, min: 2, help: "document tokens scored for perplexity" },
  greedy: { kind: "int", default: 64, min: 1, help: "greedy tokens compared with the original KV's" },
  "max-new": { kind: "int", default: 24, min: 1, help: "answer tokens at most" },
  seed: { kind: "int", default: 1, min: 0, help: "haystack seed" },
  backend: { kind: "string", default: "cpu", help: "cpu | wgpu | webgpu | dawn" },
  "no-write": { kind: "switch", help: "print only; append no rows" },
});
const levels = list(args.levels).map((s) =>
  ["1", "2", "3"].includes(s) ? Number(s) as 1 | 2 | 3 : fail(`--levels: "${s}"`, "levels among 1, 2, 3")
);
const baselines = list(args.baselines).map((s) =>
  s === "quant8" || s === "quant4" ? s : fail(`--baselines: "${s}"`, "quant8, quant4")
);

const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
const must = <A, E>(e: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(e);
const model = await must(loadLlama(modelPath()));
const tok = model.tokenizer;
const sel = await must(selectBackend({ backend: args.backend as "cpu", cpu: { gemm: model.sgemm.gemm } }));
const backend = sel.backend;
const g = await must(loadLlamaGraph(model, backend));
const { nLayer: L, nKvHead: H, headDim: d } = g.config, C = H * d;
console.error(`bench cachegen quality: ${sel.report}`);

// ---- the haystack, its fixed context's KV, and the document's continuation -------------------------------
const text = await must(readDocument(args.doc));
const plan = await must(planHaystack(args.seed, args.doc, text, args.context));
const h = await must(buildHaystack(tok, text, plan, args["max-new"]));
const F = h.prefix.length, docTokens = h.docIds.length - h.facts.reduce((a, f) => a + f.tokens, 0);
const more = encodeOrdinaryPrefix(tok, text.slice(plan.startChar), docTokens + args.continuation).ids;
const continuation = more.slice(docTokens, docTokens + args.continuation);
if (continuation.length < 2) fail(`${args.doc} ends before a continuation`, "a smaller --context");
const chunks = list(args.chunks).map((s) => {
  const x = s === "all" ? F : Number(s);
  return Number.isInteger(x) && x >= 1
    ? Math.min(x, F)
    : fail(`--chunks: "${s}"`, "positive integers or all");
});
const room =
  Math.max(continuation.length, args.greedy, ...h.suffixes.map((s) => s.length + args["max-new"])) + 1;
const stop = (ids: readonly number[], next: number) => answerStopAt(tok, ids, next) !== undefined;
const tp = performance.now();
const cache = await must(g.newCache(F + room));
await must(g.forward(h.prefix, cache, { logits: "none" }));
const prefillS = (performance.now() - tp) / 1000;
const original = await must(readCacheRows(backend, cache, { kvHeads: H, headDim: d }, F));
console.error(`[${elapsed()}] ${h.id}: prefill of ${F} fixed tokens ${prefillS.toFixed(1)} s`);
const fingerprint = await must(modelFingerprint(model));

/** Per layer K or V rows `[a, b)` of `x` (`f32 [kvHeads, n, headDim]` per layer of `n` tokens). */
const slice = (x: readonly Float32Array[], n: number, a: number, b: number) =>
  x.map((y) => {
    const out = new Float32Array(H * (b - a) * d);
    for (let hh = 0; hh < H; hh++) out.set(y.subarray((hh * n + a) * d, (hh * n + b) * d), hh * (b - a) * d);
    return out;
  });

/** CacheGen at `level`, `chunk` tokens per container: the decoded KV and the containers' bytes. */
const cachegenRoundTrip = async (level: 1 | 2 | 3, chunk: number): Promise<{ kv: KvRows; bytes: number }> => {
  const p = cachegen.cachegenParams({ level });
  const k = original.k.map(() => new Float32Array(H * F * d)),
    v = original.v.map(() => new Float32Array(H * F * d));
  let bytes = 0;
  for (let a = 0; a < F; a += chunk) {
    const b = Math.min(F, a + chunk), n = b - a;
    const prov = {
      model: fingerprint,
      tokensSha256: await must(squeezed.tokensSha256(h.prefix.slice(a, b))),
    };
    const c = await must(
      cachegen.compressKv(slice(original.k, F, a, b), slice(original.v, F, a, b), {
        layers: L,
        kvHeads: H,
        headDim: d,
        tokens: n,
      }, p),
    );
    const container = await must(cachegen.serializeKv(c, prov));
    bytes += container.length;
    const back = await must(cachegen.decodeKv(container, prov));
    for (let l = 0; l < L; l++) {
      for (let hh = 0; hh < H; hh++) {
        k[l].set(back.k[l].subarray(hh * n * d, (hh + 1) * n * d), (hh * F + a) * d);
        v[l].set(back.v[l].subarray(hh * n * d, (hh + 1) * n * d), (hh * F + a) * d);
      }
    }
  }
  return { kv: { k, v }, bytes };
};

/** Plain per-token absmax at `bins` (one fp16 scale per layer and token): the dequantised KV and its bytes. */
const absmaxRoundTrip = (bins: number, bits: number): { kv: KvRows; bytes: number } => {
  const sym = new Uint8Array(F * C), sc = new Uint16Array(F), shape = { kvHeads: H, tokens: F, headDim: d };
  const back = (x: readonly Float32Array[]) =>
    x.map((y) => {
      cachegen.quantizeLayer(y, shape, bins, sym, 0, sc, 0);
      return cachegen.dequantizeLayer(sym, 0, sc, 0, shape, bins);
    });
  return { kv: { k: back(original.k), v: back(original.v) }, bytes: F * 2 * L * (C * bits / 8 + 2) };
};

interface Quality {
  readonly ppl: number;
  readonly greedy: readonly number[];
  readonly answers: readonly string[];
  readonly firstLogits: readonly Float32Array[];
}

/** Everything measured from a cache holding `kv` as its fixed context. */
const measure = async (kv: KvRows): Promise<Quality> => {
  await must(writeCacheRows(backend, cache, { kvHeads: H, headDim: d }, F, kv));
  // perplexity of the continuation: row i of the logits predicts continuation[i + 1]
  const logits = await must(g.forward(continuation, cache, { logits: "all" }));
  const V = logits.length / continuation.length, lp: number[] = [];
  for (let i = 0; i + 1 < continuation.length; i++) {
    lp.push(logits[i * V + continuation[i + 1]] - logSumExp(logits, i * V, V));
  }
  cache.length = F;
  // greedy continuation of the document
  const greedy: number[] = [];
  let next = await must(g.forwardArgmax([continuation[0]], cache));
  while (greedy.length < args.greedy) {
    greedy.push(next);
    if (greedy.length < args.greedy) next = await must(g.forwardArgmax([next], cache));
  }
  const answers: string[] = [], firstLogits: Float32Array[] = [];
  for (const suffix of h.suffixes) {
    const a = await must(askCache(g, cache, F, suffix, args["max-new"], stop));
    answers.push(tok.decode([...a.ids], true).trim());
    firstLogits.push(a.firstLogits);
  }
  return { ppl: perplexity(lp), greedy, answers, firstLogits };
};

const rows: RowInput[] = [];
const common = {
  model: "SmolLM2-135M-Instruct Q4_1",
  backend: backend.kind === "cpu" ? `cpu (${model.sgemm.name})` : `${backend.kind} (${backend.adapter.name})`,
  gpu: backend.kind === "cpu" ? "none" : backend.adapter.name,
  context: F,
} as const;
const fp16Bytes = F * 2 * L * C * 2;
const ref = await measure(original);
const refCorrect = plan.tasks.filter((t, i) => checkAnswer(t.expected, ref.answers[i]).correct).length;
const lines: string[] = [];
const report = (impl: string, q: Quality, bytes: number, params: Record<string, string | number>) => {
  let same = 0;
  while (same < q.greedy.length && q.greedy[same] === ref.greedy[same]) same++;
  const equal = q.greedy.filter((x, i) => x === ref.greedy[i]).length / q.greedy.length;
  const correct = plan.tasks.filter((t, i) => checkAnswer(t.expected, q.answers[i]).correct).length;
  const agree = q.answers.filter((a, i) => a === ref.answers[i]).length / q.answers.length;
  const kl = q.firstLogits.reduce(
    (s, x, i) => s + compareLogits(ref.firstLogits[i], x, x.length).meanKl,
    0,
  ) / q.firstLogits.length;
  const prm = { doc: args.doc, haystack: h.id, continuation: continuation.length, ...params };
  const row = (metric: string, value: number, unit: string) =>
    rows.push({ ...common, impl, metric, value, unit, params: prm });
  row("kv_bytes_per_token", bytes / F, "B/token");
  row("kv_ratio_vs_fp16", fp16Bytes / bytes, "x");
  row("perplexity", q.ppl, "ppl");
  row("perplexity_change", q.ppl / ref.ppl - 1, "fraction");
  row("greedy_agreement_prefix", same, "tokens");
  row("greedy_agreement", equal, "fraction");
  row("accuracy", correct / plan.tasks.length, "fraction");
  row("answer_agreement", agree, "fraction");
  row("first_token_kl", kl, "nats");
  lines.push(
    `${impl.padEnd(16)} ${(bytes / F).toFixed(0).padStart(6)} B/token (${
      (fp16Bytes / bytes).toFixed(2)
    }× vs fp16)` +
      `  ppl ${q.ppl.toFixed(3)} (${
        (100 * (q.ppl / ref.ppl - 1)).toFixed(2)
      } %)  greedy ${same}/${q.greedy.length}` +
      ` (${(100 * equal).toFixed(0)} % equal)  answers ${correct}/${plan.tasks.length} (same as original ${
        (100 * agree).toFixed(0)
      } %)  KL ${kl.toFixed(4)}`,
  );
  console.error(`[${elapsed()}] ${lines[lines.length - 1]}`);
};
report("original-f32", ref, F * 2 * L * C * 4, { note: "the prefill's own KV cache" });
console.error(`[${elapsed()}] original: ${refCorrect}/${plan.tasks.length} correct`);
for (const level of levels) {
  for (const chunk of chunks) {
    const r = await cachegenRoundTrip(level, chunk);
    report(`cachegen-l${level}`, await measure(r.kv), r.bytes, { level, chunk });
  }
}
for (const b of baselines) {
  const [bins, bits] = b === "quant8" ? [256, 8] : [16, 4];
  const r = absmaxRoundTrip(bins, bits);
  report(b, await measure(r.kv), r.bytes, { bins, bitsPerElement: bits, scale: "fp16 per (layer, token)" });
}
cache.release();
rows.push({
  ...common,
  impl: "prefill",
  metric: "prefill_s",
  value: prefillS,
  unit: "s",
  params: { doc: args.doc, haystack: h.id, note: "the dense prefill whose KV cache is encoded" },
});
console.log(lines.join("\n"));
if (!args["no-write"]) {
  const n = (await appendRows("cachegen_quality", rows)).length;
  console.error(`[${elapsed()}] ${n} rows → benchmarks/results/cachegen_quality.json`);
}
