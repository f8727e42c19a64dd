// Sparse mode with Ripple's linking-aligned admission (`--admission ripple`, LinkingAlignedPolicy in
// src/flash/neuron-matrix.ts) end to end, through Model.load and through `flashlm run`:
//   - nothing evicted (capacity = FFN width and a window longer than the run; capacity ≥ FFN alone is
//     not enough, the window evicts): the same tokens, bit-identical
//     logits and the same read counts as the default admission, for a trained low-rank predictor
//     (whose output depends on what is resident) and for the gate oracle;
//   - things evicted (a small capacity, a short window, with and without access collapse): on the
//     gate-oracle file (predicted set = active set, sparsify --predictor gate --exact-cutoff), the
//     output must equal RAM mode with the file's thresholds whatever the cache keeps, so a policy
//     that corrupts rows or loses neurons shows up as other tokens; the counters must add up
//     (hits + needed + overflow = predicted, every needed record read once), evictions must have
//     happened, and the ripple policy must actually have been in charge (its residency differs);
//   - the CLI's --stats JSON for ripple: fields present, options passed through, figures consistent.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, test } from 'node:test';
import { flashLayoutCached, greedyRun, testDir, type GreedyRun } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';
import type { LoadModelOptions } from '../../src/engine/model.js';
import { calibrate } from '../../src/engine/calibrate.js';
import { sparsify } from '../../src/engine/sparsify.js';

const o: SynthOptions = { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 128, dtype: 'f32', act: 'silu', seed: 21, format: 'gguf' };
const BIN = fileURLToPath(new URL('../../../bin/flashlm.cjs', import.meta.url));
const dir = testDir('admission');
const prompt = [1, 398, 259, 284, 272];
const steps = 8;
const passes = prompt.length + steps - 1;
const TEXT = `The flash layout stores each neuron's gate row, up row and down column next to each other, so that
the engine can fetch the neurons it needs with a few large reads. A predictor decides which neurons
will be active before the layer runs; the threshold says which activations are small enough to skip.
function add(a, b) { return a + b; }  // returns the sum of its arguments
for (let i = 0; i < 10; i++) console.log(i * i);
`;
let oracle: string; // gate predictor, exact cutoff: predicted set = active set
let lowrank: string; // trained rank-16 predictor

before(async () => {
  const model = await flashLayoutCached(o, 'q8_0');
  const text = testDir('admission/text');
  for (let i = 0; i < 4; i++) writeFileSync(join(text, `t${i}.txt`), `${TEXT.slice(i * 40)}\n${TEXT}\n${TEXT.slice(0, 200 + i * 50)}`.repeat(3));
  const calib = join(dir, 'c.calib.gguf');
  await calibrate(model, { files: [text], tokens: 300, seqLen: 64, perFile: 100, out: calib, load: { kvType: 'f32', threads: 1 } });
  oracle = join(dir, 'oracle.gguf');
  await sparsify(model, calib, { out: oracle, predictor: 'gate', predType: 'q8_0', sparsity: 0.5, exactCutoff: true, threads: 1 });
  lowrank = join(dir, 'lowrank.gguf');
  await sparsify(model, calib, { out: lowrank, rank: 16, predType: 'f32', sparsity: 0.5, threads: 1 });
});

// collapse given explicitly: a disk profile in the cache dir would otherwise choose one
const sparse = (extra: LoadModelOptions): LoadModelOptions => ({ mode: 'sparse', threads: 1, collapseGap: 0, ...extra });

const removed = (r: GreedyRun) => r.model.sparse!.src.matrices.reduce((s, m) => s + m.stats.removed, 0);
const policies = (r: GreedyRun) => [...new Set(r.model.sparse!.src.matrices.map((m) => m.policy.name))];

/** The counters of one sparse run add up. */
function checkCounters(r: GreedyRun, label: string): void {
  const z = r.model.sparse!;
  const s = z.src.stats;
  assert.equal(s.hits + s.needed + s.overflow, z.stats.predicted, `${label}: hits ${s.hits} + needed ${s.needed} + overflow ${s.overflow} = predicted ${z.stats.predicted}`);
  // every needed record read exactly once (matrix or stream buffer); the rest of what was read is gap
  assert.equal(s.records - s.gapRecords, s.needed, `${label}: needed records read`);
  assert.equal(s.bytes, s.records * z.src.recordBytes, `${label}: bytes = records × record bytes`);
  assert.ok(s.runs >= 1 && s.reads >= s.runs, `${label}: reads ${s.reads} ≥ runs ${s.runs}`);
  if (z.collapseGap === 0) assert.equal(s.gapRecords, 0, `${label}: gap records without collapse`);
  assert.ok(z.stats.computed >= z.stats.predicted - s.overflow, `${label}: every predicted neuron served is computed`);
  for (const m of z.src.matrices) m.check();
}

for (const which of ['lowrank', 'oracle'] as const) {
  test(`Model.load, nothing evicted (capacity = ffn, window > run): --admission ripple = default, bit for bit (${which})`, async () => {
    const path = which === 'oracle' ? oracle : lowrank;
    const opts = sparse({ neuronCapacity: o.ffn, window: 64 });
    const d = await greedyRun(path, prompt, steps, { ...opts, admission: 'default' });
    const r = await greedyRun(path, prompt, steps, { ...opts, admission: 'ripple' });
    assert.deepEqual(policies(d), ['window(64)']);
    assert.deepEqual(policies(r), ['linking-aligned(64)'], 'the option selects the linking-aligned policy');
    assert.equal(removed(d), 0);
    assert.equal(removed(r), 0);
    assert.deepEqual(r.tokens, d.tokens);
    for (let i = 0; i < steps; i++) assert.deepEqual(r.logits[i], d.logits[i], `step ${i}`);
    const a = d.model.sparse!.src.stats, b = r.model.sparse!.src.stats;
    for (const k of ['hits', 'needed', 'reads', 'runs', 'records', 'bytes', 'gapRecords', 'overflow', 'streamed'] as const) assert.equal(b[k], a[k], k);
    assert.ok(a.hits > 0 && a.needed > 0);
    checkCounters(r, 'ripple');
    if (which === 'oracle') {
      // and both are the RAM oracle (the file's thresholds on the exact gate)
      const ram = await greedyRun(path, prompt, steps, { mode: 'ram', thresholds: 'file', threads: 1 });
      assert.deepEqual(r.tokens, ram.tokens);
    }
  });
}

for (const cfg of [
  { capacity: 48, window: 2, collapse: 0 }, // matrix smaller than the predicted set: evictions + stream buffer
  { capacity: 48, window: 2, collapse: 3 },
  { capacity: 128, window: 1, collapse: 0 }, // the window evicts, the matrix mostly holds the predicted set
  { capacity: 192, window: 2, collapse: 3 }, // capacity = ffn, but the window still evicts
]) {
  test(`Model.load, things evicted (capacity ${cfg.capacity}, window ${cfg.window}, collapse ${cfg.collapse}): --admission ripple gives the oracle's tokens, counters add up`, async () => {
    const ram = await greedyRun(oracle, prompt, steps, { mode: 'ram', thresholds: 'file', threads: 1 });
    const opts = sparse({ neuronCapacity: cfg.capacity, window: cfg.window, collapseGap: cfg.collapse });
    const d = await greedyRun(oracle, prompt, steps, { ...opts, admission: 'default' });
    const r = await greedyRun(oracle, prompt, steps, { ...opts, admission: 'ripple' });
    assert.deepEqual(policies(r), [`linking-aligned(${cfg.window})`]);
    for (const [x, name] of [[d, 'default'], [r, 'ripple']] as const) {
      assert.deepEqual(x.tokens, ram.tokens, `${name}: same tokens as RAM mode with the file's thresholds`);
      // rows are summed in cache order, not neuron order: f32 rounding only
      for (let i = 0; i < steps; i++) {
        let dm = 0;
        for (let v = 0; v < ram.logits[i]!.length; v++) dm = Math.max(dm, Math.abs(x.logits[i]![v]! - ram.logits[i]![v]!));
        assert.ok(dm < 1e-3, `${name} step ${i}: max |Δlogit| ${dm}`);
      }
      checkCounters(x, name);
      assert.ok(removed(x) > 0, `${name}: something was evicted`);
      const s = x.model.sparse!.src.stats;
      assert.equal(s.overflow, 0, 'the stream buffer serves what does not fit');
      if (cfg.collapse > 0) assert.ok(s.gapRecords > 0, `${name}: collapse read through gaps`);
    }
    // the policy made a difference: what stayed resident (hence hits and reads) is not the window's.
    // (Not so for every setting: when the matrix is always under pressure, evictLRU frees rows by age
    // before any neuron leaves the window, and both policies see no victims; e.g. capacity 128, window 3.)
    const a = d.model.sparse!.src.stats, b = r.model.sparse!.src.stats;
    console.log(`# capacity ${cfg.capacity} window ${cfg.window} collapse ${cfg.collapse}: hits ${a.hits} → ${b.hits}, needed ${a.needed} → ${b.needed}, ` +
      `reads ${a.reads} → ${b.reads}, removed ${removed(d)} → ${removed(r)} (default → ripple)`);
    assert.ok(a.hits !== b.hits || a.reads !== b.reads || removed(d) !== removed(r), 'ripple admission changed nothing: was it selected?');
  });
}

// ---------------------------------------------------------------------------------------------
// the CLI

function cli(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

interface RunJSON {
  tokens: number[];
  stats: {
    mode: string; bytes_read_per_token: number; reads_per_token: number; io_read_ms_per_token: number;
    sparse?: Record<string, number | null>;
  };
}

function run(path: string, ...flags: string[]): RunJSON {
  const r = cli('run', path, '--tokens', prompt.join(','), '-n', String(steps), '--threads', '1', '--json', ...flags);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as RunJSON;
}

const SPARSE_FIELDS = [
  'neurons_predicted_per_token', 'neurons_computed_per_token', 'dropped_by_threshold_per_token', 'hit_rate', 'records_read_per_token',
  'gap_records_per_token', 'overflow_per_token', 'streamed_per_token', 'capacity_rows_per_layer', 'window', 'collapse_gap', 'matrix_bytes',
  'moved_bytes_per_token', 'reads_per_token', 'runs_per_token', 'mean_read_records', 'mean_read_bytes', 'bandwidth_mbps', 'effective_mbps',
  'io_ms_per_token', 'bytes_per_token',
];

/** --stats JSON of a sparse run: present, and consistent (up to the CLI's rounding). */
function checkStats(j: RunJSON, want: { capacity: number; window: number; collapse: number }): Record<string, number> {
  assert.equal(j.stats.mode, 'sparse');
  const z = j.stats.sparse as Record<string, number>;
  assert.ok(z, 'stats.sparse present');
  for (const f of SPARSE_FIELDS) assert.equal(typeof z[f], 'number', `stats.sparse.${f}: ${String(z[f])}`);
  assert.equal(z.capacity_rows_per_layer, want.capacity);
  assert.equal(z.window, want.window);
  assert.equal(z.collapse_gap, want.collapse);
  assert.equal(z.matrix_bytes, o.layers! * want.capacity * 512);
  assert.ok(z.hit_rate! >= 0 && z.hit_rate! <= 1);
  assert.equal(z.overflow_per_token, 0);
  const near = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (±${tol})`);
  // hits + needed = predicted, and every needed record is read once: records − gap = (1 − hit rate) · predicted
  const pred = z.neurons_predicted_per_token!;
  near(z.records_read_per_token! - z.gap_records_per_token!, (1 - z.hit_rate!) * pred, 0.25 + 1e-4 * pred, 'needed records per token');
  assert.ok(z.neurons_computed_per_token! >= pred - 0.1, 'every predicted neuron computed');
  // one picture of the reads: records = mean length × reads, bytes = records × 512, the top-level figures agree
  near(z.mean_read_records! * z.reads_per_token!, z.records_read_per_token!, 0.01 * z.records_read_per_token! + 0.1, 'records per token');
  near(z.mean_read_bytes! * z.reads_per_token!, z.bytes_per_token!, 0.01 * z.bytes_per_token! + 1, 'bytes per token');
  near(z.bytes_per_token!, z.records_read_per_token! * 512, 0.06 * 512, 'bytes = records × 512');
  near(z.bytes_per_token!, j.stats.bytes_read_per_token, 1, 'bytes per token, top level');
  near(z.reads_per_token!, j.stats.reads_per_token, 0.006, 'reads per token, top level');
  near(z.io_ms_per_token!, j.stats.io_read_ms_per_token, 0.006, 'read ms per token, top level');
  assert.ok(z.runs_per_token! > 0 && z.reads_per_token! >= z.runs_per_token! - 0.005);
  // bandwidths: raw counts every byte, effective the needed ones
  assert.ok(z.bandwidth_mbps! > 0 && z.effective_mbps! > 0);
  assert.ok(z.bandwidth_mbps! >= z.effective_mbps!, `raw ${z.bandwidth_mbps} < effective ${z.effective_mbps}`);
  const frac = (z.records_read_per_token! - z.gap_records_per_token!) / z.records_read_per_token!;
  near(z.effective_mbps! / z.bandwidth_mbps!, frac, 0.02, 'effective / raw = needed / records');
  if (want.collapse === 0) assert.equal(z.gap_records_per_token, 0);
  return z;
}

test('flashlm run --mode sparse --admission ripple, nothing evicted: same tokens as default admission and RAM with thresholds; --stats consistent', async () => {
  const flags = ['--mode', 'sparse', '--stats', '--capacity', String(o.ffn), '--window', '64', '--collapse', '0'];
  const d = run(oracle, ...flags, '--admission', 'default');
  const r = run(oracle, ...flags, '--admission', 'ripple');
  const ram = run(oracle, '--mode', 'ram', '--thresholds');
  assert.equal(r.tokens.length, steps);
  assert.deepEqual(r.tokens, d.tokens);
  assert.deepEqual(r.tokens, ram.tokens);
  const zd = checkStats(d, { capacity: o.ffn!, window: 64, collapse: 0 });
  const zr = checkStats(r, { capacity: o.ffn!, window: 64, collapse: 0 });
  // no eviction: the same hits and reads either way
  for (const k of ['hit_rate', 'records_read_per_token', 'reads_per_token', 'neurons_computed_per_token', 'moved_bytes_per_token']) assert.equal(zr[k], zd[k], k);
  assert.equal(zr.moved_bytes_per_token, 0, 'nothing evicted, nothing moved');
  // and the lowrank file, whose output depends on what is resident
  const ld = run(lowrank, ...flags, '--admission', 'default');
  const lr = run(lowrank, ...flags, '--admission', 'ripple');
  assert.deepEqual(lr.tokens, ld.tokens);
  checkStats(lr, { capacity: o.ffn!, window: 64, collapse: 0 });
});

test('flashlm run --mode sparse --admission ripple, small capacity (evictions, stream buffer, collapse): the oracle tokens, --stats present and sane', async () => {
  const ram = run(oracle, '--mode', 'ram', '--thresholds');
  for (const collapse of [0, 3]) {
    const flags = ['--mode', 'sparse', '--stats', '--capacity', '48', '--window', '2', '--collapse', String(collapse)];
    const r = run(oracle, ...flags, '--admission', 'ripple');
    const d = run(oracle, ...flags, '--admission', 'default');
    assert.deepEqual(r.tokens, ram.tokens, `collapse ${collapse}`);
    assert.deepEqual(d.tokens, ram.tokens, `collapse ${collapse}`);
    const z = checkStats(r, { capacity: 48, window: 2, collapse });
    const zd = checkStats(d, { capacity: 48, window: 2, collapse });
    assert.ok(z.hit_rate !== zd.hit_rate || z.reads_per_token !== zd.reads_per_token, '--admission ripple changed nothing: did it reach the engine?');
    assert.ok(z.streamed_per_token! > 0, 'more predicted than rows: some streamed');
    assert.ok(z.hit_rate! < 1 && z.moved_bytes_per_token! > 0, 'evictions happened');
    if (collapse > 0) {
      assert.ok(z.gap_records_per_token! > 0, 'collapse read through gaps');
      assert.ok(z.bandwidth_mbps! > z.effective_mbps!);
    }
  }
  // the per-token lines of --stats on stderr
  const s = cli('run', oracle, '--tokens', prompt.join(','), '-n', '3', '--threads', '1', '--mode', 'sparse', '--admission', 'ripple', '--capacity', '48', '--collapse', '0', '--stats');
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stderr, /\[token 2\] .* ms \(io wait .*, compute .*\), read/);
});

test('flashlm run --admission with a bad value: one-line error naming the flag, exit 1', async () => {
  const r = cli('run', oracle, '--tokens', '1,2', '-n', '1', '--mode', 'sparse', '--admission', 'lru');
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.trim().split('\n').filter((l) => !/^loading +\d+% /.test(l));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /^flashlm: .*admission/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});
