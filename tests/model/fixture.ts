/**
 * Shared loading for the model tests: the committed reference fixture (made by scripts/make-fixture.py) and
 * the model (loaded once per test file; tests are skipped when the GGUF is absent — run `npm run setup`).
 */
import { Effect } from "effect";
import { existsSync, readFileSync } from "node:fs";
import { modelPath } from "../../runtime/src/paths.ts";
import { type LlamaModel, loadLlama } from "../../runtime/src/model/llama.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
// OpenBLAS is loaded once per process and kept (runtime/src/model/blas.ts): load it before any test, so the
// resource sanitizer sees a library held for the process, not one a test forgot to close.
await loadSgemm();

/** One reference prompt of the fixture. */
export interface FixturePrompt {
  readonly name: string;
  readonly text: string;
  readonly messages?: { role: string; content: string }[];
  readonly ids: number[];
  readonly top50: { ids: number[]; logits: number[] }[];
  readonly greedy: number[];
  readonly greedyGaps: number[];
  readonly greedyText: string;
}

/** The fixture JSON (see scripts/make-fixture.py). */
export interface Fixture {
  readonly model_sha256: string;
  readonly vocab: number;
  readonly prompts: FixturePrompt[];
  readonly fullLogits: { prompt: string; position: number; row: number }[];
  readonly tokenizer: { text: string; ids: number[]; decoded: string }[];
  readonly chatTemplate: {
    messages: { role: string; content: string }[];
    addGenerationPrompt: boolean;
    text: string;
  }[];
}

const dir = new URL("../fixtures/smollm2/", import.meta.url);

/** The parsed fixture. */
export const fixture: Fixture = JSON.parse(readFileSync(new URL("fixture.json", dir), "utf8"));

/** Full reference logits `[rows, vocab]` (float64 reference rounded to f32). */
export const fixtureLogits = (): Float32Array => {
  const b = readFileSync(new URL("logits.f32", dir));
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4).slice();
};

/** Whether the model file is present (tests needing it are skipped otherwise). */
export const haveModel: boolean = existsSync(modelPath());

let cached: Promise<LlamaModel> | undefined;
/** The model, loaded once. */
export const model = (): Promise<LlamaModel> => (cached ??= Effect.runPromise(loadLlama(modelPath())));

/** ‖a − b‖₂ / ‖b‖₂ in f64. */
export const relL2 = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
};
