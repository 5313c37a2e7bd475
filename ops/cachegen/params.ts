/**
 * CacheGen parameters: the layer-wise bin counts of the quantiser, the stream slice and the probability
 * precision of the arithmetic coder.
 *
 * Defaults follow the official code (UChi-JCL/CacheGen and LMCache, `lmcache/storage_backend/serde/
 * cachegen_basics.py`, `CacheGenConfig` of the 7B/8B family; `CACHEGEN_GPU_MAX_TOKENS_PER_CHUNK`; the
 * `PRECISION` of `third_party/torchac_cuda/torchac_kernel_enc_new.cu`):
 *
 * - keys: layers `[0, 10)` 32 bins, `[10, 20)` 16 bins, `[20, L)` 16 bins; values: layers `[0, 2)` 32 bins, the
 *   rest 16 — the **official layer indices**, not fractions of the layer count (the official 70B config is not
 *   the 7B one scaled either), so SmolLM2's 30 layers get keys 32/16/16 on `[0,10)/[10,20)/[20,30)`;
 * - quantisation levels 1–3: the CacheGen repository's `QUANT_LEVEL` tables (which it applies to Mistral-7B
 *   only): level 1 keys 16/16/12, values 16/12; level 2 keys 32/16/16, values 32/16 (= the 7B/8B config, the
 *   default); level 3 keys 32/32/32, values 32/32. We apply them to every model;
 * - an independent coded stream per (layer, channel) and slice of at most 256 tokens;
 * - a 16-bit CDF precision.
 *
 * Reference: CacheGen (SIGCOMM 2024, arXiv 2310.07240); see ops/cachegen/README.md for the deviations.
 * @module
 */
import { Schema } from "effect";
import { decodeParamsSync, intParam, ParamsError } from "@longctx/graph";

/** The schema of {@link CacheGenParams}: every field optional on input, the default filled in on decode. */
export type CacheGenParamsSchema = Schema.Struct<{
  readonly level: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly keyFirstLayers: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly keySecondLayers: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly valueFirstLayers: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly slice: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly precision: Schema.withDecodingDefaultKey<Schema.Int>;
}>;

/** Parameters of the CacheGen codec. */
export const CacheGenParams: CacheGenParamsSchema = Schema.Struct({
  /**
   * Quantisation level 1, 2 or 3 (the bin tables of {@link LEVEL_BINS}; higher keeps more bins, more bytes).
   * Official default 2 (the 7B/8B `CacheGenConfig`).
   */
  level: intParam(1, 3, 2),
  /** Keys: layers `[0, keyFirstLayers)` use the level's first key bin count (official 10). */
  keyFirstLayers: intParam(0, 1 << 16, 10),
  /** Keys: layers `[keyFirstLayers, keySecondLayers)` use the second, the rest the third (official 20). */
  keySecondLayers: intParam(0, 1 << 16, 20),
  /** Values: layers `[0, valueFirstLayers)` use the level's first value bin count, the rest the second (official 2). */
  valueFirstLayers: intParam(0, 1 << 16, 2),
  /**
   * Tokens per coded stream: each (layer, channel) is coded as independent streams of at most `slice` tokens
   * (official 256, `CACHEGEN_GPU_MAX_TOKENS_PER_CHUNK`: the GPU coder's per-thread buffer).
   */
  slice: intParam(1, 4096, 256),
  /** Bits of the integer CDF (official 16; the coder's span is 32 bits). */
  precision: intParam(12, 16, 16),
});
/** Decoded CacheGen parameters. */
export type CacheGenParams = typeof CacheGenParams.Type;

/**
 * Bin counts per quantisation level: `key` for the three key layer groups, `value` for the two value groups
 * (the CacheGen repository's `QUANT_LEVEL` tables; level 2 is the 7B/8B `CacheGenConfig`).
 */
export const LEVEL_BINS: Readonly<
  Record<
    1 | 2 | 3,
    { readonly key: readonly [number, number, number]; readonly value: readonly [number, number] }
  >
> = {
  1: { key: [16, 16, 12], value: [16, 12] },
  2: { key: [32, 16, 16], value: [32, 16] },
  3: { key: [32, 32, 32], value: [32, 32] },
};

/**
 * CacheGen parameters from a partial object, defaults filled. Throws a `ParamsError` naming the parameter for
 * an impossible value, an unknown key, or `keySecondLayers < keyFirstLayers`.
 */
export const cachegenParams = (p: Partial<CacheGenParams> = {}): CacheGenParams => {
  const d = decodeParamsSync("cachegen", CacheGenParams, p);
  if (d.keySecondLayers < d.keyFirstLayers) {
    throw new ParamsError({
      operator: "cachegen",
      param: "keySecondLayers",
      message: `cachegen: parameter "keySecondLayers" (${d.keySecondLayers}) is below keyFirstLayers ` +
        `(${d.keyFirstLayers})`,
      hint: "keySecondLayers is the end of the second key layer group: at least keyFirstLayers",
    });
  }
  return d;
};

/** The bin count of every layer's keys and values. */
export interface LayerBins {
  /** Bins of layer `l`'s keys, `[layers]`. */
  readonly key: readonly number[];
  /** Bins of layer `l`'s values, `[layers]`. */
  readonly value: readonly number[];
}

/**
 * The bins of each of `layers` layers for keys and values (official `make_key_bins` / `make_value_bins`):
 * keys by `keyFirstLayers` / `keySecondLayers`, values by `valueFirstLayers`, with the level's counts.
 */
export const layerBins = (
  p: Pick<CacheGenParams, "level" | "keyFirstLayers" | "keySecondLayers" | "valueFirstLayers">,
  layers: number,
): LayerBins => {
  const t = LEVEL_BINS[p.level as 1 | 2 | 3];
  const key: number[] = [], value: number[] = [];
  for (let l = 0; l < layers; l++) {
    key.push(l < p.keyFirstLayers ? t.key[0] : l < p.keySecondLayers ? t.key[1] : t.key[2]);
    value.push(l < p.valueFirstLayers ? t.value[0] : t.value[1]);
  }
  return { key, value };
};

/** The quantiser's `MAX` for `bins` bins: `bins / 2 − 1` (symbols `0 … 2·MAX`, `2·MAX + 1` levels). */
export const maxOf = (bins: number): number => Math.floor(bins / 2) - 1;
