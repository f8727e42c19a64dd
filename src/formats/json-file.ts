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
export function readJSONFile(path: string, maxBytes: number): unknown {
  const bytes = readSmallFile(path, maxBytes);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new FormatError(path, 'encoding', 'not valid UTF-8');
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new FormatError(path, 'json', (e as Error).message);
  }
}
