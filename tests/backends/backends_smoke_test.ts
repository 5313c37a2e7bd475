/**
 * Smoke test of the backends and a subset of the kernel grid, in Deno and in Bun (Bun has no
 * `navigator.gpu`, so there it covers cpu and wgpu): backend selection (`LONGCTX_BACKEND` / option,
 * auto → wgpu or cpu), then each available backend runs one case of each kernel family against the
 * kernel's cpu body.
 *
 * Run: `deno test -A tests/backends/backends_smoke_test.ts` and `bun test tests/backends/backends_smoke_test.ts`.
 */
import { Effect } from "effect";
import process from "node:process";
import { kernels as K } from "@longctx/ops";
import { selectBackend } from "../../runtime/src/backends/select.ts";
import { assert, runtimeName, test } from "../harness.ts";
import {
  availableBackends,
  type Case,
  compare,
  copyCase,
  ewCase,
  matmulCase,
  reduceCase,
  runCpuBody,
  runOn,
  softmaxCase,
  supports,
} from "./cases.ts";

const subset = (): Case[] => {
  const f32 = Effect.runSync(K.matmul({ dtype: "f32", transB: true }));
  const f16 = Effect.runSync(K.matmul({ dtype: "f16", tileK: 16, threadM: 8 }));
  return [
    ewCase("silu", "f32", 1025),
    ewCase("mul", "f16", 33),
    copyCase(65),
    reduceCase("sum", "f32", 7, 130),
    reduceCase("max", "f16", 3, 65),
    softmaxCase("f32", 7, 130),
    softmaxCase("f16", 5, 33),
    matmulCase("f32 Bt", f32, K.matmulConfig({ dtype: "f32", transB: true }), 65, 33, 130),
    matmulCase("f16 acc-f32", f16, K.matmulConfig({ dtype: "f16" }), 33, 130, 7),
  ];
};

test(`backends smoke (${runtimeName()}): selection by option and LONGCTX_BACKEND`, async () => {
  const cpu = await Effect.runPromise(selectBackend({ backend: "cpu" }));
  assert.equal(cpu.backend.kind, "cpu");
  await Effect.runPromise(cpu.backend.close());
  const bad = await Effect.runPromise(Effect.result(selectBackend({ backend: "nope" as "cpu" })));
  assert.equal(bad._tag, "Failure");
  const saved = process.env.LONGCTX_BACKEND;
  process.env.LONGCTX_BACKEND = "cpu";
  try {
    const env = await Effect.runPromise(selectBackend());
    assert.equal(env.backend.kind, "cpu");
    await Effect.runPromise(env.backend.close());
  } finally {
    if (saved === undefined) delete process.env.LONGCTX_BACKEND;
    else process.env.LONGCTX_BACKEND = saved;
  }
  const auto = await Effect.runPromise(selectBackend({ backend: "auto" }));
  console.log(`  auto → ${auto.report}`);
  assert.ok(auto.backend.kind === "wgpu" || auto.backend.kind === "cpu");
  if (auto.backend.kind === "cpu") assert.ok(auto.fallbacks.length >= 1);
  await Effect.runPromise(auto.backend.close());
});

const { backends, skipped } = await availableBackends();
for (const s of skipped) console.log(`backends_smoke_test (${runtimeName()}): skipped — ${s}`);

for (const b of backends) {
  test(`backends smoke (${runtimeName()}): kernel subset on ${b.kind} (${b.adapter.name})`, async () => {
    const failures: string[] = [];
    for (const c of subset()) {
      if (supports(b, c)) continue;
      const { scale } = c.oracle();
      const bad = compare(await runOn(b, c), runCpuBody(c), scale, c.atol, c.rtol);
      if (bad) failures.push(`${c.name}: ${bad}`);
    }
    assert.deepEqual(failures, []);
    assert.equal(b.live().buffers, 0);
  });
}
