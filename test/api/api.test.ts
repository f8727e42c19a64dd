// The library API through the package entry (package.json "exports" → dist/src/index.js): loading
// with typed options, generate() as an async iterable of UTF-8 safe pieces, tokenize/detokenize,
// typed errors, concurrent generations (each its own KV pages), abort, chat-template discovery, close().
import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  loadModel, LanguageModel, BudgetError, ContextLengthError, KVBudgetError, ModelClosedError, NotFoundError, OptionsError, SamplingError,
  type TokenPiece,
} from 'flashlm';
import { greedyRun, synthModelCached, testDir } from '../helpers.js';
import { openModel } from '../../src/formats/source.js';
import { convertModel } from '../../src/formats/convert.js';
import { ggufVocabMetadataFromHFDir } from '../../src/tokenizer/index.js';
import type { Model } from '../../src/engine/model.js';

const SYNTH = { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 128, dtype: 'q8_0', act: 'silu', seed: 11 } as const;
const tiny = () => synthModelCached({ ...SYNTH, format: 'gguf' });

async function collect(it: AsyncIterable<TokenPiece>): Promise<TokenPiece[]> {
  const out: TokenPiece[] = [];
  for await (const p of it) out.push(p);
  return out;
}

test('the package entry resolves to dist/src/index.js', async () => {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { exports: { '.': { import: string } }; main: string; bin: unknown };
  assert.equal(pkg.exports['.'].import, './dist/src/index.js');
  assert.equal(pkg.main, 'dist/src/index.js');
  assert.ok(pkg.bin, 'bin kept');
  const self = await import('flashlm');
  const direct = await import('../../src/index.js');
  assert.equal(self.loadModel, direct.loadModel, 'bare "flashlm" is this package (self-reference through exports)');
});

test('generate: greedy ids equal the engine, pieces join to the tokens\' text, finish reasons', async () => {
  const path = await tiny();
  const lm = await loadModel(path, { ctx: 64, memory: '1GB', threads: 1 });
  try {
    assert.equal(lm.budget, 1e9);
    assert.equal(lm.ctx, 64);
    const ids = lm.tokenize('hello world');
    assert.equal(ids[0], 1, 'BOS first (the synth vocabulary adds it)');
    assert.deepEqual(lm.tokenize('hello world', { addBos: false }), ids.slice(1));
    const g = lm.generate('hello world', { maxTokens: 10 });
    assert.equal(g.promptTokens, ids.length);
    assert.equal(g.finishReason, undefined);
    const pieces = await collect(g);
    assert.equal(g.finishReason, 'length');
    assert.equal(pieces.length, 10);
    const ref = await greedyRun(path, ids, 10, { threads: 1 });
    assert.deepEqual(pieces.map((p) => p.id), ref.tokens);
    // the same ids as a token-id prompt give the same tokens
    assert.deepEqual((await collect(lm.generate(ids, { maxTokens: 10 }))).map((p) => p.id), ref.tokens);
    // pieces concatenate to the UTF-8 decoding of all token bytes (no character split across pieces)
    const tok = lm.engine.tokenizer;
    const bytes = Buffer.concat(pieces.map((p) => tok.tokenBytes(p.id)));
    assert.equal(pieces.map((p) => p.text).join(''), new TextDecoder().decode(bytes));
    for (const p of pieces) assert.ok(!/[\uD800-\uDBFF]$/.test(p.text), 'no lone high surrogate at a piece end');
    // detokenize is the tokenizer's decode
    assert.equal(lm.detokenize(ids), 'hello world');
    // sampled: same seed, same tokens
    const a = (await collect(lm.generate('hello', { maxTokens: 12, temperature: 1.5, topK: 0, topP: 1, seed: 5 }))).map((p) => p.id);
    const b = (await collect(lm.generate('hello', { maxTokens: 12, temperature: 1.5, topK: 0, topP: 1, seed: 5 }))).map((p) => p.id);
    assert.deepEqual(a, b);
    // default maxTokens: the rest of the context
    const all = await collect(lm.generate([1, 50], { temperature: 1, seed: 1, stopOnEog: false }));
    assert.equal(all.length, 62);
  } finally {
    await lm.close();
  }
});

test('UTF-8: byte-fallback tokens that split a character give one piece with the whole character', async () => {
  const lm = await loadModel(await tiny(), { ctx: 32, threads: 1 });
  try {
    // '€' = E2 82 AC: three byte tokens (<0xE2> is id 3 + 0xE2); hand them to the piece decoder
    // through a fake engine that "generates" exactly those ids, then a dangling E2 at the end
    const byteId = (b: number) => 3 + b;
    const a = lm.tokenize('a', { addBos: false })[0]!;
    const script = [byteId(0xe2), byteId(0x82), byteId(0xac), a, byteId(0xe2)];
    const fake = fakeEngine(lm.engine, script);
    const f = new LanguageModel(fake, undefined, undefined);
    const pieces = await collect(f.generate([1], { maxTokens: script.length }));
    assert.deepEqual(pieces.map((p) => p.id), script);
    assert.deepEqual(pieces.map((p) => p.text), ['', '', '€', new TextDecoder().decode(lm.engine.tokenizer.tokenBytes(a)), '\uFFFD']);
  } finally {
    await lm.close();
  }
});

/** A Model stand-in whose generate() yields `script` (real tokenizer), for finish/UTF-8 cases. */
function fakeEngine(real: Model, script: number[]): Model {
  let pos = 0;
  return {
    path: '/x/fake.gguf', tokenizer: real.tokenizer, cfg: real.cfg, ctx: 32, source: { kind: 'gguf', metadata: new Map() },
    get position() { return pos; }, warnings: [], reset() { pos = 0; }, flashStats: () => undefined, close: async () => {},
    openSequence: async () => ({ close() {} }), idle: async () => {},
    async *generate(prompt: number[], o: { maxTokens: number; stopOnEos?: boolean }) {
      pos = prompt.length;
      for (const id of script.slice(0, o.maxTokens)) {
        if ((o.stopOnEos ?? true) && id === real.tokenizer.eos) return;
        pos++;
        yield { id, bytes: real.tokenizer.tokenBytes(id) };
      }
    },
  } as unknown as Model;
}

test('end-of-generation token ends with finishReason stop and is not yielded', async () => {
  const lm = await loadModel(await tiny(), { ctx: 32, threads: 1 });
  try {
    const a = lm.tokenize('ab', { addBos: false });
    const f = new LanguageModel(fakeEngine(lm.engine, [...a, 2, ...a]), undefined, undefined);
    const g = f.generate([1], { maxTokens: 10 });
    assert.deepEqual((await collect(g)).map((p) => p.id), a);
    assert.equal(g.finishReason, 'stop');
    const g2 = f.generate([1], { maxTokens: 10, stopOnEog: false });
    assert.equal((await collect(g2)).length, 2 * a.length + 1);
  } finally {
    await lm.close();
  }
});

test('typed errors for bad options; generations side by side; abort; close', async () => {
  const path = await tiny();
  await assert.rejects(loadModel(path, { mode: 'fast' as never }), OptionsError);
  await assert.rejects(loadModel(path, { threads: 0 }), OptionsError);
  await assert.rejects(loadModel(path, { memory: '1KB' }), BudgetError);
  await assert.rejects(loadModel(path, { memory: 'lots' }), BudgetError);
  await assert.rejects(loadModel(join(testDir('api'), 'missing.gguf')), NotFoundError);
  const lm = await loadModel(path, { ctx: 16, threads: 1 });
  try {
    assert.throws(() => lm.generate('hello', { maxTokens: 16 }), ContextLengthError);
    assert.throws(() => lm.generate('hello', { temperature: -1 }), SamplingError);
    assert.throws(() => lm.generate([1, 9999]), OptionsError);
    assert.throws(() => lm.generate([]), OptionsError);
    assert.throws(() => lm.generate('hi', { maxTokens: 1.5 }), OptionsError);
    // the pool holds one full context (16 positions = 1 page): while a generation holds it, another
    // one that asks not to wait gets KVBudgetError; one that waits runs when the first is done
    const first = lm.generate('hi', { maxTokens: 5 })[Symbol.asyncIterator]();
    await first.next();
    assert.equal(lm.busy, true);
    assert.ok(lm.kv().used > 0 && lm.kv().reserved === 16);
    await assert.rejects(collect(lm.generate('hi', { maxTokens: 2, onKVFull: 'error' })), KVBudgetError);
    const waiting = collect(lm.generate('hi', { maxTokens: 2 }));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(lm.kvPages().waiting, 1);
    await first.return!(undefined);
    assert.equal((await waiting).length, 2);
    assert.equal(lm.busy, false);
    assert.equal(lm.kv().used, 0);
    // abort while waiting for KV room: no tokens, finish reason abort
    const hold = lm.generate('hi', { maxTokens: 5 })[Symbol.asyncIterator]();
    await hold.next();
    const ac0 = new AbortController();
    const w = lm.generate('hi', { maxTokens: 2, signal: ac0.signal });
    const wp = collect(w);
    ac0.abort();
    assert.deepEqual(await wp, []);
    assert.equal(w.finishReason, 'abort');
    await hold.return!(undefined);
    assert.equal(lm.kvPages().used, 0);
    // abort after two tokens
    const ac = new AbortController();
    const g = lm.generate('hi', { maxTokens: 10, signal: ac.signal });
    let n = 0;
    for await (const _ of g) if (++n === 2) ac.abort();
    assert.equal(n, 2);
    assert.equal(g.finishReason, 'abort');
    assert.equal((await collect(lm.generate('hi', { maxTokens: 3 }))).length, 3, 'usable after an abort');
  } finally {
    await lm.close();
  }
  assert.throws(() => lm.generate('hi'), ModelClosedError);
  await lm.close(); // idempotent
});

test('concurrent generations (paged KV): each equals its run alone; pages come back', async () => {
  const lm = await loadModel(await tiny(), { ctx: 48, threads: 1, sequences: 3, kvPositions: 'budget', kvPageSize: 4 });
  try {
    const prompts = ['The quick brown fox', 'def fibonacci(n):', 'hello'];
    const alone: string[] = [];
    for (const p of prompts) alone.push((await collect(lm.generate(p, { maxTokens: 20, stopOnEog: false }))).map((t) => t.text).join(''));
    const order: number[] = [];
    const together = await Promise.all(prompts.map(async (p, i) => {
      let s = '';
      for await (const t of lm.generate(p, { maxTokens: 20, stopOnEog: false })) {
        order.push(i);
        s += t.text;
      }
      return s;
    }));
    assert.deepEqual(together, alone);
    // round-robin: the first tokens of all three come before the last token of any
    const lastFirst = Math.max(...[0, 1, 2].map((i) => order.indexOf(i)));
    const firstLast = Math.min(...[0, 1, 2].map((i) => order.lastIndexOf(i)));
    assert.ok(lastFirst < firstLast, `interleaved: ${order.join('')}`);
    assert.deepEqual([lm.kvPages().used, lm.kvPages().sequences, lm.busy], [0, 0, false]);
  } finally {
    await lm.close();
  }
});

const TEMPLATE = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}";

test('chat template: HF tokenizer_config.json, GGUF tokenizer.chat_template, option override', async () => {
  const src = await synthModelCached({ ...SYNTH, dtype: 'f32', format: 'safetensors' });
  const dir = join(testDir('api-chat'), 'hf');
  cpSync(src, dir, { recursive: true });
  const cfgPath = join(dir, 'tokenizer_config.json');
  writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(readFileSync(cfgPath, 'utf8')), chat_template: TEMPLATE }));
  const hf = await loadModel(dir, { ctx: 16, threads: 1 });
  assert.equal(hf.chatTemplate, TEMPLATE);
  assert.equal(hf.bosToken, '<s>');
  assert.equal(hf.eosToken, '</s>');
  await hf.close();
  const gguf = join(testDir('api-chat'), 'chat.gguf');
  const m = openModel(dir, { extraMetadata: ggufVocabMetadataFromHFDir(dir) });
  try {
    convertModel(m, gguf, { quant: 'q8_0' });
  } finally {
    m.close();
  }
  const g = await loadModel(gguf, { ctx: 16, threads: 1 });
  assert.equal(g.chatTemplate, TEMPLATE);
  await g.close();
  const plain = await loadModel(await tiny(), { ctx: 16, threads: 1 });
  assert.equal(plain.chatTemplate, undefined);
  await plain.close();
  const over = await loadModel(await tiny(), { ctx: 16, threads: 1, chatTemplate: '{{ messages[0].content }}' });
  assert.equal(over.chatTemplate, '{{ messages[0].content }}');
  await over.close();
});
