/**
 * Access to the built-in profiles of `plans/profiles/`.
 * @module
 */
import { Effect } from "effect";
import { BUILTIN_DENSITIES, BUILTIN_PROFILES } from "../profiles/mod.ts";
import { PlanError } from "./errors.ts";
import { decodeDensityTable, decodeProfile, type DensitySample, type LoadedProfile } from "./profile.ts";

/** Names of the built-in device profiles. */
export const builtinProfileNames = (): readonly string[] => Object.keys(BUILTIN_PROFILES);

/**
 * Load the built-in device profile `name` (`h200`, `cpu`, `lavapipe`). Fails with `PlanError`
 * `unknown-device` (hint: the available names and how to measure a new one) or `bad-profile`.
 */
export const builtinProfile = (name: string): Effect.Effect<LoadedProfile, PlanError> => {
  const raw = BUILTIN_PROFILES[name];
  if (raw === undefined) {
    const names = builtinProfileNames();
    return Effect.fail(
      new PlanError({
        reason: "unknown-device",
        message: `no built-in device profile "${name}"`,
        hint: (names.length > 0
          ? `built-in profiles: ${names.join(", ")}; `
          : "no built-in profile is measured yet; ") +
          "measure this device with `deno run -A runtime/src/cli/calibrate.ts --out <file>` and pass " +
          "`--profile <file>`",
      }),
    );
  }
  return decodeProfile(raw);
};

/** Every sample of the built-in density tables. Fails with `PlanError` `bad-profile`. */
export const builtinDensities = (): Effect.Effect<readonly DensitySample[], PlanError> =>
  Effect.forEach(BUILTIN_DENSITIES, decodeDensityTable).pipe(
    Effect.map((ts) => ts.flatMap((t) => t.samples)),
  );

/**
 * The built-in profile measured on this adapter: same backend kind and the same adapter name (e.g.
 * `cpu` for the cpu backend, `lavapipe` for wgpu on `llvmpipe (LLVM 15.0.6, 256 bits)`). Fails with
 * `PlanError` `unknown-device` (hint: calibrate this device) or `bad-profile`.
 */
export const builtinProfileFor = (
  adapter: { readonly backend: string; readonly name: string },
): Effect.Effect<LoadedProfile, PlanError> => {
  const match = Object.entries(BUILTIN_PROFILES).find(([, raw]) => {
    const d = (raw as { device?: { backend?: string; adapter?: string } }).device;
    return d?.backend === adapter.backend && d?.adapter === adapter.name;
  });
  return match ? builtinProfile(match[0]) : Effect.fail(
    new PlanError({
      reason: "unknown-device",
      message: `no built-in profile was measured on ${adapter.backend}: ${adapter.name}`,
      hint:
        `measure it: deno task calibrate --backend ${adapter.backend} --name <name> --out <file>, then pass ` +
        "the profile to the planner (or add it to plans/profiles/mod.ts)",
    }),
  );
};
