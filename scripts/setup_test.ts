/**
 * `scripts/setup.sh` as a user meets it: bad overrides fail at the right step with a why and a what-to-do
 * and leave no temporary files; a run over an installed cache skips and verifies every step.
 * Run: deno test -A scripts/setup_test.ts
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { assert, test } from "../tests/harness.ts";
import { cacheDir, docsDir, modelPath, repoRoot, wgpuLibPath } from "../runtime/src/paths.ts";

/** Run setup.sh with `env` on top of this process's environment, where setup's LONGCTX_* are blanked (= unset). */
const setup = (env: Record<string, string>) => {
  const blank = Object.fromEntries(
    ["LONGCTX_CACHE", "LONGCTX_WGPU_LIB", "LONGCTX_MODEL", "LONGCTX_DOCS", "LONGCTX_PYPI_SIMPLE"].map((
      k,
    ) => [k, ""]),
  );
  const r = spawnSync("bash", [join(repoRoot(), "scripts", "setup.sh")], {
    env: { ...process.env, ...blank, LONGCTX_SKIP_SYSTEM: "1", ...env } as Record<string, string>,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 300_000,
  });
  return { status: r.status, out: r.stdout, err: r.stderr };
};

const withCache = (fn: (cache: string) => void) => {
  const cache = mkdtempSync(join(tmpdir(), "longctx-setup-"));
  try {
    fn(cache);
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
};

const leftovers = (cache: string) => readdirSync(cache).filter((f) => f.startsWith(".tmp."));

test("setup: a bad LONGCTX_WGPU_LIB fails at step 3 with why and what to do", () => {
  withCache((cache) => {
    const r = setup({ LONGCTX_CACHE: cache, LONGCTX_WGPU_LIB: join(cache, "missing.so") });
    assert.equal(r.status, 1, r.out + r.err);
    assert.match(r.err, /FAILED at step 3\/6 wgpu-native/);
    assert.match(r.err, /why: LONGCTX_WGPU_LIB=.*missing\.so is not an existing shared library/);
    assert.match(r.err, /what to do: point LONGCTX_WGPU_LIB at libwgpu_native\.so/);
    assert.match(r.out, /\[setup 1\/6\] npm packages/);
    assert.deepEqual(leftovers(cache), []);
  });
});

const installed = existsSync(wgpuLibPath()) && existsSync(modelPath()) &&
  existsSync(join(docsDir(), "manifest.json"));

test("setup: a bad LONGCTX_MODEL or LONGCTX_DOCS fails at its own step", () => {
  withCache((cache) => {
    const notGguf = join(cache, "model.gguf");
    writeFileSync(notGguf, "this is not a GGUF file");
    const m = setup({ LONGCTX_CACHE: cache, LONGCTX_WGPU_LIB: wgpuLibPath(), LONGCTX_MODEL: notGguf });
    assert.equal(m.status, 1, m.out + m.err);
    assert.match(m.err, /FAILED at step 4\/6 model/);
    assert.match(m.err, /is not an existing GGUF file/);

    const d = setup({
      LONGCTX_CACHE: cache,
      LONGCTX_WGPU_LIB: wgpuLibPath(),
      LONGCTX_MODEL: modelPath(),
      LONGCTX_DOCS: cache,
    });
    assert.equal(d.status, 1, d.out + d.err);
    assert.match(d.err, /FAILED at step 5\/6 documents/);
    assert.match(d.err, /has no manifest\.json/);
    assert.deepEqual(leftovers(cache), []);
  });
}, { ignore: !installed });

const inCache = (...parts: string[]) => existsSync(join(cacheDir(), ...parts));

test("setup: over an installed cache every step is skipped after verification", () => {
  const r = setup({ LONGCTX_CACHE: cacheDir() });
  assert.equal(r.status, 0, r.out + r.err);
  for (let i = 1; i <= 6; i++) assert.match(r.out, new RegExp(`\\[setup ${i}/6\\]`));
  const skips = r.out.split("\n").filter((l) => /^\[setup\] {3}skip/.test(l));
  assert.equal(skips.length, 6, r.out);
  assert.match(r.out, /wgpu-native 29\.0\.1\.1 .* \(sha256 verified\)/);
  assert.match(r.out, /SmolLM2-135M-Instruct\.Q4_1\.gguf already there \(sha256 verified\)/);
  assert.match(r.out, /3 documents already in .* \(sha256 verified\)/);
  assert.doesNotMatch(r.out, /downloading|installed /);
}, {
  ignore: !inCache("wgpu", "libwgpu_native.so") || !inCache("models", "SmolLM2-135M-Instruct.Q4_1.gguf") ||
    !inCache("docs", "manifest.json") || !inCache("mesa25", "lvp_icd.json"),
});
