// Rewrites a flash-layout file with new neuron placements (Ripple, `flashlm place`): layer l's FFN
// bundle records are written in the order perms[l] (perm[p] = original neuron id at placement
// position p), stored as flashlm.perm.<l>. Everything else is copied byte for byte: resident
// tensors, predictors (blk.N.pred_a/b/thr index neurons by ORIGINAL id, so they stay valid under any
// placement), thresholds and all other metadata.
//
// Integrity as predictors.ts: every input byte is checked against the input's digests while it is
// read (a corrupt input is refused with ChecksumError, never re-blessed); the resident tensors keep
// their digests; each layer's bundle block digests are recomputed for the new record order and
// patched into the header with the header digest. Atomic: GGUFWriter's temp file →
// `${out}.place-<pid>`, digests patched, fsync, rename over `out` (which may be the input).
// Memory: one layer's bundle (n_ff · record_bytes: 226 MB for 13B q8_0) and one checksum block.
import * as fs from 'node:fs';
import { BUNDLE_RE, CK, ChecksumError, DIGEST_BYTES, bytesEqual, hex, newDigest, runChecks } from './checksum.js';
import { FormatError } from './errors.js';
import { FK, isFlashLayout, openFlashLayout, patchAndRename } from './flash-layout.js';
import { GGUFValueType as VT, GGUFWriter, readGGUF, type GGUFKV, type TensorInfo } from './gguf.js';
import { preadFully, removeStaleTemps } from './fsutil.js';

/** Placement facts stored beside the permutations (for inspect). */
export const PLK = {
  method: 'flashlm.placement.method',
  calibTokens: 'flashlm.placement.calibration_tokens',
  sparsity: 'flashlm.placement.sparsity', // f32: the activity cutoff's target sparsity
  minCode: 'flashlm.placement.min_code', // u32[nLayers]: activity cutoff code used
  runsBefore: 'flashlm.placement.runs_before', // f32[nLayers]: held-out reads/token, previous placement
  runsAfter: 'flashlm.placement.runs_after', // f32[nLayers]: held-out reads/token, this placement
} as const;

export class PlacementFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PlacementFormatError';
  }
}

export interface PlacementWrite {
  /** per layer, placement position → original neuron id (a permutation of 0..n_ff−1) */
  perms: ArrayLike<number>[];
  /** flashlm.placement.* keys to store (old ones are dropped) */
  metadata?: GGUFKV[];
}

const CHUNK = 8 << 20; // bytes per read while copying resident tensors

/** Writes `flashPath` with the placements `w.perms` to `outPath`. onProgress: data bytes done / total. */
export function writePlacement(flashPath: string, outPath: string, w: PlacementWrite, onProgress?: (done: number, total: number) => void): { out: string; bytesWritten: number } {
  const f = readGGUF(flashPath);
  if (!isFlashLayout(f)) throw new PlacementFormatError(`${flashPath} is not a flash-layout file`);
  const L = openFlashLayout(f);
  const nLayers = L.layers.length;
  if (w.perms.length !== nLayers) throw new PlacementFormatError(`${w.perms.length} permutations for ${nLayers} layers`);
  const perms = w.perms.map((p, l) => {
    const nFF = L.layers[l]!.nFF;
    if (p.length !== nFF) throw new PlacementFormatError(`layer ${l}: permutation of ${p.length} entries for ${nFF} neurons`);
    const seen = new Uint8Array(nFF);
    for (let i = 0; i < nFF; i++) {
      const v = p[i]!;
      if (!Number.isInteger(v) || v < 0 || v >= nFF || seen[v]) throw new PlacementFormatError(`layer ${l}: entry ${i} = ${v} is ${seen[v] ? 'a duplicate' : 'out of range'}`);
      seen[v] = 1;
    }
    return Uint32Array.from(p);
  });
  for (const kv of w.metadata ?? []) if (!kv.key.startsWith('flashlm.placement.')) throw new PlacementFormatError(`metadata key '${kv.key}' is not a flashlm.placement.* key`);
  const checks = runChecks(f); // header digest now (ChecksumError)
  if (!checks) throw new FormatError(flashPath, `metadata key '${CK.algo}'`, 'missing: this file has no flashlm checksums (convert it again with --layout flash)');
  const names = f.metadata.get(CK.tensorNames)!.value as string[];
  const digests = f.metadata.get(CK.tensors)!.value as Uint8Array;
  const index = new Map(names.map((n, i) => [n, i]));
  const blockRecords = Number(f.metadata.get(CK.blockRecords)?.value);
  if (!Number.isSafeInteger(blockRecords) || blockRecords < 1) throw new FormatError(flashPath, `metadata key '${CK.blockRecords}'`, 'missing or not a positive integer');

  // --- metadata: the input's, perms replaced, bundle digests and header digest as placeholders
  const meta = new Map<string, GGUFKV>();
  for (const [k, kv] of f.metadata) if (!k.startsWith('flashlm.placement.')) meta.set(k, kv);
  const set = (key: string, type: number, value: GGUFKV['value'], arrayType?: number): void => {
    meta.set(key, arrayType === undefined ? { key, type, value } : { key, type, value, arrayType });
  };
  perms.forEach((p, l) => set(FK.perm(l), VT.ARRAY, p, VT.UINT32));
  const nBlocks = L.layers.map((x) => Math.ceil(x.nFF / blockRecords));
  L.layers.forEach((_, l) => set(CK.bundle(l), VT.ARRAY, new Uint8Array(nBlocks[l]! * DIGEST_BYTES), VT.UINT8));
  set(CK.header, VT.ARRAY, new Uint8Array(DIGEST_BYTES), VT.UINT8);
  for (const kv of w.metadata ?? []) meta.set(kv.key, kv);

  removeStaleTemps(outPath); // `${outPath}.place-<pid>` (+ its `.tmp-<pid>`) of killed runs
  const part = `${outPath}.place-${process.pid}`;
  const wr = new GGUFWriter(part, { alignment: f.alignment });
  const total = f.tensors.reduce((s, t) => s + t.bytes, 0);
  const newBundleDigests = L.layers.map((_, l) => new Uint8Array(nBlocks[l]! * DIGEST_BYTES));
  const fd = fs.openSync(flashPath, 'r');
  try {
    for (const kv of meta.values()) wr.addKV(kv.key, kv.type, kv.value, kv.arrayType);
    for (const t of f.tensors) wr.addTensor(t.name, t.dims, t.type);
    wr.beginData();
    let done = 0;
    onProgress?.(0, total);
    const put = (b: Uint8Array): void => { wr.writeData(b); done += b.length; onProgress?.(done, total); };
    const eof = (t: TensorInfo) => (pos: number) => new FormatError(flashPath, `tensor '${t.name}' data`, `unexpected end of file at offset ${pos}`);
    let layerBuf = new Uint8Array(0);
    let chunk = new Uint8Array(0);
    for (const t of f.tensors) {
      const bm = BUNDLE_RE.exec(t.name);
      if (!bm) {
        const i = index.get(t.name);
        if (i === undefined) throw new FormatError(flashPath, `tensor '${t.name}'`, `has no checksum in '${CK.tensorNames}'`);
        const h = newDigest();
        for (let off = 0; off < t.bytes; off += CHUNK) {
          const len = Math.min(CHUNK, t.bytes - off);
          if (chunk.length < len) chunk = new Uint8Array(len);
          const data = chunk.subarray(0, len);
          preadFully(fd, data, 0, len, t.offset + off, eof(t));
          h.update(data);
          put(data);
        }
        const got = new Uint8Array(h.digest());
        const exp = digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
        if (!bytesEqual(got, exp)) throw new ChecksumError(flashPath, { kind: 'tensor', tensor: t.name, offset: t.offset, bytes: t.bytes, expected: hex(exp), actual: hex(got) });
        continue;
      }
      // a bundle: read the whole layer (checking the input's block digests), write it permuted
      const l = Number(bm[1]);
      const { nFF, perm: oldPerm } = L.layers[l]!;
      const rb = L.recordBytes;
      if (layerBuf.length < t.bytes) { layerBuf = new Uint8Array(0); layerBuf = new Uint8Array(t.bytes); }
      const want = f.metadata.get(CK.bundle(l))?.value;
      if (!(want instanceof Uint8Array) || want.length !== nBlocks[l]! * DIGEST_BYTES) throw new FormatError(flashPath, `metadata key '${CK.bundle(l)}'`, `missing or not ${nBlocks[l]} digests`);
      for (let b = 0; b < nBlocks[l]!; b++) {
        const first = b * blockRecords;
        const len = (Math.min(nFF, first + blockRecords) - first) * rb;
        const data = layerBuf.subarray(first * rb, first * rb + len);
        preadFully(fd, data, 0, len, t.offset + first * rb, eof(t));
        const got = new Uint8Array(newDigest().update(data).digest());
        const exp = want.subarray(b * DIGEST_BYTES, (b + 1) * DIGEST_BYTES);
        if (!bytesEqual(got, exp)) {
          throw new ChecksumError(flashPath, { kind: 'bundle', tensor: t.name, layer: l, block: b, firstRecord: first, offset: t.offset + first * rb, bytes: len, expected: hex(exp), actual: hex(got) });
        }
      }
      const oldPos = new Int32Array(nFF); // neuron id → its record in the input
      for (let p = 0; p < nFF; p++) oldPos[oldPerm[p]!] = p;
      const perm = perms[l]!;
      const block = new Uint8Array(Math.min(nFF, blockRecords) * rb);
      for (let b = 0; b < nBlocks[l]!; b++) {
        const first = b * blockRecords;
        const k = Math.min(nFF, first + blockRecords) - first;
        const out = block.subarray(0, k * rb);
        for (let j = 0; j < k; j++) {
          const src = oldPos[perm[first + j]!]! * rb;
          out.set(layerBuf.subarray(src, src + rb), j * rb);
        }
        newBundleDigests[l]!.set(newDigest().update(out).digest(), b * DIGEST_BYTES);
        put(out);
      }
    }
    wr.finish();
  } catch (e) {
    wr.abort();
    throw e;
  } finally {
    fs.closeSync(fd);
  }
  patchAndRename(part, outPath, meta, L.layers.map((_, l): [string, Uint8Array] => [CK.bundle(l), newBundleDigests[l]!]));
  return { out: outPath, bytesWritten: total };
}

/** Lines for `flashlm inspect` about the placement (none for identity files without placement keys). */
export function describePlacement(meta: Map<string, GGUFKV>): string[] {
  const method = meta.get(PLK.method)?.value;
  if (typeof method !== 'string') return [];
  const b = meta.get(PLK.runsBefore)?.value, a = meta.get(PLK.runsAfter)?.value;
  const mean = (x: unknown) => (x instanceof Float32Array && x.length ? Array.from(x).reduce((s, v) => s + v, 0) / x.length : NaN);
  return [`placement   ${method}, ${String(meta.get(PLK.calibTokens)?.value ?? '?')} calibration tokens; held-out reads/token (no cache) ${mean(b).toFixed(1)} → ${mean(a).toFixed(1)}`];
}
