// Read planner: ids → file runs (placement order, maxReadBytes, access collapse), checked against
// hand-worked cases, an independent minimum-reads DP, and real reads into a NeuronMatrix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { collapseThreshold, CPU_MS_PER_READ, GAP_NEW, GAP_RESIDENT, invertPerm, planReads, readRequestsFor, ReadPlanError, rowIds, type PlanOptions, type ReadPlan } from '../../src/flash/read-planner.js';
import { NeuronMatrix, type ArenaLike } from '../../src/flash/neuron-matrix.js';
import { DirectReader } from '../../src/flash/io.js';
import { costMs, type DiskCell, type DiskProfile } from '../../src/flash/profile.js';
import { mulberry32 } from '../../src/engine/sample.js';
import { testDir } from '../helpers.js';

const identity = (n: number) => Int32Array.from({ length: n }, (_, i) => i);

function opts(n: number, o: Partial<PlanOptions> = {}, perm: ArrayLike<number> = identity(n)): PlanOptions {
  return { perm, invPerm: invertPerm(perm), layerOffset: 1 << 20, recordBytes: 1024, maxReadBytes: 1 << 20, ...o };
}

const shape = (p: ReadPlan) => p.runs.map((r) => [r.filePos, r.count, r.firstRow]);

function shuffle(rand: () => number, n: number): Int32Array {
  const a = identity(n);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

test('identity perm: runs of consecutive ids, rows consecutive from baseRow, sorted or not, duplicates once', () => {
  const o = opts(20, { baseRow: 7 });
  const p = planReads([0, 1, 2, 5, 6, 9], o);
  assert.deepEqual(shape(p), [[0, 3, 7], [5, 2, 10], [9, 1, 12]]);
  assert.deepEqual([...p.ids], [0, 1, 2, 5, 6, 9]);
  assert.deepEqual([p.needed, p.records, p.bytes, p.gapIds.length], [6, 6, 6 * 1024, 0]);
  assert.deepEqual(p.runs.map((r) => r.fileOffset), [(1 << 20) + 0, (1 << 20) + 5 * 1024, (1 << 20) + 9 * 1024]);
  assert.deepEqual(planReads([9, 6, 2, 0, 5, 1, 6, 9], o), p);
  const empty = planReads([], o);
  assert.deepEqual([empty.runs.length, empty.records, empty.bytes], [0, 0, 0]);
});

test('runs split at maxReadBytes', () => {
  const ids = Array.from({ length: 10 }, (_, i) => i + 3);
  const p = planReads(ids, opts(20, { maxReadBytes: 4 * 1024 + 1000 })); // 4 records fit
  assert.deepEqual(shape(p), [[3, 4, 0], [7, 4, 4], [11, 2, 8]]);
  for (const r of p.runs) assert.ok(r.bytes <= 4 * 1024 + 1000);
  assert.deepEqual(shape(planReads(ids, opts(20, { maxReadBytes: 1024 }))).length, 10);
  assert.throws(() => planReads(ids, opts(20, { maxReadBytes: 1023 })), ReadPlanError);
});

test('gaps collapsed exactly up to the threshold G', () => {
  for (let G = 0; G <= 4; G++) {
    for (let g = 1; g <= 6; g++) {
      const p = planReads([2, 3 + g], opts(20, { collapseGap: G }));
      if (g <= G) {
        assert.deepEqual(shape(p), [[2, g + 2, 0]], `G ${G} gap ${g}`);
        assert.deepEqual([...p.gap], [0, ...Array(g).fill(1), 0]);
        assert.deepEqual([...p.gapIds], Array.from({ length: g }, (_, i) => 3 + i));
        assert.deepEqual([p.needed, p.records], [2, g + 2]);
      } else {
        assert.deepEqual(shape(p), [[2, 1, 0], [3 + g, 1, 1]], `G ${G} gap ${g}`);
      }
    }
  }
});

test('collapse respects maxReadBytes and the gap budget', () => {
  // needed 0, 3, 6, 9 with gaps of 2: G = 2 collapses, but only 5 records fit in a read
  const p = planReads([0, 3, 6, 9], opts(20, { collapseGap: 2, maxReadBytes: 5 * 1024 }));
  assert.deepEqual(shape(p), [[0, 4, 0], [6, 4, 4]]);
  // budget of 3 gap records: the first gap (2) fits, the second would need 4 in all
  const q = planReads([0, 3, 6, 9], opts(20, { collapseGap: 2, maxGapRecords: 3 }));
  assert.deepEqual(shape(q), [[0, 4, 0], [6, 1, 4], [9, 1, 5]]);
  assert.equal(q.gapIds.length, 2);
});

test('resident gap records: marked GAP_RESIDENT, placeholders in rowIds; a resident missing id is an error', () => {
  const rowOf = new Int32Array(20).fill(-1);
  rowOf[4] = 0; // id 4 resident
  const p = planReads([2, 6], opts(20, { collapseGap: 3, rowOf }));
  assert.deepEqual(shape(p), [[2, 5, 0]]);
  assert.deepEqual([...p.gap], [0, GAP_NEW, GAP_RESIDENT, GAP_NEW, 0]);
  assert.deepEqual([...p.gapIds], [3, 5]);
  assert.equal(p.residentGap, 1);
  assert.deepEqual([...rowIds(p, true)], [2, 3, -1, 5, 6]);
  assert.deepEqual([...rowIds(p, false)], [2, -1, -1, -1, 6]);
  assert.throws(() => planReads([4], opts(20, { rowOf })), /missing id 4 is resident/);
});

test('permutation respected: runs follow placement order and name the right ids', () => {
  const n = 64;
  const perm = shuffle(mulberry32(5), n); // perm[p] = id at position p
  const o = opts(n, { collapseGap: 1 }, perm);
  const want = [perm[10]!, perm[11]!, perm[13]!, perm[40]!];
  const p = planReads([want[3]!, want[0]!, want[2]!, want[1]!], o);
  assert.deepEqual(shape(p), [[10, 4, 0], [40, 1, 4]]);
  assert.deepEqual([...p.ids], [perm[10], perm[11], perm[12], perm[13], perm[40]]);
  assert.deepEqual([...p.gapIds], [perm[12]]);
  assert.deepEqual(p.runs.map((r) => r.fileOffset), [(1 << 20) + 10 * 1024, (1 << 20) + 40 * 1024]);
});

/** Fewest reads covering the sorted positions, by DP (independent of the greedy). */
function minReads(pos: number[], G: number, maxRec: number): number {
  const dp = new Array(pos.length + 1).fill(Infinity);
  dp[0] = 0;
  for (let i = 1; i <= pos.length; i++) {
    for (let j = i - 1; j >= 0; j--) { // one read covers pos[j..i-1]
      if (pos[i - 1]! - pos[j]! + 1 > maxRec) break;
      if (j < i - 1 && pos[j + 1]! - pos[j]! - 1 > G) break;
      dp[i] = Math.min(dp[i], dp[j] + 1);
    }
  }
  return dp[pos.length];
}

test('random plans: every needed id once, gaps ≤ G, reads ≤ max, aligned, fewest reads (DP)', () => {
  const rand = mulberry32(2024);
  for (let iter = 0; iter < 400; iter++) {
    const n = 1 + Math.floor(rand() * 300);
    const perm = rand() < 0.5 ? identity(n) : shuffle(rand, n);
    const G = Math.floor(rand() * 5);
    const maxRec = 1 + Math.floor(rand() * 12);
    const rb = 512 * (1 + Math.floor(rand() * 4));
    const density = rand();
    const missing: number[] = [];
    for (let id = 0; id < n; id++) if (rand() < density) missing.push(id);
    if (rand() < 0.3) missing.push(...missing.slice(0, 3)); // duplicates
    missing.sort(() => rand() - 0.5);
    const baseRow = Math.floor(rand() * 50);
    const o = opts(n, { collapseGap: G, maxReadBytes: maxRec * rb + Math.floor(rand() * rb), recordBytes: rb, baseRow, layerOffset: 4096 * 3 }, perm);
    const p = planReads(missing, o);
    const what = `iter ${iter} (n ${n} G ${G} maxRec ${maxRec})`;
    const need = new Set(missing);
    const inv = invertPerm(perm);
    assert.equal(p.needed, need.size);
    let row = 0, prevEnd = -1;
    const seen = new Set<number>();
    for (const r of p.runs) {
      assert.equal(r.firstRow, baseRow + row, what);
      assert.ok(r.count >= 1 && r.count <= maxRec, what);
      assert.ok(r.filePos > prevEnd, `${what}: runs ascending and disjoint`);
      assert.equal(r.fileOffset, o.layerOffset + r.filePos * rb);
      assert.equal(r.fileOffset % 512, 0);
      assert.equal(r.bytes % 512, 0);
      assert.equal(r.bytes, r.count * rb);
      assert.ok(need.has(perm[r.filePos]!) && need.has(perm[r.filePos + r.count - 1]!), `${what}: run starts and ends needed`);
      let gapLen = 0;
      for (let i = 0; i < r.count; i++, row++) {
        const id = p.ids[row - 0]!;
        assert.equal(id, perm[r.filePos + i], `${what}: row ${row} holds the record at its position`);
        assert.equal(inv[id], r.filePos + i);
        assert.equal(p.gap[row], need.has(id) ? 0 : 1);
        assert.ok(!seen.has(id));
        seen.add(id);
        gapLen = need.has(id) ? 0 : gapLen + 1;
        assert.ok(gapLen <= G, `${what}: gap longer than G`);
      }
      prevEnd = r.filePos + r.count - 1;
    }
    assert.equal(row, p.records);
    for (const id of need) assert.ok(seen.has(id), `${what}: id ${id} not read`);
    assert.deepEqual([...p.gapIds], [...p.ids].filter((_, i) => p.gap[i]));
    const pos = [...need].map((id) => inv[id]!).sort((a, b) => a - b);
    assert.equal(p.runs.length, minReads(pos, G, maxRec), `${what}: fewest reads`);
  }
});

test('errors: alignment, bad ids, bad permutation', () => {
  assert.throws(() => planReads([0], opts(8, { recordBytes: 1536, align: 4096 })), /not a positive multiple of the 4096-byte/);
  assert.throws(() => planReads([0], opts(8, { layerOffset: 100 })), /layer offset 100/);
  assert.throws(() => planReads([8], opts(8)), /missing id 8 outside/);
  assert.throws(() => planReads([0], opts(8, { collapseGap: -1 })), ReadPlanError);
  assert.throws(() => invertPerm([0, 1, 1]), /not a permutation/);
  const bad = { ...opts(4), invPerm: Int32Array.from([1, 0, 2, 3]) };
  assert.throws(() => planReads([0], bad), (e: unknown) => e instanceof ReadPlanError && e.name === 'ReadPlanError' && /does not invert/.test(e.message));
});

function profile(cells: Omit<DiskCell, 'reads' | 'bytes' | 'ms'>[]): DiskProfile {
  return {
    version: 1, created: '', path: '', device: '0:0', fileBytes: 0, direct: true, trustworthy: true, warnings: [],
    ioUring: true, threadpoolSize: 4, secondsPerCell: 1,
    cells: cells.map((c) => ({ ...c, reads: 1, bytes: 1, ms: 1 })),
  };
}
const SIZES = [4, 8, 16, 32, 64, 128, 256, 512, 1024].map((k) => k << 10);

test('collapseThreshold: 0 when bandwidth-bound, large when IOPS-bound, the cost rule exactly at the edge', () => {
  const dev = { cpuMsPerRead: 0 }; // device time only
  const bw = profile(SIZES.map((s) => ({ chunkBytes: s, inFlight: 16, mbps: 1000, iops: 1e9 / s })));
  assert.equal(collapseThreshold(bw, 16384, dev), 0);
  const iops = profile(SIZES.map((s) => ({ chunkBytes: s, inFlight: 16, mbps: (10000 * s) / 1e6, iops: 10000 })));
  assert.equal(collapseThreshold(iops, 16384, dev), (1 << 20) / 16384 - 2, 'capped by maxReadBytes');
  assert.equal(collapseThreshold(iops, 16384, { ...dev, maxReadBytes: 256 << 10 }), 14);
  // per-read cost c0 + bytes/B: mbps(s) = s / (c0 + s/B); collapse while c0 + (2s+g·rb)/B < 2(c0 + s/B) ⇔ g·rb < c0·B
  const c0 = 0.05, B = 2000; // ms, MB/s → c0·B = 100 KB: g·16384 < 100000 → g ≤ 6 (at measured sizes only approx.)
  const mixed = profile(SIZES.map((s) => ({ chunkBytes: s, inFlight: 16, mbps: s / 1000 / (c0 + s / (B * 1000)), iops: 0 })));
  const G = collapseThreshold(mixed, 16384, dev);
  assert.ok(G >= 4 && G <= 7, `G ${G}`);
  const T = (x: number) => costMs(mixed, x, 1);
  assert.ok(T(2 * 16384 + G * 16384) < 2 * T(16384), 'G collapses');
  assert.ok(T(2 * 16384 + (G + 1) * 16384) >= 2 * T(16384), 'G + 1 does not');
});

test('collapseThreshold on the measured profile shape of this machine (16 KiB records)', () => {
  // cells of /root/.cache/flashlm/disk-profile (virtio disk, io_uring): 16 and 64 in flight
  const m16 = [187.4, 373.1, 592.2, 1089.8, 1545.6, 1851.3, 1573.3, 1397.4, 1387.5];
  const m64 = [231.3, 698.9, 1228.9, 1275.2, 1334.4, 1695.4, 1611.4, 1574.2, 1596.2];
  const p = profile([
    ...SIZES.map((s, i) => ({ chunkBytes: s, inFlight: 16, mbps: m16[i]!, iops: 0 })),
    ...SIZES.map((s, i) => ({ chunkBytes: s, inFlight: 64, mbps: m64[i]!, iops: 0 })),
  ]);
  assert.equal(collapseThreshold(p, 16384, { inFlight: 16, cpuMsPerRead: 0 }), 3); // IOPS-bound at 16 KiB with 16 in flight
  assert.equal(collapseThreshold(p, 16384, { inFlight: 64, cpuMsPerRead: 0 }), 0); // 64 in flight: bandwidth-bound already
});

test('collapseThreshold counts the CPU a read costs: bandwidth-bound reads still collapse while a gap costs less than a read\'s CPU', () => {
  // 1000 MB/s at every size: a 16 KiB record costs 0.016384 ms of device time, so with c ms of CPU
  // per read a gap of g records is worth reading while g·0.016384 < c
  const bw = profile(SIZES.map((s) => ({ chunkBytes: s, inFlight: 16, mbps: 1000, iops: 1e9 / s })));
  const t = 16384 / 1000 / 1000; // ms per record
  for (const c of [0, 0.008, 0.02, 0.05, 0.2]) {
    const G = collapseThreshold(bw, 16384, { cpuMsPerRead: c });
    assert.equal(G, Math.max(0, Math.ceil(c / t) - 1), `c ${c}`);
  }
  // the default is the measured CPU_MS_PER_READ: below one record's device time here, so 0
  assert.equal(collapseThreshold(bw, 16384), Math.max(0, Math.ceil(CPU_MS_PER_READ / t) - 1));
  assert.throws(() => collapseThreshold(bw, 16384, { cpuMsPerRead: -1 }), ReadPlanError);
});

/** Arena-like memory for the real-read test: WebAssembly pages are 64 KiB aligned. */
function wasmArena(bytes: number): ArenaLike {
  const mem = new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) + 1 });
  let top = 0;
  return { alloc: (b, a = 64) => { const off = Math.ceil(top / a) * a; top = off + b; return off; }, u8: (off, len) => new Uint8Array(mem.buffer, off, len) };
}

test('planned reads land in the matrix rows: DirectReader into arena memory, gaps dropped or kept', async () => {
  const n = 96, rb = 4096, layerOffset = 8192;
  const rand = mulberry32(77);
  const perm = shuffle(rand, n);
  const file = join(testDir('read-planner'), 'layer.bin');
  const data = new Uint8Array(layerOffset + n * rb);
  for (let p = 0; p < n; p++) data.fill(perm[p]! + 1, layerOffset + p * rb, layerOffset + (p + 1) * rb); // record of id = id+1 bytes
  for (let p = 0; p < n; p++) data[layerOffset + p * rb] = p; // and its position in byte 0
  fs.writeFileSync(file, data);
  const reader = await DirectReader.open(file, { maxReadBytes: 16 * rb, inFlight: 4 });
  try {
    const m = new NeuronMatrix(wasmArena(n * rb + 65536), { nFF: n, recordBytes: rb, capacity: 80 });
    const inv = invertPerm(perm);
    let gapsRead = 0, residentGaps = 0;
    for (let t = 0; t < 12; t++) {
      const active: number[] = [];
      for (let id = 0; id < n; id++) if (rand() < 0.25) active.push(id);
      const miss = new Int32Array(n);
      const k = m.touch(active, t, miss);
      m.evict(t);
      if (k > m.free) m.evictLRU(k, t);
      const nBefore = m.n;
      const plan = planReads(miss.subarray(0, k), { perm, invPerm: inv, layerOffset, recordBytes: rb, maxReadBytes: reader.maxReadBytes, collapseGap: 2, rowOf: m.rowOf, baseRow: m.n, maxGapRecords: m.free - k, align: 4096 });
      // three ways to treat gap records: keep them, placeholders dropped by commit(), keep then remove
      assert.equal(m.append(rowIds(plan, t % 3 !== 1), t), plan.baseRow);
      const st = await reader.read(readRequestsFor(plan, m));
      m.commit();
      assert.equal(st.bytes, plan.bytes);
      if (t % 3 === 2) m.remove(plan.gapIds);
      gapsRead += plan.records - plan.needed;
      residentGaps += plan.residentGap;
      const kept = t % 3 === 0 ? plan.gapIds.length : 0;
      assert.equal(m.n, nBefore + plan.needed + kept, `token ${t}: rows after commit`);
      for (const id of active) assert.ok(m.has(id), `token ${t}: active id ${id} resident`);
      for (let r = 0; r < m.n; r++) {
        const id = m.ids[r]!, row = m.rows(r, 1);
        assert.equal(row[0], inv[id], `token ${t} row ${r}: position byte`);
        assert.ok(row.subarray(1).every((b) => b === id + 1), `token ${t} row ${r}: record of id ${id}`);
      }
    }
    assert.ok(gapsRead > 10 && residentGaps > 0, `collapse exercised: ${gapsRead} gap records, ${residentGaps} resident`);
  } finally {
    await reader.close();
  }
});
