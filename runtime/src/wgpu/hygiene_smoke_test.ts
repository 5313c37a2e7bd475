/**
 * Resource hygiene of the wgpu backend (Deno and Bun): 10,000 allocate → upload → dispatch → release
 * cycles (each one a real kernel launch on its own command buffer), then 10,000 allocate/upload/release
 * cycles; process RSS growth after a 2,000-cycle warm-up must stay under RSS_BOUND_MIB, and `live()` must
 * return to zero. Skipped when libwgpu_native is absent.
 *
 * Measured on lavapipe (2 cores, 10,000 + 10,000 cycles): Bun 1.9 s + 0.3 s, RSS +0.6 MiB; Deno 2.0 s +
 * 0.9 s, RSS +4.1 MiB (Deno has no forced GC without --v8-flags=--expose-gc, so its figure is noisier: at
 * 30,000 + 30,000 cycles it read −105 MiB). A second test runs 10,000 dispatches the backend refuses (a binding
 * smaller than its declared type); on 2026-12-01 under Bun: −0.1 MiB at 10,000 and 40,000 (see
 * docs/RELIABILITY.md for the refusals wgpu-native itself raises, which cost native memory per error). Before the backend flushed queued uploads with an empty submit,
 * the upload-only phase grew ~5 KiB per cycle (wgpu keeps `writeBuffer` staging until a submit); this test
 * is what caught it.
 */
import { existsSync } from "node:fs";
import process from "node:process";
import { Effect } from "effect";
import type { Kernel } from "@longctx/graph";
import { assert, runtimeName, test } from "../../../tests/harness.ts";
import { makeWgpuBackend } from "../backends/wgpu.ts";
import { wgpuLibPath } from "../paths.ts";

/**
 * Allowed RSS growth (MiB) over 10,000 dispatch cycles + 10,000 upload cycles, after warm-up: 32 MiB under
 * Bun; 96 MiB under Deno, whose RSS moves with V8/allocator high-water marks even after `gc()` — measured
 * 2026-12-01 on lavapipe with --expose-gc: +37 to +57 MiB at 10,000 cycles but +45 at 20,000 and +61 at
 * 40,000, so growth is not proportional to cycles (no per-cycle leak); Bun: −4 to +4 MiB at 10,000–40,000.
 */
const RSS_BOUND_MIB = runtimeName() === "bun" ? 32 : 96;
const CYCLES = Number(
  (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env
    .LONGCTX_HYGIENE_CYCLES ?? 10_000,
);

const inc: Kernel = {
  key: "test.inc",
  entryPoint: "main",
  bindings: ["read_write"],
  wgsl: `@group(0) @binding(0) var<storage, read_write> v: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < arrayLength(&v)) { v[g.x] = v[g.x] + 1u; }
}`,
};

/** Full GC where the runtime exposes one (Bun.gc; Deno's `gc` with --v8-flags=--expose-gc). */
const collect = () => {
  const g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  if (g.Bun) g.Bun.gc(true);
  else g.gc?.();
};

test(
  `wgpu (${runtimeName()}): ${CYCLES} allocate/dispatch/release cycles stay within ${RSS_BOUND_MIB} MiB`,
  async () => {
    const b = await Effect.runPromise(makeWgpuBackend());
    try {
      const data = Uint32Array.from({ length: 257 }, (_, i) => i * 7 + 3);
      const cycle = Effect.gen(function* () {
        const buf = yield* b.allocate(data.byteLength, "cycle");
        yield* b.upload(buf, data);
        yield* b.dispatch([{ kernel: inc, buffers: [buf], workgroups: [5, 1, 1] }]);
        b.release(buf);
      });
      const uploadOnly = Effect.gen(function* () {
        const buf = yield* b.allocate(4096, "cycle");
        yield* b.upload(buf, data);
        b.release(buf);
      });
      const run = (e: Effect.Effect<void, unknown>, n: number) =>
        Effect.runSync(Effect.repeat(e, { times: n - 1 }));
      run(cycle, 2_000);
      run(uploadOnly, 2_000);
      await Effect.runPromise(b.sync());
      collect();
      const rss0 = process.memoryUsage().rss;
      const t0 = performance.now();
      run(cycle, CYCLES);
      await Effect.runPromise(b.sync());
      const t1 = performance.now();
      collect();
      const rss1 = process.memoryUsage().rss;
      run(uploadOnly, CYCLES);
      await Effect.runPromise(b.sync());
      const t2 = performance.now();
      collect();
      const grow = (process.memoryUsage().rss - rss0) / 2 ** 20;
      console.log(
        `RSS growth: dispatch phase ${((rss1 - rss0) / 2 ** 20).toFixed(1)} MiB, upload phase ${
          ((process.memoryUsage().rss - rss1) / 2 ** 20).toFixed(1)
        } MiB`,
      );
      console.log(
        `${runtimeName()}: ${CYCLES} dispatch cycles ${(t1 - t0).toFixed(0)} ms, ${CYCLES} upload cycles ${
          (t2 - t1).toFixed(0)
        } ms, RSS growth ${grow.toFixed(1)} MiB (bound ${RSS_BOUND_MIB})`,
      );
      assert.deepEqual(b.live(), { buffers: 0, bytes: 0 });
      assert.ok(grow < RSS_BOUND_MIB, `RSS grew ${grow.toFixed(1)} MiB`);
      // The data still flows: one more cycle with a readback.
      const check = await Effect.runPromise(Effect.gen(function* () {
        const buf = yield* b.allocate(data.byteLength);
        yield* b.upload(buf, data);
        yield* b.dispatch([{ kernel: inc, buffers: [buf], workgroups: [5, 1, 1] }]);
        const out = yield* b.download(buf);
        b.release(buf);
        return new Uint32Array(out.buffer, out.byteOffset, data.length);
      }));
      for (let i = 0; i < data.length; i++) assert.equal(check[i], data[i] + 1);
    } finally {
      await Effect.runPromise(b.close());
    }
  },
  { ignore: !existsSync(wgpuLibPath()), timeout: 300_000 },
);

test(
  `wgpu (${runtimeName()}): ${CYCLES} refused dispatches leak nothing`,
  async () => {
    const b = await Effect.runPromise(makeWgpuBackend());
    try {
      // Needs 4096 bytes of binding; a 4-byte buffer is refused by the backend's static check (declared binding
      // sizes), before any wgpu-native call: the common refusal path must not grow at all.
      const fixed: Kernel = {
        key: "test.fixed",
        entryPoint: "main",
        bindings: ["read_write"],
        wgsl: `@group(0) @binding(0) var<storage, read_write> v: array<u32, 1024>;
@compute @workgroup_size(1) fn main() { v[0] = 1u; }`,
      };
      const refused = Effect.gen(function* () {
        const buf = yield* b.allocate(4, "tiny");
        const r = yield* Effect.result(
          b.dispatch([{ kernel: fixed, buffers: [buf], workgroups: [1, 1, 1] }]),
        );
        b.release(buf);
        if (r._tag === "Success") throw new Error("the invalid dispatch was accepted");
      });
      const run = (n: number) => Effect.runSync(Effect.repeat(refused, { times: n - 1 }));
      run(2_000);
      collect();
      const rss0 = process.memoryUsage().rss;
      const t0 = performance.now();
      run(CYCLES);
      await Effect.runPromise(b.sync());
      collect();
      const grow = (process.memoryUsage().rss - rss0) / 2 ** 20;
      console.log(
        `${runtimeName()}: ${CYCLES} refused dispatches ${
          (performance.now() - t0).toFixed(0)
        } ms, RSS growth ${grow.toFixed(1)} MiB (bound ${RSS_BOUND_MIB}), live ${JSON.stringify(b.live())}`,
      );
      assert.deepEqual(b.live(), { buffers: 0, bytes: 0 });
      assert.equal((b as { cachedBindGroups(): number }).cachedBindGroups(), 0);
      assert.ok(grow < RSS_BOUND_MIB, `RSS grew ${grow.toFixed(1)} MiB`);
    } finally {
      await Effect.runPromise(b.close());
    }
  },
  { ignore: !existsSync(wgpuLibPath()), timeout: 300_000 },
);

test(
  `wgpu (${runtimeName()}): one lowered program (attention over a KV cache at a moving position) run ${CYCLES} times: flat RSS, nothing allocated`,
  async () => {
    const { graph, hostTensor, lower } = await import("@longctx/graph");
    const { dense } = await import("@longctx/ops");
    const b = await Effect.runPromise(makeWgpuBackend());
    try {
      const g = graph("hygiene.decode");
      const q = g.input("q", dense.cacheAttn.inputs.q);
      const kc = g.input("kCache", dense.cacheAttn.inputs.kCache);
      const vc = g.input("vCache", dense.cacheAttn.inputs.vCache);
      g.output(
        "o",
        g.add(dense.cacheAttn, { scale: 0, window: 0, layout: "heads", splitKeys: 64, compacted: false }, {
          q,
          kCache: kc,
          vCache: vc,
        }).o,
      );
      const gr = await Effect.runPromise(g.build());
      const cap = 300;
      const p = await Effect.runPromise(lower(gr, b, {
        q: { ...dense.cacheAttn.inputs.q, shape: [4, 1, 64] },
        kCache: { ...dense.cacheAttn.inputs.kCache, shape: [2, cap, 64] },
        vCache: { ...dense.cacheAttn.inputs.vCache, shape: [2, cap, 64] },
      }));
      const kv = Float32Array.from({ length: 2 * cap * 64 }, (_, i) => Math.sin(i));
      await Effect.runPromise(
        p.write("kCache", hostTensor("f32", ["kvHeads", "capacity", "headDim"], [2, cap, 64], kv)),
      );
      await Effect.runPromise(
        p.write("vCache", hostTensor("f32", ["kvHeads", "capacity", "headDim"], [2, cap, 64], kv)),
      );
      await Effect.runPromise(
        p.write("q", hostTensor("f32", ["heads", "seq", "headDim"], [4, 1, 64], kv.slice(0, 256))),
      );
      const live0 = b.live();
      const loop = (n: number) =>
        Effect.gen(function* () {
          for (let i = 0; i < n; i++) yield* p.run({ scalars: { pos: i % cap }, sync: i % 64 === 63 });
          yield* b.sync();
        });
      await Effect.runPromise(loop(2000)); // warm-up
      collect();
      const rss0 = process.memoryUsage().rss;
      const t0 = performance.now();
      await Effect.runPromise(loop(CYCLES));
      collect();
      const grow = (process.memoryUsage().rss - rss0) / 2 ** 20;
      console.log(
        `  ${CYCLES} program runs in ${(performance.now() - t0).toFixed(0)} ms, RSS growth ${
          grow.toFixed(1)
        } MiB ` +
          `(bound ${RSS_BOUND_MIB}), live ${JSON.stringify(b.live())} (was ${JSON.stringify(live0)})`,
      );
      assert.deepEqual(b.live(), live0, "a program run allocated or freed device buffers");
      assert.ok(grow < RSS_BOUND_MIB, `RSS grew ${grow.toFixed(1)} MiB`);
      p.release();
      assert.equal(b.live().buffers, 0);
    } finally {
      await Effect.runPromise(b.close());
    }
  },
  { ignore: !existsSync(wgpuLibPath()) },
);
