// readSummary (src/flash/neuron-source.ts): the read figures per token that `flashlm run --stats`
// and the benches report (Ripple's metrics: reads and runs per token, mean read length in records
// and bytes, raw and effective bandwidth, gap records). Every expected value here is derived
// independently of readSummary and of the source's own counters: from a counting readFn (the
// DirectReader seam, test/flash/faulty-disk.ts) that sees every read call (position, length, bytes
// returned), from the reader's own totals (its summed read() wall time), and from hand-computed
// constants of a fixed read pattern. Two levels:
//   - MatrixNeuronSource over a file of known records, fed a fixed set of ids (every other pair of
//     placement positions under a shuffled placement), window 0 so every token reads the same
//     pattern; with and without access collapse, with a read cap, with the stream buffer, and with
//     injected short reads (the reader's continuations are reads, not runs);
//   - the engine (Model.load, sparse mode) on a tiny synth flash model: predictor 'all', and a fixed
//     predicted set with collapse (the predictor swapped for a stub), against the same counters.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DirectReader, type ReadFn } from '../../src/flash/io.js';
import { MatrixNeuronSource, readSummary, type ReadSummary } from '../../src/flash/neuron-source.js';
import { invertPerm } from '../../src/flash/read-planner.js';
import { argmax, mulberry32 } from '../../src/engine/sample.js';
import { Model } from '../../src/engine/model.js';
import type { Arena } from '../../src/kernels/index.js';
import type { Predictor } from '../../src/model/sparse.js';
import type { SynthOptions } from '../../src/engine/synth.js';
import { flashLayoutCached, testDir } from '../helpers.js';
import { FaultyDisk } from './faulty-disk.js';

/** A counting stand-in for fs.read: every call's position and length, and the bytes it returned. */
class CountingDisk {
  calls: { pos: number; len: number; n: number }[] = [];
  /** inner: the read to count (default fs.read; a FaultyDisk's readFn to count what it delivers) */
  constructor(private readonly inner: ReadFn = fs.read as unknown as ReadFn) {}
  readonly readFn: ReadFn = (fd, buf, off, len, pos, cb) => {
    this.inner(fd, buf, off, len, pos, (e, n) => {
      if (!e) this.calls.push({ pos, len, n });
      cb(e, n);
    });
  };
  /** forget what was counted so far (the reader's probe read at open) */
  reset(): void {
    this.calls = [];
  }
  get reads(): number {
    return this.calls.length;
  }
  get bytes(): number {
    return this.calls.reduce((s, c) => s + c.n, 0);
  }
}

/** What readSummary must say, from counts made outside the source. */
interface Independent {
  reads: number; // read calls
  runs?: number; // planned runs (default: one read each)
  bytes: number; // bytes returned by them
  records: number; // records those bytes hold (gap records included)
  gapRecords: number; // records read that were not needed
  readMs: number; // the reader's summed read() wall time
  tokens: number;
}

function expected(x: Independent, recordBytes: number): ReadSummary {
  const needBytes = (x.records - x.gapRecords) * recordBytes;
  return {
    reads_per_token: x.reads / x.tokens,
    runs_per_token: (x.runs ?? x.reads) / x.tokens,
    mean_read_records: x.records / x.reads,
    mean_read_bytes: x.bytes / x.reads,
    bandwidth_mbps: x.bytes / (x.readMs * 1000),
    effective_mbps: needBytes / (x.readMs * 1000),
    io_ms_per_token: x.readMs / x.tokens,
    bytes_per_token: x.bytes / x.tokens,
    gap_records_per_token: x.gapRecords / x.tokens,
  };
}

const close = (a: number, b: number, what: string) => {
  assert.ok(Number.isFinite(a) && Number.isFinite(b), `${what}: ${a} vs ${b}`);
  assert.ok(Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b)), `${what}: readSummary says ${a}, expected ${b}`);
};

function assertSummary(got: ReadSummary, want: ReadSummary, label: string): void {
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), `${label}: fields`);
  for (const k of Object.keys(want) as (keyof ReadSummary)[]) close(got[k], want[k], `${label}: ${k}`);
  // raw bandwidth counts every byte read, effective only the needed records' bytes
  assert.ok(got.bandwidth_mbps > 0 && got.effective_mbps > 0, `${label}: bandwidths ${got.bandwidth_mbps}, ${got.effective_mbps}`);
  if (got.gap_records_per_token > 0) assert.ok(got.bandwidth_mbps > got.effective_mbps, `${label}: raw ${got.bandwidth_mbps} ≤ effective ${got.effective_mbps} with gap records`);
  else close(got.bandwidth_mbps, got.effective_mbps, `${label}: raw = effective without gap records`);
  // the two bandwidths and the mean read length are one picture: raw/effective = records/needed
  close(got.bandwidth_mbps / got.effective_mbps, got.mean_read_records * got.reads_per_token / (got.mean_read_records * got.reads_per_token - got.gap_records_per_token), `${label}: raw/effective`);
}

// ---------------------------------------------------------------------------------------------
// MatrixNeuronSource over a file of known records

const RB = 512; // record bytes
const NFF = 64; // records per layer
const LAYERS = 2;
const HEADER = 4096; // the layers start here
const TOKENS = 3;

/** A page-aligned arena over its own WebAssembly.Memory (what the matrices and O_DIRECT need). */
function fakeArena(bytes: number): Arena {
  const mem = new WebAssembly.Memory({ initial: Math.ceil((bytes + 2 * 65536) / 65536) });
  let top = 65536;
  return {
    alloc(b: number, a = 64) { const off = Math.ceil(top / a) * a; top = off + b; return off; },
    u8: (off: number, len: number) => new Uint8Array(mem.buffer, off, len),
  } as unknown as Arena;
}

/** Records: bytes [0, 8) of the record at placement position p of layer l hold (l, p), the rest l·64+p+1. */
function recordsFile(): string {
  const path = join(testDir('read-summary'), 'records.bin');
  const b = Buffer.alloc(HEADER + LAYERS * NFF * RB);
  for (let l = 0; l < LAYERS; l++) {
    for (let p = 0; p < NFF; p++) {
      const o = HEADER + (l * NFF + p) * RB;
      b.fill((l * 64 + p + 1) & 255, o, o + RB); // never an all-zero record
      b.writeInt32LE(l, o);
      b.writeInt32LE(p, o + 4);
    }
  }
  fs.writeFileSync(path, b);
  return path;
}

// a shuffled placement per layer, so ids and file positions differ
const perms = Array.from({ length: LAYERS }, (_, l) => {
  const r = mulberry32(77 + l);
  const perm = Int32Array.from({ length: NFF }, (_, i) => i);
  for (let i = NFF - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); [perm[i], perm[j]] = [perm[j]!, perm[i]!]; }
  return perm;
});
// the fixed pattern: placement positions p with p mod 4 ∈ {0, 1} → 16 runs of 2 records, gaps of 2
const PATTERN = Array.from({ length: NFF }, (_, p) => p).filter((p) => p % 4 < 2);

interface Scenario {
  name: string;
  collapseGap: number;
  maxReadBytes: number;
  capacity: number;
  streamRows?: number;
  /** every third read call of more than one record returns one record only (FaultyDisk): the
   * reader continues it with another read call, so reads exceed the planned runs */
  short?: boolean;
  /** ids handed to ensure() in ascending id order (as the predictors give them), not position order:
   * the split between matrix and stream chunks must still follow file order */
  idOrder?: boolean;
  /** hand-computed per token: reads (= planned runs without short reads), records per read (mean), gap records */
  reads: number;
  meanRecords: number;
  gap: number;
}

const scenarios: Scenario[] = [
  // 2 layers × 16 runs of 2 records
  { name: 'no collapse', collapseGap: 0, maxReadBytes: 65536, capacity: NFF, reads: 32, meanRecords: 2, gap: 0 },
  // gaps are 2 records: a threshold of 1 collapses nothing
  { name: 'collapse 1 (below the gaps)', collapseGap: 1, maxReadBytes: 65536, capacity: NFF, reads: 32, meanRecords: 2, gap: 0 },
  // one read per layer through positions 0..61: 62 records, 32 needed, 30 gap
  { name: 'collapse 2', collapseGap: 2, maxReadBytes: 65536, capacity: NFF, reads: 2, meanRecords: 62, gap: 60 },
  // reads capped at 16 records: [0,14) [16,30) [32,46) [48,62) per layer, 8 needed + 6 gap each
  { name: 'collapse 2, reads ≤ 16 records', collapseGap: 2, maxReadBytes: 8192, capacity: NFF, reads: 8, meanRecords: 14, gap: 48 },
  // 8 rows: the matrix takes positions 0,1,4,5,8,9,12,13 (4 reads), 24 ids stream in chunks of 8 (12 reads)
  { name: 'stream buffer, no collapse', collapseGap: 0, maxReadBytes: 65536, capacity: 8, streamRows: 8, reads: 32, meanRecords: 2, gap: 0 },
  // matrix full (no room for gaps): 4 reads of 2; chunks within 8 positions of their first: 6 chunks
  // of one read through 6 records (4 needed, 2 gap) per layer → 10 reads, 44 records, 12 gap
  { name: 'stream buffer, collapse 2', collapseGap: 2, maxReadBytes: 65536, capacity: 8, streamRows: 8, reads: 20, meanRecords: 44 / 10, gap: 24 },
  // the two stream cases again with the ids in id order (shuffled placement): same reads as in file order
  { name: 'stream buffer, no collapse, ids in id order', collapseGap: 0, maxReadBytes: 65536, capacity: 8, streamRows: 8, idOrder: true, reads: 32, meanRecords: 2, gap: 0 },
  { name: 'stream buffer, collapse 2, ids in id order', collapseGap: 2, maxReadBytes: 65536, capacity: 8, streamRows: 8, idOrder: true, reads: 20, meanRecords: 44 / 10, gap: 24 },
  // as 'collapse 2' (2 planned runs of 62 records per token), with continuations of short reads
  { name: 'collapse 2, short reads continued', collapseGap: 2, maxReadBytes: 65536, capacity: NFF, short: true, reads: 2, meanRecords: 62, gap: 60 },
];

for (const sc of scenarios) {
  test(`readSummary = independent counts: MatrixNeuronSource, fixed pattern, ${sc.name}`, async () => {
    const path = recordsFile();
    const faulty = new FaultyDisk();
    const disk = new CountingDisk(sc.short ? faulty.readFn : undefined);
    const reader = await DirectReader.open(path, { readFn: disk.readFn, align: 512, maxReadBytes: sc.maxReadBytes, inFlight: 8 });
    try {
      disk.reset(); // the probe read at open is not the source's
      if (sc.short) faulty.arm((i, c) => (i % 3 === 0 && c.len > RB ? { short: RB } : undefined));
      const sr = sc.streamRows ?? 0;
      const arena = fakeArena(LAYERS * (sc.capacity + 2 * sr) * RB + 3 * 8192);
      const layers = perms.map((perm, l) => ({
        arena, perm, fileOffset: HEADER + l * NFF * RB,
        matrixOff: arena.alloc(sc.capacity * RB, 4096),
        ...(sr ? { streamOff: arena.alloc(2 * sr * RB, 4096) } : {}),
      }));
      const src = new MatrixNeuronSource(reader, layers, {
        nFF: NFF, recordBytes: RB, capacity: sc.capacity, window: 0, collapseGap: sc.collapseGap, maxReadBytes: sc.maxReadBytes, streamRows: sr,
      });
      const want = perms.map((perm) => Int32Array.from(PATTERN, (p) => perm[p]!)); // ids, in position order
      if (sc.idOrder) for (const w of want) w.sort();
      for (let t = 0; t < TOKENS; t++) {
        for (let l = 0; l < LAYERS; l++) {
          const inv = invertPerm(perms[l]!);
          const got = new Set<number>();
          // every row served holds its own record (the reads landed where the bookkeeping says)
          const m = src.matrices[l]!;
          let rows = await src.ensure(l, want[l]!, want[l]!.length, t);
          for (let r = 0; r < rows.n; r++) {
            const id = m.ids[r]!;
            const rec = arena.u8(rows.off + r * RB, 8);
            const v = new DataView(rec.buffer, rec.byteOffset, 8);
            assert.deepEqual([v.getInt32(0, true), v.getInt32(4, true)], [l, inv[id]!], `token ${t} layer ${l} row ${r}`);
            got.add(id);
          }
          for (;;) {
            rows = await src.next(l);
            if (rows.n === 0) break;
            // streamed chunks: needed records hold their record, gap records are zeroed
            for (let r = 0; r < rows.n; r++) {
              const v = new DataView(arena.u8(rows.off + r * RB, 8).buffer, rows.off + r * RB, 8);
              const [ll, p] = [v.getInt32(0, true), v.getInt32(4, true)];
              if (ll === 0 && p === 0 && arena.u8(rows.off + r * RB, RB).every((b) => b === 0)) continue;
              assert.equal(ll, l);
              got.add(perms[l]![p]!);
            }
          }
          for (const id of want[l]!) assert.ok(got.has(id), `token ${t} layer ${l}: neuron ${id} not served`);
          m.check();
        }
      }
      // independent counts: every call the reader made, and which of the records it covered were needed
      const needed = new Set(PATTERN);
      let records = 0, gapRecords = 0;
      for (const c of disk.calls) {
        if (!sc.short) assert.equal(c.n, c.len, 'no short reads');
        assert.equal(c.n % RB, 0);
        assert.equal((c.pos - HEADER) % RB, 0);
        const first = (c.pos - HEADER) / RB;
        const l = Math.floor(first / NFF);
        for (let i = 0; i < c.n / RB; i++) {
          const q = first + i;
          assert.equal(Math.floor(q / NFF), l, 'a read never crosses into the next layer');
          records++;
          if (!needed.has(q % NFF)) gapRecords++;
        }
      }
      const x: Independent = { reads: disk.reads, bytes: disk.bytes, records, gapRecords, readMs: reader.totals.wallMs, tokens: TOKENS };
      assert.equal(records, x.bytes / RB);
      if (sc.short) {
        const shorts = faulty.count('short');
        assert.ok(shorts > 0, 'short reads injected');
        assert.equal(disk.reads, TOKENS * sc.reads + shorts, 'one continuation read per short read');
        x.runs = TOKENS * sc.reads;
      }
      assertSummary(readSummary(src.stats, RB, TOKENS), expected(x, RB), sc.name);
      // and the hand-computed pattern
      const s = readSummary(src.stats, RB, TOKENS);
      close(s.runs_per_token, sc.reads, 'runs per token (pattern)');
      close(s.reads_per_token, x.reads / TOKENS, 'reads per token (calls)');
      close(s.mean_read_records * s.reads_per_token, sc.meanRecords * sc.reads, 'records per token (pattern)');
      close(s.mean_read_bytes * s.reads_per_token, sc.meanRecords * sc.reads * RB, 'bytes per token (pattern)');
      if (!sc.short) {
        close(s.reads_per_token, sc.reads, 'reads per token (pattern)');
        close(s.mean_read_records, sc.meanRecords, 'mean read records (pattern)');
        close(s.mean_read_bytes, sc.meanRecords * RB, 'mean read bytes (pattern)');
      }
      close(s.gap_records_per_token, sc.gap, 'gap records per token (pattern)');
      if (sc.collapseGap === 0) assert.equal(src.stats.gapRecords, 0, 'gap records only with collapse');
      // every needed record was read once per token (window 0): needed bytes per token
      close(s.effective_mbps * s.io_ms_per_token * 1000, LAYERS * PATTERN.length * RB, 'effective MB/s × read ms = needed bytes per token');
    } finally {
      await reader.close();
    }
  });
}

test('readSummary: a resident record inside a collapsed read is a gap record too (read only for the collapse)', async () => {
  const path = recordsFile();
  const disk = new CountingDisk();
  const reader = await DirectReader.open(path, { readFn: disk.readFn, align: 512, inFlight: 8 });
  try {
    disk.reset();
    const arena = fakeArena(LAYERS * NFF * RB + 3 * 8192);
    const layers = perms.map((perm, l) => ({ arena, perm, fileOffset: HEADER + l * NFF * RB, matrixOff: arena.alloc(NFF * RB, 4096) }));
    const src = new MatrixNeuronSource(reader, layers, { nFF: NFF, recordBytes: RB, capacity: NFF, window: 5, collapseGap: 2, maxReadBytes: 1 << 20 });
    const perm = perms[0]!;
    const ids = (ps: number[]) => Int32Array.from(ps, (p) => perm[p]!);
    // token 0: position 2 alone; token 1: positions 0, 1, 4, 5 → one read through 0..5, whose gap
    // holds position 2 (resident: read into a placeholder row, dropped) and position 3 (new: kept)
    await src.ensure(0, ids([2]), 1, 0);
    await src.ensure(0, ids([0, 1, 4, 5]), 4, 1);
    assert.deepEqual(disk.calls.map((c) => [(c.pos - HEADER) / RB, c.len / RB]), [[2, 1], [0, 6]]);
    const m = src.matrices[0]!;
    m.check();
    assert.deepEqual([...m.ids.subarray(0, m.n)].map((id) => invertPerm(perm)[id]).sort((a, b) => a! - b!), [0, 1, 2, 3, 4, 5]);
    // independent: 2 reads, 7 records, of which 2 (positions 2 and 3 of the second read) not asked for
    const x: Independent = { reads: 2, bytes: disk.bytes, records: 7, gapRecords: 2, readMs: reader.totals.wallMs, tokens: 2 };
    assert.equal(disk.bytes, 7 * RB);
    const s = readSummary(src.stats, RB, 2);
    assertSummary(s, expected(x, RB), 'resident gap record');
    close(s.gap_records_per_token, 1, 'gap records per token');
    close(s.mean_read_records, 3.5, 'mean read records');
  } finally {
    await reader.close();
  }
});

test('readSummary edge cases: no reads and no tokens give zeros, not NaN or Infinity', () => {
  const zero = { bytes: 0, reads: 0, runs: 0, records: 0, needed: 0, hits: 0, gapRecords: 0, overflow: 0, streamed: 0, ioMs: 0, mmMs: 0, movedBytes: 0 };
  const s = readSummary(zero, 512, 0);
  for (const [k, v] of Object.entries(s)) assert.equal(v, 0, k);
  // tokens 0 with reads counts as one token; ioMs 0 gives 0 MB/s, not Infinity
  const t = readSummary({ ...zero, reads: 4, runs: 4, records: 8, bytes: 4096 }, 512, 0);
  assert.equal(t.reads_per_token, 4);
  assert.equal(t.mean_read_records, 2);
  assert.equal(t.bandwidth_mbps, 0);
});

// ---------------------------------------------------------------------------------------------
// The engine: Model.load in sparse mode on a tiny synth flash model

const o: SynthOptions = { layers: 3, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 128, dtype: 'f32', act: 'silu', seed: 21, format: 'gguf' };
const prompt = [1, 300, 301, 302, 303];
const steps = 4;

type WithReader = { reader: DirectReader };

async function engineRun(predict: Predictor | undefined, collapseGap: number): Promise<{ s: ReadSummary; x: Independent; rb: number; computed: number }> {
  const path = await flashLayoutCached(o, 'q8_0');
  const disk = new CountingDisk();
  // window 0: every pass reads its predicted records again; 16 KiB reads (32 records of 512 B)
  const m = await Model.load(path, {
    ctx: 16, mode: 'sparse', predictor: 'all', window: 0, collapseGap, neuronCapacity: o.ffn, inFlight: 8, maxReadBytes: 16384, readFn: disk.readFn, threads: 1,
  });
  try {
    disk.reset();
    if (predict) m.sparse!.pred = predict;
    const reader = (m as unknown as WithReader).reader;
    const wall0 = reader.totals.wallMs; // the probe read is not a read() call, but be safe
    let l = await m.prefillAsync(prompt);
    for (let i = 0; i < steps; i++) l = await m.decodeAsync(argmax(l));
    const tokens = m.times.prefilled + m.times.decoded;
    assert.equal(tokens, prompt.length + steps);
    const z = m.sparse!;
    const rb = z.src.recordBytes;
    let records = 0;
    for (const c of disk.calls) { assert.equal(c.n, c.len); records += c.len / rb; }
    // window 0: everything predicted is missing, read once per pass; the rest of what was read is gap
    const gapRecords = records - z.stats.predicted;
    return {
      s: readSummary(z.src.stats, rb, tokens),
      x: { reads: disk.reads, bytes: disk.bytes, records, gapRecords, readMs: reader.totals.wallMs - wall0, tokens },
      rb, computed: z.stats.computed / tokens,
    };
  } finally {
    await m.close();
  }
}

test('readSummary = independent counts: engine, sparse mode, every neuron predicted, window 0', async () => {
  const r = await engineRun(undefined, 0);
  assertSummary(r.s, expected(r.x, r.rb), 'engine, predictor all');
  // the pattern: per pass, 3 layers × 192 records in reads of 32 records (16 KiB)
  assert.equal(r.rb, 512);
  close(r.s.reads_per_token, 3 * 192 / 32, 'reads per token');
  close(r.s.mean_read_records, 32, 'mean read records');
  close(r.s.mean_read_bytes, 16384, 'mean read bytes');
  close(r.s.bytes_per_token, 3 * 192 * 512, 'bytes per token');
  assert.equal(r.s.gap_records_per_token, 0);
});

test('readSummary = independent counts: engine, fixed predicted set with gaps, collapse 0 vs 2', async () => {
  // neurons i with i mod 4 ∈ {0, 1} (identity placement: runs of 2, gaps of 2)
  const fixed: Predictor = {
    predict(_c, _l, _s, out, max) {
      let k = 0;
      for (let i = 0; i < o.ffn! && k < max; i++) if (i % 4 < 2) out[k++] = i;
      return k;
    },
  };
  const off = await engineRun(fixed, 0);
  assertSummary(off.s, expected(off.x, off.rb), 'engine, fixed set, collapse 0');
  close(off.s.reads_per_token, 3 * 48, 'reads per token, collapse 0: 48 runs of 2 per layer');
  close(off.s.mean_read_records, 2, 'mean read records, collapse 0');
  assert.equal(off.s.gap_records_per_token, 0, 'no gap records without collapse');
  assert.equal(off.computed, 3 * 96, 'only the predicted rows are computed');
  const on = await engineRun(fixed, 2);
  assertSummary(on.s, expected(on.x, on.rb), 'engine, fixed set, collapse 2');
  // greedy runs of ≤ 32 records: [0,30) [32,62) … [160,190): 6 reads of 30 records (16 needed) per layer
  close(on.s.reads_per_token, 3 * 6, 'reads per token, collapse 2');
  close(on.s.mean_read_records, 30, 'mean read records, collapse 2');
  close(on.s.mean_read_bytes, 30 * 512, 'mean read bytes, collapse 2');
  close(on.s.gap_records_per_token, 3 * 6 * 14, 'gap records per token, collapse 2');
  close(on.s.bandwidth_mbps / on.s.effective_mbps, 30 / 16, 'raw / effective = records / needed');
  // the same needed bytes either way
  close(on.s.effective_mbps * on.s.io_ms_per_token, off.s.effective_mbps * off.s.io_ms_per_token, 'needed bytes per token');
});
