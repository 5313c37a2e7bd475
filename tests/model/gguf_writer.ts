/**
 * A minimal GGUF v3 writer for tests: metadata of every value type and F32 tensors, so tests can build tiny
 * valid llama files and hostile variants of them (GGUF spec: ggml/docs/gguf.md).
 * @module
 */
import { mulberry32 } from "@longctx/graph";

/** GGUF metadata value types. */
export const T = {
  U8: 0,
  I8: 1,
  U16: 2,
  I16: 3,
  U32: 4,
  I32: 5,
  F32: 6,
  BOOL: 7,
  STR: 8,
  ARR: 9,
  U64: 10,
  I64: 11,
  F64: 12,
} as const;

/** One metadata entry: key, value type, value (arrays: `[elementType, values]`). */
export type Kv = readonly [string, number, unknown];

/** One tensor: F32 values with `shape` in GGUF `ne` order (shape[0] contiguous). */
export interface TensorSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly data: Float32Array;
  /** Override the stored offset (relative to the data section), for hostile files. */
  readonly offset?: bigint;
}

class W {
  parts: Uint8Array[] = [];
  length = 0;
  push(b: Uint8Array) {
    this.parts.push(b);
    this.length += b.byteLength;
  }
  u32(v: number) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    this.push(b);
  }
  u64(v: bigint | number) {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
    this.push(b);
  }
  str(s: string) {
    const e = new TextEncoder().encode(s);
    this.u64(e.byteLength);
    this.push(e);
  }
  value(type: number, v: unknown) {
    const b = new Uint8Array(8);
    const dv = new DataView(b.buffer);
    switch (type) {
      case T.U8:
      case T.I8:
      case T.BOOL:
        this.push(new Uint8Array([Number(v) & 0xff]));
        return;
      case T.U16:
      case T.I16:
        dv.setUint16(0, Number(v) & 0xffff, true);
        return this.push(b.slice(0, 2));
      case T.U32:
        dv.setUint32(0, Number(v) >>> 0, true);
        return this.push(b.slice(0, 4));
      case T.I32:
        dv.setInt32(0, Number(v), true);
        return this.push(b.slice(0, 4));
      case T.F32:
        dv.setFloat32(0, Number(v), true);
        return this.push(b.slice(0, 4));
      case T.U64:
        return this.u64(BigInt(v as number));
      case T.I64:
        dv.setBigInt64(0, BigInt(v as number), true);
        return this.push(b);
      case T.F64:
        dv.setFloat64(0, Number(v), true);
        return this.push(b);
      case T.STR:
        return this.str(String(v));
      case T.ARR: {
        const [et, items] = v as [number, unknown[]];
        this.u32(et);
        this.u64(items.length);
        for (const x of items) this.value(et, x);
        return;
      }
    }
    throw new Error(`type ${type}`);
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.byteLength;
    }
    return out;
  }
}

/** Serialise a GGUF v3 file (alignment 32, F32 tensors). */
export const writeGguf = (kv: readonly Kv[], tensors: readonly TensorSpec[]): Uint8Array => {
  const w = new W();
  w.push(new TextEncoder().encode("GGUF"));
  w.u32(3);
  w.u64(tensors.length);
  w.u64(kv.length);
  for (const [k, t, v] of kv) {
    w.str(k);
    w.u32(t);
    w.value(t, v);
  }
  let off = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    offsets.push(off);
    off += Math.ceil(t.data.byteLength / 32) * 32;
  }
  tensors.forEach((t, i) => {
    w.str(t.name);
    w.u32(t.shape.length);
    for (const d of t.shape) w.u64(d);
    w.u32(0); // F32
    w.u64(t.offset ?? BigInt(offsets[i]));
  });
  const pad = (32 - (w.length % 32)) % 32;
  w.push(new Uint8Array(pad));
  tensors.forEach((t, i) => {
    const start = w.length;
    void start;
    const padded = new Uint8Array(Math.ceil(t.data.byteLength / 32) * 32);
    padded.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    w.push(padded);
    void offsets[i];
  });
  return w.bytes();
};

/** Hyper-parameters of the tiny llama: 1 layer, 8 hidden, 2/1 heads of 4, 16 FFN, 6 tokens. */
export const TINY = { E: 8, H: 2, KH: 1, D: 4, F: 16, V: 6, layers: 1 } as const;

/** The tiny llama's metadata (override or drop entries by key with `kvOverride`). */
export const tinyKv = (over: Record<string, Kv | null> = {}): Kv[] => {
  const { E, H, KH, F, V, layers } = TINY;
  const base: Kv[] = [
    ["general.architecture", T.STR, "llama"],
    ["llama.block_count", T.U32, layers],
    ["llama.context_length", T.U32, 256],
    ["llama.embedding_length", T.U32, E],
    ["llama.feed_forward_length", T.U32, F],
    ["llama.attention.head_count", T.U32, H],
    ["llama.attention.head_count_kv", T.U32, KH],
    ["llama.rope.freq_base", T.F32, 10000],
    ["llama.attention.layer_norm_rms_epsilon", T.F32, 1e-5],
    ["tokenizer.ggml.model", T.STR, "gpt2"],
    ["tokenizer.ggml.pre", T.STR, "smollm"],
    ["tokenizer.ggml.tokens", T.ARR, [T.STR, ["<|endoftext|>", "a", "b", "ab", "Ġ", "Ċ"].slice(0, V)]],
    ["tokenizer.ggml.token_type", T.ARR, [T.I32, [3, 1, 1, 1, 1, 1].slice(0, V)]],
    ["tokenizer.ggml.merges", T.ARR, [T.STR, ["a b"]]],
    ["tokenizer.ggml.bos_token_id", T.U32, 0],
    ["tokenizer.ggml.eos_token_id", T.U32, 0],
  ];
  const out = base.filter(([k]) => over[k] !== null).map((e) => (over[e[0]] as Kv | undefined) ?? e);
  for (const [k, v] of Object.entries(over)) if (v !== null && !base.some(([b]) => b === k)) out.push(v);
  return out;
};

/** The tiny llama's tensors (seeded values), with optional per-name replacement. */
export const tinyTensors = (
  over: Record<string, Partial<TensorSpec>> = {},
  seed = 1,
  layers = 1,
): TensorSpec[] => {
  const { E, H, KH, D, F, V } = TINY;
  const rnd = mulberry32(seed);
  const t = (name: string, shape: number[]): TensorSpec => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = (rnd() - 0.5) * 0.2 + (name.includes("norm") ? 1 : 0);
    return { name, shape, data, ...over[name] };
  };
  const out = [t("token_embd.weight", [E, V]), t("output_norm.weight", [E])];
  for (let l = 0; l < layers; l++) {
    out.push(
      t(`blk.${l}.attn_norm.weight`, [E]),
      t(`blk.${l}.attn_q.weight`, [E, H * D]),
      t(`blk.${l}.attn_k.weight`, [E, KH * D]),
      t(`blk.${l}.attn_v.weight`, [E, KH * D]),
      t(`blk.${l}.attn_output.weight`, [H * D, E]),
      t(`blk.${l}.ffn_norm.weight`, [E]),
      t(`blk.${l}.ffn_gate.weight`, [E, F]),
      t(`blk.${l}.ffn_up.weight`, [E, F]),
      t(`blk.${l}.ffn_down.weight`, [F, E]),
    );
  }
  return out;
};

/** A valid tiny llama GGUF. */
export const tinyGguf = (): Uint8Array => writeGguf(tinyKv(), tinyTensors());
