// Ripple (arXiv 2410.19274) side by side in one run: identity vs co-activation placement, each
// with and without access collapse (and, with --admission both, the default window cache vs the
// linking-aligned one), sparse mode under one memory cap. Every setting runs in its own child
// process inside the same cgroup-v1 limit (budget + runtime overhead), page cache dropped first.
// Prints JSON per setting: reads/token, mean read length (records and bytes), raw and effective
// bandwidth (needed bytes / read time), summed read ms/token, I/O wait, memory and compute ms/token,
// tokens/s, predicted and needed (not resident) neurons/token, the child's read plan; the median of
// --runs and every run's values (per_run).
//
//   node dist/bench/ripple.js MODEL.gguf (--placed PLACED.gguf | --calib CALIB.gguf --placed-out P.gguf)
//        [--cap 50 | --capacity ROWS] [-n 16] [--window 5] [--collapse G] [--admission default|ripple|both] [--gap-room R] [--runs 1] [--out results.json]
//        [--heldout FILE [--prompt-tokens 32]]
//   node dist/bench/ripple.js --make-synth DIR [--text /usr/lib/python3.11]   (planted-cluster ReLU model)
//
// MODEL is a flash-layout file with predictors (calibrate + sparsify). Without --collapse the gap is
// the one the engine derives from the disk profile (0 when the profile says reads are bandwidth-bound).
// Without --heldout every setting decodes greedily from --prompt, so settings whose numerics differ
// (row order changes float sums) generate different tokens and need different neurons. --heldout
// FILE makes the run controlled: FILE's text, tokenized with MODEL's own tokenizer (BOS first), gives
// the prompt (its first --prompt-tokens ids) and the next n ids, which every setting is teacher-forced
// to decode, so all settings process the identical token sequence. Predicted neurons/token then agree
// across settings up to f32 rounding (row order; the FFN runs over every resident row); needed
// (predicted, not resident) neurons/token also depend on what the cache kept (window, admission,
// collapse gap records, which become resident neurons).
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { childMain, median, spawnChild, type ChildResult } from './engines.js';

const self = fileURLToPath(import.meta.url);

async function makeSynth(dir: string, text: string): Promise<void> {
  const { plantedClusterModel } = await import('../src/engine/place-synth.js');
  const { openModel } = await import('../src/formats/source.js');
  const { convertToFlashLayout } = await import('../src/formats/flash-layout.js');
  const { calibrate } = await import('../src/engine/calibrate.js');
  const { sparsify } = await import('../src/engine/sparsify.js');
  mkdirSync(dir, { recursive: true });
  const o = { layers: 8, hidden: 512, ffn: 8192, heads: 8, kvHeads: 8, vocab: 1024, ctx: 512, dtype: 'f32' as const, act: 'relu' as const, seed: 7, format: 'gguf' as const };
  const t0 = performance.now();
  const planted = plantedClusterModel(o, { clusters: 128, coherence: 0.9, seed: 7 }, join(dir, 'base.gguf'), join(dir, 'planted-f32.gguf'));
  rmSync(join(dir, 'base.gguf'));
  const flash = join(dir, 'planted-flash.gguf');
  const src = openModel(planted.path);
  try { convertToFlashLayout(src, flash, { quant: 'q8_0' }); } finally { src.close(); }
  rmSync(planted.path);
  const calib = join(dir, 'planted.calib.gguf');
  await calibrate(flash, { files: [text], tokens: 2000, seqLen: 128, out: calib });
  await sparsify(flash, calib, { sparsity: 0.9, rank: 64, predType: 'q8_0' });
  process.stderr.write(`made ${flash} (${(statSync(flash).size / 1e6).toFixed(0)} MB) and ${calib} in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
  process.stdout.write(`${JSON.stringify({ model: flash, calib, synth: o, clusters: 128, coherence: 0.9 })}\n`);
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: {
      placed: { type: 'string' }, calib: { type: 'string' }, 'placed-out': { type: 'string' }, cap: { type: 'string', default: '50' }, capacity: { type: 'string' },
      prompt: { type: 'string', short: 'p', default: 'def fibonacci(n):' }, n: { type: 'string', short: 'n', default: '16' },
      threads: { type: 'string', default: '2' }, window: { type: 'string', default: '5' }, collapse: { type: 'string' },
      admission: { type: 'string', default: 'default' }, 'gap-room': { type: 'string' }, runs: { type: 'string', default: '1' }, out: { type: 'string' },
      'make-synth': { type: 'string' }, text: { type: 'string', default: '/usr/lib/python3.11' },
      heldout: { type: 'string' }, 'prompt-tokens': { type: 'string', default: '32' },
      child: { type: 'string' }, force: { type: 'string' }, tokens: { type: 'string' }, mode: { type: 'string' }, memory: { type: 'string' }, load: { type: 'string' },
    },
    allowPositionals: true,
  });
  if (values['make-synth']) return makeSynth(values['make-synth'], values.text!);
  const model = positionals[0];
  if (values.child) return childMain(values, model!);
  if (!model) throw new Error('usage: ripple MODEL.gguf (--placed P.gguf | --calib C.gguf --placed-out P.gguf) [--cap 50] [-n 16] [--window 5] [--collapse G] [--admission default|ripple|both] [--heldout FILE [--prompt-tokens 32]]');
  let placed = values.placed;
  let placeSeconds: number | undefined;
  if (!placed) {
    if (!values.calib || !values['placed-out']) throw new Error('give --placed PLACED.gguf, or --calib CALIB.gguf and --placed-out OUT.gguf to place MODEL first');
    placed = values['placed-out'];
    if (!existsSync(placed)) {
      const { placeModel } = await import('../src/engine/place.js');
      const r = placeModel(model, values.calib, { out: placed });
      placeSeconds = r.seconds.stats + r.seconds.write;
      process.stderr.write(`placed ${placed} in ${placeSeconds.toFixed(1)} s\n`);
    }
  }
  const { RUNTIME_OVERHEAD_BYTES } = await import('../src/memory/budget.js');
  const { readGGUF } = await import('../src/formats/gguf.js');
  const { openFlashLayout } = await import('../src/formats/flash-layout.js');
  const { tokenizerFromGGUF } = await import('../src/tokenizer/index.js');
  const { loadDiskProfile, profilePathFor } = await import('../src/flash/profile.js');
  const { collapseThreshold } = await import('../src/flash/read-planner.js');
  const f = readGGUF(model); // header and metadata only
  const recordBytes = openFlashLayout(f).recordBytes;
  const tok = tokenizerFromGGUF(f.metadata);
  const n = Number(values.n), threads = Number(values.threads), window = Number(values.window);
  if (!Number.isInteger(n) || n < 2) throw new Error(`-n ${values.n}: needs an integer >= 2 (tokens/s is over the decode steps after the first)`);
  let prompt: number[];
  let force: number[] | undefined;
  let heldout: { file: string; text_tokens: number; prompt_tokens: number; prompt_ids: number[]; forced_tokens: number[]; prompt_text: string; forced_text: string } | undefined;
  if (values.heldout !== undefined) {
    const P = Number(values['prompt-tokens']);
    if (!Number.isInteger(P) || P < 1) throw new Error(`--prompt-tokens ${values['prompt-tokens']}: needs an integer >= 1 (BOS counts)`);
    const text = readFileSync(values.heldout, 'utf8');
    const ids = tok.encode(text, { addBos: true });
    if (ids.length < P + n) throw new Error(`${values.heldout}: ${ids.length} tokens (BOS included), need --prompt-tokens ${P} + -n ${n} = ${P + n}`);
    // the placed file is the same model with its records reordered: same vocabulary, same ids
    const placedIds = tokenizerFromGGUF(readGGUF(placed).metadata).encode(text, { addBos: true });
    if (placedIds.length !== ids.length || placedIds.some((t, i) => t !== ids[i])) throw new Error(`${placed} tokenizes ${values.heldout} differently from ${model}: not the same model`);
    prompt = ids.slice(0, P);
    force = ids.slice(P, P + n);
    heldout = { file: values.heldout, text_tokens: ids.length, prompt_tokens: P, prompt_ids: prompt, forced_tokens: force, prompt_text: tok.decode(prompt), forced_text: tok.decode(force) };
  } else {
    prompt = tok.encode(values.prompt!);
  }
  const size = statSync(model).size;
  const pct = Number(values.cap);
  // --capacity ROWS: neuron-matrix rows per layer instead of a --memory cap (models too small for a
  // percentage of the file to hold the runtime), run without a cgroup (reads are O_DIRECT either way)
  const capacity = values.capacity !== undefined ? Number(values.capacity) : undefined;
  const cap = capacity === undefined ? Math.floor((size * pct) / 100) : undefined;
  const limit = cap === undefined ? 0 : cap + RUNTIME_OVERHEAD_BYTES;
  // the engine's own choice (model.ts): the profile's largest chunk with its best reads in flight
  let gap = values.collapse !== undefined ? Number(values.collapse) : 0;
  let gapSource = values.collapse !== undefined ? 'option' : 'no disk profile: 0';
  if (values.collapse === undefined) {
    try {
      const prof = loadDiskProfile(profilePathFor(model));
      const biggest = Math.max(...prof.cells.map((c) => c.chunkBytes));
      const best = prof.cells.filter((c) => c.chunkBytes === biggest).reduce((a, b) => (b.mbps > a.mbps ? b : a));
      gap = collapseThreshold(prof, recordBytes, { inFlight: best.inFlight, maxReadBytes: best.chunkBytes });
      gapSource = `disk profile ${profilePathFor(model)} (${best.chunkBytes} B × ${best.inFlight} in flight)`;
    } catch { /* no profile: 0 */ }
  }
  const admissions = values.admission === 'both' ? ['default', 'ripple'] : [values.admission!];
  const gapRoom = values['gap-room'] !== undefined ? Number(values['gap-room']) : undefined;
  type Setting = { name: string; file: string; placement: string; collapseGap: number; admission: string };
  const settings: Setting[] = [];
  for (const adm of admissions) {
    for (const [placement, file] of [['identity', model], ['ripple', placed]] as const) {
      for (const g of gap > 0 ? [0, gap] : [0]) settings.push({ name: `${placement}${g ? '+collapse' : ''}${adm === 'ripple' ? '+linking-cache' : ''}`, file, placement, collapseGap: g, admission: adm });
    }
  }
  // one run's figures, per decode step (the child's counters after the first token)
  const metricsOf = (r: ChildResult): Record<string, number | null> | undefined => {
    const run = r.run, x = run?.sparse;
    if (!run || !x) return undefined;
    const ms = run.msPerToken, io = run.ioStallMsPerToken ?? NaN, mm = run.memoryMsPerToken ?? NaN;
    const num = (v: number) => (Number.isFinite(v) ? v : null);
    return {
      tokens_per_s: num(1000 / ms), ms_per_token: num(ms),
      io_wait_ms_per_token: num(io), memory_ms_per_token: num(mm), compute_ms_per_token: num(ms - io - mm),
      reads_per_token: num(x.reads!), runs_per_token: num(x.runs!),
      mean_read_records: num(x.records! / Math.max(1, x.reads!)), mean_read_bytes: num(x.bytes! / Math.max(1, x.reads!)),
      bytes_per_token: num(x.bytes!), records_per_token: num(x.records!), gap_records_per_token: num(x.gapRecords!),
      predicted_per_token: num(x.predicted!), needed_per_token: num(x.needed!), hits_per_token: num(x.hits!),
      overflow_per_token: num(x.overflow!), streamed_per_token: num(x.streamed!), computed_rows_per_token: num(x.computed!),
      hit_rate: num(x.hits! / Math.max(1, x.hits! + x.needed!)),
      bandwidth_MBps: num(x.bytes! / 1e3 / x.ioMs!),
      effective_MBps: num(((x.records! - x.gapRecords!) * recordBytes) / 1e3 / x.ioMs!),
      io_ms_per_token: num(x.ioMs!),
      prompt_ms: num(run.promptMs), load_ms: num(run.loadMs),
      // how many of the forced tokens the model's own argmax chose (a check that the tokenization fits the model)
      argmax_equal_forced: force ? run.logits?.filter((l, i) => l[0] === force![i]).length ?? null : null,
      peak_rss_bytes: num(run.peakRssBytes), cgroup_peak_bytes: r.cgroup?.peak ?? null, oom_kills: r.cgroup?.oomKills ?? 0,
    };
  };
  const rows: Record<string, unknown>[] = [];
  for (const s of settings) {
    const runs: ChildResult[] = [];
    const load = { window, collapseGap: s.collapseGap, admission: s.admission, ...(capacity ? { neuronCapacity: capacity } : {}), ...(gapRoom ? { gapRoom } : {}) };
    for (let k = 0; k < Number(values.runs); k++) {
      const r = spawnChild(self, { engine: 'flashlm', model: s.file, prompt, n, threads, mode: 'sparse', memory: cap, load, ...(force ? { force } : {}) }, limit);
      runs.push(r);
      if (r.error) process.stderr.write(`${s.name} run ${k + 1}: ${r.error}\n`);
    }
    const perRun = runs.map(metricsOf);
    const okRuns = perRun.filter((m): m is Record<string, number | null> => m !== undefined);
    const medians: Record<string, number | null> = {};
    for (const key of Object.keys(okRuns[0] ?? {})) {
      const xs = okRuns.map((m) => m[key]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
      medians[key] = xs.length ? median(xs) : null;
    }
    const first = runs.find((r) => r.run?.sparse)?.run;
    const row = {
      setting: s.name, file: s.file, placement: s.placement, collapse_gap: s.collapseGap, admission: s.admission, window,
      gap_room: gapRoom ?? 0, neuron_capacity: first?.capacity ?? null, read_plan: first?.readPlan ?? null,
      error: runs.find((r) => r.error)?.error, runs: okRuns.length, runs_failed: runs.length - okRuns.length,
      tokens: first?.tokens,
      ...medians,
      oom_kills: runs.reduce((a, r) => a + (r.cgroup?.oomKills ?? 0), 0),
      // every run's values, in run order (null: the run failed, see error)
      per_run: perRun.map((m) => m ?? null),
    } as Record<string, unknown> & { tokens?: number[] };
    rows.push(row);
    const v = (k: string) => row[k] as number | null | undefined;
    process.stderr.write(`${s.name}: ${v('reads_per_token')?.toFixed(1)} reads/token, ${((v('mean_read_bytes') ?? 0) / 1024).toFixed(1)} KiB/read, ` +
      `${v('predicted_per_token')?.toFixed(1)} predicted, ${v('needed_per_token')?.toFixed(1)} needed neurons/token, ` +
      `${v('effective_MBps')?.toFixed(0)} MB/s effective, ${v('tokens_per_s')?.toFixed(2)} tok/s${row.error ? ` (${String(row.error)})` : ''}\n`);
  }
  const base = rows.find((r) => r.setting === 'identity');
  const ratio = (key: string, inv = false) => Object.fromEntries(rows.map((r) => {
    const a = base?.[key] as number | null, b = r[key] as number | null;
    return [r.setting as string, a && b ? (inv ? b / a : a / b) : null];
  }));
  const result = {
    model, placed, model_bytes: size, placed_bytes: statSync(placed).size, record_bytes: recordBytes, cap_pct: cap === undefined ? null : pct, budget_bytes: cap ?? null, neuron_capacity: capacity ?? null, cgroup_limit_bytes: limit || null,
    prompt: heldout ? null : values.prompt, prompt_token_count: prompt.length, n, threads, window,
    // teacher forcing: null when decoding greedily from --prompt
    heldout: heldout?.file ?? null, heldout_text_tokens: heldout?.text_tokens ?? null, prompt_tokens: heldout?.prompt_tokens ?? null,
    prompt_ids: prompt, forced_tokens: force ?? null, prompt_text: heldout?.prompt_text ?? null, forced_text: heldout?.forced_text ?? null,
    collapse_gap: gap, collapse_gap_source: gapSource, gap_room: gapRoom ?? 0, admissions, place_seconds: placeSeconds, runs_per_setting: Number(values.runs),
    same_tokens: rows.every((r) => JSON.stringify(r.tokens) === JSON.stringify(base?.tokens)),
    // per placement (record positions differ between the files, neuron ids do not): predicted and
    // needed neurons/token of each setting (medians), and the spread (max / min − 1) within it
    neurons_per_token_by_placement: Object.fromEntries(['identity', 'ripple'].map((p) => {
      const rs = rows.filter((r) => r.placement === p);
      const spread = (k: string) => {
        const xs = rs.map((r) => r[k]).filter((x): x is number => typeof x === 'number' && x > 0);
        return xs.length ? Math.max(...xs) / Math.min(...xs) - 1 : null;
      };
      return [p, {
        predicted: Object.fromEntries(rs.map((r) => [r.setting, r.predicted_per_token])), predicted_spread: spread('predicted_per_token'),
        needed: Object.fromEntries(rs.map((r) => [r.setting, r.needed_per_token])), needed_spread: spread('needed_per_token'),
      }];
    })),
    // greedy tokens equal to the identity run's for this many steps (row order changes float sums;
    // with a full matrix, which predicted neurons overflow depends on the cache contents)
    rows: rows.map(({ tokens, ...r }) => {
      const a = (tokens ?? []) as number[], b = (base?.tokens ?? []) as number[];
      let k = 0;
      while (k < a.length && a[k] === b[k]) k++;
      return { ...r, tokens_equal_to_identity: k };
    }),
    vs_identity: { reads_fewer_x: ratio('reads_per_token'), effective_bandwidth_x: ratio('effective_MBps', true), tokens_per_s_x: ratio('tokens_per_s', true), io_ms_fewer_x: ratio('io_ms_per_token') },
  };
  const json = `${JSON.stringify(result, null, 1)}\n`;
  process.stdout.write(json);
  if (values.out) writeFileSync(values.out, json);
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exitCode = 1;
});
