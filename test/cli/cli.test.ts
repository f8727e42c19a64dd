// The CLI end to end: run/inspect/synth/convert happy paths, and the bad-input policy: a one-line
// "flashlm: ..." error naming what is wrong, a non-zero exit, and no stack trace.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { synthModelCached, testDir } from '../helpers.js';
import { GGUFWriter, GGUFValueType } from '../../src/formats/gguf.js';

const BIN = fileURLToPath(new URL('../../../bin/flashlm.cjs', import.meta.url));

function cli(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const tiny = () => synthModelCached({ layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 64, dtype: 'q8_0', act: 'silu', seed: 3, format: 'gguf' });

function assertUserError(r: { code: number; stderr: string }, pattern: RegExp): void {
  assert.equal(r.code, 1, `exit code ${r.code}, stderr: ${r.stderr}`);
  // a loaded machine may make loading slow enough (> 0.5 s) for the non-TTY progress lines to appear
  const lines = r.stderr.trim().split('\n').filter((l) => !/^loading +\d+% /.test(l));
  assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
  assert.match(lines[0]!, /^flashlm: /);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
}

test('run --json prints tokens, text and stats; --tokens and -p agree', async () => {
  const m = await tiny();
  const a = cli('run', m, '-p', 'hello world', '-n', '8', '--json');
  assert.equal(a.code, 0, a.stderr);
  const j = JSON.parse(a.stdout.trim().split('\n').pop()!) as { tokens: number[]; text: string; stats: { prompt_tokens: number; tokens_per_s: number; ms_per_token: { compute: number } } };
  assert.equal(j.tokens.length, 8);
  assert.equal(typeof j.text, 'string');
  assert.ok(j.stats.tokens_per_s > 0 && j.stats.ms_per_token.compute > 0);
  const b = cli('run', m, '-p', 'hello', '-n', '2', '--memory', '1GB', '--json');
  assert.equal(b.code, 0, b.stderr);
  assert.equal((JSON.parse(b.stdout) as { stats: { budget_bytes: number } }).stats.budget_bytes, 1e9);
  const ids = cli('run', m, '--tokens', '1,300,301', '-n', '4', '--json');
  assert.equal(ids.code, 0, ids.stderr);
  assert.equal((JSON.parse(ids.stdout) as { tokens: number[] }).tokens.length, 4);
  // same seed → same sample; sampling differs from greedy at a high temperature eventually
  const s1 = cli('run', m, '-p', 'hello', '-n', '12', '--temp', '1.5', '--seed', '7', '--json');
  const s2 = cli('run', m, '-p', 'hello', '-n', '12', '--temp', '1.5', '--seed', '7', '--json');
  assert.deepEqual(JSON.parse(s1.stdout).tokens, JSON.parse(s2.stdout).tokens);
});

test('inspect shows architecture and shapes', async () => {
  const r = cli('inspect', await tiny());
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /architecture\s+llama/);
  assert.match(r.stdout, /hidden\s+64\s+ffn 192/);
  assert.match(r.stdout, /q8_0/);
});

test('synth --format safetensors + convert gives a GGUF with the same tokens', async () => {
  const d = testDir('cli-convert');
  const hf = join(d, 'hf');
  const out = join(d, 'conv.gguf');
  const base = ['--layers', '2', '--hidden', '64', '--ffn', '128', '--heads', '4', '--kv-heads', '2', '--vocab', '300', '--ctx', '64', '--seed', '9'];
  assert.equal(cli('synth', '-o', hf, ...base, '--format', 'safetensors').code, 0);
  const gg = join(d, 'direct.gguf');
  assert.equal(cli('synth', '-o', gg, ...base).code, 0);
  const c = cli('convert', hf, '-o', out, '--quant', 'f32');
  assert.equal(c.code, 0, c.stderr);
  const run = (m: string) => (JSON.parse(cli('run', m, '-p', 'abc', '-n', '6', '--json').stdout) as { tokens: number[] }).tokens;
  assert.deepEqual(run(out), run(gg));
  assert.deepEqual(run(hf), run(gg));
});

test('convert --layout flash, inspect shows the layout, verify passes, run computes it in RAM', async () => {
  const d = testDir('cli-flash');
  const out = join(d, 'flash.gguf');
  const c = cli('convert', await tiny(), '-o', out, '--quant', 'q8_0', '--layout', 'flash');
  assert.equal(c.code, 0, c.stderr);
  assert.match(cli('inspect', out).stdout, /flash layout\s+v1: 2 layers × 192 records of 512 B/);
  const v = cli('verify', out);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /^OK /m);
  const r = cli('run', out, '-p', 'x', '-n', '4', '--json');
  assert.equal(r.code, 0, r.stderr);
  const ram = JSON.parse(r.stdout) as { tokens: number[] };
  assert.equal(ram.tokens.length, 4);
  const h = cli('run', out, '-p', 'x', '-n', '4', '--json', '--mode', 'hybrid', '--stats');
  assert.equal(h.code, 0, h.stderr);
  const hyb = JSON.parse(h.stdout) as { tokens: number[]; stats: { mode: string; bytes_read_per_token: number; ms_per_token: { io: number; compute: number } } };
  assert.deepEqual(hyb.tokens, ram.tokens);
  assert.equal(hyb.stats.mode, 'hybrid');
  assert.equal(hyb.stats.bytes_read_per_token, 2 * 192 * 512); // 2 layers × 192 records × 512 B
  const plan = (hyb.stats as unknown as { read_plan: { inFlight: number; maxReadBytes: number; source: string } }).read_plan;
  assert.ok(plan.inFlight >= 1 && plan.maxReadBytes % 4096 === 0 && plan.source.length > 0, JSON.stringify(plan));
  assert.match(h.stderr, /\[token 2\] .* ms \(io wait .*, compute .*\), read/);
  assertUserError(cli('run', await tiny(), '-p', 'x', '--mode', 'hybrid'), /flash-layout file/);
});

test('bad input: one-line errors, exit 1, no stack', async () => {
  const m = await tiny();
  const d = testDir('cli-bad');
  assertUserError(cli('run', join(d, 'nope.gguf'), '-p', 'x'), /not found.*nope\.gguf/);
  assertUserError(cli('run', m, '-p', 'x', '--bogus'), /bogus/);
  assertUserError(cli('run', m, '-p', 'x', '-n', 'ten'), /--n must be an integer/);
  assertUserError(cli('run', m, '-p', 'x', '--temp', '-1'), /--temp/);
  assertUserError(cli('run', m), /needs a prompt/);
  assertUserError(cli('run', m, '--tokens', '1,99999'), /99999/);
  assertUserError(cli('frobnicate'), /unknown command/);
  assertUserError(cli('run', m, '-p', 'x', '--memory', '1MB'), /--memory 1\.0 MB is .* too small/);
  assertUserError(cli('run', m, '-p', 'x', '--memory', 'lots'), /--memory lots/);
  // prompt + n longer than the model's context (64)
  assertUserError(cli('run', m, '-p', 'word '.repeat(80), '-n', '4'), /context/);
  // wrong magic
  const bad = join(d, 'bad.gguf');
  writeFileSync(bad, Buffer.from('GGML not a gguf file at all, just text padding padding padding'));
  assertUserError(cli('run', bad, '-p', 'x'), /bad\.gguf/);
  // truncated tensor data
  const cut = join(d, 'cut.gguf');
  copyFileSync(m, cut);
  truncateSync(cut, statSync(m).size - 1000);
  assertUserError(cli('run', cut, '-p', 'x'), /cut\.gguf/);
  // unsupported architecture
  const arch = join(d, 'arch.gguf');
  const w = new GGUFWriter(arch);
  w.addKV('general.architecture', GGUFValueType.STRING, 'mamba');
  w.finish();
  assertUserError(cli('run', arch, '-p', 'x'), /architecture 'mamba'/);
  assertUserError(cli('inspect', arch), /architecture 'mamba'/);
  assertUserError(cli('convert', m, '-o', join(d, 'x.gguf'), '--quant', 'q5_k'), /--quant/);
});
