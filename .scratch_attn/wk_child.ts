import { loadSgemm } from "../runtime/src/model/blas.ts";
const sg = await loadSgemm();
self.onmessage = (e: MessageEvent) => {
  const i32 = new Int32Array(e.data as SharedArrayBuffer);
  const a = new Float32Array(new SharedArrayBuffer(16)); a.set([1, 2, 3, 4]); const c = new Float32Array(new SharedArrayBuffer(16));
  sg.gemm(false, false, 2, 2, 2, 1, a, 2, a, 2, 0, c, 2);
  i32[0] = c[3]; Atomics.notify(i32, 0);
};
