/**
 * Conformance test (issue 13), in the shape of llama.cpp's `test-backend-ops`: every registered operator
 * (`registeredOperators()`) × every available backend (cpu on its host path, `lowering: "never"`: the CPU
 * reference on the backend's own memory, as the model forward runs; webgpu, wgpu through the gpu lowering — on
 * lavapipe here) × a grid of shapes and dtypes (odd lengths 1/17/100/257, GQA 1/3/4/8, headDim 64/128, f32 and
 * f16 variants, q ≠ k where `infer` accepts it; KV-cache operators at several runtime `pos`, in-place outputs
 * checked), each backend run through the executor on a one-node graph (with the case's runtime scalars, on
 * fresh copies of the inputs) and compared with the operator's CPU reference, and every CPU reference compared
 * with an independent float64 (or exact-integer) computation. Prints one table and its legend; fails naming
 * every failed case.
 *
 * Run: `bash scripts/deno.sh test -A --unstable-webgpu --no-check tests/conformance/conformance_test.ts`.
 * @module
 */
import { Effect } from "effect";
import { assert, test } from "../harness.ts";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
import { availableBackends } from "../backends/cases.ts";
import { registeredOperators } from "./discover.ts";
import { caseGenerators } from "./cases.ts";
import { type BackendSlot, formatFailures, formatTable, runConformance } from "./runner.ts";
// OpenBLAS is loaded once per process and kept (runtime/src/model/blas.ts): load it before any test, so the
// resource sanitizer sees a library held for the process.
await loadSgemm();

test("conformance: every registered operator has a case generator", () => {
  const missing = registeredOperators().map((o) => o.name).filter((n) => !(n in caseGenerators));
  assert.deepEqual(
    missing,
    [],
    `operators without a conformance case generator: ${missing.join(", ")} — add one per operator to ` +
      "caseGenerators in tests/conformance/cases.ts",
  );
});

test("conformance: every operator × backend × shape against its CPU reference, every CPU reference against f64", async () => {
  const t0 = performance.now();
  const { backends, skipped } = await availableBackends();
  const slots: BackendSlot[] = (["cpu", "webgpu", "wgpu"] as const).map((kind) => {
    const backend = backends.find((b) => b.kind === kind);
    const why = skipped.find((s) => s.startsWith(`${kind}:`));
    return backend ? { kind, backend } : { kind, absent: why?.slice(kind.length + 1).trim() ?? "not opened" };
  });
  // The cpu backend with OpenBLAS's GEMM: the operators' GEMM paths, which the model forward runs on the CPU.
  const blas = await Effect.runPromise(makeCpuBackend({ gemm: (await loadSgemm()).gemm }));
  backends.push(blas);
  slots.splice(1, 0, { kind: "cpu", label: "cpu+blas", backend: blas });
  for (const s of slots) {
    console.log(
      s.backend ? `backend ${s.kind}: ${s.backend.adapter.name}` : `backend ${s.kind}: skipped (${s.absent})`,
    );
  }
  try {
    const report = await runConformance(registeredOperators(), caseGenerators, slots);
    console.log(`\n${formatTable(report)}\n`);
    const ran = report.rows.reduce((a, r) => a + r.run, 0);
    console.log(
      `${ran} case runs, ${report.failures.length} failures, ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
    if (report.failures.length > 0) console.log(formatFailures(report));
    assert.ok(
      report.rows.some((r) => r.backend !== "cpu-ref vs f64" && r.run > 0),
      "no backend ran any case",
    );
    assert.equal(report.failures.length, 0, `${report.failures.length} failures:\n${formatFailures(report)}`);
  } finally {
    for (const b of backends) await Effect.runPromise(b.close());
  }
});
