// Output files that cannot be written: a file system without room for the whole file is refused
// before anything is written, and a write that fails midway (ENOSPC, EIO, ...) is a WriteError naming
// the file and how far it got, with the temp file removed and the previous file left as it was.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { GGUFValueType as VT, GGUFWriter, readGGUF } from '../../src/formats/gguf.js';
import { TensorType } from '../../src/formats/ggml-types.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flashlm-write-err-'));
const N = 3 << 20; // f32 elements: a 12 MiB tensor, more than one 8 MiB write chunk

function write(p: string, opts: ConstructorParameters<typeof GGUFWriter>[1]): void {
  const w = new GGUFWriter(p, opts);
  w.addKV('general.architecture', VT.STRING, 'llama');
  w.addTensor('t', [N], TensorType.F32);
  w.beginData();
  const chunk = new Uint8Array(1 << 20).fill(7);
  for (let i = 0; i < (N * 4) / chunk.length; i++) w.writeData(chunk);
  w.finish();
}

const temps = (): string[] => fs.readdirSync(dir).filter((n) => n.includes('.tmp-'));

test('not enough free space for the whole file: refused before writing, names the bytes', () => {
  const p = path.join(dir, 'a.gguf');
  fs.writeFileSync(p, 'old');
  assert.throws(() => write(p, { freeBytes: () => 5e6 }), (e: Error & { code?: string }) => {
    assert.equal(e.name, 'WriteError');
    assert.equal(e.code, 'ENOSPC');
    assert.match(e.message, /needs 12\.\d MB of free space, 5\.0 MB free/);
    return true;
  });
  assert.deepEqual(temps(), []);
  assert.equal(fs.readFileSync(p, 'utf8'), 'old');
  // enough room: written and readable
  write(p, { freeBytes: () => 1e9 });
  assert.equal(readGGUF(p).tensors[0]!.name, 't');
});

for (const code of ['ENOSPC', 'EIO', 'EDQUOT']) {
  test(`${code} in the middle of the data: WriteError with the file and progress, temp removed, old file kept`, () => {
    const p = path.join(dir, `b-${code}.gguf`);
    fs.writeFileSync(p, 'old');
    let calls = 0;
    const writeFn = ((fd: number, b: Uint8Array, off: number, len: number) => {
      if (++calls === 2) throw Object.assign(new Error(`${code}: simulated, write`), { code });
      return fs.writeSync(fd, b, off, len);
    }) as typeof fs.writeSync;
    assert.throws(() => write(p, { freeBytes: () => 1e9, writeFn }), (e: Error & { code?: string; path?: string }) => {
      assert.equal(e.name, 'WriteError');
      assert.equal(e.code, code);
      assert.equal(e.path, p);
      assert.match(e.message, /after [\d.]+ MB of 12\.\d MB; the partial temp file is removed, the previous file \(if any\) is unchanged/);
      return true;
    });
    assert.deepEqual(temps(), []);
    assert.equal(fs.readFileSync(p, 'utf8'), 'old');
  });
}

test('other write errors pass through unchanged (not reported as a disk problem)', () => {
  const p = path.join(dir, 'c.gguf');
  const writeFn = (() => { throw Object.assign(new Error('EBADF: simulated'), { code: 'EBADF' }); }) as typeof fs.writeSync;
  assert.throws(() => write(p, { freeBytes: () => 1e9, writeFn }), (e: Error) => e.name === 'Error' && /EBADF/.test(e.message));
  assert.deepEqual(temps(), []);
});
