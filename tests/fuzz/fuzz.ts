/**
 * A small seeded mutation fuzzer for the readers of untrusted files (GGUF, plan, profile, density and graph
 * JSON). Every case must end in success or in the reader's typed error: a thrown exception, an Effect defect
 * (`Die`) or a case slower than `CASE_MS` is a crash. Deterministic: case `i` of a target uses seed `i`.
 *
 * Budget: `LONGCTX_FUZZ_CASES` cases per target (default {@link DEFAULT_CASES}, the CI run); e.g.
 * `LONGCTX_FUZZ_CASES=100000 bash scripts/deno.sh test -A --no-check tests/fuzz/` for a longer run.
 * @module
 */
import { Effect, Exit } from "effect";
import { mulberry32 } from "@longctx/graph";

/** Cases per target in CI. */
export const DEFAULT_CASES = 1500;
/** A case slower than this (ms) counts as a hang. */
export const CASE_MS = 2000;

/** Cases per target for this run. */
export const fuzzCases = (): number => {
  const v = Number(
    (globalThis as { Deno?: typeof Deno }).Deno?.env.get("LONGCTX_FUZZ_CASES") ??
      (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env
        .LONGCTX_FUZZ_CASES ??
      DEFAULT_CASES,
  );
  return Number.isInteger(v) && v > 0 ? v : DEFAULT_CASES;
};

/** What a run of one target found. */
export interface FuzzReport {
  readonly target: string;
  readonly cases: number;
  readonly accepted: number;
  readonly refused: number;
  readonly crashes: readonly string[];
  readonly slowestMs: number;
}

const INTERESTING_U64 = [
  0n,
  1n,
  0x7fn,
  0xffn,
  0xffffn,
  0xffffffffn,
  0x100000000n,
  2n ** 53n,
  2n ** 63n,
  2n ** 64n - 1n,
];

/** Mutate bytes: bit flips, random bytes, an interesting u64 written somewhere, truncation, a duplicated slice. */
export const mutateBytes = (src: Uint8Array, rnd: () => number): Uint8Array => {
  let b = src.slice();
  const n = 1 + Math.floor(rnd() * 4);
  for (let k = 0; k < n; k++) {
    const r = rnd();
    // Mutations favour the header (where sizes live): 3/4 of positions fall in the first 1 KiB.
    const pos = () => Math.floor(rnd() < 0.75 ? rnd() * Math.min(1024, b.length) : rnd() * b.length);
    if (b.length === 0) break;
    if (r < 0.3) b[pos()] ^= 1 << Math.floor(rnd() * 8);
    else if (r < 0.5) b[pos()] = Math.floor(rnd() * 256);
    else if (r < 0.75 && b.length >= 8) {
      const p = Math.min(pos(), b.length - 8);
      new DataView(b.buffer).setBigUint64(
        p,
        INTERESTING_U64[Math.floor(rnd() * INTERESTING_U64.length)],
        true,
      );
    } else if (r < 0.9) b = b.slice(0, pos());
    else {
      const p = pos(), len = Math.floor(rnd() * 64);
      const out = new Uint8Array(b.length + len);
      out.set(b.subarray(0, p));
      out.set(b.subarray(p, p + len), p);
      out.set(b.subarray(p), p + Math.min(len, b.length - p));
      b = out;
    }
  }
  return b;
};

const INTERESTING_JSON: unknown[] = [
  null,
  true,
  0,
  -1,
  1e308,
  -1e308,
  5e-324,
  2 ** 53 + 1,
  0.5,
  "",
  "x".repeat(10_000),
  [],
  {},
  [[[[[]]]]],
  { version: 1 },
  "NaN",
  "Infinity",
];

/** Mutate a JSON document: structural edits at random paths, then sometimes a text edit ("1e999" → ∞). */
export const mutateJson = (doc: unknown, rnd: () => number): string => {
  const d = structuredClone(doc) as unknown;
  const edits = 1 + Math.floor(rnd() * 3);
  let root: unknown = d;
  for (let k = 0; k < edits; k++) {
    // Walk to a random container.
    let parent: Record<string, unknown> | unknown[] | undefined;
    let key: string | number | undefined;
    let cur: unknown = root;
    const depth = Math.floor(rnd() * 6);
    for (let i = 0; i < depth && cur !== null && typeof cur === "object"; i++) {
      const keys = Object.keys(cur as object);
      if (keys.length === 0) break;
      parent = cur as Record<string, unknown>;
      key = Array.isArray(cur) ? Math.floor(rnd() * cur.length) : keys[Math.floor(rnd() * keys.length)];
      cur = (cur as Record<string, unknown>)[key as string];
    }
    const r = rnd();
    const value = r < 0.6
      ? structuredClone(INTERESTING_JSON[Math.floor(rnd() * INTERESTING_JSON.length)])
      : typeof cur === "number"
      ? cur * [-1, 1e300, 1e-300][Math.floor(rnd() * 3)]
      : typeof cur === "string"
      ? cur + cur
      : Array.isArray(cur)
      ? [...cur, ...cur]
      : undefined;
    if (parent === undefined || key === undefined) root = value ?? root;
    else if (value === undefined) delete (parent as Record<string, unknown>)[key as string];
    else (parent as Record<string, unknown>)[key as string] = value;
  }
  let text = JSON.stringify(root) ?? "null";
  const t = rnd();
  if (t < 0.15) text = text.replace(/\d+(\.\d+)?/, "1e999");
  else if (t < 0.25) text = text.slice(0, Math.floor(rnd() * text.length));
  else if (t < 0.3) text = text.replace(/"/, "");
  return text;
};

/**
 * Run `cases` cases of a target: `make(rnd)` builds an input, `read(input)` is the reader under test. A case
 * is refused when the Effect fails with a typed error, a crash when it throws, dies, or exceeds `CASE_MS`.
 */
export const fuzz = async <I>(
  target: string,
  cases: number,
  make: (rnd: () => number, i: number) => I,
  read: (input: I) => Effect.Effect<unknown, unknown>,
): Promise<FuzzReport> => {
  let accepted = 0, refused = 0, slowestMs = 0;
  const crashes: string[] = [];
  for (let i = 0; i < cases; i++) {
    const rnd = mulberry32(0x5eed0000 + i);
    const input = make(rnd, i);
    const t0 = performance.now();
    try {
      const exit = await Effect.runPromiseExit(read(input));
      if (Exit.isSuccess(exit)) accepted++;
      else {
        const reasons = (exit.cause as unknown as { reasons: { _tag: string; defect?: unknown }[] }).reasons;
        if (reasons.every((x) => x._tag === "Fail")) refused++;
        else {crashes.push(`case ${i}: defect ${
            String(reasons.find((x) => x._tag !== "Fail")?.defect).slice(0, 200)
          }`);}
      }
    } catch (e) {
      crashes.push(`case ${i}: threw ${String((e as Error)?.stack ?? e).slice(0, 200)}`);
    }
    const ms = performance.now() - t0;
    slowestMs = Math.max(slowestMs, ms);
    if (ms > CASE_MS) crashes.push(`case ${i}: took ${ms.toFixed(0)} ms`);
  }
  return { target, cases, accepted, refused, crashes, slowestMs };
};
