/**
 * The fidelity chart (benchmarks/charts/fidelity.ts): points pool accuracy counts over haystacks, average
 * density and perplexity change, put RAG at its context fraction without a perplexity, and render to an SVG
 * that names every series; RESULTS.md links the chart when the `fidelity` suite has rows.
 * @module
 */
import { assert, test } from "../harness.ts";
import { fidelityPoints, renderFidelitySvg } from "../../benchmarks/charts/fidelity.ts";
import { renderMarkdown } from "../../benchmarks/render.ts";
import type { Row } from "../../benchmarks/lib/results.ts";

const row = (
  metric: string,
  value: number,
  impl: string,
  params: Record<string, string | number> = {},
): Row => ({
  metric,
  value,
  unit: "x",
  context: 2048,
  impl,
  backend: "cpu",
  model: "m",
  params,
  gpu: "none",
  driver: "d",
  date: "2026-12-01T00:00:00Z",
  commit: "abc",
  command: "deno run -A benchmarks/fidelity/bench.ts",
});

const rows: Row[] = [
  row("density", 1, "dense", { haystack: "a" }),
  row("accuracy", 0.5, "dense", { haystack: "a", task_type: "all", tasks: 10, correct: 5 }),
  row("accuracy", 1, "dense", { haystack: "b", task_type: "all", tasks: 2, correct: 2 }),
  row("accuracy", 0, "dense", { haystack: "b", task_type: "single", tasks: 2, correct: 0 }),
  row("density", 0.3, "sale", { haystack: "a", knob_value: 0.3 }),
  row("density", 0.5, "sale", { haystack: "b", knob_value: 0.3 }),
  row("perplexity_change", 2, "sale", { haystack: "a", knob_value: 0.3 }),
  row("perplexity_change", 4, "sale", { haystack: "b", knob_value: 0.3 }),
  row("accuracy", 0.25, "sale", { haystack: "a", knob_value: 0.3, task_type: "all", tasks: 4, correct: 1 }),
  // Another knob value is another point (without a density row: not drawn).
  row("accuracy", 1, "sale", { haystack: "a", knob_value: 1, task_type: "all", tasks: 4, correct: 4 }),
  row("context_fraction", 0.2, "rag", { haystack: "a" }),
  row("accuracy", 0.75, "rag", { haystack: "a", task_type: "all", tasks: 4, correct: 3 }),
];

test("fidelity chart: points pool counts and average density and perplexity change; RAG at its fraction", async () => {
  const p = fidelityPoints(rows);
  const by = (s: string) => p.find((x) => x.series === s)!;
  assert.equal(p.length, 3);
  assert.equal(by("dense @ 2048").accuracy, 7 / 12);
  assert.equal(by("dense @ 2048").pplChange, 0);
  assert.ok(Math.abs(by("sale @ 2048").density - 0.4) < 1e-12);
  assert.equal(by("sale @ 2048").pplChange, 3);
  assert.equal(by("rag @ 2048").density, 0.2);
  assert.equal(by("rag @ 2048").pplChange, undefined);
  const svg = (await renderFidelitySvg(rows))!;
  assert.match(svg, /^<svg/);
  for (const s of ["dense @ 2048", "sale @ 2048", "rag @ 2048"]) assert.ok(svg.includes(s), s);
  assert.equal(await renderFidelitySvg([]), undefined);
  const md = renderMarkdown(new Map([["fidelity", rows]]), { fidelityChartLink: "charts/fidelity.svg" });
  assert.ok(md.includes("![accuracy and perplexity change vs density](charts/fidelity.svg)"));
  assert.ok(!renderMarkdown(new Map([["fidelity", rows]])).includes("fidelity.svg"));
});
