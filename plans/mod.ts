/**
 * `@longctx/plans`.
 * @module
 */
export {};
