/**
 * `dense.cacheAttn` (attention over a KV cache at a runtime position, bottom-right causal, local window, GQA)
 * as a lowered program: its CPU reference (float64 loop, and the GEMM path with the cpu backend's BLAS) against
 * an independent float64 reference, and its split-KV WGSL kernels on the wgpu backend (lavapipe here) against
 * the CPU reference, over odd query counts, positions, GQA ratios 1/3/4/8 and head dims 64/128; one program
 * serves every position (rerun with another `pos`, nothing recompiled).
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { type Backend, graph, hostTensor, lower } from "@longctx/graph";
import { dense } from "@longctx/ops";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
import { cacheAttention64, maxAbsDiff, randn, relErr } from "./ref64.ts";
import { openWgpuBackend } from "./gpu_helper.ts";
// OpenBLAS is loaded once per process and kept (runtime/src/model/blas.ts): load it before any test, so the
// resource sanitizer sees a library held for the process.
await loadSgemm();

const wgpu: Backend | undefined = await openWgpuBackend();

type Case = {
  heads: number;
  kvHeads: number;
  seq: number;
  cap: number;
  d: number;
  pos: number[];
  window: number;
};
const cases: Case[] = [
  { heads: 3, kvHeads: 3, seq: 1, cap: 70, d: 64, pos: [0, 1, 63, 69], window: 0 },
  { heads: 9, kvHeads: 3, seq: 1, cap: 300, d: 64, pos: [5, 256, 299], window: 0 },
  { heads: 8, kvHeads: 2, seq: 17, cap: 100, d: 128, pos: [0, 40, 83], window: 0 },
  { heads: 8, kvHeads: 1, seq: 5, cap: 90, d: 64, pos: [0, 30, 85], window: 24 },
  { heads: 4, kvHeads: 4, seq: 33, cap: 33, d: 64, pos: [0], window: 0 },
];

const runCase = async (backend: Backend, c: Case, layout: "heads" | "rows") => {
  const g = graph("cacheAttn");
  const q = g.input("q", dense.cacheAttn.inputs.q);
  const kc = g.input("kCache", dense.cacheAttn.inputs.kCache);
  const vc = g.input("vCache", dense.cacheAttn.inputs.vCache);
  const r = g.add(dense.cacheAttn, { scale: 0, window: c.window, layout, splitKeys: 64, compacted: false }, {
    q,
    kCache: kc,
    vCache: vc,
  });
  g.output("o", r.o).output("lse", r.lse);
  const gr = await Effect.runPromise(g.build());
  const qd = { ...dense.cacheAttn.inputs.q, shape: [c.heads, c.seq, c.d] };
  const kd = { ...dense.cacheAttn.inputs.kCache, shape: [c.kvHeads, c.cap, c.d] };
  const p = await Effect.runPromise(lower(gr, backend, { q: qd, kCache: kd, vCache: kd }));
  const out: {
    pos: number;
    o: Float32Array;
    lse: Float32Array;
    q: Float32Array;
    k: Float32Array;
    v: Float32Array;
  }[] = [];
  const k = randn(c.kvHeads * c.cap * c.d, 11 + c.cap), v = randn(c.kvHeads * c.cap * c.d, 12 + c.cap);
  await Effect.runPromise(p.write("kCache", hostTensor("f32", kd.dims, kd.shape, k)));
  await Effect.runPromise(p.write("vCache", hostTensor("f32", kd.dims, kd.shape, v)));
  for (const pos of c.pos) {
    if (pos + c.seq > c.cap) continue;
    const qx = randn(c.heads * c.seq * c.d, 100 + pos);
    await Effect.runPromise(p.write("q", hostTensor("f32", qd.dims, qd.shape, qx)));
    await Effect.runPromise(p.run({ scalars: { pos } }));
    const o = (await Effect.runPromise(p.read("o"))).data as Float32Array;
    const lse = (await Effect.runPromise(p.read("lse"))).data as Float32Array;
    out.push({ pos, o, lse, q: qx, k, v });
  }
  p.release();
  return out;
};

/** `[seq, heads·d]` rows back to `[heads, seq, d]`. */
const fromRows = (o: Float32Array, heads: number, seq: number, d: number) => {
  const r = new Float32Array(o.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < seq; i++) {
      r.set(o.subarray((i * heads + h) * d, (i * heads + h + 1) * d), (h * seq + i) * d);
    }
  }
  return r;
};

test("dense.cacheAttn CPU reference (f64 loop and BLAS GEMM) vs float64: positions, window, GQA, d 64/128", async () => {
  const plain = await Effect.runPromise(makeCpuBackend());
  const blas = await Effect.runPromise(makeCpuBackend({ gemm: (await loadSgemm()).gemm }));
  for (const c of cases) {
    for (const [name, b] of [["loop", plain], ["gemm", blas]] as const) {
      for (const layout of ["heads", "rows"] as const) {
        for (const r of await runCase(b, c, layout)) {
          const want = cacheAttention64(r.q, r.k, r.v, c, 1 / Math.sqrt(c.d), r.pos, c.window);
          const o = layout === "rows" ? fromRows(r.o, c.heads, c.seq, c.d) : r.o;
          const e = relErr(o, want.o), el = maxAbsDiff(r.lse, want.lse);
          assert.ok(
            e < (name === "loop" ? 1e-6 : 1e-5),
            `${name} ${JSON.stringify(c)} pos ${r.pos}: o error ${e}`,
          );
          assert.ok(el < 1e-4, `${name} ${JSON.stringify(c)} pos ${r.pos}: lse error ${el}`);
        }
      }
    }
  }
  assert.equal(plain.live().buffers, 0);
});

test(
  "dense.cacheAttn split-KV kernels on wgpu vs the CPU reference; one program serves every position",
  async () => {
    const cpu = await Effect.runPromise(makeCpuBackend());
    for (const c of cases) {
      for (const layout of ["heads", "rows"] as const) {
        const got = await runCase(wgpu!, c, layout);
        const want = await runCase(cpu, c, layout);
        for (const [i, r] of got.entries()) {
          const e = relErr(r.o, want[i].o), el = maxAbsDiff(r.lse, want[i].lse);
          console.log(
            `  ${JSON.stringify({ ...c, pos: r.pos })} ${layout}: o ${e.toExponential(1)}, lse ${
              el.toExponential(1)
            }`,
          );
          assert.ok(e < 1e-5, `${JSON.stringify(c)} pos ${r.pos}: o error ${e}`);
          assert.ok(el < 1e-4, `lse error ${el}`);
        }
      }
    }
  },
  { ignore: !wgpu },
);

test("dense.cacheAttn: a position past the capacity or a missing pos is a typed error, not a wrong answer", async () => {
  const cpu = await Effect.runPromise(makeCpuBackend());
  for (const b of [cpu, ...(wgpu ? [wgpu] : [])]) {
    const g = graph("bad");
    const q = g.input("q", dense.cacheAttn.inputs.q);
    const kc = g.input("kCache", dense.cacheAttn.inputs.kCache);
    const r = g.add(dense.cacheAttn, {
      scale: 0,
      window: 0,
      layout: "heads",
      splitKeys: 256,
      compacted: false,
    }, {
      q,
      kCache: kc,
      vCache: kc,
    });
    g.output("o", r.o);
    const gr = await Effect.runPromise(g.build());
    const p = await Effect.runPromise(lower(gr, b, {
      q: { ...dense.cacheAttn.inputs.q, shape: [2, 4, 64] },
      kCache: { ...dense.cacheAttn.inputs.kCache, shape: [1, 8, 64] },
    }));
    const past = await Effect.runPromise(Effect.flip(p.run({ scalars: { pos: 5 } })));
    assert.ok(/capacity/.test(past.message), past.message);
    const missing = await Effect.runPromise(Effect.flip(p.run({})));
    assert.equal(missing._tag, "ShapeError");
    assert.ok(/pos/.test(missing.message), missing.message);
    p.release();
  }
});
