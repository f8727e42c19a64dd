import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeLiveness, findClash, LivenessError, planLiveness, sequentialPlan, type LiveBuffer } from '../../src/memory/liveness.js';
import { activationBuffers, ACT_STEPS, type LlamaConfig } from '../../src/model/llama.js';

test('planLiveness: buffers with disjoint lifetimes share bytes, overlapping ones never do', () => {
  const bufs: LiveBuffer[] = [
    { name: 'a', bytes: 100, live: [[0, 1]] },
    { name: 'b', bytes: 100, live: [[2, 3]] }, // after a: may take a's place
    { name: 'c', bytes: 50, live: [[1, 2]] }, // meets both
  ];
  const p = planLiveness(bufs, 64);
  assert.equal(p.offsets.a, p.offsets.b);
  assert.equal(p.naiveBytes, 128 + 128 + 64);
  assert.equal(p.bytes, 128 + 64);
  assert.equal(findClash(p), undefined);
  assert.equal(findClash(sequentialPlan(bufs)), undefined);
  // a plan that puts c over a is caught
  assert.deepEqual(findClash({ ...p, offsets: { a: 0, b: 0, c: 64 } }), ['a', 'c']);
});

test('planLiveness: random buffers — no clash, peak between the busiest step and the naive sum', () => {
  let seed = 12345;
  const r = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let trial = 0; trial < 200; trial++) {
    const steps = 2 + Math.floor(r() * 12);
    const bufs: LiveBuffer[] = Array.from({ length: 1 + Math.floor(r() * 14) }, (_, i) => {
      const live: [number, number][] = [];
      for (let k = 0, n = 1 + Math.floor(r() * 3); k < n; k++) {
        const a = Math.floor(r() * steps);
        live.push([a, a + Math.floor(r() * 3)]);
      }
      return { name: `b${i}`, bytes: Math.floor(r() * 5000), live };
    });
    const p = planLiveness(bufs, 64);
    assert.equal(findClash(p), undefined, `trial ${trial}`);
    assert.ok(p.bytes <= p.naiveBytes);
    let busiest = 0;
    for (let s = 0; s < steps + 3; s++) {
      busiest = Math.max(busiest, bufs.filter((b) => b.live.some(([a, z]) => a <= s && s <= z)).reduce((t, b) => t + Math.ceil(b.bytes / 64) * 64, 0));
    }
    assert.ok(p.bytes >= busiest, `trial ${trial}: peak ${p.bytes} below the busiest step ${busiest}`);
    for (const b of bufs) assert.equal(p.offsets[b.name]! % 64, 0);
  }
});

test('planLiveness refuses bad input with LivenessError', () => {
  assert.throws(() => planLiveness([{ name: 'a', bytes: 1, live: [[0, 0]] }, { name: 'a', bytes: 1, live: [[0, 0]] }]), LivenessError);
  assert.throws(() => planLiveness([{ name: 'a', bytes: -1, live: [[0, 0]] }]), LivenessError);
  assert.throws(() => planLiveness([{ name: 'a', bytes: 1, live: [[2, 1]] }]), LivenessError);
  assert.throws(() => planLiveness([{ name: 'a', bytes: 1, live: [] }]), LivenessError);
  assert.throws(() => planLiveness([], 3), LivenessError);
});

test('llama activation buffers: the liveness plan is smaller than the naive sum and clash-free', () => {
  const cfg: LlamaConfig = {
    dim: 5120, nLayers: 40, nHeads: 40, nKvHeads: 40, headDim: 128, ffnDim: 13824, vocabSize: 32016, ctxLen: 16384,
    normEps: 1e-5, ropeTheta: 1e6, ropeDim: 128, act: 'silu',
  };
  for (const ctx of [64, 4096]) {
    for (const logits of [false, true]) {
      const p = planLiveness(activationBuffers(cfg, ctx, logits));
      assert.equal(findClash(p), undefined);
      assert.ok(p.bytes < p.naiveBytes, `ctx ${ctx}: peak ${p.bytes} vs naive ${p.naiveBytes}`);
      const text = describeLiveness(p, ACT_STEPS);
      assert.match(text, /peak .* vs naive sum/);
      assert.match(text, /scores .* live: attention/);
    }
  }
});
