/**
 * The JSON Schema files of the documents the CLIs write, generated from their Effect Schemas:
 *
 * | file | written by | schema |
 * |---|---|---|
 * | `docs/schemas/plan.schema.json` | `plan --json`, `plan --out` | `Plan` of `@longctx/plans` |
 * | `docs/schemas/device-profile.schema.json` | `calibrate --out` | `DeviceProfile` of `@longctx/plans` |
 * | `docs/schemas/density-table.schema.json` | `plans/profiles/density-*.json` | `DensityTable` of `@longctx/plans` |
 * | `docs/schemas/run-report.schema.json` | `run --json` | `RunReport` of `runtime/src/cli/run/report.ts` |
 * | `docs/schemas/trace-report.schema.json` | `trace --json` | `TraceReport` of `runtime/src/cli/trace_report.ts` |
 *
 * Each document carries a `version` field; a reader checks it first. Regenerate after changing a schema:
 * `bash scripts/deno.sh run -A scripts/schemas.ts` (`scripts/schemas_test.ts` fails while a file is stale).
 * @module
 */
import { writeFileSync } from "node:fs";
import { Schema } from "effect";
import { DensityTable, DeviceProfile, Plan } from "@longctx/plans";
import { RunReport } from "../runtime/src/cli/run/report.ts";
import { TraceReport } from "../runtime/src/cli/trace_report.ts";

/** Where the files go, relative to the repository root. */
export const SCHEMA_DIR = "docs/schemas";

const documents: readonly { file: string; title: string; description: string; schema: Schema.Top }[] = [
  {
    file: "plan.schema.json",
    title: "longctx plan",
    description: "The attention plan of `plan --json` / `plan --out` (format version 1).",
    schema: Plan,
  },
  {
    file: "device-profile.schema.json",
    title: "longctx device profile",
    description:
      "Measured operator latencies of one device, written by `calibrate --out` (format version 1).",
    schema: DeviceProfile,
  },
  {
    file: "density-table.schema.json",
    title: "longctx density table",
    description: "Measured densities of sparse pipelines per model and context (format version 1).",
    schema: DensityTable,
  },
  {
    file: "run-report.schema.json",
    title: "longctx run report",
    description:
      "The report of `run --json` (format version 1): times in ms, perplexity per token, KL in nats.",
    schema: RunReport,
  },
  {
    file: "trace-report.schema.json",
    title: "longctx trace report",
    description: "The report of `trace --json` (format version 1): times in ms, TracLLM scores in nats.",
    schema: TraceReport,
  },
];

/** Each schema file's path (under {@link SCHEMA_DIR}) and its text (JSON Schema draft 2020-12, with a newline). */
export const schemaFiles = (): { readonly file: string; readonly text: string }[] =>
  documents.map((d) => {
    const doc = Schema.toJsonSchemaDocument(d.schema);
    const defs = doc.definitions && Object.keys(doc.definitions).length > 0 ? { $defs: doc.definitions } : {};
    const json = {
      $schema: "https://json-schema.org/draft/2020-12/schema",
      title: d.title,
      description: d.description,
      ...doc.schema,
      ...defs,
    };
    return { file: `${SCHEMA_DIR}/${d.file}`, text: JSON.stringify(json, null, 2) + "\n" };
  });

if (import.meta.main) {
  const root = new URL("../", import.meta.url).pathname;
  for (const f of schemaFiles()) {
    writeFileSync(root + f.file, f.text);
    console.log(`wrote ${f.file}`);
  }
}
