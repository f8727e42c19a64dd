// Perplexity: tokenNLL against a direct softmax, and the same perplexity from RAM and flash modes.
import assert from 'node:assert/strict';
import { test, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { perplexity, tokenNLL } from '../../src/engine/eval.js';
import { flashLayoutCached, testDir } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';

const dir = testDir('eval');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('tokenNLL = −log softmax(logits)[target], stable for large logits', () => {
  const l = new Float32Array([1, 2, 3, 4.5, -5]);
  const p = (i: number) => Math.exp(l[i]!) / [...l].reduce((s, x) => s + Math.exp(x), 0);
  for (let i = 0; i < l.length; i++) assert.ok(Math.abs(tokenNLL(l, i) + Math.log(p(i))) < 1e-9, `i=${i}`);
  // shifting every logit by a constant changes nothing, even when exp() would overflow
  const big = l.map((x) => x + 1000);
  for (let i = 0; i < l.length; i++) assert.ok(Math.abs(tokenNLL(big, i) - tokenNLL(l, i)) < 1e-9, `big i=${i}`);
});

test('perplexity is the same in ram, hybrid and naive mode, and scores the tokens it says', async () => {
  const o: SynthOptions = { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 64, dtype: 'f32', act: 'silu', seed: 8, format: 'gguf' };
  const model = await flashLayoutCached(o, 'q8_0');
  const text = path.join(dir, 'text.txt');
  fs.writeFileSync(text, 'def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n'.repeat(6));
  const r = await perplexity(model, { files: [text], ctx: 32, maxTokens: 50, load: { mode: 'ram' } });
  assert.equal(r.scored, 50);
  assert.ok(r.chunks >= 2, `chunks ${r.chunks}`);
  assert.ok(Number.isFinite(r.ppl) && r.ppl > 1, `ppl ${r.ppl}`);
  for (const mode of ['hybrid', 'naive'] as const) {
    const f = await perplexity(model, { files: [text], ctx: 32, maxTokens: 50, load: { mode } });
    assert.equal(f.ppl, r.ppl, mode);
  }
  await assert.rejects(perplexity(model, { files: [path.join(dir, 'none')], load: {} }), /not found/);
});
