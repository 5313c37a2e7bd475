/**
 * `@longctx/plans` must stay embeddable (Node, browsers, other hosts): walk the static import graph from
 * `plans/mod.ts` through the workspace packages it reaches and fail on any runtime-specific import or API.
 */
import { assert, test } from "../tests/harness.ts";

const root = new URL("../", import.meta.url);
const WORKSPACE: Record<string, string> = {
  "@longctx/graph": "graph/mod.ts",
  "@longctx/ops": "ops/mod.ts",
  "@longctx/plans": "plans/mod.ts",
};
const ALLOWED_BARE = /^effect(\/[\w-]+)*$/;
const IMPORT_RE =
  /(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*["']([^"']+)["']|import\s*\(\s*["']([^"']+)["']\s*\)|^\s*import\s*["']([^"']+)["']/gm;
const FORBIDDEN_API =
  /\b(?:Deno|Bun)\s*\.\s*[A-Za-z]|\bdlopen\b|\bprocess\s*\.\s*(?:binding|dlopen)|\brequire\s*\(/;

/** Remove comments so docs may mention runtimes. */
const stripComments = (src: string) =>
  src.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`])\/\/.*$/gm, "$1");

/** Every file reachable from `plans/mod.ts` and the problems found in them. */
const walk = async () => {
  const seen = new Set<string>();
  const problems: string[] = [];
  const queue = [new URL("plans/mod.ts", root).href];
  while (queue.length > 0) {
    const href = queue.pop()!;
    if (seen.has(href)) continue;
    seen.add(href);
    if (!href.endsWith(".ts")) continue; // JSON modules carry no code
    const src = stripComments(await Deno.readTextFile(new URL(href)));
    const rel = href.slice(root.href.length);
    const api = src.match(FORBIDDEN_API);
    if (api) problems.push(`${rel}: uses ${api[0]}`);
    for (const m of src.matchAll(IMPORT_RE)) {
      const spec = m[1] ?? m[2] ?? m[3];
      if (spec.startsWith(".")) queue.push(new URL(spec, href).href);
      else if (WORKSPACE[spec]) queue.push(new URL(WORKSPACE[spec], root).href);
      else if (!ALLOWED_BARE.test(spec)) problems.push(`${rel}: imports ${spec}`);
    }
  }
  return { seen, problems };
};

test("plans/mod.ts reaches no Deno, Bun, Node-only, FFI or runtime-package import", async () => {
  const { seen, problems } = await walk();
  assert.deepEqual(problems, []);
  assert.ok([...seen].some((f) => f.endsWith("plans/src/plan.ts")), "the walk reaches the planner");
  assert.ok(![...seen].some((f) => f.includes("/runtime/")), "plans never imports @longctx/runtime");
});

test("the portability scan catches a forbidden import (self-check)", () => {
  const src = 'import { dlopen } from "bun:ffi";\nconst x = Deno.readFileSync("a");';
  const specs = [...src.matchAll(IMPORT_RE)].map((m) => m[1] ?? m[2] ?? m[3]);
  assert.deepEqual(specs, ["bun:ffi"]);
  assert.ok(
    !ALLOWED_BARE.test("bun:ffi") && !ALLOWED_BARE.test("node:fs") && !ALLOWED_BARE.test("@longctx/runtime"),
  );
  assert.ok(FORBIDDEN_API.test(stripComments(src)));
  assert.ok(!FORBIDDEN_API.test(stripComments("// Deno.readFile is mentioned in a comment only")));
});
