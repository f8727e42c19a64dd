// --memory is a promise: naive and hybrid runs on a model whose FFN is over 3× the budget, each
// inside a cgroup-v1 memory limit (which counts page cache) of the budget and nothing else, are not
// OOM-killed, finish, stay under the budget, and produce the tokens of the in-RAM engine. Needs
// root and the v1 memory controller (present on our machines); skipped otherwise.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { flashLayoutCached } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';
import { readGGUF } from '../../src/formats/gguf.js';

const CG = '/sys/fs/cgroup/memory';
const BIN = fileURLToPath(new URL('../../../bin/flashlm.cjs', import.meta.url));
const usable = existsSync(`${CG}/cgroup.procs`) && process.getuid?.() === 0;

// Shape: the budget cannot go below the fixed runtime part (96 MiB) plus the flash read slots (two
// per arena, each a whole layer's FFN), so the FFN is made large in total but small per layer:
// 96 layers × 8192 records of 512 B (hidden 128, q8_0: 3 × 136 B padded) = 4.2 MB per layer,
// 403 MB in all, over 3× a 130 MB budget (the planner wants ~125 MB for hybrid, ~122 MB for
// naive). The synth source is q8_0 so the first run writes ~320 MB for it, not 1.2 GB of f32.
const o: SynthOptions = { layers: 96, hidden: 128, ffn: 8192, heads: 4, kvHeads: 4, vocab: 512, ctx: 64, dtype: 'q8_0', act: 'silu', seed: 1, format: 'gguf' };
const BUDGET = 130e6;
// BOS and four greedy tokens: 4 forward passes, each reading the whole FFN from disk. This prompt
// gives four different tokens (41, 304, 470, 304; top-2 logit gaps 0.07–1.1), so a slip anywhere
// shows; others repeat one token on this deep synth model.
const RUN = ['--tokens', '1', '-n', '4', '--json'];

interface RunJson { tokens: number[]; stats: { budget_bytes: number | null; peak_rss_bytes: number; bytes_read_per_token: number; mode: string } }

let prepared: Promise<{ path: string; ffnBytes: number; ramTokens: number[] }> | undefined;
/** The model (built once per machine, cached) and the in-RAM engine's tokens (uncapped run). */
function prepare(): Promise<{ path: string; ffnBytes: number; ramTokens: number[] }> {
  prepared ??= (async () => {
    const path = await flashLayoutCached(o, 'q8_0');
    const ffnBytes = readGGUF(path).tensors.filter((t) => t.name.endsWith('ffn_bundle')).reduce((s, t) => s + t.bytes, 0);
    const r = spawnSync(process.execPath, [BIN, 'run', path, '--mode', 'ram', ...RUN], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    const ramTokens = (JSON.parse(r.stdout) as RunJson).tokens;
    assert.equal(ramTokens.length, 4);
    return { path, ffnBytes, ramTokens };
  })();
  return prepared;
}

for (const mode of ['hybrid', 'naive'] as const) {
  test(`${mode} run stays inside a cgroup memory limit equal to --memory, FFN > 3× the budget, same tokens as RAM`, { skip: !usable && 'needs root and cgroup-v1 memory' }, async () => {
    const { path, ffnBytes, ramTokens } = await prepare();
    assert.ok(ffnBytes >= 3 * BUDGET, `FFN ${ffnBytes} B should be at least 3× the ${BUDGET} B budget`);
    const cg = `${CG}/flashlm-test-${process.pid}-${mode}`;
    mkdirSync(cg);
    try {
      writeFileSync(`${cg}/memory.limit_in_bytes`, String(BUDGET));
      // the child moves itself into the cgroup before node starts (counts its whole life)
      const t0 = performance.now();
      const r = spawnSync('sh', ['-c', `echo $$ > ${cg}/cgroup.procs && exec "$0" "$@"`, process.execPath, BIN, 'run', path,
        '--mode', mode, '--memory', String(BUDGET), ...RUN], { encoding: 'utf8', timeout: 120_000 });
      const wall = (performance.now() - t0) / 1000;
      const oom = /oom_kill (\d+)/.exec(readFileSync(`${cg}/memory.oom_control`, 'utf8'))?.[1];
      const peak = Number(readFileSync(`${cg}/memory.max_usage_in_bytes`, 'utf8'));
      assert.equal(oom ?? '0', '0', 'OOM-killed');
      assert.equal(r.status, 0, r.stderr);
      const j = JSON.parse(r.stdout) as RunJson;
      assert.equal(j.stats.mode, mode);
      assert.equal(j.stats.budget_bytes, BUDGET);
      assert.deepEqual(j.tokens, ramTokens, 'tokens of the in-RAM engine');
      // the FFN really came from disk on every pass (nothing of it could be kept at this budget)
      assert.ok(j.stats.bytes_read_per_token >= ffnBytes, `read ${j.stats.bytes_read_per_token} B per token < FFN ${ffnBytes} B`);
      // a cgroup's usage never exceeds its limit (the kernel reclaims page cache, then OOM-kills), so
      // this holds whenever the run was not killed; peak RSS ≤ budget is the check on --memory itself
      assert.ok(peak <= BUDGET, `cgroup peak ${peak} > ${BUDGET}`);
      assert.ok(j.stats.peak_rss_bytes <= BUDGET, `peak RSS ${j.stats.peak_rss_bytes} > budget ${BUDGET}`);
      process.stderr.write(`memory-cap ${mode}: budget ${BUDGET} cgroup peak ${peak} rss ${j.stats.peak_rss_bytes} ffn ${ffnBytes} ` +
        `read/token ${j.stats.bytes_read_per_token} wall ${wall.toFixed(1)} s tokens ${j.tokens.join(',')}\n`);
    } finally {
      try { writeFileSync(`${cg}/memory.force_empty`, '1'); } catch { /* best effort */ }
      rmdirSync(cg);
    }
  });
}
