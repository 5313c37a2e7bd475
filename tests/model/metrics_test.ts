/**
 * Metrics: log-sum-exp, KL and top-1 against float64 hand computations; perplexity and log-probs of a real
 * prompt against the reference fixture's full logits; run comparison (identical runs → KL 0, top-1 1).
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import {
  compareHidden,
  compareLogits,
  documentHidden,
  documentPerplexity,
  klDivergence,
  logSumExp,
  perplexity,
} from "../../runtime/src/model/metrics.ts";
import { fixture, fixtureLogits, haveModel, model } from "./fixture.ts";

test("logSumExp, KL and top-1 agree with direct float64 formulas", () => {
  const p = [2.5, -1, 0.25, 3, -40];
  const q = [2, 0.5, 0.25, 3.5, -41];
  const lse = (x: number[]) => Math.log(x.reduce((a, b) => a + Math.exp(b), 0));
  assert.ok(Math.abs(logSumExp(p) - lse(p)) < 1e-12);
  const P = p.map((x) => Math.exp(x - lse(p))), Q = q.map((x) => Math.exp(x - lse(q)));
  const want = P.reduce((a, pi, i) => a + pi * Math.log(pi / Q[i]), 0);
  assert.ok(Math.abs(klDivergence(p, q) - want) < 1e-12, `${klDivergence(p, q)} vs ${want}`);
  assert.ok(klDivergence(p, p.map((x) => x + 7)) < 1e-12); // shift invariance
  assert.ok(Math.abs(logSumExp([1000, 1000]) - (1000 + Math.LN2)) < 1e-9); // no overflow
  const c = compareLogits(new Float32Array([...p, ...q]), new Float32Array([...q, ...q]), 5);
  assert.equal(c.top1Agreement, 1); // argmax of p and q are both index 3
  assert.ok(Math.abs(c.kl[0] - Math.fround(want)) < 1e-6 && c.kl[1] === 0);
  assert.ok(Math.abs(perplexity([Math.log(0.5), Math.log(0.25)]) - Math.sqrt(8)) < 1e-12);
});

test(
  "document log-probs and perplexity match the reference logits; identical runs give KL 0, top-1 1",
  async () => {
    const m = await model();
    const V = fixture.vocab;
    const ref = fixtureLogits();
    const p = fixture.prompts[1];
    const { perplexity: ppl, logProbs } = await Effect.runPromise(
      documentPerplexity(m, p.ids, { chunk: 29, logitRows: 7 }),
    );
    assert.equal(logProbs.length, p.ids.length - 1);
    // Reference log-prob at the positions whose full logits the fixture stores.
    for (const r of fixture.fullLogits.filter((r) => r.prompt === p.name && r.position < p.ids.length - 1)) {
      const row = ref.subarray(r.row * V, (r.row + 1) * V);
      const want = row[p.ids[r.position + 1]] - logSumExp(row);
      assert.ok(
        Math.abs(logProbs[r.position] - want) < 1e-3,
        `pos ${r.position}: ${logProbs[r.position]} vs ${want}`,
      );
    }
    assert.ok(ppl > 1 && ppl < 200, `perplexity ${ppl}`);
    const h1 = await Effect.runPromise(documentHidden(m, p.ids));
    const h2 = await Effect.runPromise(documentHidden(m, p.ids, { chunk: 10 }));
    const same = await Effect.runPromise(compareHidden(m, h1, h2));
    assert.equal(same.top1Agreement, 1);
    assert.ok(same.maxKl < 1e-6, `max KL ${same.maxKl}`);
    // A damaged run (last-token-only attention in the upper half of the layers) must register.
    const h3 = await Effect.runPromise(documentHidden(m, p.ids, {
      attention: (q, _k, v, ctx) => {
        const o = new Float32Array(q.length);
        for (let h = 0; h < ctx.heads; h++) {
          for (let i = 0; i < ctx.seq; i++) {
            const src = (Math.floor(h / (ctx.heads / ctx.kvHeads)) * ctx.kvStride + ctx.offset + i) *
              ctx.headDim;
            o.set(v.subarray(src, src + ctx.headDim), (h * ctx.seq + i) * ctx.headDim);
          }
        }
        return o;
      },
    }));
    const diff = await Effect.runPromise(compareHidden(m, h1, h3));
    assert.ok(diff.meanKl > 0.05 && diff.top1Agreement < 1, `KL ${diff.meanKl}, top-1 ${diff.top1Agreement}`);
    const bad = await Effect.runPromise(Effect.flip(compareHidden(m, h1, h1.subarray(5))));
    assert.equal(bad._tag, "ShapeError");
    const short = await Effect.runPromise(Effect.flip(documentPerplexity(m, [5])));
    assert.equal(short._tag, "ShapeError");
  },
  { ignore: !haveModel },
);
