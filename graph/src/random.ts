/**
 * Seeded pseudo-random inputs for tests, speed benchmarks and calibration (never fidelity inputs: those come
 * from the real model). mulberry32 (Tommy Ettinger's 32-bit generator) and the Box–Muller transform.
 * @module
 */

/**
 * Deterministic uniform generator (mulberry32): each call returns the next float in [0, 1), a multiple of
 * 2⁻³². The same `seed` (taken as uint32) gives the same sequence in every runtime.
 */
export const mulberry32 = (seed: number): () => number => {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
};

/**
 * `n` seeded standard-normal samples as f32 (Box–Muller on mulberry32, uniforms shifted by half a step into
 * (0, 1) so the logarithm is finite). Deterministic per `seed`; `n` may be odd.
 */
export const seededNormals = (n: number, seed: number): Float32Array => {
  const next = mulberry32(seed);
  const u = () => next() + 0.5 / 4294967296;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u()));
    const a = 2 * Math.PI * u();
    out[i] = r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = r * Math.sin(a);
  }
  return out;
};
