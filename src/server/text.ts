// Text streaming helpers shared by the library API and the server: UTF-8 pieces that never split a
// character across tokens, and stop-sequence matching that holds back only what could still become
// a stop sequence. Pure: no I/O, no model.

/**
 * Turns token bytes into text pieces. A token may end inside a multi-byte character (byte-fallback
 * tokens carry single bytes); its piece is then '' and the token that completes the character carries
 * it. `pending` tells whether bytes of an unfinished character are held, so a caller can delay the
 * token until it knows whether the stream ends there (the tail then decodes to U+FFFD, as detokenize
 * does).
 */
export class Utf8Pieces {
  private dec = new TextDecoder('utf-8', { ignoreBOM: true }); // a generated U+FEFF is text, not a BOM
  private need = 0; // continuation bytes still expected by the character being decoded

  push(bytes: Uint8Array): string {
    for (const b of bytes) {
      if (this.need > 0 && (b & 0xc0) === 0x80) this.need--;
      else if (b >= 0xf0 && b < 0xf8) this.need = 3;
      else if (b >= 0xe0 && b < 0xf0) this.need = 2;
      else if (b >= 0xc2 && b < 0xe0) this.need = 1;
      else this.need = 0; // ASCII or an invalid byte (the decoder emits U+FFFD for it at once)
    }
    return this.dec.decode(bytes, { stream: true });
  }

  get pending(): boolean {
    return this.need > 0;
  }

  /** End of stream: what the held bytes decode to ('' or U+FFFD). */
  end(): string {
    this.need = 0;
    return this.dec.decode();
  }
}

/**
 * Stop sequences over a text stream. push() returns the text that can be emitted now; text that is a
 * prefix of some stop sequence at the end of the stream is held back until the next push decides.
 * When a stop sequence appears, the text before it is emitted and `stopped` becomes true; the stop
 * sequence itself is not part of the output (OpenAI's behaviour).
 */
export class StopMatcher {
  private held = '';
  stopped = false;

  constructor(private readonly stops: readonly string[]) {}

  push(text: string): string {
    if (this.stopped) return '';
    if (this.stops.length === 0) return text;
    const s = this.held + text;
    let cut = -1;
    for (const stop of this.stops) {
      const i = s.indexOf(stop);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.held = '';
      return s.slice(0, cut);
    }
    // hold the longest suffix of s that is a proper prefix of a stop sequence
    let keep = 0;
    for (const stop of this.stops) {
      for (let k = Math.min(stop.length - 1, s.length); k > keep; k--) {
        if (s.endsWith(stop.slice(0, k))) {
          keep = k;
          break;
        }
      }
    }
    this.held = s.slice(s.length - keep);
    return s.slice(0, s.length - keep);
  }

  /** End of stream without a stop: the held text is output after all. */
  flush(): string {
    const h = this.stopped ? '' : this.held;
    this.held = '';
    return h;
  }
}
