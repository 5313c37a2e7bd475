/**
 * The generated bindings: regenerating from the shipped headers reproduces the committed file, and the
 * struct layouts agree with the C compiler's `sizeof`/`offsetof` (gcc, x86-64 here; the same LP64 rules
 * hold on arm64). Skipped when the headers (or gcc) are absent.
 */
import { existsSync } from "node:fs";
import { assert, test } from "../../../tests/harness.ts";
import { generate, headersDir, OUTPUT } from "../../../scripts/gen-wgpu-bindings.ts";
import { callbacks, functions, structs } from "./ffi_generated.ts";
import { lowerParams } from "./ffi.ts";
import { featureName, featureValue } from "./native.ts";

const dir = headersDir();
const haveHeaders = existsSync(`${dir}/webgpu.h`) && existsSync(`${dir}/wgpu.h`);
const haveGcc = (() => {
  try {
    return new Deno.Command("gcc", { args: ["--version"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
})();

test("wgpu bindings: regenerating from the headers matches the committed file", () => {
  assert.equal(generate(dir), Deno.readTextFileSync(OUTPUT), "run: deno run -A scripts/gen-wgpu-bindings.ts");
}, { ignore: !haveHeaders });

test("wgpu bindings: struct sizes and field offsets match gcc", () => {
  const names = Object.keys(structs).filter((n) => !n.endsWith("_data")); // anonymous unions have no C name
  const lines = ['#include "wgpu.h"', "#include <stdio.h>", "#include <stddef.h>", "int main(void) {"];
  for (const n of names) {
    lines.push(`printf("${n} %zu\\n", sizeof(${n}));`);
    for (const f of Object.keys(structs[n as keyof typeof structs].fields)) {
      lines.push(`printf("${n}.${f} %zu\\n", offsetof(${n}, ${f}));`);
    }
  }
  lines.push("return 0; }");
  const tmp = Deno.makeTempDirSync();
  Deno.writeTextFileSync(`${tmp}/l.c`, lines.join("\n"));
  const cc = new Deno.Command("gcc", { args: ["-I", dir, "-o", `${tmp}/l`, `${tmp}/l.c`] }).outputSync();
  assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
  const out = new TextDecoder().decode(new Deno.Command(`${tmp}/l`).outputSync().stdout);
  Deno.removeSync(tmp, { recursive: true });
  let checked = 0;
  for (const line of out.trim().split("\n")) {
    const [key, v] = line.split(" ");
    const [n, f] = key.split(".");
    const s = structs[n as keyof typeof structs];
    const ours = f === undefined ? s.size : s.fields[f].offset;
    assert.equal(ours, Number(v), `${key}: generated ${ours}, gcc ${v}`);
    checked++;
  }
  assert.ok(checked > 500, `checked ${checked} sizes/offsets`);
}, { ignore: !haveHeaders || !haveGcc });

test("wgpu bindings: feature names round-trip", () => {
  for (
    const n of [
      "shader-f16",
      "timestamp-query",
      "subgroups",
      "cooperative-matrix",
      "immediates",
      "shader-f64",
    ]
  ) {
    const v = featureValue(n);
    assert.ok(v !== undefined, n);
    assert.equal(featureName(v!), n);
  }
  assert.equal(featureName(0x0003003b), "cooperative-matrix");
  assert.equal(featureName(0xb), "shader-f16");
});

test("wgpu bindings: Bun struct-by-value lowering for x86-64 SysV and arm64 AAPCS64", () => {
  const f = functions;
  // WGPURequestDeviceCallbackInfo is 40 bytes: MEMORY class on x86-64 (stack, after padding the 6 GPRs),
  // a pointer to a copy on arm64.
  const x = lowerParams("rd", f.wgpuAdapterRequestDevice.params, "x86_64", false).args;
  assert.deepEqual(x, ["ptr", "ptr", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64"]);
  const a = lowerParams("rd", f.wgpuAdapterRequestDevice.params, "aarch64", false).args;
  assert.deepEqual(a, ["ptr", "ptr", "ptr"]);
  // wgpuBufferMapAsync(buffer, mode u64, offset, size, info): 4 GPRs, 2 padding, 5 stack words on x86-64.
  const m = lowerParams("map", f.wgpuBufferMapAsync.params, "x86_64", false).args;
  assert.deepEqual(m, ["ptr", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64", "u64"]);
  // WGPUStringView (16 bytes, two INTEGER eightbytes) goes in two GPRs on both.
  for (const arch of ["x86_64", "aarch64"] as const) {
    assert.deepEqual(lowerParams("lbl", f.wgpuBufferSetLabel.params, arch, false).args, [
      "ptr",
      "u64",
      "u64",
    ]);
    // Callbacks: (status, adapter, message: StringView, userdata1, userdata2) = 6 integer registers.
    assert.deepEqual(
      lowerParams("cb", callbacks.WGPURequestAdapterCallback.params, arch, true).args,
      ["u32", "ptr", "u64", "u64", "ptr", "ptr"],
    );
  }
  // wgpuAdapterInfoFreeMembers takes a 96-byte WGPUAdapterInfo by value.
  assert.equal(
    lowerParams("free", f.wgpuAdapterInfoFreeMembers.params, "x86_64", false).args.length,
    6 + 96 / 8,
  );
  assert.deepEqual(lowerParams("free", f.wgpuAdapterInfoFreeMembers.params, "aarch64", false).args, ["ptr"]);
});
