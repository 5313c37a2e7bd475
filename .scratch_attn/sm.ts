import { fastExp } from "../runtime/src/model/llama.ts";
const N = 4096, R = 64;
const src = new Float32Array(R * N); for (let i = 0; i < src.length; i++) src[i] = Math.random() * 8 - 4;
const s = new Float32Array(src.length);
const LN2 = 0.6931471805599453, LOG2E = 1.4426950408889634;
const POW2 = new Float64Array(512); for (let i = 0; i < 512; i++) POW2[i] = 2 ** (i - 256);
const inv = new Float64Array(R);
function v0(s: Float32Array) { for (let r = 0; r < R; r++) { const base=r*N, stop=base+N; let mx=-Infinity; for (let j=base;j<stop;j++) if (s[j]>mx) mx=s[j]; let sum=0; for (let j=base;j<stop;j++){const e=fastExp(s[j]-mx); s[j]=e; sum+=e;} inv[r]=1/sum; } }
// inline, no clamp at top (x-mx <= 0), clamp low
function v1(s: Float32Array) { for (let r = 0; r < R; r++) { const base=r*N, stop=base+N; let mx=-Infinity; for (let j=base;j<stop;j++){const x=s[j]; mx = x>mx?x:mx;} const m2 = mx*LOG2E; let sum=0;
  for (let j=base;j<stop;j++){ let t=s[j]*LOG2E-m2; if (t < -250) t = -250; const k=((t+256.5)|0); const g=(t-(k-256))*LN2;
   const e=(1 + g * (1 + g * (0.5 + g * (1 / 6 + g * (1 / 24 + g * (1 / 120 + g * (1 / 720 + g / 5040))))))) * POW2[k]; s[j]=e; sum+=e;} inv[r]=1/sum; } }
// Math.exp
function v2(s: Float32Array) { for (let r = 0; r < R; r++) { const base=r*N, stop=base+N; let mx=-Infinity; for (let j=base;j<stop;j++){const x=s[j]; mx = x>mx?x:mx;} let sum=0; for (let j=base;j<stop;j++){const e=Math.exp(s[j]-mx); s[j]=e; sum+=e;} inv[r]=1/sum; } }
// f32-accurate: degree-5 poly on |g|<=ln2/2 (rel err ~ 2e-7?) not used; v3: 2-way unrolled v1
function v3(s: Float32Array) { for (let r = 0; r < R; r++) { const base=r*N, stop=base+N; let mx=-Infinity; for (let j=base;j<stop;j++){const x=s[j]; mx = x>mx?x:mx;} const m2 = mx*LOG2E; let sum0=0, sum1=0; let j=base;
  for (; j+1<stop; j+=2){ let t=s[j]*LOG2E-m2; let u=s[j+1]*LOG2E-m2; if (t < -250) t = -250; if (u < -250) u = -250; const k=((t+256.5)|0); const k2=((u+256.5)|0); const g=(t-(k-256))*LN2; const h=(u-(k2-256))*LN2;
   const e=(1 + g * (1 + g * (0.5 + g * (1 / 6 + g * (1 / 24 + g * (1 / 120 + g * (1 / 720 + g / 5040))))))) * POW2[k];
   const f=(1 + h * (1 + h * (0.5 + h * (1 / 6 + h * (1 / 24 + h * (1 / 120 + h * (1 / 720 + h / 5040))))))) * POW2[k2]; s[j]=e; s[j+1]=f; sum0+=e; sum1+=f;}
  for (; j<stop; j++){ let t=s[j]*LOG2E-m2; if (t < -250) t = -250; const k=((t+256.5)|0); const g=(t-(k-256))*LN2; const e=(1 + g * (1 + g * (0.5 + g * (1 / 6 + g * (1 / 24 + g * (1 / 120 + g * (1 / 720 + g / 5040))))))) * POW2[k]; s[j]=e; sum0+=e; }
  inv[r]=1/(sum0+sum1); } }
for (const [name, f] of [["v0", v0], ["v1", v1], ["v2", v2], ["v3", v3], ["v0", v0], ["v1", v1], ["v3", v3]] as const) {
  let best = Infinity;
  for (let it = 0; it < 8; it++) { s.set(src); const t = performance.now(); f(s); best = Math.min(best, performance.now() - t); }
  console.log(name, (best * 1e6 / (R * N)).toFixed(2), "ns/elt", inv[3]);
}
