/**
 * `run --speculative`: LongSpec speculative decoding of the answer (runtime/src/speculative) next to plain greedy
 * decoding with the same kernels (each plain step a one-node tree through the verify call's attention), both on
 * the CPU forward (`runtime/src/model/llama.ts`) from one prefill of the prompt: whether the tokens are identical (they must be: greedy verification is lossless), tokens/s of each,
 * the speed-up, the mean accepted length per round and the draft's share of the decode time.
 * @module
 */
/** @internal Effect's types (`Effect`, …) are documented by the `effect` package. */
import { Effect } from "effect";
import { InputError, type ShapeError } from "@longctx/graph";
import { longspec } from "@longctx/ops";
import { argmax, type KvCache, type LlamaModel, prefill } from "../../model/llama.ts";
import {
  type Draft,
  plainDecode,
  randomDraft,
  SAME_KERNEL_DECODE,
  selfDraft,
  speculativeDecode,
} from "../../speculative/mod.ts";

/** What `--speculative` asks for: a draft and its tree. */
export interface SpeculativeSpec {
  /** The draft: `self` (the training-free self-draft) or `random` (a check that any draft is lossless). */
  readonly draft: "self" | "random";
  /** Tree shape, nodes per depth below the root. */
  readonly shape: readonly number[];
  /** Self-draft sink rows. */
  readonly sinks: number;
  /** Self-draft window rows. */
  readonly window: number;
}

/** The defaults of `--speculative self`: a 4-deep chain (the CPU's best trade, see ops/longspec/README.md). */
export const DEFAULT_SPECULATIVE: SpeculativeSpec = {
  draft: "self",
  shape: [1, 1, 1, 1],
  sinks: 4,
  window: 512,
};

const bad = (text: string, why: string) =>
  new InputError({
    message: `--speculative ${JSON.stringify(text)}: ${why}`,
    hint:
      `pass self, random, or JSON such as '{"draft":"self","shape":[4,16,16,16,16],"sinks":4,"window":512}'`,
  });

/**
 * `--speculative`'s value: `self`, `random`, or a JSON object with any of `draft`, `shape`, `sinks`, `window`
 * (the rest from {@link DEFAULT_SPECULATIVE}). Fails with `InputError` naming the bad key.
 */
export const parseSpeculative = (text: string): Effect.Effect<SpeculativeSpec, InputError> =>
  Effect.gen(function* () {
    if (text === "self" || text === "random") return { ...DEFAULT_SPECULATIVE, draft: text };
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      return yield* bad(text, "not self, random or a JSON object");
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) return yield* bad(text, "not a JSON object");
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (!["draft", "shape", "sinks", "window"].includes(k)) return yield* bad(text, `unknown key ${k}`);
    }
    const draft = o.draft ?? DEFAULT_SPECULATIVE.draft;
    if (draft !== "self" && draft !== "random") return yield* bad(text, `draft ${JSON.stringify(draft)}`);
    const shape = o.shape ?? DEFAULT_SPECULATIVE.shape;
    if (!Array.isArray(shape) || shape.some((w) => !Number.isInteger(w) || w < 1)) {
      return yield* bad(text, "shape: positive integers per depth");
    }
    const count = (k: "sinks" | "window") => {
      const x = o[k] ?? DEFAULT_SPECULATIVE[k];
      return Number.isInteger(x) && (x as number) >= 0 ? x as number : undefined;
    };
    const sinks = count("sinks"), window = count("window");
    if (sinks === undefined) return yield* bad(text, "sinks: an integer ≥ 0");
    if (window === undefined) return yield* bad(text, "window: an integer ≥ 0");
    return { draft, shape: shape as number[], sinks, window };
  });

/** The `speculative` part of the run report. */
export interface SpeculativeInfo {
  /** The draft's name (with its sinks and window). */
  readonly draft: string;
  /** Tree shape verified per round. */
  readonly shape: readonly number[];
  /** Tree nodes per round (root included). */
  readonly treeNodes: number;
  /** Tokens decoded by each (the answer budget, no early stop). */
  readonly tokens: number;
  /** Whether the speculative tokens equal plain greedy's (lossless). */
  readonly identical: boolean;
  /** The CPU forward's prefill of the prompt, ms. */
  readonly prefillMs: number;
  /** Plain greedy decoding, tokens/s (one forward per token, through the verify call's attention kernels). */
  readonly plainTokensPerS: number;
  /** Speculative decoding, tokens/s. */
  readonly tokensPerS: number;
  /** `tokensPerS / plainTokensPerS`. */
  readonly speedup: number;
  /** Verification rounds. */
  readonly rounds: number;
  /** Mean draft tokens accepted per round. */
  readonly meanAccepted: number;
  /** Mean tokens emitted per round (accepted + bonus). */
  readonly tokensPerRound: number;
  /** Share of the decode time spent drafting. */
  readonly draftShare: number;
}

const clone = (c: KvCache): KvCache => ({
  capacity: c.capacity,
  length: c.length,
  k: c.k.map((x) => x.slice()),
  v: c.v.map((x) => x.slice()),
});

/**
 * Prefill `prompt` on the CPU forward, then decode `maxNew` tokens plainly and speculatively (`spec`) from
 * copies of that cache. Fails with `ShapeError` for a prompt the model cannot take, `InputError` for a bad tree.
 */
export const runSpeculativePass = (
  model: LlamaModel,
  prompt: readonly number[],
  maxNew: number,
  spec: SpeculativeSpec,
): Effect.Effect<SpeculativeInfo, ShapeError | InputError> =>
  Effect.gen(function* () {
    const nodes = yield* Effect.try({
      try: () => longspec.treeNodeCount(spec.shape),
      catch: (e) => e as InputError,
    });
    const cache = model.newCache(prompt.length + maxNew + nodes);
    const t0 = performance.now();
    const first = argmax(yield* prefill(model, prompt, cache));
    const prefillMs = performance.now() - t0;
    const plain = yield* plainDecode(model, clone(cache), first, maxNew, false, SAME_KERNEL_DECODE);
    const draft: Draft = spec.draft === "self"
      ? selfDraft({ sinks: spec.sinks, window: spec.window })
      : randomDraft(1);
    const r = yield* speculativeDecode(model, cache, first, maxNew, {
      draft,
      shape: spec.shape,
      stopAtEos: false,
    });
    return {
      draft: draft.name,
      shape: spec.shape,
      treeNodes: nodes,
      tokens: r.ids.length,
      identical: r.ids.length === plain.ids.length && r.ids.every((t, i) => t === plain.ids[i]),
      prefillMs,
      plainTokensPerS: plain.tokensPerSecond,
      tokensPerS: r.tokensPerSecond,
      speedup: plain.tokensPerSecond > 0 ? r.tokensPerSecond / plain.tokensPerSecond : 0,
      rounds: r.rounds,
      meanAccepted: r.meanAccepted,
      tokensPerRound: r.tokensPerRound,
      draftShare: r.draftShare,
    };
  });

/** The report lines of a speculative pass. */
export const speculativeLines = (x: SpeculativeInfo): string[] => [
  `speculative LongSpec, draft ${x.draft}, tree ${
    JSON.stringify(x.shape)
  } (${x.treeNodes} nodes), CPU forward: ` +
  `${x.tokens} tokens ${x.identical ? "identical to" : "DIFFERENT from"} plain greedy`,
  `          ${x.tokensPerS.toFixed(2)} tok/s against plain ${x.plainTokensPerS.toFixed(2)} tok/s (${
    x.speedup.toFixed(2)
  }×); ${x.rounds} rounds, mean accepted ${x.meanAccepted.toFixed(2)} per round (${
    x.tokensPerRound.toFixed(2)
  } tokens/round), draft ${(x.draftShare * 100).toFixed(1)} % of the decode time`,
  "",
];
