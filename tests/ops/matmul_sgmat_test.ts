/**
 * The subgroup-matrix matmul generator (`ops/kernels/matmul_sgmat.ts`) against the float64 reference on
 * random nonzero inputs of odd and aligned shapes, both B layouts, f32 and f16 accumulation, single- and
 * double-buffered:
 *
 * - emulated (`emulate: true`: the matrix builtins as plain WGSL with the same offsets, strides and
 *   layouts) on every GPU backend of this process (`webgpu`, `wgpu`; lavapipe in CI);
 * - the real (not emulated) WGSL of every configuration through Dawn's compiler (Tint) on its Null backend
 *   (no GPU needed): no error and no warning;
 * - on tensor cores through the `dawn` backend where its adapter lists an f16 16×16×16 configuration (the
 *   H200: `bash .device/go.sh deno test -A tests/ops/matmul_sgmat_test.ts`); skipped, saying why, elsewhere.
 *
 * Run: `deno test -A tests/ops/matmul_sgmat_test.ts`.
 */
import { Effect } from "effect";
import type { Backend } from "@longctx/graph";
import { kernels as K } from "@longctx/ops";
import { dawnCheckWgsl, hasSubgroupMatrix, makeDawnBackend } from "../../runtime/src/backends/dawn.ts";
import { assert, test } from "../harness.ts";
import { availableBackends, compare, matmulCase, runOn } from "../backends/cases.ts";

type Shape = readonly [number, number, number];

/** Configurations and the shapes each runs (aligned ones only on multiples of its tile). */
const configs = (emulate: boolean): { o: K.SgmatMatmulOptions; shapes: Shape[] }[] => {
  const small = { warpsM: 2, warpsN: 2, fragsM: 2, fragsN: 2 };
  const odd: Shape[] = [[37, 50, 70], [1, 17, 33], [130, 65, 16], [64, 64, 96]];
  const out: { o: K.SgmatMatmulOptions; shapes: Shape[] }[] = [
    { o: { ...small }, shapes: odd },
    { o: { ...small, transB: true }, shapes: odd },
    { o: { ...small, accum: "f16" }, shapes: [[37, 50, 70], [64, 64, 96]] },
    { o: { ...small, pipeline: true, tileK: 16 }, shapes: [[37, 50, 70], [130, 65, 48]] },
    { o: { ...small, aligned: true }, shapes: [[64, 128, 96], [128, 64, 32]] },
    { o: { ...small, aligned: true, transB: true, pipeline: true }, shapes: [[64, 128, 96]] },
    { o: { ...small, aligned: true, accum: "f16", pipeline: true, tileK: 16 }, shapes: [[128, 64, 48]] },
    { o: { warpsM: 2, warpsN: 1, fragsM: 1, fragsN: 3, pad: 0 }, shapes: [[45, 47, 40]] },
  ];
  if (!emulate) {
    // The benchmark's configurations too (full-size register tiles), on small aligned shapes.
    for (
      const o of [
        { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 4, aligned: true },
        { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 4, aligned: true, pipeline: true },
        { warpsM: 4, warpsN: 2, fragsM: 4, fragsN: 4, aligned: true, pipeline: true, accum: "f16" as const },
        { warpsM: 2, warpsN: 4, fragsM: 4, fragsN: 4, aligned: true, tileK: 64 },
      ]
    ) out.push({ o, shapes: [[256, 512, 192]] });
    out.push({ o: { warpsM: 2, warpsN: 2, fragsM: 4, fragsN: 4 }, shapes: [[300, 257, 129]] });
  }
  return out;
};

const check = async (b: Backend, emulate: boolean) => {
  const failures: string[] = [];
  let ran = 0;
  for (const { o, shapes } of configs(emulate)) {
    const full = { ...o, emulate };
    const plan = Effect.runSync(K.sgmatMatmul(full));
    if (K.sgmatWorkgroupBytes(full) > b.limits.maxComputeWorkgroupStorageSize) {
      console.log(`  ${plan.kernel.key}: needs more workgroup memory than ${b.adapter.name} has, skipped`);
      continue;
    }
    const c = K.sgmatMatmulConfig(full);
    for (const [M, N, Kd] of shapes) {
      if (c.aligned && !K.sgmatMatmulFits(full, { M, N, K: Kd })) {
        throw new Error(`bad aligned shape ${M}×${N}×${Kd}`);
      }
      const tc = matmulCase(
        plan.kernel.key,
        plan,
        { dtype: "f16", accum: c.accum, transB: c.transB, outDtype: c.accum },
        M,
        N,
        Kd,
      );
      const got = await runOn(b, tc);
      const { ref, scale } = tc.oracle();
      const v = compare(got, ref, scale, tc.atol, tc.rtol);
      ran++;
      if (v) failures.push(`${tc.name}: ${v}`);
    }
  }
  console.log(`  ${ran} cases on ${b.kind} (${b.adapter.name})`);
  assert.deepEqual(failures, []);
};

const tint = await Effect.runPromise(Effect.result(dawnCheckWgsl([])));
if (tint._tag === "Failure") console.log(`matmul_sgmat_test: Tint check skipped — ${tint.failure.message}`);
test("matmul-sgmat: Dawn's Tint accepts the generated subgroup-matrix WGSL", async () => {
  const plans = configs(false).map(({ o }) => Effect.runSync(K.sgmatMatmul(o)).kernel);
  const msgs = await Effect.runPromise(dawnCheckWgsl(plans.map((k) => k.wgsl)));
  const bad = msgs.flatMap((m, i) => m.map((x) => `${plans[i].key} ${x}`));
  assert.deepEqual(bad, []);
}, { ignore: tint._tag === "Failure" });

const { backends, skipped } = await availableBackends(["webgpu", "wgpu"]);
for (const s of skipped) console.log(`matmul_sgmat_test: ${s}`);
for (const b of backends) {
  const ignore = !b.features.has("shader-f16");
  if (ignore) console.log(`matmul_sgmat_test: ${b.kind} lacks shader-f16, emulated kernels skipped`);
  test(`matmul-sgmat emulated on ${b.kind} (${b.adapter.name}) vs float64`, () => check(b, true), { ignore });
}
test("matmul-sgmat: close backends", async () => {
  for (const b of backends) await Effect.runPromise(b.close());
}, { sanitize: false }); // closes the backends this file opened at load (for all of its tests)

const dawn = await Effect.runPromise(Effect.result(makeDawnBackend()));
const tc = dawn._tag === "Success" &&
  hasSubgroupMatrix(dawn.success, { component: "f16", result: "f32", M: 16, N: 16, K: 16 }) &&
  hasSubgroupMatrix(dawn.success, { component: "f16", result: "f16", M: 16, N: 16, K: 16 });
if (!tc) {
  console.log(
    `matmul_sgmat_test: tensor-core run skipped — ${
      dawn._tag === "Failure"
        ? `dawn: ${dawn.failure.message}`
        : `dawn (${dawn.success.adapter.name}) lists no f16 16×16×16 subgroup-matrix configuration`
    }`,
  );
}
test("matmul-sgmat on tensor cores (dawn) vs float64", async () => {
  if (dawn._tag !== "Success") return;
  try {
    await check(dawn.success, false);
  } finally {
    await Effect.runPromise(dawn.success.close());
  }
}, { ignore: !tc });
if (dawn._tag === "Success" && !tc) await Effect.runPromise(dawn.success.close());
