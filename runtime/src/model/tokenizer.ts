/**
 * Byte-level BPE tokenizer built from GGUF metadata (`tokenizer.ggml.*`), run by `@huggingface/tokenizers`
 * (Tokenizers.js) from a `tokenizer.json` document assembled in memory.
 *
 * For `tokenizer.ggml.model = "gpt2"` with pre-tokenizer `smollm` (and the other GPT-2-style ones) the split is
 * llama.cpp's `"\p{N}"` then the GPT-2 regex, i.e. Hugging Face's `Digits(individual_digits)` followed by
 * `ByteLevel(add_prefix_space=false)`; tokens of type CONTROL (3) and USER_DEFINED (4) are added tokens
 * matched before BPE (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`, …).
 * @module
 */
/** @internal Effect's types (`Effect`, `Schema`, …) are documented by the `effect` package. */
import { Effect } from "effect";
import { Tokenizer } from "@huggingface/tokenizers";
import { InputError } from "@longctx/graph";
import { type GgufFile, meta } from "./gguf.ts";

/** A chat message for {@link TextTokenizer.applyChatTemplate}. */
export interface ChatMessage {
  /** Who speaks: `system`, `user`, `assistant` (other roles are passed to the template as they are). */
  readonly role: "system" | "user" | "assistant" | string;
  /** The message text. */
  readonly content: string;
}

/** Encoder/decoder for one model's vocabulary. */
export interface TextTokenizer {
  /** Vocabulary size (tokens). */
  readonly vocabSize: number;
  /** Beginning-of-sequence token id. */
  readonly bosId: number;
  /** End-of-sequence token id (generation stops on it). */
  readonly eosId: number;
  /** Ids of CONTROL tokens (`<|im_end|>` etc.): generation stops on `eosId` and on `<|im_end|>`. */
  readonly controlIds: ReadonlySet<number>;
  /**
   * Text → token ids. Added/control tokens written literally in `text` map to their ids. No BOS is added.
   * Only for text the program itself writes (the chat template); never for a document or a user's question.
   */
  encode(text: string): number[];
  /**
   * Untrusted text → token ids, with every special token of the vocabulary (`<|im_start|>`, `<|im_end|>`,
   * `<|endoftext|>`, …) written literally in `text` encoded as ordinary text, never as its control id (Hugging
   * Face's `encode_special_tokens = True`). Use it for documents and questions. No BOS is added.
   */
  encodeOrdinary(text: string): number[];
  /** Token ids → text (`skipSpecial` drops control tokens; default false; `[]` → ""). */
  decode(ids: readonly number[], skipSpecial?: boolean): string;
  /** One token's vocabulary string (byte-level form, e.g. "Ġthe"), or undefined. */
  idToToken(id: number): string | undefined;
  /**
   * SmolLM2's ChatML template (the GGUF's `tokenizer.chat_template`): a default system turn when the first
   * message is not a system one, `<|im_start|>{role}\n{content}<|im_end|>\n` per message, and
   * `<|im_start|>assistant\n` when `addGenerationPrompt`.
   */
  applyChatTemplate(messages: readonly ChatMessage[], addGenerationPrompt?: boolean): string;
  /**
   * The ids of {@link applyChatTemplate}'s text with the control tokens coming only from the template: each
   * turn is `<|im_start|>` + `encodeOrdinary(role + "\n" + content)` + `<|im_end|>` + `encodeOrdinary("\n")`,
   * which equals `encode(applyChatTemplate(…))` whenever the messages hold no special token (specials split the
   * text into pieces encoded independently), and keeps a `<|im_end|>` written in a message as text otherwise.
   * Fails with `InputError` when the vocabulary has no `<|im_start|>`/`<|im_end|>` (not a ChatML model).
   */
  encodeChat(
    messages: readonly ChatMessage[],
    addGenerationPrompt?: boolean,
  ): Effect.Effect<number[], InputError>;
}

const DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

const GPT2_STYLE = new Set([
  "smollm",
  "gpt2",
  "starcoder",
  "refact",
  "codeshell",
  "default",
  "exaone",
  "minerva",
]);

/**
 * Build the tokenizer from an opened GGUF's metadata.
 * Fails with `InputError` when the model is not a byte-level BPE ("gpt2") tokenizer with a supported
 * pre-tokenizer, or the vocabulary is missing.
 */
export const tokenizerFromGguf = (file: GgufFile): Effect.Effect<TextTokenizer, InputError> =>
  Effect.try({
    try: () => {
      const model = meta<string>(file, "tokenizer.ggml.model");
      const pre = meta<string>(file, "tokenizer.ggml.pre") ?? "default";
      const tokens = meta<string[]>(file, "tokenizer.ggml.tokens");
      const merges = meta<string[]>(file, "tokenizer.ggml.merges");
      const types = meta<number[]>(file, "tokenizer.ggml.token_type") ?? [];
      if (model !== "gpt2" || !GPT2_STYLE.has(pre) || !tokens || !merges) {
        throw new InputError({
          message:
            `tokenizer model=${model} pre=${pre} is not supported (tokens: ${!!tokens}, merges: ${!!merges})`,
          hint: "this loader handles byte-level BPE (gpt2) vocabularies with a GPT-2-style pre-tokenizer",
        });
      }
      const vocab: Record<string, number> = {};
      tokens.forEach((t, i) => (vocab[t] = i));
      const controlIds = new Set<number>();
      const added = [];
      for (let i = 0; i < tokens.length; i++) {
        if (types[i] === 3 || types[i] === 4) {
          if (types[i] === 3) controlIds.add(i);
          added.push({
            id: i,
            content: tokens[i],
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: types[i] === 3,
          });
        }
      }
      const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
      // Hugging Face's `Digits(individual_digits)` isolates every `char::is_numeric()` character (general
      // category N: Nd, Nl, No — "½", "①", "Ⅻ", "３", "٣", "१", …), as llama.cpp's "\p{N}" split does.
      // Tokenizers.js 0.2.0's Digits matches `\d`, which is ASCII-only in a JavaScript "u" regex, so it left
      // "½" or "３００" unsplit and the ids differed from the reference: use a Split on `\p{N}` instead.
      const digits = { type: "Split", pattern: { Regex: "\\p{N}" }, behavior: "Isolated", invert: false };
      const json = {
        added_tokens: added,
        normalizer: null,
        pre_tokenizer: pre === "smollm" || pre === "starcoder" || pre === "refact" || pre === "codeshell" ||
            pre === "exaone" || pre === "minerva"
          ? { type: "Sequence", pretokenizers: [digits, byteLevel] }
          : byteLevel,
        post_processor: null,
        decoder: byteLevel,
        model: {
          type: "BPE",
          dropout: null,
          unk_token: null,
          continuing_subword_prefix: null,
          end_of_word_suffix: null,
          fuse_unk: false,
          byte_fallback: false,
          ignore_merges: false,
          vocab,
          merges,
        },
      };
      const tk = new Tokenizer(json, { clean_up_tokenization_spaces: false });
      // Documents and questions: the same model without added tokens, so no literal "<|im_start|>" in them can
      // become a control token (checked against the reference's `encode_special_tokens = True` ids).
      const plain = new Tokenizer({ ...json, added_tokens: [] }, { clean_up_tokenization_spaces: false });
      const bosId = meta<number>(file, "tokenizer.ggml.bos_token_id") ?? 1;
      const eosId = meta<number>(file, "tokenizer.ggml.eos_token_id") ?? 2;
      const tokenizer: TextTokenizer = {
        vocabSize: tokens.length,
        bosId,
        eosId,
        controlIds,
        encode: (text) => tk.encode(text, { add_special_tokens: false }).ids,
        encodeOrdinary: (text) => plain.encode(text, { add_special_tokens: false }).ids,
        decode: (ids, skipSpecial = false) =>
          ids.length === 0
            ? ""
            : tk.decode([...ids], { skip_special_tokens: skipSpecial, clean_up_tokenization_spaces: false }),
        idToToken: (id) => tokens[id],
        encodeChat: (messages, addGenerationPrompt = false) => {
          const start = vocab["<|im_start|>"], end = vocab["<|im_end|>"];
          if (start === undefined || end === undefined) {
            return Effect.fail(
              new InputError({
                message: "the vocabulary has no <|im_start|>/<|im_end|> tokens: not a ChatML model",
                hint: "encode the prompt with encodeOrdinary and this model's own template",
              }),
            );
          }
          const ord = (t: string) => plain.encode(t, { add_special_tokens: false }).ids;
          const all = messages.length > 0 && messages[0].role !== "system"
            ? [{ role: "system", content: DEFAULT_SYSTEM }, ...messages]
            : messages;
          const ids: number[] = [];
          for (const m of all) ids.push(start, ...ord(`${m.role}\n${m.content}`), end, ...ord("\n"));
          if (addGenerationPrompt) ids.push(start, ...ord("assistant\n"));
          return Effect.succeed(ids);
        },
        applyChatTemplate: (messages, addGenerationPrompt = false) => {
          let s = "";
          if (messages.length > 0 && messages[0].role !== "system") {
            s += `<|im_start|>system\n${DEFAULT_SYSTEM}<|im_end|>\n`;
          }
          for (const m of messages) s += `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`;
          if (addGenerationPrompt) s += "<|im_start|>assistant\n";
          return s;
        },
      };
      return tokenizer;
    },
    catch: (e) =>
      e instanceof InputError ? e : new InputError({
        message: `cannot build the tokenizer: ${(e as Error)?.message ?? String(e)}`,
        hint: "the GGUF's tokenizer metadata is malformed",
      }),
  });
