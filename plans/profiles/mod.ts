/**
 * Built-in device profiles and density tables: JSON files in this folder, written by `calibrate`
 * (`runtime/src/cli/calibrate.ts`) and by `plans/bench/densities_from_results.ts`, imported as JSON
 * modules so the planner loads them in Deno, Bun, Node and browsers alike.
 *
 * Only measured files belong here (each records its command, date and commit). To add one: write
 * `<name>.json` with calibrate, then add one import line and one entry below.
 * - `lavapipe`: wgpu on llvmpipe (Mesa 22.3.6, LLVM 15), the 2-core CPU machine, SmolLM2-135M heads,
 *   256–2048 tokens, measured while other jobs shared the machine (its fit errors say how noisy).
 * - `cpu`: the cpu backend (TypeScript reference kernels, 1 thread) on the same machine, 128–512 tokens.
 * - `density-smollm2-135m`: SALE densities per layer measured on SmolLM2-135M with a real document (2K, 8K),
 *   and Squeezed Attention's KV budget per threshold percentile (two documents, ≈ 7K tokens; flat lookup).
 * - `h200`: wgpu-native on an NVIDIA H200 (driver 580.159.04), f16 Q/K/V, Llama-3.1-8B heads measured with 8 query /
 *   2 KV heads (GQA ratio kept; the cost model scales with heads), 8K–128K tokens, SALE at τ 0, 0.1, 0.3, 1;
 *   and decode (`calibrate --phase decode`, f32, all 32 / 8 heads, 32K–128K): dense.attn, squeezed.lookup and
 *   squeezed.attend on the speed index at percentiles 0.5–0.9 (benchmarks/device/NOTES.md run 24);
 *   tokenselect.select, tokenselect.compact and dense.cacheAttn at topK 256–2048 (run 26).
 * @module
 */
import cpu from "./cpu.json" with { type: "json" };
import lavapipe from "./lavapipe.json" with { type: "json" };
import h200 from "./h200.json" with { type: "json" };
import densitySmollm2 from "./density-smollm2-135m.json" with { type: "json" };

/** Built-in device profiles (raw JSON, decoded by `builtinProfile`), by name. */
export const BUILTIN_PROFILES: Readonly<Record<string, unknown>> = { cpu, lavapipe, h200 };

/** Built-in density tables (raw JSON, decoded by `builtinDensities`). */
export const BUILTIN_DENSITIES: readonly unknown[] = [densitySmollm2];
