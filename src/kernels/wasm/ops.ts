// Activation preparation, dequantization and the small per-token ops (norm, rope, KV store,
// attention, gated activations, add, softmax). Numerics follow ggml's CPU path; see comments.
import {
  align16, f16_to_f32, f32_to_f16, f32_to_bf16, h2f_lo, h2f_hi, bf2f_lo, bf2f_hi,
  hsum_f32x4,
} from './util';

// ---------------------------------------------------------------------------------------------
// prepareX. Layouts (byte offsets from xq):
//   q8_0 (for Q8_0 and Q4_0 weights): nb blocks {f16 d, i8 q[32]} (34 B each, ggml block_q8_0);
//     then at A = align16(nb·34): f32 dxs[nb] = f32(d)·2^112 (see matvec.ts blockScale);
//     for Q4_0 only, then at A + align16(4·nb), 80 B per block: i16 q[0..15],
//     i16 (q[16+j] − 16·q[j]) for j < 16, and i32x4 corr = lane sums of pmaddwd(8, q) (the −8
//     nibble offset), the operands of matvec.ts dot_q4.
//   bf16: n bf16 values (ggml_bf16_t[n]).
//   f16: n halves; then at align16(2n): f32[n], the rounded values as f32, permuted per 8 as
//     [0 2 4 6 1 3 5 7] (tail past the last multiple of 8 in order) for matvec_f16.

/** ggml quantize_row_q8_0 (x86 AVX path): d = amax/127, id = amax ? 127/amax : 0, q = rne(x·id). */
export function prepare_q8_0(x: usize, xq: usize, n: i32, forQ4: i32): void {
  const nb = n >> 5;
  const dxp = xq + align16(<usize>nb * 34);
  const x4p = dxp + align16(<usize>nb << 2);
  const eight = i16x8.splat(8);
  for (let b = 0; b < nb; b++) {
    const p = x + (<usize>b << 7);
    const v0 = v128.load(p), v1 = v128.load(p, 16), v2 = v128.load(p, 32), v3 = v128.load(p, 48);
    const v4 = v128.load(p, 64), v5 = v128.load(p, 80), v6 = v128.load(p, 96), v7 = v128.load(p, 112);
    let m = f32x4.max(f32x4.max(f32x4.abs(v0), f32x4.abs(v1)), f32x4.max(f32x4.abs(v2), f32x4.abs(v3)));
    m = f32x4.max(m, f32x4.max(f32x4.max(f32x4.abs(v4), f32x4.abs(v5)), f32x4.max(f32x4.abs(v6), f32x4.abs(v7))));
    m = f32x4.max(m, i32x4.shuffle(m, m, 2, 3, 0, 1));
    m = f32x4.max(m, i32x4.shuffle(m, m, 1, 0, 3, 2));
    const amax = f32x4.extract_lane(m, 0);
    const d: f32 = amax / <f32>127;
    const id: f32 = amax != 0 ? <f32>127 / amax : 0;
    const idv = f32x4.splat(id);
    const q0 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v0, idv)));
    const q1 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v1, idv)));
    const q2 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v2, idv)));
    const q3 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v3, idv)));
    const q4 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v4, idv)));
    const q5 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v5, idv)));
    const q6 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v6, idv)));
    const q7 = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v7, idv)));
    const o = xq + <usize>b * 34;
    const dh = f32_to_f16(d);
    store<u16>(o, <u16>dh);
    v128.store(o, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q0, q1), i16x8.narrow_i32x4_s(q2, q3)), 2);
    v128.store(o, i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(q4, q5), i16x8.narrow_i32x4_s(q6, q7)), 18);
    store<f32>(dxp + (<usize>b << 2), f16_to_f32(dh) * reinterpret<f32>(0x77800000)); // ·2^112, finite
    if (forQ4) {
      const l0 = v128.load8x8_s(o, 2), l1 = v128.load8x8_s(o, 10), h0 = v128.load8x8_s(o, 18), h1 = v128.load8x8_s(o, 26);
      const c = i32x4.add(
        i32x4.add(i32x4.dot_i16x8_s(eight, l0), i32x4.dot_i16x8_s(eight, l1)),
        i32x4.add(i32x4.dot_i16x8_s(eight, h0), i32x4.dot_i16x8_s(eight, h1)));
      const d4 = x4p + <usize>b * 80;
      v128.store(d4, l0);
      v128.store(d4, l1, 16);
      v128.store(d4, i16x8.sub(h0, i16x8.shl(l0, 4)), 32);
      v128.store(d4, i16x8.sub(h1, i16x8.shl(l1, 4)), 48);
      v128.store(d4, c, 64);
    }
  }
}

/** f16 halves, then the rounded values as f32 (permuted, see the layout note above). */
export function prepare_f16(x: usize, xq: usize, n: i32): void {
  const xf = xq + align16(<usize>n << 1);
  const n8 = n & ~7;
  for (let i = 0; i < n; i++) {
    const h = f32_to_f16(load<f32>(x + (<usize>i << 2)));
    store<u16>(xq + (<usize>i << 1), <u16>h);
    const j = i < n8 ? (i & ~7) | ((i & 1) << 2) | ((i & 7) >> 1) : i;
    store<f32>(xf + (<usize>j << 2), f16_to_f32(h));
  }
}

export function prepare_bf16(x: usize, xq: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    store<u16>(xq + (<usize>i << 1), <u16>f32_to_bf16(load<f32>(x + (<usize>i << 2))));
  }
}

export function copy_bytes(src: usize, dst: usize, n: i32): void {
  memory.copy(dst, src, <usize>n);
}

// ---------------------------------------------------------------------------------------------
// dequantRow

export function dequant_q8_0(w: usize, out: usize, cols: i32): void {
  const nb = cols >> 5;
  for (let b = 0; b < nb; b++) {
    const p = w + <usize>b * 34;
    const o = out + (<usize>b << 7);
    const d = f32x4.splat(f16_to_f32(<u32>load<u16>(p)));
    for (let k: usize = 0; k < 32; k += 8) {
      const q = v128.load8x8_s(p + 2 + k);
      v128.store(o + (k << 2), f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(q)), d));
      v128.store(o + (k << 2), f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(q)), d), 16);
    }
  }
}

export function dequant_q4_0(w: usize, out: usize, cols: i32): void {
  const nb = cols >> 5;
  for (let b = 0; b < nb; b++) {
    const p = w + <usize>b * 18;
    const o = out + (<usize>b << 7);
    const d = f16_to_f32(<u32>load<u16>(p));
    for (let j: usize = 0; j < 16; j++) {
      const v = <i32>load<u8>(p + 2 + j);
      store<f32>(o + (j << 2), <f32>((v & 15) - 8) * d);
      store<f32>(o + (j << 2), <f32>((v >> 4) - 8) * d, 64);
    }
  }
}

export function dequant_f16(w: usize, out: usize, n: i32): void {
  const n8 = n & ~7;
  let i = 0;
  for (; i < n8; i += 8) {
    const h = v128.load(w + (<usize>i << 1));
    v128.store(out + (<usize>i << 2), h2f_lo(h));
    v128.store(out + (<usize>i << 2), h2f_hi(h), 16);
  }
  for (; i < n; i++) store<f32>(out + (<usize>i << 2), f16_to_f32(<u32>load<u16>(w + (<usize>i << 1))));
}

export function dequant_bf16(w: usize, out: usize, n: i32): void {
  const n8 = n & ~7;
  let i = 0;
  for (; i < n8; i += 8) {
    const h = v128.load(w + (<usize>i << 1));
    v128.store(out + (<usize>i << 2), bf2f_lo(h));
    v128.store(out + (<usize>i << 2), bf2f_hi(h), 16);
  }
  for (; i < n; i++) store<u32>(out + (<usize>i << 2), <u32>load<u16>(w + (<usize>i << 1)) << 16);
}

// ---------------------------------------------------------------------------------------------
// rmsnorm: ggml_compute_forward_rms_norm_f32 (Σ of f32 squares in double, mean rounded to f32,
// scale = 1/sqrtf(mean + eps)), then ggml_mul by the norm weight: out = (x·scale)·w.

export function rmsnorm(x: usize, w: usize, out: usize, n: i32, eps: f32): void {
  const n4 = n & ~3;
  let s0 = f64x2.splat(0), s1 = f64x2.splat(0);
  let i = 0;
  for (; i < n4; i += 4) {
    const v = v128.load(x + (<usize>i << 2));
    const q = f32x4.mul(v, v);
    s0 = f64x2.add(s0, f64x2.promote_low_f32x4(q));
    s1 = f64x2.add(s1, f64x2.promote_low_f32x4(i32x4.shuffle(q, q, 2, 3, 0, 1)));
  }
  const st = f64x2.add(s0, s1);
  let sum: f64 = f64x2.extract_lane(st, 0) + f64x2.extract_lane(st, 1);
  for (; i < n; i++) {
    const v = load<f32>(x + (<usize>i << 2));
    sum += <f64>(v * v);
  }
  const mean = <f32>(sum / <f64>n);
  const scale: f32 = <f32>1 / Mathf.sqrt(mean + eps);
  const sv = f32x4.splat(scale);
  i = 0;
  for (; i < n4; i += 4) {
    const o = <usize>i << 2;
    v128.store(out + o, f32x4.mul(f32x4.mul(v128.load(x + o), sv), v128.load(w + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(out + o, (load<f32>(x + o) * scale) * load<f32>(w + o));
  }
}

// ---------------------------------------------------------------------------------------------
// rope, ggml "normal" mode (ggml_rope_cache_init with freq_scale 1, ext_factor 0, mscale 1):
// theta_scale = powf(base, -2/n_dims); θ_0 = pos; θ_{i+1} = θ_i·theta_scale (f32);
// (x0, x1) → (x0·cosθ − x1·sinθ, x0·sinθ + x1·cosθ). Dims ≥ ropeDim are left unchanged.
// cache: scratch for ropeDim floats (cos, sin interleaved).

export function rope(v: usize, nHeads: i32, headDim: i32, pos: i32, base: f32, ropeDim: i32, cache: usize): void {
  const thetaScale = <f32>Math.pow(<f64>base, <f64>(<f32>-2.0 / <f32>ropeDim));
  let theta = <f32>pos;
  const half = ropeDim >> 1;
  for (let i = 0; i < half; i++) {
    store<f32>(cache + (<usize>i << 3), <f32>Math.cos(<f64>theta));
    store<f32>(cache + (<usize>i << 3), <f32>Math.sin(<f64>theta), 4);
    theta *= thetaScale;
  }
  for (let h = 0; h < nHeads; h++) {
    const p = v + (<usize>h * <usize>headDim << 2);
    for (let i = 0; i < half; i++) {
      const o = <usize>i << 3;
      const c = load<f32>(cache + o), s = load<f32>(cache + o, 4);
      const x0 = load<f32>(p + o), x1 = load<f32>(p + o, 4);
      store<f32>(p + o, x0 * c - x1 * s);
      store<f32>(p + o, x0 * s + x1 * c, 4);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// storeKV (f32 → f16 RNE); also used to round q to f16 for the f16 K dot product.

export function store_f16(src: usize, dst: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    store<u16>(dst + (<usize>i << 1), <u16>f32_to_f16(load<f32>(src + (<usize>i << 2))));
  }
}

// ---------------------------------------------------------------------------------------------
// gated activations, add, softmax

export function silu_mul(g: usize, u: usize, out: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 2;
    const x = load<f32>(g + o);
    store<f32>(out + o, (x / (<f32>1 + Mathf.exp(-x))) * load<f32>(u + o));
  }
}

export function relu_mul(g: usize, u: usize, out: usize, n: i32): void {
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 2;
    const x = load<f32>(g + o);
    store<f32>(out + o, (x > 0 ? x : <f32>0) * load<f32>(u + o));
  }
}

export function add(x: usize, y: usize, n: i32): void {
  const n4 = n & ~3;
  let i = 0;
  for (; i < n4; i += 4) {
    const o = <usize>i << 2;
    v128.store(x + o, f32x4.add(v128.load(x + o), v128.load(y + o)));
  }
  for (; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(x + o, load<f32>(x + o) + load<f32>(y + o));
  }
}

/** ggml_soft_max: max-subtracted expf, Σ in double, then scale by (f32)(1/Σ). */
export function softmax(x: usize, n: i32): void {
  let m: f32 = -Infinity;
  for (let i = 0; i < n; i++) m = max(m, load<f32>(x + (<usize>i << 2)));
  let sum: f64 = 0;
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 2;
    const e = Mathf.exp(load<f32>(x + o) - m);
    store<f32>(x + o, e);
    sum += <f64>e;
  }
  const inv = <f32>(1.0 / sum);
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 2;
    store<f32>(x + o, load<f32>(x + o) * inv);
  }
}
