/**
 * End-to-end tests of the `trace` CLI, run as a subprocess of the current runtime (Deno or Bun): bad input as
 * one line `error: … — fix: …` with exit code 1, and a small real run (given answer, `--json -`, `--html`).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { assert, runtimeName, test } from "../../../tests/harness.ts";
import { haveModel } from "../../../tests/model/fixture.ts";
import { Schema } from "effect";
import { TraceReport } from "./trace_report.ts";

const root = new URL("../../../", import.meta.url).pathname;
const cli = join(root, "runtime/src/cli/trace.ts");

const trace = (...args: string[]) => {
  const argv = runtimeName() === "deno" ? ["run", "-A", cli, ...args] : [cli, ...args];
  const r = spawnSync(process.execPath, argv, {
    cwd: root,
    encoding: "utf8",
    timeout: 300_000,
    env: { ...process.env, NO_COLOR: "1", XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? "/tmp" },
  });
  return { code: r.status, out: r.stdout ?? "", err: r.stderr ?? "" };
};

const dir = mkdtempSync(join(tmpdir(), "longctx-trace-"));
const doc = join(dir, "doc.txt");
const bin = join(dir, "binary.dat");
writeFileSync(bin, Uint8Array.from({ length: 2000 }, (_, i) => (i * 31) % 256));
const words = (n: number, w: string) => Array.from({ length: n }, (_, i) => `${w}${i % 7}`).join(" ");
writeFileSync(
  doc,
  `${words(60, "river")} The lighthouse keeper on Mull is named Fenwick Adair. ${words(60, "stone")}\n` +
    `${words(70, "cloud")}`,
);

test("trace CLI: bad input is one line with a fix and exit code 1", () => {
  const cases: [string[], RegExp][] = [
    [["--input", doc], /--question is required/],
    [["--input", doc, "--question", "q?", "--method", "lime"], /unknown --method "lime"/],
    [["--input", doc, "--question", "q?", "--sample-ratio", "2"], /--sample-ratio "2" is not in \(0, 1\]/],
    [["--input", doc, "--question", "q?", "--top", "0"], /--top "0" is not an integer ≥ 1/],
    [["--input", doc, "--question", "q?", "--context", "16k"], /exceeds the model's trained context/],
    [["--input", join(dir, "missing.txt"), "--question", "q?"], /no such file/],
    [["--input", bin, "--question", "q?"], /is not a text file \(a NUL byte at offset/],
    [["--input", doc, "--question", "q?", "--answer", "  "], /--answer is empty/],
    [["--input", doc, "--question", "q?", "--qestion", "x"], /unknown flag --qestion/],
  ];
  for (const [args, re] of cases) {
    const r = trace(...args);
    assert.equal(r.code, 1, `${args.join(" ")}: ${r.err}`);
    assert.match(r.err, re);
    assert.match(r.err, /^error: .* — fix: /m);
    assert.equal(r.err.trim().split("\n").length, 1, r.err);
  }
});

test("trace CLI: a document beyond --context is an error unless --truncate", () => {
  const r = trace(
    "--input",
    doc,
    "--question",
    "Who keeps the lighthouse?",
    "--answer",
    "Fenwick Adair.",
    "--context",
    "120",
  );
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /--context is 120.*fix: pass --truncate/);
}, { ignore: !haveModel });

test("trace CLI: a given answer traced with AttnTrace (one forward), JSON to stdout and an HTML page", () => {
  const html = join(dir, "report.html");
  const r = trace(
    "--input",
    doc,
    "--question",
    "What is the lighthouse keeper on Mull named?",
    "--answer",
    "The lighthouse keeper on Mull is named Fenwick Adair.",
    "--words",
    "40",
    "--sample-ratio",
    "1",
    "--top",
    "2",
    "--backend",
    "cpu",
    "--json",
    "-",
    "--html",
    html,
  );
  assert.equal(r.code, 0, r.err);
  const j = Schema.decodeUnknownSync(TraceReport)(JSON.parse(r.out));
  assert.equal(j.version, 1);
  assert.equal(j.answerSource, "given");
  assert.equal(j.texts, 5);
  const m = j.methods[0];
  assert.equal(m.method, "attntrace");
  assert.equal(m.forwards, 1);
  assert.equal(m.top.length, 2);
  assert.equal(m.scores.length, 5);
  // the planted sentence (text 1, words 40–79 with the sentence's 10 words) is the top text
  assert.equal(m.top[0].text, 1, JSON.stringify(m.top));
  const page = readFileSync(html, "utf8");
  assert.match(page, /<mark [^>]*title="rank 1/);
  assert.match(page, /Fenwick Adair/);
}, { ignore: !haveModel });
