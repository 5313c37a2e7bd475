/**
 * The installer (`install.ts`) and the cache locations it fills (`paths.ts`), without the network: a local
 * PEP 691 index serves what a registry might, the pins decide. The real downloads run in
 * `tests/e2e/own_project_test.ts`.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { Effect } from "effect";
import { assert, test } from "../../tests/harness.ts";
import { DOCS_PIN, installAssets, sha256Hex } from "./install.ts";
import { cacheDir, inClone, repoRoot, userCacheDir } from "./paths.ts";

const withEnv = <A>(vars: Record<string, string | undefined>, f: () => A): A => {
  const old = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) v === undefined ? delete process.env[k] : (process.env[k] = v);
  try {
    return f();
  } finally {
    for (const [k, v] of Object.entries(old)) v === undefined ? delete process.env[k] : (process.env[k] = v);
  }
};

test("userCacheDir: XDG_CACHE_HOME/longctx, ~/.cache/longctx when unset or relative", () => {
  assert.equal(withEnv({ XDG_CACHE_HOME: "/x/cache" }, userCacheDir), "/x/cache/longctx");
  assert.equal(withEnv({ XDG_CACHE_HOME: undefined }, userCacheDir), join(homedir(), ".cache", "longctx"));
  assert.equal(withEnv({ XDG_CACHE_HOME: "rel/dir" }, userCacheDir), join(homedir(), ".cache", "longctx"));
});

test("cacheDir: LONGCTX_CACHE first; in a clone <repo>/.cache, not the user cache", () => {
  assert.ok(inClone(), "this test runs from a clone");
  assert.equal(withEnv({ LONGCTX_CACHE: "/c", XDG_CACHE_HOME: "/x" }, cacheDir), "/c");
  assert.equal(
    withEnv({ LONGCTX_CACHE: undefined, XDG_CACHE_HOME: "/x" }, cacheDir),
    join(repoRoot(), ".cache"),
  );
});

/** A local simple index for project `brotli` listing the docs' sdist with `listed` as its sha256, serving `body`. */
const fakePypi = async (listed: string, body: Uint8Array): Promise<{ server: Server; url: string }> => {
  const server = createServer((req, res) => {
    if (req.url === "/simple/brotli/") {
      res.writeHead(200, { "content-type": "application/vnd.pypi.simple.v1+json" });
      res.end(JSON.stringify({
        files: [{ filename: DOCS_PIN.sdist.file, url: "/files/sdist", hashes: { sha256: listed } }],
      }));
    } else if (req.url === "/files/sdist") res.writeHead(200).end(body);
    else res.writeHead(404).end();
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/simple` };
};

const installDocs = (url: string, cache: string) =>
  Effect.runPromise(Effect.flip(installAssets({ assets: ["docs"], cache, pypiSimple: url, log: () => {} })));

test("install: a download whose bytes are not the pinned ones is a checksum InstallError; nothing is left", async () => {
  const body = new TextEncoder().encode("not the brotli sdist");
  const { server, url } = await fakePypi(DOCS_PIN.sdist.sha256, body);
  const cache = mkdtempSync(join(tmpdir(), "longctx-install-"));
  try {
    const e = await installDocs(url, cache);
    assert.equal(e._tag, "InstallError");
    assert.equal(e.reason, "checksum");
    assert.equal(e.asset, "docs");
    assert.ok(e.message.includes(sha256Hex(body)) && e.message.includes(DOCS_PIN.sdist.sha256), e.message);
    assert.ok(!existsSync(join(cache, "docs")), "no docs folder");
    assert.deepEqual(readdirSync(cache), [], "no staging folder left");
  } finally {
    await new Promise((ok) => server.close(ok));
    rmSync(cache, { recursive: true, force: true });
  }
});

test("install: an index listing another sha256 than the pin is refused before downloading", async () => {
  const { server, url } = await fakePypi("0".repeat(64), new Uint8Array(1));
  const cache = mkdtempSync(join(tmpdir(), "longctx-install-"));
  try {
    const e = await installDocs(url, cache);
    assert.equal(e.reason, "checksum");
    assert.match(e.message, /PyPI lists .* with sha256 0{64}, pinned/);
    const none = await installDocs(url.replace("/simple", "/nothing"), cache);
    assert.equal(none.reason, "network");
  } finally {
    await new Promise((ok) => server.close(ok));
    rmSync(cache, { recursive: true, force: true });
  }
});

test("install: assets already in place with their pinned sha256 are kept without any download", async () => {
  const steps = await Effect.runPromise(
    installAssets({
      cache: join(repoRoot(), ".cache"),
      pypiSimple: "http://127.0.0.1:9/none",
      log: () => {},
    }),
  );
  assert.deepEqual(steps.map((s) => [s.asset, s.status]), [["wgpu", "present"], ["model", "present"], [
    "docs",
    "present",
  ]]);
});
