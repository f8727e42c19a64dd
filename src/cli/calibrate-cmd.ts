// `flashlm calibrate MODEL --text FILES/DIRS... [--tokens N] [--seq-len L] [-o OUT] [--json]`
import * as path from 'node:path';
import { calibrate } from '../engine/calibrate.js';
import { cacheDir } from '../formats/fsutil.js';
import { parseMemory } from '../memory/budget.js';
import { fileSize } from '../formats/fsutil.js';
import { Progress } from './progress.js';
import { intFlag, parse, strFlag, UsageError } from './main.js';

const USAGE = `usage: flashlm calibrate MODEL --text FILE|DIR [FILE|DIR...] [--tokens 2000] [--seq-len 256] [--per-file 2] [--seed 1] [-o OUT.calib.gguf]
                         [--mode ram|hybrid] [--memory 8GB] [--threads N] [--json]
Runs the dense model over real text (never the text you evaluate on) and records each layer's FFN
inputs and activation magnitudes; sparse mode's thresholds and predictors are built from it.
Directories are searched recursively for text files, taken in a seeded random order, at most
--per-file sequences from each. Default OUT: <cache dir>/<model name>.calib.gguf
`;

export async function cmdCalibrate(argv: string[]): Promise<number> {
  const { flags, positionals } = parse(argv, {
    text: { type: 'string', multiple: true }, tokens: { type: 'string' }, 'seq-len': { type: 'string' }, output: { type: 'string', short: 'o' },
    mode: { type: 'string' }, memory: { type: 'string' }, threads: { type: 'string' }, json: { type: 'boolean' },
    'per-file': { type: 'string' }, seed: { type: 'string' },
  });
  if (flags.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const [model, ...more] = positionals;
  if (!model) throw new UsageError('calibrate needs a MODEL (a GGUF file)');
  // `--text a b c`: parseArgs gives a to --text and b, c as positionals; all are text
  const texts = [...((flags.text as unknown as string[] | undefined) ?? []), ...more];
  if (texts.length === 0) throw new UsageError('calibrate needs --text FILE|DIR... (real text, e.g. source code; never the text you evaluate on)');
  const tokens = intFlag(flags, 'tokens', 2000, 1, 1 << 24);
  const seqLen = intFlag(flags, 'seq-len', 256, 16, 1 << 16);
  const out = typeof flags.output === 'string' ? flags.output : path.join(cacheDir(), `${path.basename(model).replace(/\.gguf$/, '')}.calib.gguf`);
  const mode = strFlag(flags, 'mode', 'ram', ['ram', 'hybrid'] as const);
  const memory = flags.memory === undefined ? undefined : parseMemory(String(flags.memory), fileSize(model));
  const threads = intFlag(flags, 'threads', 2, 1, 64);
  const bar = new Progress('calibrating', process.stderr, !flags.json, (n) => `${n < 100 ? n.toFixed(1) : n.toFixed(0)} tokens`);
  const r = await calibrate(model, {
    files: texts, tokens, seqLen, out, perFile: intFlag(flags, 'per-file', 2, 1, 1 << 20), seed: intFlag(flags, 'seed', 1, 0, 2 ** 32 - 1), load: { threads, mode, memory }, onProgress: (d, t) => bar.update(d, t),
  });
  bar.finish();
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ out: r.out, tokens: r.tokens, sequences: r.sequences, seconds: r.seconds, text_tokens: r.textTokens, files: r.meta.files.length, layers: r.layers })}\n`);
    return 0;
  }
  process.stdout.write(`wrote ${r.out}: ${r.tokens} tokens in ${r.sequences} sequences from ${r.meta.files.length} files (${r.textTokens} available), ${r.seconds.toFixed(0)} s\n`);
  process.stdout.write('layer  zero%   |act| threshold for 50% / 70% / 90% sparsity\n');
  r.layers.forEach((L, l) => process.stdout.write(`${String(l).padStart(5)}  ${(100 * L.zeroFrac).toFixed(1).padStart(5)}   ${L.t50.toPrecision(3)} / ${L.t70.toPrecision(3)} / ${L.t90.toPrecision(3)}\n`));
  return 0;
}
