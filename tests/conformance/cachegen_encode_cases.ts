/**
 * Conformance cases of `cachegen.encode` (ops/cachegen/encode_op.ts): structured KV of odd token counts, slices
 * below and at 256, levels 1–3, layer groups so that rows differ in bins. The CPU path against the container
 * path: its sections decoded by `cachegen.decode`'s reference equal `decompressKv(compressKv(…))` bit for bit
 * and lie within the quantiser's bound `a / (2·MAX)` of the input; the stream words past the coded bytes are
 * zero. There is no GPU lowering (GPU backends skip it); a backend's outputs against the CPU's bit for bit.
 * @module
 */
import { Effect } from "effect";
import { hostTensor } from "@longctx/graph";
import { cachegen } from "@longctx/ops";
import { maxScaled, mismatches, values } from "./metrics.ts";
import type { CaseGenerator } from "./cases.ts";

const GRID: readonly (readonly [number, number, number, number, 1 | 2 | 3, number])[] = [
  [2, 2, 64, 300, 2, 256],
  [3, 1, 16, 17, 1, 5],
  [2, 2, 32, 257, 3, 100],
];

/** `cachegen.encode`'s case generator (see the module doc). */
export const cachegenEncodeCases: CaseGenerator = () =>
  GRID.map(([L, H, d, N, level, slice], n) => {
    const dims = { layers: L, kvHeads: H, headDim: d, tokens: N }, rows = 2 * L, slab = H * N * d;
    const params = { level, slice, keyFirstLayers: 1, keySecondLayers: 2, valueFirstLayers: 1 };
    const p = cachegen.cachegenParams(params);
    const { k, v } = cachegen.structuredKv(dims, 3301 + n);
    const kv = new Float32Array(rows * slab);
    [...k, ...v].forEach((x, r) => kv.set(x, r * slab));
    const input = hostTensor("f32", cachegen.encode.inputs.kv.dims, [rows, H, N, d], kv);
    const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);
    return {
      shape: `L${L} H${H} D${d} N${N} level ${level} slice ${slice}`,
      dtype: "f32" as const,
      qk: false,
      params,
      descs: { kv: input.desc },
      build: () => {
        const c = Effect.runSync(cachegen.compressKv(k, v, dims, p));
        const { k: hk, v: hv } = Effect.runSync(cachegen.decompressKv(c));
        const want = new Float32Array(rows * slab);
        [...hk, ...hv].forEach((y, r) => want.set(y, r * slab));
        const bound = cachegen.quantErrorBound(c, 1e-6);
        return {
          inputs: { kv: hostTensor("f32", input.desc.dims, input.desc.shape, kv.slice()) },
          note: `${c.streams.length} stream bytes`,
          ref64: (cpu) => {
            const dec = cachegen.decode.cpu(cachegen.cachegenDecodeParams(params), {
              cdf: cpu.cdf,
              scales: cpu.scales,
              ends: cpu.ends,
              streams: cpu.streams,
            } as never);
            const words = Uint32Array.from(values(cpu.streams)), used = Math.ceil(c.streams.length / 4);
            return [
              mismatches("decoded kv bits vs decompressKv", bits(dec.kv.data as Float32Array), bits(want)),
              maxScaled("decoded kv vs the input within a/(2·MAX)", values(dec.kv), kv, bound, 1),
              mismatches(
                "stream words past the coded bytes",
                words.slice(used),
                new Uint32Array(words.length - used),
              ),
              mismatches("invalid", values(cpu.invalid), new Uint32Array(rows)),
            ];
          },
          compare: (got, cpu) =>
            ["cdf", "scales", "ends", "streams", "invalid"].map((port) =>
              mismatches(port, values(got[port]), values(cpu[port]))
            ),
        };
      },
    };
  });
