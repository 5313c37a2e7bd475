/**
 * A thin, runtime-neutral FFI layer over the generated wgpu-native description (`ffi_generated.ts`):
 * one `open()` that returns callable symbols under Deno (`Deno.dlopen`) and Bun (`bun:ffi`), plus
 * memory helpers (addresses of JS buffers, views of native memory) and callbacks.
 *
 * Value conventions at this layer (same in both runtimes):
 * - pointers and object handles are `number`s (0 = NULL; user-space addresses fit in 53 bits on
 *   x86-64 and arm64);
 * - `u64`/`i64` arguments take `number | bigint`, results are `bigint`; `usize` results are `number`;
 * - a struct passed or returned **by value** is a `Uint8Array` of exactly its C size (layout from
 *   `structs`).
 *
 * Struct-by-value: Deno passes `{ struct: [...] }` natively. `bun:ffi` has no struct-by-value, so the
 * Bun adapter lowers each by-value struct to what the platform C ABI does with it:
 * - x86-64 SysV: a struct ≤ 16 bytes whose eightbytes are INTEGER goes in general registers (one `u64`
 *   argument per eightbyte) when enough remain; a larger struct (MEMORY class) is copied onto the stack,
 *   which we reproduce by filling the six integer registers with padding and appending its eightbytes as
 *   further `u64` arguments (the 7th+ integer arguments are passed on the stack in order).
 * - arm64 AAPCS64: a struct ≤ 16 bytes (not a float HFA) goes in general registers as `u64`s; a larger
 *   struct is passed as a pointer to a caller-made copy.
 * Struct returns ≤ 8 bytes (`WGPUFuture`) come back in rax / x0 as a `u64`. Float-class eightbytes and
 * larger struct returns are rejected with an error at `open()` (none are on the compute path).
 * Callbacks receiving `WGPUStringView` by value are lowered the same way (two `u64`s).
 * @module
 */
import { callbacks, functions, type Scalar, type Signature, structs, type TypeRef } from "./ffi_generated.ts";

/** A native address (0 = NULL). */
export type Ptr = number;
/** Argument values accepted at this layer. */
export type Arg = number | bigint | Uint8Array;
/** A native function as this layer exposes it. */
export type NativeFn = (...args: Arg[]) => number | bigint | Uint8Array | undefined;
/** A JS function callable from native code; `close()` frees its trampoline. */
export interface NativeCallback {
  readonly ptr: Ptr;
  close(): void;
}
/** Names of generated callback signatures. */
export type CallbackName = keyof typeof callbacks;
/** Names of generated functions. */
export type FunctionName = keyof typeof functions;

/** An opened library: `call.name(...)` for every requested symbol. */
export interface NativeLib<N extends FunctionName> {
  readonly call: { readonly [K in N]: NativeFn };
  close(): void;
}

/** The runtime-neutral FFI surface. */
export interface Ffi {
  readonly runtime: "deno" | "bun";
  readonly arch: "x86_64" | "aarch64";
  /** dlopen `path` and bind `names`. Throws `Error` when the library or a symbol cannot be loaded. */
  open<N extends FunctionName>(path: string, names: readonly N[]): NativeLib<N>;
  /** Address of JS memory. The caller keeps `view` reachable until native code is done with it. */
  ptrOf(view: ArrayBufferView): Ptr;
  /** A zero-copy `ArrayBuffer` over native memory (valid while the native memory is). */
  view(ptr: Ptr, bytes: number): ArrayBuffer;
  /** Copy `bytes` of native memory at `ptr` into a new `Uint8Array`. */
  copyOut(ptr: Ptr, bytes: number): Uint8Array;
  /** Read a NUL-terminated UTF-8 string at `ptr` ("" for NULL). */
  cstring(ptr: Ptr): string;
  /** Make a native function pointer that calls `fn` (struct-by-value arguments arrive as `Uint8Array`). */
  callback(name: CallbackName, fn: (...args: (number | bigint | Uint8Array)[]) => void): NativeCallback;
}

const isBun = "Bun" in globalThis;

/** Normalised CPU architecture; throws on anything but x86-64 and arm64 (the ABIs modelled here). */
const detectArch = (): "x86_64" | "aarch64" => {
  const a = isBun
    ? (globalThis as unknown as { process: { arch: string } }).process.arch
    : (globalThis as unknown as { Deno: { build: { arch: string } } }).Deno.build.arch;
  if (a === "x64" || a === "x86_64") return "x86_64";
  if (a === "arm64" || a === "aarch64") return "aarch64";
  throw new Error(`unsupported CPU architecture ${a} (the wgpu FFI layer models x86-64 and arm64)`);
};

const structOf = (t: TypeRef) => (typeof t === "string" ? undefined : structs[t.struct]);

/** Eightbyte classes of a struct: "int" unless every field overlapping it is f32/f64. */
const eightbytes = (name: string): ("int" | "sse")[] => {
  const out: ("int" | "sse")[] = [];
  const walk = (s: (typeof structs)[keyof typeof structs], base: number) => {
    for (const f of Object.values(s.fields)) {
      const inner = structOf(f.type);
      if (inner) {
        walk(inner, base + f.offset);
        continue;
      }
      const slot = Math.floor((base + f.offset) / 8);
      const sse = f.type === "f32" || f.type === "f64";
      out[slot] = out[slot] === "int" || !sse ? "int" : "sse";
    }
  };
  const s = structs[name as keyof typeof structs];
  walk(s, 0);
  for (let i = 0; i < Math.ceil(s.size / 8); i++) out[i] ??= "int";
  return out;
};

// ---------------------------------------------------------------------------------------------- Deno

// deno-lint-ignore no-explicit-any
type Any = any;

const denoType = (t: TypeRef): Any => {
  if (typeof t !== "string") {
    const s = structs[t.struct];
    if (s.union) return { struct: Array(s.size / 8).fill("u64") };
    return { struct: Object.values(s.fields).map((f) => denoType(f.type)) };
  }
  return t === "ptr" ? "usize" : t;
};

const makeDeno = (): Ffi => {
  const D = (globalThis as Any).Deno;
  const arch = detectArch();
  const toPtr = (p: Ptr) => (p === 0 ? null : D.UnsafePointer.create(BigInt(p)));
  const post = (t: TypeRef) => {
    if (t === "ptr" || t === "usize") return (r: Any) => Number(r);
    if (t === "u64" || t === "i64") return (r: Any) => BigInt(r);
    return undefined;
  };
  return {
    runtime: "deno",
    arch,
    open(path, names) {
      const defs: Record<string, Any> = {};
      for (const n of names) {
        const sig: Signature = functions[n];
        defs[n] = { parameters: sig.params.map(([, t]) => denoType(t)), result: denoType(sig.result) };
      }
      const lib = D.dlopen(path, defs);
      const call: Record<string, NativeFn> = {};
      for (const n of names) {
        const f = lib.symbols[n];
        const p = post(functions[n].result);
        call[n] = p ? (...a: Arg[]) => p(f(...a)) : (...a: Arg[]) => f(...a);
      }
      return { call: call as Any, close: () => lib.close() };
    },
    ptrOf: (v) => Number(D.UnsafePointer.value(D.UnsafePointer.of(v))),
    view: (
      p,
      bytes,
    ) => (bytes === 0 ? new ArrayBuffer(0) : new D.UnsafePointerView(toPtr(p)).getArrayBuffer(bytes)),
    copyOut: (p, bytes) => {
      const out = new Uint8Array(bytes);
      if (bytes > 0) new D.UnsafePointerView(toPtr(p)).copyInto(out);
      return out;
    },
    cstring: (p) => (p === 0 ? "" : new D.UnsafePointerView(toPtr(p)).getCString()),
    callback(name, fn) {
      const sig: Signature = callbacks[name];
      const conv = sig.params.map(([, t]) => post(t));
      const cb = new D.UnsafeCallback(
        { parameters: sig.params.map(([, t]) => denoType(t)), result: denoType(sig.result) },
        (...a: Any[]) => fn(...a.map((x, i) => (conv[i] ? conv[i]!(x) : x))),
      );
      return { ptr: Number(D.UnsafePointer.value(cb.pointer)), close: () => cb.close() };
    },
  };
};

// ----------------------------------------------------------------------------------------------- Bun

/** How one logical argument becomes Bun arguments. */
type Lowered =
  | { kind: "scalar"; type: string; cls: "gpr" | "xmm" | "stack" }
  | { kind: "regs"; words: number } // struct in consecutive GPRs
  | { kind: "stack"; words: number } // struct copied on the stack (x86-64 MEMORY class)
  | { kind: "byref" }; // struct as pointer to a copy (arm64 > 16 bytes)

const bunScalar = (t: Scalar): string => (t === "ptr" ? "ptr" : t === "usize" ? "u64" : t);

/** Lower a signature's parameters to Bun scalar arguments for the platform ABI (module docs). For tests too. */
export const lowerParams = (
  what: string,
  params: readonly (readonly [string, TypeRef])[],
  arch: "x86_64" | "aarch64",
  forCallback: boolean,
): { lowered: Lowered[]; args: string[] } => {
  const maxGpr = arch === "x86_64" ? 6 : 8;
  let gpr = 0;
  let xmm = 0;
  const lowered: Lowered[] = [];
  for (const [pname, t] of params) {
    if (typeof t === "string") {
      const isFloat = t === "f32" || t === "f64";
      if (isFloat) {
        if (++xmm > 8) throw new Error(`${what}: more than 8 float arguments are not modelled`);
        lowered.push({ kind: "scalar", type: t, cls: "xmm" });
      } else {
        lowered.push({ kind: "scalar", type: bunScalar(t), cls: gpr < maxGpr ? "gpr" : "stack" });
        gpr++;
      }
      continue;
    }
    const s = structs[t.struct];
    const cls = eightbytes(t.struct);
    if (s.size <= 16) {
      if (cls.includes("sse")) {
        throw new Error(`${what}: float struct ${t.struct} by value is not supported in Bun`);
      }
      if (gpr + cls.length <= maxGpr) {
        lowered.push({ kind: "regs", words: cls.length });
        gpr += cls.length;
      } else if (arch === "x86_64" && !forCallback) {
        lowered.push({ kind: "stack", words: cls.length });
      } else throw new Error(`${what}: ${pname} would spill to the stack; not modelled`);
    } else if (arch === "x86_64") {
      if (forCallback) {
        throw new Error(`${what}: memory-class struct argument in a callback is not supported`);
      }
      lowered.push({ kind: "stack", words: s.size / 8 });
    } else {
      lowered.push({ kind: "byref" });
      gpr++;
    }
  }
  // Bun argument list: register arguments in order, integer padding up to the register count when
  // anything is on the stack, then the stack words in argument order.
  const args: string[] = [];
  const stack: string[] = [];
  let used = 0;
  for (const l of lowered) {
    if (l.kind === "scalar") {
      if (l.cls === "stack") stack.push(l.type);
      else {
        args.push(l.type);
        if (l.cls === "gpr") used++;
      }
    } else if (l.kind === "regs") {
      for (let i = 0; i < l.words; i++) args.push("u64");
      used += l.words;
    } else if (l.kind === "stack") { for (let i = 0; i < l.words; i++) stack.push("u64"); }
    else {
      args.push("ptr");
      used++;
    }
  }
  if (stack.length > 0) {
    for (; used < maxGpr; used++) args.push("u64");
  }
  return { lowered, args: [...args, ...stack] };
};

const makeBun = async (): Promise<Ffi> => {
  const bun: Any = await import("bun:ffi" as string);
  const arch = detectArch();
  const words = (b: Uint8Array): bigint[] => {
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    const out: bigint[] = [];
    for (let o = 0; o < b.byteLength; o += 8) out.push(dv.getBigUint64(o, true));
    return out;
  };
  const fromWords = (ws: Any[], size: number): Uint8Array => {
    const out = new Uint8Array(Math.ceil(size / 8) * 8);
    const dv = new DataView(out.buffer);
    ws.forEach((w, i) => dv.setBigUint64(i * 8, BigInt.asUintN(64, BigInt(w)), true));
    return out.subarray(0, size);
  };
  const resultOf = (name: string, t: TypeRef): { type: string; post?: (r: Any) => Any } => {
    if (typeof t !== "string") {
      const s = structs[t.struct];
      if (s.size > 8 || eightbytes(t.struct).includes("sse")) {
        throw new Error(`${name}: struct return ${t.struct} is not supported in Bun`);
      }
      return { type: "u64", post: (r) => fromWords([r], s.size) };
    }
    if (t === "ptr") return { type: "ptr", post: (r) => (r === null ? 0 : Number(r)) };
    if (t === "usize") return { type: "u64", post: (r) => Number(r) };
    if (t === "u64" || t === "i64") return { type: t, post: (r) => BigInt(r) };
    return { type: t };
  };
  return {
    runtime: "bun",
    arch,
    open(path, names) {
      const defs: Record<string, Any> = {};
      const plans: Record<string, { lowered: Lowered[]; post?: (r: Any) => Any }> = {};
      for (const n of names) {
        const sig: Signature = functions[n];
        const { lowered, args } = lowerParams(n, sig.params, arch, false);
        const res = resultOf(n, sig.result);
        defs[n] = { args, returns: res.type };
        plans[n] = { lowered, post: res.post };
      }
      const lib = bun.dlopen(path, defs);
      const call: Record<string, NativeFn> = {};
      for (const n of names) {
        const f = lib.symbols[n];
        const { lowered, post } = plans[n];
        const simple = lowered.every((l) => l.kind === "scalar" && l.cls !== "stack");
        const maxGpr = arch === "x86_64" ? 6 : 8;
        const wrapped = simple ? (...a: Arg[]) => f(...a) : (...a: Arg[]) => {
          const regs: Any[] = [];
          const stack: Any[] = [];
          const keep: Uint8Array[] = [];
          let used = 0;
          lowered.forEach((l, i) => {
            const v = a[i];
            if (l.kind === "scalar") {
              if (l.cls === "stack") stack.push(v);
              else {
                regs.push(v);
                if (l.cls === "gpr") used++;
              }
            } else if (l.kind === "regs") {
              for (const w of words(v as Uint8Array)) regs.push(w);
              used += l.words;
            } else if (l.kind === "stack") {
              const padded = new Uint8Array(l.words * 8);
              padded.set(v as Uint8Array);
              for (const w of words(padded)) stack.push(w);
            } else {
              const copy = (v as Uint8Array).slice();
              keep.push(copy);
              regs.push(copy);
              used++;
            }
          });
          if (stack.length > 0) { for (; used < maxGpr; used++) regs.push(0); }
          const r = f(...regs, ...stack);
          keep.length = 0;
          return r;
        };
        call[n] = post ? (...a: Arg[]) => post(wrapped(...a)) : wrapped;
      }
      return { call: call as Any, close: () => lib.close() };
    },
    ptrOf: (v) => (v.byteLength === 0 ? 0 : Number(bun.ptr(v))),
    view: (p, bytes) => (bytes === 0 ? new ArrayBuffer(0) : bun.toArrayBuffer(p, 0, bytes)),
    copyOut: (
      p,
      bytes,
    ) => (bytes === 0 ? new Uint8Array(0) : new Uint8Array(bun.toArrayBuffer(p, 0, bytes)).slice()),
    cstring: (p) => (p === 0 ? "" : String(new bun.CString(p))),
    callback(name, fn) {
      const sig: Signature = callbacks[name];
      const { lowered, args } = lowerParams(name, sig.params, arch, true);
      const res = resultOf(name, sig.result);
      const cb = new bun.JSCallback((...raw: Any[]) => {
        const out: (number | bigint | Uint8Array)[] = [];
        let k = 0;
        lowered.forEach((l, i) => {
          const t = sig.params[i][1];
          if (l.kind === "regs") {
            out.push(
              fromWords(
                raw.slice(k, k + l.words),
                structs[(t as { struct: keyof typeof structs }).struct].size,
              ),
            );
            k += l.words;
          } else {
            const v = raw[k++];
            out.push(
              t === "ptr" || t === "usize"
                ? (v === null ? 0 : Number(v))
                : t === "u64" || t === "i64"
                ? BigInt(v)
                : v,
            );
          }
        });
        fn(...out);
      }, { args, returns: res.type });
      return { ptr: Number(cb.ptr), close: () => cb.close() };
    },
  };
};

let cached: Ffi | undefined;

/** The FFI layer for the running runtime (Deno or Bun). Throws on other runtimes or architectures. */
export const getFfi = async (): Promise<Ffi> => {
  if (cached) return cached;
  if (isBun) cached = await makeBun();
  else if ("Deno" in globalThis) cached = makeDeno();
  else throw new Error("the wgpu FFI layer needs Deno or Bun");
  return cached;
};
