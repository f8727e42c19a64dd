// Element conversions and block quantizers, pure TypeScript, bit-exact with ggml's reference code:
// - f16: IEEE binary16, round to nearest even, subnormals kept, overflow → ±inf, NaN → ±0x7e00.
// - bf16: as ggml's GGML_FP32_TO_BF16 (round to nearest even on the bits, NaN forced quiet with
//   bit 6; subnormals not flushed).
// - q8_0: quantize_row_q8_0_ref (d = amax/127, q = roundf(x·(1/d)), half away from zero).
// - q4_0: quantize_row_q4_0_ref (d = max/−8 with max the signed value of largest magnitude,
//   q = min(15, trunc(x·(1/d) + 8.5)), byte j = q[j] | q[j+16] << 4).
// All float arithmetic that ggml does in single precision is rounded with Math.fround at the same
// points, so the bytes match files made by llama.cpp's quantize tool and gguf-py.
// Multi-byte values are little-endian (GGUF's order); we assume a little-endian host, as Node has.

import { TensorType, typeName } from './ggml-types.js';

const QK = 32; // elements per q8_0 / q4_0 block
const Q8_0_BYTES = 34; // f16 d + 32 × int8
const Q4_0_BYTES = 18; // f16 d + 16 bytes of nibbles

// ---------------------------------------------------------------------------------------------
// scalar conversions

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** binary16 bits of the f32 whose bits are `x` (uint32), round to nearest even. */
function f16FromF32Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const a = x & 0x7fffffff;
  if (a >= 0x47800000) {
    // |x| ≥ 65536, inf or NaN. NaN becomes the canonical quiet NaN (keeping the sign), as
    // ggml's portable ggml_compute_fp32_to_fp16 does.
    if (a > 0x7f800000) return sign | 0x7e00;
    return sign | 0x7c00;
  }
  if (a >= 0x38800000) {
    // normal in f16 (|x| ≥ 2^-14): rebias the exponent (127 → 15) and round the 13 dropped
    // mantissa bits to nearest even; a carry may go into the exponent, up to 0x7c00 = inf.
    return sign | ((a - 0x38000000 + 0xfff + ((a >>> 13) & 1)) >>> 13);
  }
  // f16 subnormal or zero: result = RNE(|x| · 2^24) as an integer (0..1024; 1024 is the
  // smallest normal, whose encoding is the same number).
  const e = a >>> 23;
  if (e < 102) return sign; // |x| < 2^-25: rounds to 0 (2^-25 itself is a tie → even 0)
  const m = (a & 0x7fffff) | 0x800000;
  const shift = 126 - e; // 14..24
  let q = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) !== 0)) q++;
  return sign | q;
}

/** bf16 bits of the f32 whose bits are `x`, as ggml_compute_fp32_to_bf16. */
function bf16FromF32Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 64) & 0xffff; // NaN → quiet NaN
  return (x + 0x7fff + ((x >>> 16) & 1)) >>> 16; // x ≤ 0xff800000 here, so no overflow past 16 bits
}

/** f32 bit patterns of all 65536 f16 values (bits, so NaN payloads survive). */
const F16_TO_F32_BITS = (() => {
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const e = (h >>> 10) & 0x1f;
    let m = h & 0x3ff;
    let bits: number;
    if (e === 0x1f) bits = 0x7f800000 | (m << 13);
    else if (e !== 0) bits = ((e + 112) << 23) | (m << 13);
    else if (m === 0) bits = 0;
    else {
      // subnormal: normalise
      let ex = 113;
      while ((m & 0x400) === 0) {
        m <<= 1;
        ex--;
      }
      bits = (ex << 23) | ((m & 0x3ff) << 13);
    }
    t[h] = (sign | bits) >>> 0;
  }
  return t;
})();
const F16_TO_F32 = new Float32Array(F16_TO_F32_BITS.buffer);

/** f32 → binary16 bits (x is first rounded to f32). */
export function f32ToF16(x: number): number {
  scratchF32[0] = x;
  return f16FromF32Bits(scratchU32[0]!);
}

/** binary16 bits → value. */
export function f16ToF32(h: number): number {
  return F16_TO_F32[h & 0xffff]!;
}

/** f32 → bf16 bits (x is first rounded to f32), as ggml's GGML_FP32_TO_BF16. */
export function f32ToBF16(x: number): number {
  scratchF32[0] = x;
  return bf16FromF32Bits(scratchU32[0]!);
}

/** bf16 bits → value. */
export function bf16ToF32(h: number): number {
  scratchU32[0] = (h & 0xffff) << 16;
  return scratchF32[0]!;
}

// ---------------------------------------------------------------------------------------------
// arrays

/** Bytes that `n` elements take in `type` (n must be a whole number of blocks). */
export function quantizedBytes(type: number, n: number): number {
  switch (type) {
    case TensorType.F32:
      return n * 4;
    case TensorType.F16:
    case TensorType.BF16:
      return n * 2;
    case TensorType.Q8_0:
      checkBlocks(type, n);
      return (n / QK) * Q8_0_BYTES;
    case TensorType.Q4_0:
      checkBlocks(type, n);
      return (n / QK) * Q4_0_BYTES;
    default:
      throw new RangeError(`quant: unsupported tensor type ${typeName(type)}`);
  }
}

function checkBlocks(type: number, n: number): void {
  if (n % QK !== 0) throw new RangeError(`quant: ${typeName(type)} needs a multiple of ${QK} elements, got ${n}`);
}

/** A little-endian u16 view of `b` when its offset allows one, else null. */
function u16View(b: Uint8Array, n: number): Uint16Array | null {
  return (b.byteOffset & 1) === 0 ? new Uint16Array(b.buffer, b.byteOffset, n) : null;
}

/**
 * Encode `src` (row-major; for q8_0 / q4_0 rows must be whole blocks, i.e. cols % 32 == 0) as
 * `type`. Writes into `dst` (from its start) when given and returns the written bytes.
 */
export function quantize(type: number, src: Float32Array, dst?: Uint8Array): Uint8Array {
  const n = src.length;
  const bytes = quantizedBytes(type, n);
  if (dst === undefined) dst = new Uint8Array(bytes);
  else if (dst.length < bytes) throw new RangeError(`quant: dst has ${dst.length} bytes, ${typeName(type)} needs ${bytes}`);
  const out = dst.length === bytes ? dst : dst.subarray(0, bytes);
  switch (type) {
    case TensorType.F32:
      out.set(new Uint8Array(src.buffer, src.byteOffset, bytes));
      break;
    case TensorType.F16:
      toF16(src, out);
      break;
    case TensorType.BF16:
      toBF16(src, out);
      break;
    case TensorType.Q8_0:
      quantizeQ8_0(src, out);
      break;
    case TensorType.Q4_0:
      quantizeQ4_0(src, out);
      break;
  }
  return out;
}

// Two copies rather than one loop taking the converter as a callback: V8 does not inline a
// callback that changes between calls, and the call costs 3× the conversion.
function toF16(src: Float32Array, out: Uint8Array): void {
  const n = src.length;
  const s = new Uint32Array(src.buffer, src.byteOffset, n); // bits: keeps NaN payloads
  const o16 = u16View(out, n);
  if (o16) {
    for (let i = 0; i < n; i++) o16[i] = f16FromF32Bits(s[i]!);
  } else {
    for (let i = 0; i < n; i++) {
      const h = f16FromF32Bits(s[i]!);
      out[2 * i] = h & 0xff;
      out[2 * i + 1] = h >>> 8;
    }
  }
}

function toBF16(src: Float32Array, out: Uint8Array): void {
  const n = src.length;
  const s = new Uint32Array(src.buffer, src.byteOffset, n);
  const o16 = u16View(out, n);
  if (o16) {
    for (let i = 0; i < n; i++) o16[i] = bf16FromF32Bits(s[i]!);
  } else {
    for (let i = 0; i < n; i++) {
      const h = bf16FromF32Bits(s[i]!);
      out[2 * i] = h & 0xff;
      out[2 * i + 1] = h >>> 8;
    }
  }
}

function quantizeQ8_0(src: Float32Array, out: Uint8Array): void {
  const nb = src.length / QK;
  const q = new Int8Array(out.buffer, out.byteOffset, out.length);
  for (let b = 0; b < nb; b++) {
    const s = b * QK;
    const o = b * Q8_0_BYTES;
    let amax = 0;
    for (let j = 0; j < QK; j++) {
      const a = Math.abs(src[s + j]!);
      amax = amax > a ? amax : a; // ggml's MAX(amax, fabsf(v))
    }
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    scratchF32[0] = d;
    const h = f16FromF32Bits(scratchU32[0]!);
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let j = 0; j < QK; j++) {
      const x = Math.fround(src[s + j]! * id);
      // roundf: half away from zero. |x| ≤ ~127 and |x| + 0.5 is exact in double, so truncating
      // it is floor; `0 - r` rather than `-r` keeps an int (−0 would deoptimise the loop).
      const r = (Math.abs(x) + 0.5) | 0;
      q[o + 2 + j] = x < 0 ? 0 - r : r;
    }
  }
}

function quantizeQ4_0(src: Float32Array, out: Uint8Array): void {
  const nb = src.length / QK;
  const half = QK / 2;
  for (let b = 0; b < nb; b++) {
    const s = b * QK;
    const o = b * Q4_0_BYTES;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = src[s + j]!;
      const a = Math.abs(v);
      if (amax < a) {
        amax = a;
        max = v;
      }
    }
    const d = Math.fround(max / -8);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    scratchF32[0] = d;
    const h = f16FromF32Bits(scratchU32[0]!);
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let j = 0; j < half; j++) {
      const x0 = Math.fround(src[s + j]! * id);
      const x1 = Math.fround(src[s + half + j]! * id);
      // (int8_t)(x + 8.5f): truncation toward zero; the sum is ≥ ~0.5 so | 0 truncates right.
      const q0 = Math.min(15, Math.fround(x0 + 8.5) | 0);
      const q1 = Math.min(15, Math.fround(x1 + 8.5) | 0);
      out[o + 2 + j] = q0 | (q1 << 4);
    }
  }
}

/**
 * Decode `n` elements of `type` from `src` (from its start; any byte offset) into f32. Writes into
 * `dst` (from its start) when given and returns the written elements.
 */
export function dequantize(type: number, src: Uint8Array, n: number, dst?: Float32Array): Float32Array {
  const bytes = quantizedBytes(type, n);
  if (src.length < bytes) throw new RangeError(`quant: src has ${src.length} bytes, ${n} × ${typeName(type)} needs ${bytes}`);
  if (dst === undefined) dst = new Float32Array(n);
  else if (dst.length < n) throw new RangeError(`quant: dst has room for ${dst.length} elements, need ${n}`);
  const out = dst.length === n ? dst : dst.subarray(0, n);
  switch (type) {
    case TensorType.F32:
      new Uint8Array(out.buffer, out.byteOffset, bytes).set(src.subarray(0, bytes));
      break;
    case TensorType.F16: {
      const o = new Uint32Array(out.buffer, out.byteOffset, n);
      const s16 = u16View(src, n);
      if (s16) for (let i = 0; i < n; i++) o[i] = F16_TO_F32_BITS[s16[i]!]!;
      else for (let i = 0; i < n; i++) o[i] = F16_TO_F32_BITS[src[2 * i]! | (src[2 * i + 1]! << 8)]!;
      break;
    }
    case TensorType.BF16: {
      const o = new Uint32Array(out.buffer, out.byteOffset, n);
      const s16 = u16View(src, n);
      if (s16) for (let i = 0; i < n; i++) o[i] = s16[i]! << 16;
      else for (let i = 0; i < n; i++) o[i] = (src[2 * i]! << 16) | (src[2 * i + 1]! << 24);
      break;
    }
    case TensorType.Q8_0: {
      const q = new Int8Array(src.buffer, src.byteOffset, bytes);
      for (let b = 0, nb = n / QK; b < nb; b++) {
        const o = b * Q8_0_BYTES;
        const d = F16_TO_F32[src[o]! | (src[o + 1]! << 8)]!;
        const y = b * QK;
        for (let j = 0; j < QK; j++) out[y + j] = q[o + 2 + j]! * d;
      }
      break;
    }
    case TensorType.Q4_0: {
      const half = QK / 2;
      for (let b = 0, nb = n / QK; b < nb; b++) {
        const o = b * Q4_0_BYTES;
        const d = F16_TO_F32[src[o]! | (src[o + 1]! << 8)]!;
        const y = b * QK;
        for (let j = 0; j < half; j++) {
          const v = src[o + 2 + j]!;
          out[y + j] = ((v & 0x0f) - 8) * d;
          out[y + half + j] = ((v >>> 4) - 8) * d;
        }
      }
      break;
    }
  }
  return out;
}
