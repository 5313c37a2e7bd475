/**
 * Cross-backend kernel cases in the shape of llama.cpp's `test-backend-ops`: every kernel of the shared
 * library (`ops/kernels`) runs on every available backend over a grid of odd shapes and both dtypes, on
 * seeded random inputs (never zero), and is compared with the kernel's cpu body under a stated error
 * threshold. Separately, each cpu body is checked against a float64 computation written independently
 * here.
 *
 * Error measure: for every output element `|got − ref| ≤ atol + rtol · scale`, where `scale` is the
 * element's natural magnitude: `Σ_k |a_mk·b_kn|` for matmul, `Σ_c |x_rc|` for sums, `|ref|` otherwise.
 * @module
 */
import { Effect } from "effect";
import { type Backend, type DeviceBuffer, mulberry32 } from "@longctx/graph";
import { kernels as K } from "@longctx/ops";

type KernelPlan<S> = K.KernelPlan<S>;
type KDType = K.KDType;

/** Deterministic PRNG (mulberry32). */
export const rng = mulberry32;

/**
 * `n` random values, never zero: sign · (0.1 + 0.9·u) · amp, rounded to the storage dtype so the
 * oracle sees exactly what the kernel reads.
 */
export const randomValues = (n: number, dtype: KDType, seed: number, amp = 1): Float64Array => {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = (r() < 0.5 ? -1 : 1) * (0.1 + 0.9 * r()) * amp;
    out[i] = dtype === "f16" ? K.roundHalf(v) : Math.fround(v);
  }
  return out;
};

/** Encode values as the dtype's bytes. */
export const encode = (xs: ArrayLike<number>, dtype: KDType): Uint8Array =>
  dtype === "f32" ? new Uint8Array(Float32Array.from(xs).buffer) : new Uint8Array(K.toHalfArray(xs).buffer);

/** Decode `n` elements of dtype from bytes. */
export const decode = (b: Uint8Array, dtype: KDType, n: number): Float64Array => {
  const copy = b.slice(0, n * (dtype === "f32" ? 4 : 2)).buffer;
  if (dtype === "f32") return Float64Array.from(new Float32Array(copy));
  return Float64Array.from(K.fromHalfArray(new Uint16Array(copy)));
};

/** One kernel case: a plan, sizes, encoded inputs, the output's dtype/length and the f64 oracle. */
export interface Case {
  readonly name: string;
  // deno-lint-ignore no-explicit-any
  readonly plan: KernelPlan<any>;
  readonly sizes: unknown;
  readonly inputs: readonly Uint8Array[];
  readonly out: { readonly dtype: KDType; readonly n: number };
  /** float64 expected output and per-element scale. */
  readonly oracle: () => { readonly ref: Float64Array; readonly scale: Float64Array };
  readonly atol: number;
  readonly rtol: number;
  /** Backend features the case needs. */
  readonly needs: readonly string[];
}

const needsOf = (dts: KDType[]): string[] => (dts.includes("f16") ? ["shader-f16"] : []);

/** Tolerances per storage/accumulation dtype (stated in the report and the test names). */
export const TOL = {
  ew: { f32: { atol: 1e-6, rtol: 2e-6 }, f16: { atol: 1e-4, rtol: 2e-3 } },
  sum: { f32: { atol: 1e-6, rtol: 1e-5 }, f16: { atol: 1e-6, rtol: 1e-5 } },
  softmax: { f32: { atol: 1e-7, rtol: 1e-5 }, f16: { atol: 1e-5, rtol: 2e-3 } },
  matmul: {
    f32: { atol: 1e-6, rtol: 1e-5 },
    "f16-acc-f32": { atol: 1e-5, rtol: 1e-3 },
    "f16-acc-f16": { atol: 1e-3, rtol: 2e-2 },
  },
} as const;

let seedCounter = 1;

/** Elementwise case over `n` elements. */
export const ewCase = (op: K.ElementwiseOp, dtype: KDType, n: number): Case => {
  const a = randomValues(n, dtype, seedCounter++, 3);
  const b = randomValues(n, dtype, seedCounter++, 3);
  const two = op !== "silu";
  const f = op === "add"
    ? (x: number, y: number) => x + y
    : op === "mul"
    ? (x: number, y: number) => x * y
    : (
      x: number,
    ) => x * (1 / (1 + Math.exp(-x)));
  return {
    name: `ew.${op}.${dtype} n=${n}`,
    plan: K.elementwise(op, dtype),
    sizes: { n },
    inputs: two ? [encode(a, dtype), encode(b, dtype)] : [encode(a, dtype)],
    out: { dtype, n },
    oracle: () => {
      const ref = Float64Array.from({ length: n }, (_, i) => f(a[i], b[i]));
      return { ref, scale: ref.map(Math.abs) };
    },
    ...TOL.ew[dtype],
    needs: needsOf([dtype]),
  };
};

/** vec4 copy of `n4` vec4s. */
export const copyCase = (n4: number): Case => {
  const a = randomValues(4 * n4, "f32", seedCounter++);
  return {
    name: `copy.vec4 n4=${n4}`,
    plan: K.copyVec4(),
    sizes: { n4 },
    inputs: [encode(a, "f32")],
    out: { dtype: "f32", n: 4 * n4 },
    oracle: () => ({ ref: a, scale: a.map(Math.abs) }),
    atol: 0,
    rtol: 0,
    needs: [],
  };
};

/** Row reduction case. */
export const reduceCase = (op: K.ReduceOp, dtype: KDType, rows: number, cols: number): Case => {
  const x = randomValues(rows * cols, dtype, seedCounter++, 2);
  return {
    name: `reduce.${op}.${dtype} ${rows}x${cols}`,
    plan: K.rowReduce(op, dtype),
    sizes: { rows, cols },
    inputs: [encode(x, dtype)],
    out: { dtype: "f32", n: rows },
    oracle: () => {
      const ref = new Float64Array(rows);
      const scale = new Float64Array(rows);
      for (let r = 0; r < rows; r++) {
        let s = op === "sum" ? 0 : -Infinity;
        let m = 0;
        for (let c = 0; c < cols; c++) {
          const v = x[r * cols + c];
          s = op === "sum" ? s + v : Math.max(s, v);
          m += Math.abs(v);
        }
        ref[r] = s;
        scale[r] = op === "sum" ? m : Math.abs(s);
      }
      return { ref, scale };
    },
    ...(op === "sum" ? TOL.sum[dtype] : { atol: 0, rtol: 0 }),
    needs: needsOf([dtype]),
  };
};

/** Row softmax case. Inputs span ±8 so the max subtraction matters. */
export const softmaxCase = (dtype: KDType, rows: number, cols: number): Case => {
  const x = randomValues(rows * cols, dtype, seedCounter++, 8);
  return {
    name: `softmax.${dtype} ${rows}x${cols}`,
    plan: K.softmax(dtype),
    sizes: { rows, cols },
    inputs: [encode(x, dtype)],
    out: { dtype, n: rows * cols },
    oracle: () => {
      const ref = new Float64Array(rows * cols);
      for (let r = 0; r < rows; r++) {
        const row = x.subarray(r * cols, (r + 1) * cols);
        const m = Math.max(...row);
        const s = row.reduce((acc, v) => acc + Math.exp(v - m), 0);
        for (let c = 0; c < cols; c++) ref[r * cols + c] = Math.exp(row[c] - m) / s;
      }
      return { ref, scale: ref.map(Math.abs) };
    },
    ...TOL.softmax[dtype],
    needs: needsOf([dtype]),
  };
};

/** Matmul case for a plan generated from `options` (plain or cooperative). */
export const matmulCase = (
  label: string,
  // deno-lint-ignore no-explicit-any
  plan: KernelPlan<any>,
  o: { dtype: KDType; accum: KDType; transB: boolean; outDtype?: KDType; needs?: string[] },
  M: number,
  N: number,
  Kd: number,
): Case => {
  const a = randomValues(M * Kd, o.dtype, seedCounter++);
  const b = randomValues(Kd * N, o.dtype, seedCounter++);
  const tol = o.dtype === "f32"
    ? TOL.matmul.f32
    : o.accum === "f32"
    ? TOL.matmul["f16-acc-f32"]
    : TOL.matmul["f16-acc-f16"];
  const outDtype = o.outDtype ?? o.dtype;
  return {
    name: `${label} M=${M} N=${N} K=${Kd}`,
    plan,
    sizes: { M, N, K: Kd },
    inputs: [encode(a, o.dtype), encode(b, o.dtype)],
    out: { dtype: outDtype, n: M * N },
    oracle: () => {
      const ref = new Float64Array(M * N);
      const scale = new Float64Array(M * N);
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          let s = 0;
          let t = 0;
          for (let k = 0; k < Kd; k++) {
            const bv = o.transB ? b[n * Kd + k] : b[k * N + n];
            s += a[m * Kd + k] * bv;
            t += Math.abs(a[m * Kd + k] * bv);
          }
          ref[m * N + n] = s;
          scale[m * N + n] = t;
        }
      }
      return { ref, scale };
    },
    ...tol,
    needs: [...needsOf([o.dtype]), ...(o.needs ?? [])],
  };
};

/** Sizes of the uniform + output for a case's launch. */
const outBytes = (c: Case) => Math.max(4, Math.ceil((c.out.n * (c.out.dtype === "f32" ? 4 : 2)) / 4) * 4);

/** Run a case's kernel on a backend; returns the decoded output. Releases everything it allocated. */
export const runOn = async (b: Backend, c: Case): Promise<Float64Array> => {
  const bufs: DeviceBuffer[] = [];
  const alloc = async (bytes: number, label: string) => {
    const buf = await Effect.runPromise(b.allocate(bytes, label));
    bufs.push(buf);
    return buf;
  };
  try {
    const ins: DeviceBuffer[] = [];
    for (const [i, data] of c.inputs.entries()) {
      const buf = await alloc(Math.max(4, data.byteLength), `in${i}`);
      await Effect.runPromise(b.upload(buf, data));
      ins.push(buf);
    }
    const out = await alloc(outBytes(c), "out");
    const u = await alloc(16, "uniform");
    await Effect.runPromise(b.upload(u, c.plan.uniform(c.sizes)));
    await Effect.runPromise(
      b.dispatch([{
        kernel: c.plan.kernel,
        buffers: [...ins, out, u],
        workgroups: c.plan.workgroups(c.sizes),
      }]),
    );
    return decode(await Effect.runPromise(b.download(out)), c.out.dtype, c.out.n);
  } finally {
    for (const buf of bufs) b.release(buf);
  }
};

/** Run a case's cpu body directly (the oracle of the cross-backend comparison). */
export const runCpuBody = (c: Case): Float64Array => {
  const bufs = c.inputs.map((d) => {
    const ab = new ArrayBuffer(Math.max(4, Math.ceil(d.byteLength / 4) * 4));
    new Uint8Array(ab).set(d);
    return ab;
  });
  const out = new ArrayBuffer(outBytes(c));
  const u = c.plan.uniform(c.sizes);
  const ub = new ArrayBuffer(u.byteLength);
  new Uint8Array(ub).set(u);
  c.plan.kernel.cpu!([...bufs, out, ub], c.plan.workgroups(c.sizes));
  return decode(new Uint8Array(out), c.out.dtype, c.out.n);
};

/** Compare; returns a description of the worst violation, or undefined when all elements pass. */
export const compare = (
  got: Float64Array,
  ref: Float64Array,
  scale: Float64Array,
  atol: number,
  rtol: number,
): string | undefined => {
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(got[i] - ref[i]);
    const lim = atol + rtol * scale[i];
    if (!(d <= lim) && (worst < 0 || d - lim > worstExcess)) {
      worst = i;
      worstExcess = d - lim;
    }
  }
  if (worst < 0) return undefined;
  return `element ${worst}: got ${got[worst]}, want ${ref[worst]} (|d| = ${
    Math.abs(got[worst] - ref[worst]).toExponential(3)
  } > ${atol} + ${rtol}·${scale[worst].toExponential(3)})`;
};

/** Backends available in this process, plus the reasons others are skipped. */
export const availableBackends = async (
  want: readonly ("cpu" | "webgpu" | "wgpu")[] = ["cpu", "webgpu", "wgpu"],
): Promise<{ backends: Backend[]; skipped: string[] }> => {
  const backends: Backend[] = [];
  const skipped: string[] = [];
  const tryMake = async (name: string, make: () => Promise<Backend>) => {
    try {
      backends.push(await make());
    } catch (e) {
      skipped.push(`${name}: ${e instanceof Error ? e.message : String(e)}`);
    }
  };
  if (want.includes("cpu")) {
    await tryMake("cpu", async () => {
      const m = await import("../../runtime/src/backends/cpu.ts");
      return Effect.runPromise(m.makeCpuBackend());
    });
  }
  if (want.includes("webgpu")) {
    if (!(globalThis.navigator as Navigator | undefined)?.gpu) skipped.push("webgpu: navigator.gpu absent");
    else {
      await tryMake("webgpu", async () => {
        const m = await import("../../runtime/src/backends/webgpu.ts");
        return Effect.runPromise(m.makeWebgpuBackend());
      });
    }
  }
  if (want.includes("wgpu")) {
    await tryMake("wgpu", async () => {
      const path = "../../runtime/src/backends/wgpu.ts";
      // deno-lint-ignore no-explicit-any
      const m: any = await import(path);
      if (typeof m.makeWgpuBackend !== "function") {
        throw new Error("runtime/src/backends/wgpu.ts has no makeWgpuBackend");
      }
      return await Effect.runPromise(m.makeWgpuBackend()) as Backend;
    });
  }
  return { backends, skipped };
};

/** Whether a backend has every feature a case needs (cooperative matrix: any feature naming it). */
export const supports = (b: Backend, c: Case): string | undefined => {
  for (const f of c.needs) {
    const ok = f === "cooperative-matrix" ? hasCoop(b) : b.features.has(f);
    if (!ok && b.kind !== "cpu") return `${b.kind} lacks ${f}`;
  }
  return undefined;
};

/** Whether a backend reports a cooperative-matrix feature (wgpu-native's native feature, by name). */
export const hasCoop = (b: Backend): boolean => [...b.features].some((f) => /cooperative.?matrix/i.test(f));
