// Scalar and SIMD helpers shared by the kernels: half/bfloat conversions, horizontal sums.
// All conversions follow IEEE round-to-nearest-even, like F16C's vcvtps2ph and ggml's bf16 helper.

/** IEEE half (low 16 bits of h) → f32, exact, including subnormals, ±inf and NaN. */
@inline export function f16_to_f32(h: u32): f32 {
  const sign = (h & 0x8000) << 16;
  const mag = h & 0x7fff;
  let bits: u32;
  if (mag >= 0x7c00) bits = 0x7f800000 | ((mag & 0x3ff) << 13);
  else if (mag >= 0x400) bits = (mag << 13) + 0x38000000;
  else bits = reinterpret<u32>(<f32>mag * reinterpret<f32>(0x33800000));   // m · 2^-24
  return reinterpret<f32>(bits | sign);
}

/** f32 → IEEE half, round to nearest even; overflow → ±inf; NaN stays NaN (quiet). */
export function f32_to_f16(f: f32): u32 {
  let x = reinterpret<u32>(f);
  const sign = (x >> 16) & 0x8000;
  x &= 0x7fffffff;
  if (x >= 0x7f800000) {
    if (x == 0x7f800000) return sign | 0x7c00;
    return sign | 0x7e00 | ((x >> 13) & 0x3ff);
  }
  if (x >= 0x477ff000) return sign | 0x7c00;          // ≥ 65520 rounds to inf
  if (x < 0x38800000) {                                // below 2^-14: subnormal half or zero
    // adding 0.5 puts the ulp at 2^-24, so the FPU rounds to the half's subnormal grid (RNE)
    return sign | (reinterpret<u32>(reinterpret<f32>(x) + <f32>0.5) - 0x3f000000);
  }
  const odd = (x >> 13) & 1;
  return sign | ((x + 0xc8000fff + odd) >> 13);
}

/** f32 → bfloat16, round to nearest even; NaN forced quiet (ggml_compute_fp32_to_bf16). */
@inline export function f32_to_bf16(f: f32): u32 {
  const x = reinterpret<u32>(f);
  if ((x & 0x7fffffff) > 0x7f800000) return (x >> 16) | 64;
  return (x + (0x7fff + ((x >> 16) & 1))) >> 16;
}

/** Half → f32 on i32 lanes: o holds the half's exponent+mantissa at bits 27..13, sign its sign
 *  at bit 31. Exact for subnormals, inf and NaN, and never feeds a subnormal f32 to the FPU
 *  (x86 takes a slow microcode assist on those): a subnormal half m·2^-24 is computed as
 *  (1 + m/1024)·2^-14 − 2^-14. */
@inline export function h2f_core(o: v128, sign: v128): v128 {
  const e = v128.and(o, i32x4.splat(0x0f800000));
  const z = i32x4.eq(e, i32x4.splat(0));
  let b = i32x4.add(i32x4.add(o, i32x4.splat(0x38000000)), v128.and(z, i32x4.splat(0x00800000)));
  b = i32x4.add(b, v128.and(i32x4.eq(e, i32x4.splat(0x0f800000)), i32x4.splat(0x38000000)));
  return v128.or(f32x4.sub(b, v128.and(z, i32x4.splat(0x38800000))), sign);
}

/** Four sign-extended halves (i32x4) → f32x4. */
@inline export function h2f4(hs: v128): v128 {
  return h2f_core(v128.and(i32x4.shl(hs, 13), i32x4.splat(0x0fffe000)), v128.and(hs, i32x4.splat(<i32>0x80000000)));
}
/** Halves in the low / high 16 bits of each i32 lane → f32x4 (even / odd elements of 8 packed). */
@inline export function h2f_even(v: v128): v128 {
  return h2f_core(v128.and(i32x4.shl(v, 13), i32x4.splat(0x0fffe000)), v128.and(i32x4.shl(v, 16), i32x4.splat(<i32>0x80000000)));
}
/** Fast half → f32 for the even (low) / odd (high) half of each i32 lane: the half's bits are
 *  placed in an f32 (value·2^-112) and scaled by 2^112. Exact for finite halves; inf/NaN come
 *  out as large finite numbers, and subnormal halves are correct but hit the x86 slow path for
 *  subnormal operands. Used for KV-cache reads, where subnormals are rare (weights use the
 *  exact branch-free h2f_even / h2f_odd). */
@inline export function h2f_even_fast(v: v128): v128 {
  return f32x4.mul(v128.and(i32x4.shr_s(i32x4.shl(v, 16), 3), i32x4.splat(<i32>0x8fffe000)), f32x4.splat(reinterpret<f32>(0x77800000)));
}
@inline export function h2f_odd_fast(v: v128): v128 {
  return f32x4.mul(v128.and(i32x4.shr_s(v, 3), i32x4.splat(<i32>0x8fffe000)), f32x4.splat(reinterpret<f32>(0x77800000)));
}
@inline export function h2f_odd(v: v128): v128 {
  return h2f_core(v128.and(i32x4.shr_u(v, 3), i32x4.splat(0x0fffe000)), v128.and(v, i32x4.splat(<i32>0x80000000)));
}

/** Low four halves of 8 packed halves → f32x4. */
@inline export function h2f_lo(h8: v128): v128 {
  return h2f4(i32x4.extend_low_i16x8_s(h8));
}
@inline export function h2f_hi(h8: v128): v128 {
  return h2f4(i32x4.extend_high_i16x8_s(h8));
}

/** Low / high four bf16 of 8 packed bf16 → f32x4 (bf16 bits in the upper half of each lane). */
@inline export function bf2f_lo(h8: v128): v128 {
  return i16x8.shuffle(i32x4.splat(0), h8, 0, 8, 1, 9, 2, 10, 3, 11);
}
@inline export function bf2f_hi(h8: v128): v128 {
  return i16x8.shuffle(i32x4.splat(0), h8, 4, 12, 5, 13, 6, 14, 7, 15);
}

@inline export function hsum_f32x4(v: v128): f32 {
  const t = f32x4.add(v, i32x4.shuffle(v, v, 2, 3, 0, 1));
  const u = f32x4.add(t, i32x4.shuffle(t, t, 1, 0, 3, 2));
  return f32x4.extract_lane(u, 0);
}

@inline export function align16(n: usize): usize {
  return (n + 15) & ~(<usize>15);
}
