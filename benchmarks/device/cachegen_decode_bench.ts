/**
 * CacheGen's GPU decode against the link it saves (issue 19: "decoding on the GPU must run faster than the link
 * it saves, say at 1 and 10 Gbit/s"), written for the H200: Llama-3.1-8B's KV layout (32 layers, 8 KV heads,
 * head dim 128), structured synthetic K and V (ops/sale/synthetic.ts, `syntheticCpu`: RoPE-like locality
 * channels, a sink, heavy hitters, noise; the seed is the layer) encoded **on the host** in `--chunk`-token
 * containers (LMCache's 256: one CDF table per container) at `--levels`, then each container decoded on the
 * device by `cachegen.decode` (one invocation per coded stream) as a lowered program whose inputs were written
 * beforehand.
 *
 * Reported per context length T (`--tokens`), level and workgroup size (`--wg`):
 * - `decode_ms_per_container`: GPU time of one container (median over runs, then over the containers);
 * - `decode_ms_context` (the sum over the T / chunk containers) and `decode_ms_context_pipelined` (all of them
 *   submitted back to back, one sync; wall clock), `decode_us_per_token`;
 * - `coded_GBps` (container bytes — CDFs, scales, lengths, streams, header — per second of decode),
 *   `kv_fp16_GBps` (the fp16-equivalent KV produced per second), and `link_equiv_Gbps`: the link whose transfer
 *   of the containers takes as long as their decode (`beats1Gbps` / `beats10Gbps` say whether decode is faster);
 * - the host side, per container (wall clock): `host_parse_ms` (SHA-256 and the checks of `parseKv`; WebCrypto's
 *   SHA-256, and `host_parse_node_sha_ms` with node:crypto's, as `run --kv-store` checks),
 *   `host_pack_ms` (`deviceInputs`: the prefix sum of the lengths), `upload_ms` (writing the four inputs),
 *   `host_cpu_decode_ms` (the host decoder, `decodeKv`, on the first container, for comparison), and the
 *   one-shot `decodeKvOnDevice` of the first container (parse, lower, upload, decode, copy into per-layer
 *   buffers, release; its second call, kernels compiled: `e2e_ms_first_container`);
 * - the compression ratio against fp16 and the bits per symbol.
 * The first container's device result is checked bit for bit against the host decoder before anything is timed.
 *
 * Encoding on the host costs about 2 s per 256-token Llama-8B chunk (1 thread), so at most `--distinct`
 * distinct chunks are encoded (the chunks of tokens `[c · chunk, (c + 1) · chunk)`, c < distinct) and longer
 * contexts reuse them cyclically (the decode time depends on the statistics of the streams, not on which chunk
 * it is; the rows say how many were distinct).
 *
 * Run (repo root, on the GPU machine): `deno run -A benchmarks/device/cachegen_decode_bench.ts --backend wgpu`
 * Small local check (lavapipe): `… --backend wgpu --tokens 512 --layers 2 --runs 3 --wg 64`.
 * Timing: GPU timestamps when the backend has them, else wall clock (see benchmarks/lib/gpu_run.ts).
 * @module
 */
import { Effect } from "effect";
import { type Backend, type Graph, graph, lower, type Program } from "@longctx/graph";
import { cachegen, sale } from "@longctx/ops";
import { gitCommit } from "../lib/results.ts";
import { gpuRunner, median, openBenchBackend, type PeerRow, writeDeviceRows } from "../lib/gpu_run.ts";
import { parseFlags } from "../lib/args.ts";
import { nodeSha256 } from "../../runtime/src/cachegen/context.ts";

const args = parseFlags("deno run -A benchmarks/device/cachegen_decode_bench.ts [flags]", {
  tokens: { kind: "list", default: [8192, 32768], min: 1, help: "context lengths (tokens)" },
  layers: { kind: "int", default: 32, min: 1, help: "layers (Llama-3.1-8B: 32)" },
  "kv-heads": { kind: "int", default: 8, min: 1, help: "KV heads" },
  dim: { kind: "int", default: 128, min: 64, help: "head dim (≥ 64: the synthetic generator's)" },
  chunk: { kind: "int", default: 256, min: 1, help: "tokens per container (LMCache: 256)" },
  levels: { kind: "list", default: [2], min: 1, help: "CacheGen quantisation levels (1–3)" },
  distinct: { kind: "int", default: 32, min: 1, help: "distinct chunks encoded at most (reused cyclically)" },
  wg: { kind: "list", default: [32, 64, 128, 256], min: 32, help: "decode workgroup sizes" },
  runs: { kind: "int", default: 10, min: 1, help: "timed runs per container (median)" },
  backend: { kind: "string", default: "webgpu", choices: ["webgpu", "wgpu", "dawn"], help: "the backend" },
  out: { kind: "string", default: "benchmarks/results/cachegen_decode.json", help: "results file to write" },
});
const L = args.layers, HK = args["kv-heads"], D = args.dim, CH = args.chunk;
for (const l of args.levels) {
  if (![1, 2, 3].includes(l)) {
    console.error(`error: --levels ${l} — fix: give levels among 1, 2, 3`);
    Deno.exit(1);
  }
}
const t0 = performance.now();
const backend: Backend = await openBenchBackend("cachegen_decode_bench", args.backend);
const gpuName = Deno.env.get("LONGCTX_GPU_NAME") ?? backend.adapter.name;
console.error(`cachegen_decode_bench: ${backend.kind} on ${backend.adapter.name}`);
const runner = gpuRunner(backend);
const must = <A, E>(e: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(e);
const rows: PeerRow[] = [];
const PROV = { model: `synthetic Llama-3.1-8B KV layout ${L}x${HK}x${D}`, tokensSha256: "0".repeat(64) };
const maxTokens = Math.max(...args.tokens);
const chunksOf = (T: number) => Math.ceil(T / CH);
const fp16Bytes = (tokens: number) => 2 * 2 * L * HK * D * tokens;
const ms = (t: number) => Number(t.toFixed(4));

/** Container `c` (tokens `[c · CH, …)`, at most `maxTokens`) at `level`, encoded on the host. */
const encodeChunk = async (c: number, level: number): Promise<{ bytes: Uint8Array; encodeMs: number }> => {
  const N = Math.min(CH, maxTokens - c * CH), e0 = performance.now();
  const k: Float32Array[] = [], v: Float32Array[] = [];
  for (let l = 0; l < L; l++) {
    k.push(sale.syntheticCpu(1, HK, N, D, 1, 1 + l, c * CH));
    v.push(sale.syntheticCpu(2, HK, N, D, 1, 1 + l, c * CH));
  }
  const dims = { layers: L, kvHeads: HK, headDim: D, tokens: N };
  const bytes = await must(cachegen.encodeKv(k, v, dims, cachegen.cachegenParams({ level }), PROV));
  return { bytes, encodeMs: performance.now() - e0 };
};

/** The one-node graph of `cachegen.decode` with `p`. */
const decodeGraph = (p: cachegen.CacheGenDecodeParams): Promise<Graph> => {
  const g = graph("cachegen.decode");
  const i = cachegen.decode.inputs;
  const node = g.add(cachegen.decode, p, {
    cdf: g.input("cdf", i.cdf),
    scales: g.input("scales", i.scales),
    ends: g.input("ends", i.ends),
    streams: g.input("streams", i.streams),
  });
  g.output("kv", node.kv);
  g.output("invalid", node.invalid);
  return must(g.build());
};

let warmed = false;
const warm = async (prog: Program) => {
  // an idle H200 runs at a low SM clock until it has been busy for a while
  const w0 = performance.now(), budget = warmed ? 200 : 2000;
  do await runner.run(prog); while (performance.now() - w0 < budget);
  warmed = true;
};

const bitsOf = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);

for (const level of args.levels) {
  // the distinct containers, encoded once for every context length
  const distinct = Math.min(args.distinct, chunksOf(maxTokens));
  const containers: Uint8Array[] = [];
  let encodeMs = 0;
  for (let c = 0; c < distinct; c++) {
    const e = await encodeChunk(c, level);
    containers.push(e.bytes);
    encodeMs += e.encodeMs;
  }
  console.error(
    `level ${level}: ${distinct} containers of ≤ ${CH} tokens encoded on the host in ${
      (encodeMs / 1000).toFixed(1)
    } s`,
  );
  // host side per container: parse (checksum, checks), pack (prefix sums); after a warm-up of both (JIT)
  for (let w = 0; w < 2; w++) cachegen.deviceInputs((await must(cachegen.parseKv(containers[0]))).compressed);
  const parsed: {
    compressed: cachegen.CompressedKv;
    header: cachegen.KvHeader;
    inputs: ReturnType<typeof cachegen.deviceInputs>;
  }[] = [];
  const parseMs: number[] = [], packMs: number[] = [], parseNodeMs: number[] = [];
  for (const b of containers) {
    // the same parse with node:crypto's SHA-256 (what runtime/src/cachegen/context.ts passes)
    const a0 = performance.now();
    await must(cachegen.parseKv(b, nodeSha256));
    parseNodeMs.push(performance.now() - a0);
    const a = performance.now();
    const { compressed, header } = await must(cachegen.parseKv(b));
    const m = performance.now();
    const inputs = cachegen.deviceInputs(compressed);
    parseMs.push(m - a);
    packMs.push(performance.now() - m);
    parsed.push({ compressed, header, inputs });
  }
  // the first container: the host decoder's time and result, the device's one-shot decode, bit for bit
  const h0 = performance.now();
  const host = await must(cachegen.decodeKv(containers[0]));
  const hostDecodeMs = performance.now() - h0;
  // one-shot decodes of the first container, the second timed (kernels compiled by the first)
  (await must(cachegen.decodeKvOnDevice(backend, containers[0]))).release();
  const e0 = performance.now();
  const dev = await must(cachegen.decodeKvOnDevice(backend, containers[0]));
  const e2eMs = performance.now() - e0;
  let mismatched = 0;
  for (let l = 0; l < L; l++) {
    for (const [buf, want] of [[dev.k[l], host.k[l]], [dev.v[l], host.v[l]]] as const) {
      const got = bitsOf(new Float32Array((await must(backend.download(buf))).slice().buffer)),
        w = bitsOf(want);
      for (let i = 0; i < w.length; i++) if (got[i] !== w[i]) mismatched++;
    }
  }
  dev.release();
  if (mismatched > 0) {
    console.error(
      `error: the device decode differs from the host decoder in ${mismatched} values — fix: a bug`,
    );
    Deno.exit(1);
  }
  console.error(
    `level ${level}: first container bit-exact against the host decoder (host ${
      hostDecodeMs.toFixed(0)
    } ms, ` +
      `decodeKvOnDevice one-shot ${e2eMs.toFixed(0)} ms)`,
  );
  const streamBytes = parsed.map((p) => p.compressed.streams.length);
  const symbolsOf = (p: (typeof parsed)[number]) => 2 * L * HK * D * p.header.dims.tokens;
  for (const wg of args.wg) {
    const progs: Program[] = [], uploadMs: number[] = [], perContainer: number[] = [];
    for (const p of parsed) {
      const dp = cachegen.cachegenDecodeParams({ ...p.header.params, workgroupSize: wg });
      const descs = Object.fromEntries(Object.entries(p.inputs).map(([n, t]) => [n, t.desc]));
      const prog = await must(lower(await decodeGraph(dp), backend, descs, { label: `cachegen.wg${wg}` }));
      const u0 = performance.now();
      for (const [n, t] of Object.entries(p.inputs)) await must(prog.write(n, t));
      await must(backend.sync());
      uploadMs.push(performance.now() - u0);
      progs.push(prog);
    }
    await warm(progs[0]);
    for (const prog of progs) {
      const t: number[] = [];
      for (let r = 0; r < args.runs; r++) t.push((await runner.run(prog)).ms);
      perContainer.push(median(t));
      const inv = (await must(prog.read("invalid"))).data as Uint32Array;
      if (inv.some((x) => x > 0)) throw new Error("a sound container decoded to invalid symbols");
    }
    for (const T of args.tokens) {
      const n = chunksOf(T), idx = Array.from({ length: n }, (_, c) => c % distinct);
      const sum = idx.reduce((a, c) => a + perContainer[c], 0);
      const bytes = idx.reduce((a, c) => a + containers[c].length, 0);
      const tokens = idx.reduce((a, c) => a + parsed[c].header.dims.tokens, 0);
      const symbols = idx.reduce((a, c) => a + symbolsOf(parsed[c]), 0);
      const sBytes = idx.reduce((a, c) => a + streamBytes[c], 0);
      // all containers submitted back to back, one sync at the end
      const pipe: number[] = [];
      for (let r = 0; r < Math.max(3, Math.ceil(args.runs / 3)); r++) {
        const p0 = performance.now();
        for (const c of idx) await must(progs[c].run({ sync: false }));
        await must(backend.sync());
        pipe.push(performance.now() - p0);
      }
      const pipelined = median(pipe);
      const best = Math.min(sum, pipelined);
      const codedGBps = bytes / (best * 1e-3) / 1e9, linkGbps = 8 * codedGBps;
      const at = (gbps: number) => (bytes * 8) / (gbps * 1e9) * 1e3; // ms to move the containers
      console.error(
        `T=${T} level ${level} wg ${wg}: ${n} containers, ${(bytes / 2 ** 20).toFixed(1)} MiB coded ` +
          `(${(fp16Bytes(tokens) / bytes).toFixed(2)}× vs fp16); GPU decode ${
            ms(median(perContainer))
          } ms per ` +
          `container, context ${sum.toFixed(2)} ms (pipelined ${pipelined.toFixed(2)} ms), ` +
          `${codedGBps.toFixed(2)} GB/s coded = a ${linkGbps.toFixed(1)} Gbit/s link (1 Gbit/s: ` +
          `${at(1).toFixed(0)} ms, 10 Gbit/s: ${at(10).toFixed(1)} ms)`,
      );
      // configuration in params (the renderer groups rows by them), measured details beside
      const config = { level, chunk: CH, distinctContainers: distinct };
      const extra = {
        containers: n,
        tokens,
        codedBytes: bytes,
        streamBytes: sBytes,
        bitsPerSymbol: (8 * sBytes) / symbols,
        fp16Bytes: fp16Bytes(tokens),
        linkMs1Gbps: at(1),
        linkMs10Gbps: at(10),
        beats1Gbps: best < at(1),
        beats10Gbps: best < at(10),
      };
      const row = (metric: string, value: number, unit: string) =>
        rows.push({
          metric,
          impl: "ours-cachegen-gpu-decode",
          context: T,
          value,
          unit,
          params: { ...config, workgroupSize: wg },
          ...extra,
        });
      row("decode_ms_per_container", median(perContainer), "ms");
      row("decode_ms_context", sum, "ms");
      row("decode_ms_context_pipelined", pipelined, "ms");
      row("decode_us_per_token", (best * 1e3) / tokens, "us");
      row("coded_GBps", codedGBps, "GB/s");
      row("kv_fp16_GBps", fp16Bytes(tokens) / (best * 1e-3) / 1e9, "GB/s");
      row("link_equiv_Gbps", linkGbps, "Gbit/s");
      row("speedup_vs_1Gbps_link", at(1) / best, "x");
      row("speedup_vs_10Gbps_link", at(10) / best, "x");
      row("compression_ratio_vs_fp16", fp16Bytes(tokens) / bytes, "x");
      if (wg === args.wg[0]) {
        const host = (metric: string, value: number) =>
          rows.push({
            metric,
            impl: "ours-cachegen-host",
            context: T,
            value,
            unit: "ms",
            params: config,
            ...extra,
          });
        host("host_parse_ms_per_container", median(parseMs));
        host("host_parse_node_sha_ms_per_container", median(parseNodeMs));
        host("host_pack_ms_per_container", median(packMs));
        host("upload_ms_per_container", median(uploadMs));
        host("host_cpu_decode_ms_first_container", hostDecodeMs);
        host("e2e_ms_first_container", e2eMs);
        host("host_encode_ms_per_container", encodeMs / distinct);
      }
    }
    for (const prog of progs) prog.release();
  }
}

const common = {
  model: `Llama-3.1-8B KV layout (${L} layers, ${HK} KV heads, d ${D}), synthetic structured K/V ` +
    `(ops/sale/synthetic.ts), f32 cache`,
  gpu: gpuName,
  driver: Deno.env.get("LONGCTX_GPU_DRIVER") ?? backend.adapter.driver,
  date: new Date().toISOString(),
  commit: gitCommit(),
  command: `deno run -A benchmarks/device/cachegen_decode_bench.ts ${Deno.args.join(" ")}`.trim(),
  timing: runner.summary(),
};
const final = rows.map((r) => ({
  backend: backend.kind === "webgpu" ? "webgpu (Deno navigator.gpu)" : backend.kind,
  path: "lowered program (graph/src/program.ts) of cachegen.decode, inputs written before timing",
  ...common,
  ...r,
}));
await writeDeviceRows("cachegen_decode_bench", args.out, "cachegen_decode.json", final, t0);
await Effect.runPromise(backend.close());
Deno.exit(0);
