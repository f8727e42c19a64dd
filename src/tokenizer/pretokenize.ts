// Pre-tokenizers for byte-level BPE: the text is cut into words before merging.
// - gpt2Split: llama.cpp unicode_regex_split_custom_gpt2, the hand-written form of the GPT-2 regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// - regexSplit: any other regex (HF Split "Isolated"): matches and the text between them are words.
// \s is llama.cpp's whitespace set (JS's differs: it lacks U+0085 and has U+FEFF).

import { UnsupportedError } from '../formats/errors.js';

/** llama.cpp unicode_set_whitespace, as a character-class body */
export const WS_CLASS = '\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

const F_LETTER = 1, F_NUMBER = 2, F_WS = 4, F_OTHER = 8;
const RE_L = /\p{L}/u;
const RE_N = /\p{N}/u;
const RE_WS = new RegExp(`[${WS_CLASS}]`, 'u');
let flagCache: Uint8Array | undefined;

function cpFlags(cp: number): number {
  flagCache ??= new Uint8Array(0x110000);
  let f = flagCache[cp]!;
  if (f !== 0) return f;
  const s = String.fromCodePoint(cp);
  f = RE_L.test(s) ? F_LETTER : RE_N.test(s) ? F_NUMBER : F_OTHER;
  if (RE_WS.test(s)) f = (f & ~F_OTHER) | F_WS;
  flagCache[cp] = f;
  return f;
}

/** The GPT-2 pre-tokenizer (exactly llama.cpp's custom implementation). */
export function gpt2Split(text: string, out: string[]): void {
  // code points and their UTF-16 offsets
  const n16 = text.length;
  const cps = new Int32Array(n16);
  const offs = new Int32Array(n16 + 1);
  let n = 0;
  for (let i = 0; i < n16; ) {
    const cp = text.codePointAt(i)!;
    cps[n] = cp;
    offs[n++] = i;
    i += cp > 0xffff ? 2 : 1;
  }
  offs[n] = n16;
  const cpt = (p: number): number => (p < n ? cps[p]! : -1);
  const flags = (p: number): number => (p < n ? cpFlags(cps[p]!) : 0);
  let prevEnd = 0;
  const add = (end: number): void => {
    if (end > prevEnd) out.push(text.substring(offs[prevEnd]!, offs[end]!));
    prevEnd = end;
  };
  for (let pos = 0; pos < n; ) {
    const c = cps[pos]!;
    const f = cpFlags(c);
    if (c === 0x27 /* ' */ && pos + 1 < n) {
      const c1 = cps[pos + 1]!;
      if (c1 === 0x73 || c1 === 0x74 || c1 === 0x6d || c1 === 0x64) { // s t m d
        add((pos += 2));
        continue;
      }
      if (pos + 2 < n) {
        const c2 = cps[pos + 2]!;
        if ((c1 === 0x72 && c2 === 0x65) || (c1 === 0x76 && c2 === 0x65) || (c1 === 0x6c && c2 === 0x6c)) { // re ve ll
          add((pos += 3));
          continue;
        }
      }
    }
    let f2 = c === 0x20 ? flags(pos + 1) : f;
    if (f2 & F_LETTER) {
      if (c === 0x20) pos++;
      while (f2 & F_LETTER) f2 = flags(++pos);
      add(pos);
      continue;
    }
    if (f2 & F_NUMBER) {
      if (c === 0x20) pos++;
      while (f2 & F_NUMBER) f2 = flags(++pos);
      add(pos);
      continue;
    }
    if (f2 & F_OTHER) {
      if (c === 0x20) pos++;
      while (f2 & F_OTHER) f2 = flags(++pos);
      add(pos);
      continue;
    }
    let nws = 0;
    while (flags(pos + nws) & F_WS) nws++;
    if (nws > 1 && cpt(pos + nws) !== -1) {
      pos += nws - 1;
      add(pos);
      continue;
    }
    if (nws > 0) {
      pos += nws;
      add(pos);
      continue;
    }
    add(++pos);
  }
}

/** Split every piece by `re` (global, unicode): matches and the gaps between them both become pieces. */
export function regexSplit(pieces: string[], re: RegExp): string[] {
  const out: string[] = [];
  for (const p of pieces) {
    let last = 0;
    re.lastIndex = 0;
    for (let m = re.exec(p); m; m = re.exec(p)) {
      if (m[0].length === 0) {
        re.lastIndex++;
        continue;
      }
      if (m.index > last) out.push(p.substring(last, m.index));
      out.push(m[0]);
      last = m.index + m[0].length;
    }
    if (last < p.length) out.push(p.substring(last));
  }
  return out;
}

/**
 * A regex as written in tokenizer.json / llama.cpp (Oniguruma / Rust flavour) as a JS RegExp:
 * (?i:...) contractions spelled out, possessive quantifiers made greedy, \s / \S as llama.cpp's set.
 */
export function toJsRegex(pattern: string): RegExp {
  let p = pattern.replace("(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])");
  if (p.includes('(?i')) throw new UnsupportedError(`pre-tokenizer regex with (?i): ${pattern}`);
  let out = '';
  let inClass = false;
  for (let i = 0; i < p.length; i++) {
    const ch = p[i]!;
    if (ch === '\\' && i + 1 < p.length) {
      const e = p[i + 1]!;
      i++;
      if (e === 's') out += inClass ? WS_CLASS : `[${WS_CLASS}]`;
      else if (e === 'S' && !inClass) out += `[^${WS_CLASS}]`;
      else if ((e === 'p' || e === 'P') && p[i + 1] === '{') {
        const close = p.indexOf('}', i);
        out += '\\' + p.substring(i, close + 1); // \p{L} as a unit
        i = close;
      } else out += '\\' + e;
      continue;
    }
    if (inClass) {
      if (ch === ']') inClass = false;
      out += ch;
      continue;
    }
    if (ch === '[') {
      inClass = true;
      out += ch;
      if (p[i + 1] === '^') out += p[++i];
      if (p[i + 1] === ']') out += '\\' + p[++i]; // literal ] first in a class
      continue;
    }
    if ((ch === '+' || ch === '?' || ch === '*' || ch === '}') && p[i + 1] === '+') {
      out += ch; // possessive → greedy
      i++;
      continue;
    }
    out += ch;
  }
  p = out;
  try {
    return new RegExp(p, 'gu');
  } catch (e) {
    throw new UnsupportedError(`pre-tokenizer regex not supported (${(e as Error).message}): ${pattern}`);
  }
}

const LLAMA3 = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2 = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";

/** A pre-tokenizer: a sequence of steps, each 'gpt2' (the custom splitter) or a regex. */
export type PreStep = 'gpt2' | RegExp;

export function runPreSteps(text: string, steps: PreStep[]): string[] {
  let pieces = [text];
  for (const s of steps) {
    if (s === 'gpt2') {
      const out: string[] = [];
      for (const p of pieces) gpt2Split(p, out);
      pieces = out;
    } else {
      pieces = regexSplit(pieces, s);
    }
  }
  return pieces;
}

export interface PreTokenizerSpec { steps: PreStep[]; ignoreMerges: boolean; addBos?: boolean /* llama.cpp default before the KV */ }

/** llama.cpp's pre-tokenizer for tokenizer.ggml.pre (the common ones). */
export function preTokenizerForGGUF(pre: string): PreTokenizerSpec {
  const re = (...ps: string[]): PreStep[] => ps.map((p) => (p === GPT2 ? 'gpt2' : toJsRegex(p)));
  switch (pre) {
    case 'gpt-2': case 'phi-2': case 'jina-es': case 'jina-de': case 'gigachat': case 'jina-v2-es':
    case 'jina-v2-de': case 'a.x-4.0': case 'mellum': case 'modern-bert': case 'mpt': case 'olmo':
    case 'jais': case 'trillion': case 'granite-docling': case 'jina-v1-en': case 'jina-v2-code':
    case 'roberta-bpe':
      return { steps: ['gpt2'], ignoreMerges: false };
    case 'llama3': case 'llama-v3': case 'llama-bpe': case 'falcon3': case 'falcon-h1': case 'pixtral':
    case 'midm-2.0': case 'lfm2': case 'jina-v5-nano':
      return { steps: re(LLAMA3), ignoreMerges: true, addBos: true };
    case 'dbrx': case 'smaug-bpe':
      return { steps: re(LLAMA3), ignoreMerges: false };
    case 'qwen2': case 'deepseek-r1-qwen': case 'stablelm2': case 'hunyuan': case 'solar-open': case 'kormo':
    case 'f2llmv2':
      return { steps: re(QWEN2), ignoreMerges: false };
    case 'starcoder': case 'refact': case 'command-r': case 'smollm': case 'codeshell': case 'exaone':
    case 'minerva': case 'mellum2':
      return { steps: re('\\p{N}', GPT2), ignoreMerges: false };
    case 'falcon':
      return { steps: re('[\\p{P}\\$\\+<=>\\^~\\|`]+', GPT2, '[0-9][0-9][0-9]'), ignoreMerges: false };
    case '': case 'default':
      return { steps: re('[\\p{P}\\$\\+<=>\\^~\\|]+', GPT2, '\\p{N}+', '[0-9][0-9][0-9]'), ignoreMerges: false };
    default:
      throw new UnsupportedError(`tokenizer.ggml.pre '${pre}' is not supported (supported: gpt-2, llama-bpe, qwen2, starcoder, falcon, default and their aliases)`);
  }
}
