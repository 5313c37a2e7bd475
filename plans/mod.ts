/**
 * `@longctx/plans`: the planner. Pure TypeScript (depends on `@longctx/graph`, `@longctx/ops` and
 * `effect` only; no FFI, no runtime-specific API), so Node, browsers and other hosts can embed it.
 *
 * - `MODELS`, `getModel`: published hyperparameters of known models, each with its source.
 * - `DeviceProfile`, `decodeProfile`, `fitSamples`, `builtinProfile`: measured kernel latencies per device.
 * - `plan(request, env)` → `Plan` (versioned JSON schema), `decodePlan`, `compile(plan, operators)` → graphs.
 * - `route(request, evidence)`: retrieval (RAG) or long context (and which technique) per model, context length
 *   and task type, LaRA's gaps as the prior and `bench fidelity` measurements as the evidence; `evaluateRouting`.
 * @module
 */
export * from "./src/errors.ts";
export * from "./src/models.ts";
export * from "./src/profile.ts";
export * from "./src/templates.ts";
export * from "./src/plan.ts";
export * from "./src/compile.ts";
export * from "./src/builtin.ts";
export * from "./src/registry.ts";
export * from "./src/route.ts";
export * from "./src/placement.ts";
