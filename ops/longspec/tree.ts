/**
 * LongSpec's token tree: its shape, node parents and depths, the tree mask, the position ids of its nodes, the
 * layer-by-layer growth by cumulative log-probability (the official "beam tree") and greedy acceptance.
 *
 * Facts followed (sail-sg/LongSpec at 15e49989, `longspec/test/llama_glide.py`, `tree_spec_generate`): the tree
 * shape lists the nodes per depth below the root, default `[4, 16, 16, 16, 16]` (1 + 4 + 4·16 = 69 nodes); depth 1
 * is the top-`shape[0]` tokens of the root's draft distribution, every later depth the global top-`shape[d]`
 * (node, token) pairs of the previous depth by cumulative log-probability; a node's position id is
 * `base + depth`; a node is accepted iff the target's greedy token at its parent equals its token and its parent
 * is accepted (`tree_verification`).
 * @module
 */
import { InputError } from "@longctx/graph";

/** The official tree shape: nodes per depth below the root (LongSpec `tree_shape`). */
export const DEFAULT_TREE_SHAPE: readonly number[] = [4, 16, 16, 16, 16];

/**
 * A token tree in topological order (node 0 is the root, every parent precedes its children, nodes grouped by
 * depth). All arrays have one entry per node.
 */
export interface TokenTree {
  /** Token id of each node (`i32`); the root is the last accepted token. */
  readonly tokens: Int32Array;
  /** Parent of each node (`i32`, `−1` for the root, `parents[i] < i`). */
  readonly parents: Int32Array;
  /** Depth of each node (`i32`, root 0). */
  readonly depths: Int32Array;
}

/** Nodes of a tree of `shape`, root included: `1 + Σ shape`. Throws `InputError` for a bad shape. */
export const treeNodeCount = (shape: readonly number[]): number => {
  checkTreeShape(shape);
  return 1 + shape.reduce((a, b) => a + b, 0);
};

/**
 * Checks a tree shape: positive integers (an empty shape is a root-only tree), and each depth at most
 * `shape[d−1] · vocab` wide is not checked here (the growth takes as many as exist). Throws `InputError`
 * naming the entry.
 */
export const checkTreeShape = (shape: readonly number[]): void => {
  for (const [d, w] of shape.entries()) {
    if (!Number.isInteger(w) || w < 1) {
      throw new InputError({
        message: `tree shape entry ${d} = ${w}`,
        hint: "tree shape: positive integer node counts per depth, e.g. [4,16,16,16,16]",
      });
    }
  }
};

/**
 * Checks `parents` (`parents[0] = −1`, `0 ≤ parents[i] < i` for `i > 0`) and returns the depths (root 0).
 * Throws `InputError` naming the first bad node.
 */
export const treeDepths = (parents: ArrayLike<number>): Int32Array => {
  const n = parents.length, depths = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const p = parents[i];
    if (i === 0 ? p !== -1 : !(Number.isInteger(p) && p >= 0 && p < i)) {
      throw new InputError({
        message: `tree node ${i} has parent ${p}`,
        hint: "node 0 is the root (parent −1); every other node's parent precedes it",
      });
    }
    depths[i] = i === 0 ? 0 : depths[p] + 1;
  }
  return depths;
};

/**
 * The tree mask `u8 [n, n]` row-major: `mask[i·n + j] = 1` iff node `j` is node `i` or one of its ancestors
 * (what node `i` attends among the tree). Throws `InputError` for bad `parents`.
 */
export const treeMask = (parents: ArrayLike<number>): Uint8Array => {
  treeDepths(parents);
  const n = parents.length, mask = new Uint8Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let a = i; a >= 0; a = parents[a]) mask[i * n + a] = 1;
  }
  return mask;
};

/** Position ids of the nodes: `base + depth` (LongSpec; RoPE angle of each node), `i32 [n]`. */
export const treePositions = (base: number, depths: ArrayLike<number>): Int32Array =>
  Int32Array.from(depths, (d) => base + d);

/** One candidate child of the growth: its parent node, token and cumulative log-probability. */
export interface TreeCandidate {
  /** Parent node index. */
  readonly parent: number;
  /** Token id. */
  readonly token: number;
  /** Cumulative natural-log probability of the path root → … → parent → token under the draft. */
  readonly score: number;
}

/**
 * The `width` best children of a depth (the official global top-k of a layer): `logits f32 [rows, vocab]` are
 * the draft's logits at nodes `nodes[r]` (row `r`) whose cumulative log-probabilities are `scores[r]` (0 for
 * the root); a child's score is `scores[r] + log softmax(logits[r])[token]`. Ties break by lower row, then
 * lower token id. Returns at most `width` candidates, best first.
 */
export const topChildren = (
  logits: Float32Array,
  vocab: number,
  nodes: readonly number[],
  scores: readonly number[],
  width: number,
): TreeCandidate[] => {
  const all: TreeCandidate[] = [];
  for (let r = 0; r < nodes.length; r++) {
    const row = logits.subarray(r * vocab, (r + 1) * vocab);
    let m = -Infinity;
    for (let j = 0; j < vocab; j++) if (row[j] > m) m = row[j];
    let l = 0;
    for (let j = 0; j < vocab; j++) l += Math.exp(row[j] - m);
    const lse = m + Math.log(l);
    // the row's own top-`width` (any global top-`width` child is among them)
    const best: number[] = [];
    for (let j = 0; j < vocab; j++) {
      if (best.length < width) {
        best.push(j);
        if (best.length === width) best.sort((a, b) => row[b] - row[a] || a - b);
      } else if (row[j] > row[best[width - 1]]) {
        let at = width - 1;
        while (at > 0 && row[best[at - 1]] < row[j]) at--;
        best.splice(at, 0, j);
        best.pop();
      }
    }
    if (best.length < width) best.sort((a, b) => row[b] - row[a] || a - b);
    for (const j of best) all.push({ parent: nodes[r], token: j, score: scores[r] + row[j] - lse });
  }
  const rowOf = new Map(nodes.map((n, r) => [n, r]));
  all.sort((a, b) =>
    b.score - a.score || (rowOf.get(a.parent) ?? 0) - (rowOf.get(b.parent) ?? 0) || a.token - b.token
  );
  return all.slice(0, width);
};

/** The result of greedy acceptance of a tree. */
export interface Acceptance {
  /** Accepted nodes from the root, `path[0] = 0` (the root, already emitted); `path.length − 1` accepted. */
  readonly path: readonly number[];
  /** Tokens emitted this round: the accepted nodes' tokens (root excluded) and the target's bonus token. */
  readonly tokens: readonly number[];
}

/**
 * Greedy acceptance (LongSpec `tree_verification`, temperature 0): from the root, follow the child whose token
 * equals the target's greedy token at the current node (`targetNext[i]` or `targetNext(i)`, the argmax of the
 * target's logits at node `i`; a function is asked only for the nodes on the accepted path); stop when no
 * child matches. Emits the accepted tokens and the target's token at the last accepted node (the bonus).
 * Children of one parent must carry distinct tokens (throws `InputError` otherwise, as two equal siblings
 * would make the path ambiguous).
 */
export const acceptGreedy = (
  tree: TokenTree,
  targetNext: ArrayLike<number> | ((node: number) => number),
): Acceptance => {
  const next0 = typeof targetNext === "function" ? targetNext : (i: number) => targetNext[i];
  const n = tree.tokens.length;
  const path = [0], tokens: number[] = [];
  let cur = 0;
  for (;;) {
    const want = next0(cur);
    let next = -1;
    for (let c = cur + 1; c < n; c++) {
      if (tree.parents[c] !== cur || tree.tokens[c] !== want) continue;
      if (next >= 0) {
        throw new InputError({
          message: `node ${cur} has two children with token ${want}`,
          hint: "a tree's siblings must carry distinct tokens",
        });
      }
      next = c;
    }
    tokens.push(want);
    if (next < 0) break;
    path.push(next);
    cur = next;
  }
  return { path, tokens };
};
