// GGUF v3 (and v2) reader and metadata helpers. The streaming, atomic writer is in gguf-writer.ts and
// re-exported from here, so importers need only this module.
//
// The reader parses only the header (metadata + tensor infos) through bounded synchronous reads with
// a growing window; every claimed count or length is checked against the bytes left in the file
// before anything is allocated, so a corrupt or hostile file gives a FormatError, never a huge
// allocation or a RangeError. Layout (all little-endian):
//   magic 'GGUF' | u32 version | u64 tensor_count | u64 kv_count | kv* | tensor_info* | pad | data
//   kv = string key | u32 type | value;  string = u64 len | bytes;  array = u32 type | u64 n | elems
//   tensor_info = string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset (in data)

import { preadFully } from './fsutil.js';
import * as fs from 'node:fs';
import { FormatError, NotFoundError, UnsupportedError } from './errors.js';
import { isSupportedType, typeName } from './ggml-types.js';
import {
  BLOCKS, DEFAULT_ALIGNMENT, GGUFValueType, MAGIC, MAX_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS, MIN_VALUE_BYTES, TYPED,
  alignUp, isPow2, valueTypeName, type GGUFKV, type GGUFValue,
} from './gguf-types.js';

export { GGUFValueType, valueTypeName, type GGUFKV, type GGUFValue } from './gguf-types.js';
export { GGUFWriter } from './gguf-writer.js';

const VT = GGUFValueType;

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

const MIN_TENSOR_INFO = 8 + 4 + 8 + 4 + 8; // empty name, one dim
// Bounds on one metadata value, on top of the bytes left in the file: a corrupt header of a multi-GB
// model could otherwise claim a value larger than a Buffer (4 GiB), a JS string (2^29 units) or the
// heap. Real values are far smaller (the largest, vocabularies and merges, are a few MB).
export const MAX_STRING_BYTES = 1 << 28;
export const MAX_ARRAY_BYTES = 1 << 30; // numeric arrays
export const MAX_ARRAY_ITEMS = 1 << 26; // arrays of strings / arrays
const MIN_KV = 8 + 4 + 1;

const INT_TYPES = new Set<number>([VT.UINT8, VT.INT8, VT.UINT16, VT.INT16, VT.UINT32, VT.INT32, VT.UINT64, VT.INT64]);

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
    if (n > MAX_STRING_BYTES) this.fail(() => `${fieldStr(field)} length`, `string length ${n} exceeds the limit of ${MAX_STRING_BYTES} bytes`);
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
    if (ctor ? n * min > MAX_ARRAY_BYTES : n > MAX_ARRAY_ITEMS) {
      this.fail(() => `${fieldStr(field)} array length`, `${n} ${valueTypeName(et)} elements exceed the limit of ` +
        (ctor ? `${MAX_ARRAY_BYTES} bytes` : `${MAX_ARRAY_ITEMS} elements`) + ' for one metadata value');
    }
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
    preadFully(fd, dst, dstOffset, t.bytes, t.offset, (pos) =>
      new FormatError(path, `tensor '${t.name}' data`, `unexpected end of file at offset ${pos}`));
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
