/**
 * The fidelity task set (benchmarks/fidelity/tasks.ts) and RAG pipeline (benchmarks/fidelity/rag.ts): plans are
 * deterministic per seed and differ across seeds; keys are absent from the document; answers are checked by
 * normalised match (right, wrong, and near-miss answers of every kind); haystacks fit their context with every
 * fact at its place; chunks overlap so each fact lies inside one; BM25 retrieves the chunk holding the fact.
 * Tests that need the tokenizer are skipped when the model file is absent.
 * @module
 */
import { Effect } from "effect";
import { assert, test } from "../harness.ts";
import { haveModel } from "../model/fixture.ts";
import { modelPath, readDocument } from "../../runtime/src/paths.ts";
import { openGguf } from "../../runtime/src/model/gguf.ts";
import { type TextTokenizer, tokenizerFromGguf } from "../../runtime/src/model/tokenizer.ts";
import {
  buildHaystack,
  checkAnswer,
  normalise,
  planHaystack,
  SINGLE_DEPTHS,
  TASK_TYPES,
} from "../../benchmarks/fidelity/tasks.ts";
import { buildIndex, chunkRanges, passages, ragOptionsError } from "../../benchmarks/fidelity/rag.ts";

let tok: Promise<TextTokenizer> | undefined;
const tokenizer = () =>
  tok ??= Effect.runPromise(Effect.flatMap(openGguf(modelPath()), (f) => tokenizerFromGguf(f)));
const ignore = !haveModel;

/** A public-domain-like filler text long enough for an 8K haystack (lines of prose, no planted keys). */
const filler = Array.from({ length: 3000 }, (_, i) => `Line ${i} of the story went on quietly by the river.`)
  .join("\n");

test("tasks: the same seed gives the same plan; other seeds, documents and lengths give other plans", async () => {
  const p = (seed: number, doc = "x", len = 2048) => Effect.runPromise(planHaystack(seed, doc, filler, len));
  const a = await p(1), b = await p(1);
  assert.deepEqual(a, b);
  assert.equal(JSON.stringify(a), JSON.stringify(b));
  for (const other of [await p(2), await p(1, "y"), await p(1, "x", 4096)]) {
    assert.notDeepEqual(other.tasks.map((t) => t.question), a.tasks.map((t) => t.question));
  }
  // Every type present, in the counts the module promises.
  const count = (t: string) => a.tasks.filter((x) => x.type === t).length;
  assert.deepEqual(TASK_TYPES.map(count), [SINGLE_DEPTHS.length, 2, 2, 1, 2]);
  // Single facts near their depths; unanswerable keys never planted.
  a.tasks.filter((t) => t.type === "single").forEach((t, i) =>
    assert.ok(Math.abs(t.depth! - SINGLE_DEPTHS[i]) <= 0.05)
  );
  const planted = a.facts.map((f) => f.sentence).join(" ");
  for (const t of a.tasks.filter((t) => t.type === "unanswerable")) {
    const key = /(?:for|of) (?:the )?([A-Z][a-z]+)/.exec(t.question)![1];
    assert.ok(!planted.includes(key), `${key} is planted`);
  }
  // The expected answers are the planted facts.
  for (const t of a.tasks.filter((t) => t.expected.kind === "all")) {
    if (t.expected.kind === "all") { for (const v of t.expected.values) assert.ok(planted.includes(v)); }
  }
});

test("tasks: keys found in the document are not used; short documents and key shortages are typed errors", async () => {
  const withLisbon = filler + "\nThey sailed to Lisbon and to Oslo.";
  for (let s = 0; s < 20; s++) {
    const p = await Effect.runPromise(planHaystack(s, "x", withLisbon, 2048));
    const text = p.tasks.map((t) => t.question).join(" ") + p.facts.map((f) => f.sentence).join(" ");
    assert.ok(!/Lisbon|Oslo/.test(text));
  }
  const short = await Effect.runPromise(Effect.flip(planHaystack(1, "x", "too short", 2048)));
  assert.equal(short._tag, "InputError");
  assert.match(short.message, /characters/);
  const allKeys = filler + "\n" +
    "teal maroon indigo turquoise magenta cyan beige ochre lilac khaki mauve coral amber navy";
  const noColours = await Effect.runPromise(Effect.flip(planHaystack(1, "x", allKeys, 2048)));
  assert.match(noColours.message, /too few/);
});

test("tasks: answers are checked by normalised match, and wrong or evasive answers fail", () => {
  const all = { kind: "all", values: ["4821"] } as const;
  assert.ok(checkAnswer(all, "The special magic number is 4,821.").correct);
  assert.ok(checkAnswer(all, "4821").correct);
  assert.ok(!checkAnswer(all, "48210").correct);
  assert.ok(!checkAnswer(all, "It is 4812.").correct);
  const two = { kind: "all", values: ["1234", "5678"] } as const;
  assert.ok(checkAnswer(two, "1234 and 5678").correct);
  assert.equal(checkAnswer(two, "1234 only").reason, "missing 5678");
  const choice = { kind: "choice", answer: "teal", other: "navy" } as const;
  assert.ok(checkAnswer(choice, "The TEAL box.").correct);
  assert.ok(!checkAnswer(choice, "the teal box or the navy box").correct);
  assert.ok(checkAnswer(choice, "The teal box is heavier than the navy box.").correct);
  assert.ok(!checkAnswer(choice, "The navy box is heavier than the teal box.").correct);
  assert.ok(!checkAnswer(choice, "navy").correct);
  assert.ok(!checkAnswer(choice, 'The document does not say "teal box"').correct);
  const count = { kind: "count", n: 3 } as const;
  assert.ok(checkAnswer(count, "Three times.").correct);
  assert.ok(checkAnswer(count, "3").correct);
  assert.ok(!checkAnswer(count, "2 or 3").correct);
  assert.ok(!checkAnswer(count, "Twice.").correct);
  assert.ok(checkAnswer({ kind: "count", n: 2 }, "Twice.").correct);
  const abstain = { kind: "abstain" } as const;
  assert.ok(checkAnswer(abstain, '"Unknown".').correct);
  assert.ok(checkAnswer(abstain, "The document doesn't say.").correct);
  assert.ok(!checkAnswer(abstain, "Unknown, maybe 4821.").correct);
  assert.ok(!checkAnswer(abstain, "The number is 4821.").correct);
  assert.equal(normalise("  Ça, 1,234 — OK! "), "ça 1234 ok");
});

test("rag: chunks overlap and cover the document; options are validated", () => {
  const o = { chunkTokens: 100, overlapTokens: 20, topK: 3 };
  const r = chunkRanges(1000, o);
  assert.equal(r[0].start, 0);
  assert.equal(r[r.length - 1].end, 1000);
  for (let i = 1; i < r.length; i++) assert.equal(r[i - 1].end - r[i].start, 20);
  assert.deepEqual(chunkRanges(50, o), [{ start: 0, end: 50 }]);
  assert.equal(ragOptionsError(o), undefined);
  assert.match(ragOptionsError({ ...o, overlapTokens: 100 })!.message, /overlap/);
  assert.match(ragOptionsError({ ...o, topK: 0 })!.message, /topK/);
  const p = passages([...Array(300).keys()], [
    { id: 2, start: 160, end: 260, text: "" },
    { id: 0, start: 0, end: 100, text: "" },
    { id: 1, start: 80, end: 180, text: "" },
  ], [-1]);
  assert.deepEqual(p.ranges, [{ start: 0, end: 260 }]);
  assert.equal(p.ids.length, 260);
});

test(
  "tasks + rag: a 2K haystack fits, facts sit at their depths, BM25 retrieves each single fact",
  async () => {
    const tk = await tokenizer();
    const text = await Effect.runPromise(readDocument("alice-in-wonderland"));
    const plan = await Effect.runPromise(planHaystack(7, "alice-in-wonderland", text, 2048));
    const h = await Effect.runPromise(buildHaystack(tk, text, plan, 16));
    const longest = Math.max(...h.suffixes.map((s) => s.length));
    assert.ok(h.prefix.length + longest + 16 <= 2048);
    assert.ok(h.prefix.length + longest + 16 > 2048 - 8, "the document fills the context");
    for (const f of h.facts) {
      assert.equal(tk.decode(h.docIds.slice(f.at, f.at + f.tokens)), `${f.sentence}\n`);
      assert.ok(Math.abs(f.actualDepth - f.depth) < 0.1, `${f.sentence}: ${f.actualDepth} vs ${f.depth}`);
    }
    // Control tokens come from the template only: <|im_end|> and <|im_start|> after the question.
    for (const s of h.suffixes) {
      assert.deepEqual(s.filter((i) => tk.controlIds.has(i)).map((i) => tk.decode([i])), [
        "<|im_end|>",
        "<|im_start|>",
      ]);
    }
    const index = buildIndex(tk, h.docIds, { chunkTokens: 160, overlapTokens: 32, topK: 4 });
    for (const t of plan.tasks.filter((t) => t.type === "single")) {
      const f = h.facts[t.facts[0]];
      const top = index.retrieve(t.question, 4).map((x) => x.chunk);
      assert.ok(top.some((c) => c.start <= f.at && f.at + f.tokens <= c.end), `${t.question} not retrieved`);
    }
    // Deterministic end to end: the same plan gives the same tokens.
    const again = await Effect.runPromise(buildHaystack(tk, text, plan, 16));
    assert.deepEqual(again.prefix, h.prefix);
  },
  { ignore },
);
