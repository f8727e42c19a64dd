// Attention for one thread's heads [h0, h1) at a single query position (decode step).
// K/V caches: [pos][nKvHeads·headDim], kvStride elements per position, f32 (kvF16 = 0) or IEEE
// half (kvF16 = 1). Head h reads kv head h / (nHeads / nKvHeads).
//   s_t = (q·k_t)·(1/sqrtf(headDim)); p = softmax(s) (max-subtracted expf, Σ in double, scaled by
//   (f32)(1/Σ) as ggml_soft_max); out = Σ_t p_t·v_t, all accumulation in f32.
// With f16 K, q is rounded to f16 first (ggml converts src1 to K's vec_dot_type), so every q·k
// product is exact. Positions are walked in the outer loop so K and V are read sequentially.
// qbuf: thread scratch of qbufBytes; heads are processed in chunks whose q (and then the output
// accumulators) fit in it. For f16 caches both are kept in even/odd-permuted order per 8
// elements (see h2f_even_fast/h2f_odd_fast); elements past the last multiple of 8 stay in order.
// Paged caches (ptab != 0): positions live in fixed-size pages of `pageSize` positions; ptab is an
// i32 page table (page ids) in the arena, and position t is at base + ptab[t / pageSize]·pageBytes
// + (t % pageSize)·kvStride·es with pageBytes = pageSize·kvStride·es, for k and v alike. Only the
// address of a row changes: the arithmetic and its order are the contiguous path's, so a paged
// cache gives bit-identical outputs. ptab = 0: contiguous, position t at base + t·kvStride·es.
import { f32_to_f16, f16_to_f32, h2f_even_fast, h2f_odd_fast, hsum_f32x4 } from './util';

@inline function perm8(i: i32, n8: i32): i32 {
  return i < n8 ? (i & ~7) | ((i & 1) << 2) | ((i & 7) >> 1) : i;
}

@inline function dotF32(a: usize, b: usize, n: i32): f32 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const o = <usize>i << 2;
    a0 = f32x4.add(a0, f32x4.mul(v128.load(a + o), v128.load(b + o)));
    a1 = f32x4.add(a1, f32x4.mul(v128.load(a + o, 16), v128.load(b + o, 16)));
  }
  let t: f32 = 0;
  for (; i < n; i++) t += load<f32>(a + (<usize>i << 2)) * load<f32>(b + (<usize>i << 2));
  return hsum_f32x4(f32x4.add(a0, a1)) + t;
}

/** q (permuted f32) · k (f16 row). */
@inline function dotF16(qp: usize, k: usize, n: i32): f32 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
  const end8 = k + (<usize>(n & ~7) << 1), end = k + (<usize>n << 1);
  while (k < end8) {
    const h = v128.load(k);
    a0 = f32x4.add(a0, f32x4.mul(h2f_even_fast(h), v128.load(qp)));
    a1 = f32x4.add(a1, f32x4.mul(h2f_odd_fast(h), v128.load(qp, 16)));
    k += 16; qp += 32;
  }
  let t: f32 = 0;
  while (k < end) {
    t += load<f32>(qp) * f16_to_f32(<u32>load<u16>(k));
    k += 2; qp += 4;
  }
  return hsum_f32x4(f32x4.add(a0, a1)) + t;
}

/** Byte offset of position t's row relative to a cache base (k or v), contiguous or paged. */
@inline function rowOff(t: i32, posBytes: usize, ptab: usize, pageSize: i32): usize {
  if (ptab == 0) return <usize>t * posBytes;
  const p = t / pageSize;
  return <usize>load<i32>(ptab + (<usize>p << 2)) * <usize>pageSize * posBytes + <usize>(t - p * pageSize) * posBytes;
}

export function attention(q: usize, k: usize, v: usize, out: usize, kvF16: i32, nHeads: i32, nKvHeads: i32,
  headDim: i32, nPos: i32, kvStride: i32, scratch: usize, qbuf: usize, qbufBytes: i32, h0: i32, h1: i32,
  ptab: usize, pageSize: i32): void {
  const group = nHeads / nKvHeads;
  const scale: f32 = <f32>1 / Mathf.sqrt(<f32>headDim);
  const es: usize = kvF16 ? 2 : 4;
  const posBytes = <usize>kvStride * es;
  const headBytes = <usize>headDim << 2;
  const chunk = max(1, qbufBytes / <i32>headBytes);
  const n8 = headDim & ~7;
  for (let c0 = h0; c0 < h1; c0 += chunk) {
    const c1 = min(h1, c0 + chunk);
    // 1. q of the chunk into qbuf (f16: rounded and permuted)
    for (let h = c0; h < c1; h++) {
      const src = q + <usize>h * headBytes, dst = qbuf + <usize>(h - c0) * headBytes;
      if (kvF16) {
        for (let i = 0; i < headDim; i++) {
          store<f32>(dst + (<usize>perm8(i, n8) << 2), f16_to_f32(f32_to_f16(load<f32>(src + (<usize>i << 2)))));
        }
      } else {
        memory.copy(dst, src, headBytes);
      }
    }
    // 2. scores, positions outer
    // rows advance by posBytes inside a page; the table is read once per page (no division per row)
    let row = rowOff(0, posBytes, ptab, pageSize), inPage = 0;
    for (let t = 0; t < nPos; t++) {
      const krow = k + row;
      for (let h = c0; h < c1; h++) {
        const kh = krow + <usize>(h / group) * <usize>headDim * es;
        const qh = qbuf + <usize>(h - c0) * headBytes;
        const s = kvF16 ? dotF16(qh, kh, headDim) : dotF32(qh, kh, headDim);
        store<f32>(scratch + ((<usize>h * <usize>nPos + <usize>t) << 2), s * scale);
      }
      if (ptab != 0 && ++inPage == pageSize) {
        inPage = 0;
        if (t + 1 < nPos) row = rowOff(t + 1, posBytes, ptab, pageSize);
      } else row += posBytes;
    }
    // 3. softmax per head
    for (let h = c0; h < c1; h++) {
      const sc = scratch + (<usize>h * <usize>nPos << 2);
      let m: f32 = -Infinity;
      for (let t = 0; t < nPos; t++) m = max(m, load<f32>(sc + (<usize>t << 2)));
      let sum: f64 = 0;
      for (let t = 0; t < nPos; t++) {
        const o = <usize>t << 2;
        const e = Mathf.exp(load<f32>(sc + o) - m);
        store<f32>(sc + o, e);
        sum += <f64>e;
      }
      const inv = <f32>(1.0 / sum);
      // With an f16 V cache ggml's non-flash path multiplies V (f16) by the probabilities
      // converted to V's vec_dot_type (f16): round them the same way.
      if (kvF16) {
        for (let t = 0; t < nPos; t++) {
          const o = <usize>t << 2;
          store<f32>(sc + o, f16_to_f32(f32_to_f16(load<f32>(sc + o) * inv)));
        }
      } else {
        for (let t = 0; t < nPos; t++) {
          const o = <usize>t << 2;
          store<f32>(sc + o, load<f32>(sc + o) * inv);
        }
      }
    }
    // 4. out = Σ p_t·v_t; accumulators in qbuf (q is no longer needed)
    memory.fill(qbuf, 0, <usize>(c1 - c0) * headBytes);
    row = rowOff(0, posBytes, ptab, pageSize);
    inPage = 0;
    for (let t = 0; t < nPos; t++) {
      const vrow = v + row;
      if (ptab != 0 && ++inPage == pageSize) {
        inPage = 0;
        if (t + 1 < nPos) row = rowOff(t + 1, posBytes, ptab, pageSize);
      } else row += posBytes;
      for (let h = c0; h < c1; h++) {
        const p = load<f32>(scratch + ((<usize>h * <usize>nPos + <usize>t) << 2));
        const pv = f32x4.splat(p);
        let vh = vrow + <usize>(h / group) * <usize>headDim * es;
        let acc = qbuf + <usize>(h - c0) * headBytes;
        const end = acc + headBytes;
        if (kvF16) {
          const end8 = acc + (<usize>n8 << 2);
          while (acc < end8) {
            const hv = v128.load(vh);
            v128.store(acc, f32x4.add(v128.load(acc), f32x4.mul(pv, h2f_even_fast(hv))));
            v128.store(acc, f32x4.add(v128.load(acc, 16), f32x4.mul(pv, h2f_odd_fast(hv))), 16);
            vh += 16; acc += 32;
          }
          while (acc < end) {
            store<f32>(acc, load<f32>(acc) + p * f16_to_f32(<u32>load<u16>(vh)));
            vh += 2; acc += 4;
          }
        } else {
          const end4 = acc + (<usize>(headDim & ~3) << 2);
          while (acc < end4) {
            v128.store(acc, f32x4.add(v128.load(acc), f32x4.mul(pv, v128.load(vh))));
            vh += 16; acc += 16;
          }
          while (acc < end) {
            store<f32>(acc, load<f32>(acc) + p * load<f32>(vh));
            vh += 4; acc += 4;
          }
        }
      }
    }
    for (let h = c0; h < c1; h++) {
      const src = qbuf + <usize>(h - c0) * headBytes, dst = out + <usize>h * headBytes;
      if (kvF16) {
        for (let i = 0; i < headDim; i++) store<f32>(dst + (<usize>i << 2), load<f32>(src + (<usize>perm8(i, n8) << 2)));
      } else {
        memory.copy(dst, src, headBytes);
      }
    }
  }
}
