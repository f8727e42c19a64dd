// Synthetic calibration data for predictor tests and benches: FFN inputs with a low-rank
// structure plus noise, a random gate matrix, and active sets |SiLU(g)| > t as in the engine.
//   x = rmsnorm(Z·diag(s)·M + σ·E), Z [n × latent] and E [n × dim] standard normal,
//       s_k = (k+1)^(−decay/2) (a decaying spectrum, like hidden states), M [latent × dim] ~ N(0, 1/latent),
//       σ² = noise/(1 − noise) per element relative to the latent part's mean square, then `outliers`
//       dimensions scaled ×8 (the few "massive" dimensions real hidden states have).
//   g = W_gate·x, W_gate [ffn × dim] ~ N(0, 1/dim); active ⇔ |SiLU(g)| > t, t the (1 − activeFrac)
//   quantile over all (token, neuron) pairs; labelNoise flips that fraction of the bits;
//   randomLabels replaces them by Bernoulli(activeFrac) draws independent of x (a control).
import type { Compute } from '../kernels/index.js';
import { fillGaussian } from './predictor-linalg.js';
import { mulberry32 } from './sample.js';
import type { PredictorData } from './predictor-train.js';

export interface SynthPredictorOptions {
  n: number; dim: number; ffn: number;
  latent: number;          // rank of the structured part of x
  noise?: number;          // share of x's energy outside it (default 0.1)
  decay?: number;          // spectrum exponent (default 1)
  outliers?: number;       // massive dimensions (default 0)
  activeFrac?: number;     // default 0.3
  labelNoise?: number;     // default 0
  randomLabels?: boolean;
  seed?: number;
}

export function synthPredictorData(c: Compute, o: SynthPredictorOptions): { data: Required<Pick<PredictorData, 'gate' | 'gateW'>> & PredictorData; threshold: number } {
  const { n, dim, ffn, latent: q } = o;
  const seed = o.seed ?? 1;
  const a = c.createArena((n * q + q * dim + n * dim + ffn * dim + n * ffn) * 4 + c.gemmWorkBytes() + 16 * 64);
  const Z = a.alloc(n * q * 4), M = a.alloc(q * dim * 4), X = a.alloc(n * dim * 4), W = a.alloc(ffn * dim * 4), G = a.alloc(n * ffn * 4);
  const zv = a.f32(Z, n * q);
  fillGaussian(zv, seed * 7 + 1);
  const decay = o.decay ?? 1;
  let ss = 0;
  for (let k = 0; k < q; k++) ss += Math.pow(k + 1, -decay);
  for (let k = 0; k < q; k++) {
    const s = Math.sqrt(Math.pow(k + 1, -decay) / ss);   // Σ s_k² = 1: latent part has unit mean square
    for (let t = 0; t < n; t++) zv[t * q + k] *= s;
  }
  fillGaussian(a.f32(M, q * dim), seed * 7 + 2);
  const xv = a.f32(X, n * dim);
  fillGaussian(xv, seed * 7 + 3, Math.sqrt((o.noise ?? 0.1) / (1 - (o.noise ?? 0.1))));
  c.gemm(a, { a: Z, b: M, c: X, m: n, n: dim, k: q, accumulate: true });
  const out = mulberry32(seed * 7 + 4);
  const outl = Array.from({ length: o.outliers ?? 0 }, () => Math.floor(out() * dim));
  for (let t = 0; t < n; t++) {
    const row = xv.subarray(t * dim, (t + 1) * dim);
    for (const d of outl) row[d] *= 8;
    let s = 0;
    for (let d = 0; d < dim; d++) s += row[d] * row[d];
    const f = 1 / Math.sqrt(s / dim + 1e-6);
    for (let d = 0; d < dim; d++) row[d] *= f;
  }
  const wv = a.f32(W, ffn * dim);
  fillGaussian(wv, seed * 7 + 5, 1 / Math.sqrt(dim));
  c.gemm(a, { a: X, b: W, c: G, m: n, n: ffn, k: dim, transB: true });
  const gv = a.f32(G, n * ffn);
  const silu = (v: number) => Math.abs(v / (1 + Math.exp(-v)));
  // threshold from a strided sample of ≤ 1M values
  const step = Math.max(1, Math.floor((n * ffn) / 1e6));
  const samp = new Float32Array(Math.ceil((n * ffn) / step));
  let ns = 0;
  for (let i = 0; i < n * ffn; i += step) samp[ns++] = silu(gv[i]);
  samp.subarray(0, ns).sort();
  const frac = o.activeFrac ?? 0.3;
  const threshold = samp[Math.min(ns - 1, Math.floor((1 - frac) * ns))];
  const fb = Math.ceil(ffn / 8);
  const target = new Uint8Array(n * fb);
  const rl = mulberry32(seed * 7 + 6);
  const flip = o.labelNoise ?? 0;
  for (let t = 0; t < n; t++) {
    for (let j = 0; j < ffn; j++) {
      let y = o.randomLabels ? rl() < frac : silu(gv[t * ffn + j]) > threshold;
      if (flip > 0 && rl() < flip) y = !y;
      if (y) target[t * fb + (j >> 3)] |= 1 << (j & 7);
    }
  }
  return { data: { n, dim, ffn, x: xv.slice(), target, gate: gv.slice(), gateW: wv.slice() }, threshold };
}

/** Tokens [from, to) of a data set (copies). */
export function sliceData<T extends PredictorData>(d: T, from: number, to: number): PredictorData {
  const fb = Math.ceil(d.ffn / 8);
  return {
    n: to - from, dim: d.dim, ffn: d.ffn,
    x: d.x.slice(from * d.dim, to * d.dim),
    target: d.target.slice(from * fb, to * fb),
    gate: d.gate?.slice(from * d.ffn, to * d.ffn),
    gateW: d.gateW,
  };
}
