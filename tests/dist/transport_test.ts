/**
 * KV shards in worker processes over Redis (`runtime/src/dist/transport.ts`): a fresh redis-server, three
 * worker processes (`worker.ts`, spawned), one of them keeping its block on wgpu (lavapipe here) when the
 * library is present, and a host shard in this process; prefill + decode appends, and every step's merged
 * attention equals dense attention over the whole cache to 1e-6; a worker's error comes back typed; and
 * SmolLM2-135M greedy decoding (120-token prompt + 16 generated) with its KV in 3 worker processes, reached
 * from the synchronous CPU forward through the bridge thread (`bridge.ts`), equals unsplit decoding.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { existsSync } from "node:fs";
import { randn } from "../ops/ref64.ts";
import { shardedVsDense } from "./check.ts";
import {
  type KvShard,
  openBridgedKv,
  openHostShard,
  openRemoteShard,
  shardedAttention,
  shardedKv,
  type ShardShape,
  type ShardWorker,
  spawnShardWorker,
} from "../../runtime/src/dist/mod.ts";
import { redisSkipReason, withRedisServer } from "../../runtime/src/kvstore/testdata/redis_server.ts";
import { modelPath, readDocument, wgpuLibPath } from "../../runtime/src/paths.ts";
import { generateGreedy, loadLlama } from "../../runtime/src/model/llama.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";

await loadSgemm();

const haveWgpu = existsSync(wgpuLibPath());

test("worker-process shards over Redis: every decode step equals dense attention", async () => {
  await withRedisServer(async ({ url }) => {
    const shape: ShardShape = { layers: 2, heads: 4, kvHeads: 2, headDim: 64 };
    const { heads: H, headDim: D } = shape;
    const caps = [30, 45, 25, 40];
    const workers: ShardWorker[] = [
      spawnShardWorker({ url, id: "w0" }),
      spawnShardWorker({ url, id: "w1" }, haveWgpu ? "wgpu" : "host"),
      spawnShardWorker({ url, id: "w2" }),
    ];
    const shards: KvShard[] = [];
    try {
      let at = 0;
      for (const [i, cap] of caps.entries()) {
        shards.push(
          i < 3 ? await openRemoteShard({ url, id: `w${i}` }, shape, at, cap) : openHostShard(shape, at, cap),
        );
        at += cap;
      }
      const kv = shardedKv(shape, shards);
      const { worst } = await shardedVsDense(kv, shape, {
        tokens: 130,
        prompt: 50,
        step: 3,
        seed: 21,
        prefillSeed: (l) => 30 + l,
        decodeSeed: (l, t) => 100 * l + t,
        lseWeight: 0,
      });
      console.log(
        `  ${shards.map((s) => s.name).join(" + ")} (w1 on ${haveWgpu ? "wgpu" : "host"}): worst ${
          worst.toExponential(2)
        }`,
      );
      assert.ok(worst < 1e-6, `worst ${worst}`);
      // a worker-side error comes back as a TransportError naming it
      const bad = await Effect.runPromise(
        Effect.flip(
          Effect.tryPromise({ try: () => shards[0].partial(7, randn(H * D, 1), 1, 3), catch: (e) => e }),
        ),
      );
      assert.ok(/worker w0/.test(String((bad as Error).message)), String(bad));
      await kv.close();
      for (const w of workers) assert.equal(await w.exited, 0);
    } finally {
      for (const w of workers) await w.stop();
    }
  });
}, { ignore: redisSkipReason !== undefined });

test(
  "SmolLM2 greedy decoding with the KV in 3 worker processes over Redis equals unsplit decoding",
  async () => {
    const m = await Effect.runPromise(loadLlama(modelPath()));
    const c = m.config;
    const text = await Effect.runPromise(readDocument("alice-in-wonderland"));
    const prompt = m.tokenizer.encode(text.slice(2000, 4000)).slice(0, 120);
    const maxNew = 16, total = prompt.length + maxNew, chunk = 64;
    const base = await Effect.runPromise(generateGreedy(m, prompt, maxNew, { stopAtEos: false, chunk }));
    await withRedisServer(async ({ url }) => {
      const shape: ShardShape = { layers: c.nLayer, heads: c.nHead, kvHeads: c.nKvHead, headDim: c.headDim };
      const ids = ["m0", "m1", "m2"];
      const workers = ids.map((id) => spawnShardWorker({ url, id }));
      try {
        const caps = [47, 50, total - 97];
        const kv = await openBridgedKv(ids.map((id) => ({ url, id })), shape, caps, chunk);
        const t0 = performance.now();
        const g = await Effect.runPromise(
          generateGreedy(m, prompt, maxNew, { stopAtEos: false, chunk, attention: shardedAttention(kv) }),
        );
        console.log(
          `  3 worker shards [${caps}]: ${JSON.stringify(m.tokenizer.decode(g.ids))} in ${
            ((performance.now() - t0) / 1000).toFixed(1)
          } s (${kv.stats.calls} attention calls, ${(kv.stats.queryBytes / 1e6).toFixed(2)} MB queries, ` +
            `${(kv.stats.partialBytes / 1e6).toFixed(2)} MB partials, ${
              (kv.stats.appendBytes / 1e6).toFixed(2)
            } MB appends)`,
        );
        assert.deepEqual(g.ids, base.ids);
        assert.equal(kv.length(0), total - 1);
        await kv.close();
        for (const w of workers) assert.equal(await w.exited, 0);
      } finally {
        for (const w of workers) await w.stop();
      }
    });
  },
  { ignore: redisSkipReason !== undefined || !existsSync(modelPath()) },
);
