// Seeded smoke run of the parser fuzz harness (scripts/fuzz-targets.ts): 300 inputs per target, each
// of which must parse or throw one of the project's typed errors, within the time and memory limits.
// The full run (10,000 inputs per target, hang watchdog) is `npm run fuzz`.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runInputs, setSeedDir, TARGETS } from '../../scripts/fuzz-targets.js';

const RUNS = 300;
const SEED = 20261125;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'flashlm-fuzz-smoke-'));
after(() => fs.rmSync(work, { recursive: true, force: true }));
setSeedDir(path.join(work, 'seeds'));

describe('fuzz smoke', () => {
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
