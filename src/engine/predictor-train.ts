// Training of the per-layer low-rank activation predictors (LLM in a flash §3.1, Deja Vu):
// score = B·(A·x) + bias, neuron i predicted active ⇔ score_i > cutoff.
//   x: the layer's FFN input (RMS-normed hidden state) f32 [dim]; A [rank × dim]; B [ffn × rank].
// Steps (all large products on compute.gemm, f32, both threads):
//  1. init — best data available:
//     'gate-weights'   (data.gateW): reduced-rank regression of the gate pre-activation
//                      g = W_gate·x on x, exact for a linear map: V = top-rank right singular
//                      vectors of G = X·W_gateᵀ [n × ffn] (randomized SVD, G never formed),
//                      A = Vᵀ·W_gate, B = V, so B·A·x = V·Vᵀ·g, the best rank-r fit on the data.
//     'gate-regression' (data.gate only): A = top principal directions of X, B = least squares of G on A·x.
//     'pca'            (bits only): A as above, B = 0.
//     Then the rank features h = A·x are centered and whitened (A, B, bias rewritten, same
//     product), and each neuron's score is rescaled so that its initial logit is
//     `sharpness`·(ĝ − θ)/std(ĝ) with θ at the neuron's active-rate quantile.
//  2. fine-tune B and bias with a balanced BCE (positives weighted by the neuron's
//     inactive/active ratio, capped), Adam, shuffled minibatches; A stays fixed, so the features
//     H = A·X [n × rank] are computed once.
//  3. cutoff: the per-layer score threshold that keeps `targetRecall` of the training positives.
import type { Arena, Compute, GemmParams } from '../kernels/index.js';
import { mulberry32 } from './sample.js';
import { PredictorError, Region, randomizedSVD, symEig, normInv, type LinearOp } from './predictor-linalg.js';

export { PredictorError } from './predictor-linalg.js';

export interface PredictorData {
  n: number; dim: number; ffn: number;
  /** FFN inputs f32 [n × dim] */
  x: Float32Array;
  /** active sets [n × ceil(ffn/8)]: neuron i of token t is bit (i & 7) of byte t·ceil(ffn/8) + (i >> 3) */
  target: Uint8Array;
  /** gate pre-activations g = W_gate·x, f32 [n × ffn] (optional, init 'gate-regression') */
  gate?: Float32Array;
  /** the layer's gate weights, f32 [ffn × dim] row-major (optional, init 'gate-weights') */
  gateW?: Float32Array;
}

export interface TrainOptions {
  rank: number;
  epochs?: number;        // BCE epochs over the n tokens (default 3)
  lr?: number;            // Adam step (default 2e-3; features are whitened, so unit-free)
  seed?: number;          // default 1
  batch?: number;         // tokens per minibatch (default 256)
  targetRecall?: number;  // fraction of calibration positives the cutoff keeps (default 0.97)
  /** the last `validation` tokens are not fitted, only used to set the cutoff (default 10% of n, ≤ 1000) */
  validation?: number;
  maxPosWeight?: number;  // cap of the per-neuron positive weight (default 20)
  oversample?: number;    // randomized SVD extra columns (default 64)
  powerIters?: number;    // randomized SVD power iterations (default 1)
  sharpness?: number;     // initial logit per std of the predicted pre-activation (default 3)
  /** reusable memory (e.g. one for all layers); default: a fresh arena of the needed size */
  workspace?: PredictorWorkspace;
  onProgress?: (phase: string, info: Record<string, number>) => void;
}

/** A trained predictor. Predicted active ⇔ (B·(A·x))_i + bias_i > cutoff. */
export interface LowRankPredictor {
  dim: number; ffn: number; rank: number;
  a: Float32Array;     // [rank × dim] row-major (GGUF dims [dim, rank])
  b: Float32Array;     // [ffn × rank] row-major (GGUF dims [rank, ffn])
  bias: Float32Array;  // [ffn]
  cutoff: number;
}

export interface TrainReport {
  init: 'gate-weights' | 'gate-regression' | 'pca';
  seconds: { init: number; train: number; cutoff: number; total: number };
  /** mean weighted BCE per epoch (every 8th token of each minibatch, before its step) */
  loss: number[];
  /** calibration-token positive scores the cutoff was chosen from */
  cutoffSample: number;
  /** tokens fitted / held out for the cutoff */
  fitTokens: number; cutoffTokens: number;
  /** floating-point operations done by gemm (2·m·n·k summed) */
  gemmFlop: number;
}

export interface WorkspaceShape { n: number; dim: number; ffn: number; rank: number; batch?: number; oversample?: number; gate?: boolean; gateW?: boolean }

/** Bytes a workspace needs for training on data of this shape (excluding gemm's work area). */
export function predictorWorkspaceBytes(s: WorkspaceShape): number {
  const { n, dim, ffn, rank } = s;
  const nb = s.batch ?? 256, K = rank + (s.oversample ?? 64);
  let f = n * dim + rank * dim + ffn * rank + n * rank;           // X, A, B, H
  if (s.gateW) f += ffn * dim; else if (s.gate) f += n * ffn;      // W_gate or G
  const rsvdCols = s.gateW || s.gate ? ffn : dim;
  const rsvd = 2 * rsvdCols * K + 2 * n * K + dim * K + 4 * K * K + K * rank + rsvdCols * rank + n * rank;
  const train = nb * rank + nb * ffn + 3 * ffn * rank + 3 * rank * rank + n * rank;
  f += Math.max(rsvd, train);
  return f * 4 + 64 * 64;
}

/** Arena memory for training, reusable across layers of the same (or smaller) shape. */
export class PredictorWorkspace {
  readonly arena: Arena;
  readonly base: number;
  /** gemm's packing area */
  readonly gemmWork: number;
  constructor(readonly compute: Compute, readonly bytes: number) {
    this.arena = compute.createArena(bytes + compute.gemmWorkBytes() + 65536);
    this.gemmWork = this.arena.alloc(compute.gemmWorkBytes(), 64);
    this.base = this.arena.alloc(bytes, 64);
  }
}

/** compute.gemm on the workspace, counting flops. */
class Gemm {
  flop = 0;
  constructor(readonly ws: PredictorWorkspace) {}
  run(p: GemmParams): void {
    this.flop += 2 * p.m * p.n * p.k;
    this.ws.compute.gemm(this.ws.arena, { ...p, work: this.ws.gemmWork });
  }
}

const now = () => performance.now() / 1000;

export function trainPredictor(compute: Compute, data: PredictorData, opts: TrainOptions): { predictor: LowRankPredictor; report: TrainReport } {
  const t0 = now();
  const { n, dim, ffn } = data;
  const r = opts.rank;
  const fb = Math.ceil(ffn / 8);
  checkData(data);
  const nv = opts.validation ?? Math.max(1, Math.min(Math.round(n * 0.1), 1000));
  const nt = n - nv;  // tokens [0, nt) fit A, B, bias; [nt, n) calibrate the cutoff
  if (!Number.isInteger(nv) || nv < 1 || nt < 2) throw new PredictorError(`validation ${nv} tokens of ${n}: need 1 ≤ validation ≤ n − 2`);
  const nb = Math.min(opts.batch ?? 256, nt);
  const oversample = opts.oversample ?? 64;
  const seed = opts.seed ?? 1;
  if (!Number.isInteger(r) || r < 1 || r > Math.min(dim, ffn, nt)) throw new PredictorError(`rank ${r} not in 1..min(dim, ffn, fitted tokens ${nt})`);
  const shape: WorkspaceShape = { n, dim, ffn, rank: r, batch: nb, oversample, gate: !!data.gate, gateW: !!data.gateW };
  const need = predictorWorkspaceBytes(shape);
  const ws = opts.workspace ?? new PredictorWorkspace(compute, need);
  if (ws.compute !== compute) throw new PredictorError('workspace belongs to another Compute');
  if (ws.bytes < need) throw new PredictorError(`workspace has ${ws.bytes} bytes, training needs ${need}`);
  const a = ws.arena;
  const g = new Gemm(ws);
  const reg = new Region(a, ws.base, ws.bytes, (p) => g.run(p));
  const progress = opts.onProgress ?? (() => {});

  // ---- persistent buffers
  const X = reg.f32(n * dim);
  a.f32(X, n * dim).set(data.x);
  const A = reg.f32(r * dim), B = reg.f32(ffn * r), H = reg.f32(n * r);
  let W = -1, Gm = -1;
  if (data.gateW) { W = reg.f32(ffn * dim); a.f32(W, ffn * dim).set(data.gateW); }
  else if (data.gate) { Gm = reg.f32(n * ffn); a.f32(Gm, n * ffn).set(data.gate); }

  // per-neuron active rates p_j (for the init quantiles and the positive weights)
  const pos = new Float64Array(ffn);
  for (let t = 0; t < nt; t++) {
    const o = t * fb;
    for (let j = 0; j < ffn; j++) if ((data.target[o + (j >> 3)] >> (j & 7)) & 1) pos[j]++;
  }

  // ---- 1. init
  const init: TrainReport['init'] = data.gateW ? 'gate-weights' : data.gate ? 'gate-regression' : 'pca';
  const K = Math.min(r + oversample, nt, data.gateW || data.gate ? ffn : dim);
  const mark = reg.mark();
  if (data.gateW) {
    const tmp = reg.f32(dim * K);
    const op: LinearOp = {
      rows: nt, cols: ffn,
      mul: (v, out, k) => { // X·(W_gateᵀ·v)
        g.run({ a: W, b: v, c: tmp, m: dim, n: k, k: ffn, transA: true });
        g.run({ a: X, b: tmp, c: out, m: nt, n: k, k: dim });
      },
      mulT: (u, out, k) => { // W_gate·(Xᵀ·u)
        g.run({ a: X, b: u, c: tmp, m: dim, n: k, k: nt, transA: true });
        g.run({ a: W, b: tmp, c: out, m: ffn, n: k, k: dim });
      },
    };
    randomizedSVD(reg, op, r, K - r, opts.powerIters ?? 1, seed, B);   // B = V [ffn × r]
    g.run({ a: B, b: W, c: A, m: r, n: dim, k: ffn, transA: true });            // A = Vᵀ·W_gate
  } else {
    const V = reg.f32(dim * r);
    const op: LinearOp = {
      rows: nt, cols: dim,
      mul: (v, out, k) => g.run({ a: X, b: v, c: out, m: nt, n: k, k: dim }),
      mulT: (u, out, k) => g.run({ a: X, b: u, c: out, m: dim, n: k, k: nt, transA: true }),
    };
    randomizedSVD(reg, op, r, K - r, opts.powerIters ?? 1, seed, V);
    transpose(a.f32(V, dim * r), a.f32(A, r * dim), dim, r);                    // A = Vᵀ
    a.f32(B, ffn * r).fill(0);
  }
  reg.release(mark);
  progress('svd', { seconds: now() - t0 });

  // center and whiten the features: h' = Whᵀ·(A·x − m) with Cov(A·x) = Wv·Λ·Wvᵀ, Wh = Wv·Λ^(−1/2)
  g.run({ a: X, b: A, c: H, m: n, n: r, k: dim, transB: true });
  const bias = new Float32Array(ffn);
  {
    const m2 = reg.mark();
    const hv = a.f32(H, n * r);
    const mean = new Float64Array(r);
    for (let t = 0; t < nt; t++) for (let k = 0; k < r; k++) mean[k] += hv[t * r + k];
    for (let k = 0; k < r; k++) mean[k] /= nt;
    const C = reg.f32(r * r);
    g.run({ a: H, b: H, c: C, m: r, n: r, k: nt, transA: true, alpha: 1 / nt });
    const cov = Float64Array.from(a.f32(C, r * r));
    for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) cov[i * r + j] -= mean[i] * mean[j];
    const { values, vectors } = symEig(cov, r);
    const floor = Math.max(values[0] * 1e-7, 1e-30);
    const Wh = reg.f32(r * r), Wi = reg.f32(r * r);   // Wh = Wv·Λ^(−1/2), Wi = Wv·Λ^(1/2)
    const wh = a.f32(Wh, r * r), wi = a.f32(Wi, r * r);
    for (let i = 0; i < r; i++) {
      for (let j = 0; j < r; j++) {
        const l = Math.max(values[j], floor);
        wh[i * r + j] = vectors[i * r + j] / Math.sqrt(l);
        wi[i * r + j] = vectors[i * r + j] * Math.sqrt(l);
      }
    }
    // bias = B·m (score offset of the centered features), from the un-whitened B
    const bv = a.f32(B, ffn * r);
    for (let j = 0; j < ffn; j++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += bv[j * r + k] * mean[k];
      bias[j] = s;
    }
    // H ← (H − m)·Wh ; A ← Whᵀ·A ; B ← B·Wi  (so B·h' = B_old·(h − m))
    for (let t = 0; t < n; t++) for (let k = 0; k < r; k++) hv[t * r + k] -= mean[k];
    const T = reg.f32(Math.max(n * r, r * dim, ffn * r));
    g.run({ a: H, b: Wh, c: T, m: n, n: r, k: r });
    a.f32(H, n * r).set(a.f32(T, n * r));
    g.run({ a: Wh, b: A, c: T, m: r, n: dim, k: r, transA: true });
    a.f32(A, r * dim).set(a.f32(T, r * dim));
    g.run({ a: B, b: Wi, c: T, m: ffn, n: r, k: r });
    a.f32(B, ffn * r).set(a.f32(T, ffn * r));
    reg.release(m2);
  }
  if (init === 'gate-regression') {
    // least squares of G on the white features: B = Gᵀ·H'/n, bias = mean of g
    g.run({ a: Gm, b: H, c: B, m: ffn, n: r, k: nt, transA: true, alpha: 1 / nt });
    const gv = a.f32(Gm, n * ffn);
    bias.fill(0);
    const acc = new Float64Array(ffn);
    for (let t = 0; t < nt; t++) for (let j = 0; j < ffn; j++) acc[j] += gv[t * ffn + j];
    for (let j = 0; j < ffn; j++) bias[j] = acc[j] / nt;
  }
  // per-neuron logit scaling: ĝ_j has mean bias_j and std ‖b_j‖ over the training tokens
  const sharp = opts.sharpness ?? 3;
  {
    const bv = a.f32(B, ffn * r);
    for (let j = 0; j < ffn; j++) {
      const p = Math.min(1 - 0.5 / nt, Math.max(0.5 / nt, pos[j] / nt));
      let ss = 0;
      for (let k = 0; k < r; k++) ss += bv[j * r + k] * bv[j * r + k];
      const s = Math.sqrt(ss);
      const z = normInv(p);                        // θ = mean + s·Φ⁻¹(1 − p) ⇒ logit(mean) = sharp·Φ⁻¹(p)
      if (s > 0) { const f = sharp / s; for (let k = 0; k < r; k++) bv[j * r + k] *= f; }
      bias[j] = sharp * z;
    }
  }
  const tInit = now();
  progress('init', { seconds: tInit - t0 });

  // ---- 2. balanced BCE fine-tuning of B and bias
  const posW = new Float32Array(ffn);
  const maxW = opts.maxPosWeight ?? 20;
  for (let j = 0; j < ffn; j++) posW[j] = Math.min(maxW, Math.max(1, (nt - pos[j]) / Math.max(pos[j], 1)));
  const Hb = reg.f32(nb * r), S = reg.f32(nb * ffn), dB = reg.f32(ffn * r), mB = reg.f32(ffn * r), vB = reg.f32(ffn * r);
  a.f32(mB, ffn * r).fill(0); a.f32(vB, ffn * r).fill(0);
  const mb = new Float32Array(ffn), vb = new Float32Array(ffn), db = new Float64Array(ffn);
  const lr = opts.lr ?? 2e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  const epochs = opts.epochs ?? 3;
  const rand = mulberry32(seed ^ 0x5bd1e995);
  const perm = Int32Array.from({ length: nt }, (_, i) => i);
  const hv = a.f32(H, n * r), hbv = a.f32(Hb, nb * r), sv = a.f32(S, nb * ffn);
  const bv = a.f32(B, ffn * r), dbv = a.f32(dB, ffn * r), mbv = a.f32(mB, ffn * r), vbv = a.f32(vB, ffn * r);
  const losses: number[] = [];
  let step = 0;
  for (let ep = 0; ep < epochs; ep++) {
    for (let i = nt - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); const t = perm[i]; perm[i] = perm[j]; perm[j] = t; }
    let lossSum = 0, lossN = 0;
    for (let b0 = 0; b0 + nb <= nt; b0 += nb) {   // full batches only: the tail joins the next epoch's shuffle
      for (let i = 0; i < nb; i++) hbv.set(hv.subarray(perm[b0 + i] * r, perm[b0 + i] * r + r), i * r);
      g.run({ a: Hb, b: B, c: S, m: nb, n: ffn, k: r, transB: true });
      db.fill(0);
      const inv = 1 / nb;
      for (let i = 0; i < nb; i++) {
        const o = i * ffn, bo = perm[b0 + i] * fb;
        for (let j = 0; j < ffn; j++) {
          const z = sv[o + j] + bias[j];
          const y = (data.target[bo + (j >> 3)] >> (j & 7)) & 1;
          const e = Math.exp(-Math.abs(z));                 // stable sigmoid / log-loss
          const p = z >= 0 ? 1 / (1 + e) : e / (1 + e);
          const w = y ? posW[j] : 1;
          if ((i & 7) === 0) lossSum += w * (Math.log1p(e) + (y ? (z < 0 ? -z : 0) : (z > 0 ? z : 0)));
          const gr = w * (p - y) * inv;
          sv[o + j] = gr;
          db[j] += gr;
        }
      }
      lossN += ((nb + 7) >> 3) * ffn;   // loss is sampled on every 8th token of the batch
      g.run({ a: S, b: Hb, c: dB, m: ffn, n: r, k: nb, transA: true });   // dB = dSᵀ·Hb
      step++;
      const c1 = lr / (1 - Math.pow(beta1, step)), c2 = 1 / (1 - Math.pow(beta2, step));
      for (let i = 0; i < ffn * r; i++) {
        const gi = dbv[i];
        const m = (mbv[i] = beta1 * mbv[i] + (1 - beta1) * gi);
        const v = (vbv[i] = beta2 * vbv[i] + (1 - beta2) * gi * gi);
        bv[i] -= (c1 * m) / (Math.sqrt(v * c2) + eps);
      }
      for (let j = 0; j < ffn; j++) {
        const gi = db[j];
        const m = (mb[j] = beta1 * mb[j] + (1 - beta1) * gi);
        const v = (vb[j] = beta2 * vb[j] + (1 - beta2) * gi * gi);
        bias[j] -= (c1 * m) / (Math.sqrt(v * c2) + eps);
      }
    }
    losses.push(lossSum / Math.max(1, lossN));
    progress('epoch', { epoch: ep, loss: losses[ep], seconds: now() - t0 });
  }
  const tTrain = now();

  // ---- 3. cutoff for the target recall on the calibration tokens (held out from steps 1–2:
  // on the fitted tokens the recall is optimistic, by ~2 points at 13B shapes)
  const recall = opts.targetRecall ?? 0.97;
  if (!(recall > 0 && recall <= 1)) throw new PredictorError(`targetRecall ${recall} not in (0, 1]`);
  let totalPos = 0;
  for (let t = nt; t < n; t++) for (let i = 0; i < fb; i++) totalPos += POPCOUNT[data.target[t * fb + i]];
  if (totalPos === 0) throw new PredictorError('no active neurons in the calibration tokens');
  const every = Math.max(1, Math.ceil(totalPos / 2e6));  // score sample of ≤ 2M positives
  const sample = new Float32Array(Math.ceil(totalPos / every));
  let ns = 0, seen = 0;
  for (let b0 = nt; b0 < n; b0 += nb) {
    const m = Math.min(nb, n - b0);
    g.run({ a: H + b0 * r * 4, b: B, c: S, m, n: ffn, k: r, transB: true });
    for (let i = 0; i < m; i++) {
      const o = i * ffn, bo = (b0 + i) * fb;
      for (let j = 0; j < ffn; j++) {
        if ((data.target[bo + (j >> 3)] >> (j & 7)) & 1) {
          if (seen++ % every === 0) sample[ns++] = sv[o + j] + bias[j];
        }
      }
    }
  }
  const sorted = sample.subarray(0, ns).sort();
  const idx = Math.floor((1 - recall) * ns);
  const cutoff = idx > 0 ? sorted[idx - 1] : sorted[0] - Math.max(1e-6, Math.abs(sorted[0]) * 1e-6);

  // fold the feature centering into the bias: B·(A·x − m') + bias, with m' = mean of A·x after whitening
  // (H was centered, so m' = mean over the training tokens of A_white·x)
  const av = a.f32(A, r * dim), xv = a.f32(X, n * dim);
  const mW = new Float64Array(r);
  {
    const xm = new Float64Array(dim);
    for (let t = 0; t < nt; t++) for (let d = 0; d < dim; d++) xm[d] += xv[t * dim + d];
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let d = 0; d < dim; d++) s += av[k * dim + d] * xm[d];
      mW[k] = s / nt;
    }
  }
  const finalBias = new Float32Array(ffn);
  for (let j = 0; j < ffn; j++) {
    let s = 0;
    for (let k = 0; k < r; k++) s += bv[j * r + k] * mW[k];
    finalBias[j] = bias[j] - s;
  }
  const predictor: LowRankPredictor = { dim, ffn, rank: r, a: av.slice(), b: bv.slice(), bias: finalBias, cutoff };
  const tEnd = now();
  return {
    predictor,
    report: {
      init, loss: losses, cutoffSample: ns, gemmFlop: g.flop, fitTokens: nt, cutoffTokens: nv,
      seconds: { init: tInit - t0, train: tTrain - tInit, cutoff: tEnd - tTrain, total: tEnd - t0 },
    },
  };
}

const POPCOUNT = Uint8Array.from({ length: 256 }, (_, i) => { let c = 0; for (let v = i; v; v >>= 1) c += v & 1; return c; });

function transpose(src: Float32Array, dst: Float32Array, rows: number, cols: number): void {
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) dst[j * rows + i] = src[i * cols + j];
}

export function checkData(d: PredictorData): void {
  const { n, dim, ffn } = d;
  for (const [v, what] of [[n, 'n'], [dim, 'dim'], [ffn, 'ffn']] as const) {
    if (!Number.isInteger(v) || v < 1) throw new PredictorError(`bad ${what}=${v}`);
  }
  if (d.x.length !== n * dim) throw new PredictorError(`x has ${d.x.length} values, want n·dim = ${n * dim}`);
  if (d.target.length !== n * Math.ceil(ffn / 8)) throw new PredictorError(`target has ${d.target.length} bytes, want n·ceil(ffn/8) = ${n * Math.ceil(ffn / 8)}`);
  if (d.gate && d.gate.length !== n * ffn) throw new PredictorError(`gate has ${d.gate.length} values, want n·ffn = ${n * ffn}`);
  if (d.gateW && d.gateW.length !== ffn * dim) throw new PredictorError(`gateW has ${d.gateW.length} values, want ffn·dim = ${ffn * dim}`);
}
