// SentencePiece-style (Llama) tokenizer: spaces become '▁', a dummy prefix space is added, code points
// are merged greedily, unknown pieces fall back to <0xXX> byte tokens.
// - pairs 'score' is llama.cpp's llm_tokenizer_spm (GGUF tokenizer.ggml.model = 'llama'): a pair merges
//   when the joined text is in the vocabulary, the highest score first.
// - pairs 'merges' is HF tokenizers' BPE with byte_fallback over the same normalized text (Llama
//   tokenizer.json): a pair merges when it is in the merges list, the lowest rank first.

import { BaseTokenizer, byteTokenIds, type Fragment, utf8Bytes, type VocabData } from './base.js';
import { Merger, PairMode, PairTable } from './merge.js';

export interface SpmOptions {
  /**
   * The dummy prefix:
   * - 'every': '▁' in front of every text fragment (llama.cpp add_space_prefix, where a text fragment
   *   always starts the input or follows a special token; HF normalizer Prepend('▁'))
   * - 'always' / 'first': HF Metaspace: '▁' unless the fragment already starts with one ('first': only
   *   for the fragment at the start of the input)
   * - 'never'
   */
  prefix: 'every' | 'always' | 'first' | 'never';
  /** HF Metaspace split = true: tokenize each '▁'-started word on its own */
  splitWords?: boolean;
  pairs: 'score' | 'merges';
  scores?: Float32Array; // pairs 'score': one per token
  merges?: [number, number][]; // pairs 'merges': token id pairs, in rank order
  /** HF: unknown code points become byte tokens (else unk); GGUF SPM always falls back to bytes */
  byteFallback?: boolean;
  fuseUnk?: boolean; // HF: consecutive unknowns give one unk
  ignoreMerges?: boolean; // HF: a whole word that is a token is taken as is
}

export class SpmTokenizer extends BaseTokenizer {
  readonly model = 'llama' as const;
  private readonly merger: Merger;
  private readonly byteIds: Int32Array;
  /** per UTF-16 unit: 1 if it occurs in a token of two or more code points. A code point that occurs
   *  in none (for Llama: '\n') can never merge, so the text is merged in independent runs between them. */
  private readonly inMulti = new Uint8Array(65536);
  private lastUnk = false;

  constructor(v: VocabData, private readonly opt: SpmOptions) {
    super(v);
    this.stripLeadingSpace = opt.prefix !== 'never';
    this.byteIds = byteTokenIds(this.tokenToId);
    for (const t of this.tokens) {
      if (t.length < 2 || (t.length === 2 && t.codePointAt(0)! > 0xffff)) continue;
      for (let i = 0; i < t.length; i++) this.inMulti[t.charCodeAt(i)] = 1;
    }
    for (let c = 0xd800; c < 0xe000; c++) this.inMulti[c] = 1; // surrogates: never a barrier
    if (opt.pairs === 'score') {
      const scores = opt.scores;
      if (!scores || scores.length < this.vocabSize) throw new Error('SPM tokenizer: scores missing or short');
      // every split of a token into two tokens: llama.cpp merges a pair when the joined text is a token
      const splits: number[] = [];
      this.tokens.forEach((t, id) => {
        if (this.tokenToId.get(t) !== id) return; // duplicate text: the last id is the one found
        for (let i = 1; i < t.length; i++) {
          const c = t.charCodeAt(i);
          if (c >= 0xdc00 && c <= 0xdfff) continue; // inside a surrogate pair
          const a = this.tokenToId.get(t.substring(0, i));
          if (a === undefined) continue;
          const b = this.tokenToId.get(t.substring(i));
          if (b !== undefined) splits.push(a, b, id);
        }
      });
      const pairs = new PairTable(splits.length / 3);
      for (let i = 0; i < splits.length; i += 3) pairs.set(splits[i]!, splits[i + 1]!, scores[splits[i + 2]!]!, splits[i + 2]!, false);
      this.merger = new Merger({ mode: PairMode.SCORE, tokenToId: this.tokenToId, scores, nVocab: this.vocabSize, pairs });
    } else {
      const ms = opt.merges ?? [];
      const pairs = new PairTable(ms.length);
      for (let rank = 0; rank < ms.length; rank++) {
        const [a, b] = ms[rank]!;
        const merged = this.tokenToId.get(this.tokens[a]! + this.tokens[b]!);
        if (merged !== undefined) pairs.set(a, b, -rank, merged, true); // a later duplicate wins, as in HF
      }
      this.merger = new Merger({ mode: PairMode.ID_RANK, tokenToId: this.tokenToId, nVocab: this.vocabSize, pairs });
    }
  }

  protected normalBytes(text: string): Uint8Array {
    return utf8Bytes(text.replaceAll('\u2581', ' '));
  }

  protected encodeFragments(frags: Fragment[], out: number[]): void {
    const o = this.opt;
    for (const f of frags) {
      if (f.token >= 0) {
        out.push(f.token);
        continue;
      }
      let s = f.text;
      if (o.prefix === 'every') s = ' ' + s;
      s = s.replaceAll(' ', '\u2581');
      if ((o.prefix === 'always' || (o.prefix === 'first' && f.offset === 0)) && !s.startsWith('\u2581')) s = '\u2581' + s;
      if (o.splitWords) {
        let start = 0;
        for (let i = 1; i <= s.length; i++) {
          if (i === s.length || s.charCodeAt(i) === 0x2581) {
            this.encodeWord(s.substring(start, i), out);
            start = i;
          }
        }
      } else {
        this.encodeWord(s, out);
      }
    }
  }

  private encodeWord(s: string, out: number[]): void {
    if (s.length === 0) return;
    if (this.opt.ignoreMerges) {
      const id = this.tokenToId.get(s);
      if (id !== undefined) {
        out.push(id);
        return;
      }
    }
    this.lastUnk = false;
    const inMulti = this.inMulti;
    let from = 0;
    for (let i = 0; i < s.length; i++) {
      if (inMulti[s.charCodeAt(i)]) continue;
      if (i > from) this.mergeRun(s.substring(from, i), out);
      this.mergeRun(s[i]!, out);
      from = i + 1;
    }
    if (from < s.length) this.mergeRun(from === 0 ? s : s.substring(from), out);
  }

  private mergeRun(s: string, out: number[]): void {
    this.merger.run(s, (start, end, id) => {
      if (id < 0) id = this.tokenToId.get(s.substring(start, end)) ?? -1;
      if (id >= 0) {
        out.push(id);
        this.lastUnk = false;
        return;
      }
      // unknown piece: byte tokens, else unk
      const bytes = utf8Bytes(s.substring(start, end));
      const useBytes = this.opt.pairs === 'score' || this.opt.byteFallback;
      if (useBytes && bytes.every((b) => this.byteIds[b]! >= 0)) {
        for (const b of bytes) out.push(this.byteIds[b]!);
        this.lastUnk = false;
      } else if (this.unk >= 0 && !(this.lastUnk && this.opt.fuseUnk)) {
        out.push(this.unk);
        this.lastUnk = true;
      }
    });
  }
}
