/**
 * CacheGen's compression ratio on SmolLM2's real KV cache: a bundled document's first `--tokens` tokens are
 * prefilled (dense, the graph forward), every layer's post-RoPE K and V read back from the cache, and the cache
 * encoded as CacheGen containers (`@longctx/ops` `cachegen`) at each `--levels` level and each `--chunks`
 * chunking (tokens per container, i.e. per CDF: `256` as LMCache, `all` for one container per context as the
 * CacheGen artifact). Per configuration it reports the bytes per token and the ratio against fp16 **counting
 * every byte of the containers** (header, CDFs, scales, stream lengths, streams, checksum) and each part's
 * share, the relative error `‖x̂ − x‖ / ‖x‖` of K and V, and the encode / decode speed (MB/s of fp16 KV); beside
 * them plain 8-bit and 4-bit per-token absmax quantisation at the same granularity (one fp16 scale per layer
 * and token over all heads' channels; bins 256 and 16, the official baseline's quantiser) and the level's
 * symbols at a fixed width (no entropy coding). With `--delta G`, the paper's change-based step (§5.1, absent
 * from the released code): per group of G tokens the first (the anchor) is coded as is and the others as their
 * difference from the anchor as the receiver decodes it (closed loop), anchors and deltas in separate containers
 * (separate CDFs) of the same level and chunking; its bytes (both containers counted) and the error of the
 * reconstruction `x̂ = anchor̂ + deltâ`. It also checks the coder on the real symbol tensors: the
 * decoded symbols equal the quantised ones, and the coded length against Σ −log2 p(s) under the shipped CDFs.
 *
 * Usage: `deno run -A benchmarks/cachegen_bench.ts [flags]` (`--help` lists them). Rows go to
 * `benchmarks/results/cachegen.json`.
 * @module
 */
import { Effect } from "effect";
import { cachegen, squeezed } from "@longctx/ops";
import { loadLlama } from "../runtime/src/model/llama.ts";
import { loadLlamaGraph } from "../runtime/src/model/llama_graph.ts";
import { readCacheRows } from "../runtime/src/model/kv_rows.ts";
import { selectBackend } from "../runtime/src/backends/select.ts";
import { modelPath, readDocument } from "../runtime/src/paths.ts";
import { modelFingerprint } from "../runtime/src/squeezed/squeezed.ts";
import { appendRows, type RowInput } from "./lib/results.ts";
import { fail, list, parseFlags } from "./lib/args.ts";

const args = parseFlags("deno run -A benchmarks/cachegen_bench.ts [flags]", {
  tokens: { kind: "int", default: 8192, min: 16, help: "context tokens prefilled and encoded" },
  doc: { kind: "string", default: "alice-in-wonderland", help: "bundled document" },
  levels: { kind: "string", default: "1,2,3", help: "CacheGen quantisation levels" },
  chunks: {
    kind: "string",
    default: "256,all",
    help: "tokens per container (per CDF); all = the whole context",
  },
  backend: { kind: "string", default: "cpu", help: "cpu | wgpu | webgpu | dawn (the prefill's backend)" },
  delta: {
    kind: "string",
    default: "",
    help: "the paper's anchor/delta step at these group sizes (e.g. 10; empty: not measured)",
  },
  "no-write": { kind: "switch", help: "print only; append no rows" },
});
const levels = list(args.levels).map((s) =>
  ["1", "2", "3"].includes(s) ? Number(s) : fail(`--levels: "${s}"`, "levels among 1, 2, 3")
);
const N = args.tokens;
const chunks = list(args.chunks).map((s) => {
  const x = s === "all" ? N : Number(s);
  return Number.isInteger(x) && x >= 1
    ? Math.min(x, N)
    : fail(`--chunks: "${s}"`, "positive integers or all");
});

const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
const must = <A, E>(e: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(e);
const model = await must(loadLlama(modelPath()));
const tok = model.tokenizer;
const sel = await must(selectBackend({ backend: args.backend as "cpu", cpu: { gemm: model.sgemm.gemm } }));
const g = await must(loadLlamaGraph(model, sel.backend));
const { nLayer: L, nKvHead: H, headDim: d } = g.config, C = H * d;
console.error(`bench cachegen: ${sel.report}`);
const text = await must(readDocument(args.doc));
const ids = tok.encodeOrdinary(text.slice(0, Math.min(text.length, N * 8)));
if (ids.length < N) {
  fail(`${args.doc} has ${ids.length} tokens in its first ${N * 8} characters`, "fewer --tokens");
}
const tokens = ids.slice(0, N);

// ---- the real KV cache -----------------------------------------------------------------------------------
const cache = await must(g.newCache(N));
const tp = performance.now();
await must(g.forward(tokens, cache, { logits: "none" }));
const prefillS = (performance.now() - tp) / 1000;
const { k: K, v: V } = await must(readCacheRows(sel.backend, cache, { kvHeads: H, headDim: d }, N));
cache.release();
console.error(`[${elapsed()}] prefill of ${N} tokens (${args.doc}): ${prefillS.toFixed(1)} s`);
const fingerprint = await must(modelFingerprint(model));

const fp16Bytes = N * 2 * L * C * 2;
/** K or V of every layer for tokens `[a, b)`, `f32 [kvHeads, b − a, headDim]` per layer. */
const slice = (x: readonly Float32Array[], a: number, b: number) =>
  x.map((y) => {
    const out = new Float32Array(H * (b - a) * d);
    for (let h = 0; h < H; h++) out.set(y.subarray((h * N + a) * d, (h * N + b) * d), h * (b - a) * d);
    return out;
  });
/** Σ (x̂ − x)² and Σ x² over tokens `[a, b)` of every layer. */
const sq = (x: readonly Float32Array[], y: readonly Float32Array[], a: number, b: number, acc: number[]) => {
  const n = b - a;
  for (let l = 0; l < L; l++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < n; t++) {
        for (let j = 0; j < d; j++) {
          const u = x[l][(h * N + a + t) * d + j], w = y[l][(h * n + t) * d + j];
          acc[0] += (w - u) ** 2;
          acc[1] += u * u;
        }
      }
    }
  }
};

const rowsOut: RowInput[] = [];
const common = { model: "SmolLM2-135M-Instruct Q4_1", backend: "cpu", gpu: "none", context: N } as const;
const lines: string[] = [];
const push = (
  impl: string,
  metric: string,
  value: number,
  unit: string,
  params: Record<string, string | number>,
) => rowsOut.push({ ...common, impl, metric, value, unit, params: { doc: args.doc, tokens: N, ...params } });

// ---- CacheGen at each level and chunking -------------------------------------------------------------------
for (const level of levels) {
  const p = cachegen.cachegenParams({ level: level as 1 | 2 | 3 });
  const bins = cachegen.layerBins(p, L);
  for (const chunk of chunks) {
    const parts = { header: 0, cdf: 0, scales: 0, lengths: 0, streams: 0, total: 0 };
    let encMs = 0,
      decMs = 0,
      coderEncMs = 0,
      coderDecMs = 0,
      containers = 0,
      streams = 0,
      idealBits = 0,
      lossless = true;
    const errK = [0, 0], errV = [0, 0];
    for (let a = 0; a < N; a += chunk) {
      const b = Math.min(N, a + chunk), n = b - a;
      const k = slice(K, a, b), v = slice(V, a, b);
      const dims = { layers: L, kvHeads: H, headDim: d, tokens: n };
      const prov = {
        model: fingerprint,
        tokensSha256: await must(squeezed.tokensSha256(tokens.slice(a, b))),
      };
      let t = performance.now();
      const c = await must(cachegen.compressKv(k, v, dims, p));
      const bytes = await must(cachegen.serializeKv(c, prov));
      encMs += performance.now() - t;
      t = performance.now();
      const back = await must(cachegen.decodeKv(bytes, prov));
      decMs += performance.now() - t;
      const s = cachegen.kvSizes(c, prov);
      if (s.total !== bytes.length) throw new Error(`kvSizes ${s.total} ≠ container ${bytes.length}`);
      for (const key of Object.keys(parts) as (keyof typeof parts)[]) parts[key] += s[key];
      sq(K, back.k, a, b, errK);
      sq(V, back.v, a, b, errV);
      // the coder on the real symbols: the quantised symbols, decoded back, and their ideal length
      const sym = new Uint8Array(2 * L * n * C), sc = new Uint16Array(2 * L * n);
      for (let r = 0; r < 2 * L; r++) {
        cachegen.quantizeLayer(
          r < L ? k[r] : v[r - L],
          { kvHeads: H, tokens: n, headDim: d },
          r < L ? bins.key[r] : bins.value[r - L],
          sym,
          r * n * C,
          sc,
          r * n,
        );
      }
      const layout = { rows: 2 * L, tokens: n, channels: C, slice: p.slice };
      t = performance.now();
      const dec = cachegen.decodeSymbols({ lengths: c.lengths, bytes: c.streams }, c.cdf, layout);
      coderDecMs += performance.now() - t;
      t = performance.now();
      cachegen.encodeSymbols(sym, c.cdf, layout);
      coderEncMs += performance.now() - t;
      if (dec.some((x, i) => x !== sym[i])) lossless = false;
      for (let s0 = 0; s0 < n; s0 += p.slice) {
        const m = Math.min(p.slice, n - s0);
        for (let r = 0; r < 2 * L; r++) {
          for (let ch = 0; ch < C; ch++) {
            idealBits += cachegen.idealBits(c.cdf, (r * C + ch) * c.cdf.lp, sym, (r * n + s0) * C + ch, C, m);
            streams++;
          }
        }
      }
      containers++;
    }
    if (!lossless) {
      throw new Error(`level ${level}, chunk ${chunk}: decoded symbols differ from the quantised ones`);
    }
    const impl = `cachegen-l${level}`;
    const prm = { level, chunk, slice: p.slice, precision: p.precision, containers };
    const relK = Math.sqrt(errK[0] / errK[1]), relV = Math.sqrt(errV[0] / errV[1]);
    const overBits = (parts.streams * 8 - idealBits) / streams;
    push(impl, "kv_bytes_per_token", parts.total / N, "B/token", prm);
    push(impl, "kv_ratio_vs_fp16", fp16Bytes / parts.total, "x", prm);
    for (const part of ["header", "cdf", "scales", "lengths", "streams"] as const) {
      push(impl, `kv_share_${part}`, parts[part] / parts.total, "share", prm);
    }
    push(impl, "kv_rel_err_k", relK, "ratio", prm);
    push(impl, "kv_rel_err_v", relV, "ratio", prm);
    push(impl, "coded_bits_over_ideal_per_stream", overBits, "bits", { ...prm, streams });
    const nsym = 2 * L * N * C;
    push(impl, "coder_encode_msym_s", nsym / 1e3 / coderEncMs, "Msym/s", {
      ...prm,
      stage: "arithmetic coder only",
    });
    push(impl, "coder_decode_msym_s", nsym / 1e3 / coderDecMs, "Msym/s", {
      ...prm,
      stage: "arithmetic coder only",
    });
    push(impl, "coder_decode_coded_mbps", parts.streams / 1e3 / coderDecMs, "MB/s", {
      ...prm,
      stage: "arithmetic coder only",
      input: "coded streams",
    });
    push(impl, "encode_mbps", fp16Bytes / 1e6 / (encMs / 1000), "MB/s", {
      ...prm,
      input: "fp16-equivalent KV",
    });
    push(impl, "decode_mbps", fp16Bytes / 1e6 / (decMs / 1000), "MB/s", {
      ...prm,
      input: "fp16-equivalent KV",
    });
    const fixedBits = [...bins.key, ...bins.value].reduce((s, b) => s + Math.ceil(Math.log2(b - 1)), 0) /
      (2 * L);
    const fixedBytes = N * 2 * L * (C * fixedBits / 8 + 2);
    push(`${impl}-fixed`, "kv_bytes_per_token", fixedBytes / N, "B/token", {
      level,
      bitsPerElement: fixedBits,
    });
    push(`${impl}-fixed`, "kv_ratio_vs_fp16", fp16Bytes / fixedBytes, "x", {
      level,
      bitsPerElement: fixedBits,
    });
    lines.push(
      `${impl.padEnd(12)} chunk ${String(chunk).padStart(5)}: ${
        (parts.total / N).toFixed(0).padStart(6)
      } B/token, ` +
        `${(fp16Bytes / parts.total).toFixed(2)}× vs fp16 (cdf ${
          (100 * parts.cdf / parts.total).toFixed(1)
        } %, ` +
        `scales ${(100 * parts.scales / parts.total).toFixed(1)} %, lengths ${
          (100 * parts.lengths / parts.total).toFixed(1)
        } %, header ${(100 * parts.header / parts.total).toFixed(2)} %), rel err K ${relK.toFixed(4)} V ${
          relV.toFixed(4)
        }, +${overBits.toFixed(2)} bits/stream over ideal; coder ${(nsym / 1e3 / coderEncMs).toFixed(1)} / ${
          (nsym / 1e3 / coderDecMs).toFixed(1)
        } Msym/s (decode ${(parts.streams / 1e3 / coderDecMs).toFixed(1)} MB/s coded); encode ${
          (fp16Bytes / 1e3 / encMs).toFixed(1)
        } MB/s, decode ${(fp16Bytes / 1e3 / decMs).toFixed(1)} MB/s; fixed width ${
          (fp16Bytes / fixedBytes).toFixed(2)
        }×`,
    );
    console.error(`[${elapsed()}] ${lines[lines.length - 1]}`);
  }
}

// ---- the paper's anchor/delta step (not in the official code: measured before adopting it) ----------------
const groups = list(args.delta).map((s) =>
  Number.isInteger(Number(s)) && Number(s) >= 2
    ? Number(s)
    : fail(`--delta: "${s}"`, "group sizes ≥ 2, e.g. 10")
);
/** Tokens `ts` (indices into a `[kvHeads, n, headDim]` chunk) of every layer, `[kvHeads, ts.length, headDim]`. */
const pick = (x: readonly Float32Array[], n: number, ts: readonly number[]) =>
  x.map((y) => {
    const out = new Float32Array(H * ts.length * d);
    for (let h = 0; h < H; h++) {
      for (const [i, t] of ts.entries()) {
        out.set(y.subarray((h * n + t) * d, (h * n + t + 1) * d), (h * ts.length + i) * d);
      }
    }
    return out;
  });
for (const G of groups) {
  for (const level of levels) {
    const p = cachegen.cachegenParams({ level: level as 1 | 2 | 3 });
    for (const chunk of chunks) {
      let total = 0;
      const errK = [0, 0], errV = [0, 0];
      for (let a = 0; a < N; a += chunk) {
        const b = Math.min(N, a + chunk), n = b - a;
        const k = slice(K, a, b), v = slice(V, a, b);
        const anchors: number[] = [], others: number[] = [];
        for (let t = 0; t < n; t++) (t % G === 0 ? anchors : others).push(t);
        const prov = {
          model: fingerprint,
          tokensSha256: await must(squeezed.tokensSha256(tokens.slice(a, b))),
        };
        const code = async (kk: Float32Array[], vv: Float32Array[], m: number) => {
          const bytes = await must(
            cachegen.encodeKv(kk, vv, { layers: L, kvHeads: H, headDim: d, tokens: m }, p, prov),
          );
          total += bytes.length;
          return await must(cachegen.decodeKv(bytes, prov));
        };
        // the anchors as the receiver decodes them, then the others as differences from their group's anchor
        const aHat = await code(pick(k, n, anchors), pick(v, n, anchors), anchors.length);
        const diff = (x: readonly Float32Array[], xa: readonly Float32Array[]) =>
          x.map((y, l) => {
            const out = pick([y], n, others)[0];
            for (let h = 0; h < H; h++) {
              for (const [i, t] of others.entries()) {
                const ai = Math.floor(t / G);
                for (let j = 0; j < d; j++) {
                  out[(h * others.length + i) * d + j] -= xa[l][(h * anchors.length + ai) * d + j];
                }
              }
            }
            return out;
          });
        const dHat = others.length ? await code(diff(k, aHat.k), diff(v, aHat.v), others.length) : undefined;
        const rebuild = (xa: readonly Float32Array[], xd: readonly Float32Array[] | undefined) =>
          xa.map((ya, l) => {
            const out = new Float32Array(H * n * d);
            for (let h = 0; h < H; h++) {
              for (let t = 0; t < n; t++) {
                const ai = Math.floor(t / G), oi = t - ai - 1;
                for (let j = 0; j < d; j++) {
                  const base = ya[(h * anchors.length + ai) * d + j];
                  out[(h * n + t) * d + j] = t % G === 0
                    ? base
                    : base + xd![l][(h * others.length + oi) * d + j];
                }
              }
            }
            return out;
          });
        sq(K, rebuild(aHat.k, dHat?.k), a, b, errK);
        sq(V, rebuild(aHat.v, dHat?.v), a, b, errV);
      }
      const impl = `cachegen-l${level}-delta${G}`;
      const prm = { level, chunk, group: G, slice: p.slice, precision: p.precision };
      const relK = Math.sqrt(errK[0] / errK[1]), relV = Math.sqrt(errV[0] / errV[1]);
      push(impl, "kv_bytes_per_token", total / N, "B/token", prm);
      push(impl, "kv_ratio_vs_fp16", fp16Bytes / total, "x", prm);
      push(impl, "kv_rel_err_k", relK, "ratio", prm);
      push(impl, "kv_rel_err_v", relV, "ratio", prm);
      lines.push(
        `${impl.padEnd(18)} chunk ${String(chunk).padStart(5)}: ${
          (total / N).toFixed(0).padStart(6)
        } B/token, ${(fp16Bytes / total).toFixed(2)}× vs fp16, rel err K ${relK.toFixed(4)} V ${
          relV.toFixed(4)
        } (anchors and deltas in separate containers)`,
      );
      console.error(`[${elapsed()}] ${lines[lines.length - 1]}`);
    }
  }
}

// ---- plain per-token absmax baselines (8-bit: bins 256, 4-bit: bins 16) ----------------------------------
for (const [name, bins, bits] of [["quant8", 256, 8], ["quant4", 16, 4]] as const) {
  const errK = [0, 0], errV = [0, 0];
  const sym = new Uint8Array(N * C), sc = new Uint16Array(N), shape = { kvHeads: H, tokens: N, headDim: d };
  for (const [X, acc] of [[K, errK], [V, errV]] as const) {
    const back: Float32Array[] = [];
    for (let l = 0; l < L; l++) {
      cachegen.quantizeLayer(X[l], shape, bins, sym, 0, sc, 0);
      back.push(cachegen.dequantizeLayer(sym, 0, sc, 0, shape, bins));
    }
    sq(X, back, 0, N, acc);
  }
  const bytes = N * 2 * L * (C * bits / 8 + 2);
  const prm = { bins, bitsPerElement: bits, scale: "fp16 per (layer, token)" };
  push(name, "kv_bytes_per_token", bytes / N, "B/token", prm);
  push(name, "kv_ratio_vs_fp16", fp16Bytes / bytes, "x", prm);
  push(name, "kv_rel_err_k", Math.sqrt(errK[0] / errK[1]), "ratio", prm);
  push(name, "kv_rel_err_v", Math.sqrt(errV[0] / errV[1]), "ratio", prm);
  lines.push(
    `${name.padEnd(12)}             ${(bytes / N).toFixed(0).padStart(6)} B/token, ${
      (fp16Bytes / bytes).toFixed(2)
    }× vs fp16, rel err K ${Math.sqrt(errK[0] / errK[1]).toFixed(4)} V ${
      Math.sqrt(errV[0] / errV[1]).toFixed(4)
    }`,
  );
}
push("fp16", "kv_bytes_per_token", fp16Bytes / N, "B/token", {});
rowsOut.push({
  ...common,
  backend: sel.backend.kind,
  impl: "prefill",
  metric: "prefill_s",
  value: prefillS,
  unit: "s",
  params: { doc: args.doc, tokens: N, note: "the dense prefill whose KV cache is encoded" },
});

console.log(
  `CacheGen on ${N} tokens of ${args.doc} (fp16 KV: ${
    fp16Bytes / N
  } B/token, ${L} layers × K/V × ${C} channels):`,
);
for (const l of lines) console.log(`  ${l}`);
if (!args["no-write"]) {
  await appendRows("cachegen", rowsOut);
  console.error(`appended ${rowsOut.length} rows to benchmarks/results/cachegen.json`);
}
