/**
 * The technique registry: every attention technique `@longctx/ops` provides, one line each. The planner,
 * `run --pipeline <name>`, `plan`, `calibrate`, the benchmarks and the tests find techniques here; adding one
 * is a folder under `ops/` with a `technique.ts` (see docs/adding-a-technique.md) and one line below.
 * @module
 */
import { Effect } from "effect";
import { type AnyTechnique, TechniqueError } from "@longctx/graph";
import { denseTechnique } from "./dense/technique.ts";
import { saleTechnique } from "./sale/technique.ts";
import { hipTechnique } from "./hip/technique.ts";
import { tokenSelectTechnique } from "./tokenselect/technique.ts";
import { squeezedTechnique } from "./squeezed/technique.ts";

/** Registered techniques, the exact baseline (`dense`) first. */
export const TECHNIQUES: readonly AnyTechnique[] = [
  denseTechnique,
  saleTechnique,
  hipTechnique,
  tokenSelectTechnique,
  squeezedTechnique,
];

/** The names of `techniques` (default: the registry), in registry order. */
export const techniqueNames = (techniques: readonly AnyTechnique[] = TECHNIQUES): readonly string[] =>
  techniques.map((t) => t.name);

/**
 * The technique called `name` in `techniques` (default: the registry). Fails with `TechniqueError`
 * `unknown-technique` whose hint lists the known names.
 */
export const techniqueByName = (
  name: string,
  techniques: readonly AnyTechnique[] = TECHNIQUES,
): Effect.Effect<AnyTechnique, TechniqueError> => {
  const t = techniques.find((x) => x.name === name);
  return t ? Effect.succeed(t) : Effect.fail(
    new TechniqueError({
      reason: "unknown-technique",
      message: `unknown technique "${name}"`,
      hint: `use one of: ${techniqueNames(techniques).join(", ")}`,
    }),
  );
};
