/**
 * The `dawn` backend: the `Backend` contract over Dawn, Chromium's WebGPU implementation, loaded as the
 * Node-API addon of npm `webgpu` (`dist/<platform>-<arch>/dawn.node`, installed by setup through
 * `package-lock.json`). Deno (`createRequire`) and Bun load Node-API addons, so it runs in both. The
 * backend itself is the `webgpu` backend's code (`webgpuBackendOver`) over Dawn's `GPUDevice`.
 *
 * Why a second WebGPU: Dawn exposes `chromium-experimental-subgroup-matrix` (WGSL
 * `enable chromium_experimental_subgroup_matrix;`: `subgroup_matrix_left/right/result` and
 * `subgroupMatrixLoad/Store/MultiplyAccumulate`), which reaches the tensor cores on NVIDIA through Vulkan's
 * cooperative matrices; wgpu-native 29 cannot turn its own cooperative-matrix feature on.
 *
 * - The instance is created with `backend=vulkan` on Linux (else Dawn may silently offer its Null
 *   backend) and the toggles `allow_unsafe_apis` (experimental features), `vulkan_enable_f16_on_nvidia`
 *   (shader-f16 on NVIDIA's Vulkan driver); timestamps are not quantized (`timestamp_quantization` off).
 * - Requested features: `shader-f16`, `timestamp-query`, `subgroups`, `chromium-experimental-subgroup-matrix`
 *   where the adapter has them; limits raised to the adapter's.
 * - Reported features: the device's, plus one name per subgroup-matrix configuration the adapter lists,
 *   `subgroup-matrix:<component>-<result>:<M>x<N>x<K>` (e.g. `subgroup-matrix:f16-f32:16x16x16`); read them
 *   back with `subgroupMatrixConfigs`.
 * - An adapter of Dawn's Null backend is refused (`no-adapter`): it runs nothing.
 * @module
 */
import { Effect } from "effect";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import process from "node:process";
import { type Backend, BackendError } from "@longctx/graph";
import { dawnPackageDir, inClone } from "../paths.ts";
import { webgpuBackendOver } from "./webgpu.ts";

/** Options of `makeDawnBackend`. */
export interface DawnBackendOptions {
  /**
   * Path of `dawn.node`; default `LONGCTX_DAWN_NODE`, else `webgpu/dist/<platform>-<arch>/dawn.node` as
   * resolved from this module (the npm package setup installs).
   */
  readonly addon?: string;
  /** Dawn backend to force; default `vulkan` on Linux and Windows, none elsewhere (Dawn's choice). */
  readonly backendType?: string;
  /** Extra Dawn toggles to enable (added to the defaults in the module doc). */
  readonly toggles?: readonly string[];
  /** Adapter preference. */
  readonly powerPreference?: GPUPowerPreference;
}

/** One subgroup-matrix configuration of the adapter (as Dawn's `adapter.info.subgroupMatrixConfigs`). */
export interface SubgroupMatrixConfig {
  /** Element type of the left and right matrices (`f16`, `f32`, `i8`, `u8`). */
  readonly component: string;
  /** Element type of the result (`f16`, `f32`, `i32`, `u32`). */
  readonly result: string;
  readonly M: number;
  readonly N: number;
  readonly K: number;
}

const NAME = "dawn";
const err = (reason: BackendError["reason"], message: string, hint: string) =>
  new BackendError({ backend: NAME, reason, message, hint });

const SGMAT = "chromium-experimental-subgroup-matrix";
const WANTED = ["shader-f16", "timestamp-query", "subgroups", SGMAT];
const RAISED = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxStorageBuffersPerShaderStage",
] as const;

/** Feature name of one subgroup-matrix configuration. */
export const subgroupMatrixFeature = (c: SubgroupMatrixConfig): string =>
  `subgroup-matrix:${c.component}-${c.result}:${c.M}x${c.N}x${c.K}`;

/** The subgroup-matrix configurations a backend reports (none for backends other than `dawn`). */
export const subgroupMatrixConfigs = (b: Pick<Backend, "features">): SubgroupMatrixConfig[] => {
  const out: SubgroupMatrixConfig[] = [];
  for (const f of b.features) {
    const m = /^subgroup-matrix:(\w+)-(\w+):(\d+)x(\d+)x(\d+)$/.exec(f);
    if (m) out.push({ component: m[1], result: m[2], M: +m[3], N: +m[4], K: +m[5] });
  }
  return out;
};

/** Whether `b` runs subgroup-matrix kernels with `component` inputs, `result` accumulation, `M×N×K`. */
export const hasSubgroupMatrix = (
  b: Pick<Backend, "features">,
  c: SubgroupMatrixConfig,
): boolean => b.features.has(SGMAT) && b.features.has(subgroupMatrixFeature(c));

/** Where `dawn.node` is expected (may not exist). */
export const dawnAddonPath = (o: Pick<DawnBackendOptions, "addon"> = {}): string => {
  if (o.addon) return o.addon;
  const env = process.env.LONGCTX_DAWN_NODE;
  if (env) return env;
  const arch = process.platform === "darwin" ? "universal" : process.arch;
  // npm webgpu beside this module (a clone, an npm-style install), in the current project, or where
  // `install --dawn` put it in the cache folder.
  const cached = join(dawnPackageDir(), "package.json");
  const candidates = [() => createRequire(import.meta.url), () => createRequire(`${process.cwd()}/`)];
  let pkg: string | undefined;
  for (const req of candidates) {
    try {
      pkg = req().resolve("webgpu/package.json");
      break;
    } catch { /* next */ }
  }
  if (pkg === undefined) {
    if (!existsSync(cached)) throw new Error(`npm webgpu not found (nor in ${cached})`);
    pkg = cached;
  }
  return `${pkg.slice(0, -"package.json".length)}dist/${process.platform}-${arch}/dawn.node`;
};

interface DawnAddon {
  create(options: string[]): GPU;
}

const gpus = new Map<string, GPU>();

/** Load the addon and create (once per option set) a Dawn instance. */
const instance = (o: DawnBackendOptions): GPU => {
  let path: string;
  let addon: DawnAddon;
  try {
    path = dawnAddonPath(o);
    addon = createRequire(import.meta.url)(path) as DawnAddon;
  } catch (e) {
    throw err(
      "library-missing",
      `could not load Dawn's Node-API addon: ${e instanceof Error ? e.message : String(e)}`,
      inClone()
        ? "run 'bash scripts/setup.sh' (it installs npm webgpu@0.6.2), or set LONGCTX_DAWN_NODE to a dawn.node"
        : "run `deno run -A jsr:@longctx/runtime/install --dawn`, or set LONGCTX_DAWN_NODE to a dawn.node",
    );
  }
  const forced = o.backendType ??
    (process.platform === "linux" || process.platform === "win32" ? "vulkan" : undefined);
  const toggles = ["allow_unsafe_apis", "vulkan_enable_f16_on_nvidia", ...(o.toggles ?? [])];
  const options = [
    ...(forced ? [`backend=${forced}`] : []),
    `enable-dawn-features=${toggles.join(",")}`,
    "disable-dawn-features=timestamp_quantization",
  ];
  const key = `${path}|${options.join("|")}`;
  let gpu = gpus.get(key);
  if (!gpu) {
    gpu = addon.create(options);
    gpus.set(key, gpu);
  }
  return gpu;
};

interface DawnAdapterInfo extends GPUAdapterInfo {
  readonly subgroupMatrixConfigs?: readonly {
    readonly componentType: string;
    readonly resultComponentType: string;
    readonly M: number;
    readonly N: number;
    readonly K: number;
  }[];
}

/**
 * Open the `dawn` backend. Fails with `BackendError` `library-missing` (the addon does not load),
 * `no-adapter` (no adapter, or only Dawn's Null backend) or `internal` (device request refused).
 */
export const makeDawnBackend = (options: DawnBackendOptions = {}): Effect.Effect<Backend, BackendError> =>
  Effect.tryPromise({
    try: async () => {
      const gpu = instance(options);
      const adapter = await gpu.requestAdapter({
        powerPreference: options.powerPreference ?? "high-performance",
      });
      if (!adapter) {
        throw err(
          "no-adapter",
          "Dawn found no adapter",
          "Dawn needs Vulkan 1.1 with shaderUniform*ArrayDynamicIndexing (NVIDIA, AMD, Intel, or Mesa ≥ 23 " +
            "lavapipe: setup stages Mesa 25's in .cache/mesa25, use VK_DRIVER_FILES=.cache/mesa25/lvp_icd.json)",
        );
      }
      const info = (adapter.info ?? {}) as Partial<DawnAdapterInfo>;
      const named = `${info.vendor ?? ""} ${info.architecture ?? ""} ${info.device ?? ""} ${
        info.description ?? ""
      }`;
      if (/\bnull\b/i.test(named) || named.trim() === "") {
        throw err(
          "no-adapter",
          `Dawn offered only its Null backend (${named.trim() || "no name"})`,
          "no usable GPU",
        );
      }
      const requiredFeatures = (WANTED as readonly GPUFeatureName[]).filter((f) => adapter.features.has(f));
      const requiredLimits: Record<string, number> = {};
      for (const k of RAISED) {
        const v = (adapter.limits as unknown as Record<string, number>)[k];
        if (typeof v === "number") requiredLimits[k] = v;
      }
      let device: GPUDevice;
      try {
        device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
      } catch (e) {
        throw err(
          "internal",
          `Dawn refused the device request: ${e}`,
          "check the driver; retry without toggles",
        );
      }
      const configs = (requiredFeatures as string[]).includes(SGMAT) ? info.subgroupMatrixConfigs ?? [] : [];
      const extraFeatures = configs.map((c) =>
        subgroupMatrixFeature({
          component: c.componentType,
          result: c.resultComponentType,
          M: c.M,
          N: c.N,
          K: c.K,
        })
      );
      return webgpuBackendOver(device, info, true, {
        kind: "dawn",
        api: options.backendType ?? "vulkan",
        extraFeatures,
      });
    },
    catch: (e) => (e instanceof BackendError ? e : err("internal", String(e), "unexpected Dawn exception")),
  });

/**
 * Check WGSL with Dawn's shader compiler (Tint) on its Null backend, which needs no GPU and enables
 * `chromium-experimental-subgroup-matrix`: returns, per source, the compiler's errors and warnings
 * (`line:col message`; empty when clean). Only the shader module is checked (the Null adapter lists no
 * subgroup-matrix configuration and 16 KiB of workgroup memory, so pipelines are not created). Fails with
 * `library-missing` (no addon) or `no-adapter`.
 */
export const dawnCheckWgsl = (
  sources: readonly string[],
  options: Pick<DawnBackendOptions, "addon"> = {},
): Effect.Effect<string[][], BackendError> =>
  Effect.tryPromise({
    try: async () => {
      const gpu = instance({ ...options, backendType: "null" });
      const adapter = await gpu.requestAdapter();
      if (!adapter) throw err("no-adapter", "Dawn's Null backend offered no adapter", "update npm webgpu");
      const requiredFeatures = (["shader-f16", "subgroups", SGMAT] as GPUFeatureName[])
        .filter((f) => adapter.features.has(f));
      const device = await adapter.requestDevice({ requiredFeatures });
      try {
        const out: string[][] = [];
        for (const code of sources) {
          const info = await device.createShaderModule({ code }).getCompilationInfo();
          out.push(
            info.messages.map((m) => `${m.lineNum}:${m.linePos} ${m.type}: ${m.message.split("\n")[0]}`),
          );
        }
        return out;
      } finally {
        device.destroy();
      }
    },
    catch: (e) => (e instanceof BackendError ? e : err("internal", String(e), "unexpected Dawn exception")),
  });
