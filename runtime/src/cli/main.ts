/**
 * What every CLI of this repository shares: one entry point ({@link runCli}) that prints every failure — bad
 * flags included — as one line `error: … — fix: …` with exit code 1, and flag helpers that put each default
 * into `--help` ({@link withShownDefault}) and read numbers with an error naming the flag ({@link intFlag}).
 * @module
 */
import { accessSync, constants, existsSync, statSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { NodeRuntime, NodeServices } from "@effect/platform-node";
import { Cause, Effect } from "effect";
import { CliError, CliOutput, Command, Flag } from "effect/cli";
import { InputError } from "@longctx/graph";
import { reportFailure } from "../main.ts";

/**
 * The flag's description with its default appended — `"answer tokens at most (default 24)"` — and the
 * default itself: every flag with a default shows it in `--help`.
 */
export const withShownDefault =
  <A>(description: string, value: A, shown: string = String(value)) => (self: Flag.Flag<A>): Flag.Flag<A> =>
    self.pipe(Flag.withDescription(`${description} (default ${shown})`), Flag.withDefault(value));

/**
 * Parse the value of a numeric flag given as text: an integer `≥ min`. Fails with an `InputError` that names the
 * flag and the value (`--max-new "ten" is not an integer ≥ 1`).
 */
export const intFlag = (flag: string, v: string, min: number): Effect.Effect<number, InputError> => {
  const n = /^\s*[+-]?\d+\s*$/.test(v) ? Number(v) : NaN;
  return Number.isSafeInteger(n) && n >= min ? Effect.succeed(n) : Effect.fail(
    new InputError({
      message: `--${flag} "${v}" is not an integer ≥ ${min}`,
      hint: `give --${flag} a whole number, e.g. --${flag} ${Math.max(min, 1) * 8}`,
    }),
  );
};

/**
 * Parse the value of a numeric flag given as text: a finite number `> 0`. Fails with an `InputError` that names
 * the flag and the value (`--kv-gbps "fast" is not a positive number`).
 */
export const positiveFlag = (flag: string, v: string, example: string): Effect.Effect<number, InputError> => {
  const n = /^\s*[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/.test(v) ? Number(v) : NaN;
  return Number.isFinite(n) && n > 0 ? Effect.succeed(n) : Effect.fail(
    new InputError({
      message: `--${flag} "${v}" is not a positive number`,
      hint: `give --${flag} a number above 0, e.g. --${flag} ${example}`,
    }),
  );
};

/** Effect CLI's `expected` text of a bad value, shortened: "a string representing a finite number" → "a finite number". */
const expected = (text: string): string =>
  text.replace(/^Expected:?\s*/, "").replace(/^a string representing (an? )/, "$1");

/** The one parse error of an invalid invocation, as an `InputError` with a hint for that kind of mistake. */
const invocationError = (e: CliError.CliError, command: string): InputError => {
  const help = `run '${command} --help' for the flags and their defaults`;
  switch (e._tag) {
    case "UnrecognizedOption":
      return new InputError({
        message: `unknown flag ${e.option}`,
        hint: e.suggestions.length > 0 ? `did you mean ${e.suggestions.join(" or ")}? (${help})` : help,
      });
    case "MissingOption":
      return new InputError({ message: `--${e.option} is required`, hint: `give --${e.option} (${help})` });
    case "InvalidValue":
      return new InputError({
        message: e.value.length === 0
          ? `--${e.option} needs a value`
          : `--${e.option} "${e.value}" is not valid: expected ${expected(e.expected)}`,
        hint: e.value.length === 0
          ? `put the value right after --${e.option} (${help})`
          : `give --${e.option} ${expected(e.expected)} (${help})`,
      });
    case "UnexpectedArgument":
      return new InputError({
        message: `unexpected argument${e.arguments.length === 1 ? "" : "s"} ${
          e.arguments.map((a) => JSON.stringify(a)).join(", ")
        }`,
        hint: `flags start with --, e.g. --input file.txt (${help})`,
      });
    default:
      return new InputError({ message: e.message.split("\n")[0], hint: help });
  }
};

/**
 * Invalid invocations are not shown as the full help plus an error block (Effect CLI's default): they fail,
 * and {@link runCli} prints them as one line. `--help` and `--version` print as usual.
 */
const quietInvocations = CliOutput.layerPresenter({
  present: (event) =>
    event._tag === "InvalidInvocation" ? Effect.void : CliOutput.defaultPresenter.present(event),
});

/**
 * Run `command` on the process's arguments (Deno, Bun, Node). Any failure — an invalid invocation (unknown flag,
 * missing or malformed value), a typed error of the command (`InputError`, `PlanError`, …) or a defect — prints
 * one line `error: … — fix: …` to stderr (`--verbose` adds the stack trace) and exits with code 1.
 */
export const runCli = <Name extends string, Input, E, R>(
  command: Command.Command<Name, Input, unknown, E, R>,
  options: { readonly version: string },
): void => {
  const name: string = command.name;
  const program = command.pipe(
    Command.run(options),
    Effect.catchCause((cause) =>
      Effect.sync(() => {
        const e = Cause.squash(cause);
        if (CliError.isCliError(e) && e._tag === "ShowHelp") {
          // `--help` alone is a ShowHelp without errors: the help is already printed
          if (e.errors.length === 0) return;
          reportFailure(Cause.fail(invocationError(e.errors[0], name)));
          return;
        }
        reportFailure(cause);
      })
    ),
    Effect.provide(quietInvocations),
    Effect.provide(NodeServices.layer),
  );
  NodeRuntime.runMain(program as Effect.Effect<void>);
};

/**
 * Check before a long computation that `path` can be written (`flag` names it in the error): fails with an
 * `InputError` for a folder or a missing or read-only parent folder.
 */
export const checkWritable = (path: string, flag: string): Effect.Effect<void, InputError> =>
  Effect.try({
    try: () => {
      if (existsSync(path) && statSync(path).isDirectory()) throw new Error(`${path} is a folder`);
      accessSync(dirname(resolve(path)), constants.W_OK);
    },
    catch: (e) =>
      new InputError({
        message: `cannot write ${flag} ${path}: ${e instanceof Error ? e.message : String(e)}`,
        hint: "pass a file path in an existing, writable folder",
      }),
  });

/** Write `text` to `path`; fails with an `InputError` naming `flag`. */
export const writeFile = (path: string, text: string, flag: string): Effect.Effect<void, InputError> =>
  Effect.try({
    try: () => writeFileSync(path, text),
    catch: (e) =>
      new InputError({
        message: `cannot write ${flag} ${path}: ${e instanceof Error ? e.message : String(e)}`,
        hint: "pass a writable path",
      }),
  });

/**
 * A flag value that must be one of `allowed`; fails with an `InputError` naming the flag and listing the
 * allowed values.
 */
export const oneOf = <T extends string>(
  flag: string,
  v: string,
  allowed: readonly T[],
): Effect.Effect<T, InputError> =>
  (allowed as readonly string[]).includes(v) ? Effect.succeed(v as T) : Effect.fail(
    new InputError({ message: `unknown --${flag} "${v}"`, hint: `use one of: ${allowed.join(", ")}` }),
  );

/** The `--verbose` flag every CLI has: stack traces on errors (read by `reportFailure`). */
export const verboseFlag: Flag.Flag<boolean> = Flag.Boolean("verbose").pipe(
  Flag.withDescription("print stack traces on errors"),
  Flag.withDefault(false),
);
