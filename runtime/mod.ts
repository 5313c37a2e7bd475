/**
 * `@longctx/runtime`.
 * @module
 */
export {};
