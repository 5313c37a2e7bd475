/**
 * End-to-end tests of the `plan` CLI, run as a subprocess of the current runtime (Deno or Bun): exit
 * codes, one-line errors with hints, JSON and table output, plan files.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { assert, runtimeName, test } from "../../../tests/harness.ts";

const root = new URL("../../../", import.meta.url).pathname;
const cli = join(root, "runtime/src/cli/plan.ts");
const profile = join(root, "plans/testdata/synthetic-profile.json");
const densities = join(root, "plans/testdata/densities.json");

const plan = (...args: string[]) => {
  const argv = runtimeName() === "deno" ? ["run", "-A", cli, ...args] : [cli, ...args];
  const r = spawnSync(process.execPath, argv, {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

test("plan CLI: JSON plan with SALE at 128K, table output, plan file round trip", () => {
  const j = plan(
    "--model",
    "llama-3.1-8b",
    "--context",
    "128k",
    "--json",
    "--profile",
    profile,
    "--densities",
    densities,
  );
  assert.equal(j.code, 0, j.err);
  const p = JSON.parse(j.out);
  assert.equal(p.version, 1);
  assert.equal(p.contextLength, 131072);
  assert.deepEqual(p.groups.map((g: { pipeline: string }) => g.pipeline), ["sale"]);
  const t = plan(
    "--model",
    "llama-3.1-8b",
    "--context",
    "1k",
    "--profile",
    profile,
    "--densities",
    densities,
  );
  assert.equal(t.code, 0, t.err);
  assert.match(t.out, /layers\s+pipeline\s+ms\/layer/);
  assert.match(t.out, /0-31\s+dense/);
  const dir = mkdtempSync(join(tmpdir(), "plan-"));
  const file = join(dir, "plan.json");
  writeFileSync(file, j.out);
  const v = plan("--validate", file);
  assert.equal(v.code, 0, v.err);
  assert.match(v.out, /sale\.sparseAttn/);
});

test("plan CLI: bad input gives one error line, a hint and exit code 1", () => {
  const cases: [string[], RegExp, RegExp][] = [
    [["--model", "lama-3.1-8b", "--context", "8k"], /unknown model/, /did you mean "llama-3\.1-8b"/],
    [["--model", "smollm2-135m", "--context", "16k"], /maximum context of 8192/, /at most 8192/],
    [["--model", "smollm2-135m", "--context", "lots"], /not a token count/, /128k/],
    [
      ["--model", "llama-3.1-8b", "--context", "128k", "--profile", profile, "--latency-ms", "0.5"],
      /no pipeline meets/,
      /at least/,
    ],
    [
      ["--model", "llama-3.1-8b", "--context", "8k", "--profile", profile, "--memory", "1GiB"],
      /GiB budget/,
      /raise the memory budget/,
    ],
    [
      ["--model", "llama-3.1-8b", "--context", "8k", "--device", "nonexistent"],
      /no built-in device profile/,
      /calibrate/,
    ],
    [
      ["--model", "llama-3.1-8b", "--context", "8k", "--profile", densities],
      /malformed device profile/,
      /calibrate/,
    ],
    [["--validate", densities], /malformed plan/, /regenerate/],
  ];
  for (const [args, msg, hint] of cases) {
    const r = plan(...args);
    assert.equal(r.code, 1, `${args.join(" ")}: ${r.out} ${r.err}`);
    const lines = r.err.trim().split("\n");
    assert.match(lines[0], /^error: /);
    assert.match(lines[0], msg);
    assert.match(lines[1], /^hint: /);
    assert.match(lines[1], hint);
    assert.ok(!r.err.includes("    at "), "no stack trace without --verbose");
  }
});

test("plan CLI: with no --device and no --dtype, the built-in profile's measured element type is used", () => {
  const r = plan("--model", "smollm2-135m", "--context", "2k", "--json");
  assert.equal(r.code, 0, r.err);
  const p = JSON.parse(r.out);
  // the built-in default (h200) was calibrated with f16 Q/K/V only
  assert.equal(p.dtype, "f16");
  const f32 = plan("--model", "smollm2-135m", "--context", "2k", "--device", "h200", "--dtype", "f32");
  assert.equal(f32.code, 1);
  assert.match(f32.err, /it measured dense\.attn\.f16: plan with dtype f16/);
});
