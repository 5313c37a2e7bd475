/**
 * LongSpec on the CPU forward with real SmolLM2 text: plain greedy decoding against speculative decoding with
 * the random, oracle and self drafts, from one prefill of a bundled document's first `--tokens` tokens (the
 * model continues the text). Checks that every draft's output is token-identical to plain greedy and
 * reports tokens/s, mean accepted length per round, draft cost share and the speed-up over plain decoding with
 * the same kernels (plain is timed before and after the drafts, and once more through the verify call's attention kernels — a
 * one-node tree per step; the speed-up is against the fastest of the three). Prints one JSON object (and `--out` writes it).
 *
 * Usage: `deno run -A benchmarks/longspec_cpu.ts [--tokens 6200] [--max-new 32] [--shape 4,16,16,16,16]
 * [--self-shape "1,1,1,1;4,16,16,16,16"] [--drafts plain,random,oracle,self] [--window 512] [--sinks 4] [--doc alice-in-wonderland]`
 * @module
 */
import { Effect } from "effect";
import { loadLlama } from "../runtime/src/model/llama.ts";
import type { KvCache, LlamaModel } from "../runtime/src/model/llama.ts";
import { argmax, prefill } from "../runtime/src/model/llama.ts";
import { modelPath, readDocument } from "../runtime/src/paths.ts";
import {
  type Draft,
  oracleDraft,
  plainDecode,
  randomDraft,
  SAME_KERNEL_DECODE,
  selfDraft,
  speculativeDecode,
} from "../runtime/src/speculative/mod.ts";
import { parseFlags } from "./lib/args.ts";

const args = parseFlags("deno run -A benchmarks/longspec_cpu.ts [flags]", {
  tokens: { kind: "int", default: 6200, min: 16, help: "prompt tokens (document head + chat template)" },
  "max-new": { kind: "int", default: 32, min: 2, help: "tokens generated per run" },
  shape: { kind: "string", default: "4,16,16,16,16", help: "tree shape of the random and oracle drafts" },
  "self-shape": {
    kind: "string",
    default: "1,1,1,1;4,16,16,16,16",
    help: "tree shapes of the self-draft (';'-separated, one run each)",
  },
  drafts: { kind: "string", default: "random,oracle,self", help: "drafts to run after plain decoding" },
  sinks: { kind: "int", default: 4, min: 0, help: "self-draft sink rows" },
  window: { kind: "int", default: 512, min: 0, help: "self-draft window rows" },
  doc: { kind: "string", default: "alice-in-wonderland", help: "bundled document" },
  out: { kind: "string", default: "", help: "write the JSON report here" },
});

const shapeOf = (s: string) => s.split(",").filter((x) => x !== "").map(Number);

const cloneCache = (c: KvCache): KvCache => ({
  capacity: c.capacity,
  length: c.length,
  k: c.k.map((x) => x.slice()),
  v: c.v.map((x) => x.slice()),
});

/** The first `tokens` tokens of the document: the model continues the text. */
const promptOf = (model: LlamaModel, text: string, tokens: number): number[] =>
  model.tokenizer.encodeOrdinary(text).slice(0, tokens);

const main = Effect.gen(function* () {
  const model = yield* loadLlama(modelPath());
  const text = yield* readDocument(args.doc);
  const prompt = promptOf(model, text, args.tokens);
  const maxNew = args["max-new"];
  const shape = shapeOf(args.shape), selfShapes = args["self-shape"].split(";").map(shapeOf);
  const widest = Math.max(...[shape, ...selfShapes].map((s) => s.reduce((a, b) => a + b, 0)));
  const cache = model.newCache(prompt.length + maxNew + 1 + widest + 64);
  const t0 = performance.now();
  const last = yield* prefill(model, prompt, cache);
  const prefillMs = performance.now() - t0;
  const first = argmax(last);
  console.error(`prefill ${prompt.length} tokens: ${(prefillMs / 1000).toFixed(1)} s`);
  const plain = yield* plainDecode(model, cloneCache(cache), first, maxNew, false);
  console.error(`plain: ${plain.tokensPerSecond.toFixed(2)} tok/s`);
  const drafts: Record<string, () => [Draft, readonly number[]][]> = {
    random: () => [[randomDraft(1), shape]],
    oracle: () => [[oracleDraft(plain.ids), shape]],
    self: () => selfShapes.map((sh) => [selfDraft({ sinks: args.sinks, window: args.window }), sh]),
  };
  const todo: [Draft, readonly number[]][] = [];
  for (const name of args.drafts.split(",").filter((x) => x !== "")) {
    const make = drafts[name];
    if (!make) throw new Error(`unknown draft ${name}: random, oracle, self`);
    todo.push(...make());
  }
  const runs = [];
  for (const [draft, sh] of todo) {
    const r = yield* speculativeDecode(model, cloneCache(cache), first, maxNew, {
      draft,
      shape: sh,
      stopAtEos: false,
    });
    const identical = r.ids.length === plain.ids.length && r.ids.every((t, i) => t === plain.ids[i]);
    const row = {
      draft: draft.name,
      shape: sh,
      identical,
      tokensPerSecond: r.tokensPerSecond,
      speedupVsFirstPlain: r.tokensPerSecond / plain.tokensPerSecond,
      meanAccepted: r.meanAccepted,
      tokensPerRound: r.tokensPerRound,
      rounds: r.rounds,
      draftShare: r.draftShare,
      draftMsPerRound: r.draftMs / r.rounds,
      verifyMsPerRound: r.verifyMs / r.rounds,
    };
    console.error(JSON.stringify(row));
    runs.push(row);
  }
  // plain decoding again after the drafts (the machine is shared), with dense.cacheAttn and with the verify
  // call's attention kernels (a one-node tree per step): speed-ups against the fastest plain run
  const plain2 = yield* plainDecode(model, cloneCache(cache), first, maxNew, false);
  const plainSame = yield* plainDecode(model, cloneCache(cache), first, maxNew, false, SAME_KERNEL_DECODE);
  if (plainSame.ids.some((t, i) => t !== plain.ids[i])) {
    throw new Error("plain decodes differ between kernels");
  }
  const best = Math.max(plain.tokensPerSecond, plain2.tokensPerSecond, plainSame.tokensPerSecond);
  for (const r of runs) Object.assign(r, { speedup: r.tokensPerSecond / best });
  const report = {
    prompt: prompt.length,
    maxNew,
    prefillMs,
    plainTokensPerSecond: [plain.tokensPerSecond, plain2.tokensPerSecond],
    plainSameKernelTokensPerSecond: plainSame.tokensPerSecond,
    plainMsPerToken: 1000 / best,
    text: model.tokenizer.decode(plain.ids),
    runs,
    allIdentical: runs.every((r) => r.identical),
  };
  const json = JSON.stringify(report, null, 2);
  console.log(json);
  if (args.out) Deno.writeTextFileSync(args.out, json + "\n");
});

await Effect.runPromise(main);
