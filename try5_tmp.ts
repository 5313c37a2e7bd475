const LN2 = 0.6931471805599453, LOG2E = 1.4426950408889634;
const POW2 = new Float64Array(400); for (let i = 0; i < 400; i++) POW2[i] = 2 ** (i - 200);
const POW2F = new Float32Array(400); for (let i = 0; i < 400; i++) POW2F[i] = 2 ** (i - 200);
const n = 1 << 22;
const src = new Float32Array(n).map(() => Math.random() * 10 - 5);
const row = new Float32Array(n);
function polyRound(row: Float32Array, len: number) {
  let mx = -Infinity; for (let j = 0; j < len; j++) if (row[j] > mx) mx = row[j];
  let sum = 0;
  for (let j = 0; j < len; j++) {
    const x = row[j] - mx; let e = 0;
    if (x > -140) { const t = x * LOG2E; const k = Math.round(t); const g = (t - k) * LN2;
      e = (1 + g * (1 + g * (0.5 + g * (1 / 6 + g * (1 / 24 + g * (1 / 120 + g * (1 / 720 + g / 5040))))))) * POW2[k + 200]; }
    row[j] = e; sum += e;
  }
  return sum;
}
function polyFloor(row: Float32Array, len: number) {
  let mx = -Infinity; for (let j = 0; j < len; j++) if (row[j] > mx) mx = row[j];
  let sum = 0;
  for (let j = 0; j < len; j++) {
    let t = (row[j] - mx) * LOG2E; if (t < -190) t = -190;
    const k = (t - 0.5) | 0;  // trunc toward zero of negative → ceil; t-0.5 then trunc ~ round for negatives
    const g = (t - k) * LN2;
    const e = (1 + g * (1 + g * (0.5 + g * (1 / 6 + g * (1 / 24 + g * (1 / 120 + g * (1 / 720 + g / 5040))))))) * POW2[k + 200];
    row[j] = e; sum += e;
  }
  return sum;
}
function mathExp(row: Float32Array, len: number) {
  let mx = -Infinity; for (let j = 0; j < len; j++) if (row[j] > mx) mx = row[j];
  let sum = 0;
  for (let j = 0; j < len; j++) { const e = Math.exp(row[j] - mx); row[j] = e; sum += e; }
  return sum;
}
for (let rep = 0; rep < 3; rep++) for (const [name, f] of [["math", mathExp], ["round", polyRound], ["trunc", polyFloor]] as const) {
  let t = performance.now(); let s = 0;
  for (let r = 0; r < 5; r++) { row.set(src); s += f(row, n); }
  console.log(name, ((performance.now() - t) * 1e6 / (5 * n)).toFixed(2), "ns/elem", s.toExponential(8));
}
