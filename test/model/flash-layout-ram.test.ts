// A flash-layout file (FFN as [gate row | up row | down column] records) computed in RAM must give
// what the standard layout gives: with f32 parts exactly the same weights, so the same greedy tokens
// and logits equal up to summation order; with q8_0 the down columns are quantized along a different
// axis than the standard down rows, so only closeness is expected.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { flashLayoutCached, greedyRun, synthModelCached } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';

const o: SynthOptions = { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 128, dtype: 'f32', act: 'silu', seed: 5, format: 'gguf' };
const prompt = [1, 398, 259, 284, 272, 264, 390];

const greedy = (path: string, steps: number) => greedyRun(path, prompt, steps, { kvType: 'f32' });

const maxDiff = (a: Float32Array[], b: Float32Array[]) => Math.max(...a.map((x, i) => Math.max(...x.map((v, j) => Math.abs(v - b[i]![j]!)))));

for (const act of ['silu', 'relu'] as const) {
  test(`flash layout f32 in RAM equals the standard layout (${act})`, async () => {
    const std = await greedy(await synthModelCached({ ...o, act }), 24);
    const fl = await greedy(await flashLayoutCached({ ...o, act }, 'f32'), 24);
    assert.deepEqual(fl.tokens, std.tokens);
    assert.ok(maxDiff(fl.logits, std.logits) < 1e-4, `max |Δlogit| ${maxDiff(fl.logits, std.logits)}`);
  });
}

test('flash layout q8_0 in RAM is as accurate as the standard q8_0 layout', async () => {
  // Both quantize; they differ in where: the standard layout rounds the activation h to q8_0 before
  // D·h, the bundle keeps h in f32 but quantizes D's columns. Measure both against the f32 model.
  const f32 = await greedy(await synthModelCached(o), 1);
  const std = await greedy(await synthModelCached({ ...o, dtype: 'q8_0' }), 1);
  const fl = await greedy(await flashLayoutCached(o, 'q8_0'), 1);
  const rms = (a: Float32Array, b: Float32Array) => Math.sqrt(a.reduce((t, v, j) => t + (v - b[j]!) ** 2, 0) / a.length);
  const eStd = rms(std.logits[0]!, f32.logits[0]!);
  const eFl = rms(fl.logits[0]!, f32.logits[0]!);
  assert.ok(eStd > 0 && eFl > 0, 'both quantized');
  assert.ok(eFl <= 1.5 * eStd, `flash q8_0 rms error ${eFl} vs standard q8_0 ${eStd}`);
  assert.equal(fl.tokens[0], f32.tokens[0]);
});
