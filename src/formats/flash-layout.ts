// The flash layout: one GGUF file (general.alignment 4096) whose resident tensors are those of the
// standard conversion and whose FFN weights are stored per layer as ONE bundle tensor of row-column
// records, so that the neurons the engine needs can be fetched with few large O_DIRECT reads.
//
// Bundle tensor `blk.<l>.ffn_bundle`: GGML type I8 (24, one byte per element, so standard GGUF
// parsers accept it), dims [record_bytes, n_ff] (ne[0] = bytes of one record). Record i, in placement
// order (neuron perm[i] of the source; identity for now):
//   [gate row i | up row i | down column i | zero padding to a multiple of 512 bytes]
// Each part is `dim` elements of flashlm.bundle.dtype, quantized on its own (q8_0/q4_0 blocks of 32
// along dim). "down column i" is column i of the [dim × n_ff] down matrix (the weights neuron i's
// activation is multiplied by), i.e. a row of the transposed matrix; its q8_0 blocks therefore group
// different elements than the standard layout's down rows, and its bytes differ from them.
// Non-GLU sources (no ffn_gate) get records [up | down]; flashlm.bundle.parts says which.
// The data section starts at a multiple of 4096 and every tensor starts at a multiple of 4096, so
// record r of layer l sits at bundleOffset + r·record_bytes, 512-byte aligned: a run of k records is
// one aligned read of k·record_bytes.
//
// Metadata (all flashlm.* keys):
//   flashlm.layout.version u32 = 1;  flashlm.record_bytes u32;  flashlm.bundle.dtype u32 (GGML type);
//   flashlm.bundle.parts string "gate,up,down" | "up,down";  flashlm.bundle.part_offsets u32[],
//   flashlm.bundle.part_bytes u32[] (bytes within a record);  flashlm.perm.<l> u32[n_ff]
//   (placement → original neuron id);  flashlm.source.sha256 string (64 hex, see sourceDigest below);
//   checksum keys (flashlm.checksum.*): see checksum.ts.
//
// Writing is single-pass and atomic: GGUFWriter writes `${out}.flash-<pid>` (itself via a temp file)
// with zeroed placeholders for the digests (their sizes are known up front), the digests computed
// while the data streamed are then written over the placeholders in the header, the file is fsynced
// and renamed to `out`. Nothing is left at `out` unless it is complete.

import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import {
  BUNDLE_RE, CHECKSUM_ALGO, CK, DEFAULT_BLOCK_RECORDS, DIGEST_BYTES, bundleName, headerDigest, locateValue, newDigest,
} from './checksum.js';
import { GGML_QUANT_VERSION, LLAMA_FTYPE, targetType, type QuantName } from './convert.js';
import { FormatError, UnsupportedError } from './errors.js';
import { isSupportedType, rowBytes, tensorBytes, TensorType, typeName } from './ggml-types.js';
import { GGUFValueType as VT, GGUFWriter, readGGUF, type GGUFFile, type GGUFKV, type TensorInfo } from './gguf.js';
import { removeStaleTemps } from './fsutil.js';
import { dequantize, quantize, quantizedBytes } from './quant.js';
import type { ModelSource } from './source.js';

export const FLASH_LAYOUT_VERSION = 1;
export const FLASH_ALIGNMENT = 4096; // bytes: data offset and every tensor start (page / O_DIRECT friendly)
export const RECORD_ALIGN = 512; // bytes: logical block size O_DIRECT needs for offsets and lengths
export const GGML_I8 = 24; // GGML_TYPE_I8: the bundle tensor's element type (raw bytes)

export const FK = {
  version: 'flashlm.layout.version',
  recordBytes: 'flashlm.record_bytes',
  dtype: 'flashlm.bundle.dtype',
  parts: 'flashlm.bundle.parts',
  partOffsets: 'flashlm.bundle.part_offsets',
  partBytes: 'flashlm.bundle.part_bytes',
  perm: (l: number): string => `flashlm.perm.${l}`,
  sourceSha: 'flashlm.source.sha256',
} as const;

export interface FlashConvertOptions {
  quant: QuantName;
  /** output bytes done / total: once at the start, then after every chunk */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** metadata merged over the source's (e.g. tokenizer.ggml.* from HF files) */
  extraMetadata?: GGUFKV[];
  /** records per checksum block (default 1024) */
  blockRecords?: number;
}

export interface FlashConvertResult {
  recordBytes: number;
  dtype: number;
  nLayers: number;
  nFF: number;
  bytesWritten: number; // tensor data bytes
  sourceSha256: string;
}

/** Keys recomputed for the output rather than copied from the source (as convert.ts). */
const DROPPED_KEYS = new Set(['general.alignment', 'general.file_type', 'general.quantization_version']);
const FFN_RE = /^blk\.(\d+)\.ffn_(gate|up|down)\.weight$/;
const CHUNK_ELEMS = 1 << 20; // resident tensors: elements converted per step (4 MiB of f32)

type Item = { kind: 'tensor'; t: TensorInfo; type: number; bytes: number } | { kind: 'bundle'; layer: number; bytes: number };

/**
 * Writes `src` in the flash layout to `out`. Memory: the largest resident tensor, plus per layer the
 * source bytes of gate/up/down, down as f32 (dim·n_ff·4 B: 283 MB for 13B) and one block of records.
 */
export function convertToFlashLayout(src: ModelSource, out: string, opts: FlashConvertOptions): FlashConvertResult {
  const quant = opts.quant;
  if (LLAMA_FTYPE[quant] === undefined) throw new RangeError(`unknown quantization '${String(quant)}' (use f32, f16, bf16, q8_0 or q4_0)`);
  if (nodePath.resolve(out) === nodePath.resolve(src.path)) throw new Error(`convert: output ${out} is the source file`);
  const blockRecords = opts.blockRecords ?? DEFAULT_BLOCK_RECORDS;
  if (!Number.isSafeInteger(blockRecords) || blockRecords < 1) throw new RangeError(`blockRecords must be a positive integer, got ${blockRecords}`);
  for (const t of src.tensors) {
    if (!isSupportedType(t.type)) {
      throw new UnsupportedError(`${src.path}: tensor '${t.name}' has type ${typeName(t.type)}, which flashlm cannot convert`);
    }
  }
  const byName = new Map(src.tensors.map((t) => [t.name, t]));
  const tied = !byName.has('output.weight');

  // --- FFN geometry: every layer must have up and down (and gate iff layer 0 has it), same shapes
  const layers = [...new Set(src.tensors.map((t) => FFN_RE.exec(t.name)?.[1]).filter((x): x is string => x !== undefined))]
    .map(Number).sort((a, b) => a - b);
  if (layers.length === 0) throw new FormatError(src.path, 'tensor blk.0.ffn_up.weight', 'no FFN tensors: nothing to lay out for flash');
  layers.forEach((l, i) => { if (l !== i) throw new FormatError(src.path, `tensor blk.${i}.ffn_up.weight`, 'missing (layers are not contiguous)'); });
  const glu = byName.has('blk.0.ffn_gate.weight');
  const parts = glu ? ['gate', 'up', 'down'] : ['up', 'down'];
  const up0 = need(src, byName, 0, 'up');
  const [dim, nFF] = [up0.dims[0]!, up0.dims[1] ?? 1];
  for (const l of layers) {
    for (const p of parts) {
      const t = need(src, byName, l, p);
      const want = p === 'down' ? [nFF, dim] : [dim, nFF];
      if (t.dims.length !== 2 || t.dims[0] !== want[0] || t.dims[1] !== want[1]) {
        throw new FormatError(src.path, `tensor '${t.name}' dims`, `[${t.dims.join(', ')}], expected [${want.join(', ')}]`);
      }
    }
    if (!glu && byName.has(`blk.${l}.ffn_gate.weight`)) throw new FormatError(src.path, `tensor 'blk.${l}.ffn_gate.weight'`, 'layer 0 has no gate but this layer has one');
  }
  // parts are rows of length dim; q types need whole 32-element blocks, else F16 (as the standard convert)
  const dtype = targetType({ name: 'blk.0.ffn_up.weight', dims: [dim, nFF] }, quant, tied);
  const partBytes = rowBytes(dtype as TensorType, dim);
  const partOffsets = parts.map((_, i) => i * partBytes);
  const recordBytes = Math.ceil((parts.length * partBytes) / RECORD_ALIGN) * RECORD_ALIGN;
  const nBlocks = Math.ceil(nFF / blockRecords);

  // --- output plan: source order, the first FFN tensor of a layer becomes its bundle
  const items: Item[] = [];
  const emitted = new Set<number>();
  for (const t of src.tensors) {
    const m = FFN_RE.exec(t.name);
    if (m) {
      const l = Number(m[1]);
      if (!emitted.has(l)) items.push({ kind: 'bundle', layer: l, bytes: recordBytes * nFF });
      emitted.add(l);
      continue;
    }
    if (BUNDLE_RE.test(t.name)) throw new FormatError(src.path, `tensor '${t.name}'`, 'the source is already in the flash layout');
    const type = targetType(t, quant, tied);
    items.push({ kind: 'tensor', t, type, bytes: tensorBytes(type as TensorType, t.dims) });
  }
  const total = items.reduce((s, it) => s + it.bytes, 0);
  const residentNames = items.flatMap((it) => (it.kind === 'tensor' ? [it.t.name] : []));

  // --- metadata (placeholders for the digests; patched after the data is written)
  const meta = new Map<string, GGUFKV>();
  const set = (key: string, type: number, value: GGUFKV['value'], arrayType?: number): void => {
    meta.set(key, arrayType === undefined ? { key, type, value } : { key, type, value, arrayType });
  };
  for (const [k, kv] of src.metadata) if (!DROPPED_KEYS.has(k) && !k.startsWith('flashlm.checksum.') && k !== FK.sourceSha) meta.set(k, kv);
  for (const kv of opts.extraMetadata ?? []) if (!DROPPED_KEYS.has(kv.key)) meta.set(kv.key, kv);
  set('general.file_type', VT.UINT32, LLAMA_FTYPE[quant]);
  if (dtype === TensorType.Q8_0 || dtype === TensorType.Q4_0 || items.some((it) => it.kind === 'tensor' && (it.type === TensorType.Q8_0 || it.type === TensorType.Q4_0))) {
    set('general.quantization_version', VT.UINT32, GGML_QUANT_VERSION);
  }
  set(FK.version, VT.UINT32, FLASH_LAYOUT_VERSION);
  set(FK.recordBytes, VT.UINT32, recordBytes);
  set(FK.dtype, VT.UINT32, dtype);
  set(FK.parts, VT.STRING, parts.join(','));
  set(FK.partOffsets, VT.ARRAY, Uint32Array.from(partOffsets), VT.UINT32);
  set(FK.partBytes, VT.ARRAY, Uint32Array.from(parts.map(() => partBytes)), VT.UINT32);
  const identity = new Uint32Array(nFF);
  for (let i = 0; i < nFF; i++) identity[i] = i;
  for (const l of layers) set(FK.perm(l), VT.ARRAY, identity, VT.UINT32);
  set(FK.sourceSha, VT.STRING, '0'.repeat(64));
  set(CK.algo, VT.STRING, CHECKSUM_ALGO);
  set(CK.tensorNames, VT.ARRAY, residentNames, VT.STRING);
  set(CK.tensors, VT.ARRAY, new Uint8Array(residentNames.length * DIGEST_BYTES), VT.UINT8);
  set(CK.blockRecords, VT.UINT32, blockRecords);
  set(CK.header, VT.ARRAY, new Uint8Array(DIGEST_BYTES), VT.UINT8);
  for (const l of layers) set(CK.bundle(l), VT.ARRAY, new Uint8Array(nBlocks * DIGEST_BYTES), VT.UINT8);

  // --- data
  removeStaleTemps(out); // `${out}.flash-<pid>` (+ its `.tmp-<pid>`) of killed converts
  const part = `${out}.flash-${process.pid}`;
  const w = new GGUFWriter(part, { alignment: FLASH_ALIGNMENT });
  const srcDigests = new Map<string, string>(); // source tensor name → hex sha256 of its stored bytes
  const tensorDigests = new Uint8Array(residentNames.length * DIGEST_BYTES);
  const bundleDigests = layers.map(() => new Uint8Array(nBlocks * DIGEST_BYTES));
  try {
    for (const kv of meta.values()) w.addKV(kv.key, kv.type, kv.value, kv.arrayType);
    for (const it of items) {
      if (it.kind === 'tensor') w.addTensor(it.t.name, it.t.dims, it.type);
      else w.addTensor(bundleName(it.layer), [recordBytes, nFF], GGML_I8);
    }
    w.beginData();
    let done = 0;
    const progress = (n: number): void => { done += n; opts.onProgress?.(done, total); };
    opts.onProgress?.(0, total);
    // Source buffers are reused (slot 0: resident tensors; slots 0..2: gate/up/down): reading into
    // fresh memory costs a page fault per 4 KiB inside read() (measured: ~1.5× slower reads).
    const slots: Uint8Array[] = [];
    const readSrc = (t: TensorInfo, slot: number): Uint8Array => {
      if ((slots[slot]?.length ?? -1) < t.bytes) {
        slots[slot] = new Uint8Array(0); // let the old one go before allocating
        slots[slot] = new Uint8Array(t.bytes);
      }
      const data = slots[slot]!.subarray(0, t.bytes);
      src.readTensor(t.name, data, 0);
      srcDigests.set(t.name, newDigest().update(data).digest('hex'));
      return data;
    };
    const f32 = new Float32Array(CHUNK_ELEMS);
    const qBuf = new Uint8Array(CHUNK_ELEMS * 4);
    let ri = 0;
    for (const it of items) {
      if (it.kind === 'tensor') {
        const { t, type } = it;
        const data = readSrc(t, 0);
        const h = newDigest();
        const put = (b: Uint8Array): void => { h.update(b); w.writeData(b); progress(b.length); };
        if (type === t.type) {
          for (let off = 0; off < t.bytes; off += CHUNK_ELEMS * 4) put(data.subarray(off, Math.min(t.bytes, off + CHUNK_ELEMS * 4)));
        } else {
          const elems = t.dims.reduce((a, b) => a * b, 1);
          for (let e = 0; e < elems; e += CHUNK_ELEMS) {
            const n = Math.min(CHUNK_ELEMS, elems - e);
            put(quantize(type, dequantize(t.type, data.subarray(quantizedBytes(t.type, e)), n, f32), qBuf));
          }
        }
        tensorDigests.set(h.digest(), ri++ * DIGEST_BYTES);
        continue;
      }
      writeBundle(it.layer);
    }

    function writeBundle(l: number): void {
      const srcs = parts.map((p) => need(src, byName, l, p));
      const data = srcs.map((t, p) => readSrc(t, p));
      // down [dim rows × nFF cols] as f32, so its columns can be gathered
      const di = parts.length - 1;
      const downF = dequantize(srcs[di]!.type, data[di]!, dim * nFF);
      const block = new Uint8Array(blockRecords * recordBytes);
      const rowsF = new Float32Array(blockRecords * dim);
      for (let b = 0; b < nBlocks; b++) {
        const i0 = b * blockRecords;
        const k = Math.min(nFF, i0 + blockRecords) - i0;
        const out = block.subarray(0, k * recordBytes);
        out.fill(0); // padding bytes are zero
        const rows = rowsF.subarray(0, k * dim);
        for (let p = 0; p < parts.length; p++) {
          if (p === di) transposeCols(downF, dim, nFF, i0, k, rows);
          else dequantize(srcs[p]!.type, data[p]!.subarray(quantizedBytes(srcs[p]!.type, i0 * dim)), k * dim, rows);
          const q = quantize(dtype, rows); // k rows of dim, each a whole number of blocks
          for (let j = 0; j < k; j++) out.set(q.subarray(j * partBytes, (j + 1) * partBytes), j * recordBytes + partOffsets[p]!);
        }
        bundleDigests[l]!.set(newDigest().update(out).digest(), b * DIGEST_BYTES);
        w.writeData(out);
        progress(out.length);
      }
    }
    w.finish();
  } catch (e) {
    w.abort();
    throw e;
  }

  // --- patch the digests into the header, fsync, rename into place
  const sourceSha256 = sourceDigest(src.tensors, srcDigests);
  patchAndRename(part, out, meta, [
    [FK.sourceSha, Buffer.from(sourceSha256, 'latin1')],
    [CK.tensors, tensorDigests],
    ...layers.map((l): [string, Uint8Array] => [CK.bundle(l), bundleDigests[l]!]),
  ]);
  return { recordBytes, dtype, nLayers: layers.length, nFF, bytesWritten: total, sourceSha256 };
}

function need(src: ModelSource, byName: Map<string, TensorInfo>, l: number, p: string): TensorInfo {
  const name = `blk.${l}.ffn_${p}.weight`;
  const t = byName.get(name);
  if (!t) throw new FormatError(src.path, `tensor '${name}'`, 'missing');
  return t;
}

/** rows[j·dim + r] = m[r·cols + i0 + j] for j < k: k columns of the row-major [dim × cols] matrix m,
 * tiled by 64 rows so both sides stay in cache. */
function transposeCols(m: Float32Array, dim: number, cols: number, i0: number, k: number, rows: Float32Array): void {
  const T = 64;
  for (let r0 = 0; r0 < dim; r0 += T) {
    const r1 = Math.min(dim, r0 + T);
    for (let j = 0; j < k; j++) {
      const o = j * dim;
      for (let r = r0; r < r1; r++) rows[o + r] = m[r * cols + i0 + j]!;
    }
  }
}

/**
 * flashlm.source.sha256: identifies the source model without a second read of it. It is the sha256
 * of the text "<name> <type> <dim0>x<dim1>.. <sha256 hex of the tensor's stored bytes>\n" for every
 * source tensor in source order (metadata is not included). The per-tensor hashes are taken while
 * the converter reads each tensor anyway, so this costs hashing time (~1.4 GB/s), not extra I/O.
 */
export function sourceDigest(tensors: readonly TensorInfo[], digests: Map<string, string>): string {
  const h = newDigest();
  for (const t of tensors) h.update(`${t.name} ${typeName(t.type)} ${t.dims.join('x')} ${digests.get(t.name) ?? ''}\n`);
  return h.digest('hex');
}

/** Overwrites the placeholder values in the header of `path` (same sizes), then the header digest
 * (computed over the final header), then fsyncs. `meta` gives each patched key's type (and
 * CK.header's); exported for writers that rewrite a flash-layout file (predictors.ts). */
export function patchHeader(path: string, meta: Map<string, GGUFKV>, patches: [string, Uint8Array][]): void {
  const f = readGGUF(path);
  const fd = fs.openSync(path, 'r+');
  try {
    const head = new Uint8Array(f.dataOffset);
    fs.readSync(fd, head, 0, head.length, 0);
    const locate = (key: string, len: number): number => {
      const kv = meta.get(key)!;
      const at = locateValue(head, key, kv.type, kv.arrayType, len);
      if (at < 0) throw new Error(`flash layout: cannot locate metadata '${key}' to patch`);
      return at;
    };
    for (const [key, bytes] of patches) head.set(bytes, locate(key, bytes.length));
    const hAt = locate(CK.header, DIGEST_BYTES);
    head.set(headerDigest(head, hAt), hAt);
    fs.writeSync(fd, head, 0, head.length, 0);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** The last step of every flash-layout rewrite (convert, sparsify, place): patch the digests into
 * the complete temp file `part`, fsync, rename it over `out`; on failure `part` is removed. */
export function patchAndRename(part: string, out: string, meta: Map<string, GGUFKV>, patches: [string, Uint8Array][]): void {
  try {
    patchHeader(part, meta, patches);
    fs.renameSync(part, out);
  } catch (e) {
    try { fs.unlinkSync(part); } catch { /* ignore */ }
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// reading

export interface FlashLayer {
  /** absolute file offset of record 0 (a multiple of 512; of 4096 as written) */
  bundleOffset: number;
  nFF: number;
  /** placement → original neuron id */
  perm: Uint32Array;
}
export interface FlashLayout {
  version: number;
  recordBytes: number;
  dtype: number;
  dim: number;
  parts: string[];
  partOffsets: number[];
  partBytes: number[];
  layers: FlashLayer[];
}

/** True when the file declares the flash layout (flashlm.layout.version present). */
export function isFlashLayout(f: GGUFFile): boolean {
  return f.metadata.has(FK.version);
}

/** Layout facts of a flash-layout GGUF, every value checked against the file (FormatError naming the key). */
export function openFlashLayout(f: GGUFFile): FlashLayout {
  const bad = (key: string, detail: string): never => { throw new FormatError(f.path, `metadata key '${key}'`, detail); };
  const u32 = (key: string): number => {
    const kv = f.metadata.get(key);
    if (!kv) return bad(key, 'missing (not a flash-layout file? convert with --layout flash)');
    const v = Number(kv.value);
    if (kv.type === VT.ARRAY || kv.type === VT.STRING || !Number.isSafeInteger(v) || v < 0) return bad(key, `expected a non-negative integer, got ${String(kv.value)}`);
    return v;
  };
  const u32s = (key: string): Uint32Array => {
    const kv = f.metadata.get(key);
    if (!kv) return bad(key, 'missing');
    if (kv.type !== VT.ARRAY || !(kv.value instanceof Uint32Array)) return bad(key, 'expected a uint32 array');
    return kv.value;
  };
  const version = u32(FK.version);
  if (version !== FLASH_LAYOUT_VERSION) throw new UnsupportedError(`${f.path}: flash layout version ${version} is not supported (only ${FLASH_LAYOUT_VERSION})`);
  const recordBytes = u32(FK.recordBytes);
  if (recordBytes === 0 || recordBytes % RECORD_ALIGN !== 0) bad(FK.recordBytes, `${recordBytes} is not a positive multiple of ${RECORD_ALIGN}`);
  const dtype = u32(FK.dtype);
  if (!isSupportedType(dtype)) bad(FK.dtype, `unsupported part type ${typeName(dtype)}`);
  const partsKV = f.metadata.get(FK.parts);
  if (!partsKV || typeof partsKV.value !== 'string') return bad(FK.parts, 'missing or not a string');
  const parts = partsKV.value.split(',');
  if (parts.join(',') !== 'gate,up,down' && parts.join(',') !== 'up,down') bad(FK.parts, `'${partsKV.value}' (expected "gate,up,down" or "up,down")`);
  const partOffsets = [...u32s(FK.partOffsets)];
  const partBytes = [...u32s(FK.partBytes)];
  if (partOffsets.length !== parts.length) bad(FK.partOffsets, `${partOffsets.length} entries for ${parts.length} parts`);
  if (partBytes.length !== parts.length) bad(FK.partBytes, `${partBytes.length} entries for ${parts.length} parts`);
  const blk = typeBlock(dtype);
  const dim = (partBytes[0]! / blk.bytes) * blk.size;
  partBytes.forEach((b, i) => {
    if (b !== partBytes[0] || b === 0 || b % blk.bytes !== 0) bad(FK.partBytes, `part ${parts[i]} has ${b} bytes (parts must be equal whole ${typeName(dtype)} blocks)`);
    if (partOffsets[i]! + b > recordBytes) bad(FK.partOffsets, `part ${parts[i]} [${partOffsets[i]}, ${partOffsets[i]! + b}) runs past the ${recordBytes}-byte record`);
    if (i > 0 && partOffsets[i]! < partOffsets[i - 1]! + partBytes[i - 1]!) bad(FK.partOffsets, `part ${parts[i]} overlaps part ${parts[i - 1]}`);
  });
  const nLayers = f.metadata.has('llama.block_count') ? u32('llama.block_count') : f.tensors.filter((t) => BUNDLE_RE.test(t.name)).length;
  const layers: FlashLayer[] = [];
  for (let l = 0; l < nLayers; l++) {
    const name = bundleName(l);
    const t = f.tensorByName.get(name);
    if (!t) throw new FormatError(f.path, `tensor '${name}'`, 'missing');
    if (t.type !== GGML_I8 || t.dims.length !== 2 || t.dims[0] !== recordBytes) {
      throw new FormatError(f.path, `tensor '${name}'`, `expected type i8 with dims [${recordBytes}, n_ff], got ${typeName(t.type)} [${t.dims.join(', ')}]`);
    }
    if (t.offset % RECORD_ALIGN !== 0) throw new FormatError(f.path, `tensor '${name}' offset`, `${t.offset} is not ${RECORD_ALIGN}-byte aligned`);
    const nFF = t.dims[1]!;
    const perm = u32s(FK.perm(l));
    if (perm.length !== nFF) bad(FK.perm(l), `${perm.length} entries for n_ff ${nFF}`);
    const seen = new Uint8Array(nFF);
    for (let i = 0; i < nFF; i++) {
      const v = perm[i]!;
      if (v >= nFF || seen[v]) bad(FK.perm(l), `entry ${i} = ${v} is ${v >= nFF ? 'out of range' : 'a duplicate'} (must be a permutation of 0..${nFF - 1})`);
      seen[v] = 1;
    }
    layers.push({ bundleOffset: t.offset, nFF, perm });
  }
  return { version, recordBytes, dtype, dim, parts, partOffsets, partBytes, layers };
}

function typeBlock(t: number): { size: number; bytes: number } {
  const size = t === TensorType.Q8_0 || t === TensorType.Q4_0 ? 32 : 1;
  return { size, bytes: rowBytes(t as TensorType, size) };
}

/** Lines for `flashlm inspect` describing the flash layout, or [] for a standard file. */
export function describeFlashLayout(f: GGUFFile): string[] {
  if (!isFlashLayout(f)) return [];
  const L = openFlashLayout(f);
  const nFF = L.layers[0]?.nFF ?? 0;
  const parts = L.parts.map((p, i) => `${p}@${L.partOffsets[i]}+${L.partBytes[i]}`).join(' ');
  const used = L.partBytes.reduce((a, b) => a + b, 0);
  const identity = L.layers.every((l) => l.perm.every((v, i) => v === i));
  const src = f.metadata.get(FK.sourceSha)?.value;
  const blk = f.metadata.get(CK.blockRecords)?.value;
  return [
    `flash layout  v${L.version}: ${L.layers.length} layers × ${nFF} records of ${L.recordBytes} B (${typeName(L.dtype)} parts, dim ${L.dim}; ${parts}; ${(100 * (1 - used / L.recordBytes)).toFixed(1)}% padding)`,
    `  bundle      ${(nFF * L.recordBytes / 1e6).toFixed(1)} MB per layer, first at offset ${L.layers[0]?.bundleOffset ?? 0}; permutation ${identity ? 'identity' : 'placed'}`,
    `  checksums   ${String(f.metadata.get(CK.algo)?.value ?? 'none')}${blk !== undefined ? `, bundle blocks of ${String(blk)} records` : ''}; source sha256 ${typeof src === 'string' ? src.slice(0, 16) + '…' : 'unknown'}`,
  ];
}

