/**
 * LongSpec's operators (ops/longspec): the token tree (mask, depths, positions, growth, greedy acceptance), the
 * verification attention (prefix part + tree part merged by LSE) against one masked softmax over prefix ∪ tree
 * in float64 — full prefix, sinks + window, one-node trees, an empty prefix, a draft's one-depth call — and
 * `longspec.treeAttn`'s WGSL kernel on wgpu (lavapipe here) against its CPU reference over many shapes.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { type Backend, graph, hostTensor, InputError, lower } from "@longctx/graph";
import { longspec } from "@longctx/ops";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
import { maxAbsDiff, randn, relErr, rng } from "./ref64.ts";
import { openWgpuBackend } from "./gpu_helper.ts";

const sgemm = await loadSgemm();
const wgpu: Backend | undefined = await openWgpuBackend();

/** A random tree of `n` nodes (parent of node i uniform in [0, i)). */
const randomTree = (n: number, seed: number): Int32Array => {
  const r = rng(seed);
  return Int32Array.from({ length: n }, (_, i) => i === 0 ? -1 : Math.floor(r() * i));
};

/**
 * One masked softmax in float64: the query of node `t = n − seq + i` sees the prefix rows `rows` and the tree
 * rows `base + a` of its ancestors-or-self `a`.
 */
const maskedSoftmax64 = (
  q: Float32Array,
  kc: Float32Array,
  vc: Float32Array,
  parents: Int32Array,
  s: { heads: number; kvHeads: number; seq: number; headDim: number; capacity: number },
  pos: number,
  rows: readonly number[],
) => {
  const { heads: H, kvHeads: KH, seq, headDim: D, capacity: C } = s;
  const n = parents.length, base = pos + seq - n, scale = 1 / Math.sqrt(D);
  const mask = longspec.treeMask(parents);
  const o = new Float64Array(H * seq * D), lse = new Float64Array(H * seq);
  for (let h = 0; h < H; h++) {
    const kb = Math.floor(h / (H / KH)) * C * D;
    for (let i = 0; i < seq; i++) {
      const t = n - seq + i;
      const keys = [...rows];
      for (let a = 0; a < n; a++) if (mask[t * n + a]) keys.push(base + a);
      const sc = keys.map((j) => {
        let d = 0;
        for (let x = 0; x < D; x++) d += q[(h * seq + i) * D + x] * kc[kb + j * D + x];
        return d * scale;
      });
      const m = Math.max(...sc), e = sc.map((x) => Math.exp(x - m)), l = e.reduce((a, b) => a + b, 0);
      for (let x = 0; x < D; x++) {
        let acc = 0;
        for (const [c, j] of keys.entries()) acc += e[c] * vc[kb + j * D + x];
        o[(h * seq + i) * D + x] = acc / l;
      }
      lse[h * seq + i] = m + Math.log(l);
    }
  }
  return { o, lse };
};

test("longspec tree: mask, depths, positions base + depth; bad parents and shapes are InputError", () => {
  const parents = Int32Array.of(-1, 0, 0, 1, 1, 2, 3);
  assert.deepEqual([...longspec.treeDepths(parents)], [0, 1, 1, 2, 2, 2, 3]);
  assert.deepEqual([...longspec.treePositions(100, longspec.treeDepths(parents))], [
    100,
    101,
    101,
    102,
    102,
    102,
    103,
  ]);
  const m = longspec.treeMask(parents), n = 7;
  // node 6's root path is 6 → 3 → 1 → 0
  assert.deepEqual([...m.subarray(6 * n, 7 * n)], [1, 1, 0, 1, 0, 0, 1]);
  assert.deepEqual([...m.subarray(5 * n, 6 * n)], [1, 0, 1, 0, 0, 1, 0]);
  assert.equal(longspec.treeNodeCount(longspec.DEFAULT_TREE_SHAPE), 69);
  assert.equal(longspec.treeNodeCount([]), 1);
  assert.throws(() => longspec.treeDepths(Int32Array.of(-1, 1)), InputError);
  assert.throws(() => longspec.treeDepths(Int32Array.of(0)), InputError);
  assert.throws(() => longspec.checkTreeShape([4, 0]), InputError);
  assert.throws(() => longspec.checkTreeShape([2.5]), InputError);
});

test("longspec tree: topChildren is the global top-k by cumulative log-prob; acceptGreedy follows the target", () => {
  const vocab = 11, r = rng(3);
  const logits = Float32Array.from({ length: 3 * vocab }, () => 4 * r());
  const nodes = [2, 5, 7], scores = [-0.5, -1.25, -0.1];
  const got = longspec.topChildren(logits, vocab, nodes, scores, 6);
  // brute force
  const all: { parent: number; token: number; score: number }[] = [];
  for (let row = 0; row < 3; row++) {
    const x = [...logits.subarray(row * vocab, (row + 1) * vocab)];
    const lse = Math.log(x.reduce((a, b) => a + Math.exp(b), 0));
    for (let j = 0; j < vocab; j++) {
      all.push({ parent: nodes[row], token: j, score: scores[row] + x[j] - lse });
    }
  }
  all.sort((a, b) => b.score - a.score);
  assert.equal(got.length, 6);
  for (const [i, c] of got.entries()) {
    assert.equal(c.parent, all[i].parent);
    assert.equal(c.token, all[i].token);
    assert.ok(Math.abs(c.score - all[i].score) < 1e-9);
  }
  // acceptance: root 0 → (1: tok 5, 2: tok 6) ; 1 → (3: tok 7) ; 3 → (4: tok 9)
  const tree = {
    tokens: Int32Array.of(42, 5, 6, 7, 9),
    parents: Int32Array.of(-1, 0, 0, 1, 3),
    depths: Int32Array.of(0, 1, 1, 2, 3),
  };
  const a = longspec.acceptGreedy(tree, [5, 7, 0, 9, 13]);
  assert.deepEqual(a.path, [0, 1, 3, 4]);
  assert.deepEqual(a.tokens, [5, 7, 9, 13]);
  const b = longspec.acceptGreedy(tree, [6, 0, 8, 0, 0]);
  assert.deepEqual(b.path, [0, 2]);
  assert.deepEqual(b.tokens, [6, 8]);
  const none = longspec.acceptGreedy(tree, [1, 0, 0, 0, 0]);
  assert.deepEqual(none.path, [0]);
  assert.deepEqual(none.tokens, [1]);
  const twins = { ...tree, tokens: Int32Array.of(42, 5, 5, 7, 9) };
  assert.throws(() => longspec.acceptGreedy(twins, [5, 0, 0, 0, 0]), InputError);
});

type Case = {
  heads: number;
  kvHeads: number;
  d: number;
  prefix: number;
  tree: number;
  seq: number;
  cap: number;
};
const cases: Case[] = [
  { heads: 9, kvHeads: 3, d: 64, prefix: 137, tree: 69, seq: 69, cap: 220 },
  { heads: 4, kvHeads: 4, d: 16, prefix: 0, tree: 9, seq: 9, cap: 9 }, // empty prefix
  { heads: 8, kvHeads: 2, d: 32, prefix: 50, tree: 1, seq: 1, cap: 51 }, // one-node tree
  { heads: 4, kvHeads: 1, d: 8, prefix: 0, tree: 1, seq: 1, cap: 3 }, // one node, empty prefix
  { heads: 6, kvHeads: 3, d: 24, prefix: 33, tree: 21, seq: 16, cap: 60 }, // a draft's last depth
  { heads: 8, kvHeads: 8, d: 64, prefix: 300, tree: 150, seq: 150, cap: 460 }, // two query blocks
];

test("longspec verifyAttention = one masked softmax over prefix ∪ tree (float64), f64 and GEMM paths", () => {
  for (const [ci, c] of cases.entries()) {
    const s = { heads: c.heads, kvHeads: c.kvHeads, seq: c.seq, headDim: c.d, capacity: c.cap };
    const q = randn(c.heads * c.seq * c.d, 10 + ci), k = randn(c.kvHeads * c.cap * c.d, 20 + ci);
    const v = randn(c.kvHeads * c.cap * c.d, 30 + ci);
    const parents = randomTree(c.tree, 40 + ci), pos = c.prefix + c.tree - c.seq;
    const views: [string, longspec.PrefixView][] = [
      ["full", longspec.FULL_PREFIX],
      ["sinks+window", { sinks: 4, window: 17 }],
      ["sinks+window+selected", { sinks: 2, window: 5, selected: [7, 11, 12, 30] }],
      // more than 8 row ranges: the GEMM path gathers them (dense.indexAttentionGemm)
      ["scattered", { sinks: 1, window: 3, selected: Array.from({ length: 40 }, (_, j) => 3 * j + 2) }],
    ];
    for (const [name, view] of views) {
      const rows = [...longspec.prefixRows(view, c.prefix)];
      const want = maskedSoftmax64(q, k, v, parents, s, pos, rows);
      for (const gemm of [undefined, sgemm.gemm]) {
        const got = longspec.verifyAttention(q, k, v, parents, s, pos, 1 / Math.sqrt(c.d), view, gemm);
        const e = relErr(got.o, want.o), el = maxAbsDiff(got.lse, want.lse);
        const tol = gemm ? 1e-5 : 1e-6;
        assert.ok(e < tol, `${JSON.stringify(c)} ${name} ${gemm ? "gemm" : "f64"}: o error ${e}`);
        assert.ok(el < 1e-4, `${JSON.stringify(c)} ${name}: lse error ${el}`);
      }
    }
  }
  // rows outside the cache
  const s = { heads: 2, kvHeads: 1, seq: 4, headDim: 8, capacity: 10 };
  assert.throws(
    () => longspec.verifyAttention(randn(64, 1), randn(80, 2), randn(80, 3), randomTree(5, 1), s, 8, 0.3),
    RangeError,
  );
  assert.throws(
    () => longspec.verifyAttention(randn(64, 1), randn(80, 2), randn(80, 3), randomTree(3, 1), s, 0, 0.3),
    RangeError,
  );
});

const runTree = async (backend: Backend, c: Case, parents: Int32Array, seed: number) => {
  const g = graph("treeAttn");
  const op = longspec.treeAttn;
  const q = g.input("q", op.inputs.q), kc = g.input("kCache", op.inputs.kCache);
  const vc = g.input("vCache", op.inputs.vCache), par = g.input("parents", op.inputs.parents);
  const r = g.add(op, { scale: 0 }, { q, kCache: kc, vCache: vc, parents: par });
  g.output("o", r.o).output("lse", r.lse);
  const gr = await Effect.runPromise(g.build());
  const qd = { ...op.inputs.q, shape: [c.heads, c.seq, c.d] };
  const kd = { ...op.inputs.kCache, shape: [c.kvHeads, c.cap, c.d] };
  const pd = { ...op.inputs.parents, shape: [c.tree] };
  const p = await Effect.runPromise(lower(gr, backend, { q: qd, kCache: kd, vCache: kd, parents: pd }));
  const w = (name: string, d: { dims: readonly string[]; shape: readonly number[] }, x: Float32Array) =>
    Effect.runPromise(p.write(name, hostTensor("f32", d.dims, d.shape, x)));
  await w("q", qd, randn(c.heads * c.seq * c.d, seed));
  await w("kCache", kd, randn(c.kvHeads * c.cap * c.d, seed + 1));
  await w("vCache", kd, randn(c.kvHeads * c.cap * c.d, seed + 2));
  await Effect.runPromise(p.write("parents", hostTensor("i32", pd.dims, pd.shape, parents)));
  await Effect.runPromise(p.run({ scalars: { pos: c.prefix + c.tree - c.seq } }));
  const o = (await Effect.runPromise(p.read("o"))).data as Float32Array;
  const lse = (await Effect.runPromise(p.read("lse"))).data as Float32Array;
  p.release();
  return { o, lse };
};

test(
  "longspec.treeAttn WGSL kernel on wgpu vs the CPU reference: trees 1 … 200 nodes, GQA 1/3/4/8, d 8 … 128",
  async () => {
    const cpu = await Effect.runPromise(makeCpuBackend());
    const gpuCases: Case[] = [
      ...cases,
      { heads: 32, kvHeads: 8, d: 128, prefix: 70, tree: 69, seq: 69, cap: 139 },
      { heads: 3, kvHeads: 1, d: 40, prefix: 5, tree: 200, seq: 37, cap: 211 },
      { heads: 9, kvHeads: 3, d: 64, prefix: 17, tree: 5, seq: 1, cap: 30 },
      { heads: 12, kvHeads: 4, d: 96, prefix: 1, tree: 65, seq: 65, cap: 66 },
    ];
    for (const [ci, c] of gpuCases.entries()) {
      // a random tree and a chain (the deepest paths) per shape
      for (
        const parents of [
          randomTree(c.tree, 60 + ci),
          Int32Array.from({ length: c.tree }, (_, i) => i - 1),
        ]
      ) {
        const got = await runTree(wgpu!, c, parents, 70 + ci);
        const want = await runTree(cpu, c, parents, 70 + ci);
        const e = relErr(got.o, want.o), el = maxAbsDiff(got.lse, want.lse);
        assert.ok(e < 1e-5, `${JSON.stringify(c)}: o error ${e}`);
        assert.ok(el < 1e-4, `${JSON.stringify(c)}: lse error ${el}`);
      }
    }
  },
  { ignore: !wgpu },
);

test("longspec.treeAttn: seq > tree and bad GQA are ShapeErrors; a tree past the cache or a cyclic parent list fails the run", async () => {
  const cpu = await Effect.runPromise(makeCpuBackend());
  const op = longspec.treeAttn, p = longspec.treeAttnParams();
  const d = (shape: number[]) => ({ dtype: "f32" as const, dims: [], shape });
  const parents = { dtype: "i32" as const, dims: ["tree"], shape: [4] };
  const r1 = await Effect.runPromise(Effect.flip(
    op.infer(p, { q: d([2, 5, 8]), kCache: d([1, 9, 8]), vCache: d([1, 9, 8]), parents } as never),
  ));
  assert.equal(r1._tag, "ShapeError");
  const r2 = await Effect.runPromise(Effect.flip(
    op.infer(p, { q: d([3, 2, 8]), kCache: d([2, 9, 8]), vCache: d([2, 9, 8]), parents } as never),
  ));
  assert.equal(r2._tag, "ShapeError");
  // pos 3 + 4 rows > capacity 6
  const c: Case = { heads: 2, kvHeads: 1, d: 8, prefix: 3, tree: 4, seq: 4, cap: 6 };
  const bad = await runTree(cpu, c, randomTree(4, 1), 5).then(() => "ran", (e) => String(e));
  assert.notEqual(bad, "ran");
  // a parent list that is not a tree: the CPU reference refuses it; the WGSL kernel ends its walk (no hang)
  const ok: Case = { ...c, prefix: 0, cap: 6 };
  const cyclic = Int32Array.of(0, 3, 0, 1);
  assert.notEqual(await runTree(cpu, ok, cyclic, 5).then(() => "ran", (e) => String(e)), "ran");
  if (wgpu) assert.equal(await runTree(wgpu, ok, cyclic, 5).then(() => "ran"), "ran");
});
