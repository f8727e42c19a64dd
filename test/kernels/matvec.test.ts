import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Compute, type Arena } from '../../src/kernels/index.js';
import {
  F32, F16, BF16, Q8_0, Q4_0, quantizeQ8, f32ToF16, f16ToF32, f32ToBF16, bf16ToF32, dequantRef,
  randomWeights, rng, rowBytesRef, fround,
} from './ref.js';

const computes: Compute[] = [];
after(async () => { await Promise.all(computes.map((c) => c.close())); });
async function make(threads: number): Promise<{ c: Compute; a: Arena }> {
  const c = await Compute.create({ threads, minParallelBytes: 0 });
  computes.push(c);
  return { c, a: c.createArena(64 << 20) };
}

/** The activation as the dot product sees it (after conversion to the vec_dot type). */
function preparedRef(type: number, x: Float32Array): Float64Array {
  const out = new Float64Array(x.length);
  if (type === F32) out.set(x);
  else if (type === F16) for (let i = 0; i < x.length; i++) out[i] = f16ToF32(f32ToF16(x[i]));
  else if (type === BF16) for (let i = 0; i < x.length; i++) out[i] = bf16ToF32(f32ToBF16(x[i]));
  else return dequantRef(Q8_0, quantizeQ8(x), x.length);
  return out;
}

function runMatvec(c: Compute, a: Arena, type: number, wBytes: Uint8Array, rows: number, cols: number, x: Float32Array) {
  const w = a.alloc(wBytes.length);
  a.u8(w, wBytes.length).set(wBytes);
  const xo = a.alloc(cols * 4);
  a.f32(xo, cols).set(x);
  const xq = a.alloc(c.preparedXBytes(type, cols));
  c.prepareX(a, type, xo, xq, cols);
  const y = a.alloc(rows * 4);
  a.f32(y, rows).fill(NaN);
  c.matvec(a, [{ type, w, rows, cols, xq, y }]);
  return { y: a.f32(y, rows).slice(), xq };
}

function checkAgainstRef(type: number, wBytes: Uint8Array, rows: number, cols: number, x: Float32Array, y: Float32Array) {
  const xr = preparedRef(type, x);
  const rb = rowBytesRef(type, cols);
  for (let r = 0; r < rows; r++) {
    const wr = dequantRef(type, wBytes.subarray(r * rb, (r + 1) * rb), cols);
    let s = 0, sa = 0;
    for (let i = 0; i < cols; i++) { s += wr[i] * xr[i]; sa += Math.abs(wr[i] * xr[i]); }
    const err = Math.abs(y[r] - s);
    assert.ok(err <= 1e-5 * sa + 1e-30, `type ${type} ${rows}x${cols} row ${r}: got ${y[r]}, want ${s} (Σ|wx| ${sa})`);
  }
}

const SHAPES: [number, number][] = [[1, 32], [3, 64], [5, 96], [37, 160], [130, 256], [9, 8192], [67, 4096], [258, 1024]];
const ODD_COLS: [number, number][] = [[7, 33], [13, 1000], [6, 8191], [4, 15], [11, 5]];

for (const threads of [1, 2]) {
  test(`matvec all types vs reference (threads=${threads})`, async () => {
    const { c, a } = await make(threads);
    const r = rng(1234 + threads);
    for (const type of [F32, F16, BF16, Q8_0, Q4_0]) {
      const shapes = type === Q8_0 || type === Q4_0 ? SHAPES : [...SHAPES, ...ODD_COLS];
      for (const [rows, cols] of shapes) {
        const wBytes = randomWeights(type, rows, cols, r);
        const x = new Float32Array(cols);
        for (let i = 0; i < cols; i++) x[i] = (r() * 2 - 1) * (r() < 0.05 ? 30 : 1);
        const { y } = runMatvec(c, a, type, wBytes, rows, cols, x);
        checkAgainstRef(type, wBytes, rows, cols, x, y);
      }
    }
  });

  test(`q8_0 / q4_0 matvec integer sums are exact (threads=${threads})`, async () => {
    const { c, a } = await make(threads);
    const r = rng(99 + threads);
    const rows = 21, cols = 8192;
    // x: integers with |x| ≤ 127 and a 127 in every block → d = 1, q = x exactly
    const x = new Float32Array(cols);
    for (let i = 0; i < cols; i++) x[i] = (i & 31) === 5 ? (r() < 0.5 ? 127 : -127) : Math.round(r() * 254) - 127;
    for (const type of [Q8_0, Q4_0]) {
      const bb = type === Q8_0 ? 34 : 18;
      const wBytes = randomWeights(type, rows, cols, r);
      const dv = new DataView(wBytes.buffer);
      for (let o = 0; o < wBytes.length; o += bb) {
        dv.setUint16(o, 0x3c00, true); // d = 1
        if (type === Q8_0) for (let j = 0; j < 32; j++) dv.setInt8(o + 2 + j, Math.round(r() * 16) - 8);
      }
      const { y } = runMatvec(c, a, type, wBytes, rows, cols, x);
      const rb = rowBytesRef(type, cols);
      for (let row = 0; row < rows; row++) {
        const wr = dequantRef(type, wBytes.subarray(row * rb, (row + 1) * rb), cols);
        let s = 0;
        for (let i = 0; i < cols; i++) s += wr[i] * x[i];
        assert.equal(y[row], s, `type ${type} row ${row}`);
      }
    }
  });
}

test('prepareX q8_0 is bit-exact with ggml rounding (ties to even, zero blocks, extremes)', async () => {
  const { c, a } = await make(1);
  const r = rng(7);
  const n = 32 * 64;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (r() * 2 - 1) * Math.exp((r() - 0.5) * 20);
  x.fill(0, 32, 64);                                     // zero block
  for (let j = 0; j < 32; j++) x[64 + j] = j === 0 ? 127 : (j - 16) + 0.5; // amax 127 → id 1 → exact ties
  for (let j = 0; j < 32; j++) x[96 + j] = j === 3 ? -1e-30 : 0;          // tiny amax: subnormal-free
  for (let j = 0; j < 32; j++) x[128 + j] = j === 7 ? 3e5 : j * 1e3;      // d above f16 range? (≤ 65504·127)
  const xo = a.alloc(n * 4);
  a.f32(xo, n).set(x);
  const xq = a.alloc(c.preparedXBytes(Q8_0, n));
  c.prepareX(a, Q8_0, xo, xq, n);
  const want = quantizeQ8(x);
  const got = a.u8(xq, want.length);
  for (let i = 0; i < want.length; i++) assert.equal(got[i], want[i], `byte ${i} (block ${Math.floor(i / 34)})`);
});

test('prepareX f16 / bf16 round to nearest even, exact on special values', async () => {
  const { c, a } = await make(1);
  const r = rng(11);
  const special = [0, -0, 1, -1, 65504, 65519.99, 65520, 1e6, -1e6, Infinity, -Infinity, NaN,
    2 ** -14, 2 ** -24, 2 ** -25, 2 ** -25 * 1.0001, 3 * 2 ** -25, 2 ** -26, 1e-30, 1 + 2 ** -11, 1 + 3 * 2 ** -11,
    1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4e38, -(2 ** -14) * 0.99999, 5.96e-8, 6.1e-5, 0.1, 1 / 3];
  const n = 4096;
  const x = new Float32Array(n);
  x.set(special);
  for (let i = special.length; i < n; i++) {
    const u = Math.floor(r() * 2 ** 32) >>> 0;
    x[i] = i % 3 ? (r() * 2 - 1) * Math.exp((r() - 0.5) * 40) : new Float32Array(new Uint32Array([u]).buffer)[0];
  }
  const xo = a.alloc(n * 4);
  a.f32(xo, n).set(x);
  for (const type of [F16, BF16]) {
    const xq = a.alloc(c.preparedXBytes(type, n));
    c.prepareX(a, type, xo, xq, n);
    const got = a.u16(xq, n);
    for (let i = 0; i < n; i++) {
      const want = type === F16 ? f32ToF16(x[i]) : f32ToBF16(x[i]);
      assert.equal(got[i], want, `type ${type} x=${x[i]} got ${got[i].toString(16)} want ${want.toString(16)}`);
    }
    // storeKV f16 uses the same conversion
    if (type === F16) {
      const dst = a.alloc(n * 2);
      c.storeKV(a, F16, xo, dst, n);
      assert.deepEqual(a.u16(dst, n).slice(), a.u16(xq, n).slice());
    }
  }
  // F32 prepare is a copy
  const xq = a.alloc(c.preparedXBytes(F32, n));
  c.prepareX(a, F32, xo, xq, n);
  assert.deepEqual(a.f32(xq, n).slice(), a.f32(xo, n).slice());
  assert.equal(fround(0.1), a.f32(xq, 4096)[special.indexOf(0.1)]);
});

test('f16 → f32 is exact for all 65536 halves (dequantRow, matvec)', async () => {
  const { c, a } = await make(2);
  const w = a.alloc(65536 * 2), out = a.alloc(65536 * 4);
  const u = a.u16(w, 65536);
  for (let i = 0; i < 65536; i++) u[i] = i;
  c.dequantRow(a, F16, w, out, 65536);
  const f = a.f32(out, 65536);
  for (let i = 0; i < 65536; i++) {
    const want = f16ToF32(i);
    assert.ok(Object.is(f[i], fround(want)) || (Number.isNaN(want) && Number.isNaN(f[i])), `half ${i.toString(16)}: ${f[i]} vs ${want}`);
  }
  // matvec over all finite halves: one row per 1024-half slice, x = 1 (exact in f16)
  const finite = Array.from({ length: 65536 }, (_, i) => i).filter((i) => ((i >> 10) & 31) !== 31);
  const cols = 1024, rows = finite.length / cols;
  const wq = a.alloc(finite.length * 2);
  a.u16(wq, finite.length).set(finite);
  const x = a.alloc(cols * 4);
  a.f32(x, cols).fill(1);
  const xq = a.alloc(c.preparedXBytes(F16, cols));
  c.prepareX(a, F16, x, xq, cols);
  const y = a.alloc(rows * 4);
  c.matvec(a, [{ type: F16, w: wq, rows, cols, xq, y }]);
  for (let r = 0; r < rows; r++) {
    let s = 0, sa = 0;
    for (let j = 0; j < cols; j++) { const v = f16ToF32(finite[r * cols + j]); s += v; sa += Math.abs(v); }
    assert.ok(Math.abs(a.f32(y, rows)[r] - s) <= 1e-6 * sa, `row ${r}`);
  }
});

test('dequantRow matches the reference for every type', async () => {
  const { c, a } = await make(1);
  const r = rng(5);
  for (const type of [F32, F16, BF16, Q8_0, Q4_0]) {
    for (const cols of type === Q8_0 || type === Q4_0 ? [32, 96, 4096] : [1, 7, 32, 1001]) {
      const wBytes = randomWeights(type, 1, cols, r);
      if (type === F16) new DataView(wBytes.buffer).setUint16(0, 0x0001, true); // a subnormal
      const w = a.alloc(wBytes.length);
      a.u8(w, wBytes.length).set(wBytes);
      const out = a.alloc(cols * 4);
      c.dequantRow(a, type, w, out, cols);
      const want = dequantRef(type, wBytes, cols);
      const got = a.f32(out, cols);
      for (let i = 0; i < cols; i++) assert.equal(got[i], fround(want[i]), `type ${type} cols ${cols} i ${i}`);
    }
  }
});
