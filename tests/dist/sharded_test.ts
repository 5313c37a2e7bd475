/**
 * The sharded KV cache (`runtime/src/dist/`): shards on two backends of one process (wgpu on lavapipe and the
 * cpu backend, plus a host shard), fed by appends (a prefill chunk, then one row per decode step), give the
 * dense attention over the whole cache to 1e-6 at every step; and SmolLM2-135M greedy decoding with its KV
 * split across 2, 3 and 4 host shards (uneven capacities, a prompt of 200 tokens + 20 generated) gives the
 * same tokens as unsplit decoding, moving only queries and (o, lse) at attention.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { existsSync } from "node:fs";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { openWgpuBackend } from "../ops/gpu_helper.ts";
import { randn } from "../ops/ref64.ts";
import { shardedVsDense } from "./check.ts";
import { openBackendShard, openHostShard, type ShardShape } from "../../runtime/src/dist/shard.ts";
import { shardedAttention, shardedKv, syncShardedKv } from "../../runtime/src/dist/sharded.ts";
import { generateGreedy, loadLlama } from "../../runtime/src/model/llama.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
import { modelPath, readDocument } from "../../runtime/src/paths.ts";

await loadSgemm();
const wgpu = await openWgpuBackend();

test("sharded KV on wgpu + cpu backends + host: every step equals dense attention over the whole cache", async () => {
  const shape: ShardShape = { layers: 2, heads: 6, kvHeads: 2, headDim: 64 };
  const { heads: H, headDim: D } = shape;
  const caps = [37, 50, 41];
  const cpu = await Effect.runPromise(makeCpuBackend());
  const shards = [
    wgpu ? await openBackendShard(wgpu, shape, 0, caps[0], "wgpu") : openHostShard(shape, 0, caps[0]),
    await openBackendShard(cpu, shape, caps[0], caps[1], "cpu"),
    openHostShard(shape, caps[0] + caps[1], caps[2], "host"),
  ];
  const kv = shardedKv(shape, shards);
  // prefill: 60 rows spanning shards 0 and 1, 60 queries attend causally; then one row per decode step
  const { worst, rows, k, v } = await shardedVsDense(kv, shape, {
    tokens: 120,
    prompt: 60,
    step: 1,
    seed: 3,
    prefillSeed: (l) => 10 + l,
    decodeSeed: (l, t) => 1000 * l + t,
    lseWeight: 0.1,
  });
  console.log(
    `  ${shards.map((s) => s.name).join(" + ")}: worst error ${worst.toExponential(2)} over 2 × 61 steps`,
  );
  assert.ok(worst < 1e-6, `worst ${worst}`);
  const overflow = await Effect.runPromise(
    Effect.flip(
      Effect.tryPromise({ try: () => kv.append(0, rows(k, 0, 9), rows(v, 0, 9), 9), catch: (e) => e }),
    ),
  );
  assert.ok(/capacity/.test(String((overflow as Error).message)), String(overflow));
  // per step, only the queries and the parts crossed: 3 holders × (q + o + lse)
  kv.resetStats();
  await kv.attend(0, randn(H * D, 5), 1, 119);
  assert.equal(kv.stats.queryBytes, 3 * 4 * H * D);
  assert.equal(kv.stats.partialBytes, 3 * 4 * H * (D + 1));
  assert.equal(kv.stats.appendBytes, 0);
  await kv.close();
  await Effect.runPromise(cpu.close());
});

const haveModel = existsSync(modelPath());

test("SmolLM2 greedy decoding with the KV split across 2–4 shards equals unsplit decoding", async () => {
  const m = await Effect.runPromise(loadLlama(modelPath()));
  const c = m.config;
  const text = await Effect.runPromise(readDocument("alice-in-wonderland"));
  const prompt = m.tokenizer.encode(text.slice(2000, 4000)).slice(0, 200);
  assert.equal(prompt.length, 200);
  const maxNew = 20, total = prompt.length + maxNew;
  const shape: ShardShape = { layers: c.nLayer, heads: c.nHead, kvHeads: c.nKvHead, headDim: c.headDim };
  const base = await Effect.runPromise(generateGreedy(m, prompt, maxNew, { stopAtEos: false, chunk: 100 }));
  for (const caps of [[150, total - 150], [61, 100, total - 161], [100, 37, 80, total - 217]]) {
    let at = 0;
    const shards = caps.map((cap, i) => {
      const s = openHostShard(shape, at, cap, `host${i}`);
      at += cap;
      return s;
    });
    const kv = syncShardedKv(shape, shards);
    const g = await Effect.runPromise(
      generateGreedy(m, prompt, maxNew, { stopAtEos: false, chunk: 100, attention: shardedAttention(kv) }),
    );
    console.log(
      `  ${caps.length} shards [${caps}]: ${JSON.stringify(m.tokenizer.decode(g.ids))} ` +
        `(${kv.stats.calls} attention calls, ${(kv.stats.queryBytes / 1e6).toFixed(2)} MB queries, ` +
        `${(kv.stats.partialBytes / 1e6).toFixed(2)} MB partials, ${
          (kv.stats.appendBytes / 1e6).toFixed(2)
        } MB appends)`,
    );
    assert.deepEqual(g.ids, base.ids, `${caps.length} shards`);
    // the last generated token is not run through the model: prompt + maxNew − 1 rows, every shard used
    assert.equal(kv.length(0), total - 1);
    assert.ok(shards.every((s) => s.length(c.nLayer - 1) > 0), "every shard holds rows");
    await kv.close();
  }
}, { ignore: !haveModel });
