/**
 * `@longctx/runtime`: backends (`wgpu` through FFI, `webgpu`, `dawn`, `cpu`) and `selectBackend`, model loading
 * (GGUF, tokenizer), the Llama forward as a graph of operators, fidelity metrics, context traceback on that
 * forward (AttnTrace, TracLLM), Squeezed Attention's fixed contexts and prefix index files, the KV store
 * (`openKvStore`, `kvKey`: a folder of files, SQLite or Redis), and `runMain`, the entry point that prints a
 * script's failure as one `error: … — fix: …` line.
 * @module
 */
export * from "./src/backends/webgpu.ts";
export * from "./src/backends/select.ts";
export * from "./src/backends/cpu.ts";
export * from "./src/backends/wgpu.ts";
export * from "./src/model/mod.ts";
export * from "./src/main.ts";
export * from "./src/trace/trace.ts";
export * from "./src/squeezed/squeezed.ts";
export * from "./src/kvstore/mod.ts";
export * from "./src/speculative/mod.ts";
export { buildPrompt, type BuiltPrompt, type Planted, type PromptOptions } from "./src/cli/run/prompt.ts";
export { answerStopAt } from "./src/cli/run/execute.ts";
export { cacheDir, modelPath, readDocument, userCacheDir } from "./src/paths.ts";
export * from "./src/install.ts";
export * from "./src/dist/mod.ts";
