/**
 * LongSpec (arXiv 2502.17421; sail-sg/LongSpec): the token tree (shape, parents, depths, mask, position ids
 * `base + depth`, growth by cumulative log-probability, greedy acceptance), the tree part of verification
 * attention (`longspec.treeAttn`, CPU reference and WGSL kernel) and the host verification attention (prefix part
 * + tree part merged by LSE). The decode loop (draft, verify, KV bookkeeping, `generate`) is
 * `@longctx/runtime`'s `speculative`.
 * @module
 */
export * from "./tree.ts";
export * from "./tree_attn.ts";
export * from "./verify.ts";
