// Regression inputs the fuzz harness (npm run fuzz) found: test/fixtures/fuzz/<target>/<case>/ holds
// the input files, <target>/found.json what went wrong originally (an untyped exception, a hang, a
// crash, a memory spike) and <target>/expected.json the outcome after the fix ('ok' or the name of
// the typed error). Every case must give exactly that outcome again.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runOne, TARGETS } from '../../scripts/fuzz-targets.js';
import { FormatError } from '../../src/formats/errors.js';
import { readGGUF, GGUFValueType as VT, type GGUFFile, type GGUFKV, type TensorInfo } from '../../src/formats/gguf.js';
import { FK } from '../../src/formats/flash-layout.js';
import { describePredictors, PK } from '../../src/formats/predictors.js';
import { Model } from '../../src/engine/model.js';
import type { SynthOptions } from '../../src/engine/synth.js';
import { ModelConfigError } from '../../src/model/llama.js';
import { alignUp, encodeGGUF } from '../../scripts/fuzz-codec.js';
import { sparsified, VARIANTS } from '../../scripts/fuzz-predictors.js';
import { fixturePath, flashLayoutCached, testDir } from '../helpers.js';

const ROOT = fixturePath('fuzz');
const targetDirs = fs.existsSync(ROOT) ? fs.readdirSync(ROOT).filter((d) => fs.statSync(path.join(ROOT, d)).isDirectory()) : [];

describe('fuzz regressions', () => {
  it('fixtures exist for known targets only', () => {
    assert.ok(targetDirs.length > 0, `no fixtures under ${ROOT}`);
    for (const d of targetDirs) assert.ok(TARGETS.some((t) => t.name === d), `unknown target directory ${d}`);
  });
  for (const t of TARGETS) {
    const dir = path.join(ROOT, t.name);
    if (!fs.existsSync(dir)) continue;
    const cases = fs.readdirSync(dir).filter((c) => fs.statSync(path.join(dir, c)).isDirectory()).sort();
    const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as Record<string, string>;
    const found = JSON.parse(fs.readFileSync(path.join(dir, 'found.json'), 'utf8')) as Record<string, { error: string }>;
    it(`${t.name}: expected.json and found.json list every case`, () => {
      assert.deepEqual(Object.keys(expected).sort(), cases);
      assert.deepEqual(Object.keys(found).sort(), cases);
    });
    for (const c of cases) {
      it(`${t.name}/${c} (was: ${found[c]?.error.slice(0, 80)})`, () => {
        const s = performance.now();
        const r = runOne(t, path.join(dir, c));
        const ms = performance.now() - s;
        const got = r.ok ? 'ok' : r.name;
        assert.ok(r.ok || r.typed, `untyped ${r.ok ? '' : `${r.name}: ${r.message}\n${r.stack}`}`);
        assert.equal(got, expected[c], r.ok ? 'parsed' : r.message);
        assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
      });
    }
  }
});

// Found by review, out of the fuzzer's reach (its inputs are small): in a file larger than 4 GiB a
// metadata value may claim more than a Buffer, a JS string or the heap can hold while still fitting
// in the file. It used to throw RangeError from Buffer.allocUnsafe. A sparse file stands in for a
// multi-GB model.
describe('GGUF metadata values larger than the limits, in a sparse 6 GiB file', () => {
  const header = (type: number, len: bigint, arrayType?: number): Buffer => {
    const b = Buffer.alloc(64);
    let o = b.write('GGUF', 0, 'latin1');
    o = b.writeUInt32LE(3, o);
    o = b.writeBigUInt64LE(0n, o); // tensors
    o = b.writeBigUInt64LE(1n, o); // kvs
    o = b.writeBigUInt64LE(1n, o); // key length
    o += b.write('k', o);
    o = b.writeUInt32LE(type, o);
    if (arrayType !== undefined) o = b.writeUInt32LE(arrayType, o);
    o = b.writeBigUInt64LE(len, o);
    return b.subarray(0, o);
  };
  const cases: [string, Buffer, RegExp][] = [
    ['a 5 GiB string', header(8, 5n << 30n), /string length 5368709120 exceeds the limit/],
    ['a 5 GiB uint8 array', header(9, 5n << 30n, 0), /uint8 elements exceed the limit of 1073741824 bytes/],
    ['1.3 G float32 elements', header(9, 1300n << 20n, 6), /float32 elements exceed the limit/],
    ['100 M strings', header(9, 100n << 20n, 8), /string elements exceed the limit of 67108864 elements/],
  ];
  for (const [what, h, re] of cases) {
    it(what, () => {
      const p = path.join(testDir('fuzz-sparse'), 'big.gguf');
      fs.writeFileSync(p, h);
      fs.truncateSync(p, 6 * 2 ** 30);
      try {
        assert.throws(() => readGGUF(p), (e: unknown) => e instanceof FormatError && re.test(e.message));
      } finally {
        fs.rmSync(p, { force: true });
      }
    });
  }
});

// Found by review of the predictors target's code paths, out of its reach: Model.load's sparse-mode
// predictor checks (async: the harness runs parsers synchronously) and a file with ~200k layers
// (far beyond the fuzzer's small inputs).
describe('predictor data the predictors target cannot reach', () => {
  const SYN: SynthOptions = { layers: 2, hidden: 32, ffn: 32, heads: 2, kvHeads: 1, vocab: 260, ctx: 64, dtype: 'q8_0', act: 'silu', seed: 1, format: 'gguf' };

  it('a low-rank predictor of rank > dim (a file without checksums) → ModelConfigError at load, was a RangeError', async () => {
    const dir = testDir('fuzz-pred-rank');
    const g = readGGUF(sparsified(await flashLayoutCached(SYN, 'q8_0'), dir, VARIANTS.findIndex((v) => v.kind === 'lowrank' && v.type === 'f32')));
    // pred_a [32, 40] and pred_b [40, 32] (f32), appended after the data; no checksums, so nothing is verified
    const data = fs.readFileSync(g.path).subarray(g.dataOffset);
    const R = 40, bytes = 32 * R * 4;
    const tensors = g.tensors.map((t) => ({ name: t.name, dims: [...t.dims], type: t.type, rel: BigInt(t.offset - g.dataOffset) }));
    const extra: Buffer[] = [];
    let end = data.length;
    for (const t of tensors) {
      if (!/\.pred_[ab]$/.test(t.name)) continue;
      t.dims = t.name.endsWith('_a') ? [32, R] : [R, 32];
      t.rel = BigInt(end);
      extra.push(Buffer.from(new Float32Array(32 * R).fill(0.01).buffer), Buffer.alloc(alignUp(bytes, g.alignment) - bytes));
      end += alignUp(bytes, g.alignment);
    }
    const kvs = [...g.metadata.values()].filter((kv) => !kv.key.startsWith('flashlm.checksum.'));
    const p = path.join(dir, 'rank40.gguf');
    fs.writeFileSync(p, encodeGGUF({ version: 3, alignment: g.alignment, kvs, tensors, data: Buffer.concat([data, ...extra]) }).bytes);
    await assert.rejects(Model.load(p, { mode: 'sparse', threads: 1, ctx: 8 }), (e: unknown) => e instanceof ModelConfigError && /pred_a' has rank 40, more than the model's width 32/.test(e.message));
  });

  it('describePredictors of a file claiming 160,000 layers: no stack overflow (was Math.min(...thresholds))', async () => {
    const dir = testDir('fuzz-pred-layers');
    const g = readGGUF(sparsified(await flashLayoutCached(SYN, 'q8_0'), dir, VARIANTS.findIndex((v) => v.kind === 'gate' && v.type === 'f32')));
    // the header readGGUF would return for such a file (every layer a copy of layer 0), built in memory:
    // the readers only look at metadata and tensor infos
    const N = 160_000;
    // the premise: spreading this many values into a call overflows the stack here (~125k do)
    assert.throws(() => Math.min(...new Float32Array(N)), RangeError);
    const metadata = new Map(g.metadata);
    const set = (key: string, type: number, value: GGUFKV['value'], arrayType?: number): void => {
      metadata.set(key, arrayType === undefined ? { key, type, value } : { key, type, value, arrayType });
    };
    set('llama.block_count', VT.UINT32, N);
    for (const k of [PK.threshold, PK.recall, PK.precision, PK.overRead]) set(k, VT.ARRAY, new Float32Array(N).fill(0.5), VT.FLOAT32);
    set(PK.rank, VT.ARRAY, new Uint32Array(N), VT.UINT32);
    const perm = g.metadata.get(FK.perm(0))!;
    const l0 = ['ffn_bundle', 'pred_gate', 'pred_thr'].map((s) => g.tensorByName.get(`blk.0.${s}`)!);
    const tensors: TensorInfo[] = [];
    for (let l = 0; l < N; l++) {
      metadata.set(FK.perm(l), { ...perm, key: FK.perm(l) });
      for (const t of l0) tensors.push({ ...t, name: t.name.replace('blk.0.', `blk.${l}.`) });
    }
    const f: GGUFFile = { ...g, metadata, tensors, tensorByName: new Map(tensors.map((t) => [t.name, t])) };
    const lines = describePredictors(f);
    assert.match(lines[0]!, /thresholds 0\.500\.\.0\.500 over 160000 layers/);
  });
});
