/**
 * SALE parameters and block geometry shared by `sale.quantize`, `sale.estimate`, `sale.select` and
 * `sale.sparseAttn`. Defaults follow the official code (BirdChristopher/SALE): query blocks of 64 rows,
 * key blocks of 32 keys, a 128-token local window, the first key block as the sink, threshold 0.004.
 *
 * Reference: SALE (Ji, Zhang, Fu, Cui 2025, arXiv 2505.24179), §3 (method) — see ops/sale/README.md.
 * @module
 */
import { Effect, Schema } from "effect";
import { decodeParamsSync, intParam } from "@longctx/graph";
import { causalKBlocks } from "../dense/common.ts";

/** A finite number parameter `≥ 0` that defaults to `def`. */
const nonNegative = (def: number): Schema.withDecodingDefaultKey<Schema.Finite> =>
  Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(def)),
  );

/** The schema of {@link SaleParams}: every field optional on input, with the default filled in on decode. */
export type SaleParamsSchema = Schema.Struct<{
  readonly blockQ: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly blockK: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly localWindow: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly sinkBlocks: Schema.withDecodingDefaultKey<Schema.Int>;
  readonly threshold: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly scale: Schema.withDecodingDefaultKey<Schema.Finite>;
  readonly workgroupMemory: Schema.withDecodingDefaultKey<Schema.Int>;
}>;

/**
 * Parameters of the SALE operators (each operator reads the ones it needs). Decoding rejects an impossible
 * value with an issue at that parameter's name (a `blockQ` of 17 is not a multiple of 16).
 */
export const SaleParams: SaleParamsSchema = Schema.Struct({
  /** Query rows per block: 16 to 128, a multiple of 16 (default 64). */
  blockQ: intParam(16, 128, 64, 16),
  /** Keys per block: 8 to 128, a multiple of 8 (default 32). */
  blockK: intParam(8, 128, 32, 8),
  /** Local window in tokens, counted back from the query block's last causal key block (diagonal included). */
  localWindow: intParam(0, 1 << 20, 128),
  /** Sink: the first `sinkBlocks` key blocks are always kept. */
  sinkBlocks: intParam(0, 1 << 16, 1),
  /** Relative Attention Score threshold τ: a block is kept when its score ≥ τ (0 keeps every block). */
  threshold: nonNegative(0.004),
  /** Softmax scale; 0 means 1/sqrt(headDim). */
  scale: nonNegative(0),
  /** The device's `maxComputeWorkgroupStorageSize` (bytes) kernels may use: 8192 to 1 MiB (default 32768). */
  workgroupMemory: intParam(8192, 1 << 20, 32768),
});
/** Decoded SALE parameters. */
export type SaleParams = typeof SaleParams.Type;

/**
 * SALE parameters from a partial object, defaults filled (`saleParams()`: blocks 64×32, window 128, one sink
 * block, τ = 0.004). Throws a `ParamsError` naming the parameter for an impossible value or an unknown key
 * (`sale: parameter "blockQ": Expected a multiple of 16`); graphs decode their parameters with Effect instead.
 */
export const saleParams = (p: Partial<SaleParams> = {}): SaleParams =>
  decodeParamsSync("sale", SaleParams, p);

/** Block geometry for a `seq`-token prefill. */
export interface SaleGeometry {
  /** Query blocks: `ceil(seq / blockQ)`. */
  readonly qBlocks: number;
  /** Key blocks: `ceil(seq / blockK)`. */
  readonly kBlocks: number;
  /** Key blocks of the local window (at least the diagonal blocks of a query block). */
  readonly localBlocks: number;
  /** Causal block pairs: the capacity of BSR `indices` per head and the denominator of density. */
  readonly nnzCap: number;
}

/** Geometry of the SALE block grid. */
export const saleGeometry = (
  seq: number,
  p: Pick<SaleParams, "blockQ" | "blockK" | "localWindow">,
): SaleGeometry => {
  const qBlocks = Math.ceil(seq / p.blockQ);
  const kBlocks = Math.ceil(seq / p.blockK);
  const diagonal = Math.ceil(p.blockQ / p.blockK) + (p.blockQ % p.blockK === 0 ? 0 : 1);
  const localBlocks = Math.max(Math.ceil(p.localWindow / p.blockK), diagonal);
  let nnzCap = 0;
  for (let r = 0; r < qBlocks; r++) nnzCap += causalKBlocks(r, seq, p.blockQ, p.blockK);
  return { qBlocks, kBlocks, localBlocks, nnzCap };
};

/**
 * Whether key block `kb` is forced (sink or local window) for query block `r`: `kb < sinkBlocks` or
 * `kb >= nMax - localBlocks`, where `nMax` is the number of causal key blocks of `r`.
 */
export const isForced = (kb: number, nMax: number, sinkBlocks: number, localBlocks: number): boolean =>
  kb < sinkBlocks || kb >= nMax - localBlocks;

/** Validate block sizes against each other; returns a message or undefined. */
export const blockProblem = (p: SaleParams, headDim: number): string | undefined => {
  if (p.blockQ % 16 !== 0) return `blockQ ${p.blockQ} is not a multiple of 16`;
  if (p.blockK % 8 !== 0) return `blockK ${p.blockK} is not a multiple of 8`;
  if (headDim % 8 !== 0) return `headDim ${headDim} is not a multiple of 8`;
  return undefined;
};
