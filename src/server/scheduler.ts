// Who runs when. The server only sees the Scheduler interface.
// - KVScheduler (models with a paged KV cache): a request runs as soon as the KV page pool can
//   reserve its prompt + max_tokens positions and a sequence slot is free; running sequences are
//   decoded round-robin, token by token (each generation yields to the event loop between tokens
//   and the engine runs one forward pass at a time, first come first served). Requests that find no
//   room wait in a FIFO queue, and beyond maxQueue get 429 with Retry-After.
// - FifoScheduler: `slots` requests at a time, the rest in a FIFO queue (models without paged KV).
import { CancelledError, QueueFullError } from './errors.js';
import type { KVPageStats, ServedSequence } from './types.js';

/** A running request's hold on the model; release() exactly once when it is done. */
export interface Slot {
  release(): void;
  /** Called once per generated token (feeds the Retry-After estimate before any request finished). */
  tick?(): void;
  /** The KV sequence the request must run in (KVScheduler). */
  readonly sequence?: ServedSequence;
}

export interface Scheduler {
  /** Waits for a slot for a request of up to `positions` KV positions (prompt + completion).
   * Rejects at once with QueueFullError when the queue is full, and with CancelledError when
   * `signal` fires while waiting (the request leaves the queue). */
  acquire(signal: AbortSignal, positions?: number): Promise<Slot>;
  readonly waiting: number; // requests queued
  readonly running: number; // requests holding a slot
  readonly slots: number; // sequences that can run at once
}

/**
 * How long a request holds a slot (ms), for Retry-After: positions (prompt + max_tokens) × the
 * running mean of ms between two tokens of one request (seen through Slot.tick; it includes the
 * round-robin with the other running requests, and prompts are processed a token at a time too).
 * Before any token was seen (the server's warm-up makes one) it falls back to the mean hold of the
 * finished requests, and to 1 s per request before any finished.
 */
class HoldTimer {
  avgMs = 1000;
  private n = 0;
  private tokenMs = 0; // running mean of ms between consecutive tokens of a request (0: none seen)
  add(ms: number): void {
    this.avgMs = this.n === 0 ? ms : 0.8 * this.avgMs + 0.2 * ms;
    this.n++;
  }
  token(ms: number): void {
    this.tokenMs = this.tokenMs === 0 ? ms : 0.9 * this.tokenMs + 0.1 * ms;
  }
  /** Seconds until a request behind `queued` others would likely start, `running` at a time;
   *  meanPositions: mean KV positions of the running and queued requests (for the estimate). */
  retryAfter(queued: number, running: number, meanPositions = 0): number {
    const hold = this.tokenMs > 0 && meanPositions > 0 ? meanPositions * this.tokenMs : this.avgMs;
    return Math.max(1, Math.ceil(((queued + 1) * hold) / Math.max(1, running) / 1000));
  }
  /** A tick() for one slot: measures the gaps between its successive tokens. */
  ticker(): () => void {
    let last = -1;
    return () => {
      const t = performance.now();
      if (last >= 0) this.token(t - last);
      last = t;
    };
  }
}

/** What KVScheduler needs of the model. */
export interface KVSource {
  tryOpenSequence(positions: number): ServedSequence | undefined;
  onKVRelease(f: () => void): () => void;
  kvPages(): KVPageStats;
}

interface KVWaiter {
  positions: number;
  grant: (s: Slot) => void;
  fail: (e: Error) => void;
  signal: AbortSignal;
  onAbort: () => void;
}

export class KVScheduler implements Scheduler {
  private queue: KVWaiter[] = [];
  private active = 0;
  private readonly timer = new HoldTimer();
  private runningPositions = 0; // KV positions reserved by the running requests
  private readonly unsubscribe: () => void;

  constructor(private readonly src: KVSource, readonly maxQueue: number) {
    this.unsubscribe = src.onKVRelease(() => this.pump());
  }

  get waiting(): number {
    return this.queue.length;
  }

  get running(): number {
    return this.active;
  }

  get slots(): number {
    return this.src.kvPages().slots;
  }

  retryAfterSeconds(): number {
    const n = this.active + this.queue.length;
    const positions = this.runningPositions + this.queue.reduce((sum, w) => sum + w.positions, 0);
    return this.timer.retryAfter(this.queue.length, this.active, n > 0 ? positions / n : 0);
  }

  acquire(signal: AbortSignal, positions = 1): Promise<Slot> {
    if (signal.aborted) return Promise.reject(new CancelledError());
    if (this.queue.length === 0) {
      const seq = this.src.tryOpenSequence(positions);
      if (seq) return Promise.resolve(this.grant(seq, positions));
    }
    if (this.queue.length >= this.maxQueue) {
      const k = this.src.kvPages();
      const code = k.sequences < k.slots ? 'kv_pool_full' : 'queue_full';
      return Promise.reject(new QueueFullError(this.retryAfterSeconds(), this.queue.length, code));
    }
    return new Promise<Slot>((resolve, reject) => {
      const w: KVWaiter = {
        positions, grant: resolve, fail: reject, signal,
        onAbort: () => {
          const i = this.queue.indexOf(w);
          if (i >= 0) this.queue.splice(i, 1);
          reject(new CancelledError());
          this.pump(); // it may have been the head blocking smaller requests
        },
      };
      signal.addEventListener('abort', w.onAbort, { once: true });
      this.queue.push(w);
    });
  }

  /** Stops listening to the model (the server is closing). */
  close(): void {
    this.unsubscribe();
  }

  private grant(seq: ServedSequence, positions: number): Slot {
    this.active++;
    this.runningPositions += positions;
    const t0 = performance.now();
    let done = false;
    return {
      sequence: seq,
      tick: this.timer.ticker(),
      release: () => {
        if (done) return;
        done = true;
        this.active--;
        this.runningPositions -= positions;
        this.timer.add(performance.now() - t0);
        seq.close(); // idempotent; its pages wake the queue through onKVRelease
        this.pump();
      },
    };
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const w = this.queue[0]!;
      let seq: ServedSequence | undefined;
      try {
        seq = this.src.tryOpenSequence(w.positions);
      } catch (e) {
        this.queue.shift();
        w.signal.removeEventListener('abort', w.onAbort);
        w.fail(e as Error);
        continue;
      }
      if (!seq) return; // first come first served
      this.queue.shift();
      w.signal.removeEventListener('abort', w.onAbort);
      w.grant(this.grant(seq, w.positions));
    }
  }
}

interface Waiter {
  grant: (s: Slot) => void;
  fail: (e: Error) => void;
  signal: AbortSignal;
  onAbort: () => void;
}

export class FifoScheduler implements Scheduler {
  private queue: Waiter[] = [];
  private active = 0;
  private avgMs = 1000; // running mean of slot hold times, for Retry-After
  private held = 0;

  /** maxQueue: requests that may wait (not counting the running ones). */
  constructor(readonly maxQueue: number, readonly slots = 1) {}

  get waiting(): number {
    return this.queue.length;
  }

  get running(): number {
    return this.active;
  }

  /** Seconds until a new request would likely start: queue length × mean request time / slots. */
  retryAfterSeconds(): number {
    return Math.max(1, Math.ceil(((this.queue.length + 1) * this.avgMs) / this.slots / 1000));
  }

  acquire(signal: AbortSignal): Promise<Slot> {
    if (signal.aborted) return Promise.reject(new CancelledError());
    if (this.active < this.slots && this.queue.length === 0) return Promise.resolve(this.grant());
    if (this.queue.length >= this.maxQueue) return Promise.reject(new QueueFullError(this.retryAfterSeconds(), this.queue.length));
    return new Promise<Slot>((resolve, reject) => {
      const w: Waiter = {
        grant: resolve, fail: reject, signal,
        onAbort: () => {
          const i = this.queue.indexOf(w);
          if (i >= 0) this.queue.splice(i, 1);
          reject(new CancelledError());
        },
      };
      signal.addEventListener('abort', w.onAbort, { once: true });
      this.queue.push(w);
    });
  }

  private grant(): Slot {
    this.active++;
    const t0 = performance.now();
    let done = false;
    return {
      release: () => {
        if (done) return;
        done = true;
        this.active--;
        const ms = performance.now() - t0;
        this.avgMs = this.held === 0 ? ms : 0.8 * this.avgMs + 0.2 * ms;
        this.held++;
        this.next();
      },
    };
  }

  private next(): void {
    while (this.active < this.slots && this.queue.length > 0) {
      const w = this.queue.shift()!;
      w.signal.removeEventListener('abort', w.onAbort);
      w.grant(this.grant());
    }
  }
}
