// Shared per-architecture test runner: the same checks for every architecture/dtype we support.
// - incremental decoding with the KV cache equals recomputing the whole prefix without reusing it
// - 1 thread equals 2 threads (bit-exact: the row split must not change any sum)
// - many small arenas (layer groups) equal one arena
// - sequences interleaved in the paged KV cache (scattered pages) equal each sequence alone
// Later issues add: flash vs RAM, sparse at threshold 0 vs dense.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Model, type LoadModelOptions } from '../../src/engine/model.js';
import { argmax } from '../../src/engine/sample.js';
import { greedyRun } from '../helpers.js';
import { kvBytesPerLayer, stateBytes } from '../../src/model/llama.js';

export interface RunnerCase {
  name: string;
  /** Creates the model file (cached by the caller) and returns its path. */
  model: () => Promise<string> | string;
  prompt: number[];
  steps: number;
  /** Largest |Δlogit| tolerated between cache and no-cache (summation order is identical, so tiny). */
  tol?: number;
}

const greedyWithCache = (path: string, c: RunnerCase, opts: LoadModelOptions) => greedyRun(path, c.prompt, c.steps, opts);

async function greedyNoCache(path: string, c: RunnerCase): Promise<{ tokens: number[]; logits: Float32Array[] }> {
  const m = await Model.load(path, { ctx: c.prompt.length + c.steps + 1 });
  try {
    const seq = [...c.prompt];
    const tokens: number[] = [];
    const logits: Float32Array[] = [];
    for (let i = 0; i < c.steps; i++) {
      m.reset(); // the cache is overwritten from position 0: nothing from the previous step is reused
      const l = m.prefill(seq);
      logits.push(l.slice());
      const t = argmax(l);
      tokens.push(t);
      seq.push(t);
    }
    return { tokens, logits };
  } finally {
    await m.close();
  }
}

function maxAbsDiff(a: Float32Array[], b: Float32Array[]): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) for (let j = 0; j < a[i]!.length; j++) d = Math.max(d, Math.abs(a[i]![j]! - b[i]![j]!));
  return d;
}

export function architectureRunner(cases: RunnerCase[]): void {
  for (const c of cases) {
    test(`${c.name}: KV cache decoding equals recomputation without cache`, async () => {
      const path = await c.model();
      const a = await greedyWithCache(path, c, { threads: 2 });
      const b = await greedyNoCache(path, c);
      assert.deepEqual(a.tokens, b.tokens);
      assert.ok(maxAbsDiff(a.logits, b.logits) <= (c.tol ?? 0), `max |Δlogit| ${maxAbsDiff(a.logits, b.logits)}`);
    });
    test(`${c.name}: 1 thread equals 2 threads`, async () => {
      const path = await c.model();
      const a = await greedyWithCache(path, c, { threads: 1 });
      const b = await greedyWithCache(path, c, { threads: 2 });
      assert.deepEqual(a.tokens, b.tokens);
      assert.equal(maxAbsDiff(a.logits, b.logits), 0);
    });
    test(`${c.name}: layer groups in many arenas equal one arena`, async () => {
      const path = await c.model();
      const a = await greedyWithCache(path, c, { threads: 2 });
      // small arenas: about one layer group each (the planner must split and move the residual between them)
      const m = await Model.load(path, { ctx: 8 });
      const ctx = c.prompt.length + c.steps + 1;
      const biggest = Math.max(...m.source.tensors.map((t) => t.bytes));
      const layer0 = m.source.tensors.filter((t) => t.name.startsWith('blk.0.')).reduce((s, t) => s + t.bytes + 64, 0);
      const fixed = 65536 + stateBytes(m.cfg, ctx, true) + kvBytesPerLayer(m.cfg, ctx, 1);
      await m.close();
      const b = await greedyWithCache(path, c, { threads: 2, maxArenaBytes: fixed + Math.max(biggest + 1024, layer0) + 4096 });
      assert.equal(a.arenas, 1);
      assert.ok(b.arenas >= 2, `expected several arenas, got ${b.arenas}`);
      assert.deepEqual(a.tokens, b.tokens);
      assert.equal(maxAbsDiff(a.logits, b.logits), 0);
    });
    test(`${c.name}: sequences interleaved in the paged KV cache equal each one alone`, async () => {
      const path = await c.model();
      const prompts = [c.prompt, [...c.prompt].reverse(), c.prompt];
      const alone = [await greedyWithCache(path, c, { threads: 2 }), await greedyRun(path, prompts[1]!, c.steps, { threads: 2 })];
      const n = c.prompt.length + c.steps;
      // page size 3 and round-robin token steps: each sequence's pages are scattered between the others'
      const m = await Model.load(path, { ctx: n, threads: 2, kvPageSize: 3, sequences: 3, kvPositions: 3 * (n + 3) });
      try {
        const seqs = await Promise.all(prompts.map((p) => m.openSequence(p.length + c.steps)));
        const got = prompts.map(() => ({ tokens: [] as number[], logits: [] as Float32Array[] }));
        const last: Float32Array[] = [];
        for (let i = 0; i < c.prompt.length; i++) {
          for (let s = 0; s < 3; s++) last[s] = await m.prefillSeq(seqs[s]!, [prompts[s]![i]!]);
        }
        for (let step = 0; step < c.steps; step++) {
          for (let s = 0; s < 3; s++) {
            got[s]!.logits.push(last[s]!.slice());
            const t = argmax(last[s]!);
            got[s]!.tokens.push(t);
            if (step + 1 < c.steps) last[s] = await m.decodeSeq(seqs[s]!, t);
          }
        }
        const pages = seqs[0]!.pages;
        assert.ok(pages.some((id, i) => i > 0 && id !== pages[i - 1]! + 1), `pages interleaved: ${pages}`);
        for (const [s, ref] of [[0, alone[0]!], [1, alone[1]!], [2, alone[0]!]] as const) {
          assert.deepEqual(got[s]!.tokens, ref.tokens, `sequence ${s}`);
          assert.equal(maxAbsDiff(got[s]!.logits, ref.logits), 0, `sequence ${s}: logits bit-identical`);
        }
        for (const s of seqs) s.close();
        assert.deepEqual([m.kv.stats().used, m.kv.stats().sequences, m.kv.stats().free], [0, 0, m.kv.stats().pages]);
      } finally {
        await m.close();
      }
    });
  }
}
