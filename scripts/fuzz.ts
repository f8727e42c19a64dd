// Fuzz harness for the parsers and the server's request validation (issue 7): `npm run fuzz [-- options]`.
//
//   node dist/scripts/fuzz.js [--target gguf,safetensors,..] [--runs 10000] [--seed 1]
//        [--slow-ms 2000] [--hang-ms 20000] [--mem-mb 64] [--out test/fixtures/fuzz] [--no-save]
//        [--json bench/results-fuzz.json]   also write the run's summary (settings, per-target figures) there
//   node dist/scripts/fuzz.js --replay [--record]     run the saved fixtures (--record: write expected.json)
//
// Each target runs in a child process (a failed huge allocation aborts a whole process, worker threads
// included); the parent watches a heartbeat (the index of the input being parsed) and kills a child
// that stays on one input longer than --hang-ms (a hang), or records a child that dies (out of memory,
// crash); the run then resumes after that input. Inputs
// that throw anything but the project's typed errors, take longer than --slow-ms, or grow memory by
// more than --mem-mb are failures. The first (smallest) input of every distinct failure (kind, error
// name, first project stack frame) is saved under <out>/<target>/<kind>-<hash>/ for
// test/fuzz/regressions.test.ts. One JSON summary line per target goes to stdout.

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fork } from 'node:child_process';
import {
  runInputs, runOne, setSeedDir, targetByName, TARGETS, type Failure, type Files, type Outcome, type Summary,
} from './fuzz-targets.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/scripts/ → repo root

interface WorkerJob {
  target: string; seed: number; start: number; count: number; seedDir: string; dir: string;
  slowMs: number; memLimitBytes: number;
}

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : dflt;
}
const flag = (name: string): boolean => process.argv.includes(`--${name}`);

function readFiles(dir: string): Files {
  const out: Files = {};
  if (!fs.existsSync(dir)) return out;
  for (const f of fs.readdirSync(dir)) out[f] = fs.readFileSync(path.join(dir, f));
  return out;
}
const sizeOf = (files: Files): number => Object.values(files).reduce((a, b) => a + b.length, 0);

/** Runs inputs [0, runs) of one target in workers, restarting after hangs and crashes. */
async function fuzzTarget(target: string, o: { runs: number; seed: number; slowMs: number; hangMs: number; memLimitBytes: number; work: string }):
  Promise<{ summary: Summary; failures: Failure[] }> {
  const failures: Failure[] = [];
  const agg = { inputs: 0, ok: 0, failures: 0, typedErrors: {} as Record<string, number>, maxMs: 0, maxMemGrowthBytes: 0 };
  const t0 = Date.now();
  const dir = path.join(o.work, `input-${target}`);
  let start = 0;
  while (start < o.runs) {
    const job: WorkerJob = { target, seed: o.seed, start, count: o.runs - start, seedDir: path.join(o.work, 'seeds'), dir,
      slowMs: o.slowMs, memLimitBytes: o.memLimitBytes };
    // a child process, not a worker thread: a failed huge allocation aborts the whole process
    const w = fork(fileURLToPath(import.meta.url), ['--child'], {
      execArgv: ['--max-old-space-size=1024'], serialization: 'advanced', stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    let stderr = '';
    w.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000); });
    w.send(job);
    const end = await new Promise<{ kind: 'done' | 'hang' | 'crash'; at: number; error?: string }>((resolve) => {
      let cur = -1, since = Date.now(), settled = false;
      const finish = (v: { kind: 'done' | 'hang' | 'crash'; at: number; error?: string }): void => {
        if (settled) return;
        settled = true;
        clearInterval(timer);
        resolve(v);
      };
      const timer = setInterval(() => {
        if (cur >= 0 && Date.now() - since > o.hangMs) {
          finish({ kind: 'hang', at: cur });
          w.kill('SIGKILL');
        }
      }, 200);
      w.on('message', (m: { type: string; i?: number; f?: Failure; s?: Summary }) => {
        if (m.type === 'at') {
          cur = m.i!;
          since = Date.now();
        } else if (m.type === 'failure') {
          const f = m.f!;
          for (const k of Object.keys(f.files)) f.files[k] = Buffer.from(f.files[k]!);
          failures.push(f);
        } else if (m.type === 'done') {
          const s = m.s!;
          agg.inputs += s.inputs; agg.ok += s.ok; agg.failures += s.failures;
          for (const [k, v] of Object.entries(s.typedErrors)) agg.typedErrors[k] = (agg.typedErrors[k] ?? 0) + v;
          agg.maxMs = Math.max(agg.maxMs, s.maxMs);
          agg.maxMemGrowthBytes = Math.max(agg.maxMemGrowthBytes, s.maxMemGrowthBytes);
        } else if (m.type === 'end') {
          finish({ kind: 'done', at: o.runs });
          w.kill();
        }
      });
      w.on('exit', (code, sig) => {
        const last = stderr.split('\n').filter((l) => /FATAL|Error|error/.test(l)).slice(0, 2).join(' | ');
        finish({ kind: 'crash', at: cur, error: `child exited (code ${code}, signal ${sig})${last ? `: ${last}` : ''}` });
      });
    });
    if (end.kind === 'done') break;
    // the input being parsed is still in `dir`
    const at = Math.max(end.at, start);
    const f: Failure = { target, index: at, kind: end.kind, error: end.kind === 'hang' ? `no progress for ${o.hangMs} ms` : end.error ?? 'crash',
      where: '', ms: end.kind === 'hang' ? o.hangMs : 0, memBytes: 0, files: readFiles(dir) };
    failures.push(f);
    agg.inputs += 1;
    agg.failures += 1;
    if (end.kind === 'hang') agg.maxMs = Math.max(agg.maxMs, o.hangMs);
    process.stderr.write(`fuzz ${target}: ${end.kind} at input ${at} (${f.error}); resuming\n`);
    start = at + 1;
  }
  const sigs = new Set(failures.map(signature));
  const summary: Summary = { target, inputs: agg.inputs, failures: agg.failures, distinctFailures: sigs.size, ok: agg.ok,
    typedErrors: agg.typedErrors, maxMs: Math.round(agg.maxMs * 10) / 10, maxMemGrowthBytes: agg.maxMemGrowthBytes, seconds: (Date.now() - t0) / 1000 };
  return { summary, failures };
}

const signature = (f: Failure): string => `${f.kind}|${f.error.split(':')[0]}|${f.where.replace(/:\d+\)?$/, '')}`;

/** Saves the smallest input of every distinct failure; returns the case names written. */
function saveFailures(outDir: string, failures: Failure[], seed: number): string[] {
  const best = new Map<string, Failure>();
  for (const f of failures) {
    const s = signature(f);
    const b = best.get(s);
    if (!b || sizeOf(f.files) < sizeOf(b.files)) best.set(s, f);
  }
  const written: string[] = [];
  for (const f of best.values()) {
    const h = createHash('sha256');
    for (const [n, b] of Object.entries(f.files).sort()) h.update(n).update(b);
    const name = `${f.kind}-${h.digest('hex').slice(0, 10)}`;
    const dir = path.join(outDir, f.target, name);
    fs.mkdirSync(dir, { recursive: true });
    for (const [n, b] of Object.entries(f.files)) fs.writeFileSync(path.join(dir, n), b);
    const foundPath = path.join(outDir, f.target, 'found.json');
    const found = fs.existsSync(foundPath) ? JSON.parse(fs.readFileSync(foundPath, 'utf8')) as Record<string, unknown> : {};
    found[name] = { kind: f.kind, error: f.error, where: f.where, seed, index: f.index, ms: Math.round(f.ms), memBytes: f.memBytes };
    fs.writeFileSync(foundPath, JSON.stringify(found, null, 2) + '\n');
    written.push(`${f.target}/${name}`);
  }
  return written;
}

/** Case directories of the saved fixtures of one target. */
export function fixtureCases(outDir: string, target: string): string[] {
  const d = path.join(outDir, target);
  if (!fs.existsSync(d)) return [];
  return fs.readdirSync(d).filter((n) => fs.statSync(path.join(d, n)).isDirectory()).sort();
}

const outcomeName = (r: Outcome): string => (r.ok ? 'ok' : r.name);

function replay(outDir: string, record: boolean): number {
  let bad = 0;
  setSeedDir(path.join(os.tmpdir(), `flashlm-fuzz-seeds-${process.pid}`));
  for (const t of TARGETS) {
    const cases = fixtureCases(outDir, t.name);
    if (!cases.length) continue;
    const expected: Record<string, string> = {};
    for (const c of cases) {
      const r = runOne(t, path.join(outDir, t.name, c));
      const typed = r.ok || r.typed;
      if (!typed) bad++;
      expected[c] = outcomeName(r);
      console.log(JSON.stringify({ target: t.name, case: c, outcome: outcomeName(r), typed, ...(r.ok ? {} : { message: r.message.slice(0, 200) }) }));
    }
    if (record && bad === 0) fs.writeFileSync(path.join(outDir, t.name, 'expected.json'), JSON.stringify(expected, null, 2) + '\n');
  }
  if (record && bad) console.error(`fuzz --replay --record: ${bad} fixtures still fail with an untyped error; expected.json not written for them`);
  return bad ? 1 : 0;
}

async function main(): Promise<void> {
  const outDir = path.resolve(ROOT, arg('out', 'test/fixtures/fuzz'));
  if (flag('replay')) {
    process.exitCode = replay(outDir, flag('record'));
    return;
  }
  const targets = arg('target', TARGETS.map((t) => t.name).join(',')).split(',');
  for (const t of targets) targetByName(t);
  const runs = Number(arg('runs', '10000'));
  const seed = Number(arg('seed', '1'));
  const o = {
    runs, seed, slowMs: Number(arg('slow-ms', '2000')), hangMs: Number(arg('hang-ms', '20000')),
    memLimitBytes: Number(arg('mem-mb', '64')) * 2 ** 20,
    work: fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'flashlm-fuzz-')),
  };
  const all: Summary[] = [];
  let saved: string[] = [];
  const t0 = Date.now();
  try {
    for (const t of targets) {
      const { summary, failures } = await fuzzTarget(t, o);
      all.push(summary);
      console.log(JSON.stringify(summary));
      if (!flag('no-save') && failures.length) saved = saved.concat(saveFailures(outDir, failures, seed));
    }
  } finally {
    fs.rmSync(o.work, { recursive: true, force: true });
  }
  const total = all.reduce((a, s) => a + s.failures, 0);
  const totals = { targets: all.length, inputs: all.reduce((a, s) => a + s.inputs, 0), failures: total, saved };
  console.log(JSON.stringify({ total: totals }));
  const json = arg('json', '');
  if (json) {
    // the committed record of a campaign (README "Fuzzing"): what ran, where, with which limits
    const out = {
      date: new Date().toISOString().slice(0, 10), command: `node dist/scripts/fuzz.js ${process.argv.slice(2).join(' ')}`.trim(),
      seed, runsPerTarget: runs, limits: { slowMs: o.slowMs, hangMs: o.hangMs, memGrowthMiB: o.memLimitBytes / 2 ** 20 },
      node: process.version, cpus: os.cpus().length, loadavg1AtEnd: Math.round(os.loadavg()[0]! * 100) / 100,
      wallSeconds: Math.round((Date.now() - t0) / 100) / 10, total: totals, targets: all,
    };
    fs.writeFileSync(path.resolve(process.cwd(), json), JSON.stringify(out, null, 2) + '\n');
  }
  process.exitCode = total ? 1 : 0;
}

if (process.argv.includes('--child')) {
  process.once('message', (job: WorkerJob) => {
    setSeedDir(job.seedDir);
    const t = targetByName(job.target);
    void (async () => {
      // one input at a time: the heartbeat ('at') reaches the parent before the input is parsed, the
      // outcome ('done') after
      for (let i = job.start; i < job.start + job.count; i++) {
        process.send!({ type: 'at', i });
        await new Promise((r) => setImmediate(r));
        const { failureList: _, ...s } = runInputs(t, {
          seed: job.seed, start: i, count: 1, dir: job.dir, slowMs: job.slowMs, memLimitBytes: job.memLimitBytes,
          onFailure: (f) => process.send!({ type: 'failure', f }),
        });
        process.send!({ type: 'done', s });
      }
      process.send!({ type: 'end' });
    })();
  });
} else {
  await main();
}
