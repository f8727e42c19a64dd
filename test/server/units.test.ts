// The server's pure parts: request validation (a table of bad bodies), stop sequences, the FIFO
// scheduler, the chat formatter (template and fallback) and the Prometheus rendering.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { validateChatRequest, validateCompletionRequest } from '../../src/server/validate.js';
import { CancelledError, QueueFullError, RequestError } from '../../src/server/errors.js';
import { StopMatcher, Utf8Pieces } from '../../src/server/text.js';
import { FifoScheduler, KVScheduler } from '../../src/server/scheduler.js';
import { ChatFormatter } from '../../src/server/chat.js';
import { Metrics } from '../../src/server/metrics.js';
import { parseJSON } from '../../src/server/http.js';
import { BAD_CHATS, BAD_COMPLETIONS } from './cases.js';

const LIM = { ctx: 100, vocabSize: 512 };

test('validateCompletionRequest: each bad body is a RequestError (400) naming the field', () => {
  for (const [what, body, msg] of BAD_COMPLETIONS) {
    assert.throws(() => validateCompletionRequest(body, LIM), (e: unknown) => {
      assert.ok(e instanceof RequestError, `${what}: ${String(e)}`);
      assert.equal(e.status, 400, what);
      assert.equal(e.type, 'invalid_request_error');
      assert.match(e.message, msg, what);
      return true;
    }, what);
  }
});

test('validateChatRequest: each bad body is a RequestError (400)', () => {
  for (const [what, body, msg] of BAD_CHATS) {
    assert.throws(() => validateChatRequest(body, LIM), (e: unknown) => e instanceof RequestError && e.status === 400 && msg.test(e.message), what);
  }
});

test('validation: defaults, unknown fields ignored, accepted forms', () => {
  const r = validateCompletionRequest({ prompt: 'hi', foo: { bar: 1 }, logit_bias: {}, user: 'u' }, LIM);
  assert.deepEqual(r, { prompt: 'hi', maxTokens: undefined, temperature: 1, topP: 1, topK: 0, seed: undefined, stop: [], stream: false, includeUsage: false, model: undefined });
  const s = validateCompletionRequest({ prompt: [1, 2, 511], max_tokens: 100, temperature: 0, top_p: 1, top_k: 5, seed: -3, stop: 'x', stream: true, stream_options: { include_usage: true }, model: 'm', n: 1 }, LIM);
  assert.deepEqual(s, { prompt: [1, 2, 511], maxTokens: 100, temperature: 0, topP: 1, topK: 5, seed: -3, stop: ['x'], stream: true, includeUsage: true, model: 'm' });
  assert.equal(validateCompletionRequest({ prompt: ['one'] }, LIM).prompt, 'one');
  const c = validateChatRequest({ messages: [{ role: 'system', content: 'a' }, { role: 'user', content: [{ type: 'text', text: 'b' }, { type: 'text', text: 'c' }] }], max_completion_tokens: 7, stop: null }, LIM);
  assert.deepEqual(c.messages, [{ role: 'system', content: 'a' }, { role: 'user', content: 'bc' }]);
  assert.equal(c.maxTokens, 7);
  assert.deepEqual(c.stop, []);
});

test('StopMatcher: holds back possible prefixes, cuts at the earliest stop, flushes the rest', () => {
  const run = (stops: string[], pieces: string[]) => {
    const m = new StopMatcher(stops);
    const out = pieces.map((p) => m.push(p));
    return { out, stopped: m.stopped, tail: m.flush() };
  };
  assert.deepEqual(run(['END'], ['abc', 'E', 'N', 'D', 'zzz']), { out: ['abc', '', '', '', ''], stopped: true, tail: '' });
  assert.deepEqual(run(['END'], ['abc', 'EN', 'x']), { out: ['abc', '', 'ENx'], stopped: false, tail: '' });
  assert.deepEqual(run(['END'], ['abE']), { out: ['ab'], stopped: false, tail: 'E' });
  assert.deepEqual(run(['\n\n', 'b'], ['a\n', 'cb']), { out: ['a', '\nc'], stopped: true, tail: '' });
  assert.deepEqual(run(['xyz', 'yq'], ['axy', 'q']), { out: ['a', 'x'], stopped: true, tail: '' });
  assert.deepEqual(run([], ['a', 'b']), { out: ['a', 'b'], stopped: false, tail: '' });
  // the joined output never contains a stop sequence and is a prefix of the input
  const text = 'one two three four five';
  for (let cut = 1; cut < text.length; cut++) {
    const m = new StopMatcher(['three', 'fi']);
    const s = m.push(text.slice(0, cut)) + m.push(text.slice(cut)) + m.flush();
    assert.equal(s, 'one two ');
  }
});

test('FifoScheduler: one slot, FIFO order, full queue rejects, abort leaves the queue', async () => {
  const s = new FifoScheduler(2);
  const order: string[] = [];
  const a = await s.acquire(new AbortController().signal);
  assert.equal(s.running, 1);
  const b = s.acquire(new AbortController().signal).then((x) => (order.push('b'), x));
  const acC = new AbortController();
  const c = s.acquire(acC.signal);
  assert.equal(s.waiting, 2);
  await assert.rejects(s.acquire(new AbortController().signal), (e: unknown) => e instanceof QueueFullError && e.retryAfterSeconds >= 1);
  acC.abort();
  await assert.rejects(c, CancelledError);
  assert.equal(s.waiting, 1);
  const d = s.acquire(new AbortController().signal).then((x) => (order.push('d'), x));
  a.release();
  a.release(); // twice is harmless
  const bs = await b;
  assert.equal(s.running, 1);
  bs.release();
  (await d).release();
  assert.deepEqual(order, ['b', 'd']);
  assert.equal(s.running, 0);
  assert.equal(s.waiting, 0);
  // maxQueue 0: only the running request
  const z = new FifoScheduler(0);
  const z1 = await z.acquire(new AbortController().signal);
  await assert.rejects(z.acquire(new AbortController().signal), QueueFullError);
  z1.release();
});

test('ChatFormatter: fallback lines; template with bos and raise_exception; unparsable template falls back', () => {
  const special = { bosToken: '<s>', eosToken: '</s>', addBos: true };
  const msgs = [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: 'Hi' }];
  const fb = new ChatFormatter(undefined, special);
  assert.equal(fb.usesTemplate, false);
  assert.deepEqual(fb.render(msgs), { text: 'system: Be brief.\nuser: Hi\nassistant:', parseSpecial: false, addBos: true });
  const t = new ChatFormatter("{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('must start with user') }}{% endif %}{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}", special);
  assert.equal(t.usesTemplate, true);
  assert.deepEqual(t.render(msgs), { text: '<s><system>Be brief.<user>Hi<assistant>', parseSpecial: true, addBos: false });
  assert.throws(() => t.render([{ role: 'assistant', content: 'x' }]), (e: unknown) => e instanceof RequestError && e.status === 400 && /must start with user/.test(e.message));
  const broken = new ChatFormatter('{% for %}', special);
  assert.equal(broken.usesTemplate, false);
  assert.match(broken.warning!, /does not parse/);
});

test('Metrics: Prometheus text format', () => {
  const m = new Metrics();
  m.countRequest('/v1/completions', 200);
  m.countRequest('/v1/completions', 200);
  m.countRequest('/v1/completions', 429);
  m.countGeneration(5, 10, 0.5);
  m.countRejected('kv_pool_full');
  m.countRejected('kv_pool_full');
  m.countRejected('queue_full');
  const text = m.render({
    queueLength: () => 3, busy: () => 1, kv: () => ({ used: 7, reserved: 64 }), flashBytesRead: () => 4096, budget: () => 1e9,
    kvPages: () => ({ pageSize: 16, pages: 64, used: 5, reserved: 3, free: 56, sequences: 2, slots: 8 }), hitRate: () => 0.75,
    pool: () => ({ budget: 1e9, charged: 600_000, parts: { runtime: 500_000, weights: 90_000, kvPages: 10_000 }, kvBytesInUse: 4096 }),
  });
  for (const line of text.trimEnd().split('\n')) {
    assert.match(line, /^(# (HELP|TYPE) flashlm_\w+ .+|flashlm_\w+(\{(\w+="[^"]*",?)+\})? -?\d+(\.\d+)?(e[+-]?\d+)?)$/, line);
  }
  assert.match(text, /^flashlm_requests_total\{endpoint="\/v1\/completions",status="200"\} 2$/m);
  assert.match(text, /^flashlm_requests_total\{endpoint="\/v1\/completions",status="429"\} 1$/m);
  assert.match(text, /^flashlm_tokens_generated_total 10$/m);
  assert.match(text, /^flashlm_last_request_tokens_per_second 20$/m);
  assert.match(text, /^flashlm_queue_length 3$/m);
  assert.match(text, /^flashlm_kv_positions_in_use 7$/m);
  assert.match(text, /^flashlm_kv_positions_reserved 64$/m);
  assert.match(text, /^flashlm_flash_read_bytes_total 4096$/m);
  assert.match(text, /^flashlm_memory_budget_bytes 1000000000$/m);
  assert.match(text, /^flashlm_kv_pages_used 5$/m);
  assert.match(text, /^flashlm_kv_pages_reserved 3$/m);
  assert.match(text, /^flashlm_kv_pages_free 56$/m);
  assert.match(text, /^flashlm_kv_pages_total 64$/m);
  assert.match(text, /^flashlm_kv_sequences 2$/m);
  assert.match(text, /^flashlm_neuron_cache_hit_rate 0\.75$/m);
  assert.match(text, /^flashlm_requests_rejected_total\{code="kv_pool_full"\} 2$/m);
  assert.match(text, /^flashlm_requests_rejected_total\{code="queue_full"\} 1$/m);
  assert.equal(m.rejected, 3);
  assert.match(text, /^flashlm_memory_pool_charged_bytes\{part="kvPages"\} 10000$/m);
  assert.match(text, /^flashlm_memory_pool_charged_bytes\{part="runtime"\} 500000$/m);
  assert.match(text, /^flashlm_memory_pool_charged_bytes\{part="weights"\} 90000$/m);
  assert.match(text, /^flashlm_memory_pool_charged_total_bytes 600000$/m);
  assert.match(text, /^flashlm_memory_budget_left_bytes 999400000$/m);
  assert.match(text, /^flashlm_kv_bytes_in_use 4096$/m);
  // without a paged KV pool or sparse mode the gauges are absent
  const plain = m.render({ queueLength: () => 0, busy: () => 0, kv: () => ({ used: 0, reserved: 8 }), flashBytesRead: () => 0, budget: () => undefined });
  assert.doesNotMatch(plain, /flashlm_kv_pages|flashlm_neuron_cache_hit_rate|flashlm_memory_pool|flashlm_memory_budget|flashlm_kv_bytes/);
  // a ledger without a budget: no budget left
  const unbounded = m.render({ queueLength: () => 0, busy: () => 0, kv: () => ({ used: 0, reserved: 8 }), flashBytesRead: () => 0, budget: () => undefined,
    pool: () => ({ budget: null, charged: 5, parts: { runtime: 5 }, kvBytesInUse: 0 }) });
  assert.match(unbounded, /^flashlm_memory_pool_charged_total_bytes 5$/m);
  assert.doesNotMatch(unbounded, /flashlm_memory_budget_left_bytes/);
});

test('parseJSON: nesting deeper than 64 levels is a RequestError before JSON.parse; brackets in strings do not count', () => {
  const deep = Buffer.from('['.repeat(500_000) + ']'.repeat(500_000));
  const t0 = performance.now();
  assert.throws(() => parseJSON(deep), (e: unknown) => e instanceof RequestError && /nested deeper than 64/.test(e.message));
  assert.ok(performance.now() - t0 < 200, 'refused by the linear scan, not after parsing');
  const ok = '{"a":' + '['.repeat(63) + ']'.repeat(63) + '}';
  assert.deepEqual(parseJSON(Buffer.from(ok)), JSON.parse(ok));
  const str = JSON.stringify({ prompt: '['.repeat(1000) + '\\"{{{' });
  assert.deepEqual(parseJSON(Buffer.from(str)), JSON.parse(str));
  assert.throws(() => parseJSON(Buffer.from('{"a":' + '['.repeat(64) + ']'.repeat(64) + '}')), RequestError);
});

test('Utf8Pieces: a character split over tokens waits for its last byte; a leading U+FEFF is text, not a BOM', () => {
  const u = new Utf8Pieces();
  // the first generated token is U+FEFF (Llama id 30143): a default TextDecoder would swallow it
  assert.equal(u.push(new Uint8Array([0xef, 0xbb, 0xbf])), '\uFEFF');
  assert.equal(u.push(new Uint8Array([0xe2, 0x82])), '');
  assert.equal(u.pending, true);
  assert.equal(u.push(new Uint8Array([0xac, 0x41])), '€A');
  assert.equal(u.pending, false);
  assert.equal(u.push(new Uint8Array([0xf0, 0x9f])), '');
  assert.equal(u.end(), '\uFFFD');
});

test('KVScheduler Retry-After: 1 s per request before any token, then positions × ms between tokens', async () => {
  let open = 0;
  const src = {
    tryOpenSequence: () => (open < 1 ? (open++, { close: () => { open--; } }) : undefined),
    onKVRelease: () => () => {},
    kvPages: () => ({ pageSize: 16, pages: 64, used: 0, reserved: 0, free: 0, sequences: open, slots: 1 }),
  };
  const s = new KVScheduler(src, 0); // no queue: the second request is refused with its Retry-After
  const after = async () => {
    try {
      await s.acquire(new AbortController().signal, 100);
    } catch (e) {
      if (e instanceof QueueFullError) return e.retryAfterSeconds;
      throw e;
    }
    throw new Error('expected a QueueFullError');
  };
  const a = await s.acquire(new AbortController().signal, 100);
  assert.equal(await after(), 1); // nothing measured yet
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  a.tick!(); // the first token starts the clock (its time includes the prompt)
  for (let i = 0; i < 4; i++) { await sleep(40); a.tick!(); }
  // 100 positions × ~40 ms between tokens ≈ 4 s (timer slack: 40–80 ms per gap)
  const est = await after();
  assert.ok(est >= 4 && est <= 8, `estimate ${est} s`);
  a.release();
  // a finished request does not replace the per-token estimate (its hold, ~0.2 s, would say 1 s)
  const b = await s.acquire(new AbortController().signal, 100);
  const est2 = await after();
  assert.ok(est2 >= 4 && est2 <= 8, `estimate after a completion ${est2} s`);
  b.release();
});
