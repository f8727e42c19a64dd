// What the SPM and BPE tokenizers share: the vocabulary, special-token partitioning of the input
// (llama.cpp tokenizer_st_partition), BOS/EOS, token bytes and decode.

import { Attr, attrFromType, type EncodeOptions, type TokenizerInfo, TokenType } from './types.js';

export interface VocabData {
  tokens: string[];
  types: ArrayLike<number>; // GGUF token types, one per token
  bos: number; eos: number; unk: number; // -1: none
  addBos: boolean; addEos: boolean;
  eog: Set<number>;
  /** per token: lstrip / rstrip around it when partitioning (HF added tokens) */
  strip?: Map<number, { lstrip: boolean; rstrip: boolean }>;
  /** ids that get the control attribute on top of their type (llama.cpp: eot / eog-looking tokens) */
  control?: Iterable<number>;
}

/** A piece of the input: raw text (with its UTF-16 offset in the input) or a special token id. */
export interface Fragment { text: string; offset: number; token: number /* -1: text */ }

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
/** JS strings may hold lone surrogates; UTF-8 encoders write them as U+FFFD, so do the same. */
export function wellFormed(s: string): string {
  return s.replace(LONE_SURROGATE, '\uFFFD');
}

const utf8 = new TextEncoder();
export function utf8Bytes(s: string): Uint8Array {
  return utf8.encode(s);
}

/** C isspace(): ' ', \t \n \v \f \r */
function isCSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

const EMPTY = new Uint8Array(0);

export abstract class BaseTokenizer implements TokenizerInfo {
  abstract readonly model: 'llama' | 'gpt2';
  readonly vocabSize: number;
  readonly bos: number;
  readonly eos: number;
  readonly unk: number;
  readonly addBos: boolean;
  readonly addEos: boolean;
  protected readonly tokens: string[];
  protected readonly types: Uint8Array;
  protected readonly attrs: Uint16Array;
  /** text → id (a later duplicate wins, as llama.cpp's token_to_id) */
  protected readonly tokenToId = new Map<string, number>();
  private readonly eog: Set<number>;
  /** ids split out of the input before tokenizing, longest text first */
  private readonly specials: number[];
  private readonly bytesCache: (Uint8Array | undefined)[];
  /** SPM: remove the leading space of the decoded text (the dummy prefix) */
  protected stripLeadingSpace = false;

  constructor(v: VocabData) {
    const n = v.tokens.length;
    this.vocabSize = n;
    this.tokens = v.tokens.map((t, i) => (t === '' ? `[EMPTY_${i}]` : t));
    this.types = new Uint8Array(n);
    this.attrs = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      const t = v.types[i] ?? TokenType.NORMAL;
      this.types[i] = t;
      this.attrs[i] = attrFromType(t);
      this.tokenToId.set(this.tokens[i]!, i);
    }
    for (const id of v.control ?? []) if (id >= 0 && id < n) this.attrs[id]! |= Attr.CONTROL;
    for (const [id, s] of v.strip ?? []) {
      if (id < 0 || id >= n) continue;
      if (s.lstrip) this.attrs[id]! |= Attr.LSTRIP;
      if (s.rstrip) this.attrs[id]! |= Attr.RSTRIP;
    }
    this.bos = v.bos;
    this.eos = v.eos;
    this.unk = v.unk;
    this.addBos = v.addBos;
    this.addEos = v.addEos;
    this.eog = v.eog;
    const special: number[] = [];
    for (let i = 0; i < n; i++) {
      if (this.attrs[i]! & (Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN)) special.push(i);
    }
    // llama.cpp sorts by text length, longest first (std::sort; ties here: lower id first)
    special.sort((a, b) => this.tokens[b]!.length - this.tokens[a]!.length || a - b);
    this.specials = special;
    this.bytesCache = new Array<Uint8Array | undefined>(n);
  }

  piece(id: number): string {
    this.checkId(id);
    return this.tokens[id]!;
  }

  tokenType(id: number): number {
    this.checkId(id);
    return this.types[id]!;
  }

  isEog(id: number): boolean {
    return this.eog.has(id);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const addBos = opts.addBos ?? this.addBos;
    const out: number[] = [];
    if (addBos && this.bos >= 0) out.push(this.bos);
    if (text.length > 0) this.encodeFragments(this.partition(wellFormed(text), opts.parseSpecial ?? false), out);
    if (this.addEos && this.eos >= 0 && (opts.addBos ?? true)) out.push(this.eos);
    return out;
  }

  /** Tokenize the partitioned input, appending ids to out. */
  protected abstract encodeFragments(frags: Fragment[], out: number[]): void;

  /** The bytes of a normal (non-special, non-byte) token. */
  protected abstract normalBytes(text: string): Uint8Array;

  tokenBytes(id: number): Uint8Array {
    this.checkId(id);
    let b = this.bytesCache[id];
    if (b) return b;
    const a = this.attrs[id]!;
    const text = this.tokens[id]!;
    if (a & (Attr.UNKNOWN | Attr.CONTROL)) b = EMPTY;
    else if (a & Attr.USER_DEFINED) b = utf8Bytes(text);
    else if (a & Attr.NORMAL) b = this.normalBytes(text);
    else if (a & Attr.BYTE) b = Uint8Array.of(byteOfToken(text));
    else b = EMPTY; // unused / undefined: llama.cpp prints nothing
    this.bytesCache[id] = b;
    return b;
  }

  decode(ids: number[]): string {
    let total = 0;
    let skip = -1; // index of the id whose leading space is dropped
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const b = this.tokenBytes(id);
      if (b.length === 0) continue;
      if (skip === -1) skip = this.stripLeadingSpace && b[0] === 0x20 && this.attrs[id]! & Attr.NORMAL ? i : ids.length;
      total += b.length;
    }
    if (skip >= 0 && skip < ids.length) total--;
    const all = new Uint8Array(total);
    let o = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.bytesCache[ids[i]!]!;
      if (i === skip) {
        all.set(b.subarray(1), o);
        o += b.length - 1;
      } else if (b.length === 1) {
        all[o++] = b[0]!;
      } else if (b.length > 1) {
        all.set(b, o);
        o += b.length;
      }
    }
    return new TextDecoder('utf-8', { ignoreBOM: true }).decode(all);
  }

  /** Split special tokens out of the text (llama.cpp tokenizer_st_partition). */
  protected partition(text: string, parseSpecial: boolean): Fragment[] {
    let frags: Fragment[] = [{ text, offset: 0, token: -1 }];
    for (const id of this.specials) {
      const a = this.attrs[id]!;
      if (!parseSpecial && a & (Attr.CONTROL | Attr.UNKNOWN)) continue;
      const s = this.tokens[id]!;
      let hit = false;
      for (const f of frags) {
        if (f.token < 0 && f.text.includes(s)) {
          hit = true;
          break;
        }
      }
      if (!hit) continue;
      const next: Fragment[] = [];
      for (const f of frags) {
        if (f.token >= 0) {
          next.push(f);
          continue;
        }
        const raw = f.text;
        let pos = 0;
        let m = raw.indexOf(s, 0);
        if (m < 0) {
          next.push(f);
          continue;
        }
        while (m >= 0) {
          let leftEnd = m;
          if (a & Attr.LSTRIP) while (leftEnd > pos && isCSpace(raw.charCodeAt(leftEnd - 1))) leftEnd--;
          if (leftEnd > pos) next.push({ text: raw.slice(pos, leftEnd), offset: f.offset + pos, token: -1 });
          next.push({ text: s, offset: f.offset + m, token: id });
          pos = m + s.length;
          if (a & Attr.RSTRIP) while (pos < raw.length && isCSpace(raw.charCodeAt(pos))) pos++;
          m = raw.indexOf(s, pos);
        }
        if (pos < raw.length) next.push({ text: raw.slice(pos), offset: f.offset + pos, token: -1 });
      }
      frags = next;
    }
    return frags;
  }

  protected checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new RangeError(`token id ${id} is out of range [0, ${this.vocabSize})`);
    }
  }
}

/** `<0xAB>` → 0xAB */
export function byteOfToken(text: string): number {
  return parseInt(text.substring(3, 5), 16) & 0xff;
}

/** ids of the 256 byte tokens `<0xXX>` (llama.cpp byte_to_token for SPM: else the 1-char token), -1 if absent */
export function byteTokenIds(tokenToId: Map<string, number>): Int32Array {
  const ids = new Int32Array(256).fill(-1);
  for (let b = 0; b < 256; b++) {
    const hex = b.toString(16).toUpperCase().padStart(2, '0');
    ids[b] = tokenToId.get(`<0x${hex}>`) ?? (b < 0x80 ? tokenToId.get(String.fromCharCode(b)) : undefined) ?? -1;
  }
  return ids;
}
