/**
 * Reading an Effect Schema failure as "which parameter, what is wrong": shared by the graph builder's
 * `ParamsError`, `decodeTechniqueParams` and `decodeParamsSync`. Internal, except `paramNames` (re-exported by `technique.ts`).
 * @module
 */

/** @internal Effect's `Schema` is documented by the `effect` package. */
import type { Schema } from "effect";

/** Names of a Struct schema's fields (empty for schemas that are not structs). */
export const paramNames = (schema: Schema.Top | Schema.Codec<unknown, unknown>): readonly string[] => {
  const fields = (schema as { fields?: unknown }).fields;
  return typeof fields === "object" && fields !== null ? Object.keys(fields) : [];
};

/** The parameter a schema issue is at (`blockQ`), when it names one, and the issue's first line. */
export interface SchemaIssue {
  /** The offending key, from the issue's `at ["<key>"]` path. */
  readonly param?: string;
  /** The issue itself: `Expected a multiple of 16`, `Unexpected key`, … */
  readonly what: string;
  /** Whether the issue is a key the schema does not declare. */
  readonly unknownKey: boolean;
}

/** Split a SchemaError (or any error) into the parameter it names and what is wrong with it. */
export const schemaIssue = (e: unknown): SchemaIssue => {
  // A SchemaError's message: the issue on its first line, then `at ["<key>"]` for a field's issue.
  const text = e instanceof Error ? e.message : String(e);
  const param = /at \["?([^"\]]+)"?\]/.exec(text)?.[1];
  const what = text.split("\n")[0].trim();
  const unknownKey = /excess property|unexpected key/i.test(what);
  return param === undefined ? { what, unknownKey } : { param, what, unknownKey };
};

/** `parameter "blockQ": Expected a multiple of 16`, `unknown parameter "treshold"`, or the issue alone. */
export const describeIssue = (i: SchemaIssue): string =>
  i.param === undefined
    ? `invalid parameters: ${i.what}`
    : i.unknownKey
    ? `unknown parameter "${i.param}"`
    : `parameter "${i.param}": ${i.what}`;
