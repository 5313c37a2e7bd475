/**
 * The traceback bench's cases (benchmarks/traceback/cases.ts): each planted sentence sits in the text the
 * ground truth names and nowhere else, the texts are the document's words in order, cases are deterministic.
 * @module
 */
import { assert, test } from "../harness.ts";
import { type CaseKind, makeCase } from "../../benchmarks/traceback/cases.ts";

const doc = Array.from({ length: 3000 }, (_, i) => `w${i}`).join(" ");

test("traceback cases: plants in the truth texts only, document words in order, seeded", () => {
  for (const [i, kind] of (["facts-1", "facts-2", "facts-3", "injection"] as CaseKind[]).entries()) {
    const c = makeCase(doc, "synthetic", kind, i, 1, 2000, 100);
    assert.equal(c.truth.length, kind === "injection" ? 1 : Number(kind.slice(-1)));
    assert.equal(new Set(c.truth).size, c.truth.length);
    for (const t of c.truth) assert.ok(t > 0 && t < c.texts.length - 1, "never the first or last text");
    // every text without a plant is exactly 100 consecutive document words; planted texts hold one sentence more
    const words = c.texts.map((t) => t.split(" ").filter((w) => /^w\d+$/.test(w)));
    const flat = words.flat().map((w) => Number(w.slice(1)));
    for (let j = 1; j < flat.length; j++) assert.equal(flat[j], flat[j - 1] + 1);
    c.texts.forEach((t, j) => {
      const planted = t.split(" ").some((w) => !/^w\d+$/.test(w));
      assert.equal(planted, c.truth.includes(j), `text ${j} of ${c.id}`);
    });
    // the answer's distinctive words come from the plants (facts) or are the injection's payload
    const plantedText = c.truth.map((t) => c.texts[t]).join(" ");
    if (kind === "injection") assert.ok(plantedText.includes(c.answer));
    assert.deepEqual(makeCase(doc, "synthetic", kind, i, 1, 2000, 100), c);
    assert.notDeepEqual(
      makeCase(doc, "synthetic", kind, i, 2, 2000, 100).texts,
      c.texts,
      "another seed, another start",
    );
  }
});
