/**
 * WGSL kernels of `dense.attn` and the SALE operators on a real WebGPU device (Deno's `navigator.gpu`:
 * lavapipe on CI machines): against float64 (dense, masked sparse) and against the CPU references (quantize,
 * estimate, select), small odd shapes, head dims 64/128, GQA ratios 1, 3, 4, 8, f32 and f16 inputs.
 * Skipped when no adapter is available.
 * @module
 */
import { assert, test } from "../harness.ts";
import { hostTensor } from "@longctx/graph";
import type { HostTensor } from "@longctx/graph";
import { makeDenseAttn } from "../../ops/dense/attn.ts";
import { f32ToHalf } from "../../ops/dense/common.ts";
import {
  bsrFrom,
  bsrKeep,
  code4,
  makeSaleEstimate,
  makeSaleQuantize,
  makeSaleSparseAttn,
  saleGeometry,
  saleParams,
  saleSelect,
} from "../../ops/sale/mod.ts";
import { maxAbsDiff, naiveAttention64, randn, relErr, rng } from "./ref64.ts";
import { openGpu, runOperatorGpu } from "./gpu_helper.ts";

const gpu = await openGpu().catch(() => undefined);
const ignore = !gpu;
const gtest = (name: string, fn: () => Promise<void>) => test(name, fn, { ignore });
const QD = ["heads", "seq", "headDim"] as const, KD = ["kvHeads", "kvSeq", "headDim"] as const;
const tensor = (
  dtype: "f32" | "f16",
  dims: readonly string[],
  shape: number[],
  x: Float32Array,
): HostTensor =>
  dtype === "f16" ? hostTensor("f16", dims, shape, f32ToHalf(x)) : hostTensor("f32", dims, shape, x);

const cases: [number, number, number, number, "f32" | "f16"][] = [
  // heads, kvHeads, seq, headDim, dtype
  [2, 2, 37, 64, "f32"],
  [3, 1, 61, 128, "f32"],
  [8, 1, 29, 64, "f32"],
  [4, 1, 70, 128, "f16"],
  [6, 2, 45, 64, "f16"],
];

gtest("dense.attn WGSL vs float64: rel err ≤ 1e-5 (f32), ≤ 1e-2 (f16)", async () => {
  for (const [H, Hk, S, D, dt] of cases) {
    const q = randn(H * S * D, S, 1.5), k = randn(Hk * S * D, S + 1, 1.5), v = randn(Hk * S * D, S + 2);
    const ref = naiveAttention64(q, k, v, H, Hk, S, D, 1 / Math.sqrt(D));
    const op = makeDenseAttn(dt);
    const out = await runOperatorGpu(gpu!, op, {
      scale: 0,
      blockQ: 64,
      workgroupMemory: gpu!.workgroupMemory,
    }, {
      q: tensor(dt, QD, [H, S, D], q),
      k: tensor(dt, KD, [Hk, S, D], k),
      v: tensor(dt, KD, [Hk, S, D], v),
    });
    const e = relErr(out.o.data as Float32Array, ref.o);
    assert.ok(e <= (dt === "f32" ? 1e-5 : 1e-2), `[${H},${Hk},${S},${D}] ${dt} o rel err ${e}`);
    assert.ok(maxAbsDiff(out.lse.data as Float32Array, ref.lse) <= (dt === "f32" ? 1e-4 : 5e-2), "lse");
  }
});

gtest("sale.sparseAttn WGSL: full mask = dense, random masks = masked float64 reference", async () => {
  const p = saleParams({ blockQ: 16, blockK: 8, localWindow: 16, workgroupMemory: gpu!.workgroupMemory });
  for (const [H, Hk, S, D, dt] of [cases[1], cases[2], cases[4]]) {
    const q = randn(H * S * D, 7 * S, 1.5),
      k = randn(Hk * S * D, 7 * S + 1, 1.5),
      v = randn(Hk * S * D, 7 * S + 2);
    const g = saleGeometry(S, p);
    const r = rng(S);
    const op = makeSaleSparseAttn(dt);
    const inp = {
      q: tensor(dt, QD, [H, S, D], q),
      k: tensor(dt, KD, [Hk, S, D], k),
      v: tensor(dt, KD, [Hk, S, D], v),
    };
    const ref = naiveAttention64(q, k, v, H, Hk, S, D, 1 / Math.sqrt(D));
    for (const mask of ["full", "random"] as const) {
      const b = bsrFrom(H, S, p, (_h, _r, kb, nMax) => mask === "full" || kb === nMax - 1 || r() < 0.35);
      const out = await runOperatorGpu(gpu!, op, p, {
        ...inp,
        indptr: hostTensor("i32", ["heads", "indptr"], [H, g.qBlocks + 1], b.indptr),
        indices: hostTensor("i32", ["heads", "nnz"], [H, g.nnzCap], b.indices),
      });
      const want = mask === "full" ? ref : naiveAttention64(
        q,
        k,
        v,
        H,
        Hk,
        S,
        D,
        1 / Math.sqrt(D),
        bsrKeep(b.indptr, b.indices, g.qBlocks, g.nnzCap, 16, 8),
      );
      const e = relErr(out.o.data as Float32Array, want.o);
      assert.ok(e <= (dt === "f32" ? 1e-5 : 1e-2), `[${H},${Hk},${S},${D}] ${dt} ${mask} rel err ${e}`);
    }
  }
});

gtest("sale.quantize / estimate / select WGSL vs CPU references", async () => {
  const p = saleParams({
    blockQ: 16,
    blockK: 8,
    localWindow: 16,
    threshold: 0.2,
    workgroupMemory: gpu!.workgroupMemory,
  });
  for (const [H, Hk, S, D, dt] of [[3, 1, 150, 64, "f32"], [4, 1, 97, 128, "f16"]] as const) {
    const q = randn(H * S * D, 3 * S, 2), k = randn(Hk * S * D, 3 * S + 1, 2);
    const Q = tensor(dt, QD, [H, S, D], q), K = tensor(dt, KD, [Hk, S, D], k);
    const quant = makeSaleQuantize(dt);
    const qc = quant.cpu(p, { q: Q, k: K } as never);
    const qg = await runOperatorGpu(gpu!, quant, p, { q: Q, k: K });
    for (const n of ["qScales", "kScales", "kMean", "qmk"] as const) {
      const a = qg[n].data as Float32Array, b = qc[n].data as Float32Array;
      assert.ok(maxAbsDiff(a, b) <= 1e-4 * (1 + Math.max(...b.map(Math.abs))), `${n} differs`);
    }
    let bad = 0;
    for (let e = 0; e < H * S * D; e++) {
      if (code4(qg.qq.data as Uint32Array, e) !== code4(qc.qq.data, e)) bad++;
    }
    assert.ok(bad <= H * S * D * 1e-3, `${bad} code mismatches (rounding ties only)`);
    const est = makeSaleEstimate(dt);
    const ec = est.cpu(p, { q: Q, k: K, ...qc } as never).scores.data;
    const eg = (await runOperatorGpu(gpu!, est, p, { q: Q, k: K, ...qc })).scores.data as Float32Array;
    for (let i = 0; i < ec.length; i++) {
      if (!Number.isFinite(ec[i]) || ec[i] > 1e30) assert.equal(eg[i], ec[i]);
      else assert.ok(Math.abs(Math.log(eg[i]) - Math.log(ec[i])) <= 1e-3, `score ${i}: ${eg[i]} vs ${ec[i]}`);
    }
    const geo = saleGeometry(S, p);
    const scores = hostTensor("f32", ["heads", "qBlocks", "kBlocks"], [H, geo.qBlocks, geo.kBlocks], ec);
    const sc = saleSelect.cpu(p, { scores });
    const sg = await runOperatorGpu(gpu!, saleSelect, p, { scores });
    assert.deepEqual([...(sg.indptr.data as Int32Array)], [...sc.indptr.data]);
    const g = saleGeometry(S, p);
    for (let h = 0; h < H; h++) {
      const n = sc.indptr.data[h * (g.qBlocks + 1) + g.qBlocks];
      assert.deepEqual(
        [...(sg.indices.data as Int32Array).subarray(h * g.nnzCap, h * g.nnzCap + n)],
        [...sc.indices.data.subarray(h * g.nnzCap, h * g.nnzCap + n)],
      );
    }
    assert.ok(maxAbsDiff(sg.density.data as Float32Array, sc.density.data) < 1e-6);
    assert.deepEqual([...(sg.indices.data as Int32Array)], [...sc.indices.data], "indices incl. the −1 tail");
    assert.ok(sc.density.data[0] < 1 && sc.density.data[0] > 0, `density ${sc.density.data[0]}`);
  }
});
