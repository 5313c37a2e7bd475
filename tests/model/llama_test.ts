/**
 * The Llama forward against the independent NumPy float64 reference (scripts/make-fixture.py): logits to
 * ≤ 1e-3 relative error, identical 32-token greedy continuations; plus the KV-cache/chunked path, the capture
 * hook, the pluggable attention, the dense attention against a float64 computation, and the typed errors.
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import {
  type AttentionFn,
  denseCausalAttention,
  fastExp,
  generateGreedy,
  loadLlama,
} from "../../runtime/src/model/llama.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
import { fixture, fixtureLogits, haveModel, model, relL2 } from "./fixture.ts";

test(
  "logits match the float64 reference to ≤ 1e-3 relative error (full rows and top-50 of every position)",
  async () => {
    const m = await model();
    const ref = fixtureLogits();
    const V = fixture.vocab;
    let worst = 0;
    for (const p of fixture.prompts) {
      const h = await Effect.runPromise(m.forward(p.ids, m.newCache(p.ids.length)));
      for (const r of fixture.fullLogits.filter((r) => r.prompt === p.name)) {
        const want = ref.subarray(r.row * V, (r.row + 1) * V);
        const got = m.logits(h, r.position, 1);
        const e = relL2(got, want);
        worst = Math.max(worst, e);
        assert.ok(e <= 1e-3, `${p.name}@${r.position}: relative L2 error ${e}`);
      }
      const all = m.logits(h, 0, p.ids.length);
      p.top50.forEach((t, pos) => {
        const got = t.ids.map((id) => all[pos * V + id]);
        assert.ok(relL2(got, t.logits) <= 1e-3, `${p.name}@${pos} top-50 error ${relL2(got, t.logits)}`);
        let best = 0;
        for (let j = 1; j < V; j++) if (all[pos * V + j] > all[pos * V + best]) best = j;
        assert.equal(best, t.ids[0], `${p.name}@${pos} top-1`);
      });
    }
    console.log(`worst relative L2 logit error vs float64 reference: ${worst.toExponential(2)}`);
  },
  { ignore: !haveModel },
);

test("32-token greedy continuation (prefill + KV-cache decode) is identical to the reference", async () => {
  const m = await model();
  for (const p of fixture.prompts) {
    const g = await Effect.runPromise(generateGreedy(m, p.ids, 32, { stopAtEos: false }));
    assert.deepEqual(g.ids, p.greedy, `${p.name}: ${JSON.stringify(m.tokenizer.decode(g.ids))}`);
    assert.equal(m.tokenizer.decode(g.ids, true), p.greedyText);
  }
}, { ignore: !haveModel });

test(
  "chunked prefill through the KV cache equals one-shot prefill; the capture hook sees post-RoPE Q/K/V",
  async () => {
    const m = await model();
    const ids = fixture.prompts[1].ids;
    const { nLayer, nHead, nKvHead, headDim, nEmbd } = m.config;
    const full = await Effect.runPromise(m.forward(ids, m.newCache(ids.length)));
    const cache = m.newCache(ids.length + 3);
    const seen: { layer: number; q: number; k: number; offset: number }[] = [];
    const chunks: Float32Array[] = [];
    for (let s = 0; s < ids.length; s += 17) {
      chunks.push(
        await Effect.runPromise(m.forward(ids.slice(s, s + 17), cache, {
          capture: (layer, q, k, v, offset) => {
            const n = Math.min(17, ids.length - offset);
            assert.equal(q.length, nHead * n * headDim);
            assert.equal(k.length, nKvHead * n * headDim);
            assert.equal(v.length, k.length);
            // K rows equal the cache rows just written (head stride = capacity).
            for (let g = 0; g < nKvHead; g++) {
              const src = (g * cache.capacity + offset) * headDim;
              assert.deepEqual(
                k.subarray(g * n * headDim, (g + 1) * n * headDim),
                cache.k[layer].subarray(src, src + n * headDim),
              );
            }
            seen.push({ layer, q: q.length, k: k.length, offset });
          },
        })),
      );
    }
    assert.equal(cache.length, ids.length);
    assert.equal(seen.length, nLayer * Math.ceil(ids.length / 17));
    const joined = new Float32Array(ids.length * nEmbd);
    chunks.reduce((o, c) => (joined.set(c, o), o + c.length), 0);
    assert.ok(relL2(joined, full) < 1e-5, `chunked vs one-shot ${relL2(joined, full)}`);
  },
  { ignore: !haveModel },
);

test("attention is pluggable: a custom function is called per layer and changes the output", async () => {
  const m = await model();
  const ids = fixture.prompts[0].ids;
  const layers: number[] = [];
  const spy: AttentionFn = (q, k, v, ctx) => (layers.push(ctx.layer), denseCausalAttention(q, k, v, ctx));
  const a = await Effect.runPromise(m.forward(ids, m.newCache(ids.length), { attention: spy }));
  assert.deepEqual(layers, Array.from({ length: m.config.nLayer }, (_, i) => i));
  // Attend only to the current token: a different model, so the hidden states must differ.
  const selfOnly: AttentionFn = (q, _k, v, ctx) => {
    const o = new Float32Array(q.length);
    const grp = ctx.heads / ctx.kvHeads, d = ctx.headDim;
    for (let h = 0; h < ctx.heads; h++) {
      for (let i = 0; i < ctx.seq; i++) {
        const src = (Math.floor(h / grp) * ctx.kvStride + ctx.offset + i) * d;
        o.set(v.subarray(src, src + d), (h * ctx.seq + i) * d);
      }
    }
    return o;
  };
  const b = await Effect.runPromise(m.forward(ids, m.newCache(ids.length), { attention: selfOnly }));
  assert.ok(relL2(b, a) > 1e-2);
}, { ignore: !haveModel });

const rand = (n: number, seed: number) => {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * 4;
  });
};

test("dense causal attention matches a float64 computation (odd shapes, GQA ratios, cache offsets)", async () => {
  const sgemm = await loadSgemm();
  const cases = [
    { heads: 4, kvHeads: 2, seq: 37, offset: 0, d: 16 },
    { heads: 6, kvHeads: 3, seq: 130, offset: 5, d: 8 },
    { heads: 8, kvHeads: 1, seq: 1, offset: 50, d: 32 },
    { heads: 9, kvHeads: 3, seq: 300, offset: 0, d: 64 },
    { heads: 5, kvHeads: 5, seq: 129, offset: 127, d: 24 },
  ];
  for (const [ci, c] of cases.entries()) {
    const kvLen = c.offset + c.seq, stride = kvLen + 3;
    const q = rand(c.heads * c.seq * c.d, 1 + ci);
    const k = rand(c.kvHeads * stride * c.d, 100 + ci);
    const v = rand(c.kvHeads * stride * c.d, 200 + ci);
    const scale = 1 / Math.sqrt(c.d);
    const o = denseCausalAttention(q, k, v, {
      layer: 0,
      offset: c.offset,
      seq: c.seq,
      kvLen,
      kvStride: stride,
      heads: c.heads,
      kvHeads: c.kvHeads,
      headDim: c.d,
      scale,
      sgemm,
    });
    let num = 0, den = 0;
    for (let h = 0; h < c.heads; h++) {
      const g = Math.floor(h / (c.heads / c.kvHeads));
      for (let i = 0; i < c.seq; i++) {
        const n = c.offset + i + 1;
        const s = new Float64Array(n);
        for (let j = 0; j < n; j++) {
          let dot = 0;
          for (let t = 0; t < c.d; t++) dot += q[(h * c.seq + i) * c.d + t] * k[(g * stride + j) * c.d + t];
          s[j] = dot * scale;
        }
        const mx = Math.max(...s);
        let sum = 0;
        for (let j = 0; j < n; j++) sum += s[j] = Math.exp(s[j] - mx);
        for (let t = 0; t < c.d; t++) {
          let acc = 0;
          for (let j = 0; j < n; j++) acc += s[j] * v[(g * stride + j) * c.d + t];
          const want = acc / sum, got = o[(h * c.seq + i) * c.d + t];
          num += (got - want) ** 2;
          den += want ** 2;
        }
      }
    }
    const err = Math.sqrt(num / den);
    assert.ok(err < 1e-5, `case ${ci} ${JSON.stringify(c)}: relative error ${err}`);
  }
});

test("fastExp is within 3e-8 relative of Math.exp on [−100, 80]", () => {
  let worst = 0;
  for (let x = -100; x <= 80; x += 0.0137) worst = Math.max(worst, Math.abs(fastExp(x) / Math.exp(x) - 1));
  assert.ok(worst < 3e-8, `worst ${worst}`);
  assert.ok(fastExp(-1000) < 1e-70 && fastExp(-1000) >= 0);
});

test("typed errors: bad tokens, full cache, empty input, missing or non-GGUF model file", async () => {
  const missing = await Effect.runPromise(Effect.flip(loadLlama("/nonexistent/model.gguf")));
  assert.equal(missing._tag, "InputError");
  assert.ok(missing.hint.length > 0);
  const notGguf = await Effect.runPromise(Effect.flip(loadLlama(new URL(import.meta.url).pathname)));
  assert.equal(notGguf._tag, "InputError");
  if (!haveModel) return;
  const m = await model();
  const c = m.newCache(4);
  for (
    const [tokens, re] of [[[5, 49152], /outside/], [[1.5], /outside/], [[], /0 tokens/], [
      [1, 2, 3, 4, 5],
      /holds 4/,
    ]] as const
  ) {
    const e = await Effect.runPromise(Effect.flip(m.forward(tokens, c)));
    assert.equal(e._tag, "ShapeError");
    assert.match(e.message, re);
  }
  assert.equal(c.length, 0);
});
