// Sparse-mode data stored IN a flash-layout model file (one GGUF): per-layer activation thresholds
// and low-rank activation predictors (LLM in a flash §3.1), written by `flashlm sparsify`.
//
// Tensors, per layer l, placed right BEFORE `blk.l.ffn_bundle` in file order (so the layer's
// predictor and its records are neighbours on disk and in naive mode's per-layer read):
//   blk.l.pred_a    GGUF dims [dim, rank]   q8_0 or f32   A [rank × dim] row-major: h = A·x
//   blk.l.pred_b    GGUF dims [rank, ffn]   q8_0 or f32   B [ffn × rank] row-major: s = B·h
//   blk.l.pred_thr  GGUF dims [ffn, 1]      f32           per-neuron cutoff: neuron j predicted
//                                                         active ⇔ s_j > thr_j (bias folded in)
// or, predictor kind 'gate' (flashlm.predictor.kind), a quantized copy of the gate itself:
//   blk.l.pred_gate GGUF dims [dim, ffn]    q4_0, q8_0 or f32   W̃_gate [ffn × dim]: ĝ = W̃·x
//   blk.l.pred_thr  as above: neuron j predicted ⇔ score_j > thr_j, score = |act(ĝ_j)| (rule 'abs')
//                   or ĝ_j (rule 'gate') — the exact rule applied to an approximate gate
// (pred_thr is written 2-D [ffn, 1] because the sparse-mode loader (model/llama-load.ts) expects that
// shape; a loader asking for [ffn] accepts it too (trailing 1s). Readers here accept both.)
// x is the layer's FFN input (RMS-normed hidden state). Rows of B and entries of thr are indexed by
// the ORIGINAL neuron id (as the calibration codes); record i of the bundle is neuron perm[i].
// q8_0 needs whole 32-element blocks along each row: dim % 32 == 0 and rank % 32 == 0.
//
// Metadata (flashlm.sparse.* / flashlm.predictor.*):
//   flashlm.sparse.version u32 = 1;  flashlm.sparse.sparsity f32 (target fraction of inactive
//   (token, neuron) pairs on the calibration data);  flashlm.sparse.threshold f32[nLayers]
//   (t_l: a neuron is active when |act(gate·x)| ≥ t_l, or with rule 'gate' when gate·x ≥ t_l);
//   flashlm.sparse.rule string 'abs'|'gate' (absent: 'abs');  flashlm.predictor.rank u32[nLayers];
//   flashlm.predictor.type string 'q8_0'|'f32';  flashlm.predictor.recall / .precision /
//   .over_read f32[nLayers] (held-out calibration tokens, for inspect);
//   flashlm.predictor.model_identity string (calibration's modelIdentity = this file's);
//   flashlm.predictor.calibration_tokens u32;  flashlm.predictor.kind string 'lowrank'|'gate'
//   (absent: 'lowrank'; with 'gate' the ranks are 0 and the type may also be 'q4_0').
//
// Rewriting: every tensor of the input is copied byte for byte (no requantization) while its digest
// is checked against the input's checksums (a corrupt input is refused with ChecksumError rather
// than re-blessed with fresh digests); old pred tensors and keys are dropped; the pred tensors join
// flashlm.checksum.tensor_names/tensors; bundle block digests are copied; the header digest is
// recomputed. Atomic: GGUFWriter's temp file → `${out}.sparsify-<pid>`, digests patched, fsync,
// rename over `out` (which may be the input: it is replaced only when the new file is complete).

import * as fs from 'node:fs';
import { BUNDLE_RE, CK, ChecksumError, DIGEST_BYTES, bundleName, bytesEqual, hex, newDigest, runChecks } from './checksum.js';
import { modelIdentity } from './calibration.js';
import { FormatError, UnsupportedError } from './errors.js';
import { openFlashLayout, patchAndRename, isFlashLayout, type FlashLayout } from './flash-layout.js';
import { TensorType } from './ggml-types.js';
import { GGUFValueType as VT, GGUFWriter, readGGUF, readTensorData, type GGUFFile, type GGUFKV, type TensorInfo } from './gguf.js';
import { preadFully, removeStaleTemps } from './fsutil.js';
import { dequantize, quantize } from './quant.js';

export const SPARSE_VERSION = 1;

export const PK = {
  version: 'flashlm.sparse.version',
  sparsity: 'flashlm.sparse.sparsity',
  threshold: 'flashlm.sparse.threshold',
  rule: 'flashlm.sparse.rule',
  rank: 'flashlm.predictor.rank',
  type: 'flashlm.predictor.type',
  recall: 'flashlm.predictor.recall',
  precision: 'flashlm.predictor.precision',
  overRead: 'flashlm.predictor.over_read',
  identity: 'flashlm.predictor.model_identity',
  calibTokens: 'flashlm.predictor.calibration_tokens',
  kind: 'flashlm.predictor.kind',
} as const;

export const predName = (l: number, part: 'a' | 'b' | 'thr' | 'gate'): string => `blk.${l}.pred_${part}`;
export const PRED_RE = /^blk\.(\d+)\.pred_(a|b|thr|gate)$/;

/** q4_0 only for kind 'gate' (a low-rank factor's rounding error compounds through two products). */
export type PredType = 'q8_0' | 'f32' | 'q4_0';
/** 'lowrank': h = A·x, s = B·h (LLM in a flash §3.1); 'gate': a quantized copy of W_gate, ĝ = W̃·x. */
export type PredictorKind = 'lowrank' | 'gate';

/** The calibration data was collected on a different model (weights) than the one given. */
export class CalibrationMismatchError extends Error {
  constructor(readonly calibrationIdentity: string, readonly modelIdentity: string, what: string) {
    super(`${what}: calibration was made on another model (calibration model identity ${calibrationIdentity}, this model ${modelIdentity}); run \`flashlm calibrate\` on this model again`);
    this.name = 'CalibrationMismatchError';
  }
}

/** Predictor data that does not fit the model (shapes, rank, values). */
export class PredictorFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PredictorFormatError';
  }
}

export interface PredictorLayerData {
  a: Float32Array; // [rank × dim] (kind 'gate': unused, empty)
  b: Float32Array; // [ffn × rank] (kind 'gate': unused, empty)
  gate?: Float32Array; // kind 'gate': W_gate [ffn × dim], row j = neuron j (quantized to predType when written)
  thr: Float32Array; // [ffn] per-neuron score cutoff (predictorThresholds())
  rank: number; // kind 'gate': 0
  recall: number; // held-out figures (stored for inspect)
  precision: number;
  overRead: number;
}

export interface PredictorAddition {
  layers: PredictorLayerData[];
  sparsity: number;
  thresholds: Float32Array; // [nLayers] t_l on |act(gate)| (rule 'abs') or on gate·x (rule 'gate')
  rule?: 'abs' | 'gate'; // default 'abs'
  predType: PredType;
  kind?: PredictorKind; // default 'lowrank'
  calibration: { path: string; tokens: number; files: number; identity: string };
}

export interface WriteResult {
  out: string;
  bytesWritten: number; // tensor data bytes
  predictorBytes: number; // of those, the pred tensors'
  seconds: number;
}

const typeId = (t: PredType): number => (t === 'q8_0' ? TensorType.Q8_0 : t === 'q4_0' ? TensorType.Q4_0 : TensorType.F32);
const CHUNK = 8 << 20; // bytes per read while copying resident tensors

type Item = { kind: 'copy'; t: TensorInfo } | { kind: 'pred'; name: string; dims: number[]; type: number; data: () => Uint8Array };

/**
 * Copies the flash-layout file `flashPath` to `outPath` with `add`'s thresholds and predictors
 * (replacing any already there). onProgress: output data bytes done / total.
 * Memory: one bundle checksum block (block_records · record_bytes, 16 MB for 13B q8_0) and one
 * layer's quantized predictor at a time, besides `add` itself.
 */
export function writeWithPredictors(flashPath: string, outPath: string, add: PredictorAddition, onProgress?: (doneBytes: number, totalBytes: number) => void): WriteResult {
  const t0 = performance.now();
  const f = readGGUF(flashPath);
  if (!isFlashLayout(f)) throw new PredictorFormatError(`${flashPath} is not a flash-layout file (make one with: flashlm convert SRC -o OUT.gguf --quant q8_0 --layout flash)`);
  const L = openFlashLayout(f);
  const nLayers = L.layers.length;
  const dim = L.dim;
  const nFF = L.layers[0]?.nFF ?? 0;
  const identity = modelIdentity(f);
  if (add.calibration.identity !== identity) throw new CalibrationMismatchError(add.calibration.identity, identity, flashPath);
  checkAddition(add, nLayers, dim, nFF);
  // the input's own digests: header now (throws ChecksumError), data while copying
  const checks = runChecks(f);
  if (!checks) throw new FormatError(flashPath, `metadata key '${CK.algo}'`, 'missing: this file has no flashlm checksums (convert it again with --layout flash)');
  const oldNames = f.metadata.get(CK.tensorNames)!.value as string[];
  const oldDigests = f.metadata.get(CK.tensors)!.value as Uint8Array;
  const oldIndex = new Map(oldNames.map((n, i) => [n, i]));
  const blockRecords = Number(f.metadata.get(CK.blockRecords)?.value);
  if (!Number.isSafeInteger(blockRecords) || blockRecords < 1) throw new FormatError(flashPath, `metadata key '${CK.blockRecords}'`, 'missing or not a positive integer');

  // --- output plan: input order, old pred tensors dropped, the new ones before each bundle
  const pt = typeId(add.predType);
  const items: Item[] = [];
  for (const t of f.tensors) {
    if (PRED_RE.test(t.name)) continue;
    const m = BUNDLE_RE.exec(t.name);
    if (m) {
      const l = Number(m[1]);
      const P = add.layers[l]!;
      if (add.kind === 'gate') {
        items.push({ kind: 'pred', name: predName(l, 'gate'), dims: [dim, nFF], type: pt, data: () => quantize(pt, P.gate!) });
      } else {
        items.push(
          { kind: 'pred', name: predName(l, 'a'), dims: [dim, P.rank], type: pt, data: () => quantize(pt, P.a) },
          { kind: 'pred', name: predName(l, 'b'), dims: [P.rank, nFF], type: pt, data: () => quantize(pt, P.b) },
        );
      }
      items.push({ kind: 'pred', name: predName(l, 'thr'), dims: [nFF, 1], type: TensorType.F32, data: () => new Uint8Array(P.thr.buffer, P.thr.byteOffset, P.thr.byteLength) });
    } else if (!oldIndex.has(t.name)) {
      throw new FormatError(flashPath, `tensor '${t.name}'`, `has no checksum in '${CK.tensorNames}'`);
    }
    items.push({ kind: 'copy', t });
  }
  const bytesOf = (it: Item): number => (it.kind === 'copy' ? it.t.bytes : predBytes(it.type, it.dims));
  const total = items.reduce((s, it) => s + bytesOf(it), 0);
  const residentNames = items.flatMap((it) => (it.kind === 'pred' ? [it.name] : BUNDLE_RE.test(it.t.name) ? [] : [it.t.name]));

  // --- metadata: the input's, checksum placeholders renewed, sparse/predictor keys replaced
  const meta = new Map<string, GGUFKV>();
  const set = (key: string, type: number, value: GGUFKV['value'], arrayType?: number): void => {
    meta.set(key, arrayType === undefined ? { key, type, value } : { key, type, value, arrayType });
  };
  for (const [k, kv] of f.metadata) {
    if (k.startsWith('flashlm.sparse.') || k.startsWith('flashlm.predictor.')) continue;
    meta.set(k, kv);
  }
  set(CK.tensorNames, VT.ARRAY, residentNames, VT.STRING);
  set(CK.tensors, VT.ARRAY, new Uint8Array(residentNames.length * DIGEST_BYTES), VT.UINT8);
  set(CK.header, VT.ARRAY, new Uint8Array(DIGEST_BYTES), VT.UINT8);
  set(PK.version, VT.UINT32, SPARSE_VERSION);
  set(PK.sparsity, VT.FLOAT32, add.sparsity);
  set(PK.threshold, VT.ARRAY, Float32Array.from(add.thresholds), VT.FLOAT32);
  set(PK.rule, VT.STRING, add.rule ?? 'abs');
  set(PK.rank, VT.ARRAY, Uint32Array.from(add.layers.map((p) => p.rank)), VT.UINT32);
  set(PK.type, VT.STRING, add.predType);
  set(PK.recall, VT.ARRAY, Float32Array.from(add.layers.map((p) => p.recall)), VT.FLOAT32);
  set(PK.precision, VT.ARRAY, Float32Array.from(add.layers.map((p) => p.precision)), VT.FLOAT32);
  set(PK.overRead, VT.ARRAY, Float32Array.from(add.layers.map((p) => p.overRead)), VT.FLOAT32);
  set(PK.identity, VT.STRING, identity);
  set(PK.calibTokens, VT.UINT32, add.calibration.tokens);
  set(PK.kind, VT.STRING, add.kind ?? 'lowrank');

  // --- data
  removeStaleTemps(outPath); // `${outPath}.sparsify-<pid>` (+ its `.tmp-<pid>`) of killed runs
  const part = `${outPath}.sparsify-${process.pid}`;
  const w = new GGUFWriter(part, { alignment: f.alignment });
  const digests = new Uint8Array(residentNames.length * DIGEST_BYTES);
  let predictorBytes = 0;
  const fd = fs.openSync(flashPath, 'r');
  try {
    for (const kv of meta.values()) w.addKV(kv.key, kv.type, kv.value, kv.arrayType);
    for (const it of items) {
      if (it.kind === 'copy') w.addTensor(it.t.name, it.t.dims, it.t.type);
      else w.addTensor(it.name, it.dims, it.type);
    }
    w.beginData();
    let done = 0;
    onProgress?.(0, total);
    const put = (b: Uint8Array): void => { w.writeData(b); done += b.length; onProgress?.(done, total); };
    const eof = (t: TensorInfo) => (pos: number) => new FormatError(flashPath, `tensor '${t.name}' data`, `unexpected end of file at offset ${pos}`);
    let buf = new Uint8Array(0);
    const read = (t: TensorInfo, off: number, len: number): Uint8Array => {
      if (buf.length < len) buf = new Uint8Array(len);
      preadFully(fd, buf, 0, len, t.offset + off, eof(t));
      return buf.subarray(0, len);
    };
    let ri = 0;
    for (const it of items) {
      if (it.kind === 'pred') {
        const bytes = it.data();
        digests.set(newDigest().update(bytes).digest(), ri++ * DIGEST_BYTES);
        predictorBytes += bytes.length;
        put(bytes);
        continue;
      }
      const t = it.t;
      const bm = BUNDLE_RE.exec(t.name);
      if (bm) {
        // block by block, each checked against the input's digest (copied unchanged)
        const layer = Number(bm[1]);
        const recordBytes = t.dims[0]!, n = t.dims[1] ?? 1;
        const want = f.metadata.get(CK.bundle(layer))?.value;
        const nBlocks = Math.ceil(n / blockRecords);
        if (!(want instanceof Uint8Array) || want.length !== nBlocks * DIGEST_BYTES) throw new FormatError(flashPath, `metadata key '${CK.bundle(layer)}'`, `missing or not ${nBlocks} digests`);
        for (let b = 0; b < nBlocks; b++) {
          const first = b * blockRecords;
          const len = (Math.min(n, first + blockRecords) - first) * recordBytes;
          const data = read(t, first * recordBytes, len);
          const got = new Uint8Array(newDigest().update(data).digest());
          const exp = want.subarray(b * DIGEST_BYTES, (b + 1) * DIGEST_BYTES);
          if (!bytesEqual(got, exp)) {
            throw new ChecksumError(flashPath, { kind: 'bundle', tensor: t.name, layer, block: b, firstRecord: first, offset: t.offset + first * recordBytes, bytes: len, expected: hex(exp), actual: hex(got) });
          }
          put(data);
        }
        continue;
      }
      const h = newDigest();
      for (let off = 0; off < t.bytes; off += CHUNK) {
        const data = read(t, off, Math.min(CHUNK, t.bytes - off));
        h.update(data);
        put(data);
      }
      const got = new Uint8Array(h.digest());
      const oi = oldIndex.get(t.name)!;
      const exp = oldDigests.subarray(oi * DIGEST_BYTES, (oi + 1) * DIGEST_BYTES);
      if (!bytesEqual(got, exp)) throw new ChecksumError(flashPath, { kind: 'tensor', tensor: t.name, offset: t.offset, bytes: t.bytes, expected: hex(exp), actual: hex(got) });
      digests.set(got, ri++ * DIGEST_BYTES);
    }
    w.finish();
  } catch (e) {
    w.abort();
    throw e;
  } finally {
    fs.closeSync(fd);
  }
  patchAndRename(part, outPath, meta, [[CK.tensors, digests]]);
  return { out: outPath, bytesWritten: total, predictorBytes, seconds: (performance.now() - t0) / 1000 };
}

function predBytes(type: number, dims: number[]): number {
  const n = dims.reduce((a, b) => a * b, 1);
  return type === TensorType.Q8_0 ? (n / 32) * 34 : type === TensorType.Q4_0 ? (n / 32) * 18 : n * 4;
}

function checkAddition(add: PredictorAddition, nLayers: number, dim: number, nFF: number): void {
  const bad = (msg: string): never => { throw new PredictorFormatError(`predictors: ${msg}`); };
  const kind = add.kind ?? 'lowrank';
  if (kind !== 'lowrank' && kind !== 'gate') bad(`kind '${String(kind)}' (lowrank or gate)`);
  if (add.predType !== 'q8_0' && add.predType !== 'f32' && !(add.predType === 'q4_0' && kind === 'gate')) bad(`type '${String(add.predType)}' (use q8_0 or f32${kind === 'gate' ? ' or q4_0' : ''})`);
  if (!(add.sparsity >= 0 && add.sparsity < 1)) bad(`sparsity ${add.sparsity} not in [0, 1)`);
  if (add.layers.length !== nLayers) bad(`${add.layers.length} layers, the model has ${nLayers}`);
  if (add.thresholds.length !== nLayers) bad(`${add.thresholds.length} thresholds, the model has ${nLayers} layers`);
  if (!Number.isSafeInteger(add.calibration.tokens) || add.calibration.tokens < 0 || add.calibration.tokens > 0xffffffff) bad(`calibration tokens ${add.calibration.tokens}`);
  const rule = add.rule ?? 'abs';
  if (rule !== 'abs' && rule !== 'gate') bad(`rule '${String(rule)}' (abs or gate)`);
  // abs: |act| ≥ t needs t ≥ 0; gate: any finite pre-activation cutoff
  add.thresholds.forEach((t, l) => { if (rule === 'abs' ? !(t >= 0) : !Number.isFinite(t)) bad(`layer ${l}: threshold ${t} is not ${rule === 'abs' ? '≥ 0' : 'finite'}`); });
  if (add.predType !== 'f32' && dim % 32 !== 0) bad(`${add.predType} predictors need dim % 32 == 0 (dim ${dim}); use f32`);
  if (kind === 'gate') {
    add.layers.forEach((p, l) => {
      if (p.rank !== 0) bad(`layer ${l}: a gate predictor has rank 0, got ${p.rank}`);
      if (!p.gate || p.gate.length !== nFF * dim) bad(`layer ${l}: gate has ${p.gate?.length ?? 0} values, want ffn·dim = ${nFF * dim}`);
      if (p.thr.length !== nFF) bad(`layer ${l}: thr has ${p.thr.length} values, want ffn = ${nFF}`);
      for (const v of p.thr) if (Number.isNaN(v)) bad(`layer ${l}: thr holds NaN`);
    });
    return;
  }
  add.layers.forEach((p, l) => {
    const r = p.rank;
    if (!Number.isInteger(r) || r < 1 || r > dim) bad(`layer ${l}: rank ${r} not in 1..${dim}`);
    if (add.predType === 'q8_0' && r % 32 !== 0) bad(`layer ${l}: q8_0 predictors need rank % 32 == 0 (rank ${r}); use a multiple of 32 or f32`);
    if (p.a.length !== r * dim) bad(`layer ${l}: a has ${p.a.length} values, want rank·dim = ${r * dim}`);
    if (p.b.length !== nFF * r) bad(`layer ${l}: b has ${p.b.length} values, want ffn·rank = ${nFF * r}`);
    if (p.thr.length !== nFF) bad(`layer ${l}: thr has ${p.thr.length} values, want ffn = ${nFF}`);
    for (const v of p.thr) if (Number.isNaN(v)) bad(`layer ${l}: thr holds NaN`);
  });
}

// ---------------------------------------------------------------------------------------------
// reading

export interface PredictorMeta {
  version: number;
  sparsity: number;
  thresholds: Float32Array; // [nLayers]
  rule: 'abs' | 'gate';
  kind: PredictorKind;
  ranks: number[]; // [nLayers] (kind 'gate': zeros)
  type: PredType;
  recall: Float32Array; // [nLayers], held out
  precision: Float32Array;
  overRead: Float32Array;
  modelIdentity: string;
  calibrationTokens: number;
  /** the pred tensors of each layer, checked: a [dim, rank], b [rank, ffn] of `type` (kind 'gate':
   * gate [dim, ffn] instead), thr [ffn] (or [ffn, 1]) f32 */
  tensors: { a?: TensorInfo; b?: TensorInfo; gate?: TensorInfo; thr: TensorInfo }[];
}

/** The sparse/predictor metadata of a flash-layout file, every value checked (FormatError naming
 * the key / tensor), or undefined when the file has none. */
export function readPredictorMeta(f: GGUFFile): PredictorMeta | undefined {
  const vkv = f.metadata.get(PK.version);
  if (!vkv) return undefined;
  const bad = (key: string, detail: string): never => { throw new FormatError(f.path, `metadata key '${key}'`, detail); };
  const version = Number(vkv.value);
  if (vkv.type === VT.ARRAY || vkv.type === VT.STRING || !Number.isSafeInteger(version)) bad(PK.version, 'expected an integer');
  if (version !== SPARSE_VERSION) throw new UnsupportedError(`${f.path}: sparse predictor data version ${version} is not supported (only ${SPARSE_VERSION})`);
  const L = openFlashLayout(f);
  const nLayers = L.layers.length;
  const f32s = (key: string): Float32Array => {
    const kv = f.metadata.get(key);
    if (!kv || !(kv.value instanceof Float32Array)) return bad(key, 'missing or not a float32 array');
    if (kv.value.length !== nLayers) bad(key, `${kv.value.length} entries for ${nLayers} layers`);
    return kv.value;
  };
  const sp = f.metadata.get(PK.sparsity);
  if (!sp || typeof sp.value !== 'number' || !(sp.value >= 0 && sp.value < 1)) bad(PK.sparsity, 'missing or not a number in [0, 1)');
  const thresholds = f32s(PK.threshold);
  const rule: unknown = f.metadata.get(PK.rule)?.value ?? 'abs';
  if (rule !== 'abs' && rule !== 'gate') return bad(PK.rule, `'${String(rule)}' is not abs or gate`);
  thresholds.forEach((t, l) => { if (rule === 'abs' ? !(t >= 0) : !Number.isFinite(t)) bad(PK.threshold, `layer ${l}: ${t} is not ${rule === 'abs' ? '≥ 0' : 'finite'}`); });
  const rk = f.metadata.get(PK.rank);
  if (!rk || !(rk.value instanceof Uint32Array)) return bad(PK.rank, 'missing or not a uint32 array');
  if (rk.value.length !== nLayers) bad(PK.rank, `${rk.value.length} entries for ${nLayers} layers`);
  const ranks = [...rk.value];
  const kind: unknown = f.metadata.get(PK.kind)?.value ?? 'lowrank';
  if (kind !== 'lowrank' && kind !== 'gate') return bad(PK.kind, `'${String(kind)}' is not lowrank or gate`);
  const type = f.metadata.get(PK.type)?.value as unknown;
  if (type !== 'q8_0' && type !== 'f32' && !(type === 'q4_0' && kind === 'gate')) return bad(PK.type, `'${String(type)}' is not q8_0 or f32${kind === 'gate' ? ' or q4_0' : ''}`);
  if (kind === 'gate') ranks.forEach((r, l) => { if (r !== 0) bad(PK.rank, `layer ${l}: rank ${r} (a gate predictor has rank 0)`); });
  else ranks.forEach((r, l) => {
    if (r < 1 || r > L.dim) bad(PK.rank, `layer ${l}: rank ${r} not in 1..${L.dim}`);
    if (type === 'q8_0' && r % 32 !== 0) bad(PK.rank, `layer ${l}: rank ${r} is not a multiple of 32 (q8_0)`);
  });
  const recall = f32s(PK.recall), precision = f32s(PK.precision), overRead = f32s(PK.overRead);
  const id = f.metadata.get(PK.identity)?.value;
  if (typeof id !== 'string') return bad(PK.identity, 'missing or not a string');
  const ct = f.metadata.get(PK.calibTokens);
  const calibrationTokens = Number(ct?.value);
  // Number() of a one-element array or of a numeric string is a number too: refuse them by type
  if (!ct || ct.type === VT.ARRAY || ct.type === VT.STRING || !Number.isSafeInteger(calibrationTokens) || calibrationTokens < 0) {
    bad(PK.calibTokens, 'missing or not a non-negative integer');
  }
  const pt = typeId(type);
  const tensors = ranks.map((r, l) => {
    const nFF = L.layers[l]!.nFF; // each layer's own bundle width (openFlashLayout does not make them equal)
    const get = (name: string, dims: number[], ty: number): TensorInfo => {
      const t = f.tensorByName.get(name);
      // trailing 1s are the same shape ([ffn] and [ffn, 1])
      const same = !!t && t.dims.length >= dims.length && dims.every((d, i) => t.dims[i] === d) && t.dims.slice(dims.length).every((d) => d === 1);
      if (!t || t.type !== ty || !same) {
        throw new FormatError(f.path, `tensor '${name}'`, `missing or not [${dims.join(', ')}] of type ${ty === TensorType.F32 ? 'f32' : type}`);
      }
      return t;
    };
    const thr = get(predName(l, 'thr'), [nFF], TensorType.F32);
    if (kind === 'gate') return { gate: get(predName(l, 'gate'), [L.dim, nFF], pt), thr };
    return { a: get(predName(l, 'a'), [L.dim, r], pt), b: get(predName(l, 'b'), [r, nFF], pt), thr };
  });
  return {
    version, sparsity: sp!.value as number, thresholds, rule, kind, ranks, type, recall, precision, overRead, modelIdentity: id, calibrationTokens, tensors,
  };
}

/** Layer l's predictor as f32 (a [rank × dim], b [ffn × rank], thr [ffn]), read from the file. */
export function loadPredictor(f: GGUFFile, meta: PredictorMeta, l: number): { rank: number; a: Float32Array; b: Float32Array; thr: Float32Array } {
  const T = meta.tensors[l];
  if (!T) throw new RangeError(`layer ${l} outside [0, ${meta.tensors.length})`);
  if (!T.a || !T.b) throw new PredictorFormatError(`layer ${l}: a '${meta.kind}' predictor has no low-rank factors`);
  const load = (t: TensorInfo): Float32Array => {
    const raw = new Uint8Array(t.bytes);
    readTensorData(f.path, t, raw);
    return dequantize(t.type, raw, t.dims.reduce((a, b) => a * b, 1));
  };
  return { rank: meta.ranks[l]!, a: load(T.a), b: load(T.b), thr: load(T.thr) };
}

/**
 * Layer l's gate weights as f32 [ffn × dim] row-major, row j = ORIGINAL neuron j (record i holds
 * neuron perm[i]), dequantized from the bundle's 'gate' part. Reads the bundle in runs of 1024
 * records (16 MB for 13B q8_0) rather than whole (226 MB). `dst` is reused when given.
 */
export function readGateWeights(f: GGUFFile, layout: FlashLayout, l: number, dst?: Float32Array): Float32Array {
  const gi = layout.parts.indexOf('gate');
  if (gi < 0) throw new UnsupportedError(`${f.path}: the flash layout has no 'gate' part (parts ${layout.parts.join(',')}); sparse predictors need a gated (GLU) FFN`);
  const L = layout.layers[l];
  if (!L) throw new RangeError(`layer ${l} outside [0, ${layout.layers.length})`);
  const { dim, recordBytes } = layout;
  const nFF = L.nFF;
  const out = dst ?? new Float32Array(nFF * dim);
  if (out.length !== nFF * dim) throw new RangeError(`gate weights buffer has ${out.length} values, want ffn·dim = ${nFF * dim}`);
  const t = f.tensorByName.get(bundleName(l))!;
  const RUN = 1024;
  const buf = new Uint8Array(Math.min(RUN, nFF) * recordBytes);
  const po = layout.partOffsets[gi]!, pb = layout.partBytes[gi]!;
  const fd = fs.openSync(f.path, 'r');
  try {
    for (let i0 = 0; i0 < nFF; i0 += RUN) {
      const k = Math.min(RUN, nFF - i0);
      preadFully(fd, buf, 0, k * recordBytes, t.offset + i0 * recordBytes, (pos) => new FormatError(f.path, `tensor '${t.name}' data`, `unexpected end of file at offset ${pos}`));
      for (let i = 0; i < k; i++) {
        const row = L.perm[i0 + i]!;
        dequantize(layout.dtype, buf.subarray(i * recordBytes + po, i * recordBytes + po + pb), dim, out.subarray(row * dim, (row + 1) * dim));
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

/** Lines for `flashlm inspect` (none for a file without predictors). */
export function describePredictors(f: GGUFFile): string[] {
  const m = readPredictorMeta(f);
  if (!m) return [];
  const n = m.ranks.length;
  const mean = (a: ArrayLike<number>) => Array.from(a).reduce((s, v) => s + v, 0) / Math.max(1, a.length);
  // loops, not Math.min(...a): spreading a per-layer array of a file claiming ~200k layers overflows the stack
  const min = (a: ArrayLike<number>): number => { let x = Infinity; for (let i = 0; i < a.length; i++) x = Math.min(x, a[i]!); return x; };
  const max = (a: ArrayLike<number>): number => { let x = -Infinity; for (let i = 0; i < a.length; i++) x = Math.max(x, a[i]!); return x; };
  const ranks = [...new Set(m.ranks)];
  const bytes = m.tensors.reduce((s, t) => s + (t.a?.bytes ?? 0) + (t.b?.bytes ?? 0) + (t.gate?.bytes ?? 0) + t.thr.bytes, 0);
  return [
    `sparse        v${m.version}: target sparsity ${(100 * m.sparsity).toFixed(0)}%, ${m.rule === 'gate' ? 'gate' : '|act|'} thresholds ${min(m.thresholds).toPrecision(3)}..${max(m.thresholds).toPrecision(3)} over ${n} layers`,
    `  predictors  ${m.type}, ${m.kind === 'gate' ? 'quantized gate copy' : `rank ${ranks.length === 1 ? ranks[0] : `${min(ranks)}..${max(ranks)}`}`}, ${(bytes / 1e6).toFixed(1)} MB; held-out recall ${mean(m.recall).toFixed(3)} ` +
      `(min ${min(m.recall).toFixed(3)}), precision ${mean(m.precision).toFixed(3)}, over-read ${mean(m.overRead).toFixed(2)}×; ${m.calibrationTokens} calibration tokens`,
  ];
}
