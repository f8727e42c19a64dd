// What reading the KV cache through a page table costs, measured two ways:
//  1. kernel: Compute.attention over nPos positions, contiguous cache (pageTable 0) vs pages of 16
//     positions in shuffled order (a page table lookup and a jump per page); f16 K/V, 32 heads ×
//     128 (a 7B/13B layer's shape), threads 1 and 2. Calls alternate (contiguous, paged, ...) and
//     each is timed alone: the medians compare like with like on a machine busy with other work.
//  2. end to end: greedy decode of a synth model after a long prompt, KV pages of 16 positions
//     (two sequences prefilled in alternating chunks, so each one's pages alternate in memory) vs
//     one page per sequence (pageSize = ctx: the contiguous layout, one table entry). Both models
//     are loaded side by side and their decode steps alternate; median ms per step. Same tokens
//     either way (checked).
// Usage: node dist/bench/paged-attention.js [--runs 5] [--npos 256,1024,4096] [--prompt 1000] [--decode 64]
// Prints JSON.
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { existsSync, mkdirSync } from 'node:fs';
import { Compute, GGMLType } from '../src/kernels/index.js';
import { Model } from '../src/engine/model.js';
import { argmax } from '../src/engine/sample.js';
import { synthModel } from '../src/engine/synth.js';

const argv = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1]! : dflt;
};
const RUNS = Number(opt('runs', '5'));
const NPOS = opt('npos', '256,1024,4096').split(',').map(Number);
const PROMPT = Number(opt('prompt', '1000'));
const DECODE = Number(opt('decode', '64'));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function kernel(threads: number, nPos: number): Promise<{ threads: number; nPos: number; contiguousUs: number; pagedUs: number; ratio: number }> {
  const nHeads = 32, nKv = 32, headDim = 128, stride = nKv * headDim, es = 2, pageSize = 16;
  const c = await Compute.create({ threads });
  try {
    const nPages = Math.ceil(nPos / pageSize);
    const region = nPages * pageSize * stride * es;
    const a = c.createArena(4 * region + (8 << 20));
    const kc = a.alloc(region), vc = a.alloc(region), kp = a.alloc(region), vp = a.alloc(region);
    const u16 = (off: number) => a.u16(off, region / 2);
    for (const off of [kc, vc, kp, vp]) {
      const v = u16(off);
      for (let i = 0; i < v.length; i++) v[i] = 0x3000 | (i * 2654435761 % 0x3ff); // small finite halves
    }
    const ids = Array.from({ length: nPages }, (_, i) => i);
    for (let i = nPages - 1; i > 0; i--) {
      const j = (i * 7919) % (i + 1);
      [ids[i], ids[j]] = [ids[j]!, ids[i]!];
    }
    const tab = a.alloc(nPages * 4, 4);
    new Int32Array(a.memory.buffer, tab, nPages).set(ids);
    const q = a.alloc(nHeads * headDim * 4), out = a.alloc(nHeads * headDim * 4), scratch = a.alloc(nHeads * nPos * 4);
    a.f32(q, nHeads * headDim).fill(0.01);
    const base = { q, out, scratch, kvType: GGMLType.F16, nHeads, nKvHeads: nKv, headDim, nPos, kvStride: stride };
    const pc = { ...base, k: kc, v: vc };
    const pp = { ...base, k: kp, v: vp, pageTable: tab, pageSize };
    const reps = RUNS * Math.max(20, Math.round(4e4 / nPos));
    const time = (p: typeof pc) => {
      const t0 = performance.now();
      c.attention(a, p);
      return (performance.now() - t0) * 1000;
    };
    for (let r = 0; r < 5; r++) time(pc), time(pp); // warm up
    const cs: number[] = [], ps: number[] = [];
    for (let r = 0; r < reps; r++) {
      cs.push(time(pc));
      ps.push(time(pp));
    }
    const contiguousUs = median(cs), pagedUs = median(ps);
    return { threads, nPos, contiguousUs: Math.round(contiguousUs * 10) / 10, pagedUs: Math.round(pagedUs * 10) / 10, ratio: Math.round((pagedUs / contiguousUs) * 1000) / 1000 };
  } finally {
    await c.close();
  }
}

function modelPath(): string {
  const dir = join(tmpdir(), 'flashlm-bench');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'paged-attention-synth.gguf');
  // attention-heavy at long context: 4 layers, hidden 512 (8 heads × 64), small FFN
  if (!existsSync(path)) synthModel({ layers: 4, hidden: 512, ffn: 1024, heads: 8, kvHeads: 8, vocab: 512, ctx: 4096, dtype: 'q8_0', act: 'silu', seed: 3, format: 'gguf' }, path);
  return path;
}

/** A model with two sequences prefilled in alternating chunks of 8 tokens (with small pages, each
 * sequence's pages alternate in memory); returns a step function decoding sequence 0 greedily. */
async function prepared(path: string, pageSize: number) {
  const ctx = PROMPT + DECODE;
  const m = await Model.load(path, { ctx, threads: 2, sequences: 2, kvPageSize: pageSize, kvPositions: 2 * Math.ceil(ctx / pageSize) * pageSize });
  const seqs = [await m.openSequence(ctx), await m.openSequence(ctx)];
  const prompt = (s: number) => Array.from({ length: PROMPT }, (_, i) => (i * (s + 3) + 1) % 512);
  let last!: Float32Array;
  for (let i = 0; i < PROMPT; i += 8) {
    for (let s = 0; s < 2; s++) {
      const l = await m.prefillSeq(seqs[s]!, prompt(s).slice(i, i + 8));
      if (s === 0) last = l;
    }
  }
  const tokens: number[] = [];
  return {
    m, tokens, pages: seqs[0]!.pages,
    async step(): Promise<number> {
      const t = argmax(last);
      tokens.push(t);
      const t0 = performance.now();
      last = await m.decodeSeq(seqs[0]!, t);
      return performance.now() - t0;
    },
  };
}

async function main(): Promise<void> {
  const kernels = [];
  for (const threads of [1, 2]) for (const n of NPOS) kernels.push(await kernel(threads, n));
  const path = modelPath();
  const ctx = PROMPT + DECODE;
  const paged = await prepared(path, 16);
  const contiguous = await prepared(path, ctx);
  const msPaged: number[] = [], msContig: number[] = [];
  for (let i = 0; i < DECODE; i++) {
    msPaged.push(await paged.step());
    msContig.push(await contiguous.step());
  }
  const same = JSON.stringify(paged.tokens) === JSON.stringify(contiguous.tokens);
  const interleaved = paged.pages.some((id, i) => i > 0 && id !== paged.pages[i - 1]! + 1);
  await paged.m.close();
  await contiguous.m.close();
  const r2 = (x: number) => Math.round(x * 100) / 100;
  process.stdout.write(`${JSON.stringify({
    kernel: { shape: '32 heads × 128, f16 K/V, pages of 16 shuffled', results: kernels },
    decode: {
      model: 'synth q8_0: 4 layers, hidden 512, 8 heads, ffn 1024', prompt: PROMPT, decoded: DECODE, threads: 2,
      pages16_interleaved_with_another_sequence: interleaved,
      ms_per_token_paged16: r2(median(msPaged)), ms_per_token_contiguous: r2(median(msContig)),
      tokens_per_s_paged16: r2(1000 / median(msPaged)), tokens_per_s_contiguous: r2(1000 / median(msContig)),
      ratio_paged_over_contiguous_ms: Math.round((median(msPaged) / median(msContig)) * 1000) / 1000, same_tokens: same,
    },
  }, null, 1)}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
});
