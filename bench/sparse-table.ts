// The paper's Table 2 on our machine: what each technique buys, side by side in one run under one
// memory cap. Every setting runs in its own child process inside the same cgroup-v1 limit (budget +
// stated runtime overhead), page cache dropped first:
//   naive       every weight read from flash per token
//   hybrid      attention resident, whole FFN read per token
//   +predictor  sparse: predicted neurons only, nothing kept between tokens (window 0)
//   +windowing  sparse: neurons used in the last --window tokens stay in DRAM (default 5)
//   +collapse   +windowing with Ripple's access collapse at the disk profile's threshold
// Bundling is always on in our file format (one read per neuron record), so there is no
// "without bundling" row. Prints JSON (bytes and reads per token, ms per token split into I/O wait,
// memory management and compute, tokens/s); --plot writes the ms split as SVG.
//
//   node dist/bench/sparse-table.js FLASH.gguf [--cap 50] [--cap-of MODEL.gguf] [-n 12] [--n-naive 3] [--window 5] [--plot out.svg]
// --oracle ORACLE.gguf (sparsify --predictor gate --pred-type q8_0 --exact-cutoff: predicts exactly
// the active set) adds an 'oracle' row: the same window and matrix capacity as '+windowing', the
// same tokens (teacher-forced to that row's output), no cap (its q8_0 gate copy needs 2.8 GB at
// 13B): the bytes a perfect predictor reads, the yardstick of the issue's "≤ 1.25× the oracle".
// --cap-of: the cap is a share of that file's size (the plain GGUF llama.cpp runs, as in
// flash-vs-llamacpp) rather than of FLASH.gguf, which grows by its predictors.
import { statSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { childMain, spawnChild, type FlashMode } from './engines.js';
import { stackedBars } from './svg.js';

const self = fileURLToPath(import.meta.url);

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: {
      prompt: { type: 'string', short: 'p', default: 'def fibonacci(n):' }, n: { type: 'string', short: 'n', default: '12' },
      'n-naive': { type: 'string', default: '3' }, threads: { type: 'string', default: '2' }, cap: { type: 'string', default: '50' },
      window: { type: 'string', default: '5' }, 'cap-of': { type: 'string' }, plot: { type: 'string' }, out: { type: 'string' }, only: { type: 'string' },
      oracle: { type: 'string' }, force: { type: 'string' }, child: { type: 'string' }, tokens: { type: 'string' }, mode: { type: 'string', default: 'ram' }, memory: { type: 'string' }, load: { type: 'string' },
    },
    allowPositionals: true,
  });
  const model = positionals[0];
  if (values.child) return childMain(values, model!);
  if (!model) throw new Error('usage: sparse-table FLASH.gguf [--cap 50] [-n 12] [--window 5] [--plot out.svg]');
  const { RUNTIME_OVERHEAD_BYTES } = await import('../src/memory/budget.js');
  const { readGGUF } = await import('../src/formats/gguf.js');
  const { tokenizerFromGGUF } = await import('../src/tokenizer/index.js');
  const prompt = tokenizerFromGGUF(readGGUF(model).metadata).encode(values.prompt!);
  const size = statSync(values['cap-of'] ?? model).size;
  const pct = Number(values.cap);
  const cap = Math.floor((size * pct) / 100);
  const limit = cap + RUNTIME_OVERHEAD_BYTES;
  const n = Number(values.n);
  const threads = Number(values.threads);
  const window = Number(values.window);
  type Setting = { name: string; mode: FlashMode; n: number; load?: Record<string, unknown> };
  const all: Setting[] = [
    { name: 'naive', mode: 'naive', n: Number(values['n-naive']) },
    { name: 'hybrid', mode: 'hybrid', n },
    { name: '+predictor', mode: 'sparse', n, load: { window: 0, collapseGap: 0 } },
    { name: '+windowing', mode: 'sparse', n, load: { window, collapseGap: 0 } },
    { name: '+collapse', mode: 'sparse', n, load: { window } },
  ];
  const settings = all.filter((s) => !values.only || values.only.split(',').includes(s.name));
  const rows = [];
  for (const s of settings) {
    const r = spawnChild(self, { engine: 'flashlm', model, prompt, n: s.n, threads, mode: s.mode, memory: cap, ...(s.load ? { load: s.load } : {}) }, limit);
    const x = r.run;
    const ms = x?.msPerToken ?? NaN;
    const io = x?.ioStallMsPerToken ?? NaN;
    const mm = x?.memoryMsPerToken ?? 0;
    const row = {
      setting: s.name, mode: s.mode, load: s.load ?? {}, error: r.error, tokens_per_s: x ? 1000 / ms : null,
      ms_per_token: x ? { total: ms, io, memory: mm, compute: ms - io - mm } : null,
      bytes_read_per_token: x?.bytesReadPerToken ?? null, reads_per_token: x?.readsPerToken ?? null, read_MBps: x?.readMBps ?? null,
      peak_rss_bytes: x?.peakRssBytes ?? null, cgroup_peak_bytes: r.cgroup?.peak ?? null, oom_kills: r.cgroup?.oomKills ?? null,
      capacity: x?.capacity, tokens: x?.tokens,
      ...(x?.sparse ? { sparse_per_token: x.sparse } : {}),
    };
    rows.push(row);
    process.stderr.write(`${s.name}: ${row.tokens_per_s ? `${row.tokens_per_s.toFixed(3)} tokens/s, ${((row.bytes_read_per_token ?? 0) / 1e6).toFixed(0)} MB read/token` : r.error}\n`);
  }
  const win = rows.find((r) => r.setting === '+windowing');
  if (values.oracle && win?.capacity && win.tokens) {
    const load = { window, collapseGap: 0, neuronCapacity: win.capacity };
    const r = spawnChild(self, { engine: 'flashlm', model: values.oracle, prompt, n, threads, mode: 'sparse', load, force: win.tokens }, 0);
    const x = r.run;
    rows.push({
      setting: 'oracle', mode: 'sparse', load, error: r.error, tokens_per_s: null, ms_per_token: null,
      bytes_read_per_token: x?.bytesReadPerToken ?? null, reads_per_token: x?.readsPerToken ?? null, read_MBps: x?.readMBps ?? null,
      peak_rss_bytes: x?.peakRssBytes ?? null, cgroup_peak_bytes: null, oom_kills: null, capacity: x?.capacity, tokens: x?.tokens,
      ...(x?.sparse ? { sparse_per_token: x.sparse } : {}),
    });
    process.stderr.write(`oracle: ${x ? `${((x.bytesReadPerToken ?? 0) / 1e6).toFixed(0)} MB read/token` : r.error}\n`);
  }
  const oracle = rows.find((r) => r.setting === 'oracle')?.bytes_read_per_token;
  const hybrid = rows.find((r) => r.setting === 'hybrid');
  const result = {
    model, model_bytes: size, cap_pct: pct, budget_bytes: cap, cgroup_limit_bytes: limit, prompt: values.prompt, n, threads, window, rows,
    bytes_ratio_hybrid_over: Object.fromEntries(rows.filter((r) => r.bytes_read_per_token).map((r) => [r.setting, (hybrid?.bytes_read_per_token ?? NaN) / r.bytes_read_per_token!])),
    ...(oracle ? { bytes_ratio_over_oracle: Object.fromEntries(rows.filter((r) => r.bytes_read_per_token && r.mode === 'sparse').map((r) => [r.setting, r.bytes_read_per_token! / oracle])) } : {}),
  };
  const json = `${JSON.stringify(result, null, 1)}\n`;
  process.stdout.write(json);
  if (values.out) writeFileSync(values.out, json);
  if (values.plot) {
    writeFileSync(values.plot, stackedBars({
      title: `ms per token at a ${pct}% cap (${model.split('/').pop()})`, yLabel: 'ms per token', partNames: ['I/O wait', 'memory mgmt', 'compute'],
      groups: rows.map((r) => ({ name: r.setting, parts: r.ms_per_token ? [r.ms_per_token.io, r.ms_per_token.memory, r.ms_per_token.compute] : [] })),
    }));
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
