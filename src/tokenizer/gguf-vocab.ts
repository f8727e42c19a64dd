// tokenizerFromGGUF: the tokenizer.ggml.* metadata read as llama.cpp's llama_vocab::impl::load does
// (defaults per model type, special ids, add_bos / add_eos / add_space_prefix, the text-based
// detection of eot / fim / end-of-generation tokens).

import { FormatError, UnsupportedError } from '../formats/errors.js';
import { GGUFValueType as VT, type GGUFKV } from '../formats/gguf.js';
import type { VocabData } from './base.js';
import { BpeTokenizer } from './bpe.js';
import { preTokenizerForGGUF } from './pretokenize.js';
import { SpmTokenizer } from './spm.js';
import type { TokenizerInfo } from './types.js';

const WHERE = 'GGUF metadata';

function get(meta: Map<string, GGUFKV>, key: string): GGUFKV | undefined {
  return meta.get(key);
}

function str(meta: Map<string, GGUFKV>, key: string): string | undefined {
  const kv = get(meta, key);
  if (!kv) return undefined;
  if (typeof kv.value !== 'string') throw new FormatError(WHERE, key, 'expected a string');
  return kv.value;
}

function bool(meta: Map<string, GGUFKV>, key: string): boolean | undefined {
  const kv = get(meta, key);
  if (!kv) return undefined;
  if (typeof kv.value === 'boolean') return kv.value;
  if (typeof kv.value === 'number' || typeof kv.value === 'bigint') return Number(kv.value) !== 0;
  throw new FormatError(WHERE, key, 'expected a bool');
}

function uint(meta: Map<string, GGUFKV>, key: string): number | undefined {
  const kv = get(meta, key);
  if (!kv) return undefined;
  const v = kv.value;
  if ((typeof v !== 'number' && typeof v !== 'bigint') || !Number.isInteger(Number(v))) {
    throw new FormatError(WHERE, key, 'expected an integer');
  }
  return Number(v);
}

function stringArray(meta: Map<string, GGUFKV>, key: string): string[] | undefined {
  const kv = get(meta, key);
  if (!kv) return undefined;
  if (!Array.isArray(kv.value) || (kv.value.length > 0 && typeof kv.value[0] !== 'string')) {
    throw new FormatError(WHERE, key, 'expected an array of strings');
  }
  return kv.value as string[];
}

function numberArray(meta: Map<string, GGUFKV>, key: string, n: number, types: number[]): ArrayLike<number> | undefined {
  const kv = get(meta, key);
  if (!kv) return undefined;
  const v = kv.value;
  if (kv.arrayType !== undefined && !types.includes(kv.arrayType)) {
    throw new FormatError(WHERE, key, `unexpected element type ${kv.arrayType}`);
  }
  if (typeof v !== 'object' || v === null || typeof (v as ArrayLike<unknown>).length !== 'number') {
    throw new FormatError(WHERE, key, 'expected an array');
  }
  const a = v as ArrayLike<unknown>;
  if (a.length < n) throw new FormatError(WHERE, key, `has ${a.length} entries for ${n} tokens`);
  if (a.length > 0 && typeof a[0] !== 'number') throw new FormatError(WHERE, key, 'expected numbers');
  return a as ArrayLike<number>;
}

// llama.cpp: tokens recognised by their text when the id is not in the metadata (they become control)
const DETECT: [string, string[]][] = [
  ['eot', ['<|eot_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>', '<|end_of_text|>', '<EOT>', '_<EOT>',
    '[EOT]', '<｜end▁of▁sentence｜>', '<end_of_utterance>']],
  ['eom', ['<|eom_id|>']],
  ['fim_pre', ['<|fim_prefix|>', '<fim-prefix>', '<fim_prefix>', '<｜fim▁begin｜>', '<PRE>', '▁<PRE>', '<|code_prefix|>', '<|prefix|>']],
  ['fim_suf', ['<|fim_suffix|>', '<fim-suffix>', '<fim_suffix>', '<｜fim▁hole｜>', '<SUF>', '▁<SUF>', '<|code_suffix|>', '<|suffix|>']],
  ['fim_mid', ['<|fim_middle|>', '<fim-middle>', '<fim_middle>', '<｜fim▁end｜>', '<MID>', '▁<MID>', '<|code_middle|>', '<|middle|>']],
  ['fim_pad', ['<|fim_pad|>', '<fim-pad>', '<fim_pad>', '<PAD>', '[PAD]']],
  ['fim_rep', ['<|fim_repo|>', '<|repo_name|>', '<fim-repo>', '<REPO>', '<reponame>']],
  ['fim_sep', ['<|file_sep|>']],
];
export const EOG_TEXTS = new Set(['<|eot_id|>', '<|im_end|>', '<|end|>', '<|return|>', '<|call|>', '<|flush|>', '<|calls|>',
  '<end_of_turn>', '<|endoftext|>', '</s>', '<|eom_id|>', '<EOT>', '_<EOT>', '[EOT]', '[EOS]', '<|end_of_text|>',
  '<end_of_utterance>', '<eos>', '<turn|>', '<|tool_response>', '<｜end▁of▁sentence｜>', '[e~[']);
const ID_KEYS: [string, string][] = [
  ['bos', 'bos_token_id'], ['eos', 'eos_token_id'], ['eot', 'eot_token_id'], ['eom', 'eom_token_id'],
  ['unk', 'unknown_token_id'], ['sep', 'seperator_token_id'], ['pad', 'padding_token_id'], ['mask', 'mask_token_id'],
  ['fim_pre', 'fim_pre_token_id'], ['fim_suf', 'fim_suf_token_id'], ['fim_mid', 'fim_mid_token_id'],
  ['fim_pad', 'fim_pad_token_id'], ['fim_rep', 'fim_rep_token_id'], ['fim_sep', 'fim_sep_token_id'],
  ['fim_pre', 'prefix_token_id'], ['fim_suf', 'suffix_token_id'], ['fim_mid', 'middle_token_id'], // deprecated names
];

export function tokenizerFromGGUF(meta: Map<string, GGUFKV>): TokenizerInfo {
  const model = str(meta, 'tokenizer.ggml.model');
  if (model === undefined) throw new FormatError(WHERE, 'tokenizer.ggml.model', 'missing');
  if (model !== 'llama' && model !== 'gpt2') {
    throw new UnsupportedError(`tokenizer.ggml.model '${model}' is not supported (supported: llama, gpt2)`);
  }
  const tokens = stringArray(meta, 'tokenizer.ggml.tokens');
  if (!tokens) throw new FormatError(WHERE, 'tokenizer.ggml.tokens', 'missing');
  const n = tokens.length;
  const rawScores = numberArray(meta, 'tokenizer.ggml.scores', n, [VT.FLOAT32, VT.INT32]);
  const types = numberArray(meta, 'tokenizer.ggml.token_type', n, [VT.INT32]) ?? new Int32Array(n).fill(1);

  const ids: Record<string, number> = {};
  let addBos: boolean, addEos = false;
  let pre = model === 'gpt2' ? preTokenizerForGGUF(str(meta, 'tokenizer.ggml.pre') ?? '') : undefined;
  if (model === 'llama') {
    Object.assign(ids, { bos: 1, eos: 2, unk: 0 });
    addBos = true;
  } else {
    Object.assign(ids, { bos: 11, eos: 11 });
    addBos = pre?.addBos ?? false;
  }
  const addSpacePrefix = bool(meta, 'tokenizer.ggml.add_space_prefix') ?? model === 'llama';
  for (const [name, key] of ID_KEYS) {
    if (ids[name] !== undefined && ids[name]! >= n) ids[name] = -1; // default out of range: disabled
    const v = uint(meta, `tokenizer.ggml.${key}`);
    if (v !== undefined && v < n) ids[name] = v;
  }
  addBos = bool(meta, 'tokenizer.ggml.add_bos_token') ?? addBos;
  addEos = bool(meta, 'tokenizer.ggml.add_eos_token') ?? addEos;

  // text-based detection (llama.cpp iterates its token_to_id map: one id per distinct text)
  const control = new Set<number>();
  const eog = new Set<number>();
  const last = new Map<string, number>();
  tokens.forEach((t, i) => last.set(t, i));
  for (const [text, id] of last) {
    for (const [name, list] of DETECT) {
      if ((ids[name] ?? -1) < 0 && list.includes(text)) {
        ids[name] = id;
        if (types[id] !== 3) control.add(id);
      }
    }
  }
  for (const name of ['fim_pad', 'fim_rep', 'fim_sep']) if ((ids[name] ?? -1) >= 0) eog.add(ids[name]!);
  for (const [text, id] of last) {
    if (EOG_TEXTS.has(text)) {
      eog.add(id);
      if (types[id] !== 3) control.add(id);
    }
  }
  for (const name of ['eos', 'eot', 'eom']) if ((ids[name] ?? -1) >= 0) eog.add(ids[name]!);

  const vocab: VocabData = {
    tokens, types, bos: ids.bos ?? -1, eos: ids.eos ?? -1, unk: ids.unk ?? -1, addBos, addEos, eog, control,
  };
  if (model === 'llama') {
    const scores = new Float32Array(n);
    if (rawScores) for (let i = 0; i < n; i++) scores[i] = rawScores[i]!;
    return new SpmTokenizer(vocab, { prefix: addSpacePrefix ? 'every' : 'never', pairs: 'score', scores });
  }
  const merges = stringArray(meta, 'tokenizer.ggml.merges');
  if (!merges) throw new FormatError(WHERE, 'tokenizer.ggml.merges', 'missing (required for gpt2 tokenizers)');
  pre ??= preTokenizerForGGUF('');
  return new BpeTokenizer(vocab, { steps: pre.steps, ignoreMerges: pre.ignoreMerges, textMerges: merges });
}
