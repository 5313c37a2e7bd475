/**
 * Struct packing for the wgpu FFI: an `Arena` builds C structs, arrays and `WGPUStringView`s in JS
 * memory (off-heap chunks, 8-byte aligned) from the generated layouts, hands out their addresses and
 * keeps them alive until it is dropped; `readStruct` decodes native or JS bytes back into fields.
 * @module
 */
import { type StructName, structs, type TypeRef } from "./ffi_generated.ts";
import type { Ffi, Ptr } from "./ffi.ts";

/** A field value when packing: numbers/bigints for scalars and pointers, strings for `WGPUStringView`,
 * nested objects (or raw bytes) for nested structs. */
export type FieldValue = number | bigint | string | Uint8Array | { readonly [k: string]: FieldValue };
/** Field values of one struct. */
export type StructInit = { readonly [k: string]: FieldValue };

const CHUNK = 4096;

const writeScalar = (dv: DataView, off: number, t: string, v: number | bigint): void => {
  switch (t) {
    case "u8":
    case "i8":
      dv.setUint8(off, Number(v) & 0xff);
      return;
    case "u16":
    case "i16":
      dv.setUint16(off, Number(v) & 0xffff, true);
      return;
    case "u32":
    case "i32":
      dv.setUint32(off, Number(v) >>> 0, true);
      return;
    case "f32":
      dv.setFloat32(off, Number(v), true);
      return;
    case "f64":
      dv.setFloat64(off, Number(v), true);
      return;
    default: // u64 i64 usize ptr
      dv.setBigUint64(off, BigInt.asUintN(64, BigInt(v)), true);
  }
};

const readScalar = (dv: DataView, off: number, t: string): number | bigint => {
  switch (t) {
    case "u8":
      return dv.getUint8(off);
    case "i8":
      return dv.getInt8(off);
    case "u16":
      return dv.getUint16(off, true);
    case "i16":
      return dv.getInt16(off, true);
    case "u32":
      return dv.getUint32(off, true);
    case "i32":
      return dv.getInt32(off, true);
    case "f32":
      return dv.getFloat32(off, true);
    case "f64":
      return dv.getFloat64(off, true);
    case "u64":
    case "i64":
      return dv.getBigUint64(off, true);
    default: // usize, ptr: numbers
      return Number(dv.getBigUint64(off, true));
  }
};

interface Chunk {
  bytes: Uint8Array;
  base: Ptr;
  used: number;
}

/** Chunks returned by `Arena.free()`, zeroed, for reuse (saves an allocation per FFI call). */
const pool: Chunk[] = [];
const POOL_MAX = 64;

/**
 * Scratch memory for one FFI call sequence. Everything it hands out lives as long as the arena; call
 * `free()` when native code is done with it to recycle its chunks (otherwise the GC reclaims them).
 */
export class Arena {
  private chunks: Chunk[] = [];
  private big: Uint8Array[] = [];
  private readonly enc = new TextEncoder();
  constructor(private readonly ffi: Ffi) {}

  /** `bytes` zeroed bytes aligned to 8: the view and its address. */
  alloc(bytes: number): { bytes: Uint8Array; ptr: Ptr } {
    const n = Math.max(8, Math.ceil(bytes / 8) * 8);
    if (n > CHUNK / 4) {
      const b = new Uint8Array(n);
      this.big.push(b);
      return { bytes: b.subarray(0, bytes), ptr: this.ffi.ptrOf(b) };
    }
    let c = this.chunks[this.chunks.length - 1];
    if (!c || c.used + n > CHUNK) {
      c = pool.pop() ?? (() => {
        const b = new Uint8Array(CHUNK);
        return { bytes: b, base: this.ffi.ptrOf(b), used: 0 };
      })();
      this.chunks.push(c);
    }
    const off = c.used;
    c.used += n;
    return { bytes: c.bytes.subarray(off, off + bytes), ptr: c.base + off };
  }

  /** Recycle the chunks (zeroed). Nothing handed out may be used afterwards. */
  free(): void {
    for (const c of this.chunks) {
      if (pool.length >= POOL_MAX) break;
      c.bytes.fill(0, 0, c.used);
      c.used = 0;
      pool.push(c);
    }
    this.chunks = [];
    this.big = [];
  }

  /** UTF-8 bytes of `s` (not NUL-terminated) as a `WGPUStringView` value (16 bytes). */
  stringView(s: string | undefined): Uint8Array {
    const out = new Uint8Array(16);
    if (s === undefined) {
      // {NULL, WGPU_STRLEN}: the "undefined" string.
      new DataView(out.buffer).setBigUint64(8, 0xffffffffffffffffn, true);
      return out;
    }
    const utf8 = this.enc.encode(s);
    const m = this.alloc(utf8.length + 1);
    m.bytes.set(utf8);
    const dv = new DataView(out.buffer);
    dv.setBigUint64(0, BigInt(m.ptr), true);
    dv.setBigUint64(8, BigInt(utf8.length), true);
    return out;
  }

  /** Write `init` into `target` (bytes of struct `name`). Unlisted fields stay as they are (zero). */
  fill(name: StructName, target: Uint8Array, init: StructInit): void {
    const layout = structs[name];
    const dv = new DataView(target.buffer, target.byteOffset, target.byteLength);
    for (const [k, v] of Object.entries(init)) {
      const f = layout.fields[k];
      if (!f) throw new Error(`struct ${name} has no field ${k}`);
      this.put(dv, target, f.offset, f.type, v, `${name}.${k}`);
    }
  }

  private put(dv: DataView, target: Uint8Array, off: number, t: TypeRef, v: FieldValue, where: string): void {
    if (typeof t === "string") {
      if (typeof v !== "number" && typeof v !== "bigint") throw new Error(`${where}: expected a number`);
      writeScalar(dv, off, t, v);
      return;
    }
    if (typeof v === "string" || (v === undefined && t.struct === "WGPUStringView")) {
      target.set(this.stringView(v as string | undefined), off);
      return;
    }
    if (v instanceof Uint8Array) {
      target.set(v, off);
      return;
    }
    if (typeof v !== "object") throw new Error(`${where}: expected struct ${t.struct}`);
    this.fill(t.struct, target.subarray(off, off + structs[t.struct].size), v);
  }

  /** Pack one struct: its bytes (for by-value use) and address (for pointer use). */
  struct(name: StructName, init: StructInit = {}): { bytes: Uint8Array; ptr: Ptr } {
    const m = this.alloc(structs[name].size);
    this.fill(name, m.bytes, init);
    return m;
  }

  /** Pack a contiguous C array of structs; returns its address (0 when empty). */
  array(name: StructName, items: readonly StructInit[]): Ptr {
    if (items.length === 0) return 0;
    const size = structs[name].size;
    const m = this.alloc(size * items.length);
    items.forEach((it, i) => this.fill(name, m.bytes.subarray(i * size, (i + 1) * size), it));
    return m.ptr;
  }

  /** A C array of u32 values; returns its address (0 when empty). */
  u32s(values: readonly number[]): Ptr {
    if (values.length === 0) return 0;
    const m = this.alloc(values.length * 4);
    const dv = new DataView(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength);
    values.forEach((v, i) => dv.setUint32(i * 4, v >>> 0, true));
    return m.ptr;
  }

  /** A C array of pointers / handles; returns its address (0 when empty). */
  ptrs(values: readonly Ptr[]): Ptr {
    if (values.length === 0) return 0;
    const m = this.alloc(values.length * 8);
    const dv = new DataView(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength);
    values.forEach((v, i) => dv.setBigUint64(i * 8, BigInt(v), true));
    return m.ptr;
  }
}

/** Decoded struct: scalars as numbers (`u64`/`i64` as bigint), nested structs as nested records. */
export type Decoded = { readonly [k: string]: number | bigint | Decoded };

/** Decode bytes of struct `name` (e.g. from `Ffi.copyOut` or an arena allocation). */
export const readStruct = (name: StructName, bytes: Uint8Array): Decoded => {
  const layout = structs[name];
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Record<string, number | bigint | Decoded> = {};
  for (const [k, f] of Object.entries(layout.fields)) {
    out[k] = typeof f.type === "string"
      ? readScalar(dv, f.offset, f.type)
      : readStruct(f.type.struct, bytes.subarray(f.offset, f.offset + f.size));
  }
  return out;
};

/** Decode a `WGPUStringView` value (16 bytes) into a JS string, reading the native bytes it points to. */
export const readStringView = (ffi: Ffi, sv: Uint8Array): string => {
  const dv = new DataView(sv.buffer, sv.byteOffset, 16);
  const data = Number(dv.getBigUint64(0, true));
  const len = dv.getBigUint64(8, true);
  if (data === 0) return "";
  if (len === 0xffffffffffffffffn) return ffi.cstring(data);
  return new TextDecoder().decode(ffi.copyOut(data, Number(len)));
};
