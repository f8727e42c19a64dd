// The sampler itself (src/engine/sample.ts), on logits with known probabilities: top-k keeps exactly
// the k largest logits, top-p the smallest prefix (by probability) whose mass reaches p, top-k runs
// before top-p (top-p sees the top-k distribution renormalised, as in llama.cpp's chain), the
// temperature reshapes what is left (p^(1/T)), temperature 0 is greedy whatever the other options,
// and a seed fixes the draws. Draws are seeded, so every count below is deterministic; the tolerances
// only keep the checks independent of the particular generator.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { argmax, mulberry32, Sampler, SamplingError, type SamplingOptions } from '../../src/engine/sample.js';

/** Logits whose softmax is `probs` (natural log), placed at the given ids of a vocab of `vocab`; the
 * other ids get -Infinity-like logits (probability ~0, but still valid candidates for the sampler). */
function logitsFromProbs(vocab: number, at: number[], probs: number[], rest = -1e4): Float32Array {
  const l = new Float32Array(vocab).fill(rest);
  at.forEach((id, i) => (l[id] = Math.log(probs[i]!)));
  return l;
}

/** `draws` tokens from one sampler per seed (seeds 0..seeds-1), `perSeed` draws each; id → count. */
function histogram(logits: Float32Array, o: SamplingOptions, seeds: number, perSeed = 1): Map<number, number> {
  const h = new Map<number, number>();
  for (let s = 0; s < seeds; s++) {
    const sm = new Sampler(logits.length, { ...o, seed: s });
    for (let i = 0; i < perSeed; i++) {
      const id = sm.sample(logits);
      h.set(id, (h.get(id) ?? 0) + 1);
    }
  }
  return h;
}

const sortedKeys = (h: Map<number, number>) => [...h.keys()].sort((a, b) => a - b);

/** Observed frequencies match `expect` (id → probability) within `tol`, and nothing else was drawn. */
function assertFrequencies(h: Map<number, number>, expect: Map<number, number>, tol: number, what: string): void {
  const total = [...h.values()].reduce((a, b) => a + b, 0);
  assert.deepEqual(sortedKeys(h), [...expect.keys()].sort((a, b) => a - b), `${what}: drawn ids`);
  for (const [id, p] of expect) {
    const f = (h.get(id) ?? 0) / total;
    assert.ok(Math.abs(f - p) <= tol, `${what}: id ${id} drawn with frequency ${f.toFixed(4)}, expected ${p.toFixed(4)} ± ${tol}`);
  }
}

test('top-k: only the k largest logits are ever drawn, and each of them is', () => {
  const vocab = 300;
  const rnd = mulberry32(12345);
  const logits = new Float32Array(vocab);
  for (let i = 0; i < vocab; i++) logits[i] = (rnd() - 0.5) * 4; // distinct values (2^-32 grid)
  const byLogit = Array.from({ length: vocab }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]!);
  for (const k of [1, 2, 5, 17]) {
    const topk = new Set(byLogit.slice(0, k));
    // a high temperature flattens the distribution: without truncation, ids outside the top k would
    // make up most draws (the top 17 of 300 logits in [-2, 2) carry about 10% of the mass at T = 3)
    const h = histogram(logits, { temperature: 3, topK: k, topP: 1 }, 200, 10);
    for (const id of h.keys()) assert.ok(topk.has(id), `top-k ${k}: drew id ${id} (rank ${byLogit.indexOf(id)})`);
    assert.equal(h.size, k, `top-k ${k}: every one of the k candidates is drawn at T = 3 over 2000 draws`);
  }
  // top-k 0 (off) and top-k ≥ vocab keep everything: at T = 3 over 2000 draws, far more than 17 ids
  const all = histogram(logits, { temperature: 3, topK: 0, topP: 1 }, 200, 10);
  assert.ok(all.size > 150, `top-k off drew only ${all.size} distinct ids`);
  const big = histogram(logits, { temperature: 3, topK: vocab + 5, topP: 1 }, 200, 10);
  assert.ok(big.size > 150, `top-k > vocab drew only ${big.size} distinct ids`);
  // top-k 1 is greedy at any temperature and seed
  for (let s = 0; s < 50; s++) assert.equal(new Sampler(vocab, { temperature: 10, topK: 1, topP: 1, seed: s }).sample(logits), byLogit[0]);
});

test('top-k: the k kept tokens are drawn in proportion to their (renormalised) probabilities', () => {
  // probabilities 0.3, 0.25, 0.2, 0.15, 0.1 at scattered ids; top-k 3 keeps 0.3, 0.25, 0.2 → /0.75
  const at = [40, 7, 93, 2, 61];
  const l = logitsFromProbs(100, at, [0.3, 0.25, 0.2, 0.15, 0.1]);
  const h = histogram(l, { temperature: 1, topK: 3, topP: 1 }, 5000);
  assertFrequencies(h, new Map([[40, 0.4], [7, 1 / 3], [93, 0.2 / 0.75]]), 0.03, 'top-k 3');
});

test('top-p keeps the smallest set of most likely tokens whose probability reaches p', () => {
  // probabilities 0.4, 0.3, 0.2, 0.1 (sum 1; the other 60 ids ~0) at scattered ids
  const at = [17, 3, 42, 58];
  const probs = [0.4, 0.3, 0.2, 0.1];
  const l = logitsFromProbs(64, at, probs);
  const expectKept = (n: number) => new Map(at.slice(0, n).map((id, i) => [id, probs[i]! / probs.slice(0, n).reduce((a, b) => a + b, 0)]));
  // p just below / above each cumulative mass 0.4, 0.7, 0.9, 1 (the boundaries themselves would test
  // float rounding in log/exp, not the rule)
  const cases: [number, number][] = [[0.1, 1], [0.39, 1], [0.41, 2], [0.69, 2], [0.71, 3], [0.89, 3], [0.91, 4], [1, 4]];
  for (const [p, n] of cases) {
    const h = histogram(l, { temperature: 1, topK: 0, topP: p }, 4000);
    assertFrequencies(h, expectKept(n), 0.03, `top-p ${p}`);
  }
});

test('top-p with ties and a long tail: the tail beyond p is never drawn', () => {
  // 10 likely ids share 0.9 equally (0.09 each), 990 ids share 0.1 (~1e-4 each). top-p 0.85 needs
  // ceil(0.85 / 0.09) = 10 of the likely ids; no tail id may appear. Without top-p the tail carries
  // 10% of the draws (~300 of 3000).
  const vocab = 1000;
  const l = new Float32Array(vocab).fill(Math.log(0.1 / 990));
  const likely = [5, 105, 205, 305, 405, 505, 605, 705, 805, 905];
  for (const id of likely) l[id] = Math.log(0.09);
  const h = histogram(l, { temperature: 1, topK: 0, topP: 0.85 }, 3000);
  assert.deepEqual(sortedKeys(h), likely);
  const off = histogram(l, { temperature: 1, topK: 0, topP: 1 }, 3000);
  const tail = [...off.entries()].filter(([id]) => !likely.includes(id)).reduce((a, [, c]) => a + c, 0);
  assert.ok(tail > 200 && tail < 400, `without top-p the tail got ${tail} of 3000 draws (expected ~300)`);
});

test('top-k runs before top-p: top-p sees the top-k distribution renormalised', () => {
  const at = [17, 3, 42, 58];
  const l = logitsFromProbs(64, at, [0.4, 0.3, 0.2, 0.1]);
  // top-k 2 leaves 0.4/0.7 = 0.571 and 0.429: top-p 0.5 then keeps only the first. (top-p on the full
  // distribution would need two tokens to reach 0.5.)
  const h = histogram(l, { temperature: 1, topK: 2, topP: 0.5 }, 1000);
  assert.deepEqual(sortedKeys(h), [17]);
  // top-p 0.6 keeps both kept tokens (0.571 < 0.6), never the third
  assertFrequencies(histogram(l, { temperature: 1, topK: 2, topP: 0.6 }, 4000), new Map([[17, 4 / 7], [3, 3 / 7]]), 0.03, 'top-k 2, top-p 0.6');
});

test('top-p is decided before the temperature: a hot or cold draw keeps the same candidate set', () => {
  const at = [17, 3, 42, 58];
  const l = logitsFromProbs(64, at, [0.4, 0.3, 0.2, 0.1]);
  // top-p 0.65 keeps {0.4, 0.3} at any temperature. (At T = 0.25 the tempered distribution puts
  // 0.72 on the first token, so top-p after temperature would keep one; at T = 4 it is nearly flat and
  // would keep three.)
  for (const T of [0.25, 1, 4]) {
    const h = histogram(l, { temperature: T, topK: 0, topP: 0.65 }, 4000);
    const w = [0.4 ** (1 / T), 0.3 ** (1 / T)];
    assertFrequencies(h, new Map([[17, w[0]! / (w[0]! + w[1]!)], [3, w[1]! / (w[0]! + w[1]!)]]), 0.03, `top-p 0.65 at T ${T}`);
  }
});

test('temperature: frequencies follow p^(1/T) renormalised', () => {
  const at = [9, 30, 31];
  const probs = [0.5, 0.25, 0.25];
  const l = logitsFromProbs(40, at, probs);
  for (const T of [0.5, 1, 2]) {
    const w = probs.map((p) => p ** (1 / T));
    const z = w.reduce((a, b) => a + b, 0);
    const h = histogram(l, { temperature: T, topK: 0, topP: 1 }, 5000);
    assertFrequencies(h, new Map(at.map((id, i) => [id, w[i]! / z])), 0.03, `T ${T}`);
  }
});

test('temperature 0 is greedy (argmax) for any top-k, top-p and seed; a tiny temperature converges to it', () => {
  const rnd = mulberry32(99);
  for (let trial = 0; trial < 20; trial++) {
    const vocab = 50 + trial * 37;
    const l = new Float32Array(vocab);
    for (let i = 0; i < vocab; i++) l[i] = (rnd() - 0.5) * 20;
    const best = argmax(l);
    for (const o of [{}, { topK: 1 }, { topK: 0, topP: 1 }, { topK: 5, topP: 0.1 }, { topK: 0, topP: 0.999 }]) {
      for (let s = 0; s < 5; s++) assert.equal(new Sampler(vocab, { ...o, temperature: 0, seed: s * 7919 }).sample(l), best);
    }
    // the default options are greedy too
    assert.equal(new Sampler(vocab).sample(l), best);
    // T → 0: with a gap of ≥ 0.05 between the best two logits, T = 1e-3 leaves the runner-up e^-50
    const sorted = Array.from(l).sort((a, b) => b - a);
    if (sorted[0]! - sorted[1]! >= 0.05) {
      for (let s = 0; s < 20; s++) assert.equal(new Sampler(vocab, { temperature: 1e-3, topK: 0, topP: 1, seed: s }).sample(l), best);
    }
  }
  // greedy ties: the first maximal id, like argmax
  const tie = new Float32Array([0, 3, 1, 3, 2]);
  assert.equal(new Sampler(5, { temperature: 0 }).sample(tie), 1);
});

test('seed determinism: the same seed repeats the draws, different seeds give different draws', () => {
  const vocab = 300;
  const rnd = mulberry32(7);
  const l = new Float32Array(vocab);
  for (let i = 0; i < vocab; i++) l[i] = rnd() * 3;
  const draws = (seed: number, o: SamplingOptions = {}) => {
    const sm = new Sampler(vocab, { temperature: 1.2, topK: 0, topP: 1, ...o, seed });
    return Array.from({ length: 200 }, () => sm.sample(l));
  };
  for (const seed of [0, 1, 42, 2 ** 32 - 1]) {
    assert.deepEqual(draws(seed), draws(seed), `seed ${seed} repeats`);
    assert.deepEqual(draws(seed, { topK: 20, topP: 0.9 }), draws(seed, { topK: 20, topP: 0.9 }));
  }
  const seqs = [0, 1, 2, 3, 42].map((s) => draws(s).join(','));
  assert.equal(new Set(seqs).size, seqs.length, 'five seeds, five different draw sequences');
  // the default seed is fixed (reproducible without asking): no seed == seed 0
  const sm = new Sampler(vocab, { temperature: 1.2, topK: 0, topP: 1 });
  assert.deepEqual(Array.from({ length: 200 }, () => sm.sample(l)), draws(0));
  // one sampler reused over changing logits draws from each (not a cached candidate list)
  const a = new Sampler(4, { temperature: 1, topK: 0, topP: 1, seed: 3 });
  for (let i = 0; i < 40; i++) {
    const only = i % 4;
    const li = new Float32Array(4).fill(-1e4);
    li[only] = 0;
    assert.equal(a.sample(li), only);
  }
});

test('bad options are SamplingErrors', () => {
  assert.throws(() => new Sampler(10, { temperature: -1 }), SamplingError);
  assert.throws(() => new Sampler(10, { temperature: Infinity }), SamplingError);
  assert.throws(() => new Sampler(10, { temperature: NaN }), SamplingError);
  assert.throws(() => new Sampler(10, { topK: -1 }), SamplingError);
  assert.throws(() => new Sampler(10, { topK: 1.5 }), SamplingError);
  assert.throws(() => new Sampler(10, { topP: 0 }), SamplingError);
  assert.throws(() => new Sampler(10, { topP: 1.01 }), SamplingError);
  assert.throws(() => new Sampler(10, { topP: NaN }), SamplingError);
});
