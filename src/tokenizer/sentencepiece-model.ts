// Minimal reader of a sentencepiece tokenizer.model (protobuf ModelProto): the pieces with their
// scores and types, and the normalizer's add_dummy_prefix. Everything else is skipped.
//   ModelProto { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2; NormalizerSpec normalizer_spec = 3; ... }
//   SentencePiece { string piece = 1; float score = 2; Type type = 3 [default = NORMAL]; }
//   Type { NORMAL = 1; UNKNOWN = 2; CONTROL = 3; USER_DEFINED = 4; BYTE = 6; UNUSED = 5; }
//   NormalizerSpec { string name = 1; bytes precompiled_charsmap = 2; bool add_dummy_prefix = 3 [default = true]; ... }

import { FormatError } from '../formats/errors.js';

export interface SentencePieceModel {
  pieces: string[];
  scores: Float32Array;
  types: Int32Array; // sentencepiece piece types (1..6)
  addDummyPrefix: boolean;
}

class Reader {
  pos: number;
  constructor(readonly buf: Uint8Array, readonly file: string, start: number, readonly end: number) {
    this.pos = start;
  }

  varint(): number {
    let v = 0, mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new FormatError(this.file, 'protobuf', 'truncated varint');
      const b = this.buf[this.pos++]!;
      v += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return v;
      mul *= 128;
    }
    throw new FormatError(this.file, 'protobuf', 'varint too long');
  }

  /** [start, end) of a length-delimited field */
  bytes(): [number, number] {
    const n = this.varint();
    const s = this.pos;
    if (n > this.end - s) throw new FormatError(this.file, 'protobuf', `field of ${n} bytes runs past its message`);
    this.pos = s + n;
    return [s, s + n];
  }

  skip(wire: number): void {
    switch (wire) {
      case 0: this.varint(); return;
      case 1: this.advance(8); return;
      case 2: this.bytes(); return;
      case 5: this.advance(4); return;
      default: throw new FormatError(this.file, 'protobuf', `unsupported wire type ${wire}`);
    }
  }

  advance(n: number): void {
    if (n > this.end - this.pos) throw new FormatError(this.file, 'protobuf', 'truncated field');
    this.pos += n;
  }
}

export function parseSentencePieceModel(buf: Uint8Array, file = 'tokenizer.model'): SentencePieceModel {
  // ignoreBOM: a piece may be U+FEFF itself (Llama's id 30143); a plain TextDecoder would take it for
  // a byte-order mark and return '' (sentencepiece and llama.cpp's convert keep it)
  const dec = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const pieces: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  let addDummyPrefix = true;
  const r = new Reader(buf, file, 0, buf.length);
  while (r.pos < r.end) {
    const tag = r.varint();
    const field = Math.floor(tag / 8), wire = tag & 7;
    if (field === 1 && wire === 2) {
      const [s, e] = r.bytes();
      const m = new Reader(buf, file, s, e);
      let piece = '', score = 0, type = 1;
      while (m.pos < m.end) {
        const t = m.varint();
        const f = Math.floor(t / 8), w = t & 7;
        if (f === 1 && w === 2) {
          const [ps, pe] = m.bytes();
          try {
            piece = dec.decode(buf.subarray(ps, pe));
          } catch {
            throw new FormatError(file, `piece ${pieces.length}`, 'not valid UTF-8');
          }
        } else if (f === 2 && w === 5) {
          m.advance(4);
          score = dv.getFloat32(m.pos - 4, true);
        } else if (f === 3 && w === 0) {
          type = m.varint();
        } else {
          m.skip(w);
        }
      }
      pieces.push(piece);
      scores.push(score);
      types.push(type);
    } else if (field === 3 && wire === 2) {
      const [s, e] = r.bytes();
      const m = new Reader(buf, file, s, e);
      while (m.pos < m.end) {
        const t = m.varint();
        const f = Math.floor(t / 8), w = t & 7;
        if (f === 3 && w === 0) addDummyPrefix = m.varint() !== 0;
        else m.skip(w);
      }
    } else {
      r.skip(wire);
    }
  }
  if (pieces.length === 0) throw new FormatError(file, 'pieces', 'no pieces: not a sentencepiece model');
  return { pieces, scores: Float32Array.from(scores), types: Int32Array.from(types), addDummyPrefix };
}
