// `flashlm profile-disk`: measure random-read bandwidth/IOPS vs chunk size and reads in flight,
// save the profile to the cache dir, print a table, optionally plot it.
import {
  bestReadSize, DEFAULT_CHUNKS, DEFAULT_IN_FLIGHT, fmtChunk, profileAxes, profileDisk, profilePathFor, profileSvg,
  saveDiskProfile, writeTextFile, type DiskProfile,
} from '../flash/profile.js';
import { cacheDir } from '../formats/fsutil.js';
import { Progress } from './progress.js';
import { numFlag, parse, UsageError } from './main.js';

const USAGE = `usage: flashlm profile-disk [--file F] [--dir D] [--size 1GB] [--seconds 20] [--chunks 4K,64K,1M] [--inflight 1,4,16,64] [--json] [--plot out.svg] [--keep-cache]
  --file F     read an existing big file (e.g. a model), read-only; default: a scratch file of --size in D
  --dir D      where the scratch file goes (default: the cache dir); profile the filesystem that holds the model
  --keep-cache if O_DIRECT is refused, do not drop the page cache (as root, it is dropped system-wide)
  Reads run on libuv's threadpool (the flashlm command sets UV_THREADPOOL_SIZE=64), or through
  io_uring when node starts with UV_USE_IO_URING=1.
`;

/** "1GB" = 1e9, "1GiB" / "1G" = 2^30, "64K" / "64KiB" = 65536, "4096" = 4096 bytes. */
export function parseByteSize(s: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(|[kKmMgGtT])(i?[bB])?\s*$/.exec(s);
  if (!m) throw new UsageError(`--${flag}: cannot read '${s}' as a size (e.g. 4096, 64K, 1MiB, 1GB)`);
  const unit = m[2]!.toUpperCase();
  const exp = unit ? 'KMGT'.indexOf(unit) + 1 : 0;
  const decimal = m[3] !== undefined && !/^i/i.test(m[3]); // "GB" is decimal; "G", "GiB" binary
  const n = Number(m[1]) * (decimal ? 1000 : 1024) ** exp;
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${flag}: size must be > 0, got '${s}'`);
  return Math.floor(n);
}

function listFlag(v: string | boolean | undefined, flag: string, dflt: number[], item: (s: string) => number): number[] {
  if (v === undefined) return dflt;
  if (typeof v !== 'string' || !v.trim()) throw new UsageError(`--${flag} needs a comma-separated list`);
  return v.split(',').map((s) => item(s.trim()));
}

export function formatProfileTable(p: DiskProfile): string {
  const { chunks, inFlights } = profileAxes(p);
  const lines: string[] = [];
  lines.push(`${'chunk'.padEnd(9)}${inFlights.map((f) => `${f} in flight`.padStart(22)).join('')}`);
  for (const c of chunks) {
    const cols = inFlights.map((f) => {
      const cell = p.cells.find((x) => x.chunkBytes === c && x.inFlight === f);
      return (cell ? `${cell.mbps.toFixed(1)} MB/s ${fmtIops(cell.iops)}` : '-').padStart(22);
    });
    lines.push(`${fmtChunk(c).padEnd(9)}${cols.join('')}`);
  }
  return lines.join('\n');
}

function fmtIops(n: number): string {
  return n >= 10000 ? `${(n / 1000).toFixed(0)}k IOPS` : n >= 1000 ? `${(n / 1000).toFixed(1)}k IOPS` : `${n} IOPS`;
}

export async function cmdProfileDisk(argv: string[]): Promise<number> {
  const { flags, positionals } = parse(argv, {
    file: { type: 'string' }, dir: { type: 'string' }, size: { type: 'string' }, seconds: { type: 'string' },
    chunks: { type: 'string' }, inflight: { type: 'string' }, json: { type: 'boolean' }, plot: { type: 'string' },
    'keep-cache': { type: 'boolean' },
  });
  if (flags.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length) throw new UsageError(`profile-disk takes no positional arguments (got '${positionals[0]}'); use --file F`);
  if (flags.file !== undefined && flags.size !== undefined) throw new UsageError('--size is for the scratch file; it does not apply with --file');
  if (flags.file !== undefined && flags.dir !== undefined) throw new UsageError('--dir is for the scratch file; it does not apply with --file');
  const sizeBytes = typeof flags.size === 'string' ? parseByteSize(flags.size, 'size') : 1 << 30;
  const seconds = numFlag(flags, 'seconds', 20, 0.01, 3600);
  const chunkSizes = listFlag(flags.chunks, 'chunks', DEFAULT_CHUNKS, (s) => {
    const n = parseByteSize(s, 'chunks');
    if (n % 4096 || n > 64 << 20) throw new UsageError(`--chunks: ${s} is not a multiple of 4096 up to 64 MiB`);
    return n;
  });
  const inFlights = listFlag(flags.inflight, 'inflight', DEFAULT_IN_FLIGHT, (s) => {
    const n = Number(s);
    if (!/^\d+$/.test(s) || n < 1 || n > 1024) throw new UsageError(`--inflight: '${s}' is not an integer in [1, 1024]`);
    return n;
  });
  if (typeof flags.plot === 'string' && !flags.plot) throw new UsageError('--plot needs an output path');

  const bar = new Progress('writing scratch file', process.stderr, !flags.json);
  let announced = false;
  const profile = await profileDisk({
    file: typeof flags.file === 'string' ? flags.file : undefined,
    dir: typeof flags.dir === 'string' ? flags.dir : undefined,
    sizeBytes, seconds, chunkSizes, inFlights, dropCaches: !flags['keep-cache'],
    onProgress: (d, t, phase) => {
      if (phase.startsWith('writing')) return bar.update(d, t);
      bar.finish();
      if (!announced && !flags.json) process.stderr.write(`measuring ${t} cells for ${seconds} s...\n`);
      announced = true;
    },
  });
  bar.finish();
  const saved = saveDiskProfile(profile, profilePathFor(typeof flags.file === 'string' ? flags.file : (typeof flags.dir === 'string' ? flags.dir : cacheDir())));
  if (typeof flags.plot === 'string') writeTextFile(flags.plot, profileSvg(profile));
  // warnings go to stderr even with --json, loudly: a buffered profile measures the page cache
  for (const w of profile.warnings) process.stderr.write(`flashlm: WARNING: ${w}\n`);
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ ...profile, saved, best: bestReadSize(profile) })}\n`);
    return 0;
  }
  const w = (s: string) => process.stdout.write(`${s}\n`);
  w(`${profile.path}: device ${profile.device}, ${(profile.fileBytes / 1e9).toFixed(2)} GB, ${profile.direct ? 'O_DIRECT' : 'BUFFERED (O_DIRECT refused: NOT trustworthy)'}, ${profile.ioUring ? 'io_uring' : `libuv threadpool (${profile.threadpoolSize} threads)`}, ${(profile.secondsPerCell * 1000).toFixed(0)} ms per cell`);
  w(formatProfileTable(profile));
  const best = bestReadSize(profile);
  w(`best read size: ${fmtChunk(best.chunkBytes)} with ${best.inFlight} in flight (${best.mbps.toFixed(1)} MB/s, >= 90% of the peak)`);
  w(`saved ${saved}${typeof flags.plot === 'string' ? `; plot ${flags.plot}` : ''}`);
  return 0;
}
