/**
 * The JSON report of `trace` (`--json`), versioned: `TraceReport` is its schema,
 * `docs/schemas/trace-report.schema.json` the same as a JSON Schema file (written by `scripts/schemas.ts`,
 * checked by its test). Times are in ms; AttnTrace scores are attention probabilities (mean of a text's top
 * token weights), TracLLM scores differences of log-probabilities in nats.
 * @module
 */
import { Schema } from "effect";

/** The version of the report format; bump it when a field changes meaning or goes away. */
export const TRACE_REPORT_VERSION = 1 as const;

const d = <S extends Schema.Top>(s: S, description: string): S["Rebuild"] => s.annotate({ description });

/** One ranked text of a method's result. */
export const RankedText = Schema.Struct({
  rank: d(Schema.Finite, "1 for the best text"),
  text: d(Schema.Finite, "index of the text in the document (0-based)"),
  score: d(Schema.Finite, "the method's score of the text"),
  start: d(Schema.Finite, "first character of the text in the document (UTF-16 offset)"),
  end: d(Schema.Finite, "one past the text's last character"),
});
/** One ranked text. */
export type RankedText = typeof RankedText.Type;

/** What one method found. */
export const MethodReport = Schema.Struct({
  method: d(Schema.Literals(["attntrace", "tracllm"]), "the traceback method"),
  params: d(
    Schema.Record(Schema.String, Schema.Union([Schema.Finite, Schema.String, Schema.Array(Schema.String)])),
    "the method's parameters (ops/traceback/params.ts)",
  ),
  top: d(Schema.Array(RankedText), "the top texts, best first"),
  scores: d(
    Schema.Array(Schema.NullOr(Schema.Finite)),
    "every text's score; TracLLM: null for texts its search did not keep",
  ),
  forwards: d(
    Schema.Finite,
    "AttnTrace: forwards; TracLLM: value-function calls (a prefill and an answer call each)",
  ),
  ms: d(Schema.Finite, "wall time of the method, ms"),
});
/** What one method found. */
export type MethodReport = typeof MethodReport.Type;

/** `trace --json`'s report. */
export const TraceReport = Schema.Struct({
  version: d(Schema.Literal(TRACE_REPORT_VERSION), "report format version"),
  input: d(Schema.String, "the --input file path or bundled document name"),
  question: d(Schema.String, "the question"),
  answer: d(Schema.String, "the answer traced (decoded from its tokens)"),
  answerSource: d(Schema.Literals(["given", "generated"]), "--answer, or the model's greedy answer"),
  texts: d(Schema.Finite, "texts traced"),
  wordsPerText: d(Schema.Finite, "--words"),
  truncatedTexts: d(Schema.Finite, "texts dropped by --truncate"),
  tokens: d(Schema.Finite, "prompt + answer tokens with every text"),
  backend: d(Schema.String, "where the forward ran"),
  methods: d(Schema.Array(MethodReport), "one entry per method run"),
});
/** `trace --json`'s report. */
export type TraceReport = typeof TraceReport.Type;
