/**
 * The Llama forward's operators (`model.*`): embedding, RMSNorm (+ residual), linear, RoPE with KV-cache
 * append, cache reads, SwiGLU, argmax — so that the model forward is one graph.
 * @module
 */
export * from "./ops.ts";
