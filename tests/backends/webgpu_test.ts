/**
 * The `webgpu` backend's contract on Deno's built-in WebGPU (lavapipe here): typed errors for a bad
 * kernel, an oversized allocation, a released buffer, a missing feature and a lost device; timestamp
 * timing; pipeline cache; and a short allocate/dispatch/release loop with a stated memory bound.
 *
 * Run: `deno test -A tests/backends/webgpu_test.ts`.
 */
import { Effect } from "effect";
import type { Backend, Kernel } from "@longctx/graph";
import { kernels as K } from "@longctx/ops";
import { makeWebgpuBackend } from "../../runtime/src/backends/webgpu.ts";
import { assert, test } from "../harness.ts";
import { compare, ewCase, runCpuBody, runOn } from "./cases.ts";

const hasGpu = !!(globalThis.navigator as Navigator | undefined)?.gpu;
const ignore = !hasGpu;
if (ignore) console.log("webgpu_test: skipped — navigator.gpu absent (run with Deno --unstable-webgpu)");

const open = () => Effect.runPromise(makeWebgpuBackend());
const failureOf = async <A, E>(e: Effect.Effect<A, E>): Promise<E> => {
  const r = await Effect.runPromise(Effect.result(e));
  if (r._tag === "Success") throw new Error("expected a failure");
  return r.failure;
};

test("webgpu: adapter, features and limits are reported", async () => {
  const b = await open();
  try {
    assert.equal(b.kind, "webgpu");
    assert.ok(b.adapter.name.length > 0);
    assert.ok(b.limits.maxComputeWorkgroupStorageSize >= 16384);
    console.log(`  adapter: ${b.adapter.name}; features: ${[...b.features].join(", ")}`);
  } finally {
    await Effect.runPromise(b.close());
  }
}, { ignore });

test("webgpu: bad WGSL → KernelCompileError; cooperative kernel → unsupported", async () => {
  const b = await open();
  try {
    const bad: Kernel = { key: "bad", wgsl: "fn main( {", entryPoint: "main", bindings: [] };
    const e = await failureOf(b.compile(bad));
    assert.equal(e._tag, "KernelCompileError");
    const coop = Effect.runSync(K.coopMatmul()).kernel;
    const u = await failureOf(b.compile(coop));
    assert.equal(u._tag, "BackendError");
    assert.equal((u as { reason: string }).reason, "unsupported");
  } finally {
    await Effect.runPromise(b.close());
  }
}, { ignore });

test(
  "webgpu: oversized allocation → out-of-memory; released buffer → released; bad upload → validation",
  async () => {
    const b = await open();
    try {
      const e = await failureOf(b.allocate(b.limits.maxBufferSize + 4));
      assert.equal(e.reason, "out-of-memory");
      const buf = await Effect.runPromise(b.allocate(64));
      const v = await failureOf(b.upload(buf, new Uint8Array(128)));
      assert.equal(v.reason, "validation");
      b.release(buf);
      b.release(buf); // no-op
      const r = await failureOf(b.download(buf));
      assert.equal(r.reason, "released");
      assert.equal(b.live().buffers, 0);
    } finally {
      await Effect.runPromise(b.close());
    }
  },
  { ignore },
);

test("webgpu: device loss → device-lost on later calls", async () => {
  const adapter = await navigator.gpu.requestAdapter();
  const device = await adapter!.requestDevice();
  const b = await Effect.runPromise(makeWebgpuBackend({ device }));
  const buf = await Effect.runPromise(b.allocate(16));
  device.destroy();
  await device.lost;
  const e = await failureOf(b.allocate(16));
  assert.equal(e.reason, "device-lost");
  const d = await failureOf(b.download(buf));
  assert.equal(d.reason, "device-lost");
  await Effect.runPromise(b.close());
}, { ignore });

test("webgpu: timed dispatch returns per-launch GPU times; results still correct", async () => {
  const b = await open();
  try {
    if (!b.features.has("timestamp-query")) {
      const e = await failureOf(b.dispatch([], { timed: true }));
      assert.equal(e._tag, "BackendError");
      return;
    }
    const c = ewCase("add", "f32", 4096);
    const ins = await Promise.all(c.inputs.map(async (d) => {
      const x = await Effect.runPromise(b.allocate(d.byteLength));
      await Effect.runPromise(b.upload(x, d));
      return x;
    }));
    const out = await Effect.runPromise(b.allocate(4096 * 4));
    const u = await Effect.runPromise(b.allocate(16));
    await Effect.runPromise(b.upload(u, c.plan.uniform(c.sizes)));
    const launch = {
      kernel: c.plan.kernel,
      buffers: [...ins, out, u],
      workgroups: c.plan.workgroups(c.sizes),
    };
    const t = await Effect.runPromise(b.dispatch([launch, launch, launch], { timed: true }));
    assert.ok(t && t.perLaunchMs.length === 3);
    assert.ok(t!.perLaunchMs.every((x) => x >= 0 && Number.isFinite(x)));
    assert.ok(t!.totalMs >= t!.perLaunchMs[0]);
    const got = new Float32Array((await Effect.runPromise(b.download(out))).buffer);
    const { ref, scale } = c.oracle();
    assert.equal(compare(Float64Array.from(got), ref, scale, c.atol, c.rtol), undefined);
    console.log(`  3 × add(4096) GPU ms: ${t!.perLaunchMs.map((x) => x.toFixed(4)).join(", ")}`);
  } finally {
    await Effect.runPromise(b.close());
  }
}, { ignore });

test("webgpu: a wrong kernel is caught by the comparison (the test can fail)", async () => {
  const b = await open();
  try {
    const c = ewCase("add", "f32", 257);
    const broken = {
      ...c,
      plan: {
        ...c.plan,
        kernel: {
          ...c.plan.kernel,
          key: "ew.add.broken",
          wgsl: c.plan.kernel.wgsl.replace("a + b", "a - b"),
        },
      },
    };
    const got = await runOn(b, broken);
    const { scale } = c.oracle();
    assert.notEqual(compare(got, runCpuBody(c), scale, c.atol, c.rtol), undefined);
  } finally {
    await Effect.runPromise(b.close());
  }
}, { ignore });

/**
 * Hygiene: 800 allocate/upload/dispatch/download/release cycles (the wgpu backend's test runs 10,000);
 * bound: RSS growth ≤ 64 MiB after a warm-up of 100 cycles, and no live buffers at the end.
 */
test("webgpu: 800 allocate/dispatch/release cycles stay within 64 MiB of RSS growth", async () => {
  const b: Backend = await open();
  try {
    const c = ewCase("mul", "f32", 64);
    const cycle = async () => {
      const got = await runOn(b, c);
      if (got.length !== 64) throw new Error("short read");
    };
    for (let i = 0; i < 100; i++) await cycle();
    const rss0 = Deno.memoryUsage().rss;
    for (let i = 0; i < 800; i++) await cycle();
    const grown = (Deno.memoryUsage().rss - rss0) / 2 ** 20;
    console.log(`  RSS growth over 800 cycles: ${grown.toFixed(1)} MiB`);
    assert.ok(grown <= 64, `RSS grew ${grown.toFixed(1)} MiB`);
    assert.equal(b.live().buffers, 0);
  } finally {
    await Effect.runPromise(b.close());
  }
}, { ignore });
