/**
 * TokenSelect (EMNLP 2025): token-level KV selection per layer by soft voting over heads (`tokenselect.select`),
 * the attended list gathered with compacted positions (`tokenselect.compact`), its parameters and the
 * `tokenselect` technique; the attention over the list is the shared `dense.cacheAttn`.
 * @module
 */
export * from "./params.ts";
export * from "./select.ts";
export * from "./compact.ts";
export * from "./technique.ts";
