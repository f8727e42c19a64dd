// Calibration data (written by `flashlm calibrate`, read by threshold selection and predictor
// training): a GGUF file with, per layer and calibration token, the FFN input and a log-scale code of
// each neuron's |SiLU(gate)| (or |ReLU(gate)|), so that the active set for any threshold can be
// derived later without running the model again.
//
// Tensors (n = calibration tokens):
//   calib.<l>.x     F16 [dim × n]     the layer's FFN input (RMS-normalized hidden state)
//   calib.<l>.code  I8  [ffn × n]     u8 code of v = |act(gate·x)|: 0 when v = 0, else
//                                     clamp(round(CODE_SCALE·log2 v) + CODE_ZERO, 1, 255)
//   calib.<l>.hist  F32 [256]         how many (token, neuron) pairs have each code
// Metadata: flashlm.calib.* (version, model identity, token count, sequence length, files, code scale).
// Code resolution: 2^(1/16) ≈ 4.4% per step over v ∈ [2^-10, 2^6) — finer than any threshold needs.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { FormatError } from './errors.js';
import { TensorType } from './ggml-types.js';
import { GGUFValueType as VT, GGUFWriter, readGGUF, readTensorData, type GGUFFile } from './gguf.js';
import { f16ToF32, f32ToF16 } from './quant.js';

export const CALIB_VERSION = 1;
export const CODE_SCALE = 16; // codes per octave
export const CODE_ZERO = 160; // code of v = 1
const GGML_I8 = 24;

export const CALK = {
  version: 'flashlm.calib.version',
  model: 'flashlm.calib.model_identity',
  tokens: 'flashlm.calib.tokens',
  seqLen: 'flashlm.calib.seq_len',
  files: 'flashlm.calib.files',
  act: 'flashlm.calib.activation',
  codeScale: 'flashlm.calib.code_scale',
  codeZero: 'flashlm.calib.code_zero',
  layers: 'flashlm.calib.layers',
  dim: 'flashlm.calib.dim',
  ffn: 'flashlm.calib.ffn',
} as const;

/** u8 code of a non-negative activation magnitude. */
export function activationCode(v: number): number {
  if (!(v > 0)) return 0;
  const c = Math.round(CODE_SCALE * Math.log2(v)) + CODE_ZERO;
  return c < 1 ? 1 : c > 255 ? 255 : c;
}

/** Smallest v whose code is ≥ `code` (the threshold that "code ≥ c" stands for). */
export function codeThreshold(code: number): number {
  return code <= 0 ? 0 : 2 ** ((code - CODE_ZERO - 0.5) / CODE_SCALE);
}

/**
 * Identity of a model's weights, recorded in calibration data and predictors so stale ones are
 * refused: a flash-layout file's source digest (the same for every re-layout of the same weights),
 * else the SHA-256 of the GGUF header bytes plus the file size.
 */
export function modelIdentity(f: GGUFFile): string {
  const src = f.metadata.get('flashlm.source.sha256')?.value;
  if (typeof src === 'string' && /^[0-9a-f]{64}$/.test(src) && !/^0+$/.test(src)) return `source-sha256:${src}`;
  const fd = fs.openSync(f.path, 'r');
  try {
    const head = Buffer.alloc(f.dataOffset);
    fs.readSync(fd, head, 0, head.length, 0);
    return `gguf-header-sha256:${createHash('sha256').update(head).digest('hex')}:${f.fileSize}`;
  } finally {
    fs.closeSync(fd);
  }
}

export interface CalibrationMeta {
  modelIdentity: string;
  tokens: number; // n
  seqLen: number;
  files: string[];
  act: 'silu' | 'relu';
  nLayers: number;
  dim: number;
  ffn: number;
}

/** One layer's collected data. */
export interface CalibrationLayer {
  x: Uint16Array; // f16 [n × dim], token-major
  code: Uint8Array; // [n × ffn]
  hist: Float64Array; // [256]
}

/** Writes the calibration file atomically (GGUFWriter: temp file, fsync, rename). */
export function writeCalibration(path: string, meta: CalibrationMeta, layers: CalibrationLayer[]): void {
  const { tokens: n, dim, ffn } = meta;
  if (layers.length !== meta.nLayers) throw new RangeError(`${layers.length} layers, meta says ${meta.nLayers}`);
  const w = new GGUFWriter(path, { alignment: 32 });
  try {
    w.addKV('general.architecture', VT.STRING, 'flashlm-calibration');
    w.addKV(CALK.version, VT.UINT32, CALIB_VERSION);
    w.addKV(CALK.model, VT.STRING, meta.modelIdentity);
    w.addKV(CALK.tokens, VT.UINT32, n);
    w.addKV(CALK.seqLen, VT.UINT32, meta.seqLen);
    w.addKV(CALK.files, VT.ARRAY, meta.files, VT.STRING);
    w.addKV(CALK.act, VT.STRING, meta.act);
    w.addKV(CALK.codeScale, VT.UINT32, CODE_SCALE);
    w.addKV(CALK.codeZero, VT.UINT32, CODE_ZERO);
    w.addKV(CALK.layers, VT.UINT32, meta.nLayers);
    w.addKV(CALK.dim, VT.UINT32, dim);
    w.addKV(CALK.ffn, VT.UINT32, ffn);
    layers.forEach((L, l) => {
      if (L.x.length !== n * dim || L.code.length !== n * ffn || L.hist.length !== 256) throw new RangeError(`layer ${l}: data does not match n=${n} dim=${dim} ffn=${ffn}`);
      w.addTensor(`calib.${l}.x`, [dim, n], TensorType.F16);
      w.addTensor(`calib.${l}.code`, [ffn, n], GGML_I8);
      w.addTensor(`calib.${l}.hist`, [256], TensorType.F32);
    });
    w.beginData();
    for (const L of layers) {
      w.writeData(new Uint8Array(L.x.buffer, L.x.byteOffset, L.x.byteLength));
      w.writeData(L.code);
      w.writeData(new Uint8Array(Float32Array.from(L.hist).buffer));
    }
    w.finish();
  } catch (e) {
    w.abort();
    throw e;
  }
}

export interface CalibrationFile {
  path: string;
  meta: CalibrationMeta;
  /** Layer l's FFN inputs as f32 [n × dim]. */
  x(l: number): Float32Array;
  /** Layer l's activation codes [n × ffn]. */
  code(l: number): Uint8Array;
  hist(l: number): Float64Array;
}

export function readCalibration(path: string): CalibrationFile {
  const f = readGGUF(path);
  const num = (key: string): number => {
    const v = f.metadata.get(key)?.value;
    const x = typeof v === 'bigint' ? Number(v) : v;
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new FormatError(path, `metadata key '${key}'`, 'missing or not a non-negative integer (not a flashlm calibration file?)');
    return x;
  };
  const version = num(CALK.version);
  if (version !== CALIB_VERSION) throw new FormatError(path, `metadata key '${CALK.version}'`, `version ${version}, this flashlm reads ${CALIB_VERSION}`);
  if (num(CALK.codeScale) !== CODE_SCALE || num(CALK.codeZero) !== CODE_ZERO) throw new FormatError(path, 'code scale', 'unsupported activation code scale');
  const model = f.metadata.get(CALK.model)?.value;
  const files = f.metadata.get(CALK.files)?.value;
  const act = f.metadata.get(CALK.act)?.value as unknown;
  if (typeof model !== 'string') throw new FormatError(path, `metadata key '${CALK.model}'`, 'missing');
  if (act !== 'silu' && act !== 'relu') throw new FormatError(path, `metadata key '${CALK.act}'`, `'${String(act)}' is not silu or relu`);
  const meta: CalibrationMeta = {
    modelIdentity: model, tokens: num(CALK.tokens), seqLen: num(CALK.seqLen), files: Array.isArray(files) ? (files as string[]) : [],
    act, nLayers: num(CALK.layers), dim: num(CALK.dim), ffn: num(CALK.ffn),
  };
  const { tokens: n, dim, ffn } = meta;
  const tensor = (name: string, dims: number[], type: number) => {
    const t = f.tensorByName.get(name);
    if (!t || t.type !== type || t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i])) {
      throw new FormatError(path, `tensor '${name}'`, `missing or not [${dims}] of type ${type}`);
    }
    return t;
  };
  for (let l = 0; l < meta.nLayers; l++) {
    tensor(`calib.${l}.x`, [dim, n], TensorType.F16);
    tensor(`calib.${l}.code`, [ffn, n], GGML_I8);
    tensor(`calib.${l}.hist`, [256], TensorType.F32);
  }
  const check = (l: number) => {
    if (!Number.isInteger(l) || l < 0 || l >= meta.nLayers) throw new RangeError(`layer ${l} outside [0, ${meta.nLayers})`);
  };
  return {
    path, meta,
    x(l) {
      check(l);
      const t = f.tensorByName.get(`calib.${l}.x`)!;
      const raw = new Uint8Array(t.bytes);
      readTensorData(path, t, raw);
      const h = new Uint16Array(raw.buffer, 0, n * dim);
      const out = new Float32Array(n * dim);
      for (let i = 0; i < out.length; i++) out[i] = f16ToF32(h[i]!);
      return out;
    },
    code(l) {
      check(l);
      const t = f.tensorByName.get(`calib.${l}.code`)!;
      const raw = new Uint8Array(t.bytes);
      readTensorData(path, t, raw);
      return raw;
    },
    hist(l) {
      check(l);
      const t = f.tensorByName.get(`calib.${l}.hist`)!;
      const raw = new Uint8Array(t.bytes);
      readTensorData(path, t, raw);
      return Float64Array.from(new Float32Array(raw.buffer, 0, 256));
    },
  };
}

/** f32 → f16 bits for a whole vector (calibration inputs are stored in f16 to halve the file). */
export function toF16(src: Float32Array, dst: Uint16Array, dstOffset: number): void {
  for (let i = 0; i < src.length; i++) dst[dstOffset + i] = f32ToF16(src[i]!);
}

/** Reads small text files (calibration / evaluation corpora) as UTF-8, each at most `maxBytes`. */
export function readTextFiles(paths: string[], maxBytes = 64 << 20): { path: string; text: string }[] {
  return paths.map((p) => {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      throw new FormatError(p, 'text file', 'not found');
    }
    if (!st.isFile()) throw new FormatError(p, 'text file', 'not a regular file');
    if (st.size > maxBytes) throw new FormatError(p, 'text file', `${st.size} bytes is over the limit of ${maxBytes}`);
    return { path: p, text: fs.readFileSync(p, 'utf8') };
  });
}

/**
 * Expands directories (recursively, sorted, so runs are reproducible) into the text files under
 * them: regular files of 1 B..4 MB whose first 4 KiB hold no NUL byte. Files named directly are kept
 * as given. At most `maxFiles`.
 */
export function listTextFiles(paths: string[], maxFiles = 20000): string[] {
  const out: string[] = [];
  const probe = Buffer.alloc(4096);
  const isText = (p: string, size: number): boolean => {
    if (size === 0 || size > 4 << 20) return false;
    const fd = fs.openSync(p, 'r');
    try {
      const n = fs.readSync(fd, probe, 0, probe.length, 0);
      return !probe.subarray(0, n).includes(0);
    } finally {
      fs.closeSync(fd);
    }
  };
  const walk = (dir: string): void => {
    let names: string[];
    try {
      names = fs.readdirSync(dir).sort();
    } catch {
      return; // unreadable directory: skipped
    }
    for (const name of names) {
      if (out.length >= maxFiles) return;
      const p = `${dir}/${name}`;
      let st: fs.Stats;
      try {
        st = fs.lstatSync(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && isText(p, st.size)) out.push(p);
    }
  };
  for (const p of paths) {
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      throw new FormatError(p, 'text', 'not found');
    }
    if (st.isDirectory()) walk(p.replace(/\/+$/, ''));
    else out.push(p);
  }
  return out;
}
