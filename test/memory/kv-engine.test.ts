// The paged KV cache inside the engine: admission and waiting when the pool is full, pages returned
// on close, sequences running concurrently in a flash mode (async forward passes) equal to each run
// alone, and the memory pool's ledger (activation plan smaller than the naive sum, arena bytes
// accounted for).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { Model } from '../../src/engine/model.js';
import { argmax } from '../../src/engine/sample.js';
import { KVWaitCancelledError } from '../../src/engine/kv.js';
import { KVBudgetError } from '../../src/memory/pages.js';
import { flashLayoutCached, greedyRun, synthModelCached } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';

const SYNTH: SynthOptions = { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 128, dtype: 'q8_0', act: 'silu', seed: 21, format: 'gguf' };

test('KV pool full: tryOpen refuses, open waits first come first served, close wakes it; abort while waiting', async () => {
  const m = await Model.load(await synthModelCached(SYNTH), { ctx: 16, threads: 1, kvPageSize: 8, kvPositions: 32, sequences: 3 });
  try {
    assert.equal(m.kv.stats().pages, 4);
    const a = await m.openSequence(16);
    const b = await m.openSequence(9); // 2 pages: the pool is fully reserved now
    assert.equal(m.kv.tryOpen(1), undefined);
    assert.throws(() => m.kv.tryOpen(17), KVBudgetError, 'longer than ctx: never');
    let cGot = false;
    const c = m.openSequence(8).then((s) => ((cGot = true), s));
    const ac = new AbortController();
    const d = m.openSequence(8, ac.signal);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(cGot, false, 'c waits');
    assert.equal(m.kv.waiting, 2);
    ac.abort();
    await assert.rejects(d, KVWaitCancelledError);
    // a runs 10 tokens (2 pages), then ends: its pages and reservation come back, c gets in
    await m.prefillSeq(a, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.deepEqual(a.pages, [0, 1]);
    assert.equal(m.kv.stats().used, 2);
    a.close();
    const cs = await c;
    assert.equal(cGot, true);
    assert.equal(m.kv.stats().used, 0);
    cs.close();
    b.close();
    assert.deepEqual(m.kv.stats(), { pageSize: 8, pages: 4, used: 0, reserved: 0, free: 4, peakUsed: 2, sequences: 0, slots: 3, waiting: 0 });
  } finally {
    await m.close();
  }
});

test('hybrid mode: two sequences decoded concurrently (async forward passes) equal each alone', async () => {
  const path = await flashLayoutCached({ ...SYNTH, dtype: 'f32' }, 'q8_0');
  const prompts = [[1, 300, 301, 302, 40], [1, 7, 8, 9, 10, 11, 12]];
  const steps = 10;
  const alone = await Promise.all(prompts.map((p) => greedyRun(path, p, steps, { mode: 'hybrid', threads: 1 })));
  const m = await Model.load(path, { mode: 'hybrid', threads: 1, ctx: 20, sequences: 2, kvPositions: 64, kvPageSize: 4 });
  try {
    const run = async (p: number[]) => {
      const seq = await m.openSequence(p.length + steps);
      try {
        const tokens: number[] = [];
        let l = await m.prefillSeq(seq, p);
        for (let i = 0; i < steps; i++) {
          tokens.push(argmax(l));
          if (i + 1 < steps) l = await m.decodeSeq(seq, tokens[i]!);
        }
        return tokens;
      } finally {
        seq.close();
      }
    };
    const got = await Promise.all(prompts.map(run)); // both loops await reads mid-pass: the step lock keeps them apart
    assert.deepEqual(got, alone.map((a) => a.tokens));
    assert.equal(m.kv.stats().used, 0);
  } finally {
    await m.close();
  }
});

test('memory pool: activation plan below the naive sum, arena bytes accounted, stats in the ledger', async () => {
  const path = await synthModelCached(SYNTH);
  const m = await Model.load(path, { ctx: 64, threads: 1, memory: 512 * 2 ** 20, sequences: 4, kvPositions: 'budget' });
  try {
    const a = m.actPlan;
    assert.ok(a.peakBytes < a.naiveBytes, `peak ${a.peakBytes} vs naive ${a.naiveBytes}`);
    const s = m.pool.stats();
    assert.equal(s.budget, 512 * 2 ** 20);
    assert.ok(s.charged <= s.budget!);
    assert.equal(s.parts.activations, a.peakBytes);
    // 'budget': the spare memory became pages, up to every sequence at full length
    assert.equal(s.kv!.pages, 4 * 64 / 16);
    const audit = m.pool.audit(m.state.arenas.keys());
    // alignment padding between parts only (a few bytes per tensor and buffer)
    assert.ok(audit.unaccounted >= 0 && audit.unaccounted < 16384, `unaccounted ${audit.unaccounted} bytes`);
  } finally {
    await m.close();
  }
  // flash modes: read slots are charged too, weights left on flash are not
  const flash = await flashLayoutCached({ ...SYNTH, dtype: 'f32' }, 'q8_0');
  for (const mode of ['hybrid', 'naive'] as const) {
    const f = await Model.load(flash, { mode, ctx: 64, threads: 1, memory: 512 * 2 ** 20 });
    try {
      const parts = f.pool.stats().parts;
      assert.ok(parts.slots > 0, `${mode}: slots charged`);
      if (mode === 'naive') assert.equal(parts.weights, 0);
      const audit = f.pool.audit(f.state.arenas.keys());
      assert.ok(audit.unaccounted >= 0 && audit.unaccounted < 16384, `${mode}: unaccounted ${audit.unaccounted} bytes`);
    } finally {
      await f.close();
    }
  }
});

test('flashlm run --stats --json reports activation peak vs naive and KV pages; --verbose prints the plan', async () => {
  const bin = fileURLToPath(new URL('../../../bin/flashlm.cjs', import.meta.url));
  const path = await synthModelCached(SYNTH);
  const r = spawnSync(process.execPath, [bin, 'run', path, '--tokens', '1,5,9', '-n', '20', '--json', '--stats', '--threads', '1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { tokens: number[]; stats: { activations: { peak_bytes: number; naive_bytes: number }; kv_pages: { page_size: number; pages: number; peak_used: number }; memory_pool: Record<string, number> } };
  assert.equal(j.tokens.length, 20);
  assert.ok(j.stats.activations.peak_bytes < j.stats.activations.naive_bytes, JSON.stringify(j.stats.activations));
  // 3 + 20 positions (the last token is not fed back: 22 used) → 2 pages of 16, both used
  assert.deepEqual(j.stats.kv_pages, { page_size: 16, pages: 2, peak_used: 2 });
  assert.ok(j.stats.memory_pool.activations === j.stats.activations.peak_bytes);
  const v = spawnSync(process.execPath, [bin, 'run', path, '--tokens', '1,5,9', '-n', '2', '--verbose', '--threads', '1'], { encoding: 'utf8' });
  assert.equal(v.status, 0, v.stderr);
  assert.match(v.stderr, /activation plan/);
  assert.match(v.stderr, /peak .* vs naive sum/);
});
