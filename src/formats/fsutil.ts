// Small file-system facts for the layers above formats/ (which may not import node:fs themselves).
import { existsSync, mkdirSync, readdirSync, readSync, renameSync, rmSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';

export function pathExists(p: string): boolean {
  return existsSync(p);
}

export function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Bytes of a file, or of all files directly inside a directory (an HF model dir). */
export function fileSize(p: string): number {
  try {
    const st = statSync(p);
    if (!st.isDirectory()) return st.size;
    return readdirSync(p).reduce((s, f) => {
      const q = statSync(join(p, f));
      return s + (q.isFile() ? q.size : 0);
    }, 0);
  } catch {
    return 0;
  }
}

/** Whether process `pid` exists. Signal 0 only probes: ESRCH means no such process; EPERM means it
 * exists but belongs to another user (alive, so its files are left alone). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Cleans up after writers of `path` that were killed (SIGKILL, OOM, power loss) before they could
 * remove their temp files. The atomic writers name them after the target and their pid:
 * `${path}.tmp-<pid>` (GGUFWriter, writeSafetensors, writeHFDir's directory), `${path}.flash-<pid>`
 * (convert --layout flash), `${path}.sparsify-<pid>` (sparsify), `${path}.place-<pid>` (place), each possibly with its own writer's
 * temp file after it (`${path}.flash-<pid>.tmp-<pid>`), and `${path}.old-<pid>` (writeHFDir's previous
 * directory, moved aside during the swap). An entry is stale when none of the pids in its name is a
 * live process (processAlive); entries of live processes, ours included, are never touched (a pid
 * reused by an unrelated process only delays the cleanup). A stale `.old-<pid>` is the previous
 * complete version: it is put back at `path` if the swap was cut between its two renames (no `path`),
 * else removed. Best effort: an entry that cannot be removed is skipped (the next writer tries again).
 * Returns the entries removed or restored.
 */
export function removeStaleTemps(path: string): string[] {
  const dir = dirname(path);
  const re = new RegExp(`^${escapeRe(basename(path))}\\.(tmp|flash|sparsify|place|old)-(\\d+)((?:\\.(?:tmp|flash|sparsify|place)-\\d+)*)$`);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return []; // no directory yet: nothing to clean
  }
  const done: string[] = [];
  for (const name of names) {
    const m = re.exec(name);
    if (!m) continue;
    const pids = [m[2]!, ...(m[3]!.match(/\d+/g) ?? [])].map(Number);
    if (pids.some((pid) => !Number.isSafeInteger(pid) || pid <= 0 || processAlive(pid))) continue;
    const p = join(dir, name);
    try {
      if (m[1] === 'old' && !m[3] && !existsSync(path)) renameSync(p, path);
      else rmSync(p, { recursive: true, force: true });
      done.push(p);
    } catch { /* best effort: e.g. removed by another writer meanwhile */ }
  }
  return done;
}

/** flashlm's cache directory ($FLASHLM_CACHE, else $XDG_CACHE_HOME/flashlm, else ~/.cache/flashlm), created. */
export function cacheDir(): string {
  const dir = process.env.FLASHLM_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'flashlm');
  mkdirSync(dir, { recursive: true });
  return dir;
}

// Reads into WebAssembly arena memory go through a small reused bounce buffer. Measured on this
// machine (2 GiB, warm page cache): read() straight into fresh shared wasm memory took 11.7 s and the
// first pass of the kernels over those pages another 3.6 s (7 µs/page, in user mode, no faults
// counted); read() into a bounce buffer + TypedArray.set took 8.6 s with a fast first pass. The
// difference is what the first token of a 13B model paid (20 s) before.
const BOUNCE_BYTES = 8 << 20;
let bounce: Buffer | undefined;

/**
 * Reads `length` bytes at file `position` into dst[dstOffset..], looping on short reads.
 * `onEof(pos)` builds the error for a file that ends early.
 */
export function preadFully(fd: number, dst: Uint8Array, dstOffset: number, length: number, position: number, onEof: (pos: number) => Error): void {
  const viaBounce = typeof SharedArrayBuffer !== 'undefined' && dst.buffer instanceof SharedArrayBuffer && length >= 1 << 16;
  let done = 0;
  if (!viaBounce) {
    while (done < length) {
      const n = readSync(fd, dst, dstOffset + done, Math.min(length - done, 1 << 30), position + done);
      if (n === 0) throw onEof(position + done);
      done += n;
    }
    return;
  }
  bounce ??= Buffer.allocUnsafeSlow(BOUNCE_BYTES);
  while (done < length) {
    const want = Math.min(length - done, BOUNCE_BYTES);
    let got = 0;
    while (got < want) {
      const n = readSync(fd, bounce, got, want - got, position + done + got);
      if (n === 0) throw onEof(position + done + got);
      got += n;
    }
    dst.set(bounce.subarray(0, want), dstOffset + done);
    done += want;
  }
}
