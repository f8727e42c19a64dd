// Read planning: a layer's missing neuron ids → aligned file runs (issue: sparse FFN from flash).
//
// The flash file stores a layer's records in placement order (perm[p] = neuron id at placement
// position p; formats/flash-layout.ts). Missing ids are mapped to positions (invPerm), sorted, and
// grouped into runs of consecutive positions; each run is one read of count·recordBytes bytes,
// split so that no read exceeds maxReadBytes. Ripple's "access collapse" (arXiv 2410.19274):
// when two needed runs are at most G records apart, one read through the gap is cheaper than two
// reads on an IOPS-bound device; the gap records are read too and reported (`gap`). A gap record
// whose neuron is resident already (opts.rowOf) is read into a placeholder row that
// NeuronMatrix.commit() deletes; the others the caller keeps as cached neurons or drops the same way
// (rowIds(plan, keepGaps)).
//
// Rows: the plan's records land in consecutive rows baseRow, baseRow+1, … in file order (run i at
// firstRow = baseRow + records of runs before it), which is exactly what NeuronMatrix.append(ids)
// does with `plan.ids`: a run of k records on flash is one read into k consecutive rows.
import type { ReadRequest } from './io.js';
import { costMs, type DiskProfile } from './profile.js';

/** A plan that cannot be made: bad ids, permutation, sizes or alignment. */
export class ReadPlanError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReadPlanError';
  }
}

/** ReadPlan.gap codes */
export const GAP_NEW = 1;
export const GAP_RESIDENT = 2;

export interface ReadRun {
  /** placement position of the run's first record */
  filePos: number;
  /** absolute byte offset in the file: layerOffset + filePos·recordBytes */
  fileOffset: number;
  /** records read, gap records included */
  count: number;
  /** bytes read: count·recordBytes (≤ maxReadBytes) */
  bytes: number;
  /** matrix row the first record lands in */
  firstRow: number;
}

export interface ReadPlan {
  runs: ReadRun[];
  /** neuron id of every record read, in row order (ids[i] lands in row baseRow + i) [records] */
  ids: Int32Array;
  /** per record: 0 needed, GAP_NEW gap record not resident, GAP_RESIDENT gap record already resident [records] */
  gap: Uint8Array;
  /** ids of the GAP_NEW records, in row order */
  gapIds: Int32Array;
  /** GAP_RESIDENT records (read only because a collapsed read passes through them) */
  residentGap: number;
  baseRow: number;
  /** distinct missing ids (duplicates in the input count once) */
  needed: number;
  /** records read: needed + gapIds.length */
  records: number;
  /** bytes read: records·recordBytes */
  bytes: number;
}

export interface PlanOptions {
  /** placement position → neuron id [nFF] (the file's flashlm.perm.<l>); names the gap records */
  perm: ArrayLike<number>;
  /** neuron id → placement position [nFF] (invertPerm(perm)) */
  invPerm: ArrayLike<number>;
  /** absolute file offset of the layer's record 0, bytes (multiple of `align`) */
  layerOffset: number;
  /** bytes per record (multiple of `align`) */
  recordBytes: number;
  /** largest single read, bytes (≥ recordBytes) */
  maxReadBytes: number;
  /** collapse threshold G, records: read through gaps of ≤ G unneeded records (0 = never) */
  collapseGap?: number;
  /** at most this many gap records in the whole plan (e.g. the matrix's free rows − needed); default unlimited */
  maxGapRecords?: number;
  /** neuron id → row or −1 (NeuronMatrix.rowOf): which gap records are resident already; default none */
  rowOf?: ArrayLike<number>;
  /** row of the first record (NeuronMatrix.n); default 0 */
  baseRow?: number;
  /** required alignment of offsets and lengths, bytes (default 512; io.ts DirectReader checks 4096) */
  align?: number;
}

/** The inverse of a permutation of 0 … n−1 (throws ReadPlanError if it is not one). */
export function invertPerm(perm: ArrayLike<number>): Int32Array {
  const inv = new Int32Array(perm.length).fill(-1);
  for (let p = 0; p < perm.length; p++) {
    const id = perm[p]!;
    if (!Number.isInteger(id) || id < 0 || id >= perm.length) throw new ReadPlanError(`perm[${p}] = ${id} outside 0..${perm.length - 1}`);
    if (inv[id] !== -1) throw new ReadPlanError(`perm is not a permutation: id ${id} at positions ${inv[id]} and ${p}`);
    inv[id] = p;
  }
  return inv;
}

/**
 * Plans the reads of the `missing` ids (any order; duplicates count once). Runs come out in file
 * order, none longer than maxReadBytes; between two needed records of one run there are at most
 * collapseGap unneeded ones, and no run starts or ends with a gap record. Greedy left to right,
 * which gives the fewest reads for the given G and size cap (interval covering); with a finite
 * maxGapRecords the earliest gaps get the budget.
 */
export function planReads(missing: ArrayLike<number>, o: PlanOptions): ReadPlan {
  const { perm, invPerm, layerOffset, recordBytes } = o;
  const nFF = invPerm.length;
  const G = o.collapseGap ?? 0;
  const align = o.align ?? 512;
  const baseRow = o.baseRow ?? 0;
  let budget = o.maxGapRecords ?? Infinity;
  if (perm.length !== nFF) throw new ReadPlanError(`perm has ${perm.length} entries, invPerm ${nFF}`);
  if (!Number.isInteger(align) || align < 1) throw new ReadPlanError(`align must be a positive integer, got ${align}`);
  if (!Number.isInteger(recordBytes) || recordBytes < 1 || recordBytes % align) {
    throw new ReadPlanError(`recordBytes ${recordBytes} is not a positive multiple of the ${align}-byte read alignment`);
  }
  if (!Number.isSafeInteger(layerOffset) || layerOffset < 0 || layerOffset % align) throw new ReadPlanError(`layer offset ${layerOffset} is not a multiple of ${align}`);
  const maxRec = Math.floor(o.maxReadBytes / recordBytes);
  if (!(maxRec >= 1)) throw new ReadPlanError(`maxReadBytes ${o.maxReadBytes} holds no ${recordBytes}-byte record`);
  if (!Number.isInteger(G) || G < 0) throw new ReadPlanError(`collapseGap must be an integer ≥ 0, got ${G}`);
  if (!(budget >= 0)) throw new ReadPlanError(`maxGapRecords must be ≥ 0, got ${budget}`);
  if (!Number.isInteger(baseRow) || baseRow < 0) throw new ReadPlanError(`baseRow must be an integer ≥ 0, got ${baseRow}`);

  // placement positions, sorted, distinct
  const pos = new Int32Array(missing.length);
  for (let i = 0; i < missing.length; i++) {
    const id = missing[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= nFF) throw new ReadPlanError(`missing id ${id} outside 0..${nFF - 1}`);
    const p = invPerm[id]!;
    if (!Number.isInteger(p) || p < 0 || p >= nFF || perm[p] !== id) throw new ReadPlanError(`invPerm[${id}] = ${p} does not invert perm (perm[${p}] = ${perm[p]})`);
    if (o.rowOf && o.rowOf[id]! >= 0) throw new ReadPlanError(`missing id ${id} is resident (row ${o.rowOf[id]})`);
    pos[i] = p;
  }
  pos.sort();
  let m = 0;
  for (let i = 0; i < pos.length; i++) if (m === 0 || pos[i] !== pos[m - 1]) pos[m++] = pos[i]!;

  // greedy: extend the current run [start, end) to the next needed position p when the gap
  // p − end is ≤ G (and within budget) and the run stays ≤ maxRec records
  const starts: number[] = [];
  const ends: number[] = [];
  let gapTotal = 0;
  for (let i = 0; i < m; i++) {
    const p = pos[i]!;
    const k = starts.length - 1;
    if (k >= 0) {
      const gap = p - ends[k]!;
      if (p + 1 - starts[k]! <= maxRec && (gap === 0 || (gap <= G && gap <= budget))) {
        if (gap > 0) { budget -= gap; gapTotal += gap; }
        ends[k] = p + 1;
        continue;
      }
    }
    starts.push(p);
    ends.push(p + 1);
  }

  const records = m + gapTotal;
  const ids = new Int32Array(records);
  const gap = new Uint8Array(records);
  const gapNew: number[] = [];
  const runs: ReadRun[] = [];
  const rowOf = o.rowOf;
  let row = 0, j = 0, residentGap = 0; // j: index into pos (needed positions, ascending)
  for (let k = 0; k < starts.length; k++) {
    const s = starts[k]!, count = ends[k]! - s;
    runs.push({ filePos: s, fileOffset: layerOffset + s * recordBytes, count, bytes: count * recordBytes, firstRow: baseRow + row });
    for (let p = s; p < s + count; p++, row++) {
      const id = perm[p]!;
      ids[row] = id;
      if (j < m && pos[j] === p) j++;
      else if (rowOf && rowOf[id]! >= 0) { gap[row] = GAP_RESIDENT; residentGap++; }
      else { gap[row] = GAP_NEW; gapNew.push(id); }
    }
  }
  return { runs, ids, gap, gapIds: Int32Array.from(gapNew), residentGap, baseRow, needed: m, records, bytes: records * recordBytes };
}

/**
 * What to pass to NeuronMatrix.append: plan.ids with −1 (placeholder rows, deleted by commit())
 * for the gap records already resident and, unless keepGaps, for all gap records.
 */
export function rowIds(plan: ReadPlan, keepGaps: boolean): Int32Array {
  const out = plan.ids.slice();
  for (let i = 0; i < out.length; i++) if (plan.gap[i] === GAP_RESIDENT || (plan.gap[i] && !keepGaps)) out[i] = -1;
  return out;
}

/** What readRequestsFor needs of the destination (NeuronMatrix satisfies it). */
export interface RowsTarget {
  rows(row: number, count: number): Uint8Array;
}

/** The plan's runs as DirectReader requests into the target's rows (after append(plan.ids)). */
export function readRequestsFor(plan: ReadPlan, target: RowsTarget): ReadRequest[] {
  return plan.runs.map((r) => ({ fileOffset: r.fileOffset, length: r.bytes, dst: target.rows(r.firstRow, r.count) }));
}

export interface CollapseOptions {
  /** reads in flight the engine keeps (default: per size, the profile's best measured) */
  inFlight?: number;
  /** typical length of a needed run, records (default 1: scattered neurons) */
  runRecords?: number;
  /** no gap larger than a read of this size allows (default 1 MiB) */
  maxReadBytes?: number;
  /** main-thread CPU per read that I/O does not hide, ms (default CPU_MS_PER_READ) */
  cpuMsPerRead?: number;
}

/**
 * Main-thread CPU per read, ms: submitting it, its completion callback and promise, and the
 * planner's bookkeeping; it runs on the core the compute threads need, so the disk profile (device
 * time only) misses it. Measured on CodeLlama-13B in sparse mode at a 50% cap (2026-12-06,
 * bench/results-ripple-heldout-codellama13b-q8_0-before-fix.json): collapsing gaps of ≤ 2 records
 * cut reads from 113.2k to 21.5k per token and compute (wall minus I/O wait) from 2123 to 1382 ms:
 * 741 ms / 91.7k reads ≈ 0.008 ms per read.
 */
export const CPU_MS_PER_READ = 0.008;

/**
 * Ripple's collapse threshold from a disk profile: the largest gap G (records) such that one read
 * of two needed runs plus g unneeded records costs less time than two reads of the runs, for every
 * g ≤ G. Time of one read of x bytes is profile.costMs(x bytes in 1 read) = x / bandwidth(x), the
 * amortized time per read at that size and reads in flight (1/IOPS). With s = runRecords·recordBytes:
 *   collapse g  ⇔  T(2s + g·recordBytes) < 2·T(s)
 * i.e. the gap's extra bytes cost less than the read they save. Each read also costs c =
 * cpuMsPerRead of main-thread CPU, so the test is T(2s + g·recordBytes) + c < 2·(T(s) + c). Returns 0
 * when the device is bandwidth-bound at that size and reads cost no CPU (T grows in proportion to the
 * bytes: nothing to save per read).
 */
export function collapseThreshold(p: DiskProfile, recordBytes: number, o: CollapseOptions = {}): number {
  const runRecords = o.runRecords ?? 1;
  const maxReadBytes = o.maxReadBytes ?? 1 << 20;
  if (!(recordBytes > 0) || !(runRecords >= 1)) throw new ReadPlanError(`collapseThreshold: bad recordBytes ${recordBytes} or runRecords ${runRecords}`);
  if (!p.cells.length) throw new ReadPlanError('collapseThreshold: the disk profile has no cells');
  const s = runRecords * recordBytes;
  const T = (x: number) => costMs(p, x, 1, o.inFlight);
  const cpu = o.cpuMsPerRead ?? CPU_MS_PER_READ;
  if (!(cpu >= 0)) throw new ReadPlanError(`collapseThreshold: bad cpuMsPerRead ${cpu}`);
  const split = 2 * T(s) + cpu; // two reads' device time and CPU, less the collapsed read's CPU
  let g = 0;
  while (2 * s + (g + 1) * recordBytes <= maxReadBytes && T(2 * s + (g + 1) * recordBytes) < split) g++;
  return g;
}
