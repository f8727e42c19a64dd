// Memory-management cost per token of the DRAM neuron matrix (src/flash/neuron-matrix.ts) and the
// read planner (src/flash/read-planner.ts): the "memory management" column of the paper's Table 3,
// for ONE layer (multiply by the layer count for a token). No I/O: appended rows are not written
// (the reads would write them), so the numbers are bookkeeping + the row copies of deletes.
//
// Workload: a 13824-neuron layer (13B llama), records of 16384 B (q8_0 [gate | up | down],
// dim 5120), capacity = all neurons (the window decides what stays). Per token ~`active` of the
// neurons are needed; churn is a per-neuron Markov chain: P(active | active before) = `stay`,
// P(active | inactive before) chosen so the stationary share is `active` (stay = active means
// independent tokens; real models sit in between: the paper reports strong token-to-token reuse).
// Per token: touch(needed) → evict(window) → planReads(missing) → append → commit.
//
// Usage: node dist/bench/neuron-matrix.js [--tokens 300] [--warmup 30] [--window 5] [--active 0.3]
//   [--stay 0.3,0.7,0.9] [--gap 0,3] [--nff 13824] [--record 16384] [--seed 1]
// Prints JSON.
import { NeuronMatrix, WindowPolicy, type ArenaLike } from '../src/flash/neuron-matrix.js';
import { invertPerm, planReads, rowIds } from '../src/flash/read-planner.js';
import { mulberry32 } from '../src/engine/sample.js';

const argv = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1]! : dflt;
};
const TOKENS = Number(opt('tokens', '300'));
const WARMUP = Number(opt('warmup', '30'));
const WINDOW = Number(opt('window', '5'));
const ACTIVE = Number(opt('active', '0.3'));
const STAYS = opt('stay', '0.3,0.7,0.9').split(',').map(Number);
const GAPS = opt('gap', '0,3').split(',').map(Number);
const NFF = Number(opt('nff', '13824'));
const RB = Number(opt('record', '16384'));
const SEED = Number(opt('seed', '1'));

/** Shared wasm memory like the kernels' arenas (no Compute needed: nothing runs on it here). */
function arenaOf(bytes: number): ArenaLike {
  const pages = Math.ceil(bytes / 65536) + 1;
  const mem = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
  let top = 65536;
  return {
    alloc: (b, a = 64) => { const off = Math.ceil(top / a) * a; top = off + b; return off; },
    u8: (off, len) => new Uint8Array(mem.buffer as unknown as SharedArrayBuffer, off, len),
  };
}

const median = (xs: number[]) => { const s = xs.slice().sort((a, b) => a - b); return s[s.length >> 1]!; };
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const r1 = (x: number) => Math.round(x * 10) / 10;

const arena = arenaOf(NFF * RB);
const perm = Int32Array.from({ length: NFF }, (_, i) => i);
const invPerm = invertPerm(perm);
const results = [];
let off: number | undefined; // one region reused by every configuration

for (const stay of STAYS) {
  for (const G of GAPS) {
    const m: NeuronMatrix = new NeuronMatrix(arena, { nFF: NFF, recordBytes: RB, capacity: NFF, policy: new WindowPolicy(WINDOW), ...(off !== undefined ? { off } : {}) });
    if (off === undefined) m.rows(0, NFF).fill(1); // fault the region in once: real rows were written by reads
    off = m.off;
    const scanBuf = new Int32Array(NFF);
    const rand = mulberry32(SEED);
    const enter = (ACTIVE * (1 - stay)) / (1 - ACTIVE); // P(inactive → active), keeps the share at ACTIVE
    const on = new Uint8Array(NFF);
    const needed = new Int32Array(NFF), miss = new Int32Array(NFF);
    const t = { scan: [] as number[], touch: [] as number[], evict: [] as number[], plan: [] as number[], append: [] as number[], total: [] as number[] };
    const c = { active: [] as number[], missing: [] as number[], evicted: [] as number[], moved: [] as number[], n: [] as number[], runs: [] as number[], gapRecords: [] as number[] };
    for (let tok = 0; tok < WARMUP + TOKENS; tok++) {
      let k = 0;
      for (let id = 0; id < NFF; id++) {
        on[id] = rand() < (on[id] ? stay : enter) ? 1 : 0;
        if (on[id]) needed[k++] = id;
      }
      const movedBefore = m.stats.moved;
      const s0 = performance.now();
      m.policy.victims(m, tok, scanBuf); // timed alone: the policy's scan over the resident rows (evict repeats it)
      const s1 = performance.now();
      const t0 = performance.now();
      const nMiss = m.touch(needed.subarray(0, k), tok, miss);
      const t1 = performance.now();
      const ev = m.evict(tok);
      const t2 = performance.now();
      const plan = planReads(miss.subarray(0, nMiss), { perm, invPerm, layerOffset: 0, recordBytes: RB, maxReadBytes: 1 << 20, collapseGap: G, rowOf: m.rowOf, baseRow: m.n, maxGapRecords: m.free - nMiss, align: 4096 });
      const t3 = performance.now();
      m.append(rowIds(plan, false), tok); // gap records: placeholders, deleted by commit (copies counted)
      m.commit();
      const t4 = performance.now();
      if (tok < WARMUP) continue;
      t.scan.push((s1 - s0) * 1000); t.touch.push((t1 - t0) * 1000); t.evict.push((t2 - t1) * 1000); t.plan.push((t3 - t2) * 1000);
      t.append.push((t4 - t3) * 1000); t.total.push((t4 - t0) * 1000);
      c.active.push(k); c.missing.push(nMiss); c.evicted.push(ev); c.moved.push(m.stats.moved - movedBefore); c.n.push(m.n);
      c.runs.push(plan.runs.length); c.gapRecords.push(plan.records - plan.needed);
    }
    const movedRows = mean(c.moved);
    results.push({
      stay, collapseGap: G,
      usPerTokenMedian: { total: r1(median(t.total)), touch: r1(median(t.touch)), evict: r1(median(t.evict)), evictScan: r1(median(t.scan)), plan: r1(median(t.plan)), appendCommit: r1(median(t.append)) },
      usPerTokenMean: r1(mean(t.total)), usPerTokenP90: r1(t.total.slice().sort((a, b) => a - b)[Math.floor(t.total.length * 0.9)]!),
      msPerToken40Layers: r1((median(t.total) * 40) / 1000) / 1,
      perToken: {
        active: Math.round(mean(c.active)), missing: Math.round(mean(c.missing)), evicted: Math.round(mean(c.evicted)),
        rowsMoved: Math.round(movedRows), mbCopied: r1((movedRows * RB) / 1e6), resident: Math.round(mean(c.n)),
        reads: Math.round(mean(c.runs)), gapRecords: Math.round(mean(c.gapRecords)),
      },
      copyGBpsMedian: r1((median(c.moved) * RB) / 1e9 / ((median(t.evict) - median(t.scan)) / 1e6)),
    });
  }
}

console.log(JSON.stringify({
  bench: 'neuron-matrix', node: process.version, nFF: NFF, recordBytes: RB, window: WINDOW, activeShare: ACTIVE,
  tokens: TOKENS, warmup: WARMUP, note: 'one layer; µs per token; no I/O (appended rows not written)', results,
}, null, 1));
