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
