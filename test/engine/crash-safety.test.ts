// Crash safety of the file writers: `flashlm convert --layout flash`, `flashlm calibrate`,
// `flashlm sparsify` and `flashlm place` (both in place) run as child processes and are SIGKILLed at
// seeded random points of their write (the first kill of each command as soon as its temp file
// appears, the others a random delay into the write window measured on an uninterrupted run). After
// every kill the output must be the previous complete file (same bytes) or the new complete one (same
// bytes as an uninterrupted run, and it verifies) — never partial; and the next run must remove the
// temp files the killed one left (removeStaleTemps: entries named after a dead pid). The last run of
// each command is not killed: it must succeed and leave no temp file behind. Seed: $CRASH_SEED
// (default below).
// place rewrites its own input, so a run that finished (not killed) would make the next one place an
// already placed file (other bytes): the model is put back to the old file before each run.
// Bounded: 4 kills per command (16), ~6 child runs per command.
import { mulberry32 } from '../../src/engine/sample.js';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { synthModelCached, testDir } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';
import { calibrate } from '../../src/engine/calibrate.js';
import { readCalibration } from '../../src/formats/calibration.js';
import { verifyModel } from '../../src/formats/checksum.js';
import { convertToFlashLayout } from '../../src/formats/flash-layout.js';
import { processAlive, removeStaleTemps } from '../../src/formats/fsutil.js';
import { openModel } from '../../src/formats/source.js';

const BIN = fileURLToPath(new URL('../../../bin/flashlm.cjs', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SEED = Number(process.env.CRASH_SEED ?? 20241125);
const KILLS_PER_COMMAND = 4;
// 2 layers × (4·256² + 3·256·1024) f32 ≈ 9 MB source, ~3 MB flash q8_0: writes take ~0.05–0.5 s here
const o: SynthOptions = { layers: 2, hidden: 256, ffn: 1024, heads: 4, kvHeads: 4, vocab: 512, ctx: 128, dtype: 'f32', act: 'silu', seed: 3, format: 'gguf' };

/** Seeded PRNG for the kill delays (uniform in [0, 1)). */
const rng = mulberry32;

const sha = (p: string): string | null => (existsSync(p) ? createHash('sha256').update(readFileSync(p)).digest('hex') : null);
const TEMP_RE = (base: string) => new RegExp(`^${base.replace(/[.]/g, '\\.')}\\.(?:tmp|flash|sparsify|place|old)-(\\d+)`);
/** Temp entries of writers of dir/base (any pid). */
const temps = (dir: string, base: string): string[] => readdirSync(dir).filter((n) => TEMP_RE(base).test(n)).sort();

interface Run {
  killed: boolean; // ended by our SIGKILL
  triggered: boolean; // its own temp file appeared (so its stale-temp cleanup had run)
  code: number | null;
  stderr: string;
  pid: number;
  writeMs: number; // from the temp file's appearance to exit
}

/**
 * Runs `flashlm ...args` and, if killAfterMs is given, SIGKILLs it that many ms after a temp file of
 * dir/base carrying its pid first appears (polled every 1 ms).
 */
function runCli(args: string[], dir: string, base: string, killAfterMs?: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    const pid = child.pid!;
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    let triggered = false, killed = false, tSeen = 0;
    const mine = (n: string): boolean => TEMP_RE(base).exec(n)?.[1] === String(pid);
    const poll = setInterval(() => {
      if (triggered) return;
      let names: string[];
      try { names = readdirSync(dir); } catch { return; }
      if (!names.some(mine)) return;
      triggered = true;
      tSeen = performance.now();
      const kill = (): void => { if (child.exitCode === null) killed = child.kill('SIGKILL'); };
      // delay 0: kill in this tick (a setTimeout(0) can let a small write finish and rename first)
      if (killAfterMs === 0) kill();
      else if (killAfterMs !== undefined) setTimeout(kill, killAfterMs);
    }, 1);
    child.on('error', (e) => { clearInterval(poll); reject(e); });
    child.on('exit', (code) => {
      clearInterval(poll);
      resolve({ killed: killed && code === null, triggered, code, stderr, pid, writeMs: triggered ? performance.now() - tSeen : 0 });
    });
  });
}

interface Outcome { kill: number; delayMs: number; killed: boolean; out: 'old' | 'new' | 'unchanged-new'; staleLeft: number; staleCleaned: boolean | null }

/**
 * The kill loop for one command writing dir/base. `args` runs the command; `isNew` checks a complete
 * new output beyond its bytes (verify). Before: dir/base holds a complete older file (`oldSha`).
 */
async function killLoop(name: string, args: string[], dir: string, base: string, newSha: string, writeMs: number, isNew: (p: string) => void, seed: number,
  restore?: string): Promise<Outcome[]> {
  const out = join(dir, base);
  const oldSha = sha(out);
  assert.ok(oldSha && oldSha !== newSha, `${name}: the old output must exist and differ from the new`);
  // `restore`: a copy of the old file, put back before a run when a previous run completed
  const putBack = (): void => { if (restore && sha(out) !== oldSha) copyFileSync(restore, out); };
  const rand = rng(seed);
  const outcomes: Outcome[] = [];
  let prevStale: string[] = [];
  // first kill: as soon as the temp file exists (leaves a partial temp); then anywhere in the write.
  // A small write can still finish (rename included) between the 1 ms poll seeing the temp file and
  // the signal landing, so the first kill is retried (each attempt checked like any other) until one
  // leaves a temp file, up to FIRST_KILL_TRIES.
  const FIRST_KILL_TRIES = 6;
  let firstTries = 0;
  for (let k = 0; k < KILLS_PER_COMMAND; k++) {
    const delay = k === 0 ? 0 : Math.round(rand() * 1.2 * writeMs);
    putBack();
    const before = sha(out);
    const r = await runCli(args, dir, base, delay);
    if (!r.killed) assert.equal(r.code, 0, `${name}: unkilled run failed: ${r.stderr}`);
    const now = sha(out);
    // never partial: the file before this run, or the new complete one
    assert.ok(now === before || now === newSha, `${name} kill ${k} (+${delay} ms): output is neither the previous file nor the new one`);
    if (now === newSha) isNew(out);
    const stale = temps(dir, base);
    for (const n of stale) assert.ok(!processAlive(Number(TEMP_RE(base).exec(n)![1])), `${name}: ${n} belongs to a live process`);
    // the run's own cleanup ran before its temp file appeared: the previous kill's leftovers are gone
    const cleaned = r.triggered ? prevStale.every((n) => !stale.includes(n)) : null;
    if (r.triggered) assert.deepEqual(prevStale.filter((n) => stale.includes(n)), [], `${name} kill ${k}: stale temp files of the previous kill were not removed`);
    const oc: Outcome = { kill: k, delayMs: delay, killed: r.killed, out: now === oldSha ? 'old' : before === newSha ? 'unchanged-new' : 'new', staleLeft: stale.length, staleCleaned: cleaned };
    prevStale = stale;
    if (k === 0) firstTries++;
    if (k === 0 && !(oc.killed && oc.staleLeft > 0) && firstTries < FIRST_KILL_TRIES) { k--; continue; }
    outcomes.push(oc);
  }
  assert.ok(outcomes[0]!.killed && outcomes[0]!.staleLeft > 0,
    `${name}: the kill at temp-file creation should leave a temp file (${firstTries} tries; last ${JSON.stringify(outcomes[0])})`);
  // an uninterrupted run: succeeds, removes every leftover, output is the new file
  putBack();
  const fin = await runCli(args, dir, base);
  assert.equal(fin.code, 0, `${name}: final run failed: ${fin.stderr}`);
  assert.equal(sha(out), newSha, `${name}: final output differs from an uninterrupted run's`);
  isNew(out);
  assert.deepEqual(temps(dir, base), [], `${name}: temp files left after the final run`);
  process.stderr.write(`crash-safety ${name} (seed ${seed}): ${outcomes.map((x) => `${x.killed ? 'killed' : 'finished'}+${x.delayMs}ms→${x.out}, ${x.staleLeft} temp left`).join('; ')}\n`);
  return outcomes;
}

const verifies = (p: string): void => {
  const v = verifyModel(p);
  assert.ok(v.ok, `${p}: ${JSON.stringify(v.mismatches.slice(0, 2))}`);
};

test('SIGKILLed convert / calibrate / sparsify / place leave the old or the new complete file, and the next run removes their temp files', { timeout: 300_000 }, async () => {
  const dir = testDir('crash-safety');
  const src = await synthModelCached(o);
  const text = join(ROOT, 'src', 'formats'); // real text for calibrate (the synth tokenizer falls back to bytes)
  let kills = 0;
  const count = (xs: Outcome[]) => (kills += xs.filter((x) => x.killed).length);

  // --- convert --layout flash: old = a q4_0 conversion at the same path, new = q8_0
  const convArgs = (out: string) => ['convert', src, '-o', out, '--quant', 'q8_0', '--layout', 'flash'];
  const ref = join(dir, 'ref.gguf');
  const base0 = await runCli(convArgs(ref), dir, 'ref.gguf');
  assert.equal(base0.code, 0, base0.stderr);
  verifies(ref);
  const m = openModel(src);
  try { convertToFlashLayout(m, join(dir, 'm.gguf'), { quant: 'q4_0' }); } finally { m.close(); }
  verifies(join(dir, 'm.gguf'));
  count(await killLoop('convert', convArgs(join(dir, 'm.gguf')), dir, 'm.gguf', sha(ref)!, base0.writeMs, verifies, SEED));

  // --- calibrate: old = a 64-token calibration at the same path, new = 96 tokens
  const calArgs = (out: string) => ['calibrate', ref, '--text', text, '--tokens', '96', '--seq-len', '32', '-o', out];
  const cref = join(dir, 'cref.calib.gguf');
  const base1 = await runCli(calArgs(cref), dir, 'cref.calib.gguf');
  assert.equal(base1.code, 0, base1.stderr);
  const cout = join(dir, 'c.calib.gguf');
  await calibrate(ref, { files: [text], tokens: 64, seqLen: 32, out: cout });
  const readsBack = (p: string) => assert.equal(readCalibration(p).meta.tokens, 96);
  count(await killLoop('calibrate', calArgs(cout), dir, 'c.calib.gguf', sha(cref)!, base1.writeMs, readsBack, SEED + 1));

  // --- sparsify in place: old = the flash file without predictors, new = with them
  const spArgs = (model: string) => ['sparsify', model, '--calib', cref, '--rank', '32', '--epochs', '1'];
  const sref = join(dir, 'sref.gguf');
  copyFileSync(ref, sref);
  const base2 = await runCli(spArgs(sref), dir, 'sref.gguf');
  assert.equal(base2.code, 0, base2.stderr);
  verifies(sref);
  const sp = join(dir, 's.gguf');
  copyFileSync(ref, sp);
  count(await killLoop('sparsify', spArgs(sp), dir, 's.gguf', sha(sref)!, base2.writeMs, verifies, SEED + 2));

  // --- place in place: old = the flash file in its converted order, new = Ripple's placement from the
  // 96-token calibration (deterministic: same input, same bytes)
  const plArgs = (model: string) => ['place', model, '--calib', cref];
  const pref = join(dir, 'pref.gguf');
  copyFileSync(ref, pref);
  const base3 = await runCli(plArgs(pref), dir, 'pref.gguf');
  assert.equal(base3.code, 0, base3.stderr);
  verifies(pref);
  assert.notEqual(sha(pref), sha(ref), 'place left the file unchanged');
  const pl = join(dir, 'p.gguf');
  copyFileSync(ref, pl);
  count(await killLoop('place', plArgs(pl), dir, 'p.gguf', sha(pref)!, base3.writeMs, verifies, SEED + 3, ref));

  assert.ok(kills >= 4 && kills <= 4 * KILLS_PER_COMMAND, `${kills} kills`);
});

test('removeStaleTemps removes dead writers\' temp files, keeps live ones, and puts back an interrupted swap\'s old directory', () => {
  const dir = testDir('stale-temps');
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!; // exited and reaped: no such process now
  assert.equal(processAlive(dead), false);
  assert.equal(processAlive(process.pid), true);
  const live = process.pid;
  const files = [`a.gguf.tmp-${dead}`, `a.gguf.flash-${dead}`, `a.gguf.flash-${dead}.tmp-${dead}`, `a.gguf.sparsify-${dead}.tmp-${dead}`,
    `a.gguf.tmp-${live}`, `a.gguf.flash-${live}.tmp-${live}`, `a.gguf.tmp-${dead}x`, `b.gguf.tmp-${dead}`, `a.gguf.bak-${dead}`];
  for (const f of files) writeFileSync(join(dir, f), 'partial');
  writeFileSync(join(dir, 'a.gguf'), 'complete');
  const removed = removeStaleTemps(join(dir, 'a.gguf')).map((p) => p.slice(dir.length + 1)).sort();
  assert.deepEqual(removed, files.slice(0, 4).sort());
  assert.deepEqual(readdirSync(dir).sort(), ['a.gguf', ...files.slice(4)].sort());
  assert.equal(readFileSync(join(dir, 'a.gguf'), 'utf8'), 'complete');

  // writeHFDir killed between its two renames: `d` is missing, `d.old-<pid>` is the previous complete
  // directory and `d.tmp-<pid>` the new one → the old one is put back, the temp one removed
  mkdirSync(join(dir, `d.old-${dead}`));
  writeFileSync(join(dir, `d.old-${dead}`, 'config.json'), '{}');
  mkdirSync(join(dir, `d.tmp-${dead}`));
  removeStaleTemps(join(dir, 'd'));
  assert.equal(readFileSync(join(dir, 'd', 'config.json'), 'utf8'), '{}');
  assert.ok(!existsSync(join(dir, `d.old-${dead}`)) && !existsSync(join(dir, `d.tmp-${dead}`)));
  // with `d` present, a stale old copy is simply removed
  mkdirSync(join(dir, `d.old-${dead}`));
  removeStaleTemps(join(dir, 'd'));
  assert.ok(!existsSync(join(dir, `d.old-${dead}`)) && existsSync(join(dir, 'd', 'config.json')));
});
