/**
 * The rows CLI (`<json rows> | deno run -A benchmarks/lib/results.ts <suite>`) as the device suite uses it: in a
 * repo layout, appending to the default results directory, which re-renders RESULTS.md and the chart.
 * Regression: with a top-level await in the CLI, the re-render's dynamic import of render.ts (which imports
 * results.ts back) never settled and Deno exited with "Top-level await promise never resolved".
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { assert, test } from "../harness.ts";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

/** A throwaway repo holding only what the CLI and the renderer need, sharing this repo's node_modules. */
const scratchRepo = (): string => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "longctx-cli-"));
  for (
    const f of [
      "benchmarks/lib/results.ts",
      "benchmarks/render.ts",
      "benchmarks/charts/latency.ts",
      "benchmarks/charts/fidelity.ts",
    ]
  ) {
    fs.mkdirSync(path.join(root, path.dirname(f)), { recursive: true });
    fs.copyFileSync(path.join(repo, f), path.join(root, f));
  }
  fs.mkdirSync(path.join(root, "benchmarks", "results"));
  fs.copyFileSync(path.join(repo, "package.json"), path.join(root, "package.json"));
  fs.writeFileSync(path.join(root, "deno.json"), JSON.stringify({ nodeModulesDir: "manual" }));
  fs.symlinkSync(path.join(repo, "node_modules"), path.join(root, "node_modules"), "dir");
  return root;
};

const cliEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (
    const k of ["LONGCTX_RESULTS_DIR", "LONGCTX_RESULTS_MIRROR", "LONGCTX_NO_RENDER", "LONGCTX_BENCH_RUN"]
  ) {
    delete env[k];
  }
  return { ...env, LONGCTX_COMMIT: "abc1234", LONGCTX_GPU: "Test GPU", LONGCTX_DRIVER: "test-driver 1.0" };
};

test("results CLI: appends rows from stdin and re-renders RESULTS.md in the default directory", () => {
  const root = scratchRepo();
  try {
    const script = path.join(root, "benchmarks", "lib", "results.ts");
    const args = "Deno" in globalThis ? ["run", "-A", script, "unit"] : [script, "unit"];
    const rows = [
      { metric: "latency_ms", value: 2.5, unit: "ms", backend: "wgpu", context: 1024, command: "x --y" },
      { metric: "latency_ms", value: 9.5, unit: "ms", backend: "wgpu", context: 2048, command: "x --y" },
    ];
    const r = spawnSync(process.execPath, args, {
      cwd: root,
      env: cliEnv(),
      input: JSON.stringify(rows),
      encoding: "utf8",
      timeout: 120_000,
    });
    assert.equal(r.status, 0, `exit ${r.status} ${r.signal ?? ""}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    const stored = JSON.parse(fs.readFileSync(path.join(root, "benchmarks", "results", "unit.json"), "utf8"));
    assert.equal(stored.length, 2);
    assert.equal(stored[1].value, 9.5);
    assert.equal(stored[0].commit, "abc1234");
    assert.equal(stored[0].gpu, "Test GPU");
    const md = fs.readFileSync(path.join(root, "benchmarks", "RESULTS.md"), "utf8");
    assert.match(md, /## Suite `unit`/);
    assert.match(md, /9\.5/);
    assert.ok(fs.statSync(path.join(root, "benchmarks", "charts", "latency.svg")).size > 0);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test("results CLI: a row without a command is refused (exit 2), nothing written", () => {
  const root = scratchRepo();
  try {
    const script = path.join(root, "benchmarks", "lib", "results.ts");
    const args = "Deno" in globalThis ? ["run", "-A", script, "unit"] : [script, "unit"];
    const env = cliEnv();
    delete env.LONGCTX_BENCH_COMMAND;
    const r = spawnSync(process.execPath, args, {
      cwd: root,
      env,
      input: JSON.stringify([{ metric: "m", value: 1, unit: "ms", backend: "cpu" }]),
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(r.status, 1, r.stderr);
    assert.match(
      r.stderr.trim(),
      /^error: row 0 has no "command" — fix: set it in the row or LONGCTX_BENCH_COMMAND$/,
    );
    assert.equal(fs.existsSync(path.join(root, "benchmarks", "results", "unit.json")), false);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
