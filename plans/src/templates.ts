/**
 * The planner's view of techniques: the phase and layer shape types (defined with the Technique contract in
 * `@longctx/graph`) and the density scaling of sparse costs. The techniques themselves are registered in
 * `@longctx/ops` (`TECHNIQUES`): the planner iterates that registry and lists none by name.
 * @module
 */
export type { AttnDims, AttnDType, Phase } from "@longctx/graph";

/**
 * A cost at the full mask scaled to `density` in [0, 1] (FLOPs and bytes read; bytes written are
 * unchanged): the convention of a technique's `densityScaled` kinds, shared by the planner and `calibrate`.
 */
export const scaleCost = <C extends { flops: number; bytesRead: number; bytesWritten: number }>(
  c: C,
  density: number,
): C => ({ ...c, flops: c.flops * density, bytesRead: c.bytesRead * density });
