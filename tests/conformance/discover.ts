/**
 * Operator discovery for the conformance test, in one place: when the technique registry (`ops/registry.ts`)
 * replaces `defaultOperators()`, this is the one line to change.
 * @module
 */
import type { AnyOperator } from "@longctx/graph";
import { defaultOperators } from "../../plans/src/registry.ts";

/** Every registered operator the conformance test must cover. */
export const registeredOperators = (): readonly AnyOperator[] => defaultOperators();
