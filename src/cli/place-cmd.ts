// `flashlm place MODEL --calib CALIB.gguf [-o OUT] [--sparsity S] [--hold-out 0.1] [--bands 24]
//  [--width 8] [--json]`: Ripple's co-activation placement of each layer's FFN records on flash.
import { placeModel } from '../engine/place.js';
import { Progress } from './progress.js';
import { intFlag, numFlag, parse, UsageError } from './main.js';

const USAGE = `usage: flashlm place MODEL --calib CALIB.gguf [-o OUT.gguf] [--sparsity S] [--hold-out 0.1] [--bands 24] [--width 8] [--json]
Reorders each layer's FFN records on flash so that neurons active for the same tokens sit next to
each other (Ripple, arXiv 2410.19274): fewer, longer reads per token in sparse mode. Neurons count
as active when |act| reaches the layer's cutoff for --sparsity (default: the sparsity sparsify used,
else 0.5) on the calibration histogram.
The permutation goes in flashlm.perm.<layer>; predictors and all other tensors are copied unchanged,
checksums stay valid (flashlm verify). --hold-out: the last fraction of calibration tokens is not
used for the statistics; reads/token (no cache) on it are shown before and after.
Default OUT: MODEL itself, replaced only when the new file is complete.
`;

export async function cmdPlace(argv: string[]): Promise<number> {
  const { flags, positionals } = parse(argv, {
    calib: { type: 'string' }, output: { type: 'string', short: 'o' }, sparsity: { type: 'string' }, 'hold-out': { type: 'string' },
    bands: { type: 'string' }, width: { type: 'string' }, json: { type: 'boolean' },
  });
  if (flags.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('place needs exactly one MODEL (a flash-layout GGUF)');
  if (typeof flags.calib !== 'string') throw new UsageError('place needs --calib CALIB.gguf (made by: flashlm calibrate MODEL --text ...)');
  const model = positionals[0]!;
  const stats = new Progress('co-activation', process.stderr, !flags.json, (n) => `${n.toFixed(0)} layers`);
  const write = new Progress('writing', process.stderr, !flags.json);
  const r = placeModel(model, flags.calib, {
    out: typeof flags.output === 'string' ? flags.output : undefined,
    sparsity: flags.sparsity === undefined ? undefined : numFlag(flags, 'sparsity', 0.5, 0.01, 0.99),
    holdOut: numFlag(flags, 'hold-out', 0.1, 0, 0.9),
    sketch: { bands: intFlag(flags, 'bands', 24, 1, 1024), width: intFlag(flags, 'width', 8, 1, 1024) },
    onProgress: (p) => (p.phase === 'stats' ? stats : (stats.finish(), write)).update(p.done, p.total),
  });
  stats.finish();
  write.finish();
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({
      out: r.out, sparsity: r.sparsity, tokens: r.tokens, seconds: r.seconds,
      layers: r.layers.map((L) => ({
        layer: L.layer, min_code: L.minCode, threshold: L.threshold, active_frac: L.activeFrac, pairs: L.pairs, candidates: L.candidates,
        paths: L.paths, runs_before: L.runsBefore, runs_after: L.runsAfter, seconds: L.seconds,
      })),
    })}\n`);
    return 0;
  }
  const w = (s: string) => process.stdout.write(`${s}\n`);
  w(`wrote ${r.out}: Ripple placement at ${(100 * r.sparsity).toFixed(0)}% sparsity from ${r.tokens.stats} calibration tokens (${r.tokens.heldOut} held out); ` +
    `${r.seconds.stats.toFixed(1)} s statistics, ${r.seconds.write.toFixed(1)} s writing`);
  w('layer  |act| cutoff  active%    pairs  paths   held-out reads/token (no cache): before → after');
  for (const L of r.layers) {
    w(`${String(L.layer).padStart(5)}  ${L.threshold.toPrecision(4).padStart(11)}  ${(100 * L.activeFrac).toFixed(1).padStart(7)}  ${String(L.pairs).padStart(7)}  ${String(L.paths).padStart(5)}` +
      `   ${L.runsBefore.toFixed(1).padStart(8)} → ${L.runsAfter.toFixed(1)}`);
  }
  return 0;
}
