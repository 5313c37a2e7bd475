/** When `run`'s greedy decoding stops (`answerStopAt`): end of turn, end of the answer's first line, else on. */
import { assert, test } from "../../../../tests/harness.ts";
import { answerStopAt } from "./execute.ts";

const vocab = ["<eos>", "<|im_end|>", "The", " answer", ".", "\n", ".\n", "  "];
const tok = {
  eosId: 0,
  controlIds: new Set([1]),
  decode: (ids: readonly number[]) => ids.map((i) => vocab[i]).join(""),
};

test("answer stop: end of turn, end of line once there is text, otherwise go on", () => {
  assert.equal(answerStopAt(tok, [2, 3], 0), "end-of-turn");
  assert.equal(answerStopAt(tok, [], 1), "end-of-turn");
  assert.equal(answerStopAt(tok, [2, 3, 4], 5), "end-of-line");
  assert.equal(answerStopAt(tok, [2, 3], 6), "end-of-line");
  // a newline before any text is not the end of the answer (models often open with one)
  assert.equal(answerStopAt(tok, [], 5), undefined);
  assert.equal(answerStopAt(tok, [7], 5), undefined);
  assert.equal(answerStopAt(tok, [2], 3), undefined);
});
