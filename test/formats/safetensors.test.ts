import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FormatError, NotFoundError } from '../../src/formats/errors.js';
import {
  MAX_HEADER_BYTES, openSafetensors, readSafetensorsData, readSafetensorsFile, writeSafetensors,
} from '../../src/formats/safetensors.js';

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'flashlm-st-'));
}
const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** A file with a hand-made header (object or raw text) followed by `dataLen` bytes. */
function rawFile(file: string, header: unknown, dataLen = 0, lenOverride?: bigint): void {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, Buffer.alloc(dataLen, 7)]));
}

/** Expect a FormatError naming `file` and a field matching `field`. */
function throwsFormat(fn: () => unknown, file: string, field: RegExp, detail?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${String(e)}`);
    assert.equal(e.file, file);
    assert.match(e.field, field);
    if (detail) assert.match(e.message, detail);
    return true;
  });
}

test('write then read: dtypes, shapes, metadata, data, 8-byte aligned data start', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'a.safetensors');
  const w = new Float32Array([1, 2, 3, 4, 5, 6]);
  const h = new Uint16Array([0x3c00, 0x4000, 0x4200]);
  const b = new Uint8Array([1, 2, 3]);
  writeSafetensors(file, [
    { name: 'w', dtype: 'F32', shape: [2, 3], data: bytesOf(w) },
    { name: 'h', dtype: 'F16', shape: [3], data: bytesOf(h) },
    { name: 'empty', dtype: 'BF16', shape: [0, 4], data: new Uint8Array(0) },
    { name: 'b', dtype: 'U8', shape: [3], data: b },
    { name: '__proto__', dtype: 'I8', shape: [], data: new Uint8Array([9]) },
  ], { format: 'pt', note: 'hi' });
  const raw = fs.readFileSync(file);
  const n = Number(raw.readBigUInt64LE(0));
  assert.equal((8 + n) % 8, 0);
  assert.match(raw.subarray(8, 8 + n).toString('utf8'), /^\{.*\} *$/);
  const r = readSafetensorsFile(file);
  assert.deepEqual(r.metadata, { format: 'pt', note: 'hi' });
  assert.deepEqual(r.tensors.map((t) => [t.name, t.dtype, t.shape, t.bytes]), [
    ['w', 'F32', [2, 3], 24], ['h', 'F16', [3], 6], ['empty', 'BF16', [0, 4], 0], ['b', 'U8', [3], 3], ['__proto__', 'I8', [], 1],
  ]);
  const o = openSafetensors(file);
  assert.equal(o.tensors.size, 5);
  const tw = o.tensors.get('w')!;
  assert.equal(tw.offset, 8 + n);
  const dst = new Uint8Array(30);
  readSafetensorsData(tw, dst, 3);
  assert.deepEqual(new Float32Array(dst.slice(3, 27).buffer), w);
  const dh = new Uint8Array(6);
  readSafetensorsData(o.tensors.get('h')!, dh);
  assert.deepEqual(new Uint16Array(dh.buffer), h);
  assert.throws(() => readSafetensorsData(tw, new Uint8Array(10)), RangeError);
  assert.deepEqual(fs.readdirSync(dir), ['a.safetensors']); // no temp file left
});

test('writer rejects bad input', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'x.safetensors');
  throwsFormat(() => writeSafetensors(file, [{ name: 'a', dtype: 'F32', shape: [2], data: new Uint8Array(4) }]), file, /tensor 'a' data/);
  throwsFormat(() => writeSafetensors(file, [{ name: 'a', dtype: 'Q4', shape: [2], data: new Uint8Array(4) }]), file, /dtype/);
  throwsFormat(() => writeSafetensors(file, [{ name: 'a', dtype: 'U8', shape: [-1], data: new Uint8Array(0) }]), file, /shape/);
  const t = { name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array(1) };
  throwsFormat(() => writeSafetensors(file, [t, t]), file, /tensor 'a'/, /duplicate/);
  assert.ok(!fs.existsSync(file));
});

test('reader: corrupt headers give FormatError naming file and field', () => {
  const dir = tmpDir();
  const f = path.join(dir, 'c.safetensors');
  const ok = { t: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };

  fs.writeFileSync(f, Buffer.alloc(5));
  throwsFormat(() => readSafetensorsFile(f), f, /^header length$/, /too short/);
  rawFile(f, ok, 8, 1000n);
  throwsFormat(() => readSafetensorsFile(f), f, /^header length$/, /only/);
  rawFile(f, ok, 8, 2n ** 63n);
  throwsFormat(() => readSafetensorsFile(f), f, /^header length$/);
  // past the cap: a sparse file bigger than the cap, so the size check alone would pass
  const big = path.join(dir, 'big.safetensors');
  rawFile(big, ok, 8, BigInt(MAX_HEADER_BYTES + 1));
  fs.truncateSync(big, MAX_HEADER_BYTES + 64);
  throwsFormat(() => readSafetensorsFile(big), big, /^header length$/, /limit/);
  fs.rmSync(big);

  rawFile(f, '{"t": ', 0);
  throwsFormat(() => readSafetensorsFile(f), f, /^header$/, /invalid JSON/);
  rawFile(f, '[1, 2]', 0);
  throwsFormat(() => readSafetensorsFile(f), f, /^header$/, /object/);
  const bad = Buffer.from([0x7b, 0xff, 0x7d]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(3n);
  fs.writeFileSync(f, Buffer.concat([len, bad]));
  throwsFormat(() => readSafetensorsFile(f), f, /^header$/, /UTF-8/);

  const cases: [unknown, number, RegExp, RegExp][] = [
    [{ t: 5 }, 0, /^tensor 't'$/, /object/],
    [{ t: { dtype: 'F33', shape: [2], data_offsets: [0, 8] } }, 8, /tensor 't' dtype/, /F33/],
    [{ t: { dtype: 7, shape: [2], data_offsets: [0, 8] } }, 8, /tensor 't' dtype/, /string/],
    [{ t: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, 8, /tensor 't' shape/, /non-negative/],
    [{ t: { dtype: 'F32', shape: [2.5], data_offsets: [0, 10] } }, 10, /tensor 't' shape/, /non-negative/],
    [{ t: { dtype: 'F32', shape: 2, data_offsets: [0, 8] } }, 8, /tensor 't' shape/, /array/],
    [{ t: { dtype: 'F32', shape: [2] } }, 8, /tensor 't' data_offsets/, /begin, end/],
    [{ t: { dtype: 'F32', shape: [2], data_offsets: [0, 8, 9] } }, 8, /tensor 't' data_offsets/, /begin, end/],
    [{ t: { dtype: 'F32', shape: [2], data_offsets: [8, 0] } }, 8, /tensor 't' data_offsets/, /begin 8 > end 0/],
    [{ t: { dtype: 'F32', shape: [2], data_offsets: [0, 16] } }, 8, /tensor 't' data_offsets/, /past the end/],
    [{ t: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8, /tensor 't' data_offsets/, /needs 12/],
    [{ t: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, 8, /tensor 't' shape/, /too large/],
    [{ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'U8', shape: [4], data_offsets: [6, 10] } },
      10, /tensor 'b' data_offsets/, /overlaps tensor 'a'/],
    [{ __metadata__: { n: 3 } }, 0, /__metadata__\.n/, /string/],
    [{ __metadata__: [] }, 0, /^__metadata__$/, /object/],
  ];
  for (const [header, dataLen, field, detail] of cases) {
    rawFile(f, header, dataLen);
    throwsFormat(() => readSafetensorsFile(f), f, field, detail);
  }
  // zero-size tensors may share an offset; holes and trailing bytes are tolerated
  rawFile(f, { a: { dtype: 'F32', shape: [0], data_offsets: [4, 4] }, b: { dtype: 'U8', shape: [4], data_offsets: [2, 6] } }, 9);
  assert.equal(readSafetensorsFile(f).tensors.length, 2);

  // a read past the end (file truncated after opening) is a FormatError too
  const tb = openSafetensors(f).tensors.get('b')!;
  fs.truncateSync(f, tb.offset + 2);
  throwsFormat(() => readSafetensorsData(tb, new Uint8Array(4)), f, /tensor 'b' data/, /end of file/);
});

test('directories: single model.safetensors, sharded via index, and their errors', () => {
  const dir = tmpDir();
  const u8 = (n: number, v: number) => new Uint8Array(n).fill(v);
  assert.throws(() => openSafetensors(dir), NotFoundError);
  assert.throws(() => openSafetensors(path.join(dir, 'nope')), NotFoundError);

  writeSafetensors(path.join(dir, 'model.safetensors'), [{ name: 'x', dtype: 'U8', shape: [2], data: u8(2, 1) }]);
  assert.deepEqual([...openSafetensors(dir).tensors.keys()], ['x']);

  // sharded (the index wins over model.safetensors)
  const s1 = 'model-00001-of-00002.safetensors', s2 = 'model-00002-of-00002.safetensors';
  writeSafetensors(path.join(dir, s1), [{ name: 'a', dtype: 'U8', shape: [2], data: u8(2, 1) },
    { name: 'b', dtype: 'U8', shape: [3], data: u8(3, 2) }], { format: 'pt' });
  writeSafetensors(path.join(dir, s2), [{ name: 'c', dtype: 'U8', shape: [4], data: u8(4, 3) }], { part: '2' });
  const index = path.join(dir, 'model.safetensors.index.json');
  const writeIndex = (wm: unknown) => fs.writeFileSync(index, JSON.stringify({ metadata: { total_size: 9 }, weight_map: wm }));
  writeIndex({ a: s1, b: s1, c: s2 });
  const o = openSafetensors(dir);
  assert.deepEqual([...o.tensors.keys()].sort(), ['a', 'b', 'c']);
  assert.deepEqual(o.metadata, { format: 'pt', part: '2' });
  const d = new Uint8Array(4);
  readSafetensorsData(o.tensors.get('c')!, d);
  assert.deepEqual([...d], [3, 3, 3, 3]);
  assert.equal(path.basename(o.tensors.get('c')!.file), s2);

  writeIndex({ a: s1, b: s1, c: 'model-00003-of-00003.safetensors' });
  throwsFormat(() => openSafetensors(dir), index, /weight_map\['c'\]/, /does not exist/);
  writeIndex({ a: s1, b: s2, c: s2 });
  throwsFormat(() => openSafetensors(dir), index, /weight_map\['b'\]/, /not 'model-00002/);
  writeIndex({ a: s1, z: s1, c: s2 });
  throwsFormat(() => openSafetensors(dir), index, /weight_map\['z'\]/, /not found/);
  writeIndex({ a: '../model.safetensors' });
  throwsFormat(() => openSafetensors(dir), index, /weight_map\['a'\]/, /plain file name/);
  writeIndex({ a: 3 });
  throwsFormat(() => openSafetensors(dir), index, /weight_map\['a'\]/);
  writeIndex({});
  throwsFormat(() => openSafetensors(dir), index, /^weight_map$/, /empty/);
  fs.writeFileSync(index, '{"weight_map": ');
  throwsFormat(() => openSafetensors(dir), index, /^index$/, /invalid JSON/);
  fs.writeFileSync(index, '{"metadata": {}}');
  throwsFormat(() => openSafetensors(dir), index, /^weight_map$/, /missing/);
  // the same tensor in two shards
  writeSafetensors(path.join(dir, s2), [{ name: 'a', dtype: 'U8', shape: [4], data: u8(4, 3) }]);
  writeIndex({ a: s2, b: s1 });
  throwsFormat(() => openSafetensors(dir), path.join(dir, s1), /tensor 'a'/, /also in .*00002/);
});
