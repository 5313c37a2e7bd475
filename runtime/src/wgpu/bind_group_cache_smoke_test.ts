/**
 * The wgpu backend's bind-group cache (Deno and Bun): a repeated dispatch on the same buffers reuses its bind
 * group and still sees the buffers' current contents; releasing a buffer drops the groups that bind it, so
 * a long-lived buffer paired with a new transient one each cycle keeps the cache bounded; a fresh buffer
 * after a release is bound correctly. Skipped when libwgpu_native is absent.
 */
import { existsSync } from "node:fs";
import { Effect } from "effect";
import type { Kernel } from "@longctx/graph";
import { assert, runtimeName, test } from "../../../tests/harness.ts";
import { makeWgpuBackend } from "../backends/wgpu.ts";
import { wgpuLibPath } from "../paths.ts";

/** out[i] = a[i] + b[i] (u32). */
const add: Kernel = {
  key: "test.bg-cache.add",
  entryPoint: "main",
  bindings: ["read", "read", "read_write"],
  wgsl: `@group(0) @binding(0) var<storage, read> a: array<u32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < arrayLength(&o)) { o[g.x] = a[g.x] + b[g.x]; }
}`,
};

test(
  `wgpu (${runtimeName()}): bind groups are cached, follow contents, and are dropped with their buffers`,
  async () => {
    const be = await Effect.runPromise(makeWgpuBackend());
    try {
      const n = 131;
      const bytes = n * 4;
      const read = (buf: Parameters<typeof be.download>[0]) =>
        Effect.runPromise(be.download(buf)).then((u8) => new Uint32Array(u8.buffer, u8.byteOffset, n));
      const fill = (f: (i: number) => number) =>
        new Uint8Array(Uint32Array.from({ length: n }, (_, i) => f(i)).buffer);
      const a = await Effect.runPromise(be.allocate(bytes, "a"));
      const out = await Effect.runPromise(be.allocate(bytes, "out"));
      await Effect.runPromise(be.upload(a, fill((i) => 1000 * i)));
      const before = be.cachedBindGroups();
      for (let cycle = 0; cycle < 300; cycle++) {
        const b = await Effect.runPromise(be.allocate(bytes, "b"));
        await Effect.runPromise(be.upload(b, fill((i) => i + cycle)));
        const launch = { kernel: add, buffers: [a, b, out], workgroups: [3, 1, 1] as const };
        await Effect.runPromise(be.dispatch([launch]));
        // same kernel and buffers again, after new contents: the cached group must see them
        await Effect.runPromise(be.upload(b, fill((i) => 7 * i + cycle)));
        await Effect.runPromise(be.dispatch([launch, launch]));
        const got = await read(out);
        for (const i of [0, 1, 64, n - 1]) {
          assert.equal(
            got[i],
            1000 * i + 7 * i + cycle,
            `cycle ${cycle} i ${i}`,
          );
        }
        assert.equal(be.cachedBindGroups(), before + 1, "one group per distinct buffer list");
        be.release(b);
        assert.equal(be.cachedBindGroups(), before, "releasing a buffer drops its groups");
      }
      be.release(a);
      be.release(out);
      assert.equal(be.cachedBindGroups(), 0);
      assert.deepEqual(be.live(), { buffers: 0, bytes: 0 });
    } finally {
      await Effect.runPromise(be.close());
    }
  },
  { ignore: !existsSync(wgpuLibPath()) },
);
