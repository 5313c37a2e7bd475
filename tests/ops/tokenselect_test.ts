/**
 * TokenSelect (`tokenselect.select`, `tokenselect.compact`, the `tokenselect` graph): the selection's votes
 * against an independent float64 derivation from un-rotated Q/K (RoPE angles from `Math.cos`, not the tables),
 * the compacted list against keys rotated directly to their list index, the whole graph on the cpu backend
 * against float64 attention over the compacted list, the dense rule, the even-kernel pooling, the GQA head
 * mappings, and the wgpu kernels (lavapipe here) against the CPU references on many shapes.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import {
  type Backend,
  type DeviceBuffer,
  type HostTensor,
  hostTensor,
  lower,
  run,
  type TensorDesc,
} from "@longctx/graph";
import { tokenselect } from "@longctx/ops";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { randn, relErr } from "./ref64.ts";
import { compactFromRaw, rope64, type TsCase, tsProblem, votesFromRaw } from "./tokenselect_ref.ts";
import { openWgpuBackend } from "./gpu_helper.ts";

const wgpu: Backend | undefined = await openWgpuBackend();
const cpu = await Effect.runPromise(makeCpuBackend());

type Case = TsCase & { readonly p: Partial<tokenselect.TokenSelectParams> };
const problem = tsProblem;

/** The whole TokenSelect graph on `backend`: `o`, `lse`, `indices`. */
const runGraph = async (
  backend: Backend,
  p: tokenselect.TokenSelectParams,
  c: Case,
  x: ReturnType<typeof problem>,
) => {
  const g = await Effect.runPromise(tokenselect.tokenSelectGraph(p));
  const kv = (data: Float32Array) =>
    hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [c.Hk, c.cap, c.d], data);
  const tab = (data: Float32Array) => hostTensor("f32", ["positions", "half"], [c.cap, c.d / 2], data);
  const { outputs } = await Effect.runPromise(
    run(g, backend, {
      q: hostTensor("f32", ["heads", "seq", "headDim"], [c.H, c.seq, c.d], x.q),
      k: kv(x.k),
      v: kv(x.v),
      ropeCos: tab(x.cos),
      ropeSin: tab(x.sin),
    }, { scalars: { pos: c.pos } }),
  );
  return {
    o: outputs.o.data as Float32Array,
    lse: outputs.lse.data as Float32Array,
    indices: outputs.indices.data as Int32Array,
  };
};

/** Float64 attention over the compacted list built from the raw Q/K ({@link compactFromRaw}), bottom-right causal. */
const compactedAttention64 = (
  p: tokenselect.TokenSelectParams,
  c: Case,
  x: ReturnType<typeof problem>,
  indices: Int32Array,
): Float64Array => {
  const { H, Hk, seq, d } = c, R = tokenselect.listRows(p), G = H / Hk;
  const l = compactFromRaw(p, c, x, indices);
  const o = new Float64Array(H * seq * d);
  for (let h = 0; h < H; h++) {
    const kb = Math.floor(h / G) * R * d;
    for (let j = 0; j < seq; j++) {
      const at = l.rows - seq + j, qo = (h * seq + j) * d;
      const s = Array.from({ length: at + 1 }, (_, r) => {
        let dot = 0;
        for (let e = 0; e < d; e++) dot += l.q[qo + e] * l.k[kb + r * d + e];
        return dot / Math.sqrt(d);
      });
      const m = Math.max(...s), w = s.map((y) => Math.exp(y - m)), z = w.reduce((a, b) => a + b, 0);
      for (let r = 0; r <= at; r++) {
        for (let e = 0; e < d; e++) o[qo + e] += (w[r] / z) * l.v[kb + r * d + e];
      }
    }
  }
  return o;
};

test("tokenselect.select (CPU): votes = an independent float64 derivation from un-rotated Q/K; top-k rule", () => {
  const cases: Case[] = [
    { H: 4, Hk: 2, seq: 1, pos: 300, cap: 320, d: 16, p: { nInit: 8, nLocal: 32, topK: 40 } },
    {
      H: 6,
      Hk: 2,
      seq: 7,
      pos: 201,
      cap: 240,
      d: 8,
      p: { nInit: 3, nLocal: 16, topK: 25, headMap: "modulo" },
    },
  ];
  for (const [n, c] of cases.entries()) {
    const p = tokenselect.tokenSelectParams(c.p);
    const x = problem(c, 10 + n);
    const got = tokenselect.selectVotes(p, x.q, x.k, x.cos, x.sin, { ...c });
    const want = votesFromRaw(p, c, x.qRaw, x.kRaw);
    assert.equal(got.length, want.length);
    assert.ok(
      relErr(Float32Array.from(got), want) < 1e-5,
      `case ${n}: votes ${relErr(Float32Array.from(got), want)}`,
    );
    const sum = got.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - c.H) < 1e-9, `votes sum to the head count (${sum})`);
    const idx = tokenselect.selectReference(p, x.q, x.k, x.cos, x.sin, { ...c });
    assert.equal(idx.length, p.topK);
    for (let e = 1; e < idx.length; e++) assert.ok(idx[e] > idx[e - 1], "ascending, unique");
    const g = tokenselect.selectGeometry(p, c.pos, c.seq);
    assert.ok(idx[0] >= p.nInit && idx[idx.length - 1] < g.n - p.nLocal, "inside the candidates");
    // the k-th largest vote bounds every picked one from below and every other one from above
    const picked = new Set(idx);
    const kth = Math.min(...[...picked].map((t) => got[t - p.nInit]));
    for (let i = 0; i < got.length; i++) if (!picked.has(i + p.nInit)) assert.ok(got[i] <= kth);
  }
  // ties: the lower index wins, output ascending
  assert.deepEqual([...tokenselect.topKAscending([1, 3, 3, 2, 3], 2, 10)], [11, 12]);
  // the grouped and the modulo (released kernel) head maps differ for GQA
  assert.equal(tokenselect.selectKvHead("grouped", 1, 8, 2), 0);
  assert.equal(tokenselect.selectKvHead("modulo", 1, 8, 2), 1);
});

test("tokenselect.select (CPU): dense below nInit + topK + nLocal; even pooling never picks the last candidate", () => {
  const c: Case = { H: 2, Hk: 1, seq: 1, pos: 99, cap: 128, d: 8, p: { nInit: 4, nLocal: 16, topK: 80 } };
  const p = tokenselect.tokenSelectParams(c.p);
  const x = problem(c, 3);
  assert.ok(tokenselect.selectGeometry(p, 99, 1).dense);
  assert.ok(tokenselect.selectReference(p, x.q, x.k, x.cos, x.sin, { ...c }).every((t) => t === -1));
  // pooled with an even kernel: one fewer entry; with topK = pooled every candidate but the last is picked
  const pe = tokenselect.tokenSelectParams({ nInit: 4, nLocal: 16, topK: 9, kernelSize: 6 });
  const ge = tokenselect.selectGeometry(pe, 29, 1); // n 30: candidates [4, 14)
  assert.equal(ge.candidates, 10);
  assert.equal(ge.pooled, 9);
  const idx = tokenselect.selectReference(pe, x.q, x.k, x.cos, x.sin, { ...c, pos: 29 });
  assert.deepEqual([...idx], [4, 5, 6, 7, 8, 9, 10, 11, 12]);
  // an odd kernel keeps the length, and pooling smooths: a planted peak lifts its neighbours
  const po = tokenselect.tokenSelectParams({ nInit: 4, nLocal: 16, topK: 3, kernelSize: 3 });
  const votes = tokenselect.selectVotes(po, x.q, x.k, x.cos, x.sin, { ...c, pos: 29 });
  assert.equal(votes.length, 10);
});

test("tokenselect.compact (CPU): rows = keys rotated directly to their list index; queries to the list's end", () => {
  const c: Case = { H: 4, Hk: 2, seq: 3, pos: 140, cap: 160, d: 16, p: { nInit: 5, nLocal: 20, topK: 30 } };
  const p = tokenselect.tokenSelectParams(c.p);
  const x = problem(c, 21);
  const idx = tokenselect.selectReference(p, x.q, x.k, x.cos, x.sin, { ...c });
  const r = tokenselect.compactReference(p, x.q, x.k, x.v, x.cos, x.sin, idx, { ...c });
  const R = tokenselect.listRows(p), n = c.pos + c.seq;
  let err = 0;
  for (let hk = 0; hk < c.Hk; hk++) {
    for (let row = 0; row < R; row++) {
      const t = tokenselect.listToken(p, idx, n, false, row);
      const want = rope64(x.kRaw.subarray((hk * c.cap + t) * c.d, (hk * c.cap + t + 1) * c.d), row, c.d);
      for (let e = 0; e < c.d; e++) err = Math.max(err, Math.abs(r.k[(hk * R + row) * c.d + e] - want[e]));
      assert.equal(r.v[(hk * R + row) * c.d], x.v[(hk * c.cap + t) * c.d], "values gathered");
    }
  }
  for (let h = 0; h < c.H; h++) {
    for (let j = 0; j < c.seq; j++) {
      const want = rope64(
        x.qRaw.subarray((h * c.seq + j) * c.d, (h * c.seq + j + 1) * c.d),
        R - c.seq + j,
        c.d,
      );
      for (let e = 0; e < c.d; e++) err = Math.max(err, Math.abs(r.q[(h * c.seq + j) * c.d + e] - want[e]));
    }
  }
  assert.ok(err < 2e-6, `max |Δ| ${err}`);
  // the list: sink, the selection, the window, in token order
  assert.equal(tokenselect.listToken(p, idx, n, false, 0), 0);
  assert.equal(tokenselect.listToken(p, idx, n, false, p.nInit), idx[0]);
  assert.equal(tokenselect.listToken(p, idx, n, false, R - 1), n - 1);
  // original positions: a gather
  const po = tokenselect.tokenSelectParams({ ...c.p, positions: "original" });
  const ro = tokenselect.compactReference(po, x.q, x.k, x.v, x.cos, x.sin, idx, { ...c });
  assert.deepEqual(ro.q, x.q);
  const t = idx[3];
  assert.deepEqual(
    ro.k.subarray((p.nInit + 3) * c.d, (p.nInit + 4) * c.d),
    x.k.subarray(t * c.d, (t + 1) * c.d),
  );
});

test("the tokenselect graph (cpu backend) = float64 attention over the compacted list; dense when it all fits", async () => {
  const cases: Case[] = [
    { H: 4, Hk: 2, seq: 1, pos: 250, cap: 260, d: 16, p: { nInit: 6, nLocal: 24, topK: 32 } },
    { H: 3, Hk: 1, seq: 9, pos: 181, cap: 200, d: 8, p: { nInit: 2, nLocal: 12, topK: 20, kernelSize: 5 } },
    { H: 2, Hk: 2, seq: 5, pos: 40, cap: 64, d: 8, p: { nInit: 4, nLocal: 16, topK: 48 } }, // dense
  ];
  for (const [n, c] of cases.entries()) {
    const p = tokenselect.tokenSelectParams(c.p);
    const x = problem(c, 40 + n);
    const got = await runGraph(cpu, p, c, x);
    assert.deepEqual(got.indices, tokenselect.selectReference(p, x.q, x.k, x.cos, x.sin, { ...c }));
    const want = compactedAttention64(p, c, x, got.indices);
    const e = relErr(got.o, want);
    assert.ok(e < 1e-5, `case ${n}: o ${e}`);
  }
});

test("tokenselect kernels on wgpu = the CPU references (selection, list, attention) over many shapes", async () => {
  if (!wgpu) return console.warn("skipped: no wgpu backend");
  const cases: Case[] = [
    { H: 4, Hk: 2, seq: 1, pos: 1500, cap: 1600, d: 64, p: { nInit: 16, nLocal: 64, topK: 256 } },
    { H: 9, Hk: 3, seq: 1, pos: 3001, cap: 3100, d: 64, p: { nInit: 128, nLocal: 512, topK: 700 } },
    { H: 8, Hk: 2, seq: 37, pos: 2222, cap: 2300, d: 128, p: { nInit: 7, nLocal: 64, topK: 333 } },
    {
      H: 6,
      Hk: 6,
      seq: 1,
      pos: 999,
      cap: 1024,
      d: 64,
      p: { nInit: 0, nLocal: 33, topK: 129, kernelSize: 6 },
    },
    { H: 8, Hk: 2, seq: 1, pos: 1800, cap: 1900, d: 64, p: { topK: 300, kernelSize: 5, headMap: "modulo" } },
    {
      H: 4,
      Hk: 1,
      seq: 16,
      pos: 2047,
      cap: 2100,
      d: 64,
      p: { nInit: 32, nLocal: 128, topK: 512, positions: "original" },
    },
    { H: 4, Hk: 2, seq: 3, pos: 500, cap: 640, d: 64, p: { nInit: 16, nLocal: 64, topK: 512 } }, // dense
  ];
  for (const [n, c] of cases.entries()) {
    const p = tokenselect.tokenSelectParams(c.p);
    const x = problem(c, 70 + n);
    const ref = await runGraph(cpu, p, c, x);
    const got = await runGraph(wgpu, p, c, x);
    let diff = 0;
    for (let e = 0; e < ref.indices.length; e++) if (ref.indices[e] !== got.indices[e]) diff++;
    assert.equal(diff, 0, `case ${n}: ${diff} of ${p.topK} selected tokens differ`);
    const e = relErr(got.o, ref.o);
    assert.ok(e < 1e-4, `case ${n}: o ${e}`);
  }
});

test("bad input: a call longer than nLocal, mis-shaped tables and impossible parameters are typed errors", async () => {
  assert.throws(() => tokenselect.tokenSelectParams({ topK: 0 }), /topK/);
  assert.throws(() => tokenselect.tokenSelectParams({ positions: "rope" as never }), /positions/);
  const p = tokenselect.tokenSelectParams({ nLocal: 16 });
  const g = await Effect.runPromise(tokenselect.tokenSelectGraph(p));
  const c: Case = { H: 2, Hk: 1, seq: 17, pos: 0, cap: 64, d: 8, p: {} };
  const x = problem(c, 1);
  const r = await Effect.runPromise(
    Effect.flip(
      run(g, cpu, {
        q: hostTensor("f32", ["heads", "seq", "headDim"], [2, 17, 8], x.q),
        k: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [1, 64, 8], x.k),
        v: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [1, 64, 8], x.v),
        ropeCos: hostTensor("f32", ["positions", "half"], [64, 4], x.cos),
        ropeSin: hostTensor("f32", ["positions", "half"], [64, 4], x.sin),
      }, { scalars: { pos: 0 } }),
    ),
  );
  assert.equal(r._tag, "ShapeError");
  assert.match((r as { message: string }).message, /nLocal/);
  assert.match((r as { hint: string }).hint, /chunks of at most nLocal = 16/);
  const t = tokenselect.tokenSelectTechnique;
  const e = await Effect.runPromise(
    Effect.flip(t.graph(p, { heads: 2, kvHeads: 1, headDim: 8, seq: 1, kvSeq: 64 }, "decode", "f16")),
  );
  assert.equal((e as { reason?: string }).reason, "unsupported-phase");
  // a whole-prompt prefill graph is the dense delegate's
  const pg = await Effect.runPromise(
    t.graph(p, { heads: 2, kvHeads: 1, headDim: 8, seq: 64, kvSeq: 64 }, "prefill"),
  );
  assert.deepEqual(pg.nodes.map((x) => x.op.name), ["dense.attn"]);
});

test("the Selection Cache: θ > 1 never reuses (= no cache), θ = −1 reuses the first selection; wgpu = cpu", async () => {
  const c: Case = {
    H: 4,
    Hk: 2,
    seq: 1,
    pos: 1500,
    cap: 1600,
    d: 64,
    p: { nInit: 16, nLocal: 64, topK: 256 },
  };
  const x = problem(c, 90);
  const steps = 4;
  /** Decode steps at pos, pos + 1, … on one lowered program (its state kept between runs). */
  const decode = async (backend: Backend, p: tokenselect.TokenSelectParams) => {
    const g = await Effect.runPromise(tokenselect.tokenSelectGraph(p));
    const q = (j: number) =>
      hostTensor("f32", ["heads", "seq", "headDim"], [c.H, 1, c.d], randn(c.H * c.d, 500 + j, 0.6));
    const kv = (data: Float32Array) =>
      hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [c.Hk, c.cap, c.d], data);
    const tab = (data: Float32Array) => hostTensor("f32", ["positions", "half"], [c.cap, c.d / 2], data);
    const inputs: Record<string, HostTensor> = {
      q: q(0),
      k: kv(x.k),
      v: kv(x.v),
      ropeCos: tab(x.cos),
      ropeSin: tab(x.sin),
    };
    // the state as the forward holds it: buffers bound to the program
    const bind: Record<string, DeviceBuffer> = {};
    const descs: Record<string, TensorDesc> = Object.fromEntries(
      Object.entries(inputs).map(([k, t]) => [k, t.desc]),
    );
    if (p.selectionCache) {
      const state = {
        selQ: { dtype: "f32", dims: ["heads", "headDim"], shape: [c.H, c.d] },
        selIdx: { dtype: "i32", dims: ["selHeads", "qBlocks", "kCap"], shape: [1, 1, p.topK] },
        selStats: { dtype: "u32", dims: ["stats"], shape: [4] },
      } as const;
      for (const [k, d] of Object.entries(state)) {
        const bytes = 4 * d.shape.reduce((a: number, b: number) => a * b, 1);
        bind[k] = await Effect.runPromise(backend.allocate(bytes, k));
        await Effect.runPromise(backend.upload(bind[k], new Uint8Array(bytes)));
        descs[k] = d;
      }
    }
    const prog = await Effect.runPromise(lower(g, backend, descs, { bind }));
    for (const [k, t] of Object.entries(inputs)) await Effect.runPromise(prog.write(k, t));
    const out: Int32Array[] = [];
    for (let s = 0; s < steps; s++) {
      // raw queries: step 1 near step 0's, step 2 a new one, step 3 near step 2's (the Selection Cache's
      // cases: reuse, select, reuse at θ 0.9), each after RoPE at its position
      const raw = randn(c.H * c.d, s < 2 ? 600 : 601, 0.6), noise = randn(c.H * c.d, 700 + s, 0.01);
      const qs = new Float32Array(c.H * c.d);
      for (let h = 0; h < c.H; h++) {
        const r = raw.subarray(h * c.d, (h + 1) * c.d).map((v, e) => v + (s % 2) * noise[h * c.d + e]);
        qs.set(rope64(r, c.pos + s, c.d), h * c.d);
      }
      await Effect.runPromise(
        prog.write("q", hostTensor("f32", ["heads", "seq", "headDim"], [c.H, 1, c.d], qs)),
      );
      await Effect.runPromise(prog.run({ scalars: { pos: c.pos + s } }));
      out.push(Int32Array.from((await Effect.runPromise(prog.read("indices"))).data as Int32Array));
    }
    const stats = p.selectionCache
      ? Array.from(new Uint32Array((await Effect.runPromise(backend.download(bind.selStats))).slice().buffer))
      : [];
    prog.release();
    for (const b of Object.values(bind)) backend.release(b);
    return { out, stats };
  };
  const base = tokenselect.tokenSelectParams(c.p);
  const never = tokenselect.tokenSelectParams({ ...c.p, selectionCache: true, cacheThreshold: 1.5 });
  const always = tokenselect.tokenSelectParams({ ...c.p, selectionCache: true, cacheThreshold: -1 });
  const official = tokenselect.tokenSelectParams({ ...c.p, selectionCache: true });
  for (const backend of [cpu, ...(wgpu ? [wgpu] : [])]) {
    const b = await decode(backend, base),
      n = await decode(backend, never),
      a = await decode(backend, always);
    for (let s = 0; s < steps; s++) {
      assert.deepEqual(n.out[s], b.out[s], `step ${s}: θ > 1 selects every step`);
    }
    assert.deepEqual(n.stats.slice(0, 2), [0, steps]);
    for (let s = 1; s < steps; s++) {
      assert.deepEqual(a.out[s], a.out[0], `step ${s}: θ = −1 reuses step 0's list`);
    }
    assert.deepEqual(a.stats.slice(0, 2), [steps - 1, steps]);
    assert.ok(b.out.some((o) => o.join() !== b.out[0].join()), "without the cache the selection moves");
    const o = await decode(backend, official);
    assert.deepEqual(o.stats.slice(0, 2), [2, steps], "θ 0.9: steps 1 and 3 reuse, 0 and 2 select");
    assert.deepEqual(o.out[0], b.out[0], `${backend.kind}: step 0 selects as without the cache`);
    assert.deepEqual(o.out[2], b.out[2], `${backend.kind}: step 2 selects as without the cache`);
    assert.deepEqual(o.out[1], o.out[0]);
    assert.deepEqual(o.out[3], o.out[2]);
    assert.notDeepEqual(o.out[2], o.out[0]);
  }
  if (wgpu) {
    const bc = await decode(cpu, base), bw = await decode(wgpu, base);
    for (let s = 0; s < steps; s++) assert.deepEqual(bw.out[s], bc.out[s], `no cache, step ${s}: wgpu = cpu`);
    const gc = await decode(cpu, official), gw = await decode(wgpu, official);
    console.log(`  Selection Cache θ 0.9: cpu ${gc.stats}, wgpu ${gw.stats}`);
    assert.deepEqual(gw.stats, gc.stats, "the same hits on both backends");
    for (let s = 0; s < steps; s++) assert.deepEqual(gw.out[s], gc.out[s], `step ${s}`);
  }
});

test("the density by construction: 1 while the list holds every token; the list's rows per query after", () => {
  const p = tokenselect.tokenSelectParams({ nInit: 4, nLocal: 8, topK: 8 }); // R = 20
  assert.equal(tokenselect.tokenSelectConstructedDensity(p, { seq: 16, kvSeq: 16 }), 1);
  assert.equal(tokenselect.tokenSelectConstructedDensity(p, { seq: 1, kvSeq: 10 }), 1);
  assert.equal(tokenselect.tokenSelectConstructedDensity(p, { seq: 1, kvSeq: 100 }), 20 / 100);
  // 24 prompt tokens in calls of 8: the third call (n = 24 > 20) sees 12 + j + 1 rows for query j
  let seen = 0, causal = 0;
  for (let q = 0; q < 24; q++) {
    seen += q < 16 ? q + 1 : 20 - 8 + (q - 16) + 1;
    causal += q + 1;
  }
  assert.ok(
    Math.abs(tokenselect.tokenSelectConstructedDensity(p, { seq: 24, kvSeq: 24 }) - seen / causal) < 1e-12,
  );
});

test("bad input: a pos past the cache or the RoPE table is a typed ShapeError, not a reference bug", async () => {
  const p = tokenselect.tokenSelectParams({ nInit: 2, nLocal: 16, topK: 8 });
  const g = await Effect.runPromise(tokenselect.tokenSelectGraph(p));
  const c: Case = { H: 2, Hk: 1, seq: 4, pos: 0, cap: 64, d: 64, p: {} };
  const x = problem(c, 5);
  const inputs = (positions: number) => ({
    q: hostTensor("f32", ["heads", "seq", "headDim"], [2, 4, 64], x.q),
    k: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [1, 64, 64], x.k),
    v: hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [1, 64, 64], x.v),
    ropeCos: hostTensor("f32", ["positions", "half"], [positions, 32], x.cos.subarray(0, positions * 32)),
    ropeSin: hostTensor("f32", ["positions", "half"], [positions, 32], x.sin.subarray(0, positions * 32)),
  });
  for (
    const [positions, pos, want] of [[64, 61, /exceed the cache capacity 64/], [
      32,
      40,
      /RoPE table/,
    ]] as const
  ) {
    for (const backend of [cpu, ...(wgpu ? [wgpu] : [])]) {
      const e = await Effect.runPromise(
        Effect.flip(run(g, backend, inputs(positions), { scalars: { pos } })),
      );
      assert.equal(e._tag, "ShapeError", `${backend.kind} pos ${pos}: ${e.message}`);
      assert.match(e.message, want);
    }
  }
});
