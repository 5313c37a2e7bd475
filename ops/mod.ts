/**
 * `@longctx/ops`.
 * @module
 */
export * as kernels from "./kernels/mod.ts";
export * as dense from "./dense/mod.ts";
export * as sale from "./sale/mod.ts";
export * as model from "./model/mod.ts";
