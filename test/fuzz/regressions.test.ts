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
import { readGGUF } from '../../src/formats/gguf.js';
import { fixturePath, testDir } from '../helpers.js';

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
