/**
 * Honest adapters (Deno and Bun): a wgpu fallback to OpenGL when Vulkan is absent is reported and does not pick
 * a Vulkan device's planner profile; a device request refused on limits says so (not "install a Vulkan
 * driver"); lower requested limits are honoured and enforced.
 * @module
 */
import { Effect } from "effect";
import { spawnSync } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { assert, runtimeName, test } from "../../../tests/harness.ts";
import { type Backend, BackendError } from "@longctx/graph";
import { makeWgpuBackend } from "./wgpu.ts";
import { adapterWarning, plannerProfileName } from "./select.ts";

const probe = (env: Record<string, string>) => {
  const script = fileURLToPath(new URL("../../../tests/backends/adapter_probe.ts", import.meta.url));
  const args = runtimeName() === "deno" ? ["run", "-A", "--no-check", script] : [script];
  const r = spawnSync(process.execPath, args, {
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 60_000,
  });
  const line = r.stdout.trim().split("\n").pop() ?? "";
  return JSON.parse(line || `{"error":${JSON.stringify(r.stderr.slice(-300))}}`);
};

const opened = await Effect.runPromise(makeWgpuBackend()).catch(() => undefined);
const ignore = opened === undefined;

test("adapter: planner profile and warning follow the adapter actually used (fake backends)", () => {
  const fake = (kind: Backend["kind"], name: string, api: string) =>
    ({ kind, adapter: { name, vendor: "", driver: "", api } }) as unknown as Backend;
  assert.equal(plannerProfileName(fake("wgpu", "llvmpipe (LLVM 15.0.6, 256 bits)", "vulkan")), "lavapipe");
  assert.equal(plannerProfileName(fake("wgpu", "llvmpipe (LLVM 15.0.6, 256 bits)", "opengl")), "wgpu-opengl");
  assert.equal(plannerProfileName(fake("wgpu", "NVIDIA H200", "vulkan")), "h200");
  assert.equal(plannerProfileName(fake("cpu", "cpu (2 threads)", "cpu")), "cpu");
  assert.equal(adapterWarning(fake("wgpu", "NVIDIA H200", "vulkan")), undefined);
  assert.match(adapterWarning(fake("wgpu", "llvmpipe", "opengl")) ?? "", /running on opengl .* not Vulkan/);
});

test("adapter: without a Vulkan driver wgpu falls back to OpenGL, and it is reported as such", () => {
  const r = probe({ VK_DRIVER_FILES: "/nonexistent/icd.json", VK_ICD_FILENAMES: "/nonexistent/icd.json" });
  if (r.error) {
    // No GL either (e.g. no libEGL): then there is no adapter at all, which must not be reported as Vulkan.
    assert.doesNotMatch(String(r.error), /vulkan/i);
    return;
  }
  assert.notEqual(r.adapter.api, "vulkan");
  assert.match(r.warning, /not Vulkan/);
  assert.match(r.report, /warning: wgpu is running on/);
  assert.notEqual(r.profile, "lavapipe", "an OpenGL adapter must not get the lavapipe (Vulkan) profile");
}, { ignore });

test(
  "adapter: a device request beyond the adapter's limits is 'unsupported' with a limits hint",
  async () => {
    const max = opened!.limits.maxStorageBufferBindingSize;
    const e = await Effect.runPromise(
      Effect.flip(makeWgpuBackend({ limits: { maxStorageBufferBindingSize: max * 2 } })),
    );
    assert.ok(e instanceof BackendError && e.reason === "unsupported", String(e));
    assert.match(e.message, /device request refused/);
    assert.doesNotMatch(e.hint, /install a Vulkan driver/);
    assert.match(e.hint, /limits/);
  },
  { ignore },
);

test("adapter: lower requested limits are honoured and enforced by allocate", async () => {
  const b = await Effect.runPromise(
    makeWgpuBackend({ limits: { maxStorageBufferBindingSize: 64 * 2 ** 20 } }),
  );
  assert.equal(b.limits.maxStorageBufferBindingSize, 64 * 2 ** 20);
  const e = await Effect.runPromise(Effect.flip(b.allocate(65 * 2 ** 20)));
  assert.match(e.message, /maxStorageBufferBindingSize 67108864/);
  await Effect.runPromise(b.close());
}, { ignore });

test("adapter: close", async () => {
  await Effect.runPromise(opened!.close());
}, { ignore, sanitize: false }); // closes the backend the file opened at load (before any test)
