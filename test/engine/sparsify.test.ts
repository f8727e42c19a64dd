// calibrate → sparsify on a tiny synth model (src/engine/sparsify.ts): the output verifies, its
// thresholds are thresholdForSparsity's, the stored predictors reproduce the reported held-out
// figures (evalPredictor), they predict far better than the base rate, the original tensors are
// byte-identical, the engine still produces the same greedy tokens, re-running replaces the
// predictors, and a calibration of another model is refused with a typed error.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { flashLayoutCached, greedyRun, testDir } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';
import { calibrate, thresholdForSparsity } from '../../src/engine/calibrate.js';
import { sparsify, CalibrationMismatchError } from '../../src/engine/sparsify.js';
import { evalPredictor } from '../../src/engine/predictor-eval.js';
import { readCalibration } from '../../src/formats/calibration.js';
import { verifyModel } from '../../src/formats/checksum.js';
import { readGGUF, readTensorData, type GGUFFile } from '../../src/formats/gguf.js';
import { loadPredictor, readPredictorMeta } from '../../src/formats/predictors.js';
import { Compute } from '../../src/kernels/index.js';
import { Model } from '../../src/engine/model.js';

const o: SynthOptions = { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 128, dtype: 'f32', act: 'silu', seed: 21, format: 'gguf' };
const N = 600; // calibration tokens: 60 held out, 54 for the cutoff, 486 fitted
const BIN = fileURLToPath(new URL('../../../bin/flashlm.cjs', import.meta.url));
const dir = testDir('sparsify');
let model: string, calib: string;
let c: Compute;

// some real-looking text (the synth tokenizer falls back to bytes for what it does not know)
const TEXT = `The flash layout stores each neuron's gate row, up row and down column next to each other, so that
the engine can fetch the neurons it needs with a few large reads. A predictor decides which neurons
will be active before the layer runs; the threshold says which activations are small enough to skip.
function add(a, b) { return a + b; }  // returns the sum of its arguments
for (let i = 0; i < 10; i++) console.log(i * i);
`;

before(async () => {
  model = await flashLayoutCached(o, 'q8_0');
  for (let i = 0; i < 4; i++) writeFileSync(join(dir, `t${i}.txt`), `${TEXT.slice(i * 40)}\n${TEXT}\n${TEXT.slice(0, 200 + i * 50)}`.repeat(3));
  calib = join(dir, 'c.calib.gguf');
  await calibrate(model, { files: [dir], tokens: N, seqLen: 64, perFile: 100, out: calib, load: { kvType: 'f32' } });
  c = await Compute.create({ threads: 2 });
});
after(async () => { await c.close(); });

const bytesOf = (f: GGUFFile, name: string): Uint8Array => {
  const t = f.tensorByName.get(name)!;
  const b = new Uint8Array(t.bytes);
  readTensorData(f.path, t, b);
  return b;
};
const fb = Math.ceil(o.ffn! / 8);
/** active bits of calibration tokens [t0, t1) of layer l at activation code `code` */
function bits(codes: Uint8Array, code: number, t0: number, t1: number): Uint8Array {
  const out = new Uint8Array((t1 - t0) * fb);
  for (let t = t0; t < t1; t++) for (let j = 0; j < o.ffn!; j++) if (codes[t * o.ffn! + j]! >= code) out[(t - t0) * fb + (j >> 3)]! |= 1 << (j & 7);
  return out;
}

test('sparsify (f32): verifies, thresholds from the histogram, stored predictors give the reported held-out figures', async () => {
  const out = join(dir, 'f32.gguf');
  const t0 = performance.now();
  const r = await sparsify(model, calib, { out, rank: 32, predType: 'f32', sparsity: 0.6, targetRecall: 0.97 });
  const secs = (performance.now() - t0) / 1000;
  console.log(`# sparsify tiny model (2 layers, dim 64, ffn 192, ${N} tokens, rank 32): ${secs.toFixed(2)} s (train ${r.seconds.train.toFixed(2)}, write ${r.seconds.write.toFixed(2)})`);
  assert.ok(verifyModel(out).ok);
  assert.deepEqual(r.tokens, { total: N, fitted: 486, cutoff: 54, heldOut: 60 });
  const g = readGGUF(out);
  const m = readPredictorMeta(g)!;
  const cal = readCalibration(calib);
  assert.equal(m.calibrationTokens, N);
  assert.equal(m.modelIdentity, cal.meta.modelIdentity);
  for (let l = 0; l < 2; l++) {
    const th = thresholdForSparsity(cal.hist(l), 0.6);
    assert.equal(m.thresholds[l], Math.fround(th.threshold));
    assert.equal(r.layers[l]!.threshold, th.threshold);
    assert.equal(m.ranks[l], 32);
    // the stored predictor, scored by evalPredictor on the held-out tokens, gives the stored figures
    const p = loadPredictor(g, m, l);
    const pred = { dim: 64, ffn: 192, rank: 32, a: p.a, b: p.b, bias: new Float32Array(192).map((_, j) => -p.thr[j]!), cutoff: 0 };
    const e = evalPredictor(c, pred, { n: 60, x: cal.x(l).subarray(540 * 64), target: bits(cal.code(l), th.code, 540, 600) });
    assert.ok(Math.abs(e.recall - m.recall[l]!) < 1e-6, `layer ${l}: recall ${e.recall} vs stored ${m.recall[l]}`);
    assert.ok(Math.abs(e.precision - m.precision[l]!) < 1e-6, `precision ${e.precision} vs ${m.precision[l]}`);
    assert.ok(Math.abs(e.overRead - m.overRead[l]!) < 1e-5, `over-read ${e.overRead} vs ${m.overRead[l]}`);
    // it learned something: base rate ≈ 0.4 active; a useless predictor at ~97% recall has precision ≈ base rate
    assert.ok(e.recall > 0.85, `layer ${l}: held-out recall ${e.recall}`);
    assert.ok(e.precision > 1.5 * e.activeFrac, `layer ${l}: precision ${e.precision} vs active ${e.activeFrac}`);
    assert.ok(Math.abs(r.layers[l]!.activeFrac - (1 - th.achieved)) < 1e-9);
  }
});

test('sparsify (q8_0) in place, then again: replaces, originals byte-identical, same greedy tokens in RAM and hybrid mode', async () => {
  const path = join(dir, 'inplace.gguf');
  copyFileSync(model, path);
  // (sparsity ≥ 0.6 here: below it the synth model's threshold falls under max |SiLU(g<0)| ≈ 0.278, the
  // active set gains a band of negative g that one cutoff on a linear score cannot separate, and
  // precision collapses to the base rate — a property of |SiLU| thresholds, not of the code)
  const r1 = await sparsify(path, calib, { rank: 64, sparsity: 0.6 });
  assert.equal(r1.out, path);
  assert.ok(verifyModel(path).ok);
  const g1 = readGGUF(path);
  const m1 = readPredictorMeta(g1)!;
  assert.deepEqual([m1.type, m1.ranks, m1.sparsity], ['q8_0', [64, 64], Math.fround(0.6)]);
  assert.equal(g1.tensorByName.get('blk.0.pred_a')!.type, 8);
  for (const L of r1.layers) assert.ok(L.recall > 0.85 && L.precision > 1.5 * L.heldOutActiveFrac, JSON.stringify(L));
  const r2 = await sparsify(path, calib, { rank: 32, sparsity: 0.8, predType: 'q8_0' });
  const g = readGGUF(path);
  const m = readPredictorMeta(g)!;
  assert.deepEqual([m.ranks, m.sparsity], [[32, 32], Math.fround(0.8)]);
  assert.equal(g.tensors.filter((t) => /\.pred_/.test(t.name)).length, 6);
  assert.ok(r2.layers.every((L, l) => L.threshold > r1.layers[l]!.threshold), 'higher sparsity, higher thresholds');
  assert.ok(verifyModel(path).ok);
  const f = readGGUF(model);
  for (const t of f.tensors) assert.deepEqual(bytesOf(g, t.name), bytesOf(f, t.name), t.name);
  const prompt = [1, 398, 259, 284, 272, 264, 390];
  const ref = await greedyRun(model, prompt, 16, { mode: 'ram', kvType: 'f32' });
  const ram = await greedyRun(path, prompt, 16, { mode: 'ram', kvType: 'f32' });
  assert.deepEqual(ram.tokens, ref.tokens);
  assert.deepEqual(ram.logits, ref.logits);
  const hyb = await greedyRun(path, prompt, 16, { mode: 'hybrid', kvType: 'f32' });
  assert.deepEqual(hyb.tokens, ref.tokens);
});

test('a calibration of another model is refused with CalibrationMismatchError naming both identities; the file is untouched', async () => {
  const other = await flashLayoutCached({ ...o, seed: 22 }, 'q8_0');
  const path = join(dir, 'other.gguf');
  copyFileSync(other, path);
  const before = readFileSync(path);
  const cal = readCalibration(calib);
  await assert.rejects(sparsify(path, calib, { rank: 32 }), (e: Error) => {
    assert.ok(e instanceof CalibrationMismatchError);
    assert.equal(e.name, 'CalibrationMismatchError');
    assert.match(e.message, /calibration was made on another model/);
    assert.ok(e.message.includes(cal.meta.modelIdentity));
    assert.ok(e.message.includes(`source-sha256:${String(readGGUF(path).metadata.get('flashlm.source.sha256')!.value)}`));
    return true;
  });
  assert.deepEqual(readFileSync(path), before);
});

test('CLI: sparsify --json, inspect shows the predictors, a foreign calibration is one line and exit 1', async () => {
  const out = join(dir, 'cli.gguf');
  const r = spawnSync(process.execPath, [BIN, 'sparsify', model, '--calib', calib, '--rank', '32', '--pred-type', 'f32', '-o', out, '--json'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout.trim()) as { out: string; layers: { layer: number; threshold: number; active_frac: number; recall: number; precision: number; over_read: number }[] };
  assert.equal(j.out, out);
  assert.equal(j.layers.length, 2);
  for (const L of j.layers) for (const k of ['threshold', 'active_frac', 'recall', 'precision', 'over_read'] as const) assert.equal(typeof L[k], 'number', k);
  const ins = spawnSync(process.execPath, [BIN, 'inspect', out], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(ins.status, 0, ins.stderr);
  assert.match(ins.stdout, /sparse +v1: target sparsity 60%/);
  assert.match(ins.stdout, /predictors +f32, rank 32/);
  const v = spawnSync(process.execPath, [BIN, 'verify', out], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(v.status, 0, v.stdout + v.stderr);
  const bad = spawnSync(process.execPath, [BIN, 'sparsify', await flashLayoutCached({ ...o, seed: 22 }, 'q8_0'), '--calib', calib, '-o', join(dir, 'x.gguf')], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /^flashlm: .*calibration was made on another model/);
  assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
  const rk = spawnSync(process.execPath, [BIN, 'sparsify', model, '--calib', calib, '--rank', '40'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(rk.status, 1);
  assert.match(rk.stderr, /^flashlm: rank 40: q8_0 predictors need a multiple of 32/);
});

test('sparse mode runs the stored predictors; a small matrix streams the rest (collapsed gap records zeroed), or without a stream buffer trims', async () => {
  const path = join(dir, 'sparse-run.gguf');
  copyFileSync(model, path);
  await sparsify(path, calib, { rank: 32, sparsity: 0.7 });
  const prompt = [1, 398, 259, 284, 272];
  const full = await greedyRun(path, prompt, 6, { mode: 'sparse' });
  const z = full.model.sparse!;
  const passes = prompt.length + 5;
  // the predictor names a minority of the neurons (sparsity 0.7, over-read ≈ 2×), not all of them
  assert.ok(z.stats.predicted < 0.9 * passes * o.layers * o.ffn, `predicted ${z.stats.predicted}`);
  assert.ok(z.stats.predicted > 0.1 * passes * o.layers * o.ffn, `predicted ${z.stats.predicted}`);
  assert.equal(z.src.stats.overflow, 0);
  // window 0: the computed set is exactly the predicted set, whatever the matrix holds
  const all = await greedyRun(path, prompt, 6, { mode: 'sparse', window: 0, collapseGap: 0 });
  const streamed = await greedyRun(path, prompt, 6, { mode: 'sparse', window: 0, neuronCapacity: 20, streamRows: 8, collapseGap: 3 });
  assert.deepEqual(streamed.tokens, all.tokens);
  for (let i = 0; i < 6; i++) {
    const a = streamed.logits[i]!, b = all.logits[i]!;
    let d = 0;
    for (let j = 0; j < a.length; j++) d = Math.max(d, Math.abs(a[j]! - b[j]!));
    assert.ok(d < 1e-3, `step ${i}: max |Δlogit| ${d}`);
  }
  const st = streamed.model.sparse!;
  assert.ok(st.src.stats.streamed > 0, 'some neurons streamed');
  assert.ok(st.src.stats.gapRecords > 0, 'collapse read through gaps (their rows are zeroed, so not counted twice)');
  assert.equal(st.stats.predicted, all.model.sparse!.stats.predicted);
  const small = await greedyRun(path, prompt, 6, { mode: 'sparse', neuronCapacity: 20, window: 1, streamRows: 0 });
  const s = small.model.sparse!;
  assert.ok(s.stats.predicted <= passes * o.layers * 20, `predicted ${s.stats.predicted}`);
  assert.equal(s.src.stats.overflow, 0, 'without a stream buffer the predictor trims to the capacity, so nothing overflows');
  for (const m of s.src.matrices) m.check();
});

test('sparsify --rule gate: τ is the sparsity quantile of g = W_gate·x, targets g ≥ τ, stored rule drives the engine', async () => {
  const out = join(dir, 'gate.gguf');
  const r = await sparsify(model, calib, { out, rank: 32, predType: 'f32', sparsity: 0.7, targetRecall: 0.97, rule: 'gate' });
  assert.equal(r.rule, 'gate');
  assert.ok(verifyModel(out).ok);
  const g = readGGUF(out);
  const m = readPredictorMeta(g)!;
  assert.equal(m.rule, 'gate');
  for (let l = 0; l < 2; l++) {
    const L = r.layers[l]!;
    assert.equal(m.thresholds[l], Math.fround(L.threshold));
    // τ from every 4th token's values: the share of all (token, neuron) pairs with g ≥ τ is ≈ 30%
    assert.ok(Math.abs(L.activeFrac - 0.3) < 0.03, `layer ${l}: active ${L.activeFrac}`);
    // a half-line of g is what a linear predictor can learn: far better than the base rate
    assert.ok(L.recall > 0.85, `layer ${l}: held-out recall ${L.recall}`);
    assert.ok(L.precision > 1.5 * L.heldOutActiveFrac, `layer ${l}: precision ${L.precision} vs active ${L.heldOutActiveFrac}`);
  }
  // the engine reads the rule from the file: the oracle in RAM mode and sparse mode with every
  // neuron predicted agree exactly, and both differ from dense
  const prompt = [1, 300, 301, 302];
  const dense = await greedyRun(out, prompt, 4, { mode: 'ram' });
  const ram = await greedyRun(out, prompt, 4, { mode: 'ram', thresholds: 'file' });
  const sp = await greedyRun(out, prompt, 4, { mode: 'sparse', predictor: 'all', thresholds: 'file' });
  assert.equal(ram.model.sparsity?.rule, 'gate');
  assert.deepEqual(sp.tokens, ram.tokens);
  for (let i = 0; i < 4; i++) assert.deepEqual(sp.logits[i], ram.logits[i], `step ${i}`);
  assert.notDeepEqual(ram.logits[0], dense.logits[0]);
  assert.ok(sp.model.sparse!.stats.dropped > 0);
});

test('sparsify --predictor gate: a q4_0 copy of the gate scored with the rule; high held-out recall and precision; sparse mode matches the exact threshold', async () => {
  const out = join(dir, 'gate-pred.gguf');
  const r = await sparsify(model, calib, { out, predictor: 'gate', sparsity: 0.5, targetRecall: 0.99 });
  assert.equal(r.predictor, 'gate');
  assert.equal(r.predType, 'q4_0');
  assert.ok(verifyModel(out).ok);
  const g = readGGUF(out);
  const m = readPredictorMeta(g)!;
  assert.deepEqual([m.kind, m.type, m.ranks], ['gate', 'q4_0', [0, 0]]);
  for (let l = 0; l < 2; l++) {
    const t = m.tensors[l]!.gate!;
    assert.deepEqual([...t.dims], [64, 192]);
    assert.equal(t.bytes, (64 * 192 / 32) * 18);
    const L = r.layers[l]!;
    // the approximate gate separates the CATS band that a low-rank predictor cannot
    assert.ok(L.recall > 0.95, `layer ${l}: held-out recall ${L.recall}`);
    assert.ok(L.precision > 0.8, `layer ${l}: precision ${L.precision} (active ${L.heldOutActiveFrac})`);
    assert.ok(L.predictedFrac < 0.7, `layer ${l}: predicted ${L.predictedFrac}`);
  }
  assert.throws(() => loadPredictor(g, m, 0), /no low-rank factors/);
  const prompt = [1, 398, 259, 284, 272];
  const exact = await greedyRun(out, prompt, 6, { mode: 'ram', thresholds: 'file' });
  const sp = await greedyRun(out, prompt, 6, { mode: 'sparse', window: 0 });
  assert.deepEqual(sp.tokens, exact.tokens);
  const z = sp.model.sparse!.stats;
  const passes = prompt.length + 5;
  assert.ok(z.predicted < 0.7 * passes * o.layers * o.ffn!, `predicted ${z.predicted} of ${passes * o.layers * o.ffn!}`);
  // the other modes neither load nor read the predictor: same resident plan and naive traffic as
  // without it (it was counted as resident weights, and naive mode read it every token)
  const plain = await Model.load(model, { mode: 'hybrid', memory: 1e11 });
  const withPred = await Model.load(out, { mode: 'hybrid', memory: 1e11 });
  try {
    assert.equal(withPred.plan!.resident, plain.plan!.resident);
  } finally {
    await plain.close();
    await withPred.close();
  }
  const n0 = await greedyRun(model, prompt, 3, { mode: 'naive' });
  const n1 = await greedyRun(out, prompt, 3, { mode: 'naive' });
  assert.deepEqual(n1.tokens, n0.tokens);
  const perPass = (r: typeof n0) => r.model.flashStats()!.bytes / r.model.times.prefilled;
  assert.ok(Math.abs(perPass(n1) - perPass(n0)) <= o.layers * 8192, `naive bytes per pass ${perPass(n1)} vs ${perPass(n0)} without a predictor`);
  // a lowrank-only CLI flag combination is refused
  const bad = spawnSync(process.execPath, [BIN, 'sparsify', model, '--calib', calib, '--pred-type', 'q4_0', '-o', join(dir, 'x.gguf')], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /pred-type/);
});

test('sparsify --predictor gate --pred-type q8_0 --exact-cutoff on a q8_0 model: the predicted set is the active set (the oracle)', async () => {
  const out = join(dir, 'gate-oracle.gguf');
  const r = await sparsify(model, calib, { out, predictor: 'gate', predType: 'q8_0', sparsity: 0.5, exactCutoff: true });
  // sparsify sees the calibration's f16-stored inputs and code-quantized magnitudes, not the
  // engine's exact values: near-threshold neurons can disagree there, never in the engine (below)
  for (const L of r.layers) {
    assert.ok(L.recall > 0.99, `layer ${L.layer}: recall ${L.recall}`);
    assert.ok(L.precision > 0.99, `layer ${L.layer}: precision ${L.precision}`);
    assert.ok(Math.abs(L.cutoff - L.threshold) <= 1e-6 * Math.max(1, L.threshold), `cutoff ${L.cutoff} vs threshold ${L.threshold}`);
  }
  const prompt = [1, 398, 259, 284, 272];
  const exact = await greedyRun(out, prompt, 6, { mode: 'ram', thresholds: 'file' });
  // collapse 0: with a disk profile in the cache dir, collapsed reads would add gap records to the
  // rows computed (exactly, but counted in `dropped`)
  const sp = await greedyRun(out, prompt, 6, { mode: 'sparse', window: 0, collapseGap: 0 });
  assert.deepEqual(sp.tokens, exact.tokens);
  for (let i = 0; i < 6; i++) assert.deepEqual(sp.logits[i], exact.logits[i], `step ${i}`);
  const z = sp.model.sparse!.stats;
  // every predicted neuron passes the exact threshold (up to the act's last-bit rounding)
  assert.ok(z.dropped <= 0.001 * z.computed, `dropped ${z.dropped} of ${z.computed}`);
});
