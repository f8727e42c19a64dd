// Deterministic random Llama models ("synth" models) for tests, fixtures and benches.
//
// A synth model is a complete Llama checkpoint that llama.cpp loads: random weights from a seeded
// PRNG, scaled so the network is not degenerate, and an embedded SentencePiece-style vocabulary.
// The same options always give the same bytes.
//
// PRNG: xoshiro128** (Blackman & Vigna), 32-bit state words seeded by splitmix32 (a Weyl sequence
// step 0x9e3779b9 through the murmur3 fmix32 finaliser) from the key FNV-1a-32(`flashlm-synth/<seed>/
// <tensor name>`). Every tensor has its own stream, so a tensor's f32 values do not depend on the
// dtype, the file format or the other tensors: the f32, f16, q8_0 and q4_0 variants of one seed are
// the same network stored at different precisions. Values are uniform (no transcendental functions,
// so they are bit-identical on every platform): u = ((x >>> 8) + 0.5)·2^-23 − 1 ∈ (−1, 1), scaled
// by √3·std to have standard deviation `std`, rounded once to f32.
//
// Weight recipe (std per element; D = hidden, F = ffn, fan-in scaling keeps activations O(1)):
//   token_embd [vocab × D]      gains.embed                 (RMS-normed before use, so O(1) is enough)
//   attn_q, attn_k               gains.qk / √D               (scores q·k/√hd have std ≈ qk²: peaked, not one-hot)
//   attn_v, attn_output          gains.vo / √D
//   ffn_gate, ffn_up             gains.ffn / √D ;  ffn_down  gains.ffn / √F
//   output [vocab × D]           gains.out / √D              (logit std ≈ gains.out: margins of several units)
//   *_norm.weight                1 + k/128, k uniform integer in [−jitter·128, jitter·128] (exact in f16/bf16)
// Attention/FFN branches add O(1) to a residual stream of RMS O(1), so every layer changes the output.
//
// Vocabulary: see synth-vocab.ts (it depends only on the vocab size, not on the seed).
//
// GGUF: Q and K rows are in GGUF order (llama.cpp's convert permutes HF rows per head:
// GGUF[h·hd + 2i + j] = HF[h·hd + j·hd/2 + i]); the safetensors writer applies the inverse, so
// converting the HF directory back gives the same GGUF tensors.
//
// Output goes through formats/: GGUFWriter for .gguf, writeHFDir (atomic) for the HF directory.

import { TensorType } from '../formats/ggml-types.js';
import { GGUFValueType as VT, GGUFWriter } from '../formats/gguf.js';
import { writeHFDir } from '../formats/hf-write.js';
import { f32ToF16, quantize } from '../formats/quant.js';
import { SynthOptionsError, SynthRng } from './synth-base.js';
import { synthTokenizerJSON, synthVocab } from './synth-vocab.js';

export { SynthOptionsError, SynthRng } from './synth-base.js';
export { synthTokenizerJSON, synthVocab, type SynthVocab } from './synth-vocab.js';

export type SynthDType = 'f32' | 'f16' | 'q8_0' | 'q4_0';

export interface SynthGains {
  embed: number;
  qk: number;
  vo: number;
  ffn: number;
  out: number;
  normJitter: number;
}

export const DEFAULT_SYNTH_GAINS: Readonly<SynthGains> = Object.freeze({
  embed: 1.0,
  qk: 1.25,
  vo: 1.0,
  ffn: 1.0,
  out: 4.0,
  normJitter: 0.2,
});

export interface SynthOptions {
  layers: number;
  hidden: number;
  ffn: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  ctx: number;
  dtype: SynthDType;
  act: 'silu' | 'relu';
  seed: number; // integer, 0 ≤ seed ≤ 2^53 − 1
  format: 'gguf' | 'safetensors';
  gains?: Partial<SynthGains>; // defaults: DEFAULT_SYNTH_GAINS
}

// ---------------------------------------------------------------------------------------------
// options

const Q_TYPES = new Set<SynthDType>(['q8_0', 'q4_0']);

export function validateSynthOptions(o: SynthOptions): void {
  const int = (k: keyof SynthOptions, min: number, max = 1 << 30): number => {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new SynthOptionsError(k, `must be an integer in [${min}, ${max}], got ${String(v)}`);
    }
    return v;
  };
  if (o === null || typeof o !== 'object') throw new SynthOptionsError('opts', 'must be an object');
  int('layers', 1, 4096);
  const hidden = int('hidden', 2);
  const ffn = int('ffn', 1);
  const heads = int('heads', 1);
  const kvHeads = int('kvHeads', 1);
  int('vocab', 260, 1 << 24);
  int('ctx', 1, 1 << 24);
  int('seed', 0, Number.MAX_SAFE_INTEGER);
  if (!['f32', 'f16', 'q8_0', 'q4_0'].includes(o.dtype)) {
    throw new SynthOptionsError('dtype', `must be one of f32, f16, q8_0, q4_0, got ${String(o.dtype)}`);
  }
  if (o.act !== 'silu' && o.act !== 'relu') throw new SynthOptionsError('act', `must be silu or relu, got ${String(o.act)}`);
  if (o.format !== 'gguf' && o.format !== 'safetensors') {
    throw new SynthOptionsError('format', `must be gguf or safetensors, got ${String(o.format)}`);
  }
  if (hidden % heads !== 0) throw new SynthOptionsError('heads', `hidden ${hidden} is not a multiple of heads ${heads}`);
  if (heads % kvHeads !== 0) throw new SynthOptionsError('kvHeads', `heads ${heads} is not a multiple of kvHeads ${kvHeads}`);
  if ((hidden / heads) % 2 !== 0) throw new SynthOptionsError('heads', `head dim ${hidden / heads} must be even (RoPE pairs)`);
  if (Q_TYPES.has(o.dtype)) {
    if (hidden % 32 !== 0) throw new SynthOptionsError('hidden', `${o.dtype} needs rows that are whole 32-element blocks: hidden ${hidden} % 32 != 0`);
    if (ffn % 32 !== 0) throw new SynthOptionsError('ffn', `${o.dtype} needs rows that are whole 32-element blocks: ffn ${ffn} % 32 != 0`);
    if (o.format === 'safetensors') {
      throw new SynthOptionsError('dtype', `${o.dtype} is not a safetensors/HF dtype (use f32 or f16 with format safetensors)`);
    }
  }
  if (o.gains !== undefined) {
    for (const [k, v] of Object.entries(o.gains)) {
      if (!(k in DEFAULT_SYNTH_GAINS)) throw new SynthOptionsError('gains', `unknown gain '${k}'`);
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new SynthOptionsError('gains', `${k} must be a finite number ≥ 0`);
    }
  }
}

function gainsOf(o: SynthOptions): SynthGains {
  return { ...DEFAULT_SYNTH_GAINS, ...(o.gains ?? {}) };
}

// ---------------------------------------------------------------------------------------------
// tensors

export interface SynthTensorSpec {
  name: string; // GGUF name
  hfName: string;
  rows: number; // 1 for vectors
  cols: number; // contiguous length (GGUF ne[0])
  kind: 'norm' | 'matrix';
  std: number; // for matrices
  qkHeads?: number; // Q/K: heads for the HF permutation
}

export function synthTensorSpecs(o: SynthOptions): SynthTensorSpec[] {
  const g = gainsOf(o);
  const D = o.hidden;
  const F = o.ffn;
  const hd = D / o.heads;
  const kvD = o.kvHeads * hd;
  const m = (name: string, hfName: string, rows: number, cols: number, std: number, qkHeads?: number): SynthTensorSpec => ({
    name, hfName, rows, cols, kind: 'matrix', std, ...(qkHeads !== undefined ? { qkHeads } : {}),
  });
  const n = (name: string, hfName: string): SynthTensorSpec => ({ name, hfName, rows: 1, cols: D, kind: 'norm', std: 0 });
  const specs: SynthTensorSpec[] = [m('token_embd.weight', 'model.embed_tokens.weight', o.vocab, D, g.embed)];
  for (let l = 0; l < o.layers; l++) {
    const p = `blk.${l}.`;
    const hp = `model.layers.${l}.`;
    specs.push(
      n(`${p}attn_norm.weight`, `${hp}input_layernorm.weight`),
      m(`${p}attn_q.weight`, `${hp}self_attn.q_proj.weight`, D, D, g.qk / Math.sqrt(D), o.heads),
      m(`${p}attn_k.weight`, `${hp}self_attn.k_proj.weight`, kvD, D, g.qk / Math.sqrt(D), o.kvHeads),
      m(`${p}attn_v.weight`, `${hp}self_attn.v_proj.weight`, kvD, D, g.vo / Math.sqrt(D)),
      m(`${p}attn_output.weight`, `${hp}self_attn.o_proj.weight`, D, D, g.vo / Math.sqrt(D)),
      n(`${p}ffn_norm.weight`, `${hp}post_attention_layernorm.weight`),
      m(`${p}ffn_gate.weight`, `${hp}mlp.gate_proj.weight`, F, D, g.ffn / Math.sqrt(D)),
      m(`${p}ffn_up.weight`, `${hp}mlp.up_proj.weight`, F, D, g.ffn / Math.sqrt(D)),
      m(`${p}ffn_down.weight`, `${hp}mlp.down_proj.weight`, D, F, g.ffn / Math.sqrt(F)),
    );
  }
  specs.push(n('output_norm.weight', 'model.norm.weight'), m('output.weight', 'lm_head.weight', o.vocab, D, g.out / Math.sqrt(D)));
  return specs;
}

/** Streams a tensor's f32 values (GGUF row order) in chunks of whole rows. */
function* tensorChunks(o: SynthOptions, s: SynthTensorSpec, maxElems = 1 << 20): Generator<Float32Array> {
  const rng = new SynthRng(`flashlm-synth/${o.seed}/${s.name}`);
  if (s.kind === 'norm') {
    const jitter = Math.round(gainsOf(o).normJitter * 128);
    const out = new Float32Array(s.cols);
    for (let i = 0; i < s.cols; i++) out[i] = 1 + (rng.below(2 * jitter + 1) - jitter) / 128;
    yield out;
    return;
  }
  const amp = Math.sqrt(3) * s.std;
  const rowsPer = Math.max(1, Math.floor(maxElems / s.cols));
  for (let r0 = 0; r0 < s.rows; r0 += rowsPer) {
    const nr = Math.min(rowsPer, s.rows - r0);
    const out = new Float32Array(nr * s.cols);
    for (let i = 0; i < out.length; i++) out[i] = rng.uniform() * amp;
    yield out;
  }
}

/** All f32 values of one tensor in GGUF order (before any f16 / q conversion). */
export function synthTensorData(o: SynthOptions, name: string): Float32Array {
  validateSynthOptions(o);
  const s = synthTensorSpecs(o).find((t) => t.name === name);
  if (!s) throw new RangeError(`synth model has no tensor '${name}'`);
  const out = new Float32Array(s.rows * s.cols);
  let off = 0;
  for (const c of tensorChunks(o, s)) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

const GGML_TYPE: Record<SynthDType, number> = { f32: TensorType.F32, f16: TensorType.F16, q8_0: TensorType.Q8_0, q4_0: TensorType.Q4_0 };
// llama_ftype: ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_Q4_0 = 2, MOSTLY_Q8_0 = 7
const FILE_TYPE: Record<SynthDType, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7 };

function encode(type: number, x: Float32Array): Uint8Array {
  if (type === TensorType.F32) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  if (type === TensorType.F16) {
    const h = new Uint16Array(x.length);
    for (let i = 0; i < x.length; i++) h[i] = f32ToF16(x[i]!);
    return new Uint8Array(h.buffer);
  }
  return quantize(type, x);
}

/** HF row order of a GGUF-order Q/K matrix: HF[h·hd + j·hd/2 + i] = GGUF[h·hd + 2i + j]. */
function hfFromGgufRows(x: Float32Array, rows: number, cols: number, nHeads: number): Float32Array {
  const hd = rows / nHeads;
  const half = hd / 2;
  const out = new Float32Array(x.length);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (h * hd + 2 * i + j) * cols;
        const dst = (h * hd + j * half + i) * cols;
        out.set(x.subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// writers

export interface SynthResult {
  path: string; // the .gguf file or the HF directory
  tensors: number;
  params: number; // number of weights
}

/** Write a synth model to `out` (a .gguf file, or a directory for format 'safetensors'), atomically. */
export function synthModel(opts: SynthOptions, out: string): SynthResult {
  validateSynthOptions(opts);
  const specs = synthTensorSpecs(opts);
  const params = specs.reduce((n, s) => n + s.rows * s.cols, 0);
  if (opts.format === 'gguf') writeGGUF(opts, specs, out);
  else writeHF(opts, specs, out);
  return { path: out, tensors: specs.length, params };
}

function optionsRecord(o: SynthOptions): string {
  const { layers, hidden, ffn, heads, kvHeads, vocab, ctx, dtype, act, seed } = o;
  return JSON.stringify({ layers, hidden, ffn, heads, kvHeads, vocab, ctx, dtype, act, seed, gains: gainsOf(o) });
}

function writeGGUF(o: SynthOptions, specs: SynthTensorSpec[], out: string): void {
  const v = synthVocab(o.vocab);
  const hd = o.hidden / o.heads;
  const w = new GGUFWriter(out);
  try {
    w.addKV('general.architecture', VT.STRING, 'llama');
    w.addKV('general.name', VT.STRING, `flashlm-synth-${o.dtype}-l${o.layers}-d${o.hidden}-s${o.seed}`);
    w.addKV('general.file_type', VT.UINT32, FILE_TYPE[o.dtype]);
    w.addKV('llama.context_length', VT.UINT32, o.ctx);
    w.addKV('llama.embedding_length', VT.UINT32, o.hidden);
    w.addKV('llama.block_count', VT.UINT32, o.layers);
    w.addKV('llama.feed_forward_length', VT.UINT32, o.ffn);
    w.addKV('llama.attention.head_count', VT.UINT32, o.heads);
    w.addKV('llama.attention.head_count_kv', VT.UINT32, o.kvHeads);
    w.addKV('llama.rope.dimension_count', VT.UINT32, hd);
    w.addKV('llama.rope.freq_base', VT.FLOAT32, 10000);
    w.addKV('llama.attention.layer_norm_rms_epsilon', VT.FLOAT32, 1e-5);
    w.addKV('llama.vocab_size', VT.UINT32, o.vocab);
    w.addKV('flashlm.activation', VT.STRING, o.act);
    w.addKV('flashlm.synth', VT.STRING, optionsRecord(o));
    w.addKV('tokenizer.ggml.model', VT.STRING, 'llama');
    w.addKV('tokenizer.ggml.tokens', VT.ARRAY, v.tokens, VT.STRING);
    w.addKV('tokenizer.ggml.scores', VT.ARRAY, v.scores, VT.FLOAT32);
    w.addKV('tokenizer.ggml.token_type', VT.ARRAY, v.types, VT.INT32);
    w.addKV('tokenizer.ggml.bos_token_id', VT.UINT32, 1);
    w.addKV('tokenizer.ggml.eos_token_id', VT.UINT32, 2);
    w.addKV('tokenizer.ggml.unknown_token_id', VT.UINT32, 0);
    w.addKV('tokenizer.ggml.add_bos_token', VT.BOOL, true);
    w.addKV('tokenizer.ggml.add_eos_token', VT.BOOL, false);
    const typeOf = (s: SynthTensorSpec): number => (s.kind === 'norm' ? TensorType.F32 : GGML_TYPE[o.dtype]);
    for (const s of specs) w.addTensor(s.name, s.kind === 'norm' ? [s.cols] : [s.cols, s.rows], typeOf(s));
    w.beginData();
    for (const s of specs) for (const chunk of tensorChunks(o, s)) w.writeData(encode(typeOf(s), chunk));
    w.finish();
  } catch (e) {
    w.abort();
    throw e;
  }
}

function writeHF(o: SynthOptions, specs: SynthTensorSpec[], out: string): void {
  const v = synthVocab(o.vocab);
  const dt = o.dtype === 'f16' ? 'F16' : 'F32';
  const tensors = specs.map((s) => {
    let x = synthTensorData(o, s.name);
    if (s.qkHeads !== undefined) x = hfFromGgufRows(x, s.rows, s.cols, s.qkHeads);
    return { name: s.hfName, dtype: dt, shape: s.kind === 'norm' ? [s.cols] : [s.rows, s.cols], data: encode(GGML_TYPE[o.dtype], x) };
  });
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: o.hidden,
    intermediate_size: o.ffn,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads,
    head_dim: o.hidden / o.heads,
    vocab_size: o.vocab,
    max_position_embeddings: o.ctx,
    rms_norm_eps: 1e-5,
    rope_theta: 10000.0,
    hidden_act: o.act,
    tie_word_embeddings: false,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: o.dtype === 'f16' ? 'float16' : 'float32',
    flashlm_synth: JSON.parse(optionsRecord(o)) as unknown,
  };
  const tokenizerConfig = {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: '<s>',
    eos_token: '</s>',
    unk_token: '<unk>',
    pad_token: null,
    clean_up_tokenization_spaces: false,
    legacy: true,
    model_max_length: o.ctx,
    tokenizer_class: 'LlamaTokenizerFast',
  };
  writeHFDir(out, [
    { name: 'config.json', json: config },
    { name: 'tokenizer.json', json: synthTokenizerJSON(v) },
    { name: 'tokenizer_config.json', json: tokenizerConfig },
  ], { tensors, metadata: { format: 'pt' } });
}
