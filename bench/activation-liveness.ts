// Activation memory under the liveness plan (memory/liveness.ts) vs the naive sum of the buffers,
// per arena, for real model shapes. Produces bench/results-activation-liveness.json.
//
//   node dist/bench/activation-liveness.js [--gguf PATH]... [--ctx 128,4096] [--out FILE]
//
// Two sources of shapes, both going through the engine's own code, not formulas written here:
//  - a synth model (the tiny one bench/serve-load.ts serves), loaded with Model.load: the figures
//    are read from the loaded model's `actPlan` (what it allocated its arenas with; the buffer
//    offsets in its RunState are checked against the plan), at each --ctx up to its context 256;
//  - each --gguf file: only its header is read (readGGUF parses metadata and tensor infos, no
//    tensor data), the config comes from configFromMetadata as in Model.load, and the plan is
//    planLiveness(activationBuffers(cfg, ctx, withLogits)), the two calls Model.load makes. The
//    synth rows check that these calls give exactly the loaded model's actPlan.
// Every plan is also checked with findClash (no two buffers live at the same step overlap).
// Prints a table on stderr and JSON on stdout (and to --out).
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import { Model } from '../src/engine/model.js';
import { synthModel, type SynthOptions } from '../src/engine/synth.js';
import { readGGUF } from '../src/formats/gguf.js';
import { findClash, planLiveness, type LivenessPlan } from '../src/memory/liveness.js';
import { activationBuffers, configFromMetadata, type ActName, type LlamaConfig } from '../src/model/llama.js';

const { values } = parseArgs({
  options: {
    gguf: { type: 'string', multiple: true, default: [] },
    ctx: { type: 'string', default: '128,4096' },
    out: { type: 'string' },
  },
});
const CTXS = values.ctx.split(',').map(Number);
if (CTXS.some((c) => !Number.isInteger(c) || c < 1)) throw new Error(`--ctx ${values.ctx}: expected positive integers`);

// the serve-load model (bench/serve-load.ts), so its rows describe the model that load test runs
const SYNTH: SynthOptions = { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 256, dtype: 'q8_0', act: 'silu', seed: 1, format: 'gguf' };

interface Row {
  model: string;
  source: string;
  shape: { dim: number; layers: number; heads: number; kv_heads: number; ffn: number; vocab: number };
  ctx: number;
  arena: 'layer arena' | 'output arena (with logits)';
  peak_bytes: number;
  naive_bytes: number;
  saved_pct: number;
  offsets: Record<string, number>; // where the plan put each buffer (bytes from the block's start)
  engine_total?: { arenas: number; peak_bytes: number; naive_bytes: number }; // loaded model: all its arenas
}

const shapeOf = (c: LlamaConfig): Row['shape'] => ({ dim: c.dim, layers: c.nLayers, heads: c.nHeads, kv_heads: c.nKvHeads, ffn: c.ffnDim, vocab: c.vocabSize });

function row(model: string, source: string, cfg: LlamaConfig, ctx: number, out: boolean, p: LivenessPlan): Row {
  const clash = findClash(p);
  if (clash) throw new Error(`${model} ctx ${ctx}: plan overlaps live buffers ${clash.join(' and ')}`);
  return {
    model, source, shape: shapeOf(cfg), ctx, arena: out ? 'output arena (with logits)' : 'layer arena',
    peak_bytes: p.bytes, naive_bytes: p.naiveBytes, saved_pct: Math.round(1000 * (1 - p.bytes / p.naiveBytes)) / 10,
    offsets: { ...p.offsets },
  };
}

/** The two plans Model.load makes for `cfg` at `ctx` (layer arenas; the output arena, with logits). */
const plansFor = (cfg: LlamaConfig, ctx: number) => [planLiveness(activationBuffers(cfg, ctx, false)), planLiveness(activationBuffers(cfg, ctx, true))] as const;

const samePlan = (a: LivenessPlan, b: LivenessPlan) => a.bytes === b.bytes && a.naiveBytes === b.naiveBytes && JSON.stringify(a.offsets) === JSON.stringify(b.offsets);

async function synthRows(): Promise<Row[]> {
  const dir = join(tmpdir(), 'flashlm-bench');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'serve-load-tiny.gguf'); // the same file serve-load.ts makes
  if (!existsSync(path)) synthModel(SYNTH, path);
  const rows: Row[] = [];
  for (const ctx of CTXS.filter((c) => c <= SYNTH.ctx)) {
    const m = await Model.load(path, { ctx });
    try {
      const { layer, out, arenas, peakBytes, naiveBytes } = m.actPlan;
      // the buffers the engine computes with sit where the plan says (base = the block's start)
      for (const [a, s] of m.state.arenas) {
        const p = a === m.weights.outArena ? out : layer;
        const base = s.x - p.offsets.x;
        for (const n of ['xb', 'tmp', 'xq', 'q', 'att', 'k', 'v', 'hb', 'hb2', 'scores'] as ActName[]) {
          if (s[n as Exclude<ActName, 'logits'>] !== base + p.offsets[n]) throw new Error(`synth ctx ${ctx}: buffer ${n} is not where the plan put it`);
        }
      }
      // the header path below computes the same plans
      const [l2, o2] = plansFor(m.cfg, ctx);
      if (!samePlan(l2, layer) || !samePlan(o2, out)) throw new Error(`synth ctx ${ctx}: planLiveness(activationBuffers(...)) differs from the loaded model's actPlan`);
      const src = 'synth (bench/serve-load.ts model), loaded with Model.load: its actPlan';
      const name = 'serve-load tiny synth';
      rows.push(
        { ...row(name, src, m.cfg, ctx, false, layer), engine_total: { arenas, peak_bytes: peakBytes, naive_bytes: naiveBytes } },
        row(name, src, m.cfg, ctx, true, out),
      );
    } finally {
      await m.close();
    }
  }
  return rows;
}

function headerRows(path: string): Row[] {
  const f = readGGUF(path); // header only
  const cfg = configFromMetadata(f.metadata, f.tensorByName.get('token_embd.weight')?.dims[1]);
  const name = String(f.metadata.get('general.name')?.value ?? basename(path));
  const rows: Row[] = [];
  for (const ctx of CTXS) {
    if (ctx > cfg.ctxLen) continue;
    const [layer, out] = plansFor(cfg, ctx);
    const src = `GGUF header of ${basename(path)}: planLiveness(activationBuffers(cfg, ctx)) as Model.load`;
    rows.push(row(name, src, cfg, ctx, false, layer), row(name, src, cfg, ctx, true, out));
  }
  return rows;
}

const rows = [...(await synthRows()), ...values.gguf.flatMap(headerRows)];
const kb = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
for (const r of rows) {
  process.stderr.write(`${r.model.padEnd(24)} ctx ${String(r.ctx).padStart(5)}  ${r.arena.padEnd(27)} peak ${kb(r.peak_bytes).padStart(11)}  naive ${kb(r.naive_bytes).padStart(11)}  −${r.saved_pct}%\n`);
}
const cmd = ['node dist/bench/activation-liveness.js', ...values.gguf.map((g) => `--gguf ${g}`), `--ctx ${values.ctx}`, ...(values.out ? [`--out ${values.out}`] : [])].join(' ');
const result = {
  command: cmd,
  note: 'per arena: peak = bytes of the activation block under the liveness plan (greedy by size, memory/liveness.ts), naive = every buffer on its own (64-byte aligned); a model has one layer arena per 4 GiB group of layers and an output arena that adds the logits; GGUF rows read the header only',
  rows,
};
const text = `${JSON.stringify(result, null, 1)}\n`;
if (values.out) writeFileSync(values.out, text);
process.stdout.write(text);
