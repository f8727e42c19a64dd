// Direct reads from flash into arena memory (issue 3, item 2).
//
// O_DIRECT skips the page cache, so the --memory budget is real and bytes read are bytes that came
// off the device. It needs the file offset, the length and the destination address aligned to the
// logical block size; we require 4096 B (ALIGN) for all three, which covers 512 B and 4 KiB
// devices. Node Buffers are not page-aligned (EINVAL); WebAssembly.Memory buffers are (64 KiB
// pages), so destinations are views into arena memory. Only byteOffset can be checked here, so a
// misaligned base buffer shows up as EINVAL on a read, which we report as FlashIOError (never as a
// silent fallback: the fallback decision is made once, by a probe read into our own wasm page).
//
// Async I/O: each read is one fs.read, which libuv runs on its threadpool (UV_THREADPOOL_SIZE
// threads, default 4, so at most that many reads are really in flight) unless the process was
// started with UV_USE_IO_URING=1, which Node 20's libuv (1.46) honours at event-loop creation
// (setting it from JS later has no effect) by submitting fs reads through an SQPOLL io_uring.
// fs.read into a SharedArrayBuffer-backed view works either way (the kernel writes the shared
// memory; nothing is copied). Both variables must be set before node starts its pool, which is
// why bin/flashlm.cjs is CommonJS and sets UV_THREADPOOL_SIZE=64.
// Which path, measured on this machine (2 vCPUs, ext4 on virtio): io_uring wins raw IOPS for tiny
// reads with 4 threads as the alternative (4 KiB, 32 in flight: 53k vs 12.6k IOPS), but its SQPOLL
// kernel thread spins on a core while reads keep coming (top: iou-sqp at ~94% CPU during a hybrid
// run), and that core is one of the two the kernels use. On CodeLlama-13B at a 50% budget the
// threadpool with 64 threads gave hybrid 0.208 → 0.275 tokens/s and sparse 0.169 → 0.192 (compute
// 1.87 → 0.63 s/token), see README "I/O path". ioUringActive() tells which path is on.
import * as fs from 'node:fs';

/** Alignment in bytes required of file offsets, lengths and destination addresses. */
export const ALIGN = 4096;

/** Same shape as fs.read with a callback (the fault-injection seam for tests). */
export type ReadFn = (
  fd: number, buffer: Uint8Array, offset: number, length: number, position: number,
  callback: (err: NodeJS.ErrnoException | null, bytesRead: number) => void,
) => void;

/** Same shape as fs.openSync(path, flags). */
export type OpenFn = (path: string, flags: number) => number;

export interface DirectReaderOptions {
  /** Reads kept in flight across all read() calls on this reader (default 32). */
  inFlight?: number;
  /** Alignment of file offsets, lengths and destination addresses, bytes: 4096 (default) or 512
   * (the logical block size of most devices; sparse mode reads single 512-byte-padded records).
   * A device that refuses it makes the probe read fail with EINVAL → buffered reads + warning. */
  align?: 512 | 4096;
  /** Coalesced reads are capped at this many bytes, a multiple of ALIGN (default 1 MiB). */
  maxReadBytes?: number;
  /** false: buffered reads from the start (no warning). Default true. */
  direct?: boolean;
  /** Consecutive retries without progress (EINTR/EAGAIN, zero-progress short reads) before failing (default 16). */
  maxRetries?: number;
  readFn?: ReadFn;
  openFn?: OpenFn;
}

export interface ReadRequest {
  fileOffset: number;
  length: number;
  /** length bytes land at dst[0..length); a view into arena memory. */
  dst: Uint8Array;
}

export interface ReadStats {
  /** Non-empty requests passed in. */
  requests: number;
  /** Coalesced pieces (one per read if nothing was short or retried). */
  pieces: number;
  /** Read calls issued, counting continuations and retries. */
  reads: number;
  bytes: number;
  retries: number;
  shortReads: number;
  wallMs: number;
}

/** A read that failed: names the file, byte offset and length of the failing read. */
export class FlashIOError extends Error {
  constructor(readonly file: string, readonly offset: number, readonly length: number, readonly code: string, detail: string, options?: { cause?: unknown }) {
    super(`${file}: read of ${length} bytes at offset ${offset} failed: ${detail.startsWith(code) ? '' : `${code}: `}${detail}`, options);
    this.name = 'FlashIOError';
  }
}

/** A request that cannot be read directly: misaligned, out of range or not a byte view. */
export class FlashAlignmentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FlashAlignmentError';
  }
}

interface Piece { fileOffset: number; length: number; dst: Uint8Array; batch: Batch }
interface Batch {
  pending: number;
  error?: FlashIOError;
  stats: ReadStats;
  resolve: () => void;
  reject: (e: Error) => void;
}

const RETRYABLE = new Set(['EINTR', 'EAGAIN', 'EWOULDBLOCK']);

function validate(reqs: readonly ReadRequest[], ALIGN: number): void {
  for (let i = 0; i < reqs.length; i++) {
    const r = reqs[i]!;
    const where = `read request ${i} (offset ${r.fileOffset}, length ${r.length})`;
    if (!(r.dst instanceof Uint8Array)) throw new FlashAlignmentError(`${where}: dst must be a Uint8Array view into arena memory`);
    if (!Number.isSafeInteger(r.fileOffset) || r.fileOffset < 0) throw new FlashAlignmentError(`${where}: bad file offset`);
    if (!Number.isSafeInteger(r.length) || r.length < 0) throw new FlashAlignmentError(`${where}: bad length`);
    if (r.length > r.dst.byteLength) throw new FlashAlignmentError(`${where}: dst holds only ${r.dst.byteLength} bytes`);
    if (r.fileOffset % ALIGN) throw new FlashAlignmentError(`${where}: file offset is not a multiple of ${ALIGN}`);
    if (r.length % ALIGN) throw new FlashAlignmentError(`${where}: length is not a multiple of ${ALIGN}`);
    if (r.dst.byteOffset % ALIGN) {
      throw new FlashAlignmentError(`${where}: dst address ${r.dst.byteOffset} is not a multiple of ${ALIGN} (use arena memory, not a Node Buffer)`);
    }
  }
}

/**
 * Sorts by file offset and merges requests adjacent both in the file and in the same destination
 * buffer, up to maxReadBytes; splits requests longer than that. Exported for tests and planners.
 */
export function coalesce(reqs: readonly ReadRequest[], maxReadBytes: number): ReadRequest[] {
  const sorted = reqs.filter((r) => r.length > 0).sort((a, b) => a.fileOffset - b.fileOffset);
  const out: ReadRequest[] = [];
  let cur: { fileOffset: number; length: number; buffer: ArrayBufferLike; byteOffset: number } | undefined;
  const flush = () => {
    if (!cur) return;
    out.push({ fileOffset: cur.fileOffset, length: cur.length, dst: new Uint8Array(cur.buffer, cur.byteOffset, cur.length) });
    cur = undefined;
  };
  for (const r of sorted) {
    let off = 0;
    while (off < r.length) {
      const fileOffset = r.fileOffset + off;
      const byteOffset = r.dst.byteOffset + off;
      const adjacent = cur && cur.buffer === r.dst.buffer && cur.fileOffset + cur.length === fileOffset && cur.byteOffset + cur.length === byteOffset;
      if (adjacent && cur!.length < maxReadBytes) {
        const take = Math.min(r.length - off, maxReadBytes - cur!.length);
        cur!.length += take;
        off += take;
        continue;
      }
      flush();
      const take = Math.min(r.length - off, maxReadBytes);
      cur = { fileOffset, length: take, buffer: r.dst.buffer, byteOffset };
      off += take;
    }
  }
  flush();
  return out;
}

function errno(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? 'EUNKNOWN';
}

/** Threads in libuv's pool (UV_THREADPOOL_SIZE as read at process start; libuv's default is 4):
 *  without io_uring, the reads really in flight. */
export function threadpoolSize(): number {
  return Number(process.env.UV_THREADPOOL_SIZE) || 4;
}

/** True if this process has an io_uring instance open (libuv made one: UV_USE_IO_URING=1 took effect). Linux only. */
export function ioUringActive(): boolean {
  try {
    for (const f of fs.readdirSync('/proc/self/fd')) {
      try {
        if (fs.readlinkSync(`/proc/self/fd/${f}`).includes('io_uring')) return true;
      } catch { /* fd closed meanwhile */ }
    }
  } catch { /* no /proc */ }
  return false;
}

export class DirectReader {
  /** false when O_DIRECT was refused (or not asked for): reads go through the page cache. */
  direct: boolean;
  /** Set when O_DIRECT was asked for and refused; the caller decides whether to print it. */
  warning?: string;
  readonly inFlight: number;
  readonly maxReadBytes: number;
  readonly align: number;
  /** Totals over the reader's life (wallMs sums each read() call's wall time). */
  readonly totals: ReadStats = { requests: 0, pieces: 0, reads: 0, bytes: 0, retries: 0, shortReads: 0, wallMs: 0 };

  private fd: number;
  /** Every fd we opened; closed only in close(), so a read still in flight never sees a reused fd. */
  private readonly fds: number[];
  private readonly queue: Piece[] = [];
  private active = 0;
  private closed = false;
  private idle?: () => void;

  /** File size at open (bytes); reads may run past it only inside the last aligned block. */
  private readonly size: number;

  private constructor(readonly path: string, fd: number, direct: boolean, private readonly readFn: ReadFn, private readonly openFn: OpenFn,
    opts: DirectReaderOptions, private readonly maxRetries: number) {
    this.fd = fd;
    let size = Infinity;
    try {
      size = fs.fstatSync(fd).size;
    } catch { /* injected fds in tests may not be real: no end-of-file allowance */ }
    this.size = size;
    this.fds = [fd];
    this.direct = direct;
    this.align = opts.align ?? ALIGN;
    this.inFlight = opts.inFlight ?? 32;
    this.maxReadBytes = opts.maxReadBytes ?? 1 << 20;
  }

  /**
   * Opens `path` read-only with O_DIRECT (unless opts.direct === false). If open fails with EINVAL,
   * or a 4 KiB probe read at offset 0 into our own page-aligned memory does, the file is reopened
   * buffered and `direct`/`warning` say so.
   */
  static async open(path: string, opts: DirectReaderOptions = {}): Promise<DirectReader> {
    const inFlight = opts.inFlight ?? 32;
    const maxReadBytes = opts.maxReadBytes ?? 1 << 20;
    const maxRetries = opts.maxRetries ?? 16;
    if (opts.align !== undefined && opts.align !== 512 && opts.align !== 4096) throw new RangeError(`align must be 512 or 4096, got ${String(opts.align)}`);
    if (!Number.isInteger(inFlight) || inFlight < 1 || inFlight > 4096) throw new RangeError(`inFlight must be 1..4096, got ${inFlight}`);
    if (!Number.isInteger(maxReadBytes) || maxReadBytes < ALIGN || maxReadBytes % ALIGN || maxReadBytes > 1 << 30) {
      throw new RangeError(`maxReadBytes must be a multiple of ${ALIGN} in ${ALIGN}..1 GiB, got ${maxReadBytes}`);
    }
    if (!Number.isInteger(maxRetries) || maxRetries < 0) throw new RangeError(`maxRetries must be >= 0, got ${maxRetries}`);
    const readFn: ReadFn = opts.readFn ?? (fs.read as unknown as ReadFn);
    const openFn: OpenFn = opts.openFn ?? ((p, f) => fs.openSync(p, f));
    const want = opts.direct !== false && fs.constants.O_DIRECT !== undefined;
    let fd: number;
    let warning: string | undefined;
    let direct = want;
    if (want) {
      try {
        fd = openFn(path, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
      } catch (e) {
        if (errno(e) !== 'EINVAL') throw new FlashIOError(path, 0, 0, errno(e), `open: ${(e as Error).message}`, { cause: e });
        warning = `${path}: the filesystem refuses O_DIRECT (open: EINVAL); using buffered reads, which go through the page cache`;
        direct = false;
        fd = openBuffered(openFn, path);
      }
    } else {
      fd = openBuffered(openFn, path);
    }
    const r = new DirectReader(path, fd, direct, readFn, openFn, opts, maxRetries);
    r.warning = warning;
    if (direct) await r.probe();
    return r;
  }

  private async probe(): Promise<void> {
    // one wasm page: 64 KiB, page-aligned, never a Node Buffer
    const page = new Uint8Array(new WebAssembly.Memory({ initial: 1, maximum: 1 }).buffer, 0, this.align);
    for (let attempt = 0; ; attempt++) {
      try {
        await this.readOnce(this.fd, page, this.align, 0);
        return;
      } catch (e) {
        const code = errno(e);
        if (RETRYABLE.has(code) && attempt < this.maxRetries) continue;
        if (code === 'EINVAL') {
          this.warning = `${this.path}: the filesystem refuses O_DIRECT reads (EINVAL); using buffered reads, which go through the page cache`;
          this.direct = false;
          this.fd = openBuffered(this.openFn, this.path);
          this.fds.push(this.fd);
          return;
        }
        await this.close();
        throw new FlashIOError(this.path, 0, this.align, code, (e as Error).message, { cause: e });
      }
    }
  }

  private readOnce(fd: number, dst: Uint8Array, length: number, position: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.readFn(fd, dst, 0, length, position, (err, n) => (err ? reject(err) : resolve(n)));
    });
  }

  /**
   * Reads every request into its dst; resolves with this call's stats. On failure, rejects with
   * the first FlashIOError only after this call's reads still in flight have settled, so the
   * caller may reuse the destination memory right away. Requests are validated before any I/O.
   */
  read(reqs: readonly ReadRequest[]): Promise<ReadStats> {
    if (this.closed) return Promise.reject(new FlashIOError(this.path, 0, 0, 'ECLOSED', 'reader is closed'));
    try {
      validate(reqs, this.align);
    } catch (e) {
      return Promise.reject(e);
    }
    const t0 = performance.now();
    const pieces = coalesce(reqs, this.maxReadBytes);
    const stats: ReadStats = { requests: reqs.filter((r) => r.length > 0).length, pieces: pieces.length, reads: 0, bytes: 0, retries: 0, shortReads: 0, wallMs: 0 };
    const finish = () => {
      stats.wallMs = performance.now() - t0;
      const t = this.totals;
      t.requests += stats.requests; t.pieces += stats.pieces; t.reads += stats.reads; t.bytes += stats.bytes;
      t.retries += stats.retries; t.shortReads += stats.shortReads; t.wallMs += stats.wallMs;
    };
    if (pieces.length === 0) {
      finish();
      return Promise.resolve(stats);
    }
    return new Promise<ReadStats>((resolve, reject) => {
      const batch: Batch = {
        pending: pieces.length, stats,
        resolve: () => { finish(); resolve(stats); },
        reject: (e) => { finish(); reject(e); },
      };
      for (const p of pieces) this.queue.push({ ...p, batch });
      this.pump();
    });
  }

  private pump(): void {
    while (this.active < this.inFlight && this.queue.length) {
      const p = this.queue.shift()!;
      if (p.batch.error) {
        this.settle(p.batch); // the batch failed: drop its queued pieces
        continue;
      }
      this.active++;
      this.runPiece(p).then(
        () => this.done(p),
        (e: unknown) => {
          p.batch.error ??= e instanceof FlashIOError ? e : new FlashIOError(this.path, p.fileOffset, p.length, errno(e), String(e), { cause: e });
          this.done(p);
        },
      );
    }
  }

  private done(p: Piece): void {
    this.active--;
    this.settle(p.batch);
    this.pump();
    if (this.active === 0 && this.queue.length === 0) this.idle?.();
  }

  private settle(b: Batch): void {
    if (--b.pending > 0) return;
    if (b.error) b.reject(b.error);
    else b.resolve();
  }

  /** One coalesced piece, retried until complete. */
  private async runPiece(p: Piece): Promise<void> {
    const s = p.batch.stats;
    let done = 0;
    let stuck = 0; // consecutive attempts without progress
    while (done < p.length) {
      // another piece of this batch failed: the caller gets that error; stop reading for nothing
      if (p.batch.error) return;
      const fd = this.fd;
      const direct = this.direct;
      const pos = p.fileOffset + done;
      const len = p.length - done;
      let n: number;
      s.reads++;
      try {
        n = await this.readOnce(fd, p.dst.subarray(done, p.length), len, pos);
      } catch (e) {
        const code = errno(e);
        if (RETRYABLE.has(code) && stuck < this.maxRetries) {
          stuck++;
          s.retries++;
          continue;
        }
        const hint = code === 'EINVAL' && direct ? ' (O_DIRECT needs page-aligned memory: is dst a view into arena memory?)' : '';
        throw new FlashIOError(this.path, pos, len, code, `${(e as Error).message}${hint}`, { cause: e });
      }
      if (n > len || n < 0 || !Number.isInteger(n)) throw new FlashIOError(this.path, pos, len, 'EBADREAD', `read returned ${n} bytes`);
      // A file whose size is not a multiple of the block ends inside the last aligned read: reaching
      // the end of file (as sized at open) there is complete; the bytes past it read as zeros.
      if (n < len && pos + n === this.size && p.fileOffset + p.length - this.size < this.align) {
        p.dst.fill(0, done + n, p.length);
        s.bytes += n;
        return;
      }
      if (n === 0) throw new FlashIOError(this.path, pos, len, 'EOF', 'unexpected end of file (file truncated?)');
      if (n < len) s.shortReads++;
      // O_DIRECT continues from an aligned point: step back over a partial block and read it again
      const adv = direct && n < len ? n - (n % this.align) : n;
      if (adv === 0) {
        if (++stuck > this.maxRetries) throw new FlashIOError(this.path, pos, len, 'ESHORT', `short reads of ${n} bytes made no aligned progress (file ends inside a block?)`);
        s.retries++;
        continue;
      }
      stuck = 0;
      done += adv;
      s.bytes += adv;
    }
  }

  /** Waits for reads in flight, then closes every fd this reader opened. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.active > 0 || this.queue.length > 0) await new Promise<void>((r) => { this.idle = r; });
    for (const fd of this.fds) {
      try {
        fs.closeSync(fd);
      } catch { /* injected fds in tests may not be real */ }
    }
  }
}

function openBuffered(openFn: OpenFn, path: string): number {
  try {
    return openFn(path, fs.constants.O_RDONLY);
  } catch (e) {
    throw new FlashIOError(path, 0, 0, errno(e), `open: ${(e as Error).message}`, { cause: e });
  }
}
