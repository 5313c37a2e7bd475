/**
 * CacheGen's time to first token for a cached document, on SmolLM2 and a real document: recompute (the dense
 * prefill) against loading the stored KV cache — plain fp16 rows, or CacheGen containers at each level decoded
 * on the backend — from each KV store (file and SQLite embedded, Redis), and the loading controller's per-chunk
 * mix, at several link bandwidths.
 *
 * One prompt as `run` builds it (`buildPrompt`: chat head, `--tokens` of the document with a planted passphrase,
 * the question), its fixed context (head and document) prefilled dense and stored through
 * `runtime/src/cachegen/context.ts` (the code `run --kv-store` uses) at levels 1–3 and fp16, in every store. Then
 * per store and form, a fresh cache is filled by `loadContext` (read, check, decode into the cache rows) and the
 * question prefilled on it; time to first token = store read + decode + the bytes' time on the link + the
 * question's prefill. The store is local: the link is simulated (bytes × 8 / bandwidth, as the official
 * artifact's bandwidth traces), the rest measured. The recompute row: the context's dense prefill + the question.
 * The controller rows run `planContextLoad` at each bandwidth within `--slo-ms`, then load what it chose (text
 * chunks recomputed) — measured, plus the link. Every mode's first answer token is checked against the
 * recompute's (KL, nats).
 *
 * Usage: `deno run -A benchmarks/cachegen_ttft.ts [flags]` (`--help` lists them). Rows go to
 * `benchmarks/results/cachegen_ttft.json`. Redis: a redis-server on a free loopback port is started for the run
 * when Debian's `redis-server` is installed (scripts/setup.sh), else the store is skipped with a note.
 * @module
 */
import { Effect } from "effect";
import { loadLlama } from "../runtime/src/model/llama.ts";
import { type GraphLlama, type KvState, loadLlamaGraph } from "../runtime/src/model/llama_graph.ts";
import { klDivergence } from "../runtime/src/model/metrics.ts";
import { selectBackend } from "../runtime/src/backends/select.ts";
import { modelPath, readDocument } from "../runtime/src/paths.ts";
import { buildPrompt } from "../runtime/src/cli/run/prompt.ts";
import { type KvStore, openKvStore } from "../runtime/src/kvstore/mod.ts";
import {
  type ChunkSend,
  contextRef,
  linkMs,
  loadContext,
  planContextLoad,
  storeContext,
  type StoredCodec,
} from "../runtime/src/cachegen/context.ts";
import { redisServerPath, withRedisServer } from "../runtime/src/kvstore/testdata/redis_server.ts";
import { appendRows, type RowInput } from "./lib/results.ts";
import { fail, list, parseFlags } from "./lib/args.ts";

const args = parseFlags("deno run -A benchmarks/cachegen_ttft.ts [flags]", {
  tokens: {
    kind: "int",
    default: 2048,
    min: 256,
    help: "document tokens (the context budget adds the rest)",
  },
  doc: { kind: "string", default: "alice-in-wonderland", help: "bundled document" },
  stores: { kind: "string", default: "file,sqlite,redis", help: "KV stores: file, sqlite, redis" },
  gbps: { kind: "string", default: "0.1,0.3,1,3,10,100", help: "link bandwidths, Gbit/s" },
  "slo-ms": {
    kind: "int",
    default: 2000,
    min: 1,
    help: "the controller's loading budget, ms (official 2000)",
  },
  fallbacks: {
    kind: "string",
    default: "text,fastest",
    help: "the controller's rule for a chunk no level fits: text (official), fastest",
  },
  repeats: { kind: "int", default: 2, min: 1, help: "loads per store and form (the median is kept)" },
  backend: { kind: "string", default: "cpu", help: "cpu | wgpu | webgpu | dawn" },
  "no-write": { kind: "switch", help: "print only; append no rows" },
});
const stores = list(args.stores).map((s) =>
  s === "file" || s === "sqlite" || s === "redis" ? s : fail(`--stores: "${s}"`, "file, sqlite, redis")
);
const fallbacks = list(args.fallbacks).map((s) =>
  s === "text" || s === "fastest" ? s : fail(`--fallbacks: "${s}"`, "text, fastest")
);
const bandwidths = list(args.gbps).map((s) =>
  Number(s) > 0 ? Number(s) : fail(`--gbps: "${s}"`, "positive Gbit/s, e.g. 0.1,1,10")
);
const must = <A, E>(e: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(e);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;

const model = await must(loadLlama(modelPath()));
const sel = await must(selectBackend({ backend: args.backend as "cpu", cpu: { gemm: model.sgemm.gemm } }));
const g: GraphLlama = await must(loadLlamaGraph(model, sel.backend));
console.error(`bench cachegen ttft: ${sel.report}`);
const question = "What is the secret passphrase?";
const prompt = await must(buildPrompt(model.tokenizer, await must(readDocument(args.doc)), {
  question,
  context: args.tokens + 128,
  maxNew: 1,
  truncate: true,
  plant: "periwinkle",
}));
const fixed = prompt.docStart + prompt.docTokens;
const head = prompt.ids.slice(0, fixed), q = prompt.ids.slice(fixed);
const ref = await must(contextRef(model, head));
const { nLayer: L, nKvHead: H, headDim: d, vocab: V } = g.config;
const fp16Bytes = fixed * 2 * L * H * d * 2;
const newCache = () => must(g.newCache(fixed + q.length + 1));
/** The question's prefill on a cache holding the context: its time and last-position logits. */
const ask = async (cache: KvState) => {
  cache.length = fixed;
  const t = performance.now();
  const logits = await must(g.forward(q, cache));
  return { ms: performance.now() - t, logits };
};

// ---- recompute: the context's dense prefill, then the question ------------------------------------------
const recompute: { ms: number; q: number }[] = [];
let refLogits: Float32Array = new Float32Array(0), prefilled: KvState | undefined;
for (let r = 0; r < args.repeats; r++) {
  const cache = await newCache();
  const t = performance.now();
  await must(g.forward(head, cache, { logits: "none" }));
  const ms = performance.now() - t;
  const a = await ask(cache);
  recompute.push({ ms, q: a.ms });
  refLogits = a.logits;
  if (prefilled) prefilled.release();
  prefilled = cache;
}
const prefillMs = median(recompute.map((x) => x.ms)), questionMs = median(recompute.map((x) => x.q));
const recomputeMsPerToken = prefillMs / fixed;
console.error(
  `${elapsed()}: ${fixed} context tokens prefilled in ${prefillMs.toFixed(0)} ms, question ${
    questionMs.toFixed(0)
  } ms`,
);

const rows: RowInput[] = [];
const base = {
  unit: "ms",
  context: fixed,
  model: "SmolLM2-135M-Instruct (real weights)",
  backend: sel.backend.kind,
  dtype: "f32",
};
rows.push({
  ...base,
  metric: "ttft_ms",
  impl: "recompute",
  value: prefillMs + questionMs,
  params: { prefillMs, questionMs, doc: args.doc, repeats: args.repeats },
  note: "the context's dense prefill and the question's; no store, no link (the text is a few KB)",
});

const codecs: readonly StoredCodec[] = [1, 2, 3, "fp16"];
const runStore = (kind: "file" | "sqlite" | "redis", url: string) =>
  must(
    Effect.scoped(
      Effect.flatMap(openKvStore(url), (store) => Effect.promise(() => measureStore(kind, store))),
    ),
  );
const measureStore = async (kind: "file" | "sqlite" | "redis", store: KvStore) => {
  {
    const st = await must(storeContext(g, prefilled!, ref, store, codecs));
    const bytesOf = (c: StoredCodec) => st.manifest.chunks.reduce((s, x) => s + x.bytes[String(c)], 0);
    console.error(
      `${elapsed()}: ${kind} stored (${
        codecs.map((c) => `${c}: ${(bytesOf(c) / 2 ** 20).toFixed(1)} MiB`).join(", ")
      }; encode ${st.encodeMs.toFixed(0)} ms, put ${st.putMs.toFixed(0)} ms)`,
    );
    const load = async (sends: readonly ChunkSend[]) => {
      const runs = [];
      for (let r = 0; r < args.repeats; r++) {
        const cache = await newCache();
        const s = await must(loadContext(g, cache, ref, store, sends));
        const a = await ask(cache);
        cache.release();
        runs.push({ s, q: a.ms, kl: klDivergence(refLogits, a.logits, 0, V) });
      }
      const m = runs[0];
      return {
        sends: m.s.sends,
        bytes: m.s.bytes,
        readMs: median(runs.map((x) => x.s.readMs)),
        decodeMs: median(runs.map((x) => x.s.decodeMs)),
        recomputeMs: median(runs.map((x) => x.s.recomputeMs)),
        loadMs: median(runs.map((x) => x.s.totalMs)),
        q: median(runs.map((x) => x.q)),
        kl: m.kl,
      };
    };
    for (const c of codecs) {
      const m = await load(ref.chunks.map(() => c));
      const impl = c === "fp16" ? "fp16" : `cachegen-l${c}`;
      console.error(
        `${elapsed()}: ${kind} ${impl}: read ${m.readMs.toFixed(0)} ms, decode ${
          m.decodeMs.toFixed(0)
        } ms, ` +
          `question ${m.q.toFixed(0)} ms, first-token KL ${m.kl.toExponential(2)}`,
      );
      for (const gbps of bandwidths) {
        const link = linkMs(m.bytes, gbps);
        rows.push({
          ...base,
          metric: "ttft_ms",
          impl,
          value: m.loadMs + link + m.q,
          bytes: m.bytes,
          params: {
            store: kind,
            gbps,
            readMs: m.readMs,
            decodeMs: m.decodeMs,
            linkMs: link,
            questionMs: m.q,
            ratioVsFp16: fp16Bytes / m.bytes,
            firstTokenKl: m.kl,
            repeats: args.repeats,
          },
          note:
            "store read + decode into the cache (measured) + bytes on the link (simulated) + the question",
        });
      }
    }
    for (const fallback of fallbacks) {
      for (const gbps of bandwidths) {
        const plan = planContextLoad(st.manifest, {
          gbps,
          sloMs: args["slo-ms"],
          recomputeMsPerToken,
          fallback,
        });
        const m = await load(plan.sends);
        const link = linkMs(m.bytes, gbps);
        const text = m.sends.filter((x) => x === "text").length;
        console.error(
          `${elapsed()}: ${kind} controller (${fallback}) @ ${gbps} Gbit/s: [${m.sends.join(" ")}] ttft ${
            (m.loadMs + link + m.q).toFixed(0)
          } ms (link ${link.toFixed(0)} ms)`,
        );
        rows.push({
          ...base,
          metric: "ttft_ms",
          impl: fallback === "text" ? "controller" : "controller-fastest",
          value: m.loadMs + link + m.q,
          bytes: m.bytes,
          params: {
            store: kind,
            gbps,
            sloMs: args["slo-ms"],
            fallback,
            sends: m.sends.join(" "),
            textChunks: text,
            readMs: m.readMs,
            decodeMs: m.decodeMs,
            recomputeMs: m.recomputeMs,
            linkMs: link,
            questionMs: m.q,
            firstTokenKl: m.kl,
            repeats: args.repeats,
          },
          note:
            `the loading controller's per-chunk choice (planContextLoad, fallback ${fallback}), loaded and ` +
            "measured + the link",
        });
      }
    }
  }
};

const tmp = Deno.makeTempDirSync({ prefix: "longctx-ttft-" });
try {
  for (const kind of stores) {
    if (kind === "file") await runStore(kind, `file://${tmp}/kv`);
    else if (kind === "sqlite") await runStore(kind, `sqlite://${tmp}/kv.db`);
    else if (redisServerPath() === undefined) console.error("redis: redis-server not installed, skipped");
    else await withRedisServer((s) => runStore(kind, s.url));
  }
} finally {
  Deno.removeSync(tmp, { recursive: true });
  prefilled?.release();
  g.release();
  await must(sel.backend.close());
}
if (!args["no-write"]) {
  await appendRows("cachegen_ttft", rows);
  console.error(`${elapsed()}: ${rows.length} rows → benchmarks/results/cachegen_ttft.json`);
}
for (const r of rows.filter((x) => x.params?.gbps === undefined || x.params?.gbps === 1)) {
  console.log(`${r.impl} ${r.params?.store ?? ""} ${r.value.toFixed(0)} ms`);
}
