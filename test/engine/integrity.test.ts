// A flash-layout file that changed after conversion must be refused with a ChecksumError naming the
// region, in every mode, before its bytes reach the output; a file truncated while a model runs
// must stop the request with a FlashIOError (not a hang or garbage).
import assert from 'node:assert/strict';
import { test, after } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Model } from '../../src/engine/model.js';
import { readGGUF } from '../../src/formats/gguf.js';
import { flashLayoutCached, greedyRun, testDir } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';

const o: SynthOptions = { layers: 3, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 128, dtype: 'f32', act: 'silu', seed: 21, format: 'gguf' };
const prompt = [1, 300, 301, 302];
const dir = testDir('integrity');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A copy of the flash file with one byte flipped at `offset`. */
async function corrupted(name: string, offset: (f: ReturnType<typeof readGGUF>) => number): Promise<string> {
  const src = await flashLayoutCached(o, 'q8_0');
  const dst = path.join(dir, `${name}.gguf`);
  fs.copyFileSync(src, dst);
  const at = offset(readGGUF(dst));
  const fd = fs.openSync(dst, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, at);
  b[0] = b[0]! ^ 0x10;
  fs.writeSync(fd, b, 0, 1, at);
  fs.closeSync(fd);
  return dst;
}

const tensorAt = (name: string, frac = 0.5) => (f: ReturnType<typeof readGGUF>) => {
  const t = f.tensorByName.get(name)!;
  return t.offset + Math.floor(t.bytes * frac);
};

const isChecksum = (what: RegExp) => (e: Error) => e.name === 'ChecksumError' && what.test(e.message) && /changed after conversion/.test(e.message);

test('a resident tensor changed after conversion: ram and hybrid refuse at load, naive at first use', async () => {
  const p = await corrupted('attn', tensorAt('blk.1.attn_v.weight'));
  for (const mode of ['ram', 'hybrid'] as const) await assert.rejects(Model.load(p, { ctx: 8, mode }), isChecksum(/tensor 'blk\.1\.attn_v\.weight'/), mode);
  const m = await Model.load(p, { ctx: 8, mode: 'naive' });
  try {
    await assert.rejects(m.prefillAsync(prompt), isChecksum(/tensor 'blk\.1\.attn_v\.weight'/));
  } finally {
    await m.close();
  }
});

test('an FFN bundle block changed after conversion: every mode refuses, naming layer and block', async () => {
  const p = await corrupted('bundle', tensorAt('blk.2.ffn_bundle', 0.9));
  await assert.rejects(Model.load(p, { ctx: 8, mode: 'ram' }), isChecksum(/layer 2 FFN bundle block 0/));
  for (const mode of ['hybrid', 'naive'] as const) {
    const m = await Model.load(p, { ctx: 8, mode });
    try {
      await assert.rejects(m.prefillAsync(prompt), isChecksum(/layer 2 FFN bundle block 0/), mode);
    } finally {
      await m.close();
    }
  }
});

test('metadata changed after conversion: refused at load (header digest); verify: false loads it', async () => {
  const p2 = await corrupted('header', (f) => {
    const head = fs.readFileSync(f.path).subarray(0, f.dataOffset);
    return head.indexOf(Buffer.from('flashlm-synth-')) + 3; // inside general.name's value
  });
  await assert.rejects(Model.load(p2, { ctx: 8 }), isChecksum(/header \(metadata and tensor infos\)/));
  const m = await Model.load(p2, { ctx: 8, verify: false });
  await m.close();
});

test('an intact file passes every check in every mode (and produces RAM mode tokens)', async () => {
  const p = await flashLayoutCached(o, 'q8_0');
  const ram = await greedyRun(p, prompt, 4, { mode: 'ram' });
  for (const mode of ['hybrid', 'naive'] as const) assert.deepEqual((await greedyRun(p, prompt, 4, { mode })).tokens, ram.tokens, mode);
});

test('file truncated while running (hybrid, naive): the next token fails with FlashIOError naming the file', async () => {
  for (const mode of ['hybrid', 'naive'] as const) {
    const p = path.join(dir, `trunc-${mode}.gguf`);
    fs.copyFileSync(await flashLayoutCached(o, 'q8_0'), p);
    const m = await Model.load(p, { ctx: 16, mode });
    try {
      await m.prefillAsync(prompt);
      fs.truncateSync(p, Math.floor(fs.statSync(p).size * 0.6));
      await assert.rejects(async () => { for (let i = 0; i < 3; i++) await m.decodeAsync(5); },
        (e: Error) => e.name === 'FlashIOError' && e.message.includes(p) && /offset \d+/.test(e.message), mode);
    } finally {
      await m.close();
    }
  }
});
