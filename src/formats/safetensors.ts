// safetensors reader and writer (Hugging Face's format).
//
// Layout: u64 little-endian N | N bytes of UTF-8 JSON header | data. The header maps tensor names to
// { dtype, shape, data_offsets: [begin, end] } (offsets relative to the start of the data) and may
// hold "__metadata__": { string: string }. Writers pad the header with spaces so the data starts
// 8-byte aligned. A directory holds one `model.safetensors` or shards listed in
// `model.safetensors.index.json` ({ "weight_map": { tensor: shard file } }).
//
// The reader treats files as hostile: the header length is bounded by the file size and a cap,
// every offset is checked against the data size, each range against dtype × shape, and the ranges
// against each other, so a corrupt file gives a FormatError naming the file and the field.

import { preadFully, removeStaleTemps } from './fsutil.js';
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { FormatError, jsonSnippet, NotFoundError } from './errors.js';
import { parseJSONBytes, readJSONFile } from './json-file.js';

export interface STTensor {
  name: string;
  dtype: string; // 'F32' | 'F16' | 'BF16' | ...
  shape: number[];
  file: string;
  offset: number; // absolute byte offset in `file`
  bytes: number;
}

/** Bytes per element of every safetensors dtype we can size (sub-byte float types are not). */
export const ST_DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1,
  U16: 2, I16: 2, F16: 2, BF16: 2,
  U32: 4, I32: 4, F32: 4,
  U64: 8, I64: 8, F64: 8,
};

/** Largest JSON header we accept (the reference implementation uses the same limit). */
export const MAX_HEADER_BYTES = 100 << 20;

export const ST_SINGLE_FILE = 'model.safetensors';
export const ST_INDEX_FILE = 'model.safetensors.index.json';

// ---------------------------------------------------------------------------------------------
// low-level I/O

/** Reads exactly `length` bytes at `position` of `fd` into dst[dstOffset..]; FormatError on EOF. */
export function readFully(fd: number, file: string, field: string, position: number, dst: Uint8Array,
  dstOffset: number, length: number): void {
  preadFully(fd, dst, dstOffset, length, position, (pos) => new FormatError(file, field, `unexpected end of file at offset ${pos}`));
}

function openForRead(path: string, what: string): number {
  try {
    return fs.openSync(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(path, what);
    throw e;
  }
}

/** Reads the bytes of `t` into dst[dstOffset..]. Uses `fd` (open on t.file) when given. */
export function readSafetensorsData(t: STTensor, dst: Uint8Array, dstOffset = 0, fd?: number): void {
  if (!Number.isInteger(dstOffset) || dstOffset < 0 || dstOffset + t.bytes > dst.length) {
    throw new RangeError(`tensor '${t.name}': ${t.bytes} bytes do not fit at offset ${dstOffset} of a ${dst.length}-byte buffer`);
  }
  const own = fd === undefined;
  const f = own ? openForRead(t.file, 'safetensors file') : fd;
  try {
    readFully(f, t.file, `tensor '${t.name}' data`, t.offset, dst, dstOffset, t.bytes);
  } finally {
    if (own) fs.closeSync(f);
  }
}

// ---------------------------------------------------------------------------------------------
// reader

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Parses and validates the header of one safetensors file. */
export function readSafetensorsFile(path: string): { tensors: STTensor[]; metadata: Record<string, string> } {
  const fd = openForRead(path, 'safetensors file');
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw new FormatError(path, 'header length', `file is ${size} bytes, too short for the 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    readFully(fd, path, 'header length', 0, lenBuf, 0, 8);
    const n = lenBuf.readBigUInt64LE(0);
    if (n > BigInt(size - 8)) throw new FormatError(path, 'header length', `${n} bytes, but only ${size - 8} follow`);
    if (n > BigInt(MAX_HEADER_BYTES)) throw new FormatError(path, 'header length', `${n} bytes exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    const headerLen = Number(n);
    const hb = Buffer.alloc(headerLen);
    readFully(fd, path, 'header', 8, hb, 0, headerLen);
    const header = parseJSONBytes(path, 'header', hb);
    if (!isObject(header)) throw new FormatError(path, 'header', 'not a JSON object');
    return parseHeader(path, header, 8 + headerLen, size - 8 - headerLen);
  } finally {
    fs.closeSync(fd);
  }
}

function parseHeader(path: string, header: Record<string, unknown>, dataStart: number, dataSize: number):
  { tensors: STTensor[]; metadata: Record<string, string> } {
  const metadata: Record<string, string> = {};
  const tensors: STTensor[] = [];
  const ranges: { name: string; begin: number; end: number }[] = [];
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(v)) throw new FormatError(path, '__metadata__', 'not a JSON object');
      for (const [k, s] of Object.entries(v)) {
        if (typeof s !== 'string') throw new FormatError(path, `__metadata__.${k}`, `expected a string, got ${jsonSnippet(s)}`);
        metadata[k] = s;
      }
      continue;
    }
    const f = `tensor '${name}'`;
    if (!isObject(v)) throw new FormatError(path, f, 'not a JSON object');
    const { dtype, shape, data_offsets: offs } = v;
    if (typeof dtype !== 'string') throw new FormatError(path, `${f} dtype`, `expected a string, got ${jsonSnippet(dtype)}`);
    const esize = ST_DTYPE_BYTES[dtype];
    if (esize === undefined) throw new FormatError(path, `${f} dtype`, `unknown dtype '${dtype}'`);
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw new FormatError(path, `${f} shape`, `expected an array of non-negative integers, got ${jsonSnippet(shape)}`);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isCount)) {
      throw new FormatError(path, `${f} data_offsets`, `expected [begin, end] non-negative integers, got ${jsonSnippet(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end) throw new FormatError(path, `${f} data_offsets`, `begin ${begin} > end ${end}`);
    if (end > dataSize) throw new FormatError(path, `${f} data_offsets`, `[${begin}, ${end}) runs past the end of the data (${dataSize} bytes)`);
    let bytes = esize;
    for (const d of shape as number[]) bytes *= d;
    if (!Number.isSafeInteger(bytes)) throw new FormatError(path, `${f} shape`, `[${shape.join(', ')}] is too large`);
    if (end - begin !== bytes) {
      throw new FormatError(path, `${f} data_offsets`, `[${begin}, ${end}) is ${end - begin} bytes, but shape ` +
        `[${shape.join(', ')}] of ${dtype} needs ${bytes}`);
    }
    tensors.push({ name, dtype, shape: [...(shape as number[])], file: path, offset: dataStart + begin, bytes });
    if (bytes > 0) ranges.push({ name, begin, end });
  }
  ranges.sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < ranges.length; i++) {
    const a = ranges[i - 1]!, b = ranges[i]!;
    if (b.begin < a.end) {
      throw new FormatError(path, `tensor '${b.name}' data_offsets`, `[${b.begin}, ${b.end}) overlaps tensor '${a.name}' [${a.begin}, ${a.end})`);
    }
  }
  return { tensors, metadata };
}

function readIndex(indexPath: string): Map<string, string> {
  const index = readJSONFile(indexPath, MAX_HEADER_BYTES, 'index');
  if (!isObject(index)) throw new FormatError(indexPath, 'index', 'not a JSON object');
  const wm = index.weight_map;
  if (!isObject(wm)) throw new FormatError(indexPath, 'weight_map', 'missing or not a JSON object');
  const out = new Map<string, string>();
  for (const [name, file] of Object.entries(wm)) {
    if (typeof file !== 'string' || file === '') {
      throw new FormatError(indexPath, `weight_map['${name}']`, `expected a file name, got ${jsonSnippet(file)}`);
    }
    if (file !== nodePath.basename(file) || file === '.' || file === '..') {
      throw new FormatError(indexPath, `weight_map['${name}']`, `'${file}' is not a plain file name in the model directory`);
    }
    out.set(name, file);
  }
  if (out.size === 0) throw new FormatError(indexPath, 'weight_map', 'empty');
  return out;
}

/**
 * Tensors and metadata of a safetensors file, or of a model directory (sharded through
 * model.safetensors.index.json, else model.safetensors). Shard __metadata__ are merged.
 */
export function openSafetensors(pathOrDir: string): { tensors: Map<string, STTensor>; metadata: Record<string, string> } {
  let st: fs.Stats;
  try {
    st = fs.statSync(pathOrDir);
  } catch {
    throw new NotFoundError(pathOrDir, 'safetensors file or directory');
  }
  const tensors = new Map<string, STTensor>();
  const metadata: Record<string, string> = {};
  const add = (file: string): void => {
    const r = readSafetensorsFile(file);
    for (const t of r.tensors) {
      const prev = tensors.get(t.name);
      if (prev) throw new FormatError(file, `tensor '${t.name}'`, `also in ${prev.file}`);
      tensors.set(t.name, t);
    }
    Object.assign(metadata, r.metadata);
  };
  if (!st.isDirectory()) {
    add(pathOrDir);
    return { tensors, metadata };
  }
  const indexPath = nodePath.join(pathOrDir, ST_INDEX_FILE);
  if (fs.existsSync(indexPath)) {
    const wm = readIndex(indexPath);
    const files = [...new Set(wm.values())];
    for (const file of files) {
      const p = nodePath.join(pathOrDir, file);
      if (!fs.existsSync(p)) {
        const first = [...wm].find(([, f]) => f === file)![0];
        throw new FormatError(indexPath, `weight_map['${first}']`, `shard '${file}' does not exist`);
      }
    }
    for (const file of files) add(nodePath.join(pathOrDir, file));
    for (const [name, file] of wm) {
      const t = tensors.get(name);
      if (!t || nodePath.basename(t.file) !== file) {
        throw new FormatError(indexPath, `weight_map['${name}']`, t ? `tensor is in '${nodePath.basename(t.file)}', not '${file}'` : `tensor not found in '${file}'`);
      }
    }
    return { tensors, metadata };
  }
  const single = nodePath.join(pathOrDir, ST_SINGLE_FILE);
  if (!fs.existsSync(single)) throw new NotFoundError(`${single} (or ${ST_INDEX_FILE})`, 'safetensors weights');
  add(single);
  return { tensors, metadata };
}

// ---------------------------------------------------------------------------------------------
// writer

/** Writes a safetensors file atomically (temp file, fsync, rename); data in the given order. */
export function writeSafetensors(path: string,
  tensors: { name: string; dtype: string; shape: number[]; data: Uint8Array }[],
  metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = Object.create(null); // so a tensor may be named __proto__
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new FormatError(path, `__metadata__.${k}`, 'values must be strings');
    }
    header.__metadata__ = metadata;
  }
  let off = 0;
  for (const t of tensors) {
    const f = `tensor '${t.name}'`;
    if (t.name === '__metadata__' || Object.prototype.hasOwnProperty.call(header, t.name)) {
      throw new FormatError(path, f, 'duplicate or reserved name');
    }
    const esize = ST_DTYPE_BYTES[t.dtype];
    if (esize === undefined) throw new FormatError(path, `${f} dtype`, `unknown dtype '${t.dtype}'`);
    if (!t.shape.every((d) => isCount(d))) throw new FormatError(path, `${f} shape`, `[${t.shape.join(', ')}] is not non-negative integers`);
    const bytes = t.shape.reduce((a, d) => a * d, esize);
    if (t.data.length !== bytes) {
      throw new FormatError(path, `${f} data`, `${t.data.length} bytes, but shape [${t.shape.join(', ')}] of ${t.dtype} needs ${bytes}`);
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - ((8 + json.length) % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));

  removeStaleTemps(path); // `${path}.tmp-<pid>` of killed writers
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    writeAll(fd, len);
    writeAll(fd, json);
    for (const t of tensors) writeAll(fd, t.data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, path);
  } catch (e) {
    try { fs.closeSync(fd); } catch { /* already closed */ }
    try { fs.unlinkSync(tmp); } catch { /* ignore */ }
    throw e;
  }
}

function writeAll(fd: number, b: Uint8Array): void {
  let done = 0;
  while (done < b.length) done += fs.writeSync(fd, b, done, Math.min(b.length - done, 1 << 30));
}
