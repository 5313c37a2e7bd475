/**
 * Test data for the planner: synthetic device profiles (fits chosen by the tests, never shipped) and one
 * fixture operator, a decode-capable dense attention (keys indexed by `kvSeq`), which `@longctx/ops`
 * does not provide yet. It has an analytic cost model and shape inference but no kernel.
 * @module
 */
import { Effect, Schema } from "effect";
import { type AnyOperator, signatures, type TensorDesc } from "@longctx/graph";
import type { DeviceProfile, KernelFit } from "../src/profile.ts";

/**
 * A synthetic profile with the given fit per operator (test data only): `fits` as prefill measurements,
 * `decodeFits` as decode ones (`phase: "decode"`).
 */
export const syntheticProfile = (
  fits: Readonly<Record<string, KernelFit>>,
  decodeFits: Readonly<Record<string, KernelFit>> = {},
): DeviceProfile => ({
  version: 1,
  name: "synthetic",
  device: { adapter: "test", backend: "cpu", api: "cpu" },
  date: "2026-01-01",
  commit: "test",
  command: "test fixture",
  kernels: [
    ...Object.entries(fits).map(([operator, fit]) => ({ operator, samples: [], fit })),
    ...Object.entries(decodeFits).map(([operator, fit]) => ({
      operator,
      phase: "decode" as const,
      samples: [],
      fit,
    })),
  ],
});

/** 1 TFLOP/s and 1 TB/s with 50 µs fixed cost per operator: the tests' device. */
export const FIT: KernelFit = { a: 0.05, b: 1e-9, c: 1e-9, maxRelError: 0.02 };

/** The real operators' names the tests profile. */
export const OPERATOR_NAMES = [
  "dense.attn",
  "sale.quantize",
  "sale.estimate",
  "sale.select",
  "sale.sparseAttn",
];

/** Decode attention fixture: one query row per head against `kvSeq` keys (4·d FLOPs per key). */
export const decodeFixture: AnyOperator = {
  name: "dense.decode",
  kind: "dense-attn",
  reference: "planner test fixture",
  params: Schema.Struct({}) as unknown as AnyOperator["params"],
  ...signatures.denseAttn,
  infer: (_p, i) => {
    const q = i.q as TensorDesc;
    return Effect.succeed({
      o: { ...signatures.denseAttn.outputs.o, shape: q.shape },
      lse: { ...signatures.denseAttn.outputs.lse, shape: q.shape.slice(0, 2) },
    }) as never;
  },
  cpu: () => {
    throw new Error("fixture: no kernel");
  },
  cost: (_p, i) => {
    const [h, t, d] = (i.q as TensorDesc).shape;
    const [hk, tk] = (i.k as TensorDesc).shape;
    return {
      flops: 4 * d * h * t * tk,
      bytesRead: 4 * (h * t * d + 2 * hk * tk * d),
      bytesWritten: 4 * h * t * (d + 1),
      workspaceBytes: 0,
    };
  },
};
