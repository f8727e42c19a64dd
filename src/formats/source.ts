// A model source: a GGUF file or a Hugging Face model directory, both seen through GGUF tensor
// names and GGUF metadata keys, so the engine and the converter need not care which it is.

import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { FormatError, NotFoundError } from './errors.js';
import { readGGUF, readTensorData, type GGUFKV, type TensorInfo } from './gguf.js';
import { openHFDir } from './hf.js';

export interface ModelSource {
  path: string;
  kind: 'gguf' | 'hf';
  /** GGUF metadata. HF: config.json mapped to llama.* keys, plus `extraMetadata` (tokenizer.ggml.*). */
  metadata: Map<string, GGUFKV>;
  /** GGUF names, dims and types. HF: the source dtype; `offset` is within the tensor's shard. */
  tensors: TensorInfo[];
  /** Bytes of tensor `name` in its stored type, written into dst. HF: Q/K rows permuted to GGUF order. */
  readTensor(name: string, dst: Uint8Array, dstOffset?: number): void;
  close(): void;
}

export interface OpenModelOptions {
  /** Extra metadata merged over the source's (e.g. tokenizer.ggml.* KVs the caller built from the
   * HF tokenizer files; formats/ does not import tokenizer/). */
  extraMetadata?: GGUFKV[];
}

/**
 * Opens a GGUF file or an HF model directory (config.json + safetensors). A path to an HF
 * directory's config.json or *.safetensors file opens the directory.
 */
export function openModel(path: string, opts: OpenModelOptions = {}): ModelSource {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch {
    throw new NotFoundError(path, 'model');
  }
  let src: ModelSource;
  if (st.isDirectory()) src = openHFDir(path);
  else if (nodePath.basename(path) === 'config.json' || path.endsWith('.safetensors')) src = openHFDir(nodePath.dirname(path));
  else src = openGGUFSource(path);
  for (const kv of opts.extraMetadata ?? []) src.metadata.set(kv.key, kv);
  return src;
}

function openGGUFSource(path: string): ModelSource {
  const f = readGGUF(path);
  let closed = false;
  return {
    path,
    kind: 'gguf',
    metadata: f.metadata,
    tensors: f.tensors,
    readTensor(name: string, dst: Uint8Array, dstOffset = 0): void {
      if (closed) throw new Error(`${path}: model source is closed`);
      const t = f.tensorByName.get(name);
      if (!t) throw new FormatError(path, `tensor '${name}'`, 'not in this file');
      readTensorData(path, t, dst, dstOffset);
    },
    close(): void {
      closed = true;
    },
  };
}
