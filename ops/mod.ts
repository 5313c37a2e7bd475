/**
 * `@longctx/ops`: the operators of every technique (CPU references, WGSL kernels, cost models) under one
 * namespace per technique folder, and the technique registry (`TECHNIQUES`, `techniqueByName`).
 * @module
 */
export * from "./registry.ts";
export * as kernels from "./kernels/mod.ts";
export * as dense from "./dense/mod.ts";
export * as sale from "./sale/mod.ts";
export * as hip from "./hip/mod.ts";
export * as tokenselect from "./tokenselect/mod.ts";
export * as model from "./model/mod.ts";
export * as traceback from "./traceback/mod.ts";
export * as squeezed from "./squeezed/mod.ts";
export * as cachegen from "./cachegen/mod.ts";
export * as longspec from "./longspec/mod.ts";
export * as distattn from "./distattn/mod.ts";
