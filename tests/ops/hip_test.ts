/**
 * HiP (`hip.mask`, `dense.indexAttn`, the `hip` technique): properties of the mask search (exactly the keys
 * the region allows, ascending, unique, inside the search region, disjoint from the sink and the window; a
 * planted smooth bump of high logits found; the dense fallback), `dense.indexAttn` against a float64 brute
 * force over the same visible sets (prefill and decode, GQA, shared lists), and the wgpu kernels (lavapipe
 * here) against the CPU references — on integer-valued Q/K, where every f32 score is exact, the GPU's index
 * lists must equal the CPU's bit for bit (the tie rule is exercised: such scores tie often).
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { type Backend, graph, hostTensor, run } from "@longctx/graph";
import { dense, hip } from "@longctx/ops";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";

const cpuBackend = () => Effect.runPromise(makeCpuBackend());
import { randn, relErr } from "./ref64.ts";
import { openWgpuBackend } from "./gpu_helper.ts";

// OpenBLAS is loaded once per process (runtime/src/model/blas.ts), before any test.
const sgemm = await loadSgemm();

const wgpu: Backend | undefined = await openWgpuBackend();

/** Seeded small integers / 4 (exact f32 products and sums). */
const ints = (n: number, seed: number): Float32Array => {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return ((s >>> 16) % 7 - 3) / 4;
  });
};

const maskOf = async (
  backend: Backend,
  p: hip.HipParams,
  q: Float32Array,
  k: Float32Array,
  H: number,
  Hk: number,
  seq: number,
  kvSeq: number,
  d: number,
) => {
  const g = graph("hip.mask");
  const qi = g.input("q", hip.hipMask.inputs.q), ki = g.input("k", hip.hipMask.inputs.k);
  const r = g.add(hip.hipMask, p, { q: qi, k: ki });
  g.output("indices", r.indices);
  g.output("density", r.density);
  const { outputs: out } = await Effect.runPromise(
    run(await Effect.runPromise(g.build()), backend, {
      q: hostTensor("f32", ["heads", "seq", "headDim"], [H, seq, d], q),
      k: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [Hk, kvSeq, d], k),
    }),
  );
  return { indices: out.indices.data as Int32Array, density: out.density.data as Float32Array };
};

/** Check the properties of one block's list (see the module doc). */
const checkList = (p: hip.HipParams, list: Int32Array, pLast: number, where: string) => {
  const reg = hip.hipRegion(p, pLast);
  const got = [...list].filter((x) => x >= 0);
  assert.ok([...list].slice(got.length).every((x) => x === -1), `${where}: −1 padding only at the end`);
  for (let i = 1; i < got.length; i++) assert.ok(got[i] > got[i - 1], `${where}: ascending and unique`);
  for (const j of got) {
    assert.ok(j >= p.sink, `${where}: ${j} is not a sink token`);
    assert.ok(j < reg.start + reg.tokens, `${where}: ${j} inside the region (before the window)`);
  }
  if (reg.dense) {
    assert.equal(got.length, reg.tokens, `${where}: dense fallback takes the whole region`);
  } else {
    // k keys, less the missing tail of a partial last key block when that block was selected
    const partial = reg.tokens % p.blockK;
    const lastBlock = reg.start + (reg.blocks - 1) * p.blockK;
    const want = p.topK - (partial > 0 && got.includes(lastBlock) ? p.blockK - partial : 0);
    assert.equal(got.length, want, `${where}: min(k, region) keys`);
  }
};

test("hip.mask (CPU): exactly the region's keys, ascending, unique, disjoint from sink and window", () => {
  const cases = [
    { H: 3, Hk: 1, seq: 700, kvSeq: 700, d: 64, p: { topK: 64, sink: 4, window: 32 } },
    { H: 4, Hk: 2, seq: 333, kvSeq: 333, d: 64, p: { topK: 30, blockK: 3, sink: 5, window: 17, blockQ: 32 } },
    { H: 2, Hk: 2, seq: 1, kvSeq: 901, d: 32, p: { topK: 128, sink: 16, window: 64 } },
    {
      H: 2,
      Hk: 1,
      seq: 17,
      kvSeq: 517,
      d: 32,
      p: { topK: 40, blockK: 4, sink: 0, window: 0, blockStrideQ: 1 },
    },
  ];
  for (const [n, c] of cases.entries()) {
    const p = hip.hipParams(c.p);
    const q = randn(c.H * c.seq * c.d, 10 + n), k = randn(c.Hk * c.kvSeq * c.d, 20 + n);
    const r = hip.hipMaskReference(p, q, k, c.H, c.Hk, c.seq, c.kvSeq, c.d);
    const qB = Math.ceil(c.seq / p.blockQ);
    for (let h = 0; h < c.H; h++) {
      for (let b = 0; b < qB; b++) {
        const pLast = Math.min(c.seq, (b + 1) * p.blockQ) - 1 + c.kvSeq - c.seq;
        const base = (h * qB + b) * p.topK;
        checkList(p, r.indices.subarray(base, base + p.topK), pLast, `case ${n} head ${h} block ${b}`);
      }
      assert.ok(r.density[h] > 0 && r.density[h] <= 1, `density ${r.density[h]}`);
    }
  }
});

test("hip.mask (CPU): the GEMM path (cpu backend's BLAS) returns the float64 path's lists on exact scores", () => {
  const p = hip.hipParams({ topK: 64, sink: 4, window: 32 });
  const H = 3, Hk = 1, S = 700, d = 64;
  const q = ints(H * S * d, 5), k = ints(Hk * S * d, 6);
  const a = hip.hipMaskReference(p, q, k, H, Hk, S, S, d);
  const b = hip.hipMaskReference(p, q, k, H, Hk, S, S, d, sgemm.gemm);
  assert.deepEqual([...b.indices], [...a.indices]);
  assert.deepEqual([...b.density], [...a.density]);
});

test("hip.mask (CPU): a planted smooth bump of high logits is selected; short contexts fall back to dense", () => {
  const H = 1, seq = 2048, d = 32, p = hip.hipParams({ topK: 128, sink: 16, window: 64 });
  const q = randn(seq * d, 1).map((x) => x * 0.1), k = randn(seq * d, 2).map((x) => x * 0.1);
  // every query aligns with a direction; keys 700..779 (80 keys, wider than a node) carry it, peaked at 740
  for (let i = 0; i < seq; i++) q[i * d] += 3;
  for (let j = 700; j < 780; j++) k[j * d] += 3 * Math.exp(-(((j - 740) / 25) ** 2));
  const r = hip.hipMaskReference(p, q, k, H, H, seq, seq, d);
  const qB = seq / p.blockQ;
  for (let b = Math.ceil(900 / p.blockQ); b < qB; b++) {
    const list = new Set(r.indices.subarray(b * p.topK, (b + 1) * p.topK));
    for (let j = 720; j < 760; j++) assert.ok(list.has(j), `block ${b} keeps the bump's key ${j}`);
  }
  // region ≤ k: the whole region, so HiP equals dense attention
  const short = hip.hipMaskReference(p, q.subarray(0, 200 * d), k.subarray(0, 200 * d), 1, 1, 200, 200, d);
  assert.deepEqual([...short.density], [1]);
});

test("dense.indexAttn (CPU, float64 and GEMM paths) = brute force over sink ∪ list ∪ window", () => {
  const cases = [
    { H: 4, Hk: 2, seq: 100, kvSeq: 100, d: 64, sel: 4, p: { blockQ: 32, sink: 3, window: 20 } },
    { H: 3, Hk: 1, seq: 1, kvSeq: 333, d: 32, sel: 1, p: { blockQ: 16, sink: 16, window: 64 } },
    { H: 2, Hk: 2, seq: 37, kvSeq: 90, d: 32, sel: 2, p: { blockQ: 16, sink: 0, window: 0 } },
  ];
  for (const [n, c] of cases.entries()) {
    const p = dense.indexAttnParams(c.p);
    const qB = Math.ceil(c.seq / p.blockQ), cap = 24;
    const q = randn(c.H * c.seq * c.d, 30 + n), k = randn(c.Hk * c.kvSeq * c.d, 40 + n);
    const v = randn(c.Hk * c.kvSeq * c.d, 50 + n);
    // random ascending unique lists (some entries inside the sink or the window: those count once)
    const idx = new Int32Array(c.sel * qB * cap).fill(-1);
    for (let e = 0; e < c.sel * qB; e++) {
      const picks = [...new Set(Array.from({ length: cap - 4 }, (_, t) => (e * 131 + t * 977) % c.kvSeq))];
      idx.set(picks.sort((a, b) => a - b), e * cap);
    }
    const dm = { H: c.H, Hk: c.Hk, seq: c.seq, kvSeq: c.kvSeq, d: c.d, selHeads: c.sel, kCap: cap };
    const ref = dense.indexAttentionReference(p, q, k, v, idx, dm);
    // brute force: per query, the visible set by definition
    const scale = 1 / Math.sqrt(c.d), off = c.kvSeq - c.seq;
    for (let h = 0; h < c.H; h++) {
      for (let i = 0; i < c.seq; i++) {
        const pos = i + off,
          list = new Set(
            idx.subarray(((c.sel === 1 ? 0 : h) * qB + Math.floor(i / p.blockQ)) * cap).subarray(0, cap),
          );
        const keys: number[] = [];
        for (let j = 0; j <= pos; j++) {
          if (j < p.sink || j > pos - p.window || (list.has(j) && j >= p.sink)) keys.push(j);
        }
        const kb = Math.floor(h / (c.H / c.Hk)) * c.kvSeq * c.d;
        const s = keys.map((j) => {
          let x = 0;
          for (let t = 0; t < c.d; t++) x += q[(h * c.seq + i) * c.d + t] * k[kb + j * c.d + t];
          return x * scale;
        });
        const m = Math.max(...s), l = s.reduce((a, x) => a + Math.exp(x - m), 0);
        assert.ok(Math.abs(ref.lse[h * c.seq + i] - (m + Math.log(l))) < 1e-5, `case ${n} lse h${h} i${i}`);
      }
    }
    const blas = dense.indexAttentionGemm(sgemm.gemm, p, q, k, v, idx, dm);
    assert.ok(relErr(blas.o, ref.o) < 1e-5, `case ${n}: GEMM path o`);
  }
});

test("hip.mask and dense.indexAttn on wgpu = the CPU references (integer Q/K: identical lists)", async () => {
  if (!wgpu) return console.warn("skipped: no wgpu backend");
  const cases = [
    { H: 3, Hk: 1, seq: 700, kvSeq: 700, d: 64, p: { topK: 64, sink: 4, window: 32 } },
    {
      H: 4,
      Hk: 2,
      seq: 333,
      kvSeq: 333,
      d: 128,
      p: { topK: 30, blockK: 3, sink: 5, window: 17, blockQ: 32 },
    },
    { H: 2, Hk: 2, seq: 1, kvSeq: 901, d: 64, p: { topK: 128, sink: 16, window: 64 } },
    {
      H: 2,
      Hk: 1,
      seq: 129,
      kvSeq: 517,
      d: 64,
      p: { topK: 40, blockK: 4, sink: 0, window: 0, blockStrideQ: 1 },
    },
  ];
  for (const [n, c] of cases.entries()) {
    const p = hip.hipParams(c.p);
    const q = ints(c.H * c.seq * c.d, 60 + n), k = ints(c.Hk * c.kvSeq * c.d, 70 + n);
    const ref = hip.hipMaskReference(p, q, k, c.H, c.Hk, c.seq, c.kvSeq, c.d);
    const got = await maskOf(wgpu, p, q, k, c.H, c.Hk, c.seq, c.kvSeq, c.d);
    let diff = 0;
    for (let e = 0; e < ref.indices.length; e++) if (ref.indices[e] !== got.indices[e]) diff++;
    assert.equal(diff, 0, `case ${n}: ${diff} index entries differ`);
    for (let h = 0; h < c.H; h++) {
      assert.ok(Math.abs(got.density[h] - ref.density[h]) < 1e-6, `density h${h}`);
    }
    // attention over the mask
    const v = randn(c.Hk * c.kvSeq * c.d, 80 + n);
    const qB = Math.ceil(c.seq / p.blockQ);
    const dm = { H: c.H, Hk: c.Hk, seq: c.seq, kvSeq: c.kvSeq, d: c.d, selHeads: c.H, kCap: p.topK };
    const want = dense.indexAttentionReference(dense.indexAttnParamsOf(p), q, k, v, ref.indices, dm);
    const g = graph("indexAttn");
    const ins = dense.indexAttn.inputs;
    const r = g.add(dense.indexAttn, dense.indexAttnParamsOf(p), {
      q: g.input("q", ins.q),
      k: g.input("k", ins.k),
      v: g.input("v", ins.v),
      indices: g.input("indices", ins.indices),
    });
    g.output("o", r.o);
    g.output("lse", r.lse);
    const { outputs: out } = await Effect.runPromise(
      run(await Effect.runPromise(g.build()), wgpu, {
        q: hostTensor("f32", ["heads", "seq", "headDim"], [c.H, c.seq, c.d], q),
        k: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [c.Hk, c.kvSeq, c.d], k),
        v: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [c.Hk, c.kvSeq, c.d], v),
        indices: hostTensor("i32", ["selHeads", "qBlocks", "kCap"], [c.H, qB, p.topK], ref.indices),
      }),
    );
    assert.ok(relErr(out.o.data as Float32Array, want.o) < 1e-5, `case ${n}: o`);
    let lseErr = 0;
    for (let e = 0; e < want.lse.length; e++) {
      lseErr = Math.max(lseErr, Math.abs((out.lse.data as Float32Array)[e] - want.lse[e]));
    }
    assert.ok(lseErr < 1e-4, `case ${n}: lse ${lseErr}`);
  }
});

test("bad input: impossible HiP parameters and mis-shaped index lists are typed errors naming the culprit", async () => {
  const dims = { heads: 4, kvHeads: 2, headDim: 64, seq: 300, kvSeq: 300 };
  const t = hip.hipTechnique;
  // topK not a multiple of blockK: the schema refuses the combination, naming topK (helper and technique)
  assert.throws(
    () => hip.hipParams({ topK: 100, blockK: 3 }),
    /parameter "topK": topK 100 is not a multiple/,
  );
  const { decodeTechniqueParams } = await import("@longctx/graph");
  const combo = await Effect.runPromise(Effect.flip(decodeTechniqueParams(t, { topK: 100, blockK: 3 })));
  assert.equal(combo.param, "topK");
  // parameters built by hand (not through the schema) are still refused by the graph, as a typed error
  const loose = { ...hip.hipParams(), topK: 100, blockK: 3 };
  const bad = await Effect.runPromise(Effect.flip(t.graph(loose, dims, "prefill", "f32")));
  assert.equal(bad._tag, "TechniqueError");
  // an unknown or impossible parameter: rejected by the schema, naming it
  const unk = await Effect.runPromise(Effect.flip(decodeTechniqueParams(t, { topk: 512 })));
  assert.equal(unk.param, "topk");
  const neg = await Effect.runPromise(Effect.flip(decodeTechniqueParams(t, { window: -1 })));
  assert.equal(neg.param, "window");
  // an index list of the wrong shape
  const g = graph("indexAttn");
  const ins = dense.indexAttn.inputs;
  const r = g.add(dense.indexAttn, dense.indexAttnParams({ blockQ: 64 }), {
    q: g.input("q", ins.q),
    k: g.input("k", ins.k),
    v: g.input("v", ins.v),
    indices: g.input("indices", ins.indices),
  });
  g.output("o", r.o);
  const built = await Effect.runPromise(g.build());
  const e = await Effect.runPromise(Effect.flip(run(built, wgpu ?? (await cpuBackend()), {
    q: hostTensor("f32", ["heads", "seq", "headDim"], [2, 100, 64], randn(2 * 100 * 64, 1)),
    k: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [1, 100, 64], randn(100 * 64, 2)),
    v: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [1, 100, 64], randn(100 * 64, 3)),
    indices: hostTensor("i32", ["selHeads", "qBlocks", "kCap"], [2, 5, 8], new Int32Array(80).fill(-1)),
  })));
  assert.match(
    String((e as { message?: string }).message),
    /indices: shape \[2,5,8\], want \[2 or 1, 2, kCap ≥ 1\]/,
  );
});
