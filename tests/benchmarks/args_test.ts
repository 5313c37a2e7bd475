/** The benchmark scripts' flag reader (`benchmarks/lib/args.ts`): defaults, typed values, one typed error per mistake. */
import { InputError } from "@longctx/graph";
import { type FlagSpec, helpText, readFlags } from "../../benchmarks/lib/args.ts";
import { assert, test } from "../harness.ts";

const spec = {
  reps: { kind: "int", default: 5, min: 1, help: "repetitions" },
  "budget-s": { kind: "number", default: 38, help: "budget" },
  contexts: { kind: "list", default: [8192], min: 1, help: "contexts" },
  backend: { kind: "string", default: "wgpu", choices: ["wgpu", "webgpu"], help: "backend" },
  only: { kind: "string", help: "filter" },
  "no-write": { kind: "switch", help: "print only" },
} as const satisfies Readonly<Record<string, FlagSpec>>;

test("benchmark flags: defaults, values in both spellings, --help", () => {
  const d = readFlags(spec, []);
  assert.deepEqual(d.values, {
    reps: 5,
    "budget-s": 38,
    contexts: [8192],
    backend: "wgpu",
    only: undefined,
    "no-write": false,
  });
  const v = readFlags(spec, [
    "--reps",
    "7",
    "--budget-s=2.5",
    "--contexts",
    "1024,2048",
    "--no-write",
    "--only",
    "x",
  ]);
  assert.equal(v.values.reps, 7);
  assert.equal(v.values["budget-s"], 2.5);
  assert.deepEqual(v.values.contexts, [1024, 2048]);
  assert.equal(v.values["no-write"], true);
  assert.equal(v.values.only, "x");
  assert.equal(v.help, false);
  assert.equal(readFlags(spec, ["--help"]).help, true);
  const h = helpText("usage", spec);
  assert.match(h, /--reps <int>\s+repetitions \(default 5\)/);
  assert.match(h, /--backend <string>\s+backend \(one of wgpu, webgpu\) \(default wgpu\)/);
});

test("benchmark flags: every mistake is an InputError naming the flag", () => {
  const cases: [string[], RegExp, RegExp][] = [
    [["--rep", "3"], /unknown flag --rep/, /did you mean --reps\?/],
    [["--reps", "x"], /--reps "x" is not an integer/, /whole number/],
    [["--reps", "2.5"], /--reps "2\.5" is not an integer/, /whole number/],
    [["--reps", "0"], /--reps 0 is below 1/, /1 or more/],
    [["--budget-s", "fast"], /--budget-s "fast" is not a number/, /number/],
    [["--contexts", "1k"], /--contexts "1k" is not a number/, /number/],
    [["--backend", "cuda"], /unknown --backend "cuda"/, /wgpu, webgpu/],
    [["--reps"], /--reps needs a value/, /right after --reps/],
    [["--reps", "--no-write"], /--reps needs a value/, /right after/],
    [["stray"], /unexpected argument "stray"/, /--help/],
  ];
  for (const [argv, msg, hint] of cases) {
    let caught: unknown;
    try {
      readFlags(spec, argv);
    } catch (e) {
      caught = e;
    }
    if (!(caught instanceof InputError)) {
      throw new Error(`${argv.join(" ")}: expected an InputError, got ${caught}`);
    }
    assert.match(caught.message, msg);
    assert.match(caught.hint, hint);
  }
});
