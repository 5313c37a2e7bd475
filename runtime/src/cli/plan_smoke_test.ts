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

test("plan CLI: bad input gives one line `error: … — fix: …` and exit code 1", () => {
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
    // invalid invocations: one line too, not the whole help
    [
      ["--model", "llama-3.1-8b", "--context", "8k", "--devic", "h200"],
      /unknown flag --devic/,
      /did you mean --device\?/,
    ],
    [["--bogus"], /unknown flag --bogus/, /plan --help/],
    [
      ["--model", "llama-3.1-8b", "--context", "8k", "--latency-ms", "fast"],
      /--latency-ms "fast"/,
      /finite number/,
    ],
    [["--model", "llama-3.1-8b", "--context", "8k", "--phase", "train"], /--phase "train"/, /prefill/],
  ];
  for (const [args, msg, hint] of cases) {
    const r = plan(...args);
    assert.equal(r.code, 1, `${args.join(" ")}: ${r.out} ${r.err}`);
    const lines = r.err.trim().split("\n");
    assert.equal(lines.length, 1, `${args.join(" ")}: one line, got ${r.err}`);
    assert.equal(r.out, "", `${args.join(" ")}: nothing on stdout`);
    const [what, fix] = lines[0].split(" — fix: ");
    assert.match(what, /^error: /);
    assert.match(what, msg);
    assert.match(fix ?? "", hint);
  }
  const v = plan("--model", "nope", "--context", "8k", "--verbose");
  assert.equal(v.code, 1);
  assert.match(v.err.split("\n")[0], /^error: unknown model "nope" — fix: /);
  assert.ok(v.err.includes("    at "), "--verbose adds the stack trace");
});

test("plan CLI: --help shows every flag's default and exits 0", () => {
  const r = plan("--help");
  assert.equal(r.code, 0, r.err);
  for (
    const re of [
      /--phase .*\(default prefill\)/,
      /--device .*\(default h200/,
      /--dtype .*\(default: f32 when/,
    ]
  ) {
    assert.match(r.out, re);
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
