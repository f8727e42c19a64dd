// `flashlm place`: Ripple's offline neuron placement (arXiv 2410.19274 §4). Neurons that are active
// for the same tokens are put next to each other on flash, so one token's needed neurons come in
// fewer, longer reads.
//
// Per layer: activation sets from the calibration codes (neuron active ⇔ |act| ≥ the layer's
// threshold), co-activation counts of the high-count pairs (coactivation.ts), then the greedy
// Hamiltonian path: links sorted by distance 1 − P(i, j) (= by count, descending: a priority queue
// built at once), a link (i, j) accepted when both i and j are path ends (degree < 2) and lie in
// different paths (union-find), so every component stays a simple path. The paths left when the
// candidate links run out (no candidate links join two of their ends; neurons never active are
// singletons) are concatenated, densest activity first. Placement = the order along the paths.
//
// The calibration codes index neurons by ORIGINAL id, as predictors do; the new permutation is in
// id space too (perm[p] = id), so re-placing an already placed file works from the same calibration.
import { GGUFValueType as VT, readGGUF, type GGUFKV } from '../formats/gguf.js';
import { codeThreshold, modelIdentity, readCalibration } from '../formats/calibration.js';
import { isFlashLayout, openFlashLayout } from '../formats/flash-layout.js';
import { CalibrationMismatchError, PK } from '../formats/predictors.js';
import { writePlacement, PLK } from '../formats/placement.js';
import { activeSets, runsPerToken, sketchPairs, type PairCounts, type SketchOptions } from './coactivation.js';
import { thresholdForSparsity } from './calibrate.js';

export class PlacementError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PlacementError';
  }
}

/**
 * Ripple's greedy path over weighted pairs (count = co-activation; larger = closer). Returns the
 * placement perm[p] = neuron id, a permutation of 0..ffn−1. `freq` (activity per neuron) orders the
 * leftover paths: the path with the most activity per neuron first.
 */
export function greedyPath(ffn: number, pairs: PairCounts, freq?: ArrayLike<number>): { perm: Uint32Array; paths: number; linked: number } {
  // priority order: count descending, then (a, b) ascending for determinism. One numeric sort of
  // packed keys (maxCount − count)·ffn² + a·ffn + b (< 2^53 for ffn < 65536, counts < 2^21) is a
  // priority queue built at once, several times faster than a comparator sort of 10^6 edges.
  const { a, b, count } = pairs;
  let maxC = 0;
  for (let e = 0; e < pairs.length; e++) if (count[e]! > maxC) maxC = count[e]!;
  const f2 = ffn * ffn;
  if ((maxC + 1) * f2 > Number.MAX_SAFE_INTEGER) throw new PlacementError(`counts up to ${maxC} over ${ffn} neurons do not fit the edge keys`);
  const keys = new Float64Array(pairs.length);
  for (let e = 0; e < pairs.length; e++) keys[e] = (maxC - count[e]!) * f2 + a[e]! * ffn + b[e]!;
  keys.sort();
  const parent = Int32Array.from({ length: ffn }, (_, i) => i);
  const find = (x: number): number => {
    while (parent[x] !== x) { parent[x] = parent[parent[x]!]!; x = parent[x]!; }
    return x;
  };
  const adj = new Int32Array(2 * ffn).fill(-1); // two path neighbours per neuron
  const deg = new Uint8Array(ffn);
  let linked = 0;
  for (let q = 0; q < keys.length && linked < ffn - 1; q++) {
    const ab = keys[q]! % f2;
    const i = Math.floor(ab / ffn), j = ab - i * ffn;
    if (deg[i]! >= 2 || deg[j]! >= 2) continue;
    const ri = find(i), rj = find(j);
    if (ri === rj) continue; // would close a cycle
    parent[ri] = rj;
    adj[2 * i + deg[i]!] = j; deg[i]!++;
    adj[2 * j + deg[j]!] = i; deg[j]!++;
    linked++;
  }
  // walk every path from one of its ends
  const seen = new Uint8Array(ffn);
  const paths: Int32Array[] = [];
  const buf = new Int32Array(ffn);
  for (let s = 0; s < ffn; s++) {
    if (seen[s] || deg[s]! > 1) continue;
    let len = 0, prev = -1, cur = s;
    while (cur >= 0) {
      seen[cur] = 1;
      buf[len++] = cur;
      const n0 = adj[2 * cur]!, n1 = adj[2 * cur + 1]!;
      const next = n0 !== prev ? n0 : n1;
      prev = cur;
      cur = next >= 0 && !seen[next] ? next : -1;
    }
    paths.push(buf.slice(0, len));
  }
  const density = (p: Int32Array) => (freq ? p.reduce((s, id) => s + Number(freq[id]!), 0) / p.length : 0);
  const dens = paths.map(density);
  const ix = paths.map((_, i) => i).sort((x, y) => dens[y]! - dens[x]! || paths[y]!.length - paths[x]!.length || paths[x]![0]! - paths[y]![0]!);
  const perm = new Uint32Array(ffn);
  let p = 0;
  for (const i of ix) for (const id of paths[i]!) perm[p++] = id;
  if (p !== ffn) throw new Error(`internal: greedy path placed ${p} of ${ffn} neurons`);
  return { perm, paths: paths.length, linked };
}

export interface PlaceOptions {
  /** output path (default: the model itself, replaced atomically) */
  out?: string;
  /** target sparsity for the activity cutoff |act| ≥ t (default: the file's flashlm.sparse.sparsity
   * from sparsify, else 0.5); t per layer from the calibration histogram, as sparsify's rule 'abs' */
  sparsity?: number;
  /** fraction of the calibration tokens held out to report reads/token before/after (default 0.1) */
  holdOut?: number;
  sketch?: SketchOptions;
  onProgress?: (p: { phase: 'stats' | 'write'; done: number; total: number }) => void;
}

export interface PlaceLayerResult {
  layer: number;
  minCode: number; // neuron active ⇔ code ≥ minCode
  threshold: number; // |act| value of minCode
  activeFrac: number; // of (token, neuron) pairs on the statistics tokens
  pairs: number; // pairs with exact counts (count > 0)
  candidates: number;
  paths: number; // paths concatenated
  /** held-out tokens: reads per token of the active set in placement order (no cache; gap 0) */
  runsBefore: number;
  runsAfter: number;
  seconds: number;
}

export interface PlaceResult {
  out: string;
  sparsity: number;
  tokens: { stats: number; heldOut: number };
  layers: PlaceLayerResult[];
  seconds: { stats: number; write: number };
}

/** Computes a Ripple placement per layer from the calibration and rewrites the model in that order. */
export function placeModel(modelPath: string, calibPath: string, o: PlaceOptions = {}): PlaceResult {
  const f = readGGUF(modelPath);
  if (!isFlashLayout(f)) throw new PlacementError(`${modelPath} is not a flash-layout file (make one with: flashlm convert SRC -o OUT.gguf --quant q8_0 --layout flash)`);
  const L = openFlashLayout(f);
  const cal = readCalibration(calibPath);
  const id = modelIdentity(f);
  if (cal.meta.modelIdentity !== id) throw new CalibrationMismatchError(cal.meta.modelIdentity, id, modelPath);
  const nLayers = L.layers.length, ffn = L.layers[0]?.nFF ?? 0;
  if (cal.meta.nLayers !== nLayers || cal.meta.ffn !== ffn) throw new PlacementError(`${calibPath}: calibration has ${cal.meta.nLayers} layers × ${cal.meta.ffn} neurons, the model ${nLayers} × ${ffn}`);
  const holdOut = o.holdOut ?? 0.1;
  if (!(holdOut >= 0 && holdOut < 1)) throw new PlacementError(`hold-out fraction ${holdOut} not in [0, 1)`);
  const n = cal.meta.tokens;
  const nStats = holdOut > 0 ? Math.max(1, Math.min(n - 1, Math.round(n * (1 - holdOut)))) : n;
  if (n < 2) throw new PlacementError(`${calibPath}: ${n} calibration tokens are too few`);
  // activity cutoff per layer: --sparsity, else the sparsity sparsify used, else 50%
  const fileSp = f.metadata.get(PK.sparsity)?.value;
  const sparsity = o.sparsity ?? (typeof fileSp === 'number' && fileSp > 0 && fileSp < 1 ? fileSp : 0.5);
  if (!(sparsity > 0 && sparsity < 1)) throw new PlacementError(`sparsity ${sparsity} not in (0, 1)`);
  const t0 = performance.now();
  const perms: Uint32Array[] = [];
  const layers: PlaceLayerResult[] = [];
  o.onProgress?.({ phase: 'stats', done: 0, total: nLayers });
  for (let l = 0; l < nLayers; l++) {
    const tl = performance.now();
    const minCode = Math.max(1, thresholdForSparsity(cal.hist(l), sparsity).code);
    const code = cal.code(l);
    const S = activeSets(code, ffn, minCode, 0, nStats);
    const pairs = sketchPairs(S, { seed: 1 + l, ...o.sketch });
    const { perm, paths } = greedyPath(ffn, pairs, S.freq);
    let activeSum = 0;
    for (let i = 0; i < ffn; i++) activeSum += S.freq[i]!;
    let before = NaN, after = NaN;
    if (nStats < n) {
      const H = activeSets(code, ffn, minCode, nStats, n);
      before = runsPerToken(H, L.layers[l]!.perm);
      after = runsPerToken(H, perm);
    }
    perms.push(perm);
    layers.push({
      layer: l, minCode, threshold: codeThreshold(minCode), activeFrac: activeSum / (ffn * nStats), pairs: pairs.length, candidates: pairs.candidates,
      paths, runsBefore: before, runsAfter: after, seconds: (performance.now() - tl) / 1000,
    });
    o.onProgress?.({ phase: 'stats', done: l + 1, total: nLayers });
  }
  const t1 = performance.now();
  const out = o.out ?? modelPath;
  const kv = (key: string, type: number, value: GGUFKV['value'], arrayType?: number): GGUFKV => (arrayType === undefined ? { key, type, value } : { key, type, value, arrayType });
  writePlacement(modelPath, out, {
    perms,
    metadata: [
      kv(PLK.method, VT.STRING, 'ripple-greedy-path'),
      kv(PLK.calibTokens, VT.UINT32, nStats),
      kv(PLK.sparsity, VT.FLOAT32, sparsity),
      kv(PLK.minCode, VT.ARRAY, Uint32Array.from(layers.map((x) => x.minCode)), VT.UINT32),
      kv(PLK.runsBefore, VT.ARRAY, Float32Array.from(layers.map((x) => x.runsBefore)), VT.FLOAT32),
      kv(PLK.runsAfter, VT.ARRAY, Float32Array.from(layers.map((x) => x.runsAfter)), VT.FLOAT32),
    ],
  }, (d, t) => o.onProgress?.({ phase: 'write', done: d, total: t }));
  const t2 = performance.now();
  return { out, sparsity, tokens: { stats: nStats, heldOut: n - nStats }, layers, seconds: { stats: (t1 - t0) / 1000, write: (t2 - t1) / 1000 } };
}
