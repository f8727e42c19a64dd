import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Compute, ArenaFullError, type Arena } from '../../src/kernels/index.js';
import { Q8_0, F32, randomWeights, rng, dequantRef, quantizeQ8, rowBytesRef } from './ref.js';

function setupMatvec(c: Compute, a: Arena, seed: number, rows: number, cols: number) {
  const r = rng(seed);
  const wb = randomWeights(Q8_0, rows, cols, r);
  const w = a.alloc(wb.length);
  a.u8(w, wb.length).set(wb);
  const xv = new Float32Array(cols).map(() => r() * 2 - 1);
  const x = a.alloc(cols * 4);
  a.f32(x, cols).set(xv);
  const xq = a.alloc(c.preparedXBytes(Q8_0, cols));
  const y = a.alloc(rows * 4);
  const xr = dequantRef(Q8_0, quantizeQ8(xv), cols);
  const want = new Float64Array(rows), tol = new Float64Array(rows);
  const rb = rowBytesRef(Q8_0, cols);
  for (let i = 0; i < rows; i++) {
    const wr = dequantRef(Q8_0, wb.subarray(i * rb, (i + 1) * rb), cols);
    for (let j = 0; j < cols; j++) { want[i] += wr[j] * xr[j]; tol[i] += 1e-5 * Math.abs(wr[j] * xr[j]); }
  }
  return { job: { type: Q8_0, w, rows, cols, xq, y }, x, want, tol };
}

test('two arenas in use at once, batched jobs, threads=2', async () => {
  const c = await Compute.create({ threads: 2 });
  try {
    assert.equal(c.threads, 2);
    const a = c.createArena(8 << 20), b = c.createArena(8 << 20);
    assert.notEqual(a.index, b.index);
    const ja = [setupMatvec(c, a, 1, 333, 1024), setupMatvec(c, a, 2, 64, 2048)];
    const jb = [setupMatvec(c, b, 3, 101, 4096)];
    for (let round = 0; round < 3; round++) {
      for (const [ar, js] of [[a, ja], [b, jb]] as const) {
        for (const j of js) { c.prepareX(ar, Q8_0, j.x, j.job.xq, j.job.cols); ar.f32(j.job.y, j.job.rows).fill(NaN); }
        c.matvec(ar, js.map((j) => j.job));
        for (const j of js) {
          const y = ar.f32(j.job.y, j.job.rows);
          for (let i = 0; i < j.job.rows; i++) assert.ok(Math.abs(y[i] - j.want[i]) <= j.tol[i], `arena ${ar.index} row ${i}`);
        }
      }
    }
  } finally {
    await c.close();
  }
});

test('arena: bump allocation, alignment, ArenaFullError, range checks', async () => {
  const c = await Compute.create({ threads: 1 });
  try {
    const a = c.createArena(100_000);
    assert.equal(a.capacity % 65536, 0);
    assert.ok(a.capacity >= 100_000 + 65536);
    const p = a.alloc(10, 1);
    assert.ok(p >= 65536);
    const q = a.alloc(10);
    assert.equal(q % 64, 0);
    assert.ok(q >= p + 10);
    assert.equal(a.bytesUsed, q + 10);
    assert.throws(() => a.alloc(a.capacity), (e: unknown) => e instanceof ArenaFullError && e.name === 'ArenaFullError');
    assert.equal(a.bytesUsed, q + 10, 'failed alloc does not move the top');
    assert.throws(() => c.add(a, 0, 65536, 4), RangeError);       // reserved region
    assert.throws(() => c.matvec(a, [{ type: F32, w: q, rows: 1000, cols: 1000, xq: q, y: q }]), RangeError);
    assert.throws(() => c.createArena(2 ** 32 + 1), RangeError);
  } finally {
    await c.close();
  }
});

test('errors in a worker surface on the caller; compute stays usable', async () => {
  const c = await Compute.create({ threads: 2 });
  try {
    const a = c.createArena(4 << 20);
    assert.throws(() => c._injectWorkerFailure(a), /kernel worker 1: Error: injected failure/);
    const j = setupMatvec(c, a, 9, 128, 1024);
    c.prepareX(a, Q8_0, j.x, j.job.xq, 1024);
    c.matvec(a, [j.job]);
    for (const i of [0, 63, 64, 127]) assert.ok(Math.abs(a.f32(j.job.y, 128)[i] - j.want[i]) <= j.tol[i]);
  } finally {
    await c.close();
  }
  assert.throws(() => c.createArena(1), /closed/);
});

test('a worker trap (out-of-bounds access in its row range) is thrown, not hung', async () => {
  const c = await Compute.create({ threads: 2, minParallelBytes: 0 });
  try {
    const a = c.createArena(1 << 20);
    const x = a.alloc(32 * 4), xq = a.alloc(c.preparedXBytes(Q8_0, 32)), y = a.alloc(4096);
    c.prepareX(a, Q8_0, x, xq, 32);
    // bypass the range check: the worker's rows (second half) lie beyond the memory
    const rows = 8, w = a.capacity - 34 * 5;
    const priv = c as unknown as { check: () => void };
    const saved = priv.check;
    priv.check = () => {};
    try {
      assert.throws(() => c.matvec(a, [{ type: Q8_0, w, rows, cols: 32, xq, y }]), /kernel worker 1: RuntimeError: memory access out of bounds/);
    } finally {
      priv.check = saved;
    }
  } finally {
    await c.close();
  }
});

test('close() lets the process exit', () => {
  const index = fileURLToPath(new URL('../../src/kernels/index.js', import.meta.url));
  const src = `import { Compute } from ${JSON.stringify(index)};
    const c = await Compute.create({ threads: 2 });
    const a = c.createArena(1 << 20);
    const x = a.alloc(4096 * 4), xq = a.alloc(c.preparedXBytes(8, 4096)), w = a.alloc(34 * 128 * 64), y = a.alloc(512);
    c.prepareX(a, 8, x, xq, 4096);
    c.matvec(a, [{ type: 8, w, rows: 64, cols: 4096, xq, y }]);
    await c.close();
    console.log('done');`;
  const t0 = Date.now();
  const res = spawnSync(process.execPath, ['--input-type=module', '-e', src], { timeout: 20000, encoding: 'utf8' });
  assert.equal(res.status, 0, `exit status ${res.status} signal ${res.signal} stderr ${res.stderr}`);
  assert.match(res.stdout, /done/);
  assert.ok(Date.now() - t0 < 20000);
});
