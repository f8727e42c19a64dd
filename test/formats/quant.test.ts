import { test } from 'node:test';
import { createHash } from 'node:crypto';
import assert from 'node:assert/strict';
import { TensorType } from '../../src/formats/ggml-types.js';
import {
  bf16ToF32, dequantize, f16ToF32, f32ToBF16, f32ToF16, quantize, quantizedBytes,
} from '../../src/formats/quant.js';

const { F32, F16, BF16, Q8_0, Q4_0 } = TensorType;

function bitsOf(x: number): number {
  return new Uint32Array(new Float32Array([x]).buffer)[0]!;
}
function fromBits(u: number): number {
  return new Float32Array(new Uint32Array([u]).buffer)[0]!;
}
/** Deterministic pseudo-random numbers (LCG), so failures reproduce. */
function rand(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}
function randn(n: number, scale: number, seed: number): Float32Array {
  const r = rand(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() + r() + r() - 1.5) * 2 * scale;
  return a;
}

test('f16: exact values, rounding to nearest even, subnormals, overflow, inf, nan', () => {
  const cases: [number, number][] = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [65504, 0x7bff],
    [6.103515625e-5, 0x0400], // smallest normal 2^-14
    [5.960464477539063e-8, 0x0001], // smallest subnormal 2^-24
    [6.097555160522461e-5, 0x03ff], // largest subnormal
    [2 ** -25, 0x0000], // tie between 0 and 2^-24 → even (0)
    [2 ** -25 * 1.0000001, 0x0001], // just above the tie
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 (units of 2^-24) → even 2
    [1 + 2 ** -11, 0x3c00], // tie between 1 and 1+2^-10 → even (1)
    [1 + 3 * 2 ** -11, 0x3c02], // tie between 1+2^-10 and 1+2^-9 → even
    [65519, 0x7bff], // below the halfway point to 65536
    [65520, 0x7c00], // halfway: rounds to even, which is the overflow → inf
    [1e6, 0x7c00], [-1e6, 0xfc00], [Infinity, 0x7c00], [-Infinity, 0xfc00],
  ];
  for (const [x, h] of cases) assert.equal(f32ToF16(x), h, `f32ToF16(${x})`);
  assert.equal(f32ToF16(NaN) & 0x7fff, 0x7e00);
  assert.equal(f32ToF16(fromBits(0xff800001)), 0xfe00); // signalling, negative NaN → quiet, sign kept
  assert.equal(f16ToF32(0x3c00), 1);
  assert.equal(f16ToF32(0x0001), 2 ** -24);
  assert.equal(f16ToF32(0x03ff), 1023 * 2 ** -24);
  assert.equal(f16ToF32(0x7bff), 65504);
  assert.equal(f16ToF32(0xfc00), -Infinity);
  assert.ok(Number.isNaN(f16ToF32(0x7e00)));
  assert.ok(Object.is(f16ToF32(0x8000), -0));
  // every finite f16 survives f16 → f32 → f16
  for (let h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) continue; // NaN
    assert.equal(f32ToF16(f16ToF32(h)), h);
  }
});

test('bf16: round to nearest even, nan forced quiet, subnormals kept', () => {
  assert.equal(f32ToBF16(1), 0x3f80);
  assert.equal(f32ToBF16(-2), 0xc000);
  assert.equal(f32ToBF16(fromBits(0x3f808000)), 0x3f80); // tie, even stays
  assert.equal(f32ToBF16(fromBits(0x3f818000)), 0x3f82); // tie, odd rounds up
  assert.equal(f32ToBF16(fromBits(0x3f808001)), 0x3f81); // above tie
  assert.equal(f32ToBF16(fromBits(0x7f7fffff)), 0x7f80); // max float rounds to inf
  assert.equal(f32ToBF16(fromBits(0x00018000)), 0x0002); // subnormal tie → even, not flushed
  assert.equal(f32ToBF16(fromBits(0x7f800001)), 0x7fc0); // signalling NaN → quiet (bit 6)
  assert.equal(f32ToBF16(fromBits(0xffc12345)), 0xffc1);
  assert.equal(f32ToBF16(Infinity), 0x7f80);
  assert.equal(bf16ToF32(0x3f80), 1);
  assert.equal(bf16ToF32(0xc049), fromBits(0xc0490000));
  for (let h = 0; h < 0x10000; h++) {
    if ((h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0) continue;
    assert.equal(f32ToBF16(bf16ToF32(h)), h);
  }
});

test('q8_0: hand-computed block (roundf is half away from zero) and an all-zero block', () => {
  const x = new Float32Array(64);
  const vals = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 127, -126.49, 0.49999997, 3.2];
  vals.forEach((v, i) => (x[i] = v));
  // amax = 127 → d = 1, id = 1, q = roundf(x)
  const q = quantize(Q8_0, x);
  assert.equal(q.length, 68);
  assert.deepEqual([...q.subarray(0, 2)], [0x00, 0x3c]); // d = 1.0 as f16, little-endian
  const qs = new Int8Array(q.buffer, q.byteOffset + 2, 32);
  assert.deepEqual([...qs.subarray(0, 10)], [1, -1, 2, -2, 3, -3, 127, -126, 0, 3]);
  assert.ok(qs.subarray(10).every((v) => v === 0));
  assert.deepEqual([...q.subarray(34)], new Array(34).fill(0)); // d = 0, id = 0
  const y = dequantize(Q8_0, q, 64);
  assert.deepEqual([...y.subarray(0, 10)], [1, -1, 2, -2, 3, -3, 127, -126, 0, 3]);
});

test('q8_0: scale from amax/127 in f32, values from x·(1/d)', () => {
  const x = new Float32Array(32);
  for (let j = 0; j < 32; j++) x[j] = j - 16; // amax = 16
  const q = quantize(Q8_0, x);
  const d = Math.fround(16 / 127);
  const id = Math.fround(1 / d);
  assert.equal(q[0]! | (q[1]! << 8), f32ToF16(d));
  const qs = new Int8Array(q.buffer, 2, 32);
  assert.equal(qs[0], -127);
  for (let j = 0; j < 32; j++) {
    const v = Math.fround((j - 16) * id);
    assert.equal(qs[j], Math.sign(v) * Math.floor(Math.abs(v) + 0.5));
  }
});

test('q4_0: hand-computed blocks (d = signed max / -8, trunc(x/d + 8.5), nibble order)', () => {
  const x = new Float32Array(64);
  // block 0: the largest magnitude is +8 (first), so d = -1, id = -1, q = min(15, trunc(8.5 - x))
  const b0 = [8, -8, 0, 0.5, -0.5, 1.4, -7.9, 3];
  b0.forEach((v, i) => (x[i] = v));
  x[16] = 2; x[17] = -2; x[31] = 7;
  // block 1: largest magnitude is -4 → d = 0.5, id = 2, q = trunc(2x + 8.5)
  x[32] = -4; x[33] = 4; x[34] = 1; x[48] = -0.25; x[49] = 3.9;
  const q = quantize(Q4_0, x);
  assert.equal(q.length, 36);
  assert.deepEqual([...q.subarray(0, 2)], [0x00, 0xbc]); // -1.0
  const lo0 = [0, 15, 8, 8, 9, 7, 15, 5];
  const hi0: number[] = new Array(16).fill(8);
  hi0[0] = 6; hi0[1] = 10; hi0[15] = 1;
  for (let j = 0; j < 16; j++) assert.equal(q[2 + j], (lo0[j] ?? 8) | (hi0[j]! << 4), `block 0 byte ${j}`);
  assert.deepEqual([...q.subarray(18, 20)], [0x00, 0x38]); // 0.5
  const lo1 = [0, 15, 10]; // 0.5 → 0, 16.5 → 16 → 15, 10.5 → 10
  const hi1: number[] = new Array(16).fill(8);
  hi1[0] = 8; // -0.5 + 8.5 = 8
  hi1[1] = 15; // 7.8 + 8.5 = 16.3 → 16 → clamped to 15
  for (let j = 0; j < 16; j++) assert.equal(q[20 + j], (lo1[j] ?? 8) | (hi1[j]! << 4), `block 1 byte ${j}`);
  const y = dequantize(Q4_0, q, 64);
  assert.deepEqual([...y.subarray(0, 8)], [8, -7, -0, -0, -1, 1, -7, 3]); // 0 · d(−1) = −0, as in C
  assert.equal(y[16], 2); assert.equal(y[17], -2); assert.equal(y[31], 7);
  assert.deepEqual([...y.subarray(32, 35)], [-4, 3.5, 1]);
});

test('golden: bytes match ggml (libggml-base quantize_row_q8_0_ref / q4_0_ref, fp32_to_fp16_row, fp32_to_bf16_row_ref)', () => {
  // Input: 512 blocks cycling through half-integer ties, tiny (f16-subnormal) values, values past
  // the f16 range, and ordinary ones. The hashes were computed once by calling ggml's reference
  // functions (node-llama-cpp's libggml-base.so, through Python ctypes) on these exact floats.
  const r = rand(2024);
  const n = 32 * 512;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const k = i >> 5;
    const u = r();
    x[i] = k % 4 === 0 ? Math.round((u - 0.5) * 400) / 2 : k % 4 === 1 ? (u - 0.5) * 1e-5 : k % 4 === 2 ? (u - 0.5) * 2e5 : (u - 0.5) * 3;
  }
  const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
  assert.equal(sha(quantize(Q8_0, x)), '64ecbeb3cbd8791cdcb6b4e2a854463ba0949020f9da6f4e9de94f42558f3fc1');
  assert.equal(sha(quantize(Q4_0, x)), 'f5b22846a05bc807000bc287cb83ca56344c62f77efd1ae54fa33f9f25ccf17b');
  assert.equal(sha(quantize(F16, x)), '7464ea036a190b169caa0f749954b791b4ecb03e5610df86e5809b2b8687970a');
  assert.equal(sha(quantize(BF16, x)), '5c8e6e170888e2ded12a1c0f40b1c38b922e7ac881440fe8a2648bcffcc3b407');
});

test('round trips stay within each type\'s error bound', () => {
  const n = 32 * 257;
  const x = randn(n, 1, 7);
  for (let i = 0; i < n; i += 97) x[i] *= 10; // outliers, as real weights have
  const ident = dequantize(F32, quantize(F32, x), n);
  assert.deepEqual(ident, x);
  const f16 = dequantize(F16, quantize(F16, x), n);
  const bf = dequantize(BF16, quantize(BF16, x), n);
  for (let i = 0; i < n; i++) {
    assert.ok(Math.abs(f16[i]! - x[i]!) <= Math.abs(x[i]!) * 2 ** -11 + 2 ** -25, `f16 at ${i}`);
    assert.ok(Math.abs(bf[i]! - x[i]!) <= Math.abs(x[i]!) * 2 ** -8, `bf16 at ${i}`);
  }
  for (const [type, steps] of [[Q8_0, 127], [Q4_0, 8]] as const) {
    const y = dequantize(type, quantize(type, x), n);
    for (let b = 0; b < n / 32; b++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
      // half a step, plus the f16 rounding of d (relative 2^-11 of up to `steps` steps), plus for
      // q4_0 the clamp at +7 steps of the side opposite the max (a full step)
      const step = amax / steps;
      const bound = step * (type === Q4_0 ? 1 : 0.5) + amax * 2 ** -10 + 1e-7;
      for (let j = 0; j < 32; j++) {
        const i = b * 32 + j;
        assert.ok(Math.abs(y[i]! - x[i]!) <= bound, `${type} at ${i}: ${x[i]} → ${y[i]} (bound ${bound})`);
      }
    }
  }
});

test('unaligned buffers, dst reuse, sizes and errors', () => {
  const x = randn(64, 3, 11);
  for (const type of [F32, F16, BF16, Q8_0, Q4_0]) {
    const ref = quantize(type, x);
    assert.equal(ref.length, quantizedBytes(type, 64));
    const big = new Uint8Array(ref.length + 3);
    const view = big.subarray(1); // odd offset
    const got = quantize(type, x, view);
    assert.equal(got.length, ref.length);
    assert.deepEqual([...got], [...ref]);
    const y1 = dequantize(type, ref, 64);
    const y2 = new Float32Array(70);
    const got2 = dequantize(type, view, 64, y2);
    assert.equal(got2.length, 64);
    assert.deepEqual([...got2], [...y1]);
  }
  assert.equal(quantizedBytes(Q8_0, 64), 68);
  assert.equal(quantizedBytes(Q4_0, 64), 36);
  assert.throws(() => quantize(Q8_0, new Float32Array(40)), RangeError);
  assert.throws(() => quantize(Q4_0, new Float32Array(32), new Uint8Array(10)), RangeError);
  assert.throws(() => dequantize(F16, new Uint8Array(3), 2), RangeError);
  assert.throws(() => quantize(3 /* q4_1 */, new Float32Array(32)), /q4_1/);
  // NaN bits survive f32 → f16/bf16 arrays as NaN
  const nan = new Float32Array([fromBits(0x7fa00001), 1]);
  assert.ok(Number.isNaN(dequantize(F16, quantize(F16, nan), 2)[0]));
  assert.equal(bitsOf(dequantize(BF16, quantize(BF16, nan), 2)[0]!), 0x7fe00000);
});

test('q8_0 quantizes 13824 × 5120 in well under a second of CPU time', () => {
  const n = 13824 * 5120;
  const x = new Float32Array(n);
  const pattern = randn(5120 * 7, 1, 5); // not a multiple of the row: blocks differ from row to row
  for (let off = 0; off < n; off += pattern.length) x.set(pattern.subarray(0, Math.min(pattern.length, n - off)), off);
  const dst = new Uint8Array(quantizedBytes(Q8_0, n));
  quantize(Q8_0, x.subarray(0, 32 * 4096), dst); // warm up the JIT
  // CPU time, not wall time: other processes on a loaded machine must not fail this test
  const c0 = process.cpuUsage();
  quantize(Q8_0, x, dst);
  const c = process.cpuUsage(c0);
  const ms = (c.user + c.system) / 1000;
  assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms of CPU`); // target < 1 s; slack for slower CPUs
});
