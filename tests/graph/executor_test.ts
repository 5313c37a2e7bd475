/**
 * The executor on the cpu backend: correctness against float64, lowering paths, buffer planning against
 * naive allocation, and release of every buffer on success, failure and interruption.
 * Run: deno test -A tests/graph/executor_test.ts
 */
import { Effect, Fiber } from "effect";
import { assert, test } from "../harness.ts";
import {
  type Backend,
  BackendError,
  defineGraph,
  graph,
  graphCost,
  hostTensor,
  lower,
  planRun,
  portTypes,
  run,
  type TensorDesc,
  tensorType,
} from "../../graph/mod.ts";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import {
  addOp,
  attentionRef64,
  boomOp,
  causalBlocks,
  denseAttnOp,
  estimateOp,
  matmulOp,
  quantizeOp,
  randomTensor,
  selectOp,
  slowOp,
  softmaxOp,
  sparseAttnOp,
} from "./test_ops.ts";

const maxErr = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let e = 0;
  for (let i = 0; i < a.length; i++) e = Math.max(e, Math.abs(a[i] - b[i]));
  return e;
};

const salePrefill = (blockSize: number, threshold: number) =>
  defineGraph("sale-prefill", { q: portTypes.q, k: portTypes.kv, v: portTypes.kv }, (g, { q, k, v }) => {
    const z = g.add(quantizeOp, { blockSize }, { q, k }, "quantize");
    const s = g.add(estimateOp, { blockSize }, { q, k, ...z }, "estimate");
    const m = g.add(selectOp, { threshold, sinkBlocks: 1, localBlocks: 1 }, s, "select");
    const a = g.add(
      sparseAttnOp,
      { blockSize },
      { q, k, v, indptr: m.indptr, indices: m.indices },
      "sparse-attn",
    );
    return { o: a.o, lse: a.lse, indptr: m.indptr, indices: m.indices };
  });

test("SALE-shaped chain on the cpu backend matches float64 attention (full and sparse masks, GQA 3:1)", async () => {
  const cpu = await Effect.runPromise(makeCpuBackend());
  for (const [H, HK, S, T, D, B] of [[6, 2, 37, 37, 16, 8], [3, 1, 20, 29, 8, 4]]) {
    const q = randomTensor(portTypes.q.dims, [H, S, D], 1 + S);
    const k = randomTensor(portTypes.kv.dims, [HK, T, D], 2 + S);
    const v = randomTensor(portTypes.kv.dims, [HK, T, D], 3 + S);
    // Full mask (threshold Infinity) = dense causal attention.
    const full = await Effect.runPromise(run(Effect.runSync(salePrefill(B, Infinity)), cpu, { q, k, v }));
    const ref = attentionRef64(q, k, v);
    const QB = Math.ceil(S / B), KB = Math.ceil(T / B);
    assert.equal(full.outputs.indptr.data[QB], causalBlocks(QB, KB), "full mask keeps every causal block");
    const eo = maxErr(full.outputs.o.data, ref.o), el = maxErr(full.outputs.lse.data, ref.lse);
    assert.ok(eo < 1e-5 && el < 1e-5, `full: max |o - o64| ${eo}, |lse - lse64| ${el}`);
    // A sparse mask: compare with float64 attention restricted to the blocks the mask keeps.
    const sp = await Effect.runPromise(run(Effect.runSync(salePrefill(B, 0.3)), cpu, { q, k, v }));
    const { indptr, indices } = sp.outputs;
    const cap = indices.desc.shape[1];
    const kept = (h: number, i: number, j: number) => {
      const b = Math.floor(i / B);
      for (let e = indptr.data[h * (QB + 1) + b]; e < indptr.data[h * (QB + 1) + b + 1]; e++) {
        if (indices.data[h * cap + e] === Math.floor(j / B)) return true;
      }
      return false;
    };
    const nnz = Array.from({ length: H }, (_, h) => indptr.data[h * (QB + 1) + QB]).reduce(
      (a, b) => a + b,
      0,
    );
    assert.ok(nnz < H * causalBlocks(QB, KB), "threshold 0.3 drops blocks");
    const sref = attentionRef64(q, k, v, kept);
    const so = maxErr(sp.outputs.o.data, sref.o), sl = maxErr(sp.outputs.lse.data, sref.lse);
    assert.ok(so < 1e-5 && sl < 1e-5, `sparse: ${so} ${sl}`);
    const dense = await Effect.runPromise(run(
      Effect.runSync(defineGraph("dense", { q: portTypes.q, k: portTypes.kv, v: portTypes.kv }, (g, i) => {
        const a = g.add(denseAttnOp, {}, i);
        return { o: a.o, lse: a.lse };
      })),
      cpu,
      { q, k, v },
    ));
    assert.ok(maxErr(dense.outputs.o.data, ref.o) < 1e-5 && maxErr(dense.outputs.lse.data, ref.lse) < 1e-5);
    console.log(
      `  H=${H}/${HK} S=${S} T=${T} D=${D} B=${B}: full err ${eo.toExponential(1)}, sparse density ${
        (nnz / (H * causalBlocks(QB, KB))).toFixed(2)
      } err ${so.toExponential(1)}; nodes ${
        sp.report.nodes.map((n) => `${n.node} ${n.ms.toFixed(1)}ms`).join(", ")
      }`,
    );
  }
  assert.deepEqual(cpu.live(), { buffers: 0, bytes: 0 });
});

test("matmul -> softmax on the cpu backend matches float64", async () => {
  const cpu = await Effect.runPromise(makeCpuBackend());
  const g = Effect.runSync(defineGraph(
    "mlp-ish",
    { a: tensorType("f32", ["rows", "inner"]), b: tensorType("f32", ["inner", "cols"]) },
    (g, { a, b }) => {
      const s = g.add(softmaxOp, {}, { x: g.add(matmulOp, {}, { a, b }).c });
      return { y: s.y };
    },
  ));
  const [m, k, n] = [13, 7, 11];
  const a = randomTensor(["rows", "inner"], [m, k], 5), b = randomTensor(["inner", "cols"], [k, n], 6);
  const r = await Effect.runPromise(run(g, cpu, { a, b }));
  const ref = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const row = Array.from({ length: n }, (_, j) => {
      let s = 0;
      for (let t = 0; t < k; t++) s += a.data[i * k + t] * b.data[t * n + j];
      return s;
    });
    const z = row.reduce((x, y) => x + Math.exp(y), 0);
    row.forEach((x, j) => (ref[i * n + j] = Math.exp(x) / z));
  }
  assert.ok(maxErr(r.outputs.y.data, ref) < 1e-6);
  assert.deepEqual(r.outputs.y.desc.shape, [m, n]);
  const cost = Effect.runSync(graphCost(g, { a: a.desc, b: b.desc }));
  assert.deepEqual(cost.nodes.map((c) => c.cost.flops), [2 * m * k * n, 5 * m * n]);
  assert.equal(cost.total.flops, 2 * m * k * n + 5 * m * n);
  assert.equal(cost.total.bytesRead, 4 * (m * k + k * n));
});

test("gpu lowering path (Kernel.cpu bodies via lowering: prefer) agrees with the host path; fallback is reported", async () => {
  const cpu = await Effect.runPromise(makeCpuBackend());
  const g = Effect.runSync(defineGraph("adds", { a: portTypes.q, b: portTypes.q }, (g, { a, b }) => {
    const c = g.add(addOp, { alpha: 0.5 }, { a, b }).c;
    const d = g.add(addOp, { alpha: -2 }, { a: c, b: a }).c;
    return { d: g.add(slowOp, { ms: 0 }, { x: d }).y };
  }));
  const inputs = {
    a: randomTensor(portTypes.q.dims, [3, 5, 7], 7),
    b: randomTensor(portTypes.q.dims, [3, 5, 7], 8),
  };
  const host = await Effect.runPromise(run(g, cpu, inputs));
  const low = await Effect.runPromise(run(g, cpu, inputs, { lowering: "prefer", gpuTiming: true }));
  assert.deepEqual([...low.outputs.d.data], [...host.outputs.d.data]);
  assert.deepEqual(host.report.nodes.map((n) => n.path), ["cpu", "cpu", "cpu"]);
  assert.deepEqual(low.report.nodes.map((n) => [n.path, n.launches]), [["gpu", 1], ["gpu", 1], ["cpu", 0]]);
  for (let i = 0; i < 105; i++) {
    const want = (inputs.a.data[i] + 0.5 * inputs.b.data[i]) - 2 * inputs.a.data[i];
    assert.ok(Math.abs(host.outputs.d.data[i] - want) < 1e-6);
  }
  // A GPU-kind backend (test double over the cpu backend): ops without a gpu lowering fall back to cpu.
  const fakeGpu: Backend = { ...cpu, kind: "webgpu" };
  const plan = Effect.runSync(planRun(g, fakeGpu, { a: inputs.a.desc, b: inputs.b.desc }));
  assert.deepEqual([...plan.paths.values()], ["gpu", "gpu", "cpu-fallback"]);
  assert.deepEqual(cpu.live(), { buffers: 0, bytes: 0 });
});

test("buffer planning: peak vs naive allocation on a 4-layer SALE prefill pipeline (SmolLM2 heads, 8K tokens)", async () => {
  const layers = 4;
  const build = (blockSize: number) =>
    Effect.runSync(Effect.suspend(() => {
      const g = graph("sale-4-layers");
      let prev: ReturnType<typeof g.input<"f32", typeof portTypes.q.dims>> | undefined;
      for (let l = 0; l < layers; l++) {
        const qIn = g.input(`q${l}`, portTypes.q);
        const k = g.input(`k${l}`, portTypes.kv);
        const v = g.input(`v${l}`, portTypes.kv);
        // Layer l's queries depend on layer l-1's output (a residual-like add), so layers run in sequence.
        const q = prev ? g.add(addOp, { alpha: 1 }, { a: qIn, b: prev }, `residual${l}`).c : qIn;
        const z = g.add(quantizeOp, { blockSize }, { q, k }, `quantize${l}`);
        const s = g.add(estimateOp, { blockSize }, { q, k, ...z }, `estimate${l}`);
        const m = g.add(selectOp, { threshold: 4, sinkBlocks: 1, localBlocks: 2 }, s, `select${l}`);
        prev =
          g.add(sparseAttnOp, { blockSize }, { q, k, v, indptr: m.indptr, indices: m.indices }, `sparse${l}`)
            .o;
      }
      g.output("o", prev!);
      return g.build();
    }));
  const descs = (H: number, HK: number, S: number, D: number) => {
    const d: Record<string, TensorDesc> = {};
    for (let l = 0; l < layers; l++) {
      d[`q${l}`] = { ...portTypes.q, shape: [H, S, D] };
      d[`k${l}`] = { ...portTypes.kv, shape: [HK, S, D] };
      d[`v${l}`] = { ...portTypes.kv, shape: [HK, S, D] };
    }
    return d;
  };
  const mib = (b: number) => (b / 2 ** 20).toFixed(1);
  // SmolLM2-135M attention shape (9 query heads, 3 KV heads, head dim 64) at 8K tokens, 64-token blocks.
  const g = build(64);
  const cpu = await Effect.runPromise(makeCpuBackend());
  const big = Effect.runSync(planRun(g, cpu, descs(9, 3, 8192, 64))).memory;
  console.log(
    `  SmolLM2 heads, 8192 tokens, ${layers} layers, ${g.nodes.length} nodes, ${big.tensors.length} tensors: ` +
      `naive ${mib(big.naiveBytes)} MiB, planned peak ${
        mib(big.peakBytes)
      } MiB in ${big.buffers.length} buffers ` +
      `(${(big.naiveBytes / big.peakBytes).toFixed(2)}x less), live lower bound ${
        mib(big.lowerBoundBytes)
      } MiB`,
  );
  assert.ok(big.peakBytes < big.naiveBytes && big.peakBytes >= big.lowerBoundBytes);
  // Plans never place overlapping tensors in one buffer.
  for (const a of big.tensors) {
    for (const b of big.tensors) {
      if (a !== b && big.assign.get(a.key) === big.assign.get(b.key)) {
        assert.ok(
          a.end < b.start || b.end < a.start,
          `${a.key} and ${b.key} share a buffer while both alive`,
        );
      }
    }
  }
  // Run the same pipeline at a small size: the report carries the plan, and the output is right.
  const small = build(8);
  const inputs: Record<string, ReturnType<typeof randomTensor>> = {};
  for (const [name, d] of Object.entries(descs(6, 2, 40, 16))) {
    inputs[name] = randomTensor(
      d.dims,
      d.shape,
      name.length * 7 + Number(name.slice(1)) + name.charCodeAt(0),
    );
  }
  const r = await Effect.runPromise(run(small, cpu, inputs));
  const plan = Effect.runSync(
    planRun(small, cpu, Object.fromEntries(Object.entries(inputs).map(([k, t]) => [k, t.desc]))),
  );
  assert.equal(r.report.memory.peakBytes, plan.memory.peakBytes);
  console.log(
    `  run at 40 tokens: naive ${r.report.memory.naiveBytes} B, peak ${r.report.memory.peakBytes} B ` +
      `in ${r.report.memory.buffers} buffers, ${r.report.totalMs.toFixed(1)} ms total`,
  );
  assert.ok(r.outputs.o.data.every(Number.isFinite));
  assert.deepEqual(cpu.live(), { buffers: 0, bytes: 0 });
});

/** A test double: the cpu backend behind a device that takes `ms` per dispatch and sync (async, like a GPU). */
const slowDevice = (cpu: Backend, ms: number): Backend => ({
  ...cpu,
  kind: "webgpu",
  dispatch: (l, o) => Effect.andThen(Effect.sleep(ms), cpu.dispatch(l, o)),
  sync: () => Effect.andThen(Effect.sleep(ms), cpu.sync()),
});

test("interruption mid-run releases every buffer (counted with live())", async () => {
  const cpu = await Effect.runPromise(makeCpuBackend());
  const g = Effect.runSync(defineGraph("slow-chain", { a: portTypes.q, b: portTypes.q }, (g, { a, b }) => {
    let x = g.add(slowOp, { ms: 40 }, { x: a }).y;
    for (let i = 0; i < 6; i++) {
      x = g.add(addOp, { alpha: 1 }, { a: g.add(slowOp, { ms: 40 }, { x }).y, b }).c;
    }
    return { x };
  }));
  const inputs = {
    a: randomTensor(portTypes.q.dims, [4, 64, 32], 1),
    b: randomTensor(portTypes.q.dims, [4, 64, 32], 2),
  };
  const nodes = g.nodes.length;
  // 1. cpu backend: slow synchronous cpu kernels; the interrupt lands at the next node boundary.
  slowOp.calls = 0;
  const fiber = Effect.runFork(run(g, cpu, inputs));
  await new Promise((r) => setTimeout(r, 100));
  const during = cpu.live();
  await Effect.runPromise(Fiber.interrupt(fiber));
  console.log(
    `  cpu: ${slowOp.calls}/7 slow nodes ran; live during ${JSON.stringify(during)}, after ${
      JSON.stringify(cpu.live())
    }`,
  );
  assert.ok(during.buffers > 0, "buffers were live while it ran");
  assert.ok(slowOp.calls > 0 && slowOp.calls < 7, `interrupted mid-run (${slowOp.calls} slow nodes ran)`);
  assert.deepEqual(cpu.live(), { buffers: 0, bytes: 0 });
  // 2. an async device (lowered adds, 30 ms per dispatch/sync): interrupt while a dispatch is in flight.
  const dev = slowDevice(cpu, 30);
  slowOp.calls = 0;
  const f2 = Effect.runFork(run(g, dev, inputs, { lowering: "auto" }));
  await new Promise((r) => setTimeout(r, 150));
  const during2 = cpu.live();
  await Effect.runPromise(Fiber.interrupt(f2));
  console.log(
    `  async device: ${slowOp.calls}/7 slow nodes ran of ${nodes}; live during ${
      JSON.stringify(during2)
    }, after ${JSON.stringify(cpu.live())}`,
  );
  assert.ok(during2.buffers > 0 && slowOp.calls < 7);
  assert.deepEqual(cpu.live(), { buffers: 0, bytes: 0 });
  // The same run, not interrupted, completes and also releases everything.
  const ok = await Effect.runPromise(run(g, dev, inputs));
  assert.equal(ok.report.nodes.length, nodes);
  assert.deepEqual(cpu.live(), { buffers: 0, bytes: 0 });
});

test("failure mid-run (an operator throws; out of memory) releases every buffer", async () => {
  const cpu = await Effect.runPromise(makeCpuBackend());
  const g = Effect.runSync(defineGraph("boom", { a: portTypes.q }, (g, { a }) => {
    const x = g.add(slowOp, { ms: 0 }, { x: a }).y;
    return { y: g.add(boomOp, {}, { x }).y, z: g.add(slowOp, { ms: 0 }, { x }).y };
  }));
  const a = randomTensor(portTypes.q.dims, [2, 8, 8], 3);
  const e = await Effect.runPromise(Effect.flip(run(g, cpu, { a })));
  assert.ok(e instanceof BackendError && /test\.boom.*boom/.test(e.message), String(e));
  assert.deepEqual(cpu.live(), { buffers: 0, bytes: 0 });
  const tiny = await Effect.runPromise(makeCpuBackend({ maxBytes: 600 }));
  const oom = await Effect.runPromise(Effect.flip(run(g, tiny, { a })));
  assert.ok(oom instanceof BackendError && oom.reason === "out-of-memory", String(oom));
  assert.deepEqual(tiny.live(), { buffers: 0, bytes: 0 });
});

test("a program-owned input keeps its memory through the run: a program run again reads what was written", async () => {
  // x → add(x, x) = t → add(t, t) = u → add(u, u) = y: after its last use (node 0) x's memory would be free for
  // u, so a second run would read u's values as x without the input's lifetime spanning the run
  const cpu = await Effect.runPromise(makeCpuBackend());
  const g = graph("chain");
  const x = g.input("x", addOp.inputs.a);
  const t = g.add(addOp, { alpha: 1 }, { a: x, b: x }, "t").c;
  const u = g.add(addOp, { alpha: 1 }, { a: t, b: t }, "u").c;
  g.output("y", g.add(addOp, { alpha: 1 }, { a: u, b: u }, "y").c);
  const desc = { dtype: "f32", dims: ["heads", "seq", "headDim"], shape: [2, 8, 4] } as const;
  const prog = await Effect.runPromise(lower(await Effect.runPromise(g.build()), cpu, { x: desc }));
  await Effect.runPromise(
    prog.write("x", hostTensor("f32", desc.dims, desc.shape, new Float32Array(64).fill(1))),
  );
  for (let r = 0; r < 3; r++) {
    await Effect.runPromise(prog.run());
    const y = (await Effect.runPromise(prog.read("y"))).data as Float32Array;
    assert.ok(y.every((v) => v === 8), `run ${r}: y = 8x (got ${y[0]})`);
  }
  prog.release();
});
