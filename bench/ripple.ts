// Ripple (arXiv 2410.19274) side by side in one run: identity vs co-activation placement, each
// with and without access collapse (and, with --admission both, the default window cache vs the
// linking-aligned one), sparse mode under one memory cap. Every setting runs in its own child
// process inside the same cgroup-v1 limit (budget + runtime overhead), page cache dropped first.
// Prints JSON per setting: reads/token, mean read length (records and bytes), raw and effective
// bandwidth (needed bytes / read time), summed read ms/token, I/O wait ms/token, tokens/s.
//
//   node dist/bench/ripple.js MODEL.gguf (--placed PLACED.gguf | --calib CALIB.gguf --placed-out P.gguf)
//        [--cap 50 | --capacity ROWS] [-n 16] [--window 5] [--collapse G] [--admission default|ripple|both] [--gap-room R] [--runs 1] [--out results.json]
//   node dist/bench/ripple.js --make-synth DIR [--text /usr/lib/python3.11]   (planted-cluster ReLU model)
//
// MODEL is a flash-layout file with predictors (calibrate + sparsify). Without --collapse the gap is
// the one the engine derives from the disk profile (0 when the profile says reads are bandwidth-bound).
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
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
      child: { type: 'string' }, tokens: { type: 'string' }, mode: { type: 'string' }, memory: { type: 'string' }, load: { type: 'string' },
    },
    allowPositionals: true,
  });
  if (values['make-synth']) return makeSynth(values['make-synth'], values.text!);
  const model = positionals[0];
  if (values.child) return childMain(values, model!);
  if (!model) throw new Error('usage: ripple MODEL.gguf (--placed P.gguf | --calib C.gguf --placed-out P.gguf) [--cap 50] [-n 16] [--window 5] [--collapse G] [--admission default|ripple|both]');
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
  const f = readGGUF(model);
  const recordBytes = openFlashLayout(f).recordBytes;
  const prompt = tokenizerFromGGUF(f.metadata).encode(values.prompt!);
  const size = statSync(model).size;
  const pct = Number(values.cap);
  // --capacity ROWS: neuron-matrix rows per layer instead of a --memory cap (models too small for a
  // percentage of the file to hold the runtime), run without a cgroup (reads are O_DIRECT either way)
  const capacity = values.capacity !== undefined ? Number(values.capacity) : undefined;
  const cap = capacity === undefined ? Math.floor((size * pct) / 100) : undefined;
  const limit = cap === undefined ? 0 : cap + RUNTIME_OVERHEAD_BYTES;
  const n = Number(values.n), threads = Number(values.threads), window = Number(values.window);
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
  const rows: Record<string, unknown>[] = [];
  for (const s of settings) {
    const runs: ChildResult[] = [];
    for (let k = 0; k < Number(values.runs); k++) {
      const r = spawnChild(self, { engine: 'flashlm', model: s.file, prompt, n, threads, mode: 'sparse', memory: cap, load: { window, collapseGap: s.collapseGap, admission: s.admission, ...(capacity ? { neuronCapacity: capacity } : {}), ...(gapRoom ? { gapRoom } : {}) } }, limit);
      runs.push(r);
    }
    const ok = runs.filter((r) => r.run?.sparse);
    const pick = <T>(get: (x: Record<string, number>, r: NonNullable<ChildResult['run']>) => T): T[] => ok.map((r) => get(r.run!.sparse!, r.run!));
    const med = (xs: number[]) => (xs.length ? median(xs) : null);
    const reads = med(pick((x) => x.reads!));
    const row = {
      setting: s.name, placement: s.placement, collapse_gap: s.collapseGap, admission: s.admission, error: runs.find((r) => r.error)?.error,
      runs: ok.length,
      tokens: ok[0]?.run?.tokens,
      reads_per_token: reads,
      mean_read_records: med(pick((x) => x.records! / Math.max(1, x.reads!))),
      mean_read_bytes: med(pick((x) => x.bytes! / Math.max(1, x.reads!))),
      bytes_per_token: med(pick((x) => x.bytes!)),
      gap_records_per_token: med(pick((x) => x.gapRecords!)),
      needed_per_token: med(pick((x) => x.needed!)),
      hit_rate: med(pick((x) => x.hits! / Math.max(1, x.hits! + x.needed!))),
      bandwidth_MBps: med(pick((x) => x.bytes! / 1e3 / x.ioMs!)),
      effective_MBps: med(pick((x) => ((x.records! - x.gapRecords!) * recordBytes) / 1e3 / x.ioMs!)),
      io_ms_per_token: med(pick((x) => x.ioMs!)),
      io_wait_ms_per_token: med(pick((_, r) => r.ioStallMsPerToken ?? NaN)),
      memory_ms_per_token: med(pick((_, r) => r.memoryMsPerToken ?? NaN)),
      tokens_per_s: med(pick((_, r) => 1000 / r.msPerToken)),
      peak_rss_bytes: med(pick((_, r) => r.peakRssBytes)),
      cgroup_peak_bytes: runs[0]?.cgroup?.peak ?? null, oom_kills: runs.reduce((a, r) => a + (r.cgroup?.oomKills ?? 0), 0),
    };
    rows.push(row as Record<string, unknown>);
    process.stderr.write(`${s.name}: ${row.reads_per_token?.toFixed(1)} reads/token, ${((row.mean_read_bytes ?? 0) / 1024).toFixed(1)} KiB/read, ` +
      `${row.effective_MBps?.toFixed(0)} MB/s effective, ${row.tokens_per_s?.toFixed(2)} tok/s${row.error ? ` (${row.error})` : ''}\n`);
  }
  const base = rows.find((r) => r.setting === 'identity');
  const ratio = (key: string, inv = false) => Object.fromEntries(rows.map((r) => {
    const a = base?.[key] as number | null, b = r[key] as number | null;
    return [r.setting as string, a && b ? (inv ? b / a : a / b) : null];
  }));
  const result = {
    model, placed, model_bytes: size, record_bytes: recordBytes, cap_pct: cap === undefined ? null : pct, budget_bytes: cap ?? null, neuron_capacity: capacity ?? null, cgroup_limit_bytes: limit || null, prompt: values.prompt, n, threads, window,
    collapse_gap: gap, collapse_gap_source: gapSource, gap_room: gapRoom ?? 0, place_seconds: placeSeconds, runs_per_setting: Number(values.runs),
    same_tokens: rows.every((r) => JSON.stringify(r.tokens) === JSON.stringify(base?.tokens)),
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
