/**
 * DistAttention (Infinite-LLM, arXiv 2401.02669): attention over a KV cache split into blocks held by different
 * backends or processes — `distattn.partialAttn` (one block's `(o, lse)`) and `distattn.merge` (their exact
 * LSE merge). The sharded cache that uses them is `runtime/src/dist/`.
 * @module
 */
export * from "./partial.ts";
export * from "./merge.ts";
