// Small file readers for modules outside formats/ (which may not import node:fs): a JSON file and a
// small binary file, each with a size limit, failing with NotFoundError / FormatError.
import { readFileSync, statSync } from 'node:fs';
import { FormatError, NotFoundError } from './errors.js';

/** Whether `path` exists and is a regular file. */
export function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The bytes of a small file (at most `maxBytes`). */
export function readSmallFile(path: string, maxBytes: number): Uint8Array {
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new NotFoundError(path);
    size = st.size;
  } catch (e) {
    if (e instanceof NotFoundError) throw e;
    throw new NotFoundError(path);
  }
  if (size > maxBytes) throw new FormatError(path, 'size', `${size} bytes is over the limit of ${maxBytes}`);
  return readFileSync(path);
}

/** Parse a JSON file of at most `maxBytes`. */
export function readJSONFile(path: string, maxBytes: number, field = 'json'): unknown {
  return parseJSONBytes(path, field, readSmallFile(path, maxBytes));
}

/** Deepest nesting of arrays / objects a JSON file may have (the files we read nest < 10 levels;
 * Python's json module, which writes most of them, stops near 1000). */
export const MAX_JSON_DEPTH = 512;

/**
 * UTF-8 bytes → JSON value, as FormatError(file, field, ..) when the bytes are not UTF-8, nest deeper
 * than MAX_JSON_DEPTH (checked before parsing, so that neither JSON.parse nor any code walking the
 * value spends time or stack on a hostile nesting) or are not JSON.
 */
export function parseJSONBytes(file: string, field: string, bytes: Uint8Array): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new FormatError(file, field, 'not valid UTF-8');
  }
  const depth = jsonDepthOver(text, MAX_JSON_DEPTH);
  if (depth >= 0) throw new FormatError(file, field, `nested deeper than ${MAX_JSON_DEPTH} levels (at character ${depth})`);
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new FormatError(file, field, `invalid JSON (${(e as Error).message.slice(0, 200)})`);
  }
}

/** Index of the first bracket nested deeper than `max` in a JSON text (strings skipped), else -1. */
function jsonDepthOver(text: string, max: number): number {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) { // skip a string
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return i;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return -1;
}
