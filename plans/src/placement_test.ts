import { Effect } from "effect";
import { assert, test } from "../../tests/harness.ts";
import { builtinProfile } from "./builtin.ts";
import { getModel, kvCacheBytes } from "./models.ts";
import { placeBlocks, type PlacementDevice, weightBytes } from "./placement.ts";

const GB = 1e9;
const dev = (name: string, memGB: number, linkGBs: number, reservedGB = 0): PlacementDevice => ({
  name,
  memoryBytes: memGB * GB,
  reservedBytes: reservedGB * GB,
  linkBytesPerS: linkGBs === Infinity ? Infinity : linkGBs * GB,
  linkLatencyS: 10e-6,
});

test("placeBlocks: blocks tile the tokens within every device's free memory; the step is the slowest block", async () => {
  const profile = await Effect.runPromise(builtinProfile("h200"));
  const m = await Effect.runPromise(getModel("llama-3.1-8b"));
  const tokens = 300_000;
  const devices = [dev("gpu0", 141, Infinity, 16), dev("gpu1", 141, 50), dev("gpu2", 40, 50)];
  const p = await Effect.runPromise(placeBlocks({ model: m, tokens, devices, profile }));
  let at = 0;
  for (const b of p.blocks) {
    assert.equal(b.start, at);
    assert.ok(b.kvBytes <= b.freeBytes, `${b.device}: ${b.kvBytes} > ${b.freeBytes}`);
    at += b.tokens;
  }
  assert.equal(at, tokens);
  assert.equal(p.kvBytes, kvCacheBytes(m, tokens));
  const worst = Math.max(...p.blocks.filter((b) => b.tokens > 0).map((b) => b.attnMs + b.linkMs));
  assert.ok(Math.abs(p.stepMs - m.layers * worst) < 1e-9);
  // balanced: no block could take tokens from the slowest without becoming the slowest
  const times = p.blocks.filter((b) => b.tokens > 0).map((b) => b.attnMs + b.linkMs);
  assert.ok(Math.max(...times) - Math.min(...times) < 0.05 * Math.max(...times), JSON.stringify(p.blocks));
  // two remote holders × 32 layers × (q + o + lse) per step
  assert.equal(p.transferBytesPerStep, 2 * m.layers * (4 * 32 * 128 + 4 * 32 * 129));
  // one device alone: slower per step than the split
  const one = await Effect.runPromise(
    placeBlocks({ model: m, tokens: 100_000, devices: [dev("gpu0", 141, Infinity, 16)], profile }),
  );
  const two = await Effect.runPromise(
    placeBlocks({
      model: m,
      tokens: 100_000,
      devices: [dev("gpu0", 141, Infinity, 16), dev("g1", 141, 50)],
      profile,
    }),
  );
  assert.ok(two.stepMs < one.stepMs, `${two.stepMs} vs ${one.stepMs}`);
});

test("placeBlocks refuses a cache that cannot fit with the numbers, and bad requests", async () => {
  const profile = await Effect.runPromise(builtinProfile("h200"));
  const m = await Effect.runPromise(getModel("llama-3.1-8b"));
  const devices = [
    dev("gpu0", 141, Infinity, weightBytes(m) / GB),
    dev("gpu1", 141, 50, weightBytes(m) / GB),
  ];
  const e = await Effect.runPromise(
    Effect.flip(placeBlocks({ model: m, tokens: 2_000_000, devices, profile })),
  );
  assert.equal(e.reason, "unsatisfiable-budget");
  assert.ok(
    /2000000 tokens/.test(e.message) && /gpu1/.test(e.message) && /hold \d+ tokens/.test(e.message),
    e.message,
  );
  const none = await Effect.runPromise(
    Effect.flip(placeBlocks({ model: m, tokens: 10, devices: [], profile })),
  );
  assert.equal(none.reason, "bad-request");
  const nofit = await Effect.runPromise(
    Effect.flip(placeBlocks({ model: m, tokens: 10, devices, profile, fitOperator: "nope.op" })),
  );
  assert.equal(nofit.reason, "not-profiled");
});
