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
// Vocabulary (depends only on the vocab size, not on the seed): <unk>=0 (type 2), <s>=1, </s>=2
// (type 3), <0x00>..<0xFF> (type 6), then normal tokens (type 1): '▁' and the printable ASCII
// characters except '<' and '>' (so no text can merge into a special or byte token's spelling), then
// BPE merges learnt from a small built-in English corpus, then, if the vocab is larger, merges of
// random pairs of existing tokens. Scores decrease strictly (token i of the normal tokens has score
// −i), and every multi-character token has exactly one split into two shorter tokens (checked both
// ways when a token is added). With unique splits and scores ordered like merge ranks, llama.cpp's
// SPM tokenizer (highest score first, leftmost on ties) and a HF BPE tokenizer with the merges in
// score order (lowest rank first, leftmost on ties) make the same merges, so both tokenize alike.
//
// GGUF: Q and K rows are in GGUF order (llama.cpp's convert permutes HF rows per head:
// GGUF[h·hd + 2i + j] = HF[h·hd + j·hd/2 + i]); the safetensors writer applies the inverse, so
// converting the HF directory back gives the same GGUF tensors.
//
// Note: this module writes the HF directory's JSON files itself (node:fs), since formats/ has no
// small-file writer; GGUF and safetensors data go through formats/.

import { existsSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TensorType } from '../formats/ggml-types.js';
import { GGUFValueType as VT, GGUFWriter } from '../formats/gguf.js';
import { f32ToF16, quantize } from '../formats/quant.js';
import { writeSafetensors } from '../formats/safetensors.js';

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

/** Invalid synth options; `option` names the offending field. */
export class SynthOptionsError extends Error {
  constructor(
    readonly option: string,
    detail: string,
  ) {
    super(`synth option '${option}': ${detail}`);
    this.name = 'SynthOptionsError';
  }
}

// ---------------------------------------------------------------------------------------------
// PRNG

function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h = Math.imul(h ^ (c & 0xff), 0x01000193);
    if (c > 0xff) h = Math.imul(h ^ (c >>> 8), 0x01000193);
  }
  return h >>> 0;
}

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k));

/** xoshiro128** seeded through splitmix32. */
export class SynthRng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(key: string) {
    let s = fnv1a32(key);
    const next = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) | 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform in (−1, 1), symmetric, 24 bits. */
  uniform(): number {
    return ((this.nextU32() >>> 8) + 0.5) * 2 ** -23 - 1;
  }

  /** Integer in [0, n). */
  below(n: number): number {
    return Math.floor(((this.nextU32() >>> 8) / 2 ** 24) * n);
  }
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
// vocabulary

export interface SynthVocab {
  tokens: string[];
  scores: Float32Array;
  types: Int32Array; // 1 normal, 2 unknown, 3 control, 6 byte
  merges: [string, string][]; // HF BPE merges in rank order (one per multi-character token)
}

const SPACE = '\u2581'; // '▁'

// Order of the single-character tokens: '▁', letters by English frequency, digits, punctuation.
const BASE_CHARS = (() => {
  const lower = 'etaoinsrhldcumfpgwybvkxjqz';
  const chars = [SPACE, ...lower, ...lower.toUpperCase(), ...'0123456789'];
  for (let c = 0x21; c < 0x7f; c++) {
    const ch = String.fromCharCode(c);
    if (ch !== '<' && ch !== '>' && !chars.includes(ch)) chars.push(ch);
  }
  return chars;
})();

const CORPUS = `The quick brown fox jumps over the lazy dog. A model reads the text one token at a time and
writes the next token that it thinks is the most likely one. When the weights are larger than the
memory of the machine, the engine streams them from the flash storage while it computes, and keeps
the attention weights and the cache in memory. The tokenizer turns the text into pieces: common words
become one piece, rare words are split into smaller pieces, and characters that are not in the
vocabulary fall back to their bytes. Every layer of the network has an attention block and a feed
forward block; the output of each block is added to the residual stream. The numbers in this file
are random, so the model says nothing sensible, but it says the same thing every time it is run with
the same seed. There is a small house on the hill, and in the house there is a table with three books
and a lamp. She said that they would come back in the morning, after the rain had stopped, and that
they would bring some bread, some cheese and a bottle of water for the long walk to the river.
function add(a, b) { return a + b; } for (let i = 0; i < 10; i++) { sum += i * 2; } if (x == y) print("ok");
In 2024, 17 of the 32 tests passed on the first run; the other 15 needed a second try.`;

function isByteOrSpecial(s: string): boolean {
  return s.includes('<') || s.includes('>');
}

/** The synth vocabulary of `size` tokens (size ≥ 260). */
export function synthVocab(size: number): SynthVocab {
  if (!Number.isInteger(size) || size < 260) throw new SynthOptionsError('vocab', `must be an integer ≥ 260, got ${size}`);
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const types: number[] = [2, 3, 3];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);
  }
  const normal = new Set<string>();
  const merges: [string, string][] = [];
  const prefixOf = new Map<string, string[]>(); // proper prefix → tokens that start with it
  const suffixOf = new Map<string, string[]>();
  const push = (t: string): void => {
    tokens.push(t);
    types.push(1);
    normal.add(t);
    for (let k = 1; k < t.length; k++) {
      const p = t.slice(0, k);
      const s = t.slice(k);
      (prefixOf.get(p) ?? prefixOf.set(p, []).get(p)!).push(t);
      (suffixOf.get(s) ?? suffixOf.set(s, []).get(s)!).push(t);
    }
  };
  for (const c of BASE_CHARS) {
    if (tokens.length >= size) break;
    push(c);
  }
  /** Whether a + b can be added keeping "every multi-character token has exactly one split". */
  const canAdd = (a: string, b: string): boolean => {
    const c = a + b;
    if (normal.has(c) || isByteOrSpecial(c)) return false;
    for (let k = 1; k < c.length; k++) {
      if (k !== a.length && normal.has(c.slice(0, k)) && normal.has(c.slice(k))) return false;
    }
    for (const t of prefixOf.get(c) ?? []) if (normal.has(t.slice(c.length))) return false;
    for (const t of suffixOf.get(c) ?? []) if (normal.has(t.slice(0, t.length - c.length))) return false;
    return true;
  };
  const addMerge = (a: string, b: string): void => {
    merges.push([a, b]);
    push(a + b);
  };

  // 1. BPE training on the corpus (words = '▁' + whitespace-separated chunks, unknown chars split words)
  const wordFreq = new Map<string, number>();
  for (const raw of CORPUS.split(/\s+/)) {
    let cur = '';
    for (const ch of SPACE + raw) {
      if (normal.has(ch)) cur += ch;
      else {
        if (cur.length > 1) wordFreq.set(cur, (wordFreq.get(cur) ?? 0) + 1);
        cur = '';
      }
    }
    if (cur.length > 1) wordFreq.set(cur, (wordFreq.get(cur) ?? 0) + 1);
  }
  const words = [...wordFreq.entries()].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0)).map(([w, f]) => ({ syms: [...w], f }));
  const banned = new Set<string>();
  while (tokens.length < size) {
    const counts = new Map<string, number>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.syms.length; i++) {
        const key = `${w.syms[i]}\u0000${w.syms[i + 1]}`;
        if (!banned.has(key)) counts.set(key, (counts.get(key) ?? 0) + w.f);
      }
    }
    let best = '';
    let bestN = 1;
    for (const [k, n] of counts) if (n > bestN || (n === bestN && best !== '' && k < best)) [best, bestN] = [k, n];
    if (best === '') break;
    const [a, b] = best.split('\u0000') as [string, string];
    if (!canAdd(a, b)) {
      banned.add(best);
      continue;
    }
    addMerge(a, b);
    const c = a + b;
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(c);
          i++;
        } else out.push(w.syms[i]!);
      }
      w.syms = out;
    }
  }

  // 2. random pairs of existing tokens (fixed stream: the vocab depends only on its size)
  const rng = new SynthRng('flashlm-synth/vocab');
  const pool = [...normal];
  let fails = 0;
  while (tokens.length < size) {
    const a = pool[rng.below(pool.length)]!;
    const b = pool[rng.below(pool.length)]!;
    if (a.length + b.length <= 16 && canAdd(a, b)) {
      addMerge(a, b);
      pool.push(a + b);
      fails = 0;
    } else if (++fails > 1_000_000) {
      throw new Error(`synthVocab: cannot build ${size} tokens (stuck at ${tokens.length})`);
    }
  }

  const scores = new Float32Array(tokens.length);
  for (let i = 259; i < tokens.length; i++) scores[i] = -(i - 259);
  return { tokens, scores, types: Int32Array.from(types), merges };
}

/** HF tokenizer.json (Llama-2 style: BPE with byte fallback, '▁' normalizer/decoder). */
export function synthTokenizerJSON(v: SynthVocab): object {
  const vocab: Record<string, number> = {};
  v.tokens.forEach((t, i) => (vocab[t] = i));
  const special = (id: number) => ({
    id, content: v.tokens[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  });
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0), special(1), special(2)],
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: SPACE },
        { type: 'Replace', pattern: { String: ' ' }, content: SPACE },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPACE }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: v.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
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
  const tmp = `${out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const tensors = specs.map((s) => {
      let x = synthTensorData(o, s.name);
      if (s.qkHeads !== undefined) x = hfFromGgufRows(x, s.rows, s.cols, s.qkHeads);
      return { name: s.hfName, dtype: dt, shape: s.kind === 'norm' ? [s.cols] : [s.rows, s.cols], data: encode(GGML_TYPE[o.dtype], x) };
    });
    writeSafetensors(join(tmp, 'model.safetensors'), tensors, { format: 'pt' });
    const json = (name: string, value: unknown): void => writeFileSync(join(tmp, name), `${JSON.stringify(value, null, 2)}\n`);
    json('config.json', {
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
    });
    json('tokenizer.json', synthTokenizerJSON(v));
    json('tokenizer_config.json', {
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
    });
    // Swap the directory into place: the old one (if any) is moved aside first, then removed.
    if (existsSync(out)) {
      if (!statSync(out).isDirectory()) throw new Error(`synthModel: ${out} exists and is not a directory`);
      const old = `${out}.old-${process.pid}`;
      rmSync(old, { recursive: true, force: true });
      renameSync(out, old);
      renameSync(tmp, out);
      rmSync(old, { recursive: true, force: true });
    } else renameSync(tmp, out);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
