// Perplexity of one model under several sparsity rules with the EXACT gate (the oracle: no predictor
// misses, only the threshold's effect), side by side on the same held-out text and chunks:
// dense, CATS |act| thresholds and gate thresholds at the sparsities given by bench/gate-stats.ts.
// Each thresholded run also measures the ORACLE's flash traffic: the neurons truly active under the
// rule (exact gate, from an FFN probe) that were not active in the last --window tokens — what a
// perfect predictor with windowing and an unbounded neuron matrix would read — in records/token.
// Usage: node dist/bench/sparsity-ppl.js MODEL.gguf GATE-STATS.json --ppl FILE|DIR... [--ctx 256]
//        [--tokens 512] [--configs dense,abs-s50,abs-s70,gate-s50,gate-s70] [--mode ram] [--out results.json]
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { perplexity } from '../src/engine/eval.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { child: { type: 'string' }, window: { type: 'string' }, ppl: { type: 'string', multiple: true }, ctx: { type: 'string' }, tokens: { type: 'string' }, configs: { type: 'string' }, mode: { type: 'string' }, memory: { type: 'string' }, out: { type: 'string' } },
});
const [model, statsPath] = positionals;
if (!model || !statsPath || !values.ppl) throw new Error('usage: sparsity-ppl MODEL GATE-STATS.json --ppl FILE|DIR... [--ctx 256] [--tokens 512] [--configs ...]');
const stats = JSON.parse(readFileSync(statsPath, 'utf8')) as { thresholds: { abs: Record<string, number[]>; gate: Record<string, number[]> } };
const configs = (values.configs ?? 'dense,abs-s50,abs-s70,gate-s50,gate-s70').split(',');
// --mode sparse [--memory BYTES]: the file's predictors choose the neurons (the thresholds still
// apply exactly to the rows loaded), so the figure includes predictor misses under the budget
const mode = (values.mode ?? 'ram') as 'ram' | 'hybrid' | 'sparse';
const memory = values.memory === undefined ? undefined : Number(values.memory);
const results: Record<string, unknown>[] = [];
const windowK = Number(values.window ?? 5);

/** Oracle traffic under a rule: per layer, the token index each neuron was last truly active at. */
function oracleProbe(rule: 'abs' | 'gate', t: number[], nLayers: number, ffn: number) {
  const last = Array.from({ length: nLayers }, () => new Int32Array(ffn).fill(-1e9));
  const o = { tokens: 0, active: 0, misses: 0 };
  let tok = -1;
  const probe = (l: number, s: { hbF: Float32Array }): void => {
    if (l === 0) { tok++; o.tokens++; }
    const L = last[l]!, th = t[l]!, g = s.hbF;
    for (let i = 0; i < ffn; i++) {
      const v = g[i]!;
      const on = rule === 'gate' ? v >= th : Math.abs(v / (1 + Math.exp(-v))) >= th;
      if (!on) continue;
      o.active++;
      if (L[i]! < tok - windowK) o.misses++;
      L[i] = tok;
    }
  };
  return { probe, o };
}
let dense: number | undefined;
let oracle: ReturnType<typeof oracleProbe> | undefined;
/** bytes of one neuron's bundle record in the file (0 when not a flash layout) */
const recordBytes = (m: { source: { metadata: Map<string, { value: unknown }> } }): number => Number(m.source.metadata.get('flashlm.record_bytes')?.value ?? 0);
// Each config runs in its own process: a closed 13B model's 12.5 GB of WebAssembly memory is only
// returned when V8 collects it, and loading the next model first got the process OOM-killed.
if (!values.child) {
  for (const name of configs) {
    const args = [fileURLToPath(import.meta.url), ...process.argv.slice(2), '--child', name];
    const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 1 << 24 });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    let row: Record<string, unknown>;
    try { row = JSON.parse(line) as Record<string, unknown>; } catch { row = { config: name, error: `exit ${r.status ?? r.signal}` }; }
    if (name === 'dense' && typeof row.ppl === 'number') dense = row.ppl;
    if (dense && typeof row.ppl === 'number') row.vs_dense = row.ppl / dense;
    results.push(row);
    process.stderr.write(`\n${JSON.stringify(row)}\n`);
  }
  const out = JSON.stringify({ model, mode, files: values.ppl, results }, null, 1);
  if (values.out) writeFileSync(values.out, out + '\n');
  process.stdout.write(out + '\n');
  process.exit(0);
}
for (const name of [values.child]) {
  const [rule, s] = name.split('-') as ['dense' | 'abs' | 'gate', string | undefined];
  const t = rule === 'dense' ? undefined : stats.thresholds[rule]?.[s!];
  if (rule !== 'dense' && !t) throw new Error(`no thresholds for ${name} in ${statsPath}`);
  const r = await perplexity(model, {
    files: values.ppl, ctx: Number(values.ctx ?? 256), maxTokens: Number(values.tokens ?? 512),
    load: { mode, ...(memory ? { memory } : {}), ...(t && rule !== 'dense' ? { thresholds: Float32Array.from(t), rule } : {}) },
    onLoad: (m) => {
      if (!t || rule === 'dense' || mode === 'sparse') return; // sparse mode computes no full gate to probe
      oracle = oracleProbe(rule, t, m.cfg.nLayers, m.cfg.ffnDim);
      m.ffnProbe = oracle.probe;
    },
    onProgress: (d, n) => process.stderr.write(`\r${name}: ${d}/${n}   `),
  });
  if (rule === 'dense') dense = r.ppl;
  const orc = oracle ? {
    window: windowK, active_frac: oracle.o.active / (oracle.o.tokens * r.model.cfg.nLayers * r.model.cfg.ffnDim),
    records_per_token: oracle.o.misses / oracle.o.tokens,
    bytes_per_token: (oracle.o.misses / oracle.o.tokens) * recordBytes(r.model),
  } : null;
  oracle = undefined;
  const row = { config: name, ppl: r.ppl, nll: r.nll, tokens: r.scored, chunks: r.chunks, seconds: r.seconds, vs_dense: dense ? r.ppl / dense : null, oracle: orc,
    bytes_read_per_token: (r.model.flashStats()?.bytes ?? 0) / Math.max(1, r.model.times.prefilled),
    ...(r.model.sparse ? { sparse: { capacity: r.model.sparse.capacity, ...r.model.sparse.stats, ...r.model.sparse.src.stats } } : {}) };
  process.stdout.write(`${JSON.stringify(row)}\n`);
}
