// The synth models' vocabulary and its HF tokenizer.json (re-exported from synth.ts).
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

import { SynthOptionsError, SynthRng } from './synth-base.js';

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
