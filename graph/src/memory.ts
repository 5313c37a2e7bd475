/**
 * Buffer lifetime planning: assign every tensor of a run to a device buffer so that tensors whose
 * lifetimes do not overlap share a buffer.
 *
 * Tensors are intervals `[start, end]` over the executor's steps (step `s` runs the `s`-th node in
 * topological order; graph inputs start at -1, graph outputs end at the last step). Two tensors may share
 * a buffer when their intervals are disjoint; a node's inputs and outputs overlap at its step, so no
 * operator runs in place.
 *
 * The allocator is greedy by size over shared objects (as TensorFlow Lite's GPU delegate
 * "greedy by size" strategy): tensors are taken largest first; each goes to the smallest existing buffer
 * that is free for its whole interval (every existing buffer is at least as large, because of the
 * order), or opens a new buffer of its size. Whole buffers are shared (no offsets), because the
 * `Backend` contract binds whole buffers to kernels.
 * @module
 */

/** One tensor's size and lifetime. */
export interface Lifetime {
  /** Tensor key (`refKey`, or `ws:<node>:<name>` for a workspace). */
  readonly key: string;
  /** Bytes of storage. */
  readonly bytes: number;
  /** First step it must exist at (-1: before the first node, i.e. an uploaded input). */
  readonly start: number;
  /** Last step it is read at (inclusive). */
  readonly end: number;
}

/** The assignment of tensors to buffers and what it saves. */
export interface MemoryPlan {
  /** Size in bytes of each buffer to allocate (multiples of 4). */
  readonly buffers: readonly number[];
  /** Tensor key → buffer index. */
  readonly assign: ReadonlyMap<string, number>;
  /** Bytes the plan allocates: the sum of `buffers` (the run's peak device footprint). */
  readonly peakBytes: number;
  /** Bytes one buffer per tensor would allocate. */
  readonly naiveBytes: number;
  /** Largest sum of the sizes of tensors alive at one step: no whole-buffer plan can go below it. */
  readonly lowerBoundBytes: number;
  /** The lifetimes the plan was made from. */
  readonly tensors: readonly Lifetime[];
}

const align4 = (n: number): number => Math.max(4, Math.ceil(n / 4) * 4);

const overlaps = (a: Lifetime, b: Lifetime): boolean => a.start <= b.end && b.start <= a.end;

/**
 * Plan buffers for `tensors` (sizes in bytes, lifetimes in steps). Pure; O(n² ) in the number of tensors,
 * which is fine for graphs of thousands of tensors. Buffer sizes are rounded up to multiples of 4 bytes.
 */
export const planBuffers = (tensors: readonly Lifetime[]): MemoryPlan => {
  const order = [...tensors].sort((a, b) =>
    b.bytes - a.bytes || a.start - b.start || (a.key < b.key ? -1 : 1)
  );
  const buffers: number[] = [];
  const users: Lifetime[][] = [];
  const assign = new Map<string, number>();
  for (const t of order) {
    let best = -1;
    for (let b = 0; b < buffers.length; b++) {
      if (users[b].some((u) => overlaps(u, t))) continue;
      if (best < 0 || buffers[b] < buffers[best]) best = b;
    }
    if (best < 0) {
      best = buffers.length;
      buffers.push(align4(t.bytes));
      users.push([]);
    }
    users[best].push(t);
    assign.set(t.key, best);
  }
  const steps = [...new Set(tensors.flatMap((t) => [t.start, t.end]))];
  const lowerBoundBytes = Math.max(
    0,
    ...steps.map((s) =>
      tensors.filter((t) => t.start <= s && s <= t.end).reduce((a, t) => a + align4(t.bytes), 0)
    ),
  );
  return {
    buffers,
    assign,
    peakBytes: buffers.reduce((a, b) => a + b, 0),
    naiveBytes: tensors.reduce((a, t) => a + align4(t.bytes), 0),
    lowerBoundBytes,
    tensors,
  };
};
