/**
 * The `dense` technique: exact causal attention, the planner's baseline and the decode path of techniques
 * that only speed up prefill.
 *
 * Reference: FlashAttention-2 (Dao 2023), Algorithm 1: causal forward with online softmax, GQA, LSE output.
 * @module
 */
import { stagedTechnique, type Technique } from "@longctx/graph";
import { denseAttn, denseAttnF16, DenseAttnParams } from "./attn.ts";

/**
 * Dense causal flash attention for one layer: one `dense-attn` stage, Q `[heads, seq, headDim]`, K/V
 * `[kvHeads, kvSeq, headDim]` (f32 or f16) → `o` f32 `[heads, seq, headDim]`, `lse` f32 `[heads, seq]`.
 * Parameters: `scale` (0: 1/√headDim), `blockQ` (query rows per workgroup, 16–128), `workgroupMemory`
 * (bytes). Prefill and decode (decode needs a `dense-attn` operator whose keys are indexed by `kvSeq`).
 * Keeps no state besides the KV cache.
 */
export const denseTechnique: Technique<DenseAttnParams> = stagedTechnique({
  name: "dense",
  reference: "FlashAttention-2 (Dao 2023), Algorithm 1: causal attention with online softmax, GQA",
  phases: ["prefill", "decode"],
  sparse: false,
  params: DenseAttnParams,
  operators: [denseAttn, denseAttnF16],
  stages: ["dense-attn"],
  densityScaled: [],
  state: { perSequence: false, description: "none: reads the KV cache only" },
});
