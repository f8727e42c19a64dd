// Sparse mode's NeuronSource: per layer a DRAM neuron matrix (neuron-matrix.ts) in the layer's
// arena; ensure() marks the predicted neurons used, lets the window policy evict, plans the reads of
// the missing ones in placement order (read-planner.ts, with Ripple's access collapse when the cost
// model says so) straight into the matrix's appended rows, and resolves when they have landed.
import type { Arena } from '../kernels/index.js';
import type { NeuronRows, NeuronSource } from '../model/sparse.js';
import type { DirectReader, ReadStats } from './io.js';
import { LinkingAlignedPolicy, NeuronMatrix, NeuronMatrixFullError, WindowPolicy } from './neuron-matrix.js';
import { invertPerm, planReads, readRequestsFor, rowIds, type ReadPlan } from './read-planner.js';

export interface SparseLayer {
  arena: Arena;
  matrixOff: number; // arena offset of the preallocated region [capacity × recordBytes]
  fileOffset: number; // file offset of the layer's record 0
  perm: ArrayLike<number>; // placement position → neuron id
  /** arena offset (4 KiB aligned) of the arena's stream buffer: two halves of `streamRows` rows each
   * [2 × streamRows × recordBytes], shared by the layers of one arena (they run one after another) */
  streamOff?: number;
}

export interface NeuronSourceOptions {
  nFF: number;
  recordBytes: number;
  capacity: number; // rows per layer
  window: number; // tokens a neuron stays after its last use (paper §3.2); 0 = no reuse at all
  collapseGap: number; // records (0: no access collapse)
  maxReadBytes: number;
  /** what the matrices keep between tokens: 'default' the window (paper §3.2), 'ripple' the window
   * aligned with the placement's links (LinkingAlignedPolicy, Ripple §5). Default 'default'. */
  admission?: 'default' | 'ripple';
  /** with collapse on and a full matrix: rows per needed neuron freed (LRU) for gap records (default 0) */
  gapRoom?: number;
  /** rows per half of each arena's stream buffer (SparseLayer.streamOff); 0 or absent: no streaming,
   * predicted neurons that do not fit in the matrix are dropped (counted in `overflow`) */
  streamRows?: number;
}

export interface NeuronSourceStats {
  bytes: number; // read from flash
  reads: number; // read calls after coalescing/splitting
  runs: number; // planned runs (one read each unless longer than maxReadBytes)
  records: number; // records read (gap records included)
  needed: number; // predicted neurons that were not resident
  hits: number; // predicted neurons already resident
  gapRecords: number; // records read only because a collapsed read passed through them
  overflow: number; // predicted neurons dropped because the matrix was full of this token's neurons (no stream buffer)
  streamed: number; // predicted neurons read through the stream buffer (did not fit in the matrix; not kept)
  ioMs: number; // summed wall time of the reads
  mmMs: number; // bookkeeping and row copies (the paper's "memory management" time)
  movedBytes: number; // bytes copied inside the matrices (deletes)
}

export class MatrixNeuronSource implements NeuronSource {
  readonly matrices: NeuronMatrix[];
  readonly stats: NeuronSourceStats = { bytes: 0, reads: 0, runs: 0, records: 0, needed: 0, hits: 0, gapRecords: 0, overflow: 0, streamed: 0, ioMs: 0, mmMs: 0, movedBytes: 0 };
  private readonly inv: Int32Array[];
  private readonly permuted: boolean[]; // per layer: a placement other than the identity
  private readonly missing: Int32Array;
  private readonly rows: NeuronRows = { off: 0, n: 0 };
  // stream state of the current layer: ids that did not fit (over[overAt..overN)), the chunk in flight
  private readonly over: Int32Array;
  private readonly posScratch: Int32Array;
  private overN = 0;
  private overAt = 0;
  private streamLayer = -1;
  private half = 0; // buffer half the chunk in flight lands in
  private inFlight: Promise<number> | undefined; // resolves to the chunk's rows
  private readonly chunkRows: NeuronRows = { off: 0, n: 0 };
  // per buffer half [streamRows]: 1 = a gap record of a collapsed read (its contribution is dropped)
  private readonly skipRows: Uint8Array[];
  private readonly chunkSkip: (Uint8Array | undefined)[] = [undefined, undefined]; // skipRows[half] if its chunk has gaps

  constructor(private readonly reader: DirectReader, private readonly layers: SparseLayer[], private readonly o: NeuronSourceOptions) {
    this.inv = layers.map((L) => invertPerm(L.perm));
    this.permuted = layers.map((L) => Array.prototype.some.call(L.perm, (id: number, p: number) => id !== p));
    const w = Math.max(1, o.window);
    this.matrices = layers.map((L, l) => new NeuronMatrix(L.arena, {
      nFF: o.nFF, recordBytes: o.recordBytes, capacity: o.capacity, off: L.matrixOff, layer: l,
      policy: o.admission === 'ripple' ? new LinkingAlignedPolicy(w, L.perm, this.inv[l]!) : new WindowPolicy(w),
    }));
    this.missing = new Int32Array(o.nFF);
    this.over = new Int32Array(o.nFF);
    this.posScratch = new Int32Array(o.nFF);
    const sr = o.streamRows ?? 0;
    if (!Number.isInteger(sr) || sr < 0) throw new RangeError(`streamRows must be an integer ≥ 0, got ${sr}`);
    if (sr > 0 && layers.some((L) => L.streamOff === undefined)) throw new RangeError('streamRows > 0 needs a stream buffer (streamOff) in every layer');
    this.skipRows = [new Uint8Array(sr), new Uint8Array(sr)];
  }

  private get streamRows(): number {
    return this.o.streamRows ?? 0;
  }

  /** Bytes of the stream buffers (DRAM): two halves per distinct arena. */
  get streamBytes(): number {
    if (!this.streamRows) return 0;
    return new Set(this.layers.map((L) => L.arena)).size * 2 * this.streamRows * this.o.recordBytes;
  }

  get recordBytes(): number {
    return this.o.recordBytes;
  }

  get capacity(): number {
    return this.o.capacity;
  }

  /** Most neurons per layer ensure() + next() serve per token: all of them with a stream buffer. */
  get maxNeurons(): number {
    return this.streamRows > 0 ? this.o.nFF : this.o.capacity;
  }

  /** Bytes of the neuron matrices (DRAM). */
  get bytes(): number {
    return this.matrices.reduce((s, m) => s + m.bytes, 0);
  }

  /** Lets a stream chunk read still in flight land (its outcome ignored) and forgets the chunks left. */
  private async dropStream(): Promise<void> {
    if (this.inFlight) await this.inFlight.catch(() => 0);
    this.inFlight = undefined;
    this.overN = this.overAt = 0;
  }

  async ensure(l: number, ids: Int32Array, count: number, token: number): Promise<NeuronRows> {
    // a caller that stopped calling next() (an error in between): let the read land, forget the rest
    await this.dropStream();
    this.streamLayer = l;
    const m = this.matrices[l]!;
    const L = this.layers[l]!;
    const st = this.stats;
    const t0 = performance.now();
    const moved0 = m.stats.movedBytes;
    // window 0: the paper's "+predictor" row — nothing is kept from earlier tokens
    if (this.o.window === 0 && m.n > 0) m.evictLRU(m.capacity, token);
    const k = m.touch(ids.subarray(0, count), token, this.missing);
    st.hits += count - k;
    m.evict(token);
    let need = k;
    // Collapsed reads land their gap records in matrix rows too (maxGapRecords = free − need): with
    // a full matrix collapse would silently stop. gapRoom (option, rows per needed neuron) evicts
    // least recently used neurons (none used by this token) to make room for up to that many gap
    // records, which stay cached: with a co-activation placement they are the needed ones' neighbours.
    const room = this.o.collapseGap > 0 ? Math.floor(k * (this.o.gapRoom ?? 0)) : 0;
    if (room > 0 && k + room > m.free) {
      try {
        m.evictLRU(Math.min(m.capacity, k + room), token);
      } catch (e) {
        if (!(e instanceof NeuronMatrixFullError)) throw e;
      }
    }
    if (need > m.free) {
      try {
        m.evictLRU(need, token);
      } catch (e) {
        if (!(e instanceof NeuronMatrixFullError)) throw e;
      }
      if (need > m.free) {
        // more neurons predicted than rows: what fits goes into the matrix, the rest streams through
        // the stream buffer (next()) or, without one, is dropped
        if (this.streamRows > 0) {
          // split in file order: the matrix takes the lowest positions and every stream chunk a
          // stretch of the file. In id order (the predictor's), a co-activation placement scatters
          // each chunk over the whole layer and cuts the runs placement built: CodeLlama-13B, placed,
          // read 205k times per token instead of 113k. With collapse on, chunks are windows of file
          // positions, so the gap records between a chunk's neurons fit in the buffer's rows.
          if (this.permuted[l] || this.o.collapseGap > 0) this.sortByPosition(l, this.missing, need);
          this.over.set(this.missing.subarray(m.free, need));
          this.overN = need - m.free;
          st.streamed += this.overN;
          st.needed += this.overN;
          this.startChunk(l); // its read runs while the matrix's reads and compute go on
        } else {
          st.overflow += need - m.free;
        }
        need = m.free;
      }
    }
    st.needed += need;
    if (need > 0) {
      const plan = planReads(this.missing.subarray(0, need), {
        perm: L.perm, invPerm: this.inv[l]!, layerOffset: L.fileOffset, recordBytes: this.o.recordBytes, maxReadBytes: this.o.maxReadBytes,
        collapseGap: this.o.collapseGap, maxGapRecords: m.free - need, rowOf: m.rowOf, baseRow: m.n, align: this.reader.align,
      });
      m.append(rowIds(plan, true), token); // gap records become cached neurons (exact: they are real records)
      const reqs = readRequestsFor(plan, m);
      st.mmMs += performance.now() - t0;
      let r;
      try {
        r = await this.reader.read(reqs);
      } catch (e) {
        m.rollback();
        // the first stream chunk's read (started above) may still be writing into the stream buffer:
        // the caller may reuse that memory (or close the reader) as soon as it has the error
        await this.dropStream();
        throw e;
      }
      const t1 = performance.now();
      m.commit();
      this.count(plan, r);
      st.mmMs += performance.now() - t1;
    } else {
      st.mmMs += performance.now() - t0;
    }
    st.movedBytes += m.stats.movedBytes - moved0;
    this.rows.off = m.off;
    this.rows.n = m.n;
    return this.rows;
  }

  /**
   * The next chunk of layer l's predicted neurons that did not fit in its matrix, in the stream
   * buffer (rows.n = 0: none left). The chunk after it is read while the caller computes over this
   * one; the rows stay valid until the call after next. Gap records of collapsed reads are flagged
   * in rows.skip: the caller drops their contribution (a gap neuron may also sit in the matrix, and
   * it was not asked for). Flagging replaced zeroing the records: memset of the gap bytes cost up to
   * ~1 s per token on CodeLlama-13B with collapse 3 (2.2 GB of gap records per token).
   */
  async next(l: number): Promise<NeuronRows> {
    if (l !== this.streamLayer) throw new RangeError(`next(${l}) after ensure(${this.streamLayer})`);
    const r = this.chunkRows;
    if (!this.inFlight) {
      r.n = 0;
      return r;
    }
    const half = this.half;
    let n: number;
    try {
      n = await this.inFlight;
    } catch (e) {
      // nothing else of this layer is in flight (the next chunk starts only after this one landed)
      this.inFlight = undefined;
      this.overN = this.overAt = 0;
      throw e;
    }
    this.inFlight = undefined;
    if (this.overAt < this.overN) {
      this.half ^= 1;
      this.startChunk(l);
    }
    r.off = this.layers[l]!.streamOff! + half * this.streamRows * this.o.recordBytes;
    r.n = n;
    r.skip = this.chunkSkip[half];
    return r;
  }

  /** Sorts ids[0..n) by placement position (ascending). */
  private sortByPosition(l: number, ids: Int32Array, n: number): void {
    const inv = this.inv[l]!;
    const pos = this.posScratch;
    for (let i = 0; i < n; i++) pos[i] = inv[ids[i]!]!;
    pos.subarray(0, n).sort();
    const perm = this.layers[l]!.perm;
    for (let i = 0; i < n; i++) ids[i] = perm[pos[i]!]!;
  }

  /** Adds a landed plan's reads to the stats. */
  private count(plan: ReadPlan, r: ReadStats): void {
    const st = this.stats;
    st.bytes += r.bytes;
    st.reads += r.reads;
    st.runs += plan.runs.length;
    st.ioMs += r.wallMs;
    st.records += plan.records;
    st.gapRecords += plan.records - plan.needed;
  }

  /** Plans and starts the read of the next chunk of over[overAt..overN) into buffer half `half`. */
  private startChunk(l: number): void {
    const L = this.layers[l]!;
    const st = this.stats;
    const rb = this.o.recordBytes;
    const cap = this.streamRows;
    const t0 = performance.now();
    // without collapse a chunk is the next `cap` ids; with collapse (ids in file order) the ids whose
    // positions lie within `cap` records of the chunk's first, so its gaps fit in the rows too
    let end = Math.min(this.overN, this.overAt + cap);
    if (this.o.collapseGap > 0) {
      const inv = this.inv[l]!;
      const p0 = inv[this.over[this.overAt]!]!;
      end = this.overAt + 1;
      while (end < this.overN && inv[this.over[end]!]! - p0 < cap) end++;
    }
    const ids = this.over.subarray(this.overAt, end);
    this.overAt = end;
    const plan = planReads(ids, {
      perm: L.perm, invPerm: this.inv[l]!, layerOffset: L.fileOffset, recordBytes: rb, maxReadBytes: this.o.maxReadBytes,
      collapseGap: this.o.collapseGap, maxGapRecords: cap - ids.length, baseRow: 0, align: this.reader.align,
    });
    const base = L.streamOff! + this.half * cap * rb;
    const region = L.arena.u8(base, cap * rb);
    const reqs = plan.runs.map((run) => ({ fileOffset: run.fileOffset, length: run.bytes, dst: region.subarray(run.firstRow * rb, (run.firstRow + run.count) * rb) }));
    st.mmMs += performance.now() - t0;
    const half = this.half;
    const skip = plan.records > plan.needed ? this.skipRows[half]! : undefined;
    if (skip) for (let i = 0; i < plan.records; i++) skip[i] = plan.gap[i]!;
    this.chunkSkip[half] = skip;
    this.inFlight = this.reader.read(reqs).then((res) => {
      const t1 = performance.now();
      this.count(plan, res);
      st.mmMs += performance.now() - t1;
      return plan.records;
    });
    // an unobserved rejection would crash the process before next() awaits it
    this.inFlight.catch(() => undefined);
  }
}

/** Read figures per token for --stats and benches (Ripple's metrics). */
export interface ReadSummary {
  reads_per_token: number;
  runs_per_token: number;
  /** mean read length: records (neurons, gap records included) and bytes per read call */
  mean_read_records: number;
  mean_read_bytes: number;
  /** bytes read / summed read wall time, MB/s (1e6 B/s) */
  bandwidth_mbps: number;
  /** bytes of the needed (predicted, missing) records / read time, MB/s: what collapse trades away */
  effective_mbps: number;
  io_ms_per_token: number;
  bytes_per_token: number;
  gap_records_per_token: number;
}

export function readSummary(s: NeuronSourceStats, recordBytes: number, tokens: number): ReadSummary {
  const t = Math.max(1, tokens);
  const r = Math.max(1, s.reads);
  const mbps = (bytes: number) => (s.ioMs > 0 ? bytes / (s.ioMs * 1000) : 0);
  return {
    reads_per_token: s.reads / t, runs_per_token: s.runs / t, mean_read_records: s.records / r, mean_read_bytes: s.bytes / r,
    bandwidth_mbps: mbps(s.bytes), effective_mbps: mbps((s.records - s.gapRecords) * recordBytes),
    io_ms_per_token: s.ioMs / t, bytes_per_token: s.bytes / t, gap_records_per_token: s.gapRecords / t,
  };
}
