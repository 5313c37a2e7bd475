/**
 * `@longctx/runtime`.
 * @module
 */
export * from "./src/backends/webgpu.ts";
export * from "./src/backends/select.ts";
export * from "./src/backends/cpu.ts";
export * from "./src/backends/wgpu.ts";
export * from "./src/model/mod.ts";
