// `flashlm sparsify`: turns a calibration file (formats/calibration.ts) into per-layer sparsity
// thresholds and low-rank activation predictors stored in the flash-layout model file itself
// (formats/predictors.ts).
//
// Per layer l (n calibration tokens, the last 10% HELD OUT: never fitted, never used for the cutoff):
//   t_l      = thresholdForSparsity(hist_l, sparsity): neuron active ⇔ |act(gate·x)| ≥ t_l, i.e.
//              code ≥ c_l — the target bits of the predictor;
//   W_gate   f32 [ffn × dim] from the bundle's gate parts (row j = original neuron j) for the
//              trainer's gate-weights init;
//   predictor = trainPredictor on tokens [0, nTrain) (its own validation split, the last
//              10% of those, sets the cutoff for targetRecall);
//   q8_0     the predictor is quantized as it will be stored, and the cutoff re-picked on the same
//              validation tokens with the quantized weights (and q8_0-rounded x and h, as the
//              engine's q8_0 matvec does), so the target recall holds for what is stored;
//   figures  recall / precision / over-read on the held-out tokens, same definitions as
//              evalPredictor, computed in the shared workspace (evalPredictor makes a new arena per
//              call, which the kernel workers keep alive: 39 MB per call at 13B shapes).
// Memory at 13B (n 4000, dim 5120, ffn 13824, rank 256): workspace ~0.45 GB, W_gate 283 MB, x 82 MB,
// codes 55 MB per layer, plus the predictors kept for writing (19 MB per layer f32: 0.7 GB for 36).
import { Compute } from '../kernels/index.js';
import { readCalibration, modelIdentity } from '../formats/calibration.js';
import { readGGUF } from '../formats/gguf.js';
import { isFlashLayout, openFlashLayout } from '../formats/flash-layout.js';
import { TensorType } from '../formats/ggml-types.js';
import { dequantize, quantize } from '../formats/quant.js';
import {
  CalibrationMismatchError, readGateWeights, writeWithPredictors, type PredType, type PredictorKind, type PredictorLayerData,
} from '../formats/predictors.js';
import { gatePredictor, gateWorkspaceBytes } from './sparsify-gate.js';
import { thresholdForSparsity } from './calibrate.js';
import type { SparsityRule } from '../model/llama.js';
import { PredictorWorkspace, predictorWorkspaceBytes, trainPredictor, type LowRankPredictor } from './predictor-train.js';
import { predictorThresholds } from './predictor-eval.js';

export { CalibrationMismatchError } from '../formats/predictors.js';

export class SparsifyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SparsifyError';
  }
}

export interface SparsifyOptions {
  sparsity?: number; // target inactive fraction on the calibration data, 0..0.99 (default 0.6)
  /** 'abs' (CATS: |act(g)| ≥ t active, from the calibration codes; default) or 'gate' (g ≥ t active,
   * g = W_gate·x recomputed from the calibration inputs: a half-line a linear predictor can learn) */
  rule?: SparsityRule;
  rank?: number | number[]; // predictor rank, or one per layer (default 256; lowered to what the data allows)
  targetRecall?: number; // default 0.97
  epochs?: number; // BCE epochs (trainer default 3)
  /** 'lowrank' (default: trained rank-r predictors) or 'gate' (a predType-quantized copy of W_gate, sparsify-gate.ts) */
  predictor?: PredictorKind;
  predType?: PredType; // default q8_0 (lowrank), q4_0 (gate)
  /** gate predictor: cutoff = the rule's own threshold instead of one for targetRecall. With a q8_0
   * copy of a q8_0 model's gate, ĝ = g bit for bit and the predicted set IS the active set: the
   * oracle that bytes read are compared against (bench/sparse-oracle). */
  exactCutoff?: boolean;
  out?: string; // default: the model file, replaced atomically
  threads?: number; // default 2
  seed?: number;
  onProgress?: (p: { phase: 'train' | 'write'; done: number; total: number }) => void;
}

export interface SparsifyLayer {
  layer: number;
  rank: number;
  code: number; // activation code threshold (code ≥ this ⇔ active; rule 'abs' only, else -1)
  threshold: number; // t_l on |act(gate·x)| (rule 'abs') or on gate·x (rule 'gate')
  activeFrac: number; // calibration (token, neuron) pairs active at t_l, all tokens
  heldOutActiveFrac: number;
  recall: number; // held-out
  precision: number;
  overRead: number; // predicted / truly active
  predictedFrac: number; // share of the layer's records read
  cutoff: number; // score cutoff stored (after re-picking for q8_0)
  trainCutoff: number; // the trainer's (f32) cutoff
  seconds: number;
}

export interface SparsifyResult {
  out: string;
  sparsity: number;
  rule: SparsityRule;
  predType: PredType;
  predictor: PredictorKind;
  tokens: { total: number; fitted: number; cutoff: number; heldOut: number };
  layers: SparsifyLayer[];
  warnings: string[];
  seconds: { train: number; write: number; total: number };
}

const HELD_OUT = 0.1; // fraction of calibration tokens (the last ones) only evaluated on
const EVAL_BATCH = 256; // tokens per scoring batch

export async function sparsify(modelPath: string, calibPath: string, opts: SparsifyOptions = {}): Promise<SparsifyResult> {
  const t0 = performance.now();
  const sparsity = opts.sparsity ?? 0.6;
  const recallTarget = opts.targetRecall ?? 0.97;
  const kind = opts.predictor ?? 'lowrank';
  if (kind !== 'lowrank' && kind !== 'gate') throw new SparsifyError(`predictor '${String(kind)}' (use lowrank or gate)`);
  const predType = opts.predType ?? (kind === 'gate' ? 'q4_0' : 'q8_0');
  const rule = opts.rule ?? 'abs';
  if (rule !== 'abs' && rule !== 'gate') throw new SparsifyError(`rule '${String(rule)}' (use abs or gate)`);
  if (!(sparsity >= 0 && sparsity <= 0.99)) throw new SparsifyError(`sparsity ${sparsity} not in [0, 0.99]`);
  if (!(recallTarget > 0 && recallTarget <= 1)) throw new SparsifyError(`target recall ${recallTarget} not in (0, 1]`);
  if (predType !== 'q8_0' && predType !== 'f32' && !(predType === 'q4_0' && kind === 'gate')) throw new SparsifyError(`predictor type '${String(predType)}' (use q8_0 or f32${kind === 'gate' ? ' or q4_0' : ''})`);
  const f = readGGUF(modelPath);
  if (!isFlashLayout(f)) throw new SparsifyError(`${modelPath} is not a flash-layout file (make one with: flashlm convert SRC -o OUT.gguf --quant q8_0 --layout flash)`);
  const layout = openFlashLayout(f);
  if (!layout.parts.includes('gate')) throw new SparsifyError(`${modelPath}: sparse predictors need a gated (GLU) FFN; this file's records are ${layout.parts.join(',')}`);
  const cal = readCalibration(calibPath);
  const identity = modelIdentity(f);
  if (cal.meta.modelIdentity !== identity) throw new CalibrationMismatchError(cal.meta.modelIdentity, identity, calibPath);
  const nLayers = layout.layers.length, dim = layout.dim, ffn = layout.layers[0]?.nFF ?? 0;
  const { tokens: n } = cal.meta;
  if (cal.meta.nLayers !== nLayers || cal.meta.dim !== dim || cal.meta.ffn !== ffn) {
    throw new SparsifyError(`${calibPath}: calibration shapes (layers ${cal.meta.nLayers}, dim ${cal.meta.dim}, ffn ${cal.meta.ffn}) do not match the model (${nLayers}, ${dim}, ${ffn})`);
  }
  const nHeld = Math.max(1, Math.ceil(n * HELD_OUT));
  const nTrain = n - nHeld;
  const nv = Math.max(1, Math.min(Math.round(nTrain * 0.1), 1000)); // the trainer's cutoff tokens (its default)
  const nt = nTrain - nv;
  if (nt < 32) throw new SparsifyError(`${calibPath}: ${n} calibration tokens leave ${nt} to fit a predictor (need ≥ 32; calibrate with more --tokens)`);

  // ranks: as asked, lowered to what the data allows (≤ dim, ffn, fitted tokens), multiples of 32 for q8_0
  const warnings: string[] = [];
  const asked = kind === 'gate' ? Array.from({ length: nLayers }, () => 32) : Array.isArray(opts.rank) ? opts.rank : Array.from({ length: nLayers }, () => (opts.rank as number | undefined) ?? 256);
  if (asked.length !== nLayers) throw new SparsifyError(`${asked.length} ranks given for ${nLayers} layers`);
  const ranks = asked.map((r, l) => {
    if (!Number.isInteger(r) || r < 1) throw new SparsifyError(`layer ${l}: rank ${r} is not a positive integer`);
    if (predType === 'q8_0' && r % 32 !== 0) throw new SparsifyError(`rank ${r}: q8_0 predictors need a multiple of 32 (or --pred-type f32)`);
    let k = Math.min(r, dim, ffn, nt);
    if (predType === 'q8_0') k -= k % 32;
    if (k < 1) throw new SparsifyError(`layer ${l}: no q8_0 rank fits (dim ${dim}, ffn ${ffn}, ${nt} fitted tokens); use --pred-type f32 or more tokens`);
    if (k !== r) warnings.push(`layer ${l}: rank ${r} lowered to ${k} (limit: dim ${dim}, ffn ${ffn}, ${nt} fitted tokens)`);
    return k;
  });
  if (kind === 'gate') ranks.fill(0);
  if (kind === 'gate' && predType !== 'f32' && dim % 32 !== 0) throw new SparsifyError(`a ${predType} gate copy needs dim % 32 == 0 (dim ${dim}); use --pred-type f32`);
  const actFn: unknown = f.metadata.get('flashlm.activation')?.value ?? 'silu';
  if (actFn !== 'silu' && actFn !== 'relu') throw new SparsifyError(`${modelPath}: activation '${String(actFn)}' (silu or relu)`);
  const maxRank = Math.max(...ranks);
  const q8 = predType === 'q8_0';

  const compute = await Compute.create({ threads: opts.threads ?? 2 });
  try {
    const trainBytes = kind === 'gate' ? gateWorkspaceBytes(dim, ffn) : predictorWorkspaceBytes({ n: nTrain, dim, ffn, rank: maxRank, gateW: true });
    const gateBytes = rule === 'gate' ? (ffn * dim + EVAL_BATCH * (dim + ffn)) * 4 + 128 : 0;
    const ws = new PredictorWorkspace(compute, Math.max(trainBytes, kind === 'gate' ? 0 : scoreBytes(dim, ffn, maxRank), gateBytes));
    const gateW = new Float32Array(ffn * dim);
    const fb = Math.ceil(ffn / 8);
    const results: SparsifyLayer[] = [];
    const stored: PredictorLayerData[] = [];
    const thresholds = new Float32Array(nLayers);
    opts.onProgress?.({ phase: 'train', done: 0, total: nLayers });
    for (let l = 0; l < nLayers; l++) {
      const tl = performance.now();
      const x = cal.x(l);
      readGateWeights(f, layout, l, gateW);
      const target = new Uint8Array(n * fb);
      let act = 0;
      let th: { code: number; threshold: number };
      if (rule === 'gate') {
        const g = gateTargets(compute, ws, x, gateW, n, dim, ffn, sparsity, target);
        th = { code: -1, threshold: g.tau };
        act = g.active;
      } else {
        th = thresholdForSparsity(cal.hist(l), sparsity);
        const code = cal.code(l);
        for (let t = 0; t < n; t++) {
          const o = t * ffn, bo = t * fb;
          for (let j = 0; j < ffn; j++) if (code[o + j]! >= th.code) { target[bo + (j >> 3)]! |= 1 << (j & 7); act++; }
        }
      }
      thresholds[l] = th.threshold;
      if (kind === 'gate') {
        const e = gatePredictor(compute, ws, { x, gateW, target, n, dim, ffn, cutoffTokens: [nt, nTrain], heldOut: [nTrain, n] }, { type: predType, rule, act: actFn, recall: recallTarget, ...(opts.exactCutoff ? { cutoff: exactCutoff(th.threshold, rule) } : {}) });
        stored.push({ a: new Float32Array(0), b: new Float32Array(0), gate: gateW.slice(), thr: e.thr, rank: 0, recall: e.recall, precision: e.precision, overRead: e.overRead });
        results.push({
          layer: l, rank: 0, code: th.code, threshold: th.threshold, activeFrac: act / (n * ffn), heldOutActiveFrac: e.activeFrac,
          recall: e.recall, precision: e.precision, overRead: e.overRead, predictedFrac: e.predictedFrac, cutoff: e.cutoff, trainCutoff: e.cutoff,
          seconds: (performance.now() - tl) / 1000,
        });
        opts.onProgress?.({ phase: 'train', done: l + 1, total: nLayers });
        continue;
      }
      const { predictor: p } = trainPredictor(compute, {
        n: nTrain, dim, ffn, x: x.subarray(0, nTrain * dim), target: target.subarray(0, nTrain * fb), gateW,
      }, { rank: ranks[l]!, epochs: opts.epochs, seed: opts.seed, targetRecall: recallTarget, validation: nv, workspace: ws });
      // what is stored, as the engine will see it
      const a = q8 ? dequantize(TensorType.Q8_0, quantize(TensorType.Q8_0, p.a), p.a.length) : p.a;
      const b = q8 ? dequantize(TensorType.Q8_0, quantize(TensorType.Q8_0, p.b), p.b.length) : p.b;
      const sc = new Scorer(compute, ws, { ...p, a, b }, q8);
      const cutoff = q8 ? sc.cutoff(x, target, nt, nTrain, recallTarget) : p.cutoff;
      const final: LowRankPredictor = { ...p, cutoff };
      const e = sc.eval(x, target, nTrain, n, predictorThresholds(final));
      stored.push({ a: p.a, b: p.b, thr: predictorThresholds(final), rank: p.rank, recall: e.recall, precision: e.precision, overRead: e.overRead });
      results.push({
        layer: l, rank: p.rank, code: th.code, threshold: th.threshold, activeFrac: act / (n * ffn), heldOutActiveFrac: e.activeFrac,
        recall: e.recall, precision: e.precision, overRead: e.overRead, predictedFrac: e.predictedFrac, cutoff, trainCutoff: p.cutoff,
        seconds: (performance.now() - tl) / 1000,
      });
      opts.onProgress?.({ phase: 'train', done: l + 1, total: nLayers });
    }
    const tTrain = performance.now();
    const out = opts.out ?? modelPath;
    writeWithPredictors(modelPath, out, {
      layers: stored, sparsity, thresholds, rule, predType, kind,
      calibration: { path: calibPath, tokens: n, files: cal.meta.files.length, identity: cal.meta.modelIdentity },
    }, (done, total) => opts.onProgress?.({ phase: 'write', done, total }));
    const tEnd = performance.now();
    return {
      out, sparsity, rule, predType, predictor: kind, tokens: { total: n, fitted: nt, cutoff: nv, heldOut: nHeld }, layers: results, warnings,
      seconds: { train: (tTrain - t0) / 1000, write: (tEnd - tTrain) / 1000, total: (tEnd - t0) / 1000 },
    };
  } finally {
    await compute.close();
  }
}

/**
 * Rule 'gate' targets: G = X·W_gateᵀ in batches of EVAL_BATCH tokens on gemm (in the training
 * workspace, free before training); τ = the `sparsity` quantile of g over every 4th token's values
 * (a 55M-value sort at 13B shapes would take longer than the gemms); then the bits g ≥ τ for all n
 * tokens into `target` [n × ceil(ffn/8)].
 */
function gateTargets(c: Compute, ws: PredictorWorkspace, x: Float32Array, gateW: Float32Array, n: number, dim: number, ffn: number, sparsity: number, target: Uint8Array): { tau: number; active: number } {
  const W = ws.base, X = W + ffn * dim * 4, G = X + EVAL_BATCH * dim * 4;
  if (G + EVAL_BATCH * ffn * 4 > ws.base + ws.bytes) throw new SparsifyError(`gate workspace too small (${ws.bytes} bytes)`);
  const a = ws.arena;
  a.f32(W, ffn * dim).set(gateW);
  const each = (step: number, fn: (t: number, g: Float32Array) => void): void => {
    const ids: number[] = [];
    for (let t = 0; t < n; t += step) ids.push(t);
    for (let i0 = 0; i0 < ids.length; i0 += EVAL_BATCH) {
      const m = Math.min(EVAL_BATCH, ids.length - i0);
      const xb = a.f32(X, m * dim);
      for (let i = 0; i < m; i++) xb.set(x.subarray(ids[i0 + i]! * dim, (ids[i0 + i]! + 1) * dim), i * dim);
      c.gemm(a, { a: X, b: W, c: G, m, n: ffn, k: dim, transB: true, work: ws.gemmWork });
      const g = a.f32(G, m * ffn);
      for (let i = 0; i < m; i++) fn(ids[i0 + i]!, g.subarray(i * ffn, (i + 1) * ffn));
    }
  };
  const step = n >= 64 ? 4 : 1;
  const sample = new Float32Array(Math.ceil(n / step) * ffn);
  let k = 0;
  each(step, (_t, g) => { sample.set(g, k); k += ffn; });
  sample.sort();
  const tau = sample[Math.min(sample.length - 1, Math.floor(sparsity * sample.length))]!;
  const fb = Math.ceil(ffn / 8);
  let active = 0;
  each(1, (t, g) => {
    const bo = t * fb;
    for (let j = 0; j < ffn; j++) if (g[j]! >= tau) { target[bo + (j >> 3)]! |= 1 << (j & 7); active++; }
  });
  return { tau, active };
}

/** The largest f32 below t (rule 'abs': active ⇔ |act(g)| ≥ t, predicted ⇔ score > cutoff) or t itself
 * nudged likewise for rule 'gate' (g ≥ t): predicted ⇔ active, for an exact gate. */
function exactCutoff(t: number, _rule: SparsityRule): number {
  const f = new Float32Array([t]);
  const u = new Int32Array(f.buffer);
  if (t > 0) u[0]! -= 1;
  else if (t === 0) f[0] = -Number.MIN_VALUE;
  else u[0]! += 1; // negative: one ulp more negative
  return f[0]!;
}

/** Workspace bytes the scorer uses: A, B, one batch of x, h and scores (f32). */
function scoreBytes(dim: number, ffn: number, r: number): number {
  return (r * dim + ffn * r + EVAL_BATCH * (dim + r + ffn)) * 4 + 5 * 64;
}

/**
 * Scores s = B·(A·x) (bias excluded) for batches of calibration tokens, on compute.gemm in the
 * training workspace (free once trainPredictor returned). With q8 the inputs x and features h are
 * rounded to q8_0 blocks first, as the engine's q8_0 matvec does with its activations.
 */
class Scorer {
  private readonly A: number; private readonly B: number; private readonly X: number; private readonly H: number; private readonly S: number;
  constructor(private readonly c: Compute, private readonly ws: PredictorWorkspace, private readonly p: LowRankPredictor, private readonly q8: boolean) {
    const { dim, ffn, rank: r } = p;
    if (scoreBytes(dim, ffn, r) > ws.bytes) throw new SparsifyError(`scoring workspace too small (${ws.bytes} bytes)`);
    let off = ws.base;
    const take = (floats: number): number => { const at = off; off += Math.ceil((floats * 4) / 64) * 64; return at; };
    this.A = take(r * dim); this.B = take(ffn * r); this.X = take(EVAL_BATCH * dim); this.H = take(EVAL_BATCH * r); this.S = take(EVAL_BATCH * ffn);
    ws.arena.f32(this.A, r * dim).set(p.a);
    ws.arena.f32(this.B, ffn * r).set(p.b);
  }

  /** Calls fn(t, scores [ffn]) for tokens t in [t0, t1) of x [n × dim]. */
  private each(x: Float32Array, t0: number, t1: number, fn: (t: number, s: Float32Array) => void): void {
    const { dim, ffn, rank: r } = this.p;
    const a = this.ws.arena, work = this.ws.gemmWork;
    for (let b0 = t0; b0 < t1; b0 += EVAL_BATCH) {
      const m = Math.min(EVAL_BATCH, t1 - b0);
      const xb = a.f32(this.X, m * dim);
      xb.set(x.subarray(b0 * dim, (b0 + m) * dim));
      if (this.q8) roundQ8(xb);
      this.c.gemm(a, { a: this.X, b: this.A, c: this.H, m, n: r, k: dim, transB: true, work });
      if (this.q8 && r % 32 === 0) roundQ8(a.f32(this.H, m * r));
      this.c.gemm(a, { a: this.H, b: this.B, c: this.S, m, n: ffn, k: r, transB: true, work });
      const s = a.f32(this.S, m * ffn);
      for (let i = 0; i < m; i++) fn(b0 + i, s.subarray(i * ffn, (i + 1) * ffn));
    }
  }

  /** The trainer's cutoff rule on tokens [t0, t1): the score (s + bias) that keeps `recall` of the positives. */
  cutoff(x: Float32Array, target: Uint8Array, t0: number, t1: number, recall: number): number {
    const { ffn, bias } = this.p;
    const fb = Math.ceil(ffn / 8);
    const pos: number[] = [];
    this.each(x, t0, t1, (t, s) => {
      const bo = t * fb;
      for (let j = 0; j < ffn; j++) if ((target[bo + (j >> 3)]! >> (j & 7)) & 1) pos.push(s[j]! + bias[j]!);
    });
    if (pos.length === 0) throw new SparsifyError('no active neurons in the cutoff tokens');
    const sorted = Float32Array.from(pos).sort();
    const idx = Math.floor((1 - recall) * sorted.length);
    return idx > 0 ? sorted[idx - 1]! : sorted[0]! - Math.max(1e-6, Math.abs(sorted[0]!) * 1e-6);
  }

  /** Held-out figures on tokens [t0, t1) with per-neuron thresholds thr (active ⇔ s_j > thr_j), as evalPredictor. */
  eval(x: Float32Array, target: Uint8Array, t0: number, t1: number, thr: Float32Array): { recall: number; precision: number; overRead: number; predictedFrac: number; activeFrac: number } {
    const { ffn } = this.p;
    const fb = Math.ceil(ffn / 8);
    let tp = 0, fp = 0, fn = 0;
    this.each(x, t0, t1, (t, s) => {
      const bo = t * fb;
      for (let j = 0; j < ffn; j++) {
        const y = (target[bo + (j >> 3)]! >> (j & 7)) & 1;
        const pr = s[j]! > thr[j]!;
        if (y) { if (pr) tp++; else fn++; } else if (pr) fp++;
      }
    });
    const total = (t1 - t0) * ffn;
    return {
      recall: tp + fn > 0 ? tp / (tp + fn) : 1,
      precision: tp + fp > 0 ? tp / (tp + fp) : 1,
      overRead: tp + fn > 0 ? (tp + fp) / (tp + fn) : Infinity,
      predictedFrac: (tp + fp) / total,
      activeFrac: (tp + fn) / total,
    };
  }
}

/** In place: v → dequantize(quantize_q8_0(v)) (v.length % 32 == 0). */
function roundQ8(v: Float32Array): void {
  dequantize(TensorType.Q8_0, quantize(TensorType.Q8_0, v), v.length, v);
}
