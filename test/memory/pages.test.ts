import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KVBudgetError, PageAllocator, type PageLease } from '../../src/memory/pages.js';
import { MemoryPool, PoolFullError } from '../../src/memory/pool.js';

test('PageAllocator: reservations admit, pages are taken as a lease grows and all come back on close', () => {
  const p = new PageAllocator(10, 16);
  const a = p.tryReserve(40)!; // 3 pages
  assert.equal(a.quota, 3);
  assert.deepEqual(p.stats(), { pageSize: 16, pages: 10, used: 0, reserved: 3, free: 7, peakUsed: 0, sequences: 1 });
  assert.equal(a.grow(), 0);
  assert.equal(a.grow(), 1);
  assert.deepEqual(a.ids, [0, 1]);
  assert.equal(p.stats().used, 2);
  assert.equal(p.stats().reserved, 1);
  const b = p.tryReserve(16 * 7)!; // the other 7
  assert.equal(p.available, 0);
  assert.equal(p.tryReserve(1), undefined, 'full: nothing more can be promised');
  assert.throws(() => p.reserve(1), (e: Error) => e instanceof KVBudgetError && /KV budget full/.test(e.message));
  assert.throws(() => p.tryReserve(16 * 11), KVBudgetError, 'more than the pool: never');
  let woken = 0;
  p.onRelease(() => woken++);
  a.grow();
  assert.throws(() => a.grow(), KVBudgetError, 'beyond its quota');
  a.close();
  a.close(); // idempotent
  assert.equal(woken, 1);
  assert.equal(p.stats().used, 0);
  assert.equal(p.available, 3);
  b.grow();
  b.clear(); // pages back, reservation kept
  assert.equal(p.stats().used, 0);
  assert.equal(p.available, 3);
  b.close();
  assert.deepEqual(p.stats(), { pageSize: 16, pages: 10, used: 0, reserved: 0, free: 10, peakUsed: 3, sequences: 0 });
});

test('PageAllocator: random open/grow/close never hands a page to two leases and leaks nothing', () => {
  let seed = 7;
  const r = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const p = new PageAllocator(64, 4);
  const open: PageLease[] = [];
  for (let step = 0; step < 5000; step++) {
    const x = r();
    if (x < 0.3) {
      const l = p.tryReserve(1 + Math.floor(r() * 60));
      if (l) open.push(l);
    } else if (x < 0.8 && open.length) {
      const l = open[Math.floor(r() * open.length)]!;
      if (l.ids.length < l.quota) l.grow();
    } else if (open.length) {
      open.splice(Math.floor(r() * open.length), 1)[0]!.close();
    }
    const all = open.flatMap((l) => l.ids);
    assert.equal(new Set(all).size, all.length, 'a page in two leases');
    const s = p.stats();
    assert.equal(s.used, all.length);
    assert.equal(s.used + s.reserved + s.free, 64);
    assert.ok(s.free >= 0 && s.reserved >= 0);
  }
  for (const l of open) l.close();
  assert.deepEqual({ ...p.stats(), peakUsed: 0 }, { pageSize: 4, pages: 64, used: 0, reserved: 0, free: 64, peakUsed: 0, sequences: 0 });
});

test('MemoryPool: charges against the budget, PoolFullError past it; KV pages; audit of arena bytes', () => {
  const pool = new MemoryPool(1000);
  pool.charge('runtime', 300);
  pool.charge('weights', 400);
  assert.throws(() => pool.charge('activations', 301), (e: Error) => e instanceof PoolFullError && e.part === 'activations' && /budget full/.test(e.message));
  const kv = pool.attachKV(4, 16, 50); // 200 bytes
  assert.equal(kv.pages, 4);
  assert.equal(pool.charged, 900);
  assert.equal(pool.left, 100);
  const l = kv.reserve(20);
  l.grow();
  assert.equal(pool.stats().kvBytesInUse, 50);
  l.close();
  assert.equal(pool.stats().kvBytesInUse, 0);
  // arenas that allocated exactly the charged arena parts (weights + kv pages) have nothing unaccounted
  assert.deepEqual(pool.audit([{ capacity: 1024, bytesUsed: 600 }]), { allocated: 600, charged: 600, unaccounted: 0, capacity: 1024 });
  assert.equal(pool.audit([{ capacity: 1024, bytesUsed: 700 }]).unaccounted, 100);
  const free = new MemoryPool(undefined);
  free.charge('weights', 2 ** 40);
  assert.equal(free.left, Infinity);
});
