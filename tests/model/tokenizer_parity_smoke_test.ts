/**
 * Tokenizer parity: our ids (Tokenizers.js with the GGUF's vocabulary, `runtime/src/model/tokenizer.ts`) equal
 * Hugging Face's Rust `tokenizers` on every text of `tests/fixtures/smollm2/tokenizer-parity.json` (made once
 * by scripts/make-tokenizer-parity.py: all number characters of Unicode 3.2, all whitespace and controls,
 * 600 seeded random strings over all assigned code points, literal special tokens, document paragraphs), both
 * with specials matched (`encode`) and with specials split as ordinary text (`encodeOrdinary`).
 * Skipped when the model file is absent.
 * @module
 */
import { Effect } from "effect";
import { readFileSync } from "node:fs";
import { assert, test } from "../harness.ts";
import { haveModel } from "./fixture.ts";
import { modelPath } from "../../runtime/src/paths.ts";
import { openGguf } from "../../runtime/src/model/gguf.ts";
import { type TextTokenizer, tokenizerFromGguf } from "../../runtime/src/model/tokenizer.ts";

interface ParityCase {
  readonly text: string;
  readonly ids: number[];
  readonly ordinary?: number[];
}
const parity: { reference: string; cases: ParityCase[] } = JSON.parse(
  readFileSync(new URL("../fixtures/smollm2/tokenizer-parity.json", import.meta.url), "utf8"),
);

let tok: Promise<TextTokenizer> | undefined;
const tokenizer = () =>
  tok ??= Effect.runPromise(Effect.flatMap(openGguf(modelPath()), (f) => tokenizerFromGguf(f)));

const mismatches = (f: (t: string) => number[], want: (c: ParityCase) => number[]) =>
  parity.cases.filter((c) => JSON.stringify(f(c.text)) !== JSON.stringify(want(c)));

const show = (bad: ParityCase[], f: (t: string) => number[], want: (c: ParityCase) => number[]) =>
  bad.slice(0, 5).map((c) =>
    `${JSON.stringify(c.text.slice(0, 40))}: got ${f(c.text).slice(0, 12)} want ${want(c).slice(0, 12)}`
  )
    .join("\n");

test("tokenizer parity with HF tokenizers: encode() on the whole Unicode sample", async () => {
  const tk = await tokenizer();
  assert.ok(parity.cases.length > 1000, `${parity.cases.length} cases`);
  const enc = (t: string) => tk.encode(t);
  const bad = mismatches(enc, (c) => c.ids);
  assert.equal(
    bad.length,
    0,
    `${bad.length}/${parity.cases.length} differ:\n${show(bad, enc, (c) => c.ids)}`,
  );
}, { ignore: !haveModel });

test(
  "tokenizer parity: encodeOrdinary() never emits a control id and equals HF's encode_special_tokens",
  async () => {
    const tk = await tokenizer();
    const ord = (t: string) => tk.encodeOrdinary(t);
    const want = (c: ParityCase) => c.ordinary ?? c.ids;
    const withSpecials = parity.cases.filter((c) => c.ordinary !== undefined);
    assert.ok(withSpecials.length >= 17, "every special token appears in the sample");
    const bad = mismatches(ord, want);
    assert.equal(bad.length, 0, `${bad.length}/${parity.cases.length} differ:\n${show(bad, ord, want)}`);
    for (const c of parity.cases) {
      for (const id of tk.encodeOrdinary(c.text)) assert.ok(!tk.controlIds.has(id), JSON.stringify(c.text));
    }
  },
  { ignore: !haveModel },
);

test(
  "tokenizer: non-ASCII number characters are split one per token, as \\p{N} (was ASCII \\d only)",
  async () => {
    const tk = await tokenizer();
    for (const s of ["½", "①②", "ⅫⅪ", "３００", "٣٤", "१०"]) {
      const ids = tk.encode(s);
      assert.equal(tk.decode(ids), s);
      const pieces = ids.map((i) => tk.decode([i]));
      // Each number character is its own pre-token, so no token spans two of them.
      assert.ok(ids.length >= [...s].length, `${s}: ${JSON.stringify(pieces)}`);
    }
  },
  { ignore: !haveModel },
);
