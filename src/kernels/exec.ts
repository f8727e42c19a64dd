// Shared by the calling thread and the kernel workers: the control block layout, the kernel
// exports, and the code that runs one thread's share of a dispatched op.

/** GGML tensor type ids the kernels understand (same numbers as src/formats/ggml-types.ts). */
export const GGMLType = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, BF16: 30 } as const;

/** Functions exported by the AssemblyScript module (all offsets are byte offsets). */
export interface KernelExports {
  matvec_q8_0(w: number, xq: number, y: number, cols: number, r0: number, r1: number, stride: number): void;
  matvec_q4_0(w: number, xq: number, y: number, cols: number, r0: number, r1: number, stride: number): void;
  matvec_f32(w: number, xq: number, y: number, cols: number, r0: number, r1: number, stride: number): void;
  matvec_f16(w: number, xq: number, y: number, cols: number, r0: number, r1: number, stride: number): void;
  matvec_bf16(w: number, xq: number, y: number, cols: number, r0: number, r1: number, stride: number): void;
  /** y = Wᵀh over columns [c0, c1) (q types: blocks [b0, b1)), rows at w + r·stride */
  matvect_q8_0(w: number, stride: number, h: number, y: number, rows: number, b0: number, b1: number, quad: number): void;
  matvect_q4_0(w: number, stride: number, h: number, y: number, rows: number, b0: number, b1: number, quad: number): void;
  matvect_f32(w: number, stride: number, h: number, y: number, rows: number, c0: number, c1: number): void;
  matvect_f16(w: number, stride: number, h: number, y: number, rows: number, c0: number, c1: number): void;
  matvect_bf16(w: number, stride: number, h: number, y: number, rows: number, c0: number, c1: number): void;
  prepare_q8_0(x: number, xq: number, n: number, forQ4: number): void;
  prepare_f16(x: number, xq: number, n: number): void;
  prepare_bf16(x: number, xq: number, n: number): void;
  copy_bytes(src: number, dst: number, n: number): void;
  dequant_q8_0(w: number, out: number, cols: number): void;
  dequant_q4_0(w: number, out: number, cols: number): void;
  dequant_f16(w: number, out: number, cols: number): void;
  dequant_bf16(w: number, out: number, cols: number): void;
  rmsnorm(x: number, w: number, out: number, n: number, eps: number): void;
  rope(v: number, nHeads: number, headDim: number, pos: number, base: number, ropeDim: number, cache: number): void;
  store_f16(src: number, dst: number, n: number): void;
  silu_mul(g: number, u: number, out: number, n: number): void;
  relu_mul(g: number, u: number, out: number, n: number): void;
  add(x: number, y: number, n: number): void;
  softmax(x: number, n: number): void;
  attention(q: number, k: number, v: number, out: number, kvF16: number, nHeads: number, nKvHeads: number,
    headDim: number, nPos: number, kvStride: number, scratch: number, qbuf: number, qbufBytes: number, h0: number, h1: number,
    ptab: number, pageSize: number): void;
  /** C[m0:m1, n0:n1] = alpha·op(A)·op(B) + beta·C (see wasm/gemm.ts) */
  gemm_f32(a: number, lda: number, transA: number, b: number, ldb: number, transB: number, c: number, ldc: number,
    m0: number, m1: number, n0: number, n1: number, k: number, alpha: number, beta: number, work: number,
    kc: number, mc: number, nc: number): void;
  gemm_work_bytes(kc: number, mc: number, nc: number): number;
}

export function instantiate(module: WebAssembly.Module, memory: WebAssembly.Memory): KernelExports {
  const inst = new WebAssembly.Instance(module, {
    env: { memory, abort() { throw new Error('kernel abort'); } },
  });
  return inst.exports as unknown as KernelExports;
}

// ---- arena layout: [0, 16 KiB) the module's static data, [16 KiB, 64 KiB) per-thread scratch
export const RESERVED_BYTES = 65536;
export const SCRATCH_BASE = 16384;
export function scratchSlotBytes(threads: number): number {
  return Math.floor((RESERVED_BYTES - SCRATCH_BASE) / threads / 64) * 64;
}

// ---- control block (SharedArrayBuffer): Int32 words, then f64 params, then error slots
export const W_SEQ = 0;       // dispatch generation, bumped by the caller
export const W_DONE = 1;      // workers finished with the current generation
export const W_ERRS = 2;      // workers that failed in the current generation
export const W_OP = 3;
export const W_ARENA = 4;
export const W_NJOBS = 5;
export const W_DEAD = 6;      // workers that exited
export const PARAM_BYTE = 256;           // f64 params start here
export const JOB_F64 = 7;                // type, w, rows, cols, xq, y, rowStride (bytes)
export const MAX_JOBS = 64;
export const ERR_BYTE = 4096;            // per-thread error slots: i32 length + utf-8 text
export const ERR_SLOT = 1024;
export const ctlBytes = (threads: number) => ERR_BYTE + threads * ERR_SLOT;

export const OP_MATVEC = 1;
export const OP_ATTN = 2;
export const OP_FAIL = 3;
export const OP_EXIT = 4;
export const OP_MATVECT = 5;             // params: type, w, rows, cols, rowStride, h, y
export const OP_GEMM = 6;                // params: see GEMM_P below

/** f64 param slots of OP_GEMM. */
export const GEMM_P = { a: 0, lda: 1, transA: 2, b: 3, ldb: 4, transB: 5, c: 6, ldc: 7, m: 8, n: 9, k: 10,
  alpha: 11, beta: 12, work: 13, workBytes: 14, kc: 15, mc: 16, nc: 17 } as const;

/** Thread t's block of C for OP_GEMM: the larger of m and n is split (n in multiples of 8
 *  columns, m in multiples of 4 rows: the micro-tile), the other dimension is whole. */
export function splitGemm(m: number, n: number, t: number, T: number): [number, number, number, number] {
  if (n >= m) {
    const b = (i: number) => (i >= T ? n : Math.min(n, Math.round((n * i) / (T * 8)) * 8));
    return [0, m, b(t), b(t + 1)];
  }
  const b = (i: number) => (i >= T ? m : Math.min(m, Math.round((m * i) / (T * 4)) * 4));
  return [b(t), b(t + 1), 0, n];
}

/** Row range of thread t of T for a job with `rows` rows; boundaries are multiples of 4. */
export function splitRows(rows: number, t: number, T: number): [number, number] {
  const b = (i: number) => (i >= T ? rows : Math.min(rows, Math.round((rows * i) / (T * 4)) * 4));
  return [b(t), b(t + 1)];
}

/** Column range of thread t of T for matvecT: q types split whole 32-element blocks, the others
 *  multiples of 16 elements (the last range ends at cols). */
export function splitCols(cols: number, quant: boolean, t: number, T: number): [number, number] {
  const u = quant ? 32 : 16;
  const b = (i: number) => (i >= T ? cols : Math.min(cols, Math.round((cols * i) / (T * u)) * u));
  return [b(t), b(t + 1)];
}

export function splitHeads(n: number, t: number, T: number): [number, number] {
  return [Math.round((n * t) / T), Math.round((n * (t + 1)) / T)];
}

const PAIR_ROWS = 4;

function rowBytesOf(type: number, cols: number): number {
  return type === GGMLType.F32 ? cols * 4 : type === GGMLType.Q8_0 ? (cols / 32) * 34 : type === GGMLType.Q4_0 ? (cols / 32) * 18 : cols * 2;
}

/** Rows [r0, r1) of the matvec job at params[o]. */
function rowsOf(k: KernelExports, params: Float64Array, o: number, r0: number, r1: number): void {
  const type = params[o];
  const w = params[o + 1], cols = params[o + 3], xq = params[o + 4], y = params[o + 5], rs = params[o + 6];
  switch (type) {
    case GGMLType.Q8_0: k.matvec_q8_0(w, xq, y, cols, r0, r1, rs); break;
    case GGMLType.Q4_0: k.matvec_q4_0(w, xq, y, cols, r0, r1, rs); break;
    case GGMLType.F32: k.matvec_f32(w, xq, y, cols, r0, r1, rs); break;
    case GGMLType.F16: k.matvec_f16(w, xq, y, cols, r0, r1, rs); break;
    case GGMLType.BF16: k.matvec_bf16(w, xq, y, cols, r0, r1, rs); break;
    default: throw new Error(`matvec: unsupported type ${type}`);
  }
}

/** Runs thread t's share of the op currently described in the control block. */
export function runShare(ctl: Int32Array, params: Float64Array, k: KernelExports, t: number, T: number): void {
  const op = ctl[W_OP];
  if (op === OP_MATVEC) {
    const n = ctl[W_NJOBS];
    for (let j = 0; j < n; j++) {
      const o = j * JOB_F64;
      const rows = params[o + 2];
      const [r0, r1] = splitRows(rows, t, T);
      if (r0 >= r1) continue;
      // two consecutive strided jobs with the same rows and stride (e.g. the gate and up parts of
      // [gate | up | down] records): alternate between them every PAIR_ROWS rows, so the thread
      // reads neighbouring parts of each record together (4.6 → 5.4 GB/s on 1 thread, q8_0 dim
      // 5120, 16 KiB records). Each row is computed by the same kernel code: same numerics.
      const o2 = o + JOB_F64;
      if (j + 1 < n && params[o2 + 2] === rows && params[o2 + 6] === params[o + 6] && params[o + 6] !== rowBytesOf(params[o], params[o + 3])) {
        for (let r = r0; r < r1; r += PAIR_ROWS) {
          const e = Math.min(r1, r + PAIR_ROWS);
          rowsOf(k, params, o, r, e);
          rowsOf(k, params, o2, r, e);
        }
        j++;
        continue;
      }
      rowsOf(k, params, o, r0, r1);
    }
  } else if (op === OP_MATVECT) {
    const p = params;
    const type = p[0], w = p[1], rows = p[2], cols = p[3], rs = p[4], h = p[5], y = p[6];
    const quant = type === GGMLType.Q8_0 || type === GGMLType.Q4_0;
    const [c0, c1] = splitCols(cols, quant, t, T);
    if (c0 >= c1) return;
    switch (type) {
      case GGMLType.Q8_0: k.matvect_q8_0(w, rs, h, y, rows, c0 / 32, c1 / 32, T > 1 ? 1 : 0); break;
      case GGMLType.Q4_0: k.matvect_q4_0(w, rs, h, y, rows, c0 / 32, c1 / 32, T > 1 ? 1 : 0); break;
      case GGMLType.F32: k.matvect_f32(w, rs, h, y, rows, c0, c1); break;
      case GGMLType.F16: k.matvect_f16(w, rs, h, y, rows, c0, c1); break;
      case GGMLType.BF16: k.matvect_bf16(w, rs, h, y, rows, c0, c1); break;
      default: throw new Error(`matvecT: unsupported type ${type}`);
    }
  } else if (op === OP_ATTN) {
    const p = params;
    const nHeads = p[5];
    const [h0, h1] = splitHeads(nHeads, t, T);
    if (h0 >= h1) return;
    const slot = scratchSlotBytes(T);
    k.attention(p[0], p[1], p[2], p[3], p[4], nHeads, p[6], p[7], p[8], p[9], p[10], SCRATCH_BASE + t * slot, slot, h0, h1, p[11], p[12]);
  } else if (op === OP_GEMM) {
    const p = params, G = GEMM_P;
    const [m0, m1, n0, n1] = splitGemm(p[G.m], p[G.n], t, T);
    if (m0 >= m1 || n0 >= n1) return;
    // one call per NC-column block: V8 tiers wasm functions up between calls, not inside one
    // (no OSR), so a first huge call would otherwise run entirely in baseline code
    const nc = p[G.nc];
    for (let j = n0; j < n1; j += nc) {
      k.gemm_f32(p[G.a], p[G.lda], p[G.transA], p[G.b], p[G.ldb], p[G.transB], p[G.c], p[G.ldc],
        m0, m1, j, Math.min(n1, j + nc), p[G.k], p[G.alpha], p[G.beta], p[G.work] + t * p[G.workBytes], p[G.kc], p[G.mc], nc);
    }
  } else if (op === OP_FAIL) {
    if (t !== 0) throw new Error(`injected failure in kernel worker ${t}`);
  } else {
    throw new Error(`unknown kernel op ${op}`);
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function writeError(ctl: Int32Array, t: number, e: unknown): void {
  const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  const u8 = new Uint8Array(ctl.buffer, ERR_BYTE + t * ERR_SLOT + 4, ERR_SLOT - 4);
  const { written } = enc.encodeInto(msg.slice(0, ERR_SLOT / 4 - 2), u8);
  ctl[(ERR_BYTE + t * ERR_SLOT) >> 2] = written;
}

export function readError(ctl: Int32Array, t: number): string {
  const len = ctl[(ERR_BYTE + t * ERR_SLOT) >> 2];
  // copy out of the shared buffer: TextDecoder does not accept shared views
  return dec.decode(new Uint8Array(ctl.buffer, ERR_BYTE + t * ERR_SLOT + 4, len).slice());
}
