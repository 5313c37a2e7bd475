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
 * The text of a file's bytes: UTF-8 (a BOM dropped). Fails with `InputError` for bytes that are not UTF-8 or
 * hold a NUL (a binary file), naming the first bad byte's offset.
 */
const utf8Text = (input: string, bytes: Uint8Array): Effect.Effect<string, InputError> => {
  const nul = bytes.indexOf(0);
  const bad = (why: string) =>
    Effect.fail(
      new InputError({
        message: `--input ${input} is not a text file (${why})`,
        hint: "pass a UTF-8 text file (convert other encodings first, e.g. with iconv)",
      }),
    );
  if (nul >= 0) return bad(`a NUL byte at offset ${nul}`);
  try {
    return Effect.succeed(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes));
  } catch {
    return bad("its bytes are not UTF-8");
  }
};

/**
 * Read `--input`: an existing path is read as UTF-8; otherwise the name of a bundled document.
 * Fails with `InputError` when the path is a folder or unreadable, when its bytes are not UTF-8 text (invalid
 * UTF-8 or a NUL byte: a binary file), when the text is empty (whitespace only), or when no file and no bundled
 * document has that name (the message lists the bundled names).
 */
export const readInput = (input: string): Effect.Effect<DocumentSourceInfo, InputError> =>
  Effect.gen(function* () {
    let source: DocumentSourceInfo;
    if (existsSync(input)) {
      const text = yield* Effect.try({
        try: () => {
          if (statSync(input).isDirectory()) throw new Error("is a folder, not a file");
          return readFileSync(input);
        },
        catch: (e) =>
          new InputError({
            message: `cannot read --input ${input}: ${e instanceof Error ? e.message : String(e)}`,
            hint: "pass a readable UTF-8 text file, or a bundled document name",
          }),
      });
      source = { kind: "file", name: input, text: yield* utf8Text(input, text) };
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
  /** The sentence, "The secret passphrase is <word>.". */
  readonly sentence: string;
  /** The planted word. */
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
  /** First document token in `ids`. */
  readonly docStart: number;
  /** Document tokens in `ids` (the planted sentence included): `ids[docStart + docTokens]` is the question part. */
  readonly docTokens: number;
  /**
   * Tokens of the whole document before fitting; with `docTokensTotalIsLowerBound`, only a lower bound (the
   * document was tokenised only as far as needed).
   */
  readonly docTokensTotal: number;
  /** Whether `docTokensTotal` is only a lower bound. */
  readonly docTokensTotalIsLowerBound: boolean;
  /** Whether the document was cut to fit (`truncate`). */
  readonly truncated: boolean;
  /** Tokens of the original document kept (the planted sentence excluded). */
  readonly docTokensKept: number;
  /** The planted passphrase sentence and where it sits, when one was planted. */
  readonly planted?: Planted;
  /** The question asked. */
  readonly question: string;
}

/** Options of {@link buildPrompt}. */
export interface PromptOptions {
  /** The question, as ordinary text. */
  readonly question: string;
  /** KV budget (tokens): prompt + answer must fit. */
  readonly context: number;
  /** Answer tokens reserved in the context. */
  readonly maxNew: number;
  /** Keep the document's first tokens when it does not fit (else an `InputError`). */
  readonly truncate: boolean;
  /** Passphrase to plant ("The secret passphrase is <word>."), or undefined. */
  readonly plant?: string;
  /** The model's trained context (tokens), for the hint. */
  readonly maxContext?: number;
  /**
   * Tokens reserved for the question part (question, instruction, assistant header) when fitting the document,
   * instead of its own length: the document then does not depend on the question (Squeezed Attention's index
   * serves every question up to that length). A longer question part is an `InputError`.
   */
  readonly questionRoom?: number;
}

/** Ordinary-text ids of a prefix of a document, from {@link encodeOrdinaryPrefix}. */
export interface EncodedPrefix {
  /** Token ids of the first pieces of the text (at least `limit + 1` of them unless `complete`). */
  readonly ids: number[];
  /** Whether the whole text was encoded (`ids` is then exactly `tok.encodeOrdinary(text)`). */
  readonly complete: boolean;
}

const WS = /[\s\u0085]/;
const LETTER = /\p{L}/u;

/**
 * The next cut at or after `from` that is a pre-token boundary of the byte-level BPE pre-tokenizer (GPT-2 regex
 * after the `\p{N}` split), so that encoding the pieces separately gives the same ids as encoding the text
 * whole: just after a lone "\n" between two non-spaces (a longer run of whitespace before a word splits
 * differently at the end of a piece: "\n\n" is one pre-token there, "\n" "\n" before a word), or else
 * between a letter and a " " followed by a letter (a word and the next " word"). `text.length` when none.
 */
const nextCut = (text: string, from: number, window: number): number => {
  const end = Math.min(text.length - 1, from + window);
  for (let p = Math.max(1, from); p < end; p++) {
    if (text[p - 1] === "\n" && !WS.test(text[p]) && p >= 2 && !WS.test(text[p - 2])) return p;
  }
  for (let p = Math.max(1, from); p < end; p++) {
    if (text[p] === " " && LETTER.test(text[p - 1]) && LETTER.test(text[p + 1])) return p;
  }
  return text.length;
};

/**
 * Encode `text` as ordinary text ({@link TextTokenizer.encodeOrdinary}) piece by piece (pieces of about
 * `chunkChars` UTF-16 units, cut at pre-token boundaries), stopping as soon as more than `limit` tokens are
 * counted: a 20 MB document kept to its first 1000 tokens costs a few pieces, not the whole text (encoding
 * all of it at once took 1.8 GB). Ids are identical to encoding the text whole.
 */
export const encodeOrdinaryPrefix = (
  tok: TextTokenizer,
  text: string,
  limit: number,
  chunkChars = 32768,
): EncodedPrefix => {
  const ids: number[] = [];
  let at = 0;
  while (at < text.length) {
    if (ids.length > limit) return { ids, complete: false };
    const cut = nextCut(text, at + chunkChars, Math.max(chunkChars, 1 << 20));
    for (const id of tok.encodeOrdinary(text.slice(at, cut))) ids.push(id);
    at = cut;
  }
  return { ids, complete: true };
};

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
 * Tokenise the document and the chat template around it (document, question and planted word as ordinary text:
 * a special token written in them is never encoded as a control token); fit the document into `context − maxNew` tokens
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
    // Only the chat template may emit control tokens: the document, the question and the planted word are
    // untrusted text, encoded with `encodeOrdinary`, so a literal "<|im_end|>" in them stays text.
    const docMarker = "\u0000DOC\u0000", questionMarker = "\u0000QUESTION\u0000";
    const chat = tok.applyChatTemplate(
      [{ role: "user", content: `Read this document:\n\n${docMarker}\n\nQuestion: ${questionMarker}` }],
      true,
    );
    const [pre, rest] = chat.split(docMarker);
    const [mid, post] = rest.split(questionMarker);
    const prefix = tok.encode(pre);
    // `mid` ("\n\nQuestion: ") is ours but has no control token: encoding it with the question keeps the
    // space before the question's first word in one token, as encoding the whole prompt at once would.
    const suffix = [...tok.encodeOrdinary(mid + o.question), ...tok.encode(post)];
    const sentence = o.plant === undefined ? undefined : `The secret passphrase is ${o.plant}.\n`;
    const plantIds = sentence === undefined ? [] : tok.encodeOrdinary(sentence);
    if (o.questionRoom !== undefined && suffix.length > o.questionRoom) {
      return yield* new InputError({
        message:
          `the question takes ${suffix.length} tokens with the template; ${o.questionRoom} are reserved`,
        hint: "ask a shorter question",
      });
    }
    const room = o.context - o.maxNew - prefix.length - (o.questionRoom ?? suffix.length) - plantIds.length;
    if (room < 16) {
      return yield* new InputError({
        message:
          `--context ${o.context} leaves ${room} tokens for the document after the template, question` +
          ` and ${o.maxNew} answer tokens`,
        hint: `raise --context to at least ${o.context - room + 16}`,
      });
    }
    // With --truncate only what is kept is tokenised (plus one piece); without it, counting stops past the
    // model's context, which no --context can exceed.
    const encoded = encodeOrdinaryPrefix(tok, text, o.truncate ? room : Math.max(room, o.maxContext ?? room));
    const doc = encoded.ids;
    const more = encoded.complete ? "" : "more than ";
    let kept = doc;
    if (doc.length > room) {
      if (!o.truncate) {
        const need = doc.length + o.context - room;
        return yield* new InputError({
          message:
            `the document is ${more}${doc.length} tokens; with the template, question and answer it needs ` +
            `${more}${need} > --context ${o.context}`,
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
      docTokensTotalIsLowerBound: !encoded.complete,
      truncated: kept.length < doc.length,
      docTokensKept: kept.length,
      planted,
      question: o.question,
    };
  });
