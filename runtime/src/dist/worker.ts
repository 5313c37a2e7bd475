/**
 * A DistAttention KV shard worker process: serves one shard over Redis until the coordinator closes it (see
 * `transport.ts`). Started by `spawnShardWorker`, or by hand:
 *
 *   bash scripts/deno.sh run -A runtime/src/dist/worker.ts --url redis://127.0.0.1:6379 --id s1 [--backend wgpu]
 *
 * `--backend host` (default) keeps the block in host memory; `wgpu` on the wgpu device (LONGCTX_WGPU_LIB).
 * @module
 */
import { Effect } from "effect";
import process from "node:process";
import { makeWgpuBackend } from "../backends/wgpu.ts";
import { serveShard } from "./transport.ts";

const arg = (name: string, fallback?: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : fallback;
  if (v === undefined) {
    console.error(`error: --${name} is required — fix: pass --url redis://host:port --id <worker id>`);
    process.exit(2);
  }
  return v;
};

const kind = arg("backend", "host");
const backend = kind === "wgpu" ? await Effect.runPromise(makeWgpuBackend()) : undefined;
const prefix = process.argv.includes("--prefix") ? arg("prefix") : undefined;
await serveShard({ url: arg("url"), id: arg("id"), ...(prefix ? { prefix } : {}) }, backend);
if (backend) await Effect.runPromise(backend.close());
process.exit(0);
