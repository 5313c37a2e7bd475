/**
 * Interim end-to-end demo (`deno task demo`, `npm run demo`), until the `run` CLI lands: the largest check
 * that exists end to end on the assets setup installs.
 *
 * 1. Lists the documents of `<docs>/manifest.json`.
 * 2. Opens the wgpu backend (wgpu-native through FFI) and reports its adapter; on failure prints the typed
 *    error and its hint and goes on (the model below runs on the CPU).
 * 3. Loads SmolLM2-135M-Instruct from its GGUF, tokenises the first `--tokens` tokens (default 512) of a
 *    document (`--doc`, default the first), prints their perplexity (natural-log NLL per token, float64
 *    log-softmax over the f32 logits) and a greedy continuation of `--new` tokens (default 24).
 *
 * Usage: `deno run -A scripts/demo.ts [--doc NAME] [--tokens N] [--new N]` (also runs under `bun`).
 * Exits 1 with a one-line error and its hint when an asset is missing or bad.
 * @module
 */
import process from "node:process";
import { Cause, Effect, Exit, Option, Result } from "effect";
import { listDocuments, modelPath, readDocument, wgpuLibPath } from "../runtime/src/paths.ts";
import { makeWgpuBackend } from "../runtime/src/backends/wgpu.ts";
import { generateGreedy, loadLlama } from "../runtime/src/model/llama.ts";

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
};
const intArg = (name: string, fallback: number): number => {
  const v = Number(arg(name, String(fallback)));
  if (!Number.isInteger(v) || v < 2) {
    console.error(`error: --${name} must be an integer ≥ 2 (got ${arg(name, "")})`);
    process.exit(1);
  }
  return v;
};

/** Mean natural-log NLL of `tokens[1..n)` given the rows of `logits [n, vocab]` (row i predicts token i+1). */
const meanNll = (logits: Float32Array, tokens: readonly number[], vocab: number): number => {
  let total = 0;
  for (let i = 0; i + 1 < tokens.length; i++) {
    const row = logits.subarray(i * vocab, (i + 1) * vocab);
    let mx = -Infinity;
    for (let j = 0; j < vocab; j++) if (row[j] > mx) mx = row[j];
    let sum = 0;
    for (let j = 0; j < vocab; j++) sum += Math.exp(row[j] - mx);
    total += Math.log(sum) + mx - row[tokens[i + 1]];
  }
  return total / (tokens.length - 1);
};

const program = Effect.gen(function* () {
  const nTokens = intArg("tokens", 512);
  const nNew = intArg("new", 24);
  const runtime = "Bun" in globalThis ? "bun" : "deno";
  console.log(`longctx demo (${runtime}, ${process.platform}-${process.arch})`);

  const docs = yield* listDocuments();
  console.log(`\n[1/3] documents (${docs.length}):`);
  for (const d of docs) {
    console.log(
      `  ${d.name.padEnd(22)} ${String(d.bytes).padStart(7)} B  ${d.title}, ${d.author} (${d.year})`,
    );
  }

  console.log(`\n[2/3] wgpu backend (${wgpuLibPath()}):`);
  const t0 = performance.now();
  const opened = yield* Effect.result(makeWgpuBackend());
  if (Result.isSuccess(opened)) {
    const b = opened.success;
    console.log(
      `  adapter: ${b.adapter.name} (${b.adapter.api}, ${b.adapter.driver}); wgpu-native ${b.native.version}`,
    );
    console.log(`  features: ${[...b.features].sort().join(", ")}`);
    console.log(`  opened in ${(performance.now() - t0).toFixed(0)} ms`);
    yield* b.close();
  } else {
    console.log(`  not available: ${opened.failure.message}\n  hint: ${opened.failure.hint}`);
  }

  const docName = arg("doc", docs[0].name);
  console.log(`\n[3/3] SmolLM2-135M-Instruct (${modelPath()}) on "${docName}":`);
  const t1 = performance.now();
  const model = yield* loadLlama(modelPath());
  const c = model.config;
  console.log(`  loaded in ${((performance.now() - t1) / 1000).toFixed(1)} s`);
  console.log(`  config: ${JSON.stringify(c)}`);
  const text = yield* readDocument(docName);
  const all = model.tokenizer.encode(text);
  const tokens = all.slice(0, nTokens);
  console.log(
    `  document: ${text.length} characters, ${all.length} tokens; using the first ${tokens.length}`,
  );

  const cache = model.newCache(tokens.length);
  const t2 = performance.now();
  const hidden = yield* model.forward(tokens, cache);
  const logits = model.logits(hidden, 0, tokens.length);
  const ms = performance.now() - t2;
  const nll = meanNll(logits, tokens, model.tokenizer.vocabSize);
  console.log(
    `  prefill: ${tokens.length} tokens in ${(ms / 1000).toFixed(2)} s (${
      (tokens.length / ms * 1000).toFixed(0)
    } tokens/s)`,
  );
  console.log(`  perplexity: ${Math.exp(nll).toFixed(3)} (mean NLL ${nll.toFixed(4)} nats/token)`);

  const prompt = tokens.slice(0, Math.min(256, tokens.length));
  const gen = yield* generateGreedy(model, prompt, nNew, { stopAtEos: true });
  console.log(
    `  greedy continuation of the first ${prompt.length} tokens (${gen.ids.length} tokens, ` +
      `decode ${(gen.ids.length / gen.decodeMs * 1000).toFixed(1)} tokens/s):`,
  );
  console.log(`  ...${JSON.stringify(model.tokenizer.decode(prompt.slice(-24)))}`);
  console.log(`  => ${JSON.stringify(model.tokenizer.decode(gen.ids, true))}`);
});

const exit = await Effect.runPromiseExit(program);
if (Exit.isFailure(exit)) {
  const err = Cause.findErrorOption(exit.cause);
  if (Option.isSome(err)) {
    console.error(`error (${err.value._tag}): ${err.value.message}\nhint: ${err.value.hint}`);
  } else console.error(`error: ${Cause.pretty(exit.cause)}`);
  process.exit(1);
}
