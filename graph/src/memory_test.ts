/**
 * Unit tests of the buffer planner. Run: deno test -A graph/src/memory_test.ts
 */
import { assert, test } from "../../tests/harness.ts";
import { type Lifetime, planBuffers } from "./memory.ts";

test("planBuffers: a chain reuses buffers; known optimum reached", () => {
  // x(-1..0) -> a(0..1) -> b(1..2) -> c(2..3=end): two buffers of the two largest alternate.
  const plan = planBuffers([
    { key: "x", bytes: 400, start: -1, end: 0 },
    { key: "a", bytes: 400, start: 0, end: 1 },
    { key: "b", bytes: 400, start: 1, end: 2 },
    { key: "c", bytes: 400, start: 2, end: 3 },
  ]);
  assert.equal(plan.naiveBytes, 1600);
  assert.equal(plan.peakBytes, 800);
  assert.equal(plan.lowerBoundBytes, 800);
  assert.equal(plan.assign.get("x"), plan.assign.get("b"));
  assert.equal(plan.assign.get("a"), plan.assign.get("c"));
});

test("planBuffers: random lifetimes never share a buffer while both alive; lower bound <= peak <= naive", () => {
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let trial = 0; trial < 200; trial++) {
    const n = 1 + Math.floor(rnd() * 30);
    const ts: Lifetime[] = Array.from({ length: n }, (_, i) => {
      const start = Math.floor(rnd() * 20) - 1;
      return {
        key: `t${i}`,
        bytes: 4 * (1 + Math.floor(rnd() * 1000)),
        start,
        end: start + Math.floor(rnd() * 6),
      };
    });
    const p = planBuffers(ts);
    for (const a of ts) {
      assert.ok(p.buffers[p.assign.get(a.key)!] >= a.bytes, "buffer large enough");
      for (const b of ts) {
        if (a !== b && p.assign.get(a.key) === p.assign.get(b.key)) {
          assert.ok(a.end < b.start || b.end < a.start, `${a.key}/${b.key} overlap in one buffer`);
        }
      }
    }
    assert.ok(p.lowerBoundBytes <= p.peakBytes && p.peakBytes <= p.naiveBytes);
  }
});
