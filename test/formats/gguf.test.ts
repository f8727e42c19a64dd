import { mulberry32 } from '../../src/engine/sample.js';
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  GGUFValueType, GGUFWriter, assertSupportedTensor, formatMetaValue, metaF32, metaStr, metaU32, readGGUF,
  readTensorData, type GGUFKV, type GGUFValue,
} from '../../src/formats/gguf.js';
import { FormatError, NotFoundError, UnsupportedError } from '../../src/formats/errors.js';
import { TensorType, tensorBytes } from '../../src/formats/ggml-types.js';

// --- helpers: temp dir, seeded PRNG, a raw GGUF byte builder (to craft files the writer refuses to produce)

function tmpDir(prefix = 'flashlm-gguf-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

const rng = mulberry32;

function randomBytes(n: number, r: () => number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

/** Little-endian byte builder. */
class Raw {
  private parts: number[] = [];
  u8(v: number): this { this.parts.push(v & 0xff); return this; }
  u32(v: number): this {
    for (let i = 0; i < 4; i++) this.parts.push((v >>> (8 * i)) & 0xff);
    return this;
  }
  u64(v: number | bigint): this {
    let b = BigInt.asUintN(64, BigInt(v));
    for (let i = 0; i < 8; i++) { this.parts.push(Number(b & 0xffn)); b >>= 8n; }
    return this;
  }
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    for (const x of b) this.parts.push(x);
    return this;
  }
  bytes(b: ArrayLike<number>): this { for (let i = 0; i < b.length; i++) this.parts.push(b[i]!); return this; }
  pad(align: number): this { while (this.parts.length % align) this.parts.push(0); return this; }
  get length(): number { return this.parts.length; }
  build(): Buffer { return Buffer.from(this.parts); }
}

interface RawTensor { name: string; dims: (number | bigint)[]; type: number; offset: number | bigint }

/** A GGUF file: header, kvs (already-encoded via the callback), tensor infos, padding, data bytes. */
function rawGGUF(opts: {
  magic?: number; version?: number; tensorCount?: number | bigint; kvCount?: number | bigint;
  kvs?: (r: Raw) => void; nKV?: number; tensors?: RawTensor[]; align?: number; dataBytes?: number;
}): Buffer {
  const r = new Raw();
  r.u32(opts.magic ?? 0x46554747).u32(opts.version ?? 3);
  const tensors = opts.tensors ?? [];
  r.u64(opts.tensorCount ?? tensors.length).u64(opts.kvCount ?? opts.nKV ?? 0);
  opts.kvs?.(r);
  for (const t of tensors) {
    r.str(t.name).u32(t.dims.length);
    for (const d of t.dims) r.u64(d);
    r.u32(t.type).u64(t.offset);
  }
  r.pad(opts.align ?? 32);
  for (let i = 0; i < (opts.dataBytes ?? 0); i++) r.u8(i);
  return r.build();
}

// ---------------------------------------------------------------------------------------------

const VT = GGUFValueType;
const dir = tmpDir();
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;
const tmpPath = (name = 'f'): string => path.join(dir, `${name}-${fileNo++}.gguf`);
function writeRaw(b: Uint8Array): string {
  const p = tmpPath('raw');
  fs.writeFileSync(p, b);
  return p;
}
function throwsFormat(p: string, field?: RegExp): FormatError {
  let err: unknown;
  try { readGGUF(p); } catch (e) { err = e; }
  assert.ok(err instanceof FormatError, `expected FormatError, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  assert.equal(err.file, p);
  if (field) assert.match(err.field, field, err.message);
  return err;
}
const f32Bytes = (a: number[]): Uint8Array => new Uint8Array(new Float32Array(a).buffer);
const tensor = (name: string, dims: (number | bigint)[], offset: number | bigint, type = 0): RawTensor =>
  ({ name, dims, type, offset });

describe('GGUF metadata roundtrip', () => {
  const nested: GGUFValue[] = [new Uint32Array([1, 2, 3]), new Float32Array([0.5]), ['a', 'bc'],
    [new Int16Array([-7]), new BigInt64Array([-(2n ** 63n)])], []];
  const kvs: [string, number, GGUFValue, number?][] = [
    ['u8', VT.UINT8, 255], ['i8', VT.INT8, -128], ['u16', VT.UINT16, 65535], ['i16', VT.INT16, -32768],
    ['u32', VT.UINT32, 4294967295], ['i32', VT.INT32, -2147483648], ['f32', VT.FLOAT32, 1.5],
    ['bool.t', VT.BOOL, true], ['bool.f', VT.BOOL, false], ['str', VT.STRING, 'héllo ✓ 🦙'], ['str.empty', VT.STRING, ''],
    ['u64', VT.UINT64, 2n ** 64n - 1n], ['i64', VT.INT64, -(2n ** 63n)], ['f64', VT.FLOAT64, Math.PI],
    ['a.u8', VT.ARRAY, new Uint8Array([0, 1, 255]), VT.UINT8], ['a.i8', VT.ARRAY, new Int8Array([-1, 5]), VT.INT8],
    ['a.u16', VT.ARRAY, new Uint16Array([1, 65535]), VT.UINT16], ['a.i16', VT.ARRAY, new Int16Array([-2, 3]), VT.INT16],
    ['a.u32', VT.ARRAY, new Uint32Array([7, 4294967295]), VT.UINT32], ['a.i32', VT.ARRAY, new Int32Array([-9, 9]), VT.INT32],
    ['a.f32', VT.ARRAY, new Float32Array([0.25, -1e30]), VT.FLOAT32], ['a.bool', VT.ARRAY, new Uint8Array([1, 0, 1]), VT.BOOL],
    ['a.str', VT.ARRAY, ['x', '', 'ünï'], VT.STRING], ['a.u64', VT.ARRAY, new BigUint64Array([0n, 2n ** 64n - 1n]), VT.UINT64],
    ['a.i64', VT.ARRAY, new BigInt64Array([-1n, 2n ** 62n]), VT.INT64], ['a.f64', VT.ARRAY, new Float64Array([1e300, -0.1]), VT.FLOAT64],
    ['a.empty', VT.ARRAY, new Float32Array(0), VT.FLOAT32], ['a.nested', VT.ARRAY, nested, VT.ARRAY],
    ['a.plain', VT.ARRAY, [1, -2, 3], VT.INT16], ['a.boolplain', VT.ARRAY, [true, false], VT.BOOL],
  ];
  const p = tmpPath('meta');
  const w = new GGUFWriter(p);
  for (const [k, t, v, at] of kvs) w.addKV(k, t, v, at);
  w.finish();
  const f = readGGUF(p);

  it('reads every value type back', () => {
    assert.equal(f.version, 3);
    assert.equal(f.tensors.length, 0);
    assert.deepEqual([...f.metadata.keys()], kvs.map((k) => k[0]));
    for (const [k, t, v, at] of kvs) {
      const kv = f.metadata.get(k)!;
      assert.equal(kv.type, t, k);
      assert.equal(kv.arrayType, at, k);
      if (k === 'a.plain') assert.deepEqual(kv.value, new Int16Array([1, -2, 3]));
      else if (k === 'a.boolplain') assert.deepEqual(kv.value, new Uint8Array([1, 0]));
      else assert.deepEqual(kv.value, v, k);
    }
    assert.ok(f.metadata.get('a.f64')!.value instanceof Float64Array);
    assert.ok(f.metadata.get('a.u64')!.value instanceof BigUint64Array);
    assert.equal(typeof f.metadata.get('u64')!.value, 'bigint');
  });

  it('metadata helpers', () => {
    assert.equal(metaU32(f, 'u32'), 4294967295);
    assert.equal(metaU32(f, 'u8'), 255);
    assert.equal(metaU32(f, 'missing', 7), 7);
    assert.equal(metaU32(f, 'missing', 0), 0);
    assert.throws(() => metaU32(f, 'i8'), FormatError); // negative
    assert.throws(() => metaU32(f, 'u64'), FormatError); // > 2^53
    assert.throws(() => metaU32(f, 'f32'), /metadata key 'f32'.*expected an integer, got float32/);
    assert.throws(() => metaU32(f, 'missing'), /: metadata key 'missing': missing/);
    assert.equal(metaF32(f, 'f32'), 1.5);
    assert.equal(metaF32(f, 'u16'), 65535);
    assert.equal(metaF32(f, 'nope', 1e-5), 1e-5);
    assert.throws(() => metaF32(f, 'str'), FormatError);
    assert.equal(metaStr(f, 'str'), 'héllo ✓ 🦙');
    assert.equal(metaStr(f, 'nope', 'dflt'), 'dflt');
    assert.throws(() => metaStr(f, 'u8'), FormatError);
  });

  it('formatMetaValue is short', () => {
    const fm = (k: string): string => formatMetaValue(f.metadata.get(k)!);
    assert.equal(fm('str'), '"héllo ✓ 🦙"');
    assert.equal(fm('u64'), '18446744073709551615');
    assert.equal(fm('bool.t'), 'true');
    assert.equal(fm('a.str'), 'string[3] ["x", "", "ünï"]');
    assert.equal(fm('a.bool'), 'bool[3] [true, false, true]');
    assert.match(fm('a.nested'), /^array\[5\] \[\[3 items\], \[1 items\], \[2 items\], \[2 items\], …\]$/);
    const big: GGUFKV = { key: 'k', type: VT.ARRAY, arrayType: VT.FLOAT32, value: new Float32Array(1000) };
    assert.ok(formatMetaValue(big).length < 60);
  });
});

describe('GGUF tensors', () => {
  const r = rng(42);
  const specs: { name: string; dims: number[]; type: number }[] = [
    { name: 'f32', dims: [5, 3], type: TensorType.F32 },
    { name: 'f16', dims: [7], type: TensorType.F16 },
    { name: 'q4_0', dims: [64, 3], type: TensorType.Q4_0 },
    { name: 'q8_0', dims: [32, 2, 2], type: TensorType.Q8_0 },
    { name: 'bf16', dims: [3, 1, 2, 2], type: TensorType.BF16 },
    { name: 'q4_K', dims: [256, 2], type: 12 }, // known layout, not supported for compute
  ];
  for (const alignment of [32, 4096, undefined]) {
    it(`roundtrips data of every type, alignment ${alignment ?? 'default'}`, () => {
      const p = tmpPath('tensors');
      const w = new GGUFWriter(p, alignment ? { alignment } : {});
      w.addKV('general.architecture', VT.STRING, 'llama');
      for (const s of specs) w.addTensor(s.name, s.dims, s.type);
      w.beginData();
      const data = specs.map((s) => randomBytes(tensorBytesAny(s.type, s.dims), r));
      // write in odd-sized chunks that span tensor boundaries
      const all = Buffer.concat(data);
      for (let off = 0; off < all.length;) {
        const n = Math.min(all.length - off, 1 + Math.floor(r() * 200));
        w.writeData(all.subarray(off, off + n));
        off += n;
      }
      w.finish();
      const f = readGGUF(p);
      const al = alignment ?? 32;
      assert.equal(f.alignment, al);
      assert.equal(f.dataOffset % al, 0);
      if (alignment === 4096) assert.equal(metaU32(f, 'general.alignment'), 4096);
      else assert.equal(f.metadata.has('general.alignment'), false);
      assert.deepEqual(f.tensors.map((t) => t.name), specs.map((s) => s.name));
      for (const [i, s] of specs.entries()) {
        const t = f.tensorByName.get(s.name)!;
        assert.deepEqual(t.dims, s.dims);
        assert.equal(t.type, s.type);
        assert.equal(t.bytes, data[i]!.length);
        assert.equal((t.offset - f.dataOffset) % al, 0);
        const dst = new Uint8Array(t.bytes + 3);
        readTensorData(p, t, dst, 3);
        assert.deepEqual(dst.subarray(3), data[i]);
      }
      const last = f.tensors[f.tensors.length - 1]!;
      assert.equal(f.fileSize, f.dataOffset + Math.ceil((last.offset - f.dataOffset + last.bytes) / al) * al);
      assert.doesNotThrow(() => assertSupportedTensor(p, f.tensorByName.get('q8_0')!));
      assert.throws(() => assertSupportedTensor(p, f.tensorByName.get('q4_K')!),
        (e: unknown) => e instanceof UnsupportedError && /tensor 'q4_K' has type q4_K/.test(e.message));
    });
  }

  it('reads tensor data into shared memory', () => {
    const p = tmpPath('shared');
    const w = new GGUFWriter(p);
    w.addTensor('t', [1000], TensorType.F32);
    const src = randomBytes(4000, r);
    w.beginData();
    w.writeData(src);
    w.finish();
    const t = readGGUF(p).tensors[0]!;
    const mem = new WebAssembly.Memory({ initial: 1, maximum: 2, shared: true });
    readTensorData(p, t, new Uint8Array(mem.buffer), 64);
    assert.deepEqual(new Uint8Array(mem.buffer, 64, 4000), src);
    const sab = new Uint8Array(new SharedArrayBuffer(4000));
    readTensorData(p, t, sab);
    assert.deepEqual(sab, src);
    assert.throws(() => readTensorData(p, t, new Uint8Array(3999)), RangeError);
  });

  it('readTensorData throws FormatError when the file shrank', () => {
    const p = tmpPath('shrink');
    const w = new GGUFWriter(p);
    w.addTensor('t', [64], TensorType.F32);
    w.beginData();
    w.writeData(new Uint8Array(256));
    w.finish();
    const t = readGGUF(p).tensors[0]!;
    fs.truncateSync(p, t.offset + 10);
    assert.throws(() => readTensorData(p, t, new Uint8Array(256)), (e: unknown) =>
      e instanceof FormatError && e.field === "tensor 't' data");
  });
});

function tensorBytesAny(type: number, dims: number[]): number {
  const n = dims.reduce((a, b) => a * b, 1);
  return type === 12 ? (n / 256) * 144 : tensorBytes(type as TensorType, dims);
}

describe('GGUF llama.cpp vocab file', () => {
  it('reads ggml-vocab-llama-spm.gguf', () => {
    const f = readGGUF('test/fixtures/vocab/ggml-vocab-llama-spm.gguf');
    assert.equal(f.version, 3);
    assert.equal(metaStr(f, 'tokenizer.ggml.model'), 'llama');
    assert.equal(metaStr(f, 'general.architecture'), 'llama');
    const tokens = f.metadata.get('tokenizer.ggml.tokens')!;
    assert.equal(tokens.arrayType, VT.STRING);
    assert.equal((tokens.value as string[]).length, 32000);
    assert.deepEqual((tokens.value as string[]).slice(0, 4), ['<unk>', '<s>', '</s>', '<0x00>']);
    assert.ok(f.metadata.get('tokenizer.ggml.scores')!.value instanceof Float32Array);
    assert.equal((f.metadata.get('tokenizer.ggml.token_type')!.value as Int32Array).length, 32000);
    assert.equal(metaU32(f, 'tokenizer.ggml.bos_token_id'), 1);
    assert.equal(f.metadata.get('tokenizer.ggml.add_bos_token')!.value, true);
  });
});

describe('GGUF corruption', () => {
  // a small valid file: 3 KVs (one array), 2 tensors
  const kvs = (r: Raw): void => {
    r.str('general.architecture').u32(VT.STRING).str('llama');
    r.str('a').u32(VT.ARRAY).u32(VT.UINT16).u64(3).bytes([1, 0, 2, 0, 3, 0]);
    r.str('b').u32(VT.FLOAT32).bytes(f32Bytes([2]));
  };
  const good = rawGGUF({ nKV: 3, kvs, tensors: [tensor('x', [4, 2], 0), tensor('y', [8], 32)], dataBytes: 64 });
  const goodPath = writeRaw(good);

  it('the base file is valid', () => {
    const f = readGGUF(goodPath);
    assert.equal(f.tensors.length, 2);
    assert.equal(f.tensorByName.get('y')!.offset, f.dataOffset + 32);
    assert.equal(f.fileSize, f.dataOffset + 64);
  });

  it('every truncation throws FormatError', () => {
    for (let len = 0; len < good.length; len++) {
      throwsFormat(writeRawAt('trunc', good.subarray(0, len)));
    }
  });

  it('names the field on truncation', () => {
    throwsFormat(writeRaw(good.subarray(0, 2)), /^magic$/);
    throwsFormat(writeRaw(good.subarray(0, 6)), /^version$/);
    throwsFormat(writeRaw(good.subarray(0, 30)), /^tensor count$/);
    const noTensors = rawGGUF({ nKV: 3, kvs });
    throwsFormat(writeRaw(noTensors.subarray(0, 30)), /^metadata count$/);
    const oneKV = rawGGUF({ nKV: 1, kvs: (r) => r.str('general.architecture').u32(VT.STRING).str('llama') });
    throwsFormat(writeRaw(oneKV.subarray(0, 24 + 8 + 10)), /^metadata key #0 length$/);
    throwsFormat(writeRaw(noTensors.subarray(0, 24 + 28 + 4 + 10)), /^metadata key #0 'general.architecture' length$/);
    throwsFormat(writeRaw(noTensors.subarray(0, 88)), /^metadata key #1 'a' array length$|^metadata key #1 'a'$/);
    throwsFormat(writeRaw(noTensors.subarray(0, 115)), /^metadata key #2 'b'$/);
    throwsFormat(writeRaw(good.subarray(0, good.length - 1)), /^tensor 'y' data$/);
  });

  it('bad magic, unsupported version, v2', () => {
    throwsFormat(writeRaw(rawGGUF({ magic: 0x4c4d4747 })), /^magic$/);
    assert.throws(() => readGGUF(writeRaw(rawGGUF({ version: 1 }))), (e: unknown) =>
      e instanceof UnsupportedError && /version 1 is not supported/.test(e.message));
    assert.throws(() => readGGUF(writeRaw(rawGGUF({ version: 4 }))), UnsupportedError);
    assert.throws(() => readGGUF(writeRaw(rawGGUF({ version: 0x03000000 }))), /big-endian/);
    const f = readGGUF(writeRaw(rawGGUF({ version: 2, nKV: 3, kvs })));
    assert.equal(f.version, 2);
    assert.equal(metaStr(f, 'general.architecture'), 'llama');
    assert.throws(() => readGGUF(path.join(dir, 'does-not-exist.gguf')), NotFoundError);
  });

  it('rejects huge counts and lengths without allocating', () => {
    const huge = 2n ** 62n;
    throwsFormat(writeRaw(rawGGUF({ tensorCount: huge })), /^tensor count$/);
    throwsFormat(writeRaw(rawGGUF({ tensorCount: 1000 })), /^tensor count$/);
    throwsFormat(writeRaw(rawGGUF({ kvCount: 2n ** 64n - 1n })), /^metadata count$/);
    throwsFormat(writeRaw(rawGGUF({ nKV: 1, kvs: (r) => r.u64(huge).bytes([0x61]) })), /^metadata key #0 length$/);
    throwsFormat(writeRaw(rawGGUF({ nKV: 1, kvs: (r) => r.str('s').u32(VT.STRING).u64(1000).bytes([1, 2]) })),
      /^metadata key #0 's' length$/);
    const arr = (et: number, n: bigint) => (r: Raw) => r.str('tokenizer.ggml.tokens').u32(VT.ARRAY).u32(et).u64(n);
    for (const et of [VT.UINT8, VT.UINT64, VT.STRING, VT.ARRAY]) {
      const e = throwsFormat(writeRaw(rawGGUF({ nKV: 1, kvs: arr(et, huge) })),
        /^metadata key #0 'tokenizer.ggml.tokens' array length$/);
      assert.match(e.message, /exceeds/);
    }
    // string element with a huge length inside an array
    throwsFormat(writeRaw(rawGGUF({ nKV: 1, kvs: (r) => { arr(VT.STRING, 2n)(r); r.str('ok').u64(huge); } })),
      /^metadata key #0 'tokenizer.ggml.tokens' element 1 length$/);
    // tensor name length
    throwsFormat(writeRaw(new Raw().u32(0x46554747).u32(3).u64(1).u64(0).u64(huge).bytes(new Uint8Array(40)).build()),
      /^tensor #0 name length$/);
  });

  it('rejects bad value types and nesting', () => {
    throwsFormat(writeRaw(rawGGUF({ nKV: 1, kvs: (r) => r.str('k').u32(13).u32(0) })), /^metadata key #0 'k' type$/);
    throwsFormat(writeRaw(rawGGUF({ nKV: 1, kvs: (r) => r.str('k').u32(VT.ARRAY).u32(99).u64(0) })), /array type$/);
    const deep = (depth: number) => (r: Raw): void => {
      r.str('k').u32(VT.ARRAY);
      for (let i = 0; i < depth - 1; i++) r.u32(VT.ARRAY).u64(1);
      r.u32(VT.UINT8).u64(1).u8(5);
    };
    const ok = readGGUF(writeRaw(rawGGUF({ nKV: 1, kvs: deep(4) })));
    assert.deepEqual(ok.metadata.get('k')!.value, [[[new Uint8Array([5])]]]);
    throwsFormat(writeRaw(rawGGUF({ nKV: 1, kvs: deep(5) })), /array type$/);
    const dup = (r: Raw): void => { r.str('k').u32(VT.UINT8).u8(1); r.str('k').u32(VT.UINT8).u8(2); };
    throwsFormat(writeRaw(rawGGUF({ nKV: 2, kvs: dup })), /^metadata key #1 'k'$/);
  });

  it('validates general.alignment', () => {
    const al = (type: number, v: number) => (r: Raw): void => { r.str('general.alignment').u32(type).u32(v); };
    for (const v of [0, 3, 48, 2 ** 21]) throwsFormat(writeRaw(rawGGUF({ nKV: 1, kvs: al(VT.UINT32, v) })), /general\.alignment/);
    throwsFormat(writeRaw(rawGGUF({ nKV: 1, kvs: al(VT.FLOAT32, 32) })), /general\.alignment/);
    const f = readGGUF(writeRaw(rawGGUF({ nKV: 1, kvs: al(VT.UINT32, 64), tensors: [tensor('t', [16], 0)], align: 64, dataBytes: 64 })));
    assert.equal(f.alignment, 64);
    assert.equal(f.dataOffset % 64, 0);
  });

  it('validates tensor infos', () => {
    const one = (t: RawTensor, dataBytes = 64): string => writeRaw(rawGGUF({ tensors: [t], dataBytes }));
    throwsFormat(one(tensor('t', [], 0)), /^tensor #0 't' dimension count$/);
    throwsFormat(one(tensor('t', [1, 1, 1, 1, 1], 0)), /^tensor #0 't' dimension count$/);
    throwsFormat(one(tensor('t', [4, 0], 0)), /^tensor #0 't' dims$/);
    throwsFormat(one(tensor('t', [2n ** 63n], 0)), /^tensor #0 't' dims$/);
    throwsFormat(one(tensor('t', [2 ** 30, 2 ** 30, 2 ** 30], 0)), /^tensor #0 't' dims$/);
    throwsFormat(one(tensor('t', [4], 0, 1000)), /^tensor #0 't' type$/);
    throwsFormat(one(tensor('t', [48], 0, TensorType.Q8_0)), /^tensor #0 't' dims$/);
    throwsFormat(one(tensor('', [4], 0)), /^tensor #0 ''$/);
    throwsFormat(one(tensor('t', [4], 16)), /^tensor #0 't' offset$/); // misaligned
    throwsFormat(one(tensor('t', [4], 2n ** 63n + 16n)), /^tensor #0 't' offset$/); // misaligned, huge
    throwsFormat(one(tensor('t', [4], 2n ** 60n)), /^tensor 't' data$/); // aligned but far out of range
    throwsFormat(one(tensor('t', [4], 2n ** 64n - 32n)), /^tensor 't' data$/);
    throwsFormat(one(tensor('t', [17], 0)), /^tensor 't' data$/); // 68 > 64 bytes
    assert.equal(readGGUF(one(tensor('t', [16], 0))).tensors[0]!.bytes, 64);
    const two = (a: RawTensor, b: RawTensor): string => writeRaw(rawGGUF({ tensors: [a, b], dataBytes: 128 }));
    const e = throwsFormat(two(tensor('a', [16], 0), tensor('b', [16], 32)), /^tensor '(a|b)' data$/);
    assert.match(e.message, /overlaps/);
    throwsFormat(two(tensor('a', [9], 32), tensor('b', [16], 0)), /overlaps|data/);
    throwsFormat(two(tensor('a', [4], 0), tensor('a', [4], 32)), /^tensor #1 'a'$/); // duplicate name
    assert.equal(readGGUF(two(tensor('a', [8], 64), tensor('b', [16], 0))).tensors.length, 2);
  });

  function writeRawAt(name: string, b: Uint8Array): string {
    const p = path.join(dir, `${name}.gguf`);
    fs.writeFileSync(p, b);
    return p;
  }
});

describe('GGUF writer', () => {
  const exists = (p: string): boolean => fs.existsSync(p);
  const tmpOf = (p: string): string => `${p}.tmp-${process.pid}`;

  it('abort leaves no file', () => {
    const p = tmpPath('abort');
    const w = new GGUFWriter(p);
    w.addTensor('t', [8], TensorType.F32);
    w.beginData();
    w.writeData(new Uint8Array(10));
    assert.ok(exists(tmpOf(p)));
    w.abort();
    assert.ok(!exists(p) && !exists(tmpOf(p)));
    w.abort(); // idempotent
    assert.throws(() => w.writeData(new Uint8Array(1)));
  });

  it('finish with missing data throws and leaves no destination', () => {
    const p = tmpPath('missing');
    const w = new GGUFWriter(p);
    w.addTensor('a', [8], TensorType.F32);
    w.addTensor('b', [8], TensorType.F32);
    w.beginData();
    w.writeData(new Uint8Array(32 + 5));
    assert.throws(() => w.finish(), /tensor 'b' has 5 of 32 bytes/);
    assert.ok(!exists(p) && !exists(tmpOf(p)));
  });

  it('a failed write does not clobber an existing destination', () => {
    const p = tmpPath('keep');
    fs.writeFileSync(p, 'old');
    const w = new GGUFWriter(p);
    w.addTensor('a', [8], TensorType.F32);
    w.beginData();
    assert.throws(() => w.writeData(new Uint8Array(33)), RangeError);
    assert.ok(!exists(tmpOf(p)));
    assert.equal(fs.readFileSync(p, 'utf8'), 'old');
  });

  it('rejects invalid declarations', () => {
    const w = new GGUFWriter(tmpPath('bad'));
    assert.throws(() => new GGUFWriter('x', { alignment: 24 }), RangeError);
    assert.throws(() => w.addKV('k', VT.UINT8, 256), TypeError);
    assert.throws(() => w.addKV('k', VT.INT32, 1.5), TypeError);
    assert.throws(() => w.addKV('k', VT.UINT64, -1n), TypeError);
    assert.throws(() => w.addKV('k', VT.STRING, 5), TypeError);
    assert.throws(() => w.addKV('k', 42, 5), TypeError);
    assert.throws(() => w.addKV('k', VT.ARRAY, [1.5], VT.INT32), TypeError);
    assert.throws(() => w.addKV('k', VT.ARRAY, [[1, 2]], VT.ARRAY), TypeError); // ambiguous inner type
    w.addKV('k', VT.UINT8, 1);
    assert.throws(() => w.addKV('k', VT.UINT8, 1), /duplicate/);
    assert.throws(() => w.addTensor('t', [], TensorType.F32), RangeError);
    assert.throws(() => w.addTensor('t', [4, 0], TensorType.F32), RangeError);
    assert.throws(() => w.addTensor('t', [33], TensorType.Q4_0), RangeError);
    assert.throws(() => w.addTensor('t', [4], 77), RangeError);
    w.addTensor('t', [4], TensorType.F32);
    assert.throws(() => w.addTensor('t', [4], TensorType.F32), /duplicate/);
    assert.throws(() => w.addKV('general.alignment', VT.UINT32, 33), RangeError);
    w.abort();
  });

  it('general.alignment via addKV sets the alignment', () => {
    const p = tmpPath('al');
    const w = new GGUFWriter(p);
    w.addKV('general.alignment', VT.UINT32, 256);
    w.addTensor('a', [3], TensorType.F32);
    w.addTensor('b', [3], TensorType.F32);
    w.beginData();
    w.writeData(new Uint8Array(24).fill(1));
    w.finish();
    const f = readGGUF(p);
    assert.equal(f.alignment, 256);
    assert.equal(f.tensorByName.get('b')!.offset - f.tensorByName.get('a')!.offset, 256);
    assert.equal(f.fileSize, f.dataOffset + 512);
    assert.throws(() => new GGUFWriter(p, { alignment: 64 }).addKV('general.alignment', VT.UINT32, 32), RangeError);
  });

  it('writes large data in big chunks', () => {
    const p = tmpPath('big');
    const w = new GGUFWriter(p);
    const n = 5 << 20; // 20 MiB of f32
    w.addTensor('big', [n], TensorType.F32);
    w.addTensor('small', [3], TensorType.F32);
    w.beginData();
    const chunk = new Uint8Array(12 << 20);
    for (let i = 0; i < chunk.length; i++) chunk[i] = i & 0xff;
    w.writeData(chunk);
    w.writeData(chunk.subarray(0, 8 << 20));
    w.writeData(new Uint8Array(12).fill(9));
    w.finish();
    const f = readGGUF(p);
    const t = f.tensorByName.get('big')!;
    const dst = new Uint8Array(t.bytes);
    readTensorData(p, t, dst);
    assert.equal(dst[(12 << 20) + 5], 5);
    assert.equal(dst[(12 << 20) - 1], 0xff);
    const s = new Uint8Array(12);
    readTensorData(p, f.tensorByName.get('small')!, s);
    assert.deepEqual(s, new Uint8Array(12).fill(9));
  });
});
