// Shared GGUF definitions for the reader (gguf.ts) and the writer (gguf-writer.ts): value types,
// the KV shape, format constants and the block geometry of GGML types. No I/O here.

export const GGUFValueType = {
  UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6,
  BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12,
} as const;

export type GGUFValue = number | bigint | boolean | string | ArrayLike<unknown> | GGUFValue[];
export interface GGUFKV { key: string; type: number; value: GGUFValue; arrayType?: number }

export const MAGIC = 0x46554747; // 'GGUF' read as a little-endian u32
export const DEFAULT_ALIGNMENT = 32;
export const MAX_ALIGNMENT = 1 << 20;
export const MAX_ARRAY_DEPTH = 4;
export const MAX_DIMS = 4;

const VALUE_NAMES = ['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'float32', 'bool', 'string',
  'array', 'uint64', 'int64', 'float64'];
export function valueTypeName(t: number): string {
  return VALUE_NAMES[t] ?? `type#${t}`;
}
/** Bytes of one scalar (strings/arrays: their minimal encoding), or 0 for an unknown type. */
export const MIN_VALUE_BYTES = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];
export type TypedCtor = { new (n: number): ArrayLike<unknown> & { buffer: ArrayBufferLike }; BYTES_PER_ELEMENT: number };
export const TYPED: Record<number, TypedCtor> = {
  0: Uint8Array, 1: Int8Array, 2: Uint16Array, 3: Int16Array, 4: Uint32Array, 5: Int32Array, 6: Float32Array,
  7: Uint8Array, 10: BigUint64Array, 11: BigInt64Array, 12: Float64Array,
};

// Block geometry of every GGML type whose layout is known, so that files holding types we cannot
// compute with can still be inspected. [elements per block, bytes per block] (as ggml's type traits).
const QK_K = 256;
export const BLOCKS: Record<number, [number, number]> = {
  0: [1, 4], 1: [1, 2], 2: [32, 18], 3: [32, 20], 6: [32, 22], 7: [32, 24], 8: [32, 34], 9: [32, 36],
  10: [QK_K, 84], 11: [QK_K, 110], 12: [QK_K, 144], 13: [QK_K, 176], 14: [QK_K, 210], 15: [QK_K, 292],
  16: [QK_K, 66], 17: [QK_K, 74], 18: [QK_K, 98], 19: [QK_K, 50], 20: [32, 18], 21: [QK_K, 110],
  22: [QK_K, 82], 23: [QK_K, 136], 24: [1, 1], 25: [1, 2], 26: [1, 4], 27: [1, 8], 28: [1, 8],
  29: [QK_K, 56], 30: [1, 2], 34: [QK_K, 54], 35: [QK_K, 66], 39: [32, 17],
};

export function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}
export const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;
