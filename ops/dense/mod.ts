/**
 * Dense causal flash attention (`dense.attn`), its WGSL generator, shared attention helpers and the `dense`
 * technique.
 * @module
 */
export * from "./attn.ts";
export * from "./common.ts";
export * from "./flash_wgsl.ts";
export * from "./cache_attn.ts";
export * from "./technique.ts";
export * from "./index_attn.ts";
export * from "./merge.ts";
