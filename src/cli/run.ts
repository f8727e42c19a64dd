// `flashlm run` and `flashlm demo`.
import { Model } from '../engine/model.js';
import { ensureDemoModel, DEMO_SYNTH } from '../engine/demo.js';
import { fmtBytes, Progress } from './progress.js';
import { describePlan, parseMemory } from '../memory/budget.js';
import { describeLiveness } from '../memory/liveness.js';
import { fileSize } from '../formats/fsutil.js';
import { readSummary } from '../flash/neuron-source.js';
import { intFlag, numFlag, optIntFlag, parse, strFlag, UsageError, type Flags } from './main.js';

const RUN_OPTIONS = {
  prompt: { type: 'string', short: 'p' },
  tokens: { type: 'string' },
  n: { type: 'string', short: 'n' },
  temp: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  seed: { type: 'string' },
  json: { type: 'boolean' },
  threads: { type: 'string' },
  ctx: { type: 'string' },
  kv: { type: 'string' },
  'no-bos': { type: 'boolean' },
  memory: { type: 'string' },
  mode: { type: 'string' },
  stats: { type: 'boolean' },
  'no-verify': { type: 'boolean' },
  window: { type: 'string' },
  capacity: { type: 'string' }, 'stream-rows': { type: 'string' },
  collapse: { type: 'string' },
  admission: { type: 'string' },
  thresholds: { type: 'boolean' },
} as const;

interface RunResult {
  tokens: number[];
  text: string;
  stats: Record<string, unknown>;
}

/** Sparse mode's counters per forward pass (prompt and generated tokens alike). */
function sparseStats(model: Model): Record<string, unknown> {
  const z = model.sparse!;
  const s = z.src.stats;
  const passes = Math.max(1, model.times.decoded + model.times.prefilled);
  const per = (x: number) => Math.round((x / passes) * 10) / 10;
  return {
    neurons_predicted_per_token: per(z.stats.predicted), neurons_computed_per_token: per(z.stats.computed),
    dropped_by_threshold_per_token: per(z.stats.dropped), hit_rate: s.hits + s.needed ? Math.round((1e4 * s.hits) / (s.hits + s.needed)) / 1e4 : null,
    records_read_per_token: per(s.records), gap_records_per_token: per(s.gapRecords), overflow_per_token: per(s.overflow), streamed_per_token: per(s.streamed),
    capacity_rows_per_layer: z.capacity, window: z.window, collapse_gap: z.collapseGap, matrix_bytes: z.src.bytes,
    moved_bytes_per_token: Math.round(s.movedBytes / passes),
    ...Object.fromEntries(Object.entries(readSummary(s, z.src.recordBytes, passes)).map(([k, v]) => [k, Math.round(v * 100) / 100])),
  };
}

function parseTokenList(s: string, vocab: number): number[] {
  const parts = s.split(',').map((p) => p.trim()).filter((p) => p !== '');
  if (parts.length === 0) throw new UsageError('--tokens needs a comma-separated list of token ids, e.g. --tokens 1,450,4996');
  return parts.map((p) => {
    const n = Number(p);
    if (!/^\d+$/.test(p) || n >= vocab) throw new UsageError(`--tokens: '${p}' is not a token id in [0, ${vocab})`);
    return n;
  });
}

/** Loads, generates and reports; shared by run and demo. Streams text to stdout unless json. */
/** Control characters shown as \\xNN (a random model emits raw bytes such as ESC). */
const visible = (s: string) => s.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);

async function generateWith(modelPath: string, flags: Flags, promptDefault?: string, sanitize = false): Promise<RunResult & { model: Model }> {
  const n = intFlag(flags, 'n', 32, 0, 1 << 20);
  const threads = intFlag(flags, 'threads', 2, 1, 64);
  const temperature = numFlag(flags, 'temp', 0, 0, 100);
  const topK = intFlag(flags, 'top-k', 40, 0);
  const topP = numFlag(flags, 'top-p', 0.95, 0, 1);
  const seed = intFlag(flags, 'seed', 0, 0, 2 ** 32 - 1);
  const kv = strFlag(flags, 'kv', 'f16', ['f16', 'f32'] as const);
  const json = !!flags.json;
  const prompt = (flags.prompt as string | undefined) ?? promptDefault;
  if (prompt === undefined && flags.tokens === undefined) throw new UsageError('run needs a prompt: -p TEXT or --tokens 1,2,3');
  if (prompt !== undefined && flags.tokens !== undefined) throw new UsageError('give either -p TEXT or --tokens, not both');

  const t0 = performance.now();
  // Reserve only the positions this run can use (the KV cache is the big variable part of memory).
  const ctxFlag = flags.ctx === undefined ? undefined : intFlag(flags, 'ctx', 0, 1, 1 << 22);
  const bar = new Progress('loading', process.stderr, !json);
  const memory = flags.memory === undefined ? undefined : parseMemory(String(flags.memory), fileSize(modelPath));
  const mode = strFlag(flags, 'mode', 'ram', ['ram', 'hybrid', 'naive', 'sparse'] as const);
  let promptIds: number[] | undefined;
  const model = await Model.load(modelPath, {
    threads, kvType: kv, onProgress: (d, t) => bar.update(d, t), memory, mode, verify: !flags['no-verify'],
    window: optIntFlag(flags, 'window', 0, 1 << 20), neuronCapacity: optIntFlag(flags, 'capacity', 1, 1 << 24), streamRows: optIntFlag(flags, 'stream-rows', 0, 1 << 20), collapseGap: flags.collapse === 'auto' ? 'auto' : optIntFlag(flags, 'collapse', 0, 1 << 20),
    admission: strFlag(flags, 'admission', 'default', ['default', 'ripple'] as const),
    ...(flags.thresholds ? { thresholds: 'file' as const } : {}),
    ctx: ctxFlag ?? ((cfg, tok) => {
      // tokenize once, here, where the tokenizer first exists; the run below reuses the ids
      if (prompt !== undefined) promptIds = tok.encode(prompt, { addBos: flags['no-bos'] ? false : undefined });
      const len = promptIds?.length ?? String(flags.tokens).split(',').length;
      return Math.max(1, Math.min(cfg.ctxLen, len + n));
    }),
  });
  bar.finish();
  for (const w of model.warnings) process.stderr.write(`flashlm: warning: ${w}\n`);
  if (model.plan && flags.verbose && !json) process.stderr.write(`${describePlan(model.plan)}\n`);
  if (flags.verbose && !json) {
    const a = model.actPlan;
    process.stderr.write(`${describeLiveness(a.out, a.steps)}\n  all ${a.arenas} arena(s): activations ${fmtBytes(a.peakBytes)} (naive sum ${fmtBytes(a.naiveBytes)})\n`);
  }
  if (model.readPlan && flags.verbose && !json) {
    const r = model.readPlan;
    process.stderr.write(`flash reads: up to ${r.maxReadBytes} B each, ${r.inFlight} in flight (${r.source})\n`);
  }
  const loadMs = performance.now() - t0;
  try {
    const tok = model.tokenizer;
    const ids = prompt !== undefined
      ? promptIds ?? tok.encode(prompt, { addBos: flags['no-bos'] ? false : undefined })
      : parseTokenList(flags.tokens as string, model.cfg.vocabSize);
    if (ids.length + n > model.ctx) {
      throw new UsageError(`prompt (${ids.length} tokens) + ${n} new tokens exceed the context of ${model.ctx} positions${ctxFlag === undefined ? ` (model maximum ${model.cfg.ctxLen})` : ' (raise --ctx)'}`);
    }
    if (!json && prompt !== undefined) process.stdout.write(prompt);
    const out: number[] = [];
    const dec = new TextDecoder('utf-8', { ignoreBOM: true }); // a generated U+FEFF (id 30143) is text, not a BOM
    let text = '';
    let last = { ms: 0, stall: 0, bytes: 0, n: 0 };
    for await (const t of model.generate(ids, { maxTokens: n, temperature, topK, topP, seed })) {
      out.push(t.id);
      if (flags.stats) {
        // one line per token on stderr, like the paper's Table 3 split
        const tm = model.times;
        const bytes = model.flashStats()?.bytes ?? 0;
        const done = tm.decoded + tm.prefilled; // forward passes so far (prompt tokens included)
        const dn = Math.max(1, done - last.n);
        const ms = (tm.decodeMs + tm.prefillMs - last.ms) / dn;
        const io = (tm.ioStallMs - last.stall) / dn;
        process.stderr.write(`[token ${out.length}${dn > 1 ? `, after ${dn} prompt passes` : ''}] ${ms.toFixed(1)} ms (io wait ${io.toFixed(1)}, compute ${(ms - io).toFixed(1)}), read ${fmtBytes((bytes - last.bytes) / dn)}\n`);
        last = { ms: tm.decodeMs + tm.prefillMs, stall: tm.ioStallMs, bytes, n: done };
      }
      const piece = dec.decode(t.bytes, { stream: true });
      text += piece;
      if (!json) process.stdout.write(sanitize ? visible(piece) : piece);
    }
    const tail = dec.decode();
    text += tail;
    if (!json) process.stdout.write(`${tail}\n`);
    const tm = model.times;
    const mem = model.memory();
    const fs = model.flashStats();
    const stats = {
      prompt_tokens: ids.length,
      generated_tokens: out.length,
      load_ms: round(loadMs),
      prompt_ms: round(tm.prefillMs),
      prompt_tokens_per_s: round(tm.prefilled / (tm.prefillMs / 1000)),
      tokens_per_s: tm.decoded ? round(tm.decoded / (tm.decodeMs / 1000)) : null,
      ms_per_token: tm.decoded ? {
        io: round(tm.decodeIoStallMs / tm.decoded), // waiting for flash reads that compute did not hide
        memory: fs ? round(fs.mmMs / (tm.decoded + tm.prefilled)) : 0, // sparse: neuron-matrix bookkeeping and copies
        compute: round((tm.decodeMs - tm.decodeIoStallMs) / tm.decoded - (fs ? fs.mmMs / (tm.decoded + tm.prefilled) : 0)),
      } : { io: null, memory: null, compute: null },
      mode,
      bytes_read_per_token: fs ? Math.round(fs.bytes / (tm.decoded + tm.prefilled)) : 0,
      reads_per_token: fs ? round(fs.reads / (tm.decoded + tm.prefilled)) : 0,
      io_read_ms_per_token: fs ? round(fs.ioMs / (tm.decoded + tm.prefilled)) : 0,
      ...(model.sparse ? { sparse: sparseStats(model) } : {}),
      read_plan: model.readPlan ? { ...model.readPlan, io_uring: model.ioUring } : null,
      threads,
      ctx: model.ctx,
      memory_bytes: { weights: mem.weights, kv_cache: mem.kv, arenas: mem.arenas },
      // activation buffers under the liveness plan (buffers with disjoint lifetimes share bytes) vs all apart
      activations: { peak_bytes: model.actPlan.peakBytes, naive_bytes: model.actPlan.naiveBytes, arenas: model.actPlan.arenas },
      kv_pages: (({ pageSize, pages, peakUsed }) => ({ page_size: pageSize, pages, peak_used: peakUsed }))(model.kv.stats()),
      memory_pool: { charged: model.pool.charged, ...model.pool.stats().parts },
      peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
      budget_bytes: model.plan?.budget ?? null,
    };
    return { tokens: out, text, stats, model };
  } catch (e) {
    await model.close();
    throw e;
  }
}

const round = (x: number) => Math.round(x * 1000) / 1000;

export async function cmdRun(argv: string[]): Promise<number> {
  const { flags, positionals } = parse(argv, RUN_OPTIONS);
  if (flags.help) {
    process.stdout.write('usage: flashlm run MODEL (-p TEXT | --tokens 1,2,3) [-n N] [--temp T --top-k K --top-p P --seed S] [--ctx C] [--kv f16|f32] [--threads N] [--no-bos] [--memory 8GB|50%] [--mode ram|hybrid|naive|sparse] [--window K] [--capacity ROWS] [--stream-rows R] [--collapse G|auto] [--admission default|ripple] [--thresholds] [--no-verify] [--stats] [--verbose] [--json]\n');
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('run needs exactly one MODEL (a .gguf file or an HF model directory)');
  const r = await generateWith(positionals[0]!, flags);
  await r.model.close();
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ tokens: r.tokens, text: r.text, stats: r.stats })}\n`);
  } else {
    const s = r.stats as { tokens_per_s: number | null; prompt_tokens: number; generated_tokens: number };
    process.stderr.write(`\n${s.prompt_tokens} prompt tokens, ${s.generated_tokens} generated, ${s.tokens_per_s ?? '-'} tokens/s\n`);
  }
  return 0;
}

export async function cmdDemo(argv: string[]): Promise<number> {
  const { flags } = parse(argv, RUN_OPTIONS);
  if (flags.help) {
    process.stdout.write('usage: flashlm demo [-p TEXT] [-n N] [--json]\n');
    return 0;
  }
  const json = !!flags.json;
  const say = (s: string) => { if (!json) process.stderr.write(`${s}\n`); };
  const t0 = performance.now();
  const { path, created } = await ensureDemoModel();
  say(`demo model: ${path}${created ? ` (generated in ${(performance.now() - t0).toFixed(0)} ms)` : ' (cached)'}`);
  const o = DEMO_SYNTH;
  say(`  random Llama: ${o.layers} layers, hidden ${o.hidden}, ffn ${o.ffn}, ${o.heads} heads / ${o.kvHeads} kv heads, vocab ${o.vocab}, ${o.dtype}, ${o.act}`);
  say('  (random weights: the text is gibberish; this shows the engine end to end)');
  if (flags.n === undefined) flags.n = '24';
  const r = await generateWith(path, flags, 'The quick brown fox', true);
  const m = r.model;
  await m.close();
  if (json) {
    process.stdout.write(`${JSON.stringify({ model: path, tokens: r.tokens, text: r.text, stats: r.stats })}\n`);
    return 0;
  }
  const s = r.stats as { prompt_tokens: number; generated_tokens: number; tokens_per_s: number | null; load_ms: number; memory_bytes: { weights: number; kv_cache: number; arenas: number } };
  say(`\nwhat the engine did:`);
  say(`  loaded ${fmtBytes(s.memory_bytes.weights)} of weights into ${m.state.arenas.size} WebAssembly arena(s) (${fmtBytes(s.memory_bytes.arenas)} reserved) in ${s.load_ms.toFixed(0)} ms`);
  say(`  KV cache ${fmtBytes(s.memory_bytes.kv_cache)} for ${m.ctx} positions; ${m.compute.threads} compute thread(s), WASM SIMD kernels`);
  say(`  ${s.prompt_tokens} prompt tokens, then ${s.generated_tokens} tokens greedily at ${s.tokens_per_s ?? '-'} tokens/s`);
  say(`  token ids: ${r.tokens.join(',')}`);
  return 0;
}
