/**
 * Dequantisation on hand-built GGML blocks with known values (Q4_0, Q4_1, Q8_0, F16, F32), the typed errors,
 * and (when the model file is present) agreement with llama.cpp's `gguf` Python package on the real tensors.
 */
import { assert, test } from "../harness.ts";
import { Effect } from "effect";
import { InputError } from "@longctx/graph";
import { dequantize, floatToHalf, GgmlType, halfToFloat } from "../../runtime/src/model/dequant.ts";
import { openGguf, tensorF32 } from "../../runtime/src/model/gguf.ts";
import { modelPath } from "../../runtime/src/paths.ts";
import { existsSync, readFileSync } from "node:fs";

const u16 = (bytes: number[], v: number) => bytes.push(v & 0xff, v >> 8);

test("f16 conversion: exact values, subnormals, rounding, specials", () => {
  assert.equal(halfToFloat(0x3c00), 1);
  assert.equal(halfToFloat(0xc000), -2);
  assert.equal(halfToFloat(0x3555), 0.333251953125);
  assert.equal(halfToFloat(0x0001), 2 ** -24);
  assert.equal(halfToFloat(0x7bff), 65504);
  assert.equal(halfToFloat(0x7c00), Infinity);
  assert.ok(Number.isNaN(halfToFloat(0x7e00)));
  for (const x of [0, 1, -2, 0.1, 3.14159, 65504, 1e-5, -7.5e-3, 2 ** -24]) {
    const back = halfToFloat(floatToHalf(x));
    assert.ok(Math.abs(back - x) <= Math.abs(x) * 2 ** -11 + 2 ** -25, `${x} → ${back}`);
  }
  assert.equal(floatToHalf(1 + 2 ** -11), 0x3c00); // tie → even
  assert.equal(floatToHalf(1 + 3 * 2 ** -11), 0x3c02); // tie → even (up)
});

test("Q4_0 block: x = (nibble − 8)·d, low nibbles first then high", () => {
  const d = 0.5;
  const bytes: number[] = [];
  u16(bytes, floatToHalf(d));
  const q = Array.from({ length: 32 }, (_, i) => (i * 7 + 3) % 16);
  for (let j = 0; j < 16; j++) bytes.push(q[j] | (q[j + 16] << 4));
  const out = dequantize(GgmlType.Q4_0, new Uint8Array(bytes), 32);
  for (let i = 0; i < 32; i++) assert.equal(out[i], (q[i] - 8) * d, `value ${i}`);
});

test("Q4_1 block: x = nibble·d + m (two blocks, negative m)", () => {
  const bytes: number[] = [];
  const want: number[] = [];
  for (const [d, m] of [[0.125, -1.5], [0.0625, 0.25]]) {
    u16(bytes, floatToHalf(d));
    u16(bytes, floatToHalf(m));
    const q = Array.from({ length: 32 }, (_, i) => (i * 5 + 1) % 16);
    for (let j = 0; j < 16; j++) bytes.push(q[j] | (q[j + 16] << 4));
    for (let i = 0; i < 32; i++) want.push(q[i] * d + m);
  }
  const out = dequantize(GgmlType.Q4_1, new Uint8Array(bytes), 64);
  for (let i = 0; i < 64; i++) assert.equal(out[i], want[i], `value ${i}`);
});

test("Q8_0 block: x = int8·d (sign handling)", () => {
  const d = halfToFloat(floatToHalf(0.01));
  const bytes: number[] = [];
  u16(bytes, floatToHalf(0.01));
  const q = Array.from({ length: 32 }, (_, i) => (i % 2 ? -1 : 1) * (i * 4 - (i > 16 ? 1 : 0)));
  q[0] = -128;
  q[1] = 127;
  for (const v of q) bytes.push(v & 0xff);
  const out = dequantize(GgmlType.Q8_0, new Uint8Array(bytes), 32);
  for (let i = 0; i < 32; i++) assert.equal(out[i], Math.fround(q[i] * d), `value ${i}`);
});

test("F16 and F32 rows", () => {
  const vals = [1.5, -0.25, 1000, 6.103515625e-5];
  const b16: number[] = [];
  for (const v of vals) u16(b16, floatToHalf(v));
  assert.deepEqual([...dequantize(GgmlType.F16, new Uint8Array(b16), 4)], vals);
  const f32 = new Float32Array([3.25, -1e-20, 7, 0.1]);
  assert.deepEqual([...dequantize(GgmlType.F32, new Uint8Array(f32.buffer), 4)], [...f32]);
});

test("bad input is a typed InputError: unknown type, partial block, short buffer", () => {
  const bad = (f: () => unknown, re: RegExp) => {
    try {
      f();
      assert.fail("no error");
    } catch (e) {
      assert.ok(e instanceof InputError, String(e));
      assert.match((e as InputError).message, re);
      assert.ok((e as InputError).hint.length > 0);
    }
  };
  bad(() => dequantize(14, new Uint8Array(1000), 256), /not supported/);
  bad(() => dequantize(GgmlType.Q4_1, new Uint8Array(100), 40), /whole number/);
  bad(() => dequantize(GgmlType.Q8_0, new Uint8Array(33), 32), /need 34 bytes/);
});

const model = modelPath();
const fixture = new URL("../fixtures/smollm2/fixture.json", import.meta.url);

test("real tensors (Q8_0, Q4_1, F32) match llama.cpp's gguf package exactly", async () => {
  const fx = JSON.parse(readFileSync(fixture, "utf8"));
  const file = await Effect.runPromise(openGguf(model));
  const types = new Set<string>();
  for (const s of fx.dequant as { tensor: string; type: string; index: number[]; value: number[] }[]) {
    const t = await Effect.runPromise(tensorF32(file, s.tensor));
    types.add(s.type);
    s.index.forEach((i, j) => assert.equal(t[i], Math.fround(s.value[j]), `${s.tensor}[${i}]`));
  }
  assert.deepEqual([...types].sort(), ["F32", "Q4_1", "Q8_0"]);
  const missing = await Effect.runPromise(Effect.flip(tensorF32(file, "no.such.tensor")));
  assert.equal(missing._tag, "InputError");
}, { ignore: !existsSync(model) });
