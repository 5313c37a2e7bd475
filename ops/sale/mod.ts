/**
 * SALE (arXiv 2505.24179): 4-bit estimation → block-sparse prefill, as four operators, a pipeline helper and
 * the `sale` technique.
 * @module
 */
export * from "./params.ts";
export * from "./quantize.ts";
export * from "./estimate.ts";
export * from "./select.ts";
export * from "./sparse_attn.ts";
export * from "./pipeline.ts";
export * from "./synthetic.ts";
export * from "./gemm_attention.ts";
export * from "./technique.ts";
