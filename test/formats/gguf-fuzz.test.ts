// Seeded mutation smoke test: random byte mutations and truncations of a small valid GGUF must give
// either a successful parse (after which every tensor can be read) or a FormatError/UnsupportedError.
import { mulberry32 } from '../../src/engine/sample.js';
import { after, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GGUFValueType as VT, GGUFWriter, readGGUF, readTensorData } from '../../src/formats/gguf.js';
import { FormatError, UnsupportedError } from '../../src/formats/errors.js';
import { TensorType } from '../../src/formats/ggml-types.js';

const rng = mulberry32;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flashlm-gguf-fuzz-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function baseFile(): Buffer {
  const p = path.join(dir, 'base.gguf');
  const w = new GGUFWriter(p);
  w.addKV('general.architecture', VT.STRING, 'llama');
  w.addKV('llama.block_count', VT.UINT32, 2);
  w.addKV('general.alignment', VT.UINT32, 32);
  w.addKV('big', VT.UINT64, 2n ** 40n);
  w.addKV('tokens', VT.ARRAY, ['<s>', 'a', 'bc'], VT.STRING);
  w.addKV('scores', VT.ARRAY, new Float32Array([0, -1, -2]), VT.FLOAT32);
  w.addKV('nested', VT.ARRAY, [new Int16Array([1, 2]), ['x']], VT.ARRAY);
  w.addKV('flag', VT.BOOL, true);
  w.addTensor('a', [8, 2], TensorType.F32);
  w.addTensor('b', [32], TensorType.Q8_0);
  w.addTensor('c', [4], TensorType.F16);
  w.beginData();
  w.writeData(new Uint8Array(64 + 34 + 8).fill(3));
  w.finish();
  return fs.readFileSync(p);
}

it('2000 random mutations give success or FormatError/UnsupportedError only', () => {
  const base = baseFile();
  const header = readGGUF(path.join(dir, 'base.gguf')).dataOffset;
  const r = rng(1234);
  const p = path.join(dir, 'mut.gguf');
  const outcomes = { ok: 0, format: 0, unsupported: 0 };
  const t0 = Date.now();
  for (let iter = 0; iter < 2000; iter++) {
    let b = Buffer.from(base);
    const nMut = 1 + Math.floor(r() * 4);
    for (let m = 0; m < nMut; m++) {
      // mostly in the header, where the parser lives
      const at = r() < 0.9 ? Math.floor(r() * header) : Math.floor(r() * b.length);
      const kind = r();
      if (kind < 0.6) b[at] = Math.floor(r() * 256);
      else if (kind < 0.8) b[at] ^= 1 << Math.floor(r() * 8);
      else b[at] = [0, 0xff, 0x7f, 0x80][Math.floor(r() * 4)]!;
    }
    if (r() < 0.25) b = b.subarray(0, Math.floor(r() * b.length));
    fs.writeFileSync(p, b);
    try {
      const f = readGGUF(p);
      for (const t of f.tensors) readTensorData(p, t, new Uint8Array(t.bytes));
      outcomes.ok++;
    } catch (e) {
      if (e instanceof FormatError) outcomes.format++;
      else if (e instanceof UnsupportedError) outcomes.unsupported++;
      else assert.fail(`iteration ${iter}: unexpected ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e)}`);
    }
  }
  assert.ok(outcomes.ok > 0 && outcomes.format > 0, JSON.stringify(outcomes));
  assert.ok(Date.now() - t0 < 5000 * 3, `took ${Date.now() - t0} ms`); // generous: CI machines are shared
});
