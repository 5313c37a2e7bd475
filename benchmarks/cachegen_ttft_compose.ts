/**
 * CacheGen's time to first token on a GPU, composed from parts measured there in one job: the recompute by
 * PyTorch (`benchmarks/device/prefill_peer.py`, a Llama-3.1-8B-shaped bf16 prefill, cuBLAS + SDPA) against
 * loading the context's containers over a link and decoding them with our `cachegen.decode`
 * (`benchmarks/device/cachegen_decode_bench.ts`, Llama-3.1-8B's KV layout, synthetic structured KV), and
 * against plain fp16 KV over the same link.
 *
 * Load = the containers' bytes × 8 / bandwidth (the link, simulated) + the host's per-container work measured
 * by the decode bench (`parseKv`: SHA-256 and checks; packing; upload) × containers + the GPU decode of the
 * whole context submitted back to back (`decode_ms_context_pipelined`), one after another (no overlap: what
 * `loadContext` does today). fp16: the bytes over the link only (a lower bound: no check, no upload counted).
 * The question's prefill (tens of tokens) is left out of every mode alike.
 *
 * Usage: `deno run -A benchmarks/cachegen_ttft_compose.ts --prefill prefill.json --decode decode.json` (the
 * device job's two outputs). Rows go to `benchmarks/results/cachegen_ttft.json` (impl `composed-…`).
 * @module
 */
import { appendRows, type RowInput } from "./lib/results.ts";
import { fail, parseFlags } from "./lib/args.ts";

const args = parseFlags("deno run -A benchmarks/cachegen_ttft_compose.ts [flags]", {
  prefill: { kind: "string", default: "", help: "prefill_peer.py's rows (JSON array)" },
  decode: { kind: "string", default: "", help: "cachegen_decode_bench.ts's rows (JSON array)" },
  gbps: { kind: "string", default: "1,3,10,25,100", help: "link bandwidths, Gbit/s" },
  commit: { kind: "string", default: "", help: "the commit measured (default: the decode rows')" },
  "prefill-command": {
    kind: "string",
    default: "python3 benchmarks/device/prefill_peer.py",
    help: "the command that made --prefill",
  },
  "no-write": { kind: "switch", help: "print only; append no rows" },
});
if (!args.prefill || !args.decode) fail("--prefill and --decode are required", "pass both device outputs");
type Src = {
  metric: string;
  value: number;
  context?: number;
  impl?: string;
  gpu?: string;
  driver?: string;
  date?: string;
  commit?: string;
  command?: string;
  params?: Record<string, unknown>;
  containers?: number;
  codedBytes?: number;
  fp16Bytes?: number;
};
const read = (p: string): Src[] => JSON.parse(Deno.readTextFileSync(p));
const prefill = read(args.prefill), decode = read(args.decode);
if (decode.length === 0) fail(`${args.decode} holds no rows`, "pass the decode bench's output");
const bws = args.gbps.split(",").map(Number).filter((x) => x > 0);
const d0 = decode[0];
const prov = {
  gpu: d0.gpu ?? "unknown",
  driver: d0.driver ?? "unknown",
  date: d0.date ?? new Date().toISOString(),
  commit: args.commit || (d0.commit ?? "unknown"),
};
const link = (bytes: number, g: number) => (bytes * 8) / (g * 1e6);
const rows: RowInput[] = [];
const model = "llama-3.1-8b (KV layout 32 layers × 8 KV heads × d 128)";
const contexts = [...new Set(decode.map((r) => r.context!))].sort((a, b) => a - b);
for (const S of contexts) {
  const rec = prefill.filter((r) => r.context === S);
  for (const r of rec) {
    rows.push({
      metric: "ttft_ms",
      value: r.value,
      unit: "ms",
      context: S,
      model,
      backend: "torch",
      impl: `composed-recompute-${r.impl}`,
      dtype: "bf16",
      params: { prefillMs: r.value, source: "prefill_peer.py (random bf16 weights)" },
      note: "the context's prefill by PyTorch (cuBLAS GEMMs + SDPA): what loading a stored KV cache saves",
      ...prov,
      command: args["prefill-command"],
    });
  }
  const at = (metric: string, level: number) =>
    decode.find((r) => r.metric === metric && r.context === S && r.params?.level === level);
  const levels = [...new Set(decode.filter((r) => r.context === S).map((r) => r.params?.level as number))];
  for (const level of levels.sort()) {
    const pipe = at("decode_ms_context_pipelined", level), parse = at("host_parse_ms_per_container", level);
    const pack = at("host_pack_ms_per_container", level), up = at("upload_ms_per_container", level);
    const per = at("decode_ms_per_container", level);
    if (!pipe || !parse || !pack || !up || !per?.codedBytes || !per.containers) continue;
    const host = (parse.value + pack.value + up.value) * per.containers;
    for (const g of bws) {
      const l = link(per.codedBytes, g);
      rows.push({
        metric: "ttft_ms",
        value: l + host + pipe.value,
        unit: "ms",
        context: S,
        model,
        backend: "wgpu",
        impl: `composed-cachegen-l${level}`,
        dtype: "f32",
        bytes: per.codedBytes,
        params: {
          gbps: g,
          linkMs: l,
          hostMs: host,
          gpuDecodeMs: pipe.value,
          containers: per.containers,
          ratioVsFp16: per.fp16Bytes! / per.codedBytes,
          kv: "synthetic structured (ops/sale/synthetic.ts)",
        },
        note: "link (simulated) + host parse/pack/upload + GPU decode (both measured), one after another",
        ...prov,
        command: d0.command ?? "benchmarks/device/cachegen_decode_bench.ts",
      });
    }
  }
  const fp16 = decode.find((r) => r.context === S && r.fp16Bytes)?.fp16Bytes;
  if (fp16) {
    for (const g of bws) {
      rows.push({
        metric: "ttft_ms",
        value: link(fp16, g),
        unit: "ms",
        context: S,
        model,
        backend: "none",
        impl: "composed-fp16-link-only",
        dtype: "f16",
        bytes: fp16,
        params: { gbps: g, linkMs: link(fp16, g) },
        note: "fp16 KV over the link only: a lower bound (no check, no upload counted)",
        ...prov,
        command: `deno run -A benchmarks/cachegen_ttft_compose.ts (fp16 bytes of the ${S}-token KV)`,
      });
    }
  }
}
const byKey = new Map<string, number>();
for (const r of rows) byKey.set(`${r.context} ${r.impl} ${r.params?.gbps ?? ""}`, r.value);
for (const S of contexts) {
  console.log(`context ${S}:`);
  for (const [k, v] of byKey) {
    if (k.startsWith(`${S} `)) console.log(`  ${k.slice(String(S).length + 1)}: ${v.toFixed(0)} ms`);
  }
}
if (!args["no-write"]) {
  await appendRows("cachegen_ttft", rows);
  console.error(`${rows.length} rows → benchmarks/results/cachegen_ttft.json`);
}
