import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Compute, type Arena } from '../../src/kernels/index.js';
import { F32, F16, f32ToF16, f16ToF32, fround, rng } from './ref.js';

const computes: Compute[] = [];
after(async () => { await Promise.all(computes.map((c) => c.close())); });
async function make(threads: number): Promise<{ c: Compute; a: Arena }> {
  const c = await Compute.create({ threads, minParallelBytes: 0 });
  computes.push(c);
  return { c, a: c.createArena(32 << 20) };
}
function put(a: Arena, v: ArrayLike<number>): number {
  const o = a.alloc(v.length * 4);
  a.f32(o, v.length).set(v);
  return o;
}
function randVec(n: number, r: () => number, scale = 1): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = (r() * 2 - 1) * scale;
  return v;
}
function close(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string) {
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    assert.ok(d <= tol * Math.max(1, Math.abs(want[i])), `${what}[${i}]: got ${got[i]}, want ${want[i]}`);
  }
}

test('rmsnorm follows ggml (double Σx², f32 scale, (x·scale)·w)', async () => {
  const { c, a } = await make(1);
  const r = rng(21);
  for (const n of [1, 3, 64, 4097, 5120]) {
    const x = randVec(n, r, 3), w = randVec(n, r);
    const xo = put(a, x), wo = put(a, w), out = a.alloc(n * 4);
    const eps = 1e-5;
    c.rmsnorm(a, xo, wo, out, n, eps);
    let s = 0;
    for (let i = 0; i < n; i++) s += fround(x[i] * x[i]);
    const mean = fround(s / n);
    const scale = fround(1 / fround(Math.sqrt(fround(mean + fround(eps)))));
    const want = Array.from(x, (v, i) => fround(fround(v * scale) * w[i]));
    close(a.f32(out, n), want, 1e-6, `rmsnorm n=${n}`);
  }
});

test('rope, ggml normal mode (θ multiplied per pair in f32, partial ropeDim)', async () => {
  const { c, a } = await make(1);
  const r = rng(22);
  for (const [nHeads, headDim, ropeDim, pos, base] of [[4, 64, 64, 0, 10000], [3, 128, 128, 1234, 500000], [2, 64, 32, 77, 10000], [1, 8, 8, 4095, 10000]]) {
    const n = nHeads * headDim;
    const v = randVec(n, r);
    const vo = put(a, v);
    c.rope(a, vo, nHeads, headDim, pos, base, ropeDim);
    const thetaScale = fround(Math.pow(fround(base), fround(-2 / ropeDim)));
    const want = Float32Array.from(v);
    for (let h = 0; h < nHeads; h++) {
      let theta = fround(pos);
      for (let i = 0; i < ropeDim; i += 2) {
        const cs = fround(Math.cos(theta)), sn = fround(Math.sin(theta));
        const x0 = v[h * headDim + i], x1 = v[h * headDim + i + 1];
        want[h * headDim + i] = fround(fround(x0 * cs) - fround(x1 * sn));
        want[h * headDim + i + 1] = fround(fround(x0 * sn) + fround(x1 * cs));
        theta = fround(theta * thetaScale);
      }
    }
    close(a.f32(vo, n), want, 1e-6, `rope ${nHeads}x${headDim}/${ropeDim} pos ${pos}`);
  }
});

test('storeKV f32 copies, f16 rounds to nearest even', async () => {
  const { c, a } = await make(1);
  const r = rng(23);
  const n = 999;
  const x = randVec(n, r, 100);
  const xo = put(a, x);
  const d32 = a.alloc(n * 4), d16 = a.alloc(n * 2);
  c.storeKV(a, F32, xo, d32, n);
  c.storeKV(a, F16, xo, d16, n);
  assert.deepEqual(a.f32(d32, n).slice(), x);
  assert.deepEqual(Array.from(a.u16(d16, n)), Array.from(x, f32ToF16));
});

function attentionRef(q: Float32Array, kv: { k: Float64Array; v: Float64Array }, nHeads: number, nKv: number,
  headDim: number, nPos: number, stride: number, f16: boolean): Float64Array {
  const out = new Float64Array(nHeads * headDim);
  const scale = fround(1 / Math.sqrt(headDim));
  for (let h = 0; h < nHeads; h++) {
    const kh = Math.floor(h / (nHeads / nKv));
    const s = new Float64Array(nPos);
    for (let t = 0; t < nPos; t++) {
      let d = 0;
      for (let i = 0; i < headDim; i++) {
        const qi = f16 ? f16ToF32(f32ToF16(q[h * headDim + i])) : q[h * headDim + i];
        d += qi * kv.k[t * stride + kh * headDim + i];
      }
      s[t] = d * scale;
    }
    const m = Math.max(...s);
    let sum = 0;
    for (let t = 0; t < nPos; t++) { s[t] = Math.exp(s[t] - m); sum += s[t]; }
    // with an f16 V cache the probabilities are rounded to f16 first (ggml's vec_dot_type for V)
    for (let t = 0; t < nPos; t++) {
      const p = f16 ? f16ToF32(f32ToF16(Math.fround(s[t] / sum))) : s[t] / sum;
      for (let i = 0; i < headDim; i++) out[h * headDim + i] += p * kv.v[t * stride + kh * headDim + i];
    }
  }
  return out;
}

for (const threads of [1, 2]) {
  test(`attention f32 / f16 caches, GQA, strided (threads=${threads})`, async () => {
    const { c, a } = await make(threads);
    const r = rng(30 + threads);
    // [32, 8, 512, ...]: q of a thread's heads exceeds its scratch slot → processed in head chunks
    for (const [nHeads, nKv, headDim, nPos, extra] of [[8, 2, 64, 1, 0], [8, 8, 32, 7, 0], [6, 2, 128, 100, 16], [5, 1, 20, 33, 4], [3, 3, 8, 300, 0], [32, 8, 512, 5, 0], [2, 1, 13, 9, 1]]) {
      const stride = nKv * headDim + extra;
      for (const kvType of [F32, F16]) {
        const q = randVec(nHeads * headDim, r, 2);
        const kf = randVec(nPos * stride, r, 2), vf = randVec(nPos * stride, r);
        for (let i = 0; i < kf.length; i += 17) { kf[i] *= 1e-5; vf[i] *= 1e-5; } // f16 subnormals
        const es = kvType === F16 ? 2 : 4;
        const ko = a.alloc(nPos * stride * es), vo = a.alloc(nPos * stride * es);
        const kr = new Float64Array(nPos * stride), vr = new Float64Array(nPos * stride);
        if (kvType === F16) {
          const k16 = a.u16(ko, nPos * stride), v16 = a.u16(vo, nPos * stride);
          for (let i = 0; i < nPos * stride; i++) {
            k16[i] = f32ToF16(kf[i]); v16[i] = f32ToF16(vf[i]);
            kr[i] = f16ToF32(k16[i]); vr[i] = f16ToF32(v16[i]);
          }
        } else {
          a.f32(ko, nPos * stride).set(kf); a.f32(vo, nPos * stride).set(vf);
          kr.set(kf); vr.set(vf);
        }
        const qo = put(a, q), out = a.alloc(nHeads * headDim * 4), scratch = a.alloc(nHeads * nPos * 4);
        c.attention(a, { q: qo, k: ko, v: vo, out, kvType, nHeads, nKvHeads: nKv, headDim, nPos, kvStride: stride, scratch });
        const want = attentionRef(q, { k: kr, v: vr }, nHeads, nKv, headDim, nPos, stride, kvType === F16);
        close(a.f32(out, nHeads * headDim), want, 2e-5, `attention type ${kvType} ${nHeads}/${nKv}x${headDim} nPos ${nPos}`);
        // q is not modified
        assert.deepEqual(a.f32(qo, q.length).slice(), q);
      }
    }
  });
}

test('siluMul, reluMul, add, softmax', async () => {
  const { c, a } = await make(1);
  const r = rng(40);
  for (const n of [1, 5, 64, 1003, 13824]) {
    const g = randVec(n, r, 10), u = randVec(n, r, 3);
    const go = put(a, g), uo = put(a, u), out = a.alloc(n * 4);
    c.siluMul(a, go, uo, out, n);
    close(a.f32(out, n), Array.from(g, (x, i) => (x / (1 + Math.exp(-x))) * u[i]), 1e-6, `silu n=${n}`);
    c.reluMul(a, go, uo, out, n);
    assert.deepEqual(a.f32(out, n).slice(), Float32Array.from(g, (x, i) => fround((x > 0 ? x : 0) * u[i])));
    c.add(a, go, uo, n);
    assert.deepEqual(a.f32(go, n).slice(), Float32Array.from(g, (x, i) => fround(x + u[i])));
    const s = randVec(n, r, 20);
    const so = put(a, s);
    c.softmax(a, so, n);
    const m = Math.max(...s);
    let sum = 0;
    for (const x of s) sum += Math.exp(x - m);
    close(a.f32(so, n), Array.from(s, (x) => Math.exp(x - m) / sum), 1e-6, `softmax n=${n}`);
  }
});
