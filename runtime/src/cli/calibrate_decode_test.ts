/**
 * `calibrate --phase decode` on the CPU backend at a small size: dense decode (`dense.attn`, one query row
 * against the cache) and Squeezed Attention's step (`squeezed.lookup → squeezed.attend` on its speed index) are
 * measured at seq 1, tagged `phase: "decode"`, the attention costed at the density the graph reports, one
 * sample per knob value (percentile), denser at lower percentiles; prefill entries stay untagged.
 */
import { Effect } from "effect";
import { makeCpuBackend } from "../backends/cpu.ts";
import { assert, test } from "../../../tests/harness.ts";
import { calibrate } from "./calibrate.ts";

test("calibrate decode: dense.attn and squeezed's lookup and attend at seq 1, tagged decode", async () => {
  const backend = await Effect.runPromise(makeCpuBackend());
  const only = ["dense.attn", "squeezed.lookup", "squeezed.attend"];
  const base = { model: "smollm2-135m", sizes: [512], reps: 1, dtype: "f32" as const, only };
  const dec = await Effect.runPromise(calibrate(backend, { ...base, phase: "decode" }));
  assert.deepEqual(dec.map((k) => k.operator).sort(), [...only].sort());
  for (const k of dec) {
    assert.equal(k.phase, "decode");
    for (const s of k.samples) assert.ok(s.shape.seq === 1 && s.shape.kvSeq === 512, JSON.stringify(s.shape));
  }
  const attend = dec.find((k) => k.operator === "squeezed.attend")!;
  assert.deepEqual(attend.samples.map((s) => s.shape.percentile), [0.5, 0.7, 0.8, 0.9]);
  const d = attend.samples.map((s) => s.shape.density);
  assert.ok(d.every((x, i) => x > 0 && x < 1 && (i === 0 || x < d[i - 1])), `densities ${d}`);
  // the attention's FLOPs are the full cache's × the measured density (SmolLM2: 9 heads, d 64)
  for (const s of attend.samples) assert.ok(Math.abs(s.flops - 4 * 9 * 512 * 64 * s.shape.density) < 1e-6);
  const pre = await Effect.runPromise(calibrate(backend, { ...base, sizes: [256], only: ["dense.attn"] }));
  assert.deepEqual(pre.map((k) => [k.operator, k.phase, k.samples[0].shape.seq]), [[
    "dense.attn",
    undefined,
    256,
  ]]);
  await Effect.runPromise(backend.close());
});
