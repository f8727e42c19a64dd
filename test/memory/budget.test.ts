import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BudgetError, describePlan, parseMemory, planBudget } from '../../src/memory/budget.js';

test('parseMemory: decimal and binary units, bytes, percentages', () => {
  assert.equal(parseMemory('7GB'), 7e9);
  assert.equal(parseMemory('7.5 GiB'), 7.5 * 2 ** 30);
  assert.equal(parseMemory('512mb'), 512e6);
  assert.equal(parseMemory('123456'), 123456);
  assert.equal(parseMemory('50%', 1000), 500);
  for (const bad of ['', 'lots', '7XB', '-1GB', '0', '50%%']) assert.throws(() => parseMemory(bad, 10), BudgetError, bad);
  assert.throws(() => parseMemory('50%'), /percentage needs a model/);
});

test('planBudget: fits, leaves the rest to the neuron cache in flash modes', () => {
  const p = planBudget({ budget: 10e9, overhead: 1e8, resident: 5e9, kv: 1e9, activations: 1e7, minNeuronCache: 1e9, ctx: 2048 });
  assert.equal(p.neuronCache, 10e9 - 1e8 - 5e9 - 1e9 - 1e7);
  assert.equal(p.spare, 0);
  const r = planBudget({ budget: 10e9, overhead: 1e8, resident: 5e9, kv: 1e9, activations: 1e7, minNeuronCache: 0, ctx: 2048 });
  assert.equal(r.neuronCache, 0);
  assert.ok(r.spare > 0);
  assert.match(describePlan(r), /resident weights/);
});

test('planBudget: too small says by how much and what to change', () => {
  assert.throws(
    () => planBudget({ budget: 6e9, overhead: 1e8, resident: 5e9, kv: 2e9, activations: 1e7, minNeuronCache: 0, ctx: 4096 }),
    (e: Error) => e instanceof BudgetError && /1\.11 GB too small/.test(e.message) && /shorter --ctx/.test(e.message) && /--quant/.test(e.message),
  );
});

test('planBudget: flash read slots (hybrid/naive) are counted, and named when the budget is short', () => {
  const p = planBudget({ budget: 1e9, overhead: 1e8, resident: 3e8, kv: 1e8, activations: 1e7, slots: 4e8, minNeuronCache: 0, ctx: 512 });
  assert.equal(p.slots, 4e8);
  assert.equal(p.neuronCache, 0);
  assert.equal(p.spare, 1e9 - 1e8 - 3e8 - 1e8 - 1e7 - 4e8);
  assert.match(describePlan(p), /flash read slots/);
  assert.throws(
    () => planBudget({ budget: 8e8, overhead: 1e8, resident: 3e8, kv: 1e8, activations: 1e7, slots: 4e8, minNeuronCache: 0, ctx: 512 }),
    (e: Error) => e instanceof BudgetError && /110\.0 MB too small/.test(e.message) && /flash read slots 400\.0 MB/.test(e.message),
  );
});
