// Dense linear algebra for the predictor trainer (predictor-train.ts): a bump allocator over an
// arena region, Gaussian fills, Cholesky QR on tall f32 matrices (big products on compute.gemm,
// the K×K parts in float64 JS), a Jacobi eigensolver for small symmetric matrices, and a
// randomized SVD driver for operators given only as products (G·V and Gᵀ·U).
import type { Arena, GemmParams } from '../kernels/index.js';
import { mulberry32 } from './sample.js';

export class PredictorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PredictorError';
  }
}

/** Bump allocator inside [base, base + size) of an arena, plus the gemm to use on it. */
export class Region {
  private top: number;
  constructor(readonly arena: Arena, readonly base: number, readonly size: number, readonly gemm: (p: GemmParams) => void) { this.top = base; }
  alloc(bytes: number): number {
    const off = Math.ceil(this.top / 64) * 64;
    if (off + bytes > this.base + this.size) {
      throw new PredictorError(`predictor workspace full: need ${bytes} more bytes, ${this.top - this.base} of ${this.size} used`);
    }
    this.top = off + bytes;
    return off;
  }
  /** f32 [n] */
  f32(n: number): number { return this.alloc(n * 4); }
  mark(): number { return this.top; }
  release(mark: number): void { this.top = mark; }
  view(off: number, n: number): Float32Array { return this.arena.f32(off, n); }
}

/** Standard normal samples (Box–Muller on mulberry32), scaled by `scale`. */
export function fillGaussian(dst: Float32Array, seed: number, scale = 1): void {
  const r = mulberry32(seed);
  for (let i = 0; i < dst.length; i += 2) {
    const u = 1 - r(), v = r();
    const m = Math.sqrt(-2 * Math.log(u)) * scale;
    dst[i] = m * Math.cos(2 * Math.PI * v);
    if (i + 1 < dst.length) dst[i + 1] = m * Math.sin(2 * Math.PI * v);
  }
}

/** In-place Cholesky of a K×K SPD matrix (float64, row-major) → lower L. Returns false on a
 *  non-positive pivot. */
function cholesky(m: Float64Array, K: number): boolean {
  for (let j = 0; j < K; j++) {
    let d = m[j * K + j];
    for (let p = 0; p < j; p++) d -= m[j * K + p] * m[j * K + p];
    if (!(d > 0)) return false;
    const l = Math.sqrt(d);
    m[j * K + j] = l;
    for (let i = j + 1; i < K; i++) {
      let s = m[i * K + j];
      for (let p = 0; p < j; p++) s -= m[i * K + p] * m[j * K + p];
      m[i * K + j] = s / l;
    }
    for (let p = j + 1; p < K; p++) m[j * K + p] = 0;
  }
  return true;
}

/** Rᵀ⁻¹ as needed for Y·R⁻¹ where YᵀY = L·Lᵀ (R = Lᵀ): returns R⁻¹ (upper) as f32 row-major. */
function invUpperFromL(L: Float64Array, K: number): Float32Array {
  // R = Lᵀ upper; solve R·X = I column by column (back substitution)
  const X = new Float64Array(K * K);
  for (let c = 0; c < K; c++) {
    for (let i = c; i >= 0; i--) {
      let s = i === c ? 1 : 0;
      for (let p = i + 1; p <= c; p++) s -= L[p * K + i] * X[p * K + c]; // R[i,p] = L[p,i]
      X[i * K + c] = s / L[i * K + i];
    }
  }
  return Float32Array.from(X);
}

/**
 * Orthonormalizes the columns of Y [rows × K] (f32 in the arena) in place: Cholesky QR, three
 * passes, the first with a small diagonal shift so that a badly conditioned Y (condition number
 * up to ~1/√eps_f32 after the Gram product squares it) still factors; the later passes restore
 * orthogonality. tmp: f32 [rows × K] scratch in the same arena.
 */
export function cholQR(reg: Region, Y: number, rows: number, K: number, tmp: number): void {
  const a = reg.arena;
  const mark = reg.mark();
  const gOff = reg.f32(K * K), rOff = reg.f32(K * K);
  for (let pass = 0; pass < 3; pass++) {
    reg.gemm({ a: Y, b: Y, c: gOff, m: K, n: K, k: rows, transA: true });
    const g = Float64Array.from(a.f32(gOff, K * K));
    let tr = 0;
    for (let i = 0; i < K; i++) tr += g[i * K + i];
    if (!(tr > 0) || !Number.isFinite(tr)) throw new PredictorError(`cholQR: degenerate matrix (trace ${tr})`);
    let shift = pass === 0 ? 1e-6 * tr / K : 0;
    for (let tries = 0; ; tries++) {
      const m = g.slice();
      for (let i = 0; i < K; i++) m[i * K + i] += shift;
      if (cholesky(m, K)) { a.f32(rOff, K * K).set(invUpperFromL(m, K)); break; }
      if (tries > 8) throw new PredictorError('cholQR: Cholesky failed (rank-deficient data?)');
      shift = Math.max(shift * 100, 1e-6 * tr / K);
    }
    reg.gemm({ a: Y, b: rOff, c: tmp, m: rows, n: K, k: K });
    a.f32(Y, rows * K).set(a.f32(tmp, rows * K));
  }
  reg.release(mark);
}

/** Eigen-decomposition of a symmetric K×K matrix (float64 row-major, destroyed) by cyclic Jacobi.
 *  Returns eigenvalues descending and eigenvectors as columns of V (row-major K×K), same order. */
export function symEig(A: Float64Array, K: number): { values: Float64Array; vectors: Float64Array } {
  const V = new Float64Array(K * K);
  for (let i = 0; i < K; i++) V[i * K + i] = 1;
  let norm = 0;
  for (let i = 0; i < K * K; i++) norm += A[i] * A[i];
  for (let sweep = 0; sweep < 30; sweep++) {
    let off = 0;
    for (let p = 0; p < K; p++) for (let q = p + 1; q < K; q++) off += A[p * K + q] * A[p * K + q];
    if (off <= 1e-24 * norm) break;
    for (let p = 0; p < K - 1; p++) {
      for (let q = p + 1; q < K; q++) {
        const apq = A[p * K + q];
        if (Math.abs(apq) < 1e-300) continue;
        const app = A[p * K + p], aqq = A[q * K + q];
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const cs = 1 / Math.sqrt(t * t + 1), sn = t * cs;
        for (let k = 0; k < K; k++) { // columns p, q
          const akp = A[k * K + p], akq = A[k * K + q];
          A[k * K + p] = cs * akp - sn * akq;
          A[k * K + q] = sn * akp + cs * akq;
        }
        for (let k = 0; k < K; k++) { // rows p, q
          const apk = A[p * K + k], aqk = A[q * K + k];
          A[p * K + k] = cs * apk - sn * aqk;
          A[q * K + k] = sn * apk + cs * aqk;
        }
        for (let k = 0; k < K; k++) {
          const vkp = V[k * K + p], vkq = V[k * K + q];
          V[k * K + p] = cs * vkp - sn * vkq;
          V[k * K + q] = sn * vkp + cs * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: K }, (_, i) => i).sort((i, j) => A[j * K + j] - A[i * K + i]);
  const values = new Float64Array(K), vectors = new Float64Array(K * K);
  order.forEach((src, dst) => {
    values[dst] = A[src * K + src];
    for (let k = 0; k < K; k++) vectors[k * K + dst] = V[k * K + src];
  });
  return { values, vectors };
}

/** A linear operator G [rows × cols] given by its products with K-column blocks in the arena. */
export interface LinearOp {
  rows: number; cols: number;
  /** out [rows × K] = G · v, v [cols × K] */
  mul(v: number, out: number, K: number): void;
  /** out [cols × K] = Gᵀ · u, u [rows × K] */
  mulT(u: number, out: number, K: number): void;
}

/**
 * Randomized SVD (Halko–Martinsson–Tropp, with power iterations): the top `rank` right singular
 * vectors of G as columns of V [cols × rank] (f32, written at vOut) and the singular values.
 * K = rank + oversample columns are carried through `powerIters` rounds of G·Gᵀ.
 */
export function randomizedSVD(reg: Region, G: LinearOp, rank: number, oversample: number,
  powerIters: number, seed: number, vOut: number): Float64Array {
  const a = reg.arena;
  const K = Math.min(rank + oversample, G.rows, G.cols);
  if (rank > K) throw new PredictorError(`randomizedSVD: rank ${rank} > min(rows ${G.rows}, cols ${G.cols})`);
  const mark = reg.mark();
  const omega = reg.f32(G.cols * K), Y = reg.f32(G.rows * K), tmpY = reg.f32(G.rows * K), tmpZ = reg.f32(G.cols * K);
  fillGaussian(a.f32(omega, G.cols * K), seed);
  const Z = omega; // reused: [cols × K]
  G.mul(omega, Y, K);
  cholQR(reg, Y, G.rows, K, tmpY);
  for (let it = 0; it < powerIters; it++) {
    G.mulT(Y, Z, K);
    cholQR(reg, Z, G.cols, K, tmpZ);
    G.mul(Z, Y, K);
    cholQR(reg, Y, G.rows, K, tmpY);
  }
  // G ≈ Y·(GᵀY)ᵀ with Y orthonormal: G's right singular vectors are those of Zᵀ = (GᵀY)ᵀ,
  // i.e. Z·W·Λ^(-1/2) with ZᵀZ = W·Λ·Wᵀ
  G.mulT(Y, Z, K);
  const mOff = reg.f32(K * K);
  reg.gemm({ a: Z, b: Z, c: mOff, m: K, n: K, k: G.cols, transA: true });
  const { values, vectors } = symEig(Float64Array.from(a.f32(mOff, K * K)), K);
  const wOff = reg.f32(K * rank);
  const w = a.f32(wOff, K * rank);
  const sv = new Float64Array(rank);
  for (let j = 0; j < rank; j++) {
    sv[j] = Math.sqrt(Math.max(values[j], 0));
    const inv = sv[j] > 0 ? 1 / sv[j] : 0;
    for (let i = 0; i < K; i++) w[i * rank + j] = vectors[i * K + j] * inv;
  }
  reg.gemm({ a: Z, b: wOff, c: vOut, m: G.cols, n: rank, k: K });
  reg.release(mark);
  return sv;
}

/** Inverse standard normal CDF (Acklam's rational approximation, |rel. error| < 1.2e-9). */
export function normInv(p: number): number {
  const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
  const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
  const cc = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
  const pl = 0.02425;
  p = Math.min(1 - 1e-12, Math.max(1e-12, p));
  if (p < pl) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((cc[0] * q + cc[1]) * q + cc[2]) * q + cc[3]) * q + cc[4]) * q + cc[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - pl) return -normInv(1 - p);
  const q = p - 0.5, r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}
