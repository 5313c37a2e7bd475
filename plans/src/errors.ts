/**
 * Typed errors of the planner. Every error carries a `hint` saying what to do about it.
 * @module
 */
/** @internal Effect's `Data` is documented by the `effect` package. */
import { Data } from "effect";
import type { ErrorFields, TaggedErrorClass } from "@longctx/graph";

/** Why a planning request (or a plan / profile document) was rejected. */
export type PlanErrorReason =
  | "unknown-model"
  | "context-too-long"
  | "bad-request"
  | "unsatisfiable-budget"
  | "bad-plan"
  | "bad-profile"
  | "unknown-device"
  | "unknown-operator"
  | "unknown-technique"
  | "not-profiled";

/** The fields of a {@link PlanError}. */
export interface PlanErrorFields extends ErrorFields {
  /** What was rejected. */
  readonly reason: PlanErrorReason;
}
/** @internal */
const PlanErrorBase: TaggedErrorClass<"PlanError", PlanErrorFields> = Data.TaggedError("PlanError")<
  PlanErrorFields
>;
/** A planning request, a plan file or a device profile is invalid or cannot be satisfied. */
export class PlanError extends PlanErrorBase {}
