/**
 * Pipeline templates: a technique's operators for one attention layer, as data.
 *
 * A template lists its stages by operator *kind*; the planner finds the operators in `@longctx/ops` as
 * `<template>.*` with that kind, wires each stage's input ports by name (from graph inputs `q`, `k`, `v`
 * or an earlier stage's outputs, as `compile` does), runs each operator's `infer` for shapes and its
 * `cost` for FLOPs and bytes. Adding a technique = one folder under `ops/` plus one template here.
 * @module
 */
import type { OperatorKind } from "@longctx/graph";

/** Prefill or decode. */
export type Phase = "prefill" | "decode";

/** One layer's attention shape (elements). */
export interface AttnDims {
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** Query rows: the context length in prefill, 1 in decode. */
  readonly seq: number;
  /** Key rows: the context length. */
  readonly kvSeq: number;
}

/** A technique as a chain of operator kinds for one layer. */
export interface PipelineTemplate {
  /** Template name (`dense`, `sale`); also the name prefix of its operators. */
  readonly name: string;
  readonly phases: readonly Phase[];
  /** Whether it skips work (its cost depends on a measured density). */
  readonly sparse: boolean;
  /** Paper and section. */
  readonly reference: string;
  /** Operator kinds, in order. */
  readonly kinds: readonly OperatorKind[];
  /**
   * Kinds whose cost model describes the full causal mask and whose work scales with the kept share of
   * blocks: the planner (and `calibrate`) multiply their FLOPs and bytes read by the density.
   */
  readonly densityScaled: readonly OperatorKind[];
  /** Parameter overrides given to every stage's parameter schema (defaults fill the rest). */
  readonly params: Readonly<Record<string, unknown>>;
}

/** Dense causal flash attention (the baseline; exact). */
export const denseTemplate: PipelineTemplate = {
  name: "dense",
  phases: ["prefill", "decode"],
  sparse: false,
  reference: "FlashAttention-2 (Dao 2023), Algorithm 1: causal attention with online softmax, GQA",
  kinds: ["dense-attn"],
  densityScaled: [],
  params: {},
};

/**
 * SALE: 4-bit quantize → low-bit estimate (Relative Attention Score) → threshold select (BSR mask,
 * sinks and local window kept) → block-sparse attention over the kept blocks. Prefill only.
 */
export const saleTemplate: PipelineTemplate = {
  name: "sale",
  phases: ["prefill"],
  sparse: true,
  reference: "SALE (Ji et al. 2025, arXiv 2505.24179) §3: low-bit estimation for sparse long-context prefill",
  kinds: ["quantize", "estimate", "select", "sparse-attn"],
  densityScaled: ["sparse-attn"],
  params: {},
};

/** The templates the planner considers, dense first. */
export const TEMPLATES: readonly PipelineTemplate[] = [denseTemplate, saleTemplate];

/** A cost at the full mask scaled to `density` (FLOPs and bytes read; bytes written are unchanged). */
export const scaleCost = <C extends { flops: number; bytesRead: number; bytesWritten: number }>(
  c: C,
  density: number,
): C => ({ ...c, flops: c.flops * density, bytesRead: c.bytesRead * density });
