// Gate pre-activation statistics of a SiLU-GLU model on its calibration data, to choose the sparsity
// rule (issue 4). For chosen layers: g = W_gate·x over calibration tokens (exact, f32 gemm), then
//  - quantiles of g, the share of g < 0 and of |SiLU(g)| in the negative plateau (> 0.2);
//  - for the CATS rule (|SiLU(g)| ≥ t, t = the file's calibration threshold at 50/70%): the share of
//    active neurons that are negative (g < 0) — they form a band, not a half-line;
//  - for the one-sided gate rule (g ≥ τ, τ at the same sparsity): τ;
// Usage: node dist/bench/gate-stats.js FLASH.gguf CALIB.gguf [--layers 0,10,20,35 (default all)] [--tokens 512]
// Prints JSON; `thresholds` {abs, gate} × {s50, s70, s80, s90} per layer feed bench/sparsity-ppl.ts.
import { parseArgs } from 'node:util';
import { Compute } from '../src/kernels/index.js';
import { readCalibration } from '../src/formats/calibration.js';
import { readGGUF } from '../src/formats/gguf.js';
import { openFlashLayout } from '../src/formats/flash-layout.js';
import { readGateWeights } from '../src/formats/predictors.js';
import { thresholdForSparsity } from '../src/engine/calibrate.js';
import { PredictorWorkspace } from '../src/engine/predictor-train.js';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { layers: { type: 'string' }, tokens: { type: 'string' } } });
const [modelPath, calibPath] = positionals;
if (!modelPath || !calibPath) throw new Error('usage: gate-stats FLASH.gguf CALIB.gguf [--layers 0,10] [--tokens 512]');
const f = readGGUF(modelPath);
const layout = openFlashLayout(f);
const cal = readCalibration(calibPath);
const dim = layout.dim, ffn = layout.layers[0]!.nFF;
const nTok = Math.min(Number(values.tokens ?? 512), cal.meta.tokens);
const layers = values.layers ? values.layers.split(',').map(Number).filter((l) => l < layout.layers.length) : layout.layers.map((_, l) => l);
const SP = [0.5, 0.7, 0.8, 0.9];
const absT: Record<string, number[]> = {}, gateT: Record<string, number[]> = {};
for (const s of SP) { absT[`s${s * 100}`] = []; gateT[`s${s * 100}`] = []; }
const silu = (g: number) => g / (1 + Math.exp(-g));
const compute = await Compute.create({ threads: 2 });
const ws = new PredictorWorkspace(compute, (nTok * dim + ffn * dim + nTok * ffn) * 4 + 4096);
const a = ws.arena;
const X = ws.base, W = X + nTok * dim * 4, G = W + ffn * dim * 4;
const out: unknown[] = [];
for (const l of layers) {
  const t0 = performance.now();
  const x = cal.x(l).subarray(0, nTok * dim);
  a.f32(X, nTok * dim).set(x);
  readGateWeights(f, layout, l, a.f32(W, ffn * dim));
  compute.gemm(a, { a: X, b: W, c: G, m: nTok, n: ffn, k: dim, transB: true, work: ws.gemmWork }); // G [nTok × ffn]
  const g = Float32Array.from(a.f32(G, nTok * ffn));
  const sorted = Float32Array.from(g).sort();
  const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
  let neg = 0, plateau = 0;
  for (const v of g) { if (v < 0) neg++; if (v < 0 && -silu(v) > 0.2) plateau++; }
  const hist = cal.hist(l);
  const cats: Record<string, unknown> = {};
  for (const s of SP) {
    const t = thresholdForSparsity(hist, s).threshold;
    let act = 0, actNeg = 0;
    for (const v of g) { if (Math.abs(silu(v)) >= t) { act++; if (v < 0) actNeg++; } }
    cats[`s${s * 100}`] = { t, active: act / g.length, negShareOfActive: actNeg / Math.max(1, act), gateTau: q(s) };
    absT[`s${s * 100}`]!.push(t);
    gateT[`s${s * 100}`]!.push(q(s));
  }
  let mean = 0; for (const v of g) mean += v; mean /= g.length;
  let varG = 0; for (const v of g) varG += (v - mean) ** 2; varG /= g.length;
  out.push({ layer: l, tokens: nTok, seconds: (performance.now() - t0) / 1000, gQuantiles: { p01: q(0.01), p10: q(0.1), p30: q(0.3), p50: q(0.5), p70: q(0.7), p90: q(0.9), p99: q(0.99) }, negShare: neg / g.length, plateauShare: plateau / g.length, stdG: Math.sqrt(varG), cats });
  process.stderr.write(`layer ${l} done\n`);
}
process.stdout.write(JSON.stringify({ model: modelPath, tokens: nTok, thresholds: { abs: absT, gate: gateT }, layers: out }, null, 1) + '\n');
await compute.close();
