// The DRAM neuron matrix of "LLM in a flash" (arXiv 2312.11514, §3.3), one per FFN layer.
//
// A preallocated region of `capacity` rows in an arena; row r holds one whole flash record
// [gate row | up row | down column | padding] of `recordBytes` bytes at off + r·recordBytes, so the
// kernels run gate/up as matvec with rowStride = recordBytes and down as matvecT over rows [0, n).
// Row order does not change the FFN's result, which is what makes the cheap bookkeeping possible:
//   - delete: the last valid rows are copied into the holes that fall below the new n, nothing else
//     moves (a delete of d rows copies at most d rows, and exactly as many as it must);
//   - insert: append at rows [n, n+k) — in the order the caller gives, so a run of k records that
//     is consecutive on flash lands in k consecutive rows and is ONE O_DIRECT read straight into
//     arena memory (the region starts 4096-aligned; with recordBytes a multiple of 512 every row
//     is 512-aligned, and a multiple of 4096 makes every row 4096-aligned).
// The bytes of appended rows are written by the caller's reads after append() returns; until
// commit() the matrix refuses deletes (a delete could copy a row whose read is still in flight),
// and rollback() forgets rows whose read failed.
//
// Capacity is fixed at construction. When an append does not fit, append() throws
// NeuronMatrixFullError with the numbers and changes nothing: the matrix never picks victims on
// its own. The caller chooses: evict(token) (the policy), evictLRU(k, token) (least recently used
// among neurons not needed by this token), or fewer neurons.
//
// Per-token use (token t, needed ids A from the predictor):
//   const k = m.touch(A, t, missing);      // marks A used at t; missing[0..k) = ids not resident
//   m.evict(t);                            // policy (default: used in none of the last `window` tokens)
//   if (k > m.free) m.evictLRU(k, t);      // or fewer neurons: the caller's choice
//   const plan = planReads(missing.subarray(0, k), { ..., rowOf: m.rowOf, baseRow: m.n, maxGapRecords: m.free - k });
//   m.append(rowIds(plan, keepGaps), t);   // rows [plan.baseRow, +plan.records), in file order
//   await reader.read(readRequestsFor(plan, m));  then m.commit()  (or m.rollback() on failure)
//   compute over rows [0, m.n)             // commit() deleted the placeholder rows

/** What the matrix needs of an arena (kernels' Arena satisfies it). */
export interface ArenaLike {
  alloc(bytes: number, align?: number): number;
  u8(off: number, len: number): Uint8Array;
}

/** Alignment of the region's start, bytes (O_DIRECT destinations; one page). */
export const MATRIX_ALIGN = 4096;
/** Records are padded to a multiple of this many bytes (formats/flash-layout RECORD_ALIGN). */
export const RECORD_ALIGN = 512;

/** An append that does not fit: the matrix is unchanged. */
export class NeuronMatrixFullError extends Error {
  constructor(readonly layer: number, readonly capacity: number, readonly used: number, readonly requested: number) {
    super(`neuron matrix of layer ${layer}: ${requested} more rows requested but only ${capacity - used} free ` +
      `(${used} of ${capacity} rows used); evict first or raise the capacity`);
    this.name = 'NeuronMatrixFullError';
  }
}

/** A misuse of the matrix API (unknown id, id already resident, delete while reads are pending...). */
export class NeuronMatrixError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NeuronMatrixError';
  }
}

/** Read-only view the eviction policies get. */
export interface MatrixView {
  readonly n: number;
  /** neuron id per row [capacity]; rows [0, n) valid */
  readonly ids: Int32Array;
  /** token index at which each neuron id was last used [nFF]; -1 = never */
  readonly lastUsed: Int32Array;
}

/** Chooses the neurons to evict before token `token`'s appends. */
export interface EvictionPolicy {
  readonly name: string;
  /** Writes the ids to evict into out (capacity ≥ m.n) and returns how many. */
  victims(m: MatrixView, token: number, out: Int32Array): number;
}

/** The paper's windowing: a neuron stays while it was used in any of the last `window` tokens
 * (tokens token−window+1 … token); touch() the current token's ids before evicting. */
export class WindowPolicy implements EvictionPolicy {
  readonly name: string;
  constructor(readonly window: number) {
    if (!Number.isInteger(window) || window < 1) throw new RangeError(`window must be an integer ≥ 1, got ${window}`);
    this.name = `window(${window})`;
  }
  victims(m: MatrixView, token: number, out: Int32Array): number {
    const oldest = token - this.window + 1; // lastUsed below this: not used in the window
    let k = 0;
    for (let r = 0; r < m.n; r++) {
      const id = m.ids[r]!;
      if (m.lastUsed[id]! < oldest) out[k++] = id;
    }
    return k;
  }
}

/**
 * Ripple's linking-aligned caching (arXiv 2410.19274 §5), as the window policy's refinement: with
 * a co-activation placement on flash, a resident neuron in the middle of a placement-adjacent
 * resident segment is worth more than its own reuse, because evicting it splits the segment and a
 * later token that needs the segment again needs two reads (or a collapsed read through it)
 * instead of none. So residency is kept aligned with the placement's links: of the neurons the
 * window would evict, those lying strictly between two neurons that stay (used in the window) in
 * the same maximal run of resident placement positions are spared; a segment is trimmed only at
 * its ends, and a segment with no neuron used in the window goes whole. What is spared is bounded
 * by the span of the neurons in use; under pressure evictLRU still frees rows by age.
 * perm/invPerm: the layer's placement (position → id, id → position).
 */
export class LinkingAlignedPolicy implements EvictionPolicy {
  readonly name: string;
  private readonly resident: Uint8Array; // [nFF] by placement position: 0 no, 1 resident, 2 resident and used in the window
  constructor(readonly window: number, private readonly perm: ArrayLike<number>, private readonly invPerm: ArrayLike<number>) {
    if (!Number.isInteger(window) || window < 1) throw new RangeError(`window must be an integer ≥ 1, got ${window}`);
    if (perm.length !== invPerm.length) throw new RangeError(`perm has ${perm.length} entries, invPerm ${invPerm.length}`);
    this.name = `linking-aligned(${window})`;
    this.resident = new Uint8Array(perm.length);
  }
  victims(m: MatrixView, token: number, out: Int32Array): number {
    const oldest = token - this.window + 1;
    const res = this.resident;
    for (let r = 0; r < m.n; r++) {
      const id = m.ids[r]!;
      if (id >= 0) res[this.invPerm[id]!] = m.lastUsed[id]! >= oldest ? 2 : 1;
    }
    // one pass over placement positions: within each maximal resident segment, evict the positions
    // before its first and after its last in-window member (all of it when it has none)
    let k = 0;
    const nFF = res.length;
    for (let p = 0; p < nFF;) {
      if (!res[p]) { p++; continue; }
      let e = p;
      let first = -1, last = -1;
      while (e < nFF && res[e]) {
        if (res[e] === 2) { if (first < 0) first = e; last = e; }
        e++;
      }
      for (let q = p; q < e; q++) {
        if (res[q] === 1 && (first < 0 || q < first || q > last)) out[k++] = this.perm[q]!;
        res[q] = 0; // reset for the next call
      }
      p = e;
    }
    return k;
  }
}

export interface NeuronMatrixOptions {
  /** neurons in the layer (ids are 0 … nFF−1) */
  nFF: number;
  /** bytes per record, a positive multiple of RECORD_ALIGN */
  recordBytes: number;
  /** rows (records) the region holds, ≤ nFF */
  capacity: number;
  /** default: WindowPolicy(5) */
  policy?: EvictionPolicy;
  /** byte offset of an existing region (MATRIX_ALIGN-aligned, capacity·recordBytes long); default: arena.alloc */
  off?: number;
  /** for messages only */
  layer?: number;
}

export interface NeuronMatrixStats {
  appended: number; // rows appended (reads landed or in flight)
  removed: number; // neurons deleted (remove, evict, evictLRU)
  dropped: number; // placeholder rows deleted by commit()
  moved: number; // rows copied to fill holes
  movedBytes: number;
  rolledBack: number; // rows forgotten by rollback()
}

export class NeuronMatrix implements MatrixView {
  /** byte offset of row 0 in the arena (MATRIX_ALIGN-aligned) */
  readonly off: number;
  readonly nFF: number;
  readonly recordBytes: number;
  readonly capacity: number;
  readonly layer: number;
  policy: EvictionPolicy;
  /** neuron id of each row [capacity]; rows [0, n) valid */
  readonly ids: Int32Array;
  /** row of each neuron id [nFF]; −1 = not resident */
  readonly rowOf: Int32Array;
  /** token index each neuron id was last used at [nFF]; −1 = never (kept for evicted ids too) */
  readonly lastUsed: Int32Array;
  readonly stats: NeuronMatrixStats = { appended: 0, removed: 0, dropped: 0, moved: 0, movedBytes: 0, rolledBack: 0 };
  private used = 0;
  /** rows [0, filled) have their bytes; rows [filled, n) await reads */
  private filled = 0;
  /** the whole region as bytes [capacity·recordBytes] (arena memory) */
  private readonly region: Uint8Array;
  private readonly scratch: Int32Array; // [capacity] victims / deleted rows
  private readonly scratch2: Int32Array; // [capacity] holes' sources
  private readonly dead: Uint8Array; // [capacity] rows marked for deletion
  private readonly victimsBuf: Int32Array; // [capacity] ids the policy chose
  private readonly seen: Int32Array; // [nFF] touch() call stamp per id (duplicates within one call)
  private touchSeq = 0;
  private placeholders = 0; // rows appended with id −1 since the last commit

  constructor(readonly arena: ArenaLike, o: NeuronMatrixOptions) {
    const { nFF, recordBytes, capacity } = o;
    this.layer = o.layer ?? 0;
    if (!Number.isInteger(nFF) || nFF < 1) throw new RangeError(`nFF must be a positive integer, got ${nFF}`);
    if (!Number.isInteger(recordBytes) || recordBytes < RECORD_ALIGN || recordBytes % RECORD_ALIGN) {
      throw new RangeError(`recordBytes must be a positive multiple of ${RECORD_ALIGN}, got ${recordBytes}`);
    }
    if (!Number.isInteger(capacity) || capacity < 0 || capacity > nFF) throw new RangeError(`capacity must be an integer in 0..${nFF}, got ${capacity}`);
    this.nFF = nFF;
    this.recordBytes = recordBytes;
    this.capacity = capacity;
    this.policy = o.policy ?? new WindowPolicy(5);
    const bytes = capacity * recordBytes;
    if (o.off !== undefined) {
      if (!Number.isInteger(o.off) || o.off < 0 || o.off % MATRIX_ALIGN) throw new RangeError(`off ${o.off} is not a multiple of ${MATRIX_ALIGN}`);
      this.off = o.off;
    } else {
      this.off = arena.alloc(bytes, MATRIX_ALIGN);
    }
    this.region = arena.u8(this.off, bytes);
    this.ids = new Int32Array(capacity).fill(-1);
    this.rowOf = new Int32Array(nFF).fill(-1);
    this.lastUsed = new Int32Array(nFF).fill(-1);
    this.scratch = new Int32Array(capacity);
    this.scratch2 = new Int32Array(capacity);
    this.dead = new Uint8Array(capacity);
    this.victimsBuf = new Int32Array(capacity);
    this.seen = new Int32Array(nFF);
  }

  /** rows in use: the kernels run over rows [0, n) */
  get n(): number { return this.used; }
  /** rows free for appends */
  get free(): number { return this.capacity - this.used; }
  /** rows appended whose reads have not been committed */
  get pending(): number { return this.used - this.filled; }
  /** arena bytes reserved for the region (capacity·recordBytes) */
  get bytes(): number { return this.capacity * this.recordBytes; }
  /** arena bytes holding rows in use (n·recordBytes) */
  get usedBytes(): number { return this.used * this.recordBytes; }
  /** JS-heap bytes of the bookkeeping arrays (ids, rowOf, lastUsed, scratch) */
  get bookkeepingBytes(): number { return this.capacity * 17 + this.nFF * 12; }

  /** Byte offset in the arena of row r. */
  rowOff(r: number): number { return this.off + r * this.recordBytes; }

  /** View of `count` consecutive rows from `row` (arena memory: a valid O_DIRECT destination). */
  rows(row: number, count: number): Uint8Array {
    if (!Number.isInteger(row) || !Number.isInteger(count) || row < 0 || count < 0 || row + count > this.capacity) {
      throw new RangeError(`rows ${row}..${row + count} outside the matrix's ${this.capacity} rows`);
    }
    return this.region.subarray(row * this.recordBytes, (row + count) * this.recordBytes);
  }

  has(id: number): boolean { return this.rowOf[id]! >= 0; }

  private checkId(id: number, what: string): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.nFF) throw new NeuronMatrixError(`layer ${this.layer}: ${what}: neuron id ${id} outside 0..${this.nFF - 1}`);
  }

  /**
   * Marks `ids` as used at `token` (lastUsed = token) and, when `missing` is given, writes the ids
   * not resident into it (in the order given; duplicates once). Returns the number missing.
   */
  touch(ids: ArrayLike<number>, token: number, missing?: Int32Array): number {
    let k = 0;
    const seq = ++this.touchSeq;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      this.checkId(id, 'touch');
      this.lastUsed[id] = token;
      if (this.seen[id] === seq) continue;
      this.seen[id] = seq;
      if (this.rowOf[id]! < 0) {
        if (missing) {
          if (k >= missing.length) throw new RangeError(`touch: missing[] holds ${missing.length} ids, more are missing`);
          missing[k] = id;
        }
        k++;
      }
    }
    return k;
  }

  /**
   * Appends `ids` at rows [n, n + ids.length) in the order given (row n + i holds ids[i]) and marks
   * them used at `token`. Returns the first row. Their bytes are the caller's to write (reads into
   * rows(first, count)), then commit(). An id of −1 is a placeholder row: a record that must be
   * read (a gap record of a collapsed read that is resident already or not wanted) but not kept;
   * commit() deletes placeholders. Throws NeuronMatrixFullError (nothing changed) if the rows do
   * not fit, NeuronMatrixError if an id is out of range, resident, or repeated.
   */
  append(ids: ArrayLike<number>, token: number): number {
    const k = ids.length;
    if (k > this.free) throw new NeuronMatrixFullError(this.layer, this.capacity, this.used, k);
    const first = this.used;
    let i = 0, holes = 0;
    try {
      for (; i < k; i++) {
        const id = ids[i]!;
        if (id === -1) { this.ids[first + i] = -1; holes++; continue; }
        this.checkId(id, 'append');
        if (this.rowOf[id]! >= 0) throw new NeuronMatrixError(`layer ${this.layer}: append: neuron ${id} is already resident (row ${this.rowOf[id]})`);
        this.rowOf[id] = first + i;
        this.ids[first + i] = id;
      }
    } catch (e) {
      for (let j = 0; j < i; j++) { // undo
        const id = this.ids[first + j]!;
        if (id >= 0) this.rowOf[id] = -1;
        this.ids[first + j] = -1;
      }
      throw e;
    }
    for (i = 0; i < k; i++) if (ids[i]! >= 0) this.lastUsed[ids[i]!] = token;
    this.used += k;
    this.placeholders += holes;
    this.stats.appended += k;
    return first;
  }

  /**
   * The bytes of every appended row have landed. Deletes the placeholder rows (compaction as in
   * remove()); returns the number of rows copied for that (0 without placeholders).
   */
  commit(): number {
    const from = this.filled;
    this.filled = this.used;
    if (this.placeholders === 0) return 0;
    const del = this.scratch;
    let d = 0;
    for (let r = from; r < this.used; r++) if (this.ids[r] === -1) { this.dead[r] = 1; del[d++] = r; }
    this.placeholders = 0;
    return this.compact(d, true);
  }

  /** Forgets the rows appended since the last commit (their reads failed); returns how many. */
  rollback(): number {
    const k = this.used - this.filled;
    for (let r = this.filled; r < this.used; r++) {
      const id = this.ids[r]!;
      if (id >= 0) this.rowOf[id] = -1;
      this.ids[r] = -1;
    }
    this.used = this.filled;
    this.placeholders = 0;
    this.stats.rolledBack += k;
    return k;
  }

  /**
   * Deletes the neurons `ids` (each resident; duplicates count once). The holes that fall below
   * the new n are filled with the valid rows at or above it (ascending onto ascending, so runs of
   * rows move with one copyWithin each); no other row moves. Returns the number of rows copied.
   */
  remove(ids: ArrayLike<number>): number {
    if (this.filled < this.used) throw new NeuronMatrixError(`layer ${this.layer}: remove with ${this.used - this.filled} appended rows not committed (their reads may be in flight)`);
    const del = this.scratch;
    let d = 0;
    try {
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i]!;
        this.checkId(id, 'remove');
        const r = this.rowOf[id]!;
        if (r < 0) throw new NeuronMatrixError(`layer ${this.layer}: remove: neuron ${id} is not resident`);
        if (this.dead[r]) continue;
        this.dead[r] = 1;
        del[d++] = r;
      }
    } catch (e) {
      for (let i = 0; i < d; i++) this.dead[del[i]!] = 0;
      throw e;
    }
    return this.compact(d);
  }

  /** Rows del[0..d) are marked dead: fill the holes below n − d from the top, update maps. */
  private compact(d: number, placeholders = false): number {
    const del = this.scratch;
    const src = this.scratch2;
    const newN = this.used - d;
    // holes below newN, ascending
    let h = 0;
    for (let i = 0; i < d; i++) {
      const r = del[i]!;
      const id = this.ids[r]!;
      if (id >= 0) this.rowOf[id] = -1;
      if (r < newN) del[h++] = r;
    }
    const holes = del.subarray(0, h);
    holes.sort();
    // live rows at or above newN, ascending: exactly h of them
    let s = 0;
    for (let r = newN; r < this.used; r++) if (!this.dead[r]) src[s++] = r;
    if (s !== h) throw new Error(`internal: ${h} holes but ${s} rows to move`);
    const rb = this.recordBytes;
    for (let i = 0; i < h;) {
      let j = i + 1; // extend while both holes and sources are consecutive: one copy per run
      while (j < h && holes[j] === holes[j - 1]! + 1 && src[j] === src[j - 1]! + 1) j++;
      this.region.copyWithin(holes[i]! * rb, src[i]! * rb, (src[j - 1]! + 1) * rb);
      for (let q = i; q < j; q++) {
        const id = this.ids[src[q]!]!;
        this.ids[holes[q]!] = id;
        this.rowOf[id] = holes[q]!;
      }
      i = j;
    }
    for (let r = 0; r < h; r++) this.dead[holes[r]!] = 0;
    for (let r = newN; r < this.used; r++) { this.dead[r] = 0; this.ids[r] = -1; }
    this.used = newN;
    this.filled = newN;
    if (placeholders) this.stats.dropped += d;
    else this.stats.removed += d;
    this.stats.moved += h;
    this.stats.movedBytes += h * rb;
    return h;
  }

  /** Deletes what the policy chooses for token `token`; returns the number of neurons deleted. */
  evict(token: number): number {
    const k = this.policy.victims(this, token, this.victimsBuf);
    if (k === 0) return 0;
    this.remove(this.victimsBuf.subarray(0, k));
    return k;
  }

  /**
   * Frees at least `k` rows: deletes the least recently used resident neurons not used at `token`
   * (oldest first). Throws NeuronMatrixFullError (nothing deleted) if even that cannot free k rows.
   * Returns the number deleted.
   */
  evictLRU(k: number, token: number): number {
    const need = k - this.free;
    if (need <= 0) return 0;
    const cand: number[] = [];
    for (let r = 0; r < this.used; r++) if (this.lastUsed[this.ids[r]!]! < token) cand.push(this.ids[r]!);
    if (cand.length < need) throw new NeuronMatrixFullError(this.layer, this.capacity, this.used - cand.length, k);
    cand.sort((a, b) => this.lastUsed[a]! - this.lastUsed[b]! || a - b);
    this.remove(cand.slice(0, need));
    return need;
  }

  /** Consistency check of ids/rowOf/n (tests, debugging); throws on the first violation. */
  check(): void {
    let resident = 0;
    for (let id = 0; id < this.nFF; id++) {
      const r = this.rowOf[id]!;
      if (r < 0) continue;
      resident++;
      if (r >= this.used || this.ids[r] !== id) throw new Error(`internal: rowOf[${id}] = ${r} but ids[${r}] = ${this.ids[r]} (n ${this.used})`);
    }
    let holes = 0;
    for (let r = 0; r < this.used; r++) {
      if (this.ids[r] !== -1) continue;
      if (r < this.filled) throw new Error(`internal: placeholder at committed row ${r}`);
      holes++;
    }
    if (resident + holes !== this.used) throw new Error(`internal: ${resident} resident ids and ${holes} placeholders but n = ${this.used}`);
  }
}
