/**
 * Conformance cases of LongSpec's `longspec.treeAttn` (`ops/longspec/`), kept apart from `cases.ts` (which maps
 * them in `caseGenerators`): random trees and chains of 1 … 150 nodes on a KV cache with a prefix of 0 … 137
 * rows, the verify call (all nodes) and a draft's one-depth call (the last nodes), GQA 1/3/4/8, head dims 16 …
 * 128; rows past the valid length hold junk (K ≈ 1e3, V ≈ 1e4: a kernel reading them is far off), and so do the
 * prefix rows (the tree part must not see them). Float64 reference written here from the definition: node `t`
 * attends the tree rows of its ancestors-or-self.
 * @module
 */
import { hostTensor, mulberry32, seededNormals } from "@longctx/graph";
import type { AnyOperator } from "@longctx/graph";
import type { CaseGenerator, ConfCase } from "./cases.ts";
import { maxAbs, relL2, values } from "./metrics.ts";

/** [heads, kvHeads, headDim, prefix rows, tree nodes, queries (the last nodes), junk rows past the valid ones] */
const GRID = [
  [9, 3, 64, 137, 69, 69, 5],
  [4, 4, 16, 0, 9, 9, 0],
  [8, 2, 32, 50, 1, 1, 3],
  [6, 3, 24, 33, 21, 16, 7],
  [8, 8, 64, 20, 150, 150, 1],
  [32, 8, 128, 70, 69, 69, 2],
  [12, 4, 96, 1, 65, 1, 9],
] as const;

const desc = (op: AnyOperator, port: string, shape: readonly number[]) => ({ ...op.inputs[port], shape });

/** `longspec.treeAttn` cases (see the module doc). */
export const treeAttnCases: CaseGenerator = (op) =>
  GRID.flatMap(([H, KH, D, prefix, n, seq, junk], gi) =>
    (["random", "chain"] as const).map((kind, ki): ConfCase => {
      const cap = prefix + n + junk, pos = prefix + n - seq, base = prefix;
      const shapes = { q: [H, seq, D], kCache: [KH, cap, D], vCache: [KH, cap, D], parents: [n] };
      const descs = Object.fromEntries(Object.entries(shapes).map(([k, s]) => [k, desc(op, k, s)]));
      return {
        shape: `H${H}/${KH} tree${n} seq${seq} prefix${prefix} D${D} ${kind}`,
        dtype: "f32",
        qk: false,
        params: {},
        scalars: { pos },
        descs,
        build: () => {
          const seed = 8100 + 17 * gi + ki;
          const r = mulberry32(seed);
          const parents = Int32Array.from(
            { length: n },
            (_, i) => (i === 0 ? -1 : kind === "chain" ? i - 1 : Math.floor(r() * i)),
          );
          const q = seededNormals(H * seq * D, seed + 1).map((x) => 1.3 * x + 0.2);
          const k = seededNormals(KH * cap * D, seed + 2), v = seededNormals(KH * cap * D, seed + 3);
          for (let g = 0; g < KH; g++) {
            for (let row = 0; row < cap; row++) {
              if (row >= base && row < base + n) continue;
              for (let x = 0; x < D; x++) {
                const e = (g * cap + row) * D + x;
                k[e] = 1e3 * k[e];
                v[e] = 1e4 * (1 + Math.abs(v[e]));
              }
            }
          }
          // float64 reference
          const scale = 1 / Math.sqrt(D);
          const wo = new Float64Array(H * seq * D), wl = new Float64Array(H * seq);
          for (let h = 0; h < H; h++) {
            const g = Math.floor(h / (H / KH));
            for (let i = 0; i < seq; i++) {
              const path: number[] = [];
              for (let a = n - seq + i; a >= 0; a = parents[a]) path.push(a);
              const s = path.map((a) => {
                let d = 0;
                for (let x = 0; x < D; x++) d += q[(h * seq + i) * D + x] * k[(g * cap + base + a) * D + x];
                return d * scale;
              });
              const m = Math.max(...s);
              let l = 0;
              for (const [c, a] of path.entries()) {
                const e = Math.exp(s[c] - m);
                l += e;
                for (let x = 0; x < D; x++) wo[(h * seq + i) * D + x] += e * v[(g * cap + base + a) * D + x];
              }
              for (let x = 0; x < D; x++) wo[(h * seq + i) * D + x] /= l;
              wl[h * seq + i] = m + Math.log(l);
            }
          }
          const t = (p: string, x: Float32Array) => hostTensor("f32", descs[p].dims, descs[p].shape, x);
          return {
            inputs: {
              q: t("q", q),
              kCache: t("kCache", k),
              vCache: t("vCache", v),
              parents: hostTensor("i32", descs.parents.dims, descs.parents.shape, parents),
            },
            note: `${n} nodes, junk prefix and tail`,
            ref64: (cpu) => [relL2("o", values(cpu.o), wo, 1e-5), maxAbs("lse", values(cpu.lse), wl, 1e-4)],
            compare: (got, cpu) => [
              relL2("o", values(got.o), values(cpu.o), 1e-5),
              maxAbs("lse", values(got.lse), values(cpu.lse), 1e-4),
            ],
          };
        },
      };
    })
  );
