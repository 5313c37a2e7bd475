/**
 * The executor on a real GPU backend: Deno's built-in WebGPU (lavapipe here), running the `gpu` lowerings
 * of `dense.attn` (ops/dense) and `test.add` (a uniform workspace), with a cpu-fallback node in between;
 * results checked against the cpu backend and float64, buffers counted after success and interruption.
 * Skipped when `navigator.gpu` has no adapter.
 * Run: XDG_RUNTIME_DIR=/tmp deno test -A tests/graph/webgpu_exec_test.ts
 */
import { Effect, Fiber } from "effect";
import { assert, test } from "../harness.ts";
import { defineGraph, portTypes, run } from "../../graph/mod.ts";
import { denseAttn, DenseAttnParams } from "../../ops/dense/mod.ts";
import { Schema } from "effect";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { makeWebgpuBackend } from "../../runtime/src/backends/webgpu.ts";
import { addOp, attentionRef64, randomTensor, slowOp } from "./test_ops.ts";

const gpu = "gpu" in navigator ? await (navigator as Navigator & { gpu: GPU }).gpu.requestAdapter() : null;

test(
  "executor on WebGPU: lowered dense attention + uniforms + cpu fallback agree with the cpu backend",
  async () => {
    const wg = await Effect.runPromise(makeWebgpuBackend());
    const cpu = await Effect.runPromise(makeCpuBackend());
    const p = Schema.decodeUnknownSync(DenseAttnParams)({});
    const g = Effect.runSync(
      defineGraph("attn-residual", { q: portTypes.q, k: portTypes.kv, v: portTypes.kv }, (g, { q, k, v }) => {
        const a = g.add(denseAttn, p, { q, k, v }, "attn");
        const s = g.add(slowOp, { ms: 0 }, { x: a.o }, "copy"); // no gpu lowering: cpu fallback
        return { o: a.o, lse: a.lse, r: g.add(addOp, { alpha: 0.5 }, { a: s.y, b: q }, "residual").c };
      }),
    );
    const [H, HK, S, D] = [6, 2, 45, 32];
    const inputs = {
      q: randomTensor(portTypes.q.dims, [H, S, D], 31),
      k: randomTensor(portTypes.kv.dims, [HK, S, D], 32),
      v: randomTensor(portTypes.kv.dims, [HK, S, D], 33),
    };
    const rg = await Effect.runPromise(run(g, wg, inputs));
    const rc = await Effect.runPromise(run(g, cpu, inputs));
    assert.deepEqual(rg.report.nodes.map((n) => n.path), ["gpu", "cpu-fallback", "gpu"]);
    const ref = attentionRef64(inputs.q, inputs.k, inputs.v);
    let eo = 0, er = 0;
    for (let i = 0; i < ref.o.length; i++) {
      eo = Math.max(eo, Math.abs(rg.outputs.o.data[i] - ref.o[i]));
      er = Math.max(er, Math.abs(rg.outputs.r.data[i] - rc.outputs.r.data[i]));
    }
    let el = 0;
    for (let i = 0; i < ref.lse.length; i++) el = Math.max(el, Math.abs(rg.outputs.lse.data[i] - ref.lse[i]));
    console.log(
      `  ${rg.report.backend}: max |o - o64| ${eo.toExponential(1)}, |lse - lse64| ${el.toExponential(1)}, ` +
        `|r_gpu - r_cpu| ${er.toExponential(1)}; ${
          rg.report.nodes.map((n) => `${n.node}[${n.path}] ${n.ms.toFixed(1)} ms`).join(", ")
        }`,
    );
    assert.ok(eo < 1e-4 && el < 1e-4 && er < 1e-4);
    assert.deepEqual(wg.live(), { buffers: 0, bytes: 0 });
    // Interrupt a longer run on the GPU backend while it is in flight.
    const long = Effect.runSync(
      defineGraph("attn-chain", { q: portTypes.q, k: portTypes.kv, v: portTypes.kv }, (g, { q, k, v }) => {
        let x = q;
        for (let i = 0; i < 8; i++) {
          x = g.add(denseAttn, p, { q: g.add(slowOp, { ms: 20 }, { x }).y, k, v }).o;
        }
        return { x };
      }),
    );
    slowOp.calls = 0;
    const f = Effect.runFork(run(long, wg, inputs));
    await new Promise((r) => setTimeout(r, 60));
    const during = wg.live();
    await Effect.runPromise(Fiber.interrupt(f));
    console.log(
      `  interrupted after ${slowOp.calls}/8 slow nodes: live during ${JSON.stringify(during)}, after ${
        JSON.stringify(wg.live())
      }`,
    );
    assert.ok(during.buffers > 0 && slowOp.calls < 8);
    assert.deepEqual(wg.live(), { buffers: 0, bytes: 0 });
    await Effect.runPromise(wg.close());
  },
  { ignore: gpu === null },
);
