// f32 GEMM: C = alpha·op(A)·op(B) + beta·C, row-major, for the predictor trainer (dense
// [tokens × dim] · [dim × rank] style products, not the FFN path). GotoBLAS-style blocking:
//   for jc (NC columns) → for pc (KC depth) → pack op(B)[KC × NC] → for ic (MC rows) →
//   pack op(A)[MC × KC] → MR×NR micro-tiles.
// Packed panels live in the caller's work area: A strips are [KC × MR] k-major, B strips
// [KC × NR] k-major, both zero-padded at the edges so the micro-kernel never branches.
// Each thread calls gemm_f32 on its own [m0, m1) × [n0, n1) block of C with its own work area,
// so threads never write the same bytes.
//
// Micro-kernel 4×8 (MR×NR): 8 f32x4 accumulators + 2 B vectors + 1 splat = 11 of the 16 xmm
// registers V8 allocates for wasm SIMD on x64 (a 4×16 tile spills). No FMA in baseline wasm
// SIMD: mul then add, each product rounded once, like the other f32 kernels here.

const MR = 4;
const NR = 8;

/** Bytes of one thread's work area for blocking (kc, mc, nc). */
export function gemm_work_bytes(kc: i32, mc: i32, nc: i32): i32 {
  const mcp = (mc + MR - 1) / MR * MR, ncp = (nc + NR - 1) / NR * NR;
  return (mcp * kc + ncp * kc) * 4 + MR * NR * 4 + 64;
}

/** op(A) rows [i0, i0+mc) × depth [p0, p0+kc) → strips of MR rows, [kc × MR] each.
 *  transA = 0: A[i, p] at a + (i·lda + p)·4; transA = 1: A stored [k × m], op(A)[i, p] = A[p·lda + i]. */
function packA(a: usize, lda: i32, transA: i32, i0: i32, mc: i32, p0: i32, kc: i32, dst: usize): void {
  for (let s = 0; s < mc; s += MR) {
    const rows = min(MR, mc - s);
    const d = dst + <usize>s * kc * 4;
    if (transA) {
      const src = a + (<usize>p0 * lda + i0 + s) * 4;
      if (rows == MR) {
        for (let p = 0; p < kc; p++) v128.store(d + (<usize>p << 4), v128.load(src + <usize>p * lda * 4));
      } else {
        for (let p = 0; p < kc; p++) {
          for (let r = 0; r < MR; r++) {
            store<f32>(d + (<usize>(p * MR + r) << 2), r < rows ? load<f32>(src + (<usize>p * lda + r) * 4) : 0);
          }
        }
      }
    } else {
      const src = a + (<usize>(i0 + s) * lda + p0) * 4;
      if (rows == MR) {
        const l4 = <usize>lda * 4;
        const r0 = src, r1 = src + l4, r2 = src + 2 * l4, r3 = src + 3 * l4;
        let p = 0;
        // 4×4 transposes: rows r0..r3 × depth p..p+3 → 4 k-major vectors
        for (; p + 4 <= kc; p += 4) {
          const o = <usize>p << 2;
          const x0 = v128.load(r0 + o), x1 = v128.load(r1 + o), x2 = v128.load(r2 + o), x3 = v128.load(r3 + o);
          const t0 = i32x4.shuffle(x0, x1, 0, 4, 1, 5), t1 = i32x4.shuffle(x0, x1, 2, 6, 3, 7);
          const t2 = i32x4.shuffle(x2, x3, 0, 4, 1, 5), t3 = i32x4.shuffle(x2, x3, 2, 6, 3, 7);
          const q = d + (<usize>p << 4);
          v128.store(q, i32x4.shuffle(t0, t2, 0, 1, 4, 5));
          v128.store(q, i32x4.shuffle(t0, t2, 2, 3, 6, 7), 16);
          v128.store(q, i32x4.shuffle(t1, t3, 0, 1, 4, 5), 32);
          v128.store(q, i32x4.shuffle(t1, t3, 2, 3, 6, 7), 48);
        }
        for (; p < kc; p++) {
          const o = <usize>p << 2, q = d + (<usize>p << 4);
          store<f32>(q, load<f32>(r0 + o)); store<f32>(q, load<f32>(r1 + o), 4);
          store<f32>(q, load<f32>(r2 + o), 8); store<f32>(q, load<f32>(r3 + o), 12);
        }
      } else {
        for (let p = 0; p < kc; p++) {
          for (let r = 0; r < MR; r++) {
            store<f32>(d + (<usize>(p * MR + r) << 2), r < rows ? load<f32>(src + (<usize>r * lda + p) * 4) : 0);
          }
        }
      }
    }
  }
}

/** op(B) depth [p0, p0+kc) × columns [j0, j0+nc) → strips of NR columns, [kc × NR] each.
 *  transB = 0: B[p, j] at b + (p·ldb + j)·4; transB = 1: B stored [n × k], op(B)[p, j] = B[j·ldb + p]. */
function packB(b: usize, ldb: i32, transB: i32, p0: i32, kc: i32, j0: i32, nc: i32, dst: usize): void {
  for (let s = 0; s < nc; s += NR) {
    const cols = min(NR, nc - s);
    const d = dst + <usize>s * kc * 4;
    if (!transB) {
      const src = b + (<usize>p0 * ldb + j0 + s) * 4;
      if (cols == NR) {
        for (let p = 0; p < kc; p++) {
          const q = src + <usize>p * ldb * 4, o = d + (<usize>p << 5);
          v128.store(o, v128.load(q)); v128.store(o, v128.load(q, 16), 16);
        }
      } else {
        for (let p = 0; p < kc; p++) {
          for (let c = 0; c < NR; c++) {
            store<f32>(d + (<usize>(p * NR + c) << 2), c < cols ? load<f32>(src + (<usize>p * ldb + c) * 4) : 0);
          }
        }
      }
    } else {
      const src = b + (<usize>(j0 + s) * ldb + p0) * 4;
      if (cols == NR) {
        const l4 = <usize>ldb * 4;
        let p = 0;
        for (; p + 4 <= kc; p += 4) {
          const o = <usize>p << 2, q = d + (<usize>p << 5);
          // two 4×4 transposes: columns s..s+3 and s+4..s+7 (rows of the stored B)
          for (let h = 0; h < 2; h++) {
            const r = src + <usize>(h * 4) * l4 + o;
            const x0 = v128.load(r), x1 = v128.load(r + l4), x2 = v128.load(r + 2 * l4), x3 = v128.load(r + 3 * l4);
            const t0 = i32x4.shuffle(x0, x1, 0, 4, 1, 5), t1 = i32x4.shuffle(x0, x1, 2, 6, 3, 7);
            const t2 = i32x4.shuffle(x2, x3, 0, 4, 1, 5), t3 = i32x4.shuffle(x2, x3, 2, 6, 3, 7);
            const qh = q + (<usize>h << 4);
            v128.store(qh, i32x4.shuffle(t0, t2, 0, 1, 4, 5));
            v128.store(qh, i32x4.shuffle(t0, t2, 2, 3, 6, 7), 32);
            v128.store(qh, i32x4.shuffle(t1, t3, 0, 1, 4, 5), 64);
            v128.store(qh, i32x4.shuffle(t1, t3, 2, 3, 6, 7), 96);
          }
        }
        for (; p < kc; p++) {
          for (let c = 0; c < NR; c++) store<f32>(d + (<usize>(p * NR + c) << 2), load<f32>(src + (<usize>c * ldb + p) * 4));
        }
      } else {
        for (let p = 0; p < kc; p++) {
          for (let c = 0; c < NR; c++) {
            store<f32>(d + (<usize>(p * NR + c) << 2), c < cols ? load<f32>(src + (<usize>c * ldb + p) * 4) : 0);
          }
        }
      }
    }
  }
}

@inline function out4(c: usize, acc0: v128, acc1: v128, alpha: v128, beta: f32): void {
  let v0 = f32x4.mul(acc0, alpha), v1 = f32x4.mul(acc1, alpha);
  if (beta != 0) {
    v0 = f32x4.add(v0, f32x4.mul(v128.load(c), f32x4.splat(beta)));
    v1 = f32x4.add(v1, f32x4.mul(v128.load(c, 16), f32x4.splat(beta)));
  }
  v128.store(c, v0); v128.store(c, v1, 16);
}

/** One MR×NR tile over kc: C tile (rows × cols valid, row stride ldc elements) = alpha·Ap·Bp + beta·C.
 *  Partial tiles go through `tile` (MR×NR f32) and only the valid part is written. */
function micro(kc: i32, ap: usize, bp: usize, c: usize, ldc: i32, rows: i32, cols: i32, alpha: f32, beta: f32, tile: usize): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  const end = ap + (<usize>kc << 4);
  while (ap < end) {
    const b0 = v128.load(bp), b1 = v128.load(bp, 16);
    let a = v128.load32_splat(ap);
    c00 = f32x4.add(c00, f32x4.mul(a, b0)); c01 = f32x4.add(c01, f32x4.mul(a, b1));
    a = v128.load32_splat(ap, 4);
    c10 = f32x4.add(c10, f32x4.mul(a, b0)); c11 = f32x4.add(c11, f32x4.mul(a, b1));
    a = v128.load32_splat(ap, 8);
    c20 = f32x4.add(c20, f32x4.mul(a, b0)); c21 = f32x4.add(c21, f32x4.mul(a, b1));
    a = v128.load32_splat(ap, 12);
    c30 = f32x4.add(c30, f32x4.mul(a, b0)); c31 = f32x4.add(c31, f32x4.mul(a, b1));
    ap += 16; bp += 32;
  }
  const al = f32x4.splat(alpha);
  if (rows == MR && cols == NR) {
    const l4 = <usize>ldc << 2;
    out4(c, c00, c01, al, beta);
    out4(c + l4, c10, c11, al, beta);
    out4(c + 2 * l4, c20, c21, al, beta);
    out4(c + 3 * l4, c30, c31, al, beta);
    return;
  }
  v128.store(tile, f32x4.mul(c00, al)); v128.store(tile, f32x4.mul(c01, al), 16);
  v128.store(tile, f32x4.mul(c10, al), 32); v128.store(tile, f32x4.mul(c11, al), 48);
  v128.store(tile, f32x4.mul(c20, al), 64); v128.store(tile, f32x4.mul(c21, al), 80);
  v128.store(tile, f32x4.mul(c30, al), 96); v128.store(tile, f32x4.mul(c31, al), 112);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      const q = c + (<usize>r * ldc + j) * 4;
      const v = load<f32>(tile + (<usize>(r * NR + j) << 2));
      store<f32>(q, beta != 0 ? v + beta * load<f32>(q) : v);
    }
  }
}

/**
 * C[m0:m1, n0:n1] = alpha·op(A)·op(B) + beta·C over depth k (beta = 0: C is not read, so it may
 * hold NaN). op(A) is [m × k], op(B) is [k × n]; lda/ldb/ldc are row strides in elements of the
 * stored matrices. work: gemm_work_bytes(kc, mc, nc) bytes, 16-byte aligned, private to the caller.
 */
export function gemm_f32(a: usize, lda: i32, transA: i32, b: usize, ldb: i32, transB: i32, c: usize, ldc: i32,
  m0: i32, m1: i32, n0: i32, n1: i32, k: i32, alpha: f32, beta: f32, work: usize, kc: i32, mc: i32, nc: i32): void {
  if (m1 <= m0 || n1 <= n0) return;
  const mcp = (mc + MR - 1) / MR * MR;
  const ap = work, bp = work + <usize>mcp * kc * 4;
  const ncp = (nc + NR - 1) / NR * NR;
  const tile = bp + <usize>ncp * kc * 4;
  if (k <= 0) {
    // C = beta·C (alpha·0)
    for (let i = m0; i < m1; i++) {
      for (let j = n0; j < n1; j++) {
        const q = c + (<usize>i * ldc + j) * 4;
        store<f32>(q, beta != 0 ? beta * load<f32>(q) : 0);
      }
    }
    return;
  }
  for (let jc = n0; jc < n1; jc += nc) {
    const ncur = min(nc, n1 - jc);
    for (let pc = 0; pc < k; pc += kc) {
      const kcur = min(kc, k - pc);
      const bt = pc == 0 ? beta : <f32>1;
      packB(b, ldb, transB, pc, kcur, jc, ncur, bp);
      for (let ic = m0; ic < m1; ic += mc) {
        const mcur = min(mc, m1 - ic);
        packA(a, lda, transA, ic, mcur, pc, kcur, ap);
        for (let jr = 0; jr < ncur; jr += NR) {
          const cols = min(NR, ncur - jr);
          const bs = bp + <usize>jr * kcur * 4;
          for (let ir = 0; ir < mcur; ir += MR) {
            micro(kcur, ap + <usize>ir * kcur * 4, bs, c + (<usize>(ic + ir) * ldc + jc + jr) * 4, ldc,
              min(MR, mcur - ir), cols, alpha, bt, tile);
          }
        }
      }
    }
  }
}
