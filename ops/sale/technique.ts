/**
 * The `sale` technique: 4-bit quantize → low-bit estimate (Relative Attention Score) → threshold select
 * (BSR mask, sinks and local window kept) → block-sparse attention over the kept blocks. Prefill only; decode
 * steps run dense attention over the KV cache the sparse prefill filled.
 *
 * Reference: SALE (Ji, Zhang, Fu, Cui 2025, arXiv 2505.24179), §3 (method); see ops/sale/README.md.
 * @module
 */
import { stagedTechnique, type Technique } from "@longctx/graph";
import { denseTechnique } from "../dense/technique.ts";
import { SaleParams } from "./params.ts";
import { saleQuantize, saleQuantizeF16 } from "./quantize.ts";
import { saleEstimate, saleEstimateF16 } from "./estimate.ts";
import { saleSelect } from "./select.ts";
import { saleSparseAttn, saleSparseAttnF16 } from "./sparse_attn.ts";

/**
 * SALE for one layer: stages `quantize → estimate → select → sparse-attn` on Q `[heads, seq, headDim]`,
 * K/V `[kvHeads, kvSeq, headDim]` (f32 or f16) → `o` f32 `[heads, seq, headDim]`, `lse` f32 `[heads, seq]`,
 * `density` f32 `[heads]` (kept / causal blocks). Parameters: `SaleParams` (block sizes, local window, sink
 * blocks, threshold τ, scale, workgroup memory). The knob is τ: a block is kept when its score ≥ τ, so a
 * higher τ keeps fewer blocks. `sparse-attn`'s cost is the full mask's, scaled by the measured density.
 */
export const saleTechnique: Technique<SaleParams> = stagedTechnique({
  name: "sale",
  reference: "SALE (Ji et al. 2025, arXiv 2505.24179) §3: low-bit estimation for sparse long-context prefill",
  phases: ["prefill"],
  sparse: true,
  params: SaleParams,
  operators: [
    saleQuantize,
    saleQuantizeF16,
    saleEstimate,
    saleEstimateF16,
    saleSelect,
    saleSparseAttn,
    saleSparseAttnF16,
  ],
  stages: ["quantize", "estimate", "select", "sparse-attn"],
  densityScaled: ["sparse-attn"],
  extraOutputs: ["density"],
  knob: {
    name: "threshold τ",
    param: "threshold",
    values: [0, 0.1, 0.3, 1],
    sparser: "higher",
    description: "Relative Attention Score threshold (§3.2): a key block is kept when its score ≥ τ; " +
      "0 keeps every block (unitless)",
  },
  state: {
    perSequence: false,
    description: "none: the block mask is recomputed from Q and K at each prefill",
  },
  delegates: {
    decode: {
      technique: denseTechnique,
      params: (p) => ({ scale: p.scale }),
      reason: "SALE is a prefill method (§3): decode steps run dense attention over the KV cache the " +
        "sparse prefill filled",
    },
  },
});
