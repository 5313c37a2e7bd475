#!/usr/bin/env python3
"""Make tests/fixtures/smollm2/tokenizer-parity.json: reference token ids of SmolLM2-135M-Instruct's tokenizer
over a broad Unicode sample, from Hugging Face's Rust `tokenizers` (which llama.cpp matches), built from the
GGUF's own vocabulary and merges by `make_tokenizer` of scripts/make-fixture.py (the same reference as the
model fixture).

Two encodings per text:
  * "ids": specials matched (CONTROL tokens written literally in the text become their ids), as
    TextTokenizer.encode does;
  * "ordinary": `encode_special_tokens = True`, so `<|im_start|>` etc. in the text are split as ordinary text,
    as TextTokenizer.encodeOrdinary must do for documents and questions. Stored only when it differs.

The sample (seeded, deterministic) uses only characters assigned in Unicode 3.2 (`unicodedata.ucd_3_2_0`),
whose general categories every current engine (Rust's tables, V8's and JavaScriptCore's ICU) agrees on:
  * every number character (general category N*: Nd, Nl, No — fractions, circled, Roman, full-width, Indic
    and other digits, superscripts), in runs and in context;
  * every whitespace and control character, in context;
  * random strings over all assigned non-surrogate code points (BMP and astral), mixed with ASCII words,
    digits and punctuation;
  * literal special tokens of the vocabulary, alone, glued to text and broken;
  * paragraphs of the three bundled documents (public domain) when they are installed.

How to run (a few seconds):

    python3 -m venv /tmp/tokvenv
    /tmp/tokvenv/bin/pip install gguf==0.19.0 numpy==2.4.6 tokenizers==0.23.3 jinja2==3.1.6
    /tmp/tokvenv/bin/python scripts/make-tokenizer-parity.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

The test (tests/model/tokenizer_parity_test.ts) reads only the JSON: CI needs no Python.
"""

import hashlib
import importlib.util
import json
import os
import random
import sys
import unicodedata

import gguf
import tokenizers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "smollm2", "tokenizer-parity.json")

spec = importlib.util.spec_from_file_location("make_fixture", os.path.join(REPO, "scripts", "make-fixture.py"))
mf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mf)

U32 = unicodedata.ucd_3_2_0


def assigned(cp):
    c = chr(cp)
    cat = U32.category(c)
    return cat not in ("Cn", "Cs")


def sample_texts(rng):
    texts = []
    all_cps = [cp for cp in range(0x110000) if assigned(cp)]
    numbers = [cp for cp in all_cps if U32.category(chr(cp))[0] == "N"]
    # 1. Every number character: runs of 24, then each one in context (glued to a letter, an ASCII digit, spaces).
    for i in range(0, len(numbers), 24):
        texts.append("".join(chr(c) for c in numbers[i : i + 24]))
    for cp in numbers:
        c = chr(cp)
        texts.append(f"x{c}{c}7 {c}.")
    named = "½ ¼ ¾ ⅓ ⅞ ① ⑳ ㉑ Ⅰ Ⅻ ⅰ ⅿ ² ³ ¹ ⁴ ₂ ０１２３ ٠١٢٣ ۴۵ ०१२३ ১২৩ ๑๒๓ 〇〡 𝟘𝟙𝟚 ↂ"
    texts += [named, "Price: ３００円 (½ off), chapter Ⅻ, item ⑤, ٣ apples, १० rupees", "2½ cups, 10¾ inches"]
    # 2. Whitespace and controls (Cc, Zs, Zl, Zp, Cf) in context.
    spaces = [cp for cp in all_cps if U32.category(chr(cp)) in ("Cc", "Zs", "Zl", "Zp", "Cf") and cp < 0x10000]
    for cp in spaces:
        c = chr(cp)
        texts.append(f"a{c}b {c}{c}c\n{c}")
    # 3. Random strings.
    bmp = [cp for cp in all_cps if cp < 0x10000]
    astral = [cp for cp in all_cps if cp >= 0x10000]
    words = ["the", " The", "don't", "I'm", "we'll", "x=1;", "  ", "\n", "\t", "2026", "3.14", "«»", "—", "...", "😀"]
    for _ in range(600):
        parts = []
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.35:
                parts.append(rng.choice(words))
            elif r < 0.85:
                parts.append("".join(chr(rng.choice(bmp)) for _ in range(rng.randint(1, 6))))
            elif r < 0.95:
                parts.append("".join(chr(rng.choice(astral)) for _ in range(rng.randint(1, 3))))
            else:
                parts.append(" " * rng.randint(1, 4))
        texts.append("".join(parts))
    return texts


def special_texts(specials):
    out = []
    for s in specials:
        out += [s, f"a{s}b", f" {s} ", f"{s}{s}", s[:-1], s[1:], f"Question: ignore this {s}assistant\nok"]
    out.append("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    return out


def doc_texts():
    docs = os.environ.get("LONGCTX_DOCS", os.path.join(REPO, ".cache", "docs"))
    out = []
    try:
        manifest = json.load(open(os.path.join(docs, "manifest.json")))
    except OSError:
        return out
    for d in manifest.get("documents", []):
        try:
            text = open(os.path.join(docs, d["file"]), encoding="utf-8").read()
        except (OSError, KeyError):
            continue
        paras = [p for p in text.split("\n\n") if p.strip()]
        out += paras[100:110]
    return out


def main():
    path = mf.model_path()
    r = gguf.GGUFReader(path)
    tk = mf.make_tokenizer(r)
    toks = mf.field(r, "tokenizer.ggml.tokens")
    types = mf.field(r, "tokenizer.ggml.token_type")
    specials = [toks[i] for i in range(len(toks)) if types[i] == 3]
    rng = random.Random(24)
    texts = sample_texts(rng) + special_texts(specials) + doc_texts()
    cases = []
    for t in texts:
        tk.encode_special_tokens = False
        ids = tk.encode(t, add_special_tokens=False).ids
        tk.encode_special_tokens = True
        ordinary = tk.encode(t, add_special_tokens=False).ids
        c = {"text": t, "ids": ids}
        if ordinary != ids:
            c["ordinary"] = ordinary
        cases.append(c)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    doc = {
        "reference": f"Hugging Face tokenizers {tokenizers.__version__} (Rust), scripts/make-tokenizer-parity.py",
        "model_sha256": sha,
        "unicode": "characters assigned in Unicode 3.2",
        "cases": cases,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} cases, {sum(len(c['ids']) for c in cases)} ids, "
          f"{sum('ordinary' in c for c in cases)} with specials")


if __name__ == "__main__":
    main()
