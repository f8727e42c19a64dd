// ggufVocabMetadataFromHFDir: the tokenizer.* KVs that llama.cpp's convert_hf_to_gguf.py writes for a
// HF directory (LlamaModel.set_vocab):
// - tokenizer.model present: _create_vocab_sentencepiece (pieces, scores, types from the protobuf;
//   added_tokens.json and tokenizer_config.json added_tokens_decoder on top; padded to config.json
//   vocab_size), model 'llama'.
// - else tokenizer.json, Llama-style: LlamaHfVocab (model 'llama'); deviation: llama.cpp gives every
//   token the score -1000, which makes its SPM merge order arbitrary; here a token made by merge rank r
//   scores -r, so llama.cpp's SPM tokenizer reproduces the BPE merges.
// - else tokenizer.json, byte-level: model 'gpt2' with merges (pre-tokenizer name from its regex).
// - SpecialVocab: bos/eos/unk/sep/pad/mask ids, add_bos/add_eos, chat_template; CodeLlama fim ids.

import { join } from 'node:path';
import { FormatError, NotFoundError, UnsupportedError } from '../formats/errors.js';
import { GGUFValueType as VT, type GGUFKV } from '../formats/gguf.js';
import { isFile, readJSONFile, readSmallFile } from '../formats/json-file.js';
import { components, configVocabSize, type HFTokenizerFiles, isObj, type Json, MAX_JSON_BYTES, readHFTokenizerFiles, templateSpecials, tokenText } from './hf-files.js';
import { parseSentencePieceModel } from './sentencepiece-model.js';
import { TokenType } from './types.js';

const MAX_SPM_BYTES = 64 << 20;

/** convert_hf_to_gguf.py does_token_look_special */
function looksSpecial(t: string): boolean {
  return ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(t) ||
    (t.startsWith('<|') && t.endsWith('|>')) || (t.startsWith('<｜') && t.endsWith('｜>')) ||
    (t.startsWith('<unused') && t.endsWith('>'));
}

function readOptionalJSON(path: string): Json {
  if (!isFile(path)) return {};
  const j = readJSONFile(path, MAX_JSON_BYTES);
  return isObj(j) ? j : {};
}

interface Vocab { tokens: string[]; scores?: Float32Array; types: Int32Array }

function vocabFromSentencePiece(dir: string, cfg: Json, mc: Json): Vocab {
  const path = join(dir, 'tokenizer.model');
  const sp = parseSentencePieceModel(readSmallFile(path, MAX_SPM_BYTES), path);
  const key = mc.vocab_size_per_layer_input !== undefined ? 'vocab_size_per_layer_input' : 'vocab_size';
  const hv = configVocabSize(join(dir, 'config.json'), key, mc[key], sp.pieces.length);
  const vocabSize = hv !== undefined && hv > 0 ? hv : sp.pieces.length;
  const tokens = Array.from({ length: vocabSize }, (_, i) => `[PAD${i}]`);
  const scores = new Float32Array(vocabSize).fill(-10000);
  const types = new Int32Array(vocabSize).fill(TokenType.UNUSED);
  for (let i = 0; i < Math.min(vocabSize, sp.pieces.length); i++) {
    const t = sp.types[i]!;
    tokens[i] = sp.pieces[i]!;
    scores[i] = sp.scores[i]!;
    // sentencepiece IsUnknown / IsControl / IsUnused / IsByte; user-defined pieces become normal
    types[i] = t === 2 || t === 3 || t === 5 || t === 6 ? t : TokenType.NORMAL;
  }
  const added = readOptionalJSON(join(dir, 'added_tokens.json'));
  for (const [text, id] of Object.entries(added)) {
    if (typeof id !== 'number' || id < 0 || id >= vocabSize) continue;
    tokens[id] = text;
    scores[id] = -1000;
    types[id] = TokenType.USER_DEFINED;
  }
  if (isObj(cfg.added_tokens_decoder)) {
    for (const [k, d] of Object.entries(cfg.added_tokens_decoder)) {
      const id = Number(k);
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize || !isObj(d) || typeof d.content !== 'string') continue;
      let text = d.content;
      if (d.special === true || looksSpecial(text)) {
        types[id] = TokenType.CONTROL;
      } else {
        text = text.replaceAll('\u2581', ' '); // pre-normalize user-defined spaces
        types[id] = TokenType.USER_DEFINED;
      }
      scores[id] = -1000;
      tokens[id] = text;
    }
  }
  return { tokens, scores, types };
}

/** ids of the tokens transformers lists as special (bos, eos, unk, pad, ... and additional ones) */
function specialIds(f: HFTokenizerFiles, t2i: Map<string, number>): Set<number> {
  const s = new Set<number>();
  for (const k of ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token']) {
    const id = t2i.get(tokenText(f.config[k]) ?? '\u0000');
    if (id !== undefined) s.add(id);
  }
  const extra = f.config.additional_special_tokens;
  if (Array.isArray(extra)) for (const e of extra) { const id = t2i.get(tokenText(e) ?? '\u0000'); if (id !== undefined) s.add(id); }
  for (const a of f.added) if (a.special) s.add(a.id);
  return s;
}

function vocabFromLlamaTokenizerJSON(f: HFTokenizerFiles): Vocab {
  let n = 0;
  for (const id of f.vocab.values()) n = Math.max(n, id + 1);
  for (const a of f.added) n = Math.max(n, a.id + 1);
  const tokens = new Array<string>(n);
  for (const [t, id] of f.vocab) tokens[id] = t;
  for (const a of f.added) tokens[a.id] ??= a.content;
  for (let i = 0; i < n; i++) tokens[i] ??= `[PAD${i}]`;
  const t2i = new Map<string, number>();
  tokens.forEach((t, i) => t2i.set(t, i));
  const special = specialIds(f, t2i);
  const addedIds = new Set(f.added.map((a) => a.id));
  const types = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const t = tokens[i]!;
    // deviation: LlamaHfVocab makes a non-special added token that is also in model.vocab normal, so
    // llama.cpp would not split it out of the text as HF does; here it is user-defined
    types[i] = /^<0x[0-9A-Fa-f]{2}>$/.test(t) ? TokenType.BYTE : special.has(i) ? TokenType.CONTROL
      : addedIds.has(i) ? TokenType.USER_DEFINED : TokenType.NORMAL;
    if (types[i] === TokenType.USER_DEFINED) tokens[i] = t.replaceAll('\u2581', ' ');
  }
  const scores = new Float32Array(n).fill(-1e6);
  for (let i = 0; i < n; i++) if (types[i] !== TokenType.NORMAL) scores[i] = 0;
  const seen = new Uint8Array(n);
  f.merges.forEach(([a, b], rank) => {
    const id = t2i.get(a + b);
    if (id !== undefined && !seen[id]) {
      seen[id] = 1;
      scores[id] = -rank;
    }
  });
  return { tokens, scores, types };
}

function preNameFor(json: Json): string {
  const pres = components(json.pre_tokenizer, 'pretokenizers');
  const regexes = pres.filter((p) => p.type === 'Split').map((p) => (isObj(p.pattern) ? p.pattern.Regex : undefined));
  const bl = pres.find((p) => p.type === 'ByteLevel');
  if (regexes.length === 0 && bl && bl.use_regex !== false) return 'gpt-2';
  if (regexes.length === 1 && typeof regexes[0] === 'string') {
    const r = regexes[0].replace("(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])");
    if (r === "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+") return 'llama-bpe';
    if (r === "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+") return 'qwen2';
  }
  throw new UnsupportedError('byte-level tokenizer.json with a pre-tokenizer llama.cpp knows only by its hash; supported: gpt-2, llama-bpe, qwen2');
}

function vocabFromByteLevelJSON(f: HFTokenizerFiles, mc: Json): Vocab {
  let n = configVocabSize(join(f.dir, 'config.json'), 'vocab_size', mc.vocab_size, f.vocab.size + f.added.length) ?? 0;
  for (const id of f.vocab.values()) n = Math.max(n, id + 1);
  for (const a of f.added) n = Math.max(n, a.id + 1);
  const tokens = new Array<string>(n);
  const types = new Int32Array(n).fill(TokenType.UNUSED);
  for (const [t, id] of f.vocab) { tokens[id] = t; types[id] = TokenType.NORMAL; }
  for (const a of f.added) {
    if (a.special || looksSpecial(a.content)) {
      tokens[a.id] = a.content;
      types[a.id] = TokenType.CONTROL;
    } else {
      tokens[a.id] = a.content.replaceAll('\u2581', ' ');
      types[a.id] = TokenType.USER_DEFINED;
    }
  }
  for (let i = 0; i < n; i++) tokens[i] ??= `[PAD${i}]`;
  return { tokens, types };
}

export function ggufVocabMetadataFromHFDir(dir: string): GGUFKV[] {
  const cfg = readOptionalJSON(join(dir, 'tokenizer_config.json'));
  const mc = readOptionalJSON(join(dir, 'config.json'));
  const hasSpm = isFile(join(dir, 'tokenizer.model'));
  const hasJson = isFile(join(dir, 'tokenizer.json'));
  if (!hasSpm && !hasJson) throw new NotFoundError(join(dir, 'tokenizer.model (or tokenizer.json)'));
  const f = hasJson ? readHFTokenizerFiles(dir) : undefined;
  const kvs: GGUFKV[] = [];
  const add = (key: string, type: number, value: GGUFKV['value'], arrayType?: number): void => {
    kvs.push(arrayType === undefined ? { key, type, value } : { key, type, value, arrayType });
  };
  if (typeof cfg.add_prefix_space === 'boolean') add('tokenizer.ggml.add_space_prefix', VT.BOOL, cfg.add_prefix_space);

  let v: Vocab;
  let model: 'llama' | 'gpt2' = 'llama';
  let pre = 'default';
  if (hasSpm) v = vocabFromSentencePiece(dir, cfg, mc);
  else if (f!.kind === 'spm') v = vocabFromLlamaTokenizerJSON(f!);
  else {
    model = 'gpt2';
    pre = preNameFor(f!.json);
    v = vocabFromByteLevelJSON(f!, mc);
  }
  add('tokenizer.ggml.model', VT.STRING, model);
  add('tokenizer.ggml.pre', VT.STRING, pre);
  add('tokenizer.ggml.tokens', VT.ARRAY, v.tokens, VT.STRING);
  if (v.scores) add('tokenizer.ggml.scores', VT.ARRAY, v.scores, VT.FLOAT32);
  add('tokenizer.ggml.token_type', VT.ARRAY, v.types, VT.INT32);
  if (model === 'gpt2') {
    const enc = (s: string): string => s.replaceAll(' ', '\u0120');
    add('tokenizer.ggml.merges', VT.ARRAY, f!.merges.map(([a, b]) => `${enc(a)} ${enc(b)}`), VT.STRING);
  }

  // SpecialVocab
  const n = v.tokens.length;
  const ids = new Map<string, number>();
  const addFlags = new Map<string, boolean>();
  const setId = (typ: string, id: unknown): void => {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= n || ids.has(typ)) return;
    ids.set(typ, id);
  };
  const types = ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask'];
  const tc: Json = { ...cfg };
  if (f) {
    const t = templateSpecials(f.json);
    let bos = tokenText(tc.bos_token), eos = tokenText(tc.eos_token);
    if (t.first !== undefined) {
      if (!hasConfig(cfg)) bos = t.first;
      else if (t.first !== bos && t.first !== tokenText(tc.cls_token) && !bos) tc.bos_token = bos = t.first;
      addFlags.set('bos', t.first === bos || t.first === tokenText(tc.cls_token));
    }
    if (t.last !== undefined) {
      if (!hasConfig(cfg)) eos = t.last;
      addFlags.set('eos', t.last === eos);
    }
  }
  if (hasConfig(cfg)) {
    for (const typ of types) {
      const a = cfg[`add_${typ}_token`];
      if (typeof a === 'boolean') addFlags.set(typ, a);
      const content = tokenText(tc[`${typ}_token`]);
      if (content === undefined) continue;
      setId(typ, f?.added.find((x) => x.content === content)?.id);
    }
  }
  const textConfig = isObj(mc.text_config) ? mc.text_config : {};
  for (const typ of types) setId(typ, mc[`${typ}_token_id`] ?? textConfig[`${typ}_token_id`]);
  const keyOf: Record<string, string> = {
    bos: 'bos_token_id', eos: 'eos_token_id', unk: 'unknown_token_id', sep: 'seperator_token_id',
    pad: 'padding_token_id', mask: 'mask_token_id',
  };
  for (const [typ, id] of ids) if (keyOf[typ]) add(`tokenizer.ggml.${keyOf[typ]}`, VT.UINT32, id);
  for (const typ of ['bos', 'eos', 'sep']) {
    const a = addFlags.get(typ);
    if (a !== undefined) add(`tokenizer.ggml.add_${typ}_token`, VT.BOOL, a);
  }
  const ct = cfg.chat_template;
  if (typeof ct === 'string') add('tokenizer.chat_template', VT.STRING, ct);
  else if (isFile(join(dir, 'chat_template.jinja'))) {
    add('tokenizer.chat_template', VT.STRING, new TextDecoder().decode(readSmallFile(join(dir, 'chat_template.jinja'), MAX_JSON_BYTES)));
  }
  // CodeLlama (vocab_size 32016): fill-in-the-middle tokens
  if (model === 'llama' && (mc.vocab_size ?? 32000) === 32016) {
    const fim: [string, number][] = [['prefix_token_id', 32007], ['suffix_token_id', 32008], ['middle_token_id', 32009], ['eot_token_id', 32010]];
    for (const [k, id] of fim) if (id < n) add(`tokenizer.ggml.${k}`, VT.UINT32, id);
  }
  if (kvs.length !== new Set(kvs.map((k) => k.key)).size) throw new FormatError(dir, 'tokenizer metadata', 'duplicate key');
  return kvs;
}

function hasConfig(cfg: Json): boolean {
  return Object.keys(cfg).length > 0;
}
