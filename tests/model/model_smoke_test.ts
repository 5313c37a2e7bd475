/**
 * Runtime smoke test (Deno and Bun): load the GGUF, tokenize the fixture's chat prompt, run the forward with
 * the GEMM through this runtime's FFI, and check the last position's logits against the float64 reference.
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { fixture, fixtureLogits, haveModel, model, relL2 } from "./fixture.ts";

test("model loads and the chat prompt's last logits match the reference under this runtime", async () => {
  const m = await model();
  const p = fixture.prompts[0];
  const ids = m.tokenizer.encode(m.tokenizer.applyChatTemplate(p.messages ?? [], true));
  assert.deepEqual(ids, p.ids);
  const h = await Effect.runPromise(m.forward(ids, m.newCache(ids.length)));
  const r = fixture.fullLogits.find((r) => r.prompt === p.name && r.position === ids.length - 1);
  if (!r) throw new Error("fixture lacks the chat prompt's last-position logits");
  const V = fixture.vocab;
  const e = relL2(m.logits(h, ids.length - 1, 1), fixtureLogits().subarray(r.row * V, (r.row + 1) * V));
  console.log(`gemm ${m.sgemm.name}: relative L2 error ${e.toExponential(2)}`);
  assert.ok(e <= 1e-3, `relative error ${e}`);
}, { ignore: !haveModel });
