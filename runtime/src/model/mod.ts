/**
 * Real-model input: SmolLM2-135M-Instruct (or another small llama GGUF) — GGUF reading and dequantisation, the
 * byte-level BPE tokenizer and chat template, the CPU Llama forward with pluggable attention (`llama.ts`), the
 * forward as one graph of operators on any backend (`llama_graph.ts`: KV cache as state, decode, attention
 * sub-graphs), greedy decoding, and the fidelity metrics (perplexity, KL, top-1 agreement).
 * @module
 */
export { dequantize, floatToHalf, GgmlType, ggmlTypeInfo, halfToFloat } from "./dequant.ts";
export {
  checkLlamaGguf,
  type GgufFile,
  type GgufTensorInfo,
  LLAMA_BOUNDS,
  meta as ggufMeta,
  openGguf,
  parseGguf,
  tensorF32,
} from "./gguf.ts";
export { type ChatMessage, type TextTokenizer, tokenizerFromGguf } from "./tokenizer.ts";
export { blasNote, loadSgemm, type Sgemm, tsSgemm } from "./blas.ts";
export {
  argmax,
  type AttentionContext,
  type AttentionFn,
  type CaptureFn,
  denseCausalAttention,
  fastExp,
  type ForwardOptions,
  generateGreedy,
  type GenerateOptions,
  type KvCache,
  type LlamaConfig,
  type LlamaLayer,
  type LlamaModel,
  loadLlama,
  prefill,
} from "./llama.ts";
export {
  type AttentionGraphFn,
  type AttnComparison,
  type ForwardStats,
  generateGreedyGraph,
  type GraphForwardOptions,
  type GraphGenerateOptions,
  type GraphLlama,
  type KvState,
  type LlamaWeights,
  loadLlamaGraph,
  type NonFiniteAt,
} from "./llama_graph.ts";
export {
  assertFinite,
  assertFiniteMetrics,
  compareHidden,
  compareLogits,
  documentHidden,
  type DocumentOptions,
  documentPerplexity,
  finiteAttention,
  firstNonFinite,
  klDivergence,
  logProbsFromHidden,
  logSumExp,
  NonFiniteError,
  type NonFiniteErrorFields,
  perplexity,
  type RunComparison,
} from "./metrics.ts";
export { type KvRows, readCacheRows, writeCacheRows } from "./kv_rows.ts";
export { askCache, type CacheAnswer } from "./ask.ts";
