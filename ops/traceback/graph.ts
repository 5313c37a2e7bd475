/**
 * The attention graph a traced forward runs in every layer: `dense.attn` (the exact attention, unchanged) and
 * `traceback.weights` on its inputs and its `lse`, whose output `trace` the forward reads back per layer.
 *
 * Reference: AttnTrace (arXiv 2508.03793), official `AttnTraceAttribution.attribute`.
 * @module
 */
import { Effect } from "effect";
import { type Graph, graph, type GraphError, type ParamsError, type ShapeError } from "@longctx/graph";
import { denseAttn, denseParams } from "../dense/attn.ts";
import { weights } from "./weights.ts";
import { tracebackWeightsParams } from "./params.ts";

/**
 * One layer's traced attention for a prefill from position 0 of `seq` tokens whose last `answerTokens` are the
 * answer: inputs `q f32 [heads, seq, headDim]` (after RoPE), `k`, `v f32 [kvHeads, seq, headDim]`; outputs
 * `o f32 [heads, seq, headDim]` (dense attention) and `trace f32 [seq]` (`traceback.weights`: each key's
 * attention probability averaged over heads and the rows predicting the answer). Fails with a `ParamsError`
 * naming `answerTokens` when it is not a positive integer (shapes are checked when the forward lowers it).
 */
export const tracebackGraph = (
  answerTokens: number,
): Effect.Effect<Graph, GraphError | ParamsError | ShapeError> =>
  Effect.gen(function* () {
    const p = yield* Effect.try({
      try: () => tracebackWeightsParams({ answerTokens }),
      catch: (e) => e as ParamsError,
    });
    const g = graph("traceback.layer");
    const q = g.input("q", denseAttn.inputs.q);
    const k = g.input("k", denseAttn.inputs.k);
    const v = g.input("v", denseAttn.inputs.v);
    const a = g.add(denseAttn, denseParams(), { q, k, v }, "attn");
    const t = g.add(weights, p, { q, k, lse: a.lse }, "trace");
    g.output("o", a.o);
    g.output("trace", t.w);
    return yield* g.build();
  });
