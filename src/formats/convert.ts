// ModelSource (GGUF or HF directory) → GGUF file, optionally re-typed / quantized, loadable by
// llama.cpp. Tensors are streamed one at a time: memory is one source tensor plus fixed chunk
// buffers (a 13B bf16 → q8_0 conversion peaks at its 328 MB embedding plus ~20 MB).
//
// Types, as llama.cpp's convert_hf_to_gguf.py does: 1-D tensors (norms) stay F32; 2-D weights
// (token_embd included) get the requested type; block types fall back to F16 for rows that are not
// whole blocks. For q4_0 the output projection (token_embd when it is tied) gets Q8_0, in the spirit
// of llama-quantize, which keeps that tensor at a higher precision (Q6_K, which we do not have).

import * as nodePath from 'node:path';
import { UnsupportedError } from './errors.js';
import { GGUFValueType, GGUFWriter, type GGUFKV, type TensorInfo } from './gguf.js';
import { isSupportedType, tensorBytes, TensorType, typeName } from './ggml-types.js';
import { dequantize, quantize, quantizedBytes } from './quant.js';
import type { ModelSource } from './source.js';

export type QuantName = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';

export interface ConvertOptions {
  quant: QuantName;
  /** Called with output bytes done / total: once at the start, then after every chunk. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Metadata merged over the source's (e.g. tokenizer.ggml.* built by the caller from HF files). */
  extraMetadata?: GGUFKV[];
  /** Tensor data alignment in bytes (power of two, default 32; written as general.alignment if not 32). */
  alignment?: number;
}

const QUANT_TYPES: Record<QuantName, number> = {
  f32: TensorType.F32, f16: TensorType.F16, bf16: TensorType.BF16, q8_0: TensorType.Q8_0, q4_0: TensorType.Q4_0,
};

/** llama.cpp's LLAMA_FTYPE for each output kind (general.file_type). */
export const LLAMA_FTYPE: Record<QuantName, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 };

/** GGML_QUANT_VERSION, written as general.quantization_version in quantized files. */
export const GGML_QUANT_VERSION = 2;

/** Keys recomputed for the output rather than copied from the source. */
const DROPPED_KEYS = new Set(['general.alignment', 'general.file_type', 'general.quantization_version']);

const CHUNK_ELEMS = 1 << 20; // elements converted per step (4 MiB of f32); a multiple of every block size

/** The GGML type tensor `t` gets in a `quant` conversion. */
export function targetType(t: Pick<TensorInfo, 'name' | 'dims'>, quant: QuantName, tiedOutput: boolean): number {
  const want = QUANT_TYPES[quant];
  if (want === undefined) throw new RangeError(`unknown quantization '${String(quant)}' (use f32, f16, bf16, q8_0 or q4_0)`);
  if (t.dims.length <= 1 || t.name.endsWith('_norm.weight')) return TensorType.F32;
  let type = want;
  if (type === TensorType.Q4_0 && (t.name === 'output.weight' || (tiedOutput && t.name === 'token_embd.weight'))) type = TensorType.Q8_0;
  if ((type === TensorType.Q8_0 || type === TensorType.Q4_0) && t.dims[0]! % 32 !== 0) type = TensorType.F16;
  return type;
}

/** Writes `src` as a GGUF file at `out` (atomically: temp file, then rename). */
export function convertModel(src: ModelSource, out: string, opts: ConvertOptions): void {
  const quant = opts.quant;
  if (QUANT_TYPES[quant] === undefined) throw new RangeError(`unknown quantization '${String(quant)}' (use f32, f16, bf16, q8_0 or q4_0)`);
  if (nodePath.resolve(out) === nodePath.resolve(src.path)) throw new Error(`convert: output ${out} is the source file`);
  for (const t of src.tensors) {
    if (!isSupportedType(t.type)) {
      throw new UnsupportedError(`${src.path}: tensor '${t.name}' has type ${typeName(t.type)}, which flashlm cannot convert ` +
        '(supported: f32, f16, bf16, q8_0, q4_0)');
    }
  }
  const tied = !src.tensors.some((t) => t.name === 'output.weight');
  const plan = src.tensors.map((t) => {
    const type = targetType(t, quant, tied);
    return { t, type, bytes: tensorBytes(type as TensorType, t.dims) };
  });
  const total = plan.reduce((s, p) => s + p.bytes, 0);

  const meta = new Map<string, GGUFKV>();
  for (const [k, kv] of src.metadata) if (!DROPPED_KEYS.has(k)) meta.set(k, kv);
  for (const kv of opts.extraMetadata ?? []) if (!DROPPED_KEYS.has(kv.key)) meta.set(kv.key, kv);
  meta.set('general.file_type', { key: 'general.file_type', type: GGUFValueType.UINT32, value: LLAMA_FTYPE[quant] });
  if (plan.some((p) => p.type === TensorType.Q8_0 || p.type === TensorType.Q4_0)) {
    meta.set('general.quantization_version', { key: 'general.quantization_version', type: GGUFValueType.UINT32, value: GGML_QUANT_VERSION });
  }

  const w = new GGUFWriter(out, opts.alignment !== undefined ? { alignment: opts.alignment } : {});
  try {
    for (const kv of meta.values()) w.addKV(kv.key, kv.type, kv.value, kv.arrayType);
    for (const p of plan) w.addTensor(p.t.name, p.t.dims, p.type);
    w.beginData();

    // one source buffer, sized for the largest tensor that needs one, reused for all
    let srcBuf = new Uint8Array(0);
    const f32 = new Float32Array(CHUNK_ELEMS);
    const outBuf = new Uint8Array(CHUNK_ELEMS * 4);
    let done = 0;
    opts.onProgress?.(0, total);
    for (const { t, type } of plan) {
      if (srcBuf.length < t.bytes) {
        srcBuf = new Uint8Array(0); // let the old one go before allocating
        srcBuf = new Uint8Array(t.bytes);
      }
      const data = srcBuf.subarray(0, t.bytes);
      src.readTensor(t.name, data, 0);
      if (type === t.type) {
        for (let off = 0; off < t.bytes; off += CHUNK_ELEMS * 4) {
          const n = Math.min(CHUNK_ELEMS * 4, t.bytes - off);
          w.writeData(data.subarray(off, off + n));
          done += n;
          opts.onProgress?.(done, total);
        }
        continue;
      }
      const elems = t.dims.reduce((a, b) => a * b, 1);
      for (let e = 0; e < elems; e += CHUNK_ELEMS) {
        const n = Math.min(CHUNK_ELEMS, elems - e);
        const x = dequantize(t.type, data.subarray(quantizedBytes(t.type, e)), n, f32);
        const q = quantize(type, x, outBuf);
        w.writeData(q);
        done += q.length;
        opts.onProgress?.(done, total);
      }
    }
    w.finish();
  } catch (e) {
    w.abort();
    throw e;
  }
}
