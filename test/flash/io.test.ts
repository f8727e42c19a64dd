import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { mulberry32 } from '../../src/engine/sample.js';
import { Compute, type Arena } from '../../src/kernels/index.js';
import { ALIGN, coalesce, DirectReader, FlashAlignmentError, FlashIOError, type ReadFn, type ReadRequest } from '../../src/flash/io.js';
import { testDir } from '../helpers.js';

const FILE_BYTES = 4 << 20; // 4 MiB: 1024 blocks of 4 KiB

function makeFile(dir: string, seed = 7): { path: string; data: Uint8Array } {
  const data = new Uint8Array(FILE_BYTES);
  const r = mulberry32(seed);
  for (let i = 0; i < data.length; i += 4) new DataView(data.buffer).setUint32(i, (r() * 2 ** 32) >>> 0, true);
  const path = join(dir, `data-${seed}.bin`);
  fs.writeFileSync(path, data);
  return { path, data };
}

/** Wraps fs.read; `hook` may answer a call itself (return true) instead of reading. */
function wrapRead(hook: (call: number, fd: number, len: number, pos: number, cb: (e: NodeJS.ErrnoException | null, n: number) => void, real: () => void) => boolean): ReadFn {
  let calls = 0;
  return (fd, buf, off, len, pos, cb) => {
    const real = () => fs.read(fd, buf, off, len, pos, cb);
    if (!hook(calls++, fd, len, pos, cb, real)) real();
  };
}

function errnoError(code: string): NodeJS.ErrnoException {
  const e = new Error(`${code}: injected`) as NodeJS.ErrnoException;
  e.code = code;
  return e;
}

let compute: Compute | undefined;
async function arena(bytes: number): Promise<Arena> {
  compute ??= await Compute.create({ threads: 1, warmUp: false });
  return compute.createArena(bytes);
}
test.after(async () => { await compute?.close(); });

const dirs = [testDir('flash-io')];
if (fs.existsSync('/dev/shm')) {
  const d = join('/dev/shm', `flashlm-test-${process.pid}`);
  try { fs.mkdirSync(d, { recursive: true }); dirs.push(d); } catch { /* not writable */ }
}
test.after(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

for (const dir of dirs) {
  test(`random aligned reads into an arena match the file (${dir})`, async (t) => {
    const { path, data } = makeFile(dir);
    const a = await arena(8 << 20);
    const base = a.alloc(4 << 20, ALIGN);
    const reader = await DirectReader.open(path, { inFlight: 8, maxReadBytes: 64 << 10 });
    t.diagnostic(`direct=${reader.direct}${reader.warning ? ` warning: ${reader.warning}` : ''}`);
    try {
      const r = mulberry32(11);
      for (let round = 0; round < 5; round++) {
        const reqs: ReadRequest[] = [];
        let dstOff = base;
        for (let i = 0; i < 40; i++) {
          const blocks = 1 + Math.floor(r() * 20);
          const fileOffset = Math.floor(r() * (FILE_BYTES / ALIGN - blocks)) * ALIGN;
          const length = blocks * ALIGN;
          if (dstOff + length > base + (4 << 20)) break;
          reqs.push({ fileOffset, length, dst: a.u8(dstOff, length) });
          dstOff += length + ALIGN * Math.floor(r() * 3);
        }
        const stats = await reader.read(reqs);
        assert.equal(stats.bytes, reqs.reduce((s, q) => s + q.length, 0));
        for (const q of reqs) assert.deepEqual(q.dst.subarray(0, q.length), data.subarray(q.fileOffset, q.fileOffset + q.length));
      }
      assert.equal(reader.totals.bytes > 0, true);
    } finally {
      await reader.close();
    }
  });
}

test('coalescing: adjacent in file and in memory → one read, capped at maxReadBytes', async () => {
  const { path, data } = makeFile(dirs[0]!, 3);
  const a = await arena(2 << 20);
  const base = a.alloc(1 << 20, ALIGN);
  // 64 adjacent 4 KiB records, given out of order
  const reqs: ReadRequest[] = [];
  for (let i = 0; i < 64; i++) reqs.push({ fileOffset: (100 + i) * ALIGN, length: ALIGN, dst: a.u8(base + i * ALIGN, ALIGN) });
  reqs.reverse();
  assert.equal(coalesce(reqs, 1 << 20).length, 1);
  assert.equal(coalesce(reqs, 64 << 10).length, 4);
  // adjacent in the file but not in memory: not merged
  const gap = [{ fileOffset: 0, length: ALIGN, dst: a.u8(base, ALIGN) }, { fileOffset: ALIGN, length: ALIGN, dst: a.u8(base + 2 * ALIGN, ALIGN) }];
  assert.equal(coalesce(gap, 1 << 20).length, 2);
  // one long request is split
  assert.equal(coalesce([{ fileOffset: 0, length: 1 << 20, dst: a.u8(base, 1 << 20) }], 256 << 10).length, 4);

  const reader = await DirectReader.open(path, { maxReadBytes: 128 << 10 });
  try {
    const s = await reader.read(reqs);
    assert.equal(s.requests, 64);
    assert.equal(s.pieces, 2);
    assert.equal(s.reads, 2);
    assert.deepEqual(a.u8(base, 64 * ALIGN), data.subarray(100 * ALIGN, 164 * ALIGN));
  } finally {
    await reader.close();
  }
});

test('short reads are completed (direct: re-aligned; buffered: exact)', async () => {
  const { path, data } = makeFile(dirs[0]!, 5);
  const a = await arena(2 << 20);
  const base = a.alloc(256 << 10, ALIGN);
  for (const direct of [true, false]) {
    // every read returns at most 5000 bytes: 4096 + a partial block
    const readFn: ReadFn = (fd, buf, off, len, pos, cb) => fs.read(fd, buf, off, len, pos, (e, n) => cb(e, Math.min(n, 5000)));
    const reader = await DirectReader.open(path, { readFn, direct });
    try {
      a.u8(base, 256 << 10).fill(0);
      const s = await reader.read([{ fileOffset: 8 * ALIGN, length: 64 << 10, dst: a.u8(base, 64 << 10) }]);
      assert.ok(s.shortReads > 0);
      assert.equal(s.bytes, 64 << 10);
      if (reader.direct) assert.equal(s.reads, 16);
      assert.deepEqual(a.u8(base, 64 << 10), data.subarray(8 * ALIGN, 8 * ALIGN + (64 << 10)));
    } finally {
      await reader.close();
    }
  }
});

test('EINTR and EAGAIN are retried', async () => {
  const { path, data } = makeFile(dirs[0]!, 9);
  const a = await arena(1 << 20);
  const base = a.alloc(64 << 10, ALIGN);
  let injected = 0;
  const readFn = wrapRead((_call, _fd, len, _pos, cb) => {
    if (len === 8 * ALIGN && injected < 4) { // not the open probe (one block)
      const code = injected++ % 2 ? 'EINTR' : 'EAGAIN';
      setImmediate(() => cb(errnoError(code), 0));
      return true;
    }
    return false;
  });
  const reader = await DirectReader.open(path, { readFn, inFlight: 1 });
  try {
    const s = await reader.read([{ fileOffset: 0, length: 8 * ALIGN, dst: a.u8(base, 8 * ALIGN) }]);
    assert.equal(s.retries, 4);
    assert.deepEqual(a.u8(base, 8 * ALIGN), data.subarray(0, 8 * ALIGN));
  } finally {
    await reader.close();
  }
});

test('EIO → FlashIOError naming file, offset and length; other reads settle first', async () => {
  const { path } = makeFile(dirs[0]!, 13);
  const a = await arena(1 << 20);
  const base = a.alloc(512 << 10, ALIGN);
  const bad = 37 * ALIGN;
  const readFn = wrapRead((_call, _fd, len, pos, cb) => {
    if (pos <= bad && bad < pos + len) { setImmediate(() => cb(errnoError('EIO'), 0)); return true; }
    return false;
  });
  const reader = await DirectReader.open(path, { readFn, inFlight: 4, maxReadBytes: 16 << 10 });
  try {
    const reqs = Array.from({ length: 16 }, (_, i) => ({ fileOffset: 32 * ALIGN + i * 16384, length: 16384, dst: a.u8(base + i * 16384, 16384) }));
    await assert.rejects(reader.read(reqs), (e: unknown) => {
      assert.ok(e instanceof FlashIOError);
      assert.equal(e.name, 'FlashIOError');
      assert.equal(e.code, 'EIO');
      assert.equal(e.offset, 36 * ALIGN);
      assert.equal(e.length, 16384);
      assert.match(e.message, new RegExp(`${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*16384 bytes at offset ${36 * ALIGN}.*EIO`));
      return true;
    });
    // the reader stays usable for other reads
    const s = await reader.read([{ fileOffset: 0, length: ALIGN, dst: a.u8(base, ALIGN) }]);
    assert.equal(s.bytes, ALIGN);
  } finally {
    await reader.close();
  }
});

test('truncated file → FlashIOError (EOF), not a hang', async () => {
  const { path } = makeFile(dirs[0]!, 17);
  const a = await arena(1 << 20);
  const base = a.alloc(64 << 10, ALIGN);
  const reader = await DirectReader.open(path, { maxRetries: 2 });
  try {
    await assert.rejects(reader.read([{ fileOffset: FILE_BYTES - ALIGN, length: 4 * ALIGN, dst: a.u8(base, 4 * ALIGN) }]),
      (e: unknown) => e instanceof FlashIOError && e.code === 'EOF' && e.offset === FILE_BYTES);
  } finally {
    await reader.close();
  }
});

test('misaligned requests → FlashAlignmentError before any I/O', async () => {
  const { path } = makeFile(dirs[0]!, 19);
  const a = await arena(1 << 20);
  const base = a.alloc(64 << 10, ALIGN);
  let reads = 0;
  const reader = await DirectReader.open(path, { readFn: (...args) => { reads++; fs.read(...args); } });
  try {
    reads = 0;
    const bad: ReadRequest[][] = [
      [{ fileOffset: 0, length: ALIGN, dst: a.u8(base + 512, ALIGN) }],
      [{ fileOffset: 0, length: ALIGN, dst: Buffer.allocUnsafe(2 * ALIGN).subarray(1, ALIGN + 1) }],
      [{ fileOffset: 100, length: ALIGN, dst: a.u8(base, ALIGN) }],
      [{ fileOffset: 0, length: 1000, dst: a.u8(base, ALIGN) }],
      [{ fileOffset: 0, length: 2 * ALIGN, dst: a.u8(base, ALIGN) }],
    ];
    for (const reqs of bad) await assert.rejects(reader.read(reqs), (e: unknown) => e instanceof FlashAlignmentError && e.name === 'FlashAlignmentError');
    assert.equal(reads, 0);
  } finally {
    await reader.close();
  }
});

test('O_DIRECT refused → buffered fallback with a warning (EINVAL on open, or on the first read)', async () => {
  const { path, data } = makeFile(dirs[0]!, 23);
  const a = await arena(1 << 20);
  const base = a.alloc(64 << 10, ALIGN);
  const check = async (reader: DirectReader) => {
    try {
      assert.equal(reader.direct, false);
      assert.match(reader.warning ?? '', /O_DIRECT/);
      const s = await reader.read([{ fileOffset: 4 * ALIGN, length: 4 * ALIGN, dst: a.u8(base, 4 * ALIGN) }]);
      assert.equal(s.bytes, 4 * ALIGN);
      assert.deepEqual(a.u8(base, 4 * ALIGN), data.subarray(4 * ALIGN, 8 * ALIGN));
    } finally {
      await reader.close();
    }
  };
  const openFn = (p: string, flags: number) => {
    if (flags & fs.constants.O_DIRECT) throw errnoError('EINVAL');
    return fs.openSync(p, flags);
  };
  await check(await DirectReader.open(path, { openFn }));
  const directFds = new Set<number>();
  const openFn2 = (p: string, flags: number) => {
    const fd = fs.openSync(p, flags);
    if (flags & fs.constants.O_DIRECT) directFds.add(fd);
    return fd;
  };
  const readFn: ReadFn = (fd, buf, off, len, pos, cb) => {
    if (directFds.has(fd)) setImmediate(() => cb(errnoError('EINVAL'), 0));
    else fs.read(fd, buf, off, len, pos, cb);
  };
  await check(await DirectReader.open(path, { openFn: openFn2, readFn }));
  // direct: false asks for buffered reads outright, without a warning
  const r = await DirectReader.open(path, { direct: false });
  assert.equal(r.direct, false);
  assert.equal(r.warning, undefined);
  await r.close();
});

test('close waits for reads in flight; reads after close are rejected', async () => {
  const { path } = makeFile(dirs[0]!, 29);
  const a = await arena(1 << 20);
  const base = a.alloc(256 << 10, ALIGN);
  const reader = await DirectReader.open(path, { inFlight: 2 });
  const p = reader.read(Array.from({ length: 8 }, (_, i) => ({ fileOffset: i * 2 * ALIGN, length: ALIGN, dst: a.u8(base + i * ALIGN, ALIGN) })));
  await reader.close();
  const s = await p;
  assert.equal(s.bytes, 8 * ALIGN);
  await assert.rejects(reader.read([{ fileOffset: 0, length: ALIGN, dst: a.u8(base, ALIGN) }]), (e: unknown) => e instanceof FlashIOError && e.code === 'ECLOSED');
});
