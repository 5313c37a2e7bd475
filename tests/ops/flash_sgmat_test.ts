/**
 * Causal flash attention on subgroup matrices (`ops/dense/flash_sgmat.ts`) against the float64 naive
 * reference on random f16 inputs, odd sequence lengths, GQA, head dims 32/64 (and 128 where the workgroup
 * memory allows): emulated on the GPU backends of this process (lavapipe in CI), the real WGSL through
 * Dawn's Tint on its Null backend, and on tensor cores through `dawn` where its adapter lists f16→f32
 * 16×16×16 (the H200). Tolerances: O relative L2 error ≤ 3e-3 (P is rounded to f16 before P·V), LSE max
 * |Δ| ≤ 2e-3.
 *
 * Run: `deno test -A tests/ops/flash_sgmat_test.ts`.
 */
import { Effect } from "effect";
import type { Backend } from "@longctx/graph";
import { kernels as K } from "@longctx/ops";
import {
  type FlashSgmatConfig,
  flashSgmatWgsl,
  flashSgmatWorkgroupBytes,
} from "../../ops/dense/flash_sgmat.ts";
import { dawnCheckWgsl, hasSubgroupMatrix, makeDawnBackend } from "../../runtime/src/backends/dawn.ts";
import { assert, test } from "../harness.ts";
import { availableBackends } from "../backends/cases.ts";
import { maxAbsDiff, naiveAttention64, randn, relErr } from "./ref64.ts";
import { runFlashSgmat } from "./flash_sgmat_run.ts";

const SHAPES: [number, number, number, number][] = [
  // heads, kvHeads, seq, headDim
  [2, 1, 37, 32],
  [4, 2, 70, 64],
  [2, 2, 16, 64],
  [3, 1, 129, 32],
  [4, 1, 100, 128],
  [8, 2, 300, 128],
];

const check = async (b: Backend, emulate: boolean) => {
  const bad: string[] = [];
  let ran = 0;
  for (const [heads, kvHeads, seq, d] of SHAPES) {
    if (flashSgmatWorkgroupBytes(d) > b.limits.maxComputeWorkgroupStorageSize) {
      console.log(
        `  d=${d}: ${flashSgmatWorkgroupBytes(d)} B of workgroup memory > ${b.adapter.name}'s, skipped`,
      );
      continue;
    }
    const seed = heads * 1000 + seq + d;
    const r = (x: Float32Array) => Float32Array.from(x, (y) => K.roundHalf(y));
    const q = r(randn(heads * seq * d, seed));
    const k = r(randn(kvHeads * seq * d, seed + 1));
    const v = r(randn(kvHeads * seq * d, seed + 2));
    const c: FlashSgmatConfig = { heads, kvHeads, seq, headDim: d, scale: 1 / Math.sqrt(d), emulate };
    const got = await runFlashSgmat(b, c, q, k, v);
    const ref = naiveAttention64(q, k, v, heads, kvHeads, seq, d, c.scale);
    const eo = relErr(got.o, ref.o);
    const el = maxAbsDiff(got.lse, ref.lse);
    ran++;
    console.log(
      `  ${heads}/${kvHeads} seq ${seq} d ${d}: O rel err ${eo.toExponential(2)}, LSE |Δ| ${
        el.toExponential(2)
      }`,
    );
    if (!(eo <= 3e-3) || !(el <= 2e-3)) bad.push(`${heads}/${kvHeads} seq ${seq} d ${d}: ${eo} ${el}`);
  }
  assert.ok(ran > 0);
  assert.deepEqual(bad, []);
};

const tint = await Effect.runPromise(Effect.result(dawnCheckWgsl([])));
test("flash-sgmat: Dawn's Tint accepts the generated WGSL (d 64, 128)", async () => {
  const srcs = [64, 128].map((d) =>
    flashSgmatWgsl({ heads: 32, kvHeads: 8, seq: 4099, headDim: d, scale: 0.1 })
  );
  const msgs = await Effect.runPromise(dawnCheckWgsl(srcs));
  assert.deepEqual(msgs, [[], []]);
}, { ignore: tint._tag === "Failure" });

const { backends } = await availableBackends(["webgpu", "wgpu"]);
for (const b of backends) {
  test(`flash-sgmat emulated on ${b.kind} (${b.adapter.name}) vs float64`, () => check(b, true), {
    ignore: !b.features.has("shader-f16"),
  });
}
test("flash-sgmat: close backends", async () => {
  for (const b of backends) await Effect.runPromise(b.close());
}, { sanitize: false }); // closes the backends this file opened at load (for all of its tests)

const dawn = await Effect.runPromise(Effect.result(makeDawnBackend()));
const tc = dawn._tag === "Success" &&
  hasSubgroupMatrix(dawn.success, { component: "f16", result: "f32", M: 16, N: 16, K: 16 });
if (!tc) console.log("flash_sgmat_test: tensor-core run skipped — no dawn adapter with f16→f32 16×16×16");
test("flash-sgmat on tensor cores (dawn) vs float64", async () => {
  if (dawn._tag !== "Success") return;
  try {
    await check(dawn.success, false);
  } finally {
    await Effect.runPromise(dawn.success.close());
  }
}, { ignore: !tc });
if (dawn._tag === "Success" && !tc) await Effect.runPromise(dawn.success.close());
