// Matrix × vector kernels over GGML row layouts. Each computes rows [r0, r1) of y = W·x, with
// W starting at byte offset w (row 0) and x already in the weight type's vec_dot format
// (see prepare.ts for the prepared-x layouts). y is f32, indexed by absolute row.
import { align16, f16_to_f32, hsum_f32x4, hsum_i32x4, bf2f_lo, bf2f_hi, F16_MAGIC } from './util';

// ---------------------------------------------------------------------------------------------
// q8_0 / q4_0 weights · q8_0 activations.
// Per block the integer dot product is exact (i32); four blocks are transposed into one i32x4
// [S0..S3], converted to f32 and multiplied by (dw·dx) per block, accumulated in f32x4.

/** f16 scales of four consecutive blocks (stride 34 or 18 bytes) → f32x4; finite halves only. */
@inline function scales_q8(p: usize): v128 {
  let h = i32x4.splat(0);
  h = v128.load16_lane(p, h, 1, 0);
  h = v128.load16_lane(p, h, 3, 34);
  h = v128.load16_lane(p, h, 5, 68);
  h = v128.load16_lane(p, h, 7, 102);
  const b = v128.and(i32x4.shl(i32x4.shr_s(h, 16), 13), i32x4.splat(0x8fffe000));
  return f32x4.mul(b, f32x4.splat(F16_MAGIC));
}
@inline function scales_q4(p: usize): v128 {
  let h = i32x4.splat(0);
  h = v128.load16_lane(p, h, 1, 0);
  h = v128.load16_lane(p, h, 3, 18);
  h = v128.load16_lane(p, h, 5, 36);
  h = v128.load16_lane(p, h, 7, 54);
  const b = v128.and(i32x4.shl(i32x4.shr_s(h, 16), 13), i32x4.splat(0x8fffe000));
  return f32x4.mul(b, f32x4.splat(F16_MAGIC));
}
@inline function scale1(p: usize): f32 {
  const h = <u32>load<u16>(p);
  return reinterpret<f32>(((h & 0x8000) << 16) | ((h & 0x7fff) << 13)) * F16_MAGIC;
}

/** i32x4 partial sums of one q8_0 block (at p) against x (4 × i16x8). */
@inline function dot_q8(p: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  const a = i32x4.dot_i16x8_s(v128.load8x8_s(p, 2), x0);
  const b = i32x4.dot_i16x8_s(v128.load8x8_s(p, 10), x1);
  const c = i32x4.dot_i16x8_s(v128.load8x8_s(p, 18), x2);
  const d = i32x4.dot_i16x8_s(v128.load8x8_s(p, 26), x3);
  return i32x4.add(i32x4.add(a, b), i32x4.add(c, d));
}
/** Same for a q4_0 block: Σ nibble·x (unsigned nibbles; the −8 is applied via Σx later). */
@inline function dot_q4(p: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  const raw = v128.load(p, 2);
  const lo = v128.and(raw, i8x16.splat(0x0f));
  const hi = v128.and(i16x8.shr_u(raw, 4), i8x16.splat(0x0f));
  const a = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(lo), x0);
  const b = i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(lo), x1);
  const c = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(hi), x2);
  const d = i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(hi), x3);
  return i32x4.add(i32x4.add(a, b), i32x4.add(c, d));
}
@inline function pair(s0: v128, s1: v128): v128 {
  return i32x4.add(i32x4.shuffle(s0, s1, 0, 4, 1, 5), i32x4.shuffle(s0, s1, 2, 6, 3, 7));
}
@inline function combine(t0: v128, t1: v128): v128 {
  return i32x4.add(i32x4.shuffle(t0, t1, 0, 1, 4, 5), i32x4.shuffle(t0, t1, 2, 3, 6, 7));
}

export function matvec_q8_0(w: usize, xq: usize, y: usize, cols: i32, r0: i32, r1: i32): void {
  const nb = cols >> 5;
  const rs = <usize>nb * 34;
  const nb4 = nb & ~3;
  const dxp = xq + align16(rs);
  let r = r0;
  for (; r + 2 <= r1; r += 2) {
    let pa = w + <usize>r * rs;
    let pb = pa + rs;
    let xp = xq;
    let acca = f32x4.splat(0);
    let accb = f32x4.splat(0);
    for (let b = 0; b < nb4; b += 4) {
      const sca = scales_q8(pa);
      const scb = scales_q8(pb);
      let x0 = v128.load8x8_s(xp, 2), x1 = v128.load8x8_s(xp, 10);
      let x2 = v128.load8x8_s(xp, 18), x3 = v128.load8x8_s(xp, 26);
      const a0 = dot_q8(pa, x0, x1, x2, x3);
      const b0 = dot_q8(pb, x0, x1, x2, x3);
      x0 = v128.load8x8_s(xp, 36); x1 = v128.load8x8_s(xp, 44);
      x2 = v128.load8x8_s(xp, 52); x3 = v128.load8x8_s(xp, 60);
      const ta01 = pair(a0, dot_q8(pa + 34, x0, x1, x2, x3));
      const tb01 = pair(b0, dot_q8(pb + 34, x0, x1, x2, x3));
      x0 = v128.load8x8_s(xp, 70); x1 = v128.load8x8_s(xp, 78);
      x2 = v128.load8x8_s(xp, 86); x3 = v128.load8x8_s(xp, 94);
      const a2 = dot_q8(pa + 68, x0, x1, x2, x3);
      const b2 = dot_q8(pb + 68, x0, x1, x2, x3);
      x0 = v128.load8x8_s(xp, 104); x1 = v128.load8x8_s(xp, 112);
      x2 = v128.load8x8_s(xp, 120); x3 = v128.load8x8_s(xp, 128);
      const sa = combine(ta01, pair(a2, dot_q8(pa + 102, x0, x1, x2, x3)));
      const sb = combine(tb01, pair(b2, dot_q8(pb + 102, x0, x1, x2, x3)));
      const dx = v128.load(dxp + (<usize>b << 2));
      acca = f32x4.add(acca, f32x4.mul(f32x4.convert_i32x4_s(sa), f32x4.mul(sca, dx)));
      accb = f32x4.add(accb, f32x4.mul(f32x4.convert_i32x4_s(sb), f32x4.mul(scb, dx)));
      pa += 136; pb += 136; xp += 136;
    }
    let ta: f32 = 0, tb: f32 = 0;
    for (let b = nb4; b < nb; b++) {
      const x0 = v128.load8x8_s(xp, 2), x1 = v128.load8x8_s(xp, 10);
      const x2 = v128.load8x8_s(xp, 18), x3 = v128.load8x8_s(xp, 26);
      const dx = load<f32>(dxp + (<usize>b << 2));
      ta += <f32>hsum_i32x4(dot_q8(pa, x0, x1, x2, x3)) * (scale1(pa) * dx);
      tb += <f32>hsum_i32x4(dot_q8(pb, x0, x1, x2, x3)) * (scale1(pb) * dx);
      pa += 34; pb += 34; xp += 34;
    }
    store<f32>(y + (<usize>r << 2), hsum_f32x4(acca) + ta);
    store<f32>(y + (<usize>r << 2), hsum_f32x4(accb) + tb, 4);
  }
  if (r < r1) {
    let pa = w + <usize>r * rs;
    let xp = xq;
    let acca = f32x4.splat(0);
    for (let b = 0; b < nb4; b += 4) {
      const sca = scales_q8(pa);
      const a0 = dot_q8(pa, v128.load8x8_s(xp, 2), v128.load8x8_s(xp, 10), v128.load8x8_s(xp, 18), v128.load8x8_s(xp, 26));
      const a1 = dot_q8(pa + 34, v128.load8x8_s(xp, 36), v128.load8x8_s(xp, 44), v128.load8x8_s(xp, 52), v128.load8x8_s(xp, 60));
      const a2 = dot_q8(pa + 68, v128.load8x8_s(xp, 70), v128.load8x8_s(xp, 78), v128.load8x8_s(xp, 86), v128.load8x8_s(xp, 94));
      const a3 = dot_q8(pa + 102, v128.load8x8_s(xp, 104), v128.load8x8_s(xp, 112), v128.load8x8_s(xp, 120), v128.load8x8_s(xp, 128));
      const sa = combine(pair(a0, a1), pair(a2, a3));
      const dx = v128.load(dxp + (<usize>b << 2));
      acca = f32x4.add(acca, f32x4.mul(f32x4.convert_i32x4_s(sa), f32x4.mul(sca, dx)));
      pa += 136; xp += 136;
    }
    let ta: f32 = 0;
    for (let b = nb4; b < nb; b++) {
      const dx = load<f32>(dxp + (<usize>b << 2));
      const s = dot_q8(pa, v128.load8x8_s(xp, 2), v128.load8x8_s(xp, 10), v128.load8x8_s(xp, 18), v128.load8x8_s(xp, 26));
      ta += <f32>hsum_i32x4(s) * (scale1(pa) * dx);
      pa += 34; xp += 34;
    }
    store<f32>(y + (<usize>r << 2), hsum_f32x4(acca) + ta);
  }
}

export function matvec_q4_0(w: usize, xq: usize, y: usize, cols: i32, r0: i32, r1: i32): void {
  const nb = cols >> 5;
  const rs = <usize>nb * 18;
  const nb4 = nb & ~3;
  const dxp = xq + align16(<usize>nb * 34);
  const sxp = dxp + (<usize>((nb + 3) & ~3) << 2);
  let r = r0;
  for (; r + 2 <= r1; r += 2) {
    let pa = w + <usize>r * rs;
    let pb = pa + rs;
    let xp = xq;
    let acca = f32x4.splat(0);
    let accb = f32x4.splat(0);
    for (let b = 0; b < nb4; b += 4) {
      const sca = scales_q4(pa);
      const scb = scales_q4(pb);
      let x0 = v128.load8x8_s(xp, 2), x1 = v128.load8x8_s(xp, 10);
      let x2 = v128.load8x8_s(xp, 18), x3 = v128.load8x8_s(xp, 26);
      const a0 = dot_q4(pa, x0, x1, x2, x3);
      const b0 = dot_q4(pb, x0, x1, x2, x3);
      x0 = v128.load8x8_s(xp, 36); x1 = v128.load8x8_s(xp, 44);
      x2 = v128.load8x8_s(xp, 52); x3 = v128.load8x8_s(xp, 60);
      const ta01 = pair(a0, dot_q4(pa + 18, x0, x1, x2, x3));
      const tb01 = pair(b0, dot_q4(pb + 18, x0, x1, x2, x3));
      x0 = v128.load8x8_s(xp, 70); x1 = v128.load8x8_s(xp, 78);
      x2 = v128.load8x8_s(xp, 86); x3 = v128.load8x8_s(xp, 94);
      const a2 = dot_q4(pa + 36, x0, x1, x2, x3);
      const b2 = dot_q4(pb + 36, x0, x1, x2, x3);
      x0 = v128.load8x8_s(xp, 104); x1 = v128.load8x8_s(xp, 112);
      x2 = v128.load8x8_s(xp, 120); x3 = v128.load8x8_s(xp, 128);
      const sx = v128.load(sxp + (<usize>b << 2));
      const sa = i32x4.sub(combine(ta01, pair(a2, dot_q4(pa + 54, x0, x1, x2, x3))), sx);
      const sb = i32x4.sub(combine(tb01, pair(b2, dot_q4(pb + 54, x0, x1, x2, x3))), sx);
      const dx = v128.load(dxp + (<usize>b << 2));
      acca = f32x4.add(acca, f32x4.mul(f32x4.convert_i32x4_s(sa), f32x4.mul(sca, dx)));
      accb = f32x4.add(accb, f32x4.mul(f32x4.convert_i32x4_s(sb), f32x4.mul(scb, dx)));
      pa += 72; pb += 72; xp += 136;
    }
    let ta: f32 = 0, tb: f32 = 0;
    for (let b = nb4; b < nb; b++) {
      const x0 = v128.load8x8_s(xp, 2), x1 = v128.load8x8_s(xp, 10);
      const x2 = v128.load8x8_s(xp, 18), x3 = v128.load8x8_s(xp, 26);
      const dx = load<f32>(dxp + (<usize>b << 2));
      const sx = load<i32>(sxp + (<usize>b << 2));
      ta += <f32>(hsum_i32x4(dot_q4(pa, x0, x1, x2, x3)) - sx) * (scale1(pa) * dx);
      tb += <f32>(hsum_i32x4(dot_q4(pb, x0, x1, x2, x3)) - sx) * (scale1(pb) * dx);
      pa += 18; pb += 18; xp += 34;
    }
    store<f32>(y + (<usize>r << 2), hsum_f32x4(acca) + ta);
    store<f32>(y + (<usize>r << 2), hsum_f32x4(accb) + tb, 4);
  }
  if (r < r1) {
    let pa = w + <usize>r * rs;
    let xp = xq;
    let acca = f32x4.splat(0);
    for (let b = 0; b < nb4; b += 4) {
      const sca = scales_q4(pa);
      const a0 = dot_q4(pa, v128.load8x8_s(xp, 2), v128.load8x8_s(xp, 10), v128.load8x8_s(xp, 18), v128.load8x8_s(xp, 26));
      const a1 = dot_q4(pa + 18, v128.load8x8_s(xp, 36), v128.load8x8_s(xp, 44), v128.load8x8_s(xp, 52), v128.load8x8_s(xp, 60));
      const a2 = dot_q4(pa + 36, v128.load8x8_s(xp, 70), v128.load8x8_s(xp, 78), v128.load8x8_s(xp, 86), v128.load8x8_s(xp, 94));
      const a3 = dot_q4(pa + 54, v128.load8x8_s(xp, 104), v128.load8x8_s(xp, 112), v128.load8x8_s(xp, 120), v128.load8x8_s(xp, 128));
      const sa = i32x4.sub(combine(pair(a0, a1), pair(a2, a3)), v128.load(sxp + (<usize>b << 2)));
      const dx = v128.load(dxp + (<usize>b << 2));
      acca = f32x4.add(acca, f32x4.mul(f32x4.convert_i32x4_s(sa), f32x4.mul(sca, dx)));
      pa += 72; xp += 136;
    }
    let ta: f32 = 0;
    for (let b = nb4; b < nb; b++) {
      const dx = load<f32>(dxp + (<usize>b << 2));
      const sx = load<i32>(sxp + (<usize>b << 2));
      const s = dot_q4(pa, v128.load8x8_s(xp, 2), v128.load8x8_s(xp, 10), v128.load8x8_s(xp, 18), v128.load8x8_s(xp, 26));
      ta += <f32>(hsum_i32x4(s) - sx) * (scale1(pa) * dx);
      pa += 18; xp += 34;
    }
    store<f32>(y + (<usize>r << 2), hsum_f32x4(acca) + ta);
  }
}

// ---------------------------------------------------------------------------------------------
// f32 / f16 / bf16 weights. x is f32 (for f16/bf16: the values after rounding to the half type,
// stored right after the halves, so products are exact and only the accumulation rounds).

export function matvec_f32(w: usize, x: usize, y: usize, cols: i32, r0: i32, r1: i32): void {
  const rs = <usize>cols << 2;
  const n16 = cols & ~15;
  for (let r = r0; r < r1; r++) {
    const p = w + <usize>r * rs;
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    let i = 0;
    for (; i < n16; i += 16) {
      const o = <usize>i << 2;
      a0 = f32x4.add(a0, f32x4.mul(v128.load(p + o), v128.load(x + o)));
      a1 = f32x4.add(a1, f32x4.mul(v128.load(p + o, 16), v128.load(x + o, 16)));
      a2 = f32x4.add(a2, f32x4.mul(v128.load(p + o, 32), v128.load(x + o, 32)));
      a3 = f32x4.add(a3, f32x4.mul(v128.load(p + o, 48), v128.load(x + o, 48)));
    }
    let t: f32 = 0;
    for (; i < cols; i++) t += load<f32>(p + (<usize>i << 2)) * load<f32>(x + (<usize>i << 2));
    store<f32>(y + (<usize>r << 2), hsum_f32x4(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3))) + t);
  }
}

@inline function h2f_fin(hs: v128): v128 {
  return f32x4.mul(v128.and(i32x4.shl(hs, 13), i32x4.splat(0x8fffe000)), f32x4.splat(F16_MAGIC));
}

export function matvec_f16(w: usize, xq: usize, y: usize, cols: i32, r0: i32, r1: i32): void {
  const rs = <usize>cols << 1;
  const x = xq + align16(rs);
  const n16 = cols & ~15;
  for (let r = r0; r < r1; r++) {
    const p = w + <usize>r * rs;
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    let i = 0;
    for (; i < n16; i += 16) {
      const q = p + (<usize>i << 1);
      const o = x + (<usize>i << 2);
      const h0 = v128.load(q), h1 = v128.load(q, 16);
      a0 = f32x4.add(a0, f32x4.mul(h2f_fin(i32x4.extend_low_i16x8_s(h0)), v128.load(o)));
      a1 = f32x4.add(a1, f32x4.mul(h2f_fin(i32x4.extend_high_i16x8_s(h0)), v128.load(o, 16)));
      a2 = f32x4.add(a2, f32x4.mul(h2f_fin(i32x4.extend_low_i16x8_s(h1)), v128.load(o, 32)));
      a3 = f32x4.add(a3, f32x4.mul(h2f_fin(i32x4.extend_high_i16x8_s(h1)), v128.load(o, 48)));
    }
    let t: f32 = 0;
    for (; i < cols; i++) {
      t += f16_to_f32(<u32>load<u16>(p + (<usize>i << 1))) * load<f32>(x + (<usize>i << 2));
    }
    store<f32>(y + (<usize>r << 2), hsum_f32x4(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3))) + t);
  }
}

export function matvec_bf16(w: usize, xq: usize, y: usize, cols: i32, r0: i32, r1: i32): void {
  const rs = <usize>cols << 1;
  const x = xq + align16(rs);
  const n16 = cols & ~15;
  for (let r = r0; r < r1; r++) {
    const p = w + <usize>r * rs;
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    let i = 0;
    for (; i < n16; i += 16) {
      const q = p + (<usize>i << 1);
      const o = x + (<usize>i << 2);
      const h0 = v128.load(q), h1 = v128.load(q, 16);
      a0 = f32x4.add(a0, f32x4.mul(bf2f_lo(h0), v128.load(o)));
      a1 = f32x4.add(a1, f32x4.mul(bf2f_hi(h0), v128.load(o, 16)));
      a2 = f32x4.add(a2, f32x4.mul(bf2f_lo(h1), v128.load(o, 32)));
      a3 = f32x4.add(a3, f32x4.mul(bf2f_hi(h1), v128.load(o, 48)));
    }
    let t: f32 = 0;
    for (; i < cols; i++) {
      t += reinterpret<f32>(<u32>load<u16>(p + (<usize>i << 1)) << 16) * load<f32>(x + (<usize>i << 2));
    }
    store<f32>(y + (<usize>r << 2), hsum_f32x4(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3))) + t);
  }
}
