/**
 * End-to-end tests of the `run` CLI (`runtime/src/cli/run.ts`), spawned as a subprocess: every bad input gives
 * one `error: … — fix: …` line and exit 1 (a stack trace only with `--verbose`); a document longer than the
 * context fails without `--truncate`; one happy path (SALE against dense on a bundled document with a planted
 * passphrase) writes a consistent JSON report and an SVG chart. Its context (768 tokens) is long enough that
 * SALE's forced blocks (sink + 128-token local window) are only ~36 % of the causal blocks, so the test fails
 * when the estimator is broken: keeping every block (density → 1) or none (density → the forced share), or
 * keeping the wrong ones (fidelity bounds). At 256 tokens the forced blocks were 80 % and nothing could fail.
 * Needs the assets of `npm run setup` (model and documents in `.cache/`). About 40 s on 2 cores.
 */
import { readdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { Schema } from "effect";
import { RunReport } from "../../runtime/src/cli/run/report.ts";
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
    "768",
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
  // the report is what its versioned schema (docs/schemas/run-report.schema.json) says, strictly
  const decoded = Schema.decodeUnknownSync(RunReport)(rep, { onExcessProperty: "error" });
  assert.equal(decoded.version, 1);
  assert.equal(decoded.compared, true);
  assert.ok(["end-of-turn", "end-of-line", "max-new"].includes(decoded.pipelineRun.answerStop));
  assert.ok(rep.promptTokens <= 768 - 8 && rep.promptTokens > 700, `prompt tokens ${rep.promptTokens}`);
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
  // The estimator must do work: SALE defaults (blocks 64×32, window 128 = 4 key blocks, 1 sink block).
  const qBlocks = Math.ceil(rep.promptTokens / 64);
  let causal = 0, forced = 0;
  for (let r = 0; r < qBlocks; r++) {
    const nMax = Math.ceil(Math.min(rep.promptTokens, (r + 1) * 64) / 32);
    causal += nMax;
    forced += Math.min(nMax, 1 + 4);
  }
  const forcedShare = forced / causal;
  assert.ok(forcedShare < 0.4, `forced share ${forcedShare}: the context is too short to test the estimator`);
  assert.ok(
    rep.density > forcedShare + 0.1,
    `density ${rep.density} ≈ forced share ${forcedShare}: nothing selected`,
  );
  assert.ok(rep.density < 0.97, `density ${rep.density}: the estimator kept (almost) every block`);
  assert.ok(rep.layers.some((l: { density: number }) => l.density < 0.9), "no layer is sparse");
  assert.ok(Number.isFinite(rep.perplexity.dense) && rep.perplexity.dense > 1);
  assert.ok(Math.abs(rep.perplexityChangePct) < 1, `ppl change ${rep.perplexityChangePct} %`);
  assert.ok(
    rep.kl.meanNats >= 0 && rep.kl.meanNats < 1e-3 && rep.kl.maxNats >= rep.kl.meanNats,
    `KL ${rep.kl.meanNats}`,
  );
  assert.ok(rep.top1Agreement >= 0.97 && rep.top1Agreement <= 1, `top-1 ${rep.top1Agreement}`);
  assert.equal(rep.pipelineRun.answerHasPassphrase, true, rep.pipelineRun.answer);
  assert.equal(rep.document.tokensTotalIsLowerBound, true, "--truncate tokenised the whole document");
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

test("run CLI: --kv-store stores the document's KV cache, later runs load it (no prefill) at a level or by the controller; a damaged entry is refused", () => {
  const dir = tempDir();
  const store = `file://${dir}/kv`;
  const args = (json: string, question: string, ...more: string[]) => [
    "--input",
    "alice-in-wonderland",
    "--plant",
    "quartz",
    "--truncate",
    "--context",
    "512",
    "--max-new",
    "8",
    "--backend",
    "cpu",
    "--pipeline",
    "dense",
    "--kv-store",
    store,
    "--question",
    question,
    "--json",
    json,
    ...more,
  ];
  const report = (path: string) =>
    Schema.decodeUnknownSync(RunReport)(JSON.parse(readFileSync(path, "utf8")));
  const r1 = runCli(args(join(dir, "1.json"), "What is the secret passphrase?"));
  assert.equal(r1.code, 0, r1.err);
  const a = report(join(dir, "1.json")).kvStore!;
  assert.equal(a.hit, false);
  assert.ok(a.prefillMs > 0 && a.loadMs === 0 && a.bytes > 0 && a.chunks === Math.ceil(a.fixedTokens / 256));
  // the first run's answer comes from the prefilled cache: the dense answer, exactly
  assert.ok(a.firstTokenKl < 1e-6, `first-token KL ${a.firstTokenKl}`);
  // another question on the same document: every chunk is in the store, loaded and decoded instead of prefilled
  const r2 = runCli(args(join(dir, "2.json"), "Which word is the passphrase?"));
  assert.equal(r2.code, 0, r2.err);
  const b = report(join(dir, "2.json")).kvStore!;
  assert.equal(b.hit, true);
  assert.equal(b.prefillMs, 0);
  assert.equal(b.level, 2);
  // the miss stored levels 1–3; the hit read level 2 only: the miss's level-2 ratio is the hit's
  assert.ok(b.bytes < a.bytes / 2, `read ${b.bytes} of ${a.bytes} stored`);
  assert.ok(Math.abs(b.ratioVsFp16 - a.ratioVsFp16) < 1e-9 && b.ratioVsFp16 > 2, `ratio ${b.ratioVsFp16}`);
  assert.equal(b.fixedTokens, a.fixedTokens);
  // the codec's error, small but not zero (a decoded cache, not the prefilled one)
  assert.ok(b.firstTokenKl > 0 && b.firstTokenKl < 1, `first-token KL ${b.firstTokenKl}`);
  // the loading controller: a fast link sends every chunk at the top level, within the budget
  const r4 = runCli(args(join(dir, "4.json"), "Which word is the passphrase?", "--kv-gbps", "1000"));
  assert.equal(r4.code, 0, r4.err);
  const c = report(join(dir, "4.json")).kvStore!;
  assert.deepEqual(c.controller?.sends, Array.from({ length: a.chunks }, () => "3"));
  assert.ok(c.linkMs > 0 && c.ttftMs >= c.loadMs + c.linkMs && c.recomputeMs === 0 && c.level === 0);
  // ...a link too slow for any level within the budget, under the official rule, sends the text: every chunk
  // recomputed, as dense
  const r5 = runCli(
    args(
      join(dir, "5.json"),
      "Which word is the passphrase?",
      ...["--kv-gbps", "0.001", "--kv-slo", "1", "--kv-fallback", "text"],
    ),
  );
  assert.equal(r5.code, 0, r5.err);
  const t = report(join(dir, "5.json")).kvStore!;
  assert.equal(t.controller?.textChunks, a.chunks);
  assert.ok(t.bytes === 0 && t.linkMs === 0 && t.recomputeMs > 0 && t.decodeMs === 0);
  assert.ok(t.firstTokenKl < 1e-5, `recomputed first-token KL ${t.firstTokenKl}`);
  assert.equal(t.textChunks, a.chunks);
  // an entry gone from the store: its chunk is recomputed and the context stored again
  const stored = () => readdirSync(join(dir, "kv")).filter((f) => f.endsWith(".kv"));
  const lost = stored().find((f) => f.includes("cachegen-l2"))!;
  unlinkSync(join(dir, "kv", lost));
  const r6 = runCli(args(join(dir, "6.json"), "Which word is the passphrase?"));
  assert.equal(r6.code, 0, r6.err);
  const m = report(join(dir, "6.json")).kvStore!;
  assert.ok(m.hit && m.missingChunks === 1 && m.textChunks === 1 && m.storeMs > 0, JSON.stringify(m));
  assert.ok(stored().includes(lost), "the missing entry is stored again");
  // damaged entries: one byte flipped in every stored container (the manifest, the smallest entry, kept) →
  // a one-line typed error, never a decoded cache
  const files = readdirSync(join(dir, "kv")).filter((f) => f.endsWith(".kv")).map((f) => join(dir, "kv", f));
  assert.equal(files.length, 3 * a.chunks + 1);
  const bySize = files.map((f) => ({ f, n: statSync(f).size })).sort((x, y) => x.n - y.n);
  for (const { f } of bySize.slice(1)) {
    const bytes = readFileSync(f);
    bytes[bytes.length >> 1] ^= 0x10;
    writeFileSync(f, bytes);
  }
  const r3 = runCli(args(join(dir, "3.json"), "Which word is the passphrase?"));
  assertOneLineError({ name: "damaged kv entry", args: [], expect: "" }, r3);
  assert.match(r3.err, /SHA-256 mismatch|damaged/);
});
