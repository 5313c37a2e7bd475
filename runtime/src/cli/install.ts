/**
 * `install`: puts wgpu-native, the model and the documents (and, with `--dawn`, Dawn) into longctx's cache
 * folder — the per-user cache `${XDG_CACHE_HOME:-~/.cache}/longctx` when longctx is a package of your project,
 * `<repo>/.cache` in a clone, `LONGCTX_CACHE` when set (see `install.ts` for what comes from where):
 *
 * ```sh
 * deno run -A jsr:@longctx/runtime/install [--dawn] [--only wgpu,model,docs] [--cache DIR]
 * bun -e 'import "@longctx/runtime/install"' -- [flags]
 * ```
 *
 * Importing this module runs the command (it is an entry point). Bad flags and failed steps print one line,
 * `error: … — fix: …`, and set exit code 1.
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
/** @internal Effect's types are documented by the `effect` package. */
import { Effect } from "effect";
import { InputError } from "@longctx/graph";
import { type Asset, DEFAULT_ASSETS, installAssets } from "../install.ts";
import { runMain } from "../main.ts";
import { cacheDir } from "../paths.ts";

const ASSETS: readonly Asset[] = ["wgpu", "model", "docs", "dawn"];

const HELP = `install: put longctx's native pieces and data into its cache folder

USAGE
  deno run -A jsr:@longctx/runtime/install [flags]

FLAGS
  --only LIST    assets to install, comma-separated: ${ASSETS.join(", ")} (default ${
  DEFAULT_ASSETS.join(",")
})
  --dawn         also install Dawn (npm webgpu@0.6.2, 132 MB; needs npm) for the dawn backend (default: no)
  --cache DIR    the cache folder (default ${cacheDir()}: LONGCTX_CACHE, else <repo>/.cache in a clone, else
                 \${XDG_CACHE_HOME:-~/.cache}/longctx)
  --help         print this
`;

/** Parse the command line: the assets and the cache folder, or an `InputError` naming the bad flag. */
const parse = (
  argv: readonly string[],
): Effect.Effect<{ assets: Asset[]; cache: string } | "help", InputError> =>
  Effect.try({
    try: () => {
      const { values } = parseArgs({
        args: [...argv],
        options: {
          only: { type: "string" },
          dawn: { type: "boolean", default: false },
          cache: { type: "string" },
          help: { type: "boolean", default: false },
        },
        strict: true,
        allowPositionals: false,
      });
      if (values.help) return "help" as const;
      const assets = values.only === undefined
        ? [...DEFAULT_ASSETS]
        : values.only.split(",").map((s) => s.trim());
      const bad = assets.find((a) => !(ASSETS as readonly string[]).includes(a));
      if (bad !== undefined) throw new Error(`--only: unknown asset "${bad}"`);
      if (values.dawn && !assets.includes("dawn")) assets.push("dawn");
      return { assets: assets as Asset[], cache: values.cache ?? cacheDir() };
    },
    catch: (e) =>
      new InputError({
        message: e instanceof Error ? e.message : String(e),
        hint: `flags: --only ${ASSETS.join(",")}, --dawn, --cache DIR, --help`,
      }),
  });

await runMain(Effect.gen(function* () {
  // `bun -e 'import "@longctx/runtime/install"' -- flags` has no script path in argv[1].
  const argv = process.argv[1]?.startsWith("-") ? process.argv.slice(1) : process.argv.slice(2);
  const args = yield* parse(argv.filter((a) => a !== "--"));
  if (args === "help") {
    process.stdout.write(HELP);
    return;
  }
  const t0 = performance.now();
  const steps = yield* installAssets({ assets: args.assets, cache: args.cache });
  const done = steps.filter((s) => s.status === "installed").length;
  process.stderr.write(
    `[install] done in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${done} installed, ` +
      `${steps.length - done} already there; cache ${args.cache}\n`,
  );
}));
