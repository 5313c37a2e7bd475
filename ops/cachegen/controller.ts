/**
 * CacheGen's loading controller: per chunk of a context, send its KV at a compression level or send its text
 * and recompute it, from the link's bandwidth and a time budget. As the official adaptation does
 * (UChi-JCL/CacheGen `run_adaptation.py`, `src/utils.py` `config_selection`; facts in
 * `shared/research/TECHNIQUES.md` §5): the budget is split evenly over the chunks (`slo / chunks`); a chunk
 * takes the highest level whose transfer time fits its share, and text with a fixed recompute delay when none
 * does. Official defaults: SLO 2 s, 1000-token chunks, recompute 0.2 s. With a measured recompute time that
 * official fallback can pick text although it takes far longer than sending the lowest level (SmolLM2 on the
 * CPU: 4.2 s per 256-token chunk recomputed against 0.09 s to send it at level 1 over 0.1 Gbit/s):
 * `fallback: "fastest"` then takes the fastest of text and every level instead (our deviation, off by default).
 * @module
 */
import { CacheGenError } from "./container.ts";

/** One way to send a chunk's KV: a level and the bytes its container takes. */
export interface ChunkLevel {
  /** CacheGen level (higher: more bytes, less error). */
  readonly level: number;
  /** Bytes of the chunk's container at that level. */
  readonly bytes: number;
}

/** What the controller sends for one chunk. */
export type ChunkChoice =
  | {
    /** The KV at `level`. */
    readonly kind: "kv";
    /** The level chosen. */
    readonly level: number;
    /** Its container's bytes. */
    readonly bytes: number;
    /** Time to send them at the chunk's bandwidth, ms. */
    readonly ms: number;
  }
  | {
    /** The text: the chunk is recomputed (prefilled) at the receiver. */
    readonly kind: "text";
    /** The recompute delay charged, ms. */
    readonly ms: number;
  };

/** Options of {@link chooseChunkLevels}. */
export interface ControllerOptions {
  /** The time budget for loading the whole context, ms (official 2000). */
  readonly sloMs: number;
  /** The link's bandwidth, Gbit/s: one figure, or one per chunk (a bandwidth trace). */
  readonly gbps: number | readonly number[];
  /** The delay charged for a chunk sent as text and recomputed, ms (official 200). */
  readonly recomputeMs?: number;
  /**
   * A chunk that no level fits: `"text"` (official: recompute it) or `"fastest"` (the fastest of the text and
   * every level). Default `"text"`.
   */
  readonly fallback?: "text" | "fastest";
}

/** The controller's plan for a context. */
export interface ControllerPlan {
  /** Per chunk, what is sent. */
  readonly choices: readonly ChunkChoice[];
  /** The sum of the chunks' times, ms (transfers and recomputes one after another). */
  readonly totalMs: number;
  /** Bytes sent (KV chunks only). */
  readonly bytes: number;
}

const bad = (message: string, hint: string) => new CacheGenError({ reason: "bad-input", message, hint });

/**
 * Choose, per chunk, the highest level whose transfer at that chunk's bandwidth takes less than `sloMs /
 * chunks`, else text, or with `fallback: "fastest"` the fastest option (see the module doc). `levels[c]` lists chunk `c`'s options (any order). Throws
 * `CacheGenError` `bad-input` for no chunks, a chunk without options, a non-positive or non-finite byte count,
 * bandwidth, budget or recompute delay, or a trace whose length is not the chunk count.
 */
export const chooseChunkLevels = (
  levels: readonly (readonly ChunkLevel[])[],
  o: ControllerOptions,
): ControllerPlan => {
  const n = levels.length, recompute = o.recomputeMs ?? 200;
  if (n === 0) throw bad("no chunks to plan", "pass one list of level options per chunk of the context");
  if (!(o.sloMs > 0) || !Number.isFinite(o.sloMs)) {
    throw bad(`sloMs ${o.sloMs}`, "the time budget is a positive number of milliseconds");
  }
  if (!(recompute >= 0) || !Number.isFinite(recompute)) {
    throw bad(`recomputeMs ${recompute}`, "the recompute delay is a non-negative number of milliseconds");
  }
  const trace = typeof o.gbps === "number" ? Array.from({ length: n }, () => o.gbps as number) : o.gbps;
  if (trace.length !== n) {
    throw bad(`a bandwidth trace of ${trace.length} entries for ${n} chunks`, "give one bandwidth per chunk");
  }
  const share = o.sloMs / n;
  const choices: ChunkChoice[] = [];
  let totalMs = 0, bytes = 0;
  for (let c = 0; c < n; c++) {
    const gbps = trace[c];
    if (!(gbps > 0) || !Number.isFinite(gbps)) {
      throw bad(`bandwidth ${gbps} Gbit/s for chunk ${c}`, "bandwidths are positive Gbit/s");
    }
    if (levels[c].length === 0) {
      throw bad(`chunk ${c} has no level to send`, "list at least one level per chunk");
    }
    let best: ChunkChoice | undefined;
    for (const x of levels[c]) {
      if (!(x.bytes > 0) || !Number.isFinite(x.bytes)) {
        throw bad(`chunk ${c} level ${x.level}: ${x.bytes} bytes`, "byte counts are positive");
      }
      // Gbit/s = 1e6 bits per ms
      const ms = (x.bytes * 8) / (gbps * 1e6);
      if (ms < share && (best === undefined || (best.kind === "kv" && x.level > best.level))) {
        best = { kind: "kv", level: x.level, bytes: x.bytes, ms };
      }
    }
    let choice: ChunkChoice = best ?? { kind: "text", ms: recompute };
    if (best === undefined && o.fallback === "fastest") {
      for (const x of levels[c]) {
        const ms = (x.bytes * 8) / (gbps * 1e6);
        if (ms < choice.ms) choice = { kind: "kv", level: x.level, bytes: x.bytes, ms };
      }
    }
    choices.push(choice);
    totalMs += choice.ms;
    if (choice.kind === "kv") bytes += choice.bytes;
  }
  return { choices, totalMs, bytes };
};
