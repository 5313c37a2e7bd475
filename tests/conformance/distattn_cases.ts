/**
 * Conformance cases of DistAttention's operators (`ops/distattn/`), kept apart from `cases.ts` (which maps
 * them in `caseGenerators`):
 *
 * - `distattn.partialAttn`: blocks before the queries (all keys seen), straddling them (causal across the
 *   boundary), wholly after them (every row empty: lse −Infinity), `len < capacity` with junk rows past `len`
 *   (K ≈ 1e3, V ≈ 1e4: a kernel reading them is far off), decode and prefill, GQA 1/3/4/8, head dims 64/128,
 *   one and several split-KV chunks; float64 reference written here from the definition.
 * - `distattn.merge`: 1 to 64 parts with spread-out `lse` (some parts empty for some rows, one row empty in
 *   every part), against a float64 merge.
 * @module
 */
import { hostTensor, seededNormals } from "@longctx/graph";
import type { AnyOperator } from "@longctx/graph";
import type { CaseGenerator, ConfCase } from "./cases.ts";
import { maxAbs, relL2, values } from "./metrics.ts";

/** Thresholds as `dense.cacheAttn`'s (the same arithmetic): ref64 1e-5, backend vs CPU o 1e-5, lse 1e-4. */
const TOL = { ref64: { o: 1e-5, lse: 1e-5 }, f32: { o: 1e-5, lse: 1e-4 } } as const;

/** Float64 attention of `q [H, seq, D]` (global positions pos …) over a block's valid rows (global start …). */
const partial64 = (
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  c: { H: number; KH: number; D: number; seq: number; cap: number; pos: number; start: number; len: number },
  scale: number,
) => {
  const { H, KH, D, seq, cap, pos, start, len } = c;
  const o = new Float64Array(H * seq * D), lse = new Float64Array(H * seq);
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / (H / KH));
    for (let i = 0; i < seq; i++) {
      const n = Math.max(0, Math.min(len, pos + i + 1 - start));
      const s = Array.from({ length: n }, (_, r) => {
        let d = 0;
        for (let x = 0; x < D; x++) d += q[(h * seq + i) * D + x] * k[(g * cap + r) * D + x];
        return d * scale;
      });
      if (n === 0) {
        lse[h * seq + i] = -Infinity;
        continue;
      }
      const m = Math.max(...s);
      let l = 0;
      for (let r = 0; r < n; r++) {
        const e = Math.exp(s[r] - m);
        l += e;
        for (let x = 0; x < D; x++) o[(h * seq + i) * D + x] += e * v[(g * cap + r) * D + x];
      }
      for (let x = 0; x < D; x++) o[(h * seq + i) * D + x] /= l;
      lse[h * seq + i] = m + Math.log(l);
    }
  }
  return { o, lse };
};

const GRID = [
  { H: 4, KH: 2, D: 64, seq: 1, cap: 70, pos: 300, start: 100, len: 70, splitKeys: 64 },
  { H: 9, KH: 3, D: 64, seq: 1, cap: 301, pos: 250, start: 0, len: 251, splitKeys: 64 },
  { H: 8, KH: 1, D: 128, seq: 17, cap: 100, pos: 40, start: 30, len: 77, splitKeys: 256 },
  { H: 3, KH: 3, D: 64, seq: 5, cap: 33, pos: 10, start: 20, len: 30, splitKeys: 256 },
  { H: 8, KH: 2, D: 64, seq: 33, cap: 129, pos: 64, start: 64, len: 120, splitKeys: 64 },
  { H: 4, KH: 1, D: 64, seq: 7, cap: 17, pos: 1000, start: 5, len: 0, splitKeys: 256 },
] as const;

const desc = (op: AnyOperator, port: string, shape: readonly number[]) => ({ ...op.inputs[port], shape });

/** `distattn.partialAttn` cases (see the module doc). */
export const partialAttnCases: CaseGenerator = (op) =>
  GRID.map((c, n): ConfCase => {
    const { H, KH, D, seq, cap } = c;
    const shapes = { q: [H, seq, D], kBlock: [KH, cap, D], vBlock: [KH, cap, D] };
    const descs = Object.fromEntries(Object.entries(shapes).map(([k, s]) => [k, desc(op, k, s)]));
    const seen = Math.max(0, Math.min(c.len, c.pos + seq - c.start));
    return {
      shape:
        `H${H}/${KH} S${seq} cap${cap} pos${c.pos} start${c.start} len${c.len} D${D} split${c.splitKeys}`,
      dtype: "f32",
      qk: false,
      params: { splitKeys: c.splitKeys },
      scalars: { pos: c.pos, start: c.start, len: c.len },
      descs,
      build: () => {
        const seed = 9001 + 13 * n;
        const q = seededNormals(H * seq * D, seed).map((x) => 1.2 * x + 0.3);
        const k = seededNormals(KH * cap * D, seed + 1), v = seededNormals(KH * cap * D, seed + 2);
        const junk = seededNormals(KH * cap * D, seed + 3);
        for (let g = 0; g < KH; g++) {
          for (let r = c.len; r < cap; r++) {
            for (let x = 0; x < D; x++) {
              const e = (g * cap + r) * D + x;
              k[e] = 1e3 * junk[e];
              v[e] = 1e4 * (1 + Math.abs(junk[e]));
            }
          }
        }
        const data: Record<string, Float32Array> = { q, kBlock: k, vBlock: v };
        const inputs = Object.fromEntries(
          Object.entries(descs).map(([p, d]) => [p, hostTensor("f32", d.dims, d.shape, data[p].slice())]),
        );
        const want = partial64(q, k, v, c, 1 / Math.sqrt(D));
        return {
          inputs,
          note: seen === 0 ? "no key seen" : `${seen} keys seen, ${cap - c.len} junk rows`,
          ref64: (cpu) => [
            relL2("o", values(cpu.o), want.o, TOL.ref64.o),
            maxAbs("lse", values(cpu.lse), want.lse, TOL.ref64.lse),
          ],
          compare: (got, cpu) => [
            relL2("o", values(got.o), values(cpu.o), TOL.f32.o),
            maxAbs("lse", values(got.lse), values(cpu.lse), TOL.f32.lse),
          ],
        };
      },
    };
  });

/** `distattn.merge` cases (see the module doc). */
export const mergeCases: CaseGenerator = (op) =>
  [[1, 4, 1, 64], [3, 9, 1, 64], [7, 8, 17, 128], [64, 4, 3, 64], [5, 3, 5, 12]].map(
    ([parts, H, seq, D], n): ConfCase => {
      const shapes = { o: [parts, H, seq, D], lse: [parts, H, seq] };
      const descs = Object.fromEntries(Object.entries(shapes).map(([k, s]) => [k, desc(op, k, s)]));
      return {
        shape: `P${parts} H${H} S${seq} D${D}`,
        dtype: "f32",
        qk: false,
        params: {},
        descs,
        build: () => {
          const o = seededNormals(parts * H * seq * D, 7100 + n);
          const lse = seededNormals(parts * H * seq, 7200 + n).map((x) => 20 * x);
          // every third (part, row) empty, and row 0 empty in every part (when there are 2+ rows)
          for (let e = 0; e < lse.length; e += 3) lse[e] = -Infinity;
          if (H * seq > 1) { for (let b = 0; b < parts; b++) lse[b * H * seq] = b % 2 ? -3e38 : -Infinity; }
          const rows = H * seq;
          const wo = new Float64Array(rows * D), wl = new Float64Array(rows);
          for (let r = 0; r < rows; r++) {
            const ls = Array.from({ length: parts }, (_, b) => lse[b * rows + r]).filter((x) => x > -1e38);
            if (ls.length === 0) {
              wl[r] = -Infinity;
              continue;
            }
            const m = Math.max(...ls);
            let l = 0;
            for (let b = 0; b < parts; b++) {
              const x = lse[b * rows + r];
              if (!(x > -1e38)) continue;
              const w = Math.exp(x - m);
              l += w;
              for (let y = 0; y < D; y++) wo[r * D + y] += w * o[(b * rows + r) * D + y];
            }
            for (let y = 0; y < D; y++) wo[r * D + y] /= l;
            wl[r] = m + Math.log(l);
          }
          const data: Record<string, Float32Array> = { o, lse };
          const inputs = Object.fromEntries(
            Object.entries(descs).map(([p, d]) => [p, hostTensor("f32", d.dims, d.shape, data[p].slice())]),
          );
          return {
            inputs,
            ref64: (cpu) => [
              relL2("o", values(cpu.o), wo, 1e-6),
              maxAbs("lse", values(cpu.lse), wl, 1e-5),
            ],
            compare: (got, cpu) => [
              relL2("o", values(got.o), values(cpu.o), 1e-6),
              maxAbs("lse", values(got.lse), values(cpu.lse), 1e-5),
            ],
          };
        },
      };
    },
  );
