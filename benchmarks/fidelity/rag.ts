/**
 * Retrieval-augmented generation (RAG) as a pipeline over one haystack, in the shape of LaRA's RAG baseline
 * (`evaluation/eval_rag.py`: fixed-size chunks with overlap, retrieval, the top-k chunks as a short context)
 * with BM25 only (no embedding model is installed):
 *
 * 1. **Chunk** the document's tokens into windows of `chunkTokens` stepping `chunkTokens − overlapTokens`
 *    (the last window ends at the document's end). A planted sentence no longer than `overlapTokens` lies
 *    wholly inside at least one chunk.
 * 2. **Index** each chunk's text (the tokenizer's decoding of its ids) with BM25 through MiniSearch (npm
 *    `minisearch`, its BM25+ scoring with δ = 0, i.e. Okapi BM25, k1 = 1.2, b = 0.7; terms lower-cased, split on
 *    Unicode space and punctuation).
 * 3. **Retrieve** the `topK` best chunks for the question (OR of its terms).
 * 4. **Context**: the union of the chosen chunks' token ranges, in document order, contiguous ranges merged,
 *    gaps marked by a blank line: the prompt is the same chat template as long context with these passages as
 *    the document.
 * @module
 */
import MiniSearch from "minisearch";
import { InputError } from "@longctx/graph";
import type { TextTokenizer } from "../../runtime/src/model/tokenizer.ts";

/** RAG settings (tokens). */
export interface RagOptions {
  /** Tokens per chunk (LaRA: 600 for 32K–128K contexts; ours are 2K–8K). */
  readonly chunkTokens: number;
  /** Tokens shared by consecutive chunks (LaRA: 100). */
  readonly overlapTokens: number;
  /** Chunks retrieved per question (LaRA: 5 after reranking). */
  readonly topK: number;
}

/** Defaults scaled to 2K–8K haystacks: 4 × 160-token chunks ≈ 640 tokens of passages. */
export const DEFAULT_RAG: RagOptions = { chunkTokens: 160, overlapTokens: 32, topK: 4 };

/** One chunk: token range `[start, end)` of the document and its text. */
export interface Chunk {
  readonly id: number;
  readonly start: number;
  readonly end: number;
  readonly text: string;
}

/**
 * Validate `o`: positive integers, `overlapTokens < chunkTokens`. Returns the message of the first violation
 * as an `InputError` (with a hint), or undefined.
 */
export const ragOptionsError = (o: RagOptions): InputError | undefined => {
  for (const [k, v] of Object.entries(o)) {
    if (!Number.isInteger(v) || v < (k === "overlapTokens" ? 0 : 1)) {
      return new InputError({
        message: `RAG ${k} must be a ${
          k === "overlapTokens" ? "non-negative" : "positive"
        } integer, got ${v}`,
        hint: "e.g. --chunk 160 --overlap 32 --top-k 4",
      });
    }
  }
  if (o.overlapTokens >= o.chunkTokens) {
    return new InputError({
      message: `RAG overlap ${o.overlapTokens} must be below the chunk size ${o.chunkTokens}`,
      hint: "use an overlap of a fifth of the chunk, e.g. --chunk 160 --overlap 32",
    });
  }
  return undefined;
};

/** Split `n` document tokens into overlapping windows (see the module doc, step 1). `o` must be valid. */
export const chunkRanges = (n: number, o: RagOptions): { start: number; end: number }[] => {
  const out: { start: number; end: number }[] = [];
  const step = o.chunkTokens - o.overlapTokens;
  for (let s = 0;; s += step) {
    const end = Math.min(n, s + o.chunkTokens);
    out.push({ start: s, end });
    if (end >= n) break;
  }
  return out;
};

/** A BM25 index over a document's chunks. */
export interface RagIndex {
  readonly chunks: readonly Chunk[];
  /** The `topK` chunks for `query`, best first, with their BM25 scores (fewer when fewer match any term). */
  retrieve(query: string, topK: number): { chunk: Chunk; score: number }[];
}

/** Chunk `docIds` (step 1) and index the chunks (step 2). `o` must be valid (see {@link ragOptionsError}). */
export const buildIndex = (tok: TextTokenizer, docIds: readonly number[], o: RagOptions): RagIndex => {
  const chunks = chunkRanges(docIds.length, o).map((r, id) => ({
    id,
    ...r,
    text: tok.decode(docIds.slice(r.start, r.end), true),
  }));
  const ms = new MiniSearch<Chunk>({
    fields: ["text"],
    idField: "id",
    searchOptions: { bm25: { k: 1.2, b: 0.7, d: 0 }, combineWith: "OR" },
  });
  ms.addAll(chunks);
  return {
    chunks,
    retrieve: (query, topK) =>
      ms.search(query).slice(0, topK).map((h) => ({ chunk: chunks[h.id as number], score: h.score })),
  };
};

/**
 * The passages of `chosen` as document tokens: the union of their ranges in document order, contiguous or
 * overlapping ranges merged, `separator` ids between the others. Returns the ids and the merged ranges.
 */
export const passages = (
  docIds: readonly number[],
  chosen: readonly Chunk[],
  separator: readonly number[],
): { ids: number[]; ranges: { start: number; end: number }[] } => {
  const rs = chosen.map((c) => ({ start: c.start, end: c.end })).sort((a, b) => a.start - b.start);
  const merged: { start: number; end: number }[] = [];
  for (const r of rs) {
    const last = merged[merged.length - 1];
    if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else merged.push({ ...r });
  }
  const ids: number[] = [];
  merged.forEach((r, i) => {
    if (i > 0) ids.push(...separator);
    ids.push(...docIds.slice(r.start, r.end));
  });
  return { ids, ranges: merged };
};
