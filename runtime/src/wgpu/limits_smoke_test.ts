/**
 * Device limits on the wgpu backend (Deno and Bun): every input below made wgpu-native abort the whole
 * process (exit 134, "Error in wgpuQueueSubmit: Validation Error") or pass silently before the checks in
 * `runtime/src/backends/wgpu.ts`; now each is a typed error with the numbers, and the backend keeps working.
 * A regression aborts this test process, which fails the run.
 * @module
 */
import { Effect } from "effect";
import { assert, test } from "../../../tests/harness.ts";
import { type Backend, BackendError, defineGraph, hostTensor, KernelCompileError, run } from "@longctx/graph";
import { dense } from "@longctx/ops";
import { makeWgpuBackend } from "../backends/wgpu.ts";

const backend = await Effect.runPromise(makeWgpuBackend()).catch(() => undefined);
const ignore = backend === undefined;
const b = backend as Backend;

const kernel = (key: string, wgsl: string, bindings: ("read" | "read_write" | "uniform")[]) => ({
  key,
  wgsl,
  entryPoint: "main",
  bindings,
});
const failure = async <A, E>(e: Effect.Effect<A, E>): Promise<E> => await Effect.runPromise(Effect.flip(e));

/** A kernel that still works after a refused launch: the backend was not poisoned. */
const stillWorks = async () => {
  const out = await Effect.runPromise(b.allocate(16, "out"));
  const k = kernel(
    "limits-ok",
    "@group(0) @binding(0) var<storage, read_write> a: array<f32>;\n@compute @workgroup_size(4) fn main(@builtin(local_invocation_index) i: u32) { a[i] = f32(i) + 0.5; }",
    ["read_write"],
  );
  await Effect.runPromise(b.dispatch([{ kernel: k, buffers: [out], workgroups: [1, 1, 1] }]));
  const bytes = await Effect.runPromise(b.download(out));
  b.release(out);
  assert.deepEqual([...new Float32Array(bytes.buffer, bytes.byteOffset, 4)], [0.5, 1.5, 2.5, 3.5]);
};

test(
  "wgpu limits: a buffer beyond maxStorageBufferBindingSize is refused at allocate with the numbers",
  async () => {
    const max = b.limits.maxStorageBufferBindingSize;
    if (max >= b.limits.maxBufferSize) return; // nothing between the two limits on this device
    const e = await failure(b.allocate(max + 4, "too-big"));
    assert.ok(e instanceof BackendError && e.reason === "out-of-memory", String(e));
    assert.match(e.message, new RegExp(`maxStorageBufferBindingSize ${max}`));
    assert.match(e.hint, /split/);
    assert.deepEqual(b.live(), { buffers: 0, bytes: 0 });
    await stillWorks();
  },
  { ignore },
);

test(
  "wgpu limits: a large buffer bound as uniform, read+read_write aliasing, a too-small binding → validation, no abort",
  async () => {
    const big = await Effect.runPromise(b.allocate(1 << 20, "big"));
    const tiny = await Effect.runPromise(b.allocate(4, "tiny"));
    const uni = kernel(
      "limits-uniform",
      "struct P { n: u32 }\n@group(0) @binding(0) var<uniform> p: P;\n@group(0) @binding(1) var<storage, read_write> a: array<f32>;\n@compute @workgroup_size(1) fn main() { a[0] = f32(p.n); }",
      ["uniform", "read_write"],
    );
    const e1 = await failure(b.dispatch([{ kernel: uni, buffers: [big, tiny], workgroups: [1, 1, 1] }]));
    assert.ok(e1 instanceof BackendError && e1.reason === "validation", String(e1));
    assert.match(e1.message, /1048576 bytes, more than the uniform binding limit/);
    const alias = kernel(
      "limits-alias",
      "@group(0) @binding(0) var<storage, read> x: array<f32>;\n@group(0) @binding(1) var<storage, read_write> a: array<f32>;\n@compute @workgroup_size(1) fn main() { a[0] = x[1]; }",
      ["read", "read_write"],
    );
    const e2 = await failure(b.dispatch([{ kernel: alias, buffers: [big, big], workgroups: [1, 1, 1] }]));
    assert.ok(e2 instanceof BackendError && e2.reason === "validation", String(e2));
    assert.match(e2.message, /both read_write and read/);
    // A fixed-size array needs 4096 bytes; a 4-byte buffer fails wgpu's late binding-size validation, which
    // used to surface only in wgpuQueueSubmit (process abort). Now the encoding runs inside error scopes.
    const fixed = kernel(
      "limits-min-binding",
      "@group(0) @binding(0) var<storage, read_write> a: array<f32, 1024>;\n@compute @workgroup_size(1) fn main() { a[0] = 1.0; }",
      ["read_write"],
    );
    const e3 = await failure(b.dispatch([{ kernel: fixed, buffers: [tiny], workgroups: [1, 1, 1] }]));
    assert.ok(e3 instanceof BackendError && e3.reason === "validation", String(e3));
    assert.match(e3.message, /binding 0 \(read_write\) needs at least 4096 bytes .* has 4/);
    // The same size rule through wgpu's own validation (the static check does not model @size): the encoding is
    // refused before submit and the backend keeps working.
    const sized = kernel(
      "limits-min-binding-sized",
      "struct S { @size(4096) a: u32 }\n@group(0) @binding(0) var<storage, read_write> s: S;\n@compute @workgroup_size(1) fn main() { s.a = 1u; }",
      ["read_write"],
    );
    const e4 = await failure(b.dispatch([{ kernel: sized, buffers: [tiny], workgroups: [1, 1, 1] }]));
    assert.ok(e4 instanceof BackendError && e4.reason === "validation", String(e4));
    assert.match(e4.message, /refused before submit|bind group refused/);
    b.release(big);
    b.release(tiny);
    await stillWorks();
    assert.deepEqual(b.live(), { buffers: 0, bytes: 0 });
  },
  { ignore },
);

test(
  "wgpu limits: workgroup memory, invocations and storage-buffer count beyond the device → KernelCompileError with numbers",
  async () => {
    const buf = await Effect.runPromise(b.allocate(1024, "buf"));
    const wgBytes = b.limits.maxComputeWorkgroupStorageSize * 2;
    const wm = kernel(
      "limits-wgmem",
      `var<workgroup> t: array<f32, ${
        wgBytes / 4
      }>;\n@group(0) @binding(0) var<storage, read_write> a: array<f32>;\n@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) i: u32) { t[i] = 1.0; workgroupBarrier(); a[i] = t[${
        wgBytes / 4 - 1
      }u - i]; }`,
      ["read_write"],
    );
    const e1 = await failure(b.dispatch([{ kernel: wm, buffers: [buf], workgroups: [1, 1, 1] }]));
    assert.ok(e1 instanceof KernelCompileError, String(e1));
    assert.match(
      e1.message,
      new RegExp(`${wgBytes} bytes of workgroup memory.*${b.limits.maxComputeWorkgroupStorageSize}`),
    );
    const inv = b.limits.maxComputeInvocationsPerWorkgroup * 2;
    const ws = kernel(
      "limits-wgsize",
      `@group(0) @binding(0) var<storage, read_write> a: array<f32>;\n@compute @workgroup_size(${inv}) fn main(@builtin(local_invocation_index) i: u32) { a[i] = 1.0; }`,
      ["read_write"],
    );
    const e2 = await failure(b.dispatch([{ kernel: ws, buffers: [buf], workgroups: [1, 1, 1] }]));
    assert.ok(e2 instanceof KernelCompileError, String(e2));
    assert.match(e2.message, new RegExp(`${inv} invocations`));
    const n = b.limits.maxStorageBuffersPerShaderStage + 1;
    const decl = Array.from(
      { length: n },
      (_, i) => `@group(0) @binding(${i}) var<storage, read_write> a${i}: array<f32>;`,
    )
      .join("\n");
    const many = kernel(
      "limits-nbuf",
      `${decl}\n@compute @workgroup_size(1) fn main() { ${
        Array.from({ length: n }, (_, i) => `a${i}[0] = 1.0;`).join(" ")
      } }`,
      Array(n).fill("read_write"),
    );
    const e3 = await failure(
      b.dispatch([{ kernel: many, buffers: Array(n).fill(buf), workgroups: [1, 1, 1] }]),
    );
    assert.ok(e3 instanceof KernelCompileError, String(e3));
    assert.match(e3.message, new RegExp(`${n} storage buffers.*maxStorageBuffersPerShaderStage`));
    const e4 = await failure(
      b.dispatch([{
        kernel: wm,
        buffers: [buf],
        workgroups: [b.limits.maxComputeWorkgroupsPerDimension + 1, 1, 1],
      }]),
    );
    assert.ok(e4 instanceof BackendError && e4.reason === "validation", String(e4));
    b.release(buf);
    await stillWorks();
  },
  { ignore },
);

test(
  "wgpu limits: run() of a long dense attention whose q exceeds maxStorageBufferBindingSize fails typed, frees all",
  async () => {
    const max = b.limits.maxStorageBufferBindingSize;
    if (max >= b.limits.maxBufferSize || max > 2 ** 28) return; // the shape below is sized for lavapipe's 128 MiB
    const H = 16, D = 64;
    const S = Math.ceil((max + 4096) / (H * D * 4)); // q [16, S, 64] f32 just over the binding limit
    const op = dense.makeDenseAttn("f32");
    const g = Effect.runSync(defineGraph("long-dense", op.inputs, (gr, i) => {
      const a = gr.add(
        op,
        { scale: 0, blockQ: 64, workgroupMemory: b.limits.maxComputeWorkgroupStorageSize },
        i,
      );
      return { o: a.o, lse: a.lse };
    }));
    const q = hostTensor("f32", ["heads", "seq", "headDim"], [H, S, D], new Float32Array(H * S * D));
    const kv = () => hostTensor("f32", ["kvHeads", "kvSeq", "headDim"], [1, S, D], new Float32Array(S * D));
    const e = await failure(run(g, b, { q, k: kv(), v: kv() } as never, { lowering: "prefer" }));
    assert.ok(e instanceof BackendError && e.reason === "out-of-memory", String(e));
    assert.match(e.message, /maxStorageBufferBindingSize/);
    assert.deepEqual(b.live(), { buffers: 0, bytes: 0 });
    await stillWorks();
  },
  { ignore },
);

test("wgpu limits: close", async () => {
  await Effect.runPromise(b.close());
}, { ignore, sanitize: false }); // closes the backend the file opened at load (before any test)
