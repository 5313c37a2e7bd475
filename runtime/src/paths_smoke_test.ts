/**
 * `paths.ts` under Deno and Bun: defaults, environment overrides, the documents manifest and its typed errors,
 * and (when setup has run) the installed documents against their recorded sha256 and size.
 * Run: deno test -A runtime/src/paths_smoke_test.ts ; bun test runtime/src/paths_smoke_test.ts
 */
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { Effect } from "effect";
import { assert, test } from "../../tests/harness.ts";
import {
  cacheDir,
  docsDir,
  listDocuments,
  modelPath,
  readDocument,
  repoRoot,
  wgpuHeadersDir,
  wgpuLibPath,
} from "./paths.ts";

const VARS = ["LONGCTX_CACHE", "LONGCTX_WGPU_LIB", "LONGCTX_WGPU_HEADERS", "LONGCTX_MODEL", "LONGCTX_DOCS"];

/** Run `fn` with the given LONGCTX_* variables set (others unset), then restore the environment. */
const withEnv = async (vars: Record<string, string>, fn: () => void | Promise<void>): Promise<void> => {
  const saved = VARS.map((k) => [k, process.env[k]] as const);
  for (const k of VARS) delete process.env[k];
  Object.assign(process.env, vars);
  try {
    await fn();
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
};

const sha256 = (bytes: Uint8Array | string): string => createHash("sha256").update(bytes).digest("hex");

test("paths: defaults live under <repo>/.cache", async () => {
  await withEnv({}, () => {
    const root = repoRoot();
    assert.ok(existsSync(join(root, "deno.json")) && existsSync(join(root, "package.json")), root);
    assert.equal(cacheDir(), join(root, ".cache"));
    assert.equal(wgpuLibPath(), join(root, ".cache", "wgpu", "libwgpu_native.so"));
    assert.equal(wgpuHeadersDir(), join(root, ".cache", "wgpu"));
    assert.equal(modelPath(), join(root, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert.equal(docsDir(), join(root, ".cache", "docs"));
  });
});

test("paths: LONGCTX_* overrides, relative ones resolved against the working directory", async () => {
  await withEnv({ LONGCTX_CACHE: "/x/cache" }, () => {
    assert.equal(wgpuLibPath(), "/x/cache/wgpu/libwgpu_native.so");
    assert.equal(modelPath(), "/x/cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert.equal(docsDir(), "/x/cache/docs");
  });
  await withEnv({
    LONGCTX_WGPU_LIB: "/l/libwgpu.so",
    LONGCTX_WGPU_HEADERS: "/h",
    LONGCTX_MODEL: "rel/m.gguf",
    LONGCTX_DOCS: "/d",
  }, () => {
    assert.equal(wgpuLibPath(), "/l/libwgpu.so");
    assert.equal(wgpuHeadersDir(), "/h");
    assert.equal(modelPath(), join(process.cwd(), "rel", "m.gguf"));
    assert.equal(docsDir(), "/d");
  });
  await withEnv({ LONGCTX_MODEL: "" }, () => assert.ok(modelPath().endsWith(".gguf"), "empty means unset"));
});

test("paths: listDocuments/readDocument on a manifest, and their typed errors", async () => {
  const dir = mkdtempSync(join(tmpdir(), "longctx-docs-"));
  try {
    const text = "It was the best of times.\nIt was the worst of times.\n";
    writeFileSync(join(dir, "two-lines.txt"), text);
    const entry = {
      name: "two-lines",
      title: "Two Lines",
      author: "Nobody",
      year: 1859,
      file: "two-lines.txt",
      bytes: text.length,
      sha256: sha256(text),
      licence: "public domain",
      source: {
        registry: "pypi",
        package: "p",
        version: "1",
        file: "p-1.tar.gz",
        fileSha256: "0",
        path: "p-1/t.txt",
        pathSha256: "0",
      },
    };
    writeFileSync(join(dir, "manifest.json"), JSON.stringify({ version: 1, documents: [entry] }));
    await withEnv({ LONGCTX_DOCS: dir }, async () => {
      const docs = await Effect.runPromise(listDocuments());
      assert.equal(docs.length, 1);
      assert.equal(docs[0].path, join(dir, "two-lines.txt"));
      assert.equal(docs[0].licenceNote, "");
      assert.equal(await Effect.runPromise(readDocument("two-lines")), text);
      const unknown = await Effect.runPromise(Effect.flip(readDocument("nope")));
      assert.equal(unknown._tag, "InputError");
      assert.match(unknown.message, /known: two-lines/);
    });

    writeFileSync(
      join(dir, "manifest.json"),
      JSON.stringify({ documents: [{ ...entry, file: "gone.txt" }] }),
    );
    await withEnv({ LONGCTX_DOCS: dir }, async () => {
      const e = await Effect.runPromise(Effect.flip(listDocuments()));
      assert.equal(e._tag, "InputError");
      assert.match(e.message, /gone\.txt is missing/);
    });

    writeFileSync(join(dir, "manifest.json"), JSON.stringify({ documents: [{ ...entry, bytes: "12" }] }));
    await withEnv({ LONGCTX_DOCS: dir }, async () => {
      const e = await Effect.runPromise(Effect.flip(listDocuments()));
      assert.match(e.message, /"bytes" and "year" must be numbers/);
    });

    writeFileSync(join(dir, "manifest.json"), "{ not json");
    await withEnv({ LONGCTX_DOCS: dir }, async () => {
      const e = await Effect.runPromise(Effect.flip(listDocuments()));
      assert.equal(e._tag, "InputError");
      assert.ok(e.hint.includes("npm run setup"));
    });

    rmSync(join(dir, "manifest.json"));
    await withEnv({ LONGCTX_DOCS: dir }, async () => {
      const e = await Effect.runPromise(Effect.flip(listDocuments()));
      assert.match(e.message, /no document manifest/);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("paths: installed documents match their manifest (≥ 40 KB of English each)", async () => {
  const docs = await Effect.runPromise(listDocuments());
  assert.ok(docs.length >= 3, `${docs.length} documents`);
  for (const d of docs) {
    const bytes = readFileSync(d.path);
    assert.equal(bytes.length, d.bytes, d.name);
    assert.equal(sha256(bytes), d.sha256, d.name);
    assert.ok(d.bytes >= 40_000, `${d.name}: ${d.bytes} bytes`);
    const words = new TextDecoder().decode(bytes).match(/\b(the|and|of)\b/gi)?.length ?? 0;
    assert.ok(words > d.bytes / 100, `${d.name} reads as English (${words} of "the/and/of")`);
  }
}, { ignore: !existsSync(join(docsDir(), "manifest.json")) });
