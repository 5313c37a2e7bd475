/**
 * Timing of lowered programs for the device benchmarks: GPU time from timestamp queries (per launch, summed)
 * when the backend has them and the figure is plausible (positive, not above the wall time), else wall clock.
 * @module
 */
import { Effect } from "effect";
import type { Backend, DeviceBuffer, Launch, Program } from "@longctx/graph";
import { sale } from "@longctx/ops";
import { selectBackend } from "../../runtime/src/backends/select.ts";

/** One timed run: milliseconds (GPU or wall), and per-node timings when asked. */
export interface TimedRun {
  readonly ms: number;
  readonly nodes: readonly {
    readonly op: string;
    readonly ms: number;
    readonly gpuMs?: number;
    readonly launchMs?: readonly number[];
  }[];
}

/** A runner of programs on `backend` that counts how many runs were timed by timestamps and by wall clock. */
export interface GpuRunner {
  /** Run `prog` once (with per-node timings when `perNode`; `scalars`: its runtime scalars, e.g. `pos`). */
  run(prog: Program, perNode?: boolean, scalars?: Readonly<Record<string, number>>): Promise<TimedRun>;
  /** `N runs timed by GPU timestamps, M by wall clock`. */
  summary(): string;
}

/** Make a {@link GpuRunner} for `backend`. */
export const gpuRunner = (backend: Backend): GpuRunner => {
  const timed = backend.features.has("timestamp-query");
  let ts = 0, wall = 0;
  return {
    run: async (prog, perNode = false, scalars) => {
      const t = performance.now();
      const r = await Effect.runPromise(prog.run({ timed, perNode, ...(scalars ? { scalars } : {}) }));
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

/** A result row of the device benchmarks (the fields they share; the rest is free). */
export interface PeerRow {
  readonly metric: string;
  readonly value: number;
  readonly unit: string;
  readonly context?: number;
  readonly impl?: string;
  readonly [k: string]: unknown;
}

/**
 * PyTorch SDPA (flash and cuDNN) in the same job: `benchmarks/device/sdpa_peer.py` for `contexts` with the
 * head layout `heads`/`kvHeads`/`dim` (`decode`: one query row against each context's keys; a number: that many
 * query rows after the context's other keys, unmasked). Returns its rows (`latency_ms`, `decode_latency_ms` or
 * `chunk_latency_ms`, impl `sdpa-flash` / `sdpa-cudnn`), or none when Python, torch or CUDA is missing (the
 * reason is printed, labelled `who`).
 */
export const sdpaPeer = async (
  who: string,
  contexts: readonly number[],
  heads: number,
  kvHeads: number,
  dim: number,
  decode: boolean | number = false,
): Promise<PeerRow[]> => {
  if (contexts.length === 0) return [];
  const out = await Deno.makeTempFile({ suffix: ".json" });
  try {
    const st = await new Deno.Command("python3", {
      args: [
        "benchmarks/device/sdpa_peer.py",
        "--contexts",
        contexts.join(","),
        "--heads",
        `${heads}`,
        "--kv-heads",
        `${kvHeads}`,
        "--dim",
        `${dim}`,
        ...(decode === true ? ["--decode"] : typeof decode === "number" ? ["--queries", `${decode}`] : []),
        "--out",
        out,
      ],
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    if (!st.success) {
      console.error(`${who}: sdpa_peer.py failed`);
      return [];
    }
    return JSON.parse(await Deno.readTextFile(out)) as PeerRow[];
  } catch (e) {
    console.error(`${who}: could not run sdpa_peer.py: ${e}`);
    return [];
  } finally {
    await Deno.remove(out).catch(() => {});
  }
};

/**
 * Fill device buffers with structured synthetic attention inputs (`ops/sale/synthetic.ts`: sinks, locality, heavy
 * hitters), generated on the device: each target is `[which (0 q, 1 k, 2 v), heads, rows, buffer]` of `d`-wide
 * rows of `dtype`, `group` query heads per KV head, seed `seed`.
 */
export const fillSynthetic = async (
  backend: Backend,
  targets: readonly (readonly [0 | 1 | 2, number, number, DeviceBuffer])[],
  d: number,
  group: number,
  dtype: "f16" | "f32",
  seed = 1,
): Promise<void> => {
  const gen: Launch[] = targets.map(([w, n, len, buffer]) => {
    const g = sale.syntheticWgsl(w, n, len, d, group, dtype, seed);
    return {
      kernel: {
        key: g.key,
        wgsl: g.wgsl,
        entryPoint: "main",
        bindings: ["read_write"],
        enables: dtype === "f16" ? ["f16"] : [],
      },
      buffers: [buffer],
      workgroups: g.workgroups,
    };
  });
  await Effect.runPromise(backend.dispatch(gen));
  await Effect.runPromise(backend.sync());
};

/**
 * Write a device benchmark's rows to `file` and, when `$OUT` is set (the device machine), to `$OUT/<name>`;
 * prints `<who>: N rows → file in S s` (`t0`: the bench's start, `performance.now()`).
 */
export const writeDeviceRows = async (
  who: string,
  file: string,
  name: string,
  rows: readonly unknown[],
  t0: number,
): Promise<void> => {
  const text = JSON.stringify(rows, null, 1) + "\n";
  await Deno.mkdir(file.split("/").slice(0, -1).join("/") || ".", { recursive: true });
  await Deno.writeTextFile(file, text);
  const outDir = Deno.env.get("OUT");
  if (outDir) await Deno.writeTextFile(`${outDir}/${name}`, text);
  console.error(`${who}: ${rows.length} rows → ${file} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
};

/**
 * Query heads per KV head of a device bench's `--heads` / `--kv-heads`: prints the one-line error and exits with
 * 1 when `kvHeads` does not divide `heads`.
 */
export const headGroup = (heads: number, kvHeads: number): number => {
  const g = heads / kvHeads;
  if (!Number.isInteger(g)) {
    console.error(
      `error: --kv-heads ${kvHeads} does not divide --heads ${heads} — fix: give a divisor of ${heads}, e.g. 8`,
    );
    Deno.exit(1);
  }
  return g;
};

/** A device bench's backend (`selectBackend` of `choice`), or a line labelled `who` and exit 1 when none opens. */
export const openBenchBackend = async (who: string, choice: string): Promise<Backend> => {
  const sel = await Effect.runPromise(Effect.result(selectBackend({ backend: choice as "webgpu" })));
  if (sel._tag === "Failure") {
    console.error(`${who}: no ${choice} backend: ${sel.failure.message}`);
    Deno.exit(1);
  }
  return sel.success.backend;
};
