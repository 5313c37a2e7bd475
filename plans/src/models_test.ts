import { Effect } from "effect";
import { assert, test } from "../../tests/harness.ts";
import { editDistance, getModel, kvCacheBytes, modelNames, MODELS, parameterCount } from "./models.ts";

// Parameter counts the model cards publish (billions); our count from the registry's shapes must agree.
const PUBLISHED_PARAMS_B: Record<string, number> = {
  "smollm2-135m": 0.135,
  "smollm2-360m": 0.362,
  "smollm2-1.7b": 1.71,
  "llama-3.2-1b": 1.23,
  "llama-3.2-3b": 3.21,
  "llama-3.1-8b": 8.03,
  "llama-3.1-70b": 70.6,
  "qwen2.5-7b": 7.61,
  "mistral-7b-v0.3": 7.25,
};

test("registry: every model has a source, consistent shapes and its published parameter count", () => {
  assert.deepEqual([...modelNames()].sort(), Object.keys(PUBLISHED_PARAMS_B).sort());
  for (const m of MODELS) {
    assert.match(m.source, /^https:\/\/huggingface\.co\/.+\/config\.json$/, m.id);
    assert.ok(m.checkedAgainst.length > 0, m.id);
    assert.equal(m.heads % m.kvHeads, 0, `${m.id}: GQA ratio must be an integer`);
    assert.equal(m.hidden % m.heads, 0, m.id);
    const rel = Math.abs(parameterCount(m) / 1e9 - PUBLISHED_PARAMS_B[m.id]) / PUBLISHED_PARAMS_B[m.id];
    assert.ok(rel < 0.01, `${m.id}: ${parameterCount(m)} params vs published ${PUBLISHED_PARAMS_B[m.id]}B`);
  }
});

test("registry: Llama-3.1-8B and SmolLM2-135M shapes", async () => {
  const l = await Effect.runPromise(getModel("Llama-3.1-8B"));
  assert.deepEqual([l.layers, l.heads, l.kvHeads, l.headDim, l.maxContext, l.ropeTheta], [
    32,
    32,
    8,
    128,
    131072,
    500000,
  ]);
  const s = await Effect.runPromise(getModel("smollm2-135m-instruct"));
  assert.deepEqual([s.layers, s.heads, s.kvHeads, s.headDim, s.maxContext, s.ropeTheta], [
    30,
    9,
    3,
    64,
    8192,
    100000,
  ]);
  // K and V, 30 layers × 3 KV heads × 64 dims × 4 bytes per token.
  assert.equal(kvCacheBytes(s, 1), 2 * 30 * 3 * 64 * 4);
});

test("registry: unknown model fails with the nearest name and the list", () => {
  const r = Effect.runSync(Effect.flip(getModel("lama-3.1-8b")));
  assert.equal(r._tag, "PlanError");
  assert.equal(r.reason, "unknown-model");
  assert.match(r.hint, /did you mean "llama-3\.1-8b"/);
  for (const n of modelNames()) assert.ok(r.hint.includes(n), n);
  const q = Effect.runSync(Effect.flip(getModel("qwen2.5-7")));
  assert.match(q.hint, /"qwen2\.5-7b"/);
});

test("editDistance", () => {
  assert.equal(editDistance("kitten", "sitting"), 3);
  assert.equal(editDistance("", "abc"), 3);
  assert.equal(editDistance("same", "same"), 0);
});
