// The HTTP server end to end on a tiny synth model: completions and chat (plain and streamed), stop
// sequences, bad requests, /health, /v1/models, /metrics; then the queue (429 + Retry-After), a
// client that disconnects mid-stream or while queued, and `flashlm serve` as a process; with the
// paged KV cache: requests running at once, interleaved, disconnects returning their pages, and 429
// when the KV pool is full.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { loadModel, startServer, type LanguageModel, type RunningServer, type ServedModel } from 'flashlm';
import { synthModelCached, testDir } from '../helpers.js';
import { BAD_CHATS, BAD_COMPLETIONS } from './cases.js';
import { get, parseSSE, post, postStreamThenDrop, type Reply } from './client.js';

const SYNTH = { layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 256, dtype: 'q8_0', act: 'silu', seed: 7 } as const;
const BIN = fileURLToPath(new URL('../../../bin/flashlm.cjs', import.meta.url));

let lm: LanguageModel;
let srv: RunningServer;
const usageSeen = { completion: 0, ok: 0 }; // what this suite's successful completions reported

before(async () => {
  lm = await loadModel(await synthModelCached({ ...SYNTH, format: 'gguf' }), { ctx: 128, threads: 1 });
  srv = await startServer(lm, { port: 0 });
});

after(async () => {
  await srv?.close();
  await lm?.close();
});

interface Completion { choices: { text?: string; message?: { role: string; content: string }; finish_reason: string }[]; usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number }; object: string; model: string }

async function complete(path: string, body: Record<string, unknown>): Promise<Completion> {
  const r = await post(srv.url, path, body);
  assert.equal(r.status, 200, r.text);
  const j = JSON.parse(r.text) as Completion;
  usageSeen.completion += j.usage.completion_tokens;
  usageSeen.ok++;
  return j;
}

async function stream(url: string, path: string, body: Record<string, unknown>): Promise<{ text: string; finish: string; events: Record<string, unknown>[]; r: Reply }> {
  const r = await post(url, path, { ...body, stream: true });
  assert.equal(r.status, 200, r.text);
  assert.match(String(r.headers['content-type']), /^text\/event-stream/);
  const events = parseSSE(r.text);
  let text = '';
  let finish = '';
  for (const e of events) {
    const c = (e.choices as { text?: string; delta?: { content?: string }; finish_reason: string | null }[])[0];
    if (!c) continue;
    text += c.text ?? c.delta?.content ?? '';
    if (c.finish_reason) finish = c.finish_reason;
  }
  return { text, finish, events, r };
}

async function libraryText(ids: number[], maxTokens: number): Promise<string> {
  let s = '';
  for await (const p of lm.generate(ids, { maxTokens, temperature: 0 })) s += p.text;
  return s;
}

test('GET /health and /v1/models', async () => {
  const h = await get(srv.url, '/health');
  assert.equal(h.status, 200);
  assert.deepEqual(JSON.parse(h.text), { status: 'ok', model: lm.name, busy: 0, queue: 0, kv_pages: { used: 0, free: 8, total: 8 } });
  const m = JSON.parse((await get(srv.url, '/v1/models')).text) as { object: string; data: { id: string; object: string }[] };
  assert.equal(m.object, 'list');
  assert.deepEqual(m.data.map((d) => [d.id, d.object]), [[lm.name, 'model']]);
  assert.equal((await get(srv.url, `/v1/models/${lm.name}`)).status, 200);
  assert.equal((await get(srv.url, '/v1/models/other')).status, 404);
});

test('completions: greedy text = streamed text = the library\'s; usage; finish length', async () => {
  const body = { prompt: 'The quick brown fox', max_tokens: 24, temperature: 0 };
  const j = await complete('/v1/completions', body);
  assert.equal(j.object, 'text_completion');
  assert.equal(j.choices[0]!.finish_reason, 'length');
  const ids = lm.tokenize('The quick brown fox');
  assert.deepEqual(j.usage, { prompt_tokens: ids.length, completion_tokens: 24, total_tokens: ids.length + 24 });
  assert.equal(j.choices[0]!.text, await libraryText(ids, 24));
  const s = await stream(srv.url, '/v1/completions', body);
  assert.equal(s.text, j.choices[0]!.text);
  assert.equal(s.finish, 'length');
  assert.ok(s.events.length >= 3, 'several chunks');
  for (const e of s.events) assert.equal(e.object, 'text_completion');
  usageSeen.completion += 24;
  usageSeen.ok++;
  // a token-id prompt is the same request
  const k = await complete('/v1/completions', { ...body, prompt: ids });
  assert.equal(k.choices[0]!.text, j.choices[0]!.text);
  // default max_tokens: 16
  assert.equal((await complete('/v1/completions', { prompt: 'hi', temperature: 0 })).usage.completion_tokens, 16);
});

test('stop sequences end with finish_reason stop and are not in the text (plain and streamed)', async () => {
  const full = (await complete('/v1/completions', { prompt: 'hello world', max_tokens: 40, temperature: 0 })).choices[0]!.text!;
  // a stop string from the middle of the greedy text, avoiding U+FFFD
  let at = -1;
  for (let i = 6; i + 2 <= full.length; i++) if (!full.slice(i, i + 2).includes('\uFFFD') && full.indexOf(full.slice(i, i + 2)) === i) { at = i; break; }
  assert.ok(at > 0, `no usable stop string in ${JSON.stringify(full)}`);
  const stop = full.slice(at, at + 2);
  const j = await complete('/v1/completions', { prompt: 'hello world', max_tokens: 40, temperature: 0, stop: ['never-there', stop] });
  assert.equal(j.choices[0]!.text, full.slice(0, at));
  assert.equal(j.choices[0]!.finish_reason, 'stop');
  assert.ok(j.usage.completion_tokens < 40);
  const s = await stream(srv.url, '/v1/completions', { prompt: 'hello world', max_tokens: 40, temperature: 0, stop });
  assert.equal(s.text, full.slice(0, at));
  assert.equal(s.finish, 'stop');
  usageSeen.completion += j.usage.completion_tokens;
  usageSeen.ok++;
});

test('chat completions without a template: "role: content" lines + "assistant:"; streamed deltas; include_usage', async () => {
  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi there' }];
  const j = await complete('/v1/chat/completions', { messages, max_tokens: 12, temperature: 0 });
  assert.equal(j.object, 'chat.completion');
  assert.equal(j.choices[0]!.message!.role, 'assistant');
  const ids = lm.tokenize('system: Be brief.\nuser: Hi there\nassistant:');
  assert.equal(j.usage.prompt_tokens, ids.length);
  assert.equal(j.choices[0]!.message!.content, await libraryText(ids, 12));
  const s = await stream(srv.url, '/v1/chat/completions', { messages, max_tokens: 12, temperature: 0, stream_options: { include_usage: true } });
  assert.equal(s.text, j.choices[0]!.message!.content);
  assert.deepEqual((s.events[0]!.choices as { delta: unknown }[])[0]!.delta, { role: 'assistant', content: '' });
  assert.equal(s.events[0]!.object, 'chat.completion.chunk');
  const last = s.events[s.events.length - 1]!;
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, j.usage);
  usageSeen.completion += j.usage.completion_tokens;
  usageSeen.ok++;
  // default max_tokens for chat: the rest of the context
  const d = await complete('/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], temperature: 1, seed: 3 });
  assert.ok(d.usage.prompt_tokens + d.usage.completion_tokens <= 128);
});

test('bad requests: 400 with an OpenAI error body; bad JSON; oversize body 413; 404/405; the server keeps serving', async () => {
  const check = (r: Reply, status: number, msg: RegExp) => {
    assert.equal(r.status, status, r.text);
    const e = (JSON.parse(r.text) as { error: { message: string; type: string } }).error;
    assert.match(e.message, msg);
    assert.equal(e.type, 'invalid_request_error');
  };
  for (const [what, body, msg] of BAD_COMPLETIONS) check(await post(srv.url, '/v1/completions', body), 400, msg);
  for (const [what, body, msg] of BAD_CHATS) check(await post(srv.url, '/v1/chat/completions', body), 400, msg);
  check(await post(srv.url, '/v1/completions', '{"prompt": "a",'), 400, /invalid JSON/);
  check(await post(srv.url, '/v1/completions', ''), 400, /empty request body/);
  check(await post(srv.url, '/v1/completions', 'prompt=hi'), 400, /invalid JSON/);
  check(await post(srv.url, '/v1/completions', '[' .repeat(100_000)), 400, /nested deeper than 64 levels/);
  check(await post(srv.url, '/v1/completions', { prompt: 'x'.repeat(1 << 20) }), 413, /larger than 1048576 bytes/);
  // context: prompt + max_tokens > 128
  check(await post(srv.url, '/v1/completions', { prompt: 'word '.repeat(200) }), 400, /context is 128 tokens/);
  check(await post(srv.url, '/v1/completions', { prompt: [1, 2, 3], max_tokens: 127 }), 400, /context is 128 tokens.*3 in the prompt, 127/);
  const nf = await get(srv.url, '/v2/nothing');
  assert.equal(nf.status, 404);
  const wm = await get(srv.url, '/v1/completions');
  assert.equal(wm.status, 405);
  assert.equal(wm.headers.allow, 'POST');
  assert.equal((await get(srv.url, '/health')).status, 200);
});

test('/metrics: Prometheus text; counts requests by status and generated tokens', async () => {
  const r = await get(srv.url, '/metrics');
  assert.equal(r.status, 200);
  assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  const samples = new Map<string, number>();
  for (const line of r.text.trimEnd().split('\n')) {
    if (line.startsWith('#')) {
      assert.match(line, /^# (HELP \w+ .+|TYPE \w+ (counter|gauge))$/);
      continue;
    }
    const m = /^(\w+(?:\{(?:\w+="(?:[^"\\]|\\.)*",?)*\})?) (-?[\d.e+]+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    samples.set(m[1]!, Number(m[2]));
  }
  const ok = (ep: string) => samples.get(`flashlm_requests_total{endpoint="${ep}",status="200"}`) ?? 0;
  assert.equal(ok('/v1/completions') + ok('/v1/chat/completions'), usageSeen.ok);
  assert.equal(samples.get('flashlm_tokens_generated_total'), usageSeen.completion);
  const bad = samples.get('flashlm_requests_total{endpoint="/v1/completions",status="400"}')!;
  assert.ok(bad >= BAD_COMPLETIONS.length + 5, `400s counted: ${bad}`);
  assert.equal(samples.get('flashlm_requests_total{endpoint="/v1/completions",status="413"}'), 1);
  assert.equal(samples.get('flashlm_queue_length'), 0);
  assert.equal(samples.get('flashlm_busy'), 0);
  assert.equal(samples.get('flashlm_kv_positions_in_use'), 0);
  assert.equal(samples.get('flashlm_kv_positions_reserved'), 128);
  assert.equal(samples.get('flashlm_kv_pages_used'), 0);
  assert.equal(samples.get('flashlm_kv_pages_free'), 8);
  assert.equal(samples.get('flashlm_kv_pages_total'), 8);
  assert.equal(samples.get('flashlm_kv_sequences'), 0);
  assert.equal(samples.get('flashlm_flash_read_bytes_total'), 0);
  assert.ok(samples.get('flashlm_last_request_tokens_per_second')! > 0);
});

/** The real model, slowed down per token, so that requests overlap (the server only sees ServedModel). */
function slowed(inner: LanguageModel, msPerToken: number, produced: number[]): ServedModel {
  return {
    name: inner.name, ctx: inner.ctx, vocabSize: inner.vocabSize, addBos: inner.addBos, chatTemplate: inner.chatTemplate,
    bosToken: inner.bosToken, eosToken: inner.eosToken, budget: inner.budget,
    tokenize: (t, o) => inner.tokenize(t, o), kv: () => inner.kv(), flashBytesRead: () => inner.flashBytesRead(),
    generate(ids, o) {
      const g = inner.generate(ids, o);
      const it = (async function* () {
        let n = 0;
        try {
          for await (const p of g) {
            await sleep(msPerToken);
            n++;
            yield p;
          }
        } finally {
          produced.push(n);
        }
      })();
      return Object.defineProperty(it, 'finishReason', { get: () => g.finishReason }) as AsyncGenerator<{ id: number; text: string }> & { finishReason: typeof g.finishReason };
    },
  };
}

async function until(what: string, f: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!(await f())) {
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const health = async (url: string) => JSON.parse((await get(url, '/health')).text) as { busy: number; queue: number };

test('queue full → 429 with Retry-After; queued and running requests complete in order', async () => {
  const produced: number[] = [];
  const s = await startServer(slowed(lm, 25, produced), { port: 0, maxQueue: 1 });
  try {
    const a = post(s.url, '/v1/completions', { prompt: 'a', max_tokens: 20, temperature: 0 });
    await until('A running', async () => (await health(s.url)).busy === 1);
    const b = post(s.url, '/v1/completions', { prompt: 'b', max_tokens: 5, temperature: 0 });
    await until('B queued', async () => (await health(s.url)).queue === 1);
    const c = await post(s.url, '/v1/completions', { prompt: 'c', max_tokens: 5 });
    assert.equal(c.status, 429, c.text);
    assert.match(String(c.headers['retry-after']), /^[1-9]\d*$/);
    assert.equal((JSON.parse(c.text) as { error: { type: string } }).error.type, 'rate_limit_error');
    const [ra, rb] = await Promise.all([a, b]);
    assert.equal(ra.status, 200);
    assert.equal(rb.status, 200);
    assert.deepEqual(produced, [20, 5]);
    assert.match((await get(s.url, '/metrics')).text, /^flashlm_requests_total\{endpoint="\/v1\/completions",status="429"\} 1$/m);
  } finally {
    await s.close();
  }
});

test('a client that disconnects mid-stream or while queued frees its place; the next request completes', async () => {
  const produced: number[] = [];
  const s = await startServer(slowed(lm, 25, produced), { port: 0, maxQueue: 4 });
  try {
    // running stream dropped after its first content chunk
    await postStreamThenDrop(s.url, '/v1/completions', { prompt: 'x', max_tokens: 100, temperature: 0, stream: true });
    await until('model free', async () => (await health(s.url)).busy === 0);
    assert.equal(produced.length, 1);
    assert.ok(produced[0]! < 20, `cancelled generation stopped early (${produced[0]} tokens)`);
    const next = await post(s.url, '/v1/completions', { prompt: 'y', max_tokens: 4, temperature: 0 });
    assert.equal(next.status, 200);
    // a queued request whose client goes away leaves the queue; the running one is not disturbed
    const a = post(s.url, '/v1/completions', { prompt: 'a', max_tokens: 20, temperature: 0 });
    await until('A running', async () => (await health(s.url)).busy === 1);
    const dropped = postStreamThenDrop(s.url, '/v1/completions', { prompt: 'b', max_tokens: 5, stream: true }, { dropAfterMs: 150 });
    await until('B queued', async () => (await health(s.url)).queue === 1);
    await dropped;
    await until('B left the queue', async () => (await health(s.url)).queue === 0);
    assert.equal((await health(s.url)).busy, 1, 'A still running');
    assert.equal((await a).status, 200);
    assert.deepEqual(produced.slice(1), [4, 20], 'B never ran');
    assert.match((await get(s.url, '/metrics')).text, /^flashlm_requests_cancelled_total 2$/m);
  } finally {
    await s.close();
  }
});

/** Streams a completion; resolves with its text. */
async function streamText(url: string, body: Record<string, unknown>): Promise<string> {
  const r = await post(url, '/v1/completions', { ...body, stream: true });
  assert.equal(r.status, 200, r.text);
  return parseSSE(r.text).map((e) => (e.choices as { text?: string }[])[0]?.text ?? '').join('');
}

const kvMetrics = async (url: string) => {
  const t = (await get(url, '/metrics')).text;
  const m = (n: string) => Number(new RegExp(`^${n} (\\S+)$`, 'm').exec(t)?.[1]);
  return { used: m('flashlm_kv_pages_used'), reserved: m('flashlm_kv_pages_reserved'), free: m('flashlm_kv_pages_free'), total: m('flashlm_kv_pages_total'), sequences: m('flashlm_kv_sequences') };
};

test('paged KV: concurrent requests run at once, interleaved, each with the text it gets alone; pages come back', async () => {
  const m = await loadModel(await synthModelCached({ ...SYNTH, format: 'gguf' }), { ctx: 128, threads: 1, sequences: 4, kvPositions: 'budget' });
  const s = await startServer(m, { port: 0, maxQueue: 8 });
  try {
    const prompts = ['The quick brown fox', 'def fibonacci(n):', 'Once upon a time', 'hello world'];
    const alone: string[] = [];
    for (const p of prompts) alone.push(await streamText(s.url, { prompt: p, max_tokens: 64, temperature: 0 }));
    // a sampler of /metrics while the four run: several sequences open at once
    let maxSeqs = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        maxSeqs = Math.max(maxSeqs, (await kvMetrics(s.url)).sequences);
        await sleep(2);
      }
    })();
    const together = await Promise.all(prompts.map((p) => streamText(s.url, { prompt: p, max_tokens: 64, temperature: 0 })));
    sampling = false;
    await sampler;
    assert.deepEqual(together, alone);
    assert.ok(maxSeqs >= 2, `sequences open at once: ${maxSeqs}`);
    await until('pages back', async () => (await kvMetrics(s.url)).sequences === 0);
    assert.deepEqual(await kvMetrics(s.url), { used: 0, reserved: 0, free: 32, total: 32, sequences: 0 });
  } finally {
    await s.close();
    await m.close();
  }
});

test('paged KV: a client that disconnects mid-stream returns its pages; a full KV pool gives 429 kv_pool_full with Retry-After', async () => {
  // one 128-position sequence fills the pool (8 pages of 16)
  const m = await loadModel(await synthModelCached({ ...SYNTH, format: 'gguf' }), { ctx: 128, threads: 1, sequences: 4 });
  const s = await startServer(m, { port: 0, maxQueue: 0 });
  try {
    await postStreamThenDrop(s.url, '/v1/completions', { prompt: 'x', max_tokens: 120, temperature: 0, stream: true });
    await until('pages back after the disconnect', async () => (await kvMetrics(s.url)).sequences === 0);
    assert.deepEqual(await kvMetrics(s.url), { used: 0, reserved: 0, free: 8, total: 8, sequences: 0 });
    assert.match((await get(s.url, '/metrics')).text, /^flashlm_requests_cancelled_total 1$/m, 'it was cancelled mid-generation');
    // a generation on the same model (library side) holds 7 of the 8 pages; B needs 2: no room, no queue → 429
    const hold = m.generate('x', { maxTokens: 100 })[Symbol.asyncIterator]();
    await hold.next();
    assert.equal((await kvMetrics(s.url)).free, 1);
    const b = await post(s.url, '/v1/completions', { prompt: 'y', max_tokens: 20, temperature: 0 });
    assert.equal(b.status, 429, b.text);
    assert.match(String(b.headers['retry-after']), /^[1-9]\d*$/);
    assert.equal((JSON.parse(b.text) as { error: { code: string } }).error.code, 'kv_pool_full');
    // the 429 is counted under its code; the ledger shows the KV bytes the held sequence uses
    const t = (await get(s.url, '/metrics')).text;
    const num = (re: RegExp) => Number(re.exec(t)?.[1]);
    assert.equal(num(/^flashlm_requests_rejected_total\{code="kv_pool_full"\} (\S+)$/m), 1);
    assert.equal(num(/^flashlm_requests_rejected_total\{code="queue_full"\} (\S+)$/m), 0);
    const pageBytes = num(/^flashlm_memory_pool_charged_bytes\{part="kvPages"\} (\S+)$/m) / 8;
    assert.ok(pageBytes > 0 && Number.isInteger(pageBytes), `bytes of one page: ${pageBytes}`);
    const used = num(/^flashlm_kv_pages_used (\S+)$/m);
    assert.ok(used >= 1);
    assert.equal(num(/^flashlm_kv_bytes_in_use (\S+)$/m), used * pageBytes);
    assert.doesNotMatch(t, /flashlm_memory_budget_left_bytes/, 'no --memory: no budget left to show');
    await hold.return!(undefined);
    const c = await post(s.url, '/v1/completions', { prompt: 'y', max_tokens: 20, temperature: 0 });
    assert.equal(c.status, 200, 'room again');
    assert.equal((await kvMetrics(s.url)).used, 0);
  } finally {
    await s.close();
    await m.close();
  }
});

const TEMPLATE = "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('Conversation must start with the user') }}{% endif %}{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}";

test('chat completions with the model\'s template (HF tokenizer_config.json chat_template)', async () => {
  const src = await synthModelCached({ ...SYNTH, dtype: 'f32', format: 'safetensors' });
  const dir = join(testDir('server-chat'), 'hf');
  cpSync(src, dir, { recursive: true });
  const cfgPath = join(dir, 'tokenizer_config.json');
  writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(readFileSync(cfgPath, 'utf8')), chat_template: TEMPLATE }));
  const hf = await loadModel(dir, { ctx: 64, threads: 1 });
  const s = await startServer(hf, { port: 0 });
  try {
    assert.equal(s.chatTemplate, 'model');
    const messages = [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo' }, { role: 'user', content: 'more' }];
    const r = await post(s.url, '/v1/chat/completions', { messages, max_tokens: 10, temperature: 0 });
    assert.equal(r.status, 200, r.text);
    const j = JSON.parse(r.text) as Completion;
    // the template's text, its <s> and </s> parsed as the special tokens, no second BOS
    const ids = hf.tokenize('<s>[INST] hi [/INST] yo</s>[INST] more [/INST]', { addBos: false, parseSpecial: true });
    assert.equal(ids[0], 1);
    assert.equal(ids.filter((t) => t === 1).length, 1);
    assert.ok(ids.includes(2), '</s> is one token');
    assert.equal(j.usage.prompt_tokens, ids.length);
    let want = '';
    for await (const p of hf.generate(ids, { maxTokens: 10, temperature: 0 })) want += p.text;
    assert.equal(j.choices[0]!.message!.content, want);
    const bad = await post(s.url, '/v1/chat/completions', { messages: [{ role: 'assistant', content: 'x' }] });
    assert.equal(bad.status, 400);
    assert.match(bad.text, /Conversation must start with the user/);
  } finally {
    await s.close();
    await hf.close();
  }
});

test('flashlm serve: prints its address, serves, exits 0 on SIGTERM; bad flags are one-line errors', async () => {
  const model = await synthModelCached({ ...SYNTH, format: 'gguf' });
  const child = spawn(process.execPath, [BIN, 'serve', model, '--port', '0', '--max-queue', '2', '--ctx', '64', '--memory', '1GB'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    await until('listening line', async () => /listening on http:\/\/127\.0\.0\.1:\d+\n/.test(out), 30_000);
    const url = /listening on (\S+)/.exec(out)![1]!;
    assert.equal((await get(url, '/health')).status, 200);
    const r = await post(url, '/v1/completions', { prompt: 'hello', max_tokens: 3, temperature: 0 });
    assert.equal(r.status, 200, r.text);
    const metrics = (await get(url, '/metrics')).text;
    assert.match(metrics, /^flashlm_memory_budget_bytes 1000000000$/m);
    // default --sequences 8, --kv-positions budget: 1 GB holds every sequence at full length (8 × 64 / 16 pages)
    assert.match(metrics, /^flashlm_kv_pages_total 32$/m);
    assert.match(metrics, /^flashlm_kv_sequence_slots 8$/m);
    // the pool ledger: its parts add up to the charged total, the budget left is budget − charged,
    // the KV pages charged are the pool's 32 pages, and none is in use once the request is done
    const parts = [...metrics.matchAll(/^flashlm_memory_pool_charged_bytes\{part="(\w+)"\} (\d+)$/gm)].map((x) => [x[1]!, Number(x[2])] as const);
    const part = new Map(parts);
    for (const p of ['runtime', 'weights', 'activations', 'pageTables', 'kvPages']) assert.ok(part.get(p)! > 0, `part ${p} charged`);
    const charged = Number(/^flashlm_memory_pool_charged_total_bytes (\d+)$/m.exec(metrics)?.[1]);
    assert.equal(parts.reduce((sum, [, v]) => sum + v, 0), charged);
    assert.equal(Number(/^flashlm_memory_budget_left_bytes (\d+)$/m.exec(metrics)?.[1]), 1e9 - charged);
    assert.equal(part.get('kvPages')! % 32, 0);
    assert.match(metrics, /^flashlm_kv_bytes_in_use 0$/m);
    assert.match(metrics, /^# HELP flashlm_tokens_generated_total .*rate\(\)/m);
    assert.match(metrics, /^flashlm_tokens_generated_total [1-9]\d*$/m);
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, err);
  const bad = spawn(process.execPath, [BIN, 'serve', model, '--mode', 'fast'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let berr = '';
  bad.stderr.on('data', (d) => (berr += d));
  const code = await new Promise<number | null>((resolve) => bad.on('exit', resolve));
  assert.equal(code, 1);
  assert.equal(berr.trim(), "flashlm: --mode must be one of ram|hybrid|naive|sparse, got 'fast'");
});
