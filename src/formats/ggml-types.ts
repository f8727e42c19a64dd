// On-disk tensor element types (GGML type ids, as in gguf-py's GGMLQuantizationType).
// Block-quantized types store `blockSize` elements in `blockBytes` bytes; a row must be a whole
// number of blocks.

export const TensorType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q8_0: 8,
  BF16: 30,
} as const;
export type TensorType = (typeof TensorType)[keyof typeof TensorType];

interface TypeInfo {
  name: string;
  blockSize: number; // elements per block
  blockBytes: number; // bytes per block
}

const INFO: Record<number, TypeInfo> = {
  0: { name: 'f32', blockSize: 1, blockBytes: 4 },
  1: { name: 'f16', blockSize: 1, blockBytes: 2 },
  2: { name: 'q4_0', blockSize: 32, blockBytes: 18 }, // f16 d + 16 B of nibbles
  8: { name: 'q8_0', blockSize: 32, blockBytes: 34 }, // f16 d + 32 int8
  30: { name: 'bf16', blockSize: 1, blockBytes: 2 },
};

/** Names of GGML types we recognise but cannot compute with, so errors can say what the file holds. */
const OTHER_NAMES: Record<number, string> = {
  3: 'q4_1', 6: 'q5_0', 7: 'q5_1', 9: 'q8_1', 10: 'q2_K', 11: 'q3_K', 12: 'q4_K', 13: 'q5_K',
  14: 'q6_K', 15: 'q8_K', 16: 'iq2_xxs', 17: 'iq2_xs', 18: 'iq3_xxs', 19: 'iq1_s', 20: 'iq4_nl',
  21: 'iq3_s', 22: 'iq2_s', 23: 'iq4_xs', 24: 'i8', 25: 'i16', 26: 'i32', 27: 'i64', 28: 'f64',
  29: 'iq1_m', 34: 'tq1_0', 35: 'tq2_0', 39: 'mxfp4',
};

export function isSupportedType(t: number): t is TensorType {
  return INFO[t] !== undefined;
}

export function typeName(t: number): string {
  return INFO[t]?.name ?? OTHER_NAMES[t] ?? `type#${t}`;
}

export function typeFromName(name: string): TensorType | undefined {
  for (const [id, info] of Object.entries(INFO)) if (info.name === name.toLowerCase()) return Number(id) as TensorType;
  return undefined;
}

export function blockSize(t: TensorType): number {
  return INFO[t]!.blockSize;
}

/** Bytes of one row of `cols` elements. Throws if cols is not a multiple of the block size. */
export function rowBytes(t: TensorType, cols: number): number {
  const info = INFO[t];
  if (!info) throw new RangeError(`unsupported tensor type ${typeName(t)}`);
  if (cols % info.blockSize !== 0) {
    throw new RangeError(`${info.name} rows need a multiple of ${info.blockSize} columns, got ${cols}`);
  }
  return (cols / info.blockSize) * info.blockBytes;
}

/** Bytes of a tensor with GGUF dims (ne[0] = contiguous row length). */
export function tensorBytes(t: TensorType, dims: readonly number[]): number {
  let rows = 1;
  for (let i = 1; i < dims.length; i++) rows *= dims[i]!;
  return rowBytes(t, dims[0] ?? 1) * rows;
}
