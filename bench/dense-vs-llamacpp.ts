// Dense in-RAM decode speed and greedy agreement: flashlm vs llama.cpp (node-llama-cpp), same GGUF,
// same prompt token ids, same thread count, one run of this script, each engine in its own child
// process (so neither holds memory while the other runs). Prints JSON on stdout.
//
//   node dist/bench/dense-vs-llamacpp.js MODEL.gguf [-p TEXT] [-n 64] [--threads 2] [--runs 3]
//        [--flash FLASH.gguf --mode hybrid] [--cap 50%]
// --flash/--mode: flashlm runs the flash-layout file in that mode (llama.cpp keeps MODEL.gguf).
// --cap: both children run inside the same cgroup-v1 memory limit (counts page cache), via
// ../shared/tools/incg, at that share of MODEL.gguf's size plus flashlm's stated runtime overhead.
//
// Page cache: dropped before each child when running as root (echo 3 > /proc/sys/vm/drop_caches),
// so neither engine starts with the other's pages. Decode speed is measured after the prompt, when
// both engines have all weights in memory (flashlm reads them into arenas; llama.cpp mmaps them).
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

interface EngineRun {
  engine: string;
  tokens: number[];
  msPerToken: number;
  promptMs: number;
  loadMs: number;
  peakRssBytes: number;
  logits?: number[][]; // first steps' top-2 logits for margin analysis
  ioStallMsPerToken?: number;
  bytesReadPerToken?: number;
  readMBps?: number; // flash bytes / summed read wall time
}

const self = fileURLToPath(import.meta.url);
const INCG = fileURLToPath(new URL('../../../shared/tools/incg', import.meta.url)); // dist/bench → ../shared

function dropCaches(): boolean {
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    return true;
  } catch {
    return false;
  }
}

function top2(l: ArrayLike<number>): number[] {
  let a = -1, b = -1;
  for (let i = 0; i < l.length; i++) {
    if (a < 0 || l[i]! > l[a]!) (b = a), (a = i);
    else if (b < 0 || l[i]! > l[b]!) b = i;
  }
  return [a, l[a]!, b, l[b]!];
}

async function child(engine: string, model: string, prompt: number[], n: number, threads: number, mode: 'ram' | 'hybrid'): Promise<EngineRun> {
  const t0 = performance.now();
  if (engine === 'llama.cpp') {
    const { llamaCppGreedy, closeLlamaCpp } = await import('./llamacpp-peer.js');
    const r = await llamaCppGreedy(model, prompt, n, { threads, ctx: prompt.length + n + 1, logits: true });
    await closeLlamaCpp();
    return {
      engine, tokens: r.tokens, msPerToken: r.msPerToken, promptMs: r.promptMs, loadMs: performance.now() - t0 - r.promptMs - r.msPerToken * (n - 1),
      peakRssBytes: process.resourceUsage().maxRSS * 1024, logits: r.logits!.map(top2),
    };
  }
  const { Model } = await import('../src/engine/model.js');
  const { argmax } = await import('../src/engine/sample.js');
  const m = await Model.load(model, { threads, ctx: prompt.length + n + 1, mode });
  const loadMs = performance.now() - t0;
  const t1 = performance.now();
  let l = await m.prefillAsync(prompt);
  const tokens: number[] = [];
  const logits: number[][] = [];
  let tFirst = 0;
  for (let i = 0; i < n; i++) {
    logits.push(top2(l));
    const t = argmax(l);
    tokens.push(t);
    if (i === 0) tFirst = performance.now();
    if (i + 1 < n) l = await m.decodeAsync(t);
  }
  const tEnd = performance.now();
  const io = m.ffnSource?.stats;
  const passes = m.times.decoded + m.times.prefilled;
  await m.close();
  return {
    engine, tokens, msPerToken: (tEnd - tFirst) / (n - 1), promptMs: tFirst - t1, loadMs, peakRssBytes: process.resourceUsage().maxRSS * 1024, logits,
    ...(io ? { ioStallMsPerToken: m.times.ioStallMs / passes, bytesReadPerToken: io.bytes / passes, readMBps: io.bytes / 1e3 / io.ioMs } : {}),
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: {
      prompt: { type: 'string', short: 'p', default: 'def fibonacci(n):' }, n: { type: 'string', short: 'n', default: '64' },
      threads: { type: 'string', default: '2' }, runs: { type: 'string', default: '1' },
      child: { type: 'string' }, tokens: { type: 'string' },
      flash: { type: 'string' }, mode: { type: 'string', default: 'ram' }, cap: { type: 'string' },
    },
    allowPositionals: true,
  });
  const model = positionals[0];
  if (!model) throw new Error('usage: dense-vs-llamacpp MODEL.gguf [-p TEXT] [-n 64] [--threads 2] [--runs 3]');
  const n = Number(values.n);
  const threads = Number(values.threads);
  if (values.child) {
    const r = await child(values.child, model, values.tokens!.split(',').map(Number), n, threads, values.mode === 'hybrid' ? 'hybrid' : 'ram');
    process.stdout.write(JSON.stringify(r));
    return;
  }
  const { llamaCppTokenize, closeLlamaCpp, llamaCppVersion } = await import('./llamacpp-peer.js');
  const prompt = await llamaCppTokenize(model, values.prompt!, true);
  await closeLlamaCpp();
  // flashlm's own tokenization of the same text, for the record (the runs use llama.cpp's ids)
  let flashTok: number[] | undefined;
  try {
    const { readGGUF } = await import('../src/formats/gguf.js');
    const { tokenizerFromGGUF } = await import('../src/tokenizer/index.js');
    flashTok = tokenizerFromGGUF(readGGUF(model).metadata).encode(values.prompt!);
  } catch { /* reported as undefined */ }
  const runs: EngineRun[] = [];
  let dropped = false;
  const { parseMemory, RUNTIME_OVERHEAD_BYTES } = await import('../src/memory/budget.js');
  const { statSync } = await import('node:fs');
  const capBytes = values.cap ? parseMemory(values.cap, statSync(model).size) + RUNTIME_OVERHEAD_BYTES : 0;
  for (let r = 0; r < Number(values.runs); r++) {
    for (const engine of ['llama.cpp', 'flashlm']) {
      dropped = dropCaches();
      const file = engine === 'flashlm' && values.flash ? values.flash : model;
      const args = [self, file, '--child', engine, '--tokens', prompt.join(','), '-n', String(n), '--threads', String(threads), '--mode', values.mode!];
      const cmd = capBytes ? [INCG, String(capBytes), process.execPath, ...args] : [process.execPath, ...args];
      const out = spawnSync(cmd[0]!, cmd.slice(1), {
        encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, UV_USE_IO_URING: '1' },
      });
      process.stderr.write(out.stderr.split('\n').filter((x) => /incg:|Error/.test(x)).join('\n') + '\n');
      if (out.status !== 0) throw new Error(`${engine} child failed with status ${out.status}`);
      runs.push(JSON.parse(out.stdout) as EngineRun);
      process.stderr.write(`${engine}: ${(1000 / runs[runs.length - 1]!.msPerToken).toFixed(3)} tokens/s\n`);
    }
  }
  const by = (e: string) => runs.filter((r) => r.engine === e);
  const f = by('flashlm');
  const l = by('llama.cpp');
  const tps = (rs: EngineRun[]) => median(rs.map((r) => 1000 / r.msPerToken));
  const ft = f[0]!.tokens;
  const lt = l[0]!.tokens;
  const firstDiff = ft.findIndex((t, i) => t !== lt[i]);
  const margins = l[0]!.logits!.map((x) => x[1]! - x[3]!);
  const result = {
    model, prompt: values.prompt, prompt_tokens: prompt, flashlm_prompt_tokens: flashTok,
    tokenization_identical: flashTok ? flashTok.join(',') === prompt.join(',') : null,
    n, threads, runs: Number(values.runs), page_cache_dropped: dropped, llama_cpp: llamaCppVersion(),
    flashlm_model: values.flash ?? model, flashlm_mode: values.mode, cap_bytes: capBytes || null,
    flashlm_io: f.map((r) => ({ ioStallMsPerToken: r.ioStallMsPerToken, bytesReadPerToken: r.bytesReadPerToken, readMBps: r.readMBps })),
    tokens_per_s: { flashlm: tps(f), llama_cpp: tps(l) },
    ratio_flashlm_over_llama_cpp: tps(f) / tps(l),
    prompt_ms: { flashlm: median(f.map((r) => r.promptMs)), llama_cpp: median(l.map((r) => r.promptMs)) },
    peak_rss_bytes: { flashlm: Math.max(...f.map((r) => r.peakRssBytes)), llama_cpp: Math.max(...l.map((r) => r.peakRssBytes)) },
    greedy_identical: firstDiff < 0,
    first_divergence: firstDiff < 0 ? null : {
      step: firstDiff, flashlm: f[0]!.logits![firstDiff], llama_cpp: l[0]!.logits![firstDiff],
      llama_cpp_margin_top1_top2: margins[firstDiff],
    },
    min_llama_cpp_margin: Math.min(...margins),
    tokens: { flashlm: ft, llama_cpp: lt },
  };
  process.stdout.write(`${JSON.stringify(result, null, 1)}\n`);
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
