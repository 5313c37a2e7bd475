/**
 * The `run` command's input side: resolve `--input` (a file or a bundled document), fit the document into the
 * context (a typed error, or explicit truncation), plant a fact in its middle, and build the chat prompt
 * (SmolLM2's ChatML template: system turn, user turn with the document and the question, assistant prompt).
 * @module
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { Effect } from "effect";
import { InputError } from "@longctx/graph";
import { listDocuments, readDocument } from "../../paths.ts";
import type { TextTokenizer } from "../../model/tokenizer.ts";

/** Where the document came from. */
export interface DocumentSourceInfo {
  /** `"file"` or `"bundled"` (a name of `<docs>/manifest.json`). */
  readonly kind: "file" | "bundled";
  /** The file path, or the bundled document's name. */
  readonly name: string;
  /** Title and author for a bundled document. */
  readonly title?: string;
  readonly text: string;
}

/**
 * Read `--input`: an existing path is read as UTF-8; otherwise the name of a bundled document.
 * Fails with `InputError` when the path is a folder or unreadable, when the text is empty (whitespace only),
 * or when no file and no bundled document has that name (the message lists the bundled names).
 */
export const readInput = (input: string): Effect.Effect<DocumentSourceInfo, InputError> =>
  Effect.gen(function* () {
    let source: DocumentSourceInfo;
    if (existsSync(input)) {
      const text = yield* Effect.try({
        try: () => {
          if (statSync(input).isDirectory()) throw new Error("is a folder, not a file");
          return readFileSync(input, "utf8");
        },
        catch: (e) =>
          new InputError({
            message: `cannot read --input ${input}: ${e instanceof Error ? e.message : String(e)}`,
            hint: "pass a readable UTF-8 text file, or a bundled document name",
          }),
      });
      source = { kind: "file", name: input, text };
    } else {
      const docs = yield* Effect.orElseSucceed(listDocuments(), () => []);
      const doc = docs.find((d) => d.name === input);
      if (!doc) {
        return yield* new InputError({
          message: `--input ${input}: no such file${
            docs.length > 0 ? ` and no bundled document of that name` : " (and no bundled documents)"
          }`,
          hint: docs.length > 0
            ? `pass a file path or one of: ${docs.map((d) => d.name).join(", ")}`
            : "pass a file path, or run `npm run setup` to fetch the bundled documents",
        });
      }
      const text = yield* readDocument(doc.name);
      source = { kind: "bundled", name: doc.name, title: `${doc.title} (${doc.author}, ${doc.year})`, text };
    }
    if (source.text.trim() === "") {
      return yield* new InputError({
        message: `--input ${input} is empty`,
        hint: "pass a document with some text in it",
      });
    }
    return source;
  });

/** The planted fact: one sentence inserted in the middle of the kept document tokens. */
export interface Planted {
  readonly sentence: string;
  readonly word: string;
  /** Index (in document tokens) where the sentence's first token sits. */
  readonly tokenPosition: number;
  /** Its relative depth in the kept document, in [0, 1]. */
  readonly depth: number;
}

/** The prompt and where the document lies in it. */
export interface BuiltPrompt {
  /** Prompt token ids: prefix (system + user header), document, suffix (question + assistant header). */
  readonly ids: readonly number[];
  /** First document token in `ids` and the number of document tokens. */
  readonly docStart: number;
  readonly docTokens: number;
  /** Tokens of the whole document before fitting. */
  readonly docTokensTotal: number;
  readonly truncated: boolean;
  /** Tokens of the original document kept (the planted sentence excluded). */
  readonly docTokensKept: number;
  readonly planted?: Planted;
  readonly question: string;
}

/** Options of {@link buildPrompt}. */
export interface PromptOptions {
  readonly question: string;
  /** KV budget (tokens): prompt + answer must fit. */
  readonly context: number;
  /** Answer tokens reserved in the context. */
  readonly maxNew: number;
  readonly truncate: boolean;
  /** Passphrase to plant ("The secret passphrase is <word>."), or undefined. */
  readonly plant?: string;
  /** The model's trained context (tokens), for the hint. */
  readonly maxContext?: number;
}

/** Index near the middle of `ids` right after a token ending a line or sentence (search ±256 tokens). */
const middleBoundary = (tok: TextTokenizer, ids: readonly number[]): number => {
  const mid = ids.length >> 1;
  for (let r = 0; r < 256; r++) {
    for (const i of [mid + r, mid - r]) {
      if (i <= 0 || i >= ids.length) continue;
      const prev = tok.decode([ids[i - 1]]);
      if (/[\n]$/.test(prev)) return i;
    }
  }
  return mid;
};

/**
 * Tokenise the document and the chat template around it; fit the document into `context − maxNew` tokens
 * (with `truncate`: keep its first tokens; otherwise fail); plant the passphrase sentence at a line boundary
 * near the middle of the kept tokens.
 * Fails with `InputError` when the document does not fit and `truncate` is off, or when not even the template
 * and question fit.
 */
export const buildPrompt = (
  tok: TextTokenizer,
  text: string,
  o: PromptOptions,
): Effect.Effect<BuiltPrompt, InputError> =>
  Effect.gen(function* () {
    const marker = "\u0000DOC\u0000";
    const chat = tok.applyChatTemplate(
      [{ role: "user", content: `Read this document:\n\n${marker}\n\nQuestion: ${o.question}` }],
      true,
    );
    const [pre, post] = chat.split(marker);
    const prefix = tok.encode(pre);
    const suffix = tok.encode(post);
    const doc = tok.encode(text);
    const sentence = o.plant === undefined ? undefined : `The secret passphrase is ${o.plant}.\n`;
    const plantIds = sentence === undefined ? [] : tok.encode(sentence);
    const room = o.context - o.maxNew - prefix.length - suffix.length - plantIds.length;
    if (room < 16) {
      return yield* new InputError({
        message:
          `--context ${o.context} leaves ${room} tokens for the document after the template, question` +
          ` and ${o.maxNew} answer tokens`,
        hint: `raise --context to at least ${o.context - room + 16}`,
      });
    }
    let kept = doc;
    if (doc.length > room) {
      if (!o.truncate) {
        const need = doc.length + o.context - room;
        return yield* new InputError({
          message: `the document is ${doc.length} tokens; with the template, question and answer it needs ` +
            `${need} > --context ${o.context}`,
          hint: o.maxContext !== undefined && need > o.maxContext
            ? `pass --truncate to keep its first ${room} tokens (the model reads at most ${o.maxContext})`
            : `pass --truncate to keep its first ${room} tokens, or raise --context to ${need}`,
        });
      }
      kept = doc.slice(0, room);
    }
    let planted: Planted | undefined;
    let docIds: readonly number[] = kept;
    if (sentence !== undefined) {
      const at = middleBoundary(tok, kept);
      docIds = [...kept.slice(0, at), ...plantIds, ...kept.slice(at)];
      planted = {
        sentence: sentence.trim(),
        word: o.plant!,
        tokenPosition: at,
        depth: at / docIds.length,
      };
    }
    return {
      ids: [...prefix, ...docIds, ...suffix],
      docStart: prefix.length,
      docTokens: docIds.length,
      docTokensTotal: doc.length,
      truncated: kept.length < doc.length,
      docTokensKept: kept.length,
      planted,
      question: o.question,
    };
  });
