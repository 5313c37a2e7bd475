/**
 * Context traceback on texts: splitting a context into texts, AttnTrace's subsampling and text scores, and
 * TracLLM's informed search with its score functions and ensemble. Model-free: AttnTrace's token weights come
 * from `traceback.weights` and TracLLM's values from a value function the caller runs on a model (the runtime's
 * `trace` does both on the graph forward).
 *
 * References: AttnTrace (arXiv 2508.03793), official `AttnTraceAttribution.attribute`; TracLLM (arXiv
 * 2506.04202), official `PerturbationBasedAttribution` (`tracllm`, `stc_scores`, `loo_scores`,
 * `denoised_shapley_scores`, `attribute`). Facts and defaults: `shared/research/TECHNIQUES.md` §7.
 * @module
 */
import { Effect } from "effect";
import { mulberry32 } from "@longctx/graph";
import type { AttnTraceParams, TracLlmParams } from "./params.ts";

/** One text of a context: its characters `[start, end)` in the context string. */
export interface TextSpan {
  /** First character (UTF-16 offset) in the context. */
  readonly start: number;
  /** One past the last character. */
  readonly end: number;
  /** The text itself, `context.slice(start, end)`. */
  readonly text: string;
}

/**
 * Split `context` into texts of `words` whitespace-separated words each (the last may be shorter): AttnTrace's
 * and TracLLM's `segment` level (official 100 words). Whitespace between texts belongs to neither. An empty or
 * all-whitespace context gives no texts.
 */
export const splitWords = (context: string, words: number): TextSpan[] => {
  if (!(Number.isInteger(words) && words >= 1)) throw new RangeError(`words = ${words}: a positive integer`);
  const spans: TextSpan[] = [];
  const re = /\S+/g;
  let m: RegExpExecArray | null, count = 0, start = -1, end = -1;
  while ((m = re.exec(context)) !== null) {
    if (count === 0) start = m.index;
    end = m.index + m[0].length;
    if (++count === words) {
      spans.push({ start, end, text: context.slice(start, end) });
      count = 0;
    }
  }
  if (count > 0) spans.push({ start, end, text: context.slice(start, end) });
  return spans;
};

/**
 * AttnTrace's subsamples of `n` texts: `rounds` sets of `max(1, ⌊sampleRatio · n⌋)` distinct texts drawn
 * uniformly without replacement (seeded), each ascending (document order); `sampleRatio` 1 gives one set of
 * every text.
 */
export const sampleTexts = (
  n: number,
  p: Pick<AttnTraceParams, "sampleRatio" | "rounds" | "seed">,
): number[][] => {
  const all = Array.from({ length: n }, (_, i) => i);
  if (p.sampleRatio >= 1 || n <= 1) return [all];
  const m = Math.max(1, Math.floor(p.sampleRatio * n)), rnd = mulberry32(p.seed);
  const out: number[][] = [];
  for (let b = 0; b < p.rounds; b++) {
    const a = all.slice();
    for (let i = 0; i < m; i++) {
      const j = i + Math.floor(rnd() * (n - i));
      [a[i], a[j]] = [a[j], a[i]];
    }
    out.push(a.slice(0, m).sort((x, y) => x - y));
  }
  return out;
};

/** A text's AttnTrace score in one forward: the mean of its `avgK` largest token weights (all if fewer). */
export const textScore = (w: ArrayLike<number>, start: number, end: number, avgK: number): number => {
  if (end <= start) return 0;
  const v = Array.from({ length: end - start }, (_, i) => w[start + i]).sort((a, b) => b - a);
  const k = Math.min(avgK, v.length);
  let s = 0;
  for (let i = 0; i < k; i++) s += v[i];
  return s / k;
};

/** One AttnTrace forward's result: the texts it held and each one's score. */
export interface TraceRound {
  /** Text indices in the subsample (document order). */
  readonly texts: readonly number[];
  /** Score of each of `texts`, same order. */
  readonly scores: readonly number[];
}

/** AttnTrace's final scores of `n` texts: each the mean over the rounds that held it; never sampled: 0. */
export const aggregateRounds = (n: number, rounds: readonly TraceRound[]): Float64Array => {
  const sum = new Float64Array(n), cnt = new Float64Array(n);
  for (const r of rounds) {
    r.texts.forEach((t, i) => {
      sum[t] += r.scores[i];
      cnt[t]++;
    });
  }
  return sum.map((s, i) => (cnt[i] > 0 ? s / cnt[i] : 0));
};

/** The `k` highest-scoring texts, best first (ties: the earlier text). */
export const topTexts = (scores: ArrayLike<number>, k: number): number[] =>
  Array.from({ length: scores.length }, (_, i) => i)
    .sort((a, b) => scores[b] - scores[a] || a - b)
    .slice(0, k);

/** Precision and recall of `found` against the ground-truth texts `truth`. */
export const precisionRecall = (
  found: readonly number[],
  truth: readonly number[],
): { precision: number; recall: number } => {
  const t = new Set(truth), hit = found.filter((x) => t.has(x)).length;
  return { precision: found.length ? hit / found.length : 0, recall: t.size ? hit / t.size : 0 };
};

/**
 * TracLLM's value of a set of texts: `Σ log p(answer | prompt holding exactly those texts, in document order)`
 * (teacher forcing); the empty list is the prompt with an empty context. A value function may fail with `E`.
 */
export type ValueFn<E> = (texts: readonly number[]) => Effect.Effect<number, E>;

/** The official clamp of a non-finite log-probability (`−inf` → −1000). */
const clampValue = (v: number) => (Number.isFinite(v) ? v : -1000);

/**
 * One TracLLM score function over `groups` (each a list of texts, joined as one text): `stc` — v({g}) − v(∅);
 * `loo` — v(all) − v(all ∖ g); `shapley` — denoised Monte-Carlo Shapley: over `permutations` random orders, the
 * marginal contribution of `g` when added to the groups before it, its score the mean of its top `beta` share
 * (at least one) of contributions. The context of every value is made of these groups only.
 */
export const groupScores = <E>(
  fn: "stc" | "loo" | "shapley",
  groups: readonly (readonly number[])[],
  value: ValueFn<E>,
  p: Pick<TracLlmParams, "permutations" | "beta">,
  rnd: () => number,
): Effect.Effect<number[], E> =>
  Effect.gen(function* () {
    const v = (gs: readonly number[]) =>
      Effect.map(
        value(gs.flatMap((i) => groups[i]).sort((a, b) => a - b)),
        clampValue,
      );
    const idx = groups.map((_, i) => i);
    if (fn === "stc") {
      const empty = yield* v([]);
      const out: number[] = [];
      for (const i of idx) out.push((yield* v([i])) - empty);
      return out;
    }
    if (fn === "loo") {
      const all = yield* v(idx);
      const out: number[] = [];
      for (const i of idx) out.push(all - (yield* v(idx.filter((j) => j !== i))));
      return out;
    }
    const marg: number[][] = groups.map(() => []);
    for (let r = 0; r < p.permutations; r++) {
      const perm = idx.slice();
      for (let i = perm.length - 1; i > 0; i--) {
        const j = Math.floor(rnd() * (i + 1));
        [perm[i], perm[j]] = [perm[j], perm[i]];
      }
      let prev = yield* v([]);
      for (let i = 0; i < perm.length; i++) {
        const cur = yield* v(perm.slice(0, i + 1));
        marg[perm[i]].push(cur - prev);
        prev = cur;
      }
    }
    return marg.map((m) => {
      const s = m.slice().sort((a, b) => b - a), k = Math.max(1, Math.floor(s.length * p.beta));
      return s.slice(0, k).reduce((a, b) => a + b, 0) / k;
    });
  });

/** What TracLLM found: per text its ensembled score (texts it did not keep: absent), and the values it ran. */
export interface TracLlmResult {
  /** Text → ensembled score (max over score functions of weight × score), for the texts some search kept. */
  readonly scores: ReadonlyMap<number, number>;
  /** Value-function calls made. */
  readonly calls: number;
}

/**
 * TracLLM over `n` texts: for each score function, the informed search — start from one group of every text;
 * each level splits every group of more than one text into halves (the first half `⌊len/2⌋`); when the groups
 * exceed `topK` they are scored (the context made of them only) and the `topK` best kept (in document order);
 * until every group is one text — then each text a search kept gets weight × its last score (LOO weight
 * `looWeight`, others 1), and a text kept by several functions their maximum (the official ensemble).
 */
export const tracLlm = <E>(n: number, value: ValueFn<E>, p: TracLlmParams): Effect.Effect<TracLlmResult, E> =>
  Effect.gen(function* () {
    let calls = 0;
    const counted: ValueFn<E> = (t) => {
      calls++;
      return value(t);
    };
    const rnd = mulberry32(p.seed);
    const best = new Map<number, number>();
    for (const fn of p.scores) {
      let nodes: number[][] = [Array.from({ length: n }, (_, i) => i)];
      let scores: number[] | undefined;
      while (nodes.some((g) => g.length > 1)) {
        const next: number[][] = [];
        for (const g of nodes) {
          if (g.length > 1) {
            const mid = Math.floor(g.length / 2);
            next.push(g.slice(0, mid), g.slice(mid));
          } else next.push(g);
        }
        if (next.length <= p.topK) {
          nodes = next;
          scores = undefined;
          continue;
        }
        const s = yield* groupScores(fn, next, counted, p, rnd);
        const keep = topTexts(s, p.topK).sort((a, b) => a - b);
        nodes = keep.map((i) => next[i]);
        scores = keep.map((i) => s[i]);
      }
      // fewer texts than topK never score: the official code then reports no scores; score them once here
      if (!scores) scores = yield* groupScores(fn, nodes, counted, p, rnd);
      const w = fn === "loo" ? p.looWeight : 1;
      nodes.forEach((g, i) => {
        const s = w * scores![i], had = best.get(g[0]);
        if (had === undefined || s > had) best.set(g[0], s);
      });
    }
    return { scores: best, calls };
  });
