// The paper's "hybrid" baseline: every token reads each layer's whole FFN (all row-column bundles)
// from flash with O_DIRECT into one of two slots per arena (alternate layers), so layer l+1 is read
// while layer l computes. Implements model/'s FFNSource.
import type { Arena } from '../kernels/index.js';
import type { FFNSource } from '../model/llama.js';
import { ALIGN, type DirectReader, type ReadStats } from './io.js';

export interface LayerSlot {
  arena: Arena;
  off: number; // byte offset of the slot in the arena (4 KiB aligned)
}

export interface LayerSourceStats {
  bytes: number; // bytes read from flash
  reads: number; // read calls issued (after coalescing / splitting)
  layerReads: number; // whole-layer loads
  ioMs: number; // sum of per-layer read wall times (overlapping compute)
}

export class WholeLayerSource implements FFNSource {
  readonly stats: LayerSourceStats = { bytes: 0, reads: 0, layerReads: 0, ioMs: 0 };
  private readonly pending = new Map<number, Promise<void>>();
  private readonly inSlot = new Map<number, number>(); // slot key → layer whose records it holds
  private failed: Error | undefined;

  /**
   * @param slotOf layer → its slot (two layers sharing a slot must never be needed at once)
   * @param fileOffset layer → absolute file offset of its record 0 (4 KiB aligned)
   * @param bytes bytes to read per layer (records, rounded up to 4 KiB)
   */
  constructor(
    private readonly reader: DirectReader,
    private readonly slotOf: (l: number) => LayerSlot,
    private readonly fileOffset: (l: number) => number,
    private readonly bytes: number,
  ) {
    if (bytes % ALIGN !== 0) throw new RangeError(`layer read of ${bytes} bytes is not a multiple of ${ALIGN}`);
  }

  /** A number naming the slot (arena index, byte offset < 4 GiB): no string built per layer and token. */
  private key(l: number): number {
    const s = this.slotOf(l);
    return s.arena.index * 2 ** 32 + s.off;
  }

  prefetch(l: number, busy: number): void {
    if (this.pending.has(l)) return;
    const k = this.key(l);
    if (busy >= 0 && this.key(busy) === k) return; // that slot is in use by the layer computing now
    // another layer's read into this slot has not been consumed yet: do not race it
    for (const other of this.pending.keys()) if (other !== l && this.key(other) === k) return;
    this.inSlot.set(k, l);
    const slot = this.slotOf(l);
    const p = this.reader
      .read([{ fileOffset: this.fileOffset(l), length: this.bytes, dst: slot.arena.u8(slot.off, this.bytes) }])
      .then((st: ReadStats) => {
        this.stats.bytes += st.bytes;
        this.stats.reads += st.reads;
        this.stats.layerReads++;
        this.stats.ioMs += st.wallMs;
      });
    // remember the first failure; ready() rethrows it for the layer that needs the data
    p.catch((e: Error) => { this.failed ??= e; });
    this.pending.set(l, p);
  }

  async ready(l: number): Promise<void> {
    if (!this.pending.has(l)) this.prefetch(l, -1);
    const p = this.pending.get(l);
    if (!p) throw new Error(`internal: layer ${l}'s slot is still held by another layer's unconsumed read`);
    try {
      await p;
    } finally {
      // records are consumed by this token's FFN; the next token reads them again (hybrid mode)
      this.pending.delete(l);
    }
    if (this.inSlot.get(this.key(l)) !== l) throw new Error(`internal: layer ${l}'s slot was reused before its FFN ran`);
  }

  get error(): Error | undefined {
    return this.failed;
  }
}
