// The attention kernel reading K/V through a page table gives exactly (bit for bit) the output of
// the contiguous cache: same rows, same arithmetic in the same order; only row addresses differ.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Compute, type Arena } from '../../src/kernels/index.js';
import { f32ToF16 } from '../../src/formats/quant.js';
import { mulberry32 } from '../../src/engine/sample.js';

const F32 = 0, F16 = 1;
const computes: Compute[] = [];
after(async () => { await Promise.all(computes.map((c) => c.close())); });

/** seeded, so a failure is reproducible */
const rng = mulberry32;

function shuffled(n: number, r: () => number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

async function make(threads: number): Promise<{ c: Compute; a: Arena }> {
  const c = await Compute.create({ threads, minParallelBytes: 0 });
  computes.push(c);
  return { c, a: c.createArena(16 << 20) };
}

for (const threads of [1, 2]) {
  test(`paged attention = contiguous attention bit for bit (f32/f16, GQA, page sizes 1..16, threads=${threads})`, async () => {
    const { c, a } = await make(threads);
    const r = rng(100 + threads);
    for (const [nHeads, nKv, headDim, nPos, pageSize, extra] of [[4, 2, 16, 1, 16, 0], [8, 2, 64, 37, 16, 0], [6, 3, 32, 50, 3, 8], [4, 4, 8, 9, 1, 0], [32, 8, 128, 20, 4, 0], [2, 1, 13, 33, 16, 3]]) {
      const stride = nKv * headDim + extra;
      const nPages = Math.ceil(nPos / pageSize);
      const poolPages = nPages + 3; // spare pages, so ids are scattered over a larger region
      for (const kvType of [F32, F16]) {
        const es = kvType === F16 ? 2 : 4;
        const rowBytes = stride * es;
        const k = new Float32Array(nPos * stride).map(() => r() * 4 - 2);
        const v = new Float32Array(nPos * stride).map(() => r() * 2 - 1);
        const q = new Float32Array(nHeads * headDim).map(() => r() * 4 - 2);
        // contiguous cache
        const kc = a.alloc(nPos * rowBytes), vc = a.alloc(nPos * rowBytes);
        // paged cache: region of poolPages pages, positions placed through a shuffled table
        const kp = a.alloc(poolPages * pageSize * rowBytes), vp = a.alloc(poolPages * pageSize * rowBytes);
        const ids = shuffled(poolPages, r).slice(0, nPages);
        const tab = a.alloc(nPages * 4, 4);
        new Int32Array(a.memory.buffer, tab, nPages).set(ids);
        const write = (base: number, off: number, src: Float32Array, t: number) => {
          const row = src.subarray(t * stride, (t + 1) * stride);
          if (kvType === F16) a.u16(base + off, stride).set(Array.from(row, f32ToF16));
          else a.f32(base + off, stride).set(row);
        };
        for (let t = 0; t < nPos; t++) {
          write(kc, t * rowBytes, k, t);
          write(vc, t * rowBytes, v, t);
          const pageOff = ids[Math.floor(t / pageSize)]! * pageSize * rowBytes + (t % pageSize) * rowBytes;
          write(kp, pageOff, k, t);
          write(vp, pageOff, v, t);
        }
        const qo = a.alloc(q.length * 4);
        a.f32(qo, q.length).set(q);
        const o1 = a.alloc(q.length * 4), o2 = a.alloc(q.length * 4), s1 = a.alloc(nHeads * nPos * 4), s2 = a.alloc(nHeads * nPos * 4);
        const base = { q: qo, kvType, nHeads, nKvHeads: nKv, headDim, nPos, kvStride: stride };
        c.attention(a, { ...base, k: kc, v: vc, out: o1, scratch: s1 });
        c.attention(a, { ...base, k: kp, v: vp, out: o2, scratch: s2, pageTable: tab, pageSize });
        const what = `${nHeads}/${nKv}×${headDim} nPos ${nPos} page ${pageSize} type ${kvType}`;
        assert.deepEqual(a.f32(o2, q.length).slice(), a.f32(o1, q.length).slice(), what);
        assert.ok(a.f32(o1, q.length).some((x) => x !== 0), `${what}: output not all zero`);
      }
    }
  });
}

test('paged attention refuses page tables that point outside the arena or hold −1', async () => {
  const { c, a } = await make(1);
  const k = a.alloc(4 * 16 * 32), v = a.alloc(4 * 16 * 32), q = a.alloc(4 * 32), out = a.alloc(4 * 32), s = a.alloc(4 * 64);
  const tab = a.alloc(16, 4);
  const t = new Int32Array(a.memory.buffer, tab, 4);
  const p = { q, k, v, out, kvType: F32, nHeads: 1, nKvHeads: 1, headDim: 32, nPos: 40, kvStride: 32, scratch: s, pageTable: tab, pageSize: 16 };
  t.set([0, 1, 2, 0]);
  c.attention(a, p); // in range
  t.set([0, 1e6, 2, 0]);
  assert.throws(() => c.attention(a, p), RangeError);
  t.set([0, -1, 2, 0]);
  assert.throws(() => c.attention(a, p), /page table entry 1 is -1/);
  assert.throws(() => c.attention(a, { ...p, pageSize: 0 }), /pageSize/);
});
