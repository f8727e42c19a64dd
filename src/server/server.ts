// OpenAI-compatible HTTP server over node:http (no framework):
//   GET  /health, /metrics (Prometheus text), /v1/models, /v1/models/{id}
//   POST /v1/completions, /v1/chat/completions (stream: true → server-sent events)
// Requests are validated (validate.ts), prompts built (chat.ts) and tokenized before they queue, so a
// bad request never waits; a Scheduler (scheduler.ts) decides when a request gets the model: with a
// paged KV cache, several requests run at once, interleaved token by token, each in its own KV
// sequence. A client that goes away cancels its request, queued or running, and its pages return.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes, randomInt } from 'node:crypto';
import { ChatFormatter } from './chat.js';
import { CancelledError, QueueFullError, RequestError } from './errors.js';
import { errorBody, MAX_BODY_BYTES, parseJSON, readBody, sendError, sendJSON, sendText, SSE } from './http.js';
import { Metrics } from './metrics.js';
import { FifoScheduler, KVScheduler, type Scheduler, type Slot } from './scheduler.js';
import { StopMatcher } from './text.js';
import type { ServedModel } from './types.js';
import { validateChatRequest, validateCompletionRequest, type ChatRequest, type CompletionRequest } from './validate.js';

export interface ServerOptions {
  port?: number; // default 8080; 0 = any free port
  host?: string; // default 127.0.0.1 (loopback only)
  /** Requests that may wait for room (default 16); more get 429 with Retry-After. */
  maxQueue?: number;
  maxBodyBytes?: number; // default 1 MiB
  /** Replaces the FIFO scheduler (e.g. one over a paged KV cache with several slots). */
  scheduler?: Scheduler & { retryAfterSeconds?(): number };
  /** One line per finished request (method, path, status, tokens, seconds). */
  log?: (line: string) => void;
  /** Generate a few tokens before listening (as llama.cpp's server does): tiers up the kernels and
   *  gives Retry-After a measured time per token from the first request on (default false; the
   *  `flashlm serve` command turns it on). Not counted in /metrics. */
  warmup?: boolean;
}

export interface RunningServer {
  readonly server: Server;
  readonly url: string; // http://host:port
  readonly port: number;
  readonly metrics: Metrics;
  readonly chatTemplate: 'model' | 'fallback';
  readonly warnings: string[];
  /** Stops accepting, cancels running and queued requests, closes connections. The model stays open. */
  close(): Promise<void>;
}

const ENDPOINTS = new Set(['/health', '/metrics', '/v1/models', '/v1/completions', '/v1/chat/completions']);

interface Prepared {
  ids: number[];
  maxTokens: number;
  req: CompletionRequest | ChatRequest;
}

export async function startServer(model: ServedModel, o: ServerOptions = {}): Promise<RunningServer> {
  const maxQueue = o.maxQueue ?? 16;
  if (!Number.isInteger(maxQueue) || maxQueue < 0) throw new RangeError(`maxQueue must be an integer ≥ 0, got ${maxQueue}`);
  const { tryOpenSequence, onKVRelease, kvPages } = model;
  const kvSched = !o.scheduler && tryOpenSequence && onKVRelease && kvPages
    ? new KVScheduler({ tryOpenSequence: (n) => tryOpenSequence.call(model, n), onKVRelease: (f) => onKVRelease.call(model, f), kvPages: () => kvPages.call(model) }, maxQueue)
    : undefined;
  const scheduler = o.scheduler ?? kvSched ?? new FifoScheduler(maxQueue);
  const metrics = new Metrics();
  const chat = new ChatFormatter(model.chatTemplate, model);
  const warnings = chat.warning ? [chat.warning] : [];
  const live = new Set<AbortController>(); // requests in progress, cancelled on close()
  const limits = { ctx: model.ctx, vocabSize: model.vocabSize };
  const created = Math.floor(Date.now() / 1000);

  const gauges = {
    queueLength: () => scheduler.waiting,
    busy: () => scheduler.running,
    kv: () => model.kv(),
    flashBytesRead: () => model.flashBytesRead(),
    budget: () => model.budget,
    kvPages: () => model.kvPages?.(),
    hitRate: () => model.neuronCacheHitRate?.(),
    pool: () => model.memoryPool?.(),
  };

  const modelCard = () => ({ id: model.name, object: 'model', created, owned_by: 'flashlm' });

  if (o.warmup) {
    try {
      const ids = model.tokenize('def', { addBos: model.addBos });
      const n = Math.min(4, model.ctx - ids.length);
      if (ids.length > 0 && n >= 2) {
        const slot = await scheduler.acquire(new AbortController().signal, ids.length + n);
        try {
          for await (const _ of model.generate(ids, { maxTokens: n, temperature: 0, ...(slot.sequence ? { sequence: slot.sequence } : {}) })) slot.tick?.();
        } finally {
          slot.release();
        }
      }
    } catch (e) {
      warnings.push(`warm-up failed: ${(e as Error).message}`);
    }
  }

  /** Validation, prompt and context checks: everything that can fail before the request queues. */
  function prepare(body: unknown, kind: 'completion' | 'chat'): Prepared {
    let ids: number[];
    let req: CompletionRequest | ChatRequest;
    if (kind === 'chat') {
      const r = validateChatRequest(body, limits);
      const p = chat.render(r.messages);
      ids = model.tokenize(p.text, { addBos: p.addBos, parseSpecial: p.parseSpecial });
      req = r;
    } else {
      const r = validateCompletionRequest(body, limits);
      ids = typeof r.prompt === 'string' ? model.tokenize(r.prompt) : r.prompt;
      req = r;
    }
    if (ids.length === 0) throw new RequestError('the prompt has no tokens', 400, 'invalid_request_error', kind === 'chat' ? 'messages' : 'prompt');
    const room = model.ctx - ids.length;
    // OpenAI's defaults: 16 new tokens for completions, the rest of the context for chat
    const maxTokens = req.maxTokens ?? (kind === 'chat' ? room : Math.min(16, room));
    if (room < 1 || maxTokens > room) {
      throw new RequestError(`this model's context is ${model.ctx} tokens; the request needs ${ids.length + Math.max(1, maxTokens)} (${ids.length} in the prompt, ${Math.max(1, maxTokens)} for the completion); shorten the prompt or lower max_tokens`,
        400, 'invalid_request_error', req.maxTokens !== undefined ? 'max_tokens' : kind === 'chat' ? 'messages' : 'prompt');
    }
    return { ids, maxTokens, req };
  }

  /** Runs one prepared request on the model; the caller holds a slot. */
  async function run(res: ServerResponse, p: Prepared, kind: 'completion' | 'chat', signal: AbortSignal, sequence: Slot['sequence'], tick?: () => void): Promise<number> {
    const { ids, maxTokens, req } = p;
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
    const now = Math.floor(Date.now() / 1000);
    const base = kind === 'chat'
      ? { id, object: 'chat.completion.chunk', created: now, model: model.name }
      : { id, object: 'text_completion', created: now, model: model.name };
    const choice = (text: string, finish: string | null) => (kind === 'chat'
      ? { index: 0, delta: text === '' && finish ? {} : { content: text }, logprobs: null, finish_reason: finish }
      : { index: 0, text, logprobs: null, finish_reason: finish });
    const sse = req.stream ? new SSE(res) : undefined;
    if (sse && kind === 'chat') sse.send({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] });
    const stop = new StopMatcher(req.stop);
    let text = '';
    const emit = (s: string) => {
      if (s === '') return;
      if (sse) sse.send({ ...base, choices: [choice(s, null)] });
      else text += s;
    };
    const t0 = performance.now();
    let n = 0;
    let finish: 'stop' | 'length' | undefined;
    const gen = model.generate(ids, {
      maxTokens, temperature: req.temperature, topK: req.topK, topP: req.topP, seed: req.seed ?? randomInt(0, 2 ** 32), signal,
      ...(sequence ? { sequence } : {}),
    });
    try {
      for await (const piece of gen) {
        n++;
        tick?.();
        emit(stop.push(piece.text));
        if (stop.stopped) {
          finish = 'stop';
          break; // ends the generation: the model is free at once
        }
      }
    } catch (e) {
      metrics.countGeneration(ids.length, n, (performance.now() - t0) / 1000);
      if (!sse) throw e;
      // headers are out: report in the stream, as OpenAI does
      sse.send(errorBody(`generation failed: ${(e as Error).message}`, 'server_error'));
      sse.done();
      return n;
    }
    metrics.countGeneration(ids.length, n, (performance.now() - t0) / 1000);
    if (signal.aborted) return n;
    if (!finish) {
      emit(stop.flush());
      finish = gen.finishReason === 'length' ? 'length' : 'stop';
    }
    const usage = { prompt_tokens: ids.length, completion_tokens: n, total_tokens: ids.length + n };
    if (sse) {
      sse.send({ ...base, choices: [choice('', finish)] });
      if (req.includeUsage) sse.send({ ...base, choices: [], usage });
      sse.done();
    } else if (kind === 'chat') {
      sendJSON(res, 200, {
        id, object: 'chat.completion', created: now, model: model.name,
        choices: [{ index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: finish }], usage,
      });
    } else {
      sendJSON(res, 200, { ...base, choices: [{ index: 0, text, logprobs: null, finish_reason: finish }], usage });
    }
    return n;
  }

  async function completion(req: IncomingMessage, res: ServerResponse, kind: 'completion' | 'chat'): Promise<void> {
    const ac = new AbortController();
    live.add(ac);
    // 'close' before the response ended: the client went away (or close() cut the connection)
    res.on('close', () => {
      if (!res.writableFinished) ac.abort();
    });
    try {
      const p = prepare(parseJSON(await readBody(req, o.maxBodyBytes ?? MAX_BODY_BYTES)), kind);
      let slot;
      try {
        slot = await scheduler.acquire(ac.signal, p.ids.length + p.maxTokens);
      } catch (e) {
        if (e instanceof QueueFullError) {
          metrics.countRejected(e.code);
          sendJSON(res, 429, errorBody(e.message, 'rate_limit_error', null, e.code), { 'Retry-After': String(e.retryAfterSeconds) });
          return;
        }
        throw e;
      }
      try {
        if (ac.signal.aborted) throw new CancelledError(); // gone between the grant and now
        await run(res, p, kind, ac.signal, slot.sequence, slot.tick);
        if (ac.signal.aborted) throw new CancelledError();
      } finally {
        slot.release();
      }
    } catch (e) {
      if (e instanceof CancelledError || ac.signal.aborted) {
        metrics.cancelled++;
        res.destroy();
      } else if (e instanceof RequestError) sendError(res, e);
      else {
        o.log?.(`error: ${(e as Error)?.stack ?? String(e)}`);
        sendJSON(res, 500, errorBody(`internal error: ${(e as Error)?.message ?? String(e)}`, 'server_error'));
      }
    } finally {
      live.delete(ac);
    }
  }

  async function route(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = req.method ?? 'GET';
    const only = (m: string): boolean => {
      if (method === m) return true;
      req.resume(); // discard any body
      sendJSON(res, 405, errorBody(`${method} ${path}: use ${m}`, 'invalid_request_error'), { Allow: m });
      return false;
    };
    switch (path) {
      case '/health':
        if (only('GET')) {
          const k = model.kvPages?.();
          sendJSON(res, 200, { status: 'ok', model: model.name, busy: scheduler.running, queue: scheduler.waiting, ...(k ? { kv_pages: { used: k.used, free: k.free, total: k.pages } } : {}) });
        }
        return;
      case '/metrics':
        if (only('GET')) sendText(res, 200, metrics.render(gauges), 'text/plain; version=0.0.4; charset=utf-8');
        return;
      case '/v1/models':
        if (only('GET')) sendJSON(res, 200, { object: 'list', data: [modelCard()] });
        return;
      case '/v1/completions':
        if (only('POST')) await completion(req, res, 'completion');
        return;
      case '/v1/chat/completions':
        if (only('POST')) await completion(req, res, 'chat');
        return;
    }
    if (path.startsWith('/v1/models/') && only('GET')) {
      const name = decodeURIComponent(path.slice('/v1/models/'.length));
      if (name === model.name) sendJSON(res, 200, modelCard());
      else sendJSON(res, 404, errorBody(`model '${name}' not found (this server has '${model.name}')`, 'invalid_request_error', 'model', 'model_not_found'));
      return;
    }
    if (res.headersSent) return;
    req.resume();
    sendJSON(res, 404, errorBody(`no route ${method} ${path}`, 'invalid_request_error'));
  }

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const endpoint = ENDPOINTS.has(path) ? path : path.startsWith('/v1/models/') ? '/v1/models/:id' : 'other';
    const t0 = performance.now();
    res.on('error', () => {}); // writes to a vanished client: nothing to do
    res.on('close', () => {
      metrics.countRequest(endpoint, res.statusCode);
      o.log?.(`${req.method} ${path} ${res.writableFinished ? res.statusCode : `${res.statusCode} (client gone)`} ${((performance.now() - t0) / 1000).toFixed(3)} s`);
    });
    route(req, res, path).catch((e: unknown) => {
      // route() handles its own errors; this is the last guard so that nothing crashes the server
      o.log?.(`error: ${(e as Error)?.stack ?? String(e)}`);
      if (!res.headersSent) sendJSON(res, 500, errorBody('internal error', 'server_error'));
      else res.destroy();
    });
  });
  server.on('clientError', (_e, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 8080, o.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    server, url: `http://${host}:${addr.port}`, port: addr.port, metrics, warnings,
    chatTemplate: chat.usesTemplate ? 'model' : 'fallback',
    close: () => new Promise<void>((resolve) => {
      kvSched?.close();
      server.close(() => resolve());
      for (const ac of live) ac.abort();
      server.closeAllConnections();
    }),
  };
}
