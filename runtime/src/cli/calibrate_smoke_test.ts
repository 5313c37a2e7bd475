/**
 * The `calibrate` CLI's argument handling, run as a subprocess of the current runtime (Deno or Bun): bad flags
 * and values fail before anything is measured, with one line `error: … — fix: …` and exit code 1, and `--help`
 * shows each flag's default.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { assert, runtimeName, test } from "../../../tests/harness.ts";

const root = new URL("../../../", import.meta.url).pathname;
const cli = join(root, "runtime/src/cli/calibrate.ts");

const calibrate = (...args: string[]) => {
  const argv = runtimeName() === "deno" ? ["run", "-A", cli, ...args] : [cli, ...args];
  const r = spawnSync(process.execPath, argv, {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

test("calibrate CLI: bad flags and values give one line `error: … — fix: …` and exit code 1", () => {
  const cases: [string[], RegExp, RegExp][] = [
    [["--backend", "cpu", "--sizes", "1q"], /--sizes "1q" is not a token count/, /32k/],
    [["--backend", "cpu", "--reps", "0"], /--reps 0 is below 1/, /--reps 1 or more/],
    [["--backend", "cpu", "--reps", "many"], /--reps "many" is not valid/, /calibrate --help/],
    [["--backend", "cpu", "--kv-heads", "0"], /--kv-heads 0 is below 1/, /1 or more/],
    [["--backend", "cpu", "--budget-s", "-1"], /--budget-s -1 is not positive/, /above 0/],
    [["--backend", "cpu", "--knob-values", "a,b"], /--knob-values "a,b" is not a list of numbers/, /0,0\.1/],
    [["--backend", "tpu"], /--backend "tpu" is not valid/, /auto/],
    [["--backend", "cpu", "--phase", "train"], /--phase "train" is not valid/, /decode/],
    [["--backnd", "cpu"], /unknown flag --backnd/, /did you mean --backend\?/],
  ];
  for (const [args, msg, fix] of cases) {
    const r = calibrate(...args);
    assert.equal(r.code, 1, `${args.join(" ")}: ${r.out} ${r.err}`);
    const lines = r.err.trim().split("\n");
    assert.equal(lines.length, 1, `${args.join(" ")}: one line, got ${r.err}`);
    const [what, hint] = lines[0].split(" — fix: ");
    assert.match(what, /^error: /);
    assert.match(what, msg);
    assert.match(hint ?? "", fix);
  }
});

test("calibrate CLI: --help shows the defaults", () => {
  const r = calibrate("--help");
  assert.equal(r.code, 0, r.err);
  for (
    const re of [/--reps .*\(default 3\)/, /--sizes .*\(default 256,512,1k\)/, /--backend .*\(default auto\)/]
  ) {
    assert.match(r.out, re);
  }
});
