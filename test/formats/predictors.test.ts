// Predictors stored in a flash-layout file (src/formats/predictors.ts): placement and types of the
// pred tensors, metadata round trip, checksums still valid, the original tensors copied byte for
// byte, replacement on re-run (in place), and refusal of a foreign calibration, of q8_0 ranks that
// are not multiples of 32 and of a corrupted input.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, openSync, readdirSync, readSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { flashLayoutCached, testDir } from '../helpers.js';
import { verifyModel, ChecksumError, CK } from '../../src/formats/checksum.js';
import { modelIdentity } from '../../src/formats/calibration.js';
import { readGGUF, readTensorData, GGUFValueType as VT, type GGUFFile } from '../../src/formats/gguf.js';
import { TensorType } from '../../src/formats/ggml-types.js';
import { dequantize, quantize } from '../../src/formats/quant.js';
import {
  CalibrationMismatchError, PK, PredictorFormatError, loadPredictor, readGateWeights, readPredictorMeta, writeWithPredictors, type PredictorAddition, type PredType,
} from '../../src/formats/predictors.js';
import { openFlashLayout } from '../../src/formats/flash-layout.js';
import type { SynthOptions } from '../../src/engine/synth.js';

const o: SynthOptions = { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 64, dtype: 'f32', act: 'silu', seed: 11, format: 'gguf' };
const DIM = 64, FFN = 192;

function rnd(n: number, seed: number): Float32Array {
  const v = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (s * 1664525 + 1013904223) >>> 0; v[i] = s / 2 ** 32 - 0.5; }
  return v;
}

function addition(f: GGUFFile, rank: number, type: PredType, seed = 1): PredictorAddition {
  return {
    layers: [0, 1].map((l) => ({
      a: rnd(rank * DIM, seed + 10 * l), b: rnd(FFN * rank, seed + 10 * l + 1), thr: rnd(FFN, seed + 10 * l + 2), rank,
      recall: 0.97 - l / 100, precision: 0.5 + l / 10, overRead: 1.9 - l / 10,
    })),
    sparsity: 0.6, thresholds: Float32Array.from([0.25, 0.3]), predType: type,
    calibration: { path: 'c.gguf', tokens: 1234, files: 3, identity: modelIdentity(f) },
  };
}

const tensorBytes = (f: GGUFFile, name: string): Uint8Array => {
  const t = f.tensorByName.get(name)!;
  const b = new Uint8Array(t.bytes);
  readTensorData(f.path, t, b);
  return b;
};

test('writeWithPredictors: pred tensors before each bundle, metadata round trip, checksums valid, originals byte-identical', async () => {
  const src = await flashLayoutCached(o, 'q8_0');
  const dir = testDir('predictors-write');
  const out = join(dir, 'out.gguf');
  const f = readGGUF(src);
  const add = addition(f, 32, 'q8_0');
  const r = writeWithPredictors(src, out, add);
  assert.ok(r.predictorBytes > 0);
  assert.ok(verifyModel(out).ok, 'verify');
  const g = readGGUF(out);
  // order: ... blk.l.pred_a, blk.l.pred_b, blk.l.pred_thr, blk.l.ffn_bundle ...
  const names = g.tensors.map((t) => t.name);
  for (const l of [0, 1]) {
    const i = names.indexOf(`blk.${l}.ffn_bundle`);
    assert.deepEqual(names.slice(i - 3, i), [`blk.${l}.pred_a`, `blk.${l}.pred_b`, `blk.${l}.pred_thr`]);
    const a = g.tensorByName.get(`blk.${l}.pred_a`)!, b = g.tensorByName.get(`blk.${l}.pred_b`)!, thr = g.tensorByName.get(`blk.${l}.pred_thr`)!;
    assert.deepEqual([a.dims, a.type, b.dims, b.type, thr.dims, thr.type], [[DIM, 32], TensorType.Q8_0, [32, FFN], TensorType.Q8_0, [FFN, 1], TensorType.F32]);
  }
  // the input's tensors: same order without pred, bytes identical
  assert.deepEqual(names.filter((n) => !/\.pred_/.test(n)), f.tensors.map((t) => t.name));
  for (const t of f.tensors) assert.deepEqual(tensorBytes(g, t.name), tensorBytes(f, t.name), t.name);
  // metadata: the input's keys unchanged except the checksum digests / names
  for (const [k, kv] of f.metadata) {
    if (k === CK.tensorNames || k === CK.tensors || k === CK.header) continue;
    assert.deepEqual(g.metadata.get(k)?.value, kv.value, k);
  }
  assert.equal(g.metadata.get('flashlm.source.sha256')?.value, f.metadata.get('flashlm.source.sha256')?.value);
  assert.equal(modelIdentity(g), modelIdentity(f));
  const m = readPredictorMeta(g)!;
  assert.equal(m.version, 1);
  assert.equal(m.sparsity, Math.fround(0.6));
  assert.deepEqual([...m.thresholds], [Math.fround(0.25), Math.fround(0.3)]);
  assert.deepEqual(m.ranks, [32, 32]);
  assert.equal(m.type, 'q8_0');
  assert.deepEqual([...m.recall], [0.97, 0.96].map(Math.fround));
  assert.deepEqual([...m.precision], [0.5, 0.6].map(Math.fround));
  assert.deepEqual([...m.overRead], [1.9, 1.8].map(Math.fround));
  assert.equal(m.modelIdentity, modelIdentity(f));
  assert.equal(m.calibrationTokens, 1234);
  for (const l of [0, 1]) {
    const p = loadPredictor(g, m, l);
    const L = add.layers[l]!;
    assert.deepEqual(p.a, dequantize(TensorType.Q8_0, quantize(TensorType.Q8_0, L.a), L.a.length));
    assert.deepEqual(p.b, dequantize(TensorType.Q8_0, quantize(TensorType.Q8_0, L.b), L.b.length));
    assert.deepEqual(p.thr, L.thr);
  }
  assert.equal(readPredictorMeta(f), undefined);
  assert.deepEqual(readdirSync(dir), ['out.gguf'], 'no temp files left');
});

test('re-running in place (out = input) replaces the predictors', async () => {
  const dir = testDir('predictors-rerun');
  const path = join(dir, 'm.gguf');
  const orig = await flashLayoutCached(o, 'q8_0');
  copyFileSync(orig, path);
  const f = readGGUF(orig); // (path's offsets change when it is replaced)
  writeWithPredictors(path, path, addition(f, 32, 'q8_0'));
  const g = readGGUF(path);
  writeWithPredictors(path, path, { ...addition(g, 48, 'f32', 7), sparsity: 0.7 });
  const h = readGGUF(path);
  assert.ok(verifyModel(path).ok);
  assert.equal(h.tensors.filter((t) => /\.pred_/.test(t.name)).length, 6, 'one set per layer');
  const m = readPredictorMeta(h)!;
  assert.deepEqual([m.type, m.ranks, m.sparsity], ['f32', [48, 48], Math.fround(0.7)]);
  assert.deepEqual(h.tensorByName.get('blk.1.pred_b')!.dims, [48, FFN]);
  assert.equal(h.tensorByName.get('blk.1.pred_b')!.type, TensorType.F32);
  assert.deepEqual(loadPredictor(h, m, 1).a, addition(g, 48, 'f32', 7).layers[1]!.a);
  for (const t of f.tensors) if (!/\.pred_/.test(t.name)) assert.deepEqual(tensorBytes(h, t.name), tensorBytes(f, t.name), t.name);
  assert.deepEqual(readdirSync(dir), ['m.gguf']);
});

test('refuses a calibration of another model, q8_0 ranks that are not multiples of 32, and bad shapes', async () => {
  const src = await flashLayoutCached(o, 'q8_0');
  const dir = testDir('predictors-refuse');
  const out = join(dir, 'x.gguf');
  const f = readGGUF(src);
  const other = readGGUF(await flashLayoutCached({ ...o, seed: 12 }, 'q8_0'));
  const foreign = addition(f, 32, 'q8_0');
  foreign.calibration.identity = modelIdentity(other);
  assert.throws(() => writeWithPredictors(src, out, foreign), (e: Error) => e instanceof CalibrationMismatchError && e.name === 'CalibrationMismatchError' && /calibration was made on another model/.test(e.message));
  assert.throws(() => writeWithPredictors(src, out, addition(f, 48, 'q8_0')), (e: Error) => e instanceof PredictorFormatError && /rank % 32/.test(e.message));
  const short = addition(f, 32, 'f32');
  short.layers[1] = { ...short.layers[1]!, b: short.layers[1]!.b.subarray(1) };
  assert.throws(() => writeWithPredictors(src, out, short), /b has/);
  assert.throws(() => writeWithPredictors(src, out, { ...addition(f, 32, 'f32'), thresholds: new Float32Array(1) }), PredictorFormatError);
  assert.equal(existsSync(out), false);
  assert.deepEqual(readdirSync(dir), []);
});

test('a corrupted input is refused (ChecksumError), not re-blessed with fresh digests', async () => {
  const dir = testDir('predictors-corrupt');
  for (const victim of ['blk.1.ffn_bundle', 'blk.0.attn_q.weight']) {
    const path = join(dir, 'bad.gguf');
    copyFileSync(await flashLayoutCached(o, 'q8_0'), path);
    const f = readGGUF(path);
    const t = f.tensorByName.get(victim)!;
    const fd = openSync(path, 'r+');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, t.offset + 100);
    b[0] ^= 0x40;
    writeSync(fd, b, 0, 1, t.offset + 100);
    closeSync(fd);
    const out = join(dir, 'out.gguf');
    assert.throws(() => writeWithPredictors(path, out, addition(f, 32, 'q8_0')), (e: Error) => e instanceof ChecksumError && e.message.includes(victim));
    assert.equal(existsSync(out), false, victim);
  }
});

test('readPredictorMeta checks array lengths, ranks and tensors', async () => {
  const src = await flashLayoutCached(o, 'q8_0');
  const out = join(testDir('predictors-meta'), 'p.gguf');
  writeWithPredictors(src, out, addition(readGGUF(src), 32, 'q8_0'));
  const edit = (key: string, value: unknown, type: number = VT.ARRAY): GGUFFile => {
    const g = readGGUF(out);
    g.metadata.set(key, { key, type, value: value as never });
    return g;
  };
  assert.ok(readPredictorMeta(readGGUF(out)));
  assert.throws(() => readPredictorMeta(edit(PK.recall, new Float32Array(1))), /flashlm\.predictor\.recall.*1 entries for 2 layers/);
  assert.throws(() => readPredictorMeta(edit(PK.threshold, Float32Array.from([0.1, NaN]))), /threshold/);
  assert.throws(() => readPredictorMeta(edit(PK.rank, Uint32Array.from([32, 48]))), /multiple of 32/);
  assert.throws(() => readPredictorMeta(edit(PK.rank, Uint32Array.from([32, 64]))), /blk\.1\.pred_a/);
  assert.throws(() => readPredictorMeta(edit(PK.type, 'q4_0', VT.STRING)), /predictor\.type/);
  assert.throws(() => readPredictorMeta(edit(PK.version, 2, VT.UINT32)), /version 2/);
  // Number() would read these as 1234: a one-element array and a numeric string are not a u32
  assert.throws(() => readPredictorMeta(edit(PK.calibTokens, Uint32Array.from([1234]))), /calibration_tokens.*not a non-negative integer/);
  assert.throws(() => readPredictorMeta(edit(PK.calibTokens, '1234', VT.STRING)), /calibration_tokens/);
  // pred_thr is checked against its own layer's bundle width, not layer 0's
  const g = readGGUF(out);
  const b1 = g.tensorByName.get('blk.1.ffn_bundle')!;
  const narrow = { ...b1, dims: [b1.dims[0]!, FFN - 1], bytes: b1.bytes - b1.dims[0]! };
  g.tensorByName.set(b1.name, narrow);
  g.tensors[g.tensors.indexOf(b1)] = narrow;
  g.metadata.set('flashlm.perm.1', { key: 'flashlm.perm.1', type: VT.ARRAY, arrayType: VT.UINT32, value: Uint32Array.from({ length: FFN - 1 }, (_, i) => i) });
  assert.throws(() => readPredictorMeta(g), /blk\.1\.pred_thr.*\[191\]/);
});

test('readGateWeights: row perm[i] = gate part of record i, as the source gate matrix', async () => {
  const src = await flashLayoutCached(o, 'f32');
  const f = readGGUF(src);
  const L = openFlashLayout(f);
  const std = readGGUF(src.replace(/\.flash-f32\.gguf$/, '.gguf'));
  for (const l of [0, 1]) {
    const w = readGateWeights(f, L, l);
    const ref = new Float32Array(tensorBytes(std, `blk.${l}.ffn_gate.weight`).buffer);
    assert.deepEqual(w, ref);
  }
  // a permuted layout: the same matrix back (rows follow perm)
  const perm = Uint32Array.from({ length: FFN }, (_, i) => (i * 5 + 3) % FFN);
  const P = { ...L, layers: L.layers.map((x) => ({ ...x, perm })) };
  const w = readGateWeights(f, P, 0);
  const ref = new Float32Array(tensorBytes(std, 'blk.0.ffn_gate.weight').buffer);
  for (const i of [0, 1, 7, FFN - 1]) assert.deepEqual(w.subarray(perm[i]! * DIM, (perm[i]! + 1) * DIM), ref.subarray(i * DIM, (i + 1) * DIM));
});
