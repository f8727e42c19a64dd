// --mode hybrid (resident part in DRAM, each layer's whole FFN read from flash every token with
// O_DIRECT, layer l+1 read while layer l computes) must compute exactly what RAM mode computes on the
// same flash-layout file: same arithmetic, only where the records come from differs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Model, type LoadModelOptions } from '../../src/engine/model.js';
import { flashLayoutCached, greedyRun } from '../helpers.js';
import type { SynthOptions } from '../../src/engine/synth.js';

const o: SynthOptions = { layers: 3, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 128, dtype: 'f32', act: 'silu', seed: 21, format: 'gguf' };
const prompt = [1, 300, 301, 302, 303];
const steps = 10;

const run = (path: string, opts: LoadModelOptions) => greedyRun(path, prompt, steps, opts);

for (const quant of ['q8_0', 'f32'] as const) {
  test(`hybrid mode equals RAM mode bit for bit (${quant})`, async () => {
    const path = await flashLayoutCached(o, quant);
    const ram = await run(path, { mode: 'ram' });
    const hyb = await run(path, { mode: 'hybrid' });
    assert.deepEqual(hyb.tokens, ram.tokens);
    for (let i = 0; i < steps; i++) assert.deepEqual(hyb.logits[i], ram.logits[i], `step ${i}`);
    const st = hyb.model.ffnSource!.stats;
    const tokens = prompt.length + steps - 1;
    // every token reads every layer's records (plus at most one prefetch of layer 0 for a next token)
    assert.ok(st.layerReads >= tokens * o.layers && st.layerReads <= tokens * o.layers + 1, `layer reads ${st.layerReads}`);
    assert.ok(st.bytes >= tokens * o.layers * o.ffn * 512);
  });
}

for (const quant of ['q8_0', 'f32'] as const) {
  test(`naive mode (every weight read per token) equals RAM mode bit for bit (flash layout, ${quant})`, async () => {
    const path = await flashLayoutCached(o, quant);
    const ram = await run(path, { mode: 'ram' });
    const nai = await run(path, { mode: 'naive' });
    assert.deepEqual(nai.tokens, ram.tokens);
    for (let i = 0; i < steps; i++) assert.deepEqual(nai.logits[i], ram.logits[i], `step ${i}`);
    const st = nai.model.ffnSource!.stats;
    const tokens = prompt.length + steps - 1;
    // every token reads every layer and the output layer (+ at most one prefetch of layer 0)
    assert.ok(st.layerReads >= tokens * (o.layers + 1) && st.layerReads <= tokens * (o.layers + 1) + 1, `layer reads ${st.layerReads}`);
    // ≈ the whole file minus the embedding table, per token, plus one embedding row (a page or two)
    const { readGGUF } = await import('../../src/formats/gguf.js');
    const f = readGGUF(path);
    const perToken = f.tensors.filter((t) => t.name !== 'token_embd.weight').reduce((s, t) => s + t.bytes, 0);
    assert.ok(st.bytes >= tokens * perToken && st.bytes <= tokens * (perToken + (o.layers + 1) * 2 * 4096 + 8192) + 600_000, `bytes ${st.bytes} vs ${tokens} × ${perToken}`);
    assert.equal(nai.model.weights.bytes, 0, 'naive mode keeps no weight resident');
  });
}

test('naive mode on a standard (non-flash) GGUF and across several arenas equals RAM mode', async () => {
  const { synthModelCached } = await import('../helpers.js');
  const path = await synthModelCached({ ...o, dtype: 'q8_0' });
  const ram = await run(path, { mode: 'ram' });
  const nai = await run(path, { mode: 'naive', maxArenaBytes: 240 * 1024 }); // the output layer's slot lands in a second arena
  assert.ok(nai.arenas >= 2, `arenas ${nai.arenas}`);
  assert.deepEqual(nai.tokens, ram.tokens);
  for (let i = 0; i < steps; i++) assert.deepEqual(nai.logits[i], ram.logits[i], `step ${i}`);
});

test('hybrid mode across several arenas (slots per arena) equals RAM mode', async () => {
  const path = await flashLayoutCached(o, 'q8_0');
  const ram = await run(path, { mode: 'ram' });
  const small = await run(path, { mode: 'hybrid', maxArenaBytes: 320 * 1024 }); // ≈ one layer + 2 FFN slots per arena
  assert.ok(small.arenas >= 2, `arenas ${small.arenas}`);
  assert.deepEqual(small.tokens, ram.tokens);
  for (let i = 0; i < steps; i++) assert.deepEqual(small.logits[i], ram.logits[i], `step ${i}`);
});

test('hybrid mode refuses a standard-layout file with a clear message', async () => {
  const { synthModelCached } = await import('../helpers.js');
  await assert.rejects(Model.load(await synthModelCached(o), { mode: 'hybrid' }), /flash-layout file/);
});

test('hybrid mode: a read error stops the request with a typed error naming file, offset and length', async () => {
  const { read } = await import('node:fs');
  const path = await flashLayoutCached(o, 'q8_0');
  let calls = 0;
  const failing = (fd: number, buf: Uint8Array, off: number, len: number, pos: number, cb: (e: NodeJS.ErrnoException | null, n: number) => void) => {
    calls++;
    // the probe read at open is call 1; fail a read a few layers into the first token
    if (calls === 5) {
      const e = Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO', errno: -5 }) as NodeJS.ErrnoException;
      setImmediate(() => cb(e, 0));
      return;
    }
    read(fd, buf, off, len, pos, cb);
  };
  const m = await Model.load(path, { ctx: 16, mode: 'hybrid', readFn: failing, maxReadBytes: 4096 * 4, inFlight: 2 });
  try {
    await assert.rejects(m.prefillAsync(prompt), (e: Error) =>
      e.name === 'FlashIOError' && e.message.includes(path) && /offset \d+/.test(e.message) && /\d+ bytes/.test(e.message));
  } finally {
    await m.close();
  }
});
