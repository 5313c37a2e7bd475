/**
 * Tensor types: a dtype plus a shape of *named* dimensions.
 *
 * Layout convention (row-major): Q, K, V are `[heads, seq, headDim]`; GQA query head `h` reads KV head
 * `floor(h / (heads / kvHeads))`. Packed low-bit tensors (`int4`, `int8`) travel with a separate `f32`
 * scales tensor.
 * @module
 */

/** Element types. `int4` is packed eight to a `u32` word; `int8` four to a word. */
export type DType = "f32" | "f16" | "i32" | "u32" | "int8" | "int4";

/** Standard dimension names (any string is allowed; these are the field's usual ones). */
export type StdDim =
  | "batch"
  | "heads"
  | "kvHeads"
  | "seq"
  | "kvSeq"
  | "headDim"
  | "qBlocks"
  | "kBlocks"
  | "nnz"
  | "indptr"
  | "groups"
  | "vocab"
  | "hidden"
  | "rows"
  | "cols";

/** A tensor's static type: dtype and the names of its dimensions, outermost first. */
export interface TensorType<D extends DType = DType, N extends readonly string[] = readonly string[]> {
  /** Element type of every element. */
  readonly dtype: D;
  /** Dimension names, outermost first (`["heads", "seq", "headDim"]`). */
  readonly dims: N;
}

/** A tensor type with concrete sizes: `shape[i]` is the size of `dims[i]` (elements, not bytes). */
export interface TensorDesc<D extends DType = DType, N extends readonly string[] = readonly string[]>
  extends TensorType<D, N> {
  /** Size of each dim of `dims`, in elements (same length as `dims`). */
  readonly shape: readonly number[];
}

/** Host storage for each dtype (`f16` as raw IEEE half bits; packed types as `u32` words). */
export interface HostArray {
  /** 32-bit floats, one per element. */
  f32: Float32Array;
  /** IEEE half-precision bit patterns, one per element (`@longctx/ops` converts: `dense.f32ToHalf`, `dense.halfToF32`). */
  f16: Uint16Array;
  /** Signed 32-bit integers, one per element (BSR `indptr` / `indices`, token ids). */
  i32: Int32Array;
  /** Unsigned 32-bit integers, one per element (bitstreams, lengths). */
  u32: Uint32Array;
  /** Packed signed 8-bit values, four per `u32` word along the last dim. */
  int8: Uint32Array;
  /**
   * Packed signed 4-bit values, eight per `u32` word along the last dim (element `j` in bits `4 (j % 8)`).
   */
  int4: Uint32Array;
}

/** A tensor in host memory. */
export interface HostTensor<D extends DType = DType, N extends readonly string[] = readonly string[]> {
  /** Dtype, dim names and shape. */
  readonly desc: TensorDesc<D, N>;
  /** Row-major elements (packed words for `int4` / `int8`), `HostArray[dtype]`. */
  readonly data: HostArray[D];
}

/** Declare a tensor type, keeping the dimension names as literal types. */
export const tensorType = <D extends DType, const N extends readonly string[]>(
  dtype: D,
  dims: N,
): TensorType<D, N> => ({ dtype, dims });

/** Number of logical elements of a shape. */
export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Bytes of storage for `n` logical elements of `dtype` (packed types rounded up to whole `u32` words). */
export const storageBytes = (dtype: DType, n: number): number => {
  switch (dtype) {
    case "f32":
    case "i32":
    case "u32":
      return 4 * n;
    case "f16":
      return 2 * n;
    case "int8":
      return 4 * Math.ceil(n / 4);
    case "int4":
      return 4 * Math.ceil(n / 8);
  }
};

/** Bytes of a described tensor's storage. */
export const descBytes = (d: TensorDesc): number => storageBytes(d.dtype, numel(d.shape));

/** Allocate zeroed host storage for a description. */
export const allocHost = <D extends DType, N extends readonly string[]>(
  desc: TensorDesc<D, N>,
): HostTensor<D, N> => {
  const n = numel(desc.shape);
  const words = storageBytes(desc.dtype, n) / 4;
  const data = (() => {
    switch (desc.dtype) {
      case "f32":
        return new Float32Array(n);
      case "f16":
        return new Uint16Array(n);
      case "i32":
        return new Int32Array(n);
      default:
        return new Uint32Array(desc.dtype === "u32" ? n : words);
    }
  })();
  return { desc, data: data as HostArray[D] };
};

/** Build a host tensor from data, checking the element count. Throws `RangeError` on a mismatch. */
export const hostTensor = <D extends DType, const N extends readonly string[]>(
  dtype: D,
  dims: N,
  shape: readonly number[],
  data: HostArray[D],
): HostTensor<D, N> => {
  if (shape.length !== dims.length) {
    throw new RangeError(`shape [${shape}] has ${shape.length} dims, type has ${dims.length} (${dims})`);
  }
  const want = storageBytes(dtype, numel(shape));
  if (data.byteLength !== want) {
    throw new RangeError(`data has ${data.byteLength} bytes, ${dtype}[${shape}] needs ${want}`);
  }
  return { desc: { dtype, dims, shape }, data };
};
