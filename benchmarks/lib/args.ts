/**
 * Command-line flags of the benchmark scripts, read one way: each flag declared with its kind, default and
 * description; `--help` lists them with their defaults; an unknown flag, a flag without its value, a value that
 * is not a number (for numeric flags), out of range or not among the choices is one line on stderr,
 * `error: … — fix: …`, and exit code 1 — the format of the repository's CLIs (`runtime/src/main.ts`).
 * @module
 */
import process from "node:process";
import { InputError } from "@longctx/graph";
import { failureLine } from "../../runtime/src/main.ts";

/** One flag: `int` and `number` take a numeric value, `list` comma-separated numbers, `switch` no value. */
export type FlagSpec =
  | { readonly kind: "int"; readonly default?: number; readonly min?: number; readonly help: string }
  | { readonly kind: "number"; readonly default?: number; readonly min?: number; readonly help: string }
  | {
    readonly kind: "list";
    readonly default?: readonly number[];
    readonly min?: number;
    readonly help: string;
  }
  | {
    readonly kind: "string";
    readonly default?: string;
    readonly choices?: readonly string[];
    readonly help: string;
  }
  | { readonly kind: "switch"; readonly help: string };

type ValueOf<F extends FlagSpec> = F extends { readonly kind: "switch" } ? boolean
  : F extends { readonly kind: "int" | "number" }
    ? (F extends { readonly default: number } ? number : number | undefined)
  : F extends { readonly kind: "list" }
    ? (F extends { readonly default: readonly number[] } ? readonly number[]
      : readonly number[] | undefined)
  : F extends { readonly default: string } ? string
  : string | undefined;

/** The parsed values, by flag name. */
export type FlagValues<S extends Readonly<Record<string, FlagSpec>>> = {
  readonly [K in keyof S]: ValueOf<S[K]>;
};

const shown = (f: FlagSpec): string =>
  f.kind === "switch"
    ? ""
    : "default" in f && f.default !== undefined
    ? ` (default ${Array.isArray(f.default) ? f.default.join(",") : f.default})`
    : "";

/** The `--help` text: usage, then each flag with its kind, description and default. */
export const helpText = (usage: string, spec: Readonly<Record<string, FlagSpec>>): string => {
  const rows = Object.entries(spec).map(([name, f]) => [
    `--${name}${f.kind === "switch" ? "" : ` <${f.kind === "list" ? "n,n,…" : f.kind}>`}`,
    `${f.help}${"choices" in f && f.choices ? ` (one of ${f.choices.join(", ")})` : ""}${shown(f)}`,
  ]);
  const w = Math.max(...rows.map((r) => r[0].length), 6);
  return [usage, "", ...rows.map(([a, b]) => `  ${a.padEnd(w)}  ${b}`), `  ${"--help".padEnd(w)}  this text`]
    .join("\n");
};

function bad(message: string, hint: string): never {
  throw new InputError({ message, hint });
}

const numberOf = (name: string, f: FlagSpec & { readonly min?: number }, v: string, int: boolean): number => {
  const n = /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isFinite(n) || (int && !Number.isSafeInteger(n))) {
    bad(
      `--${name} "${v}" is not ${int ? "an integer" : "a number"}`,
      `give --${name} a ${int ? "whole " : ""}number`,
    );
  }
  if (f.min !== undefined && n < f.min) {
    bad(`--${name} ${v} is below ${f.min}`, `give --${name} ${f.min} or more`);
  }
  return n;
};

/**
 * Parse `argv` against `spec` (pure: throws an `InputError` naming the flag; `help` is true when `--help` was
 * given). {@link parseFlags} is the script entry that prints and exits.
 */
export const readFlags = <S extends Readonly<Record<string, FlagSpec>>>(
  spec: S,
  argv: readonly string[],
): { readonly values: FlagValues<S>; readonly help: boolean } => {
  const out: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(spec)) {
    out[name] = f.kind === "switch" ? false : "default" in f ? f.default : undefined;
  }
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--help" || a === "-h") {
      help = true;
      continue;
    }
    const [flag, inline] = a.startsWith("--") && a.includes("=")
      ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)]
      : [a, undefined];
    const name = flag.startsWith("--") ? flag.slice(2) : undefined;
    const f = name === undefined ? undefined : spec[name];
    if (name === undefined || f === undefined) {
      const near = name === undefined ? [] : Object.keys(spec).filter((k) => k.startsWith(name.slice(0, 3)));
      bad(
        name === undefined ? `unexpected argument "${a}"` : `unknown flag ${flag}`,
        `${
          near.length > 0 ? `did you mean --${near.join(" or --")}? ` : ""
        }run with --help for the flags and their defaults`,
      );
      return { values: out as FlagValues<S>, help };
    }
    if (f.kind === "switch") {
      out[name] = true;
      continue;
    }
    const v = inline ?? argv[i + 1];
    if (v === undefined || (inline === undefined && v.startsWith("--"))) {
      bad(`--${name} needs a value`, `put the value right after --${name}`);
    }
    if (inline === undefined) i++;
    if (f.kind === "int" || f.kind === "number") out[name] = numberOf(name, f, v, f.kind === "int");
    else if (f.kind === "list") {
      const xs = v.split(",").map((x) => x.trim()).filter((x) => x.length > 0);
      if (xs.length === 0) bad(`--${name} is empty`, `give --${name} comma-separated numbers, e.g. 1,2,4`);
      out[name] = xs.map((x) => numberOf(name, f, x, false));
    } else {
      if (f.choices && !f.choices.includes(v)) {
        bad(`unknown --${name} "${v}"`, `use one of: ${f.choices.join(", ")}`);
      }
      out[name] = v;
    }
  }
  return { values: out as FlagValues<S>, help };
};

/**
 * The flags of a benchmark script, from the process's arguments. `--help` prints {@link helpText} and exits 0; a
 * bad flag prints one line `error: … — fix: …` and exits 1.
 */
export const parseFlags = <S extends Readonly<Record<string, FlagSpec>>>(
  usage: string,
  spec: S,
  argv: readonly string[] = process.argv.slice(2),
): FlagValues<S> => {
  try {
    const { values, help } = readFlags(spec, argv);
    if (help) {
      console.log(helpText(usage, spec));
      process.exit(0);
    }
    return values;
  } catch (e) {
    process.stderr.write(`${failureLine(e)}\n`);
    process.exit(1);
  }
};

/** A bench's bad input: print `error: <message> — fix: <hint>` on stderr and exit with 2. */
export const fail = (message: string, hint: string): never => {
  console.error(`error: ${message} — fix: ${hint}`);
  Deno.exit(2);
};

/** The items of a comma-separated flag value, trimmed, empty ones dropped. */
export const list = (s: string): string[] => s.split(",").map((x) => x.trim()).filter((x) => x !== "");
