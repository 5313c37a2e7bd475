/**
 * GGUF model files: metadata and tensor directory parsed by `@huggingface/gguf` (local-file mode), tensor bytes
 * read here and dequantised to f32 by {@link dequantize}.
 *
 * GGUF spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (a 2-D tensor with `ne = [ne0, ne1]`
 * is stored row-major as `[ne1, ne0]`: `ne0` is the contiguous dimension).
 * @module
 */
import { Effect } from "effect";
import { gguf } from "@huggingface/gguf";
import { readFileSync } from "node:fs";
import { InputError } from "@longctx/graph";
import { dequantize, ggmlTypeInfo } from "./dequant.ts";

/** One tensor's directory entry. */
export interface GgufTensorInfo {
  readonly name: string;
  /** GGML type id (see `GgmlType`). */
  readonly type: number;
  /** GGML type name ("Q4_1", "F32", …) or `type<N>` when unknown to this reader. */
  readonly typeName: string;
  /** `ne` order: `shape[0]` is the contiguous dimension (elements). */
  readonly shape: readonly number[];
  /** Absolute byte offset of the tensor's data in the file. */
  readonly offset: number;
  /** Bytes of the tensor's data (0 when the type is unsupported). */
  readonly byteLength: number;
}

/** An opened GGUF file: metadata, tensor directory and the file's bytes. */
export interface GgufFile {
  readonly path: string;
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly tensors: ReadonlyMap<string, GgufTensorInfo>;
  /** The whole file (tensors are views into it). */
  readonly bytes: Uint8Array;
}

/**
 * Open a GGUF file (reads it whole into memory: ~98 MB for SmolLM2-135M Q4_1).
 * @param path local file path
 * @returns the parsed {@link GgufFile}
 * Fails with `InputError` when the file is missing, unreadable or not GGUF.
 */
export const openGguf = (path: string): Effect.Effect<GgufFile, InputError> =>
  Effect.tryPromise({
    try: async () => {
      const parsed = await gguf(path, { allowLocalFile: true });
      const bytes = new Uint8Array(readFileSync(path));
      const base = Number(parsed.tensorDataOffset);
      const tensors = new Map<string, GgufTensorInfo>();
      for (const t of parsed.tensorInfos) {
        const shape = t.shape.map(Number);
        const n = shape.reduce((a, b) => a * b, 1);
        const info = ggmlTypeInfo[t.dtype];
        tensors.set(t.name, {
          name: t.name,
          type: t.dtype,
          typeName: info?.name ?? `type${t.dtype}`,
          shape,
          offset: base + Number(t.offset),
          byteLength: info ? (n / info.blockValues) * info.blockBytes : 0,
        });
      }
      return { path, metadata: parsed.metadata as Record<string, unknown>, tensors, bytes };
    },
    catch: (cause) =>
      new InputError({
        message: `cannot read GGUF file ${path}: ${(cause as Error)?.message ?? String(cause)}`,
        hint: "check the path (LONGCTX_MODEL) and that the file is a complete GGUF v2/v3 model; " +
          "`deno task setup` fetches SmolLM2-135M-Instruct",
      }),
  });

/**
 * Dequantise one tensor to f32.
 * @returns `Float32Array` of `prod(shape)` values, row-major `[shape[n-1], …, shape[0]]`
 * Fails with `InputError` when the tensor is absent, its type unsupported, or its bytes run past the file end.
 */
export const tensorF32 = (file: GgufFile, name: string): Effect.Effect<Float32Array, InputError> =>
  Effect.try({
    try: () => {
      const t = file.tensors.get(name);
      if (!t) {
        throw new InputError({
          message: `tensor ${name} not in ${file.path}`,
          hint: "the file is not a llama-architecture GGUF this loader knows",
        });
      }
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (t.byteLength > 0 && t.offset + t.byteLength > file.bytes.byteLength) {
        throw new InputError({
          message: `tensor ${name} runs past the end of ${file.path}`,
          hint: "the file is truncated; fetch it again",
        });
      }
      return dequantize(t.type, file.bytes.subarray(t.offset, t.offset + t.byteLength), n);
    },
    catch: (e) =>
      e instanceof InputError ? e : new InputError({
        message: `tensor ${name}: ${(e as Error)?.message ?? String(e)}`,
        hint: "the file may be corrupt",
      }),
  });

/** A metadata value (undefined when absent). */
export const meta = <T>(file: GgufFile, key: string): T | undefined => file.metadata[key] as T | undefined;
