/**
 * Unit tests of the seeded generators. Run: deno test -A graph/src/random_test.ts
 */
import { assert, test } from "../../tests/harness.ts";
import { mulberry32, seededNormals } from "./random.ts";

test("mulberry32: deterministic per seed, in [0, 1), seeds differ, roughly uniform", () => {
  const a = mulberry32(42), b = mulberry32(42), c = mulberry32(43);
  const xs = Array.from({ length: 20000 }, () => a());
  assert.deepEqual(Array.from({ length: 20000 }, () => b()), xs);
  assert.notDeepEqual(Array.from({ length: 8 }, () => c()), xs.slice(0, 8));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  // 10 equal bins of 2000 expected each; a χ² with 9 degrees of freedom above 40 has probability < 1e-5
  const bins = new Array(10).fill(0);
  for (const x of xs) bins[Math.floor(x * 10)]++;
  const chi2 = bins.reduce((s, n) => s + (n - 2000) ** 2 / 2000, 0);
  assert.ok(chi2 < 40, `chi2 ${chi2}`);
});

test("seededNormals: deterministic, odd lengths, finite, mean ≈ 0 and variance ≈ 1", () => {
  const x = seededNormals(100001, 7);
  assert.deepEqual(seededNormals(100001, 7), x);
  assert.equal(seededNormals(3, 7).length, 3);
  assert.deepEqual(seededNormals(3, 7), x.slice(0, 3));
  assert.ok(x.every(Number.isFinite));
  const mean = x.reduce((s, v) => s + v, 0) / x.length;
  const variance = x.reduce((s, v) => s + (v - mean) ** 2, 0) / x.length;
  // standard errors: mean 1/√n ≈ 0.003, variance √(2/n) ≈ 0.0045; bounds at about 6 of them
  assert.ok(Math.abs(mean) < 0.02, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 0.03, `variance ${variance}`);
  assert.notDeepEqual(seededNormals(4, 8), x.slice(0, 4));
});
