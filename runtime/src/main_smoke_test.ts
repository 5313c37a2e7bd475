/**
 * `runMain` and `failureLine` (runtime/src/main.ts), under Deno and Bun: a typed failure becomes one line with its
 * hint, a defect an "internal failure" line, a success returns its value; a failure sets the exit code to 1.
 */
import process from "node:process";
import { Effect } from "effect";
import { InputError, ShapeError } from "@longctx/graph";
import { PlanError } from "@longctx/plans";
import { failureLine, INTERNAL_FIX, runMain } from "./main.ts";
import { assert, test } from "../../tests/harness.ts";

test("failureLine: typed errors print their hint on one line; anything else is an internal failure", () => {
  assert.equal(
    failureLine(new InputError({ message: '--context "x" is not a token count', hint: "write 8k" })),
    'error: --context "x" is not a token count — fix: write 8k',
  );
  const multi = new ShapeError({ message: 'q: bad shape\n  at ["q"]', hint: "give q\n[heads, seq, d]" });
  assert.equal(failureLine(multi), 'error: q: bad shape at ["q"] — fix: give q [heads, seq, d]');
  const plan = new PlanError({
    reason: "unknown-model",
    message: 'unknown model "x"',
    hint: "see plan --list",
  });
  assert.equal(failureLine(plan), 'error: unknown model "x" — fix: see plan --list');
  assert.equal(failureLine(new TypeError("boom")), `error: internal failure: boom — fix: ${INTERNAL_FIX}`);
  assert.equal(failureLine("text"), `error: internal failure: text — fix: ${INTERNAL_FIX}`);
});

test("runMain: returns the value, or prints one line, sets exit code 1 and returns undefined", async () => {
  const before = process.exitCode;
  try {
    const lines: string[] = [];
    const write = (t: string) => void lines.push(t);
    assert.equal(await runMain(Effect.succeed(42), { write, verbose: false }), 42);
    assert.deepEqual(lines, []);
    assert.equal(process.exitCode ?? 0, before ?? 0);

    const typed = Effect.fail(new InputError({ message: "no input", hint: "pass --input FILE" }));
    assert.equal(await runMain(typed, { write, verbose: false }), undefined);
    assert.deepEqual(lines, ["error: no input — fix: pass --input FILE\n"]);
    assert.equal(process.exitCode, 1);

    process.exitCode = 0;
    lines.length = 0;
    const thrown = () =>
      Effect.sync((): number => {
        throw new RangeError("index 9 of 4");
      });
    assert.equal(await runMain(thrown, { write, verbose: true }), undefined);
    assert.equal(lines[0], `error: internal failure: index 9 of 4 — fix: ${INTERNAL_FIX}\n`);
    assert.match(lines[1], /RangeError: index 9 of 4\n\s+at /, "verbose adds the stack trace");
    assert.equal(process.exitCode, 1);
  } finally {
    process.exitCode = before ?? 0;
  }
});
