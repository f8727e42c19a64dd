// Does `--memory` hold? Every flash mode, at several budgets, inside a cgroup memory limit.
//
//   node dist/bench/memory-cap.js [--out results.json] [--budgets 25,50,75] [--modes naive,hybrid,sparse]
//        [-n 16] [--limit-extra BYTES] [--layers 40 --hidden 1024 --ffn 8192 --heads 16] [--timeout 900]
//
// Builds once (cached under $FLASHLM_CACHE or ~/.cache/flashlm) a q8_0 synth model several times
// larger than the budgets, in the flash layout, calibrated on real text (/usr/lib/python3.11) and
// sparsified, so that all of naive, hybrid and sparse mode can run on it. Then, for each budget (a
// share of the flash file's size) and mode, runs `flashlm run FILE --mode M --memory B -n N --json`
// in a fresh child (engines.ts ioEnv: 64 threadpool threads) inside `incg LIMIT` (cgroup-v1 memory limit, which counts page
// cache too), LIMIT = B + --limit-extra (default: the stated runtime overhead, 96 MiB), after the page
// cache is dropped. Records the OOM kills, the cgroup's peak usage, the child's peak RSS and tokens/s,
// or the planner's BudgetError (a budget too small for a mode is a reported outcome, not a failure).
// Note: a cgroup's max_usage can never exceed its limit (the kernel reclaims page cache first, then
// OOM-kills), so the pass criterion is "not OOM-killed and exited 0", and peak RSS ≤ budget is the
// check on --memory itself. Table on stderr, JSON on stdout (and in --out).
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cacheDir } from '../src/formats/fsutil.js';
import { readGGUF } from '../src/formats/gguf.js';
import { RUNTIME_OVERHEAD_BYTES } from '../src/memory/budget.js';
import { dropCaches, ioEnv, type FlashMode } from './engines.js';

const BIN = fileURLToPath(new URL('../../bin/flashlm.cjs', import.meta.url)); // dist/bench → repo bin/
const INCG = fileURLToPath(new URL('../../../shared/tools/incg', import.meta.url)); // dist/bench → ../shared
const CALIB_TEXT = '/usr/lib/python3.11';
// A fixed prompt (ids < 512: the synth vocabulary), so every cell decodes the same sequence.
const PROMPT = [1, 330, 287, 415, 302, 261, 372, 40];

class BenchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BenchError';
  }
}

interface Shape { layers: number; hidden: number; ffn: number; heads: number }

interface Cell {
  mode: FlashMode;
  budget_pct: number;
  budget_bytes: number;
  cgroup_limit_bytes: number;
  cgroup_peak_bytes: number | null;
  oom_kills: number | null;
  exit: number | string | null;
  peak_rss_bytes: number | null;
  tokens_per_s: number | null;
  refused?: string; // the planner's BudgetError (one line)
  error?: string; // anything else that went wrong
  peak_within_limit: boolean | null;
  rss_within_budget: boolean | null;
  capacity_rows_per_layer?: number; // sparse: neuron-matrix rows the budget left
  tokens?: number[];
  wall_s: number;
}

/** Runs the flashlm CLI to completion (progress on our stderr); throws BenchError if it fails. */
function cli(args: string[]): void {
  process.stderr.write(`memory-cap: flashlm ${args.join(' ')}\n`);
  const r = spawnSync(process.execPath, [BIN, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new BenchError(`flashlm ${args[0]} failed (exit ${r.status ?? r.signal})`);
}

/** The flash-layout, sparsified model for `s` (built on first use; ~1.3 GB for the defaults). */
function prepare(s: Shape): string {
  const base = join(cacheDir(), `memcap-l${s.layers}-h${s.hidden}-f${s.ffn}-a${s.heads}-q8_0`);
  const flash = `${base}.flash.gguf`;
  if (!existsSync(flash)) {
    const src = `${base}.src.gguf`;
    cli(['synth', '-o', src, '--layers', String(s.layers), '--hidden', String(s.hidden), '--ffn', String(s.ffn), '--heads', String(s.heads),
      '--kv-heads', String(s.heads), '--vocab', '512', '--ctx', '256', '--dtype', 'q8_0', '--seed', '7']);
    cli(['convert', src, '-o', flash, '--quant', 'q8_0', '--layout', 'flash']);
    rmSync(src); // keep one copy on disk
  }
  if (!readGGUF(flash).tensorByName.has('blk.0.pred_a')) {
    const calib = `${base}.calib.gguf`;
    // RAM mode: 300 tokens in hybrid mode would read the whole FFN from disk 300 times
    cli(['calibrate', flash, '--text', CALIB_TEXT, '--tokens', '300', '--seq-len', '64', '-o', calib]);
    cli(['sparsify', flash, '--calib', calib, '--sparsity', '0.6', '--rank', '64']);
    rmSync(calib);
  }
  return flash;
}

function runCell(file: string, mode: FlashMode, pct: number, fileBytes: number, n: number, extra: number, timeoutS: number): Cell {
  const budget = Math.floor((fileBytes * pct) / 100);
  const limit = budget + extra;
  dropCaches();
  const t0 = performance.now();
  const r = spawnSync(INCG, [String(limit), process.execPath, BIN, 'run', file, '--mode', mode, '--memory', String(budget),
    '--tokens', PROMPT.join(','), '-n', String(n), '--json'], {
    encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutS * 1000, killSignal: 'SIGKILL',
    env: ioEnv(),
  });
  const wall = (performance.now() - t0) / 1000;
  const cg = /incg: limit (\d+) peak (\d+) oom_kills (\d+) exit (\d+)/.exec(r.stderr ?? '');
  const c: Cell = {
    mode, budget_pct: pct, budget_bytes: budget, cgroup_limit_bytes: limit,
    cgroup_peak_bytes: cg ? Number(cg[2]) : null, oom_kills: cg ? Number(cg[3]) : null,
    exit: r.status ?? r.signal ?? null, peak_rss_bytes: null, tokens_per_s: null,
    peak_within_limit: cg ? Number(cg[2]) <= limit : null, rss_within_budget: null, wall_s: Math.round(wall * 10) / 10,
  };
  if (r.status === 0) {
    try {
      const j = JSON.parse(r.stdout) as { tokens: number[]; stats: { tokens_per_s: number | null; peak_rss_bytes: number; sparse?: { capacity_rows_per_layer?: number } } };
      c.peak_rss_bytes = j.stats.peak_rss_bytes;
      c.tokens_per_s = j.stats.tokens_per_s;
      c.rss_within_budget = j.stats.peak_rss_bytes <= budget;
      c.tokens = j.tokens;
      if (j.stats.sparse?.capacity_rows_per_layer !== undefined) c.capacity_rows_per_layer = j.stats.sparse.capacity_rows_per_layer;
    } catch {
      c.error = `unparsable output: ${r.stdout.slice(0, 200)}`;
    }
    return c;
  }
  const lines = (r.stderr ?? '').split('\n').filter((x) => x.trim() && !x.startsWith('incg:'));
  const msg = lines.find((x) => x.startsWith('flashlm: ')) ?? lines[lines.length - 1] ?? '';
  // the CLI prints BudgetError as one `flashlm: --memory ... too small: ...` line and exits 1
  if (r.status === 1 && / too small: needs /.test(msg) && !c.oom_kills) c.refused = msg.replace(/^flashlm: /, '');
  else c.error = `${r.error ? `${r.error.message}; ` : ''}exit ${c.exit}${c.oom_kills ? ' (OOM-killed)' : ''}: ${msg.slice(0, 400)}`;
  return c;
}

const MB = (b: number | null) => (b === null ? '-' : (b / 2 ** 20).toFixed(0));

function table(cells: Cell[]): string {
  const head = 'mode     budget        limit MiB  cgroup peak MiB  peak RSS MiB  OOM  tokens/s  outcome';
  const rows = cells.map((c) => [
    c.mode.padEnd(8), `${String(c.budget_pct).padStart(3)}% ${MB(c.budget_bytes).padStart(5)} MiB`.padEnd(14),
    MB(c.cgroup_limit_bytes).padStart(9), MB(c.cgroup_peak_bytes).padStart(16), MB(c.peak_rss_bytes).padStart(13),
    String(c.oom_kills ?? '-').padStart(4), (c.tokens_per_s === null ? '-' : c.tokens_per_s.toFixed(2)).padStart(9),
    ` ${c.refused ? `refused: ${c.refused.slice(0, 160)}` : c.error ? `ERROR: ${c.error}` : 'ok'}${c.capacity_rows_per_layer !== undefined ? ` (capacity ${c.capacity_rows_per_layer} rows/layer)` : ''}`,
  ].join(' '));
  return [head, ...rows].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: 'string' }, budgets: { type: 'string', default: '25,50,75' }, modes: { type: 'string', default: 'naive,hybrid,sparse' },
      n: { type: 'string', short: 'n', default: '16' }, 'limit-extra': { type: 'string', default: String(RUNTIME_OVERHEAD_BYTES) },
      layers: { type: 'string', default: '40' }, hidden: { type: 'string', default: '1024' }, ffn: { type: 'string', default: '8192' },
      heads: { type: 'string', default: '16' }, timeout: { type: 'string', default: '900' },
    },
  });
  if (!existsSync(INCG)) throw new BenchError(`${INCG} not found (the cgroup wrapper this bench needs)`);
  const shape: Shape = { layers: Number(values.layers), hidden: Number(values.hidden), ffn: Number(values.ffn), heads: Number(values.heads) };
  const file = prepare(shape);
  const fileBytes = statSync(file).size;
  const f = readGGUF(file);
  const ffnBytes = f.tensors.filter((t) => t.name.endsWith('.ffn_bundle')).reduce((s, t) => s + t.bytes, 0);
  const all = f.tensors.reduce((s, t) => s + t.bytes, 0);
  const extra = Number(values['limit-extra']);
  const modes = values.modes.split(',') as FlashMode[];
  const pcts = values.budgets.split(',').map(Number);
  process.stderr.write(`memory-cap: ${file}: ${MB(fileBytes)} MiB (FFN bundles ${MB(ffnBytes)} MiB, resident in hybrid/sparse ${MB(all - ffnBytes)} MiB); ` +
    `cgroup limit = budget + ${MB(extra)} MiB\n`);
  const cells: Cell[] = [];
  for (const pct of pcts) {
    for (const mode of modes) {
      const c = runCell(file, mode, pct, fileBytes, Number(values.n), extra, Number(values.timeout));
      cells.push(c);
      process.stderr.write(`${table([c]).split('\n')[1]}  [${c.wall_s} s]\n`);
    }
  }
  process.stderr.write(`\n${table(cells)}\n`);
  const ran = cells.filter((c) => !c.refused);
  const result = {
    model: { path: file, file_bytes: fileBytes, ffn_bundle_bytes: ffnBytes, resident_bytes_hybrid: all - ffnBytes, shape, dtype: 'q8_0' },
    runtime_overhead_bytes: RUNTIME_OVERHEAD_BYTES, limit_extra_bytes: extra, tokens: Number(values.n), prompt: PROMPT,
    io: process.env.FLASHLM_IO === 'uring' ? 'io_uring' : `threadpool (UV_THREADPOOL_SIZE=${ioEnv().UV_THREADPOOL_SIZE})`, page_cache_dropped: true,
    summary: {
      cells: cells.length, refused: cells.length - ran.length, ran: ran.length,
      oom_killed: cells.filter((c) => (c.oom_kills ?? 0) > 0).length,
      failed: ran.filter((c) => c.error).length,
      rss_over_budget: ran.filter((c) => c.rss_within_budget === false).length,
    },
    cells,
  };
  const json = `${JSON.stringify(result, null, 2)}\n`;
  if (values.out) writeFileSync(values.out, json);
  process.stdout.write(json);
}

main().catch((e: unknown) => {
  process.stderr.write(`memory-cap: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
