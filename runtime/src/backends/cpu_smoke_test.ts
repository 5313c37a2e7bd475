/**
 * The cpu backend under Deno and Bun: contract behaviour, typed errors, kernel bodies, and a graph run.
 * Run: deno test -A runtime/src/backends/cpu_smoke_test.ts ; bun test runtime/src/backends/cpu_smoke_test.ts
 */
import { Effect, Schema } from "effect";
import { assert, runtimeName, test } from "../../../tests/harness.ts";
import {
  allocHost,
  type BackendError,
  defineGraph,
  type Kernel,
  type KernelCompileError,
  type Operator,
  run,
  type TensorType,
  tensorType,
} from "@longctx/graph";
import { makeCpuBackend } from "./cpu.ts";

const fails = async <A>(
  eff: Effect.Effect<A, BackendError | KernelCompileError>,
  reason: BackendError["reason"],
) => {
  const e = await Effect.runPromise(Effect.flip(eff));
  assert.equal(e._tag === "BackendError" ? e.reason : e._tag, reason, e.message);
  assert.ok(e.hint.length > 0);
};

/** y[i] = sum_j x[i, j] (rows of length n), workgroup per row. */
const rowSum: Kernel = {
  key: "smoke.rowsum",
  entryPoint: "main",
  bindings: ["read", "read_write"],
  wgsl: "/* WGSL not run by the cpu backend */",
  cpu: ([x, y], [rows]) => {
    const X = new Float32Array(x), Y = new Float32Array(y), n = X.length / rows;
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += X[r * n + j];
      Y[r] = s;
    }
  },
};

test(`cpu backend contract (${runtimeName()})`, async () => {
  const b = await Effect.runPromise(makeCpuBackend({ maxBytes: 1 << 20 }));
  assert.match(b.adapter.name, /^cpu \(TypeScript, 1 thread\)$/);
  const x = await Effect.runPromise(b.allocate(4 * 12, "x"));
  const y = await Effect.runPromise(b.allocate(6, "y"));
  assert.equal(y.bytes, 8, "rounded up to 4");
  assert.deepEqual(b.live(), { buffers: 2, bytes: 56 });
  const data = Float32Array.from({ length: 12 }, (_, i) => i + 0.5);
  await Effect.runPromise(b.upload(x, data));
  const back = new Float32Array((await Effect.runPromise(b.download(x))).buffer);
  assert.deepEqual([...back], [...data]);
  const part = new Float32Array((await Effect.runPromise(b.download(x, 8, 8))).buffer);
  assert.deepEqual([...part], [2.5, 3.5]);
  const t = await Effect.runPromise(
    b.dispatch([{ kernel: rowSum, buffers: [x, y], workgroups: [2, 1, 1] }], { timed: true }),
  );
  assert.ok(t !== undefined && t.perLaunchMs.length === 1 && t.totalMs >= 0);
  const sums = new Float32Array((await Effect.runPromise(b.download(y))).buffer);
  assert.deepEqual([...sums], [0.5 + 1.5 + 2.5 + 3.5 + 4.5 + 5.5, 6.5 + 7.5 + 8.5 + 9.5 + 10.5 + 11.5]);
  // Typed errors.
  await fails(b.upload(x, new Uint8Array(4), 2), "validation");
  await fails(b.download(x, 0, 100), "validation");
  await fails(b.allocate(2 << 20), "out-of-memory");
  await fails(b.compile({ ...rowSum, key: "nobody", cpu: undefined }), "unsupported");
  await fails(
    b.dispatch([{
      kernel: { ...rowSum, key: "nobody2", cpu: undefined },
      buffers: [x, y],
      workgroups: [1, 1, 1],
    }]),
    "unsupported",
  );
  await fails(b.dispatch([{ kernel: rowSum, buffers: [x], workgroups: [1, 1, 1] }]), "validation");
  const thrower: Kernel = {
    ...rowSum,
    key: "throws",
    cpu: () => {
      throw new Error("bad body");
    },
  };
  await fails(b.dispatch([{ kernel: thrower, buffers: [x, y], workgroups: [1, 1, 1] }]), "internal");
  b.release(y);
  b.release(y);
  await fails(b.download(y), "released");
  assert.deepEqual(b.live(), { buffers: 1, bytes: 48 });
  await Effect.runPromise(b.close());
  assert.deepEqual(b.live(), { buffers: 0, bytes: 0 });
  await fails(b.allocate(4), "device-lost");
});

type RC = TensorType<"f32", readonly ["rows", "cols"]>;
const rc: RC = tensorType("f32", ["rows", "cols"]);
const scaleOp: Operator<{ readonly by: number }, { x: RC }, { y: RC }> = {
  name: "smoke.scale",
  kind: "elementwise",
  reference: "smoke test",
  params: Schema.Struct({ by: Schema.Number }),
  inputs: { x: rc },
  outputs: { y: rc },
  infer: (_p, { x }) => Effect.succeed({ y: x }),
  cpu: ({ by }, { x }) => {
    const y = allocHost(x.desc);
    x.data.forEach((v, i) => (y.data[i] = v * by));
    return { y };
  },
  cost: () => ({ flops: 0, bytesRead: 0, bytesWritten: 0, workspaceBytes: 0 }),
};

test(`graph run on the cpu backend (${runtimeName()})`, async () => {
  const b = await Effect.runPromise(makeCpuBackend());
  const g = await Effect.runPromise(defineGraph("scale2", { x: rc }, (g, { x }) => {
    const y = g.add(scaleOp, { by: 3 }, { x }).y;
    return { z: g.add(scaleOp, { by: -0.5 }, { x: y }).y };
  }));
  const x = allocHost({ ...rc, shape: [3, 5] });
  x.data.forEach((_, i) => (x.data[i] = i - 7));
  const r = await Effect.runPromise(run(g, b, { x }));
  assert.deepEqual([...r.outputs.z.data], [...x.data].map((v) => v * -1.5));
  assert.equal(r.report.backend, "cpu (TypeScript, 1 thread)");
  assert.deepEqual(b.live(), { buffers: 0, bytes: 0 });
});
