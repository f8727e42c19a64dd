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
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { childMain, median, spawnChild, type EngineRun, type FlashMode } from './engines.js';

const self = fileURLToPath(import.meta.url);

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: {
      prompt: { type: 'string', short: 'p', default: 'def fibonacci(n):' }, n: { type: 'string', short: 'n', default: '64' },
      threads: { type: 'string', default: '2' }, runs: { type: 'string', default: '1' },
      child: { type: 'string' }, tokens: { type: 'string' }, memory: { type: 'string' }, load: { type: 'string' },
      flash: { type: 'string' }, mode: { type: 'string', default: 'ram' }, cap: { type: 'string' },
    },
    allowPositionals: true,
  });
  const model = positionals[0];
  if (!model) throw new Error('usage: dense-vs-llamacpp MODEL.gguf [-p TEXT] [-n 64] [--threads 2] [--runs 3]');
  const n = Number(values.n);
  const threads = Number(values.threads);
  if (values.child) return childMain(values, model);
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
  const { parseMemory, RUNTIME_OVERHEAD_BYTES } = await import('../src/memory/budget.js');
  const { statSync } = await import('node:fs');
  const { dropCaches } = await import('./engines.js');
  const dropped = dropCaches();
  const capBytes = values.cap ? parseMemory(values.cap, statSync(model).size) + RUNTIME_OVERHEAD_BYTES : 0;
  for (let r = 0; r < Number(values.runs); r++) {
    for (const engine of ['llama.cpp', 'flashlm'] as const) {
      const file = engine === 'flashlm' && values.flash ? values.flash : model;
      const res = spawnChild(self, { engine, model: file, prompt, n, threads, mode: values.mode as FlashMode }, capBytes);
      if (res.cgroup) process.stderr.write(`incg: limit ${res.cgroup.limit} peak ${res.cgroup.peak} oom_kills ${res.cgroup.oomKills}\n`);
      if (!res.run) throw new Error(res.error);
      runs.push(res.run);
      process.stderr.write(`${engine}: ${(1000 / res.run.msPerToken).toFixed(3)} tokens/s\n`);
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
    // each run pairs llama.cpp then flashlm back to back: the machine's noise moves both
    tokens_per_s_per_run: { flashlm: f.map((r) => 1000 / r.msPerToken), llama_cpp: l.map((r) => 1000 / r.msPerToken) },
    ratio_per_run: f.map((r, i) => l[i]!.msPerToken / r.msPerToken),
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
