// Fuzz targets: for each parser (and the server's request validation), seed inputs (built here from
// synth models and hand-made files), a fast-check arbitrary of mutation plans over them, and the
// function that runs the parser on an input directory. An input is a set of files; the parser must
// either succeed or throw one of the project's typed errors (the server target: RequestError). Used
// by scripts/fuzz.ts (`npm run fuzz`), test/fuzz/smoke.test.ts and test/fuzz/regressions.test.ts.

import fc from 'fast-check';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { synthModel, synthTokenizerJSON, synthVocab } from '../src/engine/synth.js';
import { FormatError, NotFoundError, UnsupportedError } from '../src/formats/errors.js';
import { convertToFlashLayout, describeFlashLayout, FK, openFlashLayout } from '../src/formats/flash-layout.js';
import { formatMetaValue, GGUFValueType as VT, metaF32, metaStr, metaU32, readGGUF, readTensorData } from '../src/formats/gguf.js';
import { openHFDir } from '../src/formats/hf.js';
import { openSafetensors, readSafetensorsData } from '../src/formats/safetensors.js';
import { openModel } from '../src/formats/source.js';
import { ModelConfigError, configFromMetadata } from '../src/model/llama.js';
import { BYTE_TO_CHAR } from '../src/tokenizer/bpe.js';
import { ggufVocabMetadataFromHFDir, tokenizerFromGGUF, tokenizerFromHFDir, type Tokenizer } from '../src/tokenizer/index.js';
import { RequestError } from '../src/server/errors.js';
import { parseJSON } from '../src/server/http.js';
import { validateChatRequest, validateCompletionRequest, type ChatRequest, type CompletionRequest } from '../src/server/validate.js';
import { execPredictors, PREDICTOR_KEYS, predictorSeeds } from './fuzz-predictors.js';
import { PredictorFormatError } from '../src/formats/predictors.js';
import { clone, encodeGGUF, encodeSafetensors, raw, stringify, type GGUFKV, type GModel } from './fuzz-codec.js';

export type Files = Record<string, Uint8Array>;

/** The project's typed errors: the only exceptions a parser may throw on bad input. */
export const TYPED_ERRORS: (new (...a: never[]) => Error)[] = [FormatError, UnsupportedError, NotFoundError, ModelConfigError];
export const isTyped = (e: unknown): boolean => TYPED_ERRORS.some((c) => e instanceof c);

export interface Target {
  name: string;
  /** the errors this target may throw (default: TYPED_ERRORS) */
  typed?: (new (...a: never[]) => Error)[];
  /** fast-check arbitrary of inputs (seeds built once per process) */
  arb(): fc.Arbitrary<Files>;
  /** runs the parser(s) on the files in `dir` */
  exec(dir: string): void;
}

// ---------------------------------------------------------------------------------------------
// interesting values

const U64_EDGES = [0n, 1n, 2n, 7n, 31n, 32n, 255n, 4096n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 32n + 1n,
  2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 62n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 32n, 2n ** 64n - 1n];
const NUM_EDGES = [0, -0, 1, -1, 2, 3, 4, 31, 32, 33, 255, 256, 511, 512, 4096, 65535, 65536, 2 ** 24, 2 ** 24 + 1, 2 ** 31 - 1,
  2 ** 31, -(2 ** 31), 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 1e15, 1e300, -1e300, 0.5, 1.5, 1e-45,
  NaN, Infinity, -Infinity];
const u64Arb = fc.oneof(fc.constantFrom(...U64_EDGES), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 1n << 20n }));
const numArb = fc.oneof(fc.constantFrom(...NUM_EDGES), fc.integer(), fc.double(), fc.integer({ min: 0, max: 300 }));
const strArb = fc.oneof(
  fc.string({ maxLength: 12 }), fc.string({ unit: 'grapheme', maxLength: 8 }), fc.string({ unit: 'binary', maxLength: 8 }),
  fc.constantFrom('', 'llama', 'gpt2', 'bert', 'relu', 'silu', 'gelu', 'gate,up,down', 'up,down', 'gate,up', 'down,up,gate',
    '<s>', '</s>', '<unk>', '<0x41>', '\u2581', ' ', 'a b', '__proto__', 'constructor', 'llama-bpe', 'qwen2', 'default',
    'F32', 'F16', 'BF16', 'I8', 'F8_E4M3', 'model.safetensors', '\uD800', '\uDFFF\uD800'),
);

/** invalid UTF-8 sequences */
const BAD_UTF8 = [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0x80], [0xfe, 0xff]];

// ---------------------------------------------------------------------------------------------
// byte-level mutations (positions are reduced modulo the input length at apply time)

type ByteMut =
  | { k: 'flip'; at: number; bit: number } | { k: 'set'; at: number; v: number }
  | { k: 'u32'; i: number; v: number } | { k: 'u64'; i: number; v: bigint }
  | { k: 'insert'; at: number; b: number[] } | { k: 'del'; at: number; n: number }
  | { k: 'cut'; i: number; d: number } | { k: 'trunc'; at: number } | { k: 'utf8'; at: number; j: number };

const byteMutArb: fc.Arbitrary<ByteMut> = fc.oneof(
  fc.record({ k: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }),
  fc.record({ k: fc.constant('set' as const), at: fc.nat(), v: fc.constantFrom(0, 0xff, 0x7f, 0x80, 0x22, 0x5b, 0x7b, 0x30, 0x2d) }),
  fc.record({ k: fc.constant('u32' as const), i: fc.nat(), v: fc.oneof(fc.constantFrom(0, 1, 2, 4, 5, 8, 9, 12, 13, 24, 30, 39, 40, 255, 2 ** 31, 2 ** 32 - 1), fc.nat()) }),
  fc.record({ k: fc.constant('u64' as const), i: fc.nat(), v: u64Arb }),
  fc.record({ k: fc.constant('insert' as const), at: fc.nat(), b: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 16 }) }),
  fc.record({ k: fc.constant('del' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ k: fc.constant('cut' as const), i: fc.nat(), d: fc.integer({ min: -3, max: 3 }) }),
  fc.record({ k: fc.constant('trunc' as const), at: fc.nat() }),
  fc.record({ k: fc.constant('utf8' as const), at: fc.nat(), j: fc.nat(BAD_UTF8.length - 1) }),
);

interface Layout { boundaries: number[]; u32?: number[]; u64?: number[] }

function applyBytes(src: Uint8Array, muts: ByteMut[], lay: Layout): Buffer {
  let b = Buffer.from(src);
  for (const m of muts) {
    const at = b.length ? m.k === 'cut' || m.k === 'u32' || m.k === 'u64' ? 0 : (m as { at: number }).at % b.length : 0;
    switch (m.k) {
      case 'flip': if (b.length) b[at] ^= 1 << m.bit; break;
      case 'set': if (b.length) b[at] = m.v; break;
      case 'u32': { const f = lay.u32 ?? []; const p = f[m.i % Math.max(1, f.length)]; if (p !== undefined && p + 4 <= b.length) b.writeUInt32LE(m.v >>> 0, p); break; }
      case 'u64': { const f = lay.u64 ?? []; const p = f[m.i % Math.max(1, f.length)]; if (p !== undefined && p + 8 <= b.length) b.writeBigUInt64LE(m.v, p); break; }
      case 'insert': b = Buffer.concat([b.subarray(0, at), Buffer.from(m.b), b.subarray(at)]); break;
      case 'del': b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.n)]); break;
      case 'utf8': b = Buffer.concat([b.subarray(0, at), Buffer.from(BAD_UTF8[m.j]!), b.subarray(at)]); break;
      case 'cut': {
        const p = lay.boundaries[m.i % Math.max(1, lay.boundaries.length)] ?? 0;
        b = b.subarray(0, Math.max(0, Math.min(b.length, p + m.d)));
        break;
      }
      case 'trunc': b = b.subarray(0, at); break;
    }
  }
  return b;
}

const bytesPlan = (max: number): fc.Arbitrary<ByteMut[]> => fc.oneof(
  { weight: 3, arbitrary: fc.constant([] as ByteMut[]) },
  { weight: 2, arbitrary: fc.array(byteMutArb, { minLength: 1, maxLength: max }) },
);

// ---------------------------------------------------------------------------------------------
// GGUF models: seeds from files, structural edits, encode, byte mutations

function modelOf(p: string, dropTensors = false): GModel {
  const f = readGGUF(p);
  const data = fs.readFileSync(p).subarray(f.dataOffset);
  return {
    version: f.version, alignment: f.alignment, kvs: [...f.metadata.values()],
    tensors: dropTensors ? [] : f.tensors.map((t) => ({ name: t.name, dims: [...t.dims], type: t.type, rel: BigInt(t.offset - f.dataOffset) })),
    data: dropTensors ? new Uint8Array(0) : Uint8Array.from(data),
  };
}

/** A GGUF value of any type (and some unknown types). */
const TYPED_OF: Record<number, (n: number) => ArrayLike<unknown> & { [i: number]: unknown }> = {
  0: (n) => new Uint8Array(n), 1: (n) => new Int8Array(n), 2: (n) => new Uint16Array(n), 3: (n) => new Int16Array(n),
  4: (n) => new Uint32Array(n), 5: (n) => new Int32Array(n), 6: (n) => new Float32Array(n), 7: (n) => new Uint8Array(n),
  10: (n) => new BigUint64Array(n), 11: (n) => new BigInt64Array(n), 12: (n) => new Float64Array(n),
};
function typedArray(et: number, vals: number[]): unknown {
  const a = TYPED_OF[et]!(vals.length);
  vals.forEach((v, i) => {
    if (et === 10 || et === 11) a[i] = BigInt.asIntN(64, BigInt(Number.isFinite(v) ? Math.trunc(v) : 0));
    else a[i] = v;
  });
  return a;
}
interface NewVal { type: number; value: unknown; arrayType?: number }
const scalarValArb: fc.Arbitrary<NewVal> = fc.oneof(
  fc.record({ type: fc.constantFrom(VT.UINT8, VT.INT8, VT.UINT16, VT.INT16, VT.UINT32, VT.INT32, VT.BOOL), value: numArb }),
  fc.record({ type: fc.constantFrom(VT.UINT64, VT.INT64), value: u64Arb }),
  fc.record({ type: fc.constantFrom(VT.FLOAT32, VT.FLOAT64), value: numArb }),
  fc.record({ type: fc.constant(VT.STRING), value: fc.oneof(strArb, fc.uint8Array({ maxLength: 12 })) }),
);
const arrayValArb: fc.Arbitrary<NewVal> = fc.oneof(
  fc.record({ et: fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), vals: fc.array(numArb, { maxLength: 40 }) })
    .map(({ et, vals }) => ({ type: VT.ARRAY, arrayType: et, value: typedArray(et, vals) })),
  fc.array(strArb, { maxLength: 30 }).map((v) => ({ type: VT.ARRAY, arrayType: VT.STRING, value: v })),
  fc.array(fc.array(fc.integer({ min: -5, max: 300 }), { maxLength: 4 }), { minLength: 1, maxLength: 4 })
    .map((v) => ({ type: VT.ARRAY, arrayType: VT.ARRAY, value: v.map((x) => Int32Array.from(x)) })),
);
const unknownValArb: fc.Arbitrary<NewVal> = fc.record({ type: fc.constantFrom(13, 14, 255, 2 ** 31), value: fc.uint8Array({ maxLength: 8 }) });
const newValArb: fc.Arbitrary<NewVal> = fc.oneof({ weight: 5, arbitrary: scalarValArb }, { weight: 4, arbitrary: arrayValArb }, { weight: 1, arbitrary: unknownValArb });

/** Small edit of an existing value: k selects the operation, a/b parameterise it. */
interface Perturb { k: number; a: number; b: number; v: number }
const perturbArb: fc.Arbitrary<Perturb> = fc.record({ k: fc.nat(11), a: fc.nat(), b: fc.nat(), v: numArb });

function perturb(kv: GGUFKV, p: Perturb): GGUFKV {
  const v = kv.value;
  if (typeof v === 'string') {
    const s = [v.slice(0, p.a % (v.length + 1)), v + v, '', v.split(',').reverse().join(','), v.toUpperCase(), v + '\u0000'][p.k % 6]!;
    return { ...kv, value: s };
  }
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') {
    const n = Number(v);
    const x = [n + 1, n - 1, n * 2, 0, -1, n / 2, p.v, n + 32, n * 1000, 2 ** 32 + n, -n, n + 0.5][p.k]!;
    const types = [kv.type, kv.type, kv.type, kv.type, VT.INT32, VT.FLOAT32, kv.type, kv.type, VT.UINT64, VT.UINT64, VT.INT64, VT.FLOAT64];
    const t = types[p.k]!;
    return { key: kv.key, type: t, value: t === VT.UINT64 || t === VT.INT64 ? BigInt(Number.isFinite(x) ? Math.trunc(x) : 0) : x };
  }
  if (Array.isArray(v)) {
    const a = [...v];
    const i = a.length ? p.a % a.length : 0, j = a.length ? p.b % a.length : 0;
    switch (p.k % 6) {
      case 0: a.length = p.a % (a.length + 1); break;
      case 1: if (a.length) a.push(a[i]); break;
      case 2: if (a.length) [a[i], a[j]] = [a[j], a[i]]; break;
      case 3: if (a.length) a[i] = typeof a[0] === 'string' ? ['', '<s>', a[j], String(p.v), '\uD800'][p.b % 5] : a[j]; break;
      case 4: return { key: kv.key, type: VT.ARRAY, arrayType: VT.INT32, value: Int32Array.from(a.map((_, k) => k)) };
      default: return { key: kv.key, type: VT.STRING, value: a.join(' ') };
    }
    return { ...kv, value: a };
  }
  if (ArrayBuffer.isView(v)) {
    const ta = v as unknown as { length: number; [i: number]: number | bigint; slice(s?: number, e?: number): typeof ta };
    const n = ta.length;
    const i = n ? p.a % n : 0, j = n ? p.b % n : 0;
    const big = typeof ta[0] === 'bigint' || v instanceof BigInt64Array || v instanceof BigUint64Array;
    const num = (x: number): number | bigint => (big ? BigInt(Number.isFinite(x) ? Math.trunc(x) : 0) : x);
    switch (p.k % 7) {
      case 0: return { ...kv, value: ta.slice(0, p.a % (n + 1)) as unknown as GGUFKV['value'] };
      case 1: { // extend by one element
        const out = TYPED_OF[kv.arrayType ?? 4]!(n + 1);
        for (let k = 0; k < n; k++) out[k] = ta[k];
        out[n] = num(p.v);
        return { ...kv, value: out as GGUFKV['value'] };
      }
      case 2: if (n) { const c = ta.slice(); c[i] = c[j]!; return { ...kv, value: c as unknown as GGUFKV['value'] }; } break;
      case 3: if (n) { const c = ta.slice(); c[i] = num(p.v); return { ...kv, value: c as unknown as GGUFKV['value'] }; } break;
      case 4: if (n) { const c = ta.slice(); c[i] = num([n, n - 1, 2 ** 32 - 1, -1, 2 ** 31][p.b % 5]!); return { ...kv, value: c as unknown as GGUFKV['value'] }; } break;
      case 5: { // same numbers, another element type
        const et = [VT.INT32, VT.UINT32, VT.FLOAT32, VT.UINT64, VT.UINT8, VT.INT64][p.b % 6]!;
        return { key: kv.key, type: VT.ARRAY, arrayType: et, value: typedArray(et, Array.from({ length: n }, (_, k) => Number(ta[k]))) as GGUFKV['value'] };
      }
      default: return { key: kv.key, type: VT.UINT32, value: n };
    }
  }
  return kv;
}

type GEdit =
  | { op: 'set'; key: number; v: NewVal } | { op: 'perturb'; i: number; p: Perturb } | { op: 'del'; i: number }
  | { op: 'dup'; i: number }
  | { op: 'tdims'; i: number; dims: bigint[] } | { op: 'tdim'; i: number; d: number; k: number }
  | { op: 'ttype'; i: number; type: number } | { op: 'trel'; i: number; j: number; k: number; v: bigint }
  | { op: 'tname'; i: number; j: number; s: string } | { op: 'tdel'; i: number } | { op: 'version'; v: number };

function gEditArb(withTensors: boolean): fc.Arbitrary<GEdit> {
  const kv: fc.Arbitrary<GEdit>[] = [
    fc.record({ op: fc.constant('set' as const), key: fc.nat(), v: newValArb }),
    fc.record({ op: fc.constant('perturb' as const), i: fc.nat(), p: perturbArb }),
    fc.record({ op: fc.constant('perturb' as const), i: fc.nat(), p: perturbArb }),
    fc.record({ op: fc.constant('del' as const), i: fc.nat() }),
    fc.record({ op: fc.constant('dup' as const), i: fc.nat() }),
  ];
  const t: fc.Arbitrary<GEdit>[] = [
    fc.record({ op: fc.constant('tdims' as const), i: fc.nat(), dims: fc.array(u64Arb, { minLength: 0, maxLength: 6 }) }),
    fc.record({ op: fc.constant('tdim' as const), i: fc.nat(), d: fc.nat(3), k: fc.nat(5) }),
    fc.record({ op: fc.constant('ttype' as const), i: fc.nat(), type: fc.oneof(fc.constantFrom(0, 1, 2, 3, 4, 5, 8, 10, 24, 30, 31, 39, 40, 2 ** 31), fc.nat()) }),
    fc.record({ op: fc.constant('trel' as const), i: fc.nat(), j: fc.nat(), k: fc.nat(5), v: u64Arb }),
    fc.record({ op: fc.constant('tname' as const), i: fc.nat(), j: fc.nat(), s: strArb }),
    fc.record({ op: fc.constant('tdel' as const), i: fc.nat() }),
  ];
  const all = [...kv, ...(withTensors ? t : []), fc.record({ op: fc.constant('version' as const), v: fc.constantFrom(1, 2, 3, 4, 0x03000000, 2 ** 32 - 1) })];
  return fc.oneof(...all);
}

function applyGEdits(m0: GModel, edits: GEdit[], focus: string[]): GModel {
  const m: GModel = { ...m0, kvs: [...m0.kvs], tensors: m0.tensors.map((t) => ({ ...t, dims: [...t.dims] })) };
  // an index: half the time into the target's focus keys, else into whatever keys the model has
  const pick = (i: number): number => {
    if (focus.length && i % 2 === 0) {
      const key = focus[(i >> 1) % focus.length]!;
      const at = m.kvs.findIndex((kv) => kv.key === key);
      if (at >= 0) return at;
    }
    return m.kvs.length ? (i >> 1) % m.kvs.length : -1;
  };
  for (const e of edits) {
    const ti = m.tensors.length ? (e as { i?: number }).i ?? 0 : -1;
    const t = ti >= 0 ? m.tensors[ti % m.tensors.length] : undefined;
    switch (e.op) {
      case 'set': {
        const key = focus.length && e.key % 3 !== 0 ? focus[e.key % focus.length]! : m.kvs[e.key % Math.max(1, m.kvs.length)]?.key ?? 'x';
        const kv: GGUFKV = { key, type: e.v.type, value: e.v.value as GGUFKV['value'] };
        if (e.v.arrayType !== undefined) kv.arrayType = e.v.arrayType;
        const at = m.kvs.findIndex((x) => x.key === key);
        if (at >= 0) m.kvs[at] = kv; else m.kvs.push(kv);
        break;
      }
      case 'perturb': { const i = pick(e.i); if (i >= 0) m.kvs[i] = perturb(m.kvs[i]!, e.p); break; }
      case 'del': { const i = pick(e.i); if (i >= 0) m.kvs.splice(i, 1); break; }
      case 'dup': { const i = pick(e.i); if (i >= 0) m.kvs.push(m.kvs[i]!); break; }
      case 'tdims': if (t) t.dims = e.dims; break;
      case 'tdim': {
        if (!t || !t.dims.length) break;
        const d = e.d % t.dims.length;
        const x = BigInt(t.dims[d]!);
        t.dims[d] = [x * 2n, x + 1n, x - 1n, 0n, x * 4096n, 1n][e.k]!;
        break;
      }
      case 'ttype': if (t) t.type = e.type; break;
      case 'trel': {
        if (!t) break;
        const o = m.tensors[e.j % m.tensors.length]!;
        const al = BigInt(m.alignment);
        t.rel = [o.rel, t.rel + al, t.rel - al, e.v, t.rel + BigInt(m.data.length), o.rel + al][e.k]!;
        t.rel = BigInt.asUintN(64, t.rel);
        break;
      }
      case 'tname': if (t) t.name = e.j % 3 === 0 ? m.tensors[e.j % m.tensors.length]!.name : e.j % 3 === 1 ? e.s : t.name + e.s; break;
      case 'tdel': if (t) m.tensors.splice(ti % m.tensors.length, 1); break;
      case 'version': m.version = e.v; break;
    }
  }
  return m;
}

interface GPlan { seed: number; edits: GEdit[]; counts: { tensors?: bigint; kvs?: bigint } | null; bytes: ByteMut[] }

function ggufArb(seeds: () => GModel[], focus: string[], withTensors: boolean, maxEdits = 4): fc.Arbitrary<Files> {
  const countsArb = fc.oneof(
    { weight: 9, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.record({ tensors: fc.option(u64Arb, { nil: undefined }), kvs: fc.option(u64Arb, { nil: undefined }) }) },
  );
  const plan: fc.Arbitrary<GPlan> = fc.record({
    seed: fc.nat(),
    edits: fc.array(gEditArb(withTensors), { maxLength: maxEdits }),
    counts: countsArb,
    bytes: bytesPlan(4),
  });
  return plan.map((p) => {
    const ss = seeds();
    const m = applyGEdits(ss[p.seed % ss.length]!, p.edits, focus);
    const { bytes, layout } = encodeGGUF(m, p.counts ?? undefined);
    return { 'model.gguf': applyBytes(bytes, p.bytes, layout) };
  });
}

// ---------------------------------------------------------------------------------------------
// JSON trees: edits at paths, raw fragments (deep nesting, odd numbers), text-level byte mutations

type J = unknown;
const deepArb: fc.Arbitrary<J> = fc.record({ d: fc.oneof(fc.integer({ min: 1, max: 64 }), fc.constantFrom(1000, 10000, 100000)), k: fc.nat(2) })
  .map(({ d, k }) => raw(k === 0 ? '['.repeat(d) + ']'.repeat(d) : k === 1 ? '{"a":'.repeat(d) + '1' + '}'.repeat(d) : '[{"type":"Sequence","x":'.repeat(d) + '0' + '}]'.repeat(d)));
const rawNumArb: fc.Arbitrary<J> = fc.constantFrom(raw('1e400'), raw('-1e400'), raw('1.0'), raw('-0'), raw('123456789012345678901234567890'), raw('0.000001e-400'), raw('9007199254740993'));
const jsonLeafArb: fc.Arbitrary<J> = fc.oneof(
  numArb.map((n) => (Number.isFinite(n) ? n : raw(n > 0 ? '1e999' : n < 0 ? '-1e999' : 'null'))), strArb, fc.boolean(), fc.constant(null), rawNumArb,
);
const jsonArb: fc.Arbitrary<J> = fc.oneof(
  { weight: 6, arbitrary: jsonLeafArb },
  { weight: 2, arbitrary: fc.array(jsonLeafArb, { maxLength: 5 }) },
  { weight: 1, arbitrary: fc.dictionary(strArb, jsonLeafArb, { maxKeys: 4 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: deepArb },
);

/** All paths (arrays of keys) of a tree, objects and arrays alike, up to `max`. */
function paths(v: J, max = 4000): (string | number)[][] {
  const out: (string | number)[][] = [];
  const stack: [J, (string | number)[]][] = [[v, []]];
  while (stack.length && out.length < max) {
    const [x, p] = stack.pop()!;
    out.push(p);
    if (Array.isArray(x)) x.forEach((c, i) => stack.push([c, [...p, i]]));
    else if (typeof x === 'object' && x !== null && !('__raw' in x)) for (const [k, c] of Object.entries(x)) stack.push([c, [...p, k]]);
  }
  return out;
}
function getAt(v: J, p: (string | number)[]): J {
  let x = v;
  for (const k of p) x = typeof x === 'object' && x !== null ? (x as Record<string | number, J>)[k] : undefined;
  return x;
}
function setAt(root: J, p: (string | number)[], val: J, del = false): J {
  if (p.length === 0) return del ? {} : val;
  const parent = getAt(root, p.slice(0, -1)) as Record<string | number, J> | J[];
  if (typeof parent !== 'object' || parent === null || '__raw' in parent) return root;
  const k = p[p.length - 1]!;
  if (Array.isArray(parent) && del) parent.splice(Number(k), 1);
  else if (del) delete (parent as Record<string, J>)[k];
  else (parent as Record<string | number, J>)[k] = val;
  return root;
}

interface JEdit { kind: number; path: number; focus: number; v: J; p: Perturb }
const jEditArbOf = (v: fc.Arbitrary<J>): fc.Arbitrary<JEdit> => fc.record({ kind: fc.nat(9), path: fc.nat(), focus: fc.nat(), v, p: perturbArb });
const jEditArb = jEditArbOf(jsonArb);

/** Applies edits to a tree: replace / delete / perturb a node, at a focus path or anywhere. */
function applyJEdits(root0: J, edits: JEdit[], focus: (string | number)[][]): J {
  let root = clone(root0);
  for (const e of edits) {
    const all = paths(root);
    let p: (string | number)[];
    if (focus.length && e.kind % 2 === 0) {
      p = focus[e.focus % focus.length]!;
      try { getAt(root, p.slice(0, -1)); } catch { continue; }
      if (p.length > 1 && (typeof getAt(root, p.slice(0, -1)) !== 'object' || getAt(root, p.slice(0, -1)) === null)) continue;
    } else {
      p = all[e.path % all.length]!;
    }
    const cur = p.length ? (() => { try { return getAt(root, p); } catch { return undefined; } })() : root;
    switch (e.kind) {
      case 0: case 1: case 2: case 3: root = setAt(root, p, e.v); break;
      case 4: root = setAt(root, p, undefined, true); break;
      case 5: case 6: case 7: { // perturb a number / string / array in place
        let x: J = cur;
        if (typeof cur === 'number') x = [cur + 1, cur - 1, cur * 2, 0, -1, cur / 2, e.p.v, cur + 2 ** 32, cur * 1e6, -cur, cur + 0.5, 2 ** 53 + cur][e.p.k];
        else if (typeof cur === 'string') x = [cur.slice(0, e.p.a % (cur.length + 1)), cur + cur, '', cur + ' ' + cur, '\u2581' + cur, cur + '\uD800'][e.p.k % 6];
        else if (Array.isArray(cur)) {
          const a = [...cur];
          const i = a.length ? e.p.a % a.length : 0;
          [() => a.push(a[i]), () => a.splice(i, 1), () => a.reverse(), () => (a[i] = e.p.v), () => a.push(e.v), () => a.unshift(...a.splice(i))][e.p.k % 6]!();
          x = a;
        } else if (typeof cur === 'object' && cur !== null) {
          const o = { ...(cur as Record<string, J>) };
          const ks = Object.keys(o);
          if (ks.length) {
            const k = ks[e.p.a % ks.length]!;
            if (e.p.k % 2) o[k + '_'] = o[k]; else o[String(e.p.v)] = o[k];
          }
          x = o;
        }
        if (x !== undefined) root = setAt(root, p, x);
        break;
      }
      default: root = setAt(root, p, raw(stringify(cur ?? null).replace(/\d+/, String(e.p.v)))); // text-level number swap
    }
  }
  return root;
}

interface JPlan { edits: JEdit[]; bytes: ByteMut[]; text: number }
const jPlanArb = (maxEdits: number, edit: fc.Arbitrary<JEdit> = jEditArb): fc.Arbitrary<JPlan> =>
  fc.record({ edits: fc.array(edit, { minLength: 0, maxLength: maxEdits }), bytes: bytesPlan(2), text: fc.nat(19) });

/** Tree → file bytes: usually the edited tree, sometimes text-level damage on top. */
function jsonFile(tree: J, plan: JPlan, focus: (string | number)[][]): Uint8Array {
  return jsonBytes(applyJEdits(tree, plan.edits, focus), plan);
}

/** An (edited) tree → file bytes, with the plan's text-level damage. */
function jsonBytes(t: J, plan: JPlan): Uint8Array {
  const text = stringify(t);
  const buf = Buffer.from(text, 'utf8');
  // boundaries for cuts: after every ',' / '{' / '[' (section boundaries of a JSON text)
  const bounds: number[] = [];
  for (let i = 0; i < buf.length && bounds.length < 5000; i++) if (buf[i] === 0x2c || buf[i] === 0x7b || buf[i] === 0x5b) bounds.push(i + 1);
  if (plan.text === 0) return Buffer.from('\ufeff' + text, 'utf8'); // BOM
  return applyBytes(buf, plan.bytes, { boundaries: bounds });
}

// ---------------------------------------------------------------------------------------------
// seeds

let seedDir = '';
export function setSeedDir(dir: string): void { seedDir = dir; }
const memo = new Map<string, unknown>();
function once<T>(key: string, f: () => T): () => T {
  return () => {
    if (!memo.has(key)) memo.set(key, f());
    return memo.get(key) as T;
  };
}
function sdir(): string {
  if (!seedDir) throw new Error('fuzz: setSeedDir() first');
  fs.mkdirSync(seedDir, { recursive: true });
  return seedDir;
}

const SYNTH = { layers: 1, hidden: 32, ffn: 32, heads: 2, kvHeads: 1, vocab: 260, ctx: 64, dtype: 'q8_0', act: 'silu', seed: 1, format: 'gguf' } as const;

const synthGGUF = once('synth-gguf', () => {
  const p = path.join(sdir(), 'synth.gguf');
  if (!fs.existsSync(p)) synthModel({ ...SYNTH }, p);
  return p;
});

/** A small GGUF with every value type, nested arrays and tensors of several GGML types. */
const allTypesModel = once('all-types', (): GModel => {
  const kvs: GGUFKV[] = [
    { key: 'general.architecture', type: VT.STRING, value: 'llama' },
    { key: 'general.alignment', type: VT.UINT32, value: 32 },
    { key: 'u8', type: VT.UINT8, value: 7 }, { key: 'i8', type: VT.INT8, value: -7 },
    { key: 'u16', type: VT.UINT16, value: 700 }, { key: 'i16', type: VT.INT16, value: -700 },
    { key: 'llama.block_count', type: VT.UINT32, value: 2 }, { key: 'i32', type: VT.INT32, value: -70000 },
    { key: 'llama.rope.freq_base', type: VT.FLOAT32, value: 10000 }, { key: 'b', type: VT.BOOL, value: true },
    { key: 'u64', type: VT.UINT64, value: 2n ** 40n }, { key: 'i64', type: VT.INT64, value: -(2n ** 40n) },
    { key: 'f64', type: VT.FLOAT64, value: 1.5 },
    { key: 'strs', type: VT.ARRAY, arrayType: VT.STRING, value: ['<s>', 'a', 'bc', ''] },
    { key: 'f32s', type: VT.ARRAY, arrayType: VT.FLOAT32, value: new Float32Array([0, -1, -2]) },
    { key: 'u64s', type: VT.ARRAY, arrayType: VT.UINT64, value: new BigUint64Array([1n, 2n ** 63n]) },
    { key: 'nested', type: VT.ARRAY, arrayType: VT.ARRAY, value: [new Int16Array([1, 2]), ['x'], [new Uint8Array([1])]] },
  ];
  const specs: [string, number[], number, number][] = [['a', [8, 2], 0, 64], ['b', [32], 8, 34], ['c', [4], 1, 8], ['d', [64, 2], 2, 36],
    ['e', [2, 2], 30, 8], ['f', [256], 12, 144]];
  let rel = 0;
  const tensors = specs.map(([name, dims, type, bytes]) => {
    const t = { name, dims, type, rel: BigInt(rel) };
    rel = Math.ceil((rel + bytes) / 32) * 32;
    return t;
  });
  const data = new Uint8Array(rel);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37) & 0xff;
  return { version: 3, alignment: 32, kvs, tensors, data };
});

const byteLevelTokenizerJSON = once('bl-json', () => {
  const vocab: Record<string, number> = {};
  BYTE_TO_CHAR.forEach((c, i) => (vocab[c] = i));
  const merges = [['Ġ', 't'], ['h', 'e'], ['Ġt', 'he'], ['i', 'n'], ['Ġ', 'a'], ['e', 'r'], ['Ġ', 'w'], ['o', 'r'], ['l', 'l'], ['Ġw', 'or']];
  let id = 256;
  for (const [a, b] of merges) vocab[a! + b!] ??= id++;
  const added = [{ id: id, content: '<|endoftext|>', special: true, lstrip: false, rstrip: false, normalized: false, single_word: false },
    { id: id + 1, content: '<|im_end|>', special: true, lstrip: false, rstrip: true, normalized: false, single_word: false },
    { id: id + 2, content: 'user', special: false, lstrip: true, rstrip: false, normalized: true, single_word: false }];
  return {
    version: '1.0', added_tokens: added, normalizer: { type: 'NFC' },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [
      { type: 'Split', pattern: { Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" }, behavior: 'Isolated', invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false,
      byte_fallback: false, ignore_merges: true, vocab, merges: merges.map(([a, b]) => `${a} ${b}`) },
  };
});

const TOKCFG = { add_bos_token: true, add_eos_token: false, bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', pad_token: null,
  added_tokens_decoder: { 0: { content: '<unk>', special: true }, 1: { content: '<s>', special: true } }, chat_template: '{{ x }}' };

/** tokenizer directories: [tokenizer.json, tokenizer_config.json, config.json] trees */
const tokenizerSeeds = once('tok-seeds', (): [J, J, J][] => [
  [synthTokenizerJSON(synthVocab(260)), TOKCFG, { vocab_size: 260, bos_token_id: 1, eos_token_id: 2 }],
  [byteLevelTokenizerJSON(), { bos_token: '<|endoftext|>', eos_token: { content: '<|im_end|>' }, add_prefix_space: false }, { vocab_size: 300 }],
  [{ ...(byteLevelTokenizerJSON() as object), pre_tokenizer: { type: 'ByteLevel', add_prefix_space: true, use_regex: true } }, {}, {}],
]);

/** GGUF models holding only tokenizer metadata (llama SPM from synth, gpt2 from the byte-level seed). */
const vocabSeeds = once('vocab-seeds', (): GModel[] => {
  const spm = modelOf(synthGGUF(), true);
  spm.kvs = spm.kvs.filter((kv) => kv.key.startsWith('tokenizer.'));
  const d = path.join(sdir(), 'bl-tok');
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'tokenizer.json'), JSON.stringify(byteLevelTokenizerJSON()));
  const bpe: GModel = { version: 3, alignment: 32, kvs: ggufVocabMetadataFromHFDir(d), tensors: [], data: new Uint8Array(0) };
  return [spm, bpe];
});

/** A 2-layer synth model in the flash layout (with checksums): the flash-layout and predictors targets' base. */
const flashPath = once('flash-path', (): string => {
  const src = path.join(sdir(), 'synth2.gguf');
  const out = path.join(sdir(), 'synth2.flash.gguf');
  if (!fs.existsSync(out)) {
    if (!fs.existsSync(src)) synthModel({ ...SYNTH, layers: 2, vocab: 260 }, src);
    const m = openModel(src);
    try { convertToFlashLayout(m, out, { quant: 'q8_0', blockRecords: 8 }); } finally { m.close(); }
  }
  return out;
});

const flashSeed = once('flash', (): GModel => {
  const m = modelOf(flashPath());
  m.kvs = m.kvs.filter((kv) => !kv.key.startsWith('tokenizer.')); // smaller inputs; openFlashLayout does not read them
  return m;
});

/** A sentencepiece tokenizer.model (protobuf ModelProto) with the synth vocabulary: pieces with
 * scores and types, a trainer_spec to skip, a normalizer_spec; boundaries after every field. */
const spmModelSeed = once('spm-model', (): { bytes: Uint8Array; boundaries: number[] } => {
  const v = synthVocab(260);
  const out: number[] = [];
  const boundaries: number[] = [];
  const varint = (a: number[], n: number): void => { while (n >= 0x80) { a.push((n & 0x7f) | 0x80); n = Math.floor(n / 128); } a.push(n); };
  const field = (a: number[], no: number, wire: number, body: number[] | number): void => {
    varint(a, no * 8 + wire);
    if (wire === 2) { varint(a, (body as number[]).length); a.push(...(body as number[])); } else if (wire === 0) varint(a, body as number);
    else if (wire === 5) a.push(...(body as number[]));
  };
  v.tokens.forEach((t, i) => {
    const m: number[] = [];
    field(m, 1, 2, [...Buffer.from(t, 'utf8')]);
    field(m, 2, 5, [...Buffer.from(new Float32Array([v.scores[i]!]).buffer)]);
    const ty = v.types[i]!;
    if (ty !== 1) field(m, 3, 0, ty);
    field(out, 1, 2, m);
    boundaries.push(out.length);
  });
  field(out, 2, 2, [8, 1, 0x10, 0x80, 0x02, 0x1a, 3, 0x61, 0x62, 0x63]); // trainer_spec: varints and a string
  boundaries.push(out.length);
  const norm: number[] = [];
  field(norm, 1, 2, [...Buffer.from('identity')]);
  field(norm, 3, 0, 1);
  field(out, 3, 2, norm);
  boundaries.push(out.length);
  return { bytes: Uint8Array.from(out), boundaries };
});

/** A tiny HF Llama (hidden 4, 2 heads, 1 kv head, ffn 4, 1 layer, vocab 8): config tree and model.safetensors. */
const TINY_CFG = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 4, intermediate_size: 4, num_hidden_layers: 1,
  num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 64, rms_norm_eps: 1e-5, rope_theta: 10000,
  vocab_size: 8, hidden_act: 'silu', tie_word_embeddings: false, rope_scaling: null, attention_bias: false,
};
function tinyTensors(dtype: 'F32' | 'F16' | 'BF16'): { header: Record<string, J>; data: Uint8Array } {
  const shapes: [string, number[]][] = [
    ['model.embed_tokens.weight', [8, 4]], ['model.layers.0.input_layernorm.weight', [4]], ['model.layers.0.self_attn.q_proj.weight', [4, 4]],
    ['model.layers.0.self_attn.k_proj.weight', [2, 4]], ['model.layers.0.self_attn.v_proj.weight', [2, 4]],
    ['model.layers.0.self_attn.o_proj.weight', [4, 4]], ['model.layers.0.post_attention_layernorm.weight', [4]],
    ['model.layers.0.mlp.gate_proj.weight', [4, 4]], ['model.layers.0.mlp.up_proj.weight', [4, 4]],
    ['model.layers.0.mlp.down_proj.weight', [4, 4]], ['model.norm.weight', [4]], ['lm_head.weight', [8, 4]],
  ];
  const es = dtype === 'F32' ? 4 : 2;
  const header: Record<string, J> = { __metadata__: { format: 'pt' } };
  let off = 0;
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1) * es;
    header[name] = { dtype, shape, data_offsets: [off, off + n] };
    off += n;
  }
  const data = new Uint8Array(off);
  for (let i = 0; i < off; i++) data[i] = (i * 29 + 3) & 0x3f;
  return { header, data };
}
const stFile = (header: J, data: Uint8Array): Uint8Array => encodeSafetensors(Buffer.from(stringify(header), 'utf8'), data).bytes;

/** safetensors seeds: header tree + data */
const stSeeds = once('st-seeds', (): { header: J; data: Uint8Array }[] => {
  const mixed: Record<string, J> = { __metadata__: { format: 'pt', note: 'x' } };
  const specs: [string, string, number[]][] = [['a', 'F32', [2, 3]], ['b', 'BF16', [4]], ['z', 'F16', [0, 5]], ['c', 'I64', [1]], ['d', 'U8', [3]], ['e', 'F8_E4M3', [2, 2]]];
  let off = 0;
  const sizes: Record<string, number> = { F32: 4, BF16: 2, F16: 2, I64: 8, U8: 1, F8_E4M3: 1 };
  for (const [n, dt, sh] of specs) {
    const b = sh.reduce((a, x) => a * x, 1) * sizes[dt]!;
    mixed[n] = { dtype: dt, shape: sh, data_offsets: [off, off + b] };
    off += b;
  }
  return [tinyTensors('F32'), tinyTensors('BF16'), { header: mixed, data: new Uint8Array(off).fill(9) }];
});

/** the data_offsets / dtype / shape paths of a header tree */
const stFocus = (h: J): (string | number)[][] => Object.keys(h as object).flatMap((k) =>
  k === '__metadata__' ? [[k]] : [[k, 'data_offsets', 0], [k, 'data_offsets', 1], [k, 'data_offsets'], [k, 'dtype'], [k, 'shape'], [k, 'shape', 0], [k]]);

interface STPlan { seed: number; j: JPlan; len: bigint | null; data: ByteMut[]; rename: number; name: string }
const stPlanArb: fc.Arbitrary<STPlan> = fc.record({
  seed: fc.nat(), j: jPlanArb(3), len: fc.oneof({ weight: 9, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: u64Arb }),
  data: bytesPlan(2), rename: fc.nat(15), name: fc.constantFrom('__proto__', 'constructor', '', 'toString', '__metadata__', 'a', 'hasOwnProperty'),
});
function stInput(seed: { header: J; data: Uint8Array }, p: STPlan): Uint8Array {
  let h = seed.header as Record<string, J>;
  if (p.rename === 0) { // a tensor under a name that is special to JS objects
    const ks = Object.keys(h).filter((k) => k !== '__metadata__');
    const k = ks[p.j.edits.length % ks.length]!;
    h = raw(stringify(h).replace(JSON.stringify(k), JSON.stringify(p.name))) as unknown as Record<string, J>;
  }
  const text = jsonFile(h, p.j, stFocus(seed.header));
  const { bytes, layout } = encodeSafetensors(text, seed.data, p.len ?? undefined);
  const bounds = [...layout.boundaries];
  for (const v of Object.values(seed.header as Record<string, { data_offsets?: number[] }>)) {
    for (const o of v.data_offsets ?? []) bounds.push(layout.boundaries[2]! + o);
  }
  return applyBytes(bytes, p.data, { boundaries: bounds, u64: [0] });
}

// ---------------------------------------------------------------------------------------------
// server request bodies: POST /v1/completions and /v1/chat/completions (src/server/http.ts's
// parseJSON, then src/server/validate.ts)

const REQ_LIMITS = { ctx: 2048, vocabSize: 32000 };
const COMPLETION_BODIES: J[] = [
  { prompt: 'def fibonacci(n):' },
  { model: 'flashlm', prompt: 'Hello', max_tokens: 16, temperature: 0.7, top_p: 0.9, top_k: 40, seed: 42, stop: ['\n', '###'], stream: true,
    stream_options: { include_usage: true }, n: 1, echo: false, logprobs: null, user: 'u', logit_bias: { 50256: -100 } },
  { prompt: [1, 15043, 3186, 31999], max_tokens: 4, temperature: 0, stop: 'END' },
  { prompt: ['one prompt'], max_tokens: 2048, seed: -3, stream: false, presence_penalty: 0.5 },
];
const CHAT_BODIES: J[] = [
  { messages: [{ role: 'user', content: 'hi' }] },
  { model: 'flashlm', messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Say hi' },
    { role: 'assistant', content: [{ type: 'text', text: 'Hi' }, { type: 'text', text: '!' }] }, { role: 'user', content: [{ type: 'text', text: 'again' }] }],
    max_completion_tokens: 8, temperature: 1.2, top_p: 1, stop: null, stream: true, stream_options: { include_usage: false },
    tools: [{ type: 'function', function: { name: 'f', parameters: {} } }], response_format: { type: 'text' } },
  { messages: [{ role: 'assistant', content: '' }, { role: 'user', content: 'x', name: 'bob' }], max_tokens: 1, top_k: 0, seed: 9007199254740991 },
];
const REQ_FIELDS = ['model', 'prompt', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop',
  'stream', 'stream_options', 'n'];
const REQ_FOCUS: (string | number)[][] = [...REQ_FIELDS.map((k) => [k]), ['prompt', 0], ['prompt', 1], ['stop', 0], ['stream_options', 'include_usage'],
  ['messages', 0], ['messages', 0, 'role'], ['messages', 0, 'content'], ['messages', 1, 'role'], ['messages', 1, 'content'],
  ['messages', 2, 'content', 0], ['messages', 2, 'content', 0, 'type'], ['messages', 2, 'content', 1, 'text']];
/** keys special to JS objects, and the request's own fields (a duplicate key: JSON.parse keeps the last) */
const INJECT_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'valueOf', 'hasOwnProperty', '__defineGetter__', 'then', 'length',
  'role', 'content', 'type', 'text', ...REQ_FIELDS];
/** strings that look like numbers (or not quite) */
const NANLIKE = ['NaN', '-NaN', 'Infinity', '-Infinity', '1e999', '0x10', '1_000', ' 1', '1 ', '', 'null', 'true', 'undefined', '-0', '٣', '１', '1e3', '16'];
/** numbers at and beyond the edges the fields accept (ctx 2048, vocab 32000), non-safe integers, subnormals */
const REQ_NUMS = [0, -0, 1, -1, 2, 2.0000001, 1.0000001, 0.5, 4, 2047, 2048, 2049, 31999, 32000, 32001, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53,
  2 ** 53 + 2, -(2 ** 53), -(2 ** 53) - 2, 1e308, -1e308, 5e-324, -5e-324, 1e-7];
const reqValueArb: fc.Arbitrary<J> = fc.oneof(
  { weight: 4, arbitrary: jsonArb },
  { weight: 3, arbitrary: fc.constantFrom(...REQ_NUMS) },
  { weight: 2, arbitrary: fc.constantFrom(...NANLIKE) },
  { weight: 1, arbitrary: fc.constantFrom(raw('NaN'), raw('Infinity'), raw('-Infinity'), raw('1e400'), raw('-1e400'), raw('+1'), raw('.5'), raw('01'),
    raw('0x10'), raw('1.'), raw('undefined'), raw('1e-400'), raw('2048.0'), raw('2.0e3'), raw('-0.0')) },
  { weight: 2, arbitrary: fc.array(fc.oneof(fc.constantFrom(...REQ_NUMS), strArb), { maxLength: 6 }) },
  { weight: 1, arbitrary: fc.constantFrom<J>({}, [], [[]], { type: 'text' }, { type: 'text', text: 1 }, [{ type: 'image_url', image_url: { url: 'x' } }],
    [{ type: 'text', text: 'a' }, null], { role: 'user', content: 'x' }, [{ role: 'user', content: 'x' }], { include_usage: 'yes' }, [1.5], [-1], [32000]) },
);

/** Body-level operations after the tree edits: a key injected into the body or a message (first or
 * last: the duplicate that wins), huge strings / arrays / key counts, deep nesting in a field, a body
 * that is not an object. */
type ReqOp =
  | { k: 'inject'; key: number; v: J; where: number; first: boolean }
  | { k: 'huge'; what: number; n: number; s: string; bad: number }
  | { k: 'deep'; field: number; d: number; kind: number }
  | { k: 'root'; i: number };
const reqOpArb: fc.Arbitrary<ReqOp> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ k: fc.constant('inject' as const), key: fc.nat(), v: reqValueArb, where: fc.nat(), first: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('huge' as const), what: fc.nat(9), n: fc.constantFrom(100, 5000, 60_000, 250_000, 1_000_000), s: strArb, bad: fc.nat(5) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('deep' as const), field: fc.nat(), d: fc.constantFrom(10, 1000, 100_000, 500_000), kind: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('root' as const), i: fc.nat() }) },
);
const BODY_BUDGET = (1 << 20) - 1024; // the server reads at most 1 MiB (MAX_BODY_BYTES)
const repeatTo = (s: string, bytes: number): string => {
  const u = s || 'a';
  return u.repeat(Math.max(1, Math.floor(bytes / Math.max(1, Buffer.byteLength(u)))));
};
const DEEP_FIELDS = ['prompt', 'messages', 'stop', 'stream_options', 'model', 'max_tokens', 'temperature', 'extra', 'msg-content', 'msg-role'];

function applyReqOps(root0: J, ops: ReqOp[], keys: [string, string][]): J {
  let root = root0;
  const isObj = (x: J): x is Record<string, J> => typeof x === 'object' && x !== null && !Array.isArray(x) && !('__raw' in x);
  for (const op of ops) {
    if (op.k === 'root') {
      const alts: J[] = [[], 'prompt', null, 1, true, [root], {}, raw(''), raw('  \n'), raw('{}{}'), raw('{"prompt":"a"} x'), [{ role: 'user', content: 'x' }]];
      root = alts[op.i % alts.length]!;
      continue;
    }
    if (!isObj(root)) continue;
    const o = root;
    const msgs = Array.isArray(o.messages) ? o.messages : undefined;
    if (op.k === 'inject') {
      const objs: Record<string, J>[] = [o, ...(msgs ?? []).filter(isObj)];
      const t = objs[op.where % objs.length]!;
      const marker = `\u0001inject${keys.length}`;
      keys.push([marker, INJECT_KEYS[op.key % INJECT_KEYS.length]!]);
      if (op.first) {
        const rest = Object.entries(t);
        for (const [k] of rest) delete t[k];
        t[marker] = op.v;
        for (const [k, v] of rest) t[k] = v;
      } else t[marker] = op.v;
    } else if (op.k === 'huge') {
      const n = Math.min(op.n, BODY_BUDGET);
      const ms = (): J[] => (Array.isArray(o.messages) ? o.messages : (o.messages = [{ role: 'user', content: 'x' }])) as J[];
      const badId = [REQ_LIMITS.vocabSize, -1, 1.5, '7', null, 0][op.bad]!;
      switch (op.what) {
        case 0: o.prompt = repeatTo(op.s, n); break;
        case 1: {
          const ids = Array.from({ length: Math.max(1, Math.floor(n / 7)) }, (_, i) => (i * 7919) % REQ_LIMITS.vocabSize) as J[];
          if (op.bad < 5) ids[(op.n * 31) % ids.length] = badId;
          o.prompt = ids;
          break;
        }
        case 2: o.messages = Array.from({ length: Math.max(1, Math.floor(n / 40)) }, (_, i) => ({ role: ['system', 'user', 'assistant'][i % 3]!, content: `m${i}` })); break;
        case 3: {
          const m = ms();
          const parts: J[] = Array.from({ length: Math.max(1, Math.floor(n / 30)) }, () => ({ type: 'text', text: 'p' }));
          if (op.bad < 2) parts[parts.length - 1] = op.bad === 0 ? { type: 'text' } : null;
          m[0] = { role: 'user', content: parts };
          break;
        }
        case 4: o.stop = Array.from({ length: Math.max(1, Math.floor(n / 6)) }, (_, i) => `s${i}`); break;
        case 5: { const m = ms(); m[m.length - 1] = { role: 'user', content: repeatTo(op.s, n) }; break; }
        case 6: for (let i = 0; i < Math.floor(n / 16); i++) o[`x${i}`] = i; break;
        case 7: o.model = repeatTo(op.s, n); break;
        case 8: { const m = ms(); m[0] = { role: repeatTo(op.s, n), content: 'x' }; break; }
        default: { // a number literal of n digits
          const f = ['max_tokens', 'temperature', 'seed', 'top_k', 'top_p', 'n'][op.bad]!;
          o[f] = raw(op.bad % 2 ? '0.' + '0'.repeat(n) + '1' : '9'.repeat(n));
        }
      }
    } else {
      const unit = [2, 6, 25][op.kind]!; // bytes per level
      const d = Math.min(op.d, Math.floor(BODY_BUDGET / unit));
      const nest = raw(op.kind === 0 ? '['.repeat(d) + ']'.repeat(d) : op.kind === 1 ? '{"a":'.repeat(d) + '1' + '}'.repeat(d)
        : '[{"type":"text","text":'.repeat(d) + '"x"' + '}]'.repeat(d));
      const f = DEEP_FIELDS[op.field % DEEP_FIELDS.length]!;
      if (f === 'msg-content' || f === 'msg-role') {
        const m = Array.isArray(o.messages) ? o.messages : (o.messages = []);
        m.push({ role: f === 'msg-role' ? nest : 'user', content: f === 'msg-content' ? nest : 'x' });
      } else o[f] = nest;
    }
  }
  return root;
}

interface ReqPlan { chat: boolean; cross: number; seed: number; j: JPlan; ops: ReqOp[]; utf8: { i: number; j: number }[] }
const reqPlanArb: fc.Arbitrary<ReqPlan> = fc.record({
  chat: fc.boolean(), cross: fc.nat(9), seed: fc.nat(), j: jPlanArb(3, jEditArbOf(reqValueArb)),
  ops: fc.oneof({ weight: 3, arbitrary: fc.constant([] as ReqOp[]) }, { weight: 2, arbitrary: fc.array(reqOpArb, { minLength: 1, maxLength: 2 }) }),
  utf8: fc.oneof({ weight: 4, arbitrary: fc.constant([] as { i: number; j: number }[]) }, { weight: 1, arbitrary: fc.array(fc.record({ i: fc.nat(), j: fc.nat(BAD_UTF8.length - 1) }), { minLength: 1, maxLength: 2 }) }),
});

/** A request body (chat.json for /v1/chat/completions, completions.json for /v1/completions; one in
 * ten goes to the other endpoint). */
function reqInput(p: ReqPlan): Files {
  const seeds = p.chat ? CHAT_BODIES : COMPLETION_BODIES;
  const keys: [string, string][] = [];
  const tree = applyReqOps(applyJEdits(seeds[p.seed % seeds.length], p.j.edits, REQ_FOCUS), p.ops, keys);
  let text = stringify(tree);
  for (const [m, k] of keys) text = text.split(JSON.stringify(m)).join(JSON.stringify(k));
  let b = Buffer.from(jsonBytes(raw(text), p.j));
  for (const u of p.utf8) { // invalid UTF-8 right after a quote: most likely inside a string
    const quotes: number[] = [];
    for (let i = 0; i < b.length && quotes.length < 5000; i++) if (b[i] === 0x22) quotes.push(i + 1);
    const at = quotes.length ? quotes[u.i % quotes.length]! : 0;
    b = Buffer.concat([b.subarray(0, at), Buffer.from(BAD_UTF8[u.j]!), b.subarray(at)]);
  }
  const chat = p.cross === 0 ? !p.chat : p.chat;
  return { [chat ? 'chat.json' : 'completions.json']: b };
}

/** What the server relies on in a request that validated (any break is a failure, not a typed error). */
function checkRequest(r: CompletionRequest | ChatRequest): void {
  const fail = (what: string): never => { throw new Error(`validated request breaks its contract: ${what}`); };
  const isInt = (x: unknown, lo: number, hi: number): boolean => typeof x === 'number' && Number.isInteger(x) && x >= lo && x <= hi;
  if (r.maxTokens !== undefined && !isInt(r.maxTokens, 1, REQ_LIMITS.ctx)) fail(`maxTokens ${r.maxTokens}`);
  if (!(typeof r.temperature === 'number' && r.temperature >= 0 && r.temperature <= 2)) fail(`temperature ${r.temperature}`);
  if (!(typeof r.topP === 'number' && r.topP > 0 && r.topP <= 1)) fail(`topP ${r.topP}`);
  if (!isInt(r.topK, 0, Number.MAX_SAFE_INTEGER)) fail(`topK ${r.topK}`);
  if (r.seed !== undefined && !isInt(r.seed, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)) fail(`seed ${r.seed}`);
  if (!Array.isArray(r.stop) || r.stop.length > 4 || !r.stop.every((s) => typeof s === 'string' && s !== '')) fail('stop');
  if (typeof r.stream !== 'boolean' || typeof r.includeUsage !== 'boolean') fail('stream / includeUsage');
  if (r.model !== undefined && typeof r.model !== 'string') fail('model');
  if ('prompt' in r) {
    const p = r.prompt;
    if (typeof p === 'string') { if (p === '') fail('empty prompt'); }
    else if (!Array.isArray(p) || p.length === 0 || !p.every((id) => isInt(id, 0, REQ_LIMITS.vocabSize - 1))) fail('prompt ids');
  } else {
    const ms = (r as ChatRequest).messages;
    if (!Array.isArray(ms) || ms.length === 0) fail('messages');
    for (const m of ms) {
      if (!['system', 'user', 'assistant'].includes(m.role) || typeof m.content !== 'string') fail(`message ${JSON.stringify(m).slice(0, 80)}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// targets

const SAMPLE = 'Hello world, the <s> and </s> user<|im_end|> <|endoftext|>\n\t  ça 🤖 123 ▁x <0x41> \uD800 done';

function exercise(t: Tokenizer): void {
  for (const ps of [false, true]) {
    const ids = t.encode(SAMPLE, { parseSpecial: ps });
    t.decode(ids);
  }
  t.encode('');
  for (let i = 0; i < Math.min(t.vocabSize, 400); i++) t.tokenBytes(i);
}

const TOKENIZER_GGUF_KEYS = ['tokenizer.ggml.model', 'tokenizer.ggml.tokens', 'tokenizer.ggml.scores', 'tokenizer.ggml.token_type',
  'tokenizer.ggml.merges', 'tokenizer.ggml.pre', 'tokenizer.ggml.bos_token_id', 'tokenizer.ggml.eos_token_id', 'tokenizer.ggml.unknown_token_id',
  'tokenizer.ggml.padding_token_id', 'tokenizer.ggml.eot_token_id', 'tokenizer.ggml.add_bos_token', 'tokenizer.ggml.add_eos_token',
  'tokenizer.ggml.add_space_prefix', 'tokenizer.ggml.prefix_token_id', 'tokenizer.ggml.fim_pad_token_id'];
const LLAMA_KEYS = ['general.architecture', 'llama.context_length', 'llama.embedding_length', 'llama.block_count', 'llama.feed_forward_length',
  'llama.attention.head_count', 'llama.attention.head_count_kv', 'llama.rope.dimension_count', 'llama.rope.freq_base',
  'llama.attention.layer_norm_rms_epsilon', 'llama.vocab_size', 'flashlm.activation', 'tokenizer.ggml.tokens'];
const FLASH_KEYS = [FK.version, FK.recordBytes, FK.dtype, FK.parts, FK.partOffsets, FK.partBytes, FK.perm(0), FK.perm(1), 'llama.block_count', 'general.alignment'];

const SHARDS = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
const INDEX = 'model.safetensors.index.json';
const shardSeed = once('shards', () => {
  const { header, data } = tinyTensors('F32');
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const parts: { header: Record<string, J>; data: Uint8Array }[] = [];
  const wm: Record<string, string> = {};
  for (let s = 0; s < 2; s++) {
    const h: Record<string, J> = { __metadata__: { format: 'pt' } };
    const chunks: Uint8Array[] = [];
    let off = 0;
    names.filter((_, i) => i % 2 === s).forEach((n) => {
      const [b, e] = (header[n] as { data_offsets: number[] }).data_offsets as [number, number];
      h[n] = { ...(header[n] as object), data_offsets: [off, off + e - b] };
      chunks.push(data.subarray(b, e));
      off += e - b;
      wm[n] = SHARDS[s]!;
    });
    parts.push({ header: h, data: Buffer.concat(chunks) });
  }
  return { parts, index: { metadata: { total_size: data.length }, weight_map: wm } };
});

export const TARGETS: Target[] = [
  {
    name: 'gguf',
    arb: () => ggufArb(() => [modelOf(synthGGUF()), allTypesModel()], ['general.alignment', 'general.architecture', 'llama.block_count'], true),
    exec(dir) {
      const p = path.join(dir, 'model.gguf');
      const f = readGGUF(p);
      for (const kv of f.metadata.values()) formatMetaValue(kv);
      metaU32(f, 'llama.block_count', 0);
      metaF32(f, 'llama.rope.freq_base', 0);
      metaStr(f, 'general.architecture', '');
      for (const t of f.tensors) readTensorData(p, t, new Uint8Array(t.bytes));
    },
  },
  {
    name: 'safetensors',
    arb: () => stPlanArb.map((p) => {
      const ss = stSeeds();
      return { 'model.safetensors': stInput(ss[p.seed % ss.length]!, p) };
    }),
    exec(dir) {
      const st = openSafetensors(path.join(dir, 'model.safetensors'));
      for (const t of st.tensors.values()) readSafetensorsData(t, new Uint8Array(t.bytes));
    },
  },
  {
    name: 'safetensors-sharded',
    arb: () => fc.record({ which: fc.nat(4), st: stPlanArb, idx: jPlanArb(3), drop: fc.nat(19) }).map((p) => {
      const s = shardSeed();
      const files: Files = {};
      s.parts.forEach((part, i) => {
        files[SHARDS[i]!] = p.which === i ? stInput(part, p.st) : stFile(part.header, part.data);
      });
      const names = Object.keys((s.index as { weight_map: object }).weight_map);
      const focus = [['weight_map'], ...names.map((n) => ['weight_map', n]), ['metadata']];
      files[INDEX] = p.which >= 2 ? jsonFile(s.index, p.idx, focus) : Buffer.from(JSON.stringify(s.index));
      if (p.drop === 0) delete files[SHARDS[1]!];
      if (p.drop === 1) files['model.safetensors'] = files[SHARDS[0]!]!;
      return files;
    }),
    exec(dir) {
      const st = openSafetensors(dir);
      for (const t of st.tensors.values()) readSafetensorsData(t, new Uint8Array(t.bytes));
    },
  },
  {
    name: 'hf-config',
    arb: () => fc.record({ j: jPlanArb(4), dtype: fc.nat(5) }).map((p) => {
      const focus = [...Object.keys(TINY_CFG).map((k) => [k]), ['head_dim'], ['architectures', 0], ['rope_scaling']];
      const t = tinyTensors(p.dtype === 0 ? 'BF16' : p.dtype === 1 ? 'F16' : 'F32');
      return { 'config.json': jsonFile(TINY_CFG, p.j, focus), 'model.safetensors': stFile(t.header, t.data) };
    }),
    exec(dir) {
      const m = openHFDir(dir);
      try {
        for (const t of m.tensors) m.readTensor(t.name, new Uint8Array(t.bytes));
      } finally {
        m.close();
      }
    },
  },
  {
    name: 'tokenizer-json',
    arb: () => fc.record({ seed: fc.nat(), tj: jPlanArb(4), tc: jPlanArb(2), mc: jPlanArb(1), which: fc.nat(9) }).map((p) => {
      const ss = tokenizerSeeds();
      const [tj, tc, mc] = ss[p.seed % ss.length]!;
      const tjo = tj as { model: { vocab: object } };
      const vk = Object.keys(tjo.model.vocab);
      const focus: (string | number)[][] = [['model', 'type'], ['model', 'byte_fallback'], ['model', 'unk_token'], ['model', 'ignore_merges'],
        ['model', 'merges'], ['model', 'merges', 3], ['model', 'vocab'], ['added_tokens'], ['added_tokens', 0, 'id'], ['added_tokens', 1, 'id'],
        ['added_tokens', 0, 'content'], ['normalizer'], ['pre_tokenizer'], ['decoder'], ['post_processor'], ['post_processor', 'single'],
        ...[0, 1, 7, vk.length - 1].map((i) => ['model', 'vocab', vk[i % vk.length]!])];
      const files: Files = { 'tokenizer.json': p.which < 7 ? jsonFile(tj, p.tj, focus) : Buffer.from(JSON.stringify(tj)) };
      const cfgFocus = [['bos_token'], ['eos_token'], ['add_bos_token'], ['added_tokens_decoder'], ['chat_template'], ['add_prefix_space'], ['unk_token']];
      if (p.which !== 3) files['tokenizer_config.json'] = p.which >= 5 ? jsonFile(tc, p.tc, cfgFocus) : Buffer.from(JSON.stringify(tc));
      if (p.which !== 4) files['config.json'] = p.which >= 6 ? jsonFile(mc, p.mc, [['vocab_size'], ['bos_token_id'], ['eos_token_id']]) : Buffer.from(JSON.stringify(mc));
      return files;
    }),
    exec(dir) {
      exercise(tokenizerFromHFDir(dir));
      const kvs = ggufVocabMetadataFromHFDir(dir);
      exercise(tokenizerFromGGUF(new Map(kvs.map((kv) => [kv.key, kv]))));
    },
  },
  {
    name: 'tokenizer-model',
    arb: () => fc.record({ bytes: fc.array(byteMutArb, { minLength: 0, maxLength: 4 }), mc: jPlanArb(1), cfg: fc.nat(3) }).map((p) => {
      const seed = spmModelSeed();
      const files: Files = { 'tokenizer.model': applyBytes(seed.bytes, p.bytes, { boundaries: seed.boundaries }) };
      if (p.cfg > 0) files['config.json'] = jsonFile({ vocab_size: 260 }, p.mc, [['vocab_size'], ['vocab_size_per_layer_input']]);
      if (p.cfg > 1) files['tokenizer_config.json'] = Buffer.from(JSON.stringify(TOKCFG));
      return files;
    }),
    exec(dir) {
      exercise(tokenizerFromHFDir(dir)); // tokenizer.model only: read through ggufVocabMetadataFromHFDir
    },
  },
  {
    name: 'gguf-vocab',
    arb: () => ggufArb(vocabSeeds, TOKENIZER_GGUF_KEYS, false, 3),
    exec(dir) {
      const f = readGGUF(path.join(dir, 'model.gguf'));
      exercise(tokenizerFromGGUF(f.metadata));
    },
  },
  {
    name: 'flash-layout',
    arb: () => ggufArb(() => [flashSeed()], FLASH_KEYS, true, 3),
    exec(dir) {
      const f = readGGUF(path.join(dir, 'model.gguf'));
      openFlashLayout(f);
      describeFlashLayout(f);
    },
  },
  {
    // sparsify's predictors in a flash-layout file (scripts/fuzz-predictors.ts): metadata and pred tensors
    name: 'predictors',
    typed: [...TYPED_ERRORS, PredictorFormatError],
    arb: () => ggufArb(once('pred-seeds', () => predictorSeeds(flashPath(), sdir())), PREDICTOR_KEYS, true, 4),
    exec(dir) {
      execPredictors(path.join(dir, 'model.gguf'));
    },
  },
  {
    name: 'model-config',
    arb: () => ggufArb(() => {
      const m = modelOf(synthGGUF());
      m.kvs = m.kvs.filter((kv) => !kv.key.startsWith('tokenizer.') || kv.key === 'tokenizer.ggml.tokens');
      m.tensors = m.tensors.filter((t) => t.name === 'token_embd.weight');
      return [m];
    }, LLAMA_KEYS, true, 4),
    exec(dir) {
      const f = readGGUF(path.join(dir, 'model.gguf'));
      configFromMetadata(f.metadata, f.tensorByName.get('token_embd.weight')?.dims[1]);
      configFromMetadata(f.metadata);
    },
  },
  {
    // every body must validate (and then keep the request contract) or be refused with a RequestError
    // (400, invalid_request_error, a bounded message): nothing else may escape
    name: 'server-request',
    typed: [RequestError],
    arb: () => reqPlanArb.map(reqInput),
    exec(dir) {
      for (const f of fs.readdirSync(dir)) {
        const kind = f === 'chat.json' ? 'chat' : f === 'completions.json' ? 'completion' : undefined;
        if (!kind) continue;
        try {
          const body = parseJSON(fs.readFileSync(path.join(dir, f)));
          checkRequest(kind === 'chat' ? validateChatRequest(body, REQ_LIMITS) : validateCompletionRequest(body, REQ_LIMITS));
        } catch (e) {
          if (e instanceof RequestError && (e.status !== 400 || e.type !== 'invalid_request_error' || e.message.length > 1000)) {
            throw new Error(`RequestError with status ${e.status}, type ${e.type}, a message of ${e.message.length} characters: ${e.message.slice(0, 200)}`);
          }
          throw e;
        }
      }
    },
  },
];

export const targetByName = (n: string): Target => {
  const t = TARGETS.find((x) => x.name === n);
  if (!t) throw new Error(`unknown fuzz target '${n}' (targets: ${TARGETS.map((x) => x.name).join(', ')})`);
  return t;
};

// ---------------------------------------------------------------------------------------------
// running inputs

/** Writes `files` into `dir` (removing files of a previous input that are not in this one). */
export function writeInput(dir: string, files: Files): void {
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(dir)) if (!(f in files)) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
  for (const [n, b] of Object.entries(files)) fs.writeFileSync(path.join(dir, n), b);
}

export type Outcome = { ok: true } | { ok: false; typed: boolean; name: string; message: string; stack: string };

export function runOne(t: Target, dir: string): Outcome {
  try {
    t.exec(dir);
    return { ok: true };
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    return { ok: false, typed: t.typed ? t.typed.some((c) => e instanceof c) : isTyped(e), name: err.name, message: err.message.slice(0, 500), stack: err.stack ?? '' };
  }
}

export interface Failure {
  target: string; index: number; kind: 'uncaught' | 'slow' | 'memory' | 'hang' | 'crash';
  error: string; where: string; ms: number; memBytes: number; files: Files;
}
export interface Summary {
  target: string; inputs: number; failures: number; distinctFailures: number; ok: number; typedErrors: Record<string, number>;
  maxMs: number; maxMemGrowthBytes: number; seconds: number;
}

/** First frame of the stack inside the project (for grouping failures by cause). */
export function whereOf(stack: string): string {
  const lines = stack.split('\n').slice(1);
  const own = lines.find((l) => /\/(src|scripts)\//.test(l)) ?? lines[0] ?? '';
  return own.trim().replace(/^at\s+/, '').replace(/file:\/\/\S*?\/(dist\/)?/, '');
}

export const BATCH = 100;
/** Input `i` of a run with seed `seed`: fast-check samples in batches of BATCH, each batch its own seed. */
let lastBatch: { key: string; inputs: Files[] } | undefined;
export function inputsOf(t: Target, seed: number, batch: number): Files[] {
  const key = `${t.name}/${seed}/${batch}`;
  if (lastBatch?.key !== key) lastBatch = { key, inputs: fc.sample(t.arb(), { seed: (seed * 7919 + batch) | 0, numRuns: BATCH }) };
  return lastBatch.inputs;
}

export interface RunOptions {
  seed: number; start: number; count: number; dir: string;
  slowMs: number; memLimitBytes: number;
  /** called before each input (heartbeat for a watchdog) */
  onInput?: (index: number) => void;
  onFailure?: (f: Failure) => void;
}

export function memNow(): number {
  const m = process.memoryUsage();
  return Math.max(m.arrayBuffers + m.heapUsed, m.rss);
}

/** Runs inputs [start, start+count) of target `t` in this thread. */
export function runInputs(t: Target, o: RunOptions): Omit<Summary, 'distinctFailures'> & { failureList: Failure[] } {
  const failureList: Failure[] = [];
  const typedErrors: Record<string, number> = {};
  let ok = 0, maxMs = 0, maxMem = 0, n = 0;
  const t0 = performance.now();
  let batchNo = -1;
  let batch: Files[] = [];
  for (let i = o.start; i < o.start + o.count; i++) {
    const b = Math.floor(i / BATCH);
    if (b !== batchNo) { batch = inputsOf(t, o.seed, b); batchNo = b; }
    const files = batch[i % BATCH]!;
    writeInput(o.dir, files);
    o.onInput?.(i);
    const m0 = process.memoryUsage();
    const r0 = process.resourceUsage().maxRSS * 1024;
    const s = performance.now();
    const out = runOne(t, o.dir);
    const ms = performance.now() - s;
    const m1 = process.memoryUsage();
    const r1 = process.resourceUsage().maxRSS * 1024;
    const mem = Math.max(m1.arrayBuffers - m0.arrayBuffers, m1.heapUsed - m0.heapUsed, m1.rss - m0.rss, r1 - r0, 0);
    n++;
    maxMs = Math.max(maxMs, ms);
    maxMem = Math.max(maxMem, mem);
    const fail = (kind: Failure['kind'], error: string, where: string): void => {
      const f: Failure = { target: t.name, index: i, kind, error, where, ms, memBytes: mem, files };
      failureList.push(f);
      o.onFailure?.(f);
    };
    if (out.ok) ok++;
    else if (out.typed) typedErrors[out.name] = (typedErrors[out.name] ?? 0) + 1;
    else fail('uncaught', `${out.name}: ${out.message}`, whereOf(out.stack));
    if (ms > o.slowMs) fail('slow', `took ${ms.toFixed(0)} ms (limit ${o.slowMs})`, '');
    if (mem > o.memLimitBytes) fail('memory', `grew ${(mem / 2 ** 20).toFixed(1)} MiB (limit ${(o.memLimitBytes / 2 ** 20).toFixed(0)})`, '');
  }
  return { target: t.name, inputs: n, failures: failureList.length, ok, typedErrors, maxMs, maxMemGrowthBytes: maxMem,
    seconds: (performance.now() - t0) / 1000, failureList };
}
