/**
 * LongSpec's decode loop on the CPU forward with SmolLM2 and real text (runtime/src/speculative): the model-side
 * pieces (explicit position ids, the tree attention of a forward call, the KV update after verification) and
 * losslessness — greedy output token-identical to plain greedy decoding for a random draft, an oracle draft (the
 * official tree shape, every depth accepted) and the self-draft (sinks + window), from one prefill of a
 * bundled document. The prompt here is 600 tokens (what a test affords on the 2-core machine; the ≥ 6K runs
 * are `benchmarks/longspec_cpu.ts`).
 * @module
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { ShapeError } from "@longctx/graph";
import { argmax, keepCacheRows, type KvCache, prefill } from "../../runtime/src/model/llama.ts";
import { readDocument } from "../../runtime/src/paths.ts";
import {
  generateSpeculative,
  oracleDraft,
  plainDecode,
  randomDraft,
  selfDraft,
  speculativeDecode,
  treeAttention,
} from "../../runtime/src/speculative/mod.ts";
import { DEFAULT_SPECULATIVE, parseSpeculative } from "../../runtime/src/cli/run/speculative.ts";
import { haveModel, model } from "./fixture.ts";

const clone = (c: KvCache): KvCache => ({
  capacity: c.capacity,
  length: c.length,
  k: c.k.map((x) => x.slice()),
  v: c.v.map((x) => x.slice()),
});

const maxDiff = (a: Float32Array, b: Float32Array) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

test(
  "model side: explicit positions, a chain tree's attention equals causal attention, keepCacheRows compacts",
  async () => {
    const m = await model();
    const ids = m.tokenizer.encodeOrdinary("The quick brown fox jumps over the lazy dog, and then it rests.");
    const P = ids.length - 5;
    const c0 = m.newCache(ids.length + 8);
    await Effect.runPromise(m.forward(ids.slice(0, P), c0));
    // default positions = explicit cache.length + i
    const a = clone(c0), b = clone(c0);
    const ha = await Effect.runPromise(m.forward(ids.slice(P), a));
    const hb = await Effect.runPromise(
      m.forward(ids.slice(P), b, { positions: Array.from({ length: 5 }, (_, i) => P + i) }),
    );
    assert.equal(maxDiff(ha, hb), 0);
    // a chain tree (parents i − 1) at base + depth is causal attention over prefix ∪ chain
    const c = clone(c0);
    const hc = await Effect.runPromise(
      m.forward(ids.slice(P), c, {
        positions: Array.from({ length: 5 }, (_, i) => P + i),
        attention: treeAttention(Int32Array.from({ length: 5 }, (_, i) => i - 1)),
      }),
    );
    assert.ok(maxDiff(ha, hc) < 1e-3, `chain tree vs causal: ${maxDiff(ha, hc)}`);
    // a wrong position changes the result (RoPE is applied from the given ids)
    const d = clone(c0);
    const hd = await Effect.runPromise(
      m.forward(ids.slice(P), d, { positions: [P, P + 1, P + 1, P + 3, P + 4] }),
    );
    assert.ok(maxDiff(ha, hd) > 1e-2);
    // bad positions are a ShapeError
    const bad = await Effect.runPromise(
      Effect.flip(m.forward(ids.slice(P), clone(c0), { positions: [1, 2] })),
    );
    assert.ok(bad instanceof ShapeError);
    // keepCacheRows: rows base + [0, 2, 4] → base + [0, 1, 2], other layers' rows untouched below base
    const e = clone(a), D = m.config.headDim, C = e.capacity, KH = m.config.nKvHead;
    keepCacheRows(e, { kvHeads: KH, headDim: D }, P, [0, 2, 4]);
    assert.equal(e.length, P + 3);
    for (const [l, buf] of e.k.entries()) {
      for (let g = 0; g < KH; g++) {
        for (const [j, r] of [0, 2, 4].entries()) {
          const got = buf.subarray((g * C + P + j) * D, (g * C + P + j + 1) * D);
          const want = a.k[l].subarray((g * C + P + r) * D, (g * C + P + r + 1) * D);
          assert.equal(maxDiff(got, want), 0);
        }
        assert.equal(
          maxDiff(buf.subarray(g * C * D, (g * C + P) * D), a.k[l].subarray(g * C * D, (g * C + P) * D)),
          0,
        );
      }
    }
    assert.throws(() => keepCacheRows(clone(a), { kvHeads: KH, headDim: D }, P, [0, 0]), RangeError);
    assert.throws(() => keepCacheRows(clone(a), { kvHeads: KH, headDim: D }, P, [0, 9]), RangeError);
  },
  { ignore: !haveModel },
);

test(
  "losslessness on real text: random, oracle (official shape) and self drafts give plain greedy's tokens",
  async () => {
    const m = await model();
    const text = await Effect.runPromise(readDocument("alice-in-wonderland"));
    const prompt = m.tokenizer.encodeOrdinary(text).slice(2000, 2600);
    const maxNew = 16;
    const cache = m.newCache(prompt.length + maxNew + 80);
    const first = argmax(await Effect.runPromise(prefill(m, prompt, cache)));
    const plain = await Effect.runPromise(plainDecode(m, clone(cache), first, maxNew, false));
    assert.equal(plain.ids.length, maxNew);
    const runs = [
      { draft: randomDraft(5), shape: [3, 3, 3] },
      { draft: oracleDraft(plain.ids), shape: [4, 16, 16, 16, 16] },
      { draft: selfDraft({ sinks: 4, window: 64 }), shape: [2, 2, 2] },
    ];
    for (const r of runs) {
      const got = await Effect.runPromise(
        speculativeDecode(m, clone(cache), first, maxNew, { ...r, stopAtEos: false }),
      );
      console.log(
        `  ${r.draft.name} ${JSON.stringify(r.shape)}: ${got.rounds} rounds, accepted ${
          JSON.stringify(got.accepted)
        }, draft share ${got.draftShare.toFixed(2)}`,
      );
      assert.deepEqual(got.ids, plain.ids, r.draft.name);
      if (r.draft.name === "oracle") {
        // every depth of the branch is accepted (the last round may be cut by maxNew)
        assert.ok(got.accepted.slice(0, -1).every((a) => a === 5), JSON.stringify(got.accepted));
      }
      if (r.draft.name === "random") assert.ok(got.meanAccepted < 0.5, `${got.meanAccepted}`);
    }
  },
  { ignore: !haveModel },
);

test("generateSpeculative: a bad tree shape is an InputError, a full cache a ShapeError", async () => {
  if (!haveModel) return;
  const m = await model();
  const r1 = await Effect.runPromise(
    Effect.flip(generateSpeculative(m, [1, 2, 3], 4, { draft: randomDraft(), shape: [2, 0] })),
  );
  assert.equal(r1._tag, "InputError");
  const cache = m.newCache(8);
  await Effect.runPromise(m.forward([1, 2, 3], cache));
  const r2 = await Effect.runPromise(
    Effect.flip(speculativeDecode(m, cache, 5, 4, { draft: randomDraft(), shape: [2, 2] })),
  );
  assert.equal(r2._tag, "ShapeError");
});

test("run --speculative: self, random and JSON parse; bad values are InputErrors naming the key", async () => {
  const ok = (t: string) => Effect.runPromise(parseSpeculative(t));
  const fail = (t: string) => Effect.runPromise(Effect.flip(parseSpeculative(t)));
  assert.deepEqual(await ok("self"), DEFAULT_SPECULATIVE);
  assert.equal((await ok("random")).draft, "random");
  const j = await ok('{"shape":[4,16,16,16,16],"window":64}');
  assert.deepEqual(j, { draft: "self", shape: [4, 16, 16, 16, 16], sinks: 4, window: 64 });
  for (
    const [text, word] of [
      ["fast", "not self"],
      ["[1,2]", "not a JSON object"],
      ['{"depth":3}', "unknown key depth"],
      ['{"draft":"glide"}', "draft"],
      ['{"shape":[4,0]}', "shape"],
      ['{"sinks":-1}', "sinks"],
      ['{"window":1.5}', "window"],
    ]
  ) {
    const e = await fail(text);
    assert.equal(e._tag, "InputError");
    assert.ok(e.message.includes(word), `${text}: ${e.message}`);
  }
});
