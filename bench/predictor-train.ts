// Predictor training at CodeLlama-13B shapes: one layer, dim 5120, ffn 13824, rank 256,
// n = 4000 calibration tokens (+ 1000 held out), synthetic data (src/engine/predictor-synth.ts):
// FFN inputs with a decaying latent spectrum (LATENT directions) + 10% isotropic noise + 4 massive
// dimensions, RMS-normed; a random gate matrix; 30% of neurons active (|SiLU(g)| above the
// 70th percentile). Init from the gate weights (the engine has them), then BCE epochs.
// Also: GEMM GFLOPS of compute.gemm on the trainer's shapes, 1 and 2 threads (median of 5).
// Prints JSON. Usage: node dist/bench/predictor-train.js [--n 4000] [--test 1000] [--rank 256]
//   [--dim 5120] [--ffn 13824] [--latent 1024] [--epochs 2] [--threads 2] [--recall 0.97] [--skip-gemm]
import { Compute } from '../src/kernels/index.js';
import { trainPredictor } from '../src/engine/predictor-train.js';
import { evalPredictor } from '../src/engine/predictor-eval.js';
import { synthPredictorData, sliceData } from '../src/engine/predictor-synth.js';

const argv = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : dflt;
};
const N = Number(opt('n', '4000')), NT = Number(opt('test', '1000')), RANK = Number(opt('rank', '256'));
const DIM = Number(opt('dim', '5120')), FFN = Number(opt('ffn', '13824')), LATENT = Number(opt('latent', '1024'));
const EPOCHS = Number(opt('epochs', '2')), THREADS = Number(opt('threads', '2')), RECALL = Number(opt('recall', '0.97'));

async function gemmBench(threads: number) {
  const c = await Compute.create({ threads });
  const shapes: [string, number, number, number, boolean, boolean][] = [
    ['H = X·Aᵀ  [n×dim]·[dim×r]', N, RANK, DIM, false, true],
    ['S = H·Bᵀ  [batch×r]·[r×ffn]', 256, FFN, RANK, false, true],
    ['dB = dSᵀ·H [ffn×batch]·[batch×r]', FFN, RANK, 256, true, false],
    ['A = Vᵀ·W  [r×ffn]·[ffn×dim]', RANK + 64, DIM, FFN, true, false],
  ];
  const out = [];
  try {
    for (const [name, m, n, k, transA, transB] of shapes) {
      const a = c.createArena((m * k + k * n + m * n) * 4 + c.gemmWorkBytes() + (1 << 20));
      const A = a.alloc(m * k * 4), B = a.alloc(k * n * 4), C = a.alloc(m * n * 4);
      const av = a.f32(A, m * k), bv = a.f32(B, k * n);
      for (let i = 0; i < av.length; i++) av[i] = ((i * 7919) % 1000) / 1000 - 0.5;
      for (let i = 0; i < bv.length; i++) bv[i] = ((i * 104729) % 1000) / 1000 - 0.5;
      c.gemm(a, { a: A, b: B, c: C, m, n, k, transA, transB });
      const ts: number[] = [];
      for (let r = 0; r < 5; r++) {
        const t0 = performance.now();
        c.gemm(a, { a: A, b: B, c: C, m, n, k, transA, transB });
        ts.push(performance.now() - t0);
      }
      ts.sort((x, y) => x - y);
      out.push({ shape: name, m, n, k, ms: +ts[2].toFixed(1), gflops: +((2 * m * n * k) / ts[2] / 1e6).toFixed(1) });
    }
  } finally {
    await c.close();
  }
  return out;
}

const result: Record<string, unknown> = { shapes: { n: N, test: NT, dim: DIM, ffn: FFN, rank: RANK, latent: LATENT, epochs: EPOCHS, threads: THREADS } };
if (!argv.includes('--skip-gemm')) {
  result.gemm = { threads1: await gemmBench(1), threads2: await gemmBench(2) };
}
const c = await Compute.create({ threads: THREADS });
try {
  const t0 = performance.now();
  const { data } = synthPredictorData(c, { n: N + NT, dim: DIM, ffn: FFN, latent: LATENT, noise: 0.1, decay: 1, outliers: 4, activeFrac: 0.3, seed: 11 });
  const tData = (performance.now() - t0) / 1000;
  const train = sliceData(data, 0, N), test = sliceData(data, N, N + NT);
  delete train.gate;  // init from the gate weights, as the engine would
  const { predictor, report } = trainPredictor(c, train, { rank: RANK, epochs: EPOCHS, targetRecall: RECALL, seed: 1 });
  const gemmSecondsBound = report.gemmFlop / 1e9;
  const t1 = performance.now();
  const held = evalPredictor(c, predictor, test);
  const tEval = (performance.now() - t1) / 1000;
  const trainEval = evalPredictor(c, predictor, { n: 1000, x: train.x.subarray(0, 1000 * DIM), target: train.target.subarray(0, 1000 * Math.ceil(FFN / 8)) });
  const r3 = (v: number) => +v.toFixed(4);
  result.data_seconds = +tData.toFixed(2);
  result.train = {
    seconds_per_layer: +report.seconds.total.toFixed(2),
    phases: Object.fromEntries(Object.entries(report.seconds).map(([k, v]) => [k, +v.toFixed(2)])),
    gemm_gflop: +gemmSecondsBound.toFixed(1),
    effective_gflops: +(gemmSecondsBound / report.seconds.total).toFixed(1),
    loss_per_epoch: report.loss.map(r3),
    init: report.init,
    est_36_layers_minutes: +((report.seconds.total * 36) / 60).toFixed(1),
  };
  const fmt = (e: typeof held) => ({ recall: r3(e.recall), precision: r3(e.precision), predicted_frac: r3(e.predictedFrac), active_frac: r3(e.activeFrac), over_read: r3(e.overRead), worst1pct_token_recall: r3(e.worstTokenRecall) });
  result.heldout = fmt(held);
  result.train_tokens = fmt(trainEval);
  result.eval_seconds = +tEval.toFixed(2);
} finally {
  await c.close();
}
process.stdout.write(JSON.stringify(result, null, 1) + '\n');
