/**
 * Single-precision GEMM for the model's CPU path: OpenBLAS `cblas_sgemm` through FFI (`Deno.dlopen` under
 * Deno, `bun:ffi` under Bun), with a blocked pure-TypeScript fallback when the library cannot be loaded.
 *
 * Library: `$LONGCTX_BLAS` if set, else `libopenblas.so.0` (then `libopenblas.so`, `libcblas.so.3`) from the
 * system loader path. `LONGCTX_BLAS=none` forces the TypeScript fallback.
 * @module
 */

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
  gemm(
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    alpha: number,
    a: Float32Array,
    lda: number,
    b: Float32Array,
    ldb: number,
    beta: number,
    c: Float32Array,
    ldc: number,
  ): void;
}

const CblasRowMajor = 101;
const CblasNoTrans = 111;
const CblasTrans = 112;

type Env = { get(name: string): string | undefined };
const env = (): Env => {
  const g = globalThis as unknown as {
    Deno?: { env: Env };
    process?: { env: Record<string, string | undefined> };
  };
  if (g.Deno) return g.Deno.env;
  return { get: (n) => g.process?.env[n] };
};

const candidates = (): string[] => {
  const forced = env().get("LONGCTX_BLAS");
  if (forced) return forced === "none" ? [] : [forced];
  return [
    "libopenblas.so.0",
    "libopenblas.so",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
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

const openDeno = (path: string): RawSgemm => {
  const lib = Deno.dlopen(path, {
    cblas_sgemm: { parameters: [...sgemmParams], result: "void" },
  });
  return lib.symbols.cblas_sgemm as unknown as RawSgemm;
};

const openBun = async (path: string): Promise<RawSgemm> => {
  const ffi = await import("bun:ffi" as string);
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
  for (const path of candidates()) {
    try {
      const raw = isBun ? await openBun(path) : openDeno(path);
      cached = {
        name: `openblas(${path})`,
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
