/**
 * The planner anywhere: `scripts/build-planner.ts` bundles `@longctx/plans` into one ES module, which must
 *
 * - contain no Deno, Bun or Node API;
 * - plan under Node (the `node` on PATH, which `npm run setup` already needs: Node 20 or newer) exactly what
 *   the Deno planner plans for the same requests;
 * - run in a real headless Chromium (Debian's `chromium`, installed by `scripts/setup.sh` when it can; the browser
 *   test skips, saying why, without it) in the docs page `docs/planner/index.html`, whose numbers (`#result`)
 *   must equal the Deno planner's; a screenshot of the page is written to `$LONGCTX_PLANNER_SHOT` (default a
 *   temporary file) for a person to look at.
 *
 * The bundle and a copy of the page go to a temporary folder, served over HTTP (module scripts do not load from
 * file:// URLs). About 20 s on 2 cores.
 */
import { execFile, spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { extname, join } from "node:path";
import process from "node:process";
import { promisify } from "node:util";
import { Effect } from "effect";
import { builtinDensities, builtinProfile, defaultOperators, plan, type PlanRequest } from "@longctx/plans";
import { assert, test } from "../harness.ts";
import { repoRoot } from "../../runtime/src/paths.ts";
import { buildPlanner } from "../../scripts/build-planner.ts";

const root = repoRoot();
const run = promisify(execFile);

/** The requests tried: a sparse plan on the H200, a dense one on lavapipe, a decode step. */
const CASES: readonly { readonly device: string; readonly request: PlanRequest }[] = [
  { device: "h200", request: { model: "llama-3.1-8b", contextLength: 65536, phase: "prefill" } },
  { device: "lavapipe", request: { model: "smollm2-135m", contextLength: 2048, phase: "prefill" } },
  { device: "h200", request: { model: "llama-3.1-8b", contextLength: 131072, phase: "decode" } },
];

/** What the page and the Node script report: the numbers of a plan. */
interface Numbers {
  readonly dtype: string;
  readonly attentionMs: number;
  readonly denseAttentionMs: number;
  readonly groups: readonly { layers: readonly number[]; pipeline: string; msPerLayer: number }[];
}

/** The Deno planner's numbers for a case. */
const denoNumbers = (c: (typeof CASES)[number]): Promise<Numbers> =>
  Effect.runPromise(Effect.gen(function* () {
    const env = {
      profile: yield* builtinProfile(c.device),
      operators: defaultOperators(),
      densities: yield* builtinDensities(),
    };
    const p = yield* plan(c.request, env);
    return {
      dtype: p.dtype,
      attentionMs: p.predicted.attentionMs,
      denseAttentionMs: p.predicted.denseAttentionMs,
      groups: p.groups.map((g) => ({ layers: g.layers, pipeline: g.pipeline, msPerLayer: g.msPerLayer })),
    };
  }));

const pick = (n: Numbers): Numbers => ({
  dtype: n.dtype,
  attentionMs: n.attentionMs,
  denseAttentionMs: n.denseAttentionMs,
  groups: n.groups.map((g) => ({ layers: g.layers, pipeline: g.pipeline, msPerLayer: g.msPerLayer })),
});

/** A temporary folder with the bundle and a copy of the docs page. */
const site = async () => {
  const dir = mkdtempSync(join(tmpdir(), "longctx-planner-"));
  const b = await buildPlanner(join(dir, "longctx-plans.js"));
  for (const f of ["index.html", "page.js"]) copyFileSync(join(root, "docs", "planner", f), join(dir, f));
  return { dir, bundle: b.file };
};

test("planner bundle: no Deno, Bun or Node API, and under Node the same plans as Deno's", async () => {
  const { dir, bundle } = await site();
  try {
    const code = readFileSync(bundle, "utf8");
    for (
      const api of [
        /\bDeno\.[a-z]/,
        /\bBun\.[a-z]/,
        /\brequire\(/,
        /from\s*"node:/,
        /\bprocess\.(env|argv|exit)/,
      ]
    ) {
      assert.ok(!api.test(code), `the bundle uses ${api}`);
    }
    const script = join(dir, "node_check.mjs");
    writeFileSync(
      script,
      `import * as P from "./longctx-plans.js";
const cases = JSON.parse(process.argv[2]);
const out = [];
for (const c of cases) {
  const p = await P.Effect.runPromise(P.Effect.gen(function* () {
    const env = { profile: yield* P.builtinProfile(c.device), operators: P.defaultOperators(), densities: yield* P.builtinDensities() };
    return yield* P.plan(c.request, env);
  }));
  out.push({ dtype: p.dtype, attentionMs: p.predicted.attentionMs, denseAttentionMs: p.predicted.denseAttentionMs,
    groups: p.groups.map((g) => ({ layers: g.layers, pipeline: g.pipeline, msPerLayer: g.msPerLayer })) });
}
console.log(JSON.stringify({ node: process.version, out }));
`,
    );
    const r = spawnSync("node", [script, JSON.stringify(CASES)], { encoding: "utf8", timeout: 120_000 });
    assert.equal(r.status, 0, `node: ${r.stderr}`);
    const got = JSON.parse(r.stdout) as { node: string; out: Numbers[] };
    assert.ok(Number(got.node.slice(1).split(".")[0]) >= 20, `node ${got.node}`);
    for (const [i, c] of CASES.entries()) {
      assert.deepEqual(pick(got.out[i]), await denoNumbers(c), JSON.stringify(c));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const chromium = ["chromium", "chromium-browser"].find((b) => spawnSync(b, ["--version"]).status === 0);

if (chromium === undefined) {
  console.error(
    "planner_web_test: skipping the browser test: no chromium on PATH (scripts/setup.sh installs it)",
  );
}

test(
  "planner page in headless Chromium: the page's numbers are the Deno planner's; a screenshot",
  async () => {
    const { dir } = await site();
    const types: Record<string, string> = {
      ".html": "text/html",
      ".js": "text/javascript",
      ".mjs": "text/javascript",
    };
    const server = createServer((req, res) => {
      const file = join(
        dir,
        new URL(req.url ?? "/", "http://x").pathname.replace(/^\/+/, "") || "index.html",
      );
      if (!file.startsWith(dir) || !existsSync(file)) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
      res.end(readFileSync(file));
    });
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/index.html`;
    const flags = [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--virtual-time-budget=30000",
    ];
    const url = (c: (typeof CASES)[number]) =>
      `${base}?model=${c.request.model}&context=${c.request.contextLength}&device=${c.device}&phase=${c.request.phase}`;
    try {
      for (const c of CASES) {
        const { stdout } = await run(chromium!, [...flags, "--dump-dom", url(c)], { maxBuffer: 1 << 24 });
        assert.match(stdout, /data-state="done"/, `the page finished planning ${url(c)}`);
        const json = stdout.match(/<pre id="result">([\s\S]*?)<\/pre>/)?.[1] ?? "";
        const page = JSON.parse(json.replaceAll("&quot;", '"').replaceAll("&amp;", "&")) as Numbers & {
          perLayerMs: number[];
        };
        const want = await denoNumbers(c);
        assert.deepEqual(pick(page), want, url(c));
        const layers = want.groups.at(-1)!.layers[1];
        assert.equal(page.perLayerMs.length, layers);
        assert.ok(
          Math.abs(page.perLayerMs.reduce((a, x) => a + x, 0) - want.attentionMs) < 1e-6 * want.attentionMs,
        );
      }
      const bad = await run(chromium!, [
        ...flags,
        "--dump-dom",
        `${base}?model=llama-9&context=1024&device=h200`,
      ]);
      assert.match(bad.stdout, /data-state="error"/);
      assert.match(bad.stdout, /unknown model|no model|llama-9/i, "a typed error is shown with its message");
      const shot = process.env.LONGCTX_PLANNER_SHOT ?? join(dir, "planner.png");
      await run(chromium!, [...flags, "--window-size=1000,800", `--screenshot=${shot}`, url(CASES[0])]);
      assert.ok(statSync(shot).size > 10_000, `screenshot ${shot}`);
    } finally {
      await new Promise((ok) => server.close(ok));
      rmSync(dir, { recursive: true, force: true });
    }
  },
  { ignore: chromium === undefined },
);
