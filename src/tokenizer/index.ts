// Tokenizers: llama.cpp-exact SPM ('llama') and byte-level BPE ('gpt2') from GGUF metadata, the same
// from Hugging Face tokenizer directories, and the GGUF tokenizer metadata a HF directory converts to.

export type { EncodeOptions, Tokenizer, TokenizerInfo } from './types.js';
export { Attr, TokenType } from './types.js';
export { tokenizerFromGGUF } from './gguf-vocab.js';
export { tokenizerFromHFDir } from './hf.js';
export { ggufVocabMetadataFromHFDir } from './hf-gguf.js';
export { parseSentencePieceModel, type SentencePieceModel } from './sentencepiece-model.js';
