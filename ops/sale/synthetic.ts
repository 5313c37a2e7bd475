/**
 * A documented generator of attention inputs with the structure real prefill attention has — attention
 * sinks, locality and heavy hitters — for speed runs at 8K–128K tokens (where capturing a real model is not
 * possible) and for tests. Random Q/K is not a fidelity input; this generator is a speed input whose block
 * density under SALE resembles real long-context attention (sinks + a local band + a few global columns).
 *
 * For query head `h` (KV head `g = floor(h / group)`), token `t`, the `headDim` channels are:
 * - channels `[0, 2R)` (R = 16 pairs), **locality** (RoPE-like): pair `c` holds
 *   `A (cos θ, sin θ)` with `θ = ω_c t + φ_{g,c}`, `ω_c = 0.8 · 0.62^c` for Q and K alike, so
 *   `q_i · k_j ≈ A² Σ_c cos(ω_c (i − j))` peaks at `i = j` and decays with distance;
 * - channels `[2R, 2R + 8)`, **sink**: keys `t < 4` carry `S` on channel `2R`, every query carries `S`;
 * - channels `[2R + 8, 2R + 16)`, **heavy hitters**: a key is a heavy hitter with probability `pHeavy`
 *   (hash of (g, t)) and carries `Hh` on all 8; queries carry `Hq` on all 8;
 * - the remaining channels and all of V: noise `N(0, σ²)` from a counter hash (sum of four uniforms).
 * Constants: `A = 3.5, S = 14, Hh = 4.5, Hq = 4, pHeavy = 0.002, σ = 0.5`. After the `1/sqrt(d)` scale
 * (d = 128) the sink logit is ≈ 17, the local peak ≈ 17, heavy hitters ≈ 13 and the far background
 * ≈ 0 ± 3: attention mass concentrates on sinks, the local band and heavy hitters as in long-context
 * LLM attention, instead of spreading over the `log N` background. `headDim` must be ≥ 64.
 *
 * The same formula exists as a WGSL kernel (`syntheticWgsl`, for device runs) and on the CPU
 * (`syntheticCpu`, for tests); they agree up to f32 `cos`/`sin` rounding.
 * @module
 */

const R = 16;
const A = 3.5, S = 14, HH = 4.5, HQ = 4, P_HEAVY = 0.002, SIGMA = 0.5;

const hashU32 = (x: number): number => {
  const v = (Math.imul(x >>> 0, 747796405) + 2891336453) >>> 0;
  const w = Math.imul(((v >>> ((v >>> 28) + 4)) ^ v) >>> 0, 277803737) >>> 0;
  return ((w >>> 22) ^ w) >>> 0;
};
const unit = (x: number) => hashU32(x) / 4294967296;
const noise = (seed: number) =>
  (unit(seed) + unit(seed ^ 0x9e3779b9) + unit(seed ^ 0x7f4a7c15) + unit(seed ^ 0x2545f491) - 2) * 1.7320508;

/** Which tensor: 0 = Q, 1 = K, 2 = V. */
export type SynthTensor = 0 | 1 | 2;

/**
 * CPU twin of the generator: values of tensor `which` as `[nHeads, seq, d]` f32 (`group` = heads/kvHeads) for
 * the tokens `start … start + seq` (a chunk of a longer sequence; default 0).
 */
export const syntheticCpu = (
  which: SynthTensor,
  nHeads: number,
  seq: number,
  d: number,
  group: number,
  seed = 1,
  start = 0,
): Float32Array => {
  const out = new Float32Array(nHeads * seq * d);
  for (let h = 0; h < nHeads; h++) {
    const g = which === 0 ? Math.floor(h / group) : h;
    for (let t = 0; t < seq; t++) {
      for (let c = 0; c < d; c++) {
        out[(h * seq + t) * d + c] = synthValue(which, h, g, start + t, c, seed);
      }
    }
  }
  return out;
};

const synthValue = (which: SynthTensor, h: number, g: number, t: number, c: number, seed: number): number => {
  const base = hashU32(hashU32(hashU32(seed * 3 + which) + h) + t);
  const n = SIGMA * noise(base + c);
  if (which === 2) return n;
  if (c < 2 * R) {
    const pair = c >> 1;
    const w = 0.8 * 0.62 ** pair;
    const phi = unit(hashU32(seed + 77) + g * 64 + pair) * 6.2831853;
    const th = Math.fround(Math.fround(w * t) % 6.2831853) + phi;
    return A * ((c & 1) === 0 ? Math.cos(th) : Math.sin(th));
  }
  if (c < 2 * R + 8) {
    if (c !== 2 * R) return n;
    return which === 0 ? S : t < 4 ? S : n;
  }
  if (c < 2 * R + 16) {
    if (which === 0) return HQ;
    const hh = hashU32(hashU32(seed + 991) + g * 1000003 + t);
    const heavy = hh / 4294967296 < P_HEAVY;
    return heavy ? HH : n;
  }
  return n;
};

/**
 * WGSL kernel writing tensor `which` of the generator as `f16` (`enable f16`) or `f32`: one invocation per
 * element, `@workgroup_size(256)`, dispatch `[ceil(nHeads·seq·d / 256 / 4096), 4096, 1]` workgroups (2-D to stay under
 * the 65535 per-dimension limit). Binding 0: the output array.
 */
export const syntheticWgsl = (
  which: SynthTensor,
  nHeads: number,
  seq: number,
  d: number,
  group: number,
  dtype: "f32" | "f16",
  seed = 1,
): { wgsl: string; key: string; workgroups: [number, number, number] } => {
  const total = nHeads * seq * d;
  const rows = 4096;
  const wx = Math.ceil(total / 256 / rows);
  const f = (x: number) => x.toPrecision(9);
  const wgsl = `${
    dtype === "f16" ? "enable f16;\n" : ""
  }@group(0) @binding(0) var<storage, read_write> OUT: array<${dtype}>;
fn hsh(x: u32) -> u32 {
  let v = x * 747796405u + 2891336453u;
  let w = ((v >> ((v >> 28u) + 4u)) ^ v) * 277803737u;
  return (w >> 22u) ^ w;
}
fn unit(x: u32) -> f32 { return f32(hsh(x)) / 4294967296.0; }
fn noise(s: u32) -> f32 {
  return (unit(s) + unit(s ^ 0x9e3779b9u) + unit(s ^ 0x7f4a7c15u) + unit(s ^ 0x2545f491u) - 2.0) * 1.7320508;
}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let idx = (gid.y * ${wx}u + gid.x / 256u) * 256u + gid.x % 256u;
  if (idx >= ${total}u) { return; }
  let c = idx % ${d}u; let t = (idx / ${d}u) % ${seq}u; let h = idx / ${seq * d}u;
  let g = ${which === 0 ? `h / ${group}u` : "h"};
  let base = hsh(hsh(hsh(${seed * 3 + which}u) + h) + t);
  let n = ${f(SIGMA)} * noise(base + c);
  var val = n;
  ${
    which === 2 ? "" : `if (c < ${2 * R}u) {
    let pair = c >> 1u;
    let w = 0.8 * pow(0.62, f32(pair));
    let phi = unit(hsh(${seed + 77}u) + g * 64u + pair) * 6.2831853;
    let th = (w * f32(t)) % 6.2831853 + phi;
    val = ${f(A)} * select(sin(th), cos(th), (c & 1u) == 0u);
  } else if (c < ${2 * R + 8}u) {
    if (c == ${2 * R}u) { val = ${which === 0 ? f(S) : `select(n, ${f(S)}, t < 4u)`}; }
  } else if (c < ${2 * R + 16}u) {
    ${
      which === 0 ? `val = ${f(HQ)};` : `let hh = hsh(hsh(${seed + 991}u) + g * 1000003u + t);
    let heavy = f32(hh) / 4294967296.0 < ${f(P_HEAVY)};
    if (heavy) { val = ${f(HH)}; }`
    }
  }`
  }
  OUT[idx] = ${dtype}(val);
}`;
  return {
    wgsl,
    key: `synthetic:${which}:${nHeads}:${seq}x${d}:g${group}:${dtype}:s${seed}`,
    workgroups: [wx, rows, 1],
  };
};
