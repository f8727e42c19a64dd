// Matvec throughput of the WASM kernels: GB/s of weight bytes and GFLOPS for a 5120×13824
// matrix (rows × cols), rotating through a set of such matrices much larger than L3 so the
// weights stream from DRAM. Median of RUNS passes, on 1 and 2 threads. Prints JSON.
// Also (FFN as row-column records, see src/kernels/index.ts matvecT / MatvecJob.rowStride):
//   matvecT: y = Wᵀh for a TROWS×TCOLS matrix (default 13824×5120 q8_0: the 13B down projection
//     stored as columns), dense h; GB/s of weight bytes.
//   strided: records of [gate | up | down] rows (q8_0, dim TCOLS, record = 3·rowBytes rounded up to
//     512 B); gate and up as two rowStride jobs of one matvec call (GB/s of gate+up bytes), and
//     matvecT over the records' down parts (GB/s of down bytes).
// Usage: node dist/bench/kernels.js [--runs N] [--set-mb MB] [--types q8_0,q4_0,bf16,f32]
//   [--benches matvec,matvecT,strided] [--ttypes q8_0] [--trows 13824] [--tcols 5120]
//   [--shapes 5120x5120,13824x5120,5120x13824 --repeats R]
// --shapes: the matvec shapes of one 13B decoder layer (q/k/v/o, gate/up, down as stored by
//   llama.cpp); each (shape, threads) cell is measured R times, round-robin, so the machine's
//   noise (DRAM shared with other tenants: the same cell ranges 12–22 GB/s minutes apart) spreads
//   over all cells; reports each cell's median and best, and the layer's bytes-weighted GB/s.
import { Compute, GGMLType, rowBytes } from '../src/kernels/index.js';

const argv = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : dflt;
};
const RUNS = Number(opt('runs', '7'));
const SET_BYTES = Number(opt('set-mb', '256')) * 1e6;
const TYPES = opt('types', 'q8_0,q4_0,bf16,f32').split(',');
const THREADS = opt('threads', '1,2').split(',').map(Number);
const ROWS = Number(opt('rows', '5120'));
const COLS = Number(opt('cols', '13824'));
const BENCHES = opt('benches', 'matvec,matvecT,strided').split(',');
const TTYPES = opt('ttypes', 'q8_0').split(',');
const TROWS = Number(opt('trows', '13824'));
const TCOLS = Number(opt('tcols', '5120'));
const TYPE_IDS: Record<string, number> = { f32: GGMLType.F32, f16: GGMLType.F16, bf16: GGMLType.BF16, q8_0: GGMLType.Q8_0, q4_0: GGMLType.Q4_0 };

function fillWeights(u8: Uint8Array, type: number): void {
  // random payload with sane scales / finite values (NaN or subnormal floats would distort timing)
  let s = 0x9e3779b9 >>> 0;
  const rnd = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
  const u32 = new Uint32Array(u8.buffer, u8.byteOffset, u8.length >>> 2);
  for (let i = 0; i < u32.length; i++) u32[i] = rnd();
  if (type === GGMLType.F32) {
    for (let i = 0; i < u32.length; i++) u32[i] = (u32[i] & 0x807fffff) | 0x3c000000; // ±[2^-7, 2^-6)
  } else if (type === GGMLType.F16 || type === GGMLType.BF16) {
    const u16 = new Uint16Array(u8.buffer, u8.byteOffset, u8.length >>> 1);
    const [m, e] = type === GGMLType.F16 ? [0x83ff, 0x2000] : [0x807f, 0x3c00];
    for (let i = 0; i < u16.length; i++) u16[i] = (u16[i] & m) | e;
  } else {
    const bb = type === GGMLType.Q8_0 ? 34 : 18;
    for (let o = 0; o + 2 <= u8.length; o += bb) { u8[o] = 0x1f; u8[o + 1] = 0x20; } // d ≈ 0.0081
  }
}

interface Result { type: string; threads: number; matrices: number; setMB: number; gbps: number; gflops: number; msPerMatrix: number; runsGBps: number[] }

async function benchType(name: string, threads: number, ROWS_ = ROWS, COLS_ = COLS): Promise<Result> {
  const ROWS = ROWS_, COLS = COLS_;
  const type = TYPE_IDS[name];
  const mBytes = rowBytes(type, COLS) * ROWS;
  const nMat = Math.max(1, Math.ceil(SET_BYTES / mBytes));
  const compute = await Compute.create({ threads });
  try {
    const a = compute.createArena(nMat * mBytes + 64 * 1024 * 1024);
    const ws: number[] = [];
    for (let i = 0; i < nMat; i++) {
      const w = a.alloc(mBytes, 64);
      fillWeights(a.u8(w, mBytes), type);
      ws.push(w);
    }
    const x = a.alloc(COLS * 4);
    const xf = a.f32(x, COLS);
    for (let i = 0; i < COLS; i++) xf[i] = Math.sin(i * 0.37);
    const xq = a.alloc(compute.preparedXBytes(type, COLS));
    compute.prepareX(a, type, x, xq, COLS);
    const y = a.alloc(ROWS * 4);
    const pass = () => { for (const w of ws) compute.matvec(a, [{ type, w, rows: ROWS, cols: COLS, xq, y }]); };
    for (let i = 0; i < 3; i++) pass(); // warm up: tier-up to optimized code, page in
    const times: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      const t0 = process.hrtime.bigint();
      pass();
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }
    const sorted = [...times].sort((p, q) => p - q);
    const med = sorted[sorted.length >> 1];
    const r3 = (v: number) => Math.round(v * 1000) / 1000;
    return {
      type: name, threads, matrices: nMat, setMB: Math.round((nMat * mBytes) / 1e6),
      gbps: r3((nMat * mBytes) / med / 1e9),
      gflops: r3((2 * ROWS * COLS * nMat) / med / 1e9),
      msPerMatrix: r3((med / nMat) * 1000),
      runsGBps: times.map((t) => Math.round(((nMat * mBytes) / t / 1e9) * 100) / 100),
    };
  } finally {
    await compute.close();
  }
}

interface ResultT { bench: string; type: string; threads: number; shape: [number, number]; rowStride: number; sets: number; setMB: number; weightMBPerSet: number; gbps: number; msPerSet: number; runsGBps: number[] }

/** Times `pass` (one call per set) RUNS times after 3 warm-up passes; GB/s of `bytesPerSet` read. */
function timeIt(nSets: number, bytesPerSet: number, pass: () => void) {
  for (let i = 0; i < 3; i++) pass();
  const times: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = process.hrtime.bigint();
    pass();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const med = [...times].sort((p, q) => p - q)[times.length >> 1];
  const total = nSets * bytesPerSet;
  return {
    gbps: Math.round((total / med / 1e9) * 1000) / 1000,
    msPerSet: Math.round((med / nSets) * 1e6) / 1000,
    runsGBps: times.map((t) => Math.round((total / t / 1e9) * 100) / 100),
  };
}

async function benchMatvecT(name: string, threads: number): Promise<ResultT> {
  const type = TYPE_IDS[name];
  const rb = rowBytes(type, TCOLS), mBytes = rb * TROWS;
  const nMat = Math.max(1, Math.ceil(SET_BYTES / mBytes));
  const compute = await Compute.create({ threads });
  try {
    const a = compute.createArena(nMat * mBytes + 16 * 1024 * 1024);
    const ws: number[] = [];
    for (let i = 0; i < nMat; i++) { const w = a.alloc(mBytes, 64); fillWeights(a.u8(w, mBytes), type); ws.push(w); }
    const h = a.alloc(TROWS * 4), y = a.alloc(TCOLS * 4);
    const hf = a.f32(h, TROWS);
    for (let i = 0; i < TROWS; i++) hf[i] = Math.sin(i * 0.37) + 1.5; // dense: no row skipped
    const t = timeIt(nMat, mBytes, () => { for (const w of ws) compute.matvecT(a, { type, w, rows: TROWS, cols: TCOLS, h, y }); });
    return { bench: 'matvecT', type: name, threads, shape: [TROWS, TCOLS], rowStride: rb, sets: nMat, setMB: Math.round((nMat * mBytes) / 1e6), weightMBPerSet: Math.round(mBytes / 1e5) / 10, ...t };
  } finally {
    await compute.close();
  }
}

/** FFN records [gate | up | down] (q8_0, dim TCOLS, TROWS records per layer). */
async function benchStrided(threads: number): Promise<ResultT[]> {
  const type = GGMLType.Q8_0;
  const rb = rowBytes(type, TCOLS), rec = Math.ceil((3 * rb) / 512) * 512, lBytes = rec * TROWS;
  const nL = Math.max(1, Math.ceil(SET_BYTES / lBytes));
  const compute = await Compute.create({ threads });
  try {
    const a = compute.createArena(nL * lBytes + 16 * 1024 * 1024);
    const ls: number[] = [];
    for (let i = 0; i < nL; i++) { const w = a.alloc(lBytes, 512); fillWeights(a.u8(w, lBytes), GGMLType.F16); ls.push(w); }
    // q8_0 parts with sane scales inside each record (the padding stays f16-ish filler)
    for (const w of ls) for (let r = 0; r < TROWS; r++) fillWeights(a.u8(w + r * rec, 3 * rb), type);
    const x = a.alloc(TCOLS * 4), xq = a.alloc(compute.preparedXBytes(type, TCOLS));
    const xf = a.f32(x, TCOLS);
    for (let i = 0; i < TCOLS; i++) xf[i] = Math.sin(i * 0.37);
    compute.prepareX(a, type, x, xq, TCOLS);
    const g = a.alloc(TROWS * 4), u = a.alloc(TROWS * 4), y = a.alloc(TCOLS * 4);
    const hf = a.f32(g, TROWS);
    const common = { threads, shape: [TROWS, TCOLS] as [number, number], rowStride: rec, sets: nL, setMB: Math.round((nL * lBytes) / 1e6), type: 'q8_0' };
    const gu = timeIt(nL, 2 * rb * TROWS, () => {
      for (const w of ls) {
        compute.matvec(a, [
          { type, w, rows: TROWS, cols: TCOLS, xq, y: g, rowStride: rec },
          { type, w: w + rb, rows: TROWS, cols: TCOLS, xq, y: u, rowStride: rec },
        ]);
      }
    });
    for (let i = 0; i < TROWS; i++) hf[i] = Math.sin(i * 0.37) + 1.5;
    const dn = timeIt(nL, rb * TROWS, () => {
      for (const w of ls) compute.matvecT(a, { type, w: w + 2 * rb, rows: TROWS, cols: TCOLS, rowStride: rec, h: g, y });
    });
    return [
      { bench: 'strided matvec gate+up (2 jobs)', ...common, weightMBPerSet: Math.round((2 * rb * TROWS) / 1e5) / 10, ...gu },
      { bench: 'strided matvecT down', ...common, weightMBPerSet: Math.round((rb * TROWS) / 1e5) / 10, ...dn },
    ];
  } finally {
    await compute.close();
  }
}

const SHAPES = opt('shapes', '').split(',').filter(Boolean).map((v) => v.split('x').map(Number) as [number, number]);
const REPEATS = Number(opt('repeats', '5'));
if (SHAPES.length) {
  // per 13B layer: q, k, v, o (5120×5120 each), gate + up (13824×5120), down (5120×13824)
  const perLayer: Record<string, number> = { '5120x5120': 4, '13824x5120': 2, '5120x13824': 1 };
  const cells: { shape: [number, number]; threads: number; type: string; gbps: number[] }[] = [];
  for (const name of TYPES) for (const shape of SHAPES) for (const t of THREADS) cells.push({ shape, threads: t, type: name, gbps: [] });
  for (let r = 0; r < REPEATS; r++) {
    for (const c of cells) c.gbps.push((await benchType(c.type, c.threads, c.shape[0], c.shape[1])).gbps);
  }
  const med = (v: number[]) => [...v].sort((p, q) => p - q)[v.length >> 1];
  const out = cells.map((c) => ({ type: c.type, shape: c.shape, threads: c.threads, medianGBps: med(c.gbps), bestGBps: Math.max(...c.gbps), repeatsGBps: c.gbps }));
  const layer: Record<string, { medianGBps: number; bestGBps: number }> = {};
  for (const name of TYPES) {
    for (const t of THREADS) {
      let bytes = 0, tMed = 0, tBest = 0;
      for (const c of out) {
        if (c.type !== name || c.threads !== t) continue;
        const k = perLayer[`${c.shape[0]}x${c.shape[1]}`];
        if (!k) continue;
        const b = k * c.shape[0] * c.shape[1];
        bytes += b; tMed += b / c.medianGBps; tBest += b / c.bestGBps;
      }
      if (bytes) layer[`${name}/${t}`] = { medianGBps: Math.round((bytes / tMed) * 100) / 100, bestGBps: Math.round((bytes / tBest) * 100) / 100 };
    }
  }
  process.stdout.write(JSON.stringify({ runs: RUNS, repeats: REPEATS, node: process.version, cells: out, layer13B: layer }, null, 1) + '\n');
  process.exit(0);
}
const results: (Result | ResultT)[] = [];
if (BENCHES.includes('matvec')) {
  for (const name of TYPES) {
    if (!(name in TYPE_IDS)) throw new Error(`unknown type ${name}`);
    for (const t of THREADS) results.push(await benchType(name, t));
  }
}
if (BENCHES.includes('matvecT')) {
  for (const name of TTYPES) {
    if (!(name in TYPE_IDS)) throw new Error(`unknown type ${name}`);
    for (const t of THREADS) results.push(await benchMatvecT(name, t));
  }
}
if (BENCHES.includes('strided')) for (const t of THREADS) results.push(...(await benchStrided(t)));
process.stdout.write(JSON.stringify({ shape: [ROWS, COLS], runs: RUNS, node: process.version, results }, null, 1) + '\n');
