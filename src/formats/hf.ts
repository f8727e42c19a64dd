// Hugging Face Llama / Mistral model directories (config.json + safetensors) as a ModelSource:
// config.json becomes llama.* GGUF metadata, tensors get GGUF names and dims, and the Q and K
// projections are permuted from HF's rotate-half row order to GGUF's interleaved-pair order, as
// llama.cpp's convert_hf_to_gguf.py does:
//   w.reshape(n_head, 2, head_dim/2, cols).swapaxes(1, 2).reshape(rows, cols)
// i.e. GGUF row h·hd + 2i + j = HF row h·hd + j·hd/2 + i (n_head = heads for Q, kv-heads for K).

import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { FormatError, jsonSnippet, NotFoundError, UnsupportedError } from './errors.js';
import { GGUFValueType, type GGUFKV, type TensorInfo } from './gguf.js';
import { isFile, readJSONFile } from './json-file.js';
import { TensorType } from './ggml-types.js';
import { openSafetensors, readFully, type STTensor } from './safetensors.js';
import type { ModelSource } from './source.js';

const VT = GGUFValueType;

const ARCHITECTURES = new Set(['LlamaForCausalLM', 'MistralForCausalLM']);
const MODEL_TYPES = new Set(['llama', 'mistral']);
const DTYPES: Record<string, number> = { F32: TensorType.F32, F16: TensorType.F16, BF16: TensorType.BF16 };
const DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };
const MAX_CONFIG_BYTES = 16 << 20; // config.json is a few KB

/** The subset of config.json we use, validated. */
export interface HFLlamaConfig {
  hiddenSize: number; intermediateSize: number; nLayers: number; nHeads: number; nKvHeads: number;
  headDim: number; rmsNormEps: number; ropeTheta: number; ctxLen: number; vocabSize: number;
  act: 'silu' | 'relu'; tieWordEmbeddings: boolean;
}

/** Parses and validates an HF Llama/Mistral config.json object (`file` names it in errors). */
export function parseHFConfig(file: string, c: unknown): HFLlamaConfig {
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new FormatError(file, 'config', 'not a JSON object');
  const cfg = c as Record<string, unknown>;
  const archs = cfg.architectures;
  if (archs !== undefined) {
    if (!Array.isArray(archs) || !archs.every((a) => typeof a === 'string')) {
      throw new FormatError(file, 'architectures', `expected an array of strings, got ${jsonSnippet(archs)}`);
    }
    if (!archs.some((a) => ARCHITECTURES.has(a))) {
      throw new UnsupportedError(`${file}: architecture ${archs.join(', ') || '(none)'} is not supported (supported: ${[...ARCHITECTURES].join(', ')})`);
    }
  }
  if (cfg.model_type !== undefined && !MODEL_TYPES.has(cfg.model_type as string)) {
    throw new UnsupportedError(`${file}: model_type ${jsonSnippet(cfg.model_type)} is not supported (supported: ${[...MODEL_TYPES].join(', ')})`);
  }
  if (archs === undefined && cfg.model_type === undefined) throw new FormatError(file, 'architectures', 'missing (and no model_type)');

  const int = (key: string, dflt?: number): number => {
    const v = cfg[key] ?? dflt;
    if (v === undefined) throw new FormatError(file, key, 'missing');
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw new FormatError(file, key, `expected a positive integer, got ${jsonSnippet(v)}`);
    return v;
  };
  const num = (key: string, dflt: number): number => {
    const v = cfg[key] ?? dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new FormatError(file, key, `expected a positive number, got ${jsonSnippet(v)}`);
    return v;
  };
  const hiddenSize = int('hidden_size');
  const nHeads = int('num_attention_heads');
  const nKvHeads = int('num_key_value_heads', nHeads);
  if (cfg.head_dim === undefined && hiddenSize % nHeads !== 0) {
    throw new FormatError(file, 'num_attention_heads', `${nHeads} does not divide hidden_size ${hiddenSize}`);
  }
  const headDim = int('head_dim', hiddenSize / nHeads);
  if (nHeads % nKvHeads !== 0) throw new FormatError(file, 'num_key_value_heads', `${nKvHeads} does not divide num_attention_heads ${nHeads}`);
  if (headDim % 2 !== 0) throw new FormatError(file, 'head_dim', `${headDim} is odd (hidden_size ${hiddenSize} / heads ${nHeads})`);
  if (cfg.rope_scaling !== undefined && cfg.rope_scaling !== null) {
    throw new UnsupportedError(`${file}: rope_scaling ${jsonSnippet(cfg.rope_scaling)} is not supported yet`);
  }
  for (const key of ['attention_bias', 'mlp_bias']) {
    if (cfg[key] === true) throw new UnsupportedError(`${file}: ${key} = true is not supported`);
  }
  const act = cfg.hidden_act ?? 'silu';
  if (act !== 'silu' && act !== 'relu') throw new UnsupportedError(`${file}: hidden_act ${jsonSnippet(act)} is not supported (supported: silu, relu)`);
  const tie = cfg.tie_word_embeddings ?? false;
  if (typeof tie !== 'boolean') throw new FormatError(file, 'tie_word_embeddings', `expected a boolean, got ${jsonSnippet(tie)}`);
  return {
    hiddenSize, intermediateSize: int('intermediate_size'), nLayers: int('num_hidden_layers'), nHeads, nKvHeads, headDim,
    rmsNormEps: num('rms_norm_eps', 1e-6), ropeTheta: num('rope_theta', 10000), ctxLen: int('max_position_embeddings'),
    vocabSize: int('vocab_size'), act, tieWordEmbeddings: tie,
  };
}

/** GGUF metadata for a config, with the types llama.cpp's converter writes. */
export function hfConfigToMetadata(cfg: HFLlamaConfig, name: string): Map<string, GGUFKV> {
  const m = new Map<string, GGUFKV>();
  const put = (key: string, type: number, value: number | string): void => void m.set(key, { key, type, value });
  put('general.architecture', VT.STRING, 'llama');
  put('general.name', VT.STRING, name);
  put('llama.context_length', VT.UINT32, cfg.ctxLen);
  put('llama.embedding_length', VT.UINT32, cfg.hiddenSize);
  put('llama.block_count', VT.UINT32, cfg.nLayers);
  put('llama.feed_forward_length', VT.UINT32, cfg.intermediateSize);
  put('llama.attention.head_count', VT.UINT32, cfg.nHeads);
  put('llama.attention.head_count_kv', VT.UINT32, cfg.nKvHeads);
  put('llama.rope.dimension_count', VT.UINT32, cfg.headDim);
  // float32 keys hold the f32 value, as a GGUF file read back would
  put('llama.rope.freq_base', VT.FLOAT32, Math.fround(cfg.ropeTheta));
  put('llama.attention.layer_norm_rms_epsilon', VT.FLOAT32, Math.fround(cfg.rmsNormEps));
  put('llama.vocab_size', VT.UINT32, cfg.vocabSize);
  if (cfg.headDim !== cfg.hiddenSize / cfg.nHeads) {
    put('llama.attention.key_length', VT.UINT32, cfg.headDim);
    put('llama.attention.value_length', VT.UINT32, cfg.headDim);
  }
  put('flashlm.activation', VT.STRING, cfg.act);
  return m;
}

const LAYER_PARTS: Record<string, string> = {
  'input_layernorm': 'attn_norm', 'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k',
  'self_attn.v_proj': 'attn_v', 'self_attn.o_proj': 'attn_output', 'post_attention_layernorm': 'ffn_norm',
  'mlp.gate_proj': 'ffn_gate', 'mlp.up_proj': 'ffn_up', 'mlp.down_proj': 'ffn_down',
};
const LAYER_RE = /^model\.layers\.(0|[1-9]\d*)\.([a-z_.]+)\.weight$/;

/** GGUF name of an HF tensor name, or undefined if it is not a Llama weight. */
export function ggufTensorName(hf: string): string | undefined {
  if (hf === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (hf === 'model.norm.weight') return 'output_norm.weight';
  if (hf === 'lm_head.weight') return 'output.weight';
  const m = LAYER_RE.exec(hf);
  const part = m && LAYER_PARTS[m[2]!];
  return part ? `blk.${m[1]}.${part}.weight` : undefined;
}

/** The GGUF tensors a config requires, in file order, with their HF shapes ([rows, cols]). A generator:
 * the caller stops at the first missing tensor, so a config claiming 10^9 layers costs nothing. */
function* expectedTensors(cfg: HFLlamaConfig, hasOutput: boolean): Generator<[string, number[]]> {
  const { hiddenSize: d, intermediateSize: f, headDim: hd, nHeads, nKvHeads, vocabSize } = cfg;
  yield ['token_embd.weight', [vocabSize, d]];
  for (let l = 0; l < cfg.nLayers; l++) {
    const b = `blk.${l}.`;
    yield* [[`${b}attn_norm.weight`, [d]], [`${b}attn_q.weight`, [nHeads * hd, d]], [`${b}attn_k.weight`, [nKvHeads * hd, d]],
      [`${b}attn_v.weight`, [nKvHeads * hd, d]], [`${b}attn_output.weight`, [d, nHeads * hd]], [`${b}ffn_norm.weight`, [d]],
      [`${b}ffn_gate.weight`, [f, d]], [`${b}ffn_up.weight`, [f, d]], [`${b}ffn_down.weight`, [d, f]]] as [string, number[]][];
  }
  yield ['output_norm.weight', [d]];
  if (hasOutput) yield ['output.weight', [vocabSize, d]];
}

/**
 * Permutes rows of a Q or K projection (row-major, `rowBytes` per row, `nHead` heads) from HF to
 * GGUF order, reading `src` and writing `dst` (distinct buffers). Exported for tests.
 */
export function permuteQKRows(src: Uint8Array, dst: Uint8Array, rows: number, rowBytes: number, nHead: number): void {
  const hd = rows / nHead;
  const half = hd / 2;
  for (let h = 0; h < nHead; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const from = (h * hd + j * half + i) * rowBytes;
        dst.set(src.subarray(from, from + rowBytes), (h * hd + 2 * i + j) * rowBytes);
      }
    }
  }
}

interface HFTensor { info: TensorInfo; st: STTensor; permuteHeads: number }

/** Opens an HF Llama/Mistral directory as a ModelSource. */
export function openHFDir(dir: string): ModelSource {
  const configPath = nodePath.join(dir, 'config.json');
  if (!isFile(configPath)) throw new NotFoundError(configPath, 'HF config');
  const json = readJSONFile(configPath, MAX_CONFIG_BYTES, 'config');
  const cfg = parseHFConfig(configPath, json);
  const st = openSafetensors(dir);

  // name every source tensor; anything that is not a Llama weight of this config is an error
  const byGGUF = new Map<string, STTensor>();
  for (const [hfName, t] of st.tensors) {
    if (hfName.endsWith('.rotary_emb.inv_freq')) continue; // a buffer some checkpoints saved; recomputed
    const g = ggufTensorName(hfName);
    const layer = g?.startsWith('blk.') ? Number(g.split('.')[1]) : -1;
    if (!g || layer >= cfg.nLayers) {
      throw new FormatError(t.file, `tensor '${hfName}'`, `not a weight of a ${cfg.nLayers}-layer Llama model`);
    }
    byGGUF.set(g, t);
  }
  const hasOutput = byGGUF.has('output.weight');
  if (!hasOutput && !cfg.tieWordEmbeddings) {
    throw new FormatError(dir, "tensor 'lm_head.weight'", 'missing (and tie_word_embeddings is false)');
  }
  const tensors: HFTensor[] = [];
  for (const [name, shape] of expectedTensors(cfg, hasOutput)) {
    const t = byGGUF.get(name);
    if (!t) throw new FormatError(dir, `tensor '${hfNameOf(name)}'`, 'missing');
    if (t.shape.length !== shape.length || t.shape.some((v, i) => v !== shape[i])) {
      throw new FormatError(t.file, `tensor '${t.name}' shape`, `[${t.shape.join(', ')}], expected [${shape.join(', ')}] from config.json`);
    }
    const type = DTYPES[t.dtype];
    if (type === undefined) {
      throw new UnsupportedError(`${t.file}: tensor '${t.name}' has dtype ${t.dtype} (supported: ${Object.keys(DTYPES).join(', ')})`);
    }
    const permuteHeads = name.endsWith('.attn_q.weight') ? cfg.nHeads : name.endsWith('.attn_k.weight') ? cfg.nKvHeads : 0;
    tensors.push({ info: { name, dims: [...shape].reverse(), type, offset: t.offset, bytes: t.bytes }, st: t, permuteHeads });
  }
  const byName = new Map(tensors.map((t) => [t.info.name, t]));

  const fds = new Map<string, number>();
  let closed = false;
  const fdOf = (file: string): number => {
    let fd = fds.get(file);
    if (fd === undefined) {
      fd = fs.openSync(file, 'r');
      fds.set(file, fd);
    }
    return fd;
  };
  let scratch = new Uint8Array(0);

  return {
    path: dir,
    kind: 'hf',
    metadata: hfConfigToMetadata(cfg, nodePath.basename(nodePath.resolve(dir))),
    tensors: tensors.map((t) => t.info),
    readTensor(name: string, dst: Uint8Array, dstOffset = 0): void {
      if (closed) throw new Error(`${dir}: model source is closed`);
      const t = byName.get(name);
      if (!t) throw new FormatError(dir, `tensor '${name}'`, 'not in this model');
      const { st: s, info } = t;
      if (!Number.isInteger(dstOffset) || dstOffset < 0 || dstOffset + info.bytes > dst.length) {
        throw new RangeError(`tensor '${name}': ${info.bytes} bytes do not fit at offset ${dstOffset} of a ${dst.length}-byte buffer`);
      }
      const fd = fdOf(s.file);
      const field = `tensor '${s.name}' data`;
      if (t.permuteHeads === 0) {
        readFully(fd, s.file, field, s.offset, dst, dstOffset, info.bytes);
        return;
      }
      // one head at a time through a scratch buffer, scattered into place
      const rows = s.shape[0]!;
      const rowBytes = s.shape[1]! * DTYPE_BYTES[s.dtype]!;
      const headBytes = (rows / t.permuteHeads) * rowBytes;
      if (scratch.length < headBytes) scratch = new Uint8Array(headBytes);
      for (let h = 0; h < t.permuteHeads; h++) {
        readFully(fd, s.file, field, s.offset + h * headBytes, scratch, 0, headBytes);
        const out = dst.subarray(dstOffset + h * headBytes, dstOffset + (h + 1) * headBytes);
        permuteQKRows(scratch, out, rows / t.permuteHeads, rowBytes, 1);
      }
    },
    close(): void {
      closed = true;
      for (const fd of fds.values()) {
        try { fs.closeSync(fd); } catch { /* ignore */ }
      }
      fds.clear();
      scratch = new Uint8Array(0);
    },
  };
}

/** HF name of a GGUF name (for error messages). */
function hfNameOf(gguf: string): string {
  if (gguf === 'token_embd.weight') return 'model.embed_tokens.weight';
  if (gguf === 'output_norm.weight') return 'model.norm.weight';
  if (gguf === 'output.weight') return 'lm_head.weight';
  const m = /^blk\.(\d+)\.(\w+)\.weight$/.exec(gguf);
  const part = m && Object.entries(LAYER_PARTS).find(([, g]) => g === m[2])?.[0];
  return part ? `model.layers.${m[1]}.${part}.weight` : gguf;
}
