// Matrix × vector kernels over GGML row layouts. Each computes rows [r0, r1) of y = W·x, with
// W starting at byte offset w (row 0), row r at w + r·stride (stride ≥ the packed row size; the
// packed size reproduces the plain layout, anything larger skips padding / other data), and x already in the weight type's vec_dot format
// (see prepare.ts for the prepared-x layouts). y is f32, indexed by absolute row.
import { align16, f16_to_f32, hsum_f32x4, h2f_even, h2f_odd } from './util';

// ---------------------------------------------------------------------------------------------
// q8_0 / q4_0 weights · q8_0 activations (prepared layout: see ops.ts prepare_q8_0).
// Per block: exact i32x4 lane sums of w·x (pmaddwd), converted to f32 and multiplied by the
// block's dw·dx, accumulated per lane in f32 (ggml's AVX path does the same with 8 lanes).
// One row at a time: a single sequential stream per thread is what DRAM prefetch likes best
// (multi-row variants were faster in L2 but slower from DRAM).

/** dw·dx for the block at p: the f16 scale's bits placed in an f32 (value · 2^-112), times the
 *  prepared dx·2^112. Exact same product as f16(dw)·f16(dx) rounded once. */
@inline function blockScale(p: usize, dp: usize): f32 {
  return reinterpret<f32>((<i32>load<i16>(p) << 13) & 0x8fffe000) * load<f32>(dp);
}

@inline function dot_q8(p: usize, xp: usize): v128 {
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(p, 2), v128.load8x8_s(xp, 2)),
      i32x4.dot_i16x8_s(v128.load8x8_s(p, 10), v128.load8x8_s(xp, 10))),
    i32x4.add(i32x4.dot_i16x8_s(v128.load8x8_s(p, 18), v128.load8x8_s(xp, 18)),
      i32x4.dot_i16x8_s(v128.load8x8_s(p, 26), v128.load8x8_s(xp, 26))));
}

/** q4_0 block at p (18 B) against the q4 view of the prepared x (80 B per block, see
 *  prepare_q8_0): with b = lo + 16·hi the raw byte of nibbles (elements j and j+16),
 *  Σ lo·x_j + hi·x_{j+16} = Σ b·x_j + hi·(x_{j+16} − 16·x_j); the −8 offset is the precomputed
 *  per-lane correction. All products fit i16 pairs → exact i32 lane sums. */
@inline function dot_q4(p: usize, xp: usize): v128 {
  const b0 = v128.load8x8_u(p, 2);   // bytes 0..7 → u16 lanes
  const b1 = v128.load8x8_u(p, 10);  // bytes 8..15
  return i32x4.sub(i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(b0, v128.load(xp)), i32x4.dot_i16x8_s(b1, v128.load(xp, 16))),
    i32x4.add(i32x4.dot_i16x8_s(i16x8.shr_u(b0, 4), v128.load(xp, 32)),
      i32x4.dot_i16x8_s(i16x8.shr_u(b1, 4), v128.load(xp, 48)))), v128.load(xp, 64));
}

@inline function hsum(acc: v128): f32 {
  const t = f32x4.add(acc, i32x4.shuffle(acc, acc, 2, 3, 0, 1));
  return f32x4.extract_lane(t, 0) + f32x4.extract_lane(t, 1);
}

export function matvec_q8_0(w: usize, xq: usize, y: usize, cols: i32, r0: i32, r1: i32, stride: usize): void {
  const nb = cols >> 5;
  const rs = <usize>nb * 34;
  const dxp = xq + align16(rs);
  const n2 = <usize>(nb & ~1) * 34;
  for (let r = r0; r < r1; r++) {
    let p = w + <usize>r * stride;
    const end = p + rs, end2 = p + n2;
    let xp = xq, dp = dxp;
    let acc = f32x4.splat(0), acc2 = f32x4.splat(0);
    while (p < end2) {
      acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(dot_q8(p, xp)), f32x4.splat(blockScale(p, dp))));
      acc2 = f32x4.add(acc2, f32x4.mul(f32x4.convert_i32x4_s(dot_q8(p + 34, xp + 34)), f32x4.splat(blockScale(p + 34, dp + 4))));
      p += 68; xp += 68; dp += 8;
    }
    if (p < end) acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(dot_q8(p, xp)), f32x4.splat(blockScale(p, dp))));
    store<f32>(y + (<usize>r << 2), hsum(f32x4.add(acc, acc2)));
  }
}

export function matvec_q4_0(w: usize, xq: usize, y: usize, cols: i32, r0: i32, r1: i32, stride: usize): void {
  const nb = cols >> 5;
  const rs = <usize>nb * 18;
  const dxp = xq + align16(<usize>nb * 34);
  const x4p = dxp + align16(<usize>nb << 2);
  const n2 = <usize>(nb & ~1) * 18;
  for (let r = r0; r < r1; r++) {
    let p = w + <usize>r * stride;
    const end = p + rs, end2 = p + n2;
    let xp = x4p, dp = dxp;
    let acc = f32x4.splat(0), acc2 = f32x4.splat(0);
    while (p < end2) {
      acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(dot_q4(p, xp)), f32x4.splat(blockScale(p, dp))));
      acc2 = f32x4.add(acc2, f32x4.mul(f32x4.convert_i32x4_s(dot_q4(p + 18, xp + 80)), f32x4.splat(blockScale(p + 18, dp + 4))));
      p += 36; xp += 160; dp += 8;
    }
    if (p < end) acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(dot_q4(p, xp)), f32x4.splat(blockScale(p, dp))));
    store<f32>(y + (<usize>r << 2), hsum(f32x4.add(acc, acc2)));
  }
}

// ---------------------------------------------------------------------------------------------
// f32 / f16 / bf16 weights. x is f32 (for f16/bf16: the values after rounding to the half type,
// stored right after the halves, so products are exact and only the accumulation rounds).

export function matvec_f32(w: usize, x: usize, y: usize, cols: i32, r0: i32, r1: i32, stride: usize): void {
  const n16 = cols & ~15;
  for (let r = r0; r < r1; r++) {
    const p = w + <usize>r * stride;
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

/** f16 rows: even/odd elements of each i32 lane converted in place (see h2f_even/odd); the
 *  prepared x is permuted like for bf16. */
export function matvec_f16(w: usize, xq: usize, y: usize, cols: i32, r0: i32, r1: i32, stride: usize): void {
  const rs = <usize>cols << 1;
  const xf = xq + align16(rs);
  const n8 = <usize>(cols & ~7) << 1;
  for (let r = r0; r < r1; r++) {
    let q = w + <usize>r * stride;
    const end = q + rs, end8 = q + n8;
    let o = xf;
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
    while (q < end8) {
      const h = v128.load(q);
      a0 = f32x4.add(a0, f32x4.mul(h2f_even(h), v128.load(o)));
      a1 = f32x4.add(a1, f32x4.mul(h2f_odd(h), v128.load(o, 16)));
      q += 16; o += 32;
    }
    let t: f32 = 0;
    while (q < end) {
      t += f16_to_f32(<u32>load<u16>(q)) * load<f32>(o);
      q += 2; o += 4;
    }
    store<f32>(y + (<usize>r << 2), hsum_f32x4(f32x4.add(a0, a1)) + t);
  }
}

/** bf16 rows · bf16 x (ggml's vec_dot_type for BF16): each i32 lane of 8 packed bf16 holds an
 *  even element in its low half and an odd one in its high half, so shl 16 / and 0xffff0000 give
 *  the f32 bits directly, for w and x alike; products are exact, accumulation in f32. */
export function matvec_bf16(w: usize, xq: usize, y: usize, cols: i32, r0: i32, r1: i32, stride: usize): void {
  const rs = <usize>cols << 1;
  const n16 = <usize>(cols & ~15) << 1, n8 = <usize>(cols & ~7) << 1;
  const hiMask = i32x4.splat(<i32>0xffff0000);
  for (let r = r0; r < r1; r++) {
    let q = w + <usize>r * stride;
    const end = q + rs, end16 = q + n16, end8 = q + n8;
    let o = xq;
    let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
    while (q < end16) {
      const h0 = v128.load(q), h1 = v128.load(q, 16);
      const x0 = v128.load(o), x1 = v128.load(o, 16);
      a0 = f32x4.add(a0, f32x4.mul(i32x4.shl(h0, 16), i32x4.shl(x0, 16)));
      a1 = f32x4.add(a1, f32x4.mul(v128.and(h0, hiMask), v128.and(x0, hiMask)));
      a2 = f32x4.add(a2, f32x4.mul(i32x4.shl(h1, 16), i32x4.shl(x1, 16)));
      a3 = f32x4.add(a3, f32x4.mul(v128.and(h1, hiMask), v128.and(x1, hiMask)));
      q += 32; o += 32;
    }
    let t: f32 = 0;
    while (q < end) {
      t += reinterpret<f32>(<u32>load<u16>(q) << 16) * reinterpret<f32>(<u32>load<u16>(o) << 16);
      q += 2; o += 2;
    }
    store<f32>(y + (<usize>r << 2), hsum_f32x4(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3))) + t);
  }
}
