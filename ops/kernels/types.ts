/**
 * Shared shapes of the kernel library: a `KernelPlan` bundles a generated `Kernel` (WGSL + cpu body) with
 * how to launch it for given sizes (uniform bytes, workgroup counts), so every backend — and the
 * cross-backend tests — launch a kernel the same way.
 *
 * Binding convention for every kernel here: inputs first, then the output, then one uniform buffer of
 * `u32` sizes (16-byte aligned) last.
 * @module
 */
import type { Kernel } from "@longctx/graph";
import { floatToHalf, halfToFloat } from "./half.ts";

/** Storage element type of the kernel library (`f16` needs the `shader-f16` feature). */
export type KDType = "f32" | "f16";

/** A kernel plus how to launch it for sizes `S`. */
export interface KernelPlan<S> {
  /** The generated kernel (WGSL, bindings, and its cpu body when it has one). */
  readonly kernel: Kernel;
  /** Uniform buffer contents for `sizes` (u32 words, padded to 16 bytes). */
  uniform(sizes: S): Uint8Array;
  /** Workgroup counts for `sizes` (each ≤ 65535). */
  workgroups(sizes: S): readonly [number, number, number];
}

/** Pack `u32` words into a uniform buffer padded to a multiple of 16 bytes. */
export const u32Uniform = (...words: number[]): Uint8Array => {
  const n = Math.max(4, Math.ceil(words.length / 4) * 4);
  const u = new Uint32Array(n);
  words.forEach((w, i) => (u[i] = w >>> 0));
  return new Uint8Array(u.buffer);
};

/** Read the `i`-th u32 word of a uniform buffer. */
export const uniformWord = (buf: ArrayBuffer, i: number): number => new Uint32Array(buf, 0, i + 1)[i];

/** Element reader for a storage buffer of dtype `dt` (f16 decoded to numbers). */
export const reader = (buf: ArrayBuffer, dt: KDType): (i: number) => number => {
  if (dt === "f32") {
    const a = new Float32Array(buf);
    return (i) => a[i];
  }
  const h = new Uint16Array(buf, 0, buf.byteLength >> 1);
  return (i) => halfToFloat(h[i]);
};

/** The largest workgroup count per dimension WebGPU guarantees. */
export const MAX_GROUPS = 65535;

/** Split a 1-D workgroup count over x and y (kernels recover the linear id with `num_workgroups`). */
export const grid1d = (groups: number): readonly [number, number, number] => {
  if (groups <= MAX_GROUPS) return [Math.max(1, groups), 1, 1];
  const y = Math.ceil(groups / MAX_GROUPS);
  return [Math.ceil(groups / y), y, 1];
};

/** WGSL element type name. */
export const wgslType = (dt: KDType): string => (dt === "f16" ? "f16" : "f32");

/** WGSL `enable` prelude for a set of dtypes. */
export const prelude = (...dts: KDType[]): string => (dts.includes("f16") ? "enable f16;\n" : "");

/** Element writer for a storage buffer of dtype `dt` (numbers rounded to f32 or f16). */
export const writer = (buf: ArrayBuffer, dt: KDType): (i: number, x: number) => void => {
  if (dt === "f32") {
    const a = new Float32Array(buf);
    return (i, x) => (a[i] = x);
  }
  const h = new Uint16Array(buf, 0, buf.byteLength >> 1);
  return (i, x) => (h[i] = floatToHalf(x));
};
