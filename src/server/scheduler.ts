// Who runs when. Today the engine has one KV cache, so one sequence runs at a time and the others
// wait in a FIFO queue (FifoScheduler, 1 slot). The server only sees the Scheduler interface: a
// scheduler over a paged KV cache can hand out several slots at once (one per sequence) and
// interleave their decode steps, without the HTTP side changing.
import { CancelledError, QueueFullError } from './errors.js';

/** A running request's hold on the model; release() exactly once when it is done. */
export interface Slot {
  release(): void;
}

export interface Scheduler {
  /** Waits for a slot. Rejects at once with QueueFullError when the queue is full, and with
   * CancelledError when `signal` fires while waiting (the request leaves the queue). */
  acquire(signal: AbortSignal): Promise<Slot>;
  readonly waiting: number; // requests queued
  readonly running: number; // requests holding a slot
  readonly slots: number; // sequences that can run at once
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
