/**
 * Hostile model files: every GGUF field that sizes an allocation is bounded and checked against the tensors
 * before anything is allocated; zero or inconsistent dimensions, misaligned offsets, non-finite weights and
 * hyper-parameters, and truncation are `InputError`s naming the field or tensor. Built with the tiny GGUF
 * writer (tests/model/gguf_writer.ts), so no model download is needed.
 * @module
 */
import { Effect } from "effect";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { assert, test } from "../harness.ts";
import { InputError } from "@longctx/graph";
import { openGguf, parseGguf, tensorF32 } from "../../runtime/src/model/gguf.ts";
import { loadLlama } from "../../runtime/src/model/llama.ts";
import { type Kv, T, TINY, tinyGguf, tinyKv, tinyTensors, writeGguf } from "./gguf_writer.ts";
import { loadSgemm } from "../../runtime/src/model/blas.ts";
// OpenBLAS is loaded once per process and kept (runtime/src/model/blas.ts): load it before any test, so the
// resource sanitizer sees a library held for the process, not one a test forgot to close.
await loadSgemm();

const refused = async (bytes: Uint8Array, pattern: RegExp) => {
  const r = await Effect.runPromise(Effect.result(parseGguf(bytes, "hostile.gguf")));
  assert.equal(r._tag, "Failure", `accepted; expected ${pattern}`);
  const e = (r as { failure: unknown }).failure as InputError;
  assert.ok(e instanceof InputError, String(e));
  assert.match(e.message, pattern);
  assert.ok(e.hint.length > 0);
  return e;
};
const withKv = (over: Record<string, Kv | null>) => writeGguf(tinyKv(over), tinyTensors());

test("gguf: the tiny llama parses, every tensor dequantises, and loadLlama loads it from a file", async () => {
  const f = await Effect.runPromise(parseGguf(tinyGguf()));
  assert.equal(f.tensors.size, 11);
  for (const name of f.tensors.keys()) await Effect.runPromise(tensorF32(f, name));
  const dir = mkdtempSync(join(tmpdir(), "longctx-gguf-"));
  const path = join(dir, "tiny.gguf");
  writeFileSync(path, tinyGguf());
  const m = await Effect.runPromise(loadLlama(path));
  assert.equal(m.config.vocab, TINY.V);
  assert.equal(m.config.nEmbd, TINY.E);
  assert.equal((await Effect.runPromise(openGguf(path))).tensors.size, 11);
});

test("gguf: a truncated file says it is truncated, wherever it is cut", async () => {
  const full = tinyGguf();
  const f = await Effect.runPromise(parseGguf(full));
  const dataStart = Math.min(...[...f.tensors.values()].map((t) => t.offset));
  for (const cut of [5, 23, 40, 200, dataStart - 8, dataStart + 10, full.byteLength - 1]) {
    await refused(full.subarray(0, cut), /truncated/);
  }
  await refused(new Uint8Array(0), /not a GGUF file/);
  await refused(new TextEncoder().encode("PK\u0003\u0004 not gguf at all"), /not a GGUF file/);
});

test("gguf: allocation-sizing hyper-parameters are bounded (context, counts, dims) with the field's name", async () => {
  await refused(
    withKv({ "llama.context_length": ["llama.context_length", T.U64, 2 ** 40] }),
    /llama\.context_length = 1099511627776/,
  );
  await refused(
    withKv({ "llama.context_length": ["llama.context_length", T.U32, 0] }),
    /llama\.context_length = 0/,
  );
  await refused(
    withKv({ "llama.block_count": ["llama.block_count", T.U32, 4_000_000_000] }),
    /llama\.block_count/,
  );
  await refused(withKv({ "llama.block_count": null }), /llama\.block_count is missing/);
  await refused(
    withKv({ "llama.embedding_length": ["llama.embedding_length", T.F32, 8.5] }),
    /llama\.embedding_length = 8\.5/,
  );
  await refused(
    withKv({ "llama.attention.head_count_kv": ["llama.attention.head_count_kv", T.U32, 3] }),
    /inconsistent heads/,
  );
  await refused(
    withKv({ "llama.block_count": ["llama.block_count", T.U32, 2] }),
    /tensor blk\.1\.attn_norm\.weight is missing/,
  );
  await refused(
    withKv({ "llama.feed_forward_length": ["llama.feed_forward_length", T.U32, 17] }),
    /ffn_gate\.weight has shape \[8,16\], the hyper-parameters imply \[8,17\]/,
  );
});

test("gguf: non-finite hyper-parameters and weights are load errors naming the field or tensor", async () => {
  await refused(
    withKv({
      "llama.attention.layer_norm_rms_epsilon": ["llama.attention.layer_norm_rms_epsilon", T.F32, NaN],
    }),
    /layer_norm_rms_epsilon = NaN/,
  );
  await refused(
    withKv({ "llama.rope.freq_base": ["llama.rope.freq_base", T.F32, Infinity] }),
    /rope\.freq_base = Infinity/,
  );
  await refused(
    withKv({ "llama.rope.freq_base": ["llama.rope.freq_base", T.F32, -1] }),
    /rope\.freq_base = -1/,
  );
  const w = tinyTensors();
  const q = w.find((t) => t.name === "blk.0.attn_q.weight")!;
  q.data[5] = NaN;
  const f = await Effect.runPromise(parseGguf(writeGguf(tinyKv(), w)));
  const e = await Effect.runPromise(Effect.flip(tensorF32(f, "blk.0.attn_q.weight")));
  assert.match(e.message, /blk\.0\.attn_q\.weight .*non-finite weight \(NaN\) at element 5/);
});

test("gguf: vocabulary arrays and token ids are checked against token_embd.weight", async () => {
  await refused(
    withKv({ "tokenizer.ggml.tokens": ["tokenizer.ggml.tokens", T.ARR, [T.STR, ["a", "b"]]] }),
    /tokenizer\.ggml\.tokens has 2 entries, token_embd\.weight has 6 rows/,
  );
  await refused(
    withKv({ "tokenizer.ggml.token_type": ["tokenizer.ggml.token_type", T.ARR, [T.I32, [1]]] }),
    /token_type has 1 entries/,
  );
  await refused(
    withKv({ "tokenizer.ggml.eos_token_id": ["tokenizer.ggml.eos_token_id", T.U32, 99] }),
    /eos_token_id = 99/,
  );
});

test("gguf: zero dimensions, misaligned offsets, duplicate names, data past the end", async () => {
  const zero = tinyTensors({ "output_norm.weight": { shape: [0], data: new Float32Array(0) } });
  await refused(writeGguf(tinyKv(), zero), /output_norm\.weight has a zero or invalid dimension/);
  const mis = tinyTensors({ "output_norm.weight": { offset: 36n } });
  await refused(
    writeGguf(tinyKv(), mis),
    /output_norm\.weight offset 36 is not a multiple of general\.alignment 32/,
  );
  const far = tinyTensors({ "output_norm.weight": { offset: 2n ** 40n } });
  await refused(writeGguf(tinyKv(), far), /truncated: tensor output_norm\.weight data/);
  const dup = tinyTensors();
  dup[2] = { ...dup[2], name: dup[1].name };
  await refused(writeGguf(tinyKv(), dup), /duplicated/);
});

test("gguf: hostile counts and string lengths in the header are refused without allocating them", async () => {
  const good = tinyGguf();
  const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
  // tensor_count (bytes 8..16) and kv_count (16..24) set to 2^62.
  for (const at of [8, 16]) {
    const b = good.slice();
    dv(b).setBigUint64(at, 2n ** 62n, true);
    const r = await Effect.runPromise(Effect.result(parseGguf(b)));
    assert.ok(r._tag === "Failure" && r.failure instanceof InputError);
  }
  // The first key's length (bytes 24..32) set to 2^50.
  const b = good.slice();
  dv(b).setBigUint64(24, 2n ** 50n, true);
  const r = await Effect.runPromise(Effect.result(parseGguf(b)));
  assert.ok(r._tag === "Failure" && r.failure instanceof InputError);
});
