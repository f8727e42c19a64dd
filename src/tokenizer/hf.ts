// Hugging Face tokenizer directories.
// - tokenizerFromHFDir: tokenizer.json (BPE model) with HF tokenizers' semantics: Llama-style
//   (byte_fallback, '▁' for spaces: normalizer Prepend/Replace or pre-tokenizer Metaspace) → SpmTokenizer
//   with merge ranks; byte-level (ByteLevel pre-tokenizer / decoder) → BpeTokenizer. Added tokens,
//   tokenizer_config.json (add_bos_token, add_eos_token, bos/eos/unk tokens), config.json ids.
//   A directory with only tokenizer.model is read through ggufVocabMetadataFromHFDir.

import { join } from 'node:path';
import { FormatError, jsonSnippet, NotFoundError, UnsupportedError } from '../formats/errors.js';
import type { GGUFKV } from '../formats/gguf.js';
import { isFile } from '../formats/json-file.js';
import type { VocabData } from './base.js';
import { BpeTokenizer } from './bpe.js';
import { EOG_TEXTS, tokenizerFromGGUF } from './gguf-vocab.js';
import { components, type HFTokenizerFiles, isObj, type Json, readHFTokenizerFiles, templateSpecials, tokenText } from './hf-files.js';
import { ggufVocabMetadataFromHFDir } from './hf-gguf.js';
import { type PreStep, toJsRegex } from './pretokenize.js';
import { type SpmOptions, SpmTokenizer } from './spm.js';
import { TokenType, type TokenizerInfo } from './types.js';

interface TokenList { tokens: string[]; types: number[] }

/** tokens by id (holes: [PAD<id>], unused), with HF types: added special → control, added → user-defined. */
function tokenList(f: HFTokenizerFiles, byteFallback: boolean, unkText: string | undefined): TokenList {
  let n = 0;
  for (const id of f.vocab.values()) n = Math.max(n, id + 1);
  for (const a of f.added) n = Math.max(n, a.id + 1);
  const tokens = new Array<string>(n);
  const types = new Array<number>(n).fill(TokenType.UNUSED);
  for (const [t, id] of f.vocab) {
    tokens[id] = t;
    types[id] = byteFallback && /^<0x[0-9A-Fa-f]{2}>$/.test(t) ? TokenType.BYTE : t === unkText ? TokenType.UNKNOWN : TokenType.NORMAL;
  }
  for (const a of f.added) {
    tokens[a.id] = a.content;
    types[a.id] = a.content === unkText ? TokenType.UNKNOWN : a.special ? TokenType.CONTROL : TokenType.USER_DEFINED;
  }
  for (let i = 0; i < n; i++) tokens[i] ??= `[PAD${i}]`;
  return { tokens, types };
}

function normalizerFn(json: Json, path: string): ((s: string) => string) | undefined {
  const steps: ((s: string) => string)[] = [];
  for (const n of components(json.normalizer, 'normalizers')) {
    switch (n.type) {
      case 'NFC': case 'NFD': case 'NFKC': case 'NFKD': {
        const form = n.type;
        steps.push((s) => s.normalize(form));
        break;
      }
      case 'Lowercase': steps.push((s) => s.toLowerCase()); break;
      default: throw new UnsupportedError(`${path}: normalizer ${jsonSnippet(n.type)} is not supported for byte-level BPE`);
    }
  }
  return steps.length ? (s) => steps.reduce((x, f) => f(x), s) : undefined;
}

function byteLevelPre(json: Json, path: string): { steps: PreStep[]; addPrefixSpace: boolean } {
  const steps: PreStep[] = [];
  let addPrefixSpace = false;
  for (const p of components(json.pre_tokenizer, 'pretokenizers')) {
    if (p.type === 'ByteLevel') {
      if (p.add_prefix_space === true) addPrefixSpace = true;
      if (p.use_regex !== false) steps.push('gpt2');
    } else if (p.type === 'Split') {
      const pat = isObj(p.pattern) ? p.pattern : {};
      if (p.behavior !== 'Isolated' || p.invert === true) throw new UnsupportedError(`${path}: Split pre-tokenizer with behavior ${jsonSnippet(p.behavior)}${p.invert ? ' (inverted)' : ''} is not supported`);
      if (typeof pat.Regex === 'string') steps.push(toJsRegex(pat.Regex));
      else if (typeof pat.String === 'string') steps.push(new RegExp(pat.String.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gu'));
      else throw new FormatError(path, 'pre_tokenizer', 'Split without pattern');
    } else if (p.type === 'Digits') {
      steps.push(new RegExp(p.individual_digits === true ? '\\p{N}' : '\\p{N}+', 'gu'));
    } else {
      throw new UnsupportedError(`${path}: pre-tokenizer ${jsonSnippet(p.type)} is not supported`);
    }
  }
  return { steps, addPrefixSpace };
}

function spmOptions(json: Json, path: string): Pick<SpmOptions, 'prefix' | 'splitWords'> {
  let prefix: SpmOptions['prefix'] = 'never';
  let splitWords = false;
  let replaces = false;
  for (const n of components(json.normalizer, 'normalizers')) {
    if (n.type === 'Prepend' && n.prepend === '\u2581') prefix = 'every';
    else if (n.type === 'Replace' && isObj(n.pattern) && n.pattern.String === ' ' && n.content === '\u2581') replaces = true;
    else throw new UnsupportedError(`${path}: normalizer ${jsonSnippet(n)} is not supported for a Llama-style tokenizer`);
  }
  for (const p of components(json.pre_tokenizer, 'pretokenizers')) {
    if (p.type !== 'Metaspace') throw new UnsupportedError(`${path}: pre-tokenizer ${jsonSnippet(p.type)} is not supported for a Llama-style tokenizer`);
    if (p.replacement !== undefined && p.replacement !== '\u2581') throw new UnsupportedError(`${path}: Metaspace replacement ${jsonSnippet(p.replacement)}`);
    replaces = true;
    const scheme = typeof p.prepend_scheme === 'string' ? p.prepend_scheme : p.add_prefix_space === false ? 'never' : 'always';
    if (scheme !== 'always' && scheme !== 'first' && scheme !== 'never') throw new UnsupportedError(`${path}: Metaspace prepend_scheme ${scheme}`);
    if (prefix === 'never') prefix = scheme;
    splitWords = p.split !== false;
  }
  if (!replaces) throw new UnsupportedError(`${path}: BPE tokenizer that is neither byte-level nor '▁'-based (Llama) is not supported`);
  return { prefix, splitWords };
}

export function tokenizerFromHFDir(dir: string): TokenizerInfo {
  const tj = join(dir, 'tokenizer.json');
  if (!isFile(tj)) {
    if (isFile(join(dir, 'tokenizer.model'))) return tokenizerFromKVs(ggufVocabMetadataFromHFDir(dir));
    throw new NotFoundError(tj);
  }
  const f = readHFTokenizerFiles(dir);
  const model = f.json.model as Json;
  const byteFallback = model.byte_fallback === true;
  const unkText = typeof model.unk_token === 'string' ? model.unk_token : undefined;
  const { tokens, types } = tokenList(f, byteFallback, unkText);
  const t2i = new Map<string, number>();
  tokens.forEach((t, i) => t2i.set(t, i));
  for (const a of f.added) t2i.set(a.content, a.id);
  const idOf = (t: string | undefined): number => (t === undefined ? -1 : t2i.get(t) ?? -1);
  const tmpl = templateSpecials(f.json);
  const cfgId = (k: string): number => {
    const v = f.modelConfig[k];
    return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < tokens.length ? v : -1;
  };
  let bos = idOf(tokenText(f.config.bos_token) ?? tmpl.first);
  if (bos < 0) bos = cfgId('bos_token_id');
  let eos = idOf(tokenText(f.config.eos_token));
  if (eos < 0) eos = cfgId('eos_token_id');
  const unk = idOf(unkText ?? tokenText(f.config.unk_token));
  const addBos = typeof f.config.add_bos_token === 'boolean' ? f.config.add_bos_token : tmpl.first !== undefined && bos >= 0 && idOf(tmpl.first) === bos;
  const addEos = typeof f.config.add_eos_token === 'boolean' ? f.config.add_eos_token : tmpl.last !== undefined && eos >= 0 && idOf(tmpl.last) === eos;
  const eog = new Set<number>();
  if (eos >= 0) eog.add(eos);
  for (const a of f.added) if (a.special && EOG_TEXTS.has(a.content)) eog.add(a.id);
  const strip = new Map<number, { lstrip: boolean; rstrip: boolean }>();
  for (const a of f.added) if (a.lstrip || a.rstrip) strip.set(a.id, { lstrip: a.lstrip, rstrip: a.rstrip });
  const vocab: VocabData = { tokens, types, bos, eos, unk, addBos, addEos, eog, strip };
  const merges: [number, number][] = [];
  for (const [a, b] of f.merges) {
    const ia = f.vocab.get(a), ib = f.vocab.get(b);
    if (ia !== undefined && ib !== undefined) merges.push([ia, ib]);
  }
  const ignoreMerges = model.ignore_merges === true;
  if (f.kind === 'bytelevel') {
    const pre = byteLevelPre(f.json, tj);
    return new BpeTokenizer(vocab, { steps: pre.steps, addPrefixSpace: pre.addPrefixSpace, ignoreMerges, idMerges: merges, normalize: normalizerFn(f.json, tj) });
  }
  return new SpmTokenizer(vocab, {
    ...spmOptions(f.json, tj), pairs: 'merges', merges, byteFallback, fuseUnk: model.fuse_unk === true, ignoreMerges,
  });
}

function tokenizerFromKVs(kvs: GGUFKV[]): TokenizerInfo {
  return tokenizerFromGGUF(new Map(kvs.map((kv) => [kv.key, kv])));
}
