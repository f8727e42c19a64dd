// The paper's baselines against llama.cpp under the same memory cap, side by side in one run.
//
//   node dist/bench/flash-vs-llamacpp.js MODEL.gguf --flash FLASH.gguf [-p TEXT] [-n 12] [--n-naive 4]
//        [--caps 50] [--plot out.svg] [--threads 2] [--out results.json] [--sparse [--n-sparse 16]]
//
// MODEL.gguf is what llama.cpp runs (mmap); FLASH.gguf is the same weights converted with
// `flashlm convert MODEL.gguf -o FLASH.gguf --layout flash` (same quantization, FFN bundled).
// For each cap (a share of MODEL.gguf's size; default 50%, or 25/50/75/100 with --plot) every engine
// runs in its own child process inside the same cgroup-v1 limit (which counts page cache) of
// cap + flashlm's stated runtime overhead, after the page cache is dropped:
//   llama.cpp (mmap) capped, flashlm naive (every weight read per token), flashlm hybrid (resident
//   attention, whole FFN read per token), with flashlm's --memory set to the cap.
// --sparse adds flashlm sparse (FLASH.gguf must carry predictors: flashlm sparsify).
// llama.cpp also runs once uncapped (the in-RAM reference). A run that the budget planner refuses or
// the OOM killer ends is recorded with its message, not dropped. Prints JSON on stdout; --plot
// writes tokens/s vs cap as SVG.
import { statSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { childMain, spawnChild, type ChildResult, type FlashMode } from './engines.js';
import { lineChart } from './svg.js';

const self = fileURLToPath(import.meta.url);

interface Cell {
  tokens_per_s: number | null;
  ms_per_token: number | null;
  error?: string;
  peak_rss_bytes?: number;
  cgroup_peak_bytes?: number;
  oom_kills?: number;
  io_stall_ms_per_token?: number;
  bytes_read_per_token?: number;
  reads_per_token?: number;
  read_MBps?: number;
  load_ms?: number;
  tokens?: number[];
}

function cell(r: ChildResult): Cell & { memory_ms_per_token?: number; sparse?: Record<string, number> } {
  const c: Cell = { tokens_per_s: null, ms_per_token: null };
  if (r.cgroup) (c.cgroup_peak_bytes = r.cgroup.peak), (c.oom_kills = r.cgroup.oomKills);
  if (!r.run) return { ...c, error: r.error };
  const x = r.run;
  return {
    ...c, tokens_per_s: 1000 / x.msPerToken, ms_per_token: x.msPerToken, peak_rss_bytes: x.peakRssBytes, load_ms: x.loadMs,
    ...(x.bytesReadPerToken !== undefined ? {
      io_stall_ms_per_token: x.ioStallMsPerToken, bytes_read_per_token: x.bytesReadPerToken, reads_per_token: x.readsPerToken, read_MBps: x.readMBps,
      memory_ms_per_token: x.memoryMsPerToken,
    } : {}),
    ...(x.sparse ? { sparse: x.sparse } : {}),
    tokens: x.tokens,
  };
}

interface Row {
  cap_pct: number;
  budget_bytes: number;
  cgroup_limit_bytes: number;
  llama_cpp: Cell;
  flashlm_naive: Cell;
  flashlm_hybrid: Cell;
  flashlm_sparse?: Cell;
  ratios: Record<string, number | null>;
}

const ratio = (a: Cell, b: Cell) => (a.tokens_per_s && b.tokens_per_s ? a.tokens_per_s / b.tokens_per_s : null);

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: {
      prompt: { type: 'string', short: 'p', default: 'def fibonacci(n):' }, n: { type: 'string', short: 'n', default: '12' },
      'n-naive': { type: 'string', default: '4' }, threads: { type: 'string', default: '2' },
      caps: { type: 'string' }, plot: { type: 'string' }, flash: { type: 'string' }, out: { type: 'string' },
      child: { type: 'string' }, tokens: { type: 'string' }, mode: { type: 'string', default: 'ram' }, memory: { type: 'string' }, load: { type: 'string' },
      sparse: { type: 'boolean' }, 'n-sparse': { type: 'string', default: '16' },
    },
    allowPositionals: true,
  });
  const model = positionals[0];
  if (values.child) return childMain(values, model!);
  if (!model || !values.flash) throw new Error('usage: flash-vs-llamacpp MODEL.gguf --flash FLASH.gguf [-n 12] [--n-naive 4] [--caps 25,50,75,100] [--plot out.svg]');
  const n = Number(values.n);
  const nNaive = Number(values['n-naive']);
  const threads = Number(values.threads);
  const caps = (values.caps ?? (values.plot ? '25,50,75,100' : '50')).split(',').map(Number);
  const { llamaCppTokenize, closeLlamaCpp, llamaCppVersion } = await import('./llamacpp-peer.js');
  const prompt = await llamaCppTokenize(model, values.prompt!, true);
  await closeLlamaCpp();
  const { RUNTIME_OVERHEAD_BYTES } = await import('../src/memory/budget.js');
  const size = statSync(model).size;
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const show = (name: string, c: Cell) => log(`${name}: ${c.tokens_per_s ? `${c.tokens_per_s.toFixed(3)} tokens/s` : c.error}${c.cgroup_peak_bytes ? ` (cgroup peak ${(c.cgroup_peak_bytes / 1e9).toFixed(2)} GB)` : ''}`);

  const uncapped = cell(spawnChild(self, { engine: 'llama.cpp', model, prompt, n, threads, mode: 'ram' }, 0));
  show('llama.cpp uncapped', uncapped);
  const rows: Row[] = [];
  for (const pct of caps) {
    const cap = Math.floor((size * pct) / 100);
    const limit = cap + RUNTIME_OVERHEAD_BYTES;
    log(`--- cap ${pct}%: budget ${(cap / 1e9).toFixed(2)} GB, cgroup limit ${(limit / 1e9).toFixed(2)} GB`);
    const llama = cell(spawnChild(self, { engine: 'llama.cpp', model, prompt, n, threads, mode: 'ram' }, limit));
    show('llama.cpp', llama);
    const flash = (mode: FlashMode, steps: number) => cell(spawnChild(self, { engine: 'flashlm', model: values.flash!, prompt, n: steps, threads, mode, memory: cap }, limit));
    const naive = flash('naive', nNaive);
    show('flashlm naive', naive);
    const hybrid = flash('hybrid', n);
    show('flashlm hybrid', hybrid);
    const sparse = values.sparse ? flash('sparse', Number(values['n-sparse'])) : undefined;
    if (sparse) show('flashlm sparse', sparse);
    rows.push({
      cap_pct: pct, budget_bytes: cap, cgroup_limit_bytes: limit, llama_cpp: llama, flashlm_naive: naive, flashlm_hybrid: hybrid,
      ...(sparse ? { flashlm_sparse: sparse } : {}),
      ratios: {
        ...(sparse ? {
          sparse_over_llama_cpp: ratio(sparse, llama), sparse_over_llama_cpp_uncapped: ratio(sparse, uncapped), sparse_over_hybrid: ratio(sparse, hybrid),
        } : {}),
        hybrid_over_llama_cpp: ratio(hybrid, llama), naive_over_llama_cpp: ratio(naive, llama),
        hybrid_over_naive: ratio(hybrid, naive), hybrid_over_llama_cpp_uncapped: ratio(hybrid, uncapped),
      },
    });
  }
  // exactness: every flashlm run must produce llama.cpp's greedy tokens (prefix for the shorter naive runs)
  // (sparse mode is approximate by design: it is compared by perplexity, not token identity)
  const agree = rows.flatMap((r) => [r.flashlm_naive, r.flashlm_hybrid])
    .filter((c) => c.tokens && uncapped.tokens)
    .map((c) => c.tokens!.every((t, i) => t === uncapped.tokens![i]));
  const result = {
    model, flash_model: values.flash, model_bytes: size, prompt: values.prompt, prompt_tokens: prompt, n, n_naive: nNaive, threads,
    llama_cpp: llamaCppVersion(), runtime_overhead_bytes: RUNTIME_OVERHEAD_BYTES,
    llama_cpp_uncapped: uncapped, caps: rows,
    flashlm_tokens_match_llama_cpp: agree.length ? agree.every(Boolean) : null,
  };
  const json = `${JSON.stringify(result, (k, v) => (k === 'tokens' ? undefined : v), 1)}\n`;
  process.stdout.write(json);
  if (values.out) writeFileSync(values.out, json);
  if (values.plot) {
    const pts = (f: (r: Row) => Cell): [number, number][] => rows.map((r) => [r.cap_pct, f(r).tokens_per_s ?? NaN]);
    writeFileSync(values.plot, lineChart({
      title: `Decode tokens/s vs DRAM cap (${model.split('/').pop()}, ${threads} threads)`,
      xLabel: 'memory cap (% of model file)', yLabel: 'tokens/s', xFormat: (x) => `${x}%`,
      series: [
        ...(values.sparse ? [{ name: 'flashlm sparse', points: pts((r) => r.flashlm_sparse!) }] : []),
        { name: 'flashlm hybrid', points: pts((r) => r.flashlm_hybrid) },
        { name: 'flashlm naive', points: pts((r) => r.flashlm_naive) },
        { name: 'llama.cpp mmap (capped)', points: pts((r) => r.llama_cpp) },
        { name: 'llama.cpp uncapped', points: rows.map((r) => [r.cap_pct, uncapped.tokens_per_s ?? NaN]), dashed: true },
      ],
    }));
    log(`plot: ${values.plot}`);
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
