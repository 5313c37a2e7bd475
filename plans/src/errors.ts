/**
 * Typed errors of the planner. Every error carries a `hint` saying what to do about it.
 * @module
 */
import { Data } from "effect";

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

/** A planning request, a plan file or a device profile is invalid or cannot be satisfied. */
export class PlanError extends Data.TaggedError("PlanError")<{
  readonly reason: PlanErrorReason;
  readonly message: string;
  readonly hint: string;
}> {}
