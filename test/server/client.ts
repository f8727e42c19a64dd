// A small HTTP client for the server tests (node:http, so a test can drop a connection at will).
import assert from 'node:assert/strict';
import { request, type IncomingHttpHeaders } from 'node:http';

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
}

function send(base: string, method: string, path: string, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), { method, headers: body === undefined ? {} : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export const get = (base: string, path: string) => send(base, 'GET', path);

/** body: an object (sent as JSON) or a raw string. */
export const post = (base: string, path: string, body: unknown) => send(base, 'POST', path, typeof body === 'string' ? body : JSON.stringify(body));

/** Server-sent events as OpenAI sends them: `data: <json>\n\n` events ending with `data: [DONE]\n\n`. */
export function parseSSE(text: string): Record<string, unknown>[] {
  assert.ok(text.endsWith('data: [DONE]\n\n'), `stream must end with [DONE]: ${JSON.stringify(text.slice(-80))}`);
  const events = text.slice(0, -'data: [DONE]\n\n'.length).split('\n\n');
  assert.equal(events.pop(), '', 'events end with a blank line');
  return events.map((e) => {
    assert.ok(e.startsWith('data: ') && !e.includes('\n'), `malformed event ${JSON.stringify(e)}`);
    return JSON.parse(e.slice(6)) as Record<string, unknown>;
  });
}

/**
 * POSTs a streaming request and closes the connection: after the first event that carries text, or
 * after `dropAfterMs` (a request still waiting in the queue has no events yet). Resolves once closed.
 */
export function postStreamThenDrop(base: string, path: string, body: unknown, o: { dropAfterMs?: number } = {}): Promise<void> {
  const s = JSON.stringify(body);
  return new Promise((resolve) => {
    const req = request(new URL(path, base), { method: 'POST', headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(s) } }, (res) => {
      let buf = '';
      res.on('data', (c: Buffer) => {
        buf += c.toString('utf8');
        if (o.dropAfterMs === undefined && /"text":"[^"]/.test(buf)) req.destroy();
      });
    });
    req.on('error', () => {});
    req.on('close', () => resolve());
    if (o.dropAfterMs !== undefined) setTimeout(() => req.destroy(), o.dropAfterMs);
    req.end(s);
  });
}
