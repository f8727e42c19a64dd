// Streaming, atomic GGUF v3 writer (the reader is in gguf.ts; shared definitions in gguf-types.ts).

import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { WriteError } from './errors.js';
import { removeStaleTemps } from './fsutil.js';
import { typeName } from './ggml-types.js';
import {
  BLOCKS, DEFAULT_ALIGNMENT, GGUFValueType, MAGIC, MAX_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS, MIN_VALUE_BYTES, TYPED,
  alignUp, isPow2, valueTypeName, type GGUFValue,
} from './gguf-types.js';

const VT = GGUFValueType;
const CHUNK = 8 << 20; // 8 MiB I/O chunks

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

  private total = 0; // bytes of the whole file (known at beginData)
  private written = 0; // bytes written to the temp file so far
  private readonly freeBytes: (dir: string) => number;
  private readonly writeFn: typeof fs.writeSync;

  /**
   * opts.freeBytes / opts.writeFn: test seams for the free-space check and the write call
   * (defaults: statfs of the output's directory, fs.writeSync).
   */
  constructor(readonly path: string, opts: { alignment?: number; freeBytes?: (dir: string) => number; writeFn?: typeof fs.writeSync } = {}) {
    this.freeBytes = opts.freeBytes ?? freeBytesOf;
    this.writeFn = opts.writeFn ?? fs.writeSync;
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
    removeStaleTemps(this.path); // temp files of killed writers of this path (dead pids)
    // the whole file goes to a temp file next to the target before the rename, so all of it must fit
    // now (the old file, if any, is only replaced at the end): refuse up front rather than fill the
    // disk for minutes and fail at ENOSPC
    this.total = h.len + pad + rel;
    const dir = nodePath.dirname(nodePath.resolve(this.path));
    const free = this.freeBytes(dir);
    if (this.total > free) {
      this.state = 'failed';
      throw new WriteError(this.path, 'ENOSPC',
        `${this.path}: needs ${gb(this.total)} of free space, ${gb(free)} free in ${dir} (the file is written to a temp file next to it, then renamed); nothing was written`);
    }
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
    while (off < b.length) {
      let n: number;
      try {
        n = this.writeFn(this.fd, b, off, Math.min(b.length - off, 1 << 30));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? '';
        const why = WRITE_FAILURES[code];
        if (!why) throw e;
        // the caller's catch calls fail(), which removes the temp file (freeing the space at once)
        throw new WriteError(this.path, code,
          `${this.path}: ${why} (${code}) after ${gb(this.written + off)} of ${gb(this.total)}; the partial temp file is removed, the previous file (if any) is unchanged`,
          { cause: e });
      }
      off += n;
    }
    this.written += b.length;
  }
}

/** Write errors a user can act on, with what to say. */
const WRITE_FAILURES: Record<string, string> = {
  ENOSPC: 'no space left on the device', EDQUOT: 'disk quota exceeded', EFBIG: 'file too large for the file system',
  EROFS: 'read-only file system', EIO: 'I/O error while writing',
};

/** Bytes available to this user on the file system holding dir (Infinity when statfs is unavailable). */
function freeBytesOf(dir: string): number {
  try {
    const s = fs.statfsSync(dir);
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return Infinity;
  }
}

const gb = (n: number): string => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : `${(n / 1e6).toFixed(1)} MB`);
