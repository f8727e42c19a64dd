// Sequences over the paged KV cache: each sequence has a page-table slot (its table lives in every
// layer arena, where the attention kernel reads it) and a page lease from memory/pages.ts (a
// reservation of the pages it may grow to, allocated one page at a time as it crosses page
// boundaries). Closing a sequence (end, error, cancellation) returns its pages, its reservation and
// its slot at once, and wakes the sequences waiting for room, first come first served.
import { KVBudgetError, type PageAllocator, type PageLease, type PageStats } from '../memory/pages.js';
import { kvView, setPage, type KVCache, type KVPool, type LlamaWeights } from '../model/llama.js';

/** Waiting for KV room ended because the caller's signal fired. */
export class KVWaitCancelledError extends Error {
  constructor() {
    super('cancelled while waiting for KV cache pages');
    this.name = 'KVWaitCancelledError';
  }
}

/** One sequence's KV state: its view of the pool, its next position and its pages. */
export class Sequence {
  /** next position to compute (= tokens in the cache) */
  pos = 0;
  /** this sequence's copy of the logits of its last step [vocab] (the model's own buffer is shared) */
  readonly logits: Float32Array;
  private closed = false;

  /** @internal use PagedKV.tryOpen / open */
  constructor(readonly view: KVCache, private readonly lease: PageLease, private readonly slot: number,
    private readonly owner: PagedKV, readonly maxPositions: number, vocab: number) {
    this.logits = new Float32Array(vocab);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Pages held now. */
  get pages(): readonly number[] {
    return this.lease.ids;
  }

  /** Makes room for position `pos`: allocates the pages up to the one that holds it. */
  ensure(pos: number): void {
    if (this.closed) throw new KVBudgetError('the sequence is closed', 1, 0);
    if (pos >= this.maxPositions) throw new KVBudgetError(`position ${pos} beyond the sequence's ${this.maxPositions} reserved positions`, 1, 0);
    const pi = Math.floor(pos / this.view.pageSize);
    while (this.lease.ids.length <= pi) {
      const id = this.lease.grow();
      setPage(this.view, this.lease.ids.length - 1, id);
    }
  }

  /** Starts again at position 0 and returns the pages (the reservation stays). */
  reset(): void {
    for (let i = 0; i < this.lease.ids.length; i++) setPage(this.view, i, -1);
    this.lease.clear();
    this.pos = 0;
  }

  /** Returns pages, reservation and page-table slot. Idempotent. */
  close(): void {
    if (this.closed) return;
    for (let i = 0; i < this.lease.ids.length; i++) setPage(this.view, i, -1);
    this.closed = true;
    this.owner.releaseSlot(this.slot);
    this.lease.close(); // wakes waiters: slot and pages are both back by now
  }
}

interface Waiter {
  positions: number;
  resolve: (s: Sequence) => void;
  reject: (e: Error) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

export class PagedKV {
  private readonly freeSlots: number[];
  private readonly queue: Waiter[] = [];
  private open_ = 0;

  constructor(private readonly w: LlamaWeights, readonly pool: KVPool, readonly pages: PageAllocator,
    /** positions one sequence may hold (the model's ctx) */ readonly maxPositions: number, private readonly vocab: number) {
    // descending, so pop() gives slot 0 first
    this.freeSlots = Array.from({ length: pool.slots }, (_, i) => pool.slots - 1 - i);
    pages.onRelease(() => this.pump());
  }

  /** Sequences that can be open at once (page tables per arena). */
  get slots(): number {
    return this.pool.slots;
  }

  get sequences(): number {
    return this.open_;
  }

  get waiting(): number {
    return this.queue.length;
  }

  stats(): PageStats & { slots: number; waiting: number } {
    return { ...this.pages.stats(), slots: this.pool.slots, waiting: this.queue.length };
  }

  private check(positions: number): void {
    if (!Number.isInteger(positions) || positions < 1) throw new RangeError(`a sequence needs ≥ 1 position, got ${positions}`);
    if (positions > this.maxPositions) throw new KVBudgetError(`${positions} positions exceed the context of ${this.maxPositions}`, this.pages.pagesFor(positions), this.pages.available);
  }

  /** Opens a sequence of up to `positions` now, or undefined when the pages or slots are taken
   * (KVBudgetError when it could never fit). Does not queue and does not pass waiting callers. */
  tryOpen(positions: number): Sequence | undefined {
    this.check(positions);
    if (this.queue.length > 0) return undefined;
    return this.openNow(positions);
  }

  private openNow(positions: number): Sequence | undefined {
    if (this.freeSlots.length === 0) return undefined;
    const lease = this.pages.tryReserve(positions);
    if (!lease) return undefined;
    const slot = this.freeSlots.pop()!;
    this.open_++;
    return new Sequence(kvView(this.w, this.pool, slot), lease, slot, this, positions, this.vocab);
  }

  /** Opens a sequence, waiting (FIFO) for pages and a slot; rejects with KVWaitCancelledError when
   * `signal` fires first. */
  open(positions: number, signal?: AbortSignal): Promise<Sequence> {
    this.check(positions);
    if (signal?.aborted) return Promise.reject(new KVWaitCancelledError());
    const now = this.tryOpen(positions);
    if (now) return Promise.resolve(now);
    return new Promise<Sequence>((resolve, reject) => {
      const w: Waiter = { positions, resolve, reject, signal };
      if (signal) {
        w.onAbort = () => {
          const i = this.queue.indexOf(w);
          if (i >= 0) this.queue.splice(i, 1);
          reject(new KVWaitCancelledError());
          this.pump(); // the head may have been the one blocking others
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.queue.push(w);
    });
  }

  /** Calls f whenever pages or slots come back (the server's scheduler pumps its own queue). */
  onRelease(f: () => void): () => void {
    return this.pages.onRelease(f);
  }

  /** @internal Sequence.close */
  releaseSlot(slot: number): void {
    this.freeSlots.push(slot);
    this.open_--;
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const w = this.queue[0]!;
      const s = this.openNow(w.positions);
      if (!s) return; // first come first served: later, smaller requests wait behind the head
      this.queue.shift();
      if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
      w.resolve(s);
    }
  }
}
