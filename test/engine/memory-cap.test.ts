// --memory is a promise: a hybrid run on a model whose FFN is several times the budget, inside a
// cgroup-v1 memory limit (which counts page cache) of budget + nothing else, is not OOM-killed and
// finishes. Needs root and the v1 memory controller (present on our machines); skipped otherwise.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { flashLayoutCached } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';
import { readGGUF } from '../../src/formats/gguf.js';

const CG = '/sys/fs/cgroup/memory';
const BIN = fileURLToPath(new URL('../../../bin/flashlm.js', import.meta.url));
const usable = existsSync(`${CG}/cgroup.procs`) && process.getuid?.() === 0;

test('hybrid run stays inside a cgroup memory limit equal to --memory', { skip: !usable && 'needs root and cgroup-v1 memory' }, async () => {
  // 24 layers × 16 MB of FFN records (hidden 512, ffn 8192, q8_0: 2048-byte records) ≈ 400 MB of FFN
  const o: SynthOptions = { layers: 24, hidden: 512, ffn: 8192, heads: 8, kvHeads: 8, vocab: 512, ctx: 64, dtype: 'f32', act: 'silu', seed: 1, format: 'gguf' };
  const path = await flashLayoutCached(o, 'q8_0');
  const ffnBytes = readGGUF(path).tensors.filter((t) => t.name.endsWith('ffn_bundle')).reduce((s, t) => s + t.bytes, 0);
  const budget = 200e6;
  assert.ok(ffnBytes > 1.9 * budget, `FFN ${ffnBytes} B should be several times the ${budget} B budget`);
  const cg = `${CG}/flashlm-test-${process.pid}`;
  mkdirSync(cg);
  try {
    writeFileSync(`${cg}/memory.limit_in_bytes`, String(budget));
    // the child moves itself into the cgroup before node starts (counts its whole life)
    const r = spawnSync('sh', ['-c', `echo $$ > ${cg}/cgroup.procs && exec "$0" "$@"`, process.execPath, BIN, 'run', path,
      '--mode', 'hybrid', '--memory', String(budget), '-p', 'hello', '-n', '4', '--json'], { encoding: 'utf8', timeout: 120_000 });
    const oom = /oom_kill (\d+)/.exec(readFileSync(`${cg}/memory.oom_control`, 'utf8'))?.[1];
    const peak = Number(readFileSync(`${cg}/memory.max_usage_in_bytes`, 'utf8'));
    assert.equal(oom ?? '0', '0', 'OOM-killed');
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { tokens: number[]; stats: { budget_bytes: number; peak_rss_bytes: number } };
    assert.equal(j.tokens.length, 4);
    assert.equal(j.stats.budget_bytes, budget);
    assert.ok(peak <= budget, `cgroup peak ${peak} > ${budget}`);
    assert.ok(j.stats.peak_rss_bytes < budget, `peak RSS ${j.stats.peak_rss_bytes}`);
    process.stderr.write(`memory-cap: budget ${budget} cgroup peak ${peak} rss ${j.stats.peak_rss_bytes} ffn ${ffnBytes}\n`);
  } finally {
    try { writeFileSync(`${cg}/memory.force_empty`, '1'); } catch { /* best effort */ }
    rmdirSync(cg);
  }
});
