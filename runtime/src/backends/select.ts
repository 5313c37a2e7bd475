/**
 * Backend selection: by option, else by the environment variable `LONGCTX_BACKEND`
 * (`auto` | `wgpu` | `webgpu` | `dawn` | `cpu`), else `auto`. `auto` takes `wgpu` when libwgpu_native loads and
 * an adapter exists — or, when that adapter is a GPU (not a CPU rasteriser) and Dawn's lists subgroup-matrix
 * configurations (tensor cores), `dawn` instead — otherwise `cpu` (with the reasons recorded). An explicit choice never falls back: its
 * failure is returned. Backends are imported lazily, so a runtime without FFI or WebGPU still loads this
 * module.
 * @module
 */
import { Effect } from "effect";
import process from "node:process";
import { type Backend, BackendError, type Gemm, InputError } from "@longctx/graph";
import { makeCpuBackend } from "./cpu.ts";

/** A backend choice as the option / `LONGCTX_BACKEND` spell it. */
export type BackendChoice = "auto" | "wgpu" | "webgpu" | "dawn" | "cpu";

const CHOICES: readonly BackendChoice[] = ["auto", "wgpu", "webgpu", "dawn", "cpu"];

/** Options of `selectBackend`; the per-backend options pass through to each factory. */
export interface SelectOptions {
  /** Which backend; default `LONGCTX_BACKEND`, else `auto`. */
  readonly backend?: BackendChoice;
  /**
   * Options of the `wgpu` backend, passed to `makeWgpuBackend` (`WgpuBackendOptions`: library path, power preference, limits).
   */
  readonly wgpu?: Record<string, unknown>;
  /** Options of the `webgpu` backend: an existing `GPUDevice` to use, or the adapter power preference. */
  readonly webgpu?: { readonly device?: GPUDevice; readonly powerPreference?: GPUPowerPreference };
  /** Options of the `dawn` backend, passed to `makeDawnBackend` (addon path, Dawn backend type, toggles, power preference). */
  readonly dawn?: Record<string, unknown>;
  /** Options of the `cpu` backend, passed to `makeCpuBackend` (`CpuBackendOptions`). */
  readonly cpu?: Record<string, unknown>;
}

/** The chosen backend and a one-line report of what was chosen and why. */
export interface Selection {
  /** The backend, ready to use (close it when done). */
  readonly backend: Backend;
  /** e.g. `wgpu: NVIDIA H200 (vulkan, NVIDIA 570.x)` or `cpu: cpu (TypeScript, 1 thread) — wgpu unavailable: …`. */
  readonly report: string;
  /** Backends tried before the chosen one, with why they were not used. */
  readonly fallbacks: readonly string[];
}

type Factory = (options?: never) => Effect.Effect<Backend, BackendError>;

const importFailed = (kind: string, e: unknown) =>
  new BackendError({
    backend: kind,
    reason: "library-missing",
    message: `could not load the ${kind} backend module: ${e instanceof Error ? e.message : String(e)}`,
    hint: kind === "wgpu"
      ? "FFI needs Deno (--allow-ffi) or Bun; or choose LONGCTX_BACKEND=cpu"
      : "choose another backend",
  });

/** Lazily import a backend module and return its factory (`makeWgpuBackend`, `makeWebgpuBackend`, `makeCpuBackend`). */
type Kind = Exclude<BackendChoice, "auto">;

const FACTORY: Record<Kind, string> = {
  wgpu: "makeWgpuBackend",
  webgpu: "makeWebgpuBackend",
  dawn: "makeDawnBackend",
  cpu: "makeCpuBackend",
};

const factory = (kind: Kind): Effect.Effect<Factory, BackendError> =>
  Effect.tryPromise({
    try: async () => {
      // deno-lint-ignore no-explicit-any
      const m: any = kind === "wgpu"
        ? await import("./wgpu.ts")
        : kind === "webgpu"
        ? await import("./webgpu.ts")
        : kind === "dawn"
        ? await import("./dawn.ts")
        : await import("./cpu.ts");
      const name = FACTORY[kind];
      if (typeof m[name] !== "function") throw new Error(`${name} is not exported`);
      return m[name] as Factory;
    },
    catch: (e) => importFailed(kind, e),
  });

const make = (kind: Kind, o: SelectOptions): Effect.Effect<Backend, BackendError> =>
  Effect.flatMap(factory(kind), (f) => f(o[kind] as never));

/**
 * A warning when the wgpu backend is not on the API it is meant for: wgpu-native falls back to OpenGL (or
 * GLES) when no Vulkan driver is found (seen here: "llvmpipe" through OpenGL 4.5, with half the storage
 * buffers per stage of lavapipe), so the adapter name alone can mislead. Undefined when all is as intended.
 */
export const adapterWarning = (b: Backend): string | undefined => {
  if (b.kind !== "wgpu") return undefined;
  const api = b.adapter.api;
  if (api === "vulkan" || api === "metal" || api === "d3d12") return undefined;
  return `wgpu is running on ${api} (${b.adapter.name}${
    b.adapter.driver ? `, ${b.adapter.driver}` : ""
  }), not Vulkan: no Vulkan driver was found and wgpu fell back to ${api}; install one ` +
    "(`apt-get install mesa-vulkan-drivers` for lavapipe, or your GPU's driver) or set LONGCTX_BACKEND=cpu";
};

/**
 * The built-in planner profile that describes the adapter actually in use: `cpu` for the cpu backend, `h200`
 * or `lavapipe` only for those devices on Vulkan (the API they were measured through), otherwise
 * `<kind>-<api>` (e.g. `wgpu-opengl`), which has no built-in profile, so callers say so instead of planning
 * with a profile of another device.
 */
export const plannerProfileName = (b: Backend): string => {
  if (b.kind === "cpu") return "cpu";
  const vulkan = b.adapter.api === "vulkan" || b.kind === "webgpu";
  if (vulkan && /h200/i.test(b.adapter.name)) return "h200";
  if (vulkan && /llvmpipe|lavapipe/i.test(b.adapter.name)) return "lavapipe";
  return `${b.kind}-${b.adapter.api}`;
};

/** One line describing a backend's adapter. */
export const describeBackend = (b: Backend): string =>
  `${b.kind}: ${b.adapter.name} (${b.adapter.api}${b.adapter.driver ? `, ${b.adapter.driver}` : ""})`;

/** Parse a backend choice (e.g. from `LONGCTX_BACKEND`); fails with `InputError` for an unknown name. */
export const parseBackendChoice = (s: string): Effect.Effect<BackendChoice, InputError> =>
  (CHOICES as readonly string[]).includes(s) ? Effect.succeed(s as BackendChoice) : Effect.fail(
    new InputError({
      message: `unknown backend "${s}"`,
      hint: `LONGCTX_BACKEND (or the backend option) must be one of ${CHOICES.join(", ")}`,
    }),
  );

/**
 * Choose and open a backend. Fails with `InputError` for an unknown choice, and with the chosen
 * backend's `BackendError` when an explicit choice cannot open (`auto` falls back to cpu instead).
 */
export const selectBackend = (
  options: SelectOptions = {},
): Effect.Effect<Selection, BackendError | InputError> =>
  Effect.gen(function* () {
    const choice = yield* parseBackendChoice(options.backend ?? process.env.LONGCTX_BACKEND ?? "auto");
    const withWarning = (b: Backend) => {
      const w = adapterWarning(b);
      return w === undefined ? describeBackend(b) : `${describeBackend(b)} — warning: ${w}`;
    };
    if (choice !== "auto") {
      const backend = yield* make(choice, options);
      return { backend, report: withWarning(backend), fallbacks: [] };
    }
    const fallbacks: string[] = [];
    const wgpu = yield* Effect.result(make("wgpu", options));
    if (wgpu._tag === "Success") {
      // Dawn only where wgpu found a real GPU: on a CPU adapter there are no subgroup matrices, and Dawn
      // would print its adapter warnings to stderr.
      if (!/llvmpipe|lavapipe|swiftshader|softpipe/i.test(wgpu.success.adapter.name)) {
        const dawn = yield* Effect.result(make("dawn", options));
        if (dawn._tag === "Success") {
          if ([...dawn.success.features].some((f) => f.startsWith("subgroup-matrix:"))) {
            yield* wgpu.success.close();
            return { backend: dawn.success, report: describeBackend(dawn.success), fallbacks };
          }
          fallbacks.push(`dawn: ${dawn.success.adapter.name} lists no subgroup-matrix configuration`);
          yield* dawn.success.close();
        } else fallbacks.push(`dawn unavailable (${dawn.failure.reason}): ${dawn.failure.message}`);
      }
      return { backend: wgpu.success, report: withWarning(wgpu.success), fallbacks };
    }
    const why = `wgpu unavailable (${wgpu.failure.reason}): ${wgpu.failure.message}`;
    fallbacks.push(why);
    const backend = yield* make("cpu", options);
    return { backend, report: `${describeBackend(backend)} — ${why}`, fallbacks };
  });

/** Whether an adapter is a CPU rasterizer (Mesa's lavapipe/llvmpipe, SwiftShader) rather than a GPU. */
export const isSoftwareAdapter = (name: string): boolean =>
  /llvmpipe|lavapipe|swiftshader|software/i.test(name);

/**
 * The backend a model forward runs on, for a selection made with `choice`: the selected GPU backend, except
 * that `auto` on a software adapter (lavapipe, where the cpu backend is ~10× faster) runs the cpu backend with
 * `gemm` (OpenBLAS); an explicit GPU choice runs on the GPU even when it is software. `onGpu` says which.
 */
export const forwardBackend = (
  selection: Selection,
  choice: BackendChoice,
  gemm: Gemm,
): Effect.Effect<{ readonly backend: Backend; readonly onGpu: boolean }, BackendError> =>
  Effect.gen(function* () {
    const software = isSoftwareAdapter(selection.backend.adapter.name);
    const onGpu = selection.backend.kind !== "cpu" && (choice !== "auto" || !software);
    return { backend: onGpu ? selection.backend : yield* makeCpuBackend({ gemm }), onGpu };
  });
