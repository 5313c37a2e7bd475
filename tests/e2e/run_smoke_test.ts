/**
 * Smoke test of the `run` CLI under the current runtime (Deno or Bun): the bad-input cases (fast, no prefill),
 * and the planner path (`--pipeline auto`) on a tiny context with the JSON report on stdout.
 * Needs the assets of `npm run setup`. About 15 s on 2 cores.
 */
import { assert, test } from "../harness.ts";
import { assertOneLineError, badCases, runCli } from "./run_cli.ts";

test("run CLI smoke: bad inputs are one-line errors with exit 1", () => {
  for (const c of badCases()) assertOneLineError(c, runCli(c.args, c.env));
});

test("run CLI smoke: --pipeline auto asks the planner; --json - prints the report on stdout", () => {
  const r = runCli([
    "--input",
    "as-you-like-it",
    "--truncate",
    "--context",
    "128",
    "--max-new",
    "4",
    "--backend",
    "cpu",
    "--json",
    "-",
  ]);
  assert.equal(r.code, 0, r.err);
  const rep = JSON.parse(r.out);
  assert.equal(rep.pipeline.requested, "auto");
  assert.ok(rep.pipeline.source.startsWith("planner"), rep.pipeline.source);
  assert.ok(rep.promptTokens <= 124, `prompt ${rep.promptTokens}`);
  assert.equal(rep.layers.length, 30);
  assert.ok(Number.isFinite(rep.perplexity.dense) && Number.isFinite(rep.perplexity.pipeline));
  assert.ok(r.err.includes("longctx run"), "the text report goes to stderr with --json -");
});
