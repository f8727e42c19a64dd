// Atomic writer for a small Hugging Face-style model directory (JSON files, raw files and one
// model.safetensors), for modules outside formats/ (which may not import node:fs).
//
// Everything is written into `${dir}.tmp-${pid}` first. Only when every file is complete (and
// fsynced) is the directory swapped in: an existing `dir` is renamed aside to `${dir}.old-${pid}`,
// the new one renamed into place, then the old one removed. On any failure the temp directory is
// removed and a previous `dir` is left (or put back) in place.

import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { removeStaleTemps } from './fsutil.js';
import { ST_SINGLE_FILE, writeSafetensors } from './safetensors.js';

/** One file of the directory: `json` is written as JSON.stringify(json, null, 2) + '\n'; `data` as is. */
export interface HFDirFile {
  name: string;
  json?: unknown;
  data?: Uint8Array;
}

/** Tensors for the directory's model.safetensors (written in this order by writeSafetensors). */
export interface HFDirTensors {
  tensors: { name: string; dtype: string; shape: number[]; data: Uint8Array }[];
  metadata?: Record<string, string>;
}

/** A directory that cannot be written as asked (bad file list, or the target is not a directory). */
export class HFWriteError extends Error {
  constructor(readonly path: string, detail: string) {
    super(`${path}: ${detail}`);
    this.name = 'HFWriteError';
  }
}

/** Writes `files` (and, if given, `safetensors` as model.safetensors) as the directory `dir`,
 * replacing any existing directory there atomically. */
export function writeHFDir(dir: string, files: HFDirFile[], safetensors?: HFDirTensors): void {
  const names = new Set<string>(safetensors ? [ST_SINGLE_FILE] : []);
  for (const f of files) {
    if (!f.name || f.name !== nodePath.basename(f.name) || f.name === '.' || f.name === '..' || f.name.includes('\\')) {
      throw new HFWriteError(dir, `'${f.name}' is not a plain file name`);
    }
    if (names.has(f.name)) throw new HFWriteError(dir, `file '${f.name}' given twice`);
    if ((f.json === undefined) === (f.data === undefined)) {
      throw new HFWriteError(dir, `file '${f.name}' needs exactly one of json and data`);
    }
    names.add(f.name);
  }
  if (isNonDirectory(dir)) throw new HFWriteError(dir, 'exists and is not a directory');

  removeStaleTemps(dir); // `${dir}.tmp-<pid>` / `.old-<pid>` of killed writers (an interrupted swap's old dir is put back)
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  try {
    if (safetensors) writeSafetensors(nodePath.join(tmp, ST_SINGLE_FILE), safetensors.tensors, safetensors.metadata);
    for (const f of files) {
      const bytes = f.data ?? Buffer.from(`${JSON.stringify(f.json, null, 2)}\n`, 'utf8');
      writeFileDurably(nodePath.join(tmp, f.name), bytes);
    }
    swapIn(tmp, dir);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  fsyncDir(nodePath.dirname(dir));
}

function isNonDirectory(p: string): boolean {
  try {
    return !fs.statSync(p).isDirectory();
  } catch {
    return false; // does not exist
  }
}

/** Renames `tmp` to `dir`; an existing `dir` is moved aside first and removed after. If the second
 * rename fails, the old directory is put back. */
function swapIn(tmp: string, dir: string): void {
  if (!fs.existsSync(dir)) {
    fs.renameSync(tmp, dir);
    return;
  }
  if (isNonDirectory(dir)) throw new HFWriteError(dir, 'exists and is not a directory');
  const old = `${dir}.old-${process.pid}`;
  fs.rmSync(old, { recursive: true, force: true });
  fs.renameSync(dir, old);
  try {
    fs.renameSync(tmp, dir);
  } catch (e) {
    try { fs.renameSync(old, dir); } catch { /* leave it at `old` rather than lose it */ }
    throw e;
  }
  fs.rmSync(old, { recursive: true, force: true });
}

function writeFileDurably(path: string, b: Uint8Array): void {
  const fd = fs.openSync(path, 'w');
  try {
    let done = 0;
    while (done < b.length) done += fs.writeSync(fd, b, done, Math.min(b.length - done, 1 << 30));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Best effort: make renames in `dir` durable (not every platform can fsync a directory). */
function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
  } catch { /* ignore */ }
}
