/**
 * Smoke test of the `dawn` backend (Dawn's Node-API addon from npm `webgpu`), in Deno and in Bun: it opens,
 * reports its adapter, features and subgroup-matrix configurations, runs the plain kernel subset of the
 * backends smoke test against each kernel's cpu body, times a dispatch with timestamp queries, and returns
 * typed errors for bad WGSL and for a subgroup-matrix kernel its adapter cannot run.
 *
 * Dawn refuses Mesa 22's lavapipe (Debian 12's), so on a machine without a GPU the checks need the Mesa 25
 * lavapipe that setup stages in `.cache/mesa25/`. This file therefore runs itself again in a child process
 * with `VK_ADD_DRIVER_FILES` naming that driver (adding it to the system's, so a real GPU stays visible and
 * this process's wgpu tests keep their adapter); without a usable adapter the child's tests are skipped
 * with the reason printed.
 *
 * Run: `deno test -A tests/backends/dawn_smoke_test.ts` and `bun test tests/backends/dawn_smoke_test.ts`.
 */
import { Effect } from "effect";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import type { Backend, Kernel } from "@longctx/graph";
import { kernels as K } from "@longctx/ops";
import { makeDawnBackend, subgroupMatrixConfigs } from "../../runtime/src/backends/dawn.ts";
import { cacheDir } from "../../runtime/src/paths.ts";
import { assert, runtimeName, test } from "../harness.ts";
import {
  type Case,
  compare,
  copyCase,
  ewCase,
  matmulCase,
  reduceCase,
  runCpuBody,
  runOn,
  softmaxCase,
  supports,
} from "./cases.ts";

const CHILD = "LONGCTX_DAWN_SMOKE_CHILD";

if (process.env[CHILD] !== "1") {
  test(`dawn smoke (${runtimeName()}): checks in a child process with Mesa 25 lavapipe added`, () => {
    const icd = join(cacheDir(), "mesa25", "lvp_icd.json");
    const env: Record<string, string> = { ...process.env as Record<string, string>, [CHILD]: "1" };
    if (existsSync(icd)) {
      env.VK_ADD_DRIVER_FILES = [process.env.VK_ADD_DRIVER_FILES, icd].filter(Boolean).join(":");
    } else console.log(`  dawn smoke: ${icd} absent (setup step 6 stages it): only real GPUs are visible`);
    const file = new URL(import.meta.url).pathname;
    const args = runtimeName() === "bun"
      ? ["test", file]
      : ["test", "-A", "--unstable-webgpu", "--no-check", file];
    const r = spawnSync(process.execPath, args, { env, encoding: "utf8", timeout: 600_000 });
    const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
    console.log(out.split("\n").map((l) => `  | ${l}`).join("\n"));
    assert.equal(r.status, 0, `child exited ${r.status}`);
  });
} else {
  const opened = await Effect.runPromise(Effect.result(makeDawnBackend()));
  const ignore = opened._tag === "Failure";
  if (opened._tag === "Failure") {
    console.log(
      `dawn_smoke_test: skipped — no usable Dawn adapter: ${opened.failure.message} (${opened.failure.hint})`,
    );
  }
  const b = opened._tag === "Success" ? opened.success : undefined as unknown as Backend;

  test("dawn: adapter, features, limits and subgroup-matrix configurations", () => {
    assert.equal(b.kind, "dawn");
    assert.ok(b.adapter.name.length > 0);
    assert.ok(b.limits.maxComputeWorkgroupStorageSize >= 16384);
    const cfgs = subgroupMatrixConfigs(b);
    console.log(`  adapter: ${b.adapter.name} (${b.adapter.vendor}, ${b.adapter.api})`);
    console.log(`  features: ${[...b.features].filter((f) => !f.startsWith("subgroup-matrix:")).join(", ")}`);
    console.log(
      `  subgroup-matrix configs: ${cfgs.length ? cfgs.map((c) => JSON.stringify(c)).join(" ") : "none"}`,
    );
    if (cfgs.length) assert.ok(b.features.has("chromium-experimental-subgroup-matrix"));
  }, { ignore });

  const subset = (): Case[] => {
    const f32 = Effect.runSync(K.matmul({ dtype: "f32", transB: true }));
    const f16 = Effect.runSync(K.matmul({ dtype: "f16", tileK: 16, threadM: 8 }));
    return [
      ewCase("silu", "f32", 1025),
      ewCase("mul", "f16", 33),
      copyCase(65),
      reduceCase("sum", "f32", 7, 130),
      reduceCase("max", "f16", 3, 65),
      softmaxCase("f32", 7, 130),
      softmaxCase("f16", 5, 33),
      matmulCase("f32 Bt", f32, K.matmulConfig({ dtype: "f32", transB: true }), 65, 33, 130),
      matmulCase("f16 acc-f32", f16, K.matmulConfig({ dtype: "f16" }), 33, 130, 7),
    ];
  };

  test("dawn: plain kernel subset vs cpu bodies", async () => {
    const bad: string[] = [];
    for (const c of subset()) {
      const why = supports(b, c);
      if (why) {
        console.log(`  ${c.name}: skipped (${why})`);
        continue;
      }
      const got = await runOn(b, c);
      const v = compare(got, runCpuBody(c), c.oracle().scale, c.atol, c.rtol);
      if (v) bad.push(`${c.name}: ${v}`);
    }
    assert.deepEqual(bad, []);
    assert.equal(b.live().buffers, 0);
  }, { ignore });

  test("dawn: timed dispatch, bad WGSL, missing subgroup-matrix feature", async () => {
    const c = ewCase("silu", "f32", 4099);
    const ins = await Effect.runPromise(b.allocate(c.inputs[0].byteLength));
    const out = await Effect.runPromise(b.allocate(4099 * 4));
    const u = await Effect.runPromise(b.allocate(16));
    try {
      await Effect.runPromise(b.upload(ins, c.inputs[0]));
      await Effect.runPromise(b.upload(u, c.plan.uniform(c.sizes)));
      const l = { kernel: c.plan.kernel, buffers: [ins, out, u], workgroups: c.plan.workgroups(c.sizes) };
      if (b.features.has("timestamp-query")) {
        const t = await Effect.runPromise(b.dispatch([l, l, l], { timed: true }));
        assert.equal(t!.perLaunchMs.length, 3);
        assert.ok(t!.perLaunchMs.every((x) => Number.isFinite(x) && x >= 0), JSON.stringify(t));
      }
    } finally {
      for (const x of [ins, out, u]) b.release(x);
    }
    const badK: Kernel = { key: "bad", wgsl: "fn main( {", entryPoint: "main", bindings: [] };
    const e = await Effect.runPromise(Effect.flip(b.compile(badK)));
    assert.equal(e._tag, "KernelCompileError");
    if (!b.features.has("chromium-experimental-subgroup-matrix")) {
      const sg: Kernel = {
        key: "sgmat",
        wgsl: "enable chromium_experimental_subgroup_matrix;\n@compute @workgroup_size(32) fn main() {}",
        entryPoint: "main",
        bindings: [],
        enables: ["chromium_experimental_subgroup_matrix"],
      };
      const u2 = await Effect.runPromise(Effect.flip(b.compile(sg)));
      assert.equal(u2._tag, "BackendError");
      assert.equal((u2 as { reason: string }).reason, "unsupported");
    }
  }, { ignore });

  test("dawn: close releases everything", async () => {
    await Effect.runPromise(b.close());
    assert.equal(b.live().buffers, 0);
  }, { ignore });
}
