/**
 * The shared kernel library: kernels generated from TypeScript as data (`Kernel`: WGSL + a cpu body with
 * the same bindings), each with its launch plan. Used by every backend and checked across backends in
 * `tests/backends/kernels_test.ts`.
 * @module
 */
export * from "./types.ts";
export * from "./half.ts";
export * from "./elementwise.ts";
export * from "./reduce.ts";
export * from "./matmul.ts";
export * from "./matmul_coop.ts";
export * from "./matmul_sgmat.ts";
