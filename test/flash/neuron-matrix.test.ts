// NeuronMatrix against a naive reference (Map id → record bytes) under long seeded random
// insert/delete sequences, checking the arena bytes of every row after every step; windowing,
// LRU eviction, errors leaving the state unchanged, and the kernels running over the rows.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  NeuronMatrix, NeuronMatrixError, NeuronMatrixFullError, WindowPolicy, MATRIX_ALIGN, type ArenaLike,
} from '../../src/flash/neuron-matrix.js';
import { mulberry32 } from '../../src/engine/sample.js';
import { Compute } from '../../src/kernels/index.js';

const F32 = 0;

/** A bump allocator over a WebAssembly.Memory that starts misaligned (alignment must be asked for). */
function fakeArena(bytes: number): ArenaLike & { buf: ArrayBuffer } {
  const mem = new WebAssembly.Memory({ initial: Math.ceil((bytes + 2 * 65536) / 65536) });
  let top = 100;
  return {
    buf: mem.buffer,
    alloc(b: number, a = 64) {
      const off = Math.ceil(top / a) * a;
      top = off + b;
      if (top > mem.buffer.byteLength) throw new Error('fake arena full');
      return off;
    },
    u8: (off: number, len: number) => new Uint8Array(mem.buffer, off, len),
  };
}

/** Deterministic record content for (id, version): a re-admitted id gets different bytes. */
function recordBytes(id: number, version: number, rb: number): Uint8Array {
  const r = mulberry32(id * 7919 + version * 104729 + 1);
  const out = new Uint8Array(rb);
  for (let i = 0; i < rb; i += 4) {
    const v = (r() * 4294967296) >>> 0;
    out[i] = v; out[i + 1] = v >>> 8; out[i + 2] = v >>> 16; out[i + 3] = v >>> 24;
  }
  return out;
}

function eqBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** The matrix agrees with the reference: same id set, maps consistent, every row's bytes right. */
function verify(m: NeuronMatrix, ref: Map<number, Uint8Array>, what: string): void {
  assert.equal(m.n, ref.size, `${what}: n`);
  m.check();
  for (let r = 0; r < m.n; r++) {
    const id = m.ids[r]!;
    const want = ref.get(id);
    assert.ok(want, `${what}: row ${r} holds id ${id}, not in the reference`);
    assert.equal(m.rowOf[id], r, `${what}: rowOf[${id}]`);
    assert.ok(eqBytes(m.rows(r, 1), want), `${what}: bytes of row ${r} (id ${id})`);
  }
  for (let id = 0; id < m.nFF; id++) assert.equal(m.has(id), ref.has(id), `${what}: has(${id})`);
}

function pickDistinct(rand: () => number, pool: number[], k: number): number[] {
  const a = pool.slice();
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (a.length - i));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a.slice(0, k);
}

for (const [seed, nFF, capacity, rb] of [[1, 300, 80, 512], [2, 64, 64, 1024], [3, 1000, 200, 512]] as const) {
  test(`random insert/delete vs Map reference (seed ${seed}, nFF ${nFF}, capacity ${capacity}, record ${rb} B)`, () => {
    const arena = fakeArena(capacity * rb + 8192);
    const guardLo = arena.alloc(64, 64);
    const m = new NeuronMatrix(arena, { nFF, recordBytes: rb, capacity, layer: 7 });
    const guardHi = arena.alloc(64, 64);
    assert.equal(m.off % MATRIX_ALIGN, 0);
    arena.u8(guardLo, 64).fill(0xa5);
    arena.u8(guardHi, 64).fill(0x5a);
    const rand = mulberry32(seed);
    const ref = new Map<number, Uint8Array>();
    let version = 0, moves = 0, removes = 0, fulls = 0, rollbacks = 0, placeholders = 0;
    for (let step = 0; step < 3000; step++) {
      const what = `step ${step}`;
      const u = rand();
      const resident = [...ref.keys()];
      const absent: number[] = [];
      for (let id = 0; id < nFF; id++) if (!ref.has(id)) absent.push(id);
      if (u < 0.45) {
        // append k new neurons, written as one "read" into rows [n, n + k); some reads carry
        // placeholder rows (−1: gap records not kept) that commit() must delete
        const k = Math.min(m.free, absent.length, Math.floor(rand() * 16));
        const ids = pickDistinct(rand, absent, k);
        const holes = rand() < 0.4 ? Math.min(m.free - k, Math.floor(rand() * 5)) : 0;
        for (let i = 0; i < holes; i++) ids.splice(Math.floor(rand() * (ids.length + 1)), 0, -1);
        const n0 = m.n;
        const first = m.append(Int32Array.from(ids), step);
        assert.equal(first, n0, `${what}: first row`);
        const bytes = ids.map((id) => (id < 0 ? new Uint8Array(rb).fill(0xdd) : recordBytes(id, ++version, rb)));
        const dst = m.rows(first, ids.length);
        assert.equal(dst.byteOffset % 512, 0, `${what}: row address 512-aligned`);
        bytes.forEach((b, i) => dst.set(b, i * rb));
        for (let i = 0; i < ids.length; i++) assert.equal(m.ids[first + i], ids[i], `${what}: row order = given order`);
        assert.equal(m.pending, ids.length);
        const newN = n0 + k;
        const must = ids.filter((id, i) => id < 0 && n0 + i < newN).length; // placeholders below the new n
        const moved = m.commit();
        assert.equal(moved, must, `${what}: commit moves one row per placeholder below the new n`);
        moves += moved;
        placeholders += holes;
        ids.forEach((id, i) => { if (id >= 0) ref.set(id, bytes[i]!); });
      } else if (u < 0.85) {
        // delete d resident neurons (sometimes with a duplicate)
        const d = Math.min(resident.length, Math.floor(rand() * 20));
        const ids = pickDistinct(rand, resident, d);
        if (d > 0 && rand() < 0.2) ids.push(ids[0]!);
        const newN = m.n - d;
        const rowBefore = new Map<number, number>();
        for (let r = 0; r < m.n; r++) rowBefore.set(m.ids[r]!, r);
        const dead = new Set(ids);
        const must = [...dead].filter((id) => rowBefore.get(id)! < newN).length; // holes below the new n
        const got = m.remove(ids);
        assert.equal(got, must, `${what}: rows moved`);
        moves += got;
        removes += d;
        for (const id of dead) ref.delete(id);
        // nothing else moves: survivors below newN keep their row; the ones above went into holes
        const holes = new Set([...dead].map((id) => rowBefore.get(id)!).filter((r) => r < newN));
        for (const [id, r] of rowBefore) {
          if (dead.has(id)) continue;
          if (r < newN) assert.equal(m.rowOf[id], r, `${what}: id ${id} moved from row ${r}`);
          else assert.ok(holes.has(m.rowOf[id]!), `${what}: id ${id} from row ${r} went to ${m.rowOf[id]}, not a hole`);
        }
      } else if (u < 0.93) {
        // a read failed: append then rollback leaves the state as it was
        const k = Math.min(m.free, absent.length, 1 + Math.floor(rand() * 8));
        const ids = pickDistinct(rand, absent, k);
        const first = m.append(ids, step);
        m.rows(first, k).fill(0xee); // partial garbage
        if (k > 0) assert.throws(() => m.remove([resident[0] ?? ids[0]!]), /not committed/, 'remove while reads pending');
        assert.equal(m.rollback(), k);
        rollbacks++;
      } else {
        // too many: typed error with the numbers, nothing changes
        const k = m.free + 1;
        if (absent.length >= k) {
          const e = assert.throws(() => m.append(absent.slice(0, k), step), (err: unknown) => {
            assert.ok(err instanceof NeuronMatrixFullError);
            assert.equal(err.name, 'NeuronMatrixFullError');
            assert.deepEqual([err.capacity, err.used, err.requested, err.layer], [capacity, m.n, k, 7]);
            assert.match(err.message, new RegExp(`${k} more rows requested but only ${m.free} free`));
            return true;
          });
          void e;
          fulls++;
        }
      }
      verify(m, ref, what);
      assert.ok(arena.u8(guardLo, 64).every((b) => b === 0xa5) && arena.u8(guardHi, 64).every((b) => b === 0x5a), `${what}: guard bytes`);
    }
    assert.equal(m.stats.moved, moves);
    assert.equal(m.stats.removed, removes);
    assert.equal(m.stats.dropped, placeholders);
    assert.equal(m.stats.movedBytes, moves * rb);
    assert.ok(moves > 100 && removes > moves && rollbacks > 50 && placeholders > 100 && (fulls > 0 || capacity === nFF), `sequence exercised the paths: moves ${moves} removes ${removes} rollbacks ${rollbacks} fulls ${fulls}`);
  });
}

test('delete moves only rows that must move: deleting the last rows copies nothing, one middle row copies one', () => {
  const m = new NeuronMatrix(fakeArena(1 << 16), { nFF: 20, recordBytes: 512, capacity: 10 });
  m.append([0, 1, 2, 3, 4, 5, 6, 7], 0);
  for (let r = 0; r < 8; r++) m.rows(r, 1).fill(r + 1);
  m.commit();
  assert.equal(m.remove([7, 6]), 0);
  assert.deepEqual([...m.ids.subarray(0, m.n)], [0, 1, 2, 3, 4, 5]);
  assert.equal(m.remove([1]), 1); // row 1 ← row 5
  assert.deepEqual([...m.ids.subarray(0, m.n)], [0, 5, 2, 3, 4]);
  assert.ok(m.rows(1, 1).every((b) => b === 6));
  assert.equal(m.remove([0, 2, 4]), 1); // new n = 2: holes 0 (row 2 and 4 are at/above it) ← row 3
  assert.deepEqual([...m.ids.subarray(0, m.n)], [3, 5]);
  assert.ok(m.rows(0, 1).every((b) => b === 4) && m.rows(1, 1).every((b) => b === 6));
  assert.deepEqual([m.rowOf[0], m.rowOf[2], m.rowOf[4], m.rowOf[3], m.rowOf[5]], [-1, -1, -1, 0, 1]);
});

test('errors leave the matrix unchanged: unknown, resident, repeated ids', () => {
  const m = new NeuronMatrix(fakeArena(1 << 16), { nFF: 10, recordBytes: 512, capacity: 6 });
  m.append([3, 4], 0);
  m.commit();
  for (const bad of [[5, 3], [5, 5], [5, 10], [5, -2], [5, 1.5]]) {
    assert.throws(() => m.append(bad, 1), (e: unknown) => e instanceof NeuronMatrixError && e.name === 'NeuronMatrixError');
    assert.equal(m.n, 2);
    assert.equal(m.rowOf[5], -1, `after append(${bad})`);
    m.check();
  }
  assert.throws(() => m.remove([3, 5]), /neuron 5 is not resident/);
  assert.deepEqual([m.n, m.rowOf[3], m.rowOf[4]], [2, 0, 1]);
  assert.equal(m.remove([3]), 1); // the failed remove left no row marked
  assert.deepEqual([...m.ids.subarray(0, m.n)], [4]);
  assert.throws(() => new NeuronMatrix(fakeArena(1 << 16), { nFF: 10, recordBytes: 500, capacity: 6 }), RangeError);
  assert.throws(() => new NeuronMatrix(fakeArena(1 << 16), { nFF: 10, recordBytes: 512, capacity: 11 }), RangeError);
});

test('touch: marks last use, reports missing ids once, in order', () => {
  const m = new NeuronMatrix(fakeArena(1 << 16), { nFF: 10, recordBytes: 512, capacity: 6 });
  m.append([2, 5], 0);
  m.commit();
  const miss = new Int32Array(10);
  assert.equal(m.touch([7, 2, 7, 1, 5, 1, 9], 3, miss), 3);
  assert.deepEqual([...miss.subarray(0, 3)], [7, 1, 9]);
  assert.deepEqual([m.lastUsed[2], m.lastUsed[7], m.lastUsed[0]], [3, 3, -1]);
  assert.equal(m.touch([7, 1], 3, miss), 2, 'a second call in the same token still reports them');
});

test('window policy: resident set = union of the last `window` tokens\' active sets (random, 300 tokens)', () => {
  for (const window of [1, 2, 5]) {
    const nFF = 200;
    const m = new NeuronMatrix(fakeArena(nFF * 512 + 8192), { nFF, recordBytes: 512, capacity: nFF, policy: new WindowPolicy(window) });
    const rand = mulberry32(40 + window);
    const history: Set<number>[] = [];
    const miss = new Int32Array(nFF);
    let moved = 0;
    for (let t = 0; t < 300; t++) {
      const active: number[] = [];
      for (let id = 0; id < nFF; id++) if (rand() < 0.3) active.push(id);
      history.push(new Set(active));
      const k = m.touch(active, t, miss);
      const before = m.n;
      const evicted = m.evict(t);
      moved += m.stats.moved;
      const missing = miss.subarray(0, k);
      for (const id of missing) assert.ok(!m.has(id));
      m.append(missing, t);
      m.commit();
      const want = new Set<number>();
      for (const s of history.slice(Math.max(0, t - window + 1))) for (const id of s) want.add(id);
      const got = new Set([...m.ids.subarray(0, m.n)]);
      assert.deepEqual([...got].sort((a, b) => a - b), [...want].sort((a, b) => a - b), `window ${window} token ${t}`);
      assert.equal(m.n, before - evicted + k);
    }
    assert.ok(moved > 0);
  }
});

test('evictLRU frees rows oldest first, never ones used at the current token; typed error when impossible', () => {
  const m = new NeuronMatrix(fakeArena(1 << 16), { nFF: 10, recordBytes: 512, capacity: 5 });
  m.append([0, 1], 0); m.append([2, 3], 1); m.append([4], 2); m.commit();
  m.touch([0], 2);
  assert.equal(m.evictLRU(2, 2), 2); // need 2 rows, 0 free: ids 1 (t0) then 2 (t1; tie with 3, lower id)
  assert.deepEqual([m.has(1), m.has(2), m.has(3), m.has(0), m.has(4)], [false, false, true, true, true]);
  assert.equal(m.evictLRU(1, 2), 0, 'already free');
  m.append([5, 6], 2); m.commit(); // full; 0, 4, 5, 6 used at 2, only 3 is evictable
  assert.throws(() => m.evictLRU(2, 2), NeuronMatrixFullError);
  assert.equal(m.n, 5);
});

test('bytes reporting and row addresses', () => {
  const a = fakeArena(1 << 20);
  const m = new NeuronMatrix(a, { nFF: 100, recordBytes: 1536, capacity: 40 });
  assert.equal(m.bytes, 40 * 1536);
  m.append([1, 2, 3], 0);
  assert.equal(m.usedBytes, 3 * 1536);
  assert.equal(m.rowOff(2), m.off + 2 * 1536);
  assert.equal(m.rows(2, 1).byteOffset, m.rowOff(2));
  assert.ok(m.bookkeepingBytes >= 40 * 4 + 100 * 8);
  assert.throws(() => m.rows(39, 2), RangeError);
});

const computes: Compute[] = [];
after(async () => { await Promise.all(computes.map((c) => c.close())); });

test('kernels over rows [0, n): gate matvec with rowStride and down matvecT equal the reference over resident neurons', async () => {
  const c = await Compute.create({ threads: 2, minParallelBytes: 0 });
  computes.push(c);
  const a = c.createArena(8 << 20);
  const dim = 40, nFF = 300, rb = 512; // f32 record: gate 160 B | up 160 B | down 160 B | pad
  const gateOff = 0, downOff = 2 * dim * 4;
  const m = new NeuronMatrix(a, { nFF, recordBytes: rb, capacity: 120, policy: new WindowPolicy(3) });
  const rand = mulberry32(99);
  const W = Array.from({ length: nFF }, () => Float32Array.from({ length: 3 * dim }, () => rand() * 2 - 1));
  const X = a.alloc(dim * 4), Y = a.alloc(nFF * 4), H = a.alloc(nFF * 4), Y2 = a.alloc(dim * 4);
  const miss = new Int32Array(nFF);
  for (let t = 0; t < 40; t++) {
    const active: number[] = [];
    for (let id = 0; id < nFF; id++) if (rand() < 0.12) active.push(id);
    const k = m.touch(active, t, miss);
    m.evict(t);
    if (k > m.free) m.evictLRU(k, t);
    const first = m.append(miss.subarray(0, k), t);
    for (let i = 0; i < k; i++) {
      const rec = W[miss[i]!]!;
      a.f32(m.rowOff(first + i), 3 * dim).set(rec);
    }
    m.commit();
    const x = Float32Array.from({ length: dim }, () => rand() * 2 - 1);
    a.f32(X, dim).set(x);
    c.matvec(a, [{ type: F32, w: m.off + gateOff, rows: m.n, cols: dim, xq: X, y: Y, rowStride: rb }]);
    const y = a.f32(Y, m.n);
    for (let r = 0; r < m.n; r++) {
      const g = W[m.ids[r]!]!;
      let s = 0;
      for (let i = 0; i < dim; i++) s += g[i]! * x[i]!;
      assert.ok(Math.abs(y[r]! - s) < 1e-4, `t ${t} row ${r}: ${y[r]} vs ${s}`);
    }
    const h = new Float32Array(nFF); // per-neuron activation, scattered into row order
    for (let id = 0; id < nFF; id++) h[id] = rand() < 0.5 ? 0 : rand() - 0.5;
    const hr = a.f32(H, m.n);
    for (let r = 0; r < m.n; r++) hr[r] = h[m.ids[r]!]!;
    c.matvecT(a, { type: F32, w: m.off + downOff, rows: m.n, cols: dim, rowStride: rb, h: H, y: Y2 });
    const want = new Float64Array(dim);
    for (let id = 0; id < nFF; id++) if (m.has(id)) for (let i = 0; i < dim; i++) want[i] += h[id]! * W[id]![2 * dim + i]!;
    const y2 = a.f32(Y2, dim);
    for (let i = 0; i < dim; i++) assert.ok(Math.abs(y2[i]! - want[i]!) < 1e-4, `t ${t} down col ${i}: ${y2[i]} vs ${want[i]}`);
  }
});
