/**
 * Tokenizer built from the GGUF: known ids from Hugging Face `tokenizers` (Rust, via scripts/make-fixture.py),
 * round trips on varied text, and the ChatML chat template against its jinja2 rendering.
 */
import { assert, test } from "../harness.ts";
import { fixture, haveModel, model } from "./fixture.ts";

test(
  "known ids match Hugging Face tokenizers (unicode, whitespace, digits, code, control tokens)",
  async () => {
    const tk = (await model()).tokenizer;
    assert.ok(fixture.tokenizer.length >= 10);
    for (const c of fixture.tokenizer) {
      assert.deepEqual(tk.encode(c.text), c.ids, JSON.stringify(c.text));
      assert.equal(tk.decode(c.ids), c.decoded);
    }
    for (const p of fixture.prompts) assert.deepEqual(tk.encode(p.text), p.ids, p.name);
  },
  { ignore: !haveModel },
);

test("round trip decode(encode(s)) = s on varied text; digits are split one per token", async () => {
  const tk = (await model()).tokenizer;
  const texts = [
    "",
    " ",
    "\n\n\t  \r\n",
    "Ünïcödé ǅ ﬁ ẞ — ½ ∑ √2 ≈ 1.4142 🇫🇷 👍🏽 ∀x∈ℝ",
    "1234567890 0.5e-10 #12 $3,000,000",
    "   indented\n\t\tcode();  // trailing   ",
    "<|im_end|> literal control token in the middle <|endoftext|>",
    "a".repeat(500),
    "The quick brown fox jumps over the lazy dog. ".repeat(20),
  ];
  for (const s of texts) assert.equal(tk.decode(tk.encode(s)), s, JSON.stringify(s.slice(0, 40)));
  const ids = tk.encode("2026");
  assert.equal(ids.length, 4);
  assert.deepEqual(ids.map((i) => tk.idToToken(i)), ["2", "0", "2", "6"]);
  assert.equal(tk.encode("<|im_start|>")[0], 1);
  assert.equal(tk.decode(tk.encode("<|im_start|>hi<|im_end|>"), true), "hi");
  assert.equal(tk.vocabSize, 49152);
  assert.equal(tk.eosId, 2);
}, { ignore: !haveModel });

test("chat template matches the GGUF's jinja template (default system turn, generation prompt)", async () => {
  const tk = (await model()).tokenizer;
  assert.equal(fixture.chatTemplate.length, 2);
  for (const c of fixture.chatTemplate) {
    assert.equal(tk.applyChatTemplate(c.messages, c.addGenerationPrompt), c.text);
  }
  assert.ok(tk.applyChatTemplate([{ role: "user", content: "x" }], true).endsWith("<|im_start|>assistant\n"));
}, { ignore: !haveModel });
