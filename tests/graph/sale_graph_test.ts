/**
 * The graph with the real SALE operators (`@longctx/ops` sale.*): typed wiring against the declared
 * signatures, JSON round-trip, buffer planning at SmolLM2 / Llama-3.1-8B shapes, and a cpu run checked
 * against float64 attention.
 * Run: deno test -A tests/graph/sale_graph_test.ts
 */
import { Effect } from "effect";
import { assert, test } from "../harness.ts";
import {
  type AnyOperator,
  defineGraph,
  fromJSON,
  type Graph,
  operatorRegistry,
  planRun,
  type Ports,
  portTypes,
  run,
  toJSON,
} from "../../graph/mod.ts";
import { saleEstimate, saleParams, saleQuantize, saleSelect, saleSparseAttn } from "../../ops/sale/mod.ts";
import { makeCpuBackend } from "../../runtime/src/backends/cpu.ts";
import { addOp, attentionRef64, qkvOp, randomTensor } from "./test_ops.ts";

const salePrefill = (p: ReturnType<typeof saleParams>) =>
  defineGraph("sale-prefill", { q: portTypes.q, k: portTypes.kv, v: portTypes.kv }, (g, { q, k, v }) => {
    const z = g.add(saleQuantize, p, { q, k }, "quantize");
    const s = g.add(saleEstimate, p, { q, k, ...z }, "estimate");
    const m = g.add(saleSelect, p, s, "select");
    const a = g.add(saleSparseAttn, p, { q, k, v, indptr: m.indptr, indices: m.indices }, "sparse-attn");
    return { o: a.o, lse: a.lse, density: m.density };
  });

test("real SALE chain: JSON round-trip, buffer plan at 8K/32K, cpu run vs float64", async () => {
  const cpu = await Effect.runPromise(makeCpuBackend());
  const g = Effect.runSync(salePrefill(saleParams()));
  const reg = Effect.runSync(
    operatorRegistry([saleQuantize, saleEstimate, saleSelect, saleSparseAttn] as unknown as AnyOperator[]),
  );
  const doc = Effect.runSync(toJSON(g));
  const back = Effect.runSync(fromJSON(JSON.stringify(doc), reg));
  assert.deepEqual(Effect.runSync(toJSON(back)), doc);
  const mib = (b: number) => (b / 2 ** 20).toFixed(1);
  for (
    const [name, H, HK, S, D] of [["SmolLM2-135M", 9, 3, 8192, 64], [
      "Llama-3.1-8B",
      32,
      8,
      32768,
      128,
    ]] as const
  ) {
    const m = Effect.runSync(planRun(back as Graph<Ports, Ports>, cpu, {
      q: { ...portTypes.q, shape: [H, S, D] },
      k: { ...portTypes.kv, shape: [HK, S, D] },
      v: { ...portTypes.kv, shape: [HK, S, D] },
    })).memory;
    console.log(
      `  ${name} one layer, ${S} tokens: naive ${mib(m.naiveBytes)} MiB, planned ${mib(m.peakBytes)} MiB ` +
        `in ${m.buffers.length} buffers (lower bound ${mib(m.lowerBoundBytes)} MiB)`,
    );
    assert.ok(m.lowerBoundBytes <= m.peakBytes && m.peakBytes <= m.naiveBytes);
  }
  // A model-shaped pipeline: 30 layers (SmolLM2-135M's count), each deriving its q/k/v from the hidden
  // state (test.qkv), running the SALE chain, and adding its output back (residual).
  const layers = 30;
  const deep = Effect.runSync(defineGraph("sale-30-layers", { x: portTypes.q }, (g, { x }) => {
    let h = x;
    for (let l = 0; l < layers; l++) {
      const { q, k, v } = g.add(qkvOp, { kvHeads: 3 }, { x: h }, `qkv${l}`);
      const z = g.add(saleQuantize, saleParams(), { q, k }, `quantize${l}`);
      const s = g.add(saleEstimate, saleParams(), { q, k, ...z }, `estimate${l}`);
      const m = g.add(saleSelect, saleParams(), s, `select${l}`);
      const a = g.add(
        saleSparseAttn,
        saleParams(),
        { q, k, v, indptr: m.indptr, indices: m.indices },
        `attn${l}`,
      );
      h = g.add(addOp, { alpha: 1 }, { a: h, b: a.o }, `residual${l}`).c;
    }
    return { h };
  }));
  const dm = Effect.runSync(planRun(deep, cpu, { x: { ...portTypes.q, shape: [9, 8192, 64] } })).memory;
  console.log(
    `  SmolLM2 shapes, ${layers} layers, 8192 tokens, ${deep.nodes.length} nodes, ${dm.tensors.length} tensors: ` +
      `naive ${mib(dm.naiveBytes)} MiB, planned ${mib(dm.peakBytes)} MiB in ${dm.buffers.length} buffers ` +
      `(${(dm.naiveBytes / dm.peakBytes).toFixed(1)}x less; lower bound ${mib(dm.lowerBoundBytes)} MiB)`,
  );
  assert.ok(dm.peakBytes * 10 < dm.naiveBytes && dm.peakBytes >= dm.lowerBoundBytes);
  // Small run, threshold 0 (every causal block kept): the chain must equal dense causal attention.
  const p0 = saleParams({ blockQ: 16, blockK: 8, localWindow: 16, threshold: 0 });
  const [H, HK, S, D] = [6, 2, 53, 16];
  const q = randomTensor(portTypes.q.dims, [H, S, D], 21);
  const k = randomTensor(portTypes.kv.dims, [HK, S, D], 22);
  const v = randomTensor(portTypes.kv.dims, [HK, S, D], 23);
  const r = await Effect.runPromise(run(Effect.runSync(salePrefill(p0)), cpu, { q, k, v }));
  const ref = attentionRef64(q, k, v);
  let eo = 0, el = 0;
  for (let i = 0; i < ref.o.length; i++) eo = Math.max(eo, Math.abs(r.outputs.o.data[i] - ref.o[i]));
  for (let i = 0; i < ref.lse.length; i++) el = Math.max(el, Math.abs(r.outputs.lse.data[i] - ref.lse[i]));
  console.log(
    `  cpu run H=${H}/${HK} S=${S} D=${D}: density ${
      [...r.outputs.density.data].map((x) => x.toFixed(2))
    }, ` +
      `max |o - o64| ${eo.toExponential(1)}, |lse - lse64| ${el.toExponential(1)}; ` +
      r.report.nodes.map((n) => `${n.node} ${n.ms.toFixed(1)} ms`).join(", "),
  );
  assert.ok(eo < 1e-5 && el < 1e-5);
  assert.deepEqual(cpu.live(), { buffers: 0, bytes: 0 });
});
