// Plain-JS references for the kernel tests, written from the IEEE / ggml definitions with double
// arithmetic (independent of the bit tricks in src/kernels/wasm).
export const F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8, BF16 = 30;
const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);
export const fround = Math.fround;
export function f32Bits(x: number): number { f32buf[0] = x; return u32buf[0]; }
export function bitsF32(u: number): number { u32buf[0] = u; return f32buf[0]; }

export function roundHalfEven(v: number): number {
  const f = Math.floor(v), d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** f32 value → IEEE half bits, round-to-nearest-even (as F16C vcvtps2ph). */
export function f32ToF16(x: number): number {
  x = fround(x);
  if (Number.isNaN(x)) return 0x7e00 | ((f32Bits(x) >>> 13) & 0x3ff) | ((f32Bits(x) >>> 16) & 0x8000);
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24); // may round up to 0x400: fine
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  let m = roundHalfEven((a / 2 ** e - 1) * 1024);
  if (m === 1024) { m = 0; e++; }
  return sign | ((e + 15) << 10) | m;
}

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

export function f32ToBF16(x: number): number {
  const u = f32Bits(x);
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 64) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
export function bf16ToF32(h: number): number { return bitsF32((h << 16) >>> 0); }

/** ggml quantize_row_q8_0 (x86 AVX path) → bytes (34 per block). */
export function quantizeQ8(x: ArrayLike<number>): Uint8Array {
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 34);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
    const d = fround(amax / 127);
    const id = amax !== 0 ? fround(127 / amax) : 0;
    dv.setUint16(b * 34, f32ToF16(d), true);
    for (let j = 0; j < 32; j++) dv.setInt8(b * 34 + 2 + j, roundHalfEven(fround(x[b * 32 + j] * id)));
  }
  return out;
}

/** Weight row element values (as doubles) of one GGML row. */
export function dequantRef(type: number, row: Uint8Array, cols: number): Float64Array {
  const dv = new DataView(row.buffer, row.byteOffset, row.byteLength);
  const out = new Float64Array(cols);
  for (let c = 0; c < cols; c++) {
    switch (type) {
      case F32: out[c] = dv.getFloat32(c * 4, true); break;
      case F16: out[c] = f16ToF32(dv.getUint16(c * 2, true)); break;
      case BF16: out[c] = bf16ToF32(dv.getUint16(c * 2, true)); break;
      case Q8_0: {
        const b = c >> 5, j = c & 31;
        out[c] = f16ToF32(dv.getUint16(b * 34, true)) * dv.getInt8(b * 34 + 2 + j);
        break;
      }
      case Q4_0: {
        const b = c >> 5, j = c & 31;
        const byte = dv.getUint8(b * 18 + 2 + (j & 15));
        out[c] = f16ToF32(dv.getUint16(b * 18, true)) * ((j < 16 ? byte & 15 : byte >> 4) - 8);
        break;
      }
    }
  }
  return out;
}

export function rowBytesRef(type: number, cols: number): number {
  return type === F32 ? cols * 4 : type === F16 || type === BF16 ? cols * 2 : type === Q8_0 ? (cols / 32) * 34 : (cols / 32) * 18;
}

/** Deterministic PRNG (xorshift32) in [0, 1). */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 4294967296; };
}

/** Random valid weight bytes for `rows` rows of a type (finite values, sane scales). */
export function randomWeights(type: number, rows: number, cols: number, r: () => number): Uint8Array {
  const rb = rowBytesRef(type, cols);
  const u8 = new Uint8Array(rows * rb);
  const dv = new DataView(u8.buffer);
  const n = rows * cols;
  // magnitudes spread over many binades (incl. f16 subnormals and values ≥ 2)
  const val = () => (r() * 2 - 1) * 2 ** Math.floor(r() * 36 - 26);
  if (type === F32) for (let i = 0; i < n; i++) dv.setFloat32(i * 4, val(), true);
  else if (type === F16) for (let i = 0; i < n; i++) dv.setUint16(i * 2, f32ToF16(val()), true);
  else if (type === BF16) for (let i = 0; i < n; i++) dv.setUint16(i * 2, f32ToBF16(val()), true);
  else {
    for (let i = 0; i < u8.length; i++) u8[i] = Math.floor(r() * 256);
    const bb = type === Q8_0 ? 34 : 18;
    for (let o = 0; o < u8.length; o += bb) dv.setUint16(o, f32ToF16(r() * 2 ** Math.floor(r() * 30 - 22)), true);
  }
  return u8;
}
