/**
 * Device profiles: measured kernel latencies on one device, and the latency model fitted to them.
 *
 * A profile holds, per operator (`dense.attn`, `sale.estimate`, …), latency samples over sizes as
 * `calibrate` measured them, each with the operator's own cost model at that size (FLOPs and bytes moved).
 * From the samples we fit `ms = a + b·flops + c·bytes` with non-negative coefficients, minimising the
 * squared *relative* residual (times span orders of magnitude). The planner predicts a kernel's latency
 * at a new size from its cost there. Nothing here is assumed: a profile without an operator means the
 * planner cannot use that operator on that device. An operator measured in decode (one query row against a
 * cache: `calibrate --phase decode`) is a separate entry tagged `phase: "decode"`, fitted on its own
 * (`dense.attn` runs split-KV kernels there, not its prefill tiles; {@link fitKey}).
 *
 * Density tables (`DensityTable`) are the other measured input: the fraction of causal blocks a sparse
 * pipeline keeps, per model, context length and (optionally) layer, from fidelity runs on real text.
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Effect, Schema } from "effect";
import { PlanError } from "./errors.ts";

/** Current profile format version. */
export const PROFILE_VERSION = 1 as const;

const NonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0));
const Positive = Schema.Finite.check(Schema.isGreaterThan(0));

/** One measurement: an operator run at one size. */
export interface KernelSample {
  /** The sizes the operator ran at (e.g. `{ heads: 32, kvHeads: 8, seq: 8192, headDim: 128 }`). */
  readonly shape: { readonly [dim: string]: number };
  /** The operator's cost model at that size: FLOPs (multiply-add = 2). */
  readonly flops: number;
  /** Bytes read plus bytes written, from the cost model. */
  readonly bytes: number;
  /** Median latency in milliseconds (> 0). */
  readonly ms: number;
  /** Every repetition's latency (ms), when recorded. */
  readonly samplesMs?: readonly number[];
}
/** The schema of {@link KernelSample} : decoding checks every field's type and range. */
export const KernelSample: Schema.Codec<KernelSample> = Schema.Struct({
  /** The sizes the operator ran at (e.g. `{ heads: 32, kvHeads: 8, seq: 8192, headDim: 128 }`). */
  shape: Schema.Record(Schema.String, Schema.Finite),
  /** The operator's cost model at that size: FLOPs (multiply-add = 2). */
  flops: NonNegative,
  /** Bytes read plus bytes written, from the cost model. */
  bytes: NonNegative,
  /** Median latency in milliseconds. */
  ms: Positive,
  /** Every repetition's latency (ms), when recorded. */
  samplesMs: Schema.optionalKey(Schema.Array(Positive)),
});

/** Fitted latency model `ms = a + b·flops + c·bytes` (all coefficients ≥ 0). */
export interface KernelFit {
  /** Fixed cost per launch sequence, ms. */
  readonly a: number;
  /** ms per FLOP. */
  readonly b: number;
  /** ms per byte. */
  readonly c: number;
  /** Largest |predicted − measured| / measured over the samples. */
  readonly maxRelError: number;
}
/** The schema of {@link KernelFit} : decoding checks every field's type and range. */
export const KernelFit: Schema.Codec<KernelFit> = Schema.Struct({
  /** Fixed cost per launch sequence, ms. */
  a: NonNegative,
  /** ms per FLOP. */
  b: NonNegative,
  /** ms per byte. */
  c: NonNegative,
  /** Largest |predicted − measured| / measured over the samples. */
  maxRelError: NonNegative,
});

/** Measurements of one operator on one device. */
export interface KernelProfile {
  /** Operator name, `<technique>.<kind>` as in `@longctx/ops`. */
  readonly operator: string;
  /**
   * The phase the samples were measured in: `decode` for one query row against a cache of the context
   * (`calibrate --phase decode`; an operator such as `dense.attn` runs other kernels there), absent for prefill.
   */
  readonly phase?: "prefill" | "decode";
  /** The measurements, one per size. */
  readonly samples: readonly KernelSample[];
  /** Fit of the samples; computed on load when absent. */
  readonly fit?: KernelFit;
}
/** The schema of {@link KernelProfile} : decoding checks every field's type and range. */
export const KernelProfile: Schema.Codec<KernelProfile> = Schema.Struct({
  /** Operator name, `<technique>.<kind>` as in `@longctx/ops`. */
  operator: Schema.NonEmptyString,
  /** The phase the samples were measured in (absent: prefill). */
  phase: Schema.optionalKey(Schema.Literals(["prefill", "decode"])),
  samples: Schema.Array(KernelSample),
  /** Fit of the samples; computed on load when absent. */
  fit: Schema.optionalKey(KernelFit),
});

/** A device profile document (`plans/profiles/*.json`, written by `calibrate`). */
export interface DeviceProfile {
  /** Format version: {@link PROFILE_VERSION}. */
  readonly version: typeof PROFILE_VERSION;
  /** Short name used to select it (`h200`, `cpu`, `lavapipe`). */
  readonly name: string;
  /** The device it was measured on. */
  readonly device: {
    /** Adapter name as the backend reports it. */
    readonly adapter: string;
    /** The backend that ran the kernels. */
    readonly backend: "cpu" | "wgpu" | "webgpu" | "dawn";
    /** Graphics API (`vulkan`, `cpu`, …). */
    readonly api: string;
    /** Driver version or description as the backend reports it (profiles from before it was recorded lack it). */
    readonly driver?: string;
  };
  /** ISO-8601 date of the measurement. */
  readonly date: string;
  /** Git commit the kernels were measured at. */
  readonly commit: string;
  /** The command that produced this file. */
  readonly command: string;
  /** One entry per measured operator. */
  readonly kernels: readonly KernelProfile[];
}
/** The schema of {@link DeviceProfile} : decoding checks every field's type and range. */
export const DeviceProfile: Schema.Codec<DeviceProfile> = Schema.Struct({
  version: Schema.Literal(PROFILE_VERSION),
  /** Short name used to select it (`h200`, `cpu`, `lavapipe`). */
  name: Schema.NonEmptyString,
  device: Schema.Struct({
    /** Adapter name as the backend reports it. */
    adapter: Schema.String,
    backend: Schema.Literals(["cpu", "wgpu", "webgpu", "dawn"]),
    /** Graphics API (`vulkan`, `cpu`, …). */
    api: Schema.String,
    /** Driver version or description as the backend reports it (profiles from before it was recorded lack it). */
    driver: Schema.optionalKey(Schema.String),
  }),
  /** ISO-8601 date of the measurement. */
  date: Schema.String,
  /** Git commit the kernels were measured at. */
  commit: Schema.String,
  /** The command that produced this file. */
  command: Schema.String,
  kernels: Schema.Array(KernelProfile),
});

/** One measured density: the share of causal blocks a sparse pipeline kept. */
export interface DensitySample {
  /** Pipeline template name (`sale`). */
  readonly pipeline: string;
  /** Registry model id the attention came from. */
  readonly model: string;
  /** Tokens of the context it was measured at. */
  readonly contextLength: number;
  /** Layer index, or absent for the mean over layers. */
  readonly layer?: number;
  /** Selection parameters the density was measured with (e.g. `{ threshold: 0.9, blockSize: 64 }`). */
  readonly params: { readonly [param: string]: number };
  /** kept blocks / causal blocks, in (0, 1]. */
  readonly density: number;
}
/** The schema of {@link DensitySample} : decoding checks every field's type and range. */
export const DensitySample: Schema.Codec<DensitySample> = Schema.Struct({
  /** Pipeline template name (`sale`). */
  pipeline: Schema.NonEmptyString,
  /** Registry model id the attention came from. */
  model: Schema.NonEmptyString,
  contextLength: Schema.Int.check(Schema.isGreaterThan(0)),
  /** Layer index, or absent for the mean over layers. */
  layer: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
  /** Selection parameters the density was measured with (e.g. `{ threshold: 0.9, blockSize: 64 }`). */
  params: Schema.Record(Schema.String, Schema.Finite),
  /** kept blocks / causal blocks, in (0, 1]. */
  density: Positive.check(Schema.isLessThanOrEqualTo(1)),
});

/** A density table document (`plans/profiles/density-*.json`). */
export interface DensityTable {
  /** Format version: {@link PROFILE_VERSION}. */
  readonly version: typeof PROFILE_VERSION;
  /** Where the densities were measured (document, command, commit). */
  readonly source: string;
  /** ISO-8601 date of the measurement. */
  readonly date: string;
  /** The measured densities. */
  readonly samples: readonly DensitySample[];
}
/** The schema of {@link DensityTable} : decoding checks every field's type and range. */
export const DensityTable: Schema.Codec<DensityTable> = Schema.Struct({
  version: Schema.Literal(PROFILE_VERSION),
  /** Where the densities were measured (document, command, commit). */
  source: Schema.String,
  date: Schema.String,
  samples: Schema.Array(DensitySample),
});

// ---------------------------------------------------------------------------------------------------
// Fitting

/** Solve a small dense linear system (Gaussian elimination, partial pivoting); undefined if singular. */
const solve = (a: number[][], b: number[]): number[] | undefined => {
  const n = b.length;
  const m = a.map((row, i) => [...row, b[i]]);
  for (let col = 0; col < n; col++) {
    let piv = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(m[r][col]) > Math.abs(m[piv][col])) piv = r;
    if (Math.abs(m[piv][col]) < 1e-300) return undefined;
    [m[col], m[piv]] = [m[piv], m[col]];
    for (let r = 0; r < n; r++) {
      if (r === col) continue;
      const f = m[r][col] / m[col][col];
      for (let k = col; k <= n; k++) m[r][k] -= f * m[col][k];
    }
  }
  return m.map((row, i) => row[n] / row[i]);
};

/**
 * Fit `ms = a + b·flops + c·bytes`, coefficients ≥ 0, minimising Σ((pred − ms) / ms)². Exact
 * non-negative least squares over three unknowns: every subset of {a, b, c} is solved (features scaled
 * to unit range) and the best all-non-negative solution kept. Needs at least one sample.
 */
export const fitSamples = (samples: readonly KernelSample[]): KernelFit => {
  const feats = samples.map((s) => [1, s.flops, s.bytes]);
  const scale = [0, 1, 2].map((j) => Math.max(1e-300, ...feats.map((f) => Math.abs(f[j]))));
  let best: { coef: number[]; err: number } | undefined;
  for (let mask = 1; mask < 8; mask++) {
    const cols = [0, 1, 2].filter((j) => mask & (1 << j));
    // Weighted normal equations with weights 1/ms² on scaled features.
    const ata = cols.map(() => cols.map(() => 0));
    const atb = cols.map(() => 0);
    samples.forEach((s, i) => {
      const w = 1 / (s.ms * s.ms);
      cols.forEach((cj, p) => {
        const xp = feats[i][cj] / scale[cj];
        atb[p] += w * xp * s.ms;
        cols.forEach((ck, q) => (ata[p][q] += w * xp * (feats[i][ck] / scale[ck])));
      });
    });
    const sol = solve(ata, atb);
    if (!sol || sol.some((v) => !(v >= 0) || !Number.isFinite(v))) continue;
    const coef = [0, 0, 0];
    cols.forEach((cj, p) => (coef[cj] = sol[p] / scale[cj]));
    const err = samples.reduce((acc, s, i) => {
      const r = (coef[0] + coef[1] * feats[i][1] + coef[2] * feats[i][2] - s.ms) / s.ms;
      return acc + r * r;
    }, 0);
    if (!best || err < best.err) best = { coef, err };
  }
  // Mask {a} alone has a positive solution (weighted mean of ms > 0) unless the weights 1/ms² overflow
  // (ms below ~1e-154): then no fit exists, and `indexProfile` refuses the profile.
  if (!best) return { a: NaN, b: NaN, c: NaN, maxRelError: NaN };
  const coef = best.coef;
  const maxRelError = Math.max(
    0,
    ...samples.map((s, i) => Math.abs(coef[0] + coef[1] * feats[i][1] + coef[2] * feats[i][2] - s.ms) / s.ms),
  );
  return { a: coef[0], b: coef[1], c: coef[2], maxRelError };
};

/** Predicted latency (ms) of a kernel with a fit, at a cost of `flops` and `bytes`. */
export const predictMs = (fit: KernelFit, flops: number, bytes: number): number =>
  fit.a + fit.b * flops + fit.c * bytes;

/**
 * The key of an operator's measurements in a {@link LoadedProfile}'s maps: its name for prefill samples,
 * `<name>@decode` for decode ones ({@link KernelProfile.phase}).
 */
export const fitKey = (operator: string, phase: "prefill" | "decode" = "prefill"): string =>
  phase === "decode" ? `${operator}@decode` : operator;

/** A profile ready for planning: every operator has a fit, indexed by {@link fitKey}. */
export interface LoadedProfile {
  /** The decoded profile document. */
  readonly profile: DeviceProfile;
  /** Latency fit per operator and phase, by {@link fitKey} (the profile's, or fitted on load from its samples). */
  readonly fits: ReadonlyMap<string, KernelFit>;
  /** Largest sampled FLOPs per operator and phase, by {@link fitKey} (to flag extrapolation). */
  readonly maxFlops: ReadonlyMap<string, number>;
}

/** Index a decoded profile, fitting operators that carry samples but no fit. */
export const indexProfile = (profile: DeviceProfile): Effect.Effect<LoadedProfile, PlanError> =>
  Effect.gen(function* () {
    const fits = new Map<string, KernelFit>();
    const maxFlops = new Map<string, number>();
    for (const k of profile.kernels) {
      const key = fitKey(k.operator, k.phase);
      if (fits.has(key)) {
        return yield* new PlanError({
          reason: "bad-profile",
          message: `profile "${profile.name}" lists operator ${k.operator} twice` +
            (k.phase === "decode" ? " (decode)" : ""),
          hint: "merge the samples of both entries into one, then re-run calibrate to refit",
        });
      }
      if (!k.fit && k.samples.length === 0) {
        return yield* new PlanError({
          reason: "bad-profile",
          message: `profile "${profile.name}": operator ${k.operator} has neither samples nor a fit`,
          hint: `re-run calibrate for ${k.operator} or remove its entry`,
        });
      }
      const fit = k.fit ?? fitSamples(k.samples);
      // A fit whose prediction overflows (finite numbers too large, or samples no fit can weigh) would make
      // every latency the planner compares Infinity or NaN: refuse it with the numbers.
      const probe = predictMs(fit, 1e30, 1e30);
      const worst = k.samples.map((s) => predictMs(fit, s.flops, s.bytes)).find((v) => !Number.isFinite(v));
      if (!Number.isFinite(probe) || worst !== undefined || !Number.isFinite(fit.maxRelError)) {
        return yield* new PlanError({
          reason: "bad-profile",
          message:
            `profile "${profile.name}": operator ${k.operator}'s latency model overflows (a=${fit.a}, b=${fit.b}, c=${fit.c}; ` +
            `prediction at 1e30 FLOPs and bytes = ${probe})`,
          hint:
            "the samples or fit hold out-of-range numbers (ms must be ≥ 1e-100, coefficients small): re-run calibrate",
        });
      }
      fits.set(key, fit);
      maxFlops.set(key, Math.max(0, ...k.samples.map((s) => s.flops)));
    }
    return { profile, fits, maxFlops };
  });

const schemaMessage = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split("\n")[0];

/**
 * Decode a device profile from parsed JSON (`unknown`) and index it.
 * Fails with `PlanError` `bad-profile` (schema violation, duplicate operator, empty entry).
 */
export const decodeProfile = (json: unknown): Effect.Effect<LoadedProfile, PlanError> =>
  Schema.decodeUnknownEffect(DeviceProfile)(json).pipe(
    Effect.mapError((e) =>
      new PlanError({
        reason: "bad-profile",
        message: `malformed device profile: ${schemaMessage(e)}`,
        hint: `a profile is JSON with version ${PROFILE_VERSION}, name, device, date, commit, command and ` +
          "kernels[{operator, samples[{shape, flops, bytes, ms}]}]; regenerate it with `calibrate`",
      })
    ),
    Effect.flatMap(indexProfile),
  );

/** Decode a density table from parsed JSON. Fails with `PlanError` `bad-profile`. */
export const decodeDensityTable = (json: unknown): Effect.Effect<DensityTable, PlanError> =>
  Schema.decodeUnknownEffect(DensityTable)(json).pipe(
    Effect.mapError((e) =>
      new PlanError({
        reason: "bad-profile",
        message: `malformed density table: ${schemaMessage(e)}`,
        hint: `a density table is JSON with version ${PROFILE_VERSION}, source, date and ` +
          "samples[{pipeline, model, contextLength, params, density}]",
      })
    ),
  );

/**
 * Parse JSON text then decode it as a device profile. Fails with `PlanError` `bad-profile` on invalid
 * JSON or schema violations.
 */
export const parseProfile = (text: string): Effect.Effect<LoadedProfile, PlanError> =>
  Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: (e) =>
      new PlanError({
        reason: "bad-profile",
        message: `device profile is not JSON: ${schemaMessage(e)}`,
        hint: "regenerate it with `deno task calibrate` (runtime/src/cli/calibrate.ts)",
      }),
  }).pipe(Effect.flatMap(decodeProfile));

/**
 * Measured density of `pipeline` for `model` at `contextLength` (and `layer`, when per-layer samples
 * exist), from the samples whose `params` match `params` on every key they share. Interpolates linearly
 * in log(context) between the nearest measured lengths and holds the end values outside them
 * (`extrapolated` is then true). Undefined when nothing was measured for that model and pipeline.
 */
export const lookupDensity = (
  samples: readonly DensitySample[],
  query: {
    readonly pipeline: string;
    readonly model: string;
    readonly contextLength: number;
    readonly layer?: number;
    readonly params: Readonly<Record<string, number>>;
  },
): { readonly density: number; readonly extrapolated: boolean; readonly perLayer: boolean } | undefined => {
  const matches = samples.filter((s) =>
    s.pipeline === query.pipeline && s.model === query.model &&
    Object.entries(s.params).every(([k, v]) => !(k in query.params) || query.params[k] === v)
  );
  const layerRows = query.layer === undefined ? [] : matches.filter((s) => s.layer === query.layer);
  const rows = layerRows.length > 0 ? layerRows : matches.filter((s) => s.layer === undefined);
  if (rows.length === 0) return undefined;
  // Mean density per context length.
  const byCtx = new Map<number, number[]>();
  for (const r of rows) byCtx.set(r.contextLength, [...(byCtx.get(r.contextLength) ?? []), r.density]);
  const pts = [...byCtx.entries()].map(([c, ds]) => [c, ds.reduce((a, b) => a + b, 0) / ds.length] as const)
    .sort((x, y) => x[0] - y[0]);
  const perLayer = layerRows.length > 0;
  const t = query.contextLength;
  if (t <= pts[0][0]) return { density: pts[0][1], extrapolated: t < pts[0][0], perLayer };
  const last = pts[pts.length - 1];
  if (t >= last[0]) return { density: last[1], extrapolated: t > last[0], perLayer };
  const i = pts.findIndex((p) => p[0] >= t);
  const [c0, d0] = pts[i - 1];
  const [c1, d1] = pts[i];
  const w = (Math.log(t) - Math.log(c0)) / (Math.log(c1) - Math.log(c0));
  return { density: d0 + w * (d1 - d0), extrapolated: false, perLayer };
};
