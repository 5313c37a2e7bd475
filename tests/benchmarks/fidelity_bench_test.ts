/**
 * `bench fidelity` (benchmarks/fidelity/bench.ts) end to end, tiny: one 2K haystack, one task of each type, the
 * exact reference, the registry's first sparse technique at its middle knob value, and RAG, on the real model
 * (skipped without it), without the recall pass (69 s inside the test suite and 92 s alone at load average 3,
 * on the shared 2-core machine, 1 Dec 2026); rows to a temporary results directory. Checks that every metric row is there with the
 * command, that the numbers are sane (dense's perplexity change is absent, the sparse one's density below 1 and
 * KL positive, accuracies are fractions of the tasks run) and that the route is printed against always-LC and
 * always-RAG. Also: `--help` prints the defaults and unknown or bad arguments are refused before any work.
 * @module
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { TECHNIQUES } from "@longctx/ops";
import { assert, test } from "../harness.ts";
import { haveModel } from "../model/fixture.ts";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const script = path.join(repo, "benchmarks", "fidelity", "bench.ts");
const bench = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, "Deno" in globalThis ? ["run", "-A", script, ...args] : [script, ...args], {
    cwd: repo,
    env: { ...process.env, LONGCTX_NO_RENDER: "1", ...env },
    encoding: "utf8",
    timeout: 300_000,
  });

test("bench fidelity: --help prints the options with defaults; unknown and bad arguments are refused", () => {
  const h = bench(["--help"]);
  assert.equal(h.status, 0, h.stderr);
  assert.match(h.stdout, /--lengths L,L….*\(default 2048,4096\)/);
  for (const t of TECHNIQUES) assert.ok(h.stdout.includes(t.name));
  for (
    const [args, re] of [
      [["--bogus"], /Unknown option '--bogus'.*fix: run with --help/],
      [["--lengths", "100"], /--lengths 100: expected an integer in \[1024, 8192\]/],
      [["--sweep", "some"], /--sweep some.*fix: use --sweep all or --sweep one/],
      [["--techniques", "nope"], /unknown technique "nope".*fix: use some of/],
      [["--chunk", "32", "--overlap", "32"], /overlap 32 must be below the chunk size 32/],
      [["--model", "gpt-9"], /unknown model "gpt-9"/],
    ] as const
  ) {
    const r = bench([...args]);
    assert.equal(r.status, 2, `${args.join(" ")}: exit ${r.status}\n${r.stderr}`);
    assert.match(r.stderr, re);
    assert.match(r.stderr, /^error: .* — fix: /m);
  }
});

test("bench fidelity: a tiny run (2K, one task per type) writes every metric and prints the route", () => {
  const sparse = TECHNIQUES.find((t) => t.sparse)!;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "longctx-fidelity-"));
  try {
    const args = [
      "--lengths",
      "2048",
      "--docs",
      "as-you-like-it",
      "--sweep",
      "one",
      "--per-type",
      "1",
      "--recall-tokens",
      "0",
      "--max-new",
      "12",
      "--techniques",
      sparse.name,
      "--suite",
      "tiny",
    ];
    const t0 = performance.now();
    const r = bench(args, { LONGCTX_RESULTS_DIR: dir });
    const s = (performance.now() - t0) / 1000;
    assert.equal(r.status, 0, `exit ${r.status}\n${r.stderr}`);
    console.log(`tiny bench fidelity: ${s.toFixed(0)} s`);
    const rows = JSON.parse(fs.readFileSync(path.join(dir, "tiny.json"), "utf8")) as {
      metric: string;
      value: number;
      impl?: string;
      command: string;
      params?: Record<string, string | number>;
    }[];
    for (const row of rows) assert.match(row.command, /benchmarks\/fidelity\/bench\.ts --lengths 2048 /);
    const of = (metric: string, impl: string) => rows.filter((x) => x.metric === metric && x.impl === impl);
    const exact = TECHNIQUES.find((t) => !t.sparse)!.name;
    for (const impl of [exact, sparse.name, "rag"]) {
      const acc = of("accuracy", impl);
      assert.deepEqual(acc.map((x) => x.params!.task_type), [
        "single",
        "multi",
        "compare",
        "aggregate",
        "unanswerable",
        "all",
      ]);
      for (const x of acc) assert.equal(x.value, Number(x.params!.correct) / Number(x.params!.tasks));
      assert.equal(of("time_per_task_ms", impl).length, 6);
    }
    assert.equal(of("density", exact)[0].value, 1);
    assert.equal(of("perplexity_change", exact).length, 0);
    const d = of("density", sparse.name)[0].value;
    assert.ok(d > 0 && d < 1, `density ${d}`);
    assert.ok(of("mean_kl", sparse.name)[0].value > 0);
    assert.equal(of("attention_recall", sparse.name).length, 0); // --recall-tokens 0 (the full run measures it)
    assert.ok(Number.isFinite(of("perplexity_change", sparse.name)[0].value));
    const cf = of("context_fraction", "rag")[0].value;
    assert.ok(cf > 0 && cf < 1, `context fraction ${cf}`);
    assert.equal(of("retrieval_hit", "rag").length, 5); // answerable types + all
    assert.equal(rows.filter((x) => x.metric === "route_accuracy").length, 6);
    assert.match(r.stdout, /2048 unanswerable +→ (rag|lc:\S+) +(RAG|LC with)/);
    assert.match(r.stdout, /held out by haystack: route \d+\/5 .* always-LC .* always-RAG \d+\/5/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, { ignore: !haveModel });
