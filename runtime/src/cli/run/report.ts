/**
 * The JSON report of `run` (`--json`), versioned: `RunReport` is its schema, `docs/schemas/run-report.schema.json`
 * the same as a JSON Schema file (written by `scripts/schemas.ts`, checked by its test). Times are in ms,
 * perplexities per token (natural log), KL in nats.
 * @module
 */
import { Schema } from "effect";
import { Plan } from "@longctx/plans";

/** The version of the report format; bump it when a field changes meaning or goes away. */
export const RUN_REPORT_VERSION = 1 as const;

const d = <S extends Schema.Top>(s: S, description: string): S["Rebuild"] => s.annotate({ description });
const ms = (description: string) => d(Schema.Finite, `${description}, ms`);
const NullableNumber = Schema.NullOr(Schema.Finite);

/** One prefill + decode pass. */
const PassReport = Schema.Struct({
  prefillMs: ms("prefill of the whole prompt"),
  attentionMs: d(NullableNumber, "attention time within the prefill, ms (null: not measured, one program)"),
  decodeMs: ms("greedy decoding of the answer"),
  answerTokens: d(Schema.Finite, "tokens of the answer"),
  decodeTokensPerS: d(Schema.Finite, "answer tokens per second of decoding (0 without tokens)"),
  answer: d(Schema.String, "the decoded answer, trimmed"),
  answerStop: d(
    Schema.Literals(["end-of-turn", "end-of-line", "max-new"]),
    "why the answer ended: end of the model's turn, end of its first line, or --max-new tokens",
  ),
  answerHasPassphrase: d(
    Schema.optional(Schema.Boolean),
    "whether the answer contains the --plant word (absent without --plant)",
  ),
});

/** One layer of the pipeline pass. */
const LayerReport = Schema.Struct({
  layer: d(Schema.Finite, "layer index"),
  pipeline: d(Schema.String, "the technique the layer ran: dense or a registered technique's name"),
  density: d(
    Schema.Finite,
    "attended / causal (kept / causal blocks for SALE), mean over heads (1 for dense)",
  ),
  outRelErr: d(NullableNumber, "‖o − o_dense‖ / ‖o_dense‖ on the layer's own inputs (null: not measured)"),
  attentionMs: d(NullableNumber, "attention time of the layer, ms (null: not measured)"),
});

/** The schema of `run --json`'s report (see the module doc). */
export const RunReport = Schema.Struct({
  version: d(Schema.Literal(RUN_REPORT_VERSION), "report format version"),
  date: d(Schema.String, "ISO-8601 time of the run"),
  runtime: d(Schema.String, "`deno <version>` or `bun <version>`"),
  model: Schema.Struct({
    id: d(Schema.String, "model id (`smollm2-135m`)"),
    file: d(Schema.String, "the GGUF file loaded"),
    layers: Schema.Finite,
    heads: d(Schema.Finite, "query heads"),
    kvHeads: d(Schema.Finite, "key/value heads"),
    headDim: d(Schema.Finite, "elements per head vector"),
    trainedContext: d(Schema.Finite, "the model's trained context, tokens"),
  }),
  document: Schema.Struct({
    source: d(Schema.Literals(["file", "bundled"]), "a file, or a bundled document"),
    name: d(Schema.String, "the file path or the bundled document's name"),
    title: d(Schema.optional(Schema.String), "title and author of a bundled document"),
    tokensTotal: d(Schema.Finite, "tokens of the whole document"),
    tokensTotalIsLowerBound: d(Schema.Boolean, "tokensTotal is only a lower bound (a very long document)"),
    tokensKept: d(Schema.Finite, "document tokens kept after --truncate (the planted sentence excluded)"),
    tokensUsed: d(Schema.Finite, "document tokens in the prompt (the planted sentence included)"),
    truncated: d(Schema.Boolean, "whether --truncate cut the document"),
    planted: d(
      Schema.NullOr(Schema.Struct({
        sentence: Schema.String,
        word: Schema.String,
        tokenPosition: d(Schema.Finite, "document token where the sentence starts"),
        depth: d(Schema.Finite, "relative depth in the kept document, in [0, 1]"),
      })),
      "the --plant sentence, or null",
    ),
  }),
  question: d(Schema.String, "the question asked"),
  context: d(Schema.Finite, "--context: prompt + answer tokens"),
  promptTokens: d(Schema.Finite, "tokens of the prompt"),
  maxNewTokens: d(Schema.Finite, "--max-new"),
  backend: Schema.Struct({
    requested: d(Schema.String, "--backend"),
    selected: d(Schema.String, "the backend selected and its adapter"),
    report: d(Schema.String, "why it was selected"),
    fallbacks: d(Schema.Array(Schema.String), "backends tried before it, and why each was not used"),
    compute: d(Schema.String, "where the forward ran"),
    plannerProfile: d(Schema.String, "the device profile the planner was asked to use"),
  }),
  compared: d(
    Schema.Boolean,
    "whether a sparse pipeline ran beside dense (false: every layer dense, dense ran once)",
  ),
  pipeline: Schema.Struct({
    requested: d(Schema.String, "--pipeline"),
    layers: d(Schema.String, "the technique per layer range (`layers 0-29: sale (…)`)"),
    source: d(Schema.String, "who chose it and why"),
    plan: d(Schema.NullOr(Plan), "the planner's plan (null when planning failed)"),
  }),
  phasesMs: d(
    Schema.Record(Schema.String, Schema.Finite),
    "time of each phase, ms: loadModelMs, openBackendMs, tokenizeMs, planMs, metricsMs, prefillDense, " +
      "prefillPipeline, decodeDense, decodePipeline, perLayerReference, total",
  ),
  speedup: Schema.Struct({
    prefill: d(Schema.Finite, "dense prefill time / pipeline prefill time"),
    attention: d(NullableNumber, "dense attention time / pipeline attention time (null: not measured)"),
  }),
  density: d(
    Schema.Finite,
    "mean over layers (dense layers count 1) of the attended share: kept / causal blocks (SALE), attended / causal pairs (HiP)",
  ),
  perplexity: Schema.Struct({
    dense: d(Schema.Finite, "perplexity of the document tokens, dense pass"),
    pipeline: d(Schema.Finite, "the same, pipeline pass"),
    positions: d(Schema.Finite, "document positions scored"),
  }),
  perplexityChangePct: d(Schema.Finite, "(pipeline / dense − 1) × 100"),
  kl: Schema.Struct({
    meanNats: d(Schema.Finite, "mean over positions of KL(dense ‖ pipeline), nats"),
    maxNats: d(Schema.Finite, "its maximum, nats"),
  }),
  top1Agreement: d(Schema.Finite, "share of positions where both passes' argmax agree"),
  dense: d(PassReport, "the dense pass"),
  pipelineRun: d(PassReport, "the pipeline pass (the dense pass again when compared is false)"),
  layers: d(Schema.Array(LayerReport), "per layer of the pipeline pass"),
  prefixIndex: d(
    Schema.optional(Schema.Struct({
      path: d(Schema.NullOr(Schema.String), "the --index file, or null"),
      built: d(Schema.Boolean, "whether this run built the index (false: loaded from path)"),
      fixedTokens: d(Schema.Finite, "fixed-context tokens (chat head and document)"),
      clusters: d(Schema.Finite, "clusters per layer and KV head"),
      prefillMs: ms("the context's prefill (built) or its K/V restored from the file (loaded)"),
      clusterMs: ms("k-means and calibration (0 when loaded)"),
      bytes: d(Schema.Finite, "bytes of the index file written or read (0 without --index)"),
      percentile: d(Schema.Finite, "the threshold percentile"),
      threshold: d(Schema.Finite, "the global threshold τ it reads from the index"),
      questionTokens: d(Schema.Finite, "tokens after the fixed context"),
      questionPrefillMs: ms("the question's prefill through the squeezed attention"),
      firstTokenKl: d(Schema.Finite, "KL(dense ‖ squeezed) of the answer's first token, nats"),
    })),
    "--pipeline squeezed: the prefix index and the question (absent for other pipelines)",
  ),
  kvStore: d(
    Schema.optional(Schema.Struct({
      url: d(Schema.String, "the --kv-store URL (password hidden)"),
      hit: d(
        Schema.Boolean,
        "whether the document's KV cache was in the store (its manifest found: no prefill)",
      ),
      fixedTokens: d(Schema.Finite, "fixed-context tokens (chat head and document)"),
      chunks: d(Schema.Finite, "chunks of the context (256 tokens each)"),
      level: d(Schema.Finite, "the CacheGen level of every chunk (0: the controller chose per chunk)"),
      bytes: d(
        Schema.Finite,
        "bytes of the containers read (a hit) or written at every stored level (a miss)",
      ),
      ratioVsFp16: d(
        Schema.Finite,
        "fp16 KV bytes over the bytes read, for the chunks sent as KV (a hit; 0 if none), or over those stored " +
          "at the level (a miss)",
      ),
      loadMs: ms("a hit: reading, decoding and writing the cache, and recomputing text chunks (0 on a miss)"),
      decodeMs: ms("a hit: decoding the containers (checksum, arithmetic decode, dequantisation)"),
      prefillMs: ms("a miss: the context's dense prefill (0 on a hit)"),
      storeMs: ms("encoding and storing the containers (a miss, or a hit that stored missing chunks again)"),
      recomputeMs: ms("a hit: recomputing the chunks sent as text (part of loadMs)"),
      textChunks: d(
        Schema.Finite,
        "a hit: chunks recomputed from their text (controller's choice or missing)",
      ),
      missingChunks: d(
        Schema.Finite,
        "a hit: chunks gone from the store: recomputed, the context stored again",
      ),
      linkMs: ms("a hit with --kv-gbps: the bytes read at the simulated bandwidth (added to ttftMs)"),
      controller: d(
        Schema.optional(Schema.Struct({
          gbps: d(Schema.Finite, "the simulated link's bandwidth, Gbit/s"),
          sloMs: ms("the loading budget"),
          fallback: d(
            Schema.Literals(["fastest", "text"]),
            "a chunk no level fits: the fastest option, or text",
          ),
          recomputeMsPerToken: ms(
            "the recompute cost charged per token (the dense prefill's time per token)",
          ),
          sends: d(Schema.Array(Schema.String), "per chunk: the level sent (1, 2, 3) or text (recomputed)"),
          textChunks: d(Schema.Finite, "chunks recomputed from their text"),
        })),
        "--kv-gbps: the loading controller's choices (absent otherwise)",
      ),
      questionPrefillMs: ms("the question's prefill on the cache"),
      ttftMs: ms(
        "time to the first answer token: the context (loaded, with the simulated link under --kv-gbps, or " +
          "prefilled) and the question",
      ),
      firstTokenKl: d(Schema.Finite, "KL(dense ‖ kv store) of the answer's first token, nats"),
    })),
    "--kv-store: the document's KV cache through the store (absent without --kv-store)",
  ),
  speculative: d(
    Schema.optional(Schema.Struct({
      draft: d(Schema.String, "the draft (self: the target with sinks + window of its KV; random)"),
      shape: d(Schema.Array(Schema.Finite), "tree shape: nodes per depth below the root"),
      treeNodes: d(Schema.Finite, "tree nodes verified per round, root included"),
      tokens: d(Schema.Finite, "tokens decoded by each of plain and speculative decoding (no early stop)"),
      identical: d(Schema.Boolean, "whether the speculative tokens equal plain greedy's (lossless)"),
      prefillMs: ms("the CPU forward's prefill of the prompt"),
      plainTokensPerS: d(
        Schema.Finite,
        "plain greedy decoding on the CPU forward with the verify call's attention kernels, tokens/s",
      ),
      tokensPerS: d(Schema.Finite, "speculative decoding on the CPU forward, tokens/s"),
      speedup: d(Schema.Finite, "tokensPerS / plainTokensPerS"),
      rounds: d(Schema.Finite, "verification rounds"),
      meanAccepted: d(Schema.Finite, "mean draft tokens accepted per round"),
      tokensPerRound: d(Schema.Finite, "mean tokens emitted per round (accepted + the bonus token)"),
      draftShare: d(Schema.Finite, "share of the speculative decode time spent drafting"),
    })),
    "--speculative: LongSpec decoding against plain greedy (absent without --speculative)",
  ),
  warnings: d(Schema.Array(Schema.String), "what the reader should know"),
});
/** A decoded `run` report. */
export type RunReport = typeof RunReport.Type;
