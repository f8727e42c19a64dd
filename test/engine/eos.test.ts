// Stop on EOS through the real engine (Model.generate and the library's loadModel().generate), not a
// fake: a synth model is run once without stopping to learn its greedy tokens; a copy of the file
// whose metadata names the token produced at step j as EOS (tokenizer.ggml.eos_token_id) must then
// yield exactly the tokens before step j, never the EOS itself nor anything after it, and stop
// computing there (no further decode steps). The same with sampling (a seed): the sampled stream up to
// the first EOS. The weights are untouched, so with stopOnEos: false the copy gives the full stream.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Model, type GenerateOptions } from '../../src/engine/model.js';
import { GGUFValueType } from '../../src/formats/gguf.js';
import type { SynthOptions } from '../../src/engine/synth.js';
import { loadModel } from '../../src/index.js';
import type { TokenizerInfo } from '../../src/tokenizer/index.js';
import { synthModelCached, testDir } from '../helpers.js';

const SYNTH: SynthOptions = { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 64, dtype: 'f32', act: 'silu', seed: 5, format: 'gguf' };
const PROMPT = [1, 300, 301, 302];
const N = 24;

/** A copy of the GGUF at `src` whose tokenizer.ggml.eos_token_id (a uint32) is `eos`. */
function withEos(src: string, eos: number, name: string): string {
  const buf = readFileSync(src);
  const key = Buffer.from('tokenizer.ggml.eos_token_id');
  const at = buf.indexOf(key);
  assert.ok(at >= 8 && buf.indexOf(key, at + 1) < 0, 'the key occurs once');
  assert.equal(buf.readBigUInt64LE(at - 8), BigInt(key.length), 'a GGUF string: u64 length, then the bytes');
  const typeAt = at + key.length;
  assert.equal(buf.readUInt32LE(typeAt), GGUFValueType.UINT32);
  buf.writeUInt32LE(eos, typeAt + 4);
  const out = join(testDir('eos'), `${name}.gguf`);
  writeFileSync(out, buf);
  return out;
}

async function collect(m: Model, o: GenerateOptions): Promise<number[]> {
  const ids: number[] = [];
  for await (const t of m.generate(PROMPT, o)) ids.push(t.id);
  return ids;
}

/** The first step j ≥ from whose token did not occur before (so EOS = ref[j] first appears at j). */
function firstNewAt(ref: number[], from: number): number {
  for (let j = from; j < ref.length; j++) if (!ref.slice(0, j).includes(ref[j]!)) return j;
  return -1;
}

/** The engine's own end-of-generation test (Model.generate uses the same one). */
const isEog = (m: Model, id: number) => id === m.tokenizer.eos || !!(m.tokenizer as Partial<TokenizerInfo>).isEog?.(id);

async function withModel<T>(path: string, f: (m: Model) => Promise<T>): Promise<T> {
  const m = await Model.load(path, { ctx: PROMPT.length + N, threads: 1 });
  try {
    return await f(m);
  } finally {
    await m.close();
  }
}

test('greedy generation stops at the EOS token: the tokens before it, not it, nothing after', async () => {
  const base = await synthModelCached(SYNTH);
  const ref = await withModel(base, (m) => collect(m, { maxTokens: N, stopOnEos: false }));
  assert.equal(ref.length, N);
  assert.ok(new Set(ref).size >= 4, `the greedy stream varies (${ref.join(',')})`);
  // two cut points: early and late in the stream
  const cuts = [firstNewAt(ref, 1), firstNewAt(ref, Math.floor(N / 2))].filter((j) => j > 0);
  assert.ok(cuts.length >= 1, `a token that first appears after step 0 (${ref.join(',')})`);
  for (const j of new Set(cuts)) {
    const eos = ref[j]!;
    const path = withEos(base, eos, `greedy-${j}`);
    await withModel(path, async (m) => {
      assert.equal(m.tokenizer.eos, eos, 'the patched metadata is what the tokenizer reports');
      assert.ok(ref.slice(0, j).every((id) => !isEog(m, id)), 'no end-of-generation token before step j');
      const out = await collect(m, { maxTokens: N });
      assert.deepEqual(out, ref.slice(0, j), `stops at step ${j} (EOS ${eos})`);
      assert.ok(!out.includes(eos));
      // the prompt, then one decode per yielded token (the last yielded token is fed to get the
      // logits that chose EOS); EOS itself is never fed back
      assert.equal(m.times.prefilled, PROMPT.length);
      assert.equal(m.times.decoded, j, 'no decode step after EOS was sampled');
      assert.equal(m.position, PROMPT.length + j);
      // without stopping, the patched copy computes the same stream (only the stop differs)
      m.reset();
      assert.deepEqual(await collect(m, { maxTokens: N, stopOnEos: false }), ref);
    });
    // the library API: same ids, finishReason 'stop'; a maxTokens that ends before EOS is 'length'
    const lm = await loadModel(path, { ctx: PROMPT.length + N, threads: 1 });
    try {
      const g = lm.generate(PROMPT, { maxTokens: N });
      const ids: number[] = [];
      for await (const p of g) ids.push(p.id);
      assert.deepEqual(ids, ref.slice(0, j));
      assert.equal(g.finishReason, 'stop');
      const g2 = lm.generate(PROMPT, { maxTokens: j });
      const ids2: number[] = [];
      for await (const p of g2) ids2.push(p.id);
      assert.deepEqual(ids2, ref.slice(0, j));
      assert.equal(g2.finishReason, 'length', 'maxTokens reached before EOS was sampled');
    } finally {
      await lm.close();
    }
  }
});

test('sampled generation stops at the first sampled EOS (same seed, same stream up to it)', async () => {
  const base = await synthModelCached(SYNTH);
  const o = { maxTokens: N, temperature: 1.5, topK: 0, topP: 1, seed: 11 };
  const ref = await withModel(base, (m) => collect(m, { ...o, stopOnEos: false }));
  const j = firstNewAt(ref, 3);
  assert.ok(j > 0, `a sampled token that first appears after step 3 (${ref.join(',')})`);
  const path = withEos(base, ref[j]!, `sampled-${j}`);
  await withModel(path, async (m) => {
    assert.ok(ref.slice(0, j).every((id) => !isEog(m, id)));
    assert.deepEqual(await collect(m, o), ref.slice(0, j));
    assert.equal(m.times.decoded, j);
  });
});
