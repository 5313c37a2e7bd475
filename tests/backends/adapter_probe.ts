/**
 * Prints, as one JSON line, the adapter the wgpu backend opens in this process's environment, the adapter
 * warning and the planner profile `select.ts` derives from it. Used by runtime/src/backends/adapter_smoke_test.ts in a child process
 * (the Vulkan loader reads VK_DRIVER_FILES at process start). Run: `deno run -A adapter_probe.ts` or
 * `bun adapter_probe.ts`.
 * @module
 */
import { Effect } from "effect";
import { adapterWarning, plannerProfileName, selectBackend } from "../../runtime/src/backends/select.ts";

const s = await Effect.runPromise(Effect.result(selectBackend({ backend: "wgpu" })));
if (s._tag === "Success") {
  const b = s.success.backend;
  console.log(JSON.stringify({
    adapter: b.adapter,
    warning: adapterWarning(b) ?? null,
    profile: plannerProfileName(b),
    report: s.success.report,
  }));
  await Effect.runPromise(b.close());
} else {console.log(
    JSON.stringify({ error: s.failure.message, reason: "reason" in s.failure ? s.failure.reason : "input" }),
  );}
