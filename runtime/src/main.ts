/**
 * The entry point of a script: run an Effect and, when it fails, print one line — `error: … — fix: …` — and
 * set the exit code to 1, instead of an uncaught exception whose stack hides the hint.
 *
 * ```ts
 * import { runMain } from "@longctx/runtime";
 * await runMain(Effect.gen(function* () { … }));
 * ```
 * Every CLI of this repository reports its errors through {@link failureLine}, so scripts and CLIs read alike.
 * Runs under Deno, Bun and Node.
 * @module
 */
import process from "node:process";
/** @internal Effect's types (`Effect`, `Cause`) are documented by the `effect` package. */
import { Cause, Effect, Exit } from "effect";

/** The fix printed for a failure that is not one of longctx's typed errors (a bug, not bad input). */
export const INTERNAL_FIX = "rerun with --verbose (or LONGCTX_VERBOSE=1) and report the stack trace";

/** What {@link failureLine} reads of a failure: longctx's typed errors all carry `message` and `hint`. */
interface Hinted {
  readonly message: string;
  readonly hint: string;
}

const isHinted = (e: unknown): e is Hinted =>
  typeof e === "object" && e !== null && typeof (e as Hinted).hint === "string" &&
  typeof (e as Hinted).message === "string";

/** A value's text on one line (newlines and runs of spaces become one space). */
const oneLine = (s: string): string => s.replace(/\s*\n\s*/g, " ").trim();

/**
 * The one-line report of a failure: `error: <message> — fix: <hint>` for a typed error (anything with a
 * `message` and a `hint`: `InputError`, `PlanError`, `ShapeError`, …), `error: internal failure: <message> —
 * fix: …` for anything else (a defect). The line has no newline in it.
 */
export const failureLine = (failure: unknown): string => {
  const e = Cause.isCause(failure) ? Cause.squash(failure) : failure;
  if (isHinted(e)) return `error: ${oneLine(e.message)} — fix: ${oneLine(e.hint)}`;
  const msg = e instanceof Error ? e.message : String(e);
  return `error: internal failure: ${oneLine(msg)} — fix: ${INTERNAL_FIX}`;
};

/** Options of {@link runMain}. */
export interface RunMainOptions {
  /**
   * Also print the failure's stack trace (or Effect's pretty cause) after the line. Default: `--verbose` is
   * among the process arguments, or `LONGCTX_VERBOSE=1`.
   */
  readonly verbose?: boolean;
  /** Where the line goes (default: standard error). */
  readonly write?: (text: string) => void;
}

/** Whether the process asked for stack traces: `--verbose` in its arguments or `LONGCTX_VERBOSE=1`. */
export const verboseRequested = (): boolean =>
  process.argv.includes("--verbose") || process.env.LONGCTX_VERBOSE === "1";

/**
 * Report a failed run's cause: the line of {@link failureLine}, then, with `verbose`, the stack trace.
 * Sets `process.exitCode` to 1.
 */
export const reportFailure = (cause: Cause.Cause<unknown>, options: RunMainOptions = {}): void => {
  const write = options.write ?? ((t: string) => void process.stderr.write(t));
  write(`${failureLine(cause)}\n`);
  if (options.verbose ?? verboseRequested()) {
    const e = Cause.squash(cause);
    write(`${e instanceof Error && e.stack ? e.stack : Cause.pretty(cause)}\n`);
  }
  process.exitCode = 1;
};

/**
 * Run `program` as a script's main. On success it returns the program's value; on failure (a typed error, a
 * defect or an interruption) it prints one `error: … — fix: …` line to stderr, sets the exit code to 1 and
 * returns `undefined`: it never throws.
 */
export const runMain = async <A, E>(
  program: Effect.Effect<A, E> | (() => Effect.Effect<A, E>),
  options: RunMainOptions = {},
): Promise<A | undefined> => {
  const exit = await Effect.runPromiseExit(typeof program === "function" ? Effect.suspend(program) : program);
  if (Exit.isSuccess(exit)) return exit.value;
  reportFailure(exit.cause, options);
  return undefined;
};
