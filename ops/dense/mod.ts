/**
 * Dense causal flash attention (`dense.attn`), its WGSL generator and shared attention helpers.
 * @module
 */
export * from "./attn.ts";
export * from "./common.ts";
export * from "./flash_wgsl.ts";
export * from "./cache_attn.ts";
