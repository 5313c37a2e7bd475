/**
 * The conformance runner: every operator × every case × (float64 check of the CPU reference, then every
 * backend through the executor on a one-node graph against the CPU reference), collected into one table. Each
 * run (the CPU reference and every backend) gets its own copy of the case's inputs, since an in-place operator
 * (`Operator.aliases`) writes into them, and the case's runtime scalars (`ConfCase.scalars`).
 * @module
 */
import { Effect, Exit, Schema } from "effect";
import { graph, hostTensor, run } from "@longctx/graph";
import type { AnyOperator, Backend, BackendKind, DescsOf, HostTensor, Port, Ports } from "@longctx/graph";
import type { Built, CaseGenerator, ConfCase, Outputs } from "./cases.ts";
import { type Metric, mismatches, passes, ratio } from "./metrics.ts";

/** The float64 row's backend label. */
export const REF64 = "cpu-ref vs f64";

/** What the rows of the table mean (printed under it by {@link formatTable}). */
export const LEGEND: readonly string[] = [
  `${REF64}: the operator's CPU reference (run directly, no GEMM) against an independent float64 / exact computation.`,
  'cpu: the cpu backend through the executor on the host path (lowering: "never"): the CPU reference on the ' +
  "backend's own memory (zero-copy views, in-place aliased outputs, runtime scalars — the path the model forward " +
  "takes), against the direct CPU reference; bit-exact when the backend has no GEMM.",
  "webgpu, wgpu: the operator's gpu lowering through the executor against the CPU reference.",
];

/** Fresh copies of host tensors: every run gets its own (an in-place operator writes into its inputs). */
const copyInputs = (inputs: Readonly<Record<string, HostTensor>>): Record<string, HostTensor> =>
  Object.fromEntries(
    Object.entries(inputs).map((
      [k, t],
    ) => [k, hostTensor(t.desc.dtype, t.desc.dims, t.desc.shape, t.data.slice() as never)]),
  );

/** Bit-exact comparison of every output port (the cpu row without a GEMM runs the very same reference). */
const bitExact = (got: Outputs, cpu: Outputs): Metric[] =>
  Object.keys(cpu).map((port) => {
    const a = got[port]?.data, b = cpu[port].data;
    const bytes = (x: { buffer: ArrayBufferLike; byteOffset: number; byteLength: number }) =>
      new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    return a && a.byteLength === b.byteLength
      ? mismatches(`${port} bit-exact (bytes)`, bytes(a), bytes(b))
      : { name: `${port} bit-exact (size differs)`, err: Infinity, tol: 0 };
  });

/** One row of the table: an operator on a backend (or its CPU reference against float64). */
export interface Row {
  readonly op: string;
  readonly backend: string;
  run: number;
  passed: number;
  worst?: Metric;
  readonly skipped: Map<string, number>;
  ms: number;
}

/** One failed case, named fully. */
export interface Failure {
  readonly op: string;
  readonly backend: string;
  readonly shape: string;
  readonly dtype: string;
  readonly message: string;
}

/** What a conformance run found. */
export interface Report {
  readonly rows: Row[];
  readonly failures: Failure[];
}

/** A backend to run on, or why it is absent. */
export type BackendSlot = {
  readonly kind: BackendKind;
  /** Row label when two slots share a kind (default: the kind), e.g. `cpu+blas`. */
  readonly label?: string;
  readonly backend?: Backend;
  readonly absent?: string;
};

const describe = (e: unknown): string => {
  if (e instanceof Error) return e.message;
  const s = String(e);
  return s.length > 400 ? `${s.slice(0, 400)}…` : s;
};

const effectError = (exit: Exit.Exit<unknown, unknown>): string | undefined =>
  Exit.isSuccess(exit) ? undefined : describe(exit.cause).replace(/\s+/g, " ");

/** A one-node graph: every input port a graph input, every output port a graph output. */
const oneNode = (op: AnyOperator, params: unknown) => {
  const g = graph(`conformance:${op.name}`);
  const ins: Record<string, Port> = {};
  for (const [port, t] of Object.entries(op.inputs)) ins[port] = g.input(port, t);
  const outs = g.add(op, params, ins as never) as Readonly<Record<string, Port>>;
  for (const [port, h] of Object.entries(outs)) g.output(port, h);
  return g.build<Ports, Ports>();
};

const fmtMetric = (m: Metric) =>
  `${m.name} ${m.err === 0 || !Number.isFinite(m.err) ? String(m.err) : m.err.toExponential(2)}`;

const fmtTol = (t: number) => (t === 0 ? "0 (exact)" : Number(t.toPrecision(2)).toExponential());

const caseName = (c: ConfCase, b: Built | undefined) => `${c.shape}${b?.note ? ` (${b.note})` : ""}`;

/**
 * Run the conformance test of `ops` on `slots`. `generators` maps operator names to case generators; an operator
 * without one is a failure.
 */
export const runConformance = async (
  ops: readonly AnyOperator[],
  generators: Readonly<Record<string, CaseGenerator>>,
  slots: readonly BackendSlot[],
): Promise<Report> => {
  const rows: Row[] = [];
  const failures: Failure[] = [];
  for (const op of ops) {
    const row = (backend: string): Row => {
      const r: Row = { op: op.name, backend, run: 0, passed: 0, skipped: new Map(), ms: 0 };
      rows.push(r);
      return r;
    };
    const ref = row(REF64);
    const bRows = new Map(slots.map((s) => [s.label ?? s.kind, row(s.label ?? s.kind)]));
    const all = [ref, ...bRows.values()];
    const skip = (r: Row, reason: string) => r.skipped.set(reason, (r.skipped.get(reason) ?? 0) + 1);
    const fail = (r: Row, c: ConfCase | undefined, b: Built | undefined, message: string) => {
      failures.push({
        op: op.name,
        backend: r.backend,
        shape: c ? caseName(c, b) : "-",
        dtype: c?.dtype ?? "-",
        message,
      });
    };
    const record = (r: Row, c: ConfCase, b: Built, metrics: Metric[], ms: number) => {
      r.run++;
      r.ms += ms;
      const bad = metrics.filter((m) => !passes(m));
      if (metrics.length === 0) {
        bad.push({ name: "no metrics (a case that checks nothing)", err: NaN, tol: 0 });
      }
      if (bad.length === 0) r.passed++;
      for (const m of bad) fail(r, c, b, `${fmtMetric(m)} > threshold ${m.tol}`);
      for (const m of metrics) {
        if (!r.worst || ratio(m) > ratio(r.worst) || (ratio(m) === ratio(r.worst) && m.err > r.worst.err)) {
          r.worst = m;
        }
      }
    };

    const gen = generators[op.name];
    if (!gen) {
      for (const r of all) r.run++;
      fail(
        ref,
        undefined,
        undefined,
        `no conformance case generator: add an entry for "${op.name}" to caseGenerators in tests/conformance/cases.ts`,
      );
      continue;
    }
    let cases: readonly ConfCase[];
    try {
      cases = gen(op);
    } catch (e) {
      ref.run++;
      fail(ref, undefined, undefined, `case generator threw: ${describe(e)}`);
      continue;
    }
    if (cases.length === 0) {
      ref.run++;
      fail(ref, undefined, undefined, "case generator returned no cases");
    }
    for (const c of cases) {
      const decode = (extra: Readonly<Record<string, unknown>>, wg?: number) =>
        Schema.decodeUnknownSync(op.params)({
          ...c.params,
          ...extra,
          ...(wg !== undefined &&
              "workgroupMemory" in (Schema.decodeUnknownSync(op.params)({ ...c.params }) as object)
            ? { workgroupMemory: wg }
            : {}),
        });
      const inferErr = (descs: ConfCase["descs"]) =>
        effectError(Effect.runSyncExit(op.infer(decode({}), descs as DescsOf<Ports>)));
      const rejected = inferErr(c.descs);
      if (rejected !== undefined) {
        if (c.qk && c.equalDescs && inferErr(c.equalDescs) === undefined) {
          for (const r of all) skip(r, "q≠k: n/a (operator requires kSeq = seq)");
        } else {
          ref.run++;
          fail(ref, c, undefined, `infer rejects the case's inputs: ${rejected}`);
        }
        continue;
      }
      let built: Built;
      let cpu: Outputs;
      const t0 = performance.now();
      try {
        built = c.build();
        cpu = op.cpu(decode(built.params ?? {}), copyInputs(built.inputs), {
          scalars: c.scalars ?? {},
        }) as Outputs;
      } catch (e) {
        ref.run++;
        fail(ref, c, undefined, `building the case or running the CPU reference threw: ${describe(e)}`);
        continue;
      }
      try {
        record(ref, c, built, built.ref64(cpu), performance.now() - t0);
      } catch (e) {
        ref.run++;
        fail(ref, c, built, `float64 check threw: ${describe(e)}`);
      }
      for (const slot of slots) {
        const r = bRows.get(slot.label ?? slot.kind)!;
        if (!slot.backend) {
          skip(r, `backend absent: ${slot.absent}`);
          continue;
        }
        const b = slot.backend;
        const host = b.kind === "cpu";
        if (!host && !op.gpu) {
          skip(r, "no gpu lowering (the executor would run the CPU reference itself)");
          continue;
        }
        const params = decode(built.params ?? {}, b.limits.maxComputeWorkgroupStorageSize);
        if (!host) {
          try {
            op.gpu!(params, c.descs as DescsOf<Ports>, b.features);
          } catch (e) {
            skip(r, `no lowering on this device: ${describe(e)}`);
            continue;
          }
        }
        const t1 = performance.now();
        const exit = await Effect.runPromiseExit(
          Effect.flatMap(
            oneNode(op, params),
            (g) =>
              run(g, b, copyInputs(built.inputs), {
                lowering: host ? "never" : "auto",
                ...(c.scalars ? { scalars: c.scalars } : {}),
              }),
          ),
        );
        const ms = performance.now() - t1;
        if (Exit.isFailure(exit)) {
          r.run++;
          r.ms += ms;
          fail(r, c, built, `executor failed: ${effectError(exit)}`);
          continue;
        }
        const path = exit.value.report.nodes[0]?.path;
        if (path !== (host ? "cpu" : "gpu")) {
          r.run++;
          fail(
            r,
            c,
            built,
            host
              ? `node ran on the "${path}" path, not the cpu backend's host path`
              : `node ran on the "${path}" path, not its gpu lowering: nothing of the kernel was checked`,
          );
          continue;
        }
        try {
          const got = exit.value.outputs as Outputs;
          record(
            r,
            c,
            built,
            [...built.compare(got, cpu), ...(host && !b.gemm ? bitExact(got, cpu) : [])],
            ms,
          );
        } catch (e) {
          r.run++;
          fail(r, c, built, `comparison threw: ${describe(e)}`);
        }
      }
    }
  }
  return { rows, failures };
};

/** The table: one line per operator × backend. */
export const formatTable = (report: Report): string => {
  const head = ["operator", "backend", "run", "passed", "worst error", "threshold", "ms", "skipped (reason)"];
  const body = report.rows.map((r) => [
    r.op,
    r.backend,
    String(r.run),
    String(r.passed),
    r.worst ? fmtMetric(r.worst) : "-",
    r.worst ? fmtTol(r.worst.tol) : "-",
    String(Math.round(r.ms)),
    [...r.skipped].map(([why, n]) => `${n}× ${why}`).join("; ") || "-",
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(w[i]))).join(" | ");
  return [line(head), w.map((n) => "-".repeat(n)).join("-|-"), ...body.map(line), "", ...LEGEND].join("\n");
};

/** One line per failure: op, backend, shape, dtype, error vs threshold. */
export const formatFailures = (report: Report): string =>
  report.failures.map((f) => `FAIL ${f.op} on ${f.backend}, ${f.shape} ${f.dtype}: ${f.message}`).join("\n");
