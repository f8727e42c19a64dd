import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  bandwidthMBps, bestReadSize, costMs, DiskProfileError, loadDiskProfile, profileDisk, profilePathFor, profileSvg,
  saveDiskProfile, type DiskProfile,
} from '../../src/flash/profile.js';
import { parseByteSize, formatProfileTable } from '../../src/cli/profile-disk.js';
import { testDir } from '../helpers.js';

const dir = testDir('flash-profile');
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

function checkWellFormed(p: DiskProfile, chunks: number[], inFlights: number[]): void {
  assert.equal(p.version, 1);
  assert.equal(p.cells.length, chunks.length * inFlights.length);
  for (const c of p.cells) {
    assert.ok(chunks.includes(c.chunkBytes) && inFlights.includes(c.inFlight));
    assert.ok(c.reads >= c.inFlight, 'every worker reads at least once');
    assert.equal(c.bytes, c.reads * c.chunkBytes);
    assert.ok(c.ms > 0 && c.mbps >= 0 && c.iops > 0);
  }
  assert.match(p.device, /^\d+:\d+$/);
  assert.equal(p.trustworthy, p.direct);
}

test('a tiny run (2 chunk sizes × 2 in-flight, 1 s) gives a well-formed profile, a table and an SVG; scratch file removed', async () => {
  const chunks = [4096, 65536], inFlights = [1, 4];
  const p = await profileDisk({ dir, sizeBytes: 8 << 20, seconds: 1, chunkSizes: chunks, inFlights, dropCaches: false });
  checkWellFormed(p, chunks, inFlights);
  assert.equal(p.fileBytes, 8 << 20);
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('scratch')), []);
  const saved = saveDiskProfile(p, join(dir, 'prof.json'));
  assert.deepEqual(loadDiskProfile(saved), p);
  const svg = profileSvg(p);
  assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>\n$/);
  assert.equal(svg.match(/<polyline /g)?.length, 2);
  assert.match(svg, /4 in flight/);
  const table = formatProfileTable(p);
  assert.equal(table.split('\n').length, 3);
  assert.match(table, /64 KiB .*MB\/s/);
});

test('profile of an existing file (read-only) and of buffered reads (flagged untrustworthy)', async () => {
  const file = join(dir, 'existing.bin');
  fs.writeFileSync(file, Buffer.alloc(1 << 20, 3));
  const before = fs.statSync(file).mtimeMs;
  const p = await profileDisk({ file, seconds: 0.2, chunkSizes: [8192], inFlights: [2], direct: false });
  checkWellFormed(p, [8192], [2]);
  assert.equal(p.direct, false);
  assert.equal(p.trustworthy, false);
  assert.ok(p.warnings.some((w) => /NOT trustworthy/.test(w)));
  assert.equal(fs.statSync(file).mtimeMs, before);
  assert.ok(fs.existsSync(file));
  assert.match(profileSvg(p), /BUFFERED/);
  assert.match(profilePathFor(file, dir), /disk-profile-\d+-\d+\.json$/);
});

test('bad options and bad profile files → typed errors', async () => {
  await assert.rejects(profileDisk({ dir, chunkSizes: [1000] }), DiskProfileError);
  await assert.rejects(profileDisk({ dir, inFlights: [0] }), DiskProfileError);
  await assert.rejects(profileDisk({ file: join(dir, 'nope.bin') }), (e: unknown) => e instanceof DiskProfileError && e.name === 'DiskProfileError');
  const bad = join(dir, 'bad.json');
  fs.writeFileSync(bad, '{"version":1,"cells":[{"chunkBytes":"x"}]}');
  assert.throws(() => loadDiskProfile(bad), DiskProfileError);
  fs.writeFileSync(bad, 'not json');
  assert.throws(() => loadDiskProfile(bad), /cannot read disk profile/);
});

function synthetic(): DiskProfile {
  const cells = [];
  for (const f of [1, 4]) {
    for (const c of [4096, 65536, 1 << 20]) {
      const iops = f === 1 ? 5000 : 20000;
      const mbps = Math.min((iops * c) / 1e6, f === 1 ? 1000 : 2000);
      cells.push({ chunkBytes: c, inFlight: f, reads: 1, bytes: c, ms: 1, mbps, iops });
    }
  }
  return { version: 1, created: '', path: '/x', device: '1:2', fileBytes: 1 << 30, direct: true, trustworthy: true, warnings: [], ioUring: true, threadpoolSize: 4, secondsPerCell: 1, cells };
}

test('cost model: interpolation, costMs, bestReadSize', () => {
  const p = synthetic();
  // 4 in flight: 4 KiB → 81.92 MB/s, 64 KiB → 1310.72, 1 MiB → 2000
  assert.equal(bandwidthMBps(p, 4096, 4), 81.92);
  assert.equal(bandwidthMBps(p, 4096), 81.92); // best in-flight
  assert.equal(bandwidthMBps(p, 4096, 1), 20.48);
  assert.equal(bandwidthMBps(p, 4096, 3), 20.48); // nearest measured below
  assert.equal(bandwidthMBps(p, 2048, 4), 40.96); // IOPS-bound below the smallest size
  assert.equal(bandwidthMBps(p, 4 << 20, 4), 2000); // clamped above
  const mid = bandwidthMBps(p, 256 << 10, 4); // halfway in log2 between 64 KiB and 1 MiB
  assert.ok(Math.abs(mid - (1310.72 + 2000) / 2) < 1e-9);
  // 100 MB in 100 reads of 1 MB-ish at 2000 MB/s = 50 ms
  assert.ok(Math.abs(costMs(p, 100 * (1 << 20), 100) - (100 * (1 << 20)) / 2e6) < 1e-9);
  assert.equal(costMs(p, 0, 0), 0);
  assert.ok(costMs(p, 1 << 20, 256) > costMs(p, 1 << 20, 1), 'many small reads cost more');
  assert.deepEqual(bestReadSize(p), { chunkBytes: 1 << 20, inFlight: 4, mbps: 2000 });
  assert.deepEqual(bestReadSize(p, 0.6), { chunkBytes: 65536, inFlight: 4, mbps: 1310.72 });
});

test('size parsing', () => {
  assert.equal(parseByteSize('1GB', 'size'), 1e9);
  assert.equal(parseByteSize('1GiB', 'size'), 2 ** 30);
  assert.equal(parseByteSize('1G', 'size'), 2 ** 30);
  assert.equal(parseByteSize('64K', 'size'), 65536);
  assert.equal(parseByteSize('4096', 'size'), 4096);
  assert.throws(() => parseByteSize('lots', 'size'), { name: 'UsageError' });
});

test('cmdProfileDisk --json --plot writes the profile to the cache dir and an SVG', () => {
  const cache = join(dir, 'cache');
  const svg = join(dir, 'out.svg');
  const mod = fileURLToPath(new URL('../../src/cli/profile-disk.js', import.meta.url));
  const script = `const { cmdProfileDisk } = await import(${JSON.stringify(mod)}); process.exitCode = await cmdProfileDisk(process.argv.slice(1));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, '--', '--size', '4MiB', '--seconds', '0.3', '--chunks', '4K,16K', '--inflight', '1,2', '--json', '--plot', svg, '--keep-cache'],
    { env: { ...process.env, FLASHLM_CACHE: cache }, encoding: 'utf8', timeout: 20000 });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as DiskProfile & { saved: string };
  assert.ok(out.saved.startsWith(cache));
  checkWellFormed(loadDiskProfile(out.saved), [4096, 16384], [1, 2]);
  assert.match(fs.readFileSync(svg, 'utf8'), /<polyline /);
  const bad = spawnSync(process.execPath, ['--input-type=module', '-e', script, '--', '--chunks', '1000'], { env: { ...process.env, FLASHLM_CACHE: cache }, encoding: 'utf8' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /UsageError|multiple of 4096/);
});
