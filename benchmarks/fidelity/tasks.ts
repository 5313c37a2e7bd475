/**
 * A seeded, deterministic task set in the style of RULER's synthetic tasks (Hsieh et al. 2024, §3), built over
 * the real bundled documents: synthetic facts are planted into a real text (the "haystack") at chosen depths and
 * questions are asked about them; every answer is checked automatically by {@link checkAnswer} (normalised
 * match), never by eye.
 *
 * Task types (one haystack holds the facts of all of them, so every planted fact is also a distractor for the
 * others, as in RULER's multi-key needles):
 * - `single` — one fact, "The special magic number for Lisbon is 4821." (or "The secret code of the Oslo vault
 *   is 5512.", one template per depth), asked at several depths;
 * - `multi` — two of those facts asked at once ("What are … and …?"): both numbers must be given;
 * - `compare` — two facts far apart ("The red box weighs 37 kilograms.", "The blue box weighs 52 …"); the
 *   question asks which box is heavier: the answer must name the heavier colour and not the other;
 * - `aggregate` — one sentence ("A heron crossed the road.") planted 2–5 times across the document; the
 *   question asks how many times: the answer must give that count (digits or a word);
 * - `unanswerable` — a keyed fact for a key that is never planted and does not occur in the document: the
 *   answer must abstain ("unknown", "not mentioned", …) and give no number.
 *
 * {@link planHaystack} is pure (seed, document name and text, context length → facts, depths and questions);
 * {@link buildHaystack} tokenises: the document's tokens from a seeded line start, cut to fit the context,
 * with the fact sentences inserted at line boundaries nearest to their depths.
 * @module
 */
import { Effect } from "effect";
import { InputError, mulberry32 } from "@longctx/graph";
import type { TextTokenizer } from "../../runtime/src/model/tokenizer.ts";
import { encodeOrdinaryPrefix } from "../../runtime/src/cli/run/prompt.ts";

/** The task types, in report order. */
export const TASK_TYPES = ["single", "multi", "compare", "aggregate", "unanswerable"] as const;
/** One task type. */
export type TaskType = typeof TASK_TYPES[number];

/** What a correct answer is. */
export type Expected =
  /** Every value must appear (as a whole word, after normalisation). */
  | { readonly kind: "all"; readonly values: readonly string[] }
  /** `answer` must appear and `other` must not. */
  | { readonly kind: "choice"; readonly answer: string; readonly other: string }
  /** The count `n`, as digits or as an English number word. */
  | { readonly kind: "count"; readonly n: number }
  /** An abstention phrase and no digit. */
  | { readonly kind: "abstain" };

/** A sentence planted into the document. */
export interface Fact {
  /** The sentence, without the trailing newline added when it is planted. */
  readonly sentence: string;
  /** Target relative depth in the document, in [0, 1]. */
  readonly depth: number;
}

/** One question and how its answer is checked. */
export interface Task {
  /** Unique inside its haystack: `<type>-<n>`. */
  readonly id: string;
  readonly type: TaskType;
  /** The question alone (the retrieval query of RAG). */
  readonly question: string;
  readonly expected: Expected;
  /** Indices into the haystack's `facts` this task needs (empty for `unanswerable`). */
  readonly facts: readonly number[];
  /** Mean target depth of those facts (undefined for `unanswerable`). */
  readonly depth?: number;
}

/** The text-level plan of one haystack (no tokens yet). */
export interface HaystackPlan {
  readonly seed: number;
  readonly doc: string;
  /** Context length in tokens the prompt (document + template + question + answer) must fit. */
  readonly context: number;
  /** Index in the document's text of the line where the kept text starts. */
  readonly startChar: number;
  readonly facts: readonly Fact[];
  readonly tasks: readonly Task[];
}

/** Keys of the magic-number facts (city names); a key that occurs in the document is never used. */
const KEYS = [
  "Lisbon",
  "Oslo",
  "Nairobi",
  "Lima",
  "Hanoi",
  "Quito",
  "Tbilisi",
  "Dakar",
  "Helsinki",
  "Bogota",
  "Tallinn",
  "Accra",
  "Manila",
  "Riga",
  "Kigali",
  "Santiago",
  "Ankara",
  "Muscat",
  "Reykjavik",
  "Yerevan",
  "Havana",
  "Caracas",
  "Tunis",
  "Bamako",
  "Minsk",
  "Sofia",
  "Zagreb",
  "Vilnius",
  "Montevideo",
  "Asuncion",
] as const;
const COLOURS = [
  "teal",
  "maroon",
  "indigo",
  "turquoise",
  "magenta",
  "cyan",
  "beige",
  "ochre",
  "lilac",
  "khaki",
  "mauve",
  "coral",
  "amber",
  "navy",
] as const;
const ANIMALS = ["heron", "badger", "weasel", "ferret", "otter", "beaver", "marmot", "lynx"] as const;
/**
 * The noun phrases of the keyed facts: "<phrase> is <number>." is planted and "What is <phrase>?" asked. One
 * template per `single` depth, so that a question matches its fact by more than the key (a 135M model answered
 * every question of one shared template with the same planted number).
 */
const FACT_TEMPLATES: readonly ((key: string) => string)[] = [
  (k) => `the special magic number for ${k}`,
  (k) => `the secret code of the ${k} vault`,
  (k) => `the password for the ${k} gate`,
  (k) => `the ticket number of the ${k} train`,
];
const cap = (s: string) => s[0].toUpperCase() + s.slice(1);
/** Depths of the `single` facts (RULER sweeps depth; these are spread over the document). */
export const SINGLE_DEPTHS = [0.1, 0.35, 0.6, 0.85] as const;
/** Appended to every question (after the document): how to answer, and how to abstain. */
export const ANSWER_INSTRUCTION = 'Answer in a few words. If the document does not say, answer "unknown".';

const NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];
const ABSTAIN = [
  "unknown",
  "not mentioned",
  "not specified",
  "not stated",
  "not given",
  "not provided",
  "no information",
  "does not say",
  "doesn t say",
  "does not mention",
  "not in the document",
  "cannot be determined",
  "can t be determined",
  "not known",
];

/**
 * Lower case, Unicode NFKC, digit groups joined ("4,821" → "4821"), every run of characters other than
 * letters and digits one space, trimmed: the form both sides of a check are compared in.
 */
export const normalise = (s: string): string =>
  s.normalize("NFKC").toLowerCase().replace(/(\d),(?=\d{3}\b)/g, "$1").replace(/[^\p{L}\p{N}]+/gu, " ")
    .trim();

/** Whether normalised `needle` occurs in normalised `hay` as whole words. */
const hasWords = (hay: string, needle: string): boolean => ` ${hay} `.includes(` ${needle} `);

/** The result of checking one answer. */
export interface Check {
  readonly correct: boolean;
  /** Why (what was missing or wrong), for the report. */
  readonly reason: string;
}

/**
 * Check a model's answer against `expected` after {@link normalise}: `all` — every value as a whole word;
 * `choice` — the answer word present, no abstention phrase, and the other word absent or named after it
 * without an "or" between them ("the teal box is heavier than the navy box"; an answer that names the lighter
 * one first, "the navy box is lighter than …", is counted wrong); `count` — the number as digits or a word (also
 * "once"/"twice"/"thrice"), with no other number given; `abstain` — an abstention phrase and no digit.
 */
export const checkAnswer = (expected: Expected, output: string): Check => {
  const out = normalise(output);
  switch (expected.kind) {
    case "all": {
      const missing = expected.values.filter((v) => !hasWords(out, normalise(v)));
      return missing.length === 0
        ? { correct: true, reason: "all values given" }
        : { correct: false, reason: `missing ${missing.join(", ")}` };
    }
    case "choice": {
      if (ABSTAIN.some((p) => hasWords(out, p))) return { correct: false, reason: "abstains" };
      const ia = ` ${out} `.indexOf(` ${normalise(expected.answer)} `);
      const io = ` ${out} `.indexOf(` ${normalise(expected.other)} `);
      if (ia < 0) return { correct: false, reason: `no ${expected.answer}` };
      if (io < 0) return { correct: true, reason: `names ${expected.answer}` };
      // Both named: right only as "the <answer> box is heavier than the <other> box" (answer first, no "or").
      return ia < io && !` ${out} `.slice(ia, io).includes(" or ")
        ? { correct: true, reason: `names ${expected.answer} first` }
        : { correct: false, reason: `names ${expected.other} first or both as alternatives` };
    }
    case "count": {
      const words = out.split(" ");
      const said = new Set<number>();
      for (const w of words) {
        if (/^\d+$/.test(w)) said.add(Number(w));
        const i = NUMBER_WORDS.indexOf(w);
        if (i >= 0) said.add(i);
        if (w === "once") said.add(1);
        if (w === "twice") said.add(2);
        if (w === "thrice") said.add(3);
      }
      if (said.size === 1 && said.has(expected.n)) return { correct: true, reason: `count ${expected.n}` };
      return {
        correct: false,
        reason: said.size === 0 ? "no number" : `said ${[...said].join(", ")}, expected ${expected.n}`,
      };
    }
    case "abstain": {
      const abstains = ABSTAIN.some((p) => hasWords(out, p));
      const digit = /\d/.test(out);
      return abstains && !digit
        ? { correct: true, reason: "abstains" }
        : { correct: false, reason: digit ? "gives a number" : "does not abstain" };
    }
  }
};

/** Seeded helpers over mulberry32. */
const rngOf = (seed: number) => {
  const next = mulberry32(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const shuffle = <T>(xs: readonly T[]): T[] => {
    const a = [...xs];
    for (let i = a.length - 1; i > 0; i--) {
      const j = int(0, i);
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  };
  return { next, int, shuffle };
};

/** A 32-bit hash of a string (FNV-1a), to mix the document name into the seed. */
const hash32 = (s: string): number => {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
};

/**
 * Plan one haystack: which line of `text` the kept text starts at, the facts and their depths, and the
 * questions (4 `single` at {@link SINGLE_DEPTHS}, 2 `multi`, 2 `compare`, 1 `aggregate`, 2 `unanswerable`).
 * Pure and deterministic: the same `(seed, doc, text, context)` gives the same plan in every runtime. Keys,
 * colours and animals that occur in `text` (case-insensitive, as words) are not used, so an `unanswerable`
 * key is absent and every planted fact is the only one of its kind. Fails with `InputError` when the document
 * is shorter than what the context needs (`context` × 5 characters: English prose runs at about 3.8 characters
 * per SmolLM2 token) or when too few unused keys remain.
 */
export const planHaystack = (
  seed: number,
  doc: string,
  text: string,
  context: number,
): Effect.Effect<HaystackPlan, InputError> =>
  Effect.suspend(() => {
    const r = rngOf((seed ^ hash32(doc) ^ Math.imul(context, 0x9e3779b1)) >>> 0);
    const lower = ` ${normalise(text)} `;
    const unused = <T extends string>(xs: readonly T[]) =>
      r.shuffle(xs.filter((x) => !lower.includes(` ${x.toLowerCase()} `)));
    const keys = unused(KEYS), colours = unused(COLOURS), animals = unused(ANIMALS);
    if (keys.length < 6 || colours.length < 4 || animals.length < 1) {
      return Effect.fail(
        new InputError({
          message:
            `document ${doc}: too few planted-fact keys are absent from its text (${keys.length} cities, ` +
            `${colours.length} colours, ${animals.length} animals)`,
          hint: "use another document (docs/DOCUMENTS.md lists the bundled ones)",
        }),
      );
    }
    const need = context * 5;
    if (text.length < need) {
      return Effect.fail(
        new InputError({
          message:
            `document ${doc} has ${text.length} characters; a ${context}-token haystack needs about ${need}`,
          hint: "use a longer document or a shorter context",
        }),
      );
    }
    // A line start in the first part of the text, leaving room for the haystack after it.
    let startChar = r.int(0, Math.max(0, text.length - need));
    const nl = text.indexOf("\n", startChar);
    startChar = nl < 0 || nl + need > text.length ? 0 : nl + 1;

    const facts: Fact[] = [];
    const tasks: Task[] = [];
    const fact = (sentence: string, depth: number) => facts.push({ sentence, depth }) - 1;
    const magic = () => String(r.int(1000, 9999));
    // Each depth gets its own fact template (shuffled per haystack, so template and depth are not confounded).
    const templates = r.shuffle(FACT_TEMPLATES);
    const singles = SINGLE_DEPTHS.map((d, n) => {
      const key = keys.pop()!, value = magic(), t = templates[n % templates.length];
      const depth = Math.min(0.95, Math.max(0.05, d + (r.next() - 0.5) * 0.1));
      return { key, value, t, i: fact(`${cap(t(key))} is ${value}.`, depth) };
    });
    singles.forEach((s, n) =>
      tasks.push({
        id: `single-${n}`,
        type: "single",
        question: `What is ${s.t(s.key)}?`,
        expected: { kind: "all", values: [s.value] },
        facts: [s.i],
        depth: facts[s.i].depth,
      })
    );
    for (const [n, [a, b]] of [[0, 2], [1, 3]].entries()) {
      const x = singles[a], y = singles[b];
      tasks.push({
        id: `multi-${n}`,
        type: "multi",
        question: `What are ${x.t(x.key)} and ${y.t(y.key)}?`,
        expected: { kind: "all", values: [x.value, y.value] },
        facts: [x.i, y.i],
        depth: (facts[x.i].depth + facts[y.i].depth) / 2,
      });
    }
    for (let n = 0; n < 2; n++) {
      const c1 = colours.pop()!, c2 = colours.pop()!;
      const w1 = r.int(10, 99);
      let w2 = r.int(10, 98);
      if (w2 >= w1) w2++;
      const d1 = 0.15 + r.next() * 0.2, d2 = 0.65 + r.next() * 0.2;
      const [f1, f2] = n === 0 ? [d1, d2] : [d2, d1];
      const i1 = fact(`The ${c1} box weighs ${w1} kilograms.`, f1);
      const i2 = fact(`The ${c2} box weighs ${w2} kilograms.`, f2);
      const heavier = w1 > w2 ? c1 : c2, lighter = w1 > w2 ? c2 : c1;
      tasks.push({
        id: `compare-${n}`,
        type: "compare",
        question: `Which box is heavier, the ${c1} box or the ${c2} box?`,
        expected: { kind: "choice", answer: heavier, other: lighter },
        facts: [i1, i2],
        depth: (f1 + f2) / 2,
      });
    }
    const animal = animals.pop()!, count = r.int(2, 5);
    const idx: number[] = [];
    for (let k = 0; k < count; k++) {
      idx.push(fact(`A ${animal} crossed the road.`, (k + 0.2 + r.next() * 0.6) / count));
    }
    tasks.push({
      id: "aggregate-0",
      type: "aggregate",
      question: `How many times did a ${animal} cross the road?`,
      expected: { kind: "count", n: count },
      facts: idx,
      depth: idx.reduce((a, i) => a + facts[i].depth, 0) / count,
    });
    for (let n = 0; n < 2; n++) {
      tasks.push({
        id: `unanswerable-${n}`,
        type: "unanswerable",
        question: `What is ${templates[n % templates.length](keys.pop()!)}?`,
        expected: { kind: "abstain" },
        facts: [],
      });
    }
    return Effect.succeed({ seed, doc, context, startChar, facts, tasks });
  });

/** A planted fact in token space. */
export interface PlacedFact extends Fact {
  /** Index in the haystack's document tokens of its first token, and its token count. */
  readonly at: number;
  readonly tokens: number;
  /** Its actual relative depth, `at / docIds.length`. */
  readonly actualDepth: number;
}

/** A haystack ready to run: the shared prompt prefix (template + document) and each question's suffix. */
export interface Haystack {
  readonly plan: HaystackPlan;
  /** `<doc>@<context>#<seed>`: the group key of its rows. */
  readonly id: string;
  /** Chat-template head (system turn, user header, "Read this document:"), before the document. */
  readonly head: readonly number[];
  /** Document tokens with the facts planted. */
  readonly docIds: readonly number[];
  /** `head` + `docIds`: the prefix every LC question shares. */
  readonly prefix: readonly number[];
  readonly facts: readonly PlacedFact[];
  /** Per task (same order as `plan.tasks`): the suffix after the document (question, instruction, assistant header). */
  readonly suffixes: readonly (readonly number[])[];
  /** Answer tokens reserved. */
  readonly maxNew: number;
}

/** The pieces of the chat template around a document and a question. */
export const templateParts = (
  tok: TextTokenizer,
): { head: number[]; suffix: (question: string) => number[] } => {
  const docMarker = "\u0000DOC\u0000", questionMarker = "\u0000QUESTION\u0000";
  const chat = tok.applyChatTemplate(
    [{ role: "user", content: `Read this document:\n\n${docMarker}\n\nQuestion: ${questionMarker}` }],
    true,
  );
  const [pre, rest] = chat.split(docMarker);
  const [mid, post] = rest.split(questionMarker);
  return {
    head: tok.encode(pre),
    suffix: (
      question,
    ) => [...tok.encodeOrdinary(`${mid}${question} ${ANSWER_INSTRUCTION}`), ...tok.encode(post)],
  };
};

/** Index near `target` in `ids` right after a token ending a line (searched ±256 tokens), else `target`. */
const lineBoundary = (tok: TextTokenizer, ids: readonly number[], target: number): number => {
  for (let r = 0; r < 256; r++) {
    for (const i of [target + r, target - r]) {
      if (i > 0 && i < ids.length && tok.decode([ids[i - 1]]).endsWith("\n")) return i;
    }
  }
  return target;
};

/**
 * Tokenise `plan` over the document `text`: the template head, the document tokens from `plan.startChar`
 * (as ordinary text: no control token can come from the document) cut so that head + document + facts + the
 * longest question suffix + `maxNew` answer tokens fit `plan.context`, the facts inserted (each followed by a
 * newline) at the line boundary nearest to their depth. Fails with `InputError` when the context leaves fewer
 * than 256 document tokens.
 */
export const buildHaystack = (
  tok: TextTokenizer,
  text: string,
  plan: HaystackPlan,
  maxNew: number,
): Effect.Effect<Haystack, InputError> =>
  Effect.gen(function* () {
    const { head, suffix } = templateParts(tok);
    const suffixes = plan.tasks.map((t) => suffix(t.question));
    const factIds = plan.facts.map((f) => tok.encodeOrdinary(`${f.sentence}\n`));
    const longest = Math.max(...suffixes.map((s) => s.length));
    const room = plan.context - head.length - longest - maxNew - factIds.reduce((a, f) => a + f.length, 0);
    if (room < 256) {
      return yield* new InputError({
        message:
          `context ${plan.context} leaves ${room} document tokens after the template, facts, question ` +
          `and ${maxNew} answer tokens`,
        hint: "use a context of at least 1024 tokens",
      });
    }
    const base = encodeOrdinaryPrefix(tok, text.slice(plan.startChar), room).ids.slice(0, room);
    // Insert from the deepest fact up, so earlier positions stay valid; record positions afterwards.
    const order = plan.facts.map((f, i) => ({
      i,
      at: lineBoundary(tok, base, Math.round(f.depth * base.length)),
    }))
      .sort((a, b) => a.at - b.at || a.i - b.i);
    const docIds: number[] = [];
    const placed: PlacedFact[] = new Array(plan.facts.length);
    let from = 0;
    for (const { i, at } of order) {
      docIds.push(...base.slice(from, at));
      placed[i] = { ...plan.facts[i], at: docIds.length, tokens: factIds[i].length, actualDepth: 0 };
      docIds.push(...factIds[i]);
      from = at;
    }
    docIds.push(...base.slice(from));
    const facts = placed.map((f) => ({ ...f, actualDepth: f.at / docIds.length }));
    return {
      plan,
      id: `${plan.doc}@${plan.context}#${plan.seed}`,
      head,
      docIds,
      prefix: [...head, ...docIds],
      facts,
      suffixes,
      maxNew,
    };
  });
