// The 'predictors' fuzz target's seeds and checks (registered in scripts/fuzz-targets.ts): the
// sparse-mode data `flashlm sparsify` stores in a flash-layout GGUF (src/formats/predictors.ts), i.e.
// the flashlm.sparse.* / flashlm.predictor.* metadata and the per-layer pred tensors: low-rank
// blk.N.pred_a / pred_b, gate copies blk.N.pred_gate, cutoffs blk.N.pred_thr. Seeds are real
// sparsify outputs (writeWithPredictors) of the tiny synth flash model, one per predictor kind, type
// and rule; the target's mutations (GGUF edits of these keys and tensors, byte damage) come from
// fuzz-targets.ts like every other GGUF target's.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { modelIdentity } from '../src/formats/calibration.js';
import { FK, openFlashLayout } from '../src/formats/flash-layout.js';
import { readGGUF, readTensorData, type GGUFFile, type TensorInfo } from '../src/formats/gguf.js';
import {
  describePredictors, loadPredictor, PK, PRED_RE, readGateWeights, readPredictorMeta, writeWithPredictors, type PredictorAddition, type PredictorKind, type PredType,
} from '../src/formats/predictors.js';
import { dequantize } from '../src/formats/quant.js';
import { BUNDLE_RE } from '../src/formats/checksum.js';
import { GGUFValueType as VT } from '../src/formats/gguf-types.js';
import { alignUp, type GModel } from './fuzz-codec.js';

/** Metadata keys the target's edits aim at (half of them; the rest hit any key). */
export const PREDICTOR_KEYS = [...Object.values(PK), FK.version, FK.recordBytes, FK.dtype, FK.parts, FK.partBytes, 'llama.block_count', 'general.alignment'];

function rnd(n: number, seed: number, scale = 1): Float32Array {
  const v = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) { s = (s * 1664525 + 1013904223) >>> 0; v[i] = (s / 2 ** 32 - 0.5) * scale; }
  return v;
}

/** The sparsify outputs the seeds are made of: every predictor kind, each type it may have, both rules. */
export const VARIANTS: { kind: PredictorKind; type: PredType; rank: number; rule: 'abs' | 'gate' }[] = [
  { kind: 'lowrank', type: 'q8_0', rank: 32, rule: 'abs' },
  { kind: 'lowrank', type: 'f32', rank: 3, rule: 'gate' },
  { kind: 'gate', type: 'q4_0', rank: 0, rule: 'abs' },
  { kind: 'gate', type: 'f32', rank: 0, rule: 'gate' },
];

/** `flashPath` (a flash-layout model with checksums) through writeWithPredictors with VARIANTS[vi]'s
 * predictors (random values), written into `dir` once; returns the output's path. */
export function sparsified(flashPath: string, dir: string, vi: number): string {
  const v = VARIANTS[vi]!;
  const out = path.join(dir, `pred-${v.kind}-${v.type}-${v.rule}.gguf`);
  if (fs.existsSync(out)) return out;
  const f = readGGUF(flashPath);
  const L = openFlashLayout(f);
  const dim = L.dim, nFF = L.layers[0]!.nFF, n = L.layers.length;
  const add: PredictorAddition = {
    layers: Array.from({ length: n }, (_, l) => ({
      a: v.kind === 'gate' ? new Float32Array(0) : rnd(v.rank * dim, 10 * l + vi),
      b: v.kind === 'gate' ? new Float32Array(0) : rnd(nFF * v.rank, 10 * l + vi + 1),
      ...(v.kind === 'gate' ? { gate: rnd(nFF * dim, 10 * l + vi + 2) } : {}),
      thr: rnd(nFF, 10 * l + vi + 3, 0.2), rank: v.rank, recall: 0.97, precision: 0.6, overRead: 1.5,
    })),
    sparsity: 0.5, thresholds: Float32Array.from({ length: n }, (_, l) => (v.rule === 'abs' ? 0.1 + l / 100 : -0.05 * l)),
    rule: v.rule, predType: v.type, kind: v.kind,
    calibration: { path: 'fuzz-calib.gguf', tokens: 100, files: 1, identity: modelIdentity(f) },
  };
  writeWithPredictors(flashPath, out, add);
  return out;
}

/**
 * Seeds: every variant's sparsify output, cut down to what the predictor readers look at (the
 * bundles, the pred tensors, the layout and predictor keys; no tokenizer, checksums or attention
 * weights) and re-laid at 512-byte alignment (the bundles' O_DIRECT alignment): ~40 KB an input.
 */
export function predictorSeeds(flashPath: string, dir: string): GModel[] {
  return VARIANTS.map((_, vi) => compact(readGGUF(sparsified(flashPath, dir, vi))));
}

/** The bundles and pred tensors of `g` (and the metadata but tokenizer / checksum keys), re-laid at 512 B. */
function compact(g: GGUFFile): GModel {
  const ALIGN = 512;
  const keep = g.tensors.filter((t) => BUNDLE_RE.test(t.name) || PRED_RE.test(t.name));
  let rel = 0;
  const placed = keep.map((t) => {
    const at = alignUp(rel, ALIGN);
    rel = at + t.bytes;
    return { t, at };
  });
  const data = new Uint8Array(alignUp(rel, ALIGN));
  for (const { t, at } of placed) readTensorData(g.path, t, data.subarray(at, at + t.bytes));
  const kvs = [...g.metadata.values()].filter((kv) => !kv.key.startsWith('tokenizer.') && !kv.key.startsWith('flashlm.checksum.'))
    .map((kv) => (kv.key === 'general.alignment' ? { key: kv.key, type: VT.UINT32, value: ALIGN } : kv));
  if (!kvs.some((kv) => kv.key === 'general.alignment')) kvs.push({ key: 'general.alignment', type: VT.UINT32, value: ALIGN });
  return { version: g.version, alignment: ALIGN, kvs, tensors: placed.map(({ t, at }) => ({ name: t.name, dims: [...t.dims], type: t.type, rel: BigInt(at) })), data };
}

/** What `flashlm inspect`, sparsify and the tests do with a model's predictors: read and check the
 * metadata, describe it, load every layer's pred tensors as f32, read the gate weights they predict. */
export function execPredictors(p: string): void {
  const f = readGGUF(p);
  const m = readPredictorMeta(f);
  describePredictors(f);
  if (!m) return;
  const f32 = (t: TensorInfo): Float32Array => {
    const raw = new Uint8Array(t.bytes);
    readTensorData(f.path, t, raw);
    return dequantize(t.type, raw, t.dims.reduce((a, b) => a * b, 1));
  };
  for (let l = 0; l < m.tensors.length; l++) {
    const T = m.tensors[l]!;
    if (m.kind === 'lowrank') loadPredictor(f, m, l);
    else { f32(T.gate!); f32(T.thr); }
  }
  const L = openFlashLayout(f);
  if (L.parts.includes('gate')) for (let l = 0; l < L.layers.length; l++) readGateWeights(f, L, l);
}
