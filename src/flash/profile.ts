// Disk profile and cost model (issue 3, item 5): O_DIRECT random-read bandwidth and IOPS versus
// chunk size and reads in flight, measured on the filesystem that holds the model.
//
// Each cell (chunk size × in-flight) runs for an equal slice of the time budget: `inFlight`
// workers each read `chunk` bytes at uniformly random chunk-aligned offsets of the target file
// into their own slot of a page-aligned shared wasm memory, issuing the next read as soon as the
// previous one lands. With O_DIRECT the page cache is bypassed, but a virtual disk's host may still
// cache; the file should be several times larger than the bytes a cell reads, and the profile
// records both. Without UV_USE_IO_URING=1 in the environment at process start, libuv's threadpool
// (UV_THREADPOOL_SIZE, default 4) caps the reads really in flight; the profile records which.
import * as fs from 'node:fs';
import { join, resolve } from 'node:path';
import { cacheDir } from '../formats/fsutil.js';
import { ALIGN, DirectReader, ioUringActive, threadpoolSize as threadpoolSizeNow, type ReadFn } from './io.js';

export const DEFAULT_CHUNKS = [4, 8, 16, 32, 64, 128, 256, 512, 1024].map((k) => k << 10);
export const DEFAULT_IN_FLIGHT = [1, 4, 16, 64];

export interface DiskCell {
  chunkBytes: number;
  inFlight: number;
  reads: number;
  bytes: number;
  ms: number;
  /** 1e6 bytes per second */
  mbps: number;
  iops: number;
}

export interface DiskProfile {
  version: 1;
  created: string;
  path: string;
  /** st_dev of the file as "major:minor" (what the profile is keyed by) */
  device: string;
  fileBytes: number;
  direct: boolean;
  /** false when reads went through the page cache (O_DIRECT refused): numbers may be memory speed */
  trustworthy: boolean;
  warnings: string[];
  ioUring: boolean;
  threadpoolSize: number;
  secondsPerCell: number;
  cells: DiskCell[];
}

export class DiskProfileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DiskProfileError';
  }
}

export interface ProfileOptions {
  /** Existing file to read (never written). Default: a scratch file in `dir`, removed afterwards. */
  file?: string;
  /** Where the scratch file goes (default cacheDir()). */
  dir?: string;
  /** Scratch file size in bytes (default 1 GiB); rounded down to 1 MiB. */
  sizeBytes?: number;
  /** Total measuring time in seconds (default 20), split evenly over the cells. */
  seconds?: number;
  chunkSizes?: number[];
  inFlights?: number[];
  /** When O_DIRECT is refused, drop the whole page cache first (root only; default true). */
  dropCaches?: boolean;
  /** Force buffered reads (tests). */
  direct?: boolean;
  readFn?: ReadFn;
  onProgress?: (done: number, total: number, phase: string) => void;
}

/** Profile file path for the device holding `path`: cacheDir()/disk-profile-<dev>.json. */
export function profilePathFor(path: string, dir = cacheDir()): string {
  const st = fs.statSync(path);
  return join(dir, `disk-profile-${deviceKey(st.dev)}.json`);
}

function deviceKey(dev: number): string {
  // Linux encodes st_dev as major in bits 8..19 (and 32+), minor in bits 0..7 and 20..31
  const major = ((dev >>> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
  const minor = (dev & 0xff) | ((dev >>> 12) & ~0xff);
  return `${major}-${minor}`;
}

/** Fills a scratch file with pseudo-random bytes (not zeros: a thin-provisioned or compressing device would not read them). */
function writeScratch(path: string, bytes: number, onProgress?: ProfileOptions['onProgress']): void {
  const block = Buffer.allocUnsafe(1 << 20);
  let x = 0x9e3779b9;
  const fd = fs.openSync(path, 'w');
  try {
    for (let off = 0; off < bytes; off += block.length) {
      for (let i = 0; i < block.length; i += 4) {
        x ^= x << 13; x ^= x >>> 17; x ^= x << 5; // xorshift32
        block.writeInt32LE(x | 0, i);
      }
      fs.writeSync(fd, block, 0, Math.min(block.length, bytes - off), off);
      if ((off & ((64 << 20) - 1)) === 0) onProgress?.(off, bytes, 'writing scratch file');
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Best effort: drop clean page-cache pages (needs root). Node has no posix_fadvise(DONTNEED). */
function dropCaches(): boolean {
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '1');
    return true;
  } catch {
    return false;
  }
}

/** Measures the grid; the caller saves it with saveDiskProfile. */
export async function profileDisk(opts: ProfileOptions = {}): Promise<DiskProfile> {
  const chunks = opts.chunkSizes ?? DEFAULT_CHUNKS;
  const inFlights = opts.inFlights ?? DEFAULT_IN_FLIGHT;
  for (const c of chunks) if (!Number.isInteger(c) || c < ALIGN || c % ALIGN || c > 64 << 20) throw new DiskProfileError(`chunk size ${c} must be a multiple of ${ALIGN} up to 64 MiB`);
  for (const f of inFlights) if (!Number.isInteger(f) || f < 1 || f > 1024) throw new DiskProfileError(`in-flight count ${f} must be 1..1024`);
  if (!chunks.length || !inFlights.length) throw new DiskProfileError('need at least one chunk size and one in-flight count');
  const seconds = opts.seconds ?? 20;
  if (!(seconds > 0)) throw new DiskProfileError(`seconds must be > 0, got ${seconds}`);
  const maxChunk = Math.max(...chunks);
  const maxFlight = Math.max(...inFlights);
  const slotBytes = maxChunk;
  if (slotBytes * maxFlight > 2 ** 31) throw new DiskProfileError(`largest chunk × most in flight is over 2 GiB of read buffers`);

  const scratchBytes = Math.floor((opts.sizeBytes ?? 1 << 30) / (1 << 20)) * (1 << 20);
  let path: string;
  let scratch: string | undefined;
  if (opts.file) {
    path = resolve(opts.file);
    if (!fs.existsSync(path)) throw new DiskProfileError(`no such file: ${path}`);
  } else {
    if (scratchBytes < maxChunk) throw new DiskProfileError(`scratch size ${scratchBytes} is smaller than the largest chunk ${maxChunk}`);
    const dir = opts.dir ?? cacheDir();
    fs.mkdirSync(dir, { recursive: true });
    scratch = join(dir, `disk-profile-scratch-${process.pid}.bin`);
    path = scratch;
  }
  try {
    if (scratch) writeScratch(scratch, scratchBytes, opts.onProgress);
    const st = fs.statSync(path);
    const fileBytes = st.size;
    const span = Math.floor(fileBytes / maxChunk) * maxChunk;
    if (span < maxChunk) throw new DiskProfileError(`${path} (${fileBytes} bytes) is smaller than the largest chunk (${maxChunk} bytes)`);
    const pages = Math.ceil((slotBytes * maxFlight) / 65536);
    const mem = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    const buf = mem.buffer as unknown as SharedArrayBuffer;
    new Uint8Array(buf).fill(1); // touch every page now, not inside the first cell's timing

    const warnings: string[] = [];
    let direct = opts.direct !== false;
    const secondsPerCell = seconds / (chunks.length * inFlights.length);
    const cells: DiskCell[] = [];
    const total = chunks.length * inFlights.length;
    let rand = (st.ino ^ 0x5bd1e995) >>> 0 || 1;
    const next = () => { rand ^= rand << 13; rand ^= rand >>> 17; rand ^= rand << 5; return (rand >>> 0) / 2 ** 32; };
    for (const inFlight of inFlights) {
      const reader = await DirectReader.open(path, { inFlight, maxReadBytes: maxChunk, direct: opts.direct, readFn: opts.readFn });
      try {
        if (!reader.direct && direct) {
          direct = false;
          warnings.push(reader.warning ?? `${path}: O_DIRECT refused`);
          warnings.push(opts.dropCaches !== false && dropCaches()
            ? 'buffered reads: dropped the page cache (/proc/sys/vm/drop_caches) before measuring, but reads repeat offsets and hit it again: the profile is NOT trustworthy'
            : 'buffered reads through the page cache, which could not be dropped (not root; Node has no posix_fadvise): the profile is NOT trustworthy');
        } else if (!reader.direct && !warnings.length) {
          warnings.push('buffered reads (asked for): reads hit the page cache, so the profile is NOT trustworthy');
        }
        for (const chunk of chunks) {
          opts.onProgress?.(cells.length, total, `${chunk >> 10} KiB × ${inFlight}`);
          const blocks = span / chunk;
          let reads = 0;
          let bytes = 0;
          const t0 = performance.now();
          const until = t0 + secondsPerCell * 1000;
          const worker = async (slot: number) => {
            const dst = new Uint8Array(buf, slot * slotBytes, chunk);
            do { // at least one read per worker, even if a stall ate the whole slice
              const fileOffset = Math.floor(next() * blocks) * chunk;
              const s = await reader.read([{ fileOffset, length: chunk, dst }]);
              reads++;
              bytes += s.bytes;
            } while (performance.now() < until);
          };
          await Promise.all(Array.from({ length: inFlight }, (_, i) => worker(i)));
          const ms = performance.now() - t0;
          cells.push({ chunkBytes: chunk, inFlight, reads, bytes, ms: round(ms, 1), mbps: round(bytes / ms / 1000, 1), iops: Math.round((reads * 1000) / ms) });
        }
      } finally {
        await reader.close();
      }
    }
    opts.onProgress?.(total, total, 'done');
    const ioUring = ioUringActive();
    const threadpoolSize = threadpoolSizeNow();
    const deepest = Math.max(...inFlights);
    if (!ioUring && threadpoolSize < deepest) warnings.push(`only ${threadpoolSize} reads were really in flight (libuv threadpool of ${threadpoolSize} threads; set UV_THREADPOOL_SIZE=${deepest} before node starts, as the flashlm command does)`);
    return {
      version: 1, created: new Date().toISOString(), path, device: deviceKey(st.dev).replace('-', ':'), fileBytes, direct,
      trustworthy: direct, warnings, ioUring, threadpoolSize, secondsPerCell: round(secondsPerCell, 3), cells,
    };
  } finally {
    if (scratch) fs.rmSync(scratch, { force: true });
  }
}

function round(x: number, digits: number): number {
  const m = 10 ** digits;
  return Math.round(x * m) / m;
}

/** Writes the profile as JSON (atomically: temp file + rename) and returns the path. */
export function saveDiskProfile(profile: DiskProfile, path: string): string {
  const tmp = `${path}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, `${JSON.stringify(profile, null, 1)}\n`);
  fs.renameSync(tmp, path);
  return path;
}

export function loadDiskProfile(path: string): DiskProfile {
  let p: DiskProfile;
  try {
    p = JSON.parse(fs.readFileSync(path, 'utf8')) as DiskProfile;
  } catch (e) {
    throw new DiskProfileError(`${path}: cannot read disk profile: ${(e as Error).message}`);
  }
  if (p?.version !== 1 || !Array.isArray(p.cells) || !p.cells.length) throw new DiskProfileError(`${path}: not a version-1 disk profile with cells`);
  for (const c of p.cells) {
    if (![c.chunkBytes, c.inFlight, c.mbps, c.iops].every((v) => typeof v === 'number' && Number.isFinite(v) && v >= 0)) {
      throw new DiskProfileError(`${path}: malformed cell ${JSON.stringify(c)}`);
    }
  }
  return p;
}

/** The cells' chunk sizes and in-flight counts, sorted ascending. */
export function profileAxes(p: DiskProfile): { chunks: number[]; inFlights: number[] } {
  return {
    chunks: [...new Set(p.cells.map((c) => c.chunkBytes))].sort((a, b) => a - b),
    inFlights: [...new Set(p.cells.map((c) => c.inFlight))].sort((a, b) => a - b),
  };
}

/**
 * Bandwidth in MB/s (1e6 B/s) for reads of `chunkBytes` with `inFlight` reads in flight (default:
 * the best measured in-flight count), interpolated linearly in log2(chunk size) between measured
 * sizes and clamped at the ends. In-flight counts not measured use the nearest one below (or the
 * smallest).
 */
export function bandwidthMBps(p: DiskProfile, chunkBytes: number, inFlight?: number): number {
  const { chunks, inFlights } = profileAxes(p);
  const flights = inFlight === undefined ? inFlights : [inFlights.filter((f) => f <= inFlight).pop() ?? inFlights[0]!];
  let best = 0;
  for (const f of flights) {
    const pts = chunks.map((c) => ({ c, mbps: p.cells.find((x) => x.chunkBytes === c && x.inFlight === f)?.mbps })).filter((x) => x.mbps !== undefined) as { c: number; mbps: number }[];
    if (!pts.length) continue;
    let v: number;
    if (chunkBytes <= pts[0]!.c) v = pts[0]!.mbps * (chunkBytes / pts[0]!.c); // below the smallest size, IOPS-bound
    else if (chunkBytes >= pts[pts.length - 1]!.c) v = pts[pts.length - 1]!.mbps;
    else {
      const i = pts.findIndex((x) => x.c >= chunkBytes);
      const a = pts[i - 1]!, b = pts[i]!;
      const t = (Math.log2(chunkBytes) - Math.log2(a.c)) / (Math.log2(b.c) - Math.log2(a.c));
      v = a.mbps + t * (b.mbps - a.mbps);
    }
    best = Math.max(best, v);
  }
  return best;
}

/**
 * Estimated milliseconds to read `bytes` in `reads` reads of equal size (bytes/reads each) with
 * `inFlight` in flight (default: the best measured).
 */
export function costMs(p: DiskProfile, bytes: number, reads: number, inFlight?: number): number {
  if (bytes <= 0 || reads <= 0) return 0;
  const mbps = bandwidthMBps(p, bytes / reads, inFlight);
  return mbps > 0 ? bytes / (mbps * 1000) : Infinity; // MB/s × 1000 = bytes per ms
}

/**
 * The smallest measured chunk size (and its in-flight count) reaching `fraction` (default 0.9)
 * of the best bandwidth in the profile: bigger reads buy little more and waste more on sparse
 * neuron sets.
 */
export function bestReadSize(p: DiskProfile, fraction = 0.9): { chunkBytes: number; inFlight: number; mbps: number } {
  const top = Math.max(...p.cells.map((c) => c.mbps));
  const ok = p.cells.filter((c) => c.mbps >= fraction * top).sort((a, b) => a.chunkBytes - b.chunkBytes || a.inFlight - b.inFlight || b.mbps - a.mbps);
  const c = ok[0]!;
  return { chunkBytes: c.chunkBytes, inFlight: c.inFlight, mbps: c.mbps };
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
export function fmtChunk(b: number): string {
  return b >= 1 << 20 ? `${b / (1 << 20)} MiB` : `${b / 1024} KiB`;
}

/** A plain SVG line chart: MB/s vs chunk size (log2 axis), one line per in-flight count. */
export function profileSvg(p: DiskProfile): string {
  const { chunks, inFlights } = profileAxes(p);
  const W = 640, H = 400, L = 70, R = 130, T = 40, B = 50;
  const pw = W - L - R, ph = H - T - B;
  const maxY = Math.max(1, ...p.cells.map((c) => c.mbps));
  const step = niceStep(maxY / 5);
  const yTop = Math.ceil(maxY / step) * step;
  const lo = Math.log2(chunks[0]!), hi = Math.log2(chunks[chunks.length - 1]!);
  const x = (c: number) => L + (hi > lo ? ((Math.log2(c) - lo) / (hi - lo)) * pw : pw / 2);
  const y = (v: number) => T + ph - (v / yTop) * ph;
  const colors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  const title = `Random-read bandwidth${p.direct ? ' (O_DIRECT)' : ' (BUFFERED: not trustworthy)'}${p.ioUring ? ', io_uring' : ''}`;
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`);
  for (let v = 0; v <= yTop + 1e-9; v += step) {
    out.push(`<line x1="${L}" x2="${L + pw}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
    out.push(`<text x="${L - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${round(v, 1)}</text>`);
  }
  for (const c of chunks) out.push(`<text x="${x(c).toFixed(1)}" y="${T + ph + 18}" text-anchor="middle">${esc(fmtChunk(c).replace(' ', ''))}</text>`);
  out.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${T + ph}" stroke="black"/><line x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}" stroke="black"/>`);
  out.push(`<text x="${L + pw / 2}" y="${H - 10}" text-anchor="middle">chunk size</text>`);
  out.push(`<text transform="translate(18 ${T + ph / 2}) rotate(-90)" text-anchor="middle">MB/s</text>`);
  inFlights.forEach((f, i) => {
    const color = colors[i % colors.length]!;
    const pts = chunks.map((c) => p.cells.find((z) => z.chunkBytes === c && z.inFlight === f)).filter((z): z is DiskCell => !!z);
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map((z) => `${x(z.chunkBytes).toFixed(1)},${y(z.mbps).toFixed(1)}`).join(' ')}"/>`);
    for (const z of pts) out.push(`<circle cx="${x(z.chunkBytes).toFixed(1)}" cy="${y(z.mbps).toFixed(1)}" r="3" fill="${color}"/>`);
    const ly = T + 10 + i * 18;
    out.push(`<line x1="${L + pw + 15}" x2="${L + pw + 35}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<text x="${L + pw + 40}" y="${ly + 4}">${f} in flight</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

/** Writes `text` to `path` (for --plot; the CLI may not import node:fs). */
export function writeTextFile(path: string, text: string): void {
  fs.writeFileSync(path, text);
}
