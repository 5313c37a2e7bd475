/**
 * HiP Attention (ICLR 2025): the hierarchical top-k mask search (`hip.mask`), its parameters and the `hip`
 * technique; the attention over the selected keys is the shared `dense.indexAttn`.
 * @module
 */
export * from "./params.ts";
export * from "./mask.ts";
export * from "./technique.ts";
