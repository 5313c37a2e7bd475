/**
 * Helpers of the subgroup-matrix flash-attention test and benchmark: build the kernel for a config and run
 * it on a backend (f16 Q/K/V uploaded, f32 O and LSE read back).
 * @module
 */
import { Effect } from "effect";
import type { Backend, DeviceBuffer, Kernel } from "@longctx/graph";
import { kernels as K } from "@longctx/ops";
import {
  FLASH_SGMAT_ROWS,
  type FlashSgmatConfig,
  flashSgmatKey,
  flashSgmatWgsl,
} from "../../ops/dense/flash_sgmat.ts";

/** The kernel of a config. */
export const flashSgmatKernel = (c: FlashSgmatConfig): Kernel => ({
  key: flashSgmatKey(c),
  wgsl: flashSgmatWgsl(c),
  entryPoint: "main",
  bindings: ["read", "read", "read", "read_write", "read_write"],
  enables: c.emulate ? ["f16"] : ["f16", "subgroups", "chromium_experimental_subgroup_matrix"],
});

/** Run once; returns O and LSE. */
export const runFlashSgmat = async (
  b: Backend,
  c: FlashSgmatConfig,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
): Promise<{ o: Float32Array; lse: Float32Array }> => {
  const bufs: DeviceBuffer[] = [];
  const up = async (x: ArrayLike<number>) => {
    const h = K.toHalfArray(x);
    const buf = await Effect.runPromise(b.allocate(h.byteLength));
    bufs.push(buf);
    await Effect.runPromise(b.upload(buf, h));
    return buf;
  };
  try {
    const qb = await up(q);
    const kb = await up(k);
    const vb = await up(v);
    const ob = await Effect.runPromise(b.allocate(c.heads * c.seq * c.headDim * 4));
    bufs.push(ob);
    const lb = await Effect.runPromise(b.allocate(c.heads * c.seq * 4));
    bufs.push(lb);
    await Effect.runPromise(b.dispatch([{
      kernel: flashSgmatKernel(c),
      buffers: [qb, kb, vb, ob, lb],
      workgroups: [Math.ceil(c.seq / FLASH_SGMAT_ROWS), c.heads, 1],
    }]));
    const o = new Float32Array((await Effect.runPromise(b.download(ob))).buffer);
    const lse = new Float32Array((await Effect.runPromise(b.download(lb))).buffer);
    return { o, lse };
  } finally {
    for (const x of bufs) b.release(x);
  }
};
