/**
 * Timing of lowered programs for the device benchmarks: GPU time from timestamp queries (per launch, summed)
 * when the backend has them and the figure is plausible (positive, not above the wall time), else wall clock.
 * @module
 */
import { Effect } from "effect";
import type { Backend, Program } from "@longctx/graph";

/** One timed run: milliseconds (GPU or wall), and per-node timings when asked. */
export interface TimedRun {
  readonly ms: number;
  readonly nodes: readonly { readonly op: string; readonly ms: number; readonly gpuMs?: number }[];
}

/** A runner of programs on `backend` that counts how many runs were timed by timestamps and by wall clock. */
export interface GpuRunner {
  /** Run `prog` once (with per-node timings when `perNode`). */
  run(prog: Program, perNode?: boolean): Promise<TimedRun>;
  /** `N runs timed by GPU timestamps, M by wall clock`. */
  summary(): string;
}

/** Make a {@link GpuRunner} for `backend`. */
export const gpuRunner = (backend: Backend): GpuRunner => {
  const timed = backend.features.has("timestamp-query");
  let ts = 0, wall = 0;
  return {
    run: async (prog, perNode = false) => {
      const t = performance.now();
      const r = await Effect.runPromise(prog.run({ timed, perNode }));
      const w = performance.now() - t;
      const ok = r.gpuMs !== undefined && r.gpuMs > 0 && r.gpuMs <= w * 1.05 + 1;
      if (ok) ts++;
      else wall++;
      return { ms: ok ? r.gpuMs! : w, nodes: r.nodes ?? [] };
    },
    summary: () => `${ts} runs timed by GPU timestamps, ${wall} by wall clock`,
  };
};

/** The median of `x` (the upper one for an even length). */
export const median = (x: readonly number[]): number =>
  [...x].sort((a, b) => a - b)[Math.floor(x.length / 2)];
