// Byte-level BPE (GPT-2 family; GGUF tokenizer.ggml.model = 'gpt2', HF ByteLevel tokenizer.json):
// pre-tokenize into words, map each word's UTF-8 bytes to printable code points (GPT-2
// bytes_to_unicode), merge pairs by merge rank (lowest first, ties leftmost), look the symbols up.

import { BaseTokenizer, type Fragment, utf8Bytes, type VocabData } from './base.js';
import { Merger, PairMode, PairTable } from './merge.js';
import { type PreStep, runPreSteps } from './pretokenize.js';

/** GPT-2 bytes_to_unicode: byte → code point, and its inverse (code point → byte, -1 if none). */
export const BYTE_TO_CHAR: string[] = (() => {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const map = new Array<string>(256);
  for (const b of bs) map[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (map[b] === undefined) map[b] = String.fromCharCode(256 + n++);
  return map;
})();
const CHAR_TO_BYTE: Int16Array = (() => {
  const inv = new Int16Array(512).fill(-1);
  BYTE_TO_CHAR.forEach((c, b) => (inv[c.charCodeAt(0)] = b));
  return inv;
})();

export function byteEncode(word: string): string {
  const bytes = utf8Bytes(word);
  let s = '';
  for (const b of bytes) s += BYTE_TO_CHAR[b];
  return s;
}

export interface BpeOptions {
  steps: PreStep[];
  ignoreMerges: boolean;
  /** GGUF tokenizer.ggml.merges ("a b", llama.cpp splits at the first space after the first char) */
  textMerges?: string[];
  /** HF: id pairs in rank order */
  idMerges?: [number, number][];
  /** HF ByteLevel add_prefix_space */
  addPrefixSpace?: boolean;
  /** HF normalizer (NFC / NFKC / ...), applied to each text fragment */
  normalize?: (s: string) => string;
}

const CACHE_MAX = 1 << 16;

export class BpeTokenizer extends BaseTokenizer {
  readonly model = 'gpt2' as const;
  private readonly merger: Merger;
  private readonly hf: boolean = false;
  private readonly cache = new Map<string, number[]>();

  constructor(v: VocabData, private readonly opt: BpeOptions) {
    super(v);
    if (opt.idMerges) {
      const pairs = new PairTable(opt.idMerges.length);
      opt.idMerges.forEach(([a, b], rank) => {
        const merged = this.tokenToId.get(this.tokens[a]! + this.tokens[b]!);
        if (merged !== undefined) pairs.set(a, b, -rank, merged, true); // a later duplicate wins, as in HF
      });
      this.merger = new Merger({ mode: PairMode.ID_RANK, tokenToId: this.tokenToId, nVocab: this.vocabSize, pairs });
      this.hf = true;
    } else {
      const textRanks = new Map<string, number>();
      (opt.textMerges ?? []).forEach((m, rank) => {
        const sp = m.indexOf(' ', 1);
        const key = sp < 0 ? '\u0000' : m.substring(0, sp) + '\u0000' + m.substring(sp + 1);
        if (!textRanks.has(key)) textRanks.set(key, rank); // first wins (std::map::emplace)
      });
      this.merger = new Merger({ mode: PairMode.TEXT_RANK, tokenToId: this.tokenToId, nVocab: this.vocabSize, textRanks });
    }
  }

  protected normalBytes(text: string): Uint8Array {
    const out: number[] = [];
    for (const ch of text) {
      const c = ch.charCodeAt(0);
      const b = ch.length === 1 && c < 512 ? CHAR_TO_BYTE[c]! : -1;
      if (b >= 0) out.push(b);
      else for (const x of utf8Bytes(ch)) out.push(x);
    }
    return Uint8Array.from(out);
  }

  protected encodeFragments(frags: Fragment[], out: number[]): void {
    for (const f of frags) {
      if (f.token >= 0) {
        out.push(f.token);
        continue;
      }
      let s = this.opt.normalize ? this.opt.normalize(f.text) : f.text;
      if (this.opt.addPrefixSpace && !s.startsWith(' ')) s = ' ' + s;
      for (const w of runPreSteps(s, this.opt.steps)) this.encodeWord(w, out);
    }
  }

  private encodeWord(word: string, out: number[]): void {
    const cached = this.cache.get(word);
    if (cached) {
      for (const id of cached) out.push(id);
      return;
    }
    const enc = byteEncode(word);
    const ids: number[] = [];
    const whole = this.opt.ignoreMerges ? this.tokenToId.get(enc) : undefined;
    if (whole !== undefined) {
      ids.push(whole);
    } else {
      this.merger.run(enc, (start, end, id) => {
        if (id < 0) id = this.tokenToId.get(enc.substring(start, end)) ?? -1;
        if (id >= 0) {
          ids.push(id);
          return;
        }
        if (this.hf) {
          if (this.unk >= 0) ids.push(this.unk); // HF: unknown symbol → unk (none: dropped)
          return;
        }
        // llama.cpp: each byte of the symbol's text as a one-byte token, when there is one
        for (let i = start; i < end; i++) {
          const c = enc.charCodeAt(i);
          if (c < 0x80) {
            const t = this.tokenToId.get(enc[i]!);
            if (t !== undefined) ids.push(t);
          }
        }
      });
    }
    if (this.cache.size >= CACHE_MAX) this.cache.clear();
    this.cache.set(word, ids);
    for (const id of ids) out.push(id);
  }
}
