/**
 * SPIR-V shader modules through the wgpu backend (Deno and Bun): the same compute kernel as SPIR-V words,
 * compiled through naga's SPIR-V front end (`WGPUShaderSourceSPIRV`) and, where the device has the
 * `passthrough-shaders` feature, through `wgpuDeviceCreateShaderModuleSpirV` (else: typed `unsupported`);
 * run and checked against JS; garbage words give a typed error. Skipped when libwgpu_native is absent.
 *
 * The words were produced from this WGSL with naga 30.0.1 (`naga inc.wgsl inc.spv`, then base64):
 *   @group(0) @binding(0) var<storage, read_write> v: array<u32>;
 *   @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
 *     if (g.x < arrayLength(&v)) { v[g.x] = v[g.x] * 3u + 1u; }
 *   }
 */
import { existsSync } from "node:fs";
import { Buffer } from "node:buffer";
import { Effect } from "effect";
import { assert, runtimeName, test } from "../../../tests/harness.ts";
import { makeWgpuBackend } from "../backends/wgpu.ts";
import { wgpuLibPath } from "../paths.ts";

const SPV_B64 =
  "AwIjBwAAAQAcAAAAJAAAAAAAAAARAAIAAQAAAAoACwBTUFZfS0hSX3N0b3JhZ2VfYnVmZmVyX3N0b3JhZ2VfY2xhc3MAAAAACwAGAAEAAABHTFNMLnN0ZC40NTAAAAAADgADAAAAAAABAAAADwAGAAUAAAANAAAAbWFpbgAAAAAKAAAAEAAGAA0AAAARAAAAQAAAAAEAAAABAAAARwAEAAQAAAAGAAAABAAAAEcABAAGAAAAIgAAAAAAAABHAAQABgAAACEAAAAAAAAARwADAAcAAAACAAAASAAFAAcAAAAAAAAAIwAAAAAAAABHAAQACgAAAAsAAAAcAAAAEwACAAIAAAAVAAQAAwAAACAAAAAAAAAAHQADAAQAAAADAAAAFwAEAAUAAAADAAAAAwAAAB4AAwAHAAAABAAAACAABAAIAAAADAAAAAcAAAA7AAQACAAAAAYAAAAMAAAAIAAEAAsAAAABAAAABQAAADsABAALAAAACgAAAAEAAAAhAAMADgAAAAIAAAAgAAQADwAAAAwAAAAEAAAAKwAEAAMAAAAQAAAAAAAAACsABAADAAAAEgAAAAMAAAArAAQAAwAAABMAAAABAAAAFAACABcAAAAgAAQAHQAAAAwAAAADAAAANgAFAAIAAAANAAAAAAAAAA4AAAD4AAIACQAAAD0ABAAFAAAADAAAAAoAAABBAAUADwAAABEAAAAGAAAAEAAAAPkAAgAUAAAA+AACABQAAABRAAUAAwAAABUAAAAMAAAAAAAAAEQABQADAAAAFgAAAAYAAAAAAAAAsAAFABcAAAAYAAAAFQAAABYAAAD3AAMAGQAAAAAAAAD6AAQAGAAAABoAAAAbAAAA+AACABoAAABRAAUAAwAAABwAAAAMAAAAAAAAAFEABQADAAAAHgAAAAwAAAAAAAAAQQAFAB0AAAAfAAAAEQAAAB4AAAA9AAQAAwAAACAAAAAfAAAAhAAFAAMAAAAhAAAAIAAAABIAAACAAAUAAwAAACIAAAAhAAAAEwAAAEEABQAdAAAAIwAAABEAAAAcAAAAPgADACMAAAAiAAAA/QABAPgAAgAbAAAA/QABAPgAAgAZAAAA/QABADgAAQA=";

const words = (): Uint32Array => {
  const b = Buffer.from(SPV_B64, "base64");
  return new Uint32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
};

test(
  `wgpu (${runtimeName()}): SPIR-V modules (naga front end; passthrough where exposed) run and match JS`,
  async () => {
    const b = await Effect.runPromise(makeWgpuBackend());
    try {
      const spv = words();
      assert.equal(spv[0], 0x07230203, "SPIR-V magic");
      const n = 1000 + 37;
      const data = Uint32Array.from({ length: n }, () => Math.floor(Math.random() * 1e6));
      const modes = b.features.has("passthrough-shaders")
        ? ["naga", "passthrough"] as const
        : ["naga"] as const;
      if (modes.length === 1) {
        const e = await Effect.runPromise(
          Effect.flip(b.compileSpirv("test.spirv.pt", spv, "main", ["read_write"], "passthrough")),
        );
        assert.equal(e._tag, "BackendError");
        assert.equal(e._tag === "BackendError" && e.reason, "unsupported");
      }
      for (const mode of modes) {
        const out = await Effect.runPromise(Effect.gen(function* () {
          const k = yield* b.compileSpirv(`test.spirv.${mode}`, spv, "main", ["read_write"], mode);
          const buf = yield* b.allocate(data.byteLength);
          yield* b.upload(buf, data);
          yield* b.dispatch([{ kernel: k, buffers: [buf], workgroups: [Math.ceil(n / 64), 1, 1] }]);
          const bytes = yield* b.download(buf);
          b.release(buf);
          return new Uint32Array(bytes.buffer, bytes.byteOffset, n);
        }));
        for (let i = 0; i < n; i++) assert.equal(out[i], (data[i] * 3 + 1) >>> 0, `${mode} [${i}]`);
      }
      const garbage = Uint32Array.from([0x07230203, 0x00010000, 0, 5, 0, 0xdeadbeef]);
      const e = await Effect.runPromise(
        Effect.flip(b.compileSpirv("test.spirv.bad", garbage, "main", ["read_write"])),
      );
      assert.equal(e._tag, "KernelCompileError");
    } finally {
      await Effect.runPromise(b.close());
    }
  },
  { ignore: !existsSync(wgpuLibPath()) },
);
