// The memory pool: one ledger of everything the process holds against `--memory`, and the KV page
// allocator that lends parts of it to sequences on demand.
//
// WebAssembly arenas are fixed-size shared memories with a bump allocator (kernels/Arena): the
// pool does not move bytes, it accounts for them. The up-front check is planBudget (budget.ts):
// Model.load runs it before any arena exists and refuses a --memory too small with a BudgetError.
// The pool is the ledger kept afterwards: each part (weights, activations, page tables, KV pages,
// flash read slots, neuron matrices, the runtime) is charged once, after the arenas are laid out
// and the weights loaded, with the sizes actually used. A charge that would pass the budget throws
// PoolFullError, but by then the bytes are already allocated: it reports a plan that undercounted
// (load fails and releases everything), it does not prevent the allocation. The dynamic part is the
// KV cache: its pages are charged as a whole (the pool's region in the arenas) and handed out page
// by page (pages.ts); stats() shows how many are in use.
// audit() compares the arenas' allocated bytes with what was charged to them, so an allocation
// that bypassed the plan shows up as unaccounted bytes.
import { PageAllocator, type PageStats } from './pages.js';
import { BudgetError, fmtGB } from './budget.js';

/** A part does not fit what is left of the budget (a BudgetError: the user's --memory is too small). */
export class PoolFullError extends BudgetError {
  constructor(message: string, readonly part: PoolPart, readonly bytes: number, readonly charged: number, readonly budget: number) {
    super(message);
    this.name = 'PoolFullError';
  }
}

export type PoolPart = 'runtime' | 'weights' | 'activations' | 'pageTables' | 'kvPages' | 'slots' | 'neuronCache' | 'arenaReserved';

/** Parts that live inside the WASM arenas (the runtime does not). */
const IN_ARENAS: readonly PoolPart[] = ['weights', 'activations', 'pageTables', 'kvPages', 'slots', 'neuronCache', 'arenaReserved'];

/** What audit() needs of an arena (kernels/Arena satisfies it). */
export interface ArenaLike {
  readonly capacity: number; // bytes
  readonly bytesUsed: number; // bytes handed out by its allocator (including its reserved first 64 KiB)
}

export interface PoolStats {
  budget: number | null; // bytes; null = no --memory given
  charged: number; // Σ parts
  parts: Record<PoolPart, number>;
  kv: PageStats | null;
  /** bytes of the KV pool in use (used pages × page bytes over all layers) */
  kvBytesInUse: number;
}

export class MemoryPool {
  private readonly parts: Record<PoolPart, number> = {
    runtime: 0, weights: 0, activations: 0, pageTables: 0, kvPages: 0, slots: 0, neuronCache: 0, arenaReserved: 0,
  };
  private total = 0;
  kv: PageAllocator | undefined;
  /** bytes of one page over all layers (K and V) */
  kvPageBytes = 0;

  constructor(readonly budget: number | undefined) {
    if (budget !== undefined && !(budget > 0)) throw new RangeError(`memory pool budget must be > 0, got ${budget}`);
  }

  /** Accounts `bytes` to `part`; PoolFullError when the budget cannot hold it. */
  charge(part: PoolPart, bytes: number): void {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`pool charge ${part}: bad size ${bytes}`);
    if (this.budget !== undefined && this.total + bytes > this.budget) {
      throw new PoolFullError(`memory budget full: ${part} needs ${fmtGB(bytes)}, ${fmtGB(this.total)} of ${fmtGB(this.budget)} already planned`,
        part, bytes, this.total, this.budget);
    }
    this.parts[part] += bytes;
    this.total += bytes;
  }

  /** Creates the KV page allocator over `pages` pages and charges their bytes. */
  attachKV(pages: number, pageSize: number, pageBytesAllLayers: number): PageAllocator {
    this.charge('kvPages', pages * pageBytesAllLayers);
    this.kv = new PageAllocator(pages, pageSize);
    this.kvPageBytes = pageBytesAllLayers;
    return this.kv;
  }

  get charged(): number {
    return this.total;
  }

  /** Budget left after every charge (Infinity without a budget). */
  get left(): number {
    return this.budget === undefined ? Infinity : this.budget - this.total;
  }

  stats(): PoolStats {
    const kv = this.kv?.stats() ?? null;
    return { budget: this.budget ?? null, charged: this.total, parts: { ...this.parts }, kv, kvBytesInUse: kv ? kv.used * this.kvPageBytes : 0 };
  }

  /**
   * Arena bytes handed out vs charged to arena parts. `unaccounted` > 0 means something allocated
   * arena memory outside the plan (alignment padding between parts is counted there too: a few KiB);
   * `capacity` is what the arenas reserve in total.
   */
  audit(arenas: Iterable<ArenaLike>): { allocated: number; charged: number; unaccounted: number; capacity: number } {
    let allocated = 0;
    let capacity = 0;
    for (const a of arenas) {
      allocated += a.bytesUsed;
      capacity += a.capacity;
    }
    const charged = IN_ARENAS.reduce((s, p) => s + this.parts[p], 0);
    return { allocated, charged, unaccounted: allocated - charged, capacity };
  }
}
