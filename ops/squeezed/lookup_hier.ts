/**
 * `squeezed.lookupHier`: the two-level (hierarchical) centroid lookup of Squeezed Attention. The fine clusters
 * of each KV head are grouped under coarse (L1) clusters (k-means of the fine centroids), stored so that the
 * children of L1 cluster `a` are the fine clusters `ptr[a] … ptr[a + 1] − 1`. Per query head:
 *
 * 1. the L1 lookup — `squeezed.lookup`'s estimate over the L1 centroids (sizes: the keys under each), averaged
 *    over the call's queries — and the L1 clusters above the L1 threshold τ₁;
 * 2. the fine lookup over the children of the surviving L1 clusters only: the softmax denominator summed over
 *    those children (sizes: the keys that survived L1), each child's per-key probability averaged over the
 *    queries; the children of dropped L1 clusters score 0 and are never computed.
 *
 * With every L1 cluster passing this is `squeezed.lookup` over the fine clusters. The fine work is
 * proportional to the survivors: `L1 + kept children` dot products per query instead of all fine clusters —
 * the sub-linear lookup of the paper. The official release only simulates this (two full flat lookups, the
 * mask their conjunction; TECHNIQUES.md §2 pitfall 6): this is a working one.
 *
 * GPU: four launches — L1 max and denominator per (query, head), L1 score per (head, L1 cluster), fine max and
 * denominator per (query, head) over the surviving ranges, fine score per (head, fine cluster).
 * @module
 */
import { Effect } from "effect";
import { allocHost, tensorType } from "@longctx/graph";
import type { Cost, DescsOf, GpuLowering, HostOf, Operator, TensorType } from "@longctx/graph";
import { need } from "../dense/common.ts";
import { levelWgsl, lookupParts, lookupReference, lookupShared } from "./lookup.ts";
import { kvHeadOf, SqueezedParams } from "./params.ts";

/** Input ports of `squeezed.lookupHier`. */
export type LookupHierInputs = {
  /** The call's queries after RoPE, `f32 [heads, seq, headDim]`. */
  readonly q: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Fine centroids, ordered by their L1 parent, `f32 [kvHeads, clusters, headDim]`. */
  readonly centroids: TensorType<"f32", readonly ["kvHeads", "clusters", "headDim"]>;
  /** Keys per fine cluster, `f32 [kvHeads, clusters]`. */
  readonly sizes: TensorType<"f32", readonly ["kvHeads", "clusters"]>;
  /** L1 centroids, `f32 [kvHeads, clustersL1, headDim]`. */
  readonly centroidsL1: TensorType<"f32", readonly ["kvHeads", "clustersL1", "headDim"]>;
  /** Keys per L1 cluster, `f32 [kvHeads, clustersL1]`. */
  readonly sizesL1: TensorType<"f32", readonly ["kvHeads", "clustersL1"]>;
  /** Children ranges: L1 cluster `a`'s fine clusters are `ptr[a] … ptr[a + 1] − 1`, `i32 [kvHeads, clustersL1 + 1]`. */
  readonly ptrL1: TensorType<"i32", readonly ["kvHeads", "boundsL1"]>;
  /** Each fine cluster's L1 parent, `i32 [kvHeads, clusters]`. */
  readonly parentL1: TensorType<"i32", readonly ["kvHeads", "clusters"]>;
  /** The L1 threshold τ₁, `f32 [1]`. */
  readonly thresholdL1: TensorType<"f32", readonly ["one"]>;
};
/** Output ports of `squeezed.lookupHier`. */
export type LookupHierOutputs = {
  /** Fine scores (0 under a dropped L1 cluster), `f32 [heads, clusters]`. */
  readonly score: TensorType<"f32", readonly ["heads", "clusters"]>;
  /** L1 scores, `f32 [heads, clustersL1]`. */
  readonly scoreL1: TensorType<"f32", readonly ["heads", "clustersL1"]>;
};

const inputs: LookupHierInputs = {
  q: tensorType("f32", ["heads", "seq", "headDim"] as const),
  centroids: tensorType("f32", ["kvHeads", "clusters", "headDim"] as const),
  sizes: tensorType("f32", ["kvHeads", "clusters"] as const),
  centroidsL1: tensorType("f32", ["kvHeads", "clustersL1", "headDim"] as const),
  sizesL1: tensorType("f32", ["kvHeads", "clustersL1"] as const),
  ptrL1: tensorType("i32", ["kvHeads", "boundsL1"] as const),
  parentL1: tensorType("i32", ["kvHeads", "clusters"] as const),
  thresholdL1: tensorType("f32", ["one"] as const),
};
const outputs: LookupHierOutputs = {
  score: tensorType("f32", ["heads", "clusters"] as const),
  scoreL1: tensorType("f32", ["heads", "clustersL1"] as const),
};

/** Shapes of a hierarchical lookup. */
export interface LookupHierDims {
  /** Query heads. */
  readonly H: number;
  /** KV heads. */
  readonly Hk: number;
  /** Queries of the call. */
  readonly seq: number;
  /** Fine clusters per KV head. */
  readonly C: number;
  /** L1 clusters per KV head. */
  readonly C1: number;
  /** Head dimension. */
  readonly d: number;
}

/**
 * `squeezed.lookupHier` on host arrays, in float64 (see the module doc). Returns the fine scores `[H, C]`, the
 * L1 scores `[H, C1]` and `evaluated`, the fine clusters whose logits were computed (summed over heads, per
 * query) — the lookup's work. `scale` 0 means 1/sqrt(d).
 */
export const lookupHierReference = (
  scale: number,
  q: Float32Array,
  centroids: Float32Array,
  sizes: ArrayLike<number>,
  centroidsL1: Float32Array,
  sizesL1: ArrayLike<number>,
  ptr: ArrayLike<number>,
  tau1: number,
  dm: LookupHierDims,
): { score: Float32Array; scoreL1: Float32Array; evaluated: number } => {
  const { H, Hk, seq, C, C1, d } = dm, sc = scale > 0 ? scale : 1 / Math.sqrt(d);
  const scoreL1 = lookupReference(scale, q, centroidsL1, sizesL1, { H, Hk, seq, C: C1, d });
  const score = new Float32Array(H * C), acc = new Float64Array(C), s = new Float64Array(C);
  let evaluated = 0;
  for (let h = 0; h < H; h++) {
    const hk = kvHeadOf(h, H, Hk);
    const live: number[] = [];
    for (let a = 0; a < C1; a++) {
      if (!(scoreL1[h * C1 + a] > tau1)) continue;
      for (let c = ptr[hk * (C1 + 1) + a]; c < ptr[hk * (C1 + 1) + a + 1]; c++) {
        if (sizes[hk * C + c] > 0) live.push(c);
      }
    }
    evaluated += live.length;
    acc.fill(0);
    for (let j = 0; j < seq; j++) {
      const qo = (h * seq + j) * d;
      let m = -Infinity;
      for (const c of live) {
        let v = 0;
        for (let t = 0; t < d; t++) v += q[qo + t] * centroids[(hk * C + c) * d + t];
        s[c] = v * sc;
        if (s[c] > m) m = s[c];
      }
      if (m === -Infinity) continue;
      let den = 0;
      for (const c of live) den += sizes[hk * C + c] * Math.exp(s[c] - m);
      for (const c of live) acc[c] += Math.exp(s[c] - m) / den;
    }
    for (const c of live) score[h * C + c] = acc[c] / seq;
  }
  return { score, scoreL1, evaluated };
};

const WG = 64;

/** The statistics' parts of both levels (the gated level's over parents: at most `C1`). */
const hierParts = (dm: LookupHierDims): { readonly l1: number; readonly fine: number } => ({
  l1: lookupParts(dm.seq, dm.H, dm.C1),
  fine: Math.min(dm.C1, lookupParts(dm.seq, dm.H, dm.C)),
});

const hierWgsl = (dm: LookupHierDims, scale: number) => {
  const { H, Hk, seq, C, C1, d } = dm, parts = hierParts(dm);
  return [
    `@group(0) @binding(0) var<storage, read> Q: array<vec4<f32>>;`,
    `@group(0) @binding(1) var<storage, read> CEN: array<vec4<f32>>;`,
    `@group(0) @binding(2) var<storage, read> N: array<f32>;`,
    `@group(0) @binding(3) var<storage, read> CEN1: array<vec4<f32>>;`,
    `@group(0) @binding(4) var<storage, read> N1: array<f32>;`,
    `@group(0) @binding(5) var<storage, read> PTR: array<i32>;`,
    `@group(0) @binding(6) var<storage, read> PAR: array<i32>;`,
    `@group(0) @binding(7) var<storage, read> TAU: array<f32>;`,
    `@group(0) @binding(8) var<storage, read_write> ST: array<f32>;`,
    `@group(0) @binding(9) var<storage, read_write> SC: array<f32>;`,
    `@group(0) @binding(10) var<storage, read_write> SC1: array<f32>;`,
    ...lookupShared(d),
    // ST holds (max, D) per (head, query, part): L1's first, the fine level's after them
    ...levelWgsl({ H, Hk, seq, C: C1, d }, scale, {
      cen: "CEN1",
      n: "N1",
      out: "SC1",
      stats: "stats1",
      score: "score1",
      statsAt: 0,
      parts: parts.l1,
    }),
    // the fine level over the children of the L1 clusters above τ₁
    ...levelWgsl({ H, Hk, seq, C, d }, scale, {
      cen: "CEN",
      n: "N",
      out: "SC",
      stats: "stats2",
      score: "score2",
      statsAt: 2 * H * seq * parts.l1,
      parts: parts.fine,
    }, { parentScore: "SC1", parents: C1, ptr: "PTR", parent: "PAR", tau: "TAU[0]" }),
  ].join("\n");
};

/**
 * `squeezed.lookupHier` (see the module doc). Inputs `q`, the fine `centroids`/`sizes` (ordered by parent),
 * `centroidsL1`/`sizesL1`, `ptrL1 i32 [kvHeads, clustersL1 + 1]`, `parentL1 i32 [kvHeads, clusters]`,
 * `thresholdL1 f32 [1]`; outputs `score f32 [heads, clusters]`, `scoreL1 f32 [heads, clustersL1]`. Shape
 * errors: mismatched heads or head dims, ranges not `[kvHeads, clustersL1 + 1]`, more L1 than fine clusters.
 * Ranges that do not partition the fine clusters are the caller's error (the prefix index builds and checks
 * them).
 */
export const lookupHier: Operator<SqueezedParams, LookupHierInputs, LookupHierOutputs> = {
  name: "squeezed.lookupHier",
  kind: "centroid-lookup",
  reference: "Squeezed Attention (arXiv 2411.09688): hierarchical centroid lookup (L1 gate, then the fine " +
    "clusters under the surviving L1 clusters; official offline_clustering.py --hierarchical_lookup)",
  params: SqueezedParams,
  inputs,
  outputs,
  example: { dims: { clusters: 64, clustersL1: 8, boundsL1: 9, one: 1 } },
  infer: (_p, i) =>
    Effect.gen(function* () {
      const [H, , d] = i.q.shape as [number, number, number];
      const [Hk, C, dc] = i.centroids.shape as [number, number, number];
      const [Hk1, C1, d1] = i.centroidsL1.shape as [number, number, number];
      yield* need(
        dc === d && d1 === d && Hk1 === Hk && H % Hk === 0 && C1 >= 1 && C1 <= C && d % 4 === 0,
        "centroidsL1",
        `q [${i.q.shape}], centroids [${i.centroids.shape}], centroidsL1 [${i.centroidsL1.shape}]`,
        "fine and L1 centroids are [kvHeads, clusters, headDim] with at most as many L1 as fine clusters, " +
          "headDim of 4s",
      );
      yield* need(
        i.sizes.shape.join() === `${Hk},${C}` && i.sizesL1.shape.join() === `${Hk},${C1}` &&
          i.parentL1.shape.join() === `${Hk},${C}` && i.ptrL1.shape.join() === `${Hk},${C1 + 1}`,
        "ptrL1",
        `sizes [${i.sizes.shape}], sizesL1 [${i.sizesL1.shape}], parentL1 [${i.parentL1.shape}], ptrL1 [${i.ptrL1.shape}]`,
        `sizes [${Hk}, ${C}], sizesL1 [${Hk}, ${C1}], parentL1 [${Hk}, ${C}], ptrL1 [${Hk}, ${C1 + 1}]`,
      );
      yield* need(i.thresholdL1.shape.join() === "1", "thresholdL1", `[${i.thresholdL1.shape}]`, "τ₁ is [1]");
      return {
        score: { ...outputs.score, shape: [H, C] },
        scoreL1: { ...outputs.scoreL1, shape: [H, C1] },
      } as DescsOf<LookupHierOutputs>;
    }),
  cpu: (p, i) => {
    const [H, seq, d] = i.q.desc.shape as [number, number, number];
    const [Hk, C] = i.centroids.desc.shape as [number, number, number];
    const C1 = i.centroidsL1.desc.shape[1];
    const r = lookupHierReference(
      p.scale,
      i.q.data as Float32Array,
      i.centroids.data as Float32Array,
      i.sizes.data as Float32Array,
      i.centroidsL1.data as Float32Array,
      i.sizesL1.data as Float32Array,
      i.ptrL1.data as Int32Array,
      (i.thresholdL1.data as Float32Array)[0],
      { H, Hk, seq, C, C1, d },
    );
    const score = allocHost({ ...outputs.score, shape: [H, C] });
    score.data.set(r.score);
    const scoreL1 = allocHost({ ...outputs.scoreL1, shape: [H, C1] });
    scoreL1.data.set(r.scoreL1);
    return { score, scoreL1 } as HostOf<LookupHierOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const [H, seq, d] = i.q.shape as [number, number, number];
    const [Hk, C] = i.centroids.shape as [number, number, number];
    const C1 = i.centroidsL1.shape[1];
    const dm = { H, Hk, seq, C, C1, d }, wgsl = hierWgsl(dm, p.scale), parts = hierParts(dm);
    const key = `squeezed.lookupHier:${H}/${Hk}x${seq}x${C}/${C1}x${d}:${p.scale}:p${parts.l1}.${parts.fine}`;
    const bindings = [
      ...Array.from({ length: 8 }, () => "read" as const),
      "read_write" as const,
      "read_write" as const,
      "read_write" as const,
    ];
    const buffers = [
      "in:q",
      "in:centroids",
      "in:sizes",
      "in:centroidsL1",
      "in:sizesL1",
      "in:ptrL1",
      "in:parentL1",
      "in:thresholdL1",
      "ws:stats",
      "out:score",
      "out:scoreL1",
    ];
    const launch = (entry: string, workgroups: [number, number, number]) => ({
      kernel: { key: `${key}:${entry}`, wgsl, entryPoint: entry, bindings: [...bindings] },
      buffers,
      workgroups,
    });
    return {
      workspaces: { stats: H * seq * (parts.l1 + parts.fine) * 2 * 4 },
      launches: [
        launch("stats1", [seq, H, parts.l1]),
        launch("score1", [Math.ceil(C1 / WG), H, 1]),
        launch("stats2", [seq, H, parts.fine]),
        launch("score2", [Math.ceil(C / WG), H, 1]),
      ],
    };
  },
  cost: (_p, i): Cost => {
    const [H, seq, d] = i.q.shape as [number, number, number];
    const [Hk, C] = i.centroids.shape as [number, number, number];
    const C1 = i.centroidsL1.shape[1];
    // the worst case (every L1 cluster passes); the kept share of the fine work is only known at run time
    return {
      flops: 2 * 2 * H * seq * (C + C1) * d,
      bytesRead: (H * seq * d + 2 * (C + C1) * Hk * d * (H / Hk) + 3 * Hk * C + Hk * C1) * 4,
      bytesWritten: H * (C + C1) * 4,
      workspaceBytes: (() => {
        const parts = hierParts({ H, Hk, seq, C, C1, d });
        return H * seq * (parts.l1 + parts.fine) * 2 * 4;
      })(),
    };
  },
};
