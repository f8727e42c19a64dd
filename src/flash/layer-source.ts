// The paper's baselines. Hybrid: every token reads each layer's whole FFN (all row-column bundles)
// from flash with O_DIRECT into one of two slots per arena (alternate layers), so layer l+1 is read
// while layer l computes. Naive: the same for every weight — each layer's attention and FFN, the
// output layer, and the token's embedding row. Implements model/'s FFNSource.
import type { Arena } from '../kernels/index.js';
import type { FFNSource, Span } from '../model/llama.js';
import { ALIGN, type DirectReader, type ReadRequest, type ReadStats } from './io.js';

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

/** Naive mode's embedding rows: one aligned read per token into a small slot of the embedding arena. */
export interface EmbedRows {
  slot: LayerSlot; // ≥ rowBytes rounded up to 4 KiB, + 4 KiB (a row may straddle pages)
  fileOffset: number; // token_embd.weight's offset in the file
  rowBytes: number;
}

export class WholeLayerSource implements FFNSource {
  readonly stats: LayerSourceStats = { bytes: 0, reads: 0, layerReads: 0, ioMs: 0 };
  readonly allWeights: boolean;
  private readonly pending = new Map<number, Promise<void>>();
  private readonly inSlot = new Map<number, number>(); // slot key → layer whose records it holds
  private readonly requests = new Map<number, ReadRequest[]>(); // layer → its reads (built once)
  private failed: Error | undefined;
  private readonly checked = new Set<number>(); // layers whose first read passed firstRead

  /**
   * @param slotOf layer → its slot (two layers sharing a slot must never be needed at once)
   * @param spansOf layer → its aligned reads (hybrid: one, the layer's records from record 0)
   * @param embed naive mode: read each token's embedding row too
   * @param firstRead called with a layer's slot bytes after its first read (integrity checks); a
   *   throw fails that read, so ready() rejects with it
   */
  constructor(
    private readonly reader: DirectReader,
    private readonly slotOf: (l: number) => LayerSlot,
    private readonly spansOf: (l: number) => Span[],
    private readonly embed?: EmbedRows,
    private readonly firstRead?: (l: number, slot: Uint8Array) => void,
  ) {
    this.allWeights = !!embed;
  }

  private requestsOf(l: number): ReadRequest[] {
    let r = this.requests.get(l);
    if (!r) {
      const slot = this.slotOf(l);
      r = this.spansOf(l).map((sp) => {
        if (sp.fileOffset % ALIGN || sp.bytes % ALIGN || sp.slotOffset % ALIGN) throw new RangeError(`layer ${l}: read ${JSON.stringify(sp)} is not ${ALIGN}-byte aligned`);
        return { fileOffset: sp.fileOffset, length: sp.bytes, dst: slot.arena.u8(slot.off + sp.slotOffset, sp.bytes) };
      });
      this.requests.set(l, r);
    }
    return r;
  }

  /** Naive mode: reads the pages holding `token`'s embedding row; resolves to the row's arena offset. */
  async embedRow(token: number): Promise<number> {
    const e = this.embed;
    if (!e) throw new Error('internal: embedRow() without an embedding slot');
    const start = e.fileOffset + token * e.rowBytes;
    const a = Math.floor(start / ALIGN) * ALIGN;
    const len = Math.ceil((start + e.rowBytes) / ALIGN) * ALIGN - a;
    let st: ReadStats;
    try {
      st = await this.reader.read([{ fileOffset: a, length: len, dst: e.slot.arena.u8(e.slot.off, len) }]);
    } catch (err) {
      await this.settle(); // the request stops: leave no layer read in flight behind it (see ready())
      throw err;
    }
    this.stats.bytes += st.bytes;
    this.stats.reads += st.reads;
    this.stats.ioMs += st.wallMs;
    return e.slot.off + (start - a);
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
    const p = this.reader
      .read(this.requestsOf(l))
      .then((st: ReadStats) => {
        this.stats.bytes += st.bytes;
        this.stats.reads += st.reads;
        this.stats.layerReads++;
        this.stats.ioMs += st.wallMs;
        if (this.firstRead && !this.checked.has(l)) {
          const slot = this.slotOf(l);
          const bytes = this.spansOf(l).reduce((s, sp) => Math.max(s, sp.slotOffset + sp.bytes), 0);
          this.firstRead(l, slot.arena.u8(slot.off, bytes));
          this.checked.add(l);
        }
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
    } catch (e) {
      // The request stops with this error. Prefetches of other layers may still be in flight into
      // slots the next request reads into, and an unconsumed one would keep its slot blocked (the
      // next token's layer 0 shares a slot with layer 2): wait for them and forget them.
      this.pending.delete(l);
      await this.settle();
      throw e;
    } finally {
      // records are consumed by this token's FFN; the next token reads them again (hybrid mode)
      this.pending.delete(l);
    }
    if (this.inSlot.get(this.key(l)) !== l) throw new Error(`internal: layer ${l}'s slot was reused before its FFN ran`);
  }

  /**
   * Waits until no read of this source is in flight and forgets every prefetch (their data is not
   * trusted: the next token reads each layer again). Called when a request stops on an error, so
   * that the same model can serve the next one from a clean state.
   */
  async settle(): Promise<void> {
    while (this.pending.size) {
      const ps = [...this.pending.values()];
      this.pending.clear();
      await Promise.allSettled(ps);
    }
    this.inSlot.clear();
  }

  /** Layers whose reads were issued and not yet consumed by ready() (0 after settle()). */
  get pendingLayers(): number {
    return this.pending.size;
  }

  get error(): Error | undefined {
    return this.failed;
  }
}
