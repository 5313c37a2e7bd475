/**
 * The KV store (runtime/src/kvstore) under Deno, on each backend — a folder of files, SQLite (`node:sqlite`)
 * and Redis (a redis-server this file starts and stops on a free loopback port): keys, the envelope, round
 * trips of random values of 0 B, 1 B, 1 MiB and 40 MiB, overwrite, missing keys, damaged and partial entries
 * written underneath the store (refused as `corrupt`, never returned), a writer process SIGKILLed in the
 * middle of a put (a reader then gets the old value or the new one, whole), bad URLs and unreachable
 * servers (typed errors with hints, within the connect timeout).
 *
 * Run: bash scripts/deno.sh test -A runtime/src/kvstore/kvstore_test.ts
 * Without redis-server (scripts/setup.sh installs it as root) the Redis tests are skipped, and this file
 * prints why.
 */
import { createHash, randomFillSync } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { Buffer } from "node:buffer";
import { Cause, Effect, Exit, Scope } from "effect";
import { createClient } from "redis";
import { assert, test } from "../../../tests/harness.ts";
import {
  checkKvKey,
  decodeKvEntry,
  encodeKvEntry,
  KV_ENTRY_MAGIC,
  kvKey,
  type KvKeyParts,
  type KvStore,
  KvStoreError,
  type KvStoreErrorReason,
  type KvStoreOptions,
  openKvStore,
  parseKvStoreUrl,
} from "./mod.ts";
import { patternBytes } from "./testdata/patterns.ts";
import { freePort, type RedisServer, redisSkipReason, withRedisServer } from "./testdata/redis_server.ts";

if (redisSkipReason) console.log(`kvstore_test: the Redis tests are SKIPPED: ${redisSkipReason}`);

const MiB = 2 ** 20;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const random = (n: number) => randomFillSync(new Uint8Array(n));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Run `use` on the store at `url`, opened and closed by one scope. */
const withStore = <A>(
  url: string,
  use: (s: KvStore) => Effect.Effect<A, KvStoreError>,
  options?: KvStoreOptions,
): Promise<A> => Effect.runPromise(Effect.scoped(Effect.flatMap(openKvStore(url, options), use)));

/** The typed error `e` fails with; asserts its reason, a hint, and the message when given. */
const failure = async (
  e: Effect.Effect<unknown, KvStoreError, Scope.Scope>,
  reason: KvStoreErrorReason,
  message?: RegExp,
): Promise<KvStoreError> => {
  const exit = await Effect.runPromiseExit(Effect.scoped(e));
  if (!Exit.isFailure(exit)) throw new Error(`expected a KvStoreError "${reason}", got a success`);
  const err = Cause.squash(exit.cause);
  if (!(err instanceof KvStoreError)) throw new Error(`expected a KvStoreError, got ${String(err)}`);
  assert.equal(err.reason, reason, err.message);
  assert.ok(err.hint.length > 10, `a hint for: ${err.message}`);
  if (message) assert.match(err.message, message);
  return err;
};
const opFailure = (
  url: string,
  use: (s: KvStore) => Effect.Effect<unknown, KvStoreError>,
  reason: KvStoreErrorReason,
  message?: RegExp,
  options?: KvStoreOptions,
) => failure(Effect.flatMap(openKvStore(url, options), use), reason, message);

const tempDir = () => mkdtempSync(join(tmpdir(), "longctx-kv-"));
const withTemp = async (fn: (dir: string) => Promise<void>) => {
  const dir = tempDir();
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
};

// ------------------------------------------------------------------------------------------------ backends

/** Raw access to a backend's stored envelope, underneath the store (to damage it). */
interface Raw {
  get(key: string): Promise<Uint8Array>;
  set(key: string, bytes: Uint8Array): Promise<void>;
}

interface Backend {
  readonly name: string;
  readonly skip?: string;
  /** Run `fn` with a fresh store URL and raw access to it. */
  with(fn: (url: string, raw: Raw) => Promise<void>): Promise<void>;
}

const fileBackend: Backend = {
  name: "file",
  with: (fn) =>
    withTemp((dir) => {
      const path = (key: string) => join(dir, "store", `${key}.kv`);
      return fn(`file://${dir}/store`, {
        get: (key) => Promise.resolve(new Uint8Array(readFileSync(path(key)))),
        set: (key, bytes) => Promise.resolve(writeFileSync(path(key), bytes)),
      });
    }),
};

const sqliteBackend: Backend = {
  name: "sqlite",
  with: (fn) =>
    withTemp(async (dir) => {
      const db = join(dir, "sub", "kv.db");
      const raw = <A>(f: (d: DatabaseSync) => A): A => {
        const d = new DatabaseSync(db);
        try {
          return f(d);
        } finally {
          d.close();
        }
      };
      await fn(`sqlite://${db}`, {
        get: (key) =>
          Promise.resolve(
            raw((d) => d.prepare("SELECT value FROM kv_entries WHERE key = ?").get(key)!.value as Uint8Array),
          ),
        set: (key, bytes) =>
          Promise.resolve(
            void raw((d) => d.prepare("UPDATE kv_entries SET value = ? WHERE key = ?").run(bytes, key)),
          ),
      });
    }),
};

/** A raw node-redis client (Buffers in and out) for `fn`, closed afterwards. */
const withRawRedis = async <A>(
  url: string,
  fn: (c: {
    get(k: string): Promise<Buffer | null>;
    set(k: string, v: Buffer | string): Promise<unknown>;
  }) => Promise<A>,
): Promise<A> => {
  const { RESP_TYPES } = await import("redis");
  const c = createClient({ url, socket: { reconnectStrategy: false } });
  c.on("error", () => {});
  await c.connect();
  try {
    return await fn(c.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer }) as never);
  } finally {
    await c.close();
  }
};

const redisBackend: Backend = {
  name: "redis",
  skip: redisSkipReason,
  with: (fn) =>
    withRedisServer((s: RedisServer) =>
      fn(`${s.url}/3`, {
        get: (key) =>
          withRawRedis(`${s.url}/3`, async (c) => new Uint8Array((await c.get(`longctx:kv:${key}`))!)),
        set: (key, bytes) =>
          withRawRedis(`${s.url}/3`, async (c) => void await c.set(`longctx:kv:${key}`, Buffer.from(bytes))),
      })
    ),
};

const BACKENDS = [fileBackend, sqliteBackend, redisBackend];

// ------------------------------------------------------------------------------------------------ keys

const parts: KvKeyParts = {
  model: "L30 E576 H9/3 D64 V49152 θ100000 embd 0123456789abcdef",
  tokensSha256: "a".repeat(64),
  codec: { name: "cachegen", level: 2, params: { slice: 256, precision: 16 } },
  chunk: 0,
};

test("kvKey: names model, tokens, codec level and params, and chunk; a safe file name; stable", () => {
  const k = kvKey(parts);
  assert.match(k, /^lckv1_m-[0-9a-f]{32}_t-a{64}_c-cachegen-l2-p[0-9a-f]{12}_k-0$/);
  assert.ok(k.length <= 200);
  checkKvKey(k);
  assert.equal(kvKey(parts), k, "deterministic");
  // Parameter order does not matter; every part does.
  assert.equal(
    kvKey({ ...parts, codec: { name: "cachegen", level: 2, params: { precision: 16, slice: 256 } } }),
    k,
  );
  const others = [
    kvKey({ ...parts, model: parts.model + " " }),
    kvKey({ ...parts, tokensSha256: "b".repeat(64) }),
    kvKey({ ...parts, codec: { name: "cachegen", level: 3, params: { slice: 256, precision: 16 } } }),
    kvKey({ ...parts, codec: { name: "cachegen", level: 2, params: { slice: 128, precision: 16 } } }),
    kvKey({ ...parts, codec: { name: "int8" } }),
    kvKey({ ...parts, chunk: 1 }),
  ];
  assert.equal(new Set([k, ...others]).size, others.length + 1, others.join("\n"));
  assert.equal(
    kvKey({ ...parts, codec: "fp16", tokensSha256: "A".repeat(64) }).includes("_t-" + "a".repeat(64)),
    true,
  );
  // The longest possible key still fits.
  checkKvKey(
    kvKey({
      ...parts,
      codec: { name: "x".repeat(32), level: Number.MAX_SAFE_INTEGER },
      chunk: Number.MAX_SAFE_INTEGER,
    }),
  );
});

test("kvKey and store keys: bad parts and bad keys throw bad-key with a hint", () => {
  const bad = (p: Partial<KvKeyParts> & Record<string, unknown>, re: RegExp) => {
    assert.throws(() => kvKey({ ...parts, ...p } as KvKeyParts), (e: unknown) => {
      if (!(e instanceof KvStoreError)) throw e;
      assert.ok(e.reason === "bad-key" && e.hint.length > 0, String(e));
      assert.match(e.message, re);
      return true;
    });
  };
  bad({ model: "" }, /model fingerprint is empty/);
  bad({ tokensSha256: "abc" }, /not a SHA-256/);
  bad({ codec: { name: "cache gen" } }, /codec name/);
  bad({ codec: { name: "cachegen", level: 1.5 } }, /level 1.5/);
  bad({ codec: { name: "cachegen", params: { x: NaN } } }, /params.x is NaN/);
  bad({ chunk: -1 }, /chunk -1/);
  for (const k of ["", ".hidden", "a/b", "../x", "a b", "x".repeat(201), "é"]) {
    assert.throws(() => checkKvKey(k), KvStoreError, JSON.stringify(k));
  }
  checkKvKey("a");
  checkKvKey("A-1_b.c");
});

test("envelope: round trip; every damaged byte, a cut, trailing bytes, another key or version are refused", async () => {
  const v = random(3000);
  const e = encodeKvEntry("k1", v);
  assert.deepEqual(KV_ENTRY_MAGIC, e.subarray(0, 8));
  const back = await Effect.runPromise(decodeKvEntry("k1", e, "test"));
  assert.deepEqual(back, v);
  assert.notEqual(back.buffer, e.buffer, "a copy, not a view");
  const refuse = async (bytes: Uint8Array, reason: KvStoreErrorReason, re: RegExp, key = "k1") => {
    const err = await failure(decodeKvEntry(key, bytes, "test"), reason);
    assert.match(err.message, re);
  };
  for (const at of [0, 7, 8, 12, 16, 23, 24, 25, 26, 1000, e.length - 33, e.length - 1]) {
    const d = e.slice();
    d[at] ^= 0x40;
    await refuse(d, at === 8 ? "version" : "corrupt", /bad magic|SHA-256|cut short|trailing|version|shorter/);
  }
  for (const cut of [0, 10, 55, e.length >> 1, e.length - 1]) {
    await refuse(e.subarray(0, cut), "corrupt", /short/);
  }
  await refuse(new Uint8Array([...e, 0]), "corrupt", /trailing/);
  await refuse(e, "corrupt", /stored under key "k1", not "k2"/, "k2");
  const empty = encodeKvEntry("k", new Uint8Array(0));
  assert.equal((await Effect.runPromise(decodeKvEntry("k", empty, "t"))).length, 0);
});

// ------------------------------------------------------------------------------------------------ per backend

for (const b of BACKENDS) {
  test(
    `${b.name}: round trip of random 0 B, 1 B, 1 MiB, 40 MiB; overwrite; missing key; has and delete`,
    async () => {
      await b.with(async (url) => {
        const values = [0, 1, MiB, 40 * MiB].map(random);
        await withStore(url, (s) =>
          Effect.gen(function* () {
            assert.equal(s.backend, b.name);
            for (const [i, v] of values.entries()) yield* s.put(`size-${i}`, v);
            for (const [i, v] of values.entries()) {
              const got = yield* s.get(`size-${i}`);
              if (!(got instanceof Uint8Array)) throw new Error(`size-${i}: nothing stored`);
              assert.equal(got.length, v.length);
              assert.equal(sha(got), sha(v), `size ${v.length}`);
            }
            assert.equal(yield* s.get("missing"), undefined);
            assert.equal(yield* s.has("missing"), false);
            assert.equal(yield* s.has("size-2"), true);
            // Overwrite: a longer and then a shorter value.
            const a = random(5000), c = random(17);
            yield* s.put("over", a);
            yield* s.put("over", c);
            assert.deepEqual(yield* s.get("over"), c);
            assert.equal(yield* s.delete("over"), true);
            assert.equal(yield* s.delete("over"), false);
            assert.equal(yield* s.get("over"), undefined);
          }));
        // Reopened (another connection / handle / process would see the same): values persist.
        const again = await withStore(url, (s) => s.get("size-2"));
        assert.equal(sha(again!), sha(values[2]));
      });
    },
    { ignore: b.skip !== undefined },
  );

  test(
    `${b.name}: damaged, partial, foreign or misfiled entries are refused as corrupt, never returned`,
    async () => {
      await b.with(async (url, raw) => {
        const v = random(64 * 1024 + 3);
        await withStore(url, (s) => Effect.all([s.put("victim", v), s.put("other", random(100))]));
        const good = await raw.get("victim");
        const damage = async (bytes: Uint8Array, re: RegExp) => {
          await raw.set("victim", bytes);
          await opFailure(url, (s) => s.get("victim"), "corrupt", re);
        };
        for (const at of [3, 20, 30, 1000, good.length >> 1, good.length - 40, good.length - 1]) {
          const d = good.slice();
          d[at] ^= 0x01;
          await damage(d, /bad magic|SHA-256|cut short|trailing|shorter/);
        }
        await damage(good.subarray(0, good.length >> 1), /cut short/);
        await damage(good.subarray(0, good.length - 1), /cut short/);
        await damage(good.subarray(0, 20), /shorter than an entry/);
        await damage(new Uint8Array([...good, 7]), /trailing/);
        await damage(new TextEncoder().encode("hello, not an entry of ours: ".repeat(4)), /bad magic/);
        await damage(await raw.get("other"), /stored under key "other", not "victim"/);
        // The store keeps working: the damaged entry is replaced by a put.
        await raw.set("victim", good);
        assert.equal(sha((await withStore(url, (s) => s.get("victim")))!), sha(v));
      });
    },
    { ignore: b.skip !== undefined },
  );

  test(`${b.name}: bad keys, a value beyond maxValueBytes, use after close`, async () => {
    await b.with(async (url) => {
      for (const key of ["", "../etc/passwd", ".tmp-x", "a/b", "x".repeat(201)]) {
        await opFailure(url, (s) => s.put(key, random(1)), "bad-key", /not a store key/);
        await opFailure(url, (s) => s.get(key), "bad-key");
      }
      await opFailure(
        url,
        (s) => s.put("big", random(1001)),
        "too-large",
        /1001 bytes, beyond this store's 1000/,
        {
          maxValueBytes: 1000,
        },
      );
      await withStore(url, (s) => s.put("fits", random(1000)), { maxValueBytes: 1000 });
      // A store leaked out of its scope is closed: every operation fails with "closed".
      const leaked = await Effect.runPromise(Effect.scoped(openKvStore(url)));
      const err = await failure(leaked.get("fits"), "closed", /after it was closed/);
      assert.match(err.hint, /scope/);
      await Effect.runPromise(leaked.close()); // idempotent
    });
  }, { ignore: b.skip !== undefined });
}

// ------------------------------------------------------------------------------------------------ killed writer

const WRITER = new URL("./testdata/kill_writer.ts", import.meta.url).pathname;

/** Lines of a byte stream. */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  const decoder = new TextDecoder();
  for await (const chunk of stream) {
    buf += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, nl);
      buf = buf.slice(nl + 1);
    }
  }
}

/**
 * Kill a writer process (SIGKILL) while it writes its second 64 MiB value, at a fraction of its first write's
 * duration into the write; then a reader must get the first value or the second, whole. Returns how many
 * kills left the first value (the kill landed before the write took effect).
 */
const killedWriter = async (
  url: string,
  fractions: readonly number[],
  after?: () => void,
): Promise<number> => {
  const key = "killed-writer";
  await withStore(url, (s) => s.put(key, patternBytes(MiB, 1000)));
  let old = 0;
  for (const f of fractions) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", WRITER, url, key, "64"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const shas = new Map<number, string>();
    let firstMs = -1;
    let killed = false;
    try {
      for await (const line of lines(child.stdout)) {
        const [what, i, x] = line.split(" ");
        if (what === "done" && i === "1") firstMs = Number(x);
        if (what !== "write") continue;
        shas.set(Number(i), x);
        if (i === "2") {
          await sleep(f * firstMs);
          child.kill("SIGKILL");
          killed = true;
          break;
        }
      }
    } finally {
      if (!killed) child.kill("SIGKILL");
      const status = await child.status;
      const err = await stderr;
      assert.ok(killed, `the writer ended before its second write (status ${status.code}): ${err}`);
      assert.equal(status.signal, "SIGKILL");
    }
    const got = await withStore(url, (s) => s.get(key));
    if (got === undefined) throw new Error("the entry is gone");
    const h = sha(got);
    assert.ok(
      h === shas.get(1) || h === shas.get(2),
      `fraction ${f}: a value neither writer value (${got.length} B)`,
    );
    if (h === shas.get(1)) old++;
    console.log(
      `  killed ${f * firstMs | 0} ms into a write (the first took ${firstMs} ms): read the ${
        h === shas.get(1) ? "old" : "new"
      } value, whole`,
    );
    after?.();
  }
  return old;
};

test("file: a writer killed mid-put leaves the old value or the new one, whole; its temp file is swept", async () => {
  await withTemp(async (dir) => {
    const store = join(dir, "kv");
    let leftovers = 0;
    const old = await killedWriter(`file://${store}`, [0.05, 0.3, 0.6], () => {
      leftovers += readdirSync(store).filter((n) => n.startsWith(".tmp-")).length;
    });
    assert.ok(
      old >= 1 && leftovers >= 1,
      `no kill landed during a write (old ${old}, temp files ${leftovers})`,
    );
    // Opening the store removes temporary files older than staleTempMs (here: all of them).
    await withStore(`file://${store}`, () => Effect.void, { staleTempMs: 0 });
    assert.deepEqual(readdirSync(store).filter((n) => n.startsWith(".tmp-")), []);
  });
});

test("sqlite: a writer killed mid-transaction leaves the old value or the new one, whole", async () => {
  await withTemp(async (dir) => {
    const old = await killedWriter(`sqlite://${join(dir, "kv.db")}`, [0.05, 0.3, 0.6]);
    assert.ok(old >= 1, "no kill landed during a write");
  });
});

test(
  "redis: a writer killed mid-SET leaves the old value or the new one; a raw partial envelope is refused",
  async () => {
    await withRedisServer(async (s) => {
      const url = `${s.url}/1`;
      const old = await killedWriter(url, [0.05, 0.3]);
      assert.ok(old >= 1, "no kill landed during a write");
      // What a torn write would leave, had one been possible: the first half of a real envelope.
      const entry = encodeKvEntry("torn", random(MiB));
      await withRawRedis(
        url,
        (c) => c.set("longctx:kv:torn", Buffer.from(entry.subarray(0, entry.length >> 1))),
      );
      await opFailure(
        url,
        (st) => st.get("torn"),
        "corrupt",
        /cut short/,
      );
    });
  },
  { ignore: redisSkipReason !== undefined },
);

// ------------------------------------------------------------------------------------------------ bad URLs

test("bad URLs: unknown scheme, no scheme, relative or hosted paths, bad port or db → bad-url with a hint", async () => {
  const cases: [string, RegExp][] = [
    ["ftp://example/x", /unknown KV store scheme "ftp:"/],
    ["/tmp/kv", /no scheme/],
    ["kv", /no scheme/],
    ["", /empty/],
    ["file://relative/dir", /absolute path/],
    ["file:relative/dir", /absolute path/],
    ["file:///tmp/kv?x=1", /no query/],
    ["sqlite://kv.db", /absolute path/],
    ["sqlite:kv.db", /absolute path/],
    ["sqlite:///", /no database file/],
    ["redis://127.0.0.1:99999", /port|not a valid URL/],
    ["redis://127.0.0.1:6379/abc", /not a Redis database number/],
    ["redis:///0", /no host/],
  ];
  for (const [url, re] of cases) {
    const err = await failure(openKvStore(url), "bad-url", re);
    assert.ok(!/undefined/.test(err.hint), err.hint);
  }
  assert.throws(() => parseKvStoreUrl("mysql://x"), KvStoreError);
  assert.deepEqual(parseKvStoreUrl("file:///tmp/a%20b/"), { backend: "file", path: "/tmp/a b" });
  assert.deepEqual(parseKvStoreUrl("sqlite://localhost/tmp/kv.db"), {
    backend: "sqlite",
    path: "/tmp/kv.db",
  });
  assert.deepEqual(parseKvStoreUrl("redis://:secret@127.0.0.1/2"), {
    backend: "redis",
    url: "redis://:secret@127.0.0.1/2",
    host: "127.0.0.1",
    port: 6379,
    db: 2,
    tls: false,
  });
  // The password never shows in messages.
  const e = await failure(openKvStore("redis://:hunter2@127.0.0.1:1/x"), "bad-url");
  assert.ok(!e.message.includes("hunter2"), e.message);
});

test("bad stores: a file where the folder should be, a non-database, a foreign database", async () => {
  await withTemp(async (dir) => {
    writeFileSync(join(dir, "plain"), "not a folder");
    await failure(openKvStore(`file://${join(dir, "plain")}`), "io", /not a folder|ENOTDIR|EEXIST/);
    await failure(openKvStore(`file://${join(dir, "plain", "sub")}`), "io");
    writeFileSync(join(dir, "junk.db"), "x".repeat(4096));
    const junk = await failure(openKvStore(`sqlite://${join(dir, "junk.db")}`), "corrupt", /not a database/);
    assert.match(junk.hint, /not an intact SQLite database/);
    const foreign = new DatabaseSync(join(dir, "foreign.db"));
    foreign.exec("CREATE TABLE t (x)");
    foreign.close();
    await failure(openKvStore(`sqlite://${join(dir, "foreign.db")}`), "bad-url", /another application/);
    // A new database in a folder that does not exist yet is created, folders and all.
    await withStore(`sqlite://${join(dir, "a", "b", "kv.db")}`, (s) => s.put("k", random(3)));
    assert.ok(existsSync(join(dir, "a", "b", "kv.db")));
  });
});

test("redis: a refused port and a server that never answers fail as unreachable, within the connect timeout", async () => {
  const port = await freePort(); // nothing listens there
  let t0 = Date.now();
  const refused = await failure(
    openKvStore(`redis://127.0.0.1:${port}`),
    "unreachable",
    /ECONNREFUSED|refused/,
  );
  assert.match(refused.hint, /start redis-server/);
  assert.ok(Date.now() - t0 < 3000, `refused after ${Date.now() - t0} ms`);
  // A TCP server that accepts and never answers: the handshake must time out.
  const sockets: Socket[] = [];
  const silent = createServer((s) => void sockets.push(s));
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
  const addr = silent.address();
  const silentPort = typeof addr === "object" && addr ? addr.port : 0;
  try {
    t0 = Date.now();
    await failure(
      openKvStore(`redis://127.0.0.1:${silentPort}`, { connectTimeoutMs: 400 }),
      "unreachable",
      /no answer/,
    );
    const ms = Date.now() - t0;
    assert.ok(ms >= 350 && ms < 3000, `gave up after ${ms} ms`);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((r) => silent.close(r));
  }
});

test(
  "redis: a server that refuses a value (proto-max-bulk-len) gives too-large; the store stays usable",
  async () => {
    await withRedisServer(async (s) => {
      const small = random(1000);
      await withStore(s.url, (st) =>
        Effect.gen(function* () {
          const e = yield* Effect.orDie(Effect.flip(st.put("big", random(2 * MiB))));
          assert.equal(e.reason, "too-large", e.message);
          assert.match(e.message, /refused the value/);
          // The server drops the connection after that error; the next command waits for the reconnection.
          yield* st.put("small", small);
          assert.deepEqual(yield* st.get("small"), small);
        }));
    }, ["--proto-max-bulk-len", "1mb"]);
  },
  { ignore: redisSkipReason !== undefined },
);

test(
  "redis: an open store whose server stops fails its next operation as unreachable, without hanging",
  async () => {
    const scope = await Effect.runPromise(Scope.make());
    try {
      let store: KvStore | undefined;
      await withRedisServer(async (s) => {
        store = await Effect.runPromise(
          Scope.provide(scope)(openKvStore(s.url, { timeoutMs: 3000, connectTimeoutMs: 1000 })),
        );
        await Effect.runPromise(store.put("k", random(10)));
      });
      const t0 = Date.now();
      await failure(store!.get("k"), "unreachable");
      assert.ok(Date.now() - t0 < 5000, `failed after ${Date.now() - t0} ms`);
    } finally {
      await Effect.runPromise(Scope.close(scope, Exit.void));
    }
  },
  { ignore: redisSkipReason !== undefined },
);
