/**
 * `squeezed.lookup`: the centroid lookup of Squeezed Attention — for every query head, the estimated attention
 * probability of each cluster's keys, averaged over the call's queries (the question's tokens in prefill, the
 * one token in decode). For query `q` and the clusters of its KV head: `s_j = scale · q · c_j` (raw-mean
 * centroid `c_j`), the softmax denominator estimated as `D = Σ_j N_j exp(s_j)` (cluster sizes `N_j`), and each
 * key of cluster `j` given probability `exp(s_j) / D`; the score is the mean over queries (official
 * `_fwd_centroid_simple_kernel_qk` in `squeezedattention/kernels.py`, and `run_global_threshold` in
 * `clustering.py` for the calibration). Empty clusters (`N_j = 0`) score 0.
 *
 * GPU: two launches — per (query, head) the max and the estimated denominator over the clusters (a workgroup
 * reduction; for a call of few queries, a decode step, split over parts of the clusters and merged by the
 * second launch), then per (head, cluster) the mean probability over the queries. f32 throughout (the official
 * kernel accumulates the centroid logits in bf16).
 * @module
 */
import { Effect } from "effect";
import { allocHost, tensorType } from "@longctx/graph";
import type { Cost, DescsOf, GpuLowering, HostOf, Operator, TensorType } from "@longctx/graph";
import { need } from "../dense/common.ts";
import { kvHeadOf, SqueezedParams } from "./params.ts";

/** Input ports of `squeezed.lookup`. */
export type LookupInputs = {
  /** The call's queries after RoPE, `f32 [heads, seq, headDim]`. */
  readonly q: TensorType<"f32", readonly ["heads", "seq", "headDim"]>;
  /** Raw-mean centroids of the fixed context's post-RoPE keys, `f32 [kvHeads, clusters, headDim]`. */
  readonly centroids: TensorType<"f32", readonly ["kvHeads", "clusters", "headDim"]>;
  /** Keys per cluster, `f32 [kvHeads, clusters]` (integers; 0 for an empty cluster). */
  readonly sizes: TensorType<"f32", readonly ["kvHeads", "clusters"]>;
};
/** Output ports of `squeezed.lookup`. */
export type LookupOutputs = {
  /** Mean over the queries of each cluster's estimated per-key probability, `f32 [heads, clusters]`. */
  readonly score: TensorType<"f32", readonly ["heads", "clusters"]>;
};

const inputs: LookupInputs = {
  q: tensorType("f32", ["heads", "seq", "headDim"] as const),
  centroids: tensorType("f32", ["kvHeads", "clusters", "headDim"] as const),
  sizes: tensorType("f32", ["kvHeads", "clusters"] as const),
};
const outputs: LookupOutputs = { score: tensorType("f32", ["heads", "clusters"] as const) };

/** Shapes of a lookup. */
export interface LookupDims {
  /** Query heads. */
  readonly H: number;
  /** KV heads. */
  readonly Hk: number;
  /** Queries of the call. */
  readonly seq: number;
  /** Clusters per KV head. */
  readonly C: number;
  /** Head dimension. */
  readonly d: number;
}

/**
 * `squeezed.lookup` on host arrays, in float64 (see the module doc): `q [H, seq, d]`, `centroids [Hk, C, d]`,
 * `sizes [Hk, C]`; returns `score [H, C]`. `scale` 0 means 1/sqrt(d).
 */
export const lookupReference = (
  scale: number,
  q: Float32Array,
  centroids: Float32Array,
  sizes: ArrayLike<number>,
  dm: LookupDims,
): Float32Array => {
  const { H, Hk, seq, C, d } = dm, sc = scale > 0 ? scale : 1 / Math.sqrt(d);
  const out = new Float32Array(H * C), acc = new Float64Array(C), s = new Float64Array(C);
  for (let h = 0; h < H; h++) {
    const hk = kvHeadOf(h, H, Hk);
    acc.fill(0);
    for (let j = 0; j < seq; j++) {
      const qo = (h * seq + j) * d;
      let m = -Infinity;
      for (let c = 0; c < C; c++) {
        const co = (hk * C + c) * d;
        let v = 0;
        for (let t = 0; t < d; t++) v += q[qo + t] * centroids[co + t];
        s[c] = v * sc;
        if (sizes[hk * C + c] > 0 && s[c] > m) m = s[c];
      }
      if (m === -Infinity) continue;
      let den = 0;
      for (let c = 0; c < C; c++) den += sizes[hk * C + c] * Math.exp(s[c] - m);
      for (let c = 0; c < C; c++) if (sizes[hk * C + c] > 0) acc[c] += Math.exp(s[c] - m) / den;
    }
    for (let c = 0; c < C; c++) out[h * C + c] = acc[c] / seq;
  }
  return out;
};

const WG = 64;

/**
 * WGSL lines reducing per-thread (max, Σ N exp(s − max)) pairs in workgroup arrays `rm`, `rd` of `wg` entries
 * (a power of two; `NEG` marks an empty pair) into `rm[0]`, `rd[0]`.
 */
export const reduceMaxDen = (wg: number): string[] => [
  `  workgroupBarrier();`,
  `  for (var w = ${wg / 2}u; w > 0u; w >>= 1u) {`,
  `    if (t < w) {`,
  `      let ma = rm[t]; let mb = rm[t + w]; let mm = max(ma, mb);`,
  `      var dd = 0.0;`,
  `      if (ma > NEG) { dd += rd[t] * exp(ma - mm); }`,
  `      if (mb > NEG) { dd += rd[t + w] * exp(mb - mm); }`,
  `      rm[t] = mm; rd[t] = dd;`,
  `    }`,
  `    workgroupBarrier();`,
  `  }`,
];

/**
 * The parts the statistics of a lookup level are split into: 1 when the call's (query, head) pairs fill the
 * GPU (≥ 512), else one part per 256 clusters (at most 64), so a decode step's 32 heads are not 32 workgroups
 * walking every centroid.
 */
export const lookupParts = (seq: number, heads: number, clusters: number): number =>
  seq * heads >= 512 ? 1 : Math.max(1, Math.min(64, Math.ceil(clusters / (4 * WG))));

/** The names a lookup level's kernels read and write (see {@link levelWgsl}). */
export interface LevelNames {
  /** The centroid buffer (`array<vec4<f32>>`). */
  readonly cen: string;
  /** The cluster-size buffer. */
  readonly n: string;
  /** The score buffer written. */
  readonly out: string;
  /** The entry point of the per-(query, head) statistics. */
  readonly stats: string;
  /** The entry point of the per-(head, cluster) score. */
  readonly score: string;
  /** Where this level's `(max, D)` pairs start in `ST` (floats; `heads · seq · parts` pairs). */
  readonly statsAt: number;
  /** The parts of the statistics (see {@link lookupParts}; launched as workgroups' z); default 1. */
  readonly parts?: number;
}

/**
 * A gate on a level: only clusters whose parent (L1) cluster scores above `τ₁` are looked up — the children
 * of parent `a` are `ptr[a] … ptr[a + 1] − 1` — and the others score 0.
 */
export interface LevelGate {
  /** The parents' score buffer, `[heads, parents]`. */
  readonly parentScore: string;
  /** Parents per KV head. */
  readonly parents: number;
  /** The children ranges, `i32 [kvHeads, parents + 1]`. */
  readonly ptr: string;
  /** Each cluster's parent, `i32 [kvHeads, clusters]`. */
  readonly parent: string;
  /** The expression of τ₁. */
  readonly tau: string;
}

/**
 * The WGSL of one lookup level over `C` clusters (two entry points, see the module doc): the statistics per
 * (query, head, part) — one workgroup, the query in workgroup memory, the threads over the part's clusters
 * (every `parts`-th block of 64, or every `parts`-th parent under a gate) — and the score per (head, cluster)
 * (the parts' pairs merged first) — a workgroup per (head, 64 clusters), each thread's centroid held in registers, the
 * queries staged one at a time. `vec4` loads throughout (`headDim % 4 == 0`). Expects `Q` and the level's
 * buffers (`array<vec4<f32>>` for `Q` and the centroids), `ST`, and {@link lookupShared}'s declarations.
 */
export const levelWgsl = (dm: LookupDims, scale: number, names: LevelNames, gate?: LevelGate): string[] => {
  const { H, Hk, seq, C, d } = dm, g = H / Hk, D4 = d / 4, { cen, n, out } = names;
  const sc = scale > 0 ? scale : 1 / Math.sqrt(d);
  const at = names.statsAt, P = names.parts ?? 1;
  const dotShared = (base: string) =>
    Array.from({ length: D4 }, (_, x) => `dot(${cen}[${base} + ${x}u], qs[${x}])`).join(" + ");
  const dotRegs = Array.from({ length: D4 }, (_, x) => `dot(r${x}, qs[${x}])`).join(" + ");
  const visit = [
    `      let nc = ${n}[hk * ${C}u + c];`,
    `      if (nc > 0.0) {`,
    `        let v = (${dotShared(`(hk * ${C}u + c) * ${D4}u`)}) * ${sc};`,
    `        let m2 = max(m, v);`,
    `        den = den * exp(m - m2) + nc * exp(v - m2);`,
    `        m = m2;`,
    `      }`,
  ];
  const loop = gate
    ? [
      `  for (var a = wid.z; a < ${gate.parents}u; a += ${P}u) {`,
      `    if (${gate.parentScore}[h * ${gate.parents}u + a] > ${gate.tau}) {`,
      `      let lo = u32(${gate.ptr}[hk * ${gate.parents + 1}u + a]);`,
      `      let hi = u32(${gate.ptr}[hk * ${gate.parents + 1}u + a + 1u]);`,
      `      for (var c = lo + t; c < hi; c += ${WG}u) {`,
      ...visit.map((l) => `  ${l}`),
      `      }`,
      `    }`,
      `  }`,
    ]
    : [
      `  for (var c = wid.z * ${WG}u + t; c < ${C}u; c += ${WG * P}u) {`,
      ...visit.map((l) => l.slice(2)),
      `  }`,
    ];
  return [
    `@compute @workgroup_size(${WG})`,
    `fn ${names.stats}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  let j = wid.x; let h = wid.y; let hk = h / ${g}u;`,
    `  for (var x = t; x < ${D4}u; x += ${WG}u) { qs[x] = Q[(h * ${seq}u + j) * ${D4}u + x]; }`,
    `  workgroupBarrier();`,
    `  var m = NEG; var den = 0.0;`,
    ...loop,
    `  rm[t] = m; rd[t] = den;`,
    ...reduceMaxDen(WG),
    `  let sa = ${at}u + ((h * ${seq}u + j) * ${P}u + wid.z) * 2u;`,
    `  if (t == 0u) { ST[sa] = rm[0]; ST[sa + 1u] = rd[0]; }`,
    `}`,
    `@compute @workgroup_size(${WG})`,
    `fn ${names.score}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {`,
    `  let h = wid.y; let hk = h / ${g}u; let c = wid.x * ${WG}u + t;`,
    `  let cc = min(c, ${C - 1}u);`,
    `  let base = (hk * ${C}u + cc) * ${D4}u;`,
    ...Array.from({ length: D4 }, (_, x) => `  let r${x} = ${cen}[base + ${x}u];`),
    gate
      ? `  let live = c < ${C}u && ${n}[hk * ${C}u + cc] > 0.0 && ` +
        `${gate.parentScore}[h * ${gate.parents}u + u32(${gate.parent}[hk * ${C}u + cc])] > ${gate.tau};`
      : `  let live = c < ${C}u && ${n}[hk * ${C}u + cc] > 0.0;`,
    `  var acc = 0.0;`,
    `  for (var j = 0u; j < ${seq}u; j++) {`,
    `    workgroupBarrier();`,
    `    for (var x = t; x < ${D4}u; x += ${WG}u) { qs[x] = Q[(h * ${seq}u + j) * ${D4}u + x]; }`,
    `    workgroupBarrier();`,
    `    let sb = ${at}u + (h * ${seq}u + j) * ${P * 2}u;`,
    ...(P === 1 ? [`    let m = ST[sb]; let den = ST[sb + 1u];`] : [
      `    var m = NEG;`,
      `    for (var z = 0u; z < ${P}u; z++) { m = max(m, ST[sb + z * 2u]); }`,
      `    var den = 0.0;`,
      `    for (var z = 0u; z < ${P}u; z++) {`,
      `      let mz = ST[sb + z * 2u];`,
      `      if (mz > NEG) { den += ST[sb + z * 2u + 1u] * exp(mz - m); }`,
      `    }`,
    ]),
    `    if (live && den > 0.0) { acc += exp((${dotRegs}) * ${sc} - m) / den; }`,
    `  }`,
    `  if (c < ${C}u) { ${out}[h * ${C}u + c] = acc / f32(${seq}); }`,
    `}`,
  ];
};

/** The workgroup declarations a lookup's kernels share (see {@link levelWgsl}). */
export const lookupShared = (d: number): string[] => [
  `var<workgroup> qs: array<vec4<f32>, ${d / 4}>;`,
  `var<workgroup> rm: array<f32, ${WG}>;`,
  `var<workgroup> rd: array<f32, ${WG}>;`,
  `const NEG: f32 = -3.0e38;`,
];

const lookupWgsl = (dm: LookupDims, scale: number, parts: number) =>
  [
    `@group(0) @binding(0) var<storage, read> Q: array<vec4<f32>>;`,
    `@group(0) @binding(1) var<storage, read> CEN: array<vec4<f32>>;`,
    `@group(0) @binding(2) var<storage, read> N: array<f32>;`,
    `@group(0) @binding(3) var<storage, read_write> ST: array<f32>;`,
    `@group(0) @binding(4) var<storage, read_write> SC: array<f32>;`,
    ...lookupShared(dm.d),
    ...levelWgsl(dm, scale, {
      cen: "CEN",
      n: "N",
      out: "SC",
      stats: "stats",
      score: "score",
      statsAt: 0,
      parts,
    }),
  ].join("\n");

/**
 * `squeezed.lookup` (see the module doc). Inputs `q f32 [heads, seq, headDim]`, `centroids f32 [kvHeads,
 * clusters, headDim]`, `sizes f32 [kvHeads, clusters]`; output `score f32 [heads, clusters]`. Shape errors:
 * heads not a multiple of kvHeads, centroids' headDim not q's, sizes not `[kvHeads, clusters]`.
 */
export const lookup: Operator<SqueezedParams, LookupInputs, LookupOutputs> = {
  name: "squeezed.lookup",
  kind: "centroid-lookup",
  reference:
    "Squeezed Attention (arXiv 2411.09688): centroid lookup with the cluster-size-weighted softmax " +
    "estimate, averaged over the queries (official squeezedattention/kernels.py)",
  params: SqueezedParams,
  inputs,
  outputs,
  example: { dims: { clusters: 32 } },
  infer: (_p, i) =>
    Effect.gen(function* () {
      const [H, , d] = i.q.shape as [number, number, number];
      const [Hk, C, dc] = i.centroids.shape as [number, number, number];
      yield* need(
        dc === d && H % Hk === 0 && C >= 1 && d % 4 === 0,
        "centroids",
        `q [${i.q.shape}], centroids [${i.centroids.shape}]`,
        "centroids are [kvHeads, clusters ≥ 1, headDim] with heads a multiple of kvHeads and headDim of 4s",
      );
      yield* need(
        i.sizes.shape.join() === `${Hk},${C}`,
        "sizes",
        `sizes [${i.sizes.shape}]`,
        `the cluster sizes are [kvHeads, clusters] = [${Hk}, ${C}]`,
      );
      return { score: { ...outputs.score, shape: [H, C] } } as DescsOf<LookupOutputs>;
    }),
  cpu: (p, i) => {
    const [H, seq, d] = i.q.desc.shape as [number, number, number];
    const [Hk, C] = i.centroids.desc.shape as [number, number, number];
    const score = allocHost({ ...outputs.score, shape: [H, C] });
    score.data.set(lookupReference(
      p.scale,
      i.q.data as Float32Array,
      i.centroids.data as Float32Array,
      i.sizes.data as Float32Array,
      { H, Hk, seq, C, d },
    ));
    return { score } as HostOf<LookupOutputs>;
  },
  gpu: (p, i): GpuLowering => {
    const [H, seq, d] = i.q.shape as [number, number, number];
    const [Hk, C] = i.centroids.shape as [number, number, number];
    const parts = lookupParts(seq, H, C);
    const dm = { H, Hk, seq, C, d }, wgsl = lookupWgsl(dm, p.scale, parts);
    const key = `squeezed.lookup:${H}/${Hk}x${seq}x${C}x${d}:${p.scale}:p${parts}`;
    const bindings = ["read", "read", "read", "read_write", "read_write"] as const;
    const buffers = ["in:q", "in:centroids", "in:sizes", "ws:stats", "out:score"];
    return {
      workspaces: { stats: H * seq * parts * 2 * 4 },
      launches: [
        {
          kernel: { key: `${key}:stats`, wgsl, entryPoint: "stats", bindings: [...bindings] },
          buffers,
          workgroups: [seq, H, parts],
        },
        {
          kernel: { key: `${key}:score`, wgsl, entryPoint: "score", bindings: [...bindings] },
          buffers,
          workgroups: [Math.ceil(C / WG), H, 1],
        },
      ],
    };
  },
  cost: (_p, i): Cost => {
    const [H, seq, d] = i.q.shape as [number, number, number];
    const [Hk, C] = i.centroids.shape as [number, number, number];
    return {
      flops: 2 * 2 * H * seq * C * d,
      bytesRead: (H * seq * d + 2 * (H / Hk) * Hk * C * d + Hk * C) * 4,
      bytesWritten: H * C * 4,
      workspaceBytes: H * seq * lookupParts(seq, H, C) * 2 * 4,
    };
  },
};
