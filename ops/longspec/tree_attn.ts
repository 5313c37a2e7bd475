/**
 * `longspec.treeAttn`: the tree part of LongSpec's verification attention — each tree node attends the tree
 * nodes on its own root path (itself and its ancestors) and nothing else, returning `o` and the LSE so that the
 * prefix part (all tree nodes see every prefix row: `dense.indexCacheAttn` / `dense.cacheAttn`) merges with it
 * exactly by the LSE rule (`dense.mergeAttentionReference`).
 *
 * Layout on the KV cache: the cache holds `pos` earlier rows plus this call's `seq` (already appended); the tree's
 * `n = parents.length` nodes are the last `n` rows, `base = pos + seq − n … pos + seq − 1`, and the queries are its
 * last `seq` nodes (`seq = n` for the verify call; a draft's depth-by-depth call runs one depth at a time).
 *
 * Official code: sail-sg/LongSpec `longspec/test/triton_tree_attn.py` (the masked attention over the fed tokens,
 * `o_t, lse_t`) and `llama_glide.py` (its merge with the prefix's FlashAttention `o_p, lse_p` by the sigmoid of the
 * LSE difference, which is the LSE rule for two parts).
 * @module
 */
import { Effect, Schema } from "effect";
import { allocHost, decodeParamsSync, hostTensor, ShapeError, tensorType } from "@longctx/graph";
import type {
  Cost,
  CpuContext,
  DescsOf,
  Gemm,
  GpuLowering,
  HostOf,
  Kernel,
  Operator,
  TensorType,
} from "@longctx/graph";
import { effectiveScale } from "../dense/common.ts";
import { treeDepths } from "./tree.ts";

/** The schema of {@link TreeAttnParams}. */
export type TreeAttnParamsSchema = Schema.Struct<{
  readonly scale: Schema.withDecodingDefaultKey<Schema.Finite>;
}>;

/** Parameters of `longspec.treeAttn`. */
export const TreeAttnParams: TreeAttnParamsSchema = Schema.Struct({
  /** Softmax scale; 0 means 1/sqrt(headDim). */
  scale: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(0)),
  ),
});
/** Decoded `longspec.treeAttn` parameters. */
export type TreeAttnParams = typeof TreeAttnParams.Type;

/** `longspec.treeAttn` parameters, defaults filled; throws `ParamsError` for a bad value or unknown key. */
export const treeAttnParams = (p: Partial<TreeAttnParams> = {}): TreeAttnParams =>
  decodeParamsSync("longspec.treeAttn", TreeAttnParams, p);

/** Input ports of `longspec.treeAttn`. */
export type TreeAttnInputs = {
  /** Queries of the last `seq` tree nodes, `f32 [heads, seq, headDim]` (after RoPE at base + depth). */
  readonly q: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Key cache `f32 [kvHeads, capacity, headDim]`; the tree's rows are `pos + seq − tree … pos + seq − 1`. */
  readonly kCache: TensorType<"f32", readonly ["kvHeads", "capacity", "headDim"]>;
  /** Value cache `f32 [kvHeads, capacity, headDim]`. */
  readonly vCache: TensorType<"f32", readonly ["kvHeads", "capacity", "headDim"]>;
  /** Parent of each tree node, `i32 [tree]` (`−1` for the root, `parents[i] < i`). */
  readonly parents: TensorType<"i32", readonly ["tree"]>;
};
/** Output ports of `longspec.treeAttn`. */
export type TreeAttnOutputs = {
  /** The tree part's normalised output, `f32 [heads, seq, headDim]`. */
  readonly o: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Natural-log LSE of the tree part's scaled scores, `f32 [heads, seq]` (every node sees itself: finite). */
  readonly lse: TensorType<"f32", readonly ["heads", "seq"]>;
};

const ports: { readonly inputs: TreeAttnInputs; readonly outputs: TreeAttnOutputs } = {
  inputs: {
    q: tensorType("f32", ["heads", "seq", "headDim"] as const),
    kCache: tensorType("f32", ["kvHeads", "capacity", "headDim"] as const),
    vCache: tensorType("f32", ["kvHeads", "capacity", "headDim"] as const),
    parents: tensorType("i32", ["tree"] as const),
  },
  outputs: {
    o: tensorType("f32", ["heads", "seq", "headDim"] as const),
    lse: tensorType("f32", ["heads", "seq"] as const),
  },
};

/** Shape of a tree attention call on a KV cache. */
export interface TreeAttnShape {
  /** Query heads. */
  readonly heads: number;
  /** Key/value heads (divides `heads`). */
  readonly kvHeads: number;
  /** Query rows: the last `seq` tree nodes. */
  readonly seq: number;
  /** Elements per head vector. */
  readonly headDim: number;
  /** Rows per cache head (its capacity; the row stride). */
  readonly capacity: number;
}

/** First cache row of the tree for a call at `pos` with `seq` queries and `tree` nodes; throws `RangeError`. */
export const treeBase = (pos: number, seq: number, tree: number, capacity: number): number => {
  const base = pos + seq - tree;
  if (!Number.isInteger(pos) || pos < 0 || seq > tree || base < 0 || pos + seq > capacity) {
    throw new RangeError(
      `tree attention at pos ${pos} with ${seq} queries and ${tree} nodes: rows ${base} … ${pos + seq - 1} ` +
        `must lie in the cache of ${capacity}, the queries among the nodes`,
    );
  }
  return base;
};

/**
 * Tree attention in float64 (exact two-pass softmax): node `t = tree − seq + i` (query row `i`) attends cache
 * rows `base + a` for `a` on its root path. `q [H, seq, D]`, caches `[KH, capacity, D]`. Returns `o [H, seq, D]`
 * and `lse [H, seq]`; with `gemm`, the scores and `P·V` go through it per head (f32 products) and the mask and
 * softmax stay float64. Throws `InputError` for bad `parents` (see `treeDepths`), `RangeError` for rows outside
 * the cache.
 */
export const treeAttentionReference = (
  q: Float32Array,
  kc: Float32Array,
  vc: Float32Array,
  parents: ArrayLike<number>,
  s: TreeAttnShape,
  pos: number,
  scale: number,
  gemm?: Gemm,
): { o: Float32Array; lse: Float32Array } => {
  const { heads: H, kvHeads: KH, seq, headDim: D, capacity: C } = s;
  treeDepths(parents); // a bad parent list is an InputError, never an endless walk
  const n = parents.length, base = treeBase(pos, seq, n, C), first = n - seq, g = H / KH;
  const o = new Float32Array(H * seq * D), lse = new Float32Array(H * seq);
  // the root path of each query node (ascending node indices)
  const paths: number[][] = [];
  for (let i = 0; i < seq; i++) {
    const p: number[] = [];
    for (let a = first + i; a >= 0; a = parents[a]) p.push(a);
    paths.push(p.reverse());
  }
  const S = new Float32Array(seq * n), ob = new Float32Array(seq * D), acc = new Float64Array(D);
  for (let h = 0; h < H; h++) {
    const kb = Math.floor(h / g) * C * D + base * D;
    if (gemm) {
      gemm(false, true, seq, n, D, scale, q.subarray(h * seq * D), D, kc.subarray(kb), D, 0, S, n);
      for (let i = 0; i < seq; i++) {
        let m = -Infinity;
        for (const a of paths[i]) m = Math.max(m, S[i * n + a]);
        let l = 0;
        const e = new Float64Array(paths[i].length);
        for (const [x, a] of paths[i].entries()) l += e[x] = Math.exp(S[i * n + a] - m);
        S.fill(0, i * n, (i + 1) * n);
        for (const [x, a] of paths[i].entries()) S[i * n + a] = e[x] / l;
        lse[h * seq + i] = m + Math.log(l);
      }
      gemm(false, false, seq, D, n, 1, S, n, vc.subarray(kb), D, 0, ob, D);
      o.set(ob, h * seq * D);
      continue;
    }
    for (let i = 0; i < seq; i++) {
      const qo = (h * seq + i) * D,
        sc = paths[i].map((a) => {
          let dot = 0;
          for (let x = 0; x < D; x++) dot += q[qo + x] * kc[kb + a * D + x];
          return dot * scale;
        });
      const m = Math.max(...sc);
      let l = 0;
      acc.fill(0);
      for (const [x, a] of paths[i].entries()) {
        const e = Math.exp(sc[x] - m);
        l += e;
        for (let y = 0; y < D; y++) acc[y] += e * vc[kb + a * D + y];
      }
      for (let y = 0; y < D; y++) o[qo + y] = acc[y] / l;
      lse[h * seq + i] = m + Math.log(l);
    }
  }
  return { o, lse };
};

/** The most tree nodes the WGSL kernel takes (its workgroup score list, 4 KiB). */
export const TREE_MAX = 1024;

const f = (x: number) => x.toExponential(9);

/**
 * The WGSL kernel: one workgroup of 64 per (query node, head). Each thread scores the tree keys `j ≡ lid (mod 64)`
 * that lie on the query's root path (ancestor test by walking `parents` up from the query, `parents[a] < a`),
 * the workgroup reduces the maximum and the sum, then thread `lid` accumulates output channels `lid, lid + 64, …`
 * over the path. Writes `o [H, seq, D]` and `lse [H, seq]`.
 */
const treeKernel = (H: number, KH: number, D: number, scale: number): Kernel => {
  const g = H / KH;
  const L: string[] = [];
  const p = (x: string) => L.push(x);
  p(`struct U { seq: u32, base: u32, cap: u32, n: u32 }`);
  p(`@group(0) @binding(0) var<storage, read> Q: array<f32>;`);
  p(`@group(0) @binding(1) var<storage, read> KC: array<f32>;`);
  p(`@group(0) @binding(2) var<storage, read> VC: array<f32>;`);
  p(`@group(0) @binding(3) var<storage, read> PAR: array<i32>;`);
  p(`@group(0) @binding(4) var<storage, read_write> O: array<f32>;`);
  p(`@group(0) @binding(5) var<storage, read_write> LSE: array<f32>;`);
  p(`@group(0) @binding(6) var<uniform> P: U;`);
  p(`var<workgroup> sc: array<f32, ${TREE_MAX}>;`);
  p(`var<workgroup> red: array<f32, 64>;`);
  p(`const NEG: f32 = -3.0e38;`);
  p(`@compute @workgroup_size(64)`);
  p(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {`);
  p(`  let i = wid.x; let h = wid.y;`);
  p(`  let t = P.n - P.seq + i;`);
  p(`  let kb = (h / ${g}u) * P.cap * ${D}u + P.base * ${D}u;`);
  p(`  let qo = (h * P.seq + i) * ${D}u;`);
  p(`  var mx = NEG;`);
  p(`  for (var j = lid; j <= t; j += 64u) {`);
  p(`    var a = i32(t);`);
  // a parent list that is not topological (parents[a] ≥ a) ends the walk: no hang on bad input
  p(`    loop { if (a <= i32(j)) { break; } let up = PAR[a]; if (up >= a) { a = -1; break; } a = up; }`);
  p(`    var s = NEG;`);
  p(`    if (a == i32(j)) {`);
  p(`      var d = 0.0;`);
  p(`      for (var x = 0u; x < ${D}u; x++) { d = fma(Q[qo + x], KC[kb + j * ${D}u + x], d); }`);
  p(`      s = d * ${f(scale)};`);
  p(`    }`);
  p(`    sc[j] = s;`);
  p(`    mx = max(mx, s);`);
  p(`  }`);
  p(`  red[lid] = mx;`);
  p(`  workgroupBarrier();`);
  p(`  for (var w = 32u; w > 0u; w >>= 1u) {`);
  p(`    if (lid < w) { red[lid] = max(red[lid], red[lid + w]); }`);
  p(`    workgroupBarrier();`);
  p(`  }`);
  p(`  let m = red[0];`);
  p(`  workgroupBarrier();`);
  p(`  var l = 0.0;`);
  p(`  for (var j = lid; j <= t; j += 64u) {`);
  p(`    let e = select(0.0, exp(sc[j] - m), sc[j] > -1.0e38);`);
  p(`    sc[j] = e;`);
  p(`    l += e;`);
  p(`  }`);
  p(`  red[lid] = l;`);
  p(`  workgroupBarrier();`);
  p(`  for (var w = 32u; w > 0u; w >>= 1u) {`);
  p(`    if (lid < w) { red[lid] = red[lid] + red[lid + w]; }`);
  p(`    workgroupBarrier();`);
  p(`  }`);
  p(`  let sum = red[0];`);
  p(`  for (var x = lid; x < ${D}u; x += 64u) {`);
  p(`    var acc = 0.0;`);
  p(`    var a = i32(t);`);
  p(`    loop {`);
  p(`      acc = fma(sc[u32(a)], VC[kb + u32(a) * ${D}u + x], acc);`);
  p(`      let up = PAR[a];`);
  p(`      if (up < 0 || up >= a) { break; }`);
  p(`      a = up;`);
  p(`    }`);
  p(`    O[qo + x] = acc / sum;`);
  p(`  }`);
  p(`  if (lid == 0u) { LSE[h * P.seq + i] = m + log(sum); }`);
  p(`}`);
  return {
    key: `longspec.treeAttn.${H}.${KH}.${D}.${scale}`,
    wgsl: L.join("\n") + "\n",
    entryPoint: "main",
    bindings: ["read", "read", "read", "read", "read_write", "read_write", "uniform"],
  };
};

const shapes = (i: DescsOf<TreeAttnInputs>): TreeAttnShape & { readonly tree: number } => {
  const [heads, seq, headDim] = i.q.shape as [number, number, number];
  const [kvHeads, capacity] = i.kCache.shape as [number, number, number];
  return { heads, kvHeads, seq, headDim, capacity, tree: i.parents.shape[0] };
};

const posOf = (scalars: CpuContext["scalars"] | undefined): number => {
  const pos = scalars?.pos;
  if (pos === undefined || !Number.isInteger(pos) || pos < 0) throw new RangeError(`scalar pos = ${pos}`);
  return pos;
};

const scaleOf = (p: TreeAttnParams, d: number) => effectiveScale(p.scale, d);

const bad = (message: string, hint: string) => Effect.fail(new ShapeError({ message, hint }));

/**
 * `longspec.treeAttn` (see the module doc). Inputs `q f32 [heads, seq, headDim]`, `kCache`, `vCache f32
 * [kvHeads, capacity, headDim]` with `pos + seq` valid rows of which the last `tree` are the tree's, `parents i32
 * [tree]`; runtime scalar `pos`. Outputs `o f32 [heads, seq, headDim]`, `lse f32 [heads, seq]`. Shape errors:
 * ranks, GQA, different cache shapes, `seq > tree`, a tree over {@link TREE_MAX} nodes on the GPU; the parents
 * are not read at lowering time (a bad parent list gives a wrong answer on the GPU; check it with
 * `treeDepths` before upload — the CPU reference throws).
 */
export const treeAttn: Operator<TreeAttnParams, TreeAttnInputs, TreeAttnOutputs> = {
  name: "longspec.treeAttn",
  kind: "tree-attn",
  reference: "LongSpec (arXiv 2502.17421) §3 hybrid tree attention; official triton_tree_attn.py",
  params: TreeAttnParams,
  inputs: ports.inputs,
  outputs: ports.outputs,
  scalars: ["pos"],
  // a valid call for harnesses that synthesise inputs: a 16-node tree (depths 1 … 4) at the end of 256 rows
  example: {
    dims: { seq: 16, tree: 16, capacity: 256 },
    scalars: { pos: 240 },
    inputs: (dims) => {
      const n = dims.tree ?? 16;
      const parents = Int32Array.from({ length: n }, (_, i) => (i === 0 ? -1 : Math.floor((i - 1) / 3)));
      return { parents: hostTensor("i32", ["tree"], [n], parents) };
    },
  },
  infer: (_p, i) => {
    if (i.q.shape.length !== 3 || i.kCache.shape.length !== 3 || i.parents.shape.length !== 1) {
      return bad(
        `q [${i.q.shape}], kCache [${i.kCache.shape}], parents [${i.parents.shape}]`,
        "ranks 3, 3, 1",
      );
    }
    const s = shapes(i);
    if (i.vCache.shape.join() !== i.kCache.shape.join() || i.kCache.shape[2] !== s.headDim) {
      return bad(
        `kCache [${i.kCache.shape}], vCache [${i.vCache.shape}], q headDim ${s.headDim}`,
        "one shape",
      );
    }
    if (s.heads % s.kvHeads !== 0 || s.seq < 1 || s.seq > s.tree || s.tree > s.capacity) {
      return bad(
        `heads ${s.heads}, kvHeads ${s.kvHeads}, seq ${s.seq}, tree ${s.tree}, capacity ${s.capacity}`,
        "heads a multiple of kvHeads, 1 ≤ seq ≤ tree ≤ capacity",
      );
    }
    return Effect.succeed({
      o: { ...ports.outputs.o, shape: [s.heads, s.seq, s.headDim] },
      lse: { ...ports.outputs.lse, shape: [s.heads, s.seq] },
    } as DescsOf<TreeAttnOutputs>);
  },
  cpu: (p, i, ctx) => {
    const s = shapes({ q: i.q.desc, kCache: i.kCache.desc, vCache: i.vCache.desc, parents: i.parents.desc });
    const r = treeAttentionReference(
      i.q.data,
      i.kCache.data,
      i.vCache.data,
      i.parents.data,
      s,
      posOf(ctx?.scalars),
      scaleOf(p, s.headDim),
      ctx?.gemm,
    );
    const o = allocHost({ ...ports.outputs.o, shape: [s.heads, s.seq, s.headDim] });
    o.data.set(r.o);
    const lse = allocHost({ ...ports.outputs.lse, shape: [s.heads, s.seq] });
    lse.data.set(r.lse);
    return { o, lse } as HostOf<TreeAttnOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const s = shapes(i);
    if (s.tree > TREE_MAX) throw new RangeError(`tree of ${s.tree} nodes exceeds the kernel's ${TREE_MAX}`);
    const uniform = (pos: number) =>
      new Uint8Array(
        Uint32Array.of(s.seq, treeBase(pos, s.seq, s.tree, s.capacity), s.capacity, s.tree).buffer,
      );
    const fixed = Math.max(0, s.tree - s.seq);
    return {
      workspaces: { u: 16 },
      launches: [{
        kernel: treeKernel(s.heads, s.kvHeads, s.headDim, scaleOf(p, s.headDim)),
        buffers: ["in:q", "in:kCache", "in:vCache", "in:parents", "out:o", "out:lse", "ws:u"],
        workgroups: [s.seq, s.heads, 1],
        uniforms: { u: uniform(fixed) },
        dynamic: (sc) => ({ uniforms: { u: uniform(posOf(sc)) } }),
      }],
    };
  },
  cost: (_p, i): Cost => {
    const s = shapes(i);
    return {
      flops: 4 * s.heads * s.seq * s.tree * s.headDim,
      bytesRead: s.heads * s.seq * s.headDim * 4 + 2 * s.kvHeads * s.tree * s.headDim * 4 + s.tree * 4,
      bytesWritten: s.heads * s.seq * (s.headDim + 1) * 4,
      workspaceBytes: 16,
    };
  },
};
