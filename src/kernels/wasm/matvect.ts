// Transposed matrix × vector: y[c] = Σ_r h[r]·W[r,c] for the columns of one thread's slice, W in
// GGML row layout with row r at w + r·stride. Each kernel overwrites its y slice with zeros, then
// streams every row's slice of bytes and adds h[r]·W[r,c] into y (an L1-resident accumulator),
// rows in order. Rows with h[r] == 0 (also −0) are skipped without touching their weights: with a
// ReLU-type activation or a thresholded h this is where sparsity saves memory traffic. A NaN h[r]
// is not skipped (it propagates).
//
// Numerics (identical for every column, whatever the slice boundaries, so the result does not
// depend on the thread count): f32 y[c] = y[c] + s·v, no fused multiply-add, where
//   F32 / F16 / BF16: s = h[r], v = the weight converted exactly to f32;
//   Q8_0 / Q4_0: s = f32(h[r]·d) (d the block's f16 scale, exactly as f32), v = the integer quant
//   (q, or nibble − 8), so h·d·q is accumulated with two roundings of the product.
import { f16_to_f32, h2f_lo, h2f_hi, bf2f_lo, bf2f_hi } from './util';

@inline function zero(y: usize, c0: i32, c1: i32): void {
  for (let c = c0; c < c1; c++) store<f32>(y + (<usize>c << 2), 0);
}

/** y[0..16) += s·(16 signed bytes of q, as f32). */
@inline function acc16(o: usize, s: v128, q: v128): void {
  const a = i16x8.extend_low_i8x16_s(q), b = i16x8.extend_high_i8x16_s(q);
  v128.store(o, f32x4.add(v128.load(o), f32x4.mul(s, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(a)))));
  v128.store(o, f32x4.add(v128.load(o, 16), f32x4.mul(s, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(a)))), 16);
  v128.store(o, f32x4.add(v128.load(o, 32), f32x4.mul(s, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(b)))), 32);
  v128.store(o, f32x4.add(v128.load(o, 48), f32x4.mul(s, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(b)))), 48);
}

/** y[0..16) = (((y + sa·qa) + sb·qb) + sc·qc) + sd·qd, quants as 16 signed bytes each: four
 *  rows' updates with one load / store of y (same per-element operations as four acc16 calls). */
@inline function acc16x4(o: usize, qa: v128, sa: v128, qb: v128, sb: v128, qc: v128, sc: v128, qd: v128, sd: v128): void {
  let al = i16x8.extend_low_i8x16_s(qa), bl = i16x8.extend_low_i8x16_s(qb);
  let cl = i16x8.extend_low_i8x16_s(qc), dl = i16x8.extend_low_i8x16_s(qd);
  let t = v128.load(o);
  t = f32x4.add(t, f32x4.mul(sa, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(al))));
  t = f32x4.add(t, f32x4.mul(sb, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(bl))));
  t = f32x4.add(t, f32x4.mul(sc, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(cl))));
  v128.store(o, f32x4.add(t, f32x4.mul(sd, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(dl)))));
  t = v128.load(o, 16);
  t = f32x4.add(t, f32x4.mul(sa, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(al))));
  t = f32x4.add(t, f32x4.mul(sb, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(bl))));
  t = f32x4.add(t, f32x4.mul(sc, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(cl))));
  v128.store(o, f32x4.add(t, f32x4.mul(sd, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(dl)))), 16);
  al = i16x8.extend_high_i8x16_s(qa); bl = i16x8.extend_high_i8x16_s(qb);
  cl = i16x8.extend_high_i8x16_s(qc); dl = i16x8.extend_high_i8x16_s(qd);
  t = v128.load(o, 32);
  t = f32x4.add(t, f32x4.mul(sa, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(al))));
  t = f32x4.add(t, f32x4.mul(sb, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(bl))));
  t = f32x4.add(t, f32x4.mul(sc, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(cl))));
  v128.store(o, f32x4.add(t, f32x4.mul(sd, f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(dl)))), 32);
  t = v128.load(o, 48);
  t = f32x4.add(t, f32x4.mul(sa, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(al))));
  t = f32x4.add(t, f32x4.mul(sb, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(bl))));
  t = f32x4.add(t, f32x4.mul(sc, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(cl))));
  v128.store(o, f32x4.add(t, f32x4.mul(sd, f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(dl)))), 48);
}

@inline function scale(hr: f32, p: usize): v128 {
  return f32x4.splat(hr * f16_to_f32(<u32>load<u16>(p)));
}

/** Next row ≥ r with h[row] != 0, or rows. */
@inline function nextRow(h: usize, r: i32, rows: i32): i32 {
  while (r < rows && load<f32>(h + (<usize>r << 2)) == 0) r++;
  return r;
}

/** Blocks [b0, b1) (columns 32·b0 .. 32·b1) of y = Wᵀh for q8_0 W. */
export function matvect_q8_0(w: usize, stride: usize, h: usize, y: usize, rows: i32, b0: i32, b1: i32, quad: i32): void {
  zero(y, b0 << 5, b1 << 5);
  const y0 = y + (<usize>b0 << 7), y1 = y + (<usize>b1 << 7);
  const off = <usize>b0 * 34;
  // quad != 0: groups of four nonzero rows share each load / store of y (four weight streams per
  // thread); the last < 4 rows, or all rows when quad == 0, go one by one (one stream). Both give
  // bit-identical y. Measured from DRAM (q8_0 13824×5120, 2-core EPYC VM): one stream is faster
  // on 1 thread (7.6 vs 4.6 GB/s), four streams on 2 threads (6.5–7.7 vs 4.9 GB/s), where each
  // thread reads only half of every row.
  let r = quad ? nextRow(h, 0, rows) : 0;
  while (quad) {
    const ra = r, rb = nextRow(h, ra + 1, rows), rc = nextRow(h, rb + 1, rows), rd = nextRow(h, rc + 1, rows);
    if (rd >= rows) break;
    r = nextRow(h, rd + 1, rows);
    const ha = load<f32>(h + (<usize>ra << 2)), hb = load<f32>(h + (<usize>rb << 2));
    const hc = load<f32>(h + (<usize>rc << 2)), hd = load<f32>(h + (<usize>rd << 2));
    let pa = w + <usize>ra * stride + off, pb = w + <usize>rb * stride + off;
    let pc = w + <usize>rc * stride + off, pd = w + <usize>rd * stride + off;
    for (let o = y0; o < y1; o += 128) {
      const sa = scale(ha, pa), sb = scale(hb, pb), sc = scale(hc, pc), sd = scale(hd, pd);
      acc16x4(o, v128.load(pa, 2), sa, v128.load(pb, 2), sb, v128.load(pc, 2), sc, v128.load(pd, 2), sd);
      acc16x4(o + 64, v128.load(pa, 18), sa, v128.load(pb, 18), sb, v128.load(pc, 18), sc, v128.load(pd, 18), sd);
      pa += 34; pb += 34; pc += 34; pd += 34;
    }
  }
  for (; r < rows; r++) {
    const hr = load<f32>(h + (<usize>r << 2));
    if (hr == 0) continue;
    let p = w + <usize>r * stride + off;
    for (let o = y0; o < y1; o += 128) {
      const s = f32x4.splat(hr * f16_to_f32(<u32>load<u16>(p)));
      acc16(o, s, v128.load(p, 2));
      acc16(o + 64, s, v128.load(p, 18));
      p += 34;
    }
  }
}

/** Blocks [b0, b1) of y = Wᵀh for q4_0 W (element j < 16: low nibble of byte j, else high nibble
 *  of byte j − 16; value nibble − 8). */
export function matvect_q4_0(w: usize, stride: usize, h: usize, y: usize, rows: i32, b0: i32, b1: i32, quad: i32): void {
  zero(y, b0 << 5, b1 << 5);
  const y0 = y + (<usize>b0 << 7), y1 = y + (<usize>b1 << 7);
  const off = <usize>b0 * 18;
  const m = i8x16.splat(0x0f), eight = i8x16.splat(8);
  let r = quad ? nextRow(h, 0, rows) : 0;
  while (quad) {
    const ra = r, rb = nextRow(h, ra + 1, rows), rc = nextRow(h, rb + 1, rows), rd = nextRow(h, rc + 1, rows);
    if (rd >= rows) break;
    r = nextRow(h, rd + 1, rows);
    const ha = load<f32>(h + (<usize>ra << 2)), hb = load<f32>(h + (<usize>rb << 2));
    const hc = load<f32>(h + (<usize>rc << 2)), hd = load<f32>(h + (<usize>rd << 2));
    let pa = w + <usize>ra * stride + off, pb = w + <usize>rb * stride + off;
    let pc = w + <usize>rc * stride + off, pd = w + <usize>rd * stride + off;
    for (let o = y0; o < y1; o += 128) {
      const sa = scale(ha, pa), sb = scale(hb, pb), sc = scale(hc, pc), sd = scale(hd, pd);
      const va = v128.load(pa, 2), vb = v128.load(pb, 2), vc = v128.load(pc, 2), vd = v128.load(pd, 2);
      acc16x4(o, i8x16.sub(v128.and(va, m), eight), sa, i8x16.sub(v128.and(vb, m), eight), sb,
        i8x16.sub(v128.and(vc, m), eight), sc, i8x16.sub(v128.and(vd, m), eight), sd);
      acc16x4(o + 64, i8x16.sub(i8x16.shr_u(va, 4), eight), sa, i8x16.sub(i8x16.shr_u(vb, 4), eight), sb,
        i8x16.sub(i8x16.shr_u(vc, 4), eight), sc, i8x16.sub(i8x16.shr_u(vd, 4), eight), sd);
      pa += 18; pb += 18; pc += 18; pd += 18;
    }
  }
  for (; r < rows; r++) {
    const hr = load<f32>(h + (<usize>r << 2));
    if (hr == 0) continue;
    let p = w + <usize>r * stride + off;
    for (let o = y0; o < y1; o += 128) {
      const s = f32x4.splat(hr * f16_to_f32(<u32>load<u16>(p)));
      const v = v128.load(p, 2);
      acc16(o, s, i8x16.sub(v128.and(v, m), eight));
      acc16(o + 64, s, i8x16.sub(i8x16.shr_u(v, 4), eight));
      p += 18;
    }
  }
}

/** Columns [c0, c1) of y = Wᵀh for f32 W. */
export function matvect_f32(w: usize, stride: usize, h: usize, y: usize, rows: i32, c0: i32, c1: i32): void {
  zero(y, c0, c1);
  const n4 = c0 + ((c1 - c0) & ~3);
  for (let r = 0; r < rows; r++) {
    const hr = load<f32>(h + (<usize>r << 2));
    if (hr == 0) continue;
    const s = f32x4.splat(hr);
    const p = w + <usize>r * stride;
    let c = c0;
    for (; c + 16 <= n4; c += 16) {
      const o = y + (<usize>c << 2), q = p + (<usize>c << 2);
      v128.store(o, f32x4.add(v128.load(o), f32x4.mul(s, v128.load(q))));
      v128.store(o, f32x4.add(v128.load(o, 16), f32x4.mul(s, v128.load(q, 16))), 16);
      v128.store(o, f32x4.add(v128.load(o, 32), f32x4.mul(s, v128.load(q, 32))), 32);
      v128.store(o, f32x4.add(v128.load(o, 48), f32x4.mul(s, v128.load(q, 48))), 48);
    }
    for (; c < n4; c += 4) {
      const o = y + (<usize>c << 2);
      v128.store(o, f32x4.add(v128.load(o), f32x4.mul(s, v128.load(p + (<usize>c << 2)))));
    }
    for (; c < c1; c++) {
      const o = y + (<usize>c << 2);
      store<f32>(o, load<f32>(o) + hr * load<f32>(p + (<usize>c << 2)));
    }
  }
}

/** Columns [c0, c1) of y = Wᵀh for f16 W (exact half → f32). */
export function matvect_f16(w: usize, stride: usize, h: usize, y: usize, rows: i32, c0: i32, c1: i32): void {
  zero(y, c0, c1);
  const n8 = c0 + ((c1 - c0) & ~7);
  for (let r = 0; r < rows; r++) {
    const hr = load<f32>(h + (<usize>r << 2));
    if (hr == 0) continue;
    const s = f32x4.splat(hr);
    const p = w + <usize>r * stride;
    let c = c0;
    for (; c < n8; c += 8) {
      const o = y + (<usize>c << 2);
      const v = v128.load(p + (<usize>c << 1));
      v128.store(o, f32x4.add(v128.load(o), f32x4.mul(s, h2f_lo(v))));
      v128.store(o, f32x4.add(v128.load(o, 16), f32x4.mul(s, h2f_hi(v))), 16);
    }
    for (; c < c1; c++) {
      const o = y + (<usize>c << 2);
      store<f32>(o, load<f32>(o) + hr * f16_to_f32(<u32>load<u16>(p + (<usize>c << 1))));
    }
  }
}

/** Columns [c0, c1) of y = Wᵀh for bf16 W. */
export function matvect_bf16(w: usize, stride: usize, h: usize, y: usize, rows: i32, c0: i32, c1: i32): void {
  zero(y, c0, c1);
  const n8 = c0 + ((c1 - c0) & ~7);
  for (let r = 0; r < rows; r++) {
    const hr = load<f32>(h + (<usize>r << 2));
    if (hr == 0) continue;
    const s = f32x4.splat(hr);
    const p = w + <usize>r * stride;
    let c = c0;
    for (; c < n8; c += 8) {
      const o = y + (<usize>c << 2);
      const v = v128.load(p + (<usize>c << 1));
      v128.store(o, f32x4.add(v128.load(o), f32x4.mul(s, bf2f_lo(v))));
      v128.store(o, f32x4.add(v128.load(o, 16), f32x4.mul(s, bf2f_hi(v))), 16);
    }
    for (; c < c1; c++) {
      const o = y + (<usize>c << 2);
      store<f32>(o, load<f32>(o) + hr * reinterpret<f32>(<u32>load<u16>(p + (<usize>c << 1)) << 16));
    }
  }
}
