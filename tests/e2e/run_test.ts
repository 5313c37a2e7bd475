/**
 * End-to-end tests of the `run` CLI (`runtime/src/cli/run.ts`), spawned as a subprocess: every bad input gives
 * one `error: … — fix: …` line and exit 1 (a stack trace only with `--verbose`); a document longer than the
 * context fails without `--truncate`; one happy path with a tiny context (SALE against dense on a bundled
 * document with a planted passphrase) writes a consistent JSON report and an SVG chart.
 * Needs the assets of `npm run setup` (model and documents in `.cache/`). About 40 s on 2 cores.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { assert, test } from "../harness.ts";
import { assertOneLineError, badCases, runCli, tempDir } from "./run_cli.ts";

test("run CLI: each bad input is a one-line error with a fix and exit 1", () => {
  for (const c of badCases()) assertOneLineError(c, runCli(c.args, c.env));
});

test("run CLI: a document beyond the context fails without --truncate", () => {
  const c = {
    name: "over-long document",
    args: ["--input", "alice-in-wonderland", "--context", "512"],
    expect: "pass --truncate",
  };
  assertOneLineError(c, runCli(c.args));
});

test("run CLI: --verbose adds the stack trace", () => {
  const dir = tempDir();
  const r = runCli(["--input", "alice-in-wonderland", "--truncate", "--context", "256", "--verbose"], {
    LONGCTX_MODEL: join(dir, "nope.gguf"),
  });
  assert.equal(r.code, 1);
  const lines = r.err.split("\n").filter((l) => l.trim() !== "");
  assert.match(lines[0], /^error: cannot load the model/);
  assert.ok(lines.length > 1, `expected a stack after the error line, got:\n${r.err}`);
});

test("run CLI: happy path, SALE against dense with a planted passphrase, JSON and chart", () => {
  const dir = tempDir();
  const json = join(dir, "report.json");
  const svg = join(dir, "layers.svg");
  const r = runCli([
    "--input",
    "alice-in-wonderland",
    "--plant",
    "periwinkle",
    "--truncate",
    "--context",
    "256",
    "--max-new",
    "8",
    "--pipeline",
    "sale",
    "--backend",
    "cpu",
    "--json",
    json,
    "--chart",
    svg,
  ]);
  assert.equal(r.code, 0, r.err);
  for (
    const key of ["prefill", "speedup", "density", "perplexity", "KL(dense ‖ pipeline)", "top-1 agreement"]
  ) {
    assert.ok(r.out.includes(key), `report lacks "${key}":\n${r.out}`);
  }
  assert.ok(r.out.includes('planted   "The secret passphrase is periwinkle."'), r.out);
  const rep = JSON.parse(readFileSync(json, "utf8"));
  assert.ok(rep.promptTokens <= 256 - 8 && rep.promptTokens > 200, `prompt tokens ${rep.promptTokens}`);
  assert.equal(rep.document.truncated, true);
  assert.ok(
    rep.document.planted.tokenPosition > 0 && rep.document.planted.tokenPosition < rep.document.tokensUsed,
  );
  assert.equal(rep.backend.selected.startsWith("cpu"), true, rep.backend.selected);
  assert.equal(rep.layers.length, 30);
  for (const l of rep.layers) {
    assert.equal(l.pipeline, "sale");
    assert.ok(l.density > 0 && l.density <= 1, `layer ${l.layer} density ${l.density}`);
    assert.ok(l.outRelErr >= 0 && l.outRelErr < 0.05, `layer ${l.layer} error ${l.outRelErr}`);
  }
  assert.ok(Number.isFinite(rep.perplexity.dense) && rep.perplexity.dense > 1);
  assert.ok(Math.abs(rep.perplexityChangePct) < 5, `ppl change ${rep.perplexityChangePct} %`);
  assert.ok(rep.kl.meanNats >= 0 && rep.kl.maxNats >= rep.kl.meanNats);
  assert.ok(rep.top1Agreement >= 0.9 && rep.top1Agreement <= 1);
  assert.ok(rep.dense.answerTokens > 0 && rep.dense.answer.length > 0);
  assert.ok(rep.phasesMs.prefillDense > 0 && rep.phasesMs.prefillPipeline > 0);
  const chart = readFileSync(svg, "utf8");
  assert.ok(chart.startsWith("<svg") && chart.includes("density"), "chart is not an SVG with a density axis");
});

test("run CLI: --backend wgpu runs the graph forward on that device; same answers and metrics as the cpu backend", () => {
  const dir = tempDir();
  const report = (backend: string) => {
    const json = join(dir, `${backend}.json`);
    const r = runCli([
      "--input",
      "alice-in-wonderland",
      "--plant",
      "periwinkle",
      "--truncate",
      "--context",
      "160",
      "--max-new",
      "6",
      "--pipeline",
      "dense",
      "--backend",
      backend,
      "--json",
      json,
    ]);
    assert.equal(r.code, 0, r.err);
    return JSON.parse(readFileSync(json, "utf8"));
  };
  const gpu = report("wgpu");
  if (!gpu.backend.selected.startsWith("wgpu")) {
    console.log(`skipped: no wgpu adapter (${gpu.backend.selected})`);
    return;
  }
  const cpu = report("cpu");
  assert.ok(gpu.backend.compute.startsWith("wgpu: graph forward on"), gpu.backend.compute);
  assert.ok(cpu.backend.compute.startsWith("cpu: graph forward on the cpu backend"), cpu.backend.compute);
  assert.equal(gpu.dense.answer, cpu.dense.answer);
  // Perplexity over the document tokens from all-position logits of each device: equal to f32 rounding.
  const rel = Math.abs(gpu.perplexity.dense / cpu.perplexity.dense - 1);
  console.log(
    `  perplexity wgpu ${gpu.perplexity.dense} vs cpu ${cpu.perplexity.dense} (relative ${
      rel.toExponential(2)
    })`,
  );
  assert.ok(rel < 1e-4, `perplexity wgpu ${gpu.perplexity.dense} vs cpu ${cpu.perplexity.dense}`);
});
