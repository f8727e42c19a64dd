// Load test of `flashlm serve` on loopback: N concurrent clients (default 32) against one server
// process on a tiny synth model, bounded by a request count and a time limit. Half the requests
// stream (SSE), half do not; completions and chat alternate; every request is greedy with one of a
// few prompts, so each answer must equal the first answer to the same request (a check that requests
// never see each other's KV state). A client that gets 429 waits Retry-After (plus up to 50% jitter,
// so the clients do not all come back at once) and sends the SAME request again, up to
// --max-retries times, as a well-behaved client does; so every issued request ends as exactly one of
// ok, malformed, inconsistent, lost, hung up on purpose, or failed_after_retries (still 429 after
// the last retry), and `all_accounted` checks that the kinds add up to the requests issued.
//
// Errors by kind: malformed (a 200 whose body is not a valid completion or SSE stream, any other
// status), inconsistent (a valid answer that differs from the first one for the same request), lost
// (connection reset / timeout / no response), failed_after_retries. 429 responses are counted per
// attempt and by their `code` (queue_full: all sequence slots busy; kv_pool_full: the KV page pool
// is what keeps requests waiting). Goal: zero malformed, inconsistent and lost.
//
// The server runs requests concurrently over its paged KV cache (--sequences at once). Every
// `--disconnect-every` th request is a streamed one whose client hangs up after the first event
// (its pages must come back). /metrics is sampled during the run (KV pages in use, sequences open)
// and read again after the last client: pages still used or reserved then are leaked pages. With a
// --memory just above the model's fixed parts (e.g. 101023616 bytes on the default model: a 10-page
// pool where 8 sequences of 2 pages would want 16) requests wait for pages, not for slots; the
// samples where requests wait while sequence slots are free show it.
//
// Usage: node dist/bench/serve-load.js [--clients 32] [--requests 400] [--seconds 60] [--max-tokens 16]
//   [--max-queue 16] [--memory 256MB] [--ctx 128] [--sequences 8] [--kv-positions budget|N]
//   [--disconnect-every 10] [--model PATH] [--max-retries 5] [--no-retry-after]
// (--no-retry-after: retry at once instead of waiting Retry-After, a badly behaved client.)
// Prints JSON; exit code 1 on malformed / inconsistent / lost responses or leaked pages.
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { existsSync, mkdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { synthModel } from '../src/engine/synth.js';
import { parseMemory } from '../src/memory/budget.js';

const argv = process.argv.slice(2);
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1]! : dflt;
};
const CLIENTS = Number(opt('clients', '32'));
const REQUESTS = Number(opt('requests', '400'));
const SECONDS = Number(opt('seconds', '60'));
const MAX_TOKENS = Number(opt('max-tokens', '16'));
const MAX_QUEUE = opt('max-queue', '16');
const MEMORY = opt('memory', '256MB');
const CTX = opt('ctx', '128');
const SEQUENCES = opt('sequences', '8');
const KV_POSITIONS = opt('kv-positions', 'budget');
const DISCONNECT_EVERY = Number(opt('disconnect-every', '10'));
const RETRY_AFTER = !argv.includes('--no-retry-after');
const MAX_RETRIES = Number(opt('max-retries', '5'));
const BIN = fileURLToPath(new URL('../../bin/flashlm.cjs', import.meta.url));
const TIMEOUT_MS = 30_000;

function tinyModel(): string {
  const dir = join(tmpdir(), 'flashlm-bench');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'serve-load-tiny.gguf');
  if (!existsSync(path)) {
    synthModel({ layers: 2, hidden: 64, ffn: 192, heads: 4, kvHeads: 2, vocab: 512, ctx: 256, dtype: 'q8_0', act: 'silu', seed: 1, format: 'gguf' }, path);
  }
  return path;
}

interface Reply { status: number; retryAfter: string | undefined; body: string }

/** POST; `hangUp`: destroy the connection after the first body chunk (a client that goes away). */
function post(base: string, path: string, body: unknown, hangUp = false): Promise<Reply> {
  const s = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), { method: 'POST', headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(s) }, timeout: TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        if (hangUp && res.statusCode === 200) {
          req.destroy();
          resolve({ status: -1, retryAfter: undefined, body: '' });
        }
      });
      res.on('end', () => resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'] as string | undefined, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(s);
  });
}

/** The answer's text if the body is a valid (streamed or not) completion of `kind`, else undefined. */
function answer(kind: 'completion' | 'chat', stream: boolean, body: string): { text: string; tokens: number } | undefined {
  try {
    if (!stream) {
      const j = JSON.parse(body) as { choices: { text?: unknown; message?: { content?: unknown }; finish_reason?: unknown }[]; usage: { completion_tokens: unknown } };
      const c = j.choices[0]!;
      const t = kind === 'chat' ? c.message?.content : c.text;
      if (typeof t !== 'string' || !Number.isInteger(j.usage.completion_tokens) || (c.finish_reason !== 'stop' && c.finish_reason !== 'length')) return undefined;
      return { text: t, tokens: j.usage.completion_tokens as number };
    }
    if (!body.endsWith('data: [DONE]\n\n')) return undefined;
    const events = body.slice(0, -'data: [DONE]\n\n'.length).split('\n\n');
    if (events.pop() !== '') return undefined;
    let text = '';
    let finish: unknown = null;
    let tokens: unknown;
    for (const e of events) {
      if (!e.startsWith('data: ')) return undefined;
      const j = JSON.parse(e.slice(6)) as { choices: { text?: string; delta?: { content?: string }; finish_reason: unknown }[]; usage?: { completion_tokens: unknown } };
      const c = j.choices[0];
      if (!c) {
        tokens = j.usage?.completion_tokens;
        continue;
      }
      text += (kind === 'chat' ? c.delta?.content : c.text) ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
    return (finish === 'stop' || finish === 'length') && Number.isInteger(tokens) ? { text, tokens: tokens as number } : undefined;
  } catch {
    return undefined;
  }
}

/** A 429 body's `error.code` (undefined when the body is not an OpenAI-style error). */
function errorCode(body: string): string | undefined {
  try {
    const c = (JSON.parse(body) as { error?: { code?: unknown } }).error?.code;
    return typeof c === 'string' ? c : undefined;
  } catch {
    return undefined;
  }
}

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! * 10) / 10;
};

async function main(): Promise<void> {
  const model = opt('model', '') || tinyModel();
  const server = spawn(process.execPath, [BIN, 'serve', model, '--port', '0', '--max-queue', MAX_QUEUE, '--memory', MEMORY, '--ctx', CTX,
    '--sequences', SEQUENCES, '--kv-positions', KV_POSITIONS], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  server.stdout.on('data', (d) => (out += d));
  server.stderr.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => server.on('exit', resolve));
  const t0 = Date.now();
  while (!/listening on (\S+)/.test(out)) {
    if (Date.now() - t0 > 60_000 || server.exitCode !== null) throw new Error(`server did not start: ${err}`);
    await sleep(20);
  }
  const base = /listening on (\S+)/.exec(out)![1]!;

  const PROMPTS = ['The quick brown fox', 'def fibonacci(n):', 'Once upon a time', 'hello world'];
  const first = new Map<string, string>(); // request key → first answer text
  const counts = { ok: 0, malformed: 0, inconsistent: 0, lost: 0, disconnected_on_purpose: 0, failed_after_retries: 0 };
  const rejected = { total: 0, queue_full: 0, kv_pool_full: 0, other: 0 }; // 429 responses (attempts), by error.code
  const retries = { requests_retried: 0, retries: 0, max_attempts: 1, retry_wait_s: 0, max_retry_after_s: 0 };
  const getMetrics = () => new Promise<string>((resolve, reject) => {
    request(new URL('/metrics', base), (res) => {
      let s = '';
      res.on('data', (d) => (s += d));
      res.on('end', () => resolve(s));
    }).on('error', reject).end();
  });
  // name may carry labels ({code="..."}): escaped, so it is matched as written
  const metricOf = (text: string, name: string) => Number(new RegExp(`^${name.replace(/[{}[\]()*+?.^$|\\]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  // sample the KV pool while the clients run
  const seen = { maxPagesUsed: 0, maxPagesReserved: 0, maxPagesHeld: 0, minPagesFree: Infinity, maxSequences: 0, maxQueue: 0, maxKVBytes: 0, maxRSS: 0, waitingWithFreeSlots: 0, samples: 0 };
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      try {
        const m = await getMetrics();
        const used = metricOf(m, 'flashlm_kv_pages_used') || 0;
        const reserved = metricOf(m, 'flashlm_kv_pages_reserved') || 0;
        const sequences = metricOf(m, 'flashlm_kv_sequences') || 0;
        const queue = metricOf(m, 'flashlm_queue_length') || 0;
        seen.maxPagesUsed = Math.max(seen.maxPagesUsed, used);
        seen.maxPagesReserved = Math.max(seen.maxPagesReserved, reserved);
        seen.maxPagesHeld = Math.max(seen.maxPagesHeld, used + reserved);
        seen.minPagesFree = Math.min(seen.minPagesFree, metricOf(m, 'flashlm_kv_pages_free'));
        seen.maxSequences = Math.max(seen.maxSequences, sequences);
        seen.maxQueue = Math.max(seen.maxQueue, queue);
        seen.maxKVBytes = Math.max(seen.maxKVBytes, metricOf(m, 'flashlm_kv_bytes_in_use') || 0);
        seen.maxRSS = Math.max(seen.maxRSS, metricOf(m, 'flashlm_resident_memory_bytes') || 0);
        // requests queue although a sequence slot is free: the KV pages are what they wait for
        if (queue > 0 && sequences < metricOf(m, 'flashlm_kv_sequence_slots')) seen.waitingWithFreeSlots++;
        seen.samples++;
      } catch {
        // the server is busy; try again
      }
      await sleep(100);
    }
  })();
  const examples: string[] = [];
  const latOk: number[] = []; // first attempt → answer, Retry-After waits included
  const latLast: number[] = []; // the answered attempt alone
  let tokens = 0;
  let issued = 0;
  const start = performance.now();
  const deadline = start + SECONDS * 1000;

  async function client(c: number): Promise<void> {
    for (let k = 0; issued < REQUESTS && performance.now() < deadline; k++) {
      const i = issued++;
      const kind = i % 4 < 2 ? 'completion' : 'chat';
      const stream = i % 2 === 1;
      const prompt = PROMPTS[(i >> 2) % PROMPTS.length]!;
      const key = `${kind}|${prompt}`;
      const body = kind === 'chat'
        ? { messages: [{ role: 'user', content: prompt }], max_tokens: MAX_TOKENS, temperature: 0, stream, stream_options: { include_usage: true } }
        : { prompt, max_tokens: MAX_TOKENS, temperature: 0, stream, stream_options: { include_usage: true } };
      const t = performance.now();
      const hangUp = stream && DISCONNECT_EVERY > 0 && i % DISCONNECT_EVERY === DISCONNECT_EVERY - 1;
      let r: Reply | undefined;
      let tAttempt = t;
      let attempt = 0;
      for (;; attempt++) {
        tAttempt = performance.now();
        try {
          r = await post(base, kind === 'chat' ? '/v1/chat/completions' : '/v1/completions', body, hangUp);
        } catch (e) {
          counts.lost++;
          if (examples.length < 5) examples.push(`lost: ${(e as Error).message}`);
          r = undefined;
          break;
        }
        if (r.status !== 429) break;
        rejected.total++;
        const code = errorCode(r.body);
        if (code === 'queue_full' || code === 'kv_pool_full') rejected[code]++;
        else rejected.other++;
        if (!/^\d+$/.test(r.retryAfter ?? '')) {
          counts.malformed++;
          if (examples.length < 5) examples.push('429 without a Retry-After');
          r = undefined;
          break;
        }
        retries.max_retry_after_s = Math.max(retries.max_retry_after_s, Number(r.retryAfter));
        if (attempt >= MAX_RETRIES) {
          counts.failed_after_retries++;
          r = undefined;
          break;
        }
        // the same request again after Retry-After (jitter only lengthens the wait, never shortens it)
        const wait = RETRY_AFTER ? Number(r.retryAfter) * (1 + Math.random() / 2) : 0;
        retries.retry_wait_s += wait;
        await sleep(wait * 1000);
      }
      if (attempt > 0) {
        retries.requests_retried++;
        retries.retries += attempt;
      }
      retries.max_attempts = Math.max(retries.max_attempts, attempt + 1);
      if (r === undefined) continue;
      if (r.status === -1) {
        counts.disconnected_on_purpose++;
        continue;
      }
      const ms = performance.now() - t;
      const a = r.status === 200 ? answer(kind, stream, r.body) : undefined;
      if (a === undefined) {
        counts.malformed++;
        if (examples.length < 5) examples.push(`malformed (${r.status}, client ${c}): ${r.body.slice(0, 200)}`);
        continue;
      }
      const f = first.get(key);
      if (f === undefined) first.set(key, a.text);
      else if (f !== a.text) {
        counts.inconsistent++;
        if (examples.length < 5) examples.push(`inconsistent answer to ${key}`);
        continue;
      }
      counts.ok++;
      latOk.push(ms);
      latLast.push(performance.now() - tAttempt);
      tokens += a.tokens;
    }
  }

  await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
  const wall = (performance.now() - start) / 1000;
  sampling = false;
  await sampler;
  // every client is done: the pool must be back to empty (a cancelled request may take a moment to
  // notice its closed socket: wait up to 5 s for open sequences to reach 0)
  let metrics = await getMetrics();
  for (let i = 0; i < 50 && metricOf(metrics, 'flashlm_kv_sequences') > 0; i++) {
    await sleep(100);
    metrics = await getMetrics();
  }
  const metric = (name: string) => metricOf(metrics, name);
  const kvAfter = {
    total: metric('flashlm_kv_pages_total'), page_size: metric('flashlm_kv_page_size_tokens'), slots: metric('flashlm_kv_sequence_slots'),
    used_after: metric('flashlm_kv_pages_used'), reserved_after: metric('flashlm_kv_pages_reserved'), free_after: metric('flashlm_kv_pages_free'),
    sequences_after: metric('flashlm_kv_sequences'), max_used_seen: seen.maxPagesUsed, max_reserved_seen: seen.maxPagesReserved,
    max_used_plus_reserved_seen: seen.maxPagesHeld, min_free_seen: seen.minPagesFree, max_sequences_seen: seen.maxSequences,
    max_queue_seen: seen.maxQueue, samples_waiting_with_free_slots: seen.waitingWithFreeSlots, samples: seen.samples,
  };
  // the server's --memory ledger (fixed after load; the KV bytes in use move with the pages)
  const ledger = {
    parts: Object.fromEntries([...metrics.matchAll(/^flashlm_memory_pool_charged_bytes\{part="(\w+)"\} (\S+)$/gm)].map((m) => [m[1]!, Number(m[2])])),
    charged: metric('flashlm_memory_pool_charged_total_bytes'), budget_left: metric('flashlm_memory_budget_left_bytes'),
    kv_bytes_in_use_after: metric('flashlm_kv_bytes_in_use'), max_kv_bytes_in_use_seen: seen.maxKVBytes,
  };
  const rejectedByServer = { queue_full: metric('flashlm_requests_rejected_total{code="queue_full"}'), kv_pool_full: metric('flashlm_requests_rejected_total{code="kv_pool_full"}') };
  const leaked = kvAfter.used_after + kvAfter.reserved_after;
  const served = [...metrics.matchAll(/^flashlm_requests_total\{endpoint="\/v1\/(?:chat\/)?completions",status="(\d+)"\} (\d+)$/gm)]
    .reduce<Record<string, number>>((a, m) => ((a[m[1]!] = (a[m[1]!] ?? 0) + Number(m[2])), a), {});
  server.kill('SIGTERM');
  const code = await exited;
  const peak = metric('flashlm_peak_resident_memory_bytes');
  const budget = parseMemory(MEMORY);
  const serverTokens = metric('flashlm_tokens_generated_total');
  const accounted = counts.ok + counts.malformed + counts.inconsistent + counts.lost + counts.disconnected_on_purpose + counts.failed_after_retries;
  process.stdout.write(`${JSON.stringify({
    model, clients: CLIENTS, requests_issued: issued, max_tokens: MAX_TOKENS, max_queue: Number(MAX_QUEUE), honours_retry_after: RETRY_AFTER, sequences: Number(SEQUENCES), kv_positions: KV_POSITIONS, ctx: Number(CTX), disconnect_every: DISCONNECT_EVERY,
    wall_seconds: Math.round(wall * 100) / 100,
    ok: counts.ok,
    errors: { malformed: counts.malformed, inconsistent: counts.inconsistent, lost: counts.lost, failed_after_retries: counts.failed_after_retries },
    disconnected_on_purpose: counts.disconnected_on_purpose,
    all_accounted: accounted === issued,
    rejected_429: rejected,
    retries: { max_retries: MAX_RETRIES, ...retries, retry_wait_s: Math.round(retries.retry_wait_s * 10) / 10 },
    kv_pages: { ...kvAfter, leaked, no_leak: leaked === 0 && kvAfter.sequences_after === 0 && kvAfter.free_after === kvAfter.total },
    examples,
    throughput_tokens_per_s: Math.round((serverTokens / wall) * 10) / 10,
    ok_requests_per_s: Math.round((counts.ok / wall) * 10) / 10,
    latency_ms_ok: { p50: pct(latOk, 50), p99: pct(latOk, 99), max: pct(latOk, 100) },
    latency_ms_ok_answered_attempt: { p50: pct(latLast, 50), p99: pct(latLast, 99), max: pct(latLast, 100) },
    memory_pool: ledger,
    server: {
      statuses: served, tokens_generated: serverTokens, tokens_counted_by_clients: tokens,
      rejected_by_code: rejectedByServer, cancelled: metric('flashlm_requests_cancelled_total'),
      peak_rss_bytes: peak, max_rss_sampled_bytes: seen.maxRSS, budget_bytes: budget, peak_rss_fraction_of_budget: Math.round((peak / budget) * 1000) / 1000,
      peak_rss_within_budget: peak <= budget, exit_code: code,
    },
  }, null, 1)}\n`);
  if (counts.malformed + counts.inconsistent + counts.lost > 0 || accounted !== issued || code !== 0 || !(leaked === 0 && kvAfter.sequences_after === 0)) process.exitCode = 1;
}

main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 2;
});
