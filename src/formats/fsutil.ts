// Small file-system facts for the layers above formats/ (which may not import node:fs themselves).
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

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

/** flashlm's cache directory ($FLASHLM_CACHE, else $XDG_CACHE_HOME/flashlm, else ~/.cache/flashlm), created. */
export function cacheDir(): string {
  const dir = process.env.FLASHLM_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'flashlm');
  mkdirSync(dir, { recursive: true });
  return dir;
}
