// Co-activation statistics for Ripple's neuron placement (arXiv 2410.19274 §4).
//
// Input: one layer's calibration codes (formats/calibration.ts, token-major u8 [n × ffn]) and the
// activity cutoff code c (neuron i is active at token t ⇔ code[t·ffn + i] ≥ c). Ripple links
// neurons by the distance 1 − P(i, j), P(i, j) = co-activation count(i, j) / n; the greedy path
// (place.ts) only needs the high-count pairs, in decreasing count order.
//
// Exact counts over all pairs cost ffn²/2 popcounts of n-bit sets: for 13B (13824 neurons, 4000
// tokens) 95.5 M pairs × 125 words per layer, ≈ 1.2·10^10 word ops, i.e. minutes per layer and an
// hour or more for 36 layers on 2 cores. The approximation here keeps exact counts but only for
// CANDIDATE pairs, found with MinHash over the activation bitsets (an LSH forest):
//   1. bitsets: bits[i·words + t/32] bit t%32 = neuron i active at token t  [ffn × words] u32
//   2. h = bands·r MinHash values per neuron: sig_k(i) = min over i's active tokens of π_k(t), π_k a
//      seeded random token order (computed by walking tokens in π_k order over token-major bitsets,
//      stopping once every active neuron has its value: cost ≤ n·ffn/32 word ops per hash).
//      P(sig_k(i) = sig_k(j)) = Jaccard(i, j).
//   3. per band, neurons sorted by the r values of the band packed lexicographically: neurons that
//      agree on a prefix are adjacent, longer prefixes = more similar; each neuron's next `width`
//      neighbours in that order become candidates (≤ bands·width per neuron, independent of n).
//   4. exact count(i, j) = popcount(bits_i AND bits_j) for each distinct candidate pair.
// The error (documented in the README and test/engine/coactivation.test.ts): which high-count pairs
// are missed (recall of each neuron's exact top-k neighbours) and what that costs the placement
// (reads per held-out token vs the placement built from ALL exact pair counts). Counts themselves
// are exact for the pairs kept.
import { mulberry32 } from './sample.js';

export class CoactivationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CoactivationError';
  }
}

/** Activation sets of one layer as bitsets, both ways round. */
export interface ActiveSets {
  n: number; // tokens
  ffn: number; // neurons
  words: number; // ceil(n / 32): u32 words per neuron bitset
  nWords: number; // ceil(ffn / 32): u32 words per token bitset
  /** neuron-major: bit t of neuron i at bits[i·words + (t >>> 5)] [ffn × words] */
  bits: Uint32Array;
  /** token-major: bit i of token t at byToken[t·nWords + (i >>> 5)] [n × nWords] */
  byToken: Uint32Array;
  /** tokens each neuron is active at [ffn] */
  freq: Uint32Array;
}

/**
 * Bitsets of the (token, neuron) pairs with code ≥ minCode, over tokens [t0, t1) of a token-major
 * [n × ffn] code matrix. Memory: (t1−t0)·ffn/4 bytes (both orientations): 14 MB for 13B × 4000 tokens.
 */
export function activeSets(code: Uint8Array, ffn: number, minCode: number, t0 = 0, t1 = code.length / ffn): ActiveSets {
  if (!Number.isInteger(ffn) || ffn < 1 || code.length % ffn) throw new CoactivationError(`codes of ${code.length} bytes are not whole rows of ${ffn} neurons`);
  if (!Number.isInteger(t0) || !Number.isInteger(t1) || t0 < 0 || t1 > code.length / ffn || t1 <= t0) throw new CoactivationError(`token range [${t0}, ${t1}) outside [0, ${code.length / ffn})`);
  if (!(minCode >= 1 && minCode <= 256)) throw new CoactivationError(`activity cutoff code ${minCode} not in 1..256`);
  const n = t1 - t0;
  const words = (n + 31) >>> 5;
  const nWords = (ffn + 31) >>> 5;
  const bits = new Uint32Array(ffn * words);
  const byToken = new Uint32Array(n * nWords);
  const freq = new Uint32Array(ffn);
  for (let t = 0; t < n; t++) {
    const row = (t0 + t) * ffn;
    const tw = t >>> 5, tb = 1 << (t & 31), to = t * nWords;
    for (let i = 0; i < ffn; i++) {
      if (code[row + i]! < minCode) continue;
      bits[i * words + tw] |= tb;
      byToken[to + (i >>> 5)] |= 1 << (i & 31);
      freq[i]!++;
    }
  }
  return { n, ffn, words, nWords, bits, byToken, freq };
}

/** Tokens at which both neuron a and neuron b are active: popcount(bits_a AND bits_b). */
export function pairCount(s: ActiveSets, a: number, b: number): number {
  const { bits, words } = s;
  const oa = a * words, ob = b * words;
  let c = 0;
  for (let w = 0; w < words; w++) {
    let v = bits[oa + w]! & bits[ob + w]!;
    v -= (v >>> 1) & 0x55555555;
    v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
    c += Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
  }
  return c;
}

/** Pairs (a < b) with their co-activation counts, as parallel arrays. */
export interface PairCounts {
  a: Uint32Array;
  b: Uint32Array;
  count: Uint32Array;
  length: number;
}

/** Every pair with count > 0 (exact; ffn²/2 popcounts: for tests and small models only). */
export function exactPairs(s: ActiveSets): PairCounts {
  const A: number[] = [], B: number[] = [], C: number[] = [];
  for (let a = 0; a < s.ffn; a++) {
    if (!s.freq[a]) continue;
    for (let b = a + 1; b < s.ffn; b++) {
      if (!s.freq[b]) continue;
      const c = pairCount(s, a, b);
      if (c > 0) { A.push(a); B.push(b); C.push(c); }
    }
  }
  return { a: Uint32Array.from(A), b: Uint32Array.from(B), count: Uint32Array.from(C), length: A.length };
}

export interface SketchOptions {
  /** LSH-forest bands (default 24) */
  bands?: number;
  /** MinHash values per band (default: as many as fit 52 bits, at most 4) */
  rows?: number;
  /** neighbours taken after each neuron in a band's sorted order (default 8) */
  width?: number;
  seed?: number;
}

export interface SketchResult extends PairCounts {
  /** distinct candidate pairs evaluated (= length + candidates whose exact count was 0) */
  candidates: number;
  hashes: number;
  ms: { minhash: number; candidates: number; counts: number };
}

/**
 * High-count pairs by MinHash candidates + exact counts (see the file comment). Deterministic for
 * a given seed. Cost per layer: hashes·(≤ n·nWords) + bands·ffn·log ffn + pairs·words.
 */
export function sketchPairs(s: ActiveSets, o: SketchOptions = {}): SketchResult {
  const { n, ffn, nWords, byToken, freq } = s;
  const bands = o.bands ?? 24;
  const width = o.width ?? 8;
  const valBits = Math.ceil(Math.log2(n + 2)); // values 0..n (n = never active)
  const rows = o.rows ?? Math.max(1, Math.min(4, Math.floor(52 / valBits)));
  if (!Number.isInteger(bands) || bands < 1 || !Number.isInteger(width) || width < 1) throw new CoactivationError(`bands ${bands} and width ${width} must be positive integers`);
  if (!Number.isInteger(rows) || rows < 1 || rows * valBits > 52) throw new CoactivationError(`${rows} MinHash values of ${valBits} bits do not fit a 52-bit key`);
  const hashes = bands * rows;
  const rand = mulberry32(o.seed ?? 1);
  const T0 = performance.now();

  // --- MinHash signatures sig[k·ffn + i]
  const sig = new Uint32Array(hashes * ffn).fill(n);
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const open = new Uint32Array(nWords); // neurons still without a value for hash k
  let active = 0;
  for (let i = 0; i < ffn; i++) if (freq[i]) { open[i >>> 5]! |= 1 << (i & 31); active++; }
  const open0 = open.slice();
  for (let k = 0; k < hashes; k++) {
    for (let i = n - 1; i > 0; i--) { // a fresh random token order π_k
      const j = Math.floor(rand() * (i + 1));
      const x = order[i]!; order[i] = order[j]!; order[j] = x;
    }
    open.set(open0);
    let left = active;
    const sk = k * ffn;
    for (let q = 0; q < n && left > 0; q++) {
      const to = order[q]! * nWords;
      for (let w = 0; w < nWords; w++) {
        let v = byToken[to + w]! & open[w]!;
        if (v === 0) continue;
        open[w] = open[w]! & ~v;
        while (v !== 0) {
          const low = v & -v;
          sig[sk + (w << 5) + (31 - Math.clz32(low))] = q;
          v ^= low;
          left--;
        }
      }
    }
  }
  const T1 = performance.now();

  // --- candidates: neighbours in each band's lexicographic order (never-active neurons skipped)
  const live = Int32Array.from({ length: ffn }, (_, i) => i).filter((i) => freq[i]! > 0);
  const m = live.length;
  const keys = new Float64Array(ffn);
  const idx = new Int32Array(m);
  const cand = new Uint32Array(bands * m * width);
  let nc = 0;
  const scale = 2 ** valBits;
  for (let b = 0; b < bands; b++) {
    for (const i of live) {
      let key = 0;
      for (let r = 0; r < rows; r++) key = key * scale + sig[(b * rows + r) * ffn + i]!;
      keys[i] = key;
    }
    idx.set(live);
    idx.sort((x, y) => keys[x]! - keys[y]! || x - y);
    for (let q = 0; q < m; q++) {
      const x = idx[q]!;
      for (let d = 1; d <= width && q + d < m; d++) {
        const y = idx[q + d]!;
        cand[nc++] = x < y ? x * ffn + y : y * ffn + x; // ffn < 65536: fits u32
      }
    }
  }
  const uniq = cand.subarray(0, nc).sort();
  let u = 0;
  for (let i = 0; i < nc; i++) if (u === 0 || uniq[i] !== uniq[u - 1]) uniq[u++] = uniq[i]!;
  const T2 = performance.now();

  // --- exact counts of the distinct candidates
  const A = new Uint32Array(u), B = new Uint32Array(u), C = new Uint32Array(u);
  let len = 0;
  for (let i = 0; i < u; i++) {
    const key = uniq[i]!;
    const a = Math.floor(key / ffn), bb = key - a * ffn;
    const c = pairCount(s, a, bb);
    if (c > 0) { A[len] = a; B[len] = bb; C[len] = c; len++; }
  }
  const T3 = performance.now();
  return {
    a: A.subarray(0, len), b: B.subarray(0, len), count: C.subarray(0, len), length: len, candidates: u, hashes,
    ms: { minhash: T1 - T0, candidates: T2 - T1, counts: T3 - T2 },
  };
}

/**
 * Fraction of each neuron's exact top-k neighbours (by count; ties at the k-th count all count as
 * top-k) that the approximate pairs contain, averaged over neurons with at least one co-active
 * neighbour. `exact` must hold every pair with count > 0.
 */
export function topKRecall(ffn: number, exact: PairCounts, approx: PairCounts, k: number): number {
  const nb: { j: number; c: number }[][] = Array.from({ length: ffn }, () => []);
  for (let e = 0; e < exact.length; e++) {
    nb[exact.a[e]!]!.push({ j: exact.b[e]!, c: exact.count[e]! });
    nb[exact.b[e]!]!.push({ j: exact.a[e]!, c: exact.count[e]! });
  }
  const have = new Set<number>();
  for (let e = 0; e < approx.length; e++) have.add(approx.a[e]! * ffn + approx.b[e]!);
  let sum = 0, neurons = 0;
  for (let i = 0; i < ffn; i++) {
    const L = nb[i]!;
    if (!L.length) continue;
    L.sort((x, y) => y.c - x.c);
    const kth = L[Math.min(k, L.length) - 1]!.c;
    const top = L.filter((x) => x.c >= kth);
    // the best k found among the tied top set: min(k, found) / min(k, |top|)
    const found = top.filter((x) => have.has(Math.min(i, x.j) * ffn + Math.max(i, x.j))).length;
    sum += Math.min(k, found) / Math.min(k, top.length);
    neurons++;
  }
  return neurons ? sum / neurons : 1;
}

/**
 * Reads per token if each token's active set were read from flash in placement order with no cache:
 * the number of maximal runs of consecutive placement positions, gaps of ≤ gap positions read
 * through (access collapse). Mean over the tokens of s. perm: placement position → neuron id.
 */
export function runsPerToken(s: ActiveSets, perm: ArrayLike<number>, gap = 0): number {
  const { n, ffn, nWords, byToken } = s;
  if (perm.length !== ffn) throw new CoactivationError(`perm has ${perm.length} entries for ${ffn} neurons`);
  let runs = 0;
  for (let t = 0; t < n; t++) {
    const to = t * nWords;
    let last = -Infinity;
    for (let p = 0; p < ffn; p++) {
      const id = perm[p]!;
      if (!(byToken[to + (id >>> 5)]! & (1 << (id & 31)))) continue;
      if (p - last - 1 > gap) runs++;
      last = p;
    }
  }
  return runs / n;
}
