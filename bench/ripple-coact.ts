// Co-activation statistics: time at 13B shapes and the MinHash approximation's error vs exact counts.
//
//   node dist/bench/ripple-coact.js [--ffn 13824] [--tokens 4000] [--layers 2] [--calib C.gguf --sparsity 0.7] [--out r.json]
//
// 1. time: synthetic activation codes of --ffn neurons × --tokens tokens with SiLU-like statistics
//    (≈30% active per token, skewed neuron frequencies, weak groups of 64 co-varying neurons), per
//    layer: bitsets, MinHash candidates + exact counts, greedy path; ×36 layers extrapolated (and
//    measured over --layers layers).
// 2. error: on shapes where exact all-pair counts are affordable (≤ 2048 neurons), the recall of each
//    neuron's exact top-8 neighbours among the approximate pairs, and reads/token (held-out tokens,
//    no cache) of the placement from approximate vs exact pairs vs identity. With --calib, the same
//    on the first layers of a real calibration file (exact only if ffn ≤ 4096).
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { activeSets, exactPairs, runsPerToken, sketchPairs, topKRecall } from '../src/engine/coactivation.js';
import { greedyPath } from '../src/engine/place.js';
import { mulberry32 } from '../src/engine/sample.js';
import { readCalibration } from '../src/formats/calibration.js';
import { thresholdForSparsity } from '../src/engine/calibrate.js';

/** token-major codes: neuron i active with probability clamp(base_i + group effect); code 200 / 10 */
function siluLikeCodes(n: number, ffn: number, seed: number, groupSize = 64, groupAmp = 0.25): Uint8Array {
  const r = mulberry32(seed);
  const base = Float64Array.from({ length: ffn }, () => Math.min(0.95, 0.03 + 0.6 * r() ** 2)); // mean ≈ 0.23
  const G = Math.ceil(ffn / groupSize);
  const ids = Int32Array.from({ length: ffn }, (_, i) => i).sort(() => r() - 0.5);
  const group = new Int32Array(ffn);
  ids.forEach((id, q) => { group[id] = Math.floor(q / groupSize); });
  const code = new Uint8Array(n * ffn);
  const g = new Float64Array(G);
  for (let t = 0; t < n; t++) {
    for (let k = 0; k < G; k++) g[k] = r() < 0.15 ? groupAmp : -0.03;
    const row = t * ffn;
    for (let i = 0; i < ffn; i++) code[row + i] = r() < base[i]! + g[group[i]!]! ? 200 : 10;
  }
  return code;
}

function errorRow(name: string, code: Uint8Array, ffn: number, minCode: number, n: number) {
  const nS = Math.round(n * 0.9);
  const S = activeSets(code, ffn, minCode, 0, nS), H = activeSets(code, ffn, minCode, nS, n);
  const t0 = performance.now();
  const exact = exactPairs(S);
  const t1 = performance.now();
  const approx = sketchPairs(S);
  const t2 = performance.now();
  const pe = greedyPath(ffn, exact, S.freq).perm, pa = greedyPath(ffn, approx, S.freq).perm;
  const identity = Int32Array.from({ length: ffn }, (_, i) => i);
  let act = 0;
  for (let i = 0; i < ffn; i++) act += S.freq[i]!;
  const row = {
    name, ffn, tokens: nS, held_out: n - nS, active_frac: act / (ffn * nS),
    exact_pairs: exact.length, approx_pairs: approx.length, candidates: approx.candidates,
    top8_recall: topKRecall(ffn, exact, approx, 8), top1_recall: topKRecall(ffn, exact, approx, 1),
    reads_per_token: { identity: runsPerToken(H, identity), exact: runsPerToken(H, pe), approx: runsPerToken(H, pa) },
    ms: { exact: t1 - t0, approx: t2 - t1 },
  };
  process.stderr.write(`${name}: ${JSON.stringify(row)}\n`);
  return row;
}

function main(): void {
  const { values } = parseArgs({
    options: { ffn: { type: 'string', default: '13824' }, tokens: { type: 'string', default: '4000' }, layers: { type: 'string', default: '2' }, calib: { type: 'string' }, sparsity: { type: 'string', default: '0.7' }, out: { type: 'string' } },
  });
  const ffn = Number(values.ffn), n = Number(values.tokens), layers = Number(values.layers);
  // --- 1. time at 13B shapes
  const timing = [];
  for (let l = 0; l < layers; l++) {
    const code = siluLikeCodes(n, ffn, 100 + l);
    const t0 = performance.now();
    const S = activeSets(code, ffn, 100);
    const t1 = performance.now();
    const P = sketchPairs(S, { seed: l + 1 });
    const t2 = performance.now();
    const g = greedyPath(ffn, P, S.freq);
    const t3 = performance.now();
    const row = { layer: l, bitsets_ms: t1 - t0, minhash_ms: P.ms.minhash, candidates_ms: P.ms.candidates, counts_ms: P.ms.counts, path_ms: t3 - t2, total_ms: t3 - t0, pairs: P.length, candidates: P.candidates, paths: g.paths };
    timing.push(row);
    process.stderr.write(`time layer ${l}: ${JSON.stringify(row)}\n`);
  }
  const perLayer = timing.reduce((s, r) => s + r.total_ms, 0) / timing.length;
  // --- 2. error vs exact
  const errors = [];
  for (const [ffnE, nE] of [[1024, 2000], [2048, 2000]] as const) {
    errors.push(errorRow(`silu-like groups ${ffnE}x${nE}`, siluLikeCodes(nE, ffnE, 7), ffnE, 100, nE));
    const r = mulberry32(5);
    const p = Float64Array.from({ length: ffnE }, () => 0.02 + 0.5 * r() ** 2);
    const ind = new Uint8Array(nE * ffnE);
    for (let t = 0; t < nE; t++) for (let i = 0; i < ffnE; i++) ind[t * ffnE + i] = r() < p[i]! ? 200 : 10;
    errors.push(errorRow(`independent ${ffnE}x${nE}`, ind, ffnE, 100, nE));
  }
  if (values.calib) {
    const cal = readCalibration(values.calib);
    if (cal.meta.ffn > 4096) throw new Error(`${values.calib}: ffn ${cal.meta.ffn} is too large for exact counts here`);
    for (let l = 0; l < Math.min(layers, cal.meta.nLayers); l++) {
      const minCode = Math.max(1, thresholdForSparsity(cal.hist(l), Number(values.sparsity)).code);
      errors.push(errorRow(`${values.calib} layer ${l} (sparsity ${values.sparsity})`, cal.code(l), cal.meta.ffn, minCode, cal.meta.tokens));
    }
  }
  const result = {
    machine_note: 'single thread, this 2-core VM', shape: { ffn, tokens: n }, timing, ms_per_layer_mean: perLayer, extrapolated_36_layers_s: (36 * perLayer) / 1000, errors,
  };
  const json = `${JSON.stringify(result, null, 1)}\n`;
  process.stdout.write(json);
  if (values.out) writeFileSync(values.out, json);
}

main();
