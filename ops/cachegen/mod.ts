/**
 * CacheGen (SIGCOMM 2024, arXiv 2310.07240) as released (LMCache's CacheGen serde and `torchac_cuda`): a KV
 * cache chunk quantised per (layer, token) with layer-wise bin counts, a per-(layer, channel) probability model,
 * arithmetic coding into independent streams of at most 256 tokens, and a versioned, checksummed container
 * for a KV store; the encoder on the host (also the graph operator `cachegen.encode`, CPU only), the decoder
 * also as the graph operator `cachegen.decode` with a GPU lowering (one invocation per coded stream) and
 * `decodeKvOnDevice`. No technique is registered (the codec changes no attention).
 * @module
 */
export * from "./params.ts";
export * from "./quant.ts";
export * from "./coder.ts";
export * from "./container.ts";
export * from "./decode_gpu.ts";
export * from "./encode_op.ts";
export * from "./controller.ts";
