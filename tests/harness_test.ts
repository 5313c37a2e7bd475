import { assert, runtimeName, test } from "./harness.ts";
import { hostTensor, numel, storageBytes } from "@longctx/graph";

test("harness: tensor helpers", () => {
  assert.equal(numel([2, 3, 4]), 24);
  assert.equal(storageBytes("int4", 9), 8);
  const t = hostTensor("f32", ["heads", "seq"] as const, [2, 2], new Float32Array(4));
  assert.deepEqual(t.desc.shape, [2, 2]);
  assert.throws(() => hostTensor("f32", ["heads"] as const, [3], new Float32Array(4)), RangeError);
  assert.ok(runtimeName() === "deno" || runtimeName() === "bun");
});
