/**
 * Find the operators to benchmark and make inputs for them, with no per-operator code: whatever
 * `@longctx/ops` (ops/mod.ts) exports, at any depth of its namespaces, that has the `Operator` shape.
 *
 * Inputs are synthesised from the ports' types:
 * - a float port (`f32`, `f16`) whose dims all have a base size (`heads`, `kvHeads`, `seq`, `kvSeq`,
 *   `headDim`, …; see `DEFAULT_DIMS`) gets seeded random normal data (speed inputs only, never fidelity);
 * - the RoPE tables' dims follow from those (`positions` = the larger of `kvSeq` and `capacity`, `half` =
 *   `headDim / 2`); an integer port of known dims that no operator produces starts at zero (carried state);
 * - any other port (packed int4 codes, BSR `indptr`/`indices`, block scores, …) is produced by running the
 *   cpu reference of another discovered operator that has an output port of the same name and type, on
 *   inputs made the same way (recursively, depth ≤ 4). So `sale.sparseAttn`'s mask comes from `sale.select`
 *   on scores from `sale.estimate` on codes from `sale.quantize`.
 * An operator's `example` (see `Operator.example`) sizes the dims it needs beyond these, gives the runtime
 * scalars of a valid call and, where random data is no valid input (`cachegen.decode`'s coded streams), the
 * host inputs themselves. Parameters are each operator's schema defaults (`decode({})`). An operator whose inputs cannot be made,
 * whose parameters have no defaults, or whose `infer` rejects the inputs is skipped with the reason.
 * @module
 */
import { Effect, Exit, Schema } from "effect";
import type { AnyOperator, DescsOf, HostTensor, Ports, TensorDesc, TensorType } from "@longctx/graph";
import { allocHost, numel, seededNormals } from "@longctx/graph";

/** Base sizes of named dims for micro benchmarks (small: this runs on CPUs and lavapipe). */
export const DEFAULT_DIMS: Readonly<Record<string, number>> = {
  batch: 1,
  heads: 4,
  kvHeads: 2,
  seq: 256,
  kvSeq: 256,
  headDim: 64,
  rows: 128,
  cols: 128,
  hidden: 128,
  tree: 16,
  draftSeq: 64,
  capacity: 256,
};

/** Runtime scalars given to operators that read them (`Operator.scalars`): a cache read from position 0. */
export const DEFAULT_SCALARS: Readonly<Record<string, number>> = { pos: 0, start: 0 };

/** The scalars of `op`'s calls: the defaults, overridden by its example call's (`Operator.example`). */
export const scalarsOf = (op: AnyOperator): Readonly<Record<string, number>> => ({
  ...DEFAULT_SCALARS,
  ...(op.example?.scalars ?? {}),
});

/** Whether an operator has a wildcard port (`anyDims`): the model's glue, shaped per model, not per dims. */
const hasWildcardPort = (op: AnyOperator): boolean =>
  [...Object.values(op.inputs as Ports), ...Object.values(op.outputs as Ports)].some((t) =>
    t.dims.length === 1 && t.dims[0] === "..."
  );

/** Whether a value has the `Operator` contract's shape. */
export const isOperator = (x: unknown): x is AnyOperator => {
  if (typeof x !== "object" || x === null) return false;
  const o = x as Record<string, unknown>;
  return typeof o.name === "string" && typeof o.kind === "string" && typeof o.cpu === "function" &&
    typeof o.infer === "function" && typeof o.cost === "function" && typeof o.inputs === "object" &&
    typeof o.outputs === "object" && o.params !== undefined;
};

/** Operators reachable from a module namespace (depth-first, each object once), sorted by name. */
export const findOperators = (ns: unknown): AnyOperator[] => {
  const seen = new Set<unknown>();
  const found: AnyOperator[] = [];
  const walk = (x: unknown, depth: number) => {
    if (typeof x !== "object" || x === null || seen.has(x) || depth > 4) return;
    seen.add(x);
    if (isOperator(x)) {
      found.push(x);
      return;
    }
    // module namespaces and plain registries (objects / arrays of operators); skip class instances etc.
    const proto = Object.getPrototypeOf(x);
    const plain = proto === null || proto === Object.prototype || Array.isArray(x) ||
      Object.prototype.toString.call(x) === "[object Module]";
    if (!plain) return;
    for (const v of Object.values(x as Record<string, unknown>)) walk(v, depth + 1);
  };
  walk(ns, 0);
  const byName = new Map<string, AnyOperator>();
  for (const op of found) if (!byName.has(op.name)) byName.set(op.name, op);
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
};

/**
 * Import `@longctx/ops` and list its operators, except those with wildcard ports (the `model.*` glue: its
 * shapes come from a model, and `benchmarks/model_bench.ts` measures it); an import failure is returned.
 */
export const discoverOperators = async (): Promise<{ ops: AnyOperator[]; error?: string }> => {
  try {
    return { ops: findOperators(await import("@longctx/ops")).filter((op) => !hasWildcardPort(op)) };
  } catch (e) {
    return { ops: [], error: `import @longctx/ops failed: ${e instanceof Error ? e.message : String(e)}` };
  }
};

/** IEEE half bits of a float (round to nearest even; overflow to ±Inf). */
const toHalf = (x: number): number => {
  const f = new Float32Array([x]);
  const b = new Uint32Array(f.buffer)[0];
  const sign = (b >>> 16) & 0x8000;
  const e = ((b >>> 23) & 0xff) - 127 + 15;
  const m = b & 0x7fffff;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const mm = (m | 0x800000) >> (1 - e);
    return sign | ((mm + 0x1000 + ((mm >> 13) & 1) - 1) >> 13);
  }
  const h = (e << 10) | (m >> 13);
  const rest = m & 0x1fff;
  return sign | (rest > 0x1000 || (rest === 0x1000 && (h & 1)) ? h + 1 : h);
};

const sameType = (a: TensorType, b: TensorType): boolean =>
  a.dtype === b.dtype && a.dims.length === b.dims.length && a.dims.every((d, i) => d === b.dims[i]);

/** An operator ready to run: decoded parameters, host inputs and their descriptions, inferred outputs. */
export interface Prepared {
  readonly op: AnyOperator;
  readonly params: unknown;
  readonly inputs: Readonly<Record<string, HostTensor>>;
  readonly descs: Readonly<Record<string, TensorDesc>>;
  readonly outputs: Readonly<Record<string, TensorDesc>>;
}

/** Why an operator cannot be prepared. */
export class PrepareError extends Error {}

const decodeParams = (op: AnyOperator): unknown => {
  try {
    return Schema.decodeUnknownSync(op.params as Schema.Codec<unknown, unknown>)({});
  } catch (e) {
    throw new PrepareError(`parameters have no defaults: ${String(e).split("\n")[0]}`);
  }
};

const inferOutputs = (op: AnyOperator, params: unknown, descs: Record<string, TensorDesc>) => {
  const exit = Effect.runSyncExit(op.infer(params, descs as DescsOf<Ports>));
  if (Exit.isFailure(exit)) {
    throw new PrepareError(`infer rejected the synthesised inputs: ${String(exit.cause).split("\n")[0]}`);
  }
  return exit.value as Record<string, TensorDesc>;
};

/**
 * Make inputs for `op` from base dims and producers among `all` (see module doc). Throws `PrepareError`
 * with the reason when it cannot.
 */
export const prepare = (
  op: AnyOperator,
  all: readonly AnyOperator[],
  base: Readonly<Record<string, number>> = DEFAULT_DIMS,
  depth = 0,
  seed = 1,
): Prepared => {
  if (depth > 4) throw new PrepareError("producer chain deeper than 4");
  // the operator's example call may size dims of its own (or constrain the common ones); its producers see
  // the same sizes
  base = { ...base, ...(depth === 0 ? op.example?.dims ?? {} : {}) };
  // dims derived from the base ones: the RoPE tables' rows and half width, state counters
  const dims: Readonly<Record<string, number>> = {
    positions: Math.max(base.kvSeq ?? 0, base.capacity ?? 0),
    half: (base.headDim ?? 0) / 2,
    stats: 4,
    ...base,
  };
  const params = decodeParams(op);
  const inputs: Record<string, HostTensor> = {};
  // an operator whose valid inputs random data cannot make (coded streams) gives them itself
  let given: Readonly<Record<string, HostTensor>> = {};
  try {
    given = op.example?.inputs?.(dims) ?? {};
  } catch (e) {
    throw new PrepareError(`its example inputs threw: ${e instanceof Error ? e.message : String(e)}`);
  }
  let k = 0;
  for (const [port, t] of Object.entries(op.inputs as Ports)) {
    k++;
    if (given[port]) {
      inputs[port] = given[port];
      continue;
    }
    const known = t.dims.every((d) => dims[d] !== undefined);
    if (known && (t.dtype === "f32" || t.dtype === "f16")) {
      const shape = t.dims.map((d) => dims[d]);
      const data = seededNormals(numel(shape), seed * 7919 + k);
      const h = allocHost({ dtype: t.dtype, dims: t.dims, shape });
      if (t.dtype === "f32") (h.data as Float32Array).set(data);
      else (h.data as Uint16Array).set(Array.from(data, toHalf));
      inputs[port] = h;
      continue;
    }
    // a producer of the same technique first (tokenselect.select's list for tokenselect.compact, not hip.mask's)
    const family = op.name.split(".")[0];
    const producers = all.filter((p) =>
      p !== op && Object.entries(p.outputs as Ports).some(([n, pt]) => n === port && sameType(pt, t))
    );
    let producer = producers.find((p) => p.name.split(".")[0] === family) ?? producers[0];
    let from = port;
    if (!producer && !known) {
      // else an output of the same type by another name, from the same technique (a state the operator
      // carries: the list `selIdx` as tokenselect.select's `indices`)
      const alt = all.find((p) =>
        p !== op && p.name.split(".")[0] === family &&
        Object.values(p.outputs as Ports).some((pt) => sameType(pt, t))
      );
      if (alt) {
        producer = alt;
        from = Object.entries(alt.outputs as Ports).find(([, pt]) => sameType(pt, t))![0];
      }
    }
    if (!producer && known) {
      // an integer tensor no operator produces but whose dims are known: state that starts at zero
      // (TokenSelect's Selection Cache list and counters)
      inputs[port] = allocHost({ dtype: t.dtype, dims: t.dims, shape: t.dims.map((d) => dims[d]) });
      continue;
    }
    if (!producer) {
      throw new PrepareError(`no base size or producer for port ${port}: ${t.dtype}[${t.dims.join(",")}]`);
    }
    const prep = prepare(producer, all, base, depth + 1, seed);
    const out = producer.cpu(prep.params, prep.inputs as never, { scalars: scalarsOf(producer) }) as Record<
      string,
      HostTensor
    >;
    inputs[port] = out[from];
  }
  const descs: Record<string, TensorDesc> = {};
  for (const [port, h] of Object.entries(inputs)) descs[port] = h.desc;
  return { op, params, inputs, descs, outputs: inferOutputs(op, params, descs) };
};

/** A short shape summary of prepared inputs: `q=f32[4,256,64] k=…`. */
export const shapeSummary = (p: Prepared): string =>
  Object.entries(p.descs).map(([n, d]) => `${n}=${d.dtype}[${d.shape.join(",")}]`).join(" ");
