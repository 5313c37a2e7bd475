import { loadSgemm } from "../runtime/src/model/blas.ts";
const sg = await loadSgemm();
const S = 4096, E = 576, F = 1536;
const rnd = (n: number) => { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5; return a; };
const h = rnd(S*E), wq = rnd(E*E), wk = rnd(192*E), wf = rnd(F*E), wd = rnd(E*F), g = new Float32Array(S*F), qf = new Float32Array(S*E), x = new Float32Array(S*E);
for (let it = 0; it < 2; it++) {
const t = performance.now();
sg.gemm(false,true,S,E,E,1,h,E,wq,E,0,qf,E);
sg.gemm(false,true,S,192,E,1,h,E,wk,E,0,qf,192);
sg.gemm(false,true,S,192,E,1,h,E,wk,E,0,qf,192);
sg.gemm(false,true,S,E,E,1,qf,E,wq,E,1,x,E);
sg.gemm(false,true,S,F,E,1,h,E,wf,E,0,g,F);
sg.gemm(false,true,S,F,E,1,h,E,wf,E,0,g,F);
sg.gemm(false,true,S,E,F,1,g,F,wd,F,1,x,E);
const ms = performance.now() - t;
console.log(`layer weight gemms ${ms.toFixed(0)} ms, ${(2*S*(E*E*2+192*E*2+3*E*F)/ms/1e6).toFixed(1)} GFLOP/s, load ${Deno.loadavg()[0]}`);
}
