import { loadSgemm } from "../runtime/src/model/blas.ts";
await loadSgemm();
const lib = Deno.dlopen("libc.so.6", { getenv: { parameters: ["buffer"], result: "pointer" } });
for (const n of ["OPENBLAS_CORETYPE", "OPENBLAS_THREAD_TIMEOUT"]) { const p = lib.symbols.getenv(new TextEncoder().encode(n + "\0")); console.log(n, p ? new Deno.UnsafePointerView(p).getCString() : null); }
