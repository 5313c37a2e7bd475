/**
 * Helpers for the `run` CLI end-to-end tests: spawn `runtime/src/cli/run.ts` as a subprocess of the current
 * runtime (Deno or Bun), and the bad-input cases both test files check.
 * @module
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { assert, runtimeName } from "../harness.ts";

export const root = new URL("../../", import.meta.url).pathname;
const cli = join(root, "runtime/src/cli/run.ts");

/** Result of one CLI run: exit code, stdout, stderr. */
export interface CliResult {
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
}

/** Run the CLI with `args` (and extra environment variables), waiting at most `timeoutMs`. */
export const runCli = (
  args: readonly string[],
  env: Record<string, string> = {},
  timeoutMs = 120_000,
): CliResult => {
  const argv = runtimeName() === "deno" ? ["run", "-A", cli, ...args] : [cli, ...args];
  const r = spawnSync(process.execPath, argv, {
    cwd: root,
    encoding: "utf8",
    timeout: timeoutMs,
    env: { ...process.env, NO_COLOR: "1", XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? "/tmp", ...env },
  });
  return { code: r.status, out: r.stdout ?? "", err: r.stderr ?? "" };
};

/** A fresh temporary folder. */
export const tempDir = (): string => mkdtempSync(join(tmpdir(), "longctx-run-"));

/** A bad-input case: arguments, environment, and a fragment the one-line error must contain. */
export interface BadCase {
  readonly name: string;
  readonly args: readonly string[];
  readonly env?: Record<string, string>;
  /** Case-insensitive fragment of the error line. */
  readonly expect: string;
}

/** The bad-input cases (each fails before any prefill: fast). */
export const badCases = (): BadCase[] => {
  const dir = tempDir();
  const corrupt = join(dir, "corrupt.gguf");
  writeFileSync(corrupt, "GGUF this is not a real model file ".repeat(8));
  const empty = join(dir, "empty.txt");
  writeFileSync(empty, " \n\n  \n");
  const binary = join(dir, "binary.dat");
  writeFileSync(binary, Uint8Array.from({ length: 3000 }, (_, i) => (i * 7919 + 13) % 256));
  const latin1 = join(dir, "latin1.txt");
  writeFileSync(latin1, Uint8Array.from([0x63, 0x61, 0x66, 0xe9, 0x20, 0x6e, 0x6f, 0x69, 0x72]));
  const small = ["--input", "alice-in-wonderland", "--truncate", "--context", "256"];
  return [
    {
      name: "missing model file",
      args: small,
      env: { LONGCTX_MODEL: join(dir, "nope.gguf") },
      expect: "cannot load the model",
    },
    {
      name: "corrupt model file",
      args: small,
      env: { LONGCTX_MODEL: corrupt },
      expect: "cannot load the model",
    },
    { name: "unknown input", args: ["--input", join(dir, "missing.txt")], expect: "no such file" },
    { name: "unreadable input (a folder)", args: ["--input", dir], expect: "cannot read --input" },
    { name: "empty input", args: ["--input", empty], expect: "is empty" },
    { name: "binary input", args: ["--input", binary], expect: "is not a text file (a nul byte" },
    { name: "input not in UTF-8 (Latin-1)", args: ["--input", latin1], expect: "its bytes are not utf-8" },
    {
      name: "context beyond the model",
      args: ["--input", "alice-in-wonderland", "--context", "100k"],
      expect: "exceeds smollm2-135m's trained context",
    },
    {
      name: "malformed context",
      args: ["--input", "alice-in-wonderland", "--context", "lots"],
      expect: "not a token count",
    },
    {
      name: "unknown pipeline",
      args: [...small, "--pipeline", "magic"],
      expect: 'unknown --pipeline "magic"',
    },
    { name: "unknown backend", args: [...small, "--backend", "tpu"], expect: 'unknown --backend "tpu"' },
    { name: "unknown model", args: [...small, "--model", "gpt-5"], expect: 'unknown --model "gpt-5"' },
    {
      name: "--json in a missing folder (checked before the run)",
      args: [...small, "--json", join(dir, "no-such-folder", "out.json")],
      expect: "cannot write --json",
    },
    { name: "--chart is a folder", args: [...small, "--chart", dir], expect: "cannot write --chart" },
    { name: "unknown flag", args: [...small, "--max-tokens", "8"], expect: "unknown flag --max-tokens" },
    { name: "misspelt flag", args: [...small, "--inptu", "x"], expect: "did you mean --input?" },
    {
      name: "non-numeric --max-new",
      args: [...small, "--max-new", "ten"],
      expect: '--max-new "ten" is not an integer',
    },
    { name: "flag without its value", args: [...small, "--context"], expect: "--context needs a value" },
    {
      name: "--params not a JSON object",
      args: [...small, "--pipeline", "squeezed", "--params", "[1]"],
      expect: "is not a json object",
    },
    {
      name: "--params with an unknown key",
      args: [...small, "--pipeline", "squeezed", "--params", '{"bogus":1}'],
      expect: 'unknown parameter "bogus"',
    },
    {
      name: "--index with another pipeline",
      args: [...small, "--pipeline", "sale", "--index", join(dir, "doc.sqz")],
      expect: "--index is for --pipeline squeezed",
    },
    {
      name: "--index not an index file (checked before the prefill)",
      args: [...small, "--pipeline", "squeezed", "--index", binary],
      expect: "not a squeezed prefix index",
    },
    {
      name: "--kv-store with a sparse pipeline",
      args: [...small, "--pipeline", "sale", "--kv-store", `file://${dir}/kv`],
      expect: "--kv-store loads the document's KV cache for dense attention",
    },
    {
      name: "--kv-store not a URL",
      args: [...small, "--pipeline", "dense", "--kv-store", "relative/dir"],
      expect: "is not a store URL",
    },
    {
      name: "--kv-store: an unreachable Redis (before the model loads)",
      args: [...small, "--pipeline", "dense", "--kv-store", "redis://127.0.0.1:1"],
      expect: "cannot reach the Redis server",
    },
    {
      name: "--kv-level out of range",
      args: [...small, "--kv-store", `file://${dir}/kv`, "--kv-level", "4"],
      expect: '--kv-level "4"',
    },
    {
      name: "--kv-level without --kv-store",
      args: [...small, "--kv-level", "3"],
      expect: "without --kv-store",
    },
    {
      name: "--kv-gbps not a number",
      args: [...small, "--kv-store", `file://${dir}/kv`, "--kv-gbps", "fast"],
      expect: '--kv-gbps "fast" is not a positive number',
    },
    {
      name: "--kv-gbps with --kv-level",
      args: [...small, "--kv-store", `file://${dir}/kv`, "--kv-gbps", "1", "--kv-level", "2"],
      expect: "--kv-level and --kv-gbps together",
    },
    {
      name: "--kv-fallback without --kv-gbps",
      args: [...small, "--kv-store", `file://${dir}/kv`, "--kv-fallback", "text"],
      expect: "--kv-fallback without --kv-gbps",
    },
    {
      name: "--kv-fallback unknown",
      args: [...small, "--kv-store", `file://${dir}/kv`, "--kv-gbps", "1", "--kv-fallback", "never"],
      expect: 'unknown --kv-fallback "never"',
    },
    {
      name: "--kv-slo without --kv-gbps",
      args: [...small, "--kv-store", `file://${dir}/kv`, "--kv-slo", "500"],
      expect: "--kv-slo without --kv-gbps",
    },
  ];
};

/** Check one bad-input result: exit 1, exactly one stderr line `error: … — fix: …`, no stack, nothing on stdout. */
export const assertOneLineError = (c: BadCase, r: CliResult): void => {
  const lines = r.err.split("\n").filter((l) => l.trim() !== "");
  assert.equal(r.code, 1, `${c.name}: exit ${r.code}, stderr ${r.err}`);
  assert.equal(lines.length, 1, `${c.name}: expected one stderr line, got:\n${r.err}`);
  assert.match(lines[0], /^error: .+ — fix: .+/, `${c.name}: ${lines[0]}`);
  assert.ok(
    lines[0].toLowerCase().includes(c.expect.toLowerCase()),
    `${c.name}: "${lines[0]}" lacks "${c.expect}"`,
  );
  assert.equal(r.out.trim(), "", `${c.name}: stdout not empty: ${r.out}`);
};
