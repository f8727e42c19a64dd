import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FormatError } from '../../src/formats/errors.js';
import { HFWriteError, writeHFDir } from '../../src/formats/hf-write.js';
import { openSafetensors } from '../../src/formats/safetensors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'flashlm-hfwrite-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => path.join(tmp, `d${n++}`);
const leftovers = (): string[] => fs.readdirSync(tmp).filter((f) => f.includes('.tmp-') || f.includes('.old-'));
const tensor = { name: 'w', dtype: 'F32', shape: [2], data: new Uint8Array(new Float32Array([1, 2]).buffer) };

describe('writeHFDir', () => {
  it('writes JSON, raw files and model.safetensors, and replaces an existing directory', () => {
    const d = fresh();
    writeHFDir(d, [{ name: 'config.json', json: { a: 1 } }, { name: 'stale.bin', data: new Uint8Array([1]) }]);
    writeHFDir(d, [{ name: 'config.json', json: { a: [2] } }, { name: 'raw.bin', data: new Uint8Array([7, 8]) }],
      { tensors: [tensor], metadata: { format: 'pt' } });
    assert.deepEqual(fs.readdirSync(d).sort(), ['config.json', 'model.safetensors', 'raw.bin']);
    assert.equal(fs.readFileSync(path.join(d, 'config.json'), 'utf8'), '{\n  "a": [\n    2\n  ]\n}\n');
    assert.deepEqual([...fs.readFileSync(path.join(d, 'raw.bin'))], [7, 8]);
    const st = openSafetensors(d);
    assert.deepEqual(st.metadata, { format: 'pt' });
    assert.deepEqual(st.tensors.get('w')?.shape, [2]);
    assert.deepEqual(leftovers(), []);
  });

  it('rejects bad file lists before touching the disk', () => {
    const d = fresh();
    for (const files of [
      [{ name: '../x.json', json: 1 }],
      [{ name: 'sub/x.json', json: 1 }],
      [{ name: '', json: 1 }],
      [{ name: 'a.json', json: 1 }, { name: 'a.json', json: 2 }],
      [{ name: 'a.json' }],
      [{ name: 'a.json', json: 1, data: new Uint8Array(1) }],
    ]) {
      assert.throws(() => writeHFDir(d, files), (e: unknown) => e instanceof HFWriteError && e.name === 'HFWriteError');
    }
    assert.throws(() => writeHFDir(d, [{ name: 'model.safetensors', json: 1 }], { tensors: [] }), HFWriteError);
    assert.equal(fs.existsSync(d), false);
    assert.deepEqual(leftovers(), []);
  });

  it('refuses to replace a file', () => {
    const f = fresh();
    fs.writeFileSync(f, 'x');
    assert.throws(() => writeHFDir(f, [{ name: 'a.json', json: 1 }]), /exists and is not a directory/);
    assert.equal(fs.readFileSync(f, 'utf8'), 'x');
    assert.deepEqual(leftovers(), []);
  });

  it('keeps the old directory and removes the temp directory when writing fails', () => {
    const d = fresh();
    writeHFDir(d, [{ name: 'config.json', json: { v: 1 } }]);
    const bad = { ...tensor, shape: [3] }; // 8 bytes of data for 12 needed
    assert.throws(() => writeHFDir(d, [{ name: 'config.json', json: { v: 2 } }], { tensors: [bad] }), FormatError);
    assert.deepEqual(fs.readdirSync(d), ['config.json']);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8')), { v: 1 });
    assert.deepEqual(leftovers(), []);
  });
});
