import { loadSgemm } from "../../runtime/src/model/blas.ts";
import { saleParams, syntheticCpu } from "../../ops/sale/mod.ts";
import { saleAttentionBlas } from "./sale_blas.ts";
const sg = await loadSgemm();
for (const S of [4096]) {
  const [H, Hk, D] = [4, 1, 128];
  const q = syntheticCpu(0, H, S, D, 4), k = syntheticCpu(1, Hk, S, D, 1), v = syntheticCpu(2, Hk, S, D, 1);
  const t = performance.now();
  const r = saleAttentionBlas((...a) => sg.gemm(...a), saleParams({}), q, k, v, H, Hk, S, D);
  const d = saleAttentionBlas((...a) => sg.gemm(...a), saleParams({}), q, k, v, H, Hk, S, D, S, true);
  let num = 0, den = 0, rec = 0;
  for (let i = 0; i < r.o.length; i++) { num += (r.o[i] - d.o[i]) ** 2; den += d.o[i] ** 2; }
  for (let i = 0; i < r.lse.length; i++) rec += Math.exp(r.lse[i] - d.lse[i]);
  console.log(S, "density", [...r.density].map((x) => x.toFixed(4)), "err", Math.sqrt(num / den).toExponential(2), "recall", (rec / r.lse.length).toFixed(5), (performance.now() - t).toFixed(0), "ms");
}
