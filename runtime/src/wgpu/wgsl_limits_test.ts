/**
 * The static WGSL workgroup-memory and workgroup-size reader (`wgsl_limits.ts`) against hand-computed WGSL
 * layouts (WGSL § 14.4) and the kernels of `@longctx/ops`.
 * @module
 */
import { assert, test } from "../../../tests/harness.ts";
import { dense } from "@longctx/ops";
import { bindingMinSizes, wgslTypeLayout, workgroupLimitViolation, workgroupUsage } from "./wgsl_limits.ts";

test("wgslTypeLayout: scalars, vectors (vec3 aligned to 16), matrices, nested arrays, consts", () => {
  assert.deepEqual(wgslTypeLayout("f16"), { size: 2, align: 2 });
  assert.deepEqual(wgslTypeLayout("vec3<f32>"), { size: 12, align: 16 });
  assert.deepEqual(wgslTypeLayout("vec2h"), { size: 4, align: 4 });
  assert.deepEqual(wgslTypeLayout("array<vec3<f32>, 5>"), { size: 80, align: 16 });
  assert.deepEqual(wgslTypeLayout("mat3x3<f32>"), { size: 48, align: 16 });
  assert.deepEqual(wgslTypeLayout("array<array<f16, 3>, 4>"), { size: 24, align: 2 });
  assert.deepEqual(wgslTypeLayout("array<f32, N>", new Map([["N", 7]])), { size: 28, align: 4 });
  assert.equal(wgslTypeLayout("MyStruct"), undefined);
  assert.equal(wgslTypeLayout("array<f32, OVERRIDE>"), undefined);
});

test("workgroupUsage: sums var<workgroup> (rounded to 16), reads @workgroup_size of the entry point", () => {
  const src = `const T: u32 = 96u;
// var<workgroup> commented: array<f32, 100000>;
var<workgroup> a: array<f32, T>;
var<workgroup> b: atomic<u32>;
var<workgroup> c: array<vec4<f16>, 3>;
@compute @workgroup_size(8, T) fn other() {}
@compute @workgroup_size(64, 2) fn main() {}`;
  const u = workgroupUsage(src, "main");
  assert.equal(u.workgroupBytes, 384 + 16 + 32);
  assert.deepEqual(u.workgroupSize, [64, 2, 1]);
  assert.deepEqual(workgroupUsage(src, "other").workgroupSize, [8, 96, 1]);
  assert.equal(
    workgroupUsage("var<workgroup> s: S;\n@compute @workgroup_size(1) fn main() {}", "main").workgroupBytes,
    undefined,
  );
  const lim = { maxComputeWorkgroupStorageSize: 400, maxComputeInvocationsPerWorkgroup: 256 };
  assert.match(workgroupLimitViolation("k", src, "main", lim) ?? "", /432 bytes of workgroup memory/);
  assert.equal(
    workgroupLimitViolation("k", src, "main", { ...lim, maxComputeWorkgroupStorageSize: 432 }),
    undefined,
  );
  assert.match(
    workgroupLimitViolation("k", src, "other", {
      maxComputeWorkgroupStorageSize: 1000,
      maxComputeInvocationsPerWorkgroup: 1024,
      maxComputeWorkgroupSizeY: 64,
    }) ?? "",
    /y = 96, more than the device's maxComputeWorkgroupSizeY 64/,
  );
});

test("workgroupUsage agrees with the flash kernel's own byte formula on every tile choice", () => {
  let n = 0;
  for (const budget of [8192, 16384, 32768, 65536]) {
    for (const headDim of [64, 128]) {
      for (const dtype of ["f32", "f16"] as const) {
        for (const bq of [16, 64]) {
          const t = dense.chooseTiles(dtype, headDim, bq, 64, budget);
          const c = { heads: 4, kvHeads: 1, seq: 256, headDim, dtype, scale: 0.125, bq, ...t };
          const u = workgroupUsage(dense.flashWgsl(c), "main");
          const own = dense.flashWorkgroupBytes(c);
          assert.ok(u.workgroupBytes !== undefined, `unsized: ${JSON.stringify(c)}`);
          // Each declaration is rounded up to 16 bytes here; the kernel's formula adds 16 once.
          assert.ok(
            Math.abs(u.workgroupBytes! - own) <= 64,
            `${JSON.stringify(c)}: ${u.workgroupBytes} vs ${own}`,
          );
          n++;
        }
      }
    }
  }
  assert.equal(n, 32);
});

test("bindingMinSizes: declared binding sizes (fixed arrays, structs, runtime arrays as one element)", () => {
  const src = `struct P { n: u32, scale: f32, dims: vec3<u32> }
struct R { count: u32, data: array<vec2<f32>> }
const N = 12u;
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<u32, N>;
@group(0) @binding(3) var<storage, read> r: R;
@group(0) @binding(4) var<storage, read> u: Unknown;
@compute @workgroup_size(1) fn main() {}`;
  const m = bindingMinSizes(src);
  assert.equal(m.get(0), 32); // n@0, scale@4, dims@16 (vec3 aligned to 16) → 28, struct align 16 → 32
  assert.equal(m.get(1), 4);
  assert.equal(m.get(2), 48);
  assert.equal(m.get(3), 16); // count@0, data@8 (vec2 align 8), one element → 16
  assert.equal(m.has(4), false);
});
