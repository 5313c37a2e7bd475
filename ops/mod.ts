/**
 * `@longctx/ops`.
 * @module
 */
export {};
