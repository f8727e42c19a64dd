// `flashlm convert SRC -o OUT --layout flash --quant bf16`: the one flash-layout dtype the other
// tests (q8_0, q4_0, f32 in flash-layout.test.ts, hybrid.test.ts) never produce. Converted through
// the CLI, so the command path that accepts bf16 is what is tested. bf16 rounds each element on
// its own, so unlike q8_0 the down columns hold exactly the values of the standard layout's down
// rows, which makes the standard bf16 file a second reference for the tokens.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { verifyModel } from '../../src/formats/checksum.js';
import { convertModel, LLAMA_FTYPE } from '../../src/formats/convert.js';
import { describeFlashLayout, FLASH_ALIGNMENT, GGML_I8, openFlashLayout, RECORD_ALIGN } from '../../src/formats/flash-layout.js';
import { TensorType } from '../../src/formats/ggml-types.js';
import { readGGUF, readTensorData, type GGUFFile } from '../../src/formats/gguf.js';
import { dequantize, quantize } from '../../src/formats/quant.js';
import { openModel } from '../../src/formats/source.js';
import type { SynthOptions } from '../../src/engine/synth.js';
import { greedyRun, synthModelCached, testDir } from '../helpers.js';

const BIN = fileURLToPath(new URL('../../../bin/flashlm.cjs', import.meta.url)); // dist/test/formats → bin/
// hidden 64: a record is 3 × 128 B = 384 B of bf16, padded to 512, so the padding is exercised
const o: SynthOptions = { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 128, dtype: 'f32', act: 'silu', seed: 11, format: 'gguf' };
const prompt = [1, 300, 301, 302, 303];
const steps = 8;

function bytesOf(f: GGUFFile, name: string): Uint8Array {
  const t = f.tensorByName.get(name);
  assert.ok(t, `tensor ${name}`);
  const b = new Uint8Array(t.bytes);
  readTensorData(f.path, t, b);
  return b;
}

/** The bf16 flash file (through the CLI) and the standard bf16 conversion of the same source. */
async function convertBF16(): Promise<{ flash: GGUFFile; std: GGUFFile; src: GGUFFile }> {
  const srcPath = await synthModelCached(o);
  const dir = testDir('flash-bf16');
  const flashPath = path.join(dir, 'flash-bf16.gguf');
  const stdPath = path.join(dir, 'std-bf16.gguf');
  if (!fs.existsSync(flashPath)) {
    const r = spawnSync(process.execPath, [BIN, 'convert', srcPath, '-o', flashPath, '--layout', 'flash', '--quant', 'bf16'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /bf16, flash layout/);
    assert.ok(!fs.readdirSync(dir).some((n) => n.includes('.tmp-') || n.includes('.flash-')), 'no temp files left');
  }
  if (!fs.existsSync(stdPath)) {
    const s = openModel(srcPath);
    try {
      convertModel(s, stdPath, { quant: 'bf16' });
    } finally {
      s.close();
    }
  }
  return { flash: readGGUF(flashPath), std: readGGUF(stdPath), src: readGGUF(srcPath) };
}

test('flash layout bf16 (CLI convert): verifies, records are bf16 gate row | up row | down column, 512-byte padded', async () => {
  const { flash, std, src } = await convertBF16();
  const D = o.hidden, F = o.ffn;
  const v = verifyModel(flash.path);
  assert.equal(v.ok, true, JSON.stringify(v.mismatches));
  assert.ok(v.blocksChecked >= o.layers && v.tensorsChecked > 0);

  assert.equal(flash.alignment, FLASH_ALIGNMENT);
  assert.equal(flash.metadata.get('general.file_type')?.value, LLAMA_FTYPE.bf16);
  const L = openFlashLayout(flash);
  assert.equal(L.dtype, TensorType.BF16);
  assert.deepEqual(L.parts, ['gate', 'up', 'down']);
  const pb = D * 2;
  assert.deepEqual(L.partBytes, [pb, pb, pb]);
  assert.deepEqual(L.partOffsets, [0, pb, 2 * pb]);
  assert.equal(L.recordBytes % RECORD_ALIGN, 0);
  assert.equal(RECORD_ALIGN, 512);
  assert.equal(L.recordBytes, 512); // 384 B of parts + 128 B of padding
  assert.match(describeFlashLayout(flash)[0]!, /2 layers × 192 records of 512 B \(BF16 parts/i);

  // resident tensors are those of the standard bf16 conversion, byte for byte
  for (const t of std.tensors) {
    if (/ffn_(gate|up|down)/.test(t.name)) continue;
    const ft = flash.tensorByName.get(t.name);
    assert.ok(ft, t.name);
    assert.equal(ft.type, t.type, t.name);
    assert.equal(ft.offset % FLASH_ALIGNMENT, 0, t.name);
    assert.deepEqual(bytesOf(flash, t.name), bytesOf(std, t.name), t.name);
  }
  for (let l = 0; l < o.layers; l++) {
    const layer = L.layers[l]!;
    const bt = flash.tensorByName.get(`blk.${l}.ffn_bundle`)!;
    assert.equal(bt.type, GGML_I8);
    assert.deepEqual(bt.dims, [L.recordBytes, F]);
    assert.equal(layer.bundleOffset % FLASH_ALIGNMENT, 0);
    const bundle = bytesOf(flash, bt.name);
    const gate = bytesOf(std, `blk.${l}.ffn_gate.weight`);
    const up = bytesOf(std, `blk.${l}.ffn_up.weight`);
    const downStd = dequantize(TensorType.BF16, bytesOf(std, `blk.${l}.ffn_down.weight`), D * F); // [D rows × F cols], bf16 values
    const downSrc = dequantize(TensorType.F32, bytesOf(src, `blk.${l}.ffn_down.weight`), D * F);
    for (let i = 0; i < F; i++) { // every record: the file is small
      const rec = bundle.subarray(i * L.recordBytes, (i + 1) * L.recordBytes);
      assert.deepEqual(rec.subarray(0, pb), gate.subarray(i * pb, (i + 1) * pb), `layer ${l} gate row ${i}`);
      assert.deepEqual(rec.subarray(pb, 2 * pb), up.subarray(i * pb, (i + 1) * pb), `layer ${l} up row ${i}`);
      const colSrc = new Float32Array(D), colStd = new Float32Array(D);
      for (let r = 0; r < D; r++) {
        colSrc[r] = downSrc[r * F + i]!;
        colStd[r] = downStd[r * F + i]!;
      }
      const down = rec.subarray(2 * pb, 3 * pb);
      assert.deepEqual(down, quantize(TensorType.BF16, colSrc), `layer ${l} down column ${i}`);
      // per-element rounding: the same values as the standard layout's down row elements
      assert.deepEqual(dequantize(TensorType.BF16, down, D), colStd, `layer ${l} down column ${i} values`);
      assert.ok(rec.subarray(3 * pb).every((b) => b === 0), `layer ${l} record ${i}: padding is zero`);
    }
  }
});

test('flash layout bf16: hybrid mode equals RAM mode bit for bit, and the standard bf16 file gives the same tokens', async () => {
  const { flash, std } = await convertBF16();
  const ram = await greedyRun(flash.path, prompt, steps, { mode: 'ram' });
  const hyb = await greedyRun(flash.path, prompt, steps, { mode: 'hybrid' });
  assert.deepEqual(hyb.tokens, ram.tokens);
  for (let i = 0; i < steps; i++) assert.deepEqual(hyb.logits[i], ram.logits[i], `step ${i}`);
  const st = hyb.model.ffnSource!.stats;
  const passes = prompt.length + steps - 1;
  // every pass read every layer's records from the file (plus at most one prefetch)
  assert.ok(st.layerReads >= passes * o.layers && st.layerReads <= passes * o.layers + 1, `layer reads ${st.layerReads}`);
  assert.ok(st.bytes >= passes * o.layers * o.ffn * 512, `bytes ${st.bytes}`);

  // the same bf16 weights in the standard layout: the RAM engine there rounds the FFN activation h
  // to bf16 before down·h where the bundle keeps it f32, so logits are close, not equal (measured:
  // max |Δ| 0.043 for max |logit| 15.5, ≈0.3%; the smallest top-2 gap over these steps is 0.10)
  const ref = await greedyRun(std.path, prompt, steps, { mode: 'ram' });
  assert.deepEqual(ram.tokens, ref.tokens);
  let maxDiff = 0, maxAbs = 0;
  for (let i = 0; i < steps; i++) {
    for (let j = 0; j < o.vocab; j++) {
      maxDiff = Math.max(maxDiff, Math.abs(ram.logits[i]![j]! - ref.logits[i]![j]!));
      maxAbs = Math.max(maxAbs, Math.abs(ref.logits[i]![j]!));
    }
  }
  assert.ok(maxDiff <= 0.01 * maxAbs, `max |Δlogit| ${maxDiff} vs max |logit| ${maxAbs}`);
});
