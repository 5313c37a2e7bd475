/**
 * Every kernel of `ops/kernels` on every available backend (cpu always; webgpu through Deno's built-in
 * `navigator.gpu`; wgpu through FFI when `runtime/src/backends/wgpu.ts` loads), compared with the
 * kernel's cpu body over a grid of odd shapes in f32 and f16; and every cpu body compared with a float64
 * computation. Thresholds: `TOL` in `cases.ts` (|got − ref| ≤ atol + rtol · scale).
 *
 * Run: `deno test -A tests/backends/kernels_test.ts` (about 30 s on lavapipe with 2 busy cores).
 */
import { Effect } from "effect";
import { kernels as K } from "@longctx/ops";
import { assert, test } from "../harness.ts";
import {
  availableBackends,
  type Case,
  compare,
  copyCase,
  ewCase,
  hasCoop,
  matmulCase,
  reduceCase,
  runCpuBody,
  runOn,
  softmaxCase,
  supports,
} from "./cases.ts";

const sizes = [1, 7, 33, 65, 130];
/** A fixed subset of sizes³: the diagonal plus mixed corners (each dimension takes every value). */
const triples: [number, number, number][] = [
  ...sizes.map((s) => [s, s, s] as [number, number, number]),
  [1, 130, 7],
  [130, 1, 33],
  [7, 65, 130],
  [33, 7, 1],
  [65, 33, 65],
  [130, 7, 65],
];

const matmulVariants: { label: string; o: K.MatmulOptions }[] = [
  { label: "f32 64x64x8 4x4", o: { dtype: "f32" } },
  { label: "f32 Bt 64x64x8 4x4", o: { dtype: "f32", transB: true } },
  { label: "f32 128x128x8 8x8", o: { dtype: "f32", tileM: 128, tileN: 128, threadM: 8, threadN: 8 } },
  {
    label: "f16 acc-f32 64x32x16 8x4",
    o: { dtype: "f16", tileM: 64, tileN: 32, tileK: 16, threadM: 8, threadN: 4 },
  },
  { label: "f16 acc-f16 Bt 64x64x8 4x4", o: { dtype: "f16", accum: "f16", transB: true } },
  {
    label: "f16 acc-f32 Bt 32x64x5 4x8",
    o: { dtype: "f16", transB: true, tileM: 32, tileN: 64, tileK: 5, threadN: 8 },
  },
  { label: "f32 64x64x8 4x4 pipelined", o: { dtype: "f32", pipeline: true } },
  {
    label: "f16 acc-f16 Bt 32x64x5 4x8 pipelined",
    o: {
      dtype: "f16",
      accum: "f16",
      transB: true,
      tileM: 32,
      tileN: 64,
      tileK: 5,
      threadN: 8,
      pipeline: true,
    },
  },
];

/** Aligned variants run on tile-aligned sizes only. */
const alignedVariants: { label: string; o: K.MatmulOptions; shapes: [number, number, number][] }[] = [
  {
    label: "f32 aligned 64x64x8 4x4",
    o: { dtype: "f32", aligned: true },
    shapes: [[64, 128, 72], [128, 64, 8]],
  },
  {
    label: "f32 aligned Bt 128x128x16 8x8",
    o: {
      dtype: "f32",
      aligned: true,
      transB: true,
      tileM: 128,
      tileN: 128,
      tileK: 16,
      threadM: 8,
      threadN: 8,
    },
    shapes: [[128, 256, 48]],
  },
  {
    label: "f16 aligned acc-f16 128x128x16 16x8",
    o: {
      dtype: "f16",
      accum: "f16",
      aligned: true,
      tileM: 128,
      tileN: 128,
      tileK: 16,
      threadM: 16,
      threadN: 8,
    },
    shapes: [[128, 128, 16]],
  },
  {
    label: "f16 aligned acc-f16 64x64x8 4x4",
    o: { dtype: "f16", accum: "f16", aligned: true },
    shapes: [[64, 128, 40]],
  },
  {
    label: "f16 aligned acc-f32 Bt 64x64x16 8x8",
    o: { dtype: "f16", aligned: true, transB: true, tileK: 16, threadM: 8, threadN: 8 },
    shapes: [[128, 64, 32]],
  },
  {
    label: "f32 aligned 128x128x16 8x8 pipelined",
    o: {
      dtype: "f32",
      aligned: true,
      tileM: 128,
      tileN: 128,
      tileK: 16,
      threadM: 8,
      threadN: 8,
      pipeline: true,
    },
    shapes: [[128, 256, 48], [256, 128, 16]],
  },
  {
    label: "f32 aligned Bt 64x64x8 4x4 pipelined",
    o: { dtype: "f32", aligned: true, transB: true, pipeline: true },
    shapes: [[64, 128, 40]],
  },
  {
    label: "f16 aligned acc-f16 128x128x32 16x8 pipelined",
    o: {
      dtype: "f16",
      accum: "f16",
      aligned: true,
      tileM: 128,
      tileN: 128,
      tileK: 32,
      threadM: 16,
      threadN: 8,
      pipeline: true,
    },
    shapes: [[128, 128, 96]],
  },
  {
    label: "f16 aligned acc-f32 64x64x16 8x8 pipelined",
    o: { dtype: "f16", aligned: true, tileK: 16, threadM: 8, threadN: 8, pipeline: true },
    shapes: [[128, 64, 48]],
  },
];

const coopVariants: { label: string; o: K.CoopMatmulOptions; shapes: [number, number, number][] }[] = [
  { label: "coop f16 acc-f32", o: {}, shapes: triples },
  { label: "coop f16 acc-f16 Bt", o: { accum: "f16", transB: true }, shapes: triples.slice(0, 6) },
  { label: "coop f16 acc-f32 aligned", o: { aligned: true }, shapes: [[64, 128, 64], [128, 64, 96]] },
  {
    label: "coop f16 acc-f32 aligned Bt w2x4",
    o: { aligned: true, transB: true, warpsN: 4 },
    shapes: [[64, 128, 32]],
  },
];

/**
 * The cooperative kernels with the coop builtins replaced by plain WGSL (`emulate`): checks the generated
 * tiling, staging, strides and bounds of the very configurations the H200 benchmark runs, on any device.
 */
const coopEmulated: { label: string; o: K.CoopMatmulOptions; shapes: [number, number, number][] }[] = [
  {
    label: "coop-emu f16 acc-f32",
    o: {},
    shapes: [[1, 1, 1], [7, 7, 7], [33, 33, 33], [65, 65, 65], [7, 65, 130], [130, 7, 65]],
  },
  {
    label: "coop-emu f16 acc-f16 Bt",
    o: { accum: "f16", transB: true },
    shapes: [[33, 65, 7], [65, 33, 130]],
  },
  {
    label: "coop-emu aligned w2x2 f4x4",
    o: { aligned: true, fragsM: 4, fragsN: 4 },
    shapes: [[128, 128, 64]],
  },
  {
    label: "coop-emu aligned Bt w2x4 f4x2",
    o: { aligned: true, transB: true, warpsN: 4, fragsM: 4 },
    shapes: [[128, 128, 32]],
  },
  {
    label: "coop-emu aligned w4x2 f2x4 k16 p0 acc-f16",
    o: { aligned: true, warpsM: 4, fragsN: 4, tileK: 16, pad: 0, accum: "f16" },
    shapes: [[128, 128, 16]],
  },
];

const families: { name: string; cases: () => Case[] }[] = [
  {
    name: "elementwise",
    cases: () =>
      (["add", "mul", "silu"] as const).flatMap((op) =>
        (["f32", "f16"] as const).flatMap((dt) => [1, 7, 130, 1025, 70001].map((n) => ewCase(op, dt, n)))
      ),
  },
  { name: "copy.vec4", cases: () => [1, 7, 4097].map(copyCase) },
  {
    name: "row reduce",
    cases: () =>
      (["sum", "max"] as const).flatMap((op) =>
        (["f32", "f16"] as const).flatMap((dt) =>
          ([[1, 1], [7, 33], [33, 130], [3, 1000]] as const).map(([r, c]) => reduceCase(op, dt, r, c))
        )
      ),
  },
  {
    name: "softmax",
    cases: () =>
      (["f32", "f16"] as const).flatMap((dt) =>
        ([[1, 1], [7, 33], [33, 130], [3, 1000]] as const).map(([r, c]) => softmaxCase(dt, r, c))
      ),
  },
  {
    name: "matmul",
    cases: () =>
      matmulVariants.flatMap(({ label, o }) => {
        const plan = Effect.runSync(K.matmul(o));
        const c = K.matmulConfig(o);
        return triples.map(([M, N, Kd]) => matmulCase(label, plan, c, M, N, Kd));
      }),
  },
  {
    name: "matmul aligned",
    cases: () =>
      alignedVariants.flatMap(({ label, o, shapes }) => {
        const plan = Effect.runSync(K.matmul(o));
        const c = K.matmulConfig(o);
        return shapes.map(([M, N, Kd]) => {
          assert.ok(K.matmulFits(o, { M, N, K: Kd }), `${label} does not fit ${M}x${N}x${Kd}`);
          return matmulCase(label, plan, c, M, N, Kd);
        });
      }),
  },
  {
    name: "matmul cooperative (emulated)",
    cases: () =>
      coopEmulated.flatMap(({ label, o, shapes }) => {
        const plan = Effect.runSync(K.coopMatmul({ ...o, emulate: true }));
        const c = K.coopMatmulConfig(o);
        return shapes.map(([M, N, Kd]) => {
          if (c.aligned) {
            assert.ok(K.coopMatmulFits(o, { M, N, K: Kd }), `${label} does not fit ${M}x${N}x${Kd}`);
          }
          return matmulCase(
            label,
            plan,
            { dtype: "f16", accum: c.accum, transB: c.transB, outDtype: c.accum },
            M,
            N,
            Kd,
          );
        });
      }),
  },
  {
    name: "matmul cooperative",
    cases: () =>
      coopVariants.flatMap(({ label, o, shapes }) => {
        const plan = Effect.runSync(K.coopMatmul(o));
        const c = K.coopMatmulConfig(o);
        return shapes.map(([M, N, Kd]) =>
          matmulCase(
            label,
            plan,
            {
              dtype: "f16",
              accum: c.accum,
              transB: c.transB,
              outDtype: c.accum,
              needs: ["cooperative-matrix"],
            },
            M,
            N,
            Kd,
          )
        );
      }),
  },
];

// cpu bodies vs float64.
for (const fam of families) {
  test(`kernels: cpu bodies vs float64 — ${fam.name}`, () => {
    const failures: string[] = [];
    for (const c of fam.cases()) {
      const { ref, scale } = c.oracle();
      const bad = compare(runCpuBody(c), ref, scale, c.atol, c.rtol);
      if (bad) failures.push(`${c.name}: ${bad}`);
    }
    assert.deepEqual(failures, []);
  });
}

// Every backend vs the cpu body.
const { backends, skipped } = await availableBackends();
for (const s of skipped) console.log(`kernels_test: backend skipped — ${s}`);
for (const b of backends) {
  for (const fam of families) {
    const coopFamily = fam.name === "matmul cooperative";
    const ignore = coopFamily && b.kind !== "cpu" && !hasCoop(b);
    if (ignore) {
      console.log(
        `kernels_test: ${fam.name} on ${b.kind} (${b.adapter.name}) skipped — no cooperative-matrix feature ` +
          `(features: ${[...b.features].join(", ")})`,
      );
    }
    test(`kernels: ${fam.name} on ${b.kind} (${b.adapter.name}) vs cpu body`, async () => {
      const failures: string[] = [];
      let ran = 0;
      for (const c of fam.cases()) {
        const why = supports(b, c);
        if (why) {
          console.log(`  skip ${c.name}: ${why}`);
          continue;
        }
        const ref = runCpuBody(c);
        const { scale } = c.oracle();
        const got = await runOn(b, c);
        ran++;
        const bad = compare(got, ref, scale, c.atol, c.rtol);
        if (bad) failures.push(`${c.name}: ${bad}`);
      }
      assert.deepEqual(failures, []);
      assert.ok(ran > 0, "no case ran");
      assert.equal(b.live().buffers, 0, "buffers leaked");
    }, { ignore });
  }
}

test("kernels: matmul generator rejects bad tilings with ShapeError", () => {
  for (
    const o of [
      { dtype: "f32", threadM: 3 },
      { dtype: "f32", tileM: 60, threadM: 8 },
      { dtype: "f32", aligned: true, tileK: 6 },
      { dtype: "f32", accum: "f16" },
      { dtype: "f32", tileM: 512, tileN: 512 },
    ] as K.MatmulOptions[]
  ) {
    const r = Effect.runSync(Effect.result(K.matmul(o)));
    assert.equal(r._tag, "Failure", JSON.stringify(o));
  }
  const c = Effect.runSync(Effect.result(K.coopMatmul({ tileK: 24 })));
  assert.equal(c._tag, "Failure");
});

test("kernels: generated register tiles are unrolled (no runtime-indexed function-scope arrays)", () => {
  const plan = Effect.runSync(K.matmul({ dtype: "f32", tileM: 128, tileN: 128, threadM: 8, threadN: 8 }));
  assert.ok(!/var\s+\w+\s*:\s*array</.test(plan.kernel.wgsl.replace(/var<workgroup>[^;]*;/g, "")));
  assert.equal((plan.kernel.wgsl.match(/var acc_\d+_\d+/g) ?? []).length, 8 * 2);
  assert.ok(!/for \(var kk/.test(plan.kernel.wgsl));
  const o: K.MatmulOptions = {
    dtype: "f16",
    accum: "f16",
    aligned: true,
    tileM: 128,
    tileN: 128,
    tileK: 32,
    threadM: 16,
    threadN: 8,
    pipeline: true,
  };
  const pipe = Effect.runSync(K.matmul(o)).kernel.wgsl;
  assert.ok(!/var\s+\w+\s*:\s*array</.test(pipe.replace(/var<workgroup>[^;]*;/g, "")));
  assert.equal((pipe.match(/var acc_\d+_\d+/g) ?? []).length, 16 * 2);
  // 8 A + 8 B prefetch slots of 128 invocations; one barrier in the loop (plus the prologue's)
  assert.equal((pipe.match(/var pf_\d+: vec4<f16>;/g) ?? []).length, 16);
  assert.equal((pipe.match(/workgroupBarrier\(\)/g) ?? []).length, 2);
  assert.equal(K.matmulWorkgroupBytes(o), 2 * (128 + 128) * 32 * 2);
});
