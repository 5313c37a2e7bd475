/**
 * The numbers in RESULTS.md match the JSON rows: for the committed `benchmarks/RESULTS.md` against
 * `benchmarks/results/*.json`, and for a RESULTS.md rendered from the fixture rows (plus a tampered copy,
 * which the checker must reject).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { assert, test } from "../harness.ts";
import { readAllResults, repoRoot } from "../../benchmarks/lib/results.ts";
import { renderMarkdown } from "../../benchmarks/render.ts";
import { checkResultsMd } from "./check_results_md.ts";

const root = repoRoot();
const fixtureDir = path.join(root, "tests", "fixtures", "benchmarks", "results");

test("committed RESULTS.md matches benchmarks/results/*.json", () => {
  const suites = readAllResults(path.join(root, "benchmarks", "results"));
  const rows = [...suites.values()].flat().length;
  const mdFile = path.join(root, "benchmarks", "RESULTS.md");
  if (rows === 0) {
    // Nothing measured yet: a RESULTS.md, if any, must then say so rather than show numbers.
    if (fs.existsSync(mdFile)) assert.match(fs.readFileSync(mdFile, "utf8"), /No results yet/);
    return;
  }
  assert.ok(
    fs.existsSync(mdFile),
    "results exist but benchmarks/RESULTS.md does not: run deno task bench:render",
  );
  const errors = checkResultsMd(fs.readFileSync(mdFile, "utf8"), suites);
  assert.deepEqual(errors, [], "RESULTS.md is stale or wrong: run deno task bench:render");
});

test("fixture RESULTS.md passes the checker, and every fixture row is covered", () => {
  const suites = readAllResults(fixtureDir);
  assert.ok([...suites.values()].flat().length >= 50);
  const md = renderMarkdown(suites, { chartLink: "latency.svg" });
  assert.deepEqual(checkResultsMd(md, suites), []);
});

test("the checker rejects a tampered value, a tampered median and a dropped line", () => {
  const suites = readAllResults(fixtureDir);
  const md = renderMarkdown(suites, { chartLink: "latency.svg" });
  const valueLine = md.split("\n").find((l) => l.startsWith("| copy_tbps |  | wgpu |"))!;
  assert.ok(valueLine.includes("3.9 (r1)"));
  const t1 = md.replace(valueLine, valueLine.replace("3.9 (r1)", "3.95 (r1)"));
  assert.ok(checkResultsMd(t1, suites).some((e) => e.includes("printed value 3.95")));
  const t2 = md.replace(valueLine, valueLine.replace("| 3.861 |", "| 3.87 |"));
  assert.ok(checkResultsMd(t2, suites).some((e) => e.includes("median 3.87")));
  const t3 = md.replace(valueLine + "\n", "");
  assert.ok(checkResultsMd(t3, suites).some((e) => e.includes("appear in no table line")));
  const roofLine = md.split("\n").find((l) => l.startsWith("| sale | latency_ms | 65536 | dense (wgpu)"))!;
  const t4 = md.replace(roofLine, roofLine.replace("| 29.56 |", "| 31.56 |"));
  assert.ok(checkResultsMd(t4, suites).some((e) => e.includes("TFLOP/s 31.56")));
});
