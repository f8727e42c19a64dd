// KV cache pages (as vLLM's PagedAttention): the KV pool is cut into fixed-size pages of
// `pageSize` positions; a sequence holds a page table (page ids in position order) and takes a page
// from the free list each time it crosses a page boundary, and gives them all back when it ends.
//
// Admission is by reservation: a sequence that may grow to n positions reserves ceil(n / pageSize)
// pages when it opens (a count, not specific pages) and allocates them as it grows. So a running
// sequence never finds the pool empty mid-generation, no two sequences can deadlock waiting for each
// other's pages, and pages are still only taken when used (a sequence that stops early never takes
// the rest). What a new sequence may reserve: pages − Σ reservations. This file is pure bookkeeping
// (ids and counts); where a page lives in memory is the model's business.

export class KVBudgetError extends Error {
  constructor(message: string, readonly needPages: number, readonly freePages: number) {
    super(message);
    this.name = 'KVBudgetError';
  }
}

export interface PageStats {
  pageSize: number; // positions per page
  pages: number; // pages in the pool
  used: number; // pages allocated to sequences
  reserved: number; // pages promised to open sequences but not allocated yet
  free: number; // pages − used − reserved: what a new sequence may reserve
  peakUsed: number;
  sequences: number; // open reservations
}

/** One sequence's claim on the pool: up to `quota` pages, `ids` allocated so far (position order). */
export class PageLease {
  readonly ids: number[] = [];
  private closed = false;
  /** @internal use PageAllocator.reserve */
  constructor(private readonly owner: PageAllocator, readonly quota: number) {}

  get isClosed(): boolean {
    return this.closed;
  }

  /** Takes one more page (the page for positions [ids.length·pageSize, +pageSize)). */
  grow(): number {
    if (this.closed) throw new KVBudgetError('KV lease is closed', 1, 0);
    if (this.ids.length >= this.quota) {
      throw new KVBudgetError(`sequence outgrew its KV reservation of ${this.quota} pages`, this.ids.length + 1, this.quota);
    }
    const id = this.owner.take();
    this.ids.push(id);
    return id;
  }

  /** Returns every page but keeps the reservation (the sequence starts again from position 0). */
  clear(): void {
    for (const id of this.ids) this.owner.give(id);
    this.ids.length = 0;
  }

  /** Returns the pages and the reservation. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.clear();
    this.closed = true;
    this.owner.unreserve(this.quota);
  }
}

export class PageAllocator {
  private readonly freeIds: number[]; // stack of free page ids (the last freed is reused first: warm in cache)
  private reservedTotal = 0; // Σ quota of open leases
  private leases = 0;
  private peak = 0;
  private readonly listeners = new Set<() => void>();

  constructor(readonly pages: number, readonly pageSize: number) {
    if (!Number.isInteger(pages) || pages < 1) throw new RangeError(`KV pool needs at least 1 page, got ${pages}`);
    if (!Number.isInteger(pageSize) || pageSize < 1) throw new RangeError(`KV page size must be an integer ≥ 1, got ${pageSize}`);
    // descending, so pop() gives 0, 1, 2, ...: one sequence alone gets the contiguous layout
    this.freeIds = Array.from({ length: pages }, (_, i) => pages - 1 - i);
  }

  pagesFor(positions: number): number {
    return Math.ceil(positions / this.pageSize);
  }

  get used(): number {
    return this.pages - this.freeIds.length;
  }

  /** Pages a new sequence could reserve now. */
  get available(): number {
    return this.pages - this.reservedTotal;
  }

  /** Reserves room for `positions`; undefined when the pool cannot promise it now. Throws
   * KVBudgetError when it never could (more pages than the whole pool). */
  tryReserve(positions: number): PageLease | undefined {
    const need = this.pagesFor(Math.max(1, positions));
    if (need > this.pages) {
      throw new KVBudgetError(`KV budget full: ${positions} positions need ${need} pages of ${this.pageSize}, the pool has ${this.pages}`, need, this.available);
    }
    if (need > this.available) return undefined;
    this.reservedTotal += need;
    this.leases++;
    return new PageLease(this, need);
  }

  /** tryReserve, or a KVBudgetError saying how much is missing. */
  reserve(positions: number): PageLease {
    const l = this.tryReserve(positions);
    if (l) return l;
    const need = this.pagesFor(Math.max(1, positions));
    throw new KVBudgetError(`KV budget full: ${need} pages needed, ${this.available} of ${this.pages} free (${this.leases} sequences hold the rest)`, need, this.available);
  }

  /** Called (synchronously) whenever pages or reservations come back. */
  onRelease(f: () => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  stats(): PageStats {
    const used = this.used;
    return {
      pageSize: this.pageSize, pages: this.pages, used, reserved: this.reservedTotal - used,
      free: this.pages - this.reservedTotal, peakUsed: this.peak, sequences: this.leases,
    };
  }

  /** @internal */
  take(): number {
    const id = this.freeIds.pop();
    // cannot happen while Σ allocated ≤ Σ quota ≤ pages; kept as a guard against bookkeeping bugs
    if (id === undefined) throw new KVBudgetError('KV pool exhausted', 1, 0);
    this.peak = Math.max(this.peak, this.used);
    return id;
  }

  /** @internal */
  give(id: number): void {
    this.freeIds.push(id);
  }

  /** @internal */
  unreserve(n: number): void {
    this.reservedTotal -= n;
    this.leases--;
    for (const f of [...this.listeners]) f();
  }
}
