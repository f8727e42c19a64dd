// Golden fixtures from llama.cpp (through node-llama-cpp) for synth models.
//
//   npm run build:ts && npm run fixtures        (runs dist/scripts/gen-fixtures.js)
//
// For each model below: synthesise it (the tests regenerate it from the recorded options; no .gguf is
// committed), tokenize the prompts with llama.cpp, greedy-decode N_GEN tokens and record the tokens,
// the per-step top1 − top2 logit margins and either the full logits (f32 model, base64 of
// little-endian Float32) or the top-5 ids and logits per step (f16 / quantized models).
// Seeds are picked from a fixed candidate range: the first whose greedy run has a minimum margin of at
// least MIN_MARGIN[dtype] and is not degenerate (few distinct tokens, long runs of one token) wins;
// the file says which seeds were skipped and why. llama.cpp runs with F32 K/V (all-f32 attention, the
// cleanest reference), flash attention off, 2 threads, default batch (the prompt is one batch).
// Writes test/fixtures/golden/*.json and prints a summary.

import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  closeLlamaCpp, llamaCppGreedy, llamaCppTokenize, llamaCppVersion, type LlamaCppContextSettings,
} from '../bench/llamacpp-peer.js';
import { synthModel, type SynthOptions } from '../src/engine/synth.js';
import { readGGUF, readTensorData } from '../src/formats/gguf.js';

const HERE = dirname(fileURLToPath(import.meta.url));
// compiled to dist/scripts/: the repo root is two levels up; run from source layout it is one.
const ROOT = resolve(HERE, HERE.includes(`${join('dist', 'scripts')}`) ? '../..' : '..');
const OUT_DIR = join(ROOT, 'test', 'fixtures', 'golden');

const N_GEN = 32;
const THREADS = 2;
// Smallest accepted top1 − top2 logit gap over the greedy steps. Quantized models need more: their
// activations are quantized to q8_0 before every matmul (as ggml does), so a tiny input difference
// can flip an int8 rounding and move the logits by ~0.01 per flip (F16 instead of F32 KV moves them
// by ~0.15; for f32/f16 weights by ~0.005).
const MIN_MARGIN: Record<SynthOptions['dtype'], number> = { f32: 0.03, f16: 0.03, q8_0: 0.1, q4_0: 0.1 };
const MIN_DISTINCT = 12; // greedy tokens must not collapse to a few repeated tokens
const MAX_RUN = 3; // nor repeat one token more than this many times in a row
const N_CANDIDATES = 64; // candidate seeds per model

const GREEDY_PROMPT = 'The quick brown fox jumps over the lazy dog. Once upon a time, in a small house on the hill,';

// Tokenizer cases (all synth models of one vocab size share the vocabulary).
const TOKENIZE_TEXTS = [
  '',
  'Hello world',
  ' Hello world',
  'Hello  world',
  'the the the',
  'The quick brown fox jumps over the lazy dog.',
  'function add(a, b) { return a + b; }',
  'if (i < 10 && x > 2) print("ok");',
  'line one\nline two\n\ttabbed',
  'café, naïve, 日本語, emoji 🙂',
  'In 2024, 17 of the 32 tests passed.',
  'weights stream from flash while the engine computes',
  '<s> is not special here </s>',
  '   leading and trailing   ',
];

interface ModelSpec {
  name: string;
  description: string;
  base: Omit<SynthOptions, 'seed'>;
  seedBase: number; // candidate seeds: seedBase, seedBase + 1, … (N_CANDIDATES of them)
  logits: 'full' | 'top5';
}

const MODELS: ModelSpec[] = [
  {
    name: 'A-f32',
    description: 'f32, SiLU, MHA: 2 layers, hidden 64, ffn 192, 4 heads / 4 kv heads, vocab 512',
    base: { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 4, vocab: 512, ctx: 256, dtype: 'f32', act: 'silu', format: 'gguf' },
    seedBase: 1,
    logits: 'full',
  },
  {
    name: 'B-q8_0',
    description: 'q8_0, SiLU, GQA: 3 layers, hidden 128, ffn 352, 8 heads / 2 kv heads, vocab 512',
    base: { layers: 3, hidden: 128, ffn: 352, heads: 8, kvHeads: 2, vocab: 512, ctx: 256, dtype: 'q8_0', act: 'silu', format: 'gguf' },
    seedBase: 101,
    logits: 'top5',
  },
  {
    name: 'C-q4_0',
    description: 'q4_0, SiLU, MQA: 2 layers, hidden 64, ffn 128, 2 heads (dim 32) / 1 kv head, vocab 512',
    base: { layers: 2, hidden: 64, ffn: 128, heads: 2, kvHeads: 1, vocab: 512, ctx: 256, dtype: 'q4_0', act: 'silu', format: 'gguf' },
    seedBase: 201,
    logits: 'top5',
  },
  {
    name: 'D-f16',
    description: 'f16, SiLU, GQA: 2 layers, hidden 64, ffn 160, 4 heads / 2 kv heads, vocab 512',
    base: { layers: 2, hidden: 64, ffn: 160, heads: 4, kvHeads: 2, vocab: 512, ctx: 256, dtype: 'f16', act: 'silu', format: 'gguf' },
    seedBase: 301,
    logits: 'top5',
  },
];

/** sha256 over the data bytes of all tensors in file order (independent of the header layout). */
function tensorDataSha256(path: string): string {
  const f = readGGUF(path);
  const h = createHash('sha256');
  for (const t of f.tensors) {
    const buf = new Uint8Array(t.bytes);
    readTensorData(path, t, buf);
    h.update(buf);
  }
  return h.digest('hex');
}

function maxRun(t: number[]): number {
  let best = 0;
  for (let i = 0, run = 0; i < t.length; i++) {
    run = i > 0 && t[i] === t[i - 1] ? run + 1 : 1;
    best = Math.max(best, run);
  }
  return best;
}

function margins(logits: Float32Array[]): number[] {
  return logits.map((l) => {
    let a = -Infinity;
    let b = -Infinity;
    for (const v of l) {
      if (v > a) [a, b] = [v, a];
      else if (v > b) b = v;
    }
    return a - b;
  });
}

function top5(l: Float32Array): [number, number][] {
  const idx = Array.from(l.keys()).sort((x, y) => l[y]! - l[x]! || x - y);
  return idx.slice(0, 5).map((i) => [i, l[i]!]);
}

function f32Base64(rows: Float32Array[]): string {
  const all = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
  let off = 0;
  for (const r of rows) {
    all.set(r, off);
    off += r.length;
  }
  return Buffer.from(all.buffer, all.byteOffset, all.byteLength).toString('base64');
}

const round6 = (x: number): number => Number(x.toPrecision(7));

async function main(): Promise<void> {
  mkdirSync(OUT_DIR, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'flashlm-fixtures-'));
  const version = llamaCppVersion();
  const written: string[] = [];
  const summary: string[] = [];
  try {
    // 1. tokenizer cases for the 512-token synth vocab
    {
      const p = join(work, 'vocab.gguf');
      synthModel({ ...MODELS[0]!.base, seed: 0 }, p);
      const cases = [];
      for (const text of TOKENIZE_TEXTS) {
        cases.push({ text, withBos: await llamaCppTokenize(p, text, true), noBos: await llamaCppTokenize(p, text, false) });
      }
      const file = join(OUT_DIR, 'synth-vocab512-tokenize.json');
      writeJSON(file, {
        about: 'llama.cpp tokenization (parse_special=false) of the synth vocabulary of 512 tokens (synthVocab(512)); '
          + 'withBos = add_special (BOS prepended, add_bos_token is true), noBos = without',
        generatedBy: 'scripts/gen-fixtures.ts',
        llamaCpp: version,
        vocab: 512,
        cases,
      });
      written.push(file);
    }

    // 2. greedy runs
    for (const m of MODELS) {
      const skipped: string[] = [];
      let chosen: Record<string, unknown> | undefined;
      const seeds = Array.from({ length: N_CANDIDATES }, (_, i) => m.seedBase + i);
      for (const seed of seeds) {
        const opts: SynthOptions = { ...m.base, seed };
        const p = join(work, `${m.name}-${seed}.gguf`);
        synthModel(opts, p);
        const promptTokens = await llamaCppTokenize(p, GREEDY_PROMPT, true);
        // Search with 1 thread (much faster on a busy 2-core machine); ggml's results do not depend on
        // the thread count, which the recorded 2-thread run below checks bit for bit.
        const r = await llamaCppGreedy(p, promptTokens, N_GEN, { threads: 1, ctx: m.base.ctx, logits: true, kvF32: true });
        const logits = r.logits!;
        const mg = margins(logits);
        const minMargin = Math.min(...mg);
        const distinct = new Set(r.tokens).size;
        const run = maxRun(r.tokens);
        // argmax of the recorded logits must be the token llama.cpp chose
        logits.forEach((l, i) => {
          if (top5(l)[0]![0] !== r.tokens[i]) throw new Error(`${m.name} seed ${seed}: step ${i} token ${r.tokens[i]} is not the argmax`);
        });
        const minMarginWanted = MIN_MARGIN[m.base.dtype];
        if (minMargin < minMarginWanted || distinct < MIN_DISTINCT || run > MAX_RUN) {
          skipped.push(`seed ${seed} (margin ${minMargin.toFixed(4)}, ${distinct} distinct, run ${run})`);
          rmSync(p, { force: true });
          continue;
        }
        let settings: LlamaCppContextSettings | undefined;
        const r2 = await llamaCppGreedy(p, promptTokens, N_GEN, { threads: THREADS, ctx: m.base.ctx, logits: true, kvF32: true }, (s) => (settings = s));
        r2.logits!.forEach((l, i) => {
          if (!l.every((v, j) => Object.is(v, logits[i]![j]))) throw new Error(`${m.name} seed ${seed}: ${THREADS}-thread logits differ from 1-thread logits at step ${i}`);
        });
        const f16kv = await llamaCppGreedy(p, promptTokens, N_GEN, { threads: THREADS, ctx: m.base.ctx, logits: false, kvF32: false });
        chosen = {
          name: m.name,
          description: m.description,
          generatedBy: 'scripts/gen-fixtures.ts',
          llamaCpp: { ...version, context: settings },
          synth: opts,
          tensorDataSha256: tensorDataSha256(p),
          seedSelection: `first of candidate seeds ${m.seedBase}..${m.seedBase + N_CANDIDATES - 1} whose greedy run has `
            + `min top1−top2 margin ≥ ${minMarginWanted}, ≥ ${MIN_DISTINCT} distinct tokens and no token ${MAX_RUN + 1}× in a row`
            + (skipped.length ? `; skipped: ${skipped.join(', ')}` : ''),
          prompt: { text: GREEDY_PROMPT, tokens: promptTokens },
          greedy: {
            n: N_GEN,
            tokens: r.tokens,
            margins: mg.map(round6),
            minMargin: round6(minMargin),
            distinctTokens: distinct,
            tokensWithKvF16: f16kv.tokens, // same options but F16 K/V cache (llama.cpp's default); informative
            kvF16SameTokens: f16kv.tokens.every((t, i) => t === r.tokens[i]),
          },
          ...(m.logits === 'full'
            ? { logits: { about: 'logits[i] is the vector tokens[i] was chosen from; row-major [n × vocab] little-endian float32, base64', shape: [N_GEN, m.base.vocab], f32le: f32Base64(logits) } }
            : { top5: { about: 'per step: the 5 largest logits as [token id, logit], largest first', steps: logits.map((l) => top5(l).map(([i, v]) => [i, round6(v)])) } }),
        };
        summary.push(`${m.name}: seed ${seed}, min margin ${minMargin.toFixed(4)}, ${distinct} distinct of ${N_GEN}, `
          + `kv f16 ${chosen.greedy && (chosen.greedy as { kvF16SameTokens: boolean }).kvF16SameTokens ? 'same' : 'DIFFERENT'} tokens`
          + (skipped.length ? ` (skipped ${skipped.length} seeds)` : ''));
        rmSync(p, { force: true });
        break;
      }
      if (!chosen) throw new Error(`${m.name}: no candidate seed passed (${skipped.join('; ')})`);
      const file = join(OUT_DIR, `${m.name}.json`);
      writeJSON(file, chosen);
      written.push(file);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
    await closeLlamaCpp();
  }
  let total = 0;
  for (const f of written) {
    const n = readFileSync(f).length;
    total += n;
    console.log(`wrote ${f.slice(ROOT.length + 1)} (${(n / 1024).toFixed(1)} KiB)`);
  }
  console.log(`total ${(total / 1024).toFixed(1)} KiB, llama.cpp ${version.llamaCpp} via node-llama-cpp ${version.nodeLlamaCpp}`);
  for (const s of summary) console.log(s);
}

/** JSON with one key per line but arrays of numbers / short arrays on one line (diff-friendly, small). */
function pretty(v: unknown, indent = ''): string {
  const flat = (x: unknown): boolean => x === null || typeof x !== 'object' || (Array.isArray(x) && x.every((y) => y === null || typeof y !== 'object'));
  if (Array.isArray(v)) {
    if (v.every(flat)) return JSON.stringify(v);
    return `[\n${v.map((x) => `${indent}  ${pretty(x, `${indent}  `)}`).join(',\n')}\n${indent}]`;
  }
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    return `{\n${entries.map(([k, x]) => `${indent}  ${JSON.stringify(k)}: ${pretty(x, `${indent}  `)}`).join(',\n')}\n${indent}}`;
  }
  return JSON.stringify(v);
}

function writeJSON(file: string, value: unknown): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, `${pretty(value)}\n`);
  renameSync(tmp, file);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e);
    process.exitCode = 1;
  });
}
