/**
 * Single-precision GEMM for the model's CPU path: OpenBLAS `cblas_sgemm` through FFI (`Deno.dlopen` under
 * Deno, `bun:ffi` under Bun), with a blocked pure-TypeScript fallback when the library cannot be loaded.
 *
 * Library: `$LONGCTX_BLAS` if set, else `libopenblas.so.0` (then `libopenblas.so`, the Debian
 * `openblas-pthread/` path, `libcblas.so.3`). `LONGCTX_BLAS=none` forces the TypeScript fallback.
 *
 * Kernel choice: OpenBLAS's `DYNAMIC_ARCH` build reads `OPENBLAS_CORETYPE` when the library loads. Version
 * 0.3.21 (Debian 12) detects this project's virtualised Sapphire Rapids CPU as `Prescott` (SSE3 kernels)
 * although it has AVX-512. When the variable is unset and `/proc/cpuinfo` lists avx512f/bw/dq/vl,
 * {@link loadSgemm} sets it to `SkylakeX` before opening the library: one layer's weight GEMMs at 4K tokens
 * go from ~32 to 107–125 GFLOP/s (measured 2026-11-30 with a one-layer micro benchmark since removed, 2-core dev machine).
 * Set `OPENBLAS_CORETYPE` yourself to override; the kernel in use is part of {@link Sgemm.name}.
 *
 * It also sets `OPENBLAS_THREAD_TIMEOUT=4` when unset: OpenBLAS's idle threads then sleep at once instead of
 * spinning (default ~2^28 cycles) after each GEMM, which otherwise takes the CPU from whatever runs between
 * GEMMs (measured 2026-11-30 with the former attention workers: 4K prefill 31.0 s and 26.9 s without it, 18.0 s
 * with it; load average 3.1–3.6 vs 1.6 — the machine is shared).
 * @module
 */
import type { Gemm } from "@longctx/graph";

/** Row-major GEMM: `C[m, n] = alpha · op(A) · op(B) + beta · C`. */
export interface Sgemm {
  /** Which implementation runs: `"openblas"` (FFI, with the library path) or `"ts"` (fallback). */
  readonly name: string;
  /**
   * `C = alpha · op(A) · op(B) + beta · C`, all f32, row-major.
   * `op(A)` is `[m, k]`: A is `[m, lda≥k]` when `transA` is false, `[k, lda≥m]` when true.
   * `op(B)` is `[k, n]`: B is `[k, ldb≥n]` when `transB` is false, `[n, ldb≥k]` when true. C is `[m, ldc≥n]`.
   * Arrays may be subarray views (their byte offsets are honoured). Does no bounds checking beyond what the
   * caller guarantees (an internal kernel; callers size the views).
   */
  readonly gemm: Gemm;
}

const CblasRowMajor = 101;
const CblasNoTrans = 111;
const CblasTrans = 112;

type Env = {
  get(name: string): string | undefined;
  set(name: string, value: string): void;
  setNative?: (name: string, value: string) => Promise<void>;
};
const env = (): Env => {
  const g = globalThis as unknown as {
    Deno?: { env: Env };
    process?: { env: Record<string, string | undefined> };
  };
  if (g.Deno) return g.Deno.env;
  return {
    get: (n) => g.process?.env[n],
    set: (n, v) => {
      if (g.process) g.process.env[n] = v;
    },
    // Bun's process.env does not reach libc's environment, which OpenBLAS reads: call setenv(3) too.
    setNative: async (n: string, v: string) => {
      const ffi = await import("bun:ffi" as string);
      const libc = ffi.dlopen("libc.so.6", { setenv: { args: ["ptr", "ptr", "i32"], returns: "i32" } });
      const z = (t: string) => new TextEncoder().encode(t + "\0");
      libc.symbols.setenv(z(n), z(v), 1);
      libc.close();
    },
  };
};

/**
 * `OPENBLAS_CORETYPE` to force before the library loads: `SkylakeX` on a CPU with AVX-512 F/BW/DQ/VL
 * (see the module note), else undefined (keep OpenBLAS's own detection). Reads `/proc/cpuinfo` (Linux).
 */
const wantedCoretype = async (): Promise<string | undefined> => {
  try {
    const { readFileSync } = await import("node:fs");
    const info = readFileSync("/proc/cpuinfo", "utf8");
    const line = info.split("\n").find((l) => l.startsWith("flags")) ?? "";
    const flags = new Set(line.split(/\s+/));
    return ["avx512f", "avx512bw", "avx512dq", "avx512vl"].every((f) => flags.has(f))
      ? "SkylakeX"
      : undefined;
  } catch {
    return undefined;
  }
};

const candidates = (): string[] => {
  const forced = env().get("LONGCTX_BLAS");
  if (forced) return forced === "none" ? [] : [forced];
  return [
    "libopenblas.so.0",
    "libopenblas.so",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    // Where `dpkg -x libopenblas0-pthread_*.deb /` puts it (no update-alternatives link, e.g. the device machine).
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "libcblas.so.3",
  ];
};

const sgemmParams = [
  "i32",
  "i32",
  "i32",
  "i32",
  "i32",
  "i32",
  "f32",
  "buffer",
  "i32",
  "buffer",
  "i32",
  "f32",
  "buffer",
  "i32",
] as const;

type RawSgemm = (...args: (number | Float32Array)[]) => void;
/** The opened library: `cblas_sgemm`, and OpenBLAS's kernel name and thread control when it exports them. */
interface RawLib {
  readonly sgemm: RawSgemm;
  readonly corename?: string;
  readonly setThreads?: (n: number) => void;
  readonly getThreads?: () => number;
}

const openDeno = (path: string): RawLib => {
  const lib = Deno.dlopen(path, {
    cblas_sgemm: { parameters: [...sgemmParams], result: "void" },
    openblas_get_corename: { parameters: [], result: "pointer", optional: true },
    openblas_set_num_threads: { parameters: ["i32"], result: "void", optional: true },
    openblas_get_num_threads: { parameters: [], result: "i32", optional: true },
  });
  const sy = lib.symbols;
  const core = sy.openblas_get_corename ? sy.openblas_get_corename() : null;
  return {
    sgemm: sy.cblas_sgemm as unknown as RawSgemm,
    corename: core ? new Deno.UnsafePointerView(core).getCString() : undefined,
    setThreads: sy.openblas_set_num_threads ? (n) => sy.openblas_set_num_threads!(n) : undefined,
    getThreads: sy.openblas_get_num_threads ? () => sy.openblas_get_num_threads!() : undefined,
  };
};

const openBun = async (path: string): Promise<RawLib> => {
  const ffi = await import("bun:ffi" as string);
  const sgemm = await openBunSgemm(ffi, path);
  try {
    const x = ffi.dlopen(path, {
      openblas_get_corename: { args: [], returns: "cstring" },
      openblas_set_num_threads: { args: ["i32"], returns: "void" },
      openblas_get_num_threads: { args: [], returns: "i32" },
    });
    return {
      sgemm,
      corename: String(x.symbols.openblas_get_corename()),
      setThreads: (n) => x.symbols.openblas_set_num_threads(n),
      getThreads: () => x.symbols.openblas_get_num_threads() as number,
    };
  } catch {
    return { sgemm };
  }
};

// deno-lint-ignore no-explicit-any
const openBunSgemm = (ffi: any, path: string): RawSgemm => {
  const lib = ffi.dlopen(path, {
    cblas_sgemm: {
      args: [
        "i32",
        "i32",
        "i32",
        "i32",
        "i32",
        "i32",
        "f32",
        "ptr",
        "i32",
        "ptr",
        "i32",
        "f32",
        "ptr",
        "i32",
      ],
      returns: "void",
    },
  });
  return lib.symbols.cblas_sgemm as RawSgemm;
};

let threadControl: Pick<RawLib, "setThreads" | "getThreads"> = {};
/**
 * Set OpenBLAS's thread count (process-wide; no-op for the TypeScript GEMM or a library without
 * `openblas_set_num_threads`). @returns the previous count (0 when unknown).
 */
export const setBlasThreads = (n: number): number => {
  const prev = threadControl.getThreads?.() ?? 0;
  threadControl.setThreads?.(n);
  return prev;
};

/** Blocked TypeScript GEMM (the fallback; ~1 GFLOP/s). Same contract as {@link Sgemm.gemm}. */
export const tsSgemm: Sgemm = {
  name: "ts",
  gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
    // Gather op(B) as [n, k] rows so the inner loop is a contiguous dot product.
    const bt = new Float32Array(n * k);
    for (let j = 0; j < n; j++) {
      for (let p = 0; p < k; p++) bt[j * k + p] = transB ? b[j * ldb + p] : b[p * ldb + j];
    }
    const arow = new Float32Array(k);
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < k; p++) arow[p] = transA ? a[p * lda + i] : a[i * lda + p];
      const ci = i * ldc;
      for (let j = 0; j < n; j++) {
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        const o = j * k;
        let p = 0;
        for (; p + 3 < k; p += 4) {
          s0 += arow[p] * bt[o + p];
          s1 += arow[p + 1] * bt[o + p + 1];
          s2 += arow[p + 2] * bt[o + p + 2];
          s3 += arow[p + 3] * bt[o + p + 3];
        }
        for (; p < k; p++) s0 += arow[p] * bt[o + p];
        const dot = s0 + s1 + s2 + s3;
        c[ci + j] = alpha * dot + (beta === 0 ? 0 : beta * c[ci + j]);
      }
    }
  },
};

let cached: Sgemm | undefined;
let loadNote = "";

/**
 * The process-wide GEMM: OpenBLAS through FFI when it loads, else {@link tsSgemm}. Never fails; when it
 * falls back, {@link blasNote} says why (and a one-line warning goes to stderr).
 */
export const loadSgemm = async (): Promise<Sgemm> => {
  if (cached) return cached;
  const isBun = "Bun" in globalThis;
  const errors: string[] = [];
  const defaults: [string, string | undefined][] = [
    ["OPENBLAS_CORETYPE", await wantedCoretype()],
    ["OPENBLAS_THREAD_TIMEOUT", "4"],
  ];
  for (const [name, value] of defaults) {
    if (value === undefined || env().get(name) !== undefined) continue;
    const e = env();
    e.set(name, value);
    try {
      await e.setNative?.(name, value);
    } catch { /* no libc.so.6: keep OpenBLAS's own default */ }
  }
  for (const path of candidates()) {
    try {
      const lib = isBun ? await openBun(path) : openDeno(path);
      const raw = lib.sgemm;
      threadControl = lib;
      cached = {
        name: lib.corename ? `openblas(${path}, ${lib.corename})` : `openblas(${path})`,
        gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) {
          if (m === 0 || n === 0) return;
          raw(
            CblasRowMajor,
            transA ? CblasTrans : CblasNoTrans,
            transB ? CblasTrans : CblasNoTrans,
            m,
            n,
            k,
            alpha,
            a,
            lda,
            b,
            ldb,
            beta,
            c,
            ldc,
          );
        },
      };
      return cached;
    } catch (e) {
      errors.push(`${path}: ${(e as Error).message}`);
    }
  }
  loadNote = errors.length === 0
    ? "LONGCTX_BLAS=none: using the TypeScript GEMM"
    : `OpenBLAS not loaded (${errors.join("; ")}); using the slow TypeScript GEMM. ` +
      "Install libopenblas0 or set LONGCTX_BLAS to a cblas library path.";
  if (errors.length > 0) console.warn(`[longctx] ${loadNote}`);
  cached = tsSgemm;
  return cached;
};

/** Why the TypeScript fallback is in use ("" when OpenBLAS loaded or nothing was loaded yet). */
export const blasNote = (): string => loadNote;
