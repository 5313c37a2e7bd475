/**
 * Static checks of a WGSL compute shader against device limits that wgpu-native does not enforce itself
 * (or enforces with a message that lacks the numbers): the bytes of `var<workgroup>` memory against
 * `maxComputeWorkgroupStorageSize`, and `@workgroup_size` against `maxComputeWorkgroupSize{X,Y,Z}` and
 * `maxComputeInvocationsPerWorkgroup`.
 *
 * On lavapipe (wgpu-native 29.0.1.1, 2026-12-01) a kernel declaring 64 KiB of workgroup memory against a
 * 32 KiB limit compiled and ran without any error, so this check is the only guard.
 *
 * Sizes follow the WGSL memory layout rules (§ 14.4: alignment and size of scalars, vectors, matrices,
 * arrays, atomics). Array lengths may be integer literals or module-scope `const` integers. A declaration
 * whose type cannot be sized (a user struct, an override-sized array) makes the total `undefined`: the
 * check is then skipped, never guessed.
 * @module
 */

/** Size and alignment (bytes) of a WGSL type. */
interface Layout {
  readonly size: number;
  readonly align: number;
}

const roundUp = (k: number, n: number) => Math.ceil(n / k) * k;

const SCALARS: Record<string, Layout> = {
  f32: { size: 4, align: 4 },
  i32: { size: 4, align: 4 },
  u32: { size: 4, align: 4 },
  f16: { size: 2, align: 2 },
  bool: { size: 4, align: 4 },
};

/** Split `a, b<c, d>, e` at top-level commas. */
const splitTop = (s: string): string[] => {
  const out: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of s) {
    if (ch === "<" || ch === "(") depth++;
    if (ch === ">" || ch === ")") depth--;
    if (ch === "," && depth === 0) {
      out.push(cur.trim());
      cur = "";
    } else cur += ch;
  }
  if (cur.trim() !== "") out.push(cur.trim());
  return out;
};

/** Module-scope integer constants: `const NAME = 12u;` / `const NAME: u32 = 12;`. */
const moduleConsts = (wgsl: string): Map<string, number> => {
  const m = new Map<string, number>();
  for (
    const r of wgsl.matchAll(/(?:^|[;\n])\s*const\s+([A-Za-z_]\w*)\s*(?::\s*\w+\s*)?=\s*(\d+)[ui]?\s*;/g)
  ) {
    m.set(r[1], Number(r[2]));
  }
  return m;
};

const intOf = (expr: string, consts: Map<string, number>): number | undefined => {
  const e = expr.trim();
  const lit = /^(\d+)[ui]?$/.exec(e);
  if (lit) return Number(lit[1]);
  if (/^0x[0-9a-f]+[ui]?$/i.test(e)) return parseInt(e.replace(/[ui]$/, ""), 16);
  return consts.get(e);
};

/** Layout of a WGSL type expression; `undefined` when it cannot be sized statically. */
export const wgslTypeLayout = (type: string, consts: Map<string, number> = new Map()): Layout | undefined => {
  const t = type.trim();
  if (t in SCALARS) return SCALARS[t];
  const gen = /^(\w+)\s*<(.*)>$/s.exec(t);
  const short = /^(vec[234]|mat[234]x[234])([fhiu])$/.exec(t);
  const name = gen?.[1] ?? short?.[1] ?? "";
  const args = gen ? splitTop(gen[2]) : short ? [{ f: "f32", h: "f16", i: "i32", u: "u32" }[short[2]]!] : [];
  if (name === "atomic") return { size: 4, align: 4 };
  const vec = /^vec([234])$/.exec(name);
  if (vec) {
    const e = wgslTypeLayout(args[0] ?? "", consts);
    if (!e) return undefined;
    const n = Number(vec[1]);
    return { size: e.size * n, align: e.size * (n === 3 ? 4 : n) };
  }
  const mat = /^mat([234])x([234])$/.exec(name);
  if (mat) {
    const col = wgslTypeLayout(`vec${mat[2]}<${args[0] ?? ""}>`, consts);
    if (!col) return undefined;
    return { size: Number(mat[1]) * roundUp(col.align, col.size), align: col.align };
  }
  if (name === "array" && args.length === 2) {
    const e = wgslTypeLayout(args[0], consts);
    const n = intOf(args[1], consts);
    if (!e || n === undefined) return undefined;
    return { size: n * roundUp(e.align, e.size), align: e.align };
  }
  return undefined;
};

/** The element type of a runtime-sized `array<T>` (one type argument), else undefined. */
const runtimeElement = (t: string): string | undefined => {
  const m = /^array\s*<(.*)>$/s.exec(t.trim());
  if (!m) return undefined;
  const args = splitTop(m[1]);
  return args.length === 1 ? args[0] : undefined;
};

/** Module-scope structs (`struct S { a: f32, b: array<u32, 4> }`) with their layouts, in declaration order. */
const moduleStructs = (src: string, consts: Map<string, number>): Map<string, Layout> => {
  const out = new Map<string, Layout>();
  for (const r of src.matchAll(/struct\s+([A-Za-z_]\w*)\s*\{([^}]*)\}/g)) {
    let off = 0, align = 1, ok = true;
    for (const field of splitTop(r[2].replace(/@\w+(\([^)]*\))?/g, ""))) {
      const m = /^[A-Za-z_]\w*\s*:\s*(.+)$/s.exec(field.trim());
      if (!m) continue;
      const t = m[1].trim();
      const runtime = runtimeElement(t);
      const l = runtime !== undefined ? layoutIn(runtime, consts, out) : layoutIn(t, consts, out);
      if (!l) {
        ok = false;
        break;
      }
      off = roundUp(l.align, off) + (runtime !== undefined ? roundUp(l.align, l.size) : l.size);
      align = Math.max(align, l.align);
    }
    if (ok) out.set(r[1], { size: roundUp(align, off), align });
  }
  return out;
};

const layoutIn = (t: string, consts: Map<string, number>, structs: Map<string, Layout>): Layout | undefined =>
  structs.get(t.trim()) ?? wgslTypeLayout(t, consts);

/**
 * The minimum bytes each `@group(0) @binding(i)` buffer must hold for a kernel: the size of its declared type,
 * with a runtime-sized array (`array<T>`, alone or as a struct's last member) counted as one element — WebGPU's
 * minimum binding size. A buffer below it makes wgpu refuse the encoding, and each error wgpu-native reports
 * costs native memory it never returns (see docs/RELIABILITY.md), so backends check this first. Bindings whose
 * type cannot be sized are absent from the map.
 */
export const bindingMinSizes = (wgsl: string): Map<number, number> => {
  const src = wgsl.replace(/\/\/[^\n]*/g, "").replace(/\/\*[\s\S]*?\*\//g, "");
  const consts = moduleConsts(src);
  const structs = moduleStructs(src, consts);
  const out = new Map<number, number>();
  const re =
    /@group\s*\(\s*0\s*\)\s*@binding\s*\(\s*(\d+)\s*\)\s*var\s*<\s*(?:storage|uniform)[^>]*>\s*[A-Za-z_]\w*\s*:\s*([^;]+);/g;
  for (const r of src.matchAll(re)) {
    const t = r[2].trim();
    const runtime = runtimeElement(t);
    const l = runtime !== undefined ? layoutIn(runtime, consts, structs) : layoutIn(t, consts, structs);
    if (l) out.set(Number(r[1]), runtime !== undefined ? roundUp(l.align, l.size) : l.size);
  }
  return out;
};

/** Workgroup facts of a compute shader. */
export interface WorkgroupUsage {
  /** Bytes of `var<workgroup>` declarations (each rounded up to 16, as WebGPU counts them); `undefined` if unknown. */
  readonly workgroupBytes: number | undefined;
  /** `@workgroup_size` of `entryPoint` (missing dimensions are 1); `undefined` when not a literal or const. */
  readonly workgroupSize: readonly [number, number, number] | undefined;
}

/** Read the workgroup memory and workgroup size a WGSL compute shader declares (see the module doc). */
export const workgroupUsage = (wgsl: string, entryPoint: string): WorkgroupUsage => {
  const src = wgsl.replace(/\/\/[^\n]*/g, "").replace(/\/\*[\s\S]*?\*\//g, "");
  const consts = moduleConsts(src);
  let bytes: number | undefined = 0;
  for (const r of src.matchAll(/var\s*<\s*workgroup\s*>\s*[A-Za-z_]\w*\s*:\s*([^;]+);/g)) {
    const l = wgslTypeLayout(r[1], consts);
    if (!l || bytes === undefined) {
      bytes = undefined;
      continue;
    }
    // WebGPU: "the sum of roundUp(16, SizeOf(T)) over the workgroup variables statically used".
    bytes += roundUp(16, l.size);
  }
  let size: [number, number, number] | undefined;
  const esc = entryPoint.replace(/[^\w]/g, "");
  const ws = new RegExp(`@workgroup_size\\s*\\(([^)]*)\\)[^{]*?fn\\s+${esc}\\s*\\(`, "s").exec(src);
  if (ws) {
    const dims = splitTop(ws[1]).map((d) => intOf(d, consts));
    if (dims.length >= 1 && dims.length <= 3 && dims.every((d) => d !== undefined)) {
      size = [dims[0]!, dims[1] ?? 1, dims[2] ?? 1];
    }
  }
  return { workgroupBytes: bytes, workgroupSize: size };
};

/** The limits `checkWorkgroupLimits` compares with (WebGPU names). */
export interface WorkgroupLimits {
  readonly maxComputeWorkgroupStorageSize: number;
  readonly maxComputeInvocationsPerWorkgroup: number;
  readonly maxComputeWorkgroupSizeX?: number;
  readonly maxComputeWorkgroupSizeY?: number;
  readonly maxComputeWorkgroupSizeZ?: number;
}

/**
 * Compare a kernel's workgroup usage with the device limits. Returns a message naming the numbers when
 * a limit is exceeded, `undefined` when it fits (or cannot be sized statically).
 */
export const workgroupLimitViolation = (
  kernelKey: string,
  wgsl: string,
  entryPoint: string,
  limits: WorkgroupLimits,
): string | undefined => {
  const u = workgroupUsage(wgsl, entryPoint);
  if (u.workgroupBytes !== undefined && u.workgroupBytes > limits.maxComputeWorkgroupStorageSize) {
    return `kernel ${kernelKey} declares ${u.workgroupBytes} bytes of workgroup memory, more than the device's maxComputeWorkgroupStorageSize ${limits.maxComputeWorkgroupStorageSize}`;
  }
  if (u.workgroupSize) {
    const [x, y, z] = u.workgroupSize;
    const inv = x * y * z;
    if (inv > limits.maxComputeInvocationsPerWorkgroup) {
      return `kernel ${kernelKey} has @workgroup_size(${x}, ${y}, ${z}) = ${inv} invocations, more than the device's maxComputeInvocationsPerWorkgroup ${limits.maxComputeInvocationsPerWorkgroup}`;
    }
    const per = [
      limits.maxComputeWorkgroupSizeX,
      limits.maxComputeWorkgroupSizeY,
      limits.maxComputeWorkgroupSizeZ,
    ];
    for (let i = 0; i < 3; i++) {
      const m = per[i];
      if (m !== undefined && u.workgroupSize[i] > m) {
        return `kernel ${kernelKey} has @workgroup_size ${"xyz"[i]} = ${
          u.workgroupSize[i]
        }, more than the device's maxComputeWorkgroupSize${"XYZ"[i]} ${m}`;
      }
    }
  }
  return undefined;
};
