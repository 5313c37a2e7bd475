/**
 * `distattn.merge`: DistAttention's combine step (Infinite-LLM, arXiv 2401.02669 §4, "scaling attention" in
 * TECHNIQUES.md §6): the partial attentions of disjoint KV blocks, each `(o, lse)`, merged into the attention
 * over their union by their log-sum-exp — `lse = log Σ_b exp(lse_b)`, `o = Σ_b exp(lse_b − lse) · o_b`. Exact,
 * associative, fp32 on the GPU; blocks with `lse ≤ −1e38` (no key seen: −Infinity, or the kernels' −3e38) are
 * skipped. The CPU reference is `mergeAttentionReference` (`ops/dense/merge.ts`, float64).
 * @module
 */
import { Effect, Schema } from "effect";
import { allocHost, decodeParamsSync, ShapeError, tensorType } from "@longctx/graph";
import type { Cost, DescsOf, GpuLowering, HostOf, Kernel, Operator, TensorType } from "@longctx/graph";
import { mergeAttentionReference } from "../dense/merge.ts";

/** The schema of {@link MergeParams} (no parameters). */
export type MergeParamsSchema = Schema.Struct<Record<never, never>>;
/** Parameters of `distattn.merge`: none. */
export const MergeParams: MergeParamsSchema = Schema.Struct({});
/** Decoded `distattn.merge` parameters. */
export type MergeParams = typeof MergeParams.Type;
/** `distattn.merge` parameters (there are none; an unknown key is a `ParamsError`). */
export const mergeParams = (p: Partial<MergeParams> = {}): MergeParams =>
  decodeParamsSync("distattn.merge", MergeParams, p);

/** Input ports of `distattn.merge`: the stacked partial attentions. */
export type MergeInputs = {
  /** Per block, its normalised output, `f32 [parts, heads, seq, headDim]`. */
  readonly o: TensorType<"f32", readonly ["parts", "heads", "seq", "headDim"]>;
  /** Per block, its log-sum-exp, `f32 [parts, heads, seq]` (≤ −1e38: the block is skipped for that row). */
  readonly lse: TensorType<"f32", readonly ["parts", "heads", "seq"]>;
};
/** Output ports of `distattn.merge`. */
export type MergeOutputs = {
  /** Attention over the union of the blocks, `f32 [heads, seq, headDim]` (0 for a row empty in every block). */
  readonly o: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Its log-sum-exp, `f32 [heads, seq]` (−Infinity for a row empty in every block). */
  readonly lse: TensorType<"f32", readonly ["heads", "seq"]>;
};

const ports: { readonly inputs: MergeInputs; readonly outputs: MergeOutputs } = {
  inputs: {
    o: tensorType("f32", ["parts", "heads", "seq", "headDim"] as const),
    lse: tensorType("f32", ["parts", "heads", "seq"] as const),
  },
  outputs: {
    o: tensorType("f32", ["heads", "seq", "headDim"] as const),
    lse: tensorType("f32", ["heads", "seq"] as const),
  },
};
type In = MergeInputs;
type Out = MergeOutputs;

const dimsOf = (i: DescsOf<In>) => {
  const [parts, heads, seq, headDim] = i.o.shape as [number, number, number, number];
  return { parts, heads, seq, headDim };
};

/**
 * The merge kernel: one workgroup of 64 per (query row, head); pass 1 the running maximum of the blocks'
 * `lse`, pass 2 the weighted sum of their `o` (thread `t` owns elements `t, t + 64, …`), all f32. An empty
 * row writes `o = 0` and `lse = −Infinity` (its bits come from the uniform).
 */
const mergeKernel = (parts: number, heads: number, seq: number, D: number): Kernel => {
  const L: string[] = [];
  const p = (x: string) => L.push(x);
  p(`struct U { ninf: u32, a: u32, b: u32, c: u32 }`);
  p(`@group(0) @binding(0) var<storage, read> PO: array<f32>;`);
  p(`@group(0) @binding(1) var<storage, read> PL: array<f32>;`);
  p(`@group(0) @binding(2) var<storage, read_write> O: array<f32>;`);
  p(`@group(0) @binding(3) var<storage, read_write> LSE: array<f32>;`);
  p(`@group(0) @binding(4) var<uniform> P: U;`);
  p(`const EMPTY: f32 = -1.0e38;`);
  p(`@compute @workgroup_size(64)`);
  p(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {`);
  p(`  let row = wid.y * ${seq}u + wid.x;`); // row of [heads, seq]
  p(`  var mx = EMPTY;`);
  p(`  for (var b = 0u; b < ${parts}u; b++) { mx = max(mx, PL[b * ${heads * seq}u + row]); }`);
  p(`  var l = 0.0;`);
  p(`  for (var b = 0u; b < ${parts}u; b++) {`);
  p(`    let x = PL[b * ${heads * seq}u + row];`);
  p(`    if (x > EMPTY) { l += exp(x - mx); }`);
  p(`  }`);
  p(`  let inv = select(0.0, 1.0 / l, l > 0.0);`);
  p(`  for (var e = lid; e < ${D}u; e += 64u) {`);
  p(`    var acc = 0.0;`);
  p(`    for (var b = 0u; b < ${parts}u; b++) {`);
  p(`      let x = PL[b * ${heads * seq}u + row];`);
  p(`      if (x > EMPTY) { acc = fma(exp(x - mx), PO[(b * ${heads * seq}u + row) * ${D}u + e], acc); }`);
  p(`    }`);
  p(`    O[row * ${D}u + e] = acc * inv;`);
  p(`  }`);
  p(`  if (lid == 0u) { LSE[row] = select(bitcast<f32>(P.ninf), mx + log(l), l > 0.0); }`);
  p(`}`);
  return {
    key: `distattn.merge.${parts}.${heads}.${seq}.${D}`,
    wgsl: L.join("\n") + "\n",
    entryPoint: "main",
    bindings: ["read", "read", "read_write", "read_write", "uniform"],
  };
};

const bad = (message: string, hint: string) => Effect.fail(new ShapeError({ message, hint }));

/**
 * `distattn.merge` (see the module doc). Inputs `o f32 [parts, heads, seq, headDim]`, `lse f32 [parts, heads,
 * seq]`; outputs `o f32 [heads, seq, headDim]`, `lse f32 [heads, seq]`. Work `O(parts · heads · seq ·
 * headDim)`. Shape errors: ranks, or `lse` not `[parts, heads, seq]` of `o`.
 */
export const merge: Operator<MergeParams, In, Out> = {
  name: "distattn.merge",
  kind: "merge",
  reference: "Infinite-LLM (arXiv 2401.02669) §4 DistAttention scaling attention (LSE merge)",
  params: MergeParams,
  inputs: ports.inputs,
  outputs: ports.outputs,
  example: { dims: { parts: 4 } },
  infer: (_p, i) => {
    if (i.o.shape.length !== 4 || i.lse.shape.length !== 3) {
      return bad(
        `o [${i.o.shape}], lse [${i.lse.shape}]: expected rank 4 and 3`,
        "o [parts, heads, seq, headDim]",
      );
    }
    const d = dimsOf(i);
    if (i.lse.shape.join() !== [d.parts, d.heads, d.seq].join()) {
      return bad(`lse [${i.lse.shape}] does not match o [${i.o.shape}]`, "lse [parts, heads, seq] of o");
    }
    if (d.parts < 1) return bad("0 parts", "stack at least one partial attention");
    return Effect.succeed({
      o: { ...ports.outputs.o, shape: [d.heads, d.seq, d.headDim] },
      lse: { ...ports.outputs.lse, shape: [d.heads, d.seq] },
    } as DescsOf<Out>);
  },
  cpu: (_p, i) => {
    const d = dimsOf({ o: i.o.desc, lse: i.lse.desc });
    const rows = d.heads * d.seq, n = rows * d.headDim;
    const parts = Array.from({ length: d.parts }, (_, b) => ({
      o: i.o.data.subarray(b * n, (b + 1) * n),
      lse: i.lse.data.subarray(b * rows, (b + 1) * rows),
    }));
    const r = mergeAttentionReference(parts, d.heads, d.seq, d.headDim);
    const o = allocHost({ ...ports.outputs.o, shape: [d.heads, d.seq, d.headDim] });
    o.data.set(r.o);
    const lse = allocHost({ ...ports.outputs.lse, shape: [d.heads, d.seq] });
    lse.data.set(r.lse);
    return { o, lse } as HostOf<Out>;
  },
  gpu: (_p, i): GpuLowering => {
    const d = dimsOf(i);
    return {
      workspaces: { u: 16 },
      launches: [{
        kernel: mergeKernel(d.parts, d.heads, d.seq, d.headDim),
        buffers: ["in:o", "in:lse", "out:o", "out:lse", "ws:u"],
        workgroups: [d.seq, d.heads, 1],
        uniforms: { u: new Uint8Array(Uint32Array.of(0xff800000, 0, 0, 0).buffer) },
      }],
    };
  },
  cost: (_p, i): Cost => {
    const d = dimsOf(i);
    const rows = d.heads * d.seq;
    return {
      flops: 2 * d.parts * rows * d.headDim,
      bytesRead: d.parts * rows * (d.headDim + 1) * 4,
      bytesWritten: rows * (d.headDim + 1) * 4,
      workspaceBytes: 16,
    };
  },
};
