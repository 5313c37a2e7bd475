const lib = Deno.dlopen("libopenblas.so.0", { openblas_get_corename: { parameters: [], result: "pointer" }, openblas_get_config: { parameters: [], result: "pointer" }, openblas_get_num_threads: { parameters: [], result: "i32" } });
const s = (p: Deno.PointerValue) => new Deno.UnsafePointerView(p!).getCString();
console.log(s(lib.symbols.openblas_get_corename()), "|", s(lib.symbols.openblas_get_config()), "| threads", lib.symbols.openblas_get_num_threads());
