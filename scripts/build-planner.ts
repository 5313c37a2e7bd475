/**
 * The planner for any JavaScript host: one ES module, `longctx-plans.js`, with `@longctx/plans` (and the parts
 * of `@longctx/graph`, `@longctx/ops` and `effect` it uses, and the built-in device profiles) bundled by esbuild
 * (npm `esbuild`), no Deno, Bun or Node API in it. It exports everything `@longctx/plans` exports, plus
 * `Effect`, `Exit` and `Cause` of `effect` to run the planner's Effects:
 *
 * ```js
 * import { builtinDensities, builtinProfile, defaultOperators, Effect, plan } from "./longctx-plans.js";
 * const p = await Effect.runPromise(Effect.gen(function* () {
 *   const env = { profile: yield* builtinProfile("h200"), operators: defaultOperators(), densities: yield* builtinDensities() };
 *   return yield* plan({ model: "llama-3.1-8b", contextLength: 65536, phase: "prefill" }, env);
 * }));
 * ```
 *
 * `bash scripts/deno.sh run -A scripts/build-planner.ts [OUT]` writes it (default `docs/planner/longctx-plans.js`,
 * beside the planner page `docs/planner/index.html`). `tests/e2e/planner_web_test.ts` runs it under Node and in
 * headless Chromium.
 * @module
 */
import { join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = resolve(fileURLToPath(new URL(".", import.meta.url)), "..");

/** Where `deno run -A scripts/build-planner.ts` writes the bundle by default. */
export const DEFAULT_OUT: string = join(root, "docs", "planner", "longctx-plans.js");

/** Build facts: the output file and its size in bytes. */
export interface PlannerBuild {
  /** Absolute path of the ES module written. */
  readonly file: string;
  /** Its size, bytes. */
  readonly bytes: number;
}

/** Bundle `@longctx/plans` into one ES module at `out`; rejects with esbuild's messages on an error. */
export const buildPlanner = async (out: string = DEFAULT_OUT): Promise<PlannerBuild> => {
  const result = await esbuild.build({
    stdin: {
      contents: 'export * from "./plans/mod.ts";\nexport { Cause, Effect, Exit } from "effect";\n',
      resolveDir: root,
      sourcefile: "longctx-plans-entry.ts",
      loader: "ts",
    },
    bundle: true,
    format: "esm",
    platform: "neutral",
    mainFields: ["module", "main"],
    target: "es2022",
    tsconfig: join(root, "tsconfig.json"), // its "paths" map @longctx/* onto the workspace folders
    outfile: out,
    minify: true,
    legalComments: "none",
    metafile: true,
    logLevel: "silent",
  });
  const bytes = Object.values(result.metafile.outputs)[0]?.bytes ?? 0;
  await esbuild.stop();
  return { file: out, bytes };
};

if (import.meta.main) {
  const b = await buildPlanner(process.argv[2] ? resolve(process.argv[2]) : DEFAULT_OUT);
  console.log(`wrote ${b.file} (${(b.bytes / 1024).toFixed(0)} KiB)`);
}
