/**
 * Where longctx finds its downloaded assets: wgpu-native, the model, the documents. In a clone of the
 * repository `scripts/setup.sh` (run by `npm run setup`, `npm run demo` and `npm test`) fills `<repo>/.cache`;
 * used as a package, the cache is per user, `${XDG_CACHE_HOME:-~/.cache}/longctx`, filled by the installer
 * (`deno run -A jsr:@longctx/runtime/install`, `install.ts`). Every location honours an environment override,
 * read at call time:
 *
 * | variable               | default                                          |
 * |------------------------|--------------------------------------------------|
 * | `LONGCTX_CACHE`        | `<repo>/.cache` in a clone, else the user cache  |
 * | `LONGCTX_WGPU_LIB`     | `<cache>/wgpu/libwgpu_native.so`                 |
 * | `LONGCTX_WGPU_HEADERS` | `<cache>/wgpu` (`webgpu.h`, `wgpu.h`)            |
 * | `LONGCTX_MODEL`        | `<cache>/models/SmolLM2-135M-Instruct.Q4_1.gguf` |
 * | `LONGCTX_DOCS`         | `<cache>/docs` (with `manifest.json`)            |
 *
 * A relative override is resolved against the current working directory. Works unchanged in Deno
 * (needs `--allow-env` and `--allow-read`) and Bun.
 * @module
 */
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, isAbsolute, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { Effect } from "effect";
import { InputError } from "@longctx/graph";

/** File name of the default model inside `<cache>/models`. */
export const DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf";

const env = (name: string): string | undefined => {
  const v = process.env[name];
  return v === undefined || v === "" ? undefined : v;
};

const fromEnv = (name: string): string | undefined => {
  const v = env(name);
  return v === undefined ? undefined : isAbsolute(v) ? v : resolve(process.cwd(), v);
};

/**
 * The repository root: two folders above this file (`runtime/src/paths.ts`). When this module is loaded
 * from a non-file URL (for example a JSR package), the current working directory instead.
 */
export const repoRoot = (): string => {
  const here = new URL(import.meta.url);
  return here.protocol === "file:" ? resolve(dirname(fileURLToPath(here)), "..", "..") : process.cwd();
};

/**
 * Whether this module runs from a clone of the repository (a file two folders above it is `scripts/setup.sh`)
 * rather than from a package (JSR, or an npm-compatible copy under `node_modules`).
 */
export const inClone = (): boolean =>
  new URL(import.meta.url).protocol === "file:" && existsSync(join(repoRoot(), "scripts", "setup.sh"));

/**
 * The per-user cache folder: `$XDG_CACHE_HOME/longctx`, default `~/.cache/longctx` (the XDG Base Directory
 * convention; a relative `XDG_CACHE_HOME` is ignored, as the specification says).
 */
export const userCacheDir = (): string => {
  const xdg = env("XDG_CACHE_HOME");
  return join(xdg !== undefined && isAbsolute(xdg) ? xdg : join(homedir(), ".cache"), "longctx");
};

/** The cache folder: `LONGCTX_CACHE`; else `<repo>/.cache` in a clone, {@link userCacheDir} from a package. */
export const cacheDir = (): string =>
  fromEnv("LONGCTX_CACHE") ?? (inClone() ? join(repoRoot(), ".cache") : userCacheDir());

/**
 * The command that installs the missing assets, for hints: `npm run setup` in a clone, the package's installer
 * otherwise.
 */
export const installHint = (): string =>
  inClone()
    ? "run `npm run setup` (or `bash scripts/setup.sh`)"
    : "run `deno run -A jsr:@longctx/runtime/install` (Bun: `bun -e 'import \"@longctx/runtime/install\"'`)";

/** The wgpu-native shared library: `LONGCTX_WGPU_LIB`, default `<cache>/wgpu/libwgpu_native.so`. */
export const wgpuLibPath = (): string =>
  fromEnv("LONGCTX_WGPU_LIB") ?? join(cacheDir(), "wgpu", "libwgpu_native.so");

/**
 * The folder holding wgpu-native's C headers `webgpu.h` and `wgpu.h` (for generating the FFI bindings):
 * `LONGCTX_WGPU_HEADERS`, default `<cache>/wgpu`. Setup puts them there beside the library; with
 * `LONGCTX_WGPU_LIB` set it skips that step, so they are present only if an earlier setup run installed them.
 */
export const wgpuHeadersDir = (): string => fromEnv("LONGCTX_WGPU_HEADERS") ?? join(cacheDir(), "wgpu");

/** The model file (GGUF): `LONGCTX_MODEL`, default `<cache>/models/SmolLM2-135M-Instruct.Q4_1.gguf`. */
export const modelPath = (): string =>
  fromEnv("LONGCTX_MODEL") ?? join(cacheDir(), "models", DEFAULT_MODEL_FILE);

/** Where `install --dawn` puts npm `webgpu` (Dawn's Node-API addon): `<cache>/dawn/node_modules/webgpu`. */
export const dawnPackageDir = (cache: string = cacheDir()): string =>
  join(cache, "dawn", "node_modules", "webgpu");

/** The documents folder (texts plus `manifest.json`): `LONGCTX_DOCS`, default `<cache>/docs`. */
export const docsDir = (): string => fromEnv("LONGCTX_DOCS") ?? join(cacheDir(), "docs");

/** Where a document came from: a registry package and the path of the text inside it. */
export interface DocumentSource {
  /** Registry: `"pypi"`, `"npm"` or `"debian"`. */
  readonly registry: string;
  readonly package: string;
  readonly version: string;
  /** The downloaded archive's file name and sha256 (hex). */
  readonly file: string;
  readonly fileSha256: string;
  /** Path of the text inside the archive and the sha256 of those bytes before any transform. */
  readonly path: string;
  readonly pathSha256: string;
  /** What setup changed, e.g. `"line endings CRLF -> LF"`. */
  readonly transform: string;
}

/** One entry of `<docs>/manifest.json`, with `path` resolved to an absolute file path. */
export interface DocumentInfo {
  /** Short id, e.g. `"alice-in-wonderland"`; also the file's base name. */
  readonly name: string;
  readonly title: string;
  readonly author: string;
  /** Year of first publication. */
  readonly year: number;
  /** Absolute path of the UTF-8 text file. */
  readonly path: string;
  /** Size of the text file in bytes. */
  readonly bytes: number;
  /** sha256 (hex) of the text file. */
  readonly sha256: string;
  /** Licence, e.g. `"public domain"`, and a note on why. */
  readonly licence: string;
  readonly licenceNote: string;
  readonly source: DocumentSource;
}

const setupHint = (): string => `${installHint()}, or set LONGCTX_DOCS to a documents folder`;

const str = (o: Record<string, unknown>, k: string, where: string): string => {
  const v = o[k];
  if (typeof v !== "string") throw new Error(`${where}: "${k}" must be a string`);
  return v;
};

const parseManifest = (text: string, dir: string, file: string): ReadonlyArray<DocumentInfo> => {
  const m = JSON.parse(text) as unknown;
  if (typeof m !== "object" || m === null || !Array.isArray((m as { documents?: unknown }).documents)) {
    throw new Error(`${file}: needs a "documents" array`);
  }
  return (m as { documents: unknown[] }).documents.map((d, i) => {
    const where = `${file}: documents[${i}]`;
    if (typeof d !== "object" || d === null) throw new Error(`${where} is not an object`);
    const o = d as Record<string, unknown>;
    const src = (typeof o.source === "object" && o.source !== null ? o.source : {}) as Record<
      string,
      unknown
    >;
    const bytes = o.bytes, year = o.year;
    if (typeof bytes !== "number" || typeof year !== "number") {
      throw new Error(`${where}: "bytes" and "year" must be numbers`);
    }
    return {
      name: str(o, "name", where),
      title: str(o, "title", where),
      author: str(o, "author", where),
      year,
      path: join(dir, str(o, "file", where)),
      bytes,
      sha256: str(o, "sha256", where),
      licence: str(o, "licence", where),
      licenceNote: typeof o.licenceNote === "string" ? o.licenceNote : "",
      source: {
        registry: str(src, "registry", `${where}.source`),
        package: str(src, "package", `${where}.source`),
        version: str(src, "version", `${where}.source`),
        file: str(src, "file", `${where}.source`),
        fileSha256: str(src, "fileSha256", `${where}.source`),
        path: str(src, "path", `${where}.source`),
        pathSha256: str(src, "pathSha256", `${where}.source`),
        transform: typeof src.transform === "string" ? src.transform : "",
      },
    };
  });
};

/**
 * The documents listed in `<docs>/manifest.json` (written by setup), in manifest order, each with the
 * absolute path of its text. Reads the manifest only; the texts are not opened.
 *
 * Fails with `InputError` when the manifest is missing, is not JSON, or lacks a field, or when a listed text
 * file does not exist.
 */
export const listDocuments = (): Effect.Effect<ReadonlyArray<DocumentInfo>, InputError> =>
  Effect.try({
    try: () => {
      const dir = docsDir();
      const file = join(dir, "manifest.json");
      if (!existsSync(file)) throw new Error(`no document manifest at ${file}`);
      const docs = parseManifest(readFileSync(file, "utf8"), dir, file);
      const missing = docs.find((d) => !existsSync(d.path));
      if (missing) {
        throw new Error(`document "${missing.name}" is listed in ${file} but ${missing.path} is missing`);
      }
      return docs;
    },
    catch: (e) => new InputError({ message: e instanceof Error ? e.message : String(e), hint: setupHint() }),
  });

/**
 * The text of one document by its manifest name (e.g. `"paradise-lost"`), decoded as UTF-8.
 *
 * Fails with `InputError` when the manifest cannot be read or has no document of that name (the message
 * lists the names it has), or when the file cannot be read.
 */
export const readDocument = (name: string): Effect.Effect<string, InputError> =>
  Effect.flatMap(listDocuments(), (docs) => {
    const doc = docs.find((d) => d.name === name);
    if (!doc) {
      return Effect.fail(
        new InputError({
          message: `no document named "${name}" (known: ${docs.map((d) => d.name).join(", ")})`,
          hint: "pass one of the known names, or a file path where the command accepts one",
        }),
      );
    }
    return Effect.try({
      try: () => readFileSync(doc.path, "utf8"),
      catch: (e) =>
        new InputError({
          message: `cannot read ${doc.path}: ${e instanceof Error ? e.message : e}`,
          hint: setupHint(),
        }),
    });
  });
