// Seeded smoke run of the parser fuzz harness (scripts/fuzz-targets.ts): 300 inputs per target, each
// of which must parse or throw one of the project's typed errors, within the time and memory limits.
// The full run (10,000 inputs per target, hang watchdog) is `npm run fuzz`.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { runInputs, setSeedDir, TARGETS, type Target } from '../../scripts/fuzz-targets.js';
import { FormatError } from '../../src/formats/errors.js';

const RUNS = 300;
const SEED = 20261125;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'flashlm-fuzz-smoke-'));
after(() => fs.rmSync(work, { recursive: true, force: true }));
setSeedDir(path.join(work, 'seeds'));

describe('fuzz smoke', () => {
  it('the harness reports untyped errors, slow inputs and memory growth (and passes typed errors)', () => {
    const fake = (name: string, exec: () => void): Target => ({ name, arb: () => fc.constant({ x: new Uint8Array(1) }), exec });
    const run = (t: Target) => runInputs(t, { seed: 1, start: 0, count: 2, dir: path.join(work, t.name), slowMs: 50, memLimitBytes: 64 * 2 ** 20 });
    const kinds = (t: Target): string[] => run(t).failureList.map((f) => f.kind);
    assert.deepEqual(kinds(fake('typed', () => { throw new FormatError('f', 'x', 'bad'); })), []);
    assert.deepEqual(kinds(fake('untyped', () => { throw new RangeError('boom'); })), ['uncaught', 'uncaught']);
    assert.deepEqual(kinds(fake('slow', () => { const end = Date.now() + 80; while (Date.now() < end); })), ['slow', 'slow']);
    const big = kinds(fake('big', () => { Buffer.alloc(100 * 2 ** 20, 1); }));
    assert.ok(big.includes('memory'), big.join());
  });

  it("every parser issue 7 names has a target, and sparsify's predictor data", () => {
    assert.deepEqual(TARGETS.map((t) => t.name).sort(), ['flash-layout', 'gguf', 'gguf-vocab', 'hf-config', 'model-config', 'predictors', 'safetensors',
      'safetensors-sharded', 'server-request', 'tokenizer-json', 'tokenizer-model']);
  });

  for (const t of TARGETS) {
    it(`${t.name}: ${RUNS} seeded inputs, only typed errors, < 2 s and < 64 MiB each`, () => {
      const r = runInputs(t, { seed: SEED, start: 0, count: RUNS, dir: path.join(work, t.name), slowMs: 2000, memLimitBytes: 64 * 2 ** 20 });
      const lines = r.failureList.slice(0, 5).map((f) => `input ${f.index}: ${f.kind} ${f.error} @ ${f.where}`);
      assert.equal(r.failureList.length, 0, `${r.failureList.length} failures:\n${lines.join('\n')}`);
      assert.equal(r.inputs, RUNS);
      // the mutations must reach past the first checks: some inputs parse, some are rejected
      assert.ok(r.ok > 0, `no input parsed: ${JSON.stringify(r.typedErrors)}`);
      assert.ok(Object.values(r.typedErrors).reduce((a, b) => a + b, 0) > 0, 'no input was rejected');
    });
  }
});
