// WASM SIMD kernels over shared WebAssembly.Memory arenas (see docs/contracts.md, kernels/).
// The calling thread plus (threads − 1) worker_threads split matvec rows and attention heads;
// everything else runs on the calling thread. All ops are synchronous.
//
// Numerics follow ggml's x86 CPU path: activations are converted to the weight type's
// vec_dot_type (F32 → f32, F16 → f16 RNE, BF16 → bf16 RNE, Q8_0/Q4_0 → q8_0 blocks quantized as
// quantize_row_q8_0's AVX code: d = amax/127, id = amax ? 127/amax : 0, q = round-half-even(x·id));
// quantized dots are exact per-block integer sums scaled by f16(dw)·f16(dx) and accumulated in
// f32. prepareX writes exactly ggml's layout at xq (q8_0 blocks, f16 or bf16 values); for
// Q8_0/Q4_0/F16 the kernels' own derived data follows it inside preparedXBytes().
//
// Arena layout: the first 64 KiB of every arena are reserved (AssemblyScript's static math
// tables below 16 KiB, then per-thread kernel scratch); alloc() hands out offsets ≥ 65536.
import { Worker, MessageChannel, type MessagePort } from 'node:worker_threads';
import {
  GGMLType, instantiate, runShare, readError, scratchSlotBytes, ctlBytes, type KernelExports,
  RESERVED_BYTES, SCRATCH_BASE, W_SEQ, W_DONE, W_ERRS, W_OP, W_ARENA, W_NJOBS, W_DEAD, PARAM_BYTE, ERR_BYTE, ERR_SLOT,
  JOB_F64, MAX_JOBS, OP_MATVEC, OP_MATVECT, OP_ATTN, OP_FAIL, OP_EXIT, OP_GEMM, GEMM_P,
} from './exec.js';

export { GGMLType } from './exec.js';

export class ArenaFullError extends Error {
  constructor(readonly requested: number, readonly used: number, readonly capacity: number) {
    super(`arena full: need ${requested} bytes, ${used} of ${capacity} used`);
    this.name = 'ArenaFullError';
  }
}

/** Bytes of one row of `cols` elements of GGML type `type`. */
export function rowBytes(type: number, cols: number): number {
  switch (type) {
    case GGMLType.F32: return cols * 4;
    case GGMLType.F16: case GGMLType.BF16: return cols * 2;
    case GGMLType.Q8_0: return (cols / 32) * 34;
    case GGMLType.Q4_0: return (cols / 32) * 18;
    default: throw new RangeError(`kernels: unsupported GGML type ${type}`);
  }
}

function stride(rowStride: number | undefined, rb: number, what: string): number {
  if (rowStride === undefined) return rb;
  if (!Number.isInteger(rowStride) || rowStride < rb) throw new RangeError(`${what}: rowStride ${rowStride} is not an integer ≥ the row size ${rb}`);
  return rowStride;
}

const PAGE = 65536;
const MAX_PAGES = 65536;
const align16 = (n: number) => Math.ceil(n / 16) * 16;

/** One shared WebAssembly.Memory with a bump allocator. The first 64 KiB are kernel scratch. */
export class Arena {
  readonly capacity: number;
  private top = RESERVED_BYTES;
  private readonly buf: SharedArrayBuffer;
  /** @internal kernel instance of the calling thread */
  readonly k: KernelExports;

  /** @internal use Compute.createArena */
  constructor(readonly index: number, readonly memory: WebAssembly.Memory, module: WebAssembly.Module,
    /** @internal */ readonly owner: object) {
    this.buf = memory.buffer as unknown as SharedArrayBuffer;
    this.capacity = this.buf.byteLength;
    this.k = instantiate(module, memory);
  }
  get bytesUsed(): number { return this.top; }

  alloc(bytes: number, align = 64): number {
    if (!(bytes >= 0) || !Number.isInteger(bytes)) throw new RangeError(`alloc: bad size ${bytes}`);
    if (!(align > 0) || (align & (align - 1)) !== 0) throw new RangeError(`alloc: bad alignment ${align}`);
    const off = Math.ceil(this.top / align) * align;
    if (off + bytes > this.capacity) throw new ArenaFullError(bytes, this.top, this.capacity);
    this.top = off + bytes;
    return off;
  }
  u8(off: number, len: number): Uint8Array { return new Uint8Array(this.buf, off, len); }
  u16(off: number, len: number): Uint16Array { return new Uint16Array(this.buf, off, len); }
  f32(off: number, len: number): Float32Array { return new Float32Array(this.buf, off, len); }
  /** addition: int8 view (q8 quants) */
  i8(off: number, len: number): Int8Array { return new Int8Array(this.buf, off, len); }
}

export interface MatvecJob {
  type: number; w: number; rows: number; cols: number; xq: number; y: number;
  /** bytes from one row to the next (default: the packed row size rowBytes(type, cols)); row r
   *  starts at w + r·rowStride. Must be an integer ≥ the packed row size. Same numerics. */
  rowStride?: number;
}
/** y = Wᵀh: y[c] = Σ_r h[r]·W[r,c]. W: `rows` rows of `cols` elements of `type` in GGML layout,
 *  row r at w + r·rowStride (default the packed row size); h f32 [rows]; y f32 [cols], overwritten. */
export interface MatvecTParams { type: number; w: number; rows: number; cols: number; rowStride?: number; h: number; y: number }
export interface AttentionParams {
  q: number; k: number; v: number; out: number; kvType: number; nHeads: number; nKvHeads: number;
  headDim: number; nPos: number; kvStride: number; scratch: number;
  /** Paged KV cache: arena offset of an i32 page table [ceil(nPos / pageSize)] of page ids; k and v
   *  are then the bases of page regions, page id p at base + p·pageSize·kvStride·es. 0 or absent:
   *  contiguous cache (position t at base + t·kvStride·es). Same numerics either way. */
  pageTable?: number;
  pageSize?: number; // positions per page (paged only)
}
/**
 * C = alpha·op(A)·op(B) + beta·C, all f32 row-major in the arena (byte offsets). op(A) is
 * [m × k]: A stored [m × k] (transA false) or [k × m] (transA true); op(B) is [k × n]: B stored
 * [k × n] or [n × k] (transB). lda/ldb/ldc: row strides in elements of the stored matrices
 * (defaults: packed). beta = 0 (default) never reads C; `accumulate: true` means beta = 1.
 * C must not overlap A or B.
 */
export interface GemmParams {
  a: number; b: number; c: number; m: number; n: number; k: number;
  transA?: boolean; transB?: boolean; lda?: number; ldb?: number; ldc?: number;
  alpha?: number; beta?: number; accumulate?: boolean;
  /** gemmWorkBytes() bytes, 16-aligned (default: allocated once per arena on first use) */
  work?: number;
}
/** GEMM blocking (f32 elements): KC depth × MC rows of A packed (128 KiB, L2), KC × NC of B
 *  (1 MiB, L2/L3); measured on the dev box (AMD EPYC Zen 5), see bench/predictor-train.ts. */
const GEMM_KC = 256, GEMM_MC = 128, GEMM_NC = 1024;

export interface ComputeOptions {
  threads?: number;           // default 2: the calling thread + 1 worker
  /** matvec batches with fewer weight bytes (attention: K+V bytes) than this run on the calling
   *  thread only — waking a worker costs more than it saves (default 64 KiB) */
  minParallelBytes?: number;
  /** polls of the control word before a thread sleeps in Atomics.wait (default 20000) */
  spin?: number;
  /** run every kernel on tiny inputs at creation so V8 tiers them up to optimized code before
   *  the first real call (a few ms; default true). The compiled code is shared by all threads. */
  warmUp?: boolean;
}

function warmUp(module: WebAssembly.Module): void {
  const memory = new WebAssembly.Memory({ initial: 3, maximum: 3, shared: true });
  const k = instantiate(module, memory);
  const f = new Float32Array(memory.buffer as unknown as SharedArrayBuffer, RESERVED_BYTES, 8192);
  for (let i = 0; i < f.length; i++) f[i] = ((i * 37) % 17) / 17 - 0.5;
  const B = RESERVED_BYTES, X = B + 8192, XQ = B + 16384, Y = B + 24576, W = B + 32768, S = B + 40960;
  for (let i = 0; i < 400; i++) {
    k.prepare_q8_0(X, XQ, 64, i & 1);
    k.matvec_q8_0(W, XQ, Y, 64, 0, 8, 68);
    k.matvec_q4_0(W, XQ, Y, 64, 0, 8, 36);
    k.prepare_f16(X, XQ, 64);
    k.matvec_f16(W, XQ, Y, 64, 0, 8, 128);
    k.prepare_bf16(X, XQ, 64);
    k.matvec_bf16(W, XQ, Y, 64, 0, 8, 128);
    k.matvec_f32(W, X, Y, 64, 0, 8, 256);
    k.matvect_q8_0(W, 68, X, Y, 8, 0, 2, i & 1);
    k.matvect_q4_0(W, 36, X, Y, 8, 0, 2, i & 1);
    k.matvect_f32(W, 256, X, Y, 8, 0, 64);
    k.matvect_f16(W, 128, X, Y, 8, 0, 64);
    k.matvect_bf16(W, 128, X, Y, 8, 0, 64);
    k.rmsnorm(X, X, Y, 64, 1e-5);
    k.silu_mul(X, X, Y, 64);
    k.add(Y, X, 64);
    k.softmax(Y, 64);
    k.store_f16(X, S, 64);
    k.attention(X, W, W, Y, i & 1, 2, 1, 16, 4, 16, S, SCRATCH_BASE, 4096, 0, 2, 0, 0);
    k.attention(X, W, W, Y, i & 1, 2, 1, 16, 4, 16, S, SCRATCH_BASE, 4096, 0, 2, B + 49152, 2); // paged: zero table
    k.rope(Y, 2, 16, i, 10000, 16, SCRATCH_BASE);
    k.gemm_f32(X, 9, i & 1, W, 9, (i >> 1) & 1, Y, 9, 0, 9, 0, 9, 9, 1, i & 1, S, 8, 8, 8);
  }
}

export class Compute {
  readonly threads: number;
  private readonly ctl: Int32Array;
  private readonly params: Float64Array;
  private readonly ports: MessagePort[] = [];
  private arenas = 0;
  private closed = false;
  private readonly gemmWork = new WeakMap<Arena, number>();
  private readonly i32Views = new WeakMap<Arena, Int32Array>(); // whole-arena views: page tables are checked without allocating

  private constructor(
    private readonly module: WebAssembly.Module,
    private readonly workers: Worker[],
    sab: SharedArrayBuffer,
    ports: MessagePort[],
    private readonly minParallelBytes: number,
    private readonly spin: number,
  ) {
    this.threads = workers.length + 1;
    this.ctl = new Int32Array(sab);
    this.params = new Float64Array(sab, PARAM_BYTE, (ERR_BYTE - PARAM_BYTE) / 8);
    this.ports = ports;
  }

  static async create(opts: ComputeOptions = {}): Promise<Compute> {
    const threads = opts.threads ?? 2;
    if (!Number.isInteger(threads) || threads < 1 || threads > 64) throw new RangeError(`threads must be 1..64, got ${threads}`);
    const spin = opts.spin ?? 20000;
    const { default: b64 } = (await import(new URL('./kernels-wasm.js', import.meta.url).href)) as { default: string };
    const module = await WebAssembly.compile(Buffer.from(b64, 'base64'));
    if (opts.warmUp !== false) warmUp(module);
    const sab = new SharedArrayBuffer(ctlBytes(threads));
    const workers: Worker[] = [];
    const ports: MessagePort[] = [];
    try {
      await Promise.all(Array.from({ length: threads - 1 }, (_, i) => new Promise<void>((resolve, reject) => {
        const { port1, port2 } = new MessageChannel();
        const w = new Worker(new URL('./worker.js', import.meta.url), {
          workerData: { module, ctl: sab, port: port2, t: i + 1, T: threads, spin },
          transferList: [port2],
          // inherit node flags except those that only make sense for the main entry point
          execArgv: process.execArgv.filter((f) => !/^--(input-type|eval|print|test)/.test(f)),
        });
        workers.push(w);
        ports.push(port1);
        w.once('message', () => resolve());
        w.once('error', reject);
        w.once('exit', (code) => reject(new Error(`kernel worker exited during start (code ${code})`)));
      })));
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw e;
    }
    for (const w of workers) {
      w.removeAllListeners();
      // workers catch errors per op; anything else ends the worker, which dispatch() detects
      w.on('error', () => {});
      w.unref();
    }
    return new Compute(module, workers, sab, ports, opts.minParallelBytes ?? 65536, spin);
  }

  createArena(capacityBytes: number): Arena {
    this.live();
    if (!(capacityBytes >= 0) || capacityBytes > MAX_PAGES * PAGE) throw new RangeError(`arena capacity ${capacityBytes} not in 0..4 GiB`);
    const pages = Math.min(MAX_PAGES, Math.ceil(capacityBytes / PAGE) + RESERVED_BYTES / PAGE);
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    const a = new Arena(this.arenas++, memory, this.module, this);
    // workers pick the memory up from their port (synchronously) on the first op for this arena
    for (const p of this.ports) p.postMessage({ index: a.index, memory });
    return a;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.workers.length) {
      Atomics.store(this.ctl, W_OP, OP_EXIT);
      Atomics.add(this.ctl, W_SEQ, 1);
      Atomics.notify(this.ctl, W_SEQ);
    }
    for (const p of this.ports) p.close();
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  // ---- activations -------------------------------------------------------------------------

  preparedXBytes(type: number, n: number): number {
    switch (type) {
      case GGMLType.F32: return n * 4;
      case GGMLType.BF16: return n * 2;
      case GGMLType.F16: return align16(n * 2) + n * 4;
      case GGMLType.Q8_0: case GGMLType.Q4_0: {
        // q8_0 blocks, then kernel-private data (see src/kernels/wasm/ops.ts prepare_q8_0)
        const nb = n / 32;
        return align16(nb * 34) + align16(nb * 4) + (type === GGMLType.Q4_0 ? nb * 80 : 0);
      }
      default: throw new RangeError(`kernels: unsupported GGML type ${type}`);
    }
  }

  prepareX(a: Arena, type: number, x: number, xq: number, n: number): void {
    this.check(a, x, n * 4, 'prepareX x');
    this.check(a, xq, this.preparedXBytes(type, n), 'prepareX xq');
    switch (type) {
      case GGMLType.F32: a.k.copy_bytes(x, xq, n * 4); break;
      case GGMLType.F16: a.k.prepare_f16(x, xq, n); break;
      case GGMLType.BF16: a.k.prepare_bf16(x, xq, n); break;
      case GGMLType.Q8_0: case GGMLType.Q4_0:
        if (n % 32) throw new RangeError(`prepareX: n=${n} is not a multiple of 32`);
        a.k.prepare_q8_0(x, xq, n, type === GGMLType.Q4_0 ? 1 : 0);
        break;
    }
  }

  // ---- matvec ------------------------------------------------------------------------------

  matvec(a: Arena, jobs: MatvecJob[]): void {
    this.live();
    let bytes = 0;
    for (const j of jobs) {
      if (!Number.isInteger(j.rows) || !Number.isInteger(j.cols) || j.rows < 0 || j.cols <= 0) {
        throw new RangeError(`matvec: bad shape ${j.rows}×${j.cols}`);
      }
      if ((j.type === GGMLType.Q8_0 || j.type === GGMLType.Q4_0) && j.cols % 32) {
        throw new RangeError(`matvec: cols=${j.cols} is not a multiple of 32`);
      }
      const rb = rowBytes(j.type, j.cols);
      const rs = stride(j.rowStride, rb, 'matvec');
      this.check(a, j.w, j.rows > 0 ? (j.rows - 1) * rs + rb : 0, 'matvec w');
      this.check(a, j.xq, this.preparedXBytes(j.type, j.cols), 'matvec xq');
      this.check(a, j.y, j.rows * 4, 'matvec y');
      bytes += rb * j.rows;
    }
    const serial = this.threads === 1 || bytes < this.minParallelBytes;
    for (let i = 0; i < jobs.length; i += MAX_JOBS) {
      const n = Math.min(MAX_JOBS, jobs.length - i);
      this.writeJobs(jobs, i, n);
      if (serial) runShare(this.ctl, this.params, a.k, 0, 1);
      else this.dispatch(a, OP_MATVEC);
    }
  }

  private writeJobs(jobs: MatvecJob[], from: number, n: number): void {
    const p = this.params;
    this.ctl[W_OP] = OP_MATVEC;
    this.ctl[W_NJOBS] = n;
    for (let j = 0; j < n; j++) {
      const job = jobs[from + j], o = j * JOB_F64;
      p[o] = job.type; p[o + 1] = job.w; p[o + 2] = job.rows; p[o + 3] = job.cols; p[o + 4] = job.xq; p[o + 5] = job.y;
      p[o + 6] = job.rowStride ?? rowBytes(job.type, job.cols);
    }
  }

  /**
   * y = Wᵀh, y[c] = Σ_r h[r]·W[r,c] (f32 out, overwritten) — e.g. an FFN down projection stored
   * as columns (row i of W = down column i). Q8_0/Q4_0 blocks are dequantized as d·q and
   * h[r]·d·q is accumulated in f32; F16/BF16 are converted exactly to f32.
   * Rows with h[r] == 0 exactly (±0) are skipped: their weight bytes are never read, so ReLU or
   * thresholded sparsity in h saves memory traffic. NaN in h is not skipped.
   * Threads split the columns (whole 32-element blocks for Q8_0/Q4_0, multiples of 16 elements
   * otherwise) and each streams its slice of every row; each y[c] is accumulated over r in order
   * by one thread, so the result is bit-identical for any thread count.
   */
  matvecT(a: Arena, p: MatvecTParams): void {
    this.live();
    const { type, rows, cols } = p;
    if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols <= 0) {
      throw new RangeError(`matvecT: bad shape ${rows}×${cols}`);
    }
    const quant = type === GGMLType.Q8_0 || type === GGMLType.Q4_0;
    if (quant && cols % 32) throw new RangeError(`matvecT: cols=${cols} is not a multiple of 32`);
    const rb = rowBytes(type, cols);
    const rs = stride(p.rowStride, rb, 'matvecT');
    this.check(a, p.w, rows > 0 ? (rows - 1) * rs + rb : 0, 'matvecT w');
    this.check(a, p.h, rows * 4, 'matvecT h');
    this.check(a, p.y, cols * 4, 'matvecT y');
    const P = this.params;
    P[0] = type; P[1] = p.w; P[2] = rows; P[3] = cols; P[4] = rs; P[5] = p.h; P[6] = p.y;
    this.ctl[W_OP] = OP_MATVECT;
    if (this.threads === 1 || rb * rows < this.minParallelBytes || cols <= (quant ? 32 : 16)) runShare(this.ctl, P, a.k, 0, 1);
    else this.dispatch(a, OP_MATVECT);
  }

  /** Runs the op in the control block on all threads (the caller does share 0); throws worker errors. */
  private dispatch(a: Arena, op: number): void {
    const ctl = this.ctl;
    const nw = this.workers.length;
    ctl[W_OP] = op;
    ctl[W_ARENA] = a.index;
    Atomics.store(ctl, W_DONE, 0);
    Atomics.store(ctl, W_ERRS, 0);
    Atomics.add(ctl, W_SEQ, 1);
    Atomics.notify(ctl, W_SEQ);
    let mine: unknown;
    try {
      runShare(ctl, this.params, a.k, 0, this.threads);
    } catch (e) {
      mine = e;
    }
    let done = Atomics.load(ctl, W_DONE);
    for (let i = 0; done < nw && i < this.spin; i++) done = Atomics.load(ctl, W_DONE);
    while (done < nw) {
      if (Atomics.load(ctl, W_DEAD) > 0) {
        this.closed = true;
        throw new Error('kernel worker exited unexpectedly; Compute is unusable');
      }
      Atomics.wait(ctl, W_DONE, done, 1000);
      done = Atomics.load(ctl, W_DONE);
    }
    if (mine !== undefined) throw mine;
    if (Atomics.load(ctl, W_ERRS) > 0) {
      for (let t = 1; t < this.threads; t++) {
        const msg = readError(ctl, t);
        if (msg) {
          ctl[(ERR_BYTE + t * ERR_SLOT) >> 2] = 0;
          throw new Error(`kernel worker ${t}: ${msg}`);
        }
      }
      throw new Error('kernel worker failed');
    }
  }

  // ---- gemm (f32, all threads) ---------------------------------------------------------------

  /** Bytes of the work area gemm() needs (packed panels for every thread). */
  gemmWorkBytes(): number {
    return this.threads * this.gemmSlot();
  }
  private gemmSlot(): number {
    // packed A [MC × KC] + packed B [KC × NC] + one 4×8 edge tile, f32; a 64 B line per thread
    return Math.ceil(((GEMM_MC + GEMM_NC) * GEMM_KC + 32) * 4 / 64) * 64 + 64;
  }

  /** C = alpha·op(A)·op(B) + beta·C (see GemmParams). Threads split the larger of m and n; every
   *  element of C is computed by one thread in a fixed order: the result does not depend on the
   *  thread count. Accumulation in f32 in blocks of 256 along k. */
  gemm(a: Arena, p: GemmParams): void {
    this.live();
    const { m, n, k } = p;
    for (const [v, what] of [[m, 'm'], [n, 'n'], [k, 'k']] as const) {
      if (!Number.isInteger(v) || v < 0 || v >= 2 ** 31) throw new RangeError(`gemm: bad ${what}=${v}`);
    }
    const tA = !!p.transA, tB = !!p.transB;
    const lda = p.lda ?? (tA ? m : k), ldb = p.ldb ?? (tB ? k : n), ldc = p.ldc ?? n;
    const ext = (rows: number, cols: number, ld: number, what: string) => {
      if (!Number.isInteger(ld) || ld < cols) throw new RangeError(`gemm: ${what} row stride ${ld} < ${cols}`);
      return rows > 0 && cols > 0 ? ((rows - 1) * ld + cols) * 4 : 0;
    };
    const aBytes = tA ? ext(k, m, lda, 'A') : ext(m, k, lda, 'A');
    const bBytes = tB ? ext(n, k, ldb, 'B') : ext(k, n, ldb, 'B');
    const cBytes = ext(m, n, ldc, 'C');
    this.check(a, p.a, aBytes, 'gemm A');
    this.check(a, p.b, bBytes, 'gemm B');
    this.check(a, p.c, cBytes, 'gemm C');
    const over = (o1: number, b1: number, o2: number, b2: number) => b1 > 0 && b2 > 0 && o1 < o2 + b2 && o2 < o1 + b1;
    if (over(p.c, cBytes, p.a, aBytes) || over(p.c, cBytes, p.b, bBytes)) throw new RangeError('gemm: C overlaps A or B');
    if (m === 0 || n === 0) return;
    const beta = p.accumulate ? 1 : p.beta ?? 0;
    const alpha = p.alpha ?? 1;
    let work = p.work;
    if (work === undefined) {
      work = this.gemmWork.get(a);
      if (work === undefined) { work = a.alloc(this.gemmWorkBytes(), 64); this.gemmWork.set(a, work); }
    } else if (work % 16) throw new RangeError(`gemm: work offset ${work} is not 16-byte aligned`);
    this.check(a, work, this.gemmWorkBytes(), 'gemm work');
    const P = this.params, G = GEMM_P;
    P[G.a] = p.a; P[G.lda] = lda; P[G.transA] = tA ? 1 : 0; P[G.b] = p.b; P[G.ldb] = ldb; P[G.transB] = tB ? 1 : 0;
    P[G.c] = p.c; P[G.ldc] = ldc; P[G.m] = m; P[G.n] = n; P[G.k] = k; P[G.alpha] = alpha; P[G.beta] = beta;
    P[G.work] = work; P[G.workBytes] = this.gemmSlot(); P[G.kc] = GEMM_KC; P[G.mc] = GEMM_MC; P[G.nc] = GEMM_NC;
    this.ctl[W_OP] = OP_GEMM;
    // below ~2 MFLOP waking the worker costs more than the split saves
    if (this.threads === 1 || 2 * m * n * k < 2e6) runShare(this.ctl, P, a.k, 0, 1);
    else this.dispatch(a, OP_GEMM);
  }

  /** @internal test hook: makes every worker throw on its next op */
  _injectWorkerFailure(a: Arena): void {
    this.live();
    if (this.workers.length) this.dispatch(a, OP_FAIL);
  }

  // ---- small ops (calling thread) ------------------------------------------------------------

  dequantRow(a: Arena, type: number, w: number, out: number, cols: number): void {
    this.check(a, w, rowBytes(type, cols), 'dequantRow w');
    this.check(a, out, cols * 4, 'dequantRow out');
    switch (type) {
      case GGMLType.F32: a.k.copy_bytes(w, out, cols * 4); break;
      case GGMLType.F16: a.k.dequant_f16(w, out, cols); break;
      case GGMLType.BF16: a.k.dequant_bf16(w, out, cols); break;
      case GGMLType.Q8_0: case GGMLType.Q4_0:
        if (cols % 32) throw new RangeError(`dequantRow: cols=${cols} is not a multiple of 32`);
        if (type === GGMLType.Q8_0) a.k.dequant_q8_0(w, out, cols); else a.k.dequant_q4_0(w, out, cols);
        break;
    }
  }

  rmsnorm(a: Arena, x: number, w: number, out: number, n: number, eps: number): void {
    this.check(a, x, n * 4, 'rmsnorm x'); this.check(a, w, n * 4, 'rmsnorm w'); this.check(a, out, n * 4, 'rmsnorm out');
    a.k.rmsnorm(x, w, out, n, eps);
  }

  rope(a: Arena, v: number, nHeads: number, headDim: number, pos: number, theta: number, ropeDim: number): void {
    this.check(a, v, nHeads * headDim * 4, 'rope v');
    if (ropeDim % 2 || ropeDim > headDim || ropeDim <= 0) throw new RangeError(`rope: bad ropeDim ${ropeDim} (headDim ${headDim})`);
    if (ropeDim * 4 > scratchSlotBytes(this.threads)) throw new RangeError(`rope: ropeDim ${ropeDim} too large`);
    a.k.rope(v, nHeads, headDim, pos, theta, ropeDim, SCRATCH_BASE);
  }

  storeKV(a: Arena, kvType: number, src: number, dst: number, n: number): void {
    this.check(a, src, n * 4, 'storeKV src');
    if (kvType === GGMLType.F32) { this.check(a, dst, n * 4, 'storeKV dst'); a.k.copy_bytes(src, dst, n * 4); }
    else if (kvType === GGMLType.F16) { this.check(a, dst, n * 2, 'storeKV dst'); a.k.store_f16(src, dst, n); }
    else throw new RangeError(`storeKV: unsupported kv type ${kvType}`);
  }

  attention(a: Arena, p: AttentionParams): void {
    this.live();
    const { nHeads, nKvHeads, headDim, nPos, kvStride } = p;
    if (p.kvType !== GGMLType.F32 && p.kvType !== GGMLType.F16) throw new RangeError(`attention: unsupported kv type ${p.kvType}`);
    if (nKvHeads <= 0 || nHeads % nKvHeads) throw new RangeError(`attention: nHeads ${nHeads} not a multiple of nKvHeads ${nKvHeads}`);
    if (nPos < 1) throw new RangeError(`attention: nPos ${nPos} < 1`);
    if (kvStride < nKvHeads * headDim) throw new RangeError(`attention: kvStride ${kvStride} < nKvHeads·headDim`);
    if (headDim * 4 > scratchSlotBytes(this.threads)) throw new RangeError(`attention: headDim ${headDim} too large`);
    const es = p.kvType === GGMLType.F16 ? 2 : 4;
    this.check(a, p.q, nHeads * headDim * 4, 'attention q');
    this.check(a, p.out, nHeads * headDim * 4, 'attention out');
    const ptab = p.pageTable ?? 0;
    const ps = ptab ? p.pageSize ?? 0 : 0;
    if (ptab) {
      // every page the kernel will touch must lie inside the arena, for k and v
      if (!Number.isInteger(ps) || ps < 1) throw new RangeError(`attention: pageSize ${ps} must be an integer ≥ 1`);
      if (ptab % 4) throw new RangeError(`attention: page table offset ${ptab} is not 4-byte aligned`);
      const nPages = Math.ceil(nPos / ps);
      this.check(a, ptab, nPages * 4, 'attention page table');
      let view = this.i32Views.get(a);
      if (!view) this.i32Views.set(a, (view = new Int32Array(a.memory.buffer)));
      const pageBytes = ps * kvStride * es;
      for (let i = 0; i < nPages; i++) {
        const id = view[ptab / 4 + i]!;
        const used = i + 1 < nPages ? pageBytes : ((nPos - 1 - i * ps) * kvStride + nKvHeads * headDim) * es;
        if (id < 0) throw new RangeError(`attention: page table entry ${i} is ${id}`);
        this.check(a, p.k + id * pageBytes, used, 'attention k page');
        this.check(a, p.v + id * pageBytes, used, 'attention v page');
      }
    } else {
      this.check(a, p.k, ((nPos - 1) * kvStride + nKvHeads * headDim) * es, 'attention k');
      this.check(a, p.v, ((nPos - 1) * kvStride + nKvHeads * headDim) * es, 'attention v');
    }
    this.check(a, p.scratch, nHeads * nPos * 4, 'attention scratch');
    const P = this.params;
    P[0] = p.q; P[1] = p.k; P[2] = p.v; P[3] = p.out; P[4] = es === 2 ? 1 : 0; P[5] = nHeads; P[6] = nKvHeads;
    P[7] = headDim; P[8] = nPos; P[9] = kvStride; P[10] = p.scratch; P[11] = ptab; P[12] = ps;
    const kvBytes = 2 * nPos * nKvHeads * headDim * es;
    if (this.threads === 1 || nHeads === 1 || kvBytes < this.minParallelBytes) {
      this.ctl[W_OP] = OP_ATTN;
      runShare(this.ctl, P, a.k, 0, 1);
    } else {
      this.dispatch(a, OP_ATTN);
    }
  }

  siluMul(a: Arena, g: number, u: number, out: number, n: number): void {
    this.check(a, g, n * 4, 'siluMul g'); this.check(a, u, n * 4, 'siluMul u'); this.check(a, out, n * 4, 'siluMul out');
    a.k.silu_mul(g, u, out, n);
  }
  reluMul(a: Arena, g: number, u: number, out: number, n: number): void {
    this.check(a, g, n * 4, 'reluMul g'); this.check(a, u, n * 4, 'reluMul u'); this.check(a, out, n * 4, 'reluMul out');
    a.k.relu_mul(g, u, out, n);
  }
  add(a: Arena, x: number, y: number, n: number): void {
    this.check(a, x, n * 4, 'add x'); this.check(a, y, n * 4, 'add y');
    a.k.add(x, y, n);
  }
  softmax(a: Arena, x: number, n: number): void {
    this.check(a, x, n * 4, 'softmax x');
    if (n > 0) a.k.softmax(x, n);
  }

  private live(): void {
    if (this.closed) throw new Error('Compute is closed');
  }
  private check(a: Arena, off: number, bytes: number, what: string): void {
    if (a.owner !== this) throw new Error(`${what}: arena ${a.index} belongs to another Compute`);
    if (!Number.isInteger(off) || !Number.isInteger(bytes) || off < RESERVED_BYTES || bytes < 0 || off + bytes > a.capacity) {
      throw new RangeError(`${what}: [${off}, +${bytes}) outside arena ${a.index} (${RESERVED_BYTES}..${a.capacity})`);
    }
  }
}
