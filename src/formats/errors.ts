// Typed errors for everything that parses a file. Each names the file and the field, so a user sees
// one line like: "model.gguf: tensor 'blk.3.ffn_up.weight' data [..] runs past end of file (..)".

export class FormatError extends Error {
  constructor(
    readonly file: string,
    readonly field: string,
    detail: string,
  ) {
    super(`${file}: ${field}: ${detail}`);
    this.name = 'FormatError';
  }
}

/** A file that is fine but uses something we do not support (dtype, architecture, version). */
export class UnsupportedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsupportedError';
  }
}

/** Missing file or directory, with the path in the message and no stack noise. */
export class NotFoundError extends Error {
  constructor(readonly path: string, what = 'file') {
    super(`${what} not found: ${path}`);
    this.name = 'NotFoundError';
  }
}

/**
 * Writing an output file failed for a reason the user can act on (disk full, quota, read-only file
 * system, I/O error): names the file, the bytes needed and written, and says what was left behind.
 */
export class WriteError extends Error {
  constructor(readonly path: string, readonly code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WriteError';
  }
}

/**
 * A short rendering of a value parsed from an untrusted JSON file, for error messages. Unlike
 * JSON.stringify / String() it is bounded in depth, items and length, so a hostile file with deeply
 * nested arrays cannot overflow the stack while we are reporting that it is invalid.
 */
export function jsonSnippet(v: unknown, max = 80): string {
  const s = render(v, 0);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

function render(v: unknown, depth: number): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v);
  if (typeof v === 'bigint') return String(v);
  if (v === null || typeof v !== 'object') return typeof v === 'number' && !Number.isFinite(v) ? String(v) : JSON.stringify(v) ?? String(v);
  if (depth >= 3) return Array.isArray(v) ? '[…]' : '{…}';
  const MAX_ITEMS = 6;
  if (Array.isArray(v)) {
    const items = v.slice(0, MAX_ITEMS).map((x) => render(x, depth + 1));
    if (v.length > MAX_ITEMS) items.push('…');
    return `[${items.join(',')}]`;
  }
  const keys = Object.keys(v);
  const items = keys.slice(0, MAX_ITEMS).map((k) => `${JSON.stringify(k)}:${render((v as Record<string, unknown>)[k], depth + 1)}`);
  if (keys.length > MAX_ITEMS) items.push('…');
  return `{${items.join(',')}}`;
}
