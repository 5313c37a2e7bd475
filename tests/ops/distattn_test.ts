/**
 * DistAttention's operators (`ops/distattn/`): `distattn.partialAttn` over the blocks of a random partition of
 * the keys (1 to 64 blocks, uneven sizes, empty blocks, blocks wholly after the queries, junk rows past each
 * block's valid length) merged by `distattn.merge` equal dense causal attention over all the keys (float64
 * reference) to 1e-6, on the cpu backend and with the WGSL kernels on wgpu (lavapipe here), for prefill (many
 * queries) and decode (one query), GQA 1/3/4/8; the merge is associative (a tree of merges gives the same), and
 * bad scalars are typed errors.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { type AnyOperator, type Backend, graph, hostTensor, lower, type Program } from "@longctx/graph";
import { distattn } from "@longctx/ops";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { cacheAttention64, maxAbsDiff, randn, rng } from "./ref64.ts";
import { openWgpuBackend } from "./gpu_helper.ts";

const wgpu: Backend | undefined = await openWgpuBackend();

/** A one-operator program over `shapes` (input port → shape), outputs o and lse. */
const program = async (
  op: AnyOperator,
  params: Record<string, unknown>,
  backend: Backend,
  shapes: Record<string, number[]>,
): Promise<Program> => {
  const g = graph(op.name);
  const ins = Object.fromEntries(Object.keys(shapes).map((k) => [k, g.input(k, op.inputs[k])]));
  const r = g.add(op, params as never, ins as never) as Record<string, never>;
  g.output("o", r.o).output("lse", r.lse);
  const gr = await Effect.runPromise(g.build());
  const descs = Object.fromEntries(
    Object.entries(shapes).map(([k, s]) => [k, { ...op.inputs[k], shape: s }]),
  );
  return await Effect.runPromise(lower(gr, backend, descs));
};

const put = (p: Program, op: AnyOperator, port: string, shape: number[], data: Float32Array) =>
  Effect.runPromise(p.write(port, hostTensor("f32", op.inputs[port].dims, shape, data)));
const get = async (p: Program, port: string) => (await Effect.runPromise(p.read(port))).data as Float32Array;

type Case = { heads: number; kvHeads: number; seq: number; T: number; d: number; blocks: number };
const CASES: Case[] = [
  { heads: 4, kvHeads: 2, seq: 1, T: 300, d: 64, blocks: 64 },
  { heads: 9, kvHeads: 3, seq: 1, T: 517, d: 64, blocks: 7 },
  { heads: 8, kvHeads: 1, seq: 37, T: 200, d: 128, blocks: 13 },
  { heads: 6, kvHeads: 6, seq: 5, T: 64, d: 64, blocks: 1 },
  { heads: 3, kvHeads: 1, seq: 20, T: 150, d: 64, blocks: 40 },
  { heads: 8, kvHeads: 2, seq: 64, T: 64, d: 64, blocks: 5 },
];

/** Random cut points: `blocks` uneven spans `[start, start + len)` tiling `[0, T)` (some empty). */
const partition = (T: number, blocks: number, seed: number) => {
  const r = rng(seed);
  const cuts = Array.from({ length: blocks - 1 }, () => Math.floor(r() * (T + 1))).sort((a, b) => a - b);
  const edges = [0, ...cuts, T];
  // a few forced empty blocks where there are enough of them
  if (blocks > 4) edges[2] = edges[1];
  return Array.from({ length: blocks }, (_, b) => ({ start: edges[b], len: edges[b + 1] - edges[b] }));
};

/**
 * Runs one case on `backend`: every block through one partialAttn program (one capacity, rerun with its
 * scalars; rows past `len` hold junk K ≈ 1e3, V ≈ 1e4), then all the parts through one merge program.
 */
const runCase = async (backend: Backend, c: Case, seed: number) => {
  const { heads: H, kvHeads: KH, seq, T, d } = c;
  const pos = T - seq;
  const q = randn(H * seq * d, seed), k = randn(KH * T * d, seed + 1), v = randn(KH * T * d, seed + 2);
  const spans = partition(T, c.blocks, seed + 3);
  const cap = Math.max(1, ...spans.map((s) => s.len)) + 3;
  const pa = await program(distattn.partialAttn, { splitKeys: 64 }, backend, {
    q: [H, seq, d],
    kBlock: [KH, cap, d],
    vBlock: [KH, cap, d],
  });
  await put(pa, distattn.partialAttn, "q", [H, seq, d], q);
  const os = new Float32Array(c.blocks * H * seq * d), ls = new Float32Array(c.blocks * H * seq);
  for (const [b, s] of spans.entries()) {
    const kb = randn(KH * cap * d, seed + 100 + b, 1e3), vb = randn(KH * cap * d, seed + 200 + b, 1e4);
    for (let g = 0; g < KH; g++) {
      kb.set(k.subarray((g * T + s.start) * d, (g * T + s.start + s.len) * d), g * cap * d);
      vb.set(v.subarray((g * T + s.start) * d, (g * T + s.start + s.len) * d), g * cap * d);
    }
    await put(pa, distattn.partialAttn, "kBlock", [KH, cap, d], kb);
    await put(pa, distattn.partialAttn, "vBlock", [KH, cap, d], vb);
    await Effect.runPromise(pa.run({ scalars: { pos, start: s.start, len: s.len } }));
    os.set(await get(pa, "o"), b * H * seq * d);
    ls.set(await get(pa, "lse"), b * H * seq);
  }
  pa.release();
  const mg = await program(distattn.merge, {}, backend, {
    o: [c.blocks, H, seq, d],
    lse: [c.blocks, H, seq],
  });
  await put(mg, distattn.merge, "o", [c.blocks, H, seq, d], os);
  await put(mg, distattn.merge, "lse", [c.blocks, H, seq], ls);
  await Effect.runPromise(mg.run({}));
  const o = await get(mg, "o"), lse = await get(mg, "lse");
  mg.release();
  const want = cacheAttention64(q, k, v, { heads: H, kvHeads: KH, seq, cap: T, d }, 1 / Math.sqrt(d), pos);
  return { o, lse, os, ls, want, spans, pos };
};

const check = async (backend: Backend, name: string) => {
  for (const [n, c] of CASES.entries()) {
    const r = await runCase(backend, c, 31 + 7 * n);
    const eo = maxAbsDiff(r.o, r.want.o), el = maxAbsDiff(r.lse, r.want.lse);
    const empty = r.spans.filter((s) => s.len === 0).length;
    const after = r.spans.filter((s) => s.len > 0 && s.start > r.pos).length;
    console.log(
      `  ${name} ${JSON.stringify(c)}: ${empty} empty, ${after} after the first query; o ${
        eo.toExponential(1)
      }, ` +
        `lse ${el.toExponential(1)}`,
    );
    assert.ok(eo < 1e-6, `${name} ${JSON.stringify(c)}: o error ${eo}`);
    assert.ok(el < 1e-5, `${name} ${JSON.stringify(c)}: lse error ${el}`);
    // a row that sees no key of a block has lse = −Infinity there
    const { heads: H, seq } = c;
    for (const [b, s] of r.spans.entries()) {
      for (let i = 0; i < seq; i++) {
        const sees = s.len > 0 && s.start <= r.pos + i;
        const x = r.ls[b * H * seq + i];
        assert.ok(sees ? Number.isFinite(x) : x === -Infinity, `${name} block ${b} row ${i}: lse ${x}`);
      }
    }
  }
};

test("distattn: random partitions (1–64 blocks, uneven, empty) merged equal dense attention, cpu", async () => {
  await check(await Effect.runPromise(makeCpuBackend()), "cpu");
});

test(
  "distattn: random partitions merged equal dense attention, WGSL kernels on wgpu",
  async () => await check(wgpu!, "wgpu"),
  { ignore: !wgpu },
);

test("distattn.merge is associative: a tree of merges equals one merge (cpu and wgpu)", async () => {
  const backends = [await Effect.runPromise(makeCpuBackend()), ...(wgpu ? [wgpu] : [])];
  const c = { heads: 4, kvHeads: 2, seq: 3, T: 90, d: 64, blocks: 9 };
  for (const b of backends) {
    const r = await runCase(b, c, 5);
    const { heads: H, seq, d } = c, n = H * seq * d, rows = H * seq;
    const mergeOf = async (idx: number[], o: Float32Array, l: Float32Array, stride = [n, rows]) => {
      const os = new Float32Array(idx.length * n), ls = new Float32Array(idx.length * rows);
      idx.forEach((x, j) => {
        os.set(o.subarray(x * stride[0], (x + 1) * stride[0]), j * n);
        ls.set(l.subarray(x * stride[1], (x + 1) * stride[1]), j * rows);
      });
      const p = await program(distattn.merge, {}, b, {
        o: [idx.length, H, seq, d],
        lse: [idx.length, H, seq],
      });
      await put(p, distattn.merge, "o", [idx.length, H, seq, d], os);
      await put(p, distattn.merge, "lse", [idx.length, H, seq], ls);
      await Effect.runPromise(p.run({}));
      const out = { o: await get(p, "o"), lse: await get(p, "lse") };
      p.release();
      return out;
    };
    // ((0 1 2) (3 4) (5 6 7 8)) in reverse order
    const groups = [[5, 6, 7, 8], [3, 4], [0, 1, 2]];
    const inner = await Promise.all(groups.map((gi) => mergeOf(gi, r.os, r.ls)));
    const o2 = new Float32Array(3 * n), l2 = new Float32Array(3 * rows);
    inner.forEach((x, j) => {
      o2.set(x.o, j * n);
      l2.set(x.lse, j * rows);
    });
    const tree = await mergeOf([0, 1, 2], o2, l2);
    assert.ok(maxAbsDiff(tree.o, r.o) < 1e-6, `${b.kind}: tree o ${maxAbsDiff(tree.o, r.o)}`);
    assert.ok(maxAbsDiff(tree.lse, r.lse) < 1e-5, `${b.kind}: tree lse ${maxAbsDiff(tree.lse, r.lse)}`);
  }
});

test("distattn.partialAttn: len past the capacity or a missing scalar is a typed error", async () => {
  for (const b of [await Effect.runPromise(makeCpuBackend()), ...(wgpu ? [wgpu] : [])]) {
    const p = await program(distattn.partialAttn, {}, b, {
      q: [2, 1, 64],
      kBlock: [1, 8, 64],
      vBlock: [1, 8, 64],
    });
    const past = await Effect.runPromise(Effect.flip(p.run({ scalars: { pos: 5, start: 0, len: 9 } })));
    assert.ok(/capacity/.test(past.message), past.message);
    const missing = await Effect.runPromise(Effect.flip(p.run({ scalars: { pos: 5, start: 0 } })));
    assert.ok(/len/.test(missing.message), missing.message);
    p.release();
  }
});
