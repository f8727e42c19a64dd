// matvec with rowStride (rows embedded in larger records) and matvecT (y = Wᵀh).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Compute, type Arena } from '../../src/kernels/index.js';
import { F32, F16, BF16, Q8_0, Q4_0, dequantRef, randomWeights, rng, rowBytesRef } from './ref.js';

const TYPES = [F32, F16, BF16, Q8_0, Q4_0];
const isQ = (t: number) => t === Q8_0 || t === Q4_0;
const computes: Compute[] = [];
after(async () => { await Promise.all(computes.map((c) => c.close())); });

/** A Compute with one arena split into fixed regions that every case reuses. */
async function make(threads: number) {
  const c = await Compute.create({ threads, minParallelBytes: 0 });
  computes.push(c);
  const a = c.createArena(96 << 20);
  return { c, a, W: a.alloc(40 << 20), W2: a.alloc(40 << 20), X: a.alloc(1 << 20), XQ: a.alloc(1 << 20), Y: a.alloc(1 << 20), Y2: a.alloc(1 << 20) };
}
type Ctx = Awaited<ReturnType<typeof make>>;

/** Rows of `packed` copied into records of `stride` bytes at byte offset `off`, the rest junk. */
function embed(packed: Uint8Array, rb: number, rows: number, stride: number, off: number, r: () => number): Uint8Array {
  const out = new Uint8Array((rows - 1) * stride + off + rb);
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(r() * 256);
  for (let i = 0; i < rows; i++) out.set(packed.subarray(i * rb, (i + 1) * rb), i * stride + off);
  return out;
}

function randomH(rows: number, r: () => number): Float32Array {
  const h = new Float32Array(rows);
  for (let i = 0; i < rows; i++) {
    const u = r();
    h[i] = u < 0.25 ? 0 : u < 0.3 ? -0 : (r() * 2 - 1) * (r() < 0.05 ? 20 : 1);
  }
  if (rows > 2) h[1] = 0;
  return h;
}

function runT(x: Ctx, type: number, wBytes: Uint8Array, rows: number, cols: number, h: Float32Array, rowStride?: number, wOff = 0): Float32Array {
  const { c, a } = x;
  a.u8(x.W, wBytes.length).set(wBytes);
  a.f32(x.X, rows).set(h);
  a.f32(x.Y, cols).fill(NaN);
  c.matvecT(a, { type, w: x.W + wOff, rows, cols, rowStride, h: x.X, y: x.Y });
  return a.f32(x.Y, cols).slice();
}

function checkT(type: number, wBytes: Uint8Array, rows: number, cols: number, h: Float32Array, y: Float32Array, what: string) {
  const rb = rowBytesRef(type, cols);
  const s = new Float64Array(cols), sa = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    if (h[r] === 0) continue;
    const wr = dequantRef(type, wBytes.subarray(r * rb, (r + 1) * rb), cols);
    for (let i = 0; i < cols; i++) { s[i] += h[r] * wr[i]; sa[i] += Math.abs(h[r] * wr[i]); }
  }
  for (let i = 0; i < cols; i++) {
    assert.ok(Math.abs(y[i] - s[i]) <= 1e-5 * sa[i] + 1e-30, `${what} col ${i}: got ${y[i]}, want ${s[i]} (Σ|hw| ${sa[i]})`);
  }
}

const ROWS = [1, 3, 37, 1000];
const colsFor = (type: number) => (isQ(type) ? [32, 96, 160, 4096] : [5, 16, 33, 1000, 4096]);

for (const threads of [1, 2]) {
  test(`matvecT all types vs float64 reference, zeros in h (threads=${threads})`, async () => {
    const x = await make(threads);
    const r = rng(321 + threads);
    for (const type of TYPES) {
      for (const rows of ROWS) {
        for (const cols of colsFor(type)) {
          if (rows * cols > 1000 * 1000 && cols !== 4096) continue;
          const wBytes = randomWeights(type, rows, cols, r);
          const h = randomH(rows, r);
          const y = runT(x, type, wBytes, rows, cols, h);
          checkT(type, wBytes, rows, cols, h, y, `type ${type} ${rows}×${cols} threads ${threads}`);
        }
      }
    }
  });

  test(`matvec rowStride: rows in padded records give bit-identical y (threads=${threads})`, async () => {
    const x = await make(threads);
    const { c, a } = x;
    const r = rng(77 + threads);
    for (const type of TYPES) {
      for (const [rows, cols] of [[1, 32], [3, 96], [37, 4096], [1000, 160], [130, 1024]] as [number, number][]) {
        const rb = rowBytesRef(type, cols);
        const packed = randomWeights(type, rows, cols, r);
        const xv = new Float32Array(cols).map(() => r() * 2 - 1);
        a.f32(x.X, cols).set(xv);
        c.prepareX(a, type, x.X, x.XQ, cols);
        a.u8(x.W, packed.length).set(packed);
        c.matvec(a, [{ type, w: x.W, rows, cols, xq: x.XQ, y: x.Y }]);
        const want = a.f32(x.Y, rows).slice();
        for (const [stride, off] of [[rb, 0], [rb + 2, 1], [Math.ceil((3 * rb) / 512) * 512, rb + 3], [rb * 2 + 7, rb]]) {
          const rec = embed(packed, rb, rows, stride, off, r);
          a.u8(x.W2, rec.length).set(rec);
          a.f32(x.Y2, rows).fill(NaN);
          c.matvec(a, [{ type, w: x.W2 + off, rows, cols, xq: x.XQ, y: x.Y2, rowStride: stride }]);
          const got = a.f32(x.Y2, rows);
          for (let i = 0; i < rows; i++) assert.ok(Object.is(got[i], want[i]), `type ${type} ${rows}×${cols} stride ${stride} row ${i}: ${got[i]} vs ${want[i]}`);
        }
      }
    }
  });
}

test('matvecT is bit-identical on 1 and 2 threads, and with rowStride', async () => {
  const x1 = await make(1), x2 = await make(2);
  const r = rng(4242);
  for (const type of TYPES) {
    for (const [rows, cols] of [[3, 4096], [37, 1000], [1000, 160], [200, 4064], [5, 2016]] as [number, number][]) {
      const c = isQ(type) ? Math.floor(cols / 32) * 32 : cols + 3;
      const wBytes = randomWeights(type, rows, c, r);
      const h = randomH(rows, r);
      const y1 = runT(x1, type, wBytes, rows, c, h);
      const y2 = runT(x2, type, wBytes, rows, c, h);
      const rb = rowBytesRef(type, c);
      const stride = Math.ceil((rb * 3) / 512) * 512, off = rb * 2;
      const rec = embed(wBytes, rb, rows, stride, off, r);
      const y3 = runT(x2, type, rec, rows, c, h, stride, off);
      const y4 = runT(x1, type, rec, rows, c, h, stride, off);
      for (let i = 0; i < c; i++) {
        assert.ok(Object.is(y1[i], y2[i]), `type ${type} ${rows}×${c} col ${i}: ${y1[i]} (1 thread) vs ${y2[i]} (2 threads)`);
        assert.ok(Object.is(y1[i], y3[i]) && Object.is(y1[i], y4[i]), `type ${type} ${rows}×${c} col ${i}: strided ${y3[i]}/${y4[i]} vs ${y1[i]}`);
      }
    }
  }
});

test('matvecT skips rows with h == 0 (their bytes are never read: NaN weights do not leak)', async () => {
  for (const threads of [1, 2]) {
    const x = await make(threads);
    const r = rng(9 + threads);
    for (const type of TYPES) {
      const rows = 37, cols = 256;
      const wBytes = randomWeights(type, rows, cols, r);
      const h = randomH(rows, r);
      const rb = rowBytesRef(type, cols);
      const poisoned = wBytes.slice();
      const dv = new DataView(poisoned.buffer);
      for (let i = 0; i < rows; i++) {
        if (h[i] !== 0) continue;
        if (type === F32) for (let c = 0; c < cols; c++) dv.setFloat32(i * rb + c * 4, NaN, true);
        else if (type === F16 || type === BF16) for (let c = 0; c < cols; c++) dv.setUint16(i * rb + c * 2, 0x7fc1, true);
        else for (let b = 0; b < cols / 32; b++) dv.setUint16(i * rb + b * (type === Q8_0 ? 34 : 18), 0x7e00, true);
      }
      const y = runT(x, type, poisoned, rows, cols, h);
      for (let i = 0; i < cols; i++) assert.ok(Number.isFinite(y[i]), `type ${type} col ${i}: ${y[i]}`);
      checkT(type, wBytes, rows, cols, h, y, `poisoned type ${type}`);
      // all-zero h (and rows = 0) → y = 0
      const z = runT(x, type, poisoned, rows, cols, new Float32Array(rows));
      assert.ok(z.every((v) => Object.is(v, 0)));
      x.a.f32(x.Y, cols).fill(NaN);
      x.c.matvecT(x.a, { type, w: x.W, rows: 0, cols, h: x.X, y: x.Y });
      assert.ok(x.a.f32(x.Y, cols).every((v) => Object.is(v, 0)));
    }
  }
});

test('matvecT / matvec rowStride: FFN records [gate | up | down], gate and up as two jobs', async () => {
  for (const threads of [1, 2]) for (const rows of [1, 37, 96]) await recordCase(await make(threads), rows);
});

async function recordCase(x: Ctx, rows: number) {
  const { c, a } = x;
  const r = rng(5150 + rows);
  const dim = 256;
  for (const type of TYPES) {
    const rb = rowBytesRef(type, dim);
    const rec = Math.ceil((3 * rb) / 512) * 512;
    const parts = [0, 1, 2].map(() => randomWeights(type, rows, dim, r));
    const bytes = new Uint8Array(rows * rec);
    for (let i = 0; i < rows; i++) for (let k = 0; k < 3; k++) bytes.set(parts[k].subarray(i * rb, (i + 1) * rb), i * rec + k * rb);
    a.u8(x.W2, bytes.length).set(bytes);
    const xv = new Float32Array(dim).map(() => r() * 2 - 1);
    a.f32(x.X, dim).set(xv);
    c.prepareX(a, type, x.X, x.XQ, dim);
    c.matvec(a, [
      { type, w: x.W2, rows, cols: dim, xq: x.XQ, y: x.Y, rowStride: rec },
      { type, w: x.W2 + rb, rows, cols: dim, xq: x.XQ, y: x.Y + rows * 4, rowStride: rec },
    ]);
    const got = a.f32(x.Y, 2 * rows).slice();
    for (let k = 0; k < 2; k++) {
      a.u8(x.W, parts[k].length).set(parts[k]);
      c.matvec(a, [{ type, w: x.W, rows, cols: dim, xq: x.XQ, y: x.Y2 }]);
      const want = a.f32(x.Y2, rows);
      for (let i = 0; i < rows; i++) assert.ok(Object.is(got[k * rows + i], want[i]), `type ${type} part ${k} row ${i}`);
    }
    const h = randomH(rows, r);
    a.f32(x.X, rows).set(h);
    c.matvecT(a, { type, w: x.W2 + 2 * rb, rows, cols: dim, rowStride: rec, h: x.X, y: x.Y });
    const yt = a.f32(x.Y, dim).slice();
    const want = runT(x, type, parts[2], rows, dim, h);
    for (let i = 0; i < dim; i++) assert.ok(Object.is(yt[i], want[i]), `type ${type} down col ${i}`);
  }
}

test('matvecT / rowStride argument checks', async () => {
  const x = await make(1);
  const { c, a } = x;
  assert.throws(() => c.matvec(a, [{ type: Q8_0, w: x.W, rows: 2, cols: 64, xq: x.XQ, y: x.Y, rowStride: 67 }]), /rowStride/);
  assert.throws(() => c.matvec(a, [{ type: F32, w: x.W, rows: 2, cols: 64, xq: x.XQ, y: x.Y, rowStride: 256.5 }]), /rowStride/);
  assert.throws(() => c.matvecT(a, { type: Q4_0, w: x.W, rows: 2, cols: 48, h: x.X, y: x.Y }), /multiple of 32/);
  assert.throws(() => c.matvecT(a, { type: F32, w: x.W, rows: 2, cols: 16, rowStride: 32, h: x.X, y: x.Y }), /rowStride/);
  assert.throws(() => c.matvecT(a, { type: F32, w: a.capacity - 1000, rows: 4, cols: 64, h: x.X, y: x.Y }), RangeError);
  assert.throws(() => c.matvecT(a, { type: 3, w: x.W, rows: 2, cols: 64, h: x.X, y: x.Y }), RangeError);
});
