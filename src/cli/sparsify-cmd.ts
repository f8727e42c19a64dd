// `flashlm sparsify MODEL --calib CALIB.gguf [--sparsity 0.6] [--rule abs|gate] [--predictor lowrank|gate] [--rank 256] [--recall 0.97]
//  [--pred-type q8_0|f32|q4_0] [--exact-cutoff] [--epochs 3] [-o OUT.gguf] [--threads N] [--json]`
import { sparsify } from '../engine/sparsify.js';
import { Progress } from './progress.js';
import { intFlag, numFlag, parse, strFlag, UsageError } from './main.js';

const USAGE = `usage: flashlm sparsify MODEL --calib CALIB.gguf [--sparsity 0.6] [--rule abs|gate] [--predictor lowrank|gate]
                        [--rank 256] [--recall 0.97] [--pred-type q8_0|f32|q4_0] [--exact-cutoff] [--epochs 3] [-o OUT.gguf] [--threads N] [--json]
Adds per-layer activation thresholds (for --sparsity of the FFN activations on the calibration text)
and low-rank activation predictors (trained for --recall of the active neurons) to a flash-layout
MODEL. MODEL must be the model the calibration was made on (flashlm calibrate). The last 10% of the
calibration tokens are held out: the table shows recall, precision and over-read on them.
--rule abs (CATS, default): a neuron is active when |SiLU(gate·x)| ≥ t. --rule gate: when gate·x ≥ t
(one half-line, which a linear predictor can learn; for SiLU the abs rule also keeps a band of
negative gate values around the SiLU minimum, which it cannot).
--predictor lowrank (default): trained rank --rank predictors (LLM in a flash §3.1), --pred-type q8_0.
--predictor gate: a quantized copy of each layer's gate (--pred-type q4_0 by default: 0.56 bytes per
weight, resident in DRAM) scored with the rule itself; its cutoff is set for --recall (default 0.995);
default --sparsity 0.37 (the setting measured on CodeLlama-13B in the README).
--exact-cutoff (gate): the cutoff is the threshold itself; with --pred-type q8_0 on a q8_0 model the
predicted set is exactly the active set (an oracle for measuring what a predictor over-reads).
Default OUT: MODEL itself, replaced only when the new file is complete. Running it again replaces
the predictors.
`;

export async function cmdSparsify(argv: string[]): Promise<number> {
  const { flags, positionals } = parse(argv, {
    calib: { type: 'string' }, predictor: { type: 'string' }, sparsity: { type: 'string' }, rule: { type: 'string' }, rank: { type: 'string' }, recall: { type: 'string' },
    'pred-type': { type: 'string' }, epochs: { type: 'string' }, output: { type: 'string', short: 'o' },
    threads: { type: 'string' }, seed: { type: 'string' }, json: { type: 'boolean' }, 'exact-cutoff': { type: 'boolean' },
  });
  if (flags.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('sparsify needs exactly one MODEL (a flash-layout GGUF)');
  const model = positionals[0]!;
  if (typeof flags.calib !== 'string') throw new UsageError('sparsify needs --calib CALIB.gguf (made by: flashlm calibrate MODEL --text ...)');
  const kind = strFlag(flags, 'predictor', 'lowrank', ['lowrank', 'gate'] as const);
  const bar = new Progress(kind === 'gate' ? 'gate predictors' : 'training predictors', process.stderr, !flags.json, (n) => `${n.toFixed(0)} layers`);
  const wbar = new Progress('writing', process.stderr, !flags.json);
  const r = await sparsify(model, flags.calib, {
    // gate: the CodeLlama-13B setting measured in the README (held-out perplexity vs dense)
    sparsity: numFlag(flags, 'sparsity', kind === 'gate' ? 0.37 : 0.6, 0, 0.99),
    rule: strFlag(flags, 'rule', 'abs', ['abs', 'gate'] as const),
    predictor: kind,
    exactCutoff: !!flags['exact-cutoff'],
    rank: intFlag(flags, 'rank', 256, 1, 1 << 16),
    targetRecall: numFlag(flags, 'recall', kind === 'gate' ? 0.995 : 0.97, 0.01, 1),
    predType: strFlag(flags, 'pred-type', kind === 'gate' ? 'q4_0' : 'q8_0', kind === 'gate' ? ['q4_0', 'q8_0', 'f32'] as const : ['q8_0', 'f32'] as const),
    epochs: intFlag(flags, 'epochs', 3, 0, 1000),
    seed: intFlag(flags, 'seed', 1, 0, 2 ** 32 - 1),
    threads: intFlag(flags, 'threads', 2, 1, 64),
    out: typeof flags.output === 'string' ? flags.output : undefined,
    onProgress: (p) => (p.phase === 'train' ? bar : (bar.finish(), wbar)).update(p.done, p.total),
  });
  bar.finish();
  wbar.finish();
  for (const w of r.warnings) process.stderr.write(`flashlm: warning: ${w}\n`);
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({
      out: r.out, sparsity: r.sparsity, rule: r.rule, predictor: r.predictor, pred_type: r.predType, tokens: r.tokens, seconds: r.seconds, warnings: r.warnings,
      layers: r.layers.map((L) => ({
        layer: L.layer, rank: L.rank, threshold: L.threshold, active_frac: L.activeFrac, recall: L.recall, precision: L.precision,
        over_read: L.overRead, predicted_frac: L.predictedFrac, held_out_active_frac: L.heldOutActiveFrac, seconds: L.seconds,
      })),
    })}\n`);
    return 0;
  }
  const t = r.tokens;
  process.stdout.write(`wrote ${r.out}: ${r.predType} ${r.predictor === 'gate' ? 'gate-copy' : 'low-rank'} predictors for ${(100 * r.sparsity).toFixed(0)}% sparsity; ${t.total} calibration tokens ` +
    `(${t.fitted} fitted, ${t.cutoff} for the cutoff, ${t.heldOut} held out); ${r.seconds.train.toFixed(1)} s training, ${r.seconds.write.toFixed(1)} s writing\n`);
  process.stdout.write(`layer  rank  ${r.rule === 'gate' ? ' gate' : '|act|'} threshold  active%   recall  precision  over-read   (held out)\n`);
  for (const L of r.layers) {
    process.stdout.write(`${String(L.layer).padStart(5)}  ${String(L.rank).padStart(4)}  ${L.threshold.toPrecision(4).padStart(15)}  ${(100 * L.activeFrac).toFixed(1).padStart(7)}` +
      `   ${L.recall.toFixed(3).padStart(6)}  ${L.precision.toFixed(3).padStart(9)}  ${L.overRead.toFixed(2).padStart(8)}×\n`);
  }
  return 0;
}
