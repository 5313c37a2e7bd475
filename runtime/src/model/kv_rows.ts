/**
 * The rows of a KV cache as host arrays: read a prefix of every layer's K and V back from the device, and
 * write host K/V into a new cache — what a saved context (Squeezed Attention's prefix index, a CacheGen
 * container) needs to skip its prefill.
 * @module
 */
import { Effect } from "effect";
import { type Backend, type LongctxError, ShapeError } from "@longctx/graph";
import type { KvState } from "./llama_graph.ts";

/** Per layer, the first `tokens` rows of K and V, `f32 [kvHeads, tokens, headDim]` each. */
export interface KvRows {
  /** Keys (after RoPE), per layer. */
  readonly k: readonly Float32Array[];
  /** Values, per layer (empty when not read). */
  readonly v: readonly Float32Array[];
}

/** The first `tokens` rows of each head of a cache buffer's bytes `[kvHeads, capacity, headDim]`. */
const prefixRows = (
  bytes: Uint8Array,
  kvHeads: number,
  capacity: number,
  headDim: number,
  tokens: number,
): Float32Array => {
  const buf = new Float32Array(bytes.slice().buffer), out = new Float32Array(kvHeads * tokens * headDim);
  for (let h = 0; h < kvHeads; h++) {
    out.set(buf.subarray(h * capacity * headDim, (h * capacity + tokens) * headDim), h * tokens * headDim);
  }
  return out;
};

/**
 * Read rows `0 … tokens − 1` of every layer's K (and V unless `values` is false) from `cache` on `backend`.
 * Fails with the backend's error, or a `ShapeError` when `tokens` exceeds the cache's valid rows.
 */
export const readCacheRows = (
  backend: Backend,
  cache: KvState,
  dims: { readonly kvHeads: number; readonly headDim: number },
  tokens: number,
  values = true,
): Effect.Effect<KvRows, LongctxError> =>
  Effect.gen(function* () {
    if (!Number.isInteger(tokens) || tokens < 0 || tokens > cache.length) {
      return yield* Effect.fail(
        new ShapeError({
          message: `reading ${tokens} rows of a cache holding ${cache.length}`,
          hint: "read at most the cache's valid rows (its length)",
        }),
      );
    }
    const k: Float32Array[] = [], v: Float32Array[] = [];
    for (let l = 0; l < cache.k.length; l++) {
      k.push(
        prefixRows(yield* backend.download(cache.k[l]), dims.kvHeads, cache.capacity, dims.headDim, tokens),
      );
      if (values) {
        v.push(
          prefixRows(yield* backend.download(cache.v[l]), dims.kvHeads, cache.capacity, dims.headDim, tokens),
        );
      }
    }
    return { k, v };
  });

/**
 * Write `rows` (per layer `f32 [kvHeads, tokens, headDim]` K and V) into rows `pos … pos + tokens − 1` of `cache`
 * (default `pos` 0) and set its length to `pos + tokens`. Fails with a `ShapeError` (nothing written) for a cache
 * too small, or a layer count or row size that differs; with the backend's error.
 */
export const writeCacheRows = (
  backend: Backend,
  cache: KvState,
  dims: { readonly kvHeads: number; readonly headDim: number },
  tokens: number,
  rows: KvRows,
  pos = 0,
): Effect.Effect<void, LongctxError> =>
  Effect.gen(function* () {
    const { kvHeads, headDim: d } = dims, cap = cache.capacity;
    const bad = (message: string) =>
      Effect.fail(
        new ShapeError({ message, hint: "rows are per layer f32 [kvHeads, tokens, headDim] K and V" }),
      );
    if (
      !Number.isInteger(pos) || pos < 0 || pos + tokens > cap || rows.k.length !== cache.k.length ||
      rows.v.length !== cache.v.length
    ) {
      return yield* bad(
        `writing ${tokens} rows of ${rows.k.length} layers at row ${pos} into a cache of ${cap} rows and ` +
          `${cache.k.length} layers`,
      );
    }
    for (let l = 0; l < cache.k.length; l++) {
      for (const src of [rows.k[l], rows.v[l]]) {
        if (src.length !== kvHeads * tokens * d) {
          return yield* bad(`layer ${l}: ${src.length} values, want ${kvHeads * tokens * d}`);
        }
      }
      for (const [src, dst] of [[rows.k[l], cache.k[l]], [rows.v[l], cache.v[l]]] as const) {
        for (let hk = 0; hk < kvHeads; hk++) {
          const at = (hk * cap + pos) * d * 4;
          yield* backend.upload(dst, src.subarray(hk * tokens * d, (hk + 1) * tokens * d), at);
        }
      }
    }
    cache.length = pos + tokens;
  });
