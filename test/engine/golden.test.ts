// Golden test against llama.cpp: the fixtures in test/fixtures/golden were produced by llama.cpp
// (scripts/gen-fixtures.ts) on synth models that this test regenerates from the recorded options.
// Greedy tokens must be identical; f32 logits within 1e-3; quantized models' top-5 logits close.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Model } from '../../src/engine/model.js';
import { argmax } from '../../src/engine/sample.js';
import { synthModelCached, fixturePath } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';

interface Fixture {
  name: string;
  synth: SynthOptions;
  prompt: { text: string; tokens: number[] };
  greedy: { n: number; tokens: number[]; tokensWithKvF16?: number[] };
  logits?: { shape: [number, number]; f32le: string };
  top5?: { steps: [number, number][][] };
}

function load(name: string): Fixture {
  return JSON.parse(readFileSync(fixturePath('golden', `${name}.json`), 'utf8')) as Fixture;
}

async function greedy(path: string, f: Fixture, kvType: 'f32' | 'f16'): Promise<{ tokens: number[]; logits: Float32Array[] }> {
  const m = await Model.load(path, { ctx: f.prompt.tokens.length + f.greedy.n, kvType, threads: 2 });
  try {
    let l = m.prefill(f.prompt.tokens);
    const tokens: number[] = [];
    const logits: Float32Array[] = [];
    for (let i = 0; i < f.greedy.n; i++) {
      logits.push(l.slice());
      tokens.push(argmax(l));
      if (i + 1 < f.greedy.n) l = m.decodeOne(tokens[i]!);
    }
    return { tokens, logits };
  } finally {
    await m.close();
  }
}

// Tolerances on logits: f32 is the exact-arithmetic case (only summation order differs);
// f16 / q8_0 / q4_0 additionally round activations (ggml's vec_dot_type), where one flipped
// rounding moves a logit by ~1e-2.
const TOL: Record<string, number> = { 'A-f32': 1e-3, 'D-f16': 5e-3, 'B-q8_0': 5e-2, 'C-q4_0': 5e-2 };

for (const name of ['A-f32', 'B-q8_0', 'C-q4_0', 'D-f16']) {
  test(`golden vs llama.cpp: ${name} greedy ${32} tokens and logits`, async () => {
    const f = load(name);
    const path = await synthModelCached(f.synth);
    const r = await greedy(path, f, 'f32');
    assert.deepEqual(r.tokens, f.greedy.tokens, `${name}: greedy tokens differ from llama.cpp`);
    let maxDiff = 0;
    if (f.logits) {
      const buf = Buffer.from(f.logits.f32le, 'base64');
      const ref = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
      const [n, vocab] = f.logits.shape;
      for (let i = 0; i < n; i++) for (let j = 0; j < vocab; j++) maxDiff = Math.max(maxDiff, Math.abs(r.logits[i]![j]! - ref[i * vocab + j]!));
    } else {
      for (const [i, step] of f.top5!.steps.entries()) for (const [id, v] of step) maxDiff = Math.max(maxDiff, Math.abs(r.logits[i]![id]! - v));
    }
    assert.ok(maxDiff <= TOL[name]!, `${name}: max |Δlogit| vs llama.cpp = ${maxDiff} > ${TOL[name]}`);
  });

  test(`golden vs llama.cpp: ${name} with an f16 KV cache`, async (t) => {
    const f = load(name);
    if (!f.greedy.tokensWithKvF16) return t.skip('fixture has no f16-KV run');
    const path = await synthModelCached(f.synth);
    const r = await greedy(path, f, 'f16');
    assert.deepEqual(r.tokens, f.greedy.tokensWithKvF16);
  });
}
