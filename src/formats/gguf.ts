// GGUF v3 (and v2) reader and streaming, atomic writer.
//
// The reader parses only the header (metadata + tensor infos) through bounded synchronous reads with
// a growing window; every claimed count or length is checked against the bytes left in the file
// before anything is allocated, so a corrupt or hostile file gives a FormatError, never a huge
// allocation or a RangeError. Layout (all little-endian):
//   magic 'GGUF' | u32 version | u64 tensor_count | u64 kv_count | kv* | tensor_info* | pad | data
//   kv = string key | u32 type | value;  string = u64 len | bytes;  array = u32 type | u64 n | elems
//   tensor_info = string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset (in data)

import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { FormatError, NotFoundError, UnsupportedError } from './errors.js';
import { isSupportedType, typeName } from './ggml-types.js';

export const GGUFValueType = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6,
  BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;
const VT = GGUFValueType;

export type GGUFValue = number | bigint | boolean | string | ArrayLike<unknown> | GGUFValue[];
export interface GGUFKV { key: string; type: number; value: GGUFValue; arrayType?: number }
export interface TensorInfo {
  name: string;
  dims: number[]; // GGUF ne[]: dims[0] is the contiguous row length (cols), dims[1] rows
  type: number; // GGML type id
  offset: number; // absolute byte offset of the data in the file
  bytes: number; // data size in bytes
}
export interface GGUFFile {
  path: string; version: number; fileSize: number; alignment: number; dataOffset: number;
  metadata: Map<string, GGUFKV>;
  tensors: TensorInfo[]; tensorByName: Map<string, TensorInfo>;
}

const MAGIC = 0x46554747; // 'GGUF' read as a little-endian u32
const DEFAULT_ALIGNMENT = 32;
const MAX_ALIGNMENT = 1 << 20;
const MAX_ARRAY_DEPTH = 4;
const MAX_DIMS = 4;
const MIN_TENSOR_INFO = 8 + 4 + 8 + 4 + 8; // empty name, one dim
const MIN_KV = 8 + 4 + 1;
const CHUNK = 8 << 20; // 8 MiB I/O chunks

const VALUE_NAMES = ['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'float32', 'bool', 'string',
  'array', 'uint64', 'int64', 'float64'];
export function valueTypeName(t: number): string {
  return VALUE_NAMES[t] ?? `type#${t}`;
}
/** Bytes of one scalar (strings/arrays: their minimal encoding), or 0 for an unknown type. */
const MIN_VALUE_BYTES = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];
type TypedCtor = { new (n: number): ArrayLike<unknown> & { buffer: ArrayBufferLike }; BYTES_PER_ELEMENT: number };
const TYPED: Record<number, TypedCtor> = {
  0: Uint8Array, 1: Int8Array, 2: Uint16Array, 3: Int16Array, 4: Uint32Array, 5: Int32Array, 6: Float32Array,
  7: Uint8Array, 10: BigUint64Array, 11: BigInt64Array, 12: Float64Array,
};
const INT_TYPES = new Set<number>([VT.UINT8, VT.INT8, VT.UINT16, VT.INT16, VT.UINT32, VT.INT32, VT.UINT64, VT.INT64]);

// Block geometry of every GGML type whose layout is known, so that files holding types we cannot
// compute with can still be inspected. [elements per block, bytes per block] (as ggml's type traits).
const QK_K = 256;
const BLOCKS: Record<number, [number, number]> = {
  0: [1, 4], 1: [1, 2], 2: [32, 18], 3: [32, 20], 6: [32, 22], 7: [32, 24], 8: [32, 34], 9: [32, 36],
  10: [QK_K, 84], 11: [QK_K, 110], 12: [QK_K, 144], 13: [QK_K, 176], 14: [QK_K, 210], 15: [QK_K, 292],
  16: [QK_K, 66], 17: [QK_K, 74], 18: [QK_K, 98], 19: [QK_K, 50], 20: [32, 18], 21: [QK_K, 110],
  22: [QK_K, 82], 23: [QK_K, 136], 24: [1, 1], 25: [1, 2], 26: [1, 4], 27: [1, 8], 28: [1, 8],
  29: [QK_K, 56], 30: [1, 2], 34: [QK_K, 54], 35: [QK_K, 66], 39: [32, 17],
};

/** Throws UnsupportedError if flashlm cannot compute with tensor `t`'s type. */
export function assertSupportedTensor(file: string, t: TensorInfo): void {
  if (!isSupportedType(t.type)) {
    throw new UnsupportedError(`${file}: tensor '${t.name}' has type ${typeName(t.type)}, which flashlm does not ` +
      `support (supported: f32, f16, bf16, q8_0, q4_0)`);
  }
}

// ---------------------------------------------------------------------------------------------
// Reader

type Field = string | (() => string);
const fieldStr = (f: Field): string => (typeof f === 'string' ? f : f());

class HeaderReader {
  pos = 0; // absolute file position of the next byte
  private buf: Buffer = Buffer.alloc(0);
  private bufStart = 0;
  private window = 64 << 10;
  constructor(private readonly fd: number, readonly file: string, readonly size: number) {}

  get left(): number { return this.size - this.pos; }

  fail(field: Field, detail: string): never {
    throw new FormatError(this.file, fieldStr(field), detail);
  }

  /** Makes `n` bytes at pos available in buf; returns their index in buf. */
  need(n: number, field: Field): number {
    if (n > this.left) {
      this.fail(field, `truncated: needs ${n} bytes at offset ${this.pos}, file has ${this.left} left`);
    }
    let i = this.pos - this.bufStart;
    if (i < 0 || i + n > this.buf.length) {
      const len = Math.min(Math.max(n, this.window), this.left);
      this.window = Math.min(this.window * 2, 16 << 20);
      const buf = Buffer.allocUnsafe(len);
      let got = 0;
      while (got < len) {
        const r = fs.readSync(this.fd, buf, got, len - got, this.pos + got);
        if (r === 0) this.fail(field, `unexpected end of file at offset ${this.pos + got}`);
        got += r;
      }
      this.buf = buf;
      this.bufStart = this.pos;
      i = 0;
    }
    return i;
  }
  u32(field: Field): number {
    const i = this.need(4, field);
    this.pos += 4;
    return this.buf.readUInt32LE(i);
  }
  u64(field: Field): bigint {
    const i = this.need(8, field);
    this.pos += 8;
    return this.buf.readBigUInt64LE(i);
  }
  /** A u64 as a number: exact below 2^53, otherwise ≥ 2^53 (only compared against file sizes). */
  private len64(field: Field): number {
    const i = this.need(8, field);
    this.pos += 8;
    return this.buf.readUInt32LE(i + 4) * 0x100000000 + this.buf.readUInt32LE(i);
  }
  private exact64(): bigint {
    return this.buf.readBigUInt64LE(this.pos - 8 - this.bufStart);
  }
  /** A u64 count of items, each at least `minBytes` long, that must fit in the rest of the file. */
  count(field: Field, minBytes: number): number {
    const n = this.len64(field);
    if (n * minBytes > this.left) {
      this.fail(field, `count ${this.exact64()} × ${minBytes} bytes exceeds the ${this.left} bytes left in the file`);
    }
    return n;
  }
  str(field: Field): string {
    const n = this.len64(field);
    if (n > this.left) {
      this.fail(() => `${fieldStr(field)} length`, `string length ${this.exact64()} exceeds the ${this.left} bytes left in the file`);
    }
    const i = this.need(n, field);
    this.pos += n;
    return this.buf.toString('utf8', i, i + n);
  }
  bytes(n: number, field: Field): Buffer {
    const i = this.need(n, field);
    this.pos += n;
    return this.buf.subarray(i, i + n);
  }

  scalar(type: number, field: Field): GGUFValue {
    const size = MIN_VALUE_BYTES[type]!;
    const i = this.need(size, field);
    this.pos += size;
    const b = this.buf;
    switch (type) {
      case VT.UINT8: return b.readUInt8(i);
      case VT.INT8: return b.readInt8(i);
      case VT.UINT16: return b.readUInt16LE(i);
      case VT.INT16: return b.readInt16LE(i);
      case VT.UINT32: return b.readUInt32LE(i);
      case VT.INT32: return b.readInt32LE(i);
      case VT.FLOAT32: return b.readFloatLE(i);
      case VT.BOOL: return b.readUInt8(i) !== 0;
      case VT.UINT64: return b.readBigUInt64LE(i);
      case VT.INT64: return b.readBigInt64LE(i);
      default: return b.readDoubleLE(i); // FLOAT64
    }
  }

  value(type: number, field: Field, depth: number): { value: GGUFValue; arrayType?: number } {
    if (type === VT.STRING) return { value: this.str(field) };
    if (type !== VT.ARRAY) {
      if (MIN_VALUE_BYTES[type] === undefined) this.fail(() => `${fieldStr(field)} type`, `unknown value type ${type}`);
      return { value: this.scalar(type, field) };
    }
    const et = this.u32(() => `${fieldStr(field)} array type`);
    const min = MIN_VALUE_BYTES[et];
    if (min === undefined) this.fail(() => `${fieldStr(field)} array type`, `unknown element type ${et}`);
    if (et === VT.ARRAY && depth + 1 >= MAX_ARRAY_DEPTH) {
      this.fail(() => `${fieldStr(field)} array type`, `arrays nested deeper than ${MAX_ARRAY_DEPTH} levels`);
    }
    const n = this.count(() => `${fieldStr(field)} array length`, min);
    const ctor = TYPED[et];
    if (ctor) {
      const raw = this.bytes(n * min, field);
      const out = new ctor(n);
      new Uint8Array(out.buffer).set(raw);
      return { value: out, arrayType: et };
    }
    const out: GGUFValue[] = new Array(n);
    let j = 0;
    const ef = (): string => `${fieldStr(field)} element ${j}`;
    if (et === VT.STRING) {
      for (; j < n; j++) out[j] = this.str(ef);
    } else {
      for (; j < n; j++) out[j] = this.value(VT.ARRAY, ef, depth + 1).value;
    }
    return { value: out, arrayType: et };
  }
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}
const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

function openForRead(path: string): number {
  try {
    return fs.openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new NotFoundError(path);
    throw e;
  }
}

/** Parses the GGUF header of `path` (metadata and tensor infos), validating every range. */
export function readGGUF(path: string): GGUFFile {
  const fd = openForRead(path);
  try {
    const size = fs.fstatSync(fd).size;
    const r = new HeaderReader(fd, path, size);
    const magic = r.u32('magic');
    if (magic !== MAGIC) {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(magic);
      r.fail('magic', `not a GGUF file (starts with ${JSON.stringify(b.toString('latin1'))})`);
    }
    const version = r.u32('version');
    if (version !== 2 && version !== 3) {
      if (version === 0x03000000 || version === 0x02000000) {
        throw new UnsupportedError(`${path}: big-endian GGUF files are not supported`);
      }
      throw new UnsupportedError(`${path}: GGUF version ${version} is not supported (only versions 2 and 3)`);
    }
    const nTensors = r.count('tensor count', MIN_TENSOR_INFO);
    const nKV = r.count('metadata count', MIN_KV);

    const metadata = new Map<string, GGUFKV>();
    for (let k = 0; k < nKV; k++) {
      const key = r.str(`metadata key #${k}`);
      const f = `metadata key #${k} '${key}'`;
      if (metadata.has(key)) r.fail(f, 'duplicate key');
      const type = r.u32(`${f} type`);
      const { value, arrayType } = r.value(type, f, 0);
      const kv: GGUFKV = { key, type, value };
      if (arrayType !== undefined) kv.arrayType = arrayType;
      metadata.set(key, kv);
    }

    let alignment = DEFAULT_ALIGNMENT;
    const al = metadata.get('general.alignment');
    if (al) {
      const f = "metadata key 'general.alignment'";
      if (!INT_TYPES.has(al.type)) r.fail(f, `expected an integer, got ${valueTypeName(al.type)}`);
      const v = Number(al.value);
      if (!isPow2(v) || v > MAX_ALIGNMENT) r.fail(f, `${v} is not a power of two between 1 and ${MAX_ALIGNMENT}`);
      alignment = v;
    }

    const infos: { name: string; dims: number[]; type: number; rel: bigint; bytes: number; k: number }[] = [];
    const tensorByName = new Map<string, TensorInfo>();
    const seen = new Set<string>();
    for (let k = 0; k < nTensors; k++) {
      const name = r.str(`tensor #${k} name`);
      const f = `tensor #${k} '${name}'`;
      if (name.length === 0) r.fail(f, 'empty name');
      if (seen.has(name)) r.fail(f, 'duplicate tensor name');
      seen.add(name);
      const nd = r.u32(`${f} dimension count`);
      if (nd < 1 || nd > MAX_DIMS) r.fail(`${f} dimension count`, `${nd} (must be 1..${MAX_DIMS})`);
      const dims: number[] = [];
      let elems = 1;
      for (let d = 0; d < nd; d++) {
        const v = r.u64(`${f} dims`);
        if (v < 1n || v > BigInt(Number.MAX_SAFE_INTEGER)) r.fail(`${f} dims`, `dimension ${d} is ${v}`);
        dims.push(Number(v));
        elems *= Number(v);
        if (elems > Number.MAX_SAFE_INTEGER) r.fail(`${f} dims`, `element count exceeds 2^53`);
      }
      const type = r.u32(`${f} type`);
      const geo = BLOCKS[type];
      if (!geo) r.fail(`${f} type`, `unknown GGML type ${type} (block size unknown)`);
      if (dims[0]! % geo[0] !== 0) {
        r.fail(`${f} dims`, `row length ${dims[0]} is not a multiple of the ${typeName(type)} block size ${geo[0]}`);
      }
      const bytes = (elems / geo[0]) * geo[1];
      if (bytes > Number.MAX_SAFE_INTEGER) r.fail(`${f} dims`, `data size exceeds 2^53 bytes`);
      const rel = r.u64(`${f} offset`);
      if (rel % BigInt(alignment) !== 0n) r.fail(`${f} offset`, `offset ${rel} is not a multiple of the alignment ${alignment}`);
      infos.push({ name, dims, type, rel, bytes, k });
    }

    const dataOffset = alignUp(r.pos, alignment);
    const tensors: TensorInfo[] = [];
    for (const t of infos) {
      const f = `tensor '${t.name}' data`;
      const start = BigInt(dataOffset) + t.rel;
      if (start + BigInt(t.bytes) > BigInt(size)) {
        r.fail(f, `[${start}, ${start + BigInt(t.bytes)}) runs past end of file (${size} bytes)`);
      }
      const ti: TensorInfo = { name: t.name, dims: t.dims, type: t.type, offset: Number(start), bytes: t.bytes };
      tensors.push(ti);
      tensorByName.set(ti.name, ti);
    }
    const sorted = [...tensors].sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < sorted.length; i++) {
      const a = sorted[i - 1]!, b = sorted[i]!;
      if (b.offset < a.offset + a.bytes) {
        r.fail(`tensor '${b.name}' data`, `[${b.offset}, ${b.offset + b.bytes}) overlaps tensor '${a.name}' ` +
          `[${a.offset}, ${a.offset + a.bytes})`);
      }
    }
    return { path, version, fileSize: size, alignment, dataOffset, metadata, tensors, tensorByName };
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads the `t.bytes` bytes of tensor `t` from `path` into dst[dstOffset..]. dst may be a view on
 * shared memory. Loops on short reads; throws FormatError on a premature end of file. */
export function readTensorData(path: string, t: TensorInfo, dst: Uint8Array, dstOffset = 0): void {
  if (!Number.isInteger(dstOffset) || dstOffset < 0 || dstOffset + t.bytes > dst.length) {
    throw new RangeError(`tensor '${t.name}': ${t.bytes} bytes do not fit at offset ${dstOffset} of a ${dst.length}-byte buffer`);
  }
  const fd = openForRead(path);
  try {
    let done = 0;
    while (done < t.bytes) {
      const n = Math.min(t.bytes - done, 1 << 30);
      const r = fs.readSync(fd, dst, dstOffset + done, n, t.offset + done);
      if (r === 0) {
        throw new FormatError(path, `tensor '${t.name}' data`, `unexpected end of file at offset ${t.offset + done}`);
      }
      done += r;
    }
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Metadata helpers

function metaGet(f: GGUFFile, key: string): GGUFKV | undefined {
  return f.metadata.get(key);
}
function missing(f: GGUFFile, key: string): never {
  throw new FormatError(f.path, `metadata key '${key}'`, 'missing');
}

/** An integer metadata value (any integer type) as a non-negative safe integer. */
export function metaU32(f: GGUFFile, key: string, dflt?: number): number {
  const kv = metaGet(f, key);
  if (!kv) return dflt ?? missing(f, key);
  if (!INT_TYPES.has(kv.type)) {
    throw new FormatError(f.path, `metadata key '${key}'`, `expected an integer, got ${valueTypeName(kv.type)}`);
  }
  const v = kv.value as number | bigint;
  if (v < 0 || v > Number.MAX_SAFE_INTEGER) {
    throw new FormatError(f.path, `metadata key '${key}'`, `value ${v} out of range`);
  }
  return Number(v);
}

/** A numeric metadata value (float or integer type) as a number. */
export function metaF32(f: GGUFFile, key: string, dflt?: number): number {
  const kv = metaGet(f, key);
  if (!kv) return dflt ?? missing(f, key);
  if (kv.type !== VT.FLOAT32 && kv.type !== VT.FLOAT64 && !INT_TYPES.has(kv.type)) {
    throw new FormatError(f.path, `metadata key '${key}'`, `expected a number, got ${valueTypeName(kv.type)}`);
  }
  return Number(kv.value);
}

export function metaStr(f: GGUFFile, key: string, dflt?: string): string {
  const kv = metaGet(f, key);
  if (!kv) return dflt ?? missing(f, key);
  if (kv.type !== VT.STRING) {
    throw new FormatError(f.path, `metadata key '${key}'`, `expected a string, got ${valueTypeName(kv.type)}`);
  }
  return kv.value as string;
}

/** A short human-readable rendering of a metadata value (arrays: element type, length, first items). */
export function formatMetaValue(kv: GGUFKV, maxItems = 4): string {
  const one = (v: unknown): string => {
    if (typeof v === 'string') {
      const s = JSON.stringify(v.length > 60 ? v.slice(0, 60) + '…' : v);
      return s;
    }
    if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
    if (v && typeof v === 'object' && 'length' in v) {
      const a = v as ArrayLike<unknown>;
      return `[${a.length} items]`;
    }
    return String(v);
  };
  if (kv.type !== VT.ARRAY) return one(kv.value);
  const a = kv.value as ArrayLike<unknown>;
  const items: string[] = [];
  for (let i = 0; i < Math.min(a.length, maxItems); i++) {
    items.push(kv.arrayType === VT.BOOL ? String(a[i] !== 0) : one(a[i]));
  }
  if (a.length > maxItems) items.push('…');
  return `${valueTypeName(kv.arrayType ?? -1)}[${a.length}] [${items.join(', ')}]`;
}

// ---------------------------------------------------------------------------------------------
// Writer

/** Growable little-endian byte encoder for the header. */
class Enc {
  buf = Buffer.allocUnsafe(256);
  len = 0;
  private room(n: number): number {
    if (this.len + n > this.buf.length) {
      const nb = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
      this.buf.copy(nb, 0, 0, this.len);
      this.buf = nb;
    }
    const at = this.len;
    this.len += n;
    return at;
  }
  // (room() may replace this.buf, so it is called before this.buf is read)
  u8(v: number): void { const at = this.room(1); this.buf.writeUInt8(v, at); }
  u32(v: number): void { const at = this.room(4); this.buf.writeUInt32LE(v, at); }
  u64(v: bigint | number): void { const at = this.room(8); this.buf.writeBigUInt64LE(BigInt(v), at); }
  bytes(b: Uint8Array): void { const at = this.room(b.length); this.buf.set(b, at); }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.bytes(b);
  }
  get data(): Buffer { return this.buf.subarray(0, this.len); }
}

const CLASS_TYPE = new Map<unknown, number>([
  [Uint8Array, VT.UINT8], [Int8Array, VT.INT8], [Uint16Array, VT.UINT16], [Int16Array, VT.INT16],
  [Uint32Array, VT.UINT32], [Int32Array, VT.INT32], [Float32Array, VT.FLOAT32], [BigUint64Array, VT.UINT64],
  [BigInt64Array, VT.INT64], [Float64Array, VT.FLOAT64],
]);

/** Element type of an inner (nested) array value, inferred from its JS representation. */
function inferArrayType(v: unknown, what: string): number {
  if (v && typeof v === 'object') {
    const t = CLASS_TYPE.get((v as object).constructor);
    if (t !== undefined) return t;
    if (Array.isArray(v)) {
      if (v.length === 0 || typeof v[0] === 'string') return VT.STRING;
      if (typeof v[0] === 'boolean') return VT.BOOL;
      if (typeof v[0] === 'object') return VT.ARRAY;
    }
  }
  throw new TypeError(`${what}: cannot infer the element type of a nested array; use a typed array, string[] or boolean[]`);
}

const INT_RANGE: Record<number, [number, number]> = {
  0: [0, 0xff], 1: [-0x80, 0x7f], 2: [0, 0xffff], 3: [-0x8000, 0x7fff], 4: [0, 0xffffffff], 5: [-0x80000000, 0x7fffffff],
};

function encScalar(e: Enc, type: number, v: unknown, what: string): void {
  const bad = (): never => { throw new TypeError(`${what}: ${String(v)} is not a valid ${valueTypeName(type)}`); };
  switch (type) {
    case VT.UINT8: case VT.INT8: case VT.UINT16: case VT.INT16: case VT.UINT32: case VT.INT32: {
      const [lo, hi] = INT_RANGE[type]!;
      const n = typeof v === 'bigint' ? Number(v) : v;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < lo || n > hi) bad();
      const size = MIN_VALUE_BYTES[type]!;
      const b = Buffer.allocUnsafe(size);
      if (lo < 0) b.writeIntLE(n as number, 0, size); else b.writeUIntLE(n as number, 0, size);
      e.bytes(b);
      return;
    }
    case VT.UINT64: case VT.INT64: {
      if (typeof v !== 'bigint' && !(typeof v === 'number' && Number.isInteger(v))) bad();
      const n = BigInt(v as number | bigint);
      const ok = type === VT.UINT64 ? n >= 0n && n < 1n << 64n : n >= -(1n << 63n) && n < 1n << 63n;
      if (!ok) bad();
      e.u64(BigInt.asUintN(64, n));
      return;
    }
    case VT.FLOAT32: case VT.FLOAT64: {
      if (typeof v !== 'number') bad();
      const b = Buffer.allocUnsafe(type === VT.FLOAT32 ? 4 : 8);
      if (type === VT.FLOAT32) b.writeFloatLE(v as number); else b.writeDoubleLE(v as number);
      e.bytes(b);
      return;
    }
    case VT.BOOL:
      if (typeof v === 'boolean') e.u8(v ? 1 : 0);
      else if (v === 0 || v === 1) e.u8(v);
      else bad();
      return;
    case VT.STRING:
      if (typeof v !== 'string') bad();
      e.str(v as string);
      return;
    default:
      throw new TypeError(`${what}: unknown value type ${type}`);
  }
}

function encValue(e: Enc, type: number, v: unknown, arrayType: number | undefined, what: string, depth: number): void {
  if (type !== VT.ARRAY) return encScalar(e, type, v, what);
  if (!v || typeof v !== 'object' || typeof (v as ArrayLike<unknown>).length !== 'number' || typeof v === 'string') {
    throw new TypeError(`${what}: array value expected`);
  }
  const a = v as ArrayLike<unknown>;
  const et = arrayType ?? inferArrayType(v, what);
  if (MIN_VALUE_BYTES[et] === undefined) throw new TypeError(`${what}: unknown array element type ${et}`);
  if (et === VT.ARRAY && depth + 1 >= MAX_ARRAY_DEPTH) throw new TypeError(`${what}: arrays nested too deeply`);
  e.u32(et);
  e.u64(a.length);
  const ctor = TYPED[et];
  if (ctor && et !== VT.BOOL && (a as object).constructor === ctor) {
    const ta = a as unknown as ArrayBufferView;
    e.bytes(new Uint8Array(ta.buffer, ta.byteOffset, ta.byteLength));
    return;
  }
  for (let i = 0; i < a.length; i++) {
    if (et === VT.ARRAY) encValue(e, VT.ARRAY, a[i], undefined, `${what}[${i}]`, depth + 1);
    else encScalar(e, et, a[i], `${what}[${i}]`);
  }
}

/** Streaming, atomic GGUF v3 writer: declare KVs and tensors, beginData(), writeData() the tensor
 * bytes in declaration order (any chunking), finish(). Output goes to `${path}.tmp-${pid}` and is
 * renamed into place only when complete. */
export class GGUFWriter {
  private readonly kvs: { key: string; enc: Buffer }[] = [];
  private readonly keys = new Set<string>();
  private readonly tensors: { name: string; dims: number[]; type: number; bytes: number; rel: number }[] = [];
  private readonly names = new Set<string>();
  private alignment: number;
  private alignmentFixed: boolean;
  private readonly tmp: string;
  private fd = -1;
  private state: 'declare' | 'data' | 'done' | 'failed' = 'declare';
  private buf = Buffer.allocUnsafe(0);
  private bufLen = 0;
  private cur = 0; // index of the tensor being written
  private curDone = 0; // bytes of it written

  constructor(readonly path: string, opts: { alignment?: number } = {}) {
    this.alignment = opts.alignment ?? DEFAULT_ALIGNMENT;
    this.alignmentFixed = opts.alignment !== undefined;
    if (!isPow2(this.alignment) || this.alignment > MAX_ALIGNMENT) {
      throw new RangeError(`GGUF alignment must be a power of two ≤ ${MAX_ALIGNMENT}, got ${this.alignment}`);
    }
    this.tmp = `${path}.tmp-${process.pid}`;
  }

  private expect(state: 'declare' | 'data', op: string): void {
    if (this.state !== state) throw new Error(`GGUFWriter.${op}: not allowed in state '${this.state}'`);
  }

  addKV(key: string, type: number, value: GGUFValue, arrayType?: number): void {
    this.expect('declare', 'addKV');
    if (this.keys.has(key)) throw new Error(`GGUFWriter: duplicate metadata key '${key}'`);
    if (key === 'general.alignment') {
      const v = typeof value === 'bigint' ? Number(value) : value;
      if (type !== VT.UINT32 || typeof v !== 'number' || !isPow2(v) || v > MAX_ALIGNMENT) {
        throw new RangeError(`GGUFWriter: general.alignment must be a uint32 power of two ≤ ${MAX_ALIGNMENT}`);
      }
      if (this.alignmentFixed && v !== this.alignment) {
        throw new RangeError(`GGUFWriter: general.alignment ${v} contradicts the writer alignment ${this.alignment}`);
      }
      this.alignment = v;
      this.alignmentFixed = true;
    }
    const e = new Enc();
    e.str(key);
    e.u32(type);
    encValue(e, type, value, arrayType, `metadata '${key}'`, 0);
    this.keys.add(key);
    this.kvs.push({ key, enc: e.data });
  }

  addTensor(name: string, dims: number[], type: number): void {
    this.expect('declare', 'addTensor');
    if (!name) throw new Error('GGUFWriter: empty tensor name');
    if (this.names.has(name)) throw new Error(`GGUFWriter: duplicate tensor '${name}'`);
    if (dims.length < 1 || dims.length > MAX_DIMS || dims.some((d) => !Number.isSafeInteger(d) || d < 1)) {
      throw new RangeError(`GGUFWriter: tensor '${name}' has invalid dims [${dims.join(', ')}]`);
    }
    const geo = BLOCKS[type];
    if (!geo) throw new RangeError(`GGUFWriter: tensor '${name}' has unknown type ${type}`);
    if (dims[0]! % geo[0] !== 0) {
      throw new RangeError(`GGUFWriter: tensor '${name}' row length ${dims[0]} is not a multiple of ${geo[0]} (${typeName(type)})`);
    }
    const elems = dims.reduce((a, b) => a * b, 1);
    const bytes = (elems / geo[0]) * geo[1];
    if (!Number.isSafeInteger(bytes)) throw new RangeError(`GGUFWriter: tensor '${name}' is too large`);
    this.names.add(name);
    this.tensors.push({ name, dims: [...dims], type, bytes, rel: 0 });
  }

  /** Writes the header, metadata and tensor infos; after this only writeData/finish/abort. */
  beginData(): void {
    this.expect('declare', 'beginData');
    if (this.alignment !== DEFAULT_ALIGNMENT && !this.keys.has('general.alignment')) {
      this.addKV('general.alignment', VT.UINT32, this.alignment);
    }
    let rel = 0;
    for (const t of this.tensors) {
      t.rel = rel;
      rel = alignUp(rel + t.bytes, this.alignment);
    }
    const h = new Enc();
    h.u32(MAGIC);
    h.u32(3);
    h.u64(this.tensors.length);
    h.u64(this.kvs.length);
    for (const kv of this.kvs) h.bytes(kv.enc);
    for (const t of this.tensors) {
      h.str(t.name);
      h.u32(t.dims.length);
      for (const d of t.dims) h.u64(d);
      h.u32(t.type);
      h.u64(t.rel);
    }
    const pad = alignUp(h.len, this.alignment) - h.len;
    this.fd = fs.openSync(this.tmp, 'w');
    this.state = 'data';
    this.buf = Buffer.allocUnsafe(CHUNK);
    try {
      this.put(h.data);
      this.zeros(pad);
      this.skipEmpty();
    } catch (e) {
      this.fail();
      throw e;
    }
  }

  /** Appends tensor bytes in declaration order; a chunk may span tensors. */
  writeData(chunk: Uint8Array): void {
    this.expect('data', 'writeData');
    let off = 0;
    try {
      while (off < chunk.length) {
        const t = this.tensors[this.cur];
        if (!t) {
          throw new RangeError(`GGUFWriter: ${chunk.length - off} bytes written past the end of the declared tensor data`);
        }
        const n = Math.min(chunk.length - off, t.bytes - this.curDone);
        this.put(chunk.subarray(off, off + n));
        off += n;
        this.curDone += n;
        this.skipEmpty();
      }
    } catch (e) {
      this.fail();
      throw e;
    }
  }

  /** Checks that all data was written, then flushes, fsyncs and renames into place. */
  finish(): void {
    if (this.state === 'declare') this.beginData();
    this.expect('data', 'finish');
    try {
      if (this.cur < this.tensors.length) {
        const t = this.tensors[this.cur]!;
        throw new Error(`GGUFWriter: incomplete data: tensor '${t.name}' has ${this.curDone} of ${t.bytes} bytes` +
          (this.cur + 1 < this.tensors.length ? ` and ${this.tensors.length - this.cur - 1} more tensors follow` : ''));
      }
      this.flush();
      fs.fsyncSync(this.fd);
      fs.closeSync(this.fd);
      this.fd = -1;
      fs.renameSync(this.tmp, this.path);
      this.state = 'done';
    } catch (e) {
      this.fail();
      throw e;
    }
    try { // make the rename durable (best effort: not every platform can fsync a directory)
      const dfd = fs.openSync(nodePath.dirname(this.path), 'r');
      try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
    } catch { /* ignore */ }
  }

  /** Discards the output (removes the temp file). Safe to call in any state. */
  abort(): void {
    if (this.state === 'done') return;
    this.fail();
  }

  private fail(): void {
    this.state = 'failed';
    if (this.fd >= 0) {
      try { fs.closeSync(this.fd); } catch { /* ignore */ }
      this.fd = -1;
    }
    try { fs.unlinkSync(this.tmp); } catch { /* ignore: not created */ }
    this.buf = Buffer.allocUnsafe(0);
    this.bufLen = 0;
  }

  /** After a tensor's bytes are complete: pad to alignment and move to the next. */
  private skipEmpty(): void {
    while (this.cur < this.tensors.length && this.curDone === this.tensors[this.cur]!.bytes) {
      const t = this.tensors[this.cur]!;
      this.zeros(alignUp(t.bytes, this.alignment) - t.bytes);
      this.cur++;
      this.curDone = 0;
    }
  }

  private put(b: Uint8Array): void {
    if (b.length >= CHUNK) {
      this.flush();
      this.writeAll(b);
      return;
    }
    if (this.bufLen + b.length > CHUNK) this.flush();
    this.buf.set(b, this.bufLen);
    this.bufLen += b.length;
  }
  private zeros(n: number): void {
    if (n <= 0) return;
    if (this.bufLen + n > CHUNK) this.flush();
    this.buf.fill(0, this.bufLen, this.bufLen + n);
    this.bufLen += n;
  }
  private flush(): void {
    if (this.bufLen > 0) this.writeAll(this.buf.subarray(0, this.bufLen));
    this.bufLen = 0;
  }
  private writeAll(b: Uint8Array): void {
    let off = 0;
    while (off < b.length) off += fs.writeSync(this.fd, b, off, Math.min(b.length - off, 1 << 30));
  }
}
