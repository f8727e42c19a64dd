// `flashlm eval MODEL --ppl FILE|DIR... [--ctx 512] [--tokens N] [--mode ...] [--memory ...] [--json]`
import { perplexity } from '../engine/eval.js';
import { fileSize } from '../formats/fsutil.js';
import { parseMemory } from '../memory/budget.js';
import { Progress } from './progress.js';
import { intFlag, optIntFlag, parse, strFlag, UsageError } from './main.js';

const USAGE = `usage: flashlm eval MODEL --ppl FILE|DIR [FILE|DIR...] [--ctx 512] [--tokens N] [--mode ram|hybrid|naive|sparse]
                    [--memory 8GB|50%] [--thresholds] [--window K] [--capacity ROWS] [--stream-rows R] [--threads N] [--json]
Perplexity over the text (chunks of --ctx tokens, every position after the first scored). Use text
that calibration did not see. --thresholds applies the file's sparsity thresholds in ram/hybrid/naive
mode (the exact gate: the threshold's own effect, without predictor misses).
`;

export async function cmdEval(argv: string[]): Promise<number> {
  const { flags, positionals } = parse(argv, {
    ppl: { type: 'string', multiple: true }, ctx: { type: 'string' }, tokens: { type: 'string' }, mode: { type: 'string' },
    memory: { type: 'string' }, thresholds: { type: 'boolean' }, window: { type: 'string' }, capacity: { type: 'string' }, 'stream-rows': { type: 'string' },
    threads: { type: 'string' }, json: { type: 'boolean' },
  });
  if (flags.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const [model, ...more] = positionals;
  if (!model) throw new UsageError('eval needs a MODEL');
  const files = [...((flags.ppl as unknown as string[] | undefined) ?? []), ...more];
  if (files.length === 0) throw new UsageError('eval needs --ppl FILE|DIR... (text the model was not calibrated on)');
  const mode = strFlag(flags, 'mode', 'ram', ['ram', 'hybrid', 'naive', 'sparse'] as const);
  const memory = flags.memory === undefined ? undefined : parseMemory(String(flags.memory), fileSize(model));
  const bar = new Progress('evaluating', process.stderr, !flags.json, (n) => `${n.toFixed(n < 100 ? 1 : 0)} tokens`);
  const r = await perplexity(model, {
    files, ctx: intFlag(flags, 'ctx', 512, 2, 1 << 20), maxTokens: optIntFlag(flags, 'tokens', 1, 1 << 30),
    load: {
      mode, memory, threads: intFlag(flags, 'threads', 2, 1, 64), window: optIntFlag(flags, 'window', 0, 1 << 20), neuronCapacity: optIntFlag(flags, 'capacity', 1, 1 << 24), streamRows: optIntFlag(flags, 'stream-rows', 0, 1 << 20),
      ...(flags.thresholds ? { thresholds: 'file' as const } : {}),
    },
    onProgress: (d, t) => bar.update(d, t),
  });
  bar.finish();
  const fs = r.model.flashStats();
  const passes = r.model.times.prefilled;
  const out = {
    model, mode, ppl: r.ppl, nll: r.nll, tokens_scored: r.scored, chunks: r.chunks, files: r.files.length, ctx: r.model.ctx,
    seconds: r.seconds, tokens_per_s: r.tokensPerS, thresholds: !!flags.thresholds || mode === 'sparse',
    bytes_read_per_token: fs ? fs.bytes / passes : 0, io_stall_ms_per_token: r.model.times.ioStallMs / passes,
    ...(r.model.sparse ? { sparse: { ...r.model.sparse.stats, ...r.model.sparse.src.stats, passes, capacity: r.model.sparse.capacity, window: r.model.sparse.window } } : {}),
    peak_rss_bytes: process.resourceUsage().maxRSS * 1024, budget_bytes: memory ?? null,
  };
  if (flags.json) process.stdout.write(`${JSON.stringify(out)}\n`);
  else process.stdout.write(`perplexity ${r.ppl.toFixed(4)} over ${r.scored} tokens (${r.chunks} chunks of ≤ ${r.model.ctx}, ${r.files.length} files), ${mode} mode, ${r.tokensPerS.toFixed(2)} tokens/s${fs ? `, ${(out.bytes_read_per_token / 1e6).toFixed(1)} MB read per token` : ''}\n`);
  return 0;
}
