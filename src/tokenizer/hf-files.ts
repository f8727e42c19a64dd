// Reading a Hugging Face tokenizer directory: tokenizer.json (BPE model), tokenizer_config.json, config.json.

import { join } from 'node:path';
import { FormatError, jsonSnippet, UnsupportedError } from '../formats/errors.js';
import { isFile, readJSONFile } from '../formats/json-file.js';

export const MAX_JSON_BYTES = 256 << 20;

export type Json = Record<string, unknown>;

/**
 * The number of token ids a vocabulary with `entries` listed tokens may span. Ids may leave holes
 * (padded vocabularies; the holes become [PAD<id>] tokens), but every hole costs memory, so a small
 * file must not claim a huge id: at most `entries + 65536` holes, and never 2^24 ids or more (the
 * largest vocabulary the model accepts).
 */
export function maxTokenIds(entries: number): number {
  return Math.min(1 << 24, 2 * entries + 65536);
}

/** A vocabulary size from config.json (vocab_size), checked against maxTokenIds(entries); undefined when absent or not a number. */
export function configVocabSize(file: string, key: string, v: unknown, entries: number): number | undefined {
  if (v === undefined || v === null || typeof v !== 'number') return undefined;
  const limit = maxTokenIds(entries);
  if (!Number.isInteger(v) || v < 0 || v > limit) {
    throw new FormatError(file, key, `${v} is not a vocabulary size for ${entries} tokens (an integer in [0, ${limit}])`);
  }
  return v;
}
export const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface AddedToken { id: number; content: string; special: boolean; lstrip: boolean; rstrip: boolean; normalized: boolean }

/** What tokenizer.json (+ tokenizer_config.json, config.json) says, checked. */
export interface HFTokenizerFiles {
  dir: string;
  json: Json; // tokenizer.json
  config: Json; // tokenizer_config.json ({} when absent)
  modelConfig: Json; // config.json ({} when absent)
  vocab: Map<string, number>;
  added: AddedToken[];
  merges: [string, string][];
  kind: 'spm' | 'bytelevel';
}

export function readHFTokenizerFiles(dir: string): HFTokenizerFiles {
  const path = join(dir, 'tokenizer.json');
  const json = readJSONFile(path, MAX_JSON_BYTES);
  if (!isObj(json)) throw new FormatError(path, 'top level', 'not an object');
  const model = json.model;
  if (!isObj(model)) throw new FormatError(path, 'model', 'missing');
  if (model.type !== 'BPE' && !(model.type === undefined && 'merges' in model)) {
    throw new UnsupportedError(`${path}: model type ${jsonSnippet(model.type)} is not supported (only BPE)`);
  }
  if (model.continuing_subword_prefix || model.end_of_word_suffix) {
    throw new UnsupportedError(`${path}: BPE with continuing_subword_prefix / end_of_word_suffix is not supported`);
  }
  if (!isObj(model.vocab)) throw new FormatError(path, 'model.vocab', 'missing');
  const vocab = new Map<string, number>();
  const entries = Object.entries(model.vocab);
  const rawAdded: unknown[] = Array.isArray(json.added_tokens) ? json.added_tokens : [];
  const limit = maxTokenIds(entries.length + rawAdded.length);
  for (const [t, id] of entries) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) throw new FormatError(path, `model.vocab['${t}']`, `bad id ${jsonSnippet(id)}`);
    if (id >= limit) throw new FormatError(path, `model.vocab['${t}']`, `id ${id} is beyond the ${limit} ids a vocabulary of ${entries.length} tokens may use`);
    vocab.set(t, id);
  }
  const merges: [string, string][] = [];
  const rawMerges = model.merges ?? [];
  if (!Array.isArray(rawMerges)) throw new FormatError(path, 'model.merges', 'not an array');
  for (const m of rawMerges) {
    if (typeof m === 'string') {
      const sp = m.indexOf(' ');
      if (sp < 0) throw new FormatError(path, 'model.merges', `bad merge '${m}'`);
      merges.push([m.substring(0, sp), m.substring(sp + 1)]);
    } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') {
      merges.push([m[0], m[1]]);
    } else {
      throw new FormatError(path, 'model.merges', 'bad entry');
    }
  }
  const added: AddedToken[] = [];
  for (const a of rawAdded) {
    if (!isObj(a) || typeof a.id !== 'number' || typeof a.content !== 'string') throw new FormatError(path, 'added_tokens', `bad entry ${jsonSnippet(a)}`);
    if (!Number.isInteger(a.id) || a.id < 0 || a.id >= limit) throw new FormatError(path, 'added_tokens', `bad id ${a.id} (must be an integer in [0, ${limit}))`);
    added.push({ id: a.id, content: a.content, special: a.special === true, lstrip: a.lstrip === true, rstrip: a.rstrip === true, normalized: a.normalized !== false });
  }
  const cfgPath = join(dir, 'tokenizer_config.json');
  const config = isFile(cfgPath) ? readJSONFile(cfgPath, MAX_JSON_BYTES) : {};
  const mcPath = join(dir, 'config.json');
  const modelConfig = isFile(mcPath) ? readJSONFile(mcPath, MAX_JSON_BYTES) : {};
  const kind = isByteLevel(json) ? 'bytelevel' : 'spm';
  return { dir, json, config: isObj(config) ? config : {}, modelConfig: isObj(modelConfig) ? modelConfig : {}, vocab, added, merges, kind };
}

/** The components of a normalizer / pre-tokenizer / ... with Sequences flattened, in order.
 * Iterative: a hostile file may nest Sequences deeper than the call stack. */
export function components(v: unknown, listKey: string): Json[] {
  const out: Json[] = [];
  const stack: unknown[] = [v];
  while (stack.length) {
    const x = stack.pop();
    if (!isObj(x)) continue;
    if (x.type === 'Sequence' && Array.isArray(x[listKey])) {
      const list = x[listKey] as unknown[];
      for (let i = list.length - 1; i >= 0; i--) stack.push(list[i]);
    } else {
      out.push(x);
    }
  }
  return out;
}

function isByteLevel(json: Json): boolean {
  return components(json.pre_tokenizer, 'pretokenizers').some((p) => p.type === 'ByteLevel') ||
    (isObj(json.decoder) && json.decoder.type === 'ByteLevel');
}

/** tokenizer_config-style token entry: "text" or {content: "text"} */
export function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isObj(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

export function templateSpecials(json: Json): { first?: string; last?: string } {
  for (const p of components(json.post_processor, 'processors')) {
    if (p.type !== 'TemplateProcessing' || !Array.isArray(p.single)) continue;
    const single = p.single as unknown[];
    const sp = (e: unknown): string | undefined => (isObj(e) && isObj(e.SpecialToken) && typeof e.SpecialToken.id === 'string' ? e.SpecialToken.id : undefined);
    return { first: single.length > 1 ? sp(single[0]) : undefined, last: single.length > 1 ? sp(single[single.length - 1]) : undefined };
  }
  return {};
}

