/**
 * `@longctx/graph`: tensor types, the Operator, Technique and Backend contracts, typed errors, the graph builder,
 * validation, JSON (de)serialisation and the executor.
 * @module
 */
export * from "./src/errors.ts";
export * from "./src/tensor.ts";
export * from "./src/backend.ts";
export * from "./src/operator.ts";
export * from "./src/technique.ts";
export * from "./src/signatures.ts";
export * from "./src/graph.ts";
export * from "./src/memory.ts";
export * from "./src/executor.ts";
export * from "./src/program.ts";
export * from "./src/json.ts";
export * from "./src/random.ts";
