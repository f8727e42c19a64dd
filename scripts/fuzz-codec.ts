// Encoders and walkers the fuzz harness (scripts/fuzz.ts) builds its inputs with. Deliberately
// independent of src/formats' writers: they may write what the writers refuse to (huge counts,
// overlapping tensors, any value type anywhere), and they record where each section of a file starts
// so that inputs can be cut at every section boundary.

import { GGUFValueType as VT, type GGUFKV, type GGUFValue } from '../src/formats/gguf-types.js';

// ---------------------------------------------------------------------------------------------
// GGUF

export interface GTensor { name: string; dims: (number | bigint)[]; type: number; rel: bigint }
export interface GModel {
  version: number;
  kvs: GGUFKV[];
  tensors: GTensor[];
  alignment: number;
  data: Uint8Array; // the data section (after the aligned header)
}

/** Positions in an encoded GGUF: section boundaries, and u32 / u64 fields a mutator may overwrite. */
export interface GLayout { boundaries: number[]; u32: number[]; u64: number[] }

class Out {
  private chunks: Uint8Array[] = [];
  len = 0;
  layout: GLayout = { boundaries: [], u32: [], u64: [] };
  bytes(b: Uint8Array): void { this.chunks.push(b); this.len += b.length; }
  u32(v: number): void {
    const b = Buffer.alloc(4); b.writeUInt32LE(v >>> 0); this.layout.u32.push(this.len); this.bytes(b);
  }
  u64(v: number | bigint): void {
    const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v))); this.layout.u64.push(this.len); this.bytes(b);
  }
  mark(): void { this.layout.boundaries.push(this.len); }
  str(s: string | Uint8Array): void {
    const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
    this.u64(b.length); this.bytes(b);
  }
  concat(): Buffer { return Buffer.concat(this.chunks); }
}

const TYPED_VT: [Function, number][] = [
  [Uint8Array, VT.UINT8], [Int8Array, VT.INT8], [Uint16Array, VT.UINT16], [Int16Array, VT.INT16],
  [Uint32Array, VT.UINT32], [Int32Array, VT.INT32], [Float32Array, VT.FLOAT32], [BigUint64Array, VT.UINT64],
  [BigInt64Array, VT.INT64], [Float64Array, VT.FLOAT64],
];

/** The GGUF element type a JS array value encodes as. */
export function arrayTypeOf(v: unknown): number {
  for (const [c, t] of TYPED_VT) if (v instanceof (c as new () => unknown)) return t;
  if (Array.isArray(v) && v.length > 0 && typeof v[0] !== 'string') return VT.ARRAY;
  return VT.STRING;
}

function scalar(o: Out, type: number, v: unknown): void {
  const n = typeof v === 'bigint' ? v : typeof v === 'boolean' ? (v ? 1 : 0) : Number(v);
  const b = Buffer.alloc([1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8][type]!);
  const num = typeof n === 'bigint' ? Number(n) : n;
  const int = (bits: number, signed: boolean): bigint => {
    const x = typeof n === 'bigint' ? n : BigInt(Number.isFinite(num) ? Math.trunc(num) : 0);
    return signed ? BigInt.asIntN(bits, x) : BigInt.asUintN(bits, x);
  };
  switch (type) {
    case VT.UINT8: case VT.BOOL: b.writeUInt8(Number(int(8, false))); break;
    case VT.INT8: b.writeInt8(Number(int(8, true))); break;
    case VT.UINT16: b.writeUInt16LE(Number(int(16, false))); break;
    case VT.INT16: b.writeInt16LE(Number(int(16, true))); break;
    case VT.UINT32: b.writeUInt32LE(Number(int(32, false))); break;
    case VT.INT32: b.writeInt32LE(Number(int(32, true))); break;
    case VT.FLOAT32: b.writeFloatLE(num); break;
    case VT.UINT64: b.writeBigUInt64LE(int(64, false)); break;
    case VT.INT64: b.writeBigInt64LE(int(64, true)); break;
    case VT.FLOAT64: b.writeDoubleLE(num); break;
    default: throw new Error(`fuzz codec: not a scalar type ${type}`);
  }
  if (type === VT.UINT32 || type === VT.INT32) o.layout.u32.push(o.len);
  if (type === VT.UINT64 || type === VT.INT64) o.layout.u64.push(o.len);
  o.bytes(b);
}

function value(o: Out, type: number, v: unknown, arrayType: number | undefined, depth: number): void {
  if (!(type >= 0 && type <= 12)) { // unknown type: whatever raw bytes the value holds
    if (v instanceof Uint8Array) o.bytes(v);
    return;
  }
  if (type === VT.STRING) return o.str(v instanceof Uint8Array ? v : String(v));
  if (type !== VT.ARRAY) return scalar(o, type, v);
  const a = (v ?? []) as ArrayLike<unknown>;
  const et = arrayType ?? arrayTypeOf(v);
  o.u32(et);
  o.u64(a.length);
  if (depth < 3) o.mark();
  for (let i = 0; i < a.length; i++) value(o, et, a[i], et === VT.ARRAY ? arrayTypeOf(a[i]) : undefined, depth + 1);
}

export const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Encodes a GGUF model; `counts` overrides the tensor / KV counts written in the header. */
export function encodeGGUF(m: GModel, counts?: { tensors?: bigint; kvs?: bigint }): { bytes: Buffer; layout: GLayout } {
  const o = new Out();
  o.bytes(Buffer.from('GGUF', 'latin1'));
  o.mark();
  o.u32(m.version);
  o.mark();
  o.u64(counts?.tensors ?? BigInt(m.tensors.length));
  o.u64(counts?.kvs ?? BigInt(m.kvs.length));
  o.mark();
  for (const kv of m.kvs) {
    o.str(kv.key);
    o.mark();
    o.u32(kv.type);
    value(o, kv.type, kv.value, kv.arrayType, 0);
    o.mark();
  }
  for (const t of m.tensors) {
    o.str(t.name);
    o.u32(t.dims.length);
    for (const d of t.dims) o.u64(d);
    o.u32(t.type);
    o.u64(t.rel);
    o.mark();
  }
  const start = alignUp(o.len, m.alignment);
  o.bytes(new Uint8Array(start - o.len));
  o.mark();
  for (const t of m.tensors) if (t.rel < BigInt(m.data.length)) o.layout.boundaries.push(start + Number(t.rel));
  o.bytes(m.data);
  o.mark();
  return { bytes: o.concat(), layout: o.layout };
}

// ---------------------------------------------------------------------------------------------
// JSON with raw fragments (deep nesting, numbers JSON.stringify cannot write, invalid escapes)

export interface RawJSON { __raw: string }
export const raw = (s: string): RawJSON => ({ __raw: s });
const isRaw = (v: unknown): v is RawJSON => typeof v === 'object' && v !== null && typeof (v as RawJSON).__raw === 'string';

/** JSON.stringify that writes RawJSON leaves verbatim (iterative enough for the trees the harness builds). */
export function stringify(v: unknown): string {
  if (isRaw(v)) return v.__raw;
  if (Array.isArray(v)) return `[${v.map(stringify).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}:${stringify(x)}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

/** A deep copy of a JSON tree (structuredClone keeps RawJSON leaves as plain objects, which is fine). */
export const clone = <T>(v: T): T => structuredClone(v);

// ---------------------------------------------------------------------------------------------
// safetensors

export interface STLayout { boundaries: number[]; headerLenAt: number }

/** u64 header length | header text (padded with spaces to 8) | data. */
export function encodeSafetensors(headerText: Uint8Array, data: Uint8Array, lenOverride?: bigint): { bytes: Buffer; layout: STLayout } {
  const pad = (8 - ((8 + headerText.length) % 8)) % 8;
  const h = Buffer.concat([headerText, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt.asUintN(64, lenOverride ?? BigInt(h.length)));
  return { bytes: Buffer.concat([len, h, data]), layout: { boundaries: [0, 8, 8 + h.length, 8 + h.length + data.length], headerLenAt: 0 } };
}

export type { GGUFKV, GGUFValue };
