/**
 * DistAttention simulation (issue 20): Llama-3.1-8B (32 layers, 32/8 heads of 128, `plans/src/models.ts`), its
 * f32 KV cache (256 KiB per token, this repo's cache dtype) spread by `placeBlocks` (`plans/src/placement.ts`)
 * over 1–32 H200s (141 GB each, 16 GB reserved on each for the f16 weights of its own model instance, as in
 * Infinite-LLM's setting where every instance serves a model and lends its spare memory), at 128K–2M tokens:
 * per configuration the predicted attention time of one decode step (the profile's `dense.attn` decode fit of
 * the split-KV kernels, `plans/profiles/h200.json`, applied to each block's `distattn.partialAttn` cost) and
 * the bytes per step that cross links, or the refusal when the cache does not fit; per device count the
 * longest context served and its gain over one device, next to the paper's "2–19× longer contexts" (32 A100s,
 * arXiv 2401.02669 abstract).
 *
 * Links (assumed, vendor figures, not measured here): devices 1–7 share the coordinator's node over NVLink 4
 * (450 GB/s per direction, 2 µs), devices 8+ are on other nodes over InfiniBand NDR (400 Gb/s = 50 GB/s, 5 µs).
 * Measured: with `--redis` the round trip of one decode message of this model (q out, o and lse back) through
 * the worker transport (`runtime/src/dist/transport.ts`, a local redis-server) is timed and reported as a row,
 * and a `redis` configuration places the blocks on workers behind that link.
 *
 * Not modelled: the rest of the forward (projections, MLP: the same with or without sharding), the merge
 * (host, `parts · heads · 129` values per layer), compute/communication overlap. `maxContext` of the model is
 * 128K: longer contexts are a memory and time simulation only.
 *
 * Run: `deno run -A benchmarks/distattn_sim.ts [--redis] [--out benchmarks/results/distattn_sim.json]`
 * (a few seconds), then `deno task bench:render`.
 * @module
 */
import { Effect } from "effect";
import {
  builtinProfile,
  getModel,
  kvCacheBytes,
  placeBlocks,
  type Placement,
  weightBytes,
} from "@longctx/plans";
import type { PlacementDevice } from "@longctx/plans";
import { completeRow, type RowInput } from "./lib/results.ts";
import { parseFlags } from "./lib/args.ts";

const args = parseFlags("deno run -A benchmarks/distattn_sim.ts [flags]", {
  redis: { kind: "switch", help: "time the worker transport's round trip on a local redis-server" },
  out: { kind: "string", default: "benchmarks/results/distattn_sim.json", help: "results file to write" },
});

const profile = await Effect.runPromise(builtinProfile("h200"));
const model = await Effect.runPromise(getModel("llama-3.1-8b"));
const MEM = 141e9, RESERVED = weightBytes(model, 2);
const NVLINK = { bw: 450e9, lat: 2e-6 }, IB = { bw: 50e9, lat: 5e-6 };
const perToken = kvCacheBytes(model, 1);
const label = `${model.id} (32/8 heads, d=128, f32 KV)`;

const devices = (n: number, remote?: { bw: number; lat: number }): PlacementDevice[] =>
  Array.from({ length: n }, (_, i) => {
    const l = i === 0 ? undefined : remote ?? (i < 8 ? NVLINK : IB);
    return {
      name: `h200-${i}`,
      memoryBytes: MEM,
      reservedBytes: RESERVED,
      linkBytesPerS: l ? l.bw : Infinity,
      linkLatencyS: l ? l.lat : 0,
    };
  });

const rows: RowInput[] = [];
const common = { model: label, backend: "sim", op: "distattn.partialAttn", dtype: "f32" } as const;

/** The measured round trip of one decode message through Redis (median of 200), ms; undefined without a server. */
const redisRoundTrip = async (): Promise<number | undefined> => {
  const { redisSkipReason, withRedisServer } = await import(
    "../runtime/src/kvstore/testdata/redis_server.ts"
  );
  if (redisSkipReason) return undefined;
  const { openRemoteShard, spawnShardWorker } = await import("../runtime/src/dist/mod.ts");
  return await withRedisServer(async ({ url }) => {
    const shape = { layers: 1, heads: model.heads, kvHeads: model.kvHeads, headDim: model.headDim };
    const w = spawnShardWorker({ url, id: "sim" });
    try {
      const s = await openRemoteShard({ url, id: "sim" }, shape, 0, 1);
      const kv = new Float32Array(model.kvHeads * model.headDim).fill(0.5);
      await s.append(0, kv, kv, 1);
      const q = new Float32Array(model.heads * model.headDim).fill(0.1);
      const t: number[] = [];
      for (let i = 0; i < 220; i++) {
        const t0 = performance.now();
        await s.partial(0, q, 1, 0);
        if (i >= 20) t.push(performance.now() - t0);
      }
      await s.close();
      t.sort((a, b) => a - b);
      return t[t.length >> 1];
    } finally {
      await w.stop();
    }
  });
};

const longest = (n: number) => n * Math.floor((MEM - RESERVED) / perToken);
const one = longest(1);
const CONTEXTS = [131072, 262144, 524288, 1048576, 2097152];
for (const n of [1, 2, 4, 8, 16, 32]) {
  const max = longest(n);
  rows.push({
    ...common,
    metric: "distattn_max_context_tokens",
    value: max,
    unit: "tokens",
    impl: `${n} devices`,
    params: { devices: n, freeGBPerDevice: (MEM - RESERVED) / 1e9, kvBytesPerToken: perToken },
    note: "longest KV cache the devices' free memory holds (placeBlocks refuses one token more)",
  });
  rows.push({
    ...common,
    metric: "distattn_context_gain_x",
    value: max / one,
    unit: "x",
    impl: `${n} devices`,
    params: { devices: n, paperGain: "2-19x (32 A100, vs other systems)" },
    note:
      "longest context vs one device; Infinite-LLM reports 2–19× longer contexts than other serving systems",
  });
  // the placement refuses the next token
  const refused = await Effect.runPromise(
    Effect.flip(placeBlocks({ model, tokens: max + 1, devices: devices(n), profile })),
  );
  if (refused.reason !== "unsatisfiable-budget") {
    throw new Error(`expected a refusal, got ${refused.message}`);
  }
  for (const T of CONTEXTS) {
    const r = await Effect.runPromise(
      Effect.match(placeBlocks({ model, tokens: T, devices: devices(n), profile }), {
        onFailure: (e) => ({ refused: e.message }),
        onSuccess: (p: Placement) => ({ placed: p }),
      }),
    );
    if (!("placed" in r)) {
      console.error(`${n} devices, ${T} tokens: refused — ${r.refused}`);
      continue;
    }
    const p = r.placed;
    const holders = p.blocks.filter((b) => b.tokens > 0);
    rows.push({
      ...common,
      metric: "distattn_step_ms",
      value: p.stepMs,
      unit: "ms",
      context: T,
      impl: `${n} devices`,
      bytes: p.transferBytesPerStep,
      params: {
        devices: n,
        holders: holders.length,
        largestBlock: Math.max(...holders.map((b) => b.tokens)),
        links: n <= 8 ? "nvlink 450 GB/s" : "nvlink 450 GB/s + ib 50 GB/s",
        fit: "h200 dense.attn@decode",
        extrapolated: p.extrapolated,
      },
      note:
        "predicted attention time per decode token (32 layers, slowest block + its link); bytes = link bytes/step",
    });
    console.error(
      `${n} devices, ${T} tokens: ${p.stepMs.toFixed(2)} ms/step over ${holders.length} blocks ` +
        `(largest ${Math.max(...holders.map((b) => b.tokens))}), ${
          (p.transferBytesPerStep / 1e6).toFixed(2)
        } MB/step`,
    );
  }
}

if (args.redis) {
  const rtt = await redisRoundTrip();
  if (rtt !== undefined) {
    const msg = 4 * model.heads * model.headDim + 4 * model.heads * (model.headDim + 1);
    rows.push({
      ...common,
      backend: "cpu",
      metric: "distattn_redis_roundtrip_ms",
      value: rtt,
      unit: "ms",
      impl: "redis loopback",
      bytes: msg,
      params: { message: "q out + (o, lse) back, one layer", samples: 200 },
      note:
        "measured here: one decode message through the worker transport (local redis-server, 1-row shard)",
    });
    // the same cluster with the worker transport as every remote link: the measured round trip (which
    // includes the message's bytes) as twice the latency, bandwidth taken as unlimited
    for (const T of [131072, 524288]) {
      const p = await Effect.runPromise(
        placeBlocks({ model, tokens: T, devices: devices(4, { bw: 1e15, lat: rtt / 2000 }), profile }),
      );
      rows.push({
        ...common,
        metric: "distattn_step_ms",
        value: p.stepMs,
        unit: "ms",
        context: T,
        impl: "4 devices, redis link",
        bytes: p.transferBytesPerStep,
        params: {
          devices: 4,
          links: `redis loopback ${rtt.toFixed(3)} ms round trip`,
          extrapolated: p.extrapolated,
        },
        note: "predicted attention per decode token with the measured Redis round trip as each remote link",
      });
      console.error(
        `4 devices over redis, ${T} tokens: ${p.stepMs.toFixed(2)} ms/step (round trip ${rtt} ms)`,
      );
    }
  }
}

const date = new Date().toISOString();
const out = rows.map((r, i) => completeRow(r, i, date));
await Deno.writeTextFile(args.out, JSON.stringify(out, null, 1) + "\n");
console.error(`distattn_sim: ${out.length} rows → ${args.out}`);
