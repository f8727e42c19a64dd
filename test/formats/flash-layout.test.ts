import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { verifyModel } from '../../src/formats/checksum.js';
import { convertModel, type QuantName } from '../../src/formats/convert.js';
import { FormatError } from '../../src/formats/errors.js';
import {
  convertToFlashLayout, describeFlashLayout, FK, FLASH_ALIGNMENT, GGML_I8, openFlashLayout, RECORD_ALIGN,
} from '../../src/formats/flash-layout.js';
import { TensorType } from '../../src/formats/ggml-types.js';
import { readGGUF, readTensorData, type GGUFFile } from '../../src/formats/gguf.js';
import { dequantize, quantize } from '../../src/formats/quant.js';
import { openModel } from '../../src/formats/source.js';
import { synthModelCached, testDir } from '../helpers.js';

const SYNTH = {
  layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 300, ctx: 64,
  dtype: 'f32', act: 'silu', seed: 7, format: 'gguf',
} as const;
const TYPES: Record<string, number> = { f32: TensorType.F32, q8_0: TensorType.Q8_0, q4_0: TensorType.Q4_0 };

function tensorBytesOf(f: GGUFFile, name: string): Uint8Array {
  const t = f.tensorByName.get(name);
  assert.ok(t, `tensor ${name}`);
  const b = new Uint8Array(t.bytes);
  readTensorData(f.path, t, b);
  return b;
}
function f32Of(f: GGUFFile, name: string): Float32Array {
  const t = f.tensorByName.get(name)!;
  return dequantize(t.type, tensorBytesOf(f, name), t.dims.reduce((a, b) => a * b, 1));
}

async function convertBoth(quant: QuantName, blockRecords = 64): Promise<{ std: GGUFFile; flash: GGUFFile; src: GGUFFile; dir: string }> {
  const srcPath = await synthModelCached({ ...SYNTH });
  const dir = testDir(`flash-${quant}`);
  const stdPath = path.join(dir, 'std.gguf');
  const flashPath = path.join(dir, 'flash.gguf');
  const s1 = openModel(srcPath);
  convertModel(s1, stdPath, { quant });
  s1.close();
  const s2 = openModel(srcPath);
  const seen: number[] = [];
  convertToFlashLayout(s2, flashPath, { quant, blockRecords, onProgress: (d, t) => seen.push(d / t) });
  s2.close();
  assert.equal(seen[0], 0);
  assert.equal(seen.at(-1), 1);
  assert.ok(!fs.readdirSync(dir).some((n) => n.includes('.tmp-') || n.includes('.flash-')), 'no temp files left');
  return { std: readGGUF(stdPath), flash: readGGUF(flashPath), src: readGGUF(srcPath), dir };
}

for (const quant of ['q8_0', 'f32', 'q4_0'] as const) {
  test(`flash layout ${quant}: records hold gate row | up row | down column of the source`, async () => {
    const { std, flash, src } = await convertBoth(quant);
    const dtype = TYPES[quant]!;
    const D = SYNTH.hidden, F = SYNTH.ffn;
    assert.equal(flash.alignment, FLASH_ALIGNMENT);
    assert.equal(flash.dataOffset % FLASH_ALIGNMENT, 0);
    const L = openFlashLayout(flash);
    assert.equal(L.dtype, dtype);
    assert.equal(L.dim, D);
    assert.deepEqual(L.parts, ['gate', 'up', 'down']);
    assert.equal(L.recordBytes % RECORD_ALIGN, 0);
    const pb = dtype === TensorType.F32 ? D * 4 : dtype === TensorType.Q8_0 ? (D / 32) * 34 : (D / 32) * 18;
    assert.deepEqual(L.partBytes, [pb, pb, pb]);
    assert.deepEqual(L.partOffsets, [0, pb, 2 * pb]);
    assert.equal(L.recordBytes, Math.ceil((3 * pb) / 512) * 512);
    assert.equal(L.layers.length, SYNTH.layers);

    // resident tensors: same names, types and bytes as the standard conversion; no ffn_gate/up/down
    for (const t of std.tensors) {
      if (/ffn_(gate|up|down)/.test(t.name)) {
        assert.equal(flash.tensorByName.get(t.name), undefined);
        continue;
      }
      const ft = flash.tensorByName.get(t.name);
      assert.ok(ft, t.name);
      assert.equal(ft.type, t.type, t.name);
      assert.equal(ft.offset % FLASH_ALIGNMENT, 0);
      assert.deepEqual(tensorBytesOf(flash, t.name), tensorBytesOf(std, t.name), t.name);
    }
    for (const k of ['llama.embedding_length', 'llama.block_count', 'tokenizer.ggml.model', 'general.file_type']) {
      assert.deepEqual(flash.metadata.get(k)?.value, std.metadata.get(k)?.value, k);
    }
    assert.match(String(flash.metadata.get(FK.sourceSha)?.value), /^[0-9a-f]{64}$/);
    assert.notEqual(flash.metadata.get(FK.sourceSha)?.value, '0'.repeat(64));

    let seed = 12345;
    const rnd = (n: number): number => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) % n);
    for (let l = 0; l < SYNTH.layers; l++) {
      const layer = L.layers[l]!;
      const bt = flash.tensorByName.get(`blk.${l}.ffn_bundle`)!;
      assert.equal(bt.type, GGML_I8);
      assert.deepEqual(bt.dims, [L.recordBytes, F]);
      assert.equal(layer.bundleOffset, bt.offset);
      assert.equal(layer.bundleOffset % FLASH_ALIGNMENT, 0);
      assert.equal(layer.nFF, F);
      assert.deepEqual([...layer.perm], [...Array(F).keys()]);
      const bundle = tensorBytesOf(flash, bt.name);
      const gateStd = tensorBytesOf(std, `blk.${l}.ffn_gate.weight`);
      const upStd = tensorBytesOf(std, `blk.${l}.ffn_up.weight`);
      const downF32 = f32Of(src, `blk.${l}.ffn_down.weight`); // [D rows × F cols]
      for (const i of [0, F - 1, rnd(F), rnd(F), rnd(F), rnd(F)]) {
        const rec = bundle.subarray(i * L.recordBytes, (i + 1) * L.recordBytes);
        const part = (p: number): Uint8Array => rec.subarray(L.partOffsets[p]!, L.partOffsets[p]! + pb);
        assert.deepEqual(part(0), gateStd.subarray(i * pb, (i + 1) * pb), `layer ${l} gate row ${i}`);
        assert.deepEqual(part(1), upStd.subarray(i * pb, (i + 1) * pb), `layer ${l} up row ${i}`);
        const col = new Float32Array(D);
        for (let r = 0; r < D; r++) col[r] = downF32[r * F + i]!;
        assert.deepEqual(part(2), quantize(dtype, col), `layer ${l} down column ${i}`);
        const back = dequantize(dtype, part(2), D);
        const maxAbs = col.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        const tol = dtype === TensorType.F32 ? 0 : dtype === TensorType.Q8_0 ? maxAbs / 127 : maxAbs / 7;
        for (let r = 0; r < D; r++) assert.ok(Math.abs(back[r]! - col[r]!) <= tol + 1e-7, `down col ${i} elem ${r}`);
        assert.ok(rec.subarray(3 * pb).every((b) => b === 0), 'record padding is zero');
      }
    }
    const lines = describeFlashLayout(flash);
    assert.match(lines[0]!, new RegExp(`2 layers × 192 records of ${L.recordBytes} B`));
    assert.deepEqual(describeFlashLayout(std), []);
  });
}

test('verify: passes on a good file, names layer and block of a flipped byte, and of a changed tensor', async () => {
  const { flash, dir } = await convertBoth('q8_0', 64);
  const good = verifyModel(flash.path);
  assert.equal(good.ok, true);
  assert.equal(good.blocksChecked, SYNTH.layers * 3); // 192 records / 64 per block
  assert.ok(good.tensorsChecked > 0);

  const L = openFlashLayout(flash);
  const bad = path.join(dir, 'flipped.gguf');
  fs.copyFileSync(flash.path, bad);
  const at = L.layers[1]!.bundleOffset + 130 * L.recordBytes + 5; // layer 1, record 130 → block 2
  const fd = fs.openSync(bad, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, at);
  b[0] ^= 0x10;
  fs.writeSync(fd, b, 0, 1, at);
  const emb = flash.tensorByName.get('token_embd.weight')!;
  fs.readSync(fd, b, 0, 1, emb.offset + 7);
  b[0] ^= 1;
  fs.writeSync(fd, b, 0, 1, emb.offset + 7);
  fs.closeSync(fd);
  const r = verifyModel(bad);
  assert.equal(r.ok, false);
  assert.equal(r.mismatches.length, 2);
  const [m1, m2] = r.mismatches;
  assert.equal(m1!.kind, 'tensor');
  assert.equal(m1!.tensor, 'token_embd.weight');
  assert.equal(m2!.kind, 'bundle');
  assert.equal(m2!.layer, 1);
  assert.equal(m2!.block, 2);
  assert.equal(m2!.firstRecord, 128);
  assert.ok(m2!.offset <= at && at < m2!.offset + m2!.bytes);
});

test('truncated flash file and broken layout keys give FormatError', async () => {
  const { flash, dir } = await convertBoth('q8_0', 64);
  const cut = path.join(dir, 'cut.gguf');
  fs.copyFileSync(flash.path, cut);
  fs.truncateSync(cut, flash.fileSize - 1000);
  assert.throws(() => readGGUF(cut), FormatError);
  assert.throws(() => verifyModel(cut), FormatError);

  const bad = (key: string, value: unknown): void => {
    const f: GGUFFile = { ...flash, metadata: new Map(flash.metadata) };
    const kv = f.metadata.get(key)!;
    f.metadata.set(key, { ...kv, value: value as never });
    assert.throws(() => openFlashLayout(f), (e: unknown) => e instanceof FormatError && e.message.includes(key));
  };
  bad(FK.recordBytes, 500);
  bad(FK.perm(1), new Uint32Array(SYNTH.ffn)); // all zeros: duplicates
  bad(FK.partOffsets, Uint32Array.from([0, 68, 500]));
  const noKeys: GGUFFile = { ...flash, metadata: new Map([...flash.metadata].filter(([k]) => k !== FK.dtype)) };
  assert.throws(() => openFlashLayout(noKeys), (e: unknown) => e instanceof FormatError && e.message.includes(FK.dtype));
  // a standard file has no checksums
  const std = path.join(dir, 'std.gguf');
  assert.throws(() => verifyModel(std), (e: unknown) => e instanceof FormatError && e.message.includes('flashlm.checksum.algo'));
});

test('a failing source leaves nothing behind', async () => {
  const srcPath = await synthModelCached({ ...SYNTH });
  const dir = testDir('flash-fail');
  const out = path.join(dir, 'never.gguf');
  const src = openModel(srcPath);
  const read = src.readTensor.bind(src);
  src.readTensor = (name, dst, off) => {
    if (name === 'blk.1.ffn_down.weight') throw new Error('injected read error');
    read(name, dst, off);
  };
  assert.throws(() => convertToFlashLayout(src, out, { quant: 'q8_0' }), /injected read error/);
  src.close();
  assert.deepEqual(fs.readdirSync(dir), []);
});

test('non-GLU source (no ffn_gate): records are up row | down column', async () => {
  const srcPath = await synthModelCached({ ...SYNTH });
  const dir = testDir('flash-noglu');
  const src = openModel(srcPath);
  src.tensors = src.tensors.filter((t) => !t.name.includes('ffn_gate'));
  const out = path.join(dir, 'f.gguf');
  convertToFlashLayout(src, out, { quant: 'q8_0' });
  src.close();
  const f = readGGUF(out);
  const L = openFlashLayout(f);
  assert.deepEqual(L.parts, ['up', 'down']);
  assert.equal(L.recordBytes, 512); // 2 × 68 B padded
  const up = f32Of(readGGUF(srcPath), 'blk.0.ffn_up.weight');
  const bundle = tensorBytesOf(f, 'blk.0.ffn_bundle');
  const i = 77;
  assert.deepEqual(bundle.subarray(i * 512, i * 512 + 68), quantize(TensorType.Q8_0, up.subarray(i * 64, (i + 1) * 64)));
  assert.equal(verifyModel(out).ok, true);
});

test('verify: a changed metadata value is a header mismatch', async () => {
  const { flash, dir } = await convertBoth('q4_0', 64);
  const bad = path.join(dir, 'meta.gguf');
  fs.copyFileSync(flash.path, bad);
  const head = fs.readFileSync(bad).subarray(0, flash.dataOffset);
  const sha = String(flash.metadata.get(FK.sourceSha)!.value);
  const at = head.indexOf(Buffer.from(sha, 'latin1'));
  assert.ok(at > 0);
  const fd = fs.openSync(bad, 'r+');
  fs.writeSync(fd, Buffer.from(sha[0] === 'a' ? 'b' : 'a'), 0, 1, at);
  fs.closeSync(fd);
  const r = verifyModel(bad);
  assert.equal(r.ok, false);
  assert.deepEqual(r.mismatches.map((m) => m.kind), ['header']);
});
