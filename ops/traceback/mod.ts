/**
 * Context traceback (AttnTrace, arXiv 2508.03793, with TracLLM, arXiv 2506.04202, as its baseline): the
 * `traceback.weights` operator (attention of the answer-predicting rows over the context, per layer), the
 * traced layer graph, and the model-free parts of both methods (texts, subsampling, text scores, TracLLM's
 * informed search and ensemble). The runtime's `trace` runs them on the model forward.
 * @module
 */
export * from "./params.ts";
export * from "./weights.ts";
export * from "./graph.ts";
export * from "./attribution.ts";
