/**
 * LongSpec speculative decoding on the CPU forward: drafts (self-draft with a constant-size KV view, random,
 * oracle), the tree attention of a forward call, and the greedy decode loop (`generateSpeculative`,
 * `speculativeDecode`, the `plainDecode` baseline).
 * @module
 */
export * from "./draft.ts";
export * from "./generate.ts";
