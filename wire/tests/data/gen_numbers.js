// Generates the ECMAScript number test data used by ../jcs_vectors.rs.
// Run with: node gen_numbers.js   (any Node.js >= 12; output is deterministic)
//
// es6_numbers.txt: "<IEEE-754 bits hex>,<Number.prototype.toString() of that double>"
// parse_numbers.txt: "<JSON number text>,<Number(text).toString()>"; checks that
//                    parsing rounds correctly before serialization.
'use strict';
const fs = require('fs');

// xorshift64*, fixed seed, so the files are reproducible.
let s = 0x9E3779B97F4A7C15n;
const M = (1n << 64n) - 1n;
function next() {
  s ^= s >> 12n; s ^= (s << 25n) & M; s ^= s >> 27n;
  return (s * 0x2545F4914F6CDD1Dn) & M;
}
function rnd(n) { return Number(next() % BigInt(n)); }

const view = new DataView(new ArrayBuffer(8));
function fromBits(b) { view.setBigUint64(0, b); return view.getFloat64(0); }
function hex(b) { return b.toString(16).padStart(16, '0'); }

const lines = [];
function addBits(b) {
  const d = fromBits(b);
  if (!Number.isFinite(d)) return;
  lines.push(hex(b) + ',' + d.toString());
}
// Edges: zeros, subnormals, powers of ten and two, the 1e21 and 1e-7 format switches.
for (const b of [0n, 1n << 63n, 1n, (1n << 63n) | 1n, 0x000fffffffffffffn, 0x0010000000000000n,
                 0x7fefffffffffffffn, 0xffefffffffffffffn, 0x4340000000000000n, 0x4340000000000001n]) addBits(b);
for (let e = -325; e <= 309; e++) {
  for (const m of [1, 5, 4.35]) {
    const d = m * Math.pow(10, e);
    if (!Number.isFinite(d) || d === 0) continue;
    view.setFloat64(0, d);
    const b = view.getBigUint64(0);
    for (const db of [-1n, 0n, 1n]) addBits((b + db) & M);
  }
}
for (let e = -1074; e <= 1023; e += 7) { view.setFloat64(0, Math.pow(2, e)); addBits(view.getBigUint64(0)); }
// Random bit patterns, random integers, random "money-like" decimals.
for (let i = 0; i < 3000; i++) addBits(next());
for (let i = 0; i < 500; i++) { view.setFloat64(0, rnd(2 ** 40) * (rnd(2) ? 1 : -1) * 2 ** rnd(40)); addBits(view.getBigUint64(0)); }
for (let i = 0; i < 500; i++) { view.setFloat64(0, rnd(10 ** 9) / 100); addBits(view.getBigUint64(0)); }
fs.writeFileSync('es6_numbers.txt', lines.join('\n') + '\n');

// Parsing: decimal texts with many digits (beyond 17 significant digits, near halfway points,
// near the extremes) and their ECMAScript interpretation.
const texts = [];
function addText(t) { const d = Number(t); if (Number.isFinite(d)) texts.push(t + ',' + d.toString()); }
const digits = () => { let n = 1 + rnd(30), t = String(1 + rnd(9)); for (let i = 1; i < n; i++) t += String(rnd(10)); return t; };
for (let i = 0; i < 3000; i++) {
  const ds = digits();
  const point = rnd(ds.length + 1);
  let t = (rnd(4) === 0 ? '-' : '') + (point === 0 ? '0' : ds.slice(0, point)) + (point < ds.length ? '.' + ds.slice(point) : '');
  if (rnd(2)) t += (rnd(2) ? 'e' : 'E') + (rnd(2) ? '-' : (rnd(2) ? '+' : '')) + String(rnd(330));
  addText(t);
}
// Halfway cases: the decimal midpoint between two adjacent doubles (exact, via BigInt), plus/minus a hair.
for (let i = 0; i < 600; i++) {
  // Keep the binary exponent moderate (texts stay short) except for a few extremes.
  const b = i < 20 ? next() & 0x7fefffffffffffffn : ((next() & 0x800fffffffffffffn) | (BigInt(1023 - 80 + rnd(160)) << 52n));
  const d = fromBits(b);
  if (!Number.isFinite(d) || d === 0 || fromBits(b + 1n) === Infinity) continue;
  const e = Number((b >> 52n) & 0x7ffn), m = b & 0xfffffffffffffn;
  const mant = e === 0 ? m : m | (1n << 52n), exp2 = (e === 0 ? 1 : e) - 1075;
  // midpoint = (2*mant+1) * 2^(exp2-1)
  let num = 2n * mant + 1n, p = exp2 - 1, t;
  if (p >= 0) t = (num << BigInt(p)).toString();
  else { const k = -p; const scaled = num * 5n ** BigInt(k); const str = scaled.toString().padStart(k + 1, '0');
         t = str.slice(0, str.length - k) + '.' + str.slice(str.length - k); }
  addText(t);
  addText(t + '1');
  if (t.includes('.')) addText(t.replace(/.$/, c => c === '0' ? '0' : String(Number(c) - 1)) + '9');
}
for (const t of ['1e-400', '-1e-400', '4.9e-324', '2.4703282292062327e-324', '2.4703282292062328e-324',
                 '1.7976931348623157e308', '1.7976931348623158e308', '179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497791',
                 '9007199254740993', '-9007199254740993', '18446744073709551615', '18446744073709551616', '-9223372036854775808',
                 '-9223372036854775809', '295147905179352825856', '1e21', '1e-7', '100e-9', '0.1', '-0', '-0.0', '0e10',
                 '2.2250738585072011e-308', '2.2250738585072012e-308', '0.30000000000000004', '123456789012345678901234567890']) addText(t);
fs.writeFileSync('parse_numbers.txt', texts.join('\n') + '\n');
console.log(lines.length, texts.length);
