/**
 * Operator discovery: the planner's default operator set is every operator `@longctx/ops` exports and every
 * operator of a registered technique (`TECHNIQUES`).
 * @module
 */
import type { AnyOperator } from "@longctx/graph";
import * as ops from "@longctx/ops";

/** Whether `x` has the shape of an `Operator` (name, kind, params schema, ports, cost model). */
export const isOperator = (x: unknown): x is AnyOperator =>
  typeof x === "object" && x !== null && typeof (x as AnyOperator).name === "string" &&
  typeof (x as AnyOperator).kind === "string" && typeof (x as AnyOperator).cost === "function" &&
  typeof (x as AnyOperator).inputs === "object" && typeof (x as AnyOperator).outputs === "object" &&
  (x as AnyOperator).params !== undefined;

/**
 * Every operator among a module's exports, looking one level into namespace re-exports
 * (`export * as sale from "./sale/mod.ts"`); deduplicated by name, first wins.
 */
export const operatorsIn = (module: Readonly<Record<string, unknown>>): readonly AnyOperator[] => {
  const byName = new Map<string, AnyOperator>();
  const visit = (v: unknown, depth: number) => {
    if (isOperator(v)) {
      if (!byName.has(v.name)) byName.set(v.name, v);
    } else if (depth > 0 && typeof v === "object" && v !== null && !Array.isArray(v)) {
      for (const w of Object.values(v)) visit(w, depth - 1);
    }
  };
  for (const v of Object.values(module)) visit(v, 1);
  return [...byName.values()];
};

/**
 * Every operator `@longctx/ops` exports (one namespace level deep), then every operator of a registered
 * technique that is not exported; deduplicated by name, first wins.
 */
export const defaultOperators = (): readonly AnyOperator[] => {
  const byName = new Map(operatorsIn(ops as Record<string, unknown>).map((o) => [o.name, o]));
  for (const o of ops.TECHNIQUES.flatMap((t) => t.operators)) if (!byName.has(o.name)) byName.set(o.name, o);
  return [...byName.values()];
};
