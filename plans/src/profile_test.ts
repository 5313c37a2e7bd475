import { Effect } from "effect";
import { assert, test } from "../../tests/harness.ts";
import {
  decodeProfile,
  fitKey,
  fitSamples,
  type KernelSample,
  lookupDensity,
  parseProfile,
  predictMs,
} from "./profile.ts";

const sample = (flops: number, bytes: number, ms: number): KernelSample => ({
  shape: { n: flops },
  flops,
  bytes,
  ms,
});

test("fitSamples recovers exact non-negative coefficients", () => {
  const [a, b, c] = [0.03, 2e-9, 5e-10];
  const pts = [
    [1e6, 3e7],
    [1e8, 2e6],
    [4e9, 5e8],
    [2e10, 1e9],
    [7e10, 4e9],
  ].map(([f, y]) => sample(f, y, a + b * f + c * y));
  const fit = fitSamples(pts);
  assert.ok(Math.abs(fit.a - a) / a < 1e-6, `a ${fit.a}`);
  assert.ok(Math.abs(fit.b - b) / b < 1e-6, `b ${fit.b}`);
  assert.ok(Math.abs(fit.c - c) / c < 1e-6, `c ${fit.c}`);
  assert.ok(fit.maxRelError < 1e-6);
});

test("fitSamples never returns negative coefficients", () => {
  // Latency falls with bytes here: an unconstrained fit would give c < 0.
  const pts = [sample(1e9, 1e6, 1.0), sample(2e9, 1e9, 1.5), sample(4e9, 1e6, 4.0), sample(8e9, 2e9, 7.0)];
  const fit = fitSamples(pts);
  for (const v of [fit.a, fit.b, fit.c]) assert.ok(v >= 0);
  for (const s of pts) {
    assert.ok(Math.abs(predictMs(fit, s.flops, s.bytes) - s.ms) / s.ms <= fit.maxRelError + 1e-12);
  }
});

const good = {
  version: 1,
  name: "t",
  device: { adapter: "x", backend: "cpu", api: "cpu" },
  date: "2026-11-30",
  commit: "abc",
  command: "calibrate",
  kernels: [{ operator: "dense.attn", samples: [sample(1e9, 1e6, 2), sample(4e9, 4e6, 8)] }],
};

test("decodeProfile fits kernels without a fit", async () => {
  const p = await Effect.runPromise(decodeProfile(good));
  const fit = p.fits.get("dense.attn")!;
  assert.ok(Math.abs(predictMs(fit, 2e9, 2e6) - 4) < 1e-6);
});

test("decode measurements are kept apart from prefill ones (fitKey); one entry per operator and phase", () => {
  const decodeEntry = { operator: "dense.attn", phase: "decode" as const, samples: [sample(1e6, 1e9, 1)] };
  const p = Effect.runSync(decodeProfile({ ...good, kernels: [good.kernels[0], decodeEntry] }));
  assert.equal(fitKey("dense.attn", "decode"), "dense.attn@decode");
  assert.equal(fitKey("dense.attn"), "dense.attn");
  assert.ok(Math.abs(predictMs(p.fits.get("dense.attn")!, 2e9, 2e6) - 4) < 1e-6);
  assert.ok(Math.abs(predictMs(p.fits.get(fitKey("dense.attn", "decode"))!, 1e6, 1e9) - 1) < 1e-6);
  assert.equal(p.maxFlops.get("dense.attn@decode"), 1e6);
  const twice = Effect.runSync(Effect.flip(decodeProfile({ ...good, kernels: [decodeEntry, decodeEntry] })));
  assert.match(twice.message, /lists operator dense\.attn twice \(decode\)/);
  const badPhase = Effect.runSync(
    Effect.flip(decodeProfile({ ...good, kernels: [{ ...decodeEntry, phase: "train" }] })),
  );
  assert.equal(badPhase.reason, "bad-profile");
});

test("malformed profiles fail with bad-profile and a hint", () => {
  const cases: unknown[] = [
    { ...good, version: 2 },
    { ...good, kernels: [{ operator: "dense.attn", samples: [{ ...sample(1, 1, 1), ms: -1 }] }] },
    { ...good, kernels: [good.kernels[0], good.kernels[0]] },
    { ...good, kernels: [{ operator: "dense.attn", samples: [] }] },
    null,
  ];
  for (const c of cases) {
    const e = Effect.runSync(Effect.flip(decodeProfile(c)));
    assert.equal(e.reason, "bad-profile", JSON.stringify(c));
    assert.ok(e.hint.length > 0);
  }
  const j = Effect.runSync(Effect.flip(parseProfile("{ not json")));
  assert.equal(j.reason, "bad-profile");
});

test("lookupDensity: per layer, mean, log-context interpolation, held ends", () => {
  const s = (contextLength: number, density: number, layer?: number) => ({
    pipeline: "sale",
    model: "m",
    contextLength,
    params: { threshold: 0.9 },
    density,
    ...(layer === undefined ? {} : { layer }),
  });
  const rows = [s(4096, 0.4), s(16384, 0.2), s(4096, 0.9, 0)];
  const q = { pipeline: "sale", model: "m", params: { threshold: 0.9, blockSize: 64 } };
  const mid = lookupDensity(rows, { ...q, contextLength: 8192 })!;
  assert.ok(Math.abs(mid.density - 0.3) < 1e-12 && !mid.extrapolated && !mid.perLayer);
  const far = lookupDensity(rows, { ...q, contextLength: 65536 })!;
  assert.ok(far.density === 0.2 && far.extrapolated);
  const l0 = lookupDensity(rows, { ...q, contextLength: 4096, layer: 0 })!;
  assert.ok(l0.density === 0.9 && l0.perLayer);
  assert.equal(lookupDensity(rows, { ...q, contextLength: 4096, params: { threshold: 0.5 } }), undefined);
  assert.equal(lookupDensity(rows, { ...q, model: "other", contextLength: 4096 }), undefined);
});
