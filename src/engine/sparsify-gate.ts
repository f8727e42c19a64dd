// `flashlm sparsify --predictor gate`: the predictor is a quantized copy of the layer's own gate
// (W̃ = q4_0(W_gate), 0.56 bytes per weight: 1.43 GB for CodeLlama-13B's 36 layers), and the engine
// predicts neuron j active ⇔ score(W̃·x)_j > cutoff, score = |act(ĝ)| (rule 'abs') or ĝ (rule
// 'gate'), i.e. the exact sparsity rule applied to an approximate gate. Why: on SiLU models the
// CATS-active set |SiLU(g)| ≥ t is a two-sided band of g that a rank-256 predictor cannot separate
// (CodeLlama-13B: recall 0.92–0.98 only by predicting 92–99% of the neurons), while q4_0 rounding
// keeps g's correlation ≈ 0.99. There is nothing to fit: the cutoff is the score that keeps the
// target recall of the truly active neurons on the cutoff tokens, and the figures are measured on
// the held-out tokens, as for the low-rank predictors.
import type { Compute } from '../kernels/index.js';
import { TensorType } from '../formats/ggml-types.js';
import { dequantize, quantize } from '../formats/quant.js';
import type { PredType } from '../formats/predictors.js';
import type { SparsityRule } from '../model/llama.js';
import type { PredictorWorkspace } from './predictor-train.js';

const BATCH = 256; // tokens per gemm

/** Workspace bytes gatePredictor needs: W̃ and one batch of x and ĝ (f32). */
export function gateWorkspaceBytes(dim: number, ffn: number): number {
  return (ffn * dim + BATCH * (dim + ffn)) * 4 + 3 * 64;
}

export interface GatePredictorFigures {
  thr: Float32Array; // [ffn] the cutoff for every neuron
  cutoff: number;
  recall: number; // held out
  precision: number;
  overRead: number; // predicted / truly active
  predictedFrac: number;
  activeFrac: number;
}

export interface GatePredictorInput {
  x: Float32Array; // [n × dim] FFN inputs of the calibration tokens
  gateW: Float32Array; // [ffn × dim] f32 gate rows, row j = neuron j
  target: Uint8Array; // [n × ceil(ffn/8)] truly active bits
  n: number;
  dim: number;
  ffn: number;
  cutoffTokens: [number, number]; // [t0, t1): where the cutoff is chosen
  heldOut: [number, number]; // [t0, t1): where the figures are measured
}

/**
 * Chooses the cutoff of a `type`-quantized gate copy for `recall` and measures it. The scores are
 * computed as the engine will: W̃ = dequantize(quantize(type, W_gate)) and, for a quantized W̃, x
 * rounded to q8_0 blocks (the q4_0/q8_0 matvec's activation format).
 */
export function gatePredictor(c: Compute, ws: PredictorWorkspace, d: GatePredictorInput, o: { type: PredType; rule: SparsityRule; act: 'silu' | 'relu'; recall: number; /** use this cutoff instead of one for `recall` */ cutoff?: number }): GatePredictorFigures {
  const { dim, ffn } = d;
  if (gateWorkspaceBytes(dim, ffn) > ws.bytes) throw new RangeError(`gate predictor workspace too small (${ws.bytes} bytes)`);
  const tt = o.type === 'q4_0' ? TensorType.Q4_0 : o.type === 'q8_0' ? TensorType.Q8_0 : TensorType.F32;
  const a = ws.arena;
  let off = ws.base;
  const take = (floats: number): number => { const at = off; off += Math.ceil((floats * 4) / 64) * 64; return at; };
  const W = take(ffn * dim), X = take(BATCH * dim), G = take(BATCH * ffn);
  const w = a.f32(W, ffn * dim);
  if (tt === TensorType.F32) w.set(d.gateW);
  else dequantize(tt, quantize(tt, d.gateW), ffn * dim, w);
  const silu = o.act === 'silu';
  const score = (g: number): number => (o.rule === 'gate' ? g : silu ? Math.abs(g / (1 + Math.exp(-g))) : g > 0 ? g : 0);
  const fb = Math.ceil(ffn / 8);
  const each = (t0: number, t1: number, fn: (t: number, g: Float32Array) => void): void => {
    for (let b0 = t0; b0 < t1; b0 += BATCH) {
      const m = Math.min(BATCH, t1 - b0);
      const xb = a.f32(X, m * dim);
      xb.set(d.x.subarray(b0 * dim, (b0 + m) * dim));
      if (tt !== TensorType.F32) dequantize(TensorType.Q8_0, quantize(TensorType.Q8_0, xb), xb.length, xb);
      c.gemm(a, { a: X, b: W, c: G, m, n: ffn, k: dim, transB: true, work: ws.gemmWork });
      const g = a.f32(G, m * ffn);
      for (let i = 0; i < m; i++) fn(b0 + i, g.subarray(i * ffn, (i + 1) * ffn));
    }
  };
  const cutoff = o.cutoff ?? recallCutoff();
  let tp = 0, fp = 0, fn = 0;
  function recallCutoff(): number {
    // the score below which (1 − recall) of the truly active (token, neuron) pairs fall
    const pos: number[] = [];
    each(d.cutoffTokens[0], d.cutoffTokens[1], (t, g) => {
      const bo = t * fb;
      for (let j = 0; j < ffn; j++) if ((d.target[bo + (j >> 3)]! >> (j & 7)) & 1) pos.push(score(g[j]!));
    });
    if (pos.length === 0) throw new RangeError('no active neurons in the cutoff tokens');
    const sorted = Float32Array.from(pos).sort();
    const idx = Math.floor((1 - o.recall) * sorted.length);
    // predicted ⇔ score > cutoff: just below the idx-th smallest positive score
    return idx > 0 ? sorted[idx - 1]! : sorted[0]! - Math.max(1e-6, Math.abs(sorted[0]!) * 1e-6);
  }
  each(d.heldOut[0], d.heldOut[1], (t, g) => {
    const bo = t * fb;
    for (let j = 0; j < ffn; j++) {
      const y = (d.target[bo + (j >> 3)]! >> (j & 7)) & 1;
      const pr = score(g[j]!) > cutoff;
      if (y) { if (pr) tp++; else fn++; } else if (pr) fp++;
    }
  });
  const total = (d.heldOut[1] - d.heldOut[0]) * ffn;
  return {
    thr: new Float32Array(ffn).fill(cutoff), cutoff,
    recall: tp + fn > 0 ? tp / (tp + fn) : 1,
    precision: tp + fp > 0 ? tp / (tp + fp) : 1,
    overRead: tp + fn > 0 ? (tp + fp) / (tp + fn) : Infinity,
    predictedFrac: (tp + fp) / total,
    activeFrac: (tp + fn) / total,
  };
}
