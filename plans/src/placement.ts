/**
 * DistAttention block placement (Infinite-LLM, arXiv 2401.02669: the KV cache of one sequence spread over the
 * memory of several instances; its gManager's placement is not public, so this is a plain rule): given the
 * devices' memories and their links to the coordinator, split the sequence's KV into one contiguous block per
 * device so that the decode step's slowest partial attention is as short as possible, within each device's
 * free memory, and predict the per-token time from the device profile's latency fit of the split-KV decode
 * kernels.
 *
 * Model of one decode step: per layer, every device holding `n_i > 0` tokens computes
 * `distattn.partialAttn` over its block (predicted `a + b·flops(n_i) + c·bytes(n_i)` from the fit, the
 * operator's own cost model) while the query goes out and `(o, lse)` come back over its link (`latency +
 * bytes / bandwidth`; 0 for the coordinator's own device); the layer waits for the slowest, then merges
 * (host work of `parts · heads · (headDim + 1)` values, not modelled). The step is `layers ×` that. The
 * placement minimises the slowest device by water-filling: the largest time τ at which every device's block
 * is `min(capacity_i, tokens it can attend in τ)`, searched by bisection. Not modelled: the rest of the
 * forward (projections, MLP), which runs on the coordinator and is the same with or without sharding.
 * @module
 */
import { Effect } from "effect";
import { distattn } from "@longctx/ops";
import { PlanError } from "./errors.ts";
import { kvCacheBytes, type ModelSpec, parameterCount } from "./models.ts";
import { fitKey, type LoadedProfile, predictMs } from "./profile.ts";

/** One device that may hold a block. */
export interface PlacementDevice {
  /** A name for the report (`gpu0`, `host`). */
  readonly name: string;
  /** Its memory in bytes. */
  readonly memoryBytes: number;
  /** Bytes not available to the KV (weights, activations, workspace); default 0. */
  readonly reservedBytes?: number;
  /** Link to the coordinator in bytes/s; `Infinity` for the coordinator's own device. */
  readonly linkBytesPerS: number;
  /** One-way latency of a message on that link in seconds (default 0). */
  readonly linkLatencyS?: number;
}

/** What to place. */
export interface PlacementRequest {
  /** The model (its layers, heads, KV heads, head dim). */
  readonly model: ModelSpec;
  /** Tokens of the sequence's KV cache. */
  readonly tokens: number;
  /** The devices, in block order (the first is the coordinator's when its link is `Infinity`). */
  readonly devices: readonly PlacementDevice[];
  /** The device profile whose decode fit predicts the partial attentions (all devices alike). */
  readonly profile: LoadedProfile;
  /**
   * The operator whose decode fit is used. Default `dense.attn`: its decode lowering is the same split-KV
   * kernels (`splitKvLowering`) as `distattn.partialAttn`, its cost model counts the same FLOPs and bytes at
   * one query, and its samples are full caches of 32K–128K tokens (`dense.cacheAttn`'s decode samples are
   * TokenSelect's compacted lists of ≤ 2K rows: at long blocks they extrapolate 50×).
   */
  readonly fitOperator?: string;
  /** Bytes per KV element (default 4: the f32 caches of this repo). */
  readonly kvBytesPerElement?: number;
}

/** One device's block. */
export interface PlacedBlock {
  /** The device's name. */
  readonly device: string;
  /** Global position of the block's first token. */
  readonly start: number;
  /** Tokens in the block (0: the device holds nothing). */
  readonly tokens: number;
  /** The block's KV bytes (all layers). */
  readonly kvBytes: number;
  /** The device's free bytes for KV. */
  readonly freeBytes: number;
  /** Predicted partial attention of one layer, ms. */
  readonly attnMs: number;
  /** Predicted link time of one layer (query out, o and lse back), ms. */
  readonly linkMs: number;
}

/** A placement and its predicted decode step. */
export interface Placement {
  /** One block per device, in order (tiling `[0, tokens)`). */
  readonly blocks: readonly PlacedBlock[];
  /** Predicted attention time of one decode step (all layers), ms. */
  readonly stepMs: number;
  /** Bytes crossing links per decode step (all layers): queries out plus `(o, lse)` back. */
  readonly transferBytesPerStep: number;
  /** Total KV bytes. */
  readonly kvBytes: number;
  /** Whether a block is larger than the fit's largest sample (the prediction extrapolates). */
  readonly extrapolated: boolean;
}

const GiB = 2 ** 30;
const gb = (x: number) => `${(x / GiB).toFixed(2)} GiB`;

/** The per-layer cost of a block of `n` tokens: the operator's cost model for one decode query. */
const blockCost = (m: ModelSpec, n: number) =>
  distattn.partialAttn.cost(distattn.partialAttnParams(), {
    q: { ...distattn.partialAttn.inputs.q, shape: [m.heads, 1, m.headDim] },
    kBlock: { ...distattn.partialAttn.inputs.kBlock, shape: [m.kvHeads, Math.max(1, n), m.headDim] },
    vBlock: { ...distattn.partialAttn.inputs.vBlock, shape: [m.kvHeads, Math.max(1, n), m.headDim] },
  });

/**
 * Bytes a model's weights take at `bytesPerWeight` (f16: 2): what a device that also runs the model reserves.
 */
export const weightBytes = (m: ModelSpec, bytesPerWeight = 2): number => parameterCount(m) * bytesPerWeight;

/**
 * Place the KV blocks (see the module doc). Fails with `PlanError`: `bad-request` (no device, a non-positive
 * memory or bandwidth, tokens < 1), `not-profiled` (the profile has no decode fit of the operator), and
 * `unsatisfiable-budget` when the devices' free memory cannot hold the KV — its message gives the KV bytes,
 * every device's free bytes and the longest context that fits.
 */
export const placeBlocks = (r: PlacementRequest): Effect.Effect<Placement, PlanError> =>
  Effect.gen(function* () {
    const m = r.model, eb = r.kvBytesPerElement ?? 4;
    const bad = (message: string, hint: string) => new PlanError({ reason: "bad-request", message, hint });
    if (r.devices.length === 0) {
      return yield* bad("no devices to place the KV on", "list at least one device");
    }
    if (!Number.isInteger(r.tokens) || r.tokens < 1) {
      return yield* bad(`tokens = ${r.tokens}`, "place a cache of at least one token");
    }
    for (const d of r.devices) {
      if (!(d.memoryBytes > 0) || !(d.linkBytesPerS > 0) || (d.reservedBytes ?? 0) < 0) {
        return yield* bad(
          `device ${d.name}: memory ${d.memoryBytes} B, reserved ${
            d.reservedBytes ?? 0
          } B, link ${d.linkBytesPerS} B/s`,
          "give positive memory and link bandwidth, and reserved bytes ≥ 0",
        );
      }
    }
    const op = r.fitOperator ?? "dense.attn";
    const key = fitKey(op, "decode");
    const fit = r.profile.fits.get(key);
    if (!fit) {
      return yield* new PlanError({
        reason: "not-profiled",
        message: `profile "${r.profile.profile.name}" has no decode fit of ${op}`,
        hint: `run calibrate --phase decode --ops ${op} on that device, or pick another fitOperator`,
      });
    }
    const perToken = kvCacheBytes(m, 1, eb);
    const free = r.devices.map((d) => Math.max(0, d.memoryBytes - (d.reservedBytes ?? 0)));
    const cap = free.map((f) => Math.floor(f / perToken));
    const fits = cap.reduce((a, b) => a + b, 0);
    if (fits < r.tokens) {
      return yield* new PlanError({
        reason: "unsatisfiable-budget",
        message:
          `a KV cache of ${r.tokens} tokens (${m.id}, ${
            gb(kvCacheBytes(m, r.tokens, eb))
          } at ${eb} B/element) ` +
          `does not fit: free ${r.devices.map((d, i) => `${d.name} ${gb(free[i])}`).join(", ")} ` +
          `(total ${gb(free.reduce((a, b) => a + b, 0))}) hold ${fits} tokens`,
        hint: `add devices or memory, or serve at most ${fits} tokens`,
      });
    }
    const layerMs = (n: number) => {
      const c = blockCost(m, n);
      return predictMs(fit, c.flops, c.bytesRead + c.bytesWritten);
    };
    const msgBytes = 4 * m.heads * m.headDim + 4 * m.heads * (m.headDim + 1);
    const link = r.devices.map((d) =>
      d.linkBytesPerS === Infinity ? 0 : 1000 * (2 * (d.linkLatencyS ?? 0) + msgBytes / d.linkBytesPerS)
    );
    // tokens device i can attend within τ ms (the fit is affine in n at one query: bisect per device)
    const within = (i: number, tau: number): number => {
      if (layerMs(1) + link[i] > tau) return 0;
      let lo = 1, hi = cap[i];
      if (layerMs(hi) + link[i] <= tau) return hi;
      while (hi - lo > 1) {
        const mid = Math.floor((lo + hi) / 2);
        if (layerMs(mid) + link[i] <= tau) lo = mid;
        else hi = mid;
      }
      return lo;
    };
    let lo = 0, hi = Math.max(...r.devices.map((_, i) => layerMs(cap[i]) + link[i]));
    for (let it = 0; it < 100 && hi - lo > 1e-9 * hi; it++) {
      const tau = (lo + hi) / 2;
      const got = r.devices.reduce((a, _, i) => a + within(i, tau), 0);
      if (got >= r.tokens) hi = tau;
      else lo = tau;
    }
    const n = r.devices.map((_, i) => within(i, hi));
    // trim the surplus from the last blocks (every block stays within τ)
    let surplus = n.reduce((a, b) => a + b, 0) - r.tokens;
    for (let i = n.length - 1; i >= 0 && surplus > 0; i--) {
      const cut = Math.min(surplus, n[i]);
      n[i] -= cut;
      surplus -= cut;
    }
    let start = 0;
    const blocks = r.devices.map((d, i): PlacedBlock => {
      const b = {
        device: d.name,
        start,
        tokens: n[i],
        kvBytes: kvCacheBytes(m, n[i], eb),
        freeBytes: free[i],
        attnMs: n[i] > 0 ? layerMs(n[i]) : 0,
        linkMs: n[i] > 0 ? link[i] : 0,
      };
      start += n[i];
      return b;
    });
    const holders = blocks.filter((b) => b.tokens > 0);
    const remote = holders.filter((b) => b.linkMs > 0).length;
    const maxFlops = r.profile.maxFlops.get(key) ?? 0;
    return {
      blocks,
      stepMs: m.layers * Math.max(...holders.map((b) => b.attnMs + b.linkMs)),
      transferBytesPerStep: m.layers * remote * msgBytes,
      kvBytes: kvCacheBytes(m, r.tokens, eb),
      extrapolated: holders.some((b) => blockCost(m, b.tokens).flops > maxFlops),
    };
  });
