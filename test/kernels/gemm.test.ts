// compute.gemm (f32 GEMM, wasm/gemm.ts) against a float64 JS reference: all transpose
// combinations, edge tiles (m, n not multiples of the 4×8 tile), depth across several 256-deep
// blocks, n across several 1024-column blocks, row strides, alpha/beta, 1 vs 2 threads
// bit-identical, argument checks.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Compute, type Arena } from '../../src/kernels/index.js';
import { rng } from './ref.js';

const computes: Compute[] = [];
after(async () => { await Promise.all(computes.map((c) => c.close())); });
async function make(threads: number): Promise<{ c: Compute; a: Arena }> {
  const c = await Compute.create({ threads });
  computes.push(c);
  return { c, a: c.createArena(96 << 20) };
}

interface Case { m: number; n: number; k: number; tA: boolean; tB: boolean; pad?: number; alpha?: number; beta?: number }

/** Runs one case; returns C (copy) and checks it against the reference. */
function runCase(c: Compute, a: Arena, cs: Case, seed: number): Float32Array {
  const { m, n, k, tA, tB } = cs;
  const pad = cs.pad ?? 0;
  const r = rng(seed);
  const aRows = tA ? k : m, aCols = tA ? m : k, bRows = tB ? n : k, bCols = tB ? k : n;
  const lda = aCols + pad, ldb = bCols + pad, ldc = n + pad;
  const A = new Float32Array(Math.max(1, aRows * lda)).map(() => r() * 2 - 1);
  const B = new Float32Array(Math.max(1, bRows * ldb)).map(() => r() * 2 - 1);
  const C0 = new Float32Array(Math.max(1, m * ldc)).map(() => r() * 2 - 1);
  const ao = a.alloc(A.length * 4), bo = a.alloc(B.length * 4), co = a.alloc(C0.length * 4);
  a.f32(ao, A.length).set(A); a.f32(bo, B.length).set(B); a.f32(co, C0.length).set(C0);
  const beta = cs.beta ?? 0, alpha = cs.alpha ?? 1;
  if (beta === 0) a.f32(co, C0.length).fill(NaN); // beta = 0 must not read C
  c.gemm(a, { a: ao, b: bo, c: co, m, n, k, transA: tA, transB: tB, lda, ldb, ldc, alpha, beta });
  const C = a.f32(co, C0.length).slice();
  const opA = (i: number, p: number) => (tA ? A[p * lda + i] : A[i * lda + p]);
  const opB = (p: number, j: number) => (tB ? B[j * ldb + p] : B[p * ldb + j]);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0, sa = 0;
      for (let p = 0; p < k; p++) { const v = opA(i, p) * opB(p, j); s += v; sa += Math.abs(v); }
      const want = alpha * s + (beta ? beta * C0[i * ldc + j] : 0);
      const tol = 2e-6 * (Math.abs(alpha) * sa + Math.abs(beta * C0[i * ldc + j])) + 1e-30;
      const got = C[i * ldc + j];
      if (!(Math.abs(got - want) <= tol)) {
        assert.fail(`${JSON.stringify(cs)} C[${i},${j}] = ${got}, want ${want} (tol ${tol})`);
      }
    }
    // padding columns of C are untouched
    for (let j = n; j < ldc; j++) assert.ok(Number.isNaN(C[i * ldc + j]) || C[i * ldc + j] === C0[i * ldc + j], 'C padding written');
  }
  return C;
}

const CASES: Case[] = [];
for (const tA of [false, true]) {
  for (const tB of [false, true]) {
    CASES.push(
      { m: 1, n: 1, k: 1, tA, tB },
      { m: 4, n: 8, k: 16, tA, tB },
      { m: 7, n: 13, k: 5, tA, tB },
      { m: 33, n: 70, k: 300, tA, tB, beta: 1 },          // two depth blocks, accumulate
      { m: 130, n: 9, k: 257, tA, tB, alpha: 0.5, beta: -2 }, // m > MC, general alpha/beta
      { m: 5, n: 1100, k: 40, tA, tB, pad: 3 },           // n > NC, strides
      { m: 61, n: 37, k: 515, tA, tB, pad: 1, beta: 1 },
    );
  }
}

for (const threads of [1, 2]) {
  test(`gemm vs float64 reference, all transposes and edges (threads=${threads})`, async () => {
    const { c, a } = await make(threads);
    CASES.forEach((cs, i) => runCase(c, a, cs, 100 + i));
    // k = 0: C = beta·C
    const co = a.alloc(16);
    a.f32(co, 4).set([1, 2, 3, 4]);
    c.gemm(a, { a: co, b: co, c: a.alloc(16), m: 2, n: 2, k: 0 }); // distinct C: fine
    const c2 = a.alloc(16);
    a.f32(c2, 4).set([1, 2, 3, 4]);
    c.gemm(a, { a: co, b: co, c: c2, m: 2, n: 2, k: 0, beta: 3 });
    assert.deepEqual([...a.f32(c2, 4)], [3, 6, 9, 12]);
  });
}

test('gemm: 1 and 2 threads give bit-identical results on a split-sized problem', async () => {
  const one = await make(1), two = await make(2);
  for (const cs of [{ m: 100, n: 2100, k: 300, tA: false, tB: true }, { m: 2000, n: 40, k: 300, tA: true, tB: false, beta: 1 }] as Case[]) {
    // the reference check is O(mnk) in JS: keep it, the shapes are a few hundred MFLOP
    const c1 = runCase(one.c, one.a, cs, 7);
    const c2 = runCase(two.c, two.a, cs, 7);
    assert.ok(c1.every((v, i) => Object.is(v, c2[i])), `threads differ for ${JSON.stringify(cs)}`);
  }
});

test('gemm argument checks', async () => {
  const { c, a } = await make(1);
  const x = a.alloc(4096);
  assert.throws(() => c.gemm(a, { a: x, b: x, c: x, m: 4, n: 4, k: 4 }), /overlaps/);
  assert.throws(() => c.gemm(a, { a: x, b: x, c: a.capacity - 16, m: 4, n: 4, k: 4 }), RangeError);
  assert.throws(() => c.gemm(a, { a: x, b: x, c: x + 1024, m: 4, n: 4, k: 4, lda: 3 }), /row stride/);
  assert.throws(() => c.gemm(a, { a: x, b: x, c: x + 1024, m: 1.5, n: 4, k: 4 }), /bad m/);
  assert.throws(() => c.gemm(a, { a: x, b: x, c: x + 1024, m: 4, n: 4, k: 4, work: x + 4 }), /aligned/);
});
