// Shared tokenizer types: the contract interface, GGUF token types and llama.cpp-style attributes.

export interface EncodeOptions {
  /** prepend BOS (default: the vocabulary's add_bos_token) */
  addBos?: boolean;
  /** recognise control / unknown tokens (`<s>`, `</s>`, ...) written in the text (default false);
   *  user-defined tokens are always recognised, as llama.cpp does */
  parseSpecial?: boolean;
}

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bos: number; // -1 when the vocabulary has none
  readonly eos: number; // -1 when the vocabulary has none
  readonly addBos: boolean;
  encode(text: string, opts?: EncodeOptions): number[];
  /** UTF-8 text of the ids; control / unknown / unused tokens give nothing; for SPM vocabularies the
   *  space that encode() put in front of the text (dummy prefix) is removed again */
  decode(ids: number[]): string;
  /** streaming: bytes of one token (byte-fallback tokens give raw bytes; caller joins with TextDecoder stream) */
  tokenBytes(id: number): Uint8Array;
}

/** Extra, read-only views every tokenizer made here offers beyond the contract. */
export interface TokenizerInfo extends Tokenizer {
  readonly model: 'llama' | 'gpt2';
  readonly addEos: boolean;
  /** the vocabulary entry as stored (SPM: with '▁'; byte-level BPE: byte-to-unicode mapped) */
  piece(id: number): string;
  /** GGUF token type of id (TokenType) */
  tokenType(id: number): number;
  /** end-of-generation token (eos, eot, eom, ... as llama.cpp's special_eog_ids) */
  isEog(id: number): boolean;
}

/** tokenizer.ggml.token_type values (llama.cpp llama_token_type / sentencepiece piece types). */
export const TokenType = {
  UNDEFINED: 0, NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6,
} as const;

/** llama.cpp llama_token_attr bits (derived from the token type; several may be set). */
export const Attr = {
  UNDEFINED: 0, UNKNOWN: 1 << 0, UNUSED: 1 << 1, NORMAL: 1 << 2, CONTROL: 1 << 3,
  USER_DEFINED: 1 << 4, BYTE: 1 << 5, NORMALIZED: 1 << 6, LSTRIP: 1 << 7, RSTRIP: 1 << 8,
} as const;

export function attrFromType(type: number): number {
  switch (type) {
    case TokenType.NORMAL: return Attr.NORMAL;
    case TokenType.UNKNOWN: return Attr.UNKNOWN;
    case TokenType.CONTROL: return Attr.CONTROL;
    case TokenType.USER_DEFINED: return Attr.USER_DEFINED;
    case TokenType.UNUSED: return Attr.UNUSED;
    case TokenType.BYTE: return Attr.BYTE;
    default: return Attr.UNDEFINED;
  }
}
