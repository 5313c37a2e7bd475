#!/usr/bin/env python3
"""Make the SmolLM2-135M-Instruct reference fixture in tests/fixtures/smollm2/.

An INDEPENDENT implementation of the model, written here in NumPy (float64), so the TypeScript forward
(runtime/src/model/llama.ts) can be checked against it:

  * weights: read and dequantised by llama.cpp's own Python package `gguf` (PyPI, gguf==0.19.0,
    `gguf.GGUFReader` + `gguf.quants.dequantize`), not by our TypeScript reader;
  * Q/K weights: llama.cpp's converter permutes them for its "normal" (adjacent-pair) RoPE; here we undo that
    permutation and apply Hugging Face's rotate-half RoPE (transformers' `LlamaRotaryEmbedding`
    convention), so the two RoPE layouts are checked against each other;
  * tokenizer: Hugging Face `tokenizers` (PyPI, Rust) built from the GGUF vocabulary and merges with
    SmolLM2's pre-tokenizer (Digits(individual) + ByteLevel(add_prefix_space=False)), decoder ByteLevel;
  * chat template: rendered by `jinja2` from the GGUF's own `tokenizer.chat_template` string.

Why not transformers/torch: PyPI's torch wheel pulls several GB of CUDA libraries; the CPU-only index is
not reachable here. The NumPy forward is ~60 lines, in float64, and is the reference.

How to run (about a minute on 2 idle cores; numpy's own BLAS does the matmuls):

    python3 -m venv /tmp/fixture-venv
    /tmp/fixture-venv/bin/pip install gguf==0.19.0 numpy==2.4.6 tokenizers==0.23.3 jinja2==3.1.6
    /tmp/fixture-venv/bin/python scripts/make-fixture.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

(model path: argument, else $LONGCTX_MODEL, else .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf).

Writes tests/fixtures/smollm2/fixture.json (prompts, ids, 32-token greedy continuations with the top-1/top-2
logit gap of each step, top-50 logits of every position, tokenizer known ids, chat-template renderings,
dequantised sample values of Q8_0/Q4_1/F32 tensors, the model's sha256) and logits.f32 (full logits of a few positions,
little-endian float32, rows listed in fixture.json "fullLogits").
"""

import hashlib
import json
import os
import sys

import gguf
import jinja2
import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "smollm2")


def model_path():
    if len(sys.argv) > 1:
        return sys.argv[1]
    if os.environ.get("LONGCTX_MODEL"):
        return os.environ["LONGCTX_MODEL"]
    cache = os.environ.get("LONGCTX_CACHE", os.path.join(REPO, ".cache"))
    return os.path.join(cache, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def field(reader, key):
    return reader.fields[key].contents()


def load(path):
    r = gguf.GGUFReader(path)
    w = {}
    for t in r.tensors:
        # dequantize returns the row-major numpy array; for a 2-D GGUF tensor ne=[in, out] that is [out, in].
        w[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
    cfg = dict(
        n_layer=int(field(r, "llama.block_count")),
        n_embd=int(field(r, "llama.embedding_length")),
        n_head=int(field(r, "llama.attention.head_count")),
        n_kv=int(field(r, "llama.attention.head_count_kv")),
        theta=float(field(r, "llama.rope.freq_base")),
        eps=float(field(r, "llama.attention.layer_norm_rms_epsilon")),
    )
    return r, w, cfg


def unpermute(wt, n_head):
    """Inverse of llama.cpp convert_hf_to_gguf.py `permute` for Q/K: [out, in] back to HF row order."""
    out, inp = wt.shape
    return wt.reshape(n_head, out // n_head // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def rms(x, wt, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * wt


def rope_hf(x, pos, theta):
    """x [heads, seq, d]; HF rotate-half convention."""
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.outer(pos, inv)  # [seq, d/2]
    cos = np.concatenate([np.cos(ang)] * 2, -1)
    sin = np.concatenate([np.sin(ang)] * 2, -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + np.concatenate([-x2, x1], -1) * sin


class Model:
    def __init__(self, w, cfg):
        self.w, self.c = w, cfg
        self.hd = cfg["n_embd"] // cfg["n_head"]
        for i in range(cfg["n_layer"]):
            w[f"blk.{i}.attn_q.weight"] = unpermute(w[f"blk.{i}.attn_q.weight"], cfg["n_head"])
            w[f"blk.{i}.attn_k.weight"] = unpermute(w[f"blk.{i}.attn_k.weight"], cfg["n_kv"])

    def forward(self, ids):
        """Full (no cache) causal forward in float64; returns logits [seq, vocab]."""
        w, c, hd = self.w, self.c, self.hd
        n = len(ids)
        pos = np.arange(n, dtype=np.float64)
        x = w["token_embd.weight"][ids]
        mask = np.triu(np.full((n, n), -np.inf), 1)
        grp = c["n_head"] // c["n_kv"]
        for i in range(c["n_layer"]):
            p = f"blk.{i}."
            h = rms(x, w[p + "attn_norm.weight"], c["eps"])
            q = (h @ w[p + "attn_q.weight"].T).reshape(n, c["n_head"], hd).transpose(1, 0, 2)
            k = (h @ w[p + "attn_k.weight"].T).reshape(n, c["n_kv"], hd).transpose(1, 0, 2)
            v = (h @ w[p + "attn_v.weight"].T).reshape(n, c["n_kv"], hd).transpose(1, 0, 2)
            q, k = rope_hf(q, pos, c["theta"]), rope_hf(k, pos, c["theta"])
            k, v = np.repeat(k, grp, 0), np.repeat(v, grp, 0)
            s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = (s @ v).transpose(1, 0, 2).reshape(n, c["n_embd"])
            x = x + o @ w[p + "attn_output.weight"].T
            h = rms(x, w[p + "ffn_norm.weight"], c["eps"])
            g = h @ w[p + "ffn_gate.weight"].T
            u = h @ w[p + "ffn_up.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * u) @ w[p + "ffn_down.weight"].T
        x = rms(x, w["output_norm.weight"], c["eps"])
        out = w.get("output.weight", w["token_embd.weight"])  # tied head
        return x @ out.T


def dequant_samples(r):
    """Dequantised values (gguf package) of a few tensors of each type present, at fixed flat indices."""
    out = []
    rng = np.random.default_rng(0)
    by_type = {}
    for t in r.tensors:
        by_type.setdefault(t.tensor_type.name, []).append(t)
    for name, ts in sorted(by_type.items()):
        for t in ts[:2]:
            flat = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1)
            idx = sorted(set(range(min(64, flat.size))) | set(int(i) for i in rng.integers(0, flat.size, 64)))
            out.append({"tensor": t.name, "type": name, "index": idx, "value": [float(flat[i]) for i in idx]})
    return out


def make_tokenizer(r):
    toks = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(r, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(toks)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([toks[i] for i in range(len(toks)) if types[i] == 3])
    return tk


PROMPTS = {
    "chat": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    "text": (
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife. However little known the feelings or views of such a man may be on his first entering "
        "a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
        "considered the rightful property of some one or other of their daughters."
    ),
}

TOKENIZER_CASES = [
    "Hello world",
    "Hello, World! How are you doing today?",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\n\n\nmultiple",
    "numbers 1234567 and 3.14159, 2026-11-30",
    "unicode: café naïve façade — “quotes” ‘single’ … 日本語のテキスト 中文 한국어 😀🚀 👩‍💻",
    "code: def f(x):\n    return x**2  # square\n",
    "Wherefore art thou? 'Tis nobler in the mind to suffer the slings and arrows of outrageous fortune...",
    "I'm sure they'll say we've done it, isn't it? You'd think so.",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "MixedCASE words, ALLCAPS, snake_case_name, camelCaseName, e-mail@example.com",
]


def greedy(model, ids, n):
    ids = list(ids)
    out, gaps = [], []
    for _ in range(n):
        logits = model.forward(ids)[-1]
        order = np.argsort(-logits)
        out.append(int(order[0]))
        gaps.append(float(logits[order[0]] - logits[order[1]]))
        ids.append(int(order[0]))
    return out, gaps


def main():
    path = model_path()
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    r, w, cfg = load(path)
    tk = make_tokenizer(r)
    model = Model(w, cfg)
    tmpl = jinja2.Environment().from_string(field(r, "tokenizer.chat_template"))

    chat_text = tmpl.render(messages=PROMPTS["chat"], add_generation_prompt=True)
    prompts = [
        {"name": "chat", "messages": PROMPTS["chat"], "text": chat_text},
        {"name": "text", "text": PROMPTS["text"]},
    ]
    full_rows, blob = [], []
    for p in prompts:
        ids = tk.encode(p["text"]).ids
        p["ids"] = ids
        logits = model.forward(ids)
        top = []
        for row in logits:
            o = np.argsort(-row)[:50]
            top.append({"ids": [int(i) for i in o], "logits": [float(row[i]) for i in o]})
        p["top50"] = top
        for pos in sorted({0, len(ids) // 2, len(ids) - 1}):
            full_rows.append({"prompt": p["name"], "position": pos, "row": len(full_rows)})
            blob.append(logits[pos].astype("<f4"))
        p["greedy"], p["greedyGaps"] = greedy(model, ids, 32)
        p["greedyText"] = tk.decode(p["greedy"])
        print(p["name"], len(ids), "tokens ->", repr(p["greedyText"]), "min gap", min(p["greedyGaps"]))
    cases = []
    for s in TOKENIZER_CASES:
        ids = tk.encode(s).ids
        cases.append({"text": s, "ids": ids, "decoded": tk.decode(ids, skip_special_tokens=False)})
    fixture = {
        "made_by": "scripts/make-fixture.py (NumPy float64 forward; gguf 0.19.0 dequantisation; HF tokenizers)",
        "model_sha256": sha,
        "vocab": int(w["token_embd.weight"].shape[0]),
        "config": cfg,
        "prompts": prompts,
        "fullLogits": full_rows,
        "tokenizer": cases,
        "dequant": dequant_samples(r),
        "chatTemplate": [
            {
                "messages": PROMPTS["chat"],
                "addGenerationPrompt": True,
                "text": chat_text,
            },
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi!"},
                    {"role": "assistant", "content": "Hello."},
                ],
                "addGenerationPrompt": False,
                "text": tmpl.render(
                    messages=[
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Hi!"},
                        {"role": "assistant", "content": "Hello."},
                    ],
                    add_generation_prompt=False,
                ),
            },
        ],
    }
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "fixture.json"), "w") as f:
        json.dump(fixture, f)
    np.concatenate(blob).tofile(os.path.join(OUT, "logits.f32"))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
