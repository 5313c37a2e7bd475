/** Rendering RESULTS.md and the latency chart from the fixture rows (tests/fixtures/benchmarks). */
import * as path from "node:path";
import { assert, test } from "../harness.ts";
import { readAllResults, repoRoot, type Row } from "../../benchmarks/lib/results.ts";
import { fmt, groupRows, renderMarkdown, stats } from "../../benchmarks/render.ts";
import { latencySpec, renderLatencySvg, selectLatency } from "../../benchmarks/charts/latency.ts";

const suites = readAllResults(path.join(repoRoot(), "tests", "fixtures", "benchmarks", "results"));
const all: Row[] = [...suites.values()].flat();
const md = renderMarkdown(suites, {
  chartLink: "charts/latency.svg",
  source: "tests/fixtures/benchmarks/results/*.json",
});
const lines = md.split("\n");

test("suite tables: expected lines for repeated runs (n, median, min, max, spread, values, command)", () => {
  assert.ok(lines.includes(
    "| copy_tbps |  | wgpu |  | FIXTURE-GPU | 2 | 3.861 | 3.822 | 3.9 | 2.0 % | TB/s | 3.9 (r1), 3.822 (r2) | " +
      "`deno run -A benchmarks/device/backend_bench.ts` |",
  ));
  assert.ok(lines.includes(
    "| latency_ms | 65536 | sdpa-cudnn (torch) | dtype=f16 · model=llama-3.1-8b heads (32/8, d=128) | FIXTURE-GPU | " +
      "2 | 85.03 | 83.77 | 86.28 | 3.0 % | ms | 83.77 (r1), 86.28 (r2) | `python3 benchmarks/device/sdpa_peer.py` |",
  ));
  // single-run line: no spread; a pipe inside a cell is escaped
  assert.ok(
    lines.some((l) =>
      l.startsWith("| op_mean_ms |  | cpu | op=dense.attn · headDim=64 · heads=4 · seq=128 | none | 1 |")
    ),
  );
  assert.ok(
    lines.includes(
      "| none | fixture \\| pipe | fixture | 2026-01-01T00:00:01Z … 2026-01-01T00:00:02Z | micro | 2 |",
    ),
  );
  assert.ok(
    lines.includes("## Suite `sale`") && lines.includes("## Suite `backend`") &&
      lines.includes("## Suite `micro`"),
  );
  assert.ok(lines.includes("Source: `tests/fixtures/benchmarks/results/sale.json` (54 rows)."));
  assert.ok(lines.includes("![latency vs context, log–log](charts/latency.svg)"));
});

test("roofline note: counts, median time, rates and shares of the best measured ceilings", () => {
  // dense at 64K, fixture: flops = 4·32·128·65536²/2, bytes = 2·80·65536·128, times 1173 / 1208 ms (r1 / r2)
  const flops = (4 * 32 * 128 * 65536 * 65536) / 2;
  const t = (1172.8 + 1208) / 2; // exact JSON values
  const tf = flops / (t * 1e-3) / 1e12;
  const line = lines.find((l) => l.startsWith("| sale | latency_ms | 65536 | dense (wgpu) |"))!;
  assert.ok(line, "roofline line for dense 64K");
  const row = all.find((r) => r.impl === "dense" && r.context === 65536 && r.run === 1)!;
  assert.equal(row.value, 1172.8);
  assert.ok(
    line.includes(`| ${fmt(flops)} |`) && line.includes(`| ${fmt(t)} |`) && line.includes(`| ${fmt(tf)} |`),
  );
  // f16 kernel → best matmul_f16_tflops = 80 (run 1); bound = flops / 80e12 s
  assert.ok(line.includes(`| ${(100 * tf / 80).toFixed(1)} % of matmul_f16_tflops |`));
  assert.ok(line.includes(`| ${fmt(flops / 80e12 * 1e3)} (compute) |`));
  assert.ok(lines.includes("| FIXTURE-GPU | copy_tbps | 3.9 | wgpu |"));
  // sdpa rows carry no counts: no roofline line
  assert.ok(!lines.some((l) => l.startsWith("| sale | latency_ms | 65536 | sdpa-flash")));
});

test("groups and stats: rows differing only in run are one group; spread = (max-min)/median", () => {
  const g = groupRows("backend", suites.get("backend")!);
  assert.equal(g.length, 4);
  assert.ok(g.every((x) => x.values.length === 2));
  // params that differ between runs (autotuned kernel) do not split a group; a sweep repeated per run does
  const mm = g.find((x) => x.rows[0].metric === "matmul_f32_tflops")!;
  assert.equal(mm.details, "M=4096 · configsTried=3 / 4 · kernel=tile128x128 / tile64x128");
  const dens = groupRows("sale", suites.get("sale")!).filter((x) => x.rows[0].metric === "density");
  assert.deepEqual(dens.map((x) => x.values), [[0.42, 0.43], [0.34, 0.35]]);
  assert.ok(dens[1].details.endsWith("blockQ=64 · threshold=0.004"));
  const s = stats([1, 2, 4]);
  assert.deepEqual(s, { median: 2, min: 1, max: 4, spread: 1.5 });
  assert.equal(fmt(1234567), "1.235e+6");
  assert.equal(fmt(0.0001234), "1.234e-4");
  assert.equal(fmt(12.3456), "12.35");
});

test("latency chart: four series x five contexts, log-log, SVG rendered headless", async () => {
  const sel = selectLatency(all)!;
  assert.equal(sel.gpu, "FIXTURE-GPU");
  assert.deepEqual([...new Set(sel.points.map((p) => p.series))].sort(), [
    "dense f16",
    "sale f16",
    "sdpa-cudnn f16",
    "sdpa-flash f16",
  ]);
  assert.equal(sel.points.length, 20);
  assert.ok(sel.points.every((p) => p.n === 2 && p.minMs <= p.medianMs && p.medianMs <= p.maxMs));
  const spec = JSON.stringify(latencySpec(sel));
  assert.equal(spec.match(/"type":"log"/g)?.length, 4); // x and y, in both layers
  const svg = (await renderLatencySvg(all))!;
  assert.match(svg, /^<svg[^>]*width="\d+"/);
  for (const label of ["dense f16", "sale f16", "sdpa-flash f16", "sdpa-cudnn f16", "128K", "8K"]) {
    assert.ok(svg.includes(`>${label}<`), `svg has text ${label}`);
  }
  assert.equal(await renderLatencySvg(all.filter((r) => r.metric !== "latency_ms")), undefined);
});

test("latency chart: stages of an implementation (impl-suffix) are not drawn; one model chosen", () => {
  const base = all.find((r) => r.metric === "latency_ms")!;
  const rows: Row[] = [
    ...["ours-sale", "ours-sale-estimation", "ours-dense", "sdpa-flash"].map((impl, i) => ({
      ...base,
      impl,
      dtype: undefined,
      value: 10 + i,
    })),
    { ...base, model: "other model", impl: "x", dtype: undefined },
  ];
  const sel = selectLatency(rows)!;
  assert.equal(sel.model, base.model);
  assert.deepEqual(sel.stages, ["ours-sale-estimation"]);
  assert.deepEqual(sel.points.map((p) => p.series), ["ours-dense", "ours-sale", "sdpa-flash"]);
});

test("no rows: RESULTS.md says so", () => {
  assert.match(renderMarkdown(new Map()), /No results yet/);
});
