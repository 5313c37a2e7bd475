/**
 * Test helper: deterministic pseudo-random bytes (xorshift32 from a seed), cheap at tens of MiB, so a test
 * and a subprocess make the same values from the same seed.
 * @module
 */

/** `n` pseudo-random bytes from `seed`. */
export const patternBytes = (n: number, seed: number): Uint8Array => {
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, n >>> 2);
  let x = (seed * 0x9e3779b9 + 0x6d2b79f5) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  for (let i = words.length * 4; i < n; i++) out[i] = (seed + i) & 0xff;
  return out;
};
