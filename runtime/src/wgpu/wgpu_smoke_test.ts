/**
 * wgpu backend smoke test (Deno and Bun): adapter report, a saxpy kernel on random data against a JS
 * float64 computation, timestamp timing, typed errors for bad WGSL / oversize allocation / released
 * buffers / missing library / device loss. Skipped (with the reason) when libwgpu_native is absent.
 */
import { existsSync } from "node:fs";
import { Effect } from "effect";
import type { Kernel } from "@longctx/graph";
import { assert, runtimeName, test } from "../../../tests/harness.ts";
import { makeWgpuBackend } from "../backends/wgpu.ts";
import { wgpuLibPath } from "../paths.ts";

const lib = wgpuLibPath();
const haveLib = existsSync(lib);
if (!haveLib) {
  console.log(`wgpu smoke tests skipped: ${lib} not found (run npm run setup or set LONGCTX_WGPU_LIB)`);
}

const saxpy: Kernel = {
  key: "test.saxpy",
  entryPoint: "main",
  bindings: ["read", "read_write", "uniform"],
  wgsl: `
struct Params { a: f32, n: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < p.n) { y[g.x] = p.a * x[g.x] + y[g.x]; }
}`,
};

const params = (a: number, n: number) => {
  const b = new ArrayBuffer(8);
  new DataView(b).setFloat32(0, a, true);
  new DataView(b).setUint32(4, n, true);
  return new Uint8Array(b);
};

test("wgpu: missing library is a typed library-missing error", async () => {
  const e = await Effect.runPromise(
    Effect.flip(makeWgpuBackend({ libPath: "/nonexistent/libwgpu_native.so" })),
  );
  assert.equal(e._tag, "BackendError");
  assert.equal(e.reason, "library-missing");
  assert.match(e.hint, /npm run setup|LONGCTX_WGPU_LIB/);
});

test(`wgpu (${runtimeName()}): adapter, saxpy vs JS, timing, typed errors`, async () => {
  const b = await Effect.runPromise(makeWgpuBackend());
  try {
    console.log(
      `wgpu ${b.native.version} on ${runtimeName()}: ${b.adapter.name} (${b.adapter.api}, ${b.adapter.driver})`,
    );
    console.log(`features: ${[...b.features].join(", ")}`);
    assert.ok(b.adapter.name.length > 0);
    assert.ok(b.limits.maxBufferSize >= 256 * 1024 * 1024);
    assert.ok(b.features.has("timestamp-query"));
    for (const n of [1031, 4099]) {
      const a = 1.75;
      const x = Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
      const y = Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
      const out = await Effect.runPromise(Effect.gen(function* () {
        const bx = yield* b.allocate(x.byteLength, "x");
        const by = yield* b.allocate(y.byteLength, "y");
        const bp = yield* b.allocate(8, "params");
        yield* b.upload(bx, x);
        yield* b.upload(by, y);
        yield* b.upload(bp, params(a, n));
        const t = yield* b.dispatch([{
          kernel: saxpy,
          buffers: [bx, by, bp],
          workgroups: [Math.ceil(n / 64), 1, 1],
        }], {
          timed: true,
        });
        const bytes = yield* b.download(by);
        b.release(bx);
        b.release(by);
        b.release(bp);
        return { t: t!, y: new Float32Array(bytes.buffer, bytes.byteOffset, n) };
      }));
      // float64 reference; f32 rounding of a*x and of the sum bounds the error by a few ulps of the terms.
      let worst = 0;
      for (let i = 0; i < n; i++) {
        const ref = a * x[i] + y[i];
        const scale = Math.abs(a * x[i]) + Math.abs(y[i]);
        worst = Math.max(worst, Math.abs(out.y[i] - ref) / (4 * 2 ** -24 * scale + 1e-30));
      }
      assert.ok(worst <= 1, `saxpy n=${n}: error ${worst} × the f32 rounding bound`);
      assert.equal(out.t.perLaunchMs.length, 1);
      assert.ok(out.t.perLaunchMs[0] > 0 && out.t.perLaunchMs[0] < 10_000, `gpu ms ${out.t.perLaunchMs[0]}`);
    }
    assert.deepEqual(b.live(), { buffers: 0, bytes: 0 });

    // Bad WGSL: typed KernelCompileError with the compiler's message, and the backend still works.
    const bad = await Effect.runPromise(
      Effect.flip(b.compile({ ...saxpy, key: "test.bad", wgsl: "fn main( {" })),
    );
    assert.equal(bad._tag, "KernelCompileError");
    assert.match(bad.message, /expected/);
    // A binding mismatch (WGSL declares read_write, kernel says read) is a compile error too.
    const mism = await Effect.runPromise(
      Effect.flip(b.compile({ ...saxpy, key: "test.mismatch", bindings: ["read", "read", "uniform"] })),
    );
    assert.equal(mism._tag, "KernelCompileError");

    // Releasing twice is a no-op; using a released buffer is a typed error.
    const buf = await Effect.runPromise(b.allocate(13, "odd"));
    assert.equal(buf.bytes, 16);
    b.release(buf);
    b.release(buf);
    const rel = await Effect.runPromise(Effect.flip(b.upload(buf, new Float32Array(4))));
    assert.equal(rel.reason, "released");

    // Out of memory: more than maxBufferSize.
    const oom = await Effect.runPromise(Effect.flip(b.allocate(b.limits.maxBufferSize + 4)));
    assert.equal(oom.reason, "out-of-memory");
    // Bad sizes.
    const neg = await Effect.runPromise(Effect.flip(b.allocate(-1)));
    assert.equal(neg.reason, "validation");
    // Timing with two launches gives two entries.
    const t2 = await Effect.runPromise(Effect.gen(function* () {
      const bx = yield* b.allocate(4096);
      const by = yield* b.allocate(4096);
      const bp = yield* b.allocate(8);
      yield* b.upload(bp, params(1, 1024));
      const l = { kernel: saxpy, buffers: [bx, by, bp], workgroups: [16, 1, 1] as const };
      const t = yield* b.dispatch([l, l], { timed: true });
      yield* b.dispatch([l, l, l]);
      yield* b.sync();
      return t!;
    }));
    assert.equal(t2.perLaunchMs.length, 2);
    assert.ok(t2.totalMs >= Math.max(...t2.perLaunchMs));
  } finally {
    await Effect.runPromise(b.close());
  }
  assert.deepEqual(b.live(), { buffers: 0, bytes: 0 });
}, { ignore: !haveLib });

test("wgpu: device loss gives typed device-lost errors, not a crash", async () => {
  const b = await Effect.runPromise(makeWgpuBackend());
  const buf = await Effect.runPromise(b.allocate(64));
  b.loseDevice();
  const e1 = await Effect.runPromise(Effect.flip(b.allocate(64)));
  assert.equal(e1.reason, "device-lost");
  const e2 = await Effect.runPromise(Effect.flip(b.download(buf)));
  assert.equal(e2.reason, "device-lost");
  const e3 = await Effect.runPromise(
    Effect.flip(b.dispatch([{ kernel: saxpy, buffers: [buf, buf, buf], workgroups: [1, 1, 1] }])),
  );
  assert.equal(e3._tag, "BackendError");
  b.release(buf);
  await Effect.runPromise(b.close());
}, { ignore: !haveLib });
