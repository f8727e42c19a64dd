// Sparse mode's machinery (predictor → neuron matrix → reads of missing records → FFN over the
// matrix rows with the CATS threshold) must compute exactly what the dense engine computes when
// nothing is skipped: every neuron predicted, threshold 0 (and, with a threshold, exactly what the
// dense engine computes with the same threshold applied to the exact gate).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { flashLayoutCached, greedyRun } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';
import { Model } from '../../src/engine/model.js';

const o: SynthOptions = { layers: 3, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 128, dtype: 'f32', act: 'silu', seed: 21, format: 'gguf' };
const prompt = [1, 300, 301, 302, 303];
const steps = 8;

for (const quant of ['q8_0', 'f32'] as const) {
  test(`sparse mode, every neuron predicted, threshold 0 = dense RAM mode bit for bit (${quant})`, async () => {
    const path = await flashLayoutCached(o, quant);
    const ram = await greedyRun(path, prompt, steps, { mode: 'ram' });
    const sp = await greedyRun(path, prompt, steps, { mode: 'sparse', predictor: 'all' });
    assert.deepEqual(sp.tokens, ram.tokens);
    for (let i = 0; i < steps; i++) assert.deepEqual(sp.logits[i], ram.logits[i], `step ${i}`);
    const z = sp.model.sparse!;
    // the first token reads every record of every layer; afterwards the window keeps them all
    assert.equal(z.src.stats.needed, o.layers * o.ffn);
    assert.equal(z.src.stats.hits, (prompt.length + steps - 2) * o.layers * o.ffn);
    assert.equal(z.stats.dropped, 0);
  });
}

test('sparse mode with thresholds = dense RAM mode with the same thresholds on the exact gate', async () => {
  const path = await flashLayoutCached(o, 'q8_0');
  const thr = new Float32Array([0.02, 0.05, 0.03]);
  const dense = await greedyRun(path, prompt, steps, { mode: 'ram' });
  const ram = await greedyRun(path, prompt, steps, { mode: 'ram', thresholds: thr });
  const sp = await greedyRun(path, prompt, steps, { mode: 'sparse', predictor: 'all', thresholds: thr });
  assert.deepEqual(sp.tokens, ram.tokens);
  for (let i = 0; i < steps; i++) assert.deepEqual(sp.logits[i], ram.logits[i], `step ${i}`);
  assert.ok(sp.model.sparse!.stats.dropped > 0, 'the thresholds dropped some activations');
  // and the thresholds did change the computation (the test would pass vacuously otherwise)
  assert.notDeepEqual(ram.logits[0], dense.logits[0]);
});

test('gate rule: t = −∞ is bit-identical to dense; finite τ = the same in RAM and sparse mode, and drops g < τ', async () => {
  const path = await flashLayoutCached(o, 'q8_0');
  const dense = await greedyRun(path, prompt, steps, { mode: 'ram' });
  const none = await greedyRun(path, prompt, steps, { mode: 'ram', thresholds: new Float32Array(3).fill(-Infinity), rule: 'gate' });
  for (let i = 0; i < steps; i++) assert.deepEqual(none.logits[i], dense.logits[i], `step ${i}`);
  const thr = new Float32Array([-0.05, 0, 0.02]);
  const ram = await greedyRun(path, prompt, steps, { mode: 'ram', thresholds: thr, rule: 'gate' });
  const sp = await greedyRun(path, prompt, steps, { mode: 'sparse', predictor: 'all', thresholds: thr, rule: 'gate' });
  assert.deepEqual(sp.tokens, ram.tokens);
  for (let i = 0; i < steps; i++) assert.deepEqual(sp.logits[i], ram.logits[i], `step ${i}`);
  assert.notDeepEqual(ram.logits[0], dense.logits[0]);
  // roughly half of the gate pre-activations of a random model are below ~0: a large share dropped
  const z = sp.model.sparse!.stats;
  assert.ok(z.dropped > 0.3 * z.computed && z.dropped < 0.7 * z.computed, `dropped ${z.dropped} of ${z.computed}`);
});

test('sparse mode with a small neuron matrix and no stream buffer: fewer rows than neurons, reads only what is missing', async () => {
  const path = await flashLayoutCached(o, 'q8_0');
  const m = await Model.load(path, { ctx: 16, mode: 'sparse', predictor: 'all', neuronCapacity: 100, window: 1, streamRows: 0 });
  try {
    await m.prefillAsync(prompt);
    const z = m.sparse!;
    for (const mat of z.src.matrices) {
      mat.check();
      assert.equal(mat.n, 100);
    }
    // the predictor trims its 192 candidates to the 100 rows there are; the window of one token keeps
    // them (each is used again), so only the first token reads anything
    assert.equal(z.src.stats.overflow, 0);
    assert.equal(z.stats.predicted, prompt.length * o.layers * 100);
    assert.equal(z.src.stats.needed, o.layers * 100);
  } finally {
    await m.close();
  }
});

test('sparse mode, matrix smaller than the predicted set: the rest streams through the stream buffer in chunks, same tokens as dense', async () => {
  const path = await flashLayoutCached(o, 'q8_0');
  const ram = await greedyRun(path, prompt, steps, { mode: 'ram' });
  // 192 neurons predicted per layer, 100 rows: 92 stream through chunks of 16 rows (6 chunks, double-buffered)
  const sp = await greedyRun(path, prompt, steps, { mode: 'sparse', predictor: 'all', neuronCapacity: 100, window: 1, streamRows: 16 });
  assert.deepEqual(sp.tokens, ram.tokens);
  // the chunks' contributions are added one by one: the same sum in another order (f32 rounding)
  for (let i = 0; i < steps; i++) {
    const a = sp.logits[i]!, b = ram.logits[i]!;
    let d = 0;
    for (let j = 0; j < a.length; j++) d = Math.max(d, Math.abs(a[j]! - b[j]!));
    assert.ok(d < 1e-3, `step ${i}: max |Δlogit| ${d}`);
  }
  const z = sp.model.sparse!;
  const passes = prompt.length + steps - 1;
  assert.equal(z.src.stats.overflow, 0);
  assert.equal(z.src.stats.streamed, passes * o.layers * 92);
  assert.equal(z.stats.predicted, passes * o.layers * o.ffn);
  assert.equal(z.stats.computed, passes * o.layers * o.ffn, 'every predicted neuron computed exactly once');
  for (const m of z.src.matrices) m.check();
});

test('sparse mode refuses a file without predictors, naming the fix', async () => {
  const path = await flashLayoutCached(o, 'q8_0');
  await assert.rejects(Model.load(path, { mode: 'sparse' }), /needs predictors.*flashlm calibrate/);
});

test('sparse mode, window 0 (no reuse): every token reads every predicted record again, same result', async () => {
  const path = await flashLayoutCached(o, 'q8_0');
  const ram = await greedyRun(path, prompt, 4, { mode: 'ram' });
  const sp = await greedyRun(path, prompt, 4, { mode: 'sparse', predictor: 'all', window: 0 });
  assert.deepEqual(sp.tokens, ram.tokens);
  for (let i = 0; i < 4; i++) assert.deepEqual(sp.logits[i], ram.logits[i], `step ${i}`);
  const s = sp.model.sparse!.src.stats;
  assert.equal(s.hits, 0);
  assert.equal(s.needed, (prompt.length + 3) * o.layers * o.ffn);
});

test('sparse mode under a budget: every budget too small is a BudgetError with the numbers, the smallest that loads has ≥ 1 row per layer', async () => {
  const path = await flashLayoutCached(o, 'q8_0');
  // bisect the smallest loadable --memory (bytes); every refusal on the way must be the planner's
  const tryLoad = async (memory: number): Promise<number | Error> => {
    try {
      const m = await Model.load(path, { ctx: 16, mode: 'sparse', predictor: 'all', memory });
      try { return m.sparse!.capacity; } finally { await m.close(); }
    } catch (e) {
      return e as Error;
    }
  };
  let lo = 1 << 20, hi = 1 << 30; // lo refused, hi loads
  assert.ok((await tryLoad(lo)) instanceof Error);
  assert.equal(typeof (await tryLoad(hi)), 'number');
  const refusals: Error[] = [];
  while (hi - lo > 1 << 16) {
    const mid = Math.floor((lo + hi) / 2);
    const r = await tryLoad(mid);
    if (r instanceof Error) { refusals.push(r); lo = mid; } else hi = mid;
  }
  assert.ok(refusals.length > 0);
  for (const e of refusals) {
    assert.equal(e.name, 'BudgetError', e.message);
    assert.match(e.message, /too small: needs .* minimum neuron cache/);
  }
  const cap = await tryLoad(hi);
  assert.ok(typeof cap === 'number' && cap >= 1, `capacity ${String(cap)}`);
});
