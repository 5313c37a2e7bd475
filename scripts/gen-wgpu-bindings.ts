/**
 * Generate `runtime/src/wgpu/ffi_generated.ts` from the `webgpu.h` + `wgpu.h` that ship with wgpu-native.
 *
 * Usage: `deno run -A scripts/gen-wgpu-bindings.ts [--check] [headersDir]`
 * - headers directory: argument, else env `LONGCTX_WGPU_HEADERS`, else the directory of
 *   `LONGCTX_WGPU_LIB`, else `<repo>/.cache/wgpu`.
 * - `--check`: exit 1 when the committed file differs from what the headers generate (no write).
 *
 * The output is runtime-neutral data: enums and flag constants, struct layouts (size, alignment, field
 * offsets for the LP64 C ABI shared by x86-64 SysV and AArch64 AAPCS64 — both use natural alignment for
 * every scalar and 8-byte pointers, so one table serves both), callback and function signatures. The
 * adapter in `runtime/src/wgpu/ffi.ts` turns the signatures into `Deno.dlopen` or `bun:ffi` symbols.
 * @module
 */

/** A C scalar as the FFI layers name them. `ptr` covers object handles, pointers and function pointers. */
export type Scalar =
  | "void"
  | "u8"
  | "i8"
  | "u16"
  | "i16"
  | "u32"
  | "i32"
  | "u64"
  | "i64"
  | "f32"
  | "f64"
  | "usize"
  | "ptr";

/** A parameter/field type: a scalar, or a struct (by value) named by its C name. */
export type TypeRef = Scalar | { readonly struct: string };

interface Field {
  name: string;
  type: TypeRef;
  /** Original C type text (for documentation and pointer targets). */
  ctype: string;
}
interface StructDef {
  name: string;
  union: boolean;
  fields: Field[];
}
interface FnDef {
  name: string;
  result: TypeRef;
  params: { name: string; type: TypeRef; ctype: string }[];
}

const SCALARS: Record<string, Scalar> = {
  void: "void",
  uint8_t: "u8",
  int8_t: "i8",
  char: "i8",
  uint16_t: "u16",
  int16_t: "i16",
  uint32_t: "u32",
  int32_t: "i32",
  int: "i32",
  uint64_t: "u64",
  int64_t: "i64",
  size_t: "usize",
  float: "f32",
  double: "f64",
};

const SCALAR_SIZE: Record<Exclude<Scalar, "void">, number> = {
  u8: 1,
  i8: 1,
  u16: 2,
  i16: 2,
  u32: 4,
  i32: 4,
  u64: 8,
  i64: 8,
  f32: 4,
  f64: 8,
  usize: 8,
  ptr: 8,
};

/** Remove comments, `#` lines' continuations stay harmless; collapse whitespace later per item. */
const stripComments = (src: string): string =>
  src.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, " ");

/** Evaluate an enum/flag initialiser: hex, decimal, `1 << n`, `|` of those, names seen before. */
const evalExpr = (expr: string, known: Map<string, number>): number => {
  const e = expr.trim().replace(/^\((.*)\)$/s, "$1");
  if (e.includes("|")) return e.split("|").reduce((a, p) => a | evalExpr(p, known), 0) >>> 0;
  const sh = e.match(/^\(?\s*(\w+)\s*<<\s*(\w+)\s*\)?$/);
  if (sh) return (evalExpr(sh[1], known) * 2 ** evalExpr(sh[2], known)) >>> 0;
  const n = e.replace(/^\((.*)\)$/, "$1").trim();
  if (/^0x[0-9a-f]+$/i.test(n)) return Number.parseInt(n, 16);
  if (/^\d+$/.test(n)) return Number.parseInt(n, 10);
  const k = known.get(n);
  if (k !== undefined) return k;
  throw new Error(`cannot evaluate ${JSON.stringify(expr)}`);
};

export interface Parsed {
  enums: Map<string, Map<string, number>>;
  flags: Map<string, Map<string, number>>;
  aliases: Map<string, string>;
  handles: Set<string>;
  callbacks: Map<string, FnDef>;
  structs: Map<string, StructDef>;
  functions: Map<string, FnDef>;
  defines: Map<string, string>;
}

/** Parse the subset of C that webgpu.h / wgpu.h use. Throws on anything it does not understand. */
export const parseHeaders = (sources: readonly string[]): Parsed => {
  const p: Parsed = {
    enums: new Map(),
    flags: new Map(),
    aliases: new Map(),
    handles: new Set(),
    callbacks: new Map(),
    structs: new Map(),
    functions: new Map(),
    defines: new Map(),
  };
  const known = new Map<string, number>();
  for (const raw of sources) {
    const src = stripComments(raw);
    for (const m of src.matchAll(/^#define (WGPU_[A-Z0-9_]+) \(([A-Z0-9_]+)\)\s*$/gm)) {
      p.defines.set(m[1], m[2]);
    }
    // Enums.
    for (const m of src.matchAll(/typedef enum (\w+)\s*\{([^}]*)\}\s*(\w+)[^;]*;/g)) {
      const values = new Map<string, number>();
      for (const item of m[2].split(",")) {
        const t = item.trim();
        if (!t) continue;
        const kv = t.match(/^(\w+)\s*=\s*(.+)$/s);
        if (!kv) throw new Error(`enum ${m[1]}: cannot parse ${t}`);
        const v = evalExpr(kv[2], known);
        known.set(kv[1], v);
        if (kv[1].endsWith("_Force32")) continue;
        values.set(kv[1], v);
      }
      p.enums.set(m[1], values);
    }
    // Scalar typedefs, flag typedefs and handles.
    for (const m of src.matchAll(/typedef ([\w ]+?)\s*(\*?)\s*(\w+)(?: WGPU_OBJECT_ATTRIBUTE)?;/g)) {
      const [, base, star, name] = m;
      if (star) {
        p.handles.add(name);
      } else if (!base.startsWith("enum") && !base.startsWith("struct")) p.aliases.set(name, base.trim());
    }
    // Flag constants: static const Type Name = expr;
    for (const m of src.matchAll(/static const (\w+) (\w+) = ([^;]+);/g)) {
      const [, type, name, expr] = m;
      if (name.endsWith("_Force32")) continue;
      const v = evalExpr(expr.replace(/0x0{8}([0-9a-f]{8})/i, "0x$1"), known);
      known.set(name, v);
      if (!p.flags.has(type)) p.flags.set(type, new Map());
      p.flags.get(type)!.set(name, v);
    }
    // Callback typedefs (not the WGPUProc* dispatch-table typedefs).
    for (const m of src.matchAll(/typedef ([\w *]+?)\s*\(\*(\w+)\)\s*\(([^)]*)\)[^;]*;/g)) {
      const [, ret, name, params] = m;
      if (name.startsWith("WGPUProc") && name !== "WGPUProc") continue;
      p.callbacks.set(name, { name, result: { struct: "" }, params: [], ...{ _ret: ret, _params: params } });
    }
    // Structs (possibly containing one anonymous union).
    for (const m of src.matchAll(/typedef struct (\w+)\s*\{((?:[^{}]|\{[^{}]*\})*)\}\s*(\w+)[^;]*;/g)) {
      p.structs.set(m[1], { name: m[1], union: false, fields: [], ...{ _body: m[2] } });
    }
    // Functions: `WGPU_EXPORT ret name(params) WGPU_FUNCTION_ATTRIBUTE;` or bare in wgpu.h's extern "C".
    for (const m of src.matchAll(/^\s*(?:WGPU_EXPORT )?([\w *]+?)\s*\b(wgpu[A-Z]\w*)\(([^)]*)\)[^;{]*;/gm)) {
      const [, ret, name, params] = m;
      if (ret.includes("typedef")) continue;
      p.functions.set(name, { name, result: { struct: "" }, params: [], ...{ _ret: ret, _params: params } });
    }
  }
  // Resolve types now that every name is known.
  const resolve = (ctype: string): TypeRef => {
    const t = ctype.replace(/\bWGPU_NULLABLE\b/g, "").replace(/\bconst\b/g, "").replace(/\bstruct\b/g, "")
      .replace(/\s+/g, " ").trim();
    if (t.includes("*")) return "ptr";
    if (t in SCALARS) return SCALARS[t];
    if (p.handles.has(t) || p.callbacks.has(t)) return "ptr";
    if (p.enums.has(t)) return "u32";
    const alias = p.aliases.get(t);
    if (alias) return resolve(alias);
    if (p.structs.has(t)) return { struct: t };
    throw new Error(`unknown C type ${JSON.stringify(ctype)}`);
  };
  const splitParam = (decl: string): { name: string; ctype: string } => {
    const d = decl.replace(/\s+/g, " ").trim();
    const m = d.match(/^(.*?)(\w+)$/s);
    if (!m) throw new Error(`cannot parse declaration ${decl}`);
    return { name: m[2], ctype: m[1].trim() };
  };
  const parseParams = (params: string) =>
    params.trim() === "void" || params.trim() === "" ? [] : params.split(",").map((x) => {
      const { name, ctype } = splitParam(x);
      return { name, ctype, type: resolve(ctype) };
    });
  for (const map of [p.callbacks, p.functions]) {
    for (const [k, v] of map) {
      const raw = v as unknown as { _ret: string; _params: string };
      map.set(k, { name: k, result: resolve(raw._ret), params: parseParams(raw._params) });
    }
  }
  for (const [k, v] of [...p.structs]) {
    const body = (v as unknown as { _body?: string })._body;
    if (body === undefined) continue;
    const fields: Field[] = [];
    let rest = body;
    // An anonymous `union { ... } name;` becomes a synthetic union struct `<Struct>_<name>`.
    rest = rest.replace(/union\s*\{([^{}]*)\}\s*(\w+)\s*;/g, (_all, inner: string, fname: string) => {
      const uname = `${k}_${fname}`;
      const ufields = inner.split(";").map((s) => s.trim()).filter(Boolean).map((s) => {
        const { name, ctype } = splitParam(s);
        return { name, ctype, type: resolve(ctype) };
      });
      p.structs.set(uname, { name: uname, union: true, fields: ufields });
      return `${uname} ${fname};`;
    });
    for (const decl of rest.split(";").map((s) => s.trim()).filter(Boolean)) {
      const { name, ctype } = splitParam(decl);
      fields.push({ name, ctype, type: resolve(ctype) });
    }
    p.structs.set(k, { name: k, union: false, fields });
  }
  return p;
};

/** Size and alignment of a type under LP64 (x86-64 SysV and AArch64 AAPCS64 agree for these types). */
export interface Layout {
  size: number;
  align: number;
  fields: { name: string; offset: number; size: number; type: TypeRef }[];
}

export const layoutOf = (p: Parsed, name: string, cache = new Map<string, Layout>()): Layout => {
  const hit = cache.get(name);
  if (hit) return hit;
  const s = p.structs.get(name);
  if (!s) throw new Error(`no struct ${name}`);
  const sizeAlign = (t: TypeRef): [number, number] => {
    if (typeof t === "string") {
      if (t === "void") throw new Error("void field");
      return [SCALAR_SIZE[t], SCALAR_SIZE[t]];
    }
    const l = layoutOf(p, t.struct, cache);
    return [l.size, l.align];
  };
  let off = 0;
  let align = 1;
  const fields: Layout["fields"] = [];
  for (const f of s.fields) {
    const [sz, al] = sizeAlign(f.type);
    align = Math.max(align, al);
    const o = s.union ? 0 : Math.ceil(off / al) * al;
    fields.push({ name: f.name, offset: o, size: sz, type: f.type });
    off = s.union ? Math.max(off, sz) : o + sz;
  }
  const l = { size: Math.ceil(off / align) * align, align, fields };
  cache.set(name, l);
  return l;
};

const ts = (t: TypeRef): string =>
  typeof t === "string" ? JSON.stringify(t) : `{ struct: ${JSON.stringify(t.struct)} }`;

/** Render the generated TypeScript module. Deterministic: same headers → same bytes. */
export const render = (p: Parsed, headerNote: string): string => {
  const out: string[] = [];
  out.push(
    "// deno-fmt-ignore-file",
    "// deno-lint-ignore-file",
    "/**",
    " * GENERATED by `deno run -A scripts/gen-wgpu-bindings.ts` from wgpu-native's webgpu.h + wgpu.h — do not edit.",
    ` * Source: ${headerNote}`,
    " *",
    " * Runtime-neutral description: enums, flag constants, struct layouts for the LP64 C ABI (x86-64 SysV and",
    " * AArch64 AAPCS64 lay these structs out identically: natural alignment, 8-byte pointers), callback and",
    " * function signatures. `runtime/src/wgpu/ffi.ts` turns them into `Deno.dlopen` / `bun:ffi` symbols.",
    " * @module",
    " */",
    "",
    "/** A C scalar. `ptr` covers object handles, data pointers and function pointers (8 bytes). */",
    'export type Scalar = "void" | "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "u64" | "i64" | "f32" | "f64" | "usize" | "ptr";',
    "/** A scalar or a struct passed by value. */",
    "export type TypeRef = Scalar | { readonly struct: StructName };",
    "/** One struct field: byte offset, byte size, type. */",
    "export interface FieldLayout { readonly offset: number; readonly size: number; readonly type: TypeRef }",
    "/** A struct's layout (bytes). */",
    "export interface StructLayout { readonly size: number; readonly align: number; readonly union: boolean; readonly fields: Readonly<Record<string, FieldLayout>> }",
    "/** A C function or callback signature. */",
    "export interface Signature { readonly params: readonly (readonly [string, TypeRef])[]; readonly result: TypeRef }",
    "",
  );
  out.push("/** Enumerations: `enums.WGPUFeatureName.ShaderF16 === 0xb`. */");
  out.push("export const enums = {");
  for (const [name, values] of [...p.enums].sort((a, b) => a[0].localeCompare(b[0]))) {
    out.push(`  ${name}: {`);
    for (const [k, v] of values) {
      const short = k.startsWith(name + "_") ? k.slice(name.length + 1) : k.replace(/^WGPU[A-Za-z]+_/, "");
      out.push(`    ${JSON.stringify(short)}: 0x${v.toString(16)},`);
    }
    out.push("  },");
  }
  out.push("} as const;", "");
  out.push("/** Bit flags (`WGPUFlags` is a uint64_t; every defined bit fits below 2^32). */");
  out.push("export const flags = {");
  for (const [name, values] of [...p.flags].sort((a, b) => a[0].localeCompare(b[0]))) {
    out.push(`  ${name}: {`);
    for (const [k, v] of values) {
      out.push(`    ${JSON.stringify(k.slice(name.length + 1))}: 0x${v.toString(16)},`);
    }
    out.push("  },");
  }
  out.push("} as const;", "");
  const limits: Record<string, string> = {
    UINT32_MAX: "0xffffffff",
    UINT64_MAX: "0xffffffffffffffffn",
    SIZE_MAX: "0xffffffffffffffffn",
  };
  out.push("/** `#define` sentinels (u64 ones as bigint). */", "export const defines = {");
  for (const [k, v] of [...p.defines].sort()) if (v in limits) out.push(`  ${k}: ${limits[v]},`);
  out.push("} as const;", "");
  const cache = new Map<string, Layout>();
  const names = [...p.structs.keys()].sort();
  out.push(
    "/** Struct names. */",
    `export type StructName = ${names.map((n) => JSON.stringify(n)).join(" | ")};`,
    "",
  );
  out.push("/** Struct layouts (LP64: x86-64 and arm64). */");
  out.push("export const structs: Readonly<Record<StructName, StructLayout>> = {");
  for (const n of names) {
    const l = layoutOf(p, n, cache);
    const fs = l.fields.map((f) =>
      `${f.name}: { offset: ${f.offset}, size: ${f.size}, type: ${ts(f.type)} }`
    );
    out.push(
      `  ${n}: { size: ${l.size}, align: ${l.align}, union: ${p.structs.get(n)!.union}, fields: { ${
        fs.join(", ")
      } } },`,
    );
  }
  out.push("};", "");
  const sig = (f: FnDef) =>
    `{ params: [${f.params.map((x) => `[${JSON.stringify(x.name)}, ${ts(x.type)}]`).join(", ")}], result: ${
      ts(f.result)
    } }`;
  out.push("/** Callback (function pointer) signatures. */", "export const callbacks = {");
  for (const [n, f] of [...p.callbacks].sort((a, b) => a[0].localeCompare(b[0]))) {
    out.push(`  ${n}: ${sig(f)},`);
  }
  out.push("} as const satisfies Record<string, Signature>;", "");
  out.push("/** Exported functions of libwgpu_native. */", "export const functions = {");
  for (const [n, f] of [...p.functions].sort((a, b) => a[0].localeCompare(b[0]))) {
    out.push(`  ${n}: ${sig(f)},`);
  }
  out.push("} as const satisfies Record<string, Signature>;", "");
  out.push("/** Function names. */", "export type FunctionName = keyof typeof functions;", "");
  return out.join("\n");
};

/** Where the headers are: explicit argument, LONGCTX_WGPU_HEADERS, the directory of LONGCTX_WGPU_LIB, .cache. */
export const headersDir = (arg?: string): string => {
  if (arg) return arg;
  const env = Deno.env.get("LONGCTX_WGPU_HEADERS");
  if (env) return env;
  const lib = Deno.env.get("LONGCTX_WGPU_LIB");
  if (lib) return lib.replace(/\/[^/]*$/, "");
  const repo = new URL("..", import.meta.url).pathname;
  return `${Deno.env.get("LONGCTX_CACHE") ?? `${repo}.cache`}/wgpu`;
};

/** Generate the module text from a headers directory. */
export const generate = (dir: string): string => {
  const webgpu = Deno.readTextFileSync(`${dir}/webgpu.h`);
  const wgpu = Deno.readTextFileSync(`${dir}/wgpu.h`);
  const version = (wgpu.match(/WGPU_VERSION\s+"([^"]+)"/) ?? [])[1];
  const hash = (s: string) => {
    let h = 0x811c9dc5;
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
    return h.toString(16).padStart(8, "0");
  };
  const note = `webgpu.h (fnv1a ${hash(webgpu)}), wgpu.h (fnv1a ${hash(wgpu)})${
    version ? `, ${version}` : ""
  }`;
  return render(parseHeaders([webgpu, wgpu]), note);
};

export const OUTPUT = new URL("../runtime/src/wgpu/ffi_generated.ts", import.meta.url);

if (import.meta.main) {
  const args = Deno.args.filter((a) => a !== "--check");
  const check = Deno.args.includes("--check");
  const dir = headersDir(args[0]);
  const text = generate(dir);
  if (check) {
    const old = Deno.readTextFileSync(OUTPUT);
    if (old !== text) {
      console.error(
        `ffi_generated.ts is stale relative to ${dir}; run: deno run -A scripts/gen-wgpu-bindings.ts`,
      );
      Deno.exit(1);
    }
    console.log("ffi_generated.ts is up to date");
  } else {
    Deno.writeTextFileSync(OUTPUT, text);
    console.log(`wrote ${OUTPUT.pathname} from ${dir}`);
  }
}
