// The server under disk faults (issue 7 item 2): a flash read that fails with EIO during a request
// must end that request cleanly (HTTP 500 with a JSON error naming the file, offset and length; or,
// once a stream has started, an SSE error event and [DONE]), without crashing or hanging, and the
// server must answer the next request with the fault-free completion.
//
// loadModel() has no fault-injection seam, so the model is built from the pieces it is made of:
// Model.load (which takes `readFn`) wrapped in LanguageModel, then startServer. Both come from the
// same compiled modules the package entry point re-exports.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Model } from '../../src/engine/model.js';
import type { SynthOptions } from '../../src/engine/synth.js';
import { LanguageModel, startServer, type RunningServer } from '../../src/index.js';
import { flashLayoutCached } from '../helpers.js';
import { FaultyDisk } from '../flash/faulty-disk.js';
import { get, parseSSE, post } from './client.js';

const o: SynthOptions = { layers: 3, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 128, dtype: 'f32', act: 'silu', seed: 21, format: 'gguf' };
const prompt = [1, 300, 301, 302, 303];
const body = { model: 'any', prompt, max_tokens: 8, temperature: 0 };

for (const mode of ['hybrid', 'sparse'] as const) describe(`server, ${mode} mode`, () => {
  let path: string;
  let lm: LanguageModel;
  let srv: RunningServer;
  const disk = new FaultyDisk();

  before(async () => {
    path = await flashLayoutCached(o, 'q8_0');
    // sparse with window 0 reads every predicted neuron for every token, so each request reads
    const engine = await Model.load(path, {
      mode, ctx: 64, threads: 1, readFn: disk.readFn, maxReadBytes: 16 << 10, inFlight: 4, ...(mode === 'sparse' ? { predictor: 'all' as const, window: 0 } : {}),
    });
    lm = new LanguageModel(engine, undefined, undefined);
    srv = await startServer(lm, { port: 0 });
  });
  after(async () => {
    await srv?.close();
    await lm?.close();
  });

  const completion = async (b: Record<string, unknown> = body): Promise<string> => {
    const r = await post(srv.url, '/v1/completions', b);
    assert.equal(r.status, 200, r.text);
    return (JSON.parse(r.text) as { choices: { text: string }[] }).choices[0]!.text;
  };

  const streamed = async (): Promise<{ text: string; events: Record<string, unknown>[] }> => {
    const r = await post(srv.url, '/v1/completions', { ...body, stream: true });
    assert.equal(r.status, 200, r.text);
    const events = parseSSE(r.text);
    let text = '';
    for (const e of events) text += (e.choices as { text: string }[] | undefined)?.[0]?.text ?? '';
    return { text, events };
  };

  const namesTheRead = (message: string) => {
    const c = disk.failed[0]!;
    assert.ok(message.includes(path) && message.includes(`read of ${c.len} bytes at offset ${c.pos}`) && message.includes('EIO'), message);
  };

  test(`${mode}: EIO during a request → HTTP 500 JSON error naming file, offset and length; the next request succeeds`, { timeout: 60_000 }, async () => {
    disk.arm(undefined);
    const want = await completion();
    assert.ok(want.length > 0);
    assert.ok(disk.sinceArm.length > 0, 'the request read from flash');

    // read 8: in hybrid mode one of layer 1's (16 KiB reads, 6 per layer), failing while layer 2 is
    // being prefetched into the slot the next request's layer 0 needs
    disk.arm((i) => (i === 8 ? { errno: 'EIO' } : undefined));
    const r = await post(srv.url, '/v1/completions', body);
    assert.equal(r.status, 500, r.text);
    assert.match(String(r.headers['content-type']), /^application\/json/);
    const err = (JSON.parse(r.text) as { error: { message: string; type: string } }).error;
    assert.equal(err.type, 'server_error');
    assert.equal(disk.failed.length, 1);
    namesTheRead(err.message);

    disk.arm(undefined);
    assert.equal(await completion(), want, 'the request after the fault');
    assert.equal((await get(srv.url, '/health')).status, 200);
  });

  test(`${mode}: EIO in the middle of a streamed request → SSE error event and [DONE] after the text so far; the next stream succeeds`, { timeout: 60_000 }, async () => {
    disk.arm(undefined);
    const want = await streamed();
    const total = disk.sinceArm.length;
    assert.ok(want.text.length > 0 && total > 10);

    // a read ~70% into the request: several tokens have been streamed by then, several are to come
    const k = Math.floor(total * 0.7);
    disk.arm((i) => (i === k ? { errno: 'EIO' } : undefined));
    const got = await streamed();
    assert.equal(disk.failed.length, 1);
    const last = got.events.at(-1) as { error?: { message: string; type: string } };
    assert.ok(last.error, `the stream must end with an error event: ${JSON.stringify(last)}`);
    assert.equal(last.error.type, 'server_error');
    namesTheRead(last.error.message);
    assert.ok(got.text.length > 0 && want.text.startsWith(got.text), `text before the error ${JSON.stringify(got.text)} vs ${JSON.stringify(want.text)}`);
    assert.ok(!got.events.some((e) => (e.choices as { finish_reason: string | null }[] | undefined)?.[0]?.finish_reason), 'no finish_reason for a failed stream');

    disk.arm(undefined);
    assert.equal((await streamed()).text, want.text, 'the stream after the fault');
    assert.equal(await completion(), want.text);
  });

  test(`${mode}: two streamed requests at once, EIO during one of them → that one ends with an SSE error, the other completes unchanged`, { timeout: 60_000 }, async () => {
    disk.arm(undefined);
    const want = (await streamed()).text;
    disk.arm(undefined);
    const clean = await Promise.all([streamed(), streamed()]);
    for (const c of clean) assert.equal(c.text, want);
    const total = disk.sinceArm.length;

    // a read half-way through the two requests' reads (their passes interleave when the KV pool
    // holds both; either way, exactly one pass meets the fault)
    const k = Math.floor(total / 2);
    disk.arm((i) => (i === k ? { errno: 'EIO' } : undefined));
    const got = await Promise.all([streamed(), streamed()]);
    assert.equal(disk.failed.length, 1);
    const failed = got.filter((g) => (g.events.at(-1) as { error?: unknown }).error);
    assert.equal(failed.length, 1, 'exactly one request failed');
    namesTheRead((failed[0]!.events.at(-1) as { error: { message: string } }).error.message);
    const ok = got.find((g) => !(g.events.at(-1) as { error?: unknown }).error)!;
    assert.equal(ok.text, want, 'the other request');

    disk.arm(undefined);
    assert.equal(await completion(), want);
    assert.equal((await get(srv.url, '/health')).status, 200);
  });
});
