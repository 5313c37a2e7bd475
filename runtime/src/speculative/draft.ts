/**
 * Drafts of LongSpec's speculative decoding: what proposes the token tree the target verifies.
 *
 * - {@link selfDraft}: the training-free self-draft — the target model itself attending a constant-size view of
 *   the target's KV cache (sink rows + the last `window` rows, plus an optional sparse selection) and, within
 *   the tree, its ancestors; it grows the tree depth by depth (one forward per depth, nodes at position
 *   `base + depth`), each depth the global top-`shape[d]` children by cumulative log-probability (the official
 *   beam tree, `ops/longspec/tree.ts`).
 * - {@link randomDraft}, {@link oracleDraft}: test drafts (random tokens; the known greedy continuation on one
 *   branch) for the losslessness checks.
 *
 * A trained draft (LongSpec's GLIDE layer, or any small model in a GGUF) is one more {@link Draft}: it gets the
 * target's cache read-only (rows `< base`) and returns a tree; nothing else in the decode loop changes.
 * @module
 */
/** @internal Effect's types (`Effect`, …) are documented by the `effect` package. */
import { Effect } from "effect";
import { InputError, mulberry32, type ShapeError } from "@longctx/graph";
import { longspec } from "@longctx/ops";
import type { AttentionFn, KvCache, LlamaModel } from "../model/llama.ts";

/** What a draft is told when asked for a tree. */
export interface DraftRequest {
  /** The target model (its forward, tokenizer, config). */
  readonly model: LlamaModel;
  /**
   * The target's KV cache: rows `0 … base − 1` valid (the prefix), `cache.length = base`. A draft may write
   * rows `base …` as scratch (the verify call overwrites them) but must leave `cache.length = base`.
   */
  readonly cache: KvCache;
  /** The root token: the last emitted token, not yet in the cache (it sits at position `base`). */
  readonly root: number;
  /** Tree shape: nodes per depth below the root (official `[4, 16, 16, 16, 16]`). */
  readonly shape: readonly number[];
  /** Tokens emitted so far by this decode (the prompt's continuation, `root` last). */
  readonly emitted: readonly number[];
}

/** A draft: proposes a token tree rooted at the request's root. */
export interface Draft {
  /** Name for reports (`self`, `random`, `oracle`, …). */
  readonly name: string;
  /** The tree (node 0 = `root`, topological, siblings with distinct tokens). */
  propose(request: DraftRequest): Effect.Effect<longspec.TokenTree, ShapeError | InputError>;
}

/**
 * The attention of a tree call on the CPU forward: `longspec.verifyAttention` (prefix part over `view`'s rows,
 * tree part under `parents`, merged by LSE) with the forward's GEMM; the call's queries are the last `ctx.seq`
 * nodes of `parents`. Shapes as {@link AttentionFn}.
 */
export const treeAttention = (
  parents: ArrayLike<number>,
  view: longspec.PrefixView = longspec.FULL_PREFIX,
): AttentionFn =>
(q, k, v, ctx) =>
  longspec.verifyAttention(
    q,
    k,
    v,
    parents,
    { heads: ctx.heads, kvHeads: ctx.kvHeads, seq: ctx.seq, headDim: ctx.headDim, capacity: ctx.kvStride },
    ctx.offset,
    ctx.scale,
    view,
    ctx.sgemm.gemm,
  ).o;

/** Options of {@link selfDraft}. */
export interface SelfDraftOptions {
  /** Sink rows the draft keeps (default 4). */
  readonly sinks?: number;
  /** The last rows the draft keeps (default 512, the official GLIDE self-attention window). */
  readonly window?: number;
  /** A sparse selection of prefix rows for this round (SALE/HiP/TokenSelect's, ascending), beside the above. */
  readonly select?: (base: number) => readonly number[];
}

const checkCount = (name: string, x: number) => {
  if (!Number.isInteger(x) || x < 0) {
    throw new InputError({ message: `selfDraft ${name} = ${x}`, hint: `${name}: an integer ≥ 0` });
  }
};

/**
 * The training-free self-draft (see the module doc): the target model with a constant-size view of its KV —
 * `sinks` + `window` rows (+ `select`) — so each draft forward costs the weights plus at most
 * `sinks + window + tree` attended rows, whatever the context. Throws `InputError` for a negative count.
 */
export const selfDraft = (options: SelfDraftOptions = {}): Draft => {
  const sinks = options.sinks ?? 4, window = options.window ?? 512;
  checkCount("sinks", sinks);
  checkCount("window", window);
  return {
    name: `self(sinks ${sinks}, window ${window}${options.select ? ", sparse" : ""})`,
    propose: ({ model, cache, root, shape }) =>
      Effect.gen(function* () {
        longspec.checkTreeShape(shape);
        const base = cache.length, V = model.config.vocab;
        const view: longspec.PrefixView = {
          sinks,
          window,
          ...(options.select ? { selected: options.select(base) } : {}),
        };
        const tokens = [root], parents = [-1], depths = [0], scores = [0];
        let level = [0];
        try {
          for (let d = 0; d < shape.length; d++) {
            const h = yield* model.forward(level.map((i) => tokens[i]), cache, {
              positions: level.map(() => base + d),
              attention: treeAttention(Int32Array.from(parents), view),
            });
            const logits = model.logits(h, 0, level.length);
            const kids = longspec.topChildren(logits, V, level, level.map((i) => scores[i]), shape[d]);
            level = [];
            for (const c of kids) {
              level.push(tokens.length);
              tokens.push(c.token);
              parents.push(c.parent);
              depths.push(d + 1);
              scores.push(c.score);
            }
            // nodes must stay grouped by depth in the cache: the next call appends after this one
          }
        } finally {
          cache.length = base;
        }
        return {
          tokens: Int32Array.from(tokens),
          parents: Int32Array.from(parents),
          depths: Int32Array.from(depths),
        };
      }),
  };
};

/**
 * A tree of `shape` with random tokens (distinct among siblings), depth `d + 1`'s nodes hung on random nodes of
 * depth `d`; with `chain`, node 1 of each depth is the child of the previous depth's first node and carries
 * `chain[d]` (the oracle's known continuation).
 */
const randomTokenTree = (
  root: number,
  shape: readonly number[],
  vocab: number,
  r: () => number,
  chain?: readonly number[],
): longspec.TokenTree => {
  longspec.checkTreeShape(shape);
  const tokens = [root], parents = [-1], depths = [0];
  let prev = [0];
  for (let d = 0; d < shape.length; d++) {
    const level: number[] = [];
    const used = new Map<number, Set<number>>();
    for (let x = 0; x < shape[d]; x++) {
      const forced = x === 0 && chain !== undefined && d < chain.length;
      const parent = forced ? prev[0] : prev[Math.floor(r() * prev.length)];
      const seen = used.get(parent) ?? new Set<number>();
      const t = forced ? chain[d] : Math.floor(r() * vocab);
      if (seen.has(t)) {
        // a duplicate sibling (rare): skip this node rather than making the path ambiguous
        continue;
      }
      seen.add(t);
      used.set(parent, seen);
      level.push(tokens.length);
      tokens.push(t);
      parents.push(parent);
      depths.push(d + 1);
    }
    if (level.length === 0) break;
    prev = level;
  }
  return {
    tokens: Int32Array.from(tokens),
    parents: Int32Array.from(parents),
    depths: Int32Array.from(depths),
  };
};

/** A draft of random tokens (seeded): nearly nothing is accepted; the output must still be the target's. */
export const randomDraft = (seed = 1): Draft => {
  const r = mulberry32(seed);
  return {
    name: "random",
    propose: ({ model, root, shape }) =>
      Effect.sync(() => randomTokenTree(root, shape, model.config.vocab, r)),
  };
};

/**
 * The oracle draft: knows `continuation`, the target's greedy output (from plain decoding), and puts its next
 * `shape.length` tokens on one branch of an otherwise random tree, so every depth is accepted; it tests that the
 * KV bookkeeping keeps a long accepted path exact.
 */
export const oracleDraft = (continuation: readonly number[], seed = 2): Draft => {
  const r = mulberry32(seed);
  return {
    name: "oracle",
    propose: ({ model, root, shape, emitted }) =>
      Effect.sync(() =>
        randomTokenTree(
          root,
          shape,
          model.config.vocab,
          r,
          continuation.slice(emitted.length, emitted.length + shape.length),
        )
      ),
  };
};
