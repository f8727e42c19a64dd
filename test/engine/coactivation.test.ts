// Co-activation statistics and Ripple's greedy path (src/engine/coactivation.ts, place.ts): bitsets
// and counts against plain loops, the greedy path against a naive reference implementation, and the
// MinHash approximation's error against exact all-pair counts where those are affordable.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { activeSets, exactPairs, pairCount, runsPerToken, sketchPairs, topKRecall, type ActiveSets, type PairCounts } from '../../src/engine/coactivation.js';
import { greedyPath } from '../../src/engine/place.js';
import { mulberry32 } from '../../src/engine/sample.js';

/** Token-major codes [n × ffn] with planted clusters: cluster k fires at a token with probability
 * pk; a member is then active (code 200) with probability pIn, otherwise with probability pNoise. */
function plantedCodes(n: number, ffn: number, K: number, seed: number, pk = 0.1, pIn = 0.9, pNoise = 0.02): { code: Uint8Array; clusterOf: Int32Array } {
  const r = mulberry32(seed);
  const ids = Int32Array.from({ length: ffn }, (_, i) => i);
  for (let i = ffn - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); const x = ids[i]!; ids[i] = ids[j]!; ids[j] = x; }
  const clusterOf = new Int32Array(ffn);
  ids.forEach((id, q) => { clusterOf[id] = q % K; });
  const code = new Uint8Array(n * ffn);
  const fire = new Uint8Array(K);
  for (let t = 0; t < n; t++) {
    for (let k = 0; k < K; k++) fire[k] = r() < pk ? 1 : 0;
    for (let i = 0; i < ffn; i++) {
      const on = fire[clusterOf[i]!] ? r() < pIn : r() < pNoise;
      code[t * ffn + i] = on ? 150 + Math.floor(r() * 100) : Math.floor(r() * 150);
    }
  }
  return { code, clusterOf };
}

test('activeSets and pairCount equal plain loops over the codes', () => {
  const r = mulberry32(3);
  const n = 77, ffn = 45;
  const code = Uint8Array.from({ length: n * ffn }, () => Math.floor(r() * 256));
  const S = activeSets(code, ffn, 128, 5, 70);
  assert.equal(S.n, 65);
  const act = (t: number, i: number) => code[(5 + t) * ffn + i]! >= 128;
  for (let i = 0; i < ffn; i++) {
    let f = 0;
    for (let t = 0; t < S.n; t++) {
      const bit = (S.bits[i * S.words + (t >>> 5)]! >>> (t & 31)) & 1;
      const tb = (S.byToken[t * S.nWords + (i >>> 5)]! >>> (i & 31)) & 1;
      assert.equal(bit, act(t, i) ? 1 : 0);
      assert.equal(tb, bit);
      f += bit;
    }
    assert.equal(S.freq[i], f);
  }
  for (let a = 0; a < ffn; a += 7) {
    for (let b = 1; b < ffn; b += 5) {
      let c = 0;
      for (let t = 0; t < S.n; t++) if (act(t, a) && act(t, b)) c++;
      assert.equal(pairCount(S, a, b), c, `pair ${a},${b}`);
    }
  }
});

/** The textbook greedy path: edges by count desc (ties by a, b), accepted when both ends have degree
 * < 2 and the two are in different paths (explicit path lists), then paths by density, concatenated. */
function naiveGreedy(ffn: number, P: PairCounts, freq: ArrayLike<number>): number[] {
  const edges = Array.from({ length: P.length }, (_, e) => [P.a[e]!, P.b[e]!, P.count[e]!] as const)
    .sort((x, y) => y[2] - x[2] || x[0] - y[0] || x[1] - y[1]);
  let paths: number[][] = Array.from({ length: ffn }, (_, i) => [i]);
  for (const [i, j] of edges) {
    const pi = paths.find((p) => p[0] === i || p[p.length - 1] === i);
    const pj = paths.find((p) => p[0] === j || p[p.length - 1] === j);
    if (!pi || !pj || pi === pj) continue;
    if (pi.length > 1 && pi[0] === i && pi[pi.length - 1] !== i) pi.reverse(); // i at the end of pi
    if (pj[pj.length - 1] === j && pj[0] !== j) pj.reverse(); // j at the start of pj
    paths = paths.filter((p) => p !== pi && p !== pj);
    paths.push([...pi, ...pj]);
  }
  const dens = (p: number[]) => p.reduce((s, id) => s + Number(freq[id]!), 0) / p.length;
  // the same path may be walked from either end: normalise to the end with the smaller first id... the
  // implementation walks from its smallest-id end, so do that here
  const norm = paths.map((p) => (p[p.length - 1]! < p[0]! ? [...p].reverse() : p));
  norm.sort((x, y) => dens(y) - dens(x) || y.length - x.length || x[0]! - y[0]!);
  return norm.flat();
}

test('greedyPath = the naive greedy path (random weighted graphs), a permutation of simple paths', () => {
  for (let seed = 1; seed <= 30; seed++) {
    const r = mulberry32(seed);
    const ffn = 5 + Math.floor(r() * 40);
    const A: number[] = [], B: number[] = [], C: number[] = [];
    for (let a = 0; a < ffn; a++) for (let b = a + 1; b < ffn; b++) if (r() < 0.2) { A.push(a); B.push(b); C.push(1 + Math.floor(r() * 6)); }
    const P: PairCounts = { a: Uint32Array.from(A), b: Uint32Array.from(B), count: Uint32Array.from(C), length: A.length };
    const freq = Uint32Array.from({ length: ffn }, () => Math.floor(r() * 10));
    const g = greedyPath(ffn, P, freq);
    assert.deepEqual([...g.perm].sort((x, y) => x - y), Array.from({ length: ffn }, (_, i) => i));
    assert.deepEqual([...g.perm], naiveGreedy(ffn, P, freq), `seed ${seed}`);
    assert.equal(g.paths + g.linked, ffn);
  }
});

test('greedy path on exact counts puts each planted cluster in one contiguous run', () => {
  const ffn = 256, K = 16;
  const { code, clusterOf } = plantedCodes(800, ffn, K, 5);
  const S = activeSets(code, ffn, 150);
  const { perm } = greedyPath(ffn, exactPairs(S), S.freq);
  let breaks = 0; // adjacent positions in different clusters: K − 1 when every cluster is one run
  for (let p = 1; p < ffn; p++) if (clusterOf[perm[p]!] !== clusterOf[perm[p - 1]!]) breaks++;
  assert.equal(breaks, K - 1);
});

test('runsPerToken counts maximal placement runs (gaps ≤ G joined) like a plain scan', () => {
  const r = mulberry32(9);
  const n = 40, ffn = 70;
  const code = Uint8Array.from({ length: n * ffn }, () => (r() < 0.3 ? 200 : 10));
  const S = activeSets(code, ffn, 100);
  const perm = Int32Array.from({ length: ffn }, (_, i) => i).sort(() => r() - 0.5);
  for (const G of [0, 1, 3]) {
    let runs = 0;
    for (let t = 0; t < n; t++) {
      const pos = [];
      for (let p = 0; p < ffn; p++) if (code[t * ffn + perm[p]!]! >= 100) pos.push(p);
      for (let i = 0; i < pos.length; i++) if (i === 0 || pos[i]! - pos[i - 1]! - 1 > G) runs++;
    }
    assert.equal(runsPerToken(S, perm, G), runs / n);
  }
});

function compare(S: ActiveSets, H: ActiveSets, ffn: number, bands?: number) {
  const exact = exactPairs(S);
  const approx = sketchPairs(S, bands ? { bands } : {});
  const pe = greedyPath(ffn, exact, S.freq).perm;
  const pa = greedyPath(ffn, approx, S.freq).perm;
  const identity = Int32Array.from({ length: ffn }, (_, i) => i);
  return {
    recall8: topKRecall(ffn, exact, approx, 8), pairsExact: exact.length, pairsApprox: approx.length, candidates: approx.candidates,
    runsIdentity: runsPerToken(H, identity), runsExact: runsPerToken(H, pe), runsApprox: runsPerToken(H, pa),
  };
}

test('MinHash candidates: exact counts for what they find; top-8 recall and placement close to exact (planted clusters)', () => {
  const ffn = 1024, K = 32;
  const { code } = plantedCodes(2000, ffn, K, 11);
  const S = activeSets(code, ffn, 150, 0, 1800);
  const H = activeSets(code, ffn, 150, 1800, 2000);
  const approx = sketchPairs(S);
  for (let e = 0; e < approx.length; e += 97) assert.equal(approx.count[e], pairCount(S, approx.a[e]!, approx.b[e]!));
  const c = compare(S, H, ffn);
  console.log(`# planted 1024 neurons × 1800 tokens: ${JSON.stringify(c)}`);
  assert.ok(c.recall8 >= 0.9, `top-8 recall ${c.recall8}`);
  assert.ok(c.runsApprox <= c.runsExact * 1.1, `approx placement ${c.runsApprox} reads/token vs exact ${c.runsExact}`);
  assert.ok(c.runsApprox < c.runsIdentity / 3, `approx placement ${c.runsApprox} vs identity ${c.runsIdentity}`);
});

test('MinHash approximation on unstructured (independent) activity: measured, placement not worse than identity', () => {
  const ffn = 512;
  const r = mulberry32(17);
  const p = Float64Array.from({ length: ffn }, () => 0.02 + 0.5 * r() ** 2); // skewed neuron frequencies
  const n = 1500;
  const code = new Uint8Array(n * ffn);
  for (let t = 0; t < n; t++) for (let i = 0; i < ffn; i++) code[t * ffn + i] = r() < p[i]! ? 200 : 10;
  const S = activeSets(code, ffn, 100, 0, 1300);
  const H = activeSets(code, ffn, 100, 1300, n);
  const c = compare(S, H, ffn);
  console.log(`# independent 512 neurons × 1300 tokens: ${JSON.stringify(c)}`);
  assert.ok(c.runsApprox <= c.runsIdentity * 1.02, `approx ${c.runsApprox} vs identity ${c.runsIdentity}`);
  assert.ok(c.runsApprox <= c.runsExact * 1.1, `approx ${c.runsApprox} vs exact ${c.runsExact}`);
});
