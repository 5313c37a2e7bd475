/**
 * The `squeezed` technique's graph inputs beyond the attention layout (ops/squeezed/speed.ts): the prefix
 * index's dims at a layer shape (what the planner sizes the decode graph with) and calibrate's speed index,
 * whose threshold keeps about `1 − percentile` of the clustered keys of a decode step (the observation window
 * and the step's own key always kept), run through the decode graph on the CPU backend.
 */
import { Effect } from "effect";
import { decodeTechniqueParams, graphInputDescs, hostTensor, run, seededNormals } from "@longctx/graph";
import { squeezed } from "@longctx/ops";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { assert, test } from "../harness.ts";

const t = squeezed.squeezedTechnique;
const dims = { heads: 4, kvHeads: 2, headDim: 64, seq: 1, kvSeq: 1024 };

test("squeezed graphInputs.dims: clusterCount of the fixed context kvSeq − seq, its clustered keys", () => {
  const p = Effect.runSync(decodeTechniqueParams(t, {}));
  const F = dims.kvSeq - dims.seq;
  assert.deepEqual(t.graphInputs!.dims(p, dims), {
    clusters: squeezed.clusterCount(p, F),
    clustered: F - p.obsWindow,
    one: 1,
  });
  const h = Effect.runSync(decodeTechniqueParams(t, { hierarchical: true }));
  const l1 = squeezed.clusterCountL1(h, F);
  assert.deepEqual(
    [t.graphInputs!.dims(h, dims).clustersL1, t.graphInputs!.dims(h, dims).boundsL1],
    [l1, l1 + 1],
  );
  const g = Effect.runSync(t.graph(h, dims, "decode"));
  const descs = Effect.runSync(graphInputDescs(g, dims, t.graphInputs!.dims(h, dims)));
  assert.deepEqual(descs.parentL1.shape, [2, squeezed.clusterCount(h, F)]);
});

test("squeezed speed inputs: a decode step keeps ≈ 1 − percentile of the clustered keys (CPU)", async () => {
  const backend = await Effect.runPromise(makeCpuBackend());
  const { heads: H, kvHeads: Hk, headDim: D, kvSeq: T } = dims;
  const q = hostTensor("f32", ["heads", "seq", "headDim"], [H, 1, D], seededNormals(H * D, 1));
  const k = hostTensor("f32", ["kvHeads", "capacity", "headDim"], [Hk, T, D], seededNormals(Hk * T * D, 2));
  const v = hostTensor("f32", ["kvHeads", "capacity", "headDim"], [Hk, T, D], seededNormals(Hk * T * D, 3));
  for (const percentile of [0.5, 0.9]) {
    const p = Effect.runSync(decodeTechniqueParams(t, { percentile }));
    const index = Effect.runSync(t.graphInputs!.speed!(p, dims, { q, k }));
    const g = Effect.runSync(t.graph(p, dims, "decode"));
    const res = await Effect.runPromise(
      // deno-lint-ignore no-explicit-any
      run(g, backend, { q, k, v, ...index } as any, { scalars: { pos: T - 1 } }),
    );
    const d = (res.outputs as Record<string, { data: Float32Array }>).density.data;
    const mean = d.reduce((a, b) => a + b, 0) / d.length;
    const F = T - 1, S = F - p.obsWindow;
    const want = ((1 - percentile) * S + p.obsWindow) / F;
    assert.ok(Math.abs(mean - want) < 0.02, `percentile ${percentile}: density ${mean}, want ≈ ${want}`);
  }
  const hier = Effect.runSync(decodeTechniqueParams(t, { hierarchical: true }));
  const e = Effect.runSync(Effect.flip(t.graphInputs!.speed!(hier, dims, { q, k })));
  assert.equal(e.reason, "bad-params");
  await Effect.runPromise(backend.close());
});
