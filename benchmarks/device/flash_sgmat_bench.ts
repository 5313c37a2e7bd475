/**
 * Dense causal flash-attention prefill on subgroup matrices (`ops/dense/flash_sgmat.ts`, `dawn` backend)
 * with Llama-3.1-8B heads (32 query / 8 KV heads, d 128), f16 inputs (random, values do not change the
 * dense work), at each `--contexts` length; and PyTorch's SDPA flash and cuDNN attention
 * (`benchmarks/device/sdpa_peer.py`, bf16) on the same GPU in the same run.
 *
 * The 32 heads run as 4 launches of 8 query heads / 2 KV heads (as `sale_bench.ts` chunks them: an f32
 * output of all heads at 128K would be 2 GiB), in one submission timed by GPU timestamps; the figure is the
 * sum of the 4 launches, median of `--reps` submissions, after one warm-up submission. A sampled row of
 * the output is checked finite. Appends `latency_ms` rows (impl `dense-sgmat`, backend `dawn`) and the
 * peers' rows to `benchmarks/results/sale.json` unless `--no-write`.
 *
 *   bash .device/go.sh deno run -A benchmarks/device/flash_sgmat_bench.ts --contexts 65536,131072
 * @module
 */
import { Effect } from "effect";
import process from "node:process";
import { spawnSync } from "node:child_process";
import type { DeviceBuffer } from "@longctx/graph";
import { FLASH_SGMAT_ROWS, type FlashSgmatConfig } from "../../ops/dense/flash_sgmat.ts";
import { makeDawnBackend } from "../../runtime/src/backends/dawn.ts";
import { flashSgmatKernel } from "../../tests/ops/flash_sgmat_run.ts";
import { appendRows, type RowInput } from "../lib/results.ts";
import { parseFlags } from "../lib/args.ts";

const args = parseFlags("deno run -A benchmarks/device/flash_sgmat_bench.ts [flags]", {
  contexts: { kind: "list", default: [65536, 131072], min: 1, help: "context lengths (tokens)" },
  reps: { kind: "int", default: 3, min: 1, help: "timed runs per context (the median counts)" },
  "no-write": { kind: "switch", help: "print only, append no rows" },
  "no-peer": { kind: "switch", help: "skip the PyTorch reference" },
});
const contexts = args.contexts;
const reps = args.reps;
const write = !args["no-write"];
const peer = !args["no-peer"];
const HEADS = 32, KV = 8, D = 128, CHUNK = 8;
const MODEL = "llama-3.1-8b-heads (32/8, d=128)";
const run = <X, E>(e: Effect.Effect<X, E>) => Effect.runPromise(e);
const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Random f16 bits of N(0,1)-ish values in ±[2^-3, 2). */
const halves = (len: number, seed: number): Uint16Array => {
  const h = new Uint16Array(len);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const r = s >>> 0;
    h[i] = ((r & 1) << 15) | ((12 + ((r >>> 1) % 4)) << 10) | ((r >>> 4) & 0x3ff);
  }
  return h;
};

const opened = await run(Effect.result(makeDawnBackend()));
if (opened._tag === "Failure") {
  console.log(`flash_sgmat_bench: dawn unavailable — ${opened.failure.message}`);
  process.exit(1);
}
const b = opened.success;
console.log(`== dawn: ${b.adapter.name}; ${MODEL}, f16, chunks of ${CHUNK} heads`);
const rows: RowInput[] = [];
for (const S of contexts) {
  const c: FlashSgmatConfig = {
    heads: CHUNK,
    kvHeads: CHUNK * KV / HEADS,
    seq: S,
    headDim: D,
    scale: 1 / Math.sqrt(D),
  };
  const kernel = flashSgmatKernel(c);
  const bufs: DeviceBuffer[] = [];
  const alloc = async (bytes: number) => {
    const x = await run(b.allocate(bytes));
    bufs.push(x);
    return x;
  };
  try {
    const q = await alloc(CHUNK * S * D * 2);
    const k = await alloc(c.kvHeads * S * D * 2);
    const v = await alloc(c.kvHeads * S * D * 2);
    const o = await alloc(CHUNK * S * D * 4);
    const lse = await alloc(CHUNK * S * 4);
    await run(b.upload(q, halves(CHUNK * S * D, S + 1)));
    await run(b.upload(k, halves(c.kvHeads * S * D, S + 2)));
    await run(b.upload(v, halves(c.kvHeads * S * D, S + 3)));
    const launch = {
      kernel,
      buffers: [q, k, v, o, lse],
      workgroups: [Math.ceil(S / FLASH_SGMAT_ROWS), CHUNK, 1] as const,
    };
    const launches = Array.from({ length: HEADS / CHUNK }, () => launch);
    await run(b.dispatch(launches, { timed: true }));
    const totals: number[] = [];
    for (let i = 0; i < reps; i++) {
      const t = await run(b.dispatch(launches, { timed: true }));
      totals.push(t!.perLaunchMs.reduce((x, y) => x + y, 0));
    }
    const ms = median(totals);
    const sample = new Float32Array((await run(b.download(o, (S - 1) * D * 4, D * 4))).buffer);
    const finite = sample.every(Number.isFinite);
    const flops = 4 * HEADS * D * S * (S + 1) / 2;
    console.log(
      `  S=${S}: ${ms.toFixed(1)} ms (${(flops / ms / 1e9).toFixed(1)} TFLOP/s), runs ${
        totals.map((x) => x.toFixed(1)).join(" / ")
      }, last row finite: ${finite}`,
    );
    if (finite) {
      rows.push({
        metric: "latency_ms",
        value: Number(ms.toFixed(2)),
        unit: "ms",
        context: S,
        model: MODEL,
        backend: "dawn",
        impl: "dense-sgmat",
        op: "dense.attn",
        dtype: "f16",
        flops,
        timeMs: Number(ms.toFixed(3)),
        params: { tflops: Number((flops / ms / 1e9).toFixed(1)), reps, chunkHeads: CHUNK },
      });
    }
  } finally {
    for (const x of bufs) b.release(x);
  }
}
await run(b.close());
if (peer) {
  const py = spawnSync("python3", ["benchmarks/device/sdpa_peer.py", "--contexts", contexts.join(",")], {
    encoding: "utf8",
    timeout: 400_000,
  });
  process.stderr.write(py.stderr ?? "");
  if (py.status === 0) {
    for (const r of JSON.parse(py.stdout) as (RowInput & { tflops?: number })[]) {
      const { tflops, ...rest } = r;
      rows.push({
        ...rest,
        model: MODEL,
        params: { tflops: Number((tflops ?? 0).toFixed(1)) },
        command: `python3 benchmarks/device/sdpa_peer.py --contexts ${contexts.join(",")}`,
      });
    }
  } else console.log(`flash_sgmat_bench: sdpa_peer.py failed (${py.status})`);
}
if (write && rows.length) {
  await appendRows("sale", rows);
  console.log(`  appended ${rows.length} rows to benchmarks/results/sale.json`);
}
process.exit(0);
