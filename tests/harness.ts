/**
 * One test API for Deno and Bun: `test(name, fn)` maps to `Deno.test` under Deno and to `bun:test`
 * under Bun, so the runtime/FFI and API smoke tests run unchanged in both. Assertions come from the
 * `#assert` import-map alias (package.json "imports"): `node:assert/strict` here, one line to switch.
 * @module
 */
export { default as assert } from "#assert";

type TestFn = () => void | Promise<void>;
interface TestOptions {
  /** Skip (with the reason printed) when set. */
  readonly ignore?: boolean;
  /** Milliseconds (Bun only; Deno has no per-test timeout). */
  readonly timeout?: number;
  /**
   * Deno's op and resource sanitizers (on by default: a test that leaves a timer, a pending op, an open file or
   * an FFI library behind fails). Set `false` only with a reason, for tests that hold a resource on purpose
   * across tests (a backend opened once per file and closed by the file's last test).
   */
  readonly sanitize?: boolean;
}

const bunTest = "Bun" in globalThis ? (await import("bun:test" as string)).test : undefined;

/** Register a test under whichever runtime is running. */
export const test = (name: string, fn: TestFn, options: TestOptions = {}): void => {
  if (bunTest) {
    if (options.ignore) bunTest.skip(name, fn);
    else bunTest(name, fn, options.timeout ?? 120_000);
    return;
  }
  const sanitize = options.sanitize ?? true;
  Deno.test({
    name,
    fn,
    ignore: options.ignore ?? false,
    sanitizeOps: sanitize,
    sanitizeResources: sanitize,
  });
};

/** Which runtime runs this file. */
export const runtimeName = (): "deno" | "bun" => (bunTest ? "bun" : "deno");
