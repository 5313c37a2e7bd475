/** The shared row schema and `appendRows`: provenance filled, invalid rows rejected, files appended atomically. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import process from "node:process";
import { assert, test } from "../harness.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "longctx-results-"));
const mirror = path.join(dir, "mirror");
const saved = { ...process.env };
Object.assign(process.env, {
  LONGCTX_RESULTS_DIR: path.join(dir, "results"),
  LONGCTX_RESULTS_MIRROR: mirror,
  LONGCTX_COMMIT: "abc1234",
  LONGCTX_GPU: "Test GPU",
  LONGCTX_DRIVER: "test-driver 1.0",
  LONGCTX_BENCH_COMMAND: "bash benchmarks/device/suite.sh",
  LONGCTX_BENCH_RUN: "2",
});
// imported after the environment is set (provenance is read once per process)
const { appendRows, readRows, completeRow, Row } = await import("../../benchmarks/lib/results.ts");
type RowInput = import("../../benchmarks/lib/results.ts").RowInput;
const { Schema } = await import("effect");

test("appendRows fills date, commit, gpu, driver, command and run; appends; mirrors", async () => {
  const a = await appendRows("unit", [{
    metric: "latency_ms",
    value: 1.5,
    unit: "ms",
    backend: "cpu",
    context: 8,
  }]);
  const b = await appendRows("unit", [
    { metric: "copy_tbps", value: 3.9, unit: "TB/s", backend: "wgpu", command: "deno run -A x.ts", run: 1 },
  ]);
  assert.equal(a[0].commit, "abc1234");
  assert.equal(a[0].gpu, "Test GPU");
  assert.equal(a[0].driver, "test-driver 1.0");
  assert.equal(a[0].command, "bash benchmarks/device/suite.sh");
  assert.equal(a[0].run, 2);
  assert.ok(!Number.isNaN(Date.parse(a[0].date)));
  assert.equal(b[0].command, "deno run -A x.ts", "a given command is kept");
  assert.equal(b[0].run, 1, "a given run is kept");
  const stored = readRows(path.join(dir, "results", "unit.json"));
  assert.equal(stored.length, 2);
  assert.deepEqual(stored, [...a, ...b]);
  assert.deepEqual(readRows(path.join(mirror, "unit.json")), stored);
  assert.deepEqual(fs.readdirSync(path.join(dir, "results")), ["unit.json"], "no temp files left");
});

test("invalid rows and suite names are rejected and nothing is written", async () => {
  const file = path.join(dir, "results", "bad.json");
  const bad: unknown[] = [
    { metric: "", value: 1, unit: "ms", backend: "cpu" },
    { metric: "m", value: Number.NaN, unit: "ms", backend: "cpu" },
    { metric: "m", value: Infinity, unit: "ms", backend: "cpu" },
    { metric: "m", value: 1, unit: "ms" },
    { metric: "m", value: 1, unit: "ms", backend: "cpu", context: 1.5 },
    { metric: "m", value: 1, unit: "ms", backend: "cpu", flops: -1 },
    { metric: "m", value: "1", unit: "ms", backend: "cpu" },
  ];
  for (const r of bad) {
    await assert.rejects(
      appendRows("bad", [{ metric: "ok", value: 1, unit: "ms", backend: "cpu" }, r as RowInput]),
      RangeError,
    );
  }
  assert.ok(!fs.existsSync(file));
  await assert.rejects(appendRows("../evil", []), RangeError);
  await assert.rejects(appendRows("Upper", []), RangeError);
});

test("extra keys are kept; stored rows decode with the Row schema; a corrupt file fails to read", () => {
  const r = completeRow({ metric: "m", value: 2, unit: "x", backend: "cpu", params: { n: 3, f16: true } });
  const withExtra = completeRow({
    metric: "m",
    value: 2,
    unit: "x",
    backend: "cpu",
    ...{ extraKey: "kept" },
  });
  assert.equal((withExtra as unknown as Record<string, unknown>).extraKey, "kept");
  assert.deepEqual(Schema.decodeUnknownSync(Row)(r).params, { n: 3, f16: true });
  const corrupt = path.join(dir, "corrupt.json");
  fs.writeFileSync(corrupt, JSON.stringify([{ metric: "m", value: 1 }]));
  assert.throws(() => readRows(corrupt));
  assert.deepEqual(readRows(path.join(dir, "missing.json")), []);
});

test("cleanup: environment restored, temp dir removed", () => {
  for (const k of Object.keys(process.env)) {
    if (k.startsWith("LONGCTX_") && !(k in saved)) delete process.env[k];
  }
  Object.assign(process.env, saved);
  fs.rmSync(dir, { recursive: true, force: true });
  assert.ok(!fs.existsSync(dir));
});
