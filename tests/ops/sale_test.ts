/**
 * SALE operators on the CPU: quantisation round-trip bound, the Relative Attention Score against the exact
 * score within the quantisation error bound, select semantics (sinks + local kept, threshold, density), and
 * sparse attention (full mask = dense, random masks = masked float64 reference), over odd lengths, head dims
 * 64/128 and GQA ratios 1, 3, 4, 8.
 * @module
 */
import { assert, test } from "../harness.ts";
import { Cause, Effect, Exit } from "effect";
import { graph, hostTensor, ParamsError, tensorType } from "@longctx/graph";
import {
  bsrFrom,
  bsrKeep,
  code4,
  estimateReference,
  FORCED,
  isForced,
  saleCpu,
  saleEstimate,
  saleGeometry,
  saleParams,
  saleQuantize,
  saleSelect,
  saleSparseAttn,
  seqMeans,
  syntheticCpu,
} from "../../ops/sale/mod.ts";
import { denseAttn, denseParams } from "../../ops/dense/attn.ts";
import { causalBlockCount, causalKBlocks } from "../../ops/dense/common.ts";
import { naiveAttention64, randn, relErr, rng } from "./ref64.ts";

const QD = ["heads", "seq", "headDim"] as const, KD = ["kvHeads", "kvSeq", "headDim"] as const;
// deno-lint-ignore no-explicit-any
const T = (dims: readonly string[], shape: number[], x: Float32Array): any =>
  hostTensor("f32", dims, shape, x);

const shapes: [number, number, number, number][] = [
  [2, 2, 45, 64],
  [3, 1, 83, 128],
  [4, 1, 130, 64],
  [8, 1, 67, 64],
  [6, 2, 99, 128],
];
const small = saleParams({ blockQ: 16, blockK: 8, localWindow: 16 });

test("sale.quantize: codes in [-7, 7], round trip |x − (s·c + mean)| ≤ s/2, qmk exact", () => {
  for (const [H, Hk, S, D] of shapes) {
    const q = randn(H * S * D, S, 2), k = randn(Hk * S * D, S + 1, 3);
    k[5] = 40; // an outlier sets its block's scale
    const out = saleQuantize.cpu(small, { q: T(QD, [H, S, D], q), k: T(KD, [Hk, S, D], k) });
    const qMean = seqMeans(q, H, S, D), kMean = seqMeans(k, Hk, S, D);
    const check = (
      x: Float32Array,
      mean: Float32Array,
      codes: Uint32Array,
      scales: Float32Array,
      nH: number,
      B: number,
    ) => {
      const nB = Math.ceil(S / B);
      let hitMax = 0;
      for (let h = 0; h < nH; h++) {
        for (let t = 0; t < S; t++) {
          const s = scales[h * nB + Math.floor(t / B)];
          assert.ok(s > 0);
          for (let i = 0; i < D; i++) {
            const e = (h * S + t) * D + i;
            const c = code4(codes, e);
            assert.ok(c >= -7 && c <= 7);
            if (Math.abs(c) === 7) hitMax++;
            const err = Math.abs(x[e] - mean[h * D + i] - s * c);
            assert.ok(err <= s / 2 * (1 + 1e-5) + 1e-6, `err ${err} > s/2 = ${s / 2}`);
          }
        }
      }
      assert.ok(hitMax >= nH * nB, "every block's max maps to ±7");
    };
    check(q, qMean, out.qq.data, out.qScales.data, H, small.blockQ);
    check(k, kMean, out.kq.data, out.kScales.data, Hk, small.blockK);
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / Hk));
      for (let t = 0; t < S; t += 7) {
        let ref = 0;
        for (let i = 0; i < D; i++) ref += qMean[h * D + i] * (k[(g * S + t) * D + i] - kMean[g * D + i]);
        assert.ok(Math.abs(out.qmk.data[h * S + t] - ref) <= 1e-4 * (1 + Math.abs(ref)));
      }
    }
  }
});

test("sale.estimate: forced/non-causal markers; score within the 4-bit error bound of the exact RAS", () => {
  for (const [H, Hk, S, D] of shapes.slice(0, 4)) {
    const q = randn(H * S * D, 3 * S, 1.2), k = randn(Hk * S * D, 3 * S + 1, 1.2);
    const Q = T(QD, [H, S, D], q), K = T(KD, [Hk, S, D], k);
    const qz = saleQuantize.cpu(small, { q: Q, k: K });
    const est = saleEstimate.cpu(small, { q: Q, k: K, ...qz }).scores.data;
    const g = saleGeometry(S, small);
    const scale = 1 / Math.sqrt(D);
    const qMean = seqMeans(q, H, S, D), kMean = qz.kMean.data;
    let checked = 0;
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / (H / Hk));
      for (let r = 0; r < g.qBlocks; r++) {
        const nMax = causalKBlocks(r, S, small.blockQ, small.blockK);
        // exact local/sink log-sum-exp per row, then exact RAS and the error bound per block
        const i0 = r * small.blockQ, i1 = Math.min(S, i0 + small.blockQ);
        const dot = (i: number, j: number) => {
          let s = 0;
          for (let x = 0; x < D; x++) {
            s += q[(h * S + i) * D + x] * (k[(kh * S + j) * D + x] - kMean[kh * D + x]);
          }
          return s * scale;
        };
        const L: number[] = [];
        for (let i = i0; i < i1; i++) {
          const s: number[] = [];
          for (let j = 0; j <= i; j++) {
            if (isForced(Math.floor(j / small.blockK), nMax, small.sinkBlocks, g.localBlocks)) {
              s.push(dot(i, j));
            }
          }
          const m = Math.max(...s);
          L.push(m + Math.log(s.reduce((a, b) => a + Math.exp(b - m), 0)));
        }
        for (let kb = 0; kb < g.kBlocks; kb++) {
          const got = est[(h * g.qBlocks + r) * g.kBlocks + kb];
          if (kb >= nMax) {
            assert.equal(got, -Infinity);
            continue;
          }
          if (isForced(kb, nMax, small.sinkBlocks, g.localBlocks)) {
            assert.equal(got, Math.fround(FORCED));
            continue;
          }
          let exact = -Infinity, bound = 0;
          const sq = qz.qScales.data[h * g.qBlocks + r], sk = qz.kScales.data[kh * g.kBlocks + kb];
          for (let i = i0; i < i1; i++) {
            for (let j = kb * small.blockK; j < Math.min(S, (kb + 1) * small.blockK); j++) {
              exact = Math.max(exact, dot(i, j) - L[i - i0]);
              let b = 0;
              for (let x = 0; x < D; x++) {
                const cq = code4(qz.qq.data, (h * S + i) * D + x),
                  ck = code4(qz.kq.data, (kh * S + j) * D + x);
                b += Math.abs(sq * cq) * sk / 2 + sq / 2 * Math.abs(sk * ck) + sq * sk / 4;
              }
              bound = Math.max(bound, b * scale);
            }
          }
          assert.ok(got > 0);
          assert.ok(
            Math.abs(Math.log(got) - exact) <= bound + 1e-4,
            `log score ${Math.log(got)} vs ${exact} ± ${bound}`,
          );
          void qMean;
          checked++;
        }
      }
    }
    assert.ok(checked >= 5, `checked ${checked} blocks`);
  }
});

test("sale.select: sinks and local window always kept, threshold 0 keeps all, density = nnz / causal blocks", () => {
  const [H, S] = [3, 150];
  const g = saleGeometry(S, small);
  const r = rng(5);
  const scores = new Float32Array(H * g.qBlocks * g.kBlocks).map(() => r() * 0.05);
  const sel = (threshold: number) =>
    saleSelect.cpu({ ...small, threshold }, {
      scores: hostTensor("f32", ["heads", "qBlocks", "kBlocks"], [H, g.qBlocks, g.kBlocks], scores),
    });
  const all = sel(0);
  assert.ok([...all.density.data].every((x) => x === 1));
  const none = sel(1);
  const mid = sel(0.025);
  for (const out of [none, mid]) {
    for (let h = 0; h < H; h++) {
      let nnz = 0;
      for (let rb = 0; rb < g.qBlocks; rb++) {
        const nMax = causalKBlocks(rb, S, small.blockQ, small.blockK);
        const a = out.indptr.data[h * (g.qBlocks + 1) + rb],
          b = out.indptr.data[h * (g.qBlocks + 1) + rb + 1];
        const got = new Set<number>();
        let prev = -1;
        for (let e = a; e < b; e++) {
          const kb = out.indices.data[h * g.nnzCap + e];
          assert.ok(kb > prev && kb < nMax, "ascending and causal");
          prev = kb;
          got.add(kb);
        }
        for (let kb = 0; kb < nMax; kb++) {
          const want = isForced(kb, nMax, small.sinkBlocks, g.localBlocks) ||
            scores[(h * g.qBlocks + rb) * g.kBlocks + kb] >= (out === none ? 1 : 0.025);
          assert.equal(got.has(kb), want);
        }
        nnz += b - a;
      }
      assert.ok(Math.abs(out.density.data[h] - nnz / causalBlockCount(S, small.blockQ, small.blockK)) < 1e-6);
    }
  }
  assert.ok(mid.density.data[0] > none.density.data[0] && mid.density.data[0] < 1);
});

test("sale.sparseAttn: full mask equals dense.attn exactly; random masks equal the masked float64 reference", () => {
  for (const [H, Hk, S, D] of shapes) {
    const q = randn(H * S * D, 50 + S, 1.5),
      k = randn(Hk * S * D, 51 + S, 1.5),
      v = randn(Hk * S * D, 52 + S);
    const inp = { q: T(QD, [H, S, D], q), k: T(KD, [Hk, S, D], k), v: T(KD, [Hk, S, D], v) };
    const full = bsrFrom(H, S, small, () => true);
    const g = saleGeometry(S, small);
    const bsr = (b: typeof full) => ({
      indptr: hostTensor("i32", ["heads", "indptr"], [H, g.qBlocks + 1], b.indptr),
      indices: hostTensor("i32", ["heads", "nnz"], [H, g.nnzCap], b.indices),
    });
    const dense = denseAttn.cpu({ scale: 0, blockQ: 64, workgroupMemory: 32768 }, inp);
    const sp = saleSparseAttn.cpu(small, { ...inp, ...bsr(full) });
    assert.deepEqual(sp.o.data, dense.o.data);
    const r = rng(S);
    const rand = bsrFrom(H, S, small, (_h, _r, kb, nMax) => kb === nMax - 1 || r() < 0.4);
    const got = saleSparseAttn.cpu(small, { ...inp, ...bsr(rand) });
    const keep = bsrKeep(rand.indptr, rand.indices, g.qBlocks, g.nnzCap, small.blockQ, small.blockK);
    const ref = naiveAttention64(q, k, v, H, Hk, S, D, 1 / Math.sqrt(D), keep);
    assert.ok(relErr(got.o.data, ref.o) <= 1e-5, `[${H},${Hk},${S},${D}] masked rel err`);
    assert.ok(relErr(got.o.data, dense.o.data) > 1e-3, "a random mask changes the output");
  }
});

test("SALE pipeline on structured inputs (sinks, locality, heavy hitters): sparse and accurate", () => {
  const [H, Hk, S, D] = [4, 1, 512, 64];
  const q = syntheticCpu(0, H, S, D, H / Hk),
    k = syntheticCpu(1, Hk, S, D, 1),
    v = syntheticCpu(2, Hk, S, D, 1);
  const p = saleParams({ blockQ: 32, blockK: 16, localWindow: 64 });
  const out = saleCpu(p, q, k, v, H, Hk, S, D);
  const ref = naiveAttention64(q, k, v, H, Hk, S, D, 1 / Math.sqrt(D));
  const density = out.density.reduce((a, b) => a + b, 0) / H;
  const err = relErr(out.o, ref.o);
  assert.ok(density < 0.8, `density ${density}`);
  assert.ok(err < 0.02, `output rel err ${err}`);
  const dense = saleCpu({ ...p, threshold: 0 }, q, k, v, H, Hk, S, D);
  assert.ok(dense.density.every((x) => x === 1));
  assert.ok(relErr(dense.o, ref.o) < 1e-5);
});

test("SALE infer: typed errors for bad block sizes and mismatched BSR shapes", () => {
  const d = (dtype: "f32" | "i32", dims: string[], shape: number[]) => ({ dtype, dims, shape });
  const inputs = {
    q: d("f32", [...QD], [4, 100, 64]),
    k: d("f32", [...KD], [1, 100, 64]),
    v: d("f32", [...KD], [1, 100, 64]),
    indptr: d("i32", ["heads", "indptr"], [4, 3]),
    indices: d("i32", ["heads", "nnz"], [4, 5]),
  };
  const e = Effect.runSyncExit(saleSparseAttn.infer(small, inputs as never));
  assert.ok(Exit.isFailure(e));
  assert.match(String(Exit.isFailure(e) ? e.cause : ""), /indptr/);
  const e2 = Effect.runSyncExit(
    saleQuantize.infer({ ...small, blockQ: 24 }, { q: inputs.q, k: inputs.k } as never),
  );
  assert.ok(Exit.isFailure(e2));
  assert.throws(() => saleParams({ threshold: -1 }));
  void estimateReference;
});

test("SALE and dense parameters: an impossible value or unknown key is a ParamsError naming the parameter", () => {
  const thrown = (f: () => unknown): ParamsError => {
    try {
      f();
    } catch (e) {
      if (e instanceof ParamsError) return e;
      throw e;
    }
    throw new Error("expected a ParamsError");
  };
  const cases: [() => unknown, string, RegExp][] = [
    [() => saleParams({ blockQ: 17 }), "blockQ", /sale: parameter "blockQ": Expected a multiple of 16/],
    [() => saleParams({ blockQ: 256 }), "blockQ", /parameter "blockQ": .*less than or equal to 128/],
    [() => saleParams({ blockK: 12 }), "blockK", /parameter "blockK": Expected a multiple of 8/],
    [() => saleParams({ threshold: -1 }), "threshold", /parameter "threshold"/],
    [() => saleParams({ treshold: 0.1 } as never), "treshold", /sale: unknown parameter "treshold"/],
    [() => denseParams({ blockQ: 8 }), "blockQ", /dense\.attn: parameter "blockQ"/],
  ];
  for (const [f, param, re] of cases) {
    const e = thrown(f);
    assert.equal(e.param, param);
    assert.match(e.message, re);
    assert.doesNotMatch(e.message, /\n/, "one line");
    assert.match(e.hint, /parameters are .*blockQ, /, "the hint lists the parameters");
  }
  assert.equal(saleParams({ blockQ: 48 }).blockQ, 48);
  // in a graph: the builder's ParamsError names the parameter, before any shape is looked at
  const g = graph("bad-blockq");
  const q = g.input("q", tensorType("f32", QD)), k = g.input("k", tensorType("f32", KD));
  const z = g.add(saleQuantize, { ...saleParams(), blockQ: 17 }, { q, k });
  g.output("qq", z.qq);
  const exit = Effect.runSyncExit(g.build());
  if (!Exit.isFailure(exit)) throw new Error("a blockQ of 17 must not build");
  const e = Cause.squash(exit.cause);
  if (!(e instanceof ParamsError)) throw new Error(`expected a ParamsError, got ${String(e)}`);
  assert.equal(e.param, "blockQ");
  assert.match(e.message, /sale\.quantize\): parameter "blockQ": Expected a multiple of 16/);
  // a key the schema does not declare is rejected too, not silently dropped
  const g2 = graph("unknown-key");
  const q2 = g2.input("q", tensorType("f32", QD)), k2 = g2.input("k", tensorType("f32", KD));
  g2.output("qq", g2.add(saleQuantize, { ...saleParams(), treshold: 0.1 } as never, { q: q2, k: k2 }).qq);
  const exit2 = Effect.runSyncExit(g2.build());
  if (!Exit.isFailure(exit2)) throw new Error("an unknown parameter must not build");
  const e2 = Cause.squash(exit2.cause);
  if (!(e2 instanceof ParamsError)) throw new Error(`expected a ParamsError, got ${String(e2)}`);
  assert.equal(e2.param, "treshold");
  assert.match(e2.message, /unknown parameter "treshold"/);
});
