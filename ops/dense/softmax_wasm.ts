/**
 * `dense.cacheAttn`'s (and so `dense.attn`'s) CPU row softmax as a WebAssembly SIMD kernel (Deno, Bun and
 * browsers run WebAssembly SIMD): per row of scores `s[0, len)` (f32) → `exp(s − max)` in place (f64 lanes, a
 * range reduction and a degree-7 polynomial, relative error < 3e-8 before the f32 store), `s[len, ld) ← 0`,
 * and the row's sum in f64. It replaces a TypeScript loop of ~10 ns per element: the softmax runs
 * `heads · seq² / 2` times per layer.
 *
 * The scores live in the kernel's own memory ({@link SoftmaxKernel.scratch}), so OpenBLAS writes `QKᵀ`
 * straight into it and reads `P` from it for `PV` (through FFI; views of WebAssembly memory are ordinary
 * `Float32Array`s). The module bytes below are wabt 1.0.36 `parseWat(…, { simd: true, bulk_memory: true })`
 * → `toBinary` of {@link SOFTMAX_WAT}.
 * @module
 */

/** WebAssembly text of the kernel (the source of {@link SOFTMAX_WASM_BASE64}). */
export const SOFTMAX_WAT = `(module
  (memory (export "mem") 1)
  ;; Causal softmax numerators of one f32 row in place: s[0..len) ← exp(s − max), s[len..ld) ← 0; returns Σ (f64).
  (func (export "softmaxRow") (param $p i32) (param $len i32) (param $ld i32) (result f64)
    (local $i i32) (local $end i32) (local $mx v128) (local $m f32) (local $mv v128)
    (local $t v128) (local $r v128) (local $g v128) (local $q v128) (local $e v128) (local $sum v128)
    (local $k0 v128) (local $k1 v128) (local $k2 v128) (local $k3 v128) (local $k4 v128) (local $k5 v128) (local $k6 v128) (local $k7 v128) (local $k8 v128) (local $k9 v128) (local $k10 v128) (local $k11 v128)
    (local $tA v128) (local $rA v128) (local $gA v128) (local $qA v128) (local $eA v128) (local $tB v128) (local $rB v128) (local $gB v128) (local $qB v128) (local $eB v128)
    ;; row max, 4 lanes then scalar tail
    (local.set $mx (v128.const f32x4 -inf -inf -inf -inf))
    (local.set $i (local.get $p))
    (local.set $end (i32.add (local.get $p) (i32.shl (i32.and (local.get $len) (i32.const -4)) (i32.const 2))))
    (block $b0 (loop $l0
      (br_if $b0 (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $mx (f32x4.max (local.get $mx) (v128.load (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $l0)))
    (local.set $m (f32.max (f32.max (f32x4.extract_lane 0 (local.get $mx)) (f32x4.extract_lane 1 (local.get $mx)))
                           (f32.max (f32x4.extract_lane 2 (local.get $mx)) (f32x4.extract_lane 3 (local.get $mx)))))
    (local.set $end (i32.add (local.get $p) (i32.shl (local.get $len) (i32.const 2))))
    (block $b1 (loop $l1
      (br_if $b1 (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $m (f32.max (local.get $m) (f32.load (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $l1)))
    (local.set $mv (f64x2.splat (f64.promote_f32 (local.get $m))))
    (local.set $sum (v128.const f64x2 0 0))
    ;; exp, 2 lanes of f64 (constants hoisted into locals)
    (local.set $k0 (v128.const f64x2 -250 -250))
    (local.set $k1 (v128.const f64x2 0.0001984126984126984 0.0001984126984126984))
    (local.set $k2 (v128.const f64x2 0.001388888888888889 0.001388888888888889))
    (local.set $k3 (v128.const f64x2 0.008333333333333333 0.008333333333333333))
    (local.set $k4 (v128.const f64x2 0.041666666666666664 0.041666666666666664))
    (local.set $k5 (v128.const f64x2 0.16666666666666666 0.16666666666666666))
    (local.set $k6 (v128.const f64x2 0.5 0.5))
    (local.set $k7 (v128.const f64x2 0.6931471805599453 0.6931471805599453))
    (local.set $k8 (v128.const f64x2 1 1))
    (local.set $k9 (v128.const f64x2 1.4426950408889634 1.4426950408889634))
    (local.set $k10 (v128.const f64x2 6755399441055744 6755399441055744))
    (local.set $k11 (v128.const i64x2 1023 1023))
    (local.set $i (local.get $p))
    (local.set $end (i32.add (local.get $p) (i32.shl (i32.and (local.get $len) (i32.const -4)) (i32.const 2))))
    (block $b4 (loop $l4
      (br_if $b4 (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $tA (f64x2.pmax (f64x2.mul (f64x2.sub (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $i))) (local.get $mv)) (local.get $k9))
                                (local.get $k0)))
      (local.set $rA (f64x2.add (local.get $tA) (local.get $k10)))
      (local.set $gA (f64x2.mul (f64x2.sub (local.get $tA) (f64x2.sub (local.get $rA) (local.get $k10)))
                               (local.get $k7)))
      ;; Horner as fastExp: 1 + g(1 + g(1/2 + g(1/6 + g(1/24 + g(1/120 + g(1/720 + g/5040))))))
      (local.set $qA (f64x2.add (local.get $k2)
                               (f64x2.mul (local.get $gA) (local.get $k1))))
      (local.set $qA (f64x2.add (local.get $k3) (f64x2.mul (local.get $gA) (local.get $qA))))
      (local.set $qA (f64x2.add (local.get $k4) (f64x2.mul (local.get $gA) (local.get $qA))))
      (local.set $qA (f64x2.add (local.get $k5) (f64x2.mul (local.get $gA) (local.get $qA))))
      (local.set $qA (f64x2.add (local.get $k6) (f64x2.mul (local.get $gA) (local.get $qA))))
      (local.set $qA (f64x2.add (local.get $k8) (f64x2.mul (local.get $gA) (local.get $qA))))
      (local.set $qA (f64x2.add (local.get $k8) (f64x2.mul (local.get $gA) (local.get $qA))))
      (local.set $eA (f64x2.mul (local.get $qA)
        (i64x2.shl (i64x2.add (local.get $rA) (local.get $k11)) (i32.const 52))))
      (local.set $tB (f64x2.pmax (f64x2.mul (f64x2.sub (f64x2.promote_low_f32x4 (v128.load64_zero offset=8 (local.get $i))) (local.get $mv)) (local.get $k9))
                                (local.get $k0)))
      (local.set $rB (f64x2.add (local.get $tB) (local.get $k10)))
      (local.set $gB (f64x2.mul (f64x2.sub (local.get $tB) (f64x2.sub (local.get $rB) (local.get $k10)))
                               (local.get $k7)))
      ;; Horner as fastExp: 1 + g(1 + g(1/2 + g(1/6 + g(1/24 + g(1/120 + g(1/720 + g/5040))))))
      (local.set $qB (f64x2.add (local.get $k2)
                               (f64x2.mul (local.get $gB) (local.get $k1))))
      (local.set $qB (f64x2.add (local.get $k3) (f64x2.mul (local.get $gB) (local.get $qB))))
      (local.set $qB (f64x2.add (local.get $k4) (f64x2.mul (local.get $gB) (local.get $qB))))
      (local.set $qB (f64x2.add (local.get $k5) (f64x2.mul (local.get $gB) (local.get $qB))))
      (local.set $qB (f64x2.add (local.get $k6) (f64x2.mul (local.get $gB) (local.get $qB))))
      (local.set $qB (f64x2.add (local.get $k8) (f64x2.mul (local.get $gB) (local.get $qB))))
      (local.set $qB (f64x2.add (local.get $k8) (f64x2.mul (local.get $gB) (local.get $qB))))
      (local.set $eB (f64x2.mul (local.get $qB)
        (i64x2.shl (i64x2.add (local.get $rB) (local.get $k11)) (i32.const 52))))
      (v128.store (local.get $i) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
        (f32x4.demote_f64x2_zero (local.get $eA)) (f32x4.demote_f64x2_zero (local.get $eB))))
      (local.set $sum (f64x2.add (local.get $sum) (f64x2.add (local.get $eA) (local.get $eB))))
      (local.set $i (i32.add (local.get $i) (i32.const 16)))
      (br $l4)))
    (local.set $end (i32.add (local.get $p) (i32.shl (i32.and (local.get $len) (i32.const -2)) (i32.const 2))))
    (block $b2 (loop $l2
      (br_if $b2 (i32.ge_u (local.get $i) (local.get $end)))
      (local.set $t (f64x2.pmax (f64x2.mul (f64x2.sub (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $i))) (local.get $mv)) (local.get $k9))
                                (local.get $k0)))
      (local.set $r (f64x2.add (local.get $t) (local.get $k10)))
      (local.set $g (f64x2.mul (f64x2.sub (local.get $t) (f64x2.sub (local.get $r) (local.get $k10)))
                               (local.get $k7)))
      ;; Horner as fastExp: 1 + g(1 + g(1/2 + g(1/6 + g(1/24 + g(1/120 + g(1/720 + g/5040))))))
      (local.set $q (f64x2.add (local.get $k2)
                               (f64x2.mul (local.get $g) (local.get $k1))))
      (local.set $q (f64x2.add (local.get $k3) (f64x2.mul (local.get $g) (local.get $q))))
      (local.set $q (f64x2.add (local.get $k4) (f64x2.mul (local.get $g) (local.get $q))))
      (local.set $q (f64x2.add (local.get $k5) (f64x2.mul (local.get $g) (local.get $q))))
      (local.set $q (f64x2.add (local.get $k6) (f64x2.mul (local.get $g) (local.get $q))))
      (local.set $q (f64x2.add (local.get $k8) (f64x2.mul (local.get $g) (local.get $q))))
      (local.set $q (f64x2.add (local.get $k8) (f64x2.mul (local.get $g) (local.get $q))))
      (local.set $e (f64x2.mul (local.get $q)
        (i64x2.shl (i64x2.add (local.get $r) (local.get $k11)) (i32.const 52))))
      (v128.store64_lane 0 (local.get $i) (f32x4.demote_f64x2_zero (local.get $e)))
      (local.set $sum (f64x2.add (local.get $sum) (local.get $e)))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br $l2)))
    (if (i32.and (local.get $len) (i32.const 1))
      (then
        (local.set $e (f64x2.replace_lane 1
          (call $exp2 (f64x2.promote_low_f32x4 (v128.load32_zero (local.get $i))) (local.get $mv)) (f64.const 0)))
        (v128.store32_lane 0 (local.get $i) (f32x4.demote_f64x2_zero (local.get $e)))
        (local.set $sum (f64x2.add (local.get $sum) (local.get $e)))))
    (memory.fill (i32.add (local.get $p) (i32.shl (local.get $len) (i32.const 2))) (i32.const 0)
                 (i32.shl (i32.sub (local.get $ld) (local.get $len)) (i32.const 2)))
    (f64.add (f64x2.extract_lane 0 (local.get $sum)) (f64x2.extract_lane 1 (local.get $sum))))
  ;; exp(x − m) per f64 lane: t = (x − m)·log2 e clamped to ≥ −250; r = t + 1.5·2^52 rounds t to the nearest
  ;; integer k (ties to even) and holds k in its low mantissa bits; 2^k = ((bits(r) + 1023) << 52) as f64
  ;; (k ∈ [−250, 0] since x ≤ m); e = 2^k · P7((t − k)·ln 2), P7 the degree-7 Taylor polynomial of e^g.
  (func $exp2 (param $x v128) (param $m v128) (result v128)
    (local $t v128) (local $r v128) (local $g v128) (local $p v128)
    (local.set $t (f64x2.pmax (f64x2.mul (f64x2.sub (local.get $x) (local.get $m)) (v128.const f64x2 1.4426950408889634 1.4426950408889634))
                              (v128.const f64x2 -250 -250)))
    (local.set $r (f64x2.add (local.get $t) (v128.const f64x2 6755399441055744 6755399441055744)))
    (local.set $g (f64x2.mul (f64x2.sub (local.get $t) (f64x2.sub (local.get $r) (v128.const f64x2 6755399441055744 6755399441055744)))
                             (v128.const f64x2 0.6931471805599453 0.6931471805599453)))
    ;; Horner as fastExp: 1 + g(1 + g(1/2 + g(1/6 + g(1/24 + g(1/120 + g(1/720 + g/5040))))))
    (local.set $p (f64x2.add (v128.const f64x2 0.001388888888888889 0.001388888888888889)
                             (f64x2.mul (local.get $g) (v128.const f64x2 0.0001984126984126984 0.0001984126984126984))))
    (local.set $p (f64x2.add (v128.const f64x2 0.008333333333333333 0.008333333333333333) (f64x2.mul (local.get $g) (local.get $p))))
    (local.set $p (f64x2.add (v128.const f64x2 0.041666666666666664 0.041666666666666664) (f64x2.mul (local.get $g) (local.get $p))))
    (local.set $p (f64x2.add (v128.const f64x2 0.16666666666666666 0.16666666666666666) (f64x2.mul (local.get $g) (local.get $p))))
    (local.set $p (f64x2.add (v128.const f64x2 0.5 0.5) (f64x2.mul (local.get $g) (local.get $p))))
    (local.set $p (f64x2.add (v128.const f64x2 1 1) (f64x2.mul (local.get $g) (local.get $p))))
    (local.set $p (f64x2.add (v128.const f64x2 1 1) (f64x2.mul (local.get $g) (local.get $p))))
    (f64x2.mul (local.get $p)
      (i64x2.shl (i64x2.add (local.get $r) (v128.const i64x2 1023 1023)) (i32.const 52))))
)
`;

/** The binary module compiled from {@link SOFTMAX_WAT} (base64). */
export const SOFTMAX_WASM_BASE64 =
  "AGFzbQEAAAABDgJgA39/fwF8YAJ7ewF7AwMCAAEFAwEAAQcUAgNtZW0CAApzb2Z0bWF4Um93AAAKiwwCgAkEAn8BewF9HXv9DAAA" +
  "gP8AAID/AACA/wAAgP8hBSAAIQMgACABQXxxQQJ0aiEEAkADQCADIARPDQEgBSAD/QAEAP3pASEFIANBEGohAwwACwsgBf0fACAF" +
  "/R8BlyAF/R8CIAX9HwOXlyEGIAAgAUECdGohBAJAA0AgAyAETw0BIAYgAyoCAJchBiADQQRqIQMMAAsLIAa7/RQhB/0MAAAAAAAA" +
  "AAAAAAAAAAAAACEN/QwAAAAAAEBvwAAAAAAAQG/AIQ79DBqgARqgASo/GqABGqABKj8hD/0MF2zBFmzBVj8XbMEWbMFWPyEQ/QwR" +
  "ERERERGBPxEREREREYE/IRH9DFVVVVVVVaU/VVVVVVVVpT8hEv0MVVVVVVVVxT9VVVVVVVXFPyET/QwAAAAAAADgPwAAAAAAAOA/" +
  "IRT9DO85+v5CLuY/7zn6/kIu5j8hFf0MAAAAAAAA8D8AAAAAAADwPyEW/Qz+gitlRxX3P/6CK2VHFfc/IRf9DAAAAAAAADhDAAAA" +
  "AAAAOEMhGP0M/wMAAAAAAAD/AwAAAAAAACEZIAAhAyAAIAFBfHFBAnRqIQQCQANAIAMgBE8NASAD/V0DAP1fIAf98QEgF/3yASAO" +
  "/fcBIRogGiAY/fABIRsgGiAbIBj98QH98QEgFf3yASEcIBAgHCAP/fIB/fABIR0gESAcIB398gH98AEhHSASIBwgHf3yAf3wASEd" +
  "IBMgHCAd/fIB/fABIR0gFCAcIB398gH98AEhHSAWIBwgHf3yAf3wASEdIBYgHCAd/fIB/fABIR0gHSAbIBn9zgFBNP3LAf3yASEe" +
  "IAP9XQMI/V8gB/3xASAX/fIBIA799wEhHyAfIBj98AEhICAfICAgGP3xAf3xASAV/fIBISEgECAhIA/98gH98AEhIiARICEgIv3y" +
  "Af3wASEiIBIgISAi/fIB/fABISIgEyAhICL98gH98AEhIiAUICEgIv3yAf3wASEiIBYgISAi/fIB/fABISIgFiAhICL98gH98AEh" +
  "IiAiICAgGf3OAUE0/csB/fIBISMgAyAe/V4gI/1e/Q0AAQIDBAUGBxAREhMUFRYX/QsEACANIB4gI/3wAf3wASENIANBEGohAwwA" +
  "CwsgACABQX5xQQJ0aiEEAkADQCADIARPDQEgA/1dAwD9XyAH/fEBIBf98gEgDv33ASEIIAggGP3wASEJIAggCSAY/fEB/fEBIBX9" +
  "8gEhCiAQIAogD/3yAf3wASELIBEgCiAL/fIB/fABIQsgEiAKIAv98gH98AEhCyATIAogC/3yAf3wASELIBQgCiAL/fIB/fABIQsg" +
  "FiAKIAv98gH98AEhCyAWIAogC/3yAf3wASELIAsgCSAZ/c4BQTT9ywH98gEhDCADIAz9Xv1bAwAAIA0gDP3wASENIANBCGohAwwA" +
  "CwsgAUEBcQRAIAP9XAIA/V8gBxABRAAAAAAAAAAA/SIBIQwgAyAM/V79WgIAACANIAz98AEhDQsgACABQQJ0akEAIAIgAWtBAnT8" +
  "CwAgDf0hACAN/SEBoAuGAwEEeyAAIAH98QH9DP6CK2VHFfc//oIrZUcV9z/98gH9DAAAAAAAQG/AAAAAAABAb8D99wEhAiAC/QwA" +
  "AAAAAAA4QwAAAAAAADhD/fABIQMgAiAD/QwAAAAAAAA4QwAAAAAAADhD/fEB/fEB/QzvOfr+Qi7mP+85+v5CLuY//fIBIQT9DBds" +
  "wRZswVY/F2zBFmzBVj8gBP0MGqABGqABKj8aoAEaoAEqP/3yAf3wASEF/QwRERERERGBPxEREREREYE/IAQgBf3yAf3wASEF/QxV" +
  "VVVVVVWlP1VVVVVVVaU/IAQgBf3yAf3wASEF/QxVVVVVVVXFP1VVVVVVVcU/IAQgBf3yAf3wASEF/QwAAAAAAADgPwAAAAAAAOA/" +
  "IAQgBf3yAf3wASEF/QwAAAAAAADwPwAAAAAAAPA/IAQgBf3yAf3wASEF/QwAAAAAAADwPwAAAAAAAPA/IAQgBf3yAf3wASEFIAUg" +
  "A/0M/wMAAAAAAAD/AwAAAAAAAP3OAUE0/csB/fIBCw==";

/** A softmax kernel instance (one per thread: it owns its scratch memory). */
export interface SoftmaxKernel {
  /**
   * An f32 view of the kernel memory holding at least `floats` values (grows the memory when needed; a
   * later call may invalidate earlier views). Row offsets passed to {@link SoftmaxKernel.row} index it.
   */
  scratch(floats: number): Float32Array;
  /**
   * Row at float offset `at` of the scratch: `s[at … at+len)` ← `exp(s − max)`, `s[at+len … at+ld)` ← 0.
   * @returns the sum of the `len` exponentials (f64, from the unrounded values). `1 ≤ len ≤ ld`.
   */
  row(at: number, len: number, ld: number): number;
}

const decode = (b64: string): Uint8Array<ArrayBuffer> => {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
};

let compiled: WebAssembly.Module | null | undefined;

/**
 * A new kernel instance, or `undefined` when WebAssembly SIMD is unavailable (callers then use the
 * TypeScript softmax). Never throws.
 */
export const newSoftmaxKernel = (): SoftmaxKernel | undefined => {
  try {
    if (compiled === undefined) {
      const bytes = decode(SOFTMAX_WASM_BASE64);
      compiled = WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
    }
    if (compiled === null) return undefined;
    const inst = new WebAssembly.Instance(compiled, {});
    const mem = inst.exports.mem as WebAssembly.Memory;
    const rowFn = inst.exports.softmaxRow as (p: number, len: number, ld: number) => number;
    let view = new Float32Array(mem.buffer);
    return {
      scratch(floats) {
        const bytes = floats * 4;
        if (mem.buffer.byteLength < bytes) mem.grow(Math.ceil((bytes - mem.buffer.byteLength) / 65536));
        if (view.buffer !== mem.buffer) view = new Float32Array(mem.buffer);
        return view;
      },
      row: (at, len, ld) => rowFn(at * 4, len, ld),
    };
  } catch {
    return undefined;
  }
};
