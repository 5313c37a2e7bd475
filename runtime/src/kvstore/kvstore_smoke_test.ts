/**
 * The KV store under Deno and Bun (`bun test` runs this file; under Bun the SQLite backend is `bun:sqlite`):
 * on each backend a round trip of random 0 B, 1 B, 1 MiB and 40 MiB values, overwrite, a missing key, a
 * flipped byte underneath the store refused as `corrupt`; bad URLs and a refused Redis port as typed errors.
 * The full suite (killed writers, every damage) is `kvstore_test.ts` (Deno).
 *
 * Run: bash scripts/bun.sh test runtime/src/kvstore/kvstore_smoke_test.ts
 * Without redis-server (scripts/setup.sh installs it as root) the Redis case is skipped, and this file
 * prints why.
 */
import { Buffer } from "node:buffer";
import { createHash, randomFillSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { Cause, Effect, Exit } from "effect";
import { createClient, RESP_TYPES } from "redis";
import { assert, runtimeName, test } from "../../../tests/harness.ts";
import { type KvStore, KvStoreError, type KvStoreErrorReason, openKvStore } from "./mod.ts";
import { freePort, redisSkipReason, withRedisServer } from "./testdata/redis_server.ts";

if (redisSkipReason) console.log(`kvstore_smoke_test: the Redis case is SKIPPED: ${redisSkipReason}`);

const MiB = 2 ** 20;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const random = (n: number) => randomFillSync(new Uint8Array(n));

const withStore = <A>(url: string, use: (s: KvStore) => Effect.Effect<A, KvStoreError>): Promise<A> =>
  Effect.runPromise(Effect.scoped(Effect.flatMap(openKvStore(url), use)));

const reasonOf = async (url: string, use: (s: KvStore) => Effect.Effect<unknown, KvStoreError>) => {
  const exit = await Effect.runPromiseExit(Effect.scoped(Effect.flatMap(openKvStore(url), use)));
  if (!Exit.isFailure(exit)) throw new Error(`${url}: expected a failure`);
  const e = Cause.squash(exit.cause);
  if (!(e instanceof KvStoreError)) throw e;
  assert.ok(e.hint.length > 10, e.message);
  return e.reason as KvStoreErrorReason;
};

/** Round trips, overwrite, a missing key, then `flip` (damage the entry underneath) must give `corrupt`. */
const exercise = async (url: string, flip: (key: string) => Promise<void>) => {
  const values = [0, 1, MiB, 40 * MiB].map(random);
  await withStore(url, (s) =>
    Effect.gen(function* () {
      for (const [i, v] of values.entries()) yield* s.put(`v${i}`, v);
      for (const [i, v] of values.entries()) {
        const got = yield* s.get(`v${i}`);
        if (got === undefined) throw new Error(`v${i} is missing`);
        assert.equal(sha(got), sha(v), `${v.length} bytes`);
      }
      yield* s.put("v2", values[1]);
      assert.deepEqual(yield* s.get("v2"), values[1]);
      assert.equal(yield* s.get("nope"), undefined);
      assert.equal(yield* s.delete("v0"), true);
      assert.equal(yield* s.has("v0"), false);
    }));
  await flip("v3");
  assert.equal(await reasonOf(url, (s) => s.get("v3")), "corrupt");
};

const flipAt = (b: Uint8Array, at: number) => {
  const d = b.slice();
  d[at] ^= 0x10;
  return d;
};

test(`kvstore smoke (${runtimeName()}): file and sqlite backends round-trip and refuse a flipped byte`, async () => {
  const dir = mkdtempSync(join(tmpdir(), "longctx-kv-smoke-"));
  try {
    const files = join(dir, "files");
    await exercise(`file://${files}`, (key) => {
      const p = join(files, `${key}.kv`);
      const b = readFileSync(p);
      writeFileSync(p, flipAt(b, b.length >> 1));
      return Promise.resolve();
    });
    const db = join(dir, "kv.db");
    await exercise(`sqlite://${db}`, (key) => {
      const d = new DatabaseSync(db);
      try {
        const v = d.prepare("SELECT value FROM kv_entries WHERE key = ?").get(key)!.value as Uint8Array;
        d.prepare("UPDATE kv_entries SET value = ? WHERE key = ?").run(flipAt(v, 100), key);
      } finally {
        d.close();
      }
      return Promise.resolve();
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test(`kvstore smoke (${runtimeName()}): redis backend round-trips and refuses a flipped byte`, async () => {
  await withRedisServer(async (server) => {
    await exercise(server.url, async (key) => {
      const c = createClient({ url: server.url, socket: { reconnectStrategy: false } });
      c.on("error", () => {});
      await c.connect();
      try {
        const raw = c.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
        const v = (await raw.get(`longctx:kv:${key}`)) as unknown as Buffer;
        await raw.set(`longctx:kv:${key}`, Buffer.from(flipAt(v, v.length - 5)));
      } finally {
        await c.close();
      }
    });
  });
}, { ignore: redisSkipReason !== undefined });

test(`kvstore smoke (${runtimeName()}): bad URLs and a refused Redis port are typed errors`, async () => {
  assert.equal(await reasonOf("gopher://x", () => Effect.void), "bad-url");
  assert.equal(await reasonOf("file://relative", () => Effect.void), "bad-url");
  assert.equal(await reasonOf("sqlite:kv.db", () => Effect.void), "bad-url");
  const t0 = Date.now();
  assert.equal(await reasonOf(`redis://127.0.0.1:${await freePort()}`, () => Effect.void), "unreachable");
  assert.ok(Date.now() - t0 < 3000);
});
