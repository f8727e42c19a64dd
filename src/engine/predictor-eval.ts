// Held-out evaluation of a low-rank activation predictor (see predictor-train.ts): recall,
// precision, predicted-active fraction and over-read ratio (bytes read / bytes needed for the
// FFN rows, if every neuron's record has the same size).
import type { Compute } from '../kernels/index.js';
import { PredictorError, type LowRankPredictor } from './predictor-train.js';

export interface EvalData { n: number; x: Float32Array /* [n × dim] */; target: Uint8Array /* [n × ceil(ffn/8)] */ }

export interface PredictorEval {
  tokens: number;
  recall: number;          // TP / (TP + FN): truly active neurons that were predicted
  precision: number;       // TP / (TP + FP)
  predictedFrac: number;   // (TP + FP) / (tokens · ffn): share of the layer read from flash
  activeFrac: number;      // (TP + FN) / (tokens · ffn)
  overRead: number;        // predicted / truly active = predictedFrac / activeFrac
  /** recall of the worst 1% of tokens (mean over them): quality is lost per token */
  worstTokenRecall: number;
}

/** Scores the predictor on (n × dim) inputs in token batches; `cutoff` overrides p.cutoff. */
export function evalPredictor(compute: Compute, p: LowRankPredictor, data: EvalData, opts: { batch?: number; cutoff?: number } = {}): PredictorEval {
  const { dim, ffn, rank: r } = p;
  const n = data.n, fb = Math.ceil(ffn / 8);
  if (data.x.length !== n * dim) throw new PredictorError(`eval: x has ${data.x.length} values, want ${n * dim}`);
  if (data.target.length !== n * fb) throw new PredictorError(`eval: target has ${data.target.length} bytes, want ${n * fb}`);
  const nb = Math.max(1, Math.min(opts.batch ?? 256, n));
  const cutoff = opts.cutoff ?? p.cutoff;
  const floats = r * dim + ffn * r + nb * dim + nb * r + nb * ffn;
  const a = compute.createArena(floats * 4 + compute.gemmWorkBytes() + 8 * 64 + 65536);
  const A = a.alloc(r * dim * 4), B = a.alloc(ffn * r * 4), Xb = a.alloc(nb * dim * 4), Hb = a.alloc(nb * r * 4), S = a.alloc(nb * ffn * 4);
  a.f32(A, r * dim).set(p.a);
  a.f32(B, ffn * r).set(p.b);
  const thr = new Float32Array(ffn);
  for (let j = 0; j < ffn; j++) thr[j] = cutoff - p.bias[j];   // active ⇔ (B·A·x)_j > thr_j
  const sv = a.f32(S, nb * ffn);
  let tp = 0, fp = 0, fn = 0;
  const tokRecall = new Float64Array(n);
  for (let b0 = 0; b0 < n; b0 += nb) {
    const m = Math.min(nb, n - b0);
    a.f32(Xb, m * dim).set(data.x.subarray(b0 * dim, (b0 + m) * dim));
    compute.gemm(a, { a: Xb, b: A, c: Hb, m, n: r, k: dim, transB: true });
    compute.gemm(a, { a: Hb, b: B, c: S, m, n: ffn, k: r, transB: true });
    for (let i = 0; i < m; i++) {
      const o = i * ffn, bo = (b0 + i) * fb;
      let ttp = 0, tfn = 0;
      for (let j = 0; j < ffn; j++) {
        const y = (data.target[bo + (j >> 3)] >> (j & 7)) & 1;
        const pr = sv[o + j] > thr[j];
        if (y) { if (pr) ttp++; else tfn++; } else if (pr) fp++;
      }
      tp += ttp; fn += tfn;
      tokRecall[b0 + i] = ttp + tfn > 0 ? ttp / (ttp + tfn) : 1;
    }
  }
  tokRecall.sort();
  const worst = Math.max(1, Math.floor(n / 100));
  let ws = 0;
  for (let i = 0; i < worst; i++) ws += tokRecall[i];
  const total = n * ffn;
  return {
    tokens: n,
    recall: tp + fn > 0 ? tp / (tp + fn) : 1,
    precision: tp + fp > 0 ? tp / (tp + fp) : 1,
    predictedFrac: (tp + fp) / total,
    activeFrac: (tp + fn) / total,
    overRead: tp + fn > 0 ? (tp + fp) / (tp + fn) : Infinity,
    worstTokenRecall: ws / worst,
  };
}

/** Per-neuron thresholds for inference: neuron j active ⇔ (B·(A·x))_j > thr_j = cutoff − bias_j. */
export function predictorThresholds(p: LowRankPredictor): Float32Array {
  const t = new Float32Array(p.ffn);
  for (let j = 0; j < p.ffn; j++) t[j] = p.cutoff - p.bias[j];
  return t;
}
